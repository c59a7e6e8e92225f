"""Hashes, HMAC/HKDF and AEAD of emulator.crypto against published vectors."""

from __future__ import annotations

import hashlib

import pytest

from emulator.codec.constants import AeadSuite, BaseHashAlgo, MeasurementHashAlgo
from emulator.crypto import (
    AEAD_IV_SIZE,
    AEAD_TAG_SIZE,
    aead_key_size,
    aead_open,
    aead_seal,
    digest,
    hash_name,
    hash_size,
    hkdf_expand,
    hkdf_extract,
    hmac_digest,
    measurement_digest,
    measurement_hash_size,
    new_hash,
)
from emulator.errors import CryptoError

H = bytes.fromhex

# --- hashes ----------------------------------------------------------------------------------

# FIPS 180-4 / FIPS 202 digests of "abc".
ABC_DIGESTS = {
    BaseHashAlgo.SHA_256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    BaseHashAlgo.SHA_384: "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed"
    "8086072ba1e7cc2358baeca134c825a7",
    BaseHashAlgo.SHA_512: "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
    "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
    BaseHashAlgo.SHA3_256: "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532",
    BaseHashAlgo.SHA3_384: "ec01498288516fc926459f58e2c6ad8df9b473cb0fc08c2596da7cf0e49be4b2"
    "98d88cea927ac7f539f1edf228376d25",
    BaseHashAlgo.SHA3_512: "b751850b1a57168a5693cd924b6b096e08f621827444f70d884f5d0240d2712e"
    "10e116e9192af3c91a7ec57647e3934057340b4cf408d5a56592f8274eec53f0",
}
SIZES = {
    BaseHashAlgo.SHA_256: 32,
    BaseHashAlgo.SHA_384: 48,
    BaseHashAlgo.SHA_512: 64,
    BaseHashAlgo.SHA3_256: 32,
    BaseHashAlgo.SHA3_384: 48,
    BaseHashAlgo.SHA3_512: 64,
}


@pytest.mark.parametrize("algo", list(ABC_DIGESTS))
def test_digest_known_answer(algo: BaseHashAlgo) -> None:
    assert digest(algo, b"abc") == H(ABC_DIGESTS[algo])
    assert hash_size(algo) == SIZES[algo] == len(digest(algo, b""))


@pytest.mark.parametrize("algo", list(ABC_DIGESTS))
def test_incremental_hash_and_copy(algo: BaseHashAlgo) -> None:
    h = new_hash(algo)
    h.update(b"a")
    fork = h.copy()
    h.update(b"bc")
    assert h.digest() == H(ABC_DIGESTS[algo])
    fork.update(b"x")
    assert fork.digest() == hashlib.new(hash_name(algo), b"ax").digest()
    assert h.digest_size == SIZES[algo]


def test_hash_names() -> None:
    assert hash_name(BaseHashAlgo.SHA_384) == "sha384"
    assert hash_name(BaseHashAlgo.SHA3_512) == "sha3_512"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (BaseHashAlgo.SM3_256, "not supported"),
        (BaseHashAlgo.SHA_256 | BaseHashAlgo.SHA_384, "exactly one"),
        (0, "exactly one"),
        (1 << 9, "unknown"),
    ],
)
def test_bad_hash_algo(value: int, problem: str) -> None:
    with pytest.raises(CryptoError, match=problem):
        hash_size(value)
    with pytest.raises(CryptoError, match=problem):
        digest(value, b"")


def test_measurement_hashes() -> None:
    assert measurement_hash_size(MeasurementHashAlgo.RAW_BIT_STREAM_ONLY) == 0
    assert measurement_digest(MeasurementHashAlgo.RAW_BIT_STREAM_ONLY, b"raw") == b"raw"
    expected = {
        MeasurementHashAlgo.SHA_256: BaseHashAlgo.SHA_256,
        MeasurementHashAlgo.SHA_384: BaseHashAlgo.SHA_384,
        MeasurementHashAlgo.SHA_512: BaseHashAlgo.SHA_512,
        MeasurementHashAlgo.SHA3_256: BaseHashAlgo.SHA3_256,
        MeasurementHashAlgo.SHA3_384: BaseHashAlgo.SHA3_384,
        MeasurementHashAlgo.SHA3_512: BaseHashAlgo.SHA3_512,
    }
    for meas, base in expected.items():
        assert measurement_hash_size(meas) == SIZES[base]
        assert measurement_digest(meas, b"abc") == H(ABC_DIGESTS[base])
    with pytest.raises(CryptoError, match="not supported"):
        measurement_digest(MeasurementHashAlgo.SM3_256, b"abc")


# --- HMAC / HKDF -----------------------------------------------------------------------------


def test_hmac_rfc4231_case1() -> None:
    key = b"\x0b" * 20
    assert hmac_digest(BaseHashAlgo.SHA_256, key, b"Hi There") == H(
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    )


