"""Signatures of emulator.crypto, each checked with ``cryptography`` key objects directly."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa, utils
from cryptography.x509.oid import NameOID

from emulator.codec.constants import BaseAsymAlgo, BaseHashAlgo
from emulator.crypto import (
    CHALLENGE_AUTH_SIGN_CONTEXT,
    KEY_EXCHANGE_RSP_SIGN_CONTEXT,
    MEASUREMENTS_SIGN_CONTEXT,
    PrivateKey,
    PublicKey,
    asym_algo_for_key,
    check_key_matches,
    load_certificate,
    load_private_key,
    public_key_of_cert,
    sign,
    sign_digest,
    signature_size,
    signing_prefix,
    spdm_sign,
    spdm_sign_hash,
    spdm_sign_message,
    spdm_verify,
    spdm_verify_hash,
    verify,
)
from emulator.crypto._ed448 import ed448_public_key, ed448_sign, ed448_verify
from emulator.errors import CryptoError

A = BaseAsymAlgo
HASHES: dict[BaseHashAlgo, hashes.HashAlgorithm] = {
    BaseHashAlgo.SHA_256: hashes.SHA256(),
    BaseHashAlgo.SHA_384: hashes.SHA384(),
    BaseHashAlgo.SHA_512: hashes.SHA512(),
    BaseHashAlgo.SHA3_256: hashes.SHA3_256(),
    BaseHashAlgo.SHA3_384: hashes.SHA3_384(),
    BaseHashAlgo.SHA3_512: hashes.SHA3_512(),
}
SIZES = {
    A.RSASSA_2048: 256,
    A.RSAPSS_2048: 256,
    A.RSASSA_3072: 384,
    A.RSAPSS_3072: 384,
    A.RSASSA_4096: 512,
    A.RSAPSS_4096: 512,
    A.ECDSA_P256: 64,
    A.ECDSA_P384: 96,
    A.ECDSA_P521: 132,
    A.SM2_P256: 64,
    A.EDDSA_ED25519: 64,
    A.EDDSA_ED448: 114,
}
SUPPORTED = [a for a in SIZES if a is not A.SM2_P256]


@pytest.fixture(scope="module")
def keys() -> dict[BaseAsymAlgo, PrivateKey]:
    """One key per algorithm, generated once (RSA-4096 generation is slow)."""
    rsa_keys = {bits: rsa.generate_private_key(65537, bits) for bits in (2048, 3072, 4096)}
    return {
        A.RSASSA_2048: rsa_keys[2048],
        A.RSAPSS_2048: rsa_keys[2048],
        A.RSASSA_3072: rsa_keys[3072],
        A.RSAPSS_3072: rsa_keys[3072],
        A.RSASSA_4096: rsa_keys[4096],
        A.RSAPSS_4096: rsa_keys[4096],
        A.ECDSA_P256: ec.generate_private_key(ec.SECP256R1()),
        A.ECDSA_P384: ec.generate_private_key(ec.SECP384R1()),
        A.ECDSA_P521: ec.generate_private_key(ec.SECP521R1()),
        A.EDDSA_ED25519: ed25519.Ed25519PrivateKey.generate(),
        A.EDDSA_ED448: ed448.Ed448PrivateKey.generate(),
    }


def independent_verify(
    asym: BaseAsymAlgo, hash_algo: BaseHashAlgo, key: PrivateKey, data: bytes, sig: bytes
) -> None:
    """Verify with cryptography's public-key objects only; raises InvalidSignature."""
    public = key.public_key()
    h = HASHES[hash_algo]
    if isinstance(public, rsa.RSAPublicKey):
        if asym.name is not None and asym.name.startswith("RSAPSS"):
            pad: padding.AsymmetricPadding = padding.PSS(padding.MGF1(h), h.digest_size)
        else:
            pad = padding.PKCS1v15()
        public.verify(sig, data, pad, h)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        half = len(sig) // 2
        der = utils.encode_dss_signature(
            int.from_bytes(sig[:half], "big"), int.from_bytes(sig[half:], "big")
        )
        public.verify(der, data, ec.ECDSA(h))
    elif isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        public.verify(sig, data)
    else:  # pragma: no cover
        raise AssertionError(type(public))