RFC5869 = [
    # (IKM, salt, info, L, PRK, OKM)  RFC 5869 appendix A.1, A.2, A.3 (SHA-256)
    (
        b"\x0b" * 22,
        bytes(range(0x0D)),
        bytes(range(0xF0, 0xFA)),
        42,
        "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    ),
    (
        bytes(range(0x00, 0x50)),
        bytes(range(0x60, 0xB0)),
        bytes(range(0xB0, 0x100)),
        82,
        "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
        "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
        "cc30c58179ec3e87c14c01d5c1f3434f1d87",
    ),
    (
        b"\x0b" * 22,
        b"",
        b"",
        42,
        "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
    ),
]


@pytest.mark.parametrize(("ikm", "salt", "info", "length", "prk", "okm"), RFC5869)
def test_hkdf_rfc5869(
    ikm: bytes, salt: bytes, info: bytes, length: int, prk: str, okm: str
) -> None:
    got_prk = hkdf_extract(BaseHashAlgo.SHA_256, salt, ikm)
    assert got_prk == H(prk)
    assert hkdf_expand(BaseHashAlgo.SHA_256, got_prk, info, length) == H(okm)


def test_hkdf_expand_limits() -> None:
    prk = bytes(32)
    assert len(hkdf_expand(BaseHashAlgo.SHA_256, prk, b"", 255 * 32)) == 255 * 32
    with pytest.raises(CryptoError, match="length"):
        hkdf_expand(BaseHashAlgo.SHA_256, prk, b"", 255 * 32 + 1)
    with pytest.raises(CryptoError, match="PRK"):
        hkdf_expand(BaseHashAlgo.SHA_384, prk, b"", 10)


# --- AEAD ------------------------------------------------------------------------------------

GCM_P = H(
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
)
GCM_A = H("feedfacedeadbeeffeedfacedeadbeefabaddad2")

AEAD_VECTORS = [
    # McGrew & Viega GCM spec (NIST) test case 2: AES-128, zero key / IV / block.
    (AeadSuite.AES_128_GCM, "00" * 16, "00" * 12, b"", bytes(16),
     "0388dace60b6a392f328c2b971b2fe78", "ab6e47d42cec13bdf53a67b21257bddf"),
    # Test case 4: AES-128 with AAD.
    (AeadSuite.AES_128_GCM, "feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888",
     GCM_A, GCM_P,
     "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
     "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
     "5bc94fbc3221a5db94fae95ae7121a47"),
    # Test case 16: AES-256 with AAD.
    (AeadSuite.AES_256_GCM, "feffe9928665731c6d6a8f9467308308" * 2, "cafebabefacedbaddecaf888",
     GCM_A, GCM_P,
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
     "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
     "76fc6ece0f4e1768cddf8853bb2d551b"),
    # RFC 8439 section 2.8.2.
    (AeadSuite.CHACHA20_POLY1305,
     "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
     "070000004041424344454647", H("50515253c0c1c2c3c4c5c6c7"),
     b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the "
     b"future, sunscreen would be it.",
     "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
     "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
     "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
     "3ff4def08e4b7a9de576d26586cec64b6116",
     "1ae10b594f09e26a7e902ecbd0600691"),
]  # fmt: skip


@pytest.mark.parametrize(("suite", "key", "iv", "aad", "plain", "cipher", "tag"), AEAD_VECTORS)
def test_aead_vectors(
    suite: AeadSuite, key: str, iv: str, aad: bytes, plain: bytes, cipher: str, tag: str
) -> None:
    sealed = aead_seal(suite, H(key), H(iv), aad, plain)
    assert sealed == H(cipher) + H(tag)
    assert aead_open(suite, H(key), H(iv), aad, sealed) == plain


@pytest.mark.parametrize(
    "suite", [AeadSuite.AES_128_GCM, AeadSuite.AES_256_GCM, AeadSuite.CHACHA20_POLY1305]
)
def test_aead_rejects_tampering(suite: AeadSuite) -> None:
    key = bytes(range(aead_key_size(suite)))
    iv = bytes(AEAD_IV_SIZE)
    sealed = aead_seal(suite, key, iv, b"hdr", b"secret payload")
    assert len(sealed) == len(b"secret payload") + AEAD_TAG_SIZE
    for index in (0, len(sealed) - 1):
        bad = bytearray(sealed)
        bad[index] ^= 0x01
        with pytest.raises(CryptoError, match="authentication failed"):
            aead_open(suite, key, iv, b"hdr", bytes(bad))
    with pytest.raises(CryptoError, match="authentication failed"):
        aead_open(suite, key, iv, b"hdX", sealed)
    with pytest.raises(CryptoError, match="authentication failed"):
        aead_open(suite, key, bytes([1]) + iv[1:], b"hdr", sealed)
    with pytest.raises(CryptoError, match="shorter than"):
        aead_open(suite, key, iv, b"hdr", sealed[:15])


def test_aead_sizes_and_bad_parameters() -> None:
    assert aead_key_size(AeadSuite.AES_128_GCM) == 16
    assert aead_key_size(AeadSuite.AES_256_GCM) == 32
    assert aead_key_size(AeadSuite.CHACHA20_POLY1305) == 32
    with pytest.raises(CryptoError, match="not supported"):
        aead_key_size(AeadSuite.AEAD_SM4_GCM)
    with pytest.raises(CryptoError, match="key"):
        aead_seal(AeadSuite.AES_256_GCM, bytes(16), bytes(12), b"", b"")
    with pytest.raises(CryptoError, match="IV"):
        aead_seal(AeadSuite.AES_128_GCM, bytes(16), bytes(8), b"", b"")