def test_signature_sizes() -> None:
    for asym, size in SIZES.items():
        assert signature_size(asym) == size


@pytest.mark.parametrize("asym", SUPPORTED, ids=lambda a: a.name)
@pytest.mark.parametrize(
    "hash_algo",
    [BaseHashAlgo.SHA_256, BaseHashAlgo.SHA_384, BaseHashAlgo.SHA_512, BaseHashAlgo.SHA3_256],
    ids=lambda h: h.name,
)
def test_sign_verified_independently(
    keys: dict[BaseAsymAlgo, PrivateKey], asym: BaseAsymAlgo, hash_algo: BaseHashAlgo
) -> None:
    key = keys[asym]
    message = b"transcript " + asym.name.encode() + hash_algo.name.encode()  # type: ignore[union-attr]
    sig = sign(asym, hash_algo, key, message)
    assert len(sig) == SIZES[asym]
    independent_verify(asym, hash_algo, key, message, sig)
    assert verify(asym, hash_algo, key.public_key(), message, sig)
    # One flipped bit anywhere: rejected by both paths.
    for index in (0, len(sig) // 2, len(sig) - 1):
        bad = bytearray(sig)
        bad[index] ^= 0x04
        assert not verify(asym, hash_algo, key.public_key(), message, bytes(bad))
        with pytest.raises(InvalidSignature):
            independent_verify(asym, hash_algo, key, message, bytes(bad))
    assert not verify(asym, hash_algo, key.public_key(), message + b"!", sig)
    assert not verify(asym, hash_algo, key.public_key(), message, sig[:-1])
    assert not verify(asym, hash_algo, key.public_key(), message, sig + b"\x00")


@pytest.mark.parametrize("asym", SUPPORTED, ids=lambda a: a.name)
def test_wrong_key_fails(keys: dict[BaseAsymAlgo, PrivateKey], asym: BaseAsymAlgo) -> None:
    key = keys[asym]
    other: PublicKey
    if isinstance(key, rsa.RSAPrivateKey):
        # Same modulus size without generating another big key: another public exponent.
        other = rsa.RSAPublicNumbers(3, key.public_key().public_numbers().n).public_key()
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        other = ec.generate_private_key(key.curve).public_key()
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        other = ed25519.Ed25519PrivateKey.generate().public_key()
    else:
        other = ed448.Ed448PrivateKey.generate().public_key()
    sig = sign(asym, BaseHashAlgo.SHA_384, key, b"m")
    assert verify(asym, BaseHashAlgo.SHA_384, key.public_key(), b"m", sig)
    assert not verify(asym, BaseHashAlgo.SHA_384, other, b"m", sig)


@pytest.mark.parametrize(
    "asym",
    [A.ECDSA_P256, A.ECDSA_P384, A.ECDSA_P521, A.RSASSA_2048, A.EDDSA_ED25519, A.EDDSA_ED448],
    ids=lambda a: a.name,
)
def test_deterministic_signatures(keys: dict[BaseAsymAlgo, PrivateKey], asym: BaseAsymAlgo) -> None:
    key = keys[asym]
    first = sign(asym, BaseHashAlgo.SHA_256, key, b"fixed transcript")
    assert sign(asym, BaseHashAlgo.SHA_256, key, b"fixed transcript") == first
    assert sign(asym, BaseHashAlgo.SHA_256, key, b"other transcript") != first


def test_rsapss_is_randomised(keys: dict[BaseAsymAlgo, PrivateKey]) -> None:
    key = keys[A.RSAPSS_2048]
    one = sign(A.RSAPSS_2048, BaseHashAlgo.SHA_256, key, b"m")
    two = sign(A.RSAPSS_2048, BaseHashAlgo.SHA_256, key, b"m")
    assert one != two
    for sig in (one, two):
        independent_verify(A.RSAPSS_2048, BaseHashAlgo.SHA_256, key, b"m", sig)


def test_rsapss_salt_is_digest_length(keys: dict[BaseAsymAlgo, PrivateKey]) -> None:
    """A PSS signature with salt = digest length verifies with an explicit salt length only."""
    key = keys[A.RSAPSS_3072]
    assert isinstance(key, rsa.RSAPrivateKey)
    sig = sign(A.RSAPSS_3072, BaseHashAlgo.SHA_512, key, b"m")
    h = hashes.SHA512()
    key.public_key().verify(sig, b"m", padding.PSS(padding.MGF1(h), 64), h)
    with pytest.raises(InvalidSignature):
        key.public_key().verify(sig, b"m", padding.PSS(padding.MGF1(h), 32), h)


@pytest.mark.parametrize(
    ("asym", "coord"), [(A.ECDSA_P256, 32), (A.ECDSA_P384, 48), (A.ECDSA_P521, 66)]
)
def test_ecdsa_raw_r_s_padding(
    keys: dict[BaseAsymAlgo, PrivateKey], asym: BaseAsymAlgo, coord: int
) -> None:
    """r || s are fixed-width: find messages whose r, and whose s, is short; both are padded."""
    key = keys[asym]
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    pub = key.public_key()
    found = {"r": False, "s": False}
    for counter in range(6000):
        message = counter.to_bytes(4, "big")
        sig = sign(asym, BaseHashAlgo.SHA_256, key, message)
        der = key.sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
        r, s = utils.decode_dss_signature(der)
        # Independent encoding of the expected wire bytes.
        assert sig == r.to_bytes(coord, "big") + s.to_bytes(coord, "big")
        pub.verify(der, message, ec.ECDSA(hashes.SHA256()))
        found["r"] |= r.bit_length() <= 8 * (coord - 1)
        found["s"] |= s.bit_length() <= 8 * (coord - 1)
        if all(found.values()):
            return
    pytest.fail(f"no short r and short s found in 6000 signatures: {found}")


def test_ecdsa_zero_r_rejected(keys: dict[BaseAsymAlgo, PrivateKey]) -> None:
    key = keys[A.ECDSA_P256]
    assert not verify(A.ECDSA_P256, BaseHashAlgo.SHA_256, key.public_key(), b"m", bytes(64))


def test_sign_digest_matches_sign(keys: dict[BaseAsymAlgo, PrivateKey]) -> None:
    for asym in (A.ECDSA_P384, A.RSASSA_2048):
        key = keys[asym]
        digest = hashes.Hash(hashes.SHA384())
        digest.update(b"message")
        value = digest.finalize()
        assert sign_digest(asym, BaseHashAlgo.SHA_384, key, value) == sign(
            asym, BaseHashAlgo.SHA_384, key, b"message"
        )
    with pytest.raises(CryptoError, match="EdDSA"):
        sign_digest(A.EDDSA_ED25519, BaseHashAlgo.SHA_256, keys[A.EDDSA_ED25519], bytes(32))
    with pytest.raises(CryptoError, match="message hash"):
        sign_digest(A.ECDSA_P256, BaseHashAlgo.SHA_256, keys[A.ECDSA_P256], bytes(31))


# --- keys ------------------------------------------------------------------------------------


def test_asym_algo_for_key(keys: dict[BaseAsymAlgo, PrivateKey]) -> None:
    assert asym_algo_for_key(keys[A.RSASSA_3072]) == A.RSASSA_3072 | A.RSAPSS_3072
    assert asym_algo_for_key(keys[A.RSASSA_2048].public_key()) == A.RSASSA_2048 | A.RSAPSS_2048
    assert asym_algo_for_key(keys[A.ECDSA_P521]) == A.ECDSA_P521
    assert asym_algo_for_key(keys[A.EDDSA_ED25519]) == A.EDDSA_ED25519
    assert asym_algo_for_key(keys[A.EDDSA_ED448].public_key()) == A.EDDSA_ED448
    assert asym_algo_for_key(ec.generate_private_key(ec.SECP256K1())) == 0


def test_check_key_matches(keys: dict[BaseAsymAlgo, PrivateKey]) -> None:
    check_key_matches(A.RSAPSS_4096, keys[A.RSASSA_4096])
    with pytest.raises(CryptoError, match=r"RSASSA_3072.*RSA-2048"):
        check_key_matches(A.RSASSA_3072, keys[A.RSASSA_2048])
    with pytest.raises(CryptoError, match=r"ECDSA_P384.*secp256r1"):
        check_key_matches(A.ECDSA_P384, keys[A.ECDSA_P256])
    with pytest.raises(CryptoError, match="EDDSA_ED448"):
        sign(A.EDDSA_ED448, BaseHashAlgo.SHA_256, keys[A.EDDSA_ED25519], b"m")
    with pytest.raises(CryptoError, match="not supported"):
        check_key_matches(A.SM2_P256, keys[A.ECDSA_P256])
    with pytest.raises(CryptoError, match="exactly one"):
        signature_size(A.ECDSA_P256 | A.ECDSA_P384)


def _self_signed(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crypto test")])
    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def test_load_keys_and_certificates(keys: dict[BaseAsymAlgo, PrivateKey], tmp_path: Path) -> None:
    key = keys[A.ECDSA_P384]
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    path = tmp_path / "key.pem"
    path.write_bytes(pem)
    for source in (pem, der, path, str(path)):
        loaded = load_private_key(source)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        assert loaded.private_numbers() == key.private_numbers()
    with pytest.raises(CryptoError, match=r"missing\.pem"):
        load_private_key(tmp_path / "missing.pem")
    with pytest.raises(CryptoError, match="not a usable private key"):
        load_private_key(b"garbage")

    cert = _self_signed(key)
    cert_der = cert.public_bytes(serialization.Encoding.DER)
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    assert load_certificate(cert_der) == cert
    assert load_certificate(cert_pem) == cert
    pub = public_key_of_cert(cert_der)
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    assert pub.public_numbers() == key.public_key().public_numbers()
    sig = sign(A.ECDSA_P384, BaseHashAlgo.SHA_384, key, b"m")
    assert verify(A.ECDSA_P384, BaseHashAlgo.SHA_384, public_key_of_cert(cert), b"m", sig)
    with pytest.raises(CryptoError, match="certificate"):
        load_certificate(cert_der[:-5])


# --- SPDM 1.2+ signing -----------------------------------------------------------------------


def test_signing_prefix_bytes() -> None:
    # Hand-written from DSP0274 1.2 "Signature generation": 4 x 16-byte version string,
    # zero pad, context string ending at byte 100.
    expected = (
        b"dmtf-spdm-v1.2.*dmtf-spdm-v1.2.*dmtf-spdm-v1.2.*dmtf-spdm-v1.2.*"
        b"\x00\x00\x00\x00"
        b"responder-challenge_auth signing"
    )
    assert len(expected) == 100
    assert signing_prefix(0x12, CHALLENGE_AUTH_SIGN_CONTEXT) == expected
    got = signing_prefix(0x13, KEY_EXCHANGE_RSP_SIGN_CONTEXT)
    assert got == b"dmtf-spdm-v1.3.*" * 4 + b"\x00\x00" + b"responder-key_exchange_rsp signing"
    got = signing_prefix(0x13, MEASUREMENTS_SIGN_CONTEXT)
    assert got == b"dmtf-spdm-v1.3.*" * 4 + bytes(6) + b"responder-measurements signing"
    with pytest.raises(CryptoError, match=r"1\.2"):
        signing_prefix(0x11, CHALLENGE_AUTH_SIGN_CONTEXT)
    with pytest.raises(CryptoError, match="36"):
        signing_prefix(0x12, "x" * 37)


def test_spdm_sign_message_per_version() -> None:
    m = b"M1 transcript"
    for version in (0x10, 0x11):
        assert spdm_sign_message(version, A.ECDSA_P256, BaseHashAlgo.SHA_256, "ctx", m) == m
    h = hashes.Hash(hashes.SHA384())
    h.update(m)
    got = spdm_sign_message(
        0x12, A.RSASSA_2048, BaseHashAlgo.SHA_384, CHALLENGE_AUTH_SIGN_CONTEXT, m
    )
    assert got == signing_prefix(0x12, CHALLENGE_AUTH_SIGN_CONTEXT) + h.finalize()
    assert len(got) == 100 + 48


@pytest.mark.parametrize("version", [0x10, 0x11, 0x12, 0x13])
@pytest.mark.parametrize(
    "asym",
    [A.RSASSA_2048, A.RSAPSS_2048, A.ECDSA_P256, A.ECDSA_P384, A.EDDSA_ED25519],
    ids=lambda a: a.name,
)
def test_spdm_sign_independent(
    keys: dict[BaseAsymAlgo, PrivateKey], version: int, asym: BaseAsymAlgo
) -> None:
    if asym is A.EDDSA_ED25519 and version < 0x12:
        pytest.skip("EdDSA is SPDM 1.2+")
    key = keys[asym]
    transcript = b"\x11\xe1" * 50
    sig = spdm_sign(
        version, asym, BaseHashAlgo.SHA_384, key, CHALLENGE_AUTH_SIGN_CONTEXT, transcript
    )
    if version < 0x12:
        signed = transcript
    else:
        h = hashes.Hash(hashes.SHA384())
        h.update(transcript)
        signed = (
            f"dmtf-spdm-v1.{version & 0xF}.*".encode() * 4
            + b"\x00" * 4
            + b"responder-challenge_auth signing"
            + h.finalize()
        )
    independent_verify(asym, BaseHashAlgo.SHA_384, key, signed, sig)
    assert spdm_verify(
        version,
        asym,
        BaseHashAlgo.SHA_384,
        key.public_key(),
        CHALLENGE_AUTH_SIGN_CONTEXT,
        transcript,
        sig,
    )
    # Another context, another version or another transcript does not verify.
    assert not spdm_verify(
        version,
        asym,
        BaseHashAlgo.SHA_384,
        key.public_key(),
        CHALLENGE_AUTH_SIGN_CONTEXT,
        transcript + b"x",
        sig,
    )
    if version >= 0x12:
        assert not spdm_verify(
            version,
            asym,
            BaseHashAlgo.SHA_384,
            key.public_key(),
            MEASUREMENTS_SIGN_CONTEXT,
            transcript,
            sig,
        )
        other = 0x13 if version == 0x12 else 0x12
        assert not spdm_verify(
            other,
            asym,
            BaseHashAlgo.SHA_384,
            key.public_key(),
            CHALLENGE_AUTH_SIGN_CONTEXT,
            transcript,
            sig,
        )
    # From the transcript hash: same bytes for deterministic algorithms, verifies either way.
    h2 = hashes.Hash(hashes.SHA384())
    h2.update(transcript)
    th = h2.finalize()
    sig2 = spdm_sign_hash(version, asym, BaseHashAlgo.SHA_384, key, CHALLENGE_AUTH_SIGN_CONTEXT, th)
    if asym is not A.RSAPSS_2048:
        assert sig2 == sig
    assert spdm_verify_hash(
        version, asym, BaseHashAlgo.SHA_384, key.public_key(), CHALLENGE_AUTH_SIGN_CONTEXT, th, sig2
    )
    assert spdm_verify(
        version,
        asym,
        BaseHashAlgo.SHA_384,
        key.public_key(),
        CHALLENGE_AUTH_SIGN_CONTEXT,
        transcript,
        sig2,
    )


# --- Ed448 with a context string -------------------------------------------------------------

RFC8032_SEED = bytes.fromhex(
    "c4eab05d357007c632f3dbb48489924d552b08fe0c353a0d4a1f00acda2c463a"
    "fbea67c5e8d2877c5e3bc397a659949ef8021e954e0a12274e"
)
RFC8032_PUBLIC = bytes.fromhex(
    "43ba28f430cdff456ae531545f7ecd0ac834a55d9358c0372bfa0c6c6798c086"
    "6aea01eb00742802b8438ea4cb82169c235160627b4c3a9480"
)
# RFC 8032 section 7.4, "1 octet (with context)": message 03, context "foo".
RFC8032_SIG_FOO = bytes.fromhex(
    "d4f8f6131770dd46f40867d6fd5d5055de43541f8c5e35abbcd001b32a89f7d2"
    "151f7647f11d8ca2ae279fb842d607217fce6e042f6815ea000c85741de5c8da"
    "1144a6a1aba7f96de42505d7a7298524fda538fccbbb754f578c1cad10d54d0d"
    "5428407e85dcbc98a49155c13764e66c3c00"
)
# Same key, "1 octet" without context.
RFC8032_SIG = bytes.fromhex(
    "26b8f91727bd62897af15e41eb43c377efb9c610d48f2335cb0bd0087810f435"
    "2541b143c4b981b7e18f62de8ccdf633fc1bf037ab7cd779805e0dbcc0aae1cb"
    "cee1afb2e027df36bc04dcecbf154336c19f0af7e0a6472905e799f1953d2a0f"
    "f3348ab21aa4adafd1d234441cf807c03a00"
)


def test_ed448_rfc8032_vectors() -> None:
    assert ed448_public_key(RFC8032_SEED) == RFC8032_PUBLIC
    assert ed448_sign(RFC8032_SEED, b"\x03", b"foo") == RFC8032_SIG_FOO
    assert ed448_sign(RFC8032_SEED, b"\x03") == RFC8032_SIG
    assert ed448_verify(RFC8032_PUBLIC, b"\x03", RFC8032_SIG_FOO, b"foo")
    assert not ed448_verify(RFC8032_PUBLIC, b"\x03", RFC8032_SIG_FOO, b"fop")
    assert not ed448_verify(RFC8032_PUBLIC, b"\x03", RFC8032_SIG_FOO)
    key = ed448.Ed448PrivateKey.from_private_bytes(RFC8032_SEED)
    assert key.sign(b"\x03") == RFC8032_SIG  # the vector, through cryptography


def test_ed448_without_context_matches_cryptography(keys: dict[BaseAsymAlgo, PrivateKey]) -> None:
    key = keys[A.EDDSA_ED448]
    assert isinstance(key, ed448.Ed448PrivateKey)
    seed = key.private_bytes_raw()
    message = b"some transcript" * 7
    assert ed448_public_key(seed) == key.public_key().public_bytes_raw()
    assert ed448_sign(seed, message) == key.sign(message)
    key.public_key().verify(ed448_sign(seed, message), message)


def test_spdm_ed448_uses_the_context_string(keys: dict[BaseAsymAlgo, PrivateKey]) -> None:
    key = keys[A.EDDSA_ED448]
    assert isinstance(key, ed448.Ed448PrivateKey)
    transcript = b"L1 transcript"
    sig = spdm_sign(
        0x12, A.EDDSA_ED448, BaseHashAlgo.SHA_512, key, MEASUREMENTS_SIGN_CONTEXT, transcript
    )
    h = hashes.Hash(hashes.SHA512())
    h.update(transcript)
    signed = signing_prefix(0x12, MEASUREMENTS_SIGN_CONTEXT) + h.finalize()
    public = key.public_key().public_bytes_raw()
    assert ed448_verify(public, signed, sig, MEASUREMENTS_SIGN_CONTEXT.encode())
    with pytest.raises(InvalidSignature):  # not an empty-context signature
        key.public_key().verify(sig, signed)
    assert spdm_verify(
        0x12,
        A.EDDSA_ED448,
        BaseHashAlgo.SHA_512,
        key.public_key(),
        MEASUREMENTS_SIGN_CONTEXT,
        transcript,
        sig,
    )
    assert not spdm_verify(
        0x12,
        A.EDDSA_ED448,
        BaseHashAlgo.SHA_512,
        key.public_key(),
        CHALLENGE_AUTH_SIGN_CONTEXT,
        transcript,
        sig,
    )
