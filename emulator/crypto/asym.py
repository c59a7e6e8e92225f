"""Signature algorithms of DSP0274 (BaseAsymAlgo / ReqBaseAsymAlg) and the SPDM signing rules.

Wire format of a signature (DSP0274 table "BaseAsymAlgo", as libspdm produces it):

* RSASSA_2048/3072/4096: RSASSA-PKCS1-v1_5, the usual big-endian octet string
  of the modulus size (256/384/512 bytes).
* RSAPSS_2048/3072/4096: RSASSA-PSS, MGF1 with the same hash, salt length =
  the hash digest length (libspdm ``RSA_PSS_SALTLEN_DIGEST``); 256/384/512 bytes.
  PSS is randomised: two signatures of the same data differ.
* ECDSA_P256/P384/P521: raw ``r || s``, each big-endian and left-padded to the
  coordinate size (32/48/66 bytes, so 64/96/132 bytes).  Signing here is
  deterministic (RFC 6979), so a fixed key and fixed data give fixed bytes.
* EDDSA_ED25519 / EDDSA_ED448: RFC 8032 PureEdDSA ``R || S`` (64 / 114 bytes).
* SM2_P256: defined (64 bytes) but not supported: ``cryptography`` has no SM2.
* ML-DSA-44/65/87 (SPDM 1.4 PqcAsymAlgo, FIPS 204): the 2420 / 3309 / 4627-byte
  signature of FIPS 204 ``ML-DSA.Sign`` (pure, hedged: randomised by OpenSSL, so
  bytes differ on every call; a seed cannot fix them).  ``cryptography`` 48 has no
  SLH-DSA, so those PqcAsymAlgo bits are refused (CryptoError naming the bit).

Internal ids: a BaseAsymAlgo bit is used as is; a PqcAsymAlgo bit is shifted left by
:data:`~emulator.codec.constants.PQC_ASYM_SHIFT` (32), so one ``asym`` int names any
negotiated signature algorithm (``signing_algo(base_sel, pqc_sel)``).

Low level (:func:`sign`, :func:`verify`): RSA and ECDSA hash ``message`` with
``hash_algo`` inside the primitive (the standard "sign a message" operation);
EdDSA signs ``message`` itself (pure EdDSA) and ignores ``hash_algo``.

SPDM level (:func:`spdm_sign`, :func:`spdm_verify`), DSP0274 "Signature
generation" and libspdm ``libspdm_asym_sign`` / ``libspdm_asym_verify_ex``:

* SPDM 1.0 / 1.1: the signed data is the message ``M`` (e.g. M1, L1, the TH
  transcript) itself.  RSA/ECDSA sign ``M`` with the negotiated hash, i.e. the
  primitive sees ``Hash(M)``.  EdDSA would sign ``M``; libspdm refuses EdDSA
  before 1.2 (its EdDSA wrapper fails unless the hash NID is NULL), and the
  EdDSA bits only exist from 1.2 on.  libspdm's requester can also be told to
  accept little-endian RSA/ECDSA signatures for 1.0/1.1; we always produce and
  check big-endian.
* SPDM 1.2+: the signed data is ``combined_spdm_prefix || Hash(M)`` (100 + H
  bytes, see :func:`signing_prefix`).  RSA/ECDSA then sign that with the
  negotiated hash (the primitive sees ``Hash(prefix || Hash(M))``); Ed25519
  signs it directly (PureEdDSA, empty context); Ed448 signs it directly with
  the RFC 8032 context ``C`` = the SPDM context string (e.g.
  ``b"responder-challenge_auth signing"``), as libspdm passes
  ``libspdm_get_signing_context_string`` to ``libspdm_eddsa_sign``.
* SPDM 1.4 ML-DSA (libspdm ``libspdm_pqc_asym_sign``): ML-DSA signs
  ``combined_spdm_prefix || Hash(M)`` with the FIPS 204 context string = the SPDM
  context string (e.g. ``b"responder-key_exchange_rsp signing"``), as for Ed448.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from enum import Enum
from typing import cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import (
    ec,
    ed448,
    ed25519,
    mldsa,
    padding,
    rsa,
    utils,
)

from emulator.codec.constants import (
    PQC_ASYM_SHIFT,
    BaseAsymAlgo,
    PqcAsymAlgo,
    signing_algo_name,
)
from emulator.crypto._ed448 import ed448_sign, ed448_verify
from emulator.crypto.hashes import cryptography_hash, digest, hash_size, single_bit
from emulator.errors import CryptoError

__all__ = [
    "CHALLENGE_AUTH_SIGN_CONTEXT",
    "ENDPOINT_INFO_SIGN_CONTEXT",
    "FINISH_SIGN_CONTEXT",
    "KEY_EXCHANGE_RSP_SIGN_CONTEXT",
    "MEASUREMENTS_SIGN_CONTEXT",
    "MUT_CHALLENGE_AUTH_SIGN_CONTEXT",
    "MUT_ENDPOINT_INFO_SIGN_CONTEXT",
    "SIGNING_CONTEXT_SIZE",
    "MlDsaPrivateKey",
    "MlDsaPublicKey",
    "PrivateKey",
    "PublicKey",
    "asym_algo_for_key",
    "check_key_matches",
    "is_pqc",
    "load_certificate",
    "load_private_key",
    "public_key_of_cert",
    "sign",
    "sign_digest",
    "signature_size",
    "signing_prefix",
    "spdm_sign",
    "spdm_sign_hash",
    "spdm_sign_message",
    "spdm_sign_message_from_hash",
    "spdm_verify",
    "spdm_verify_hash",
    "verify",
    "verify_digest",
]

MlDsaPrivateKey = mldsa.MLDSA44PrivateKey | mldsa.MLDSA65PrivateKey | mldsa.MLDSA87PrivateKey
MlDsaPublicKey = mldsa.MLDSA44PublicKey | mldsa.MLDSA65PublicKey | mldsa.MLDSA87PublicKey
PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
    | MlDsaPrivateKey
)
PublicKey = (
    rsa.RSAPublicKey
    | ec.EllipticCurvePublicKey
    | ed25519.Ed25519PublicKey
    | ed448.Ed448PublicKey
    | MlDsaPublicKey
)
_PRIVATE_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    mldsa.MLDSA44PrivateKey,
    mldsa.MLDSA65PrivateKey,
    mldsa.MLDSA87PrivateKey,
)
_PUBLIC_TYPES = (
    rsa.RSAPublicKey,
    ec.EllipticCurvePublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
    mldsa.MLDSA44PublicKey,
    mldsa.MLDSA65PublicKey,
    mldsa.MLDSA87PublicKey,
)

# SPDM context strings (DSP0274 1.2+ "Signature generation"; libspdm spdm.h *_SIGN_CONTEXT).
CHALLENGE_AUTH_SIGN_CONTEXT = "responder-challenge_auth signing"
MUT_CHALLENGE_AUTH_SIGN_CONTEXT = "requester-challenge_auth signing"
MEASUREMENTS_SIGN_CONTEXT = "responder-measurements signing"
KEY_EXCHANGE_RSP_SIGN_CONTEXT = "responder-key_exchange_rsp signing"
FINISH_SIGN_CONTEXT = "requester-finish signing"
ENDPOINT_INFO_SIGN_CONTEXT = "responder-endpoint_info signing"
MUT_ENDPOINT_INFO_SIGN_CONTEXT = "requester-endpoint_info signing"

#: Size of the combined SPDM prefix (spdm.h SPDM_VERSION_1_2_SIGNING_CONTEXT_SIZE).
SIGNING_CONTEXT_SIZE = 100
_PREFIX_REPEAT = 4
_CONTEXT_FIELD = SIGNING_CONTEXT_SIZE - _PREFIX_REPEAT * 16  # 36 bytes: zero pad + context


class _Family(Enum):
    RSASSA = "RSASSA"
    RSAPSS = "RSAPSS"
    ECDSA = "ECDSA"
    ED25519 = "Ed25519"
    ED448 = "Ed448"
    SM2 = "SM2"
    MLDSA = "ML-DSA"
    SLHDSA = "SLH-DSA"


@dataclass(frozen=True)
class _AsymInfo:
    family: _Family
    signature_size: int
    rsa_bits: int = 0
    curve: type[ec.EllipticCurve] | None = None


_ASYM: dict[BaseAsymAlgo, _AsymInfo] = {
    BaseAsymAlgo.RSASSA_2048: _AsymInfo(_Family.RSASSA, 256, rsa_bits=2048),
    BaseAsymAlgo.RSAPSS_2048: _AsymInfo(_Family.RSAPSS, 256, rsa_bits=2048),
    BaseAsymAlgo.RSASSA_3072: _AsymInfo(_Family.RSASSA, 384, rsa_bits=3072),
    BaseAsymAlgo.RSAPSS_3072: _AsymInfo(_Family.RSAPSS, 384, rsa_bits=3072),
    BaseAsymAlgo.RSASSA_4096: _AsymInfo(_Family.RSASSA, 512, rsa_bits=4096),
    BaseAsymAlgo.RSAPSS_4096: _AsymInfo(_Family.RSAPSS, 512, rsa_bits=4096),
    BaseAsymAlgo.ECDSA_P256: _AsymInfo(_Family.ECDSA, 64, curve=ec.SECP256R1),
    BaseAsymAlgo.ECDSA_P384: _AsymInfo(_Family.ECDSA, 96, curve=ec.SECP384R1),
    BaseAsymAlgo.ECDSA_P521: _AsymInfo(_Family.ECDSA, 132, curve=ec.SECP521R1),
    BaseAsymAlgo.SM2_P256: _AsymInfo(_Family.SM2, 64),
    BaseAsymAlgo.EDDSA_ED25519: _AsymInfo(_Family.ED25519, 64),
    BaseAsymAlgo.EDDSA_ED448: _AsymInfo(_Family.ED448, 114),
}

#: PqcAsymAlgo bit -> (FIPS 204 parameter set, signature size, public key size, key classes)
_MLDSA: dict[PqcAsymAlgo, tuple[int, type[object], type[object]]] = {
    PqcAsymAlgo.ML_DSA_44: (2420, mldsa.MLDSA44PrivateKey, mldsa.MLDSA44PublicKey),
    PqcAsymAlgo.ML_DSA_65: (3309, mldsa.MLDSA65PrivateKey, mldsa.MLDSA65PublicKey),
    PqcAsymAlgo.ML_DSA_87: (4627, mldsa.MLDSA87PrivateKey, mldsa.MLDSA87PublicKey),
}
#: FIPS 205 signature sizes (libspdm ``libspdm_get_pqc_asym_signature_size``); not signable here
_SLHDSA_SIZES: dict[PqcAsymAlgo, int] = {
    PqcAsymAlgo.SLH_DSA_SHA2_128S: 7856,
    PqcAsymAlgo.SLH_DSA_SHAKE_128S: 7856,
    PqcAsymAlgo.SLH_DSA_SHA2_128F: 17088,
    PqcAsymAlgo.SLH_DSA_SHAKE_128F: 17088,
    PqcAsymAlgo.SLH_DSA_SHA2_192S: 16224,
    PqcAsymAlgo.SLH_DSA_SHAKE_192S: 16224,
    PqcAsymAlgo.SLH_DSA_SHA2_192F: 35664,
    PqcAsymAlgo.SLH_DSA_SHAKE_192F: 35664,
    PqcAsymAlgo.SLH_DSA_SHA2_256S: 29792,
    PqcAsymAlgo.SLH_DSA_SHAKE_256S: 29792,
    PqcAsymAlgo.SLH_DSA_SHA2_256F: 49856,
    PqcAsymAlgo.SLH_DSA_SHAKE_256F: 49856,
}
for _bit, (_size, _priv, _pub) in _MLDSA.items():
    _ASYM[_bit << PQC_ASYM_SHIFT] = _AsymInfo(_Family.MLDSA, _size)  # type: ignore[index]
for _bit, _size in _SLHDSA_SIZES.items():
    _ASYM[_bit << PQC_ASYM_SHIFT] = _AsymInfo(_Family.SLHDSA, _size)  # type: ignore[index]

_RSA_BITS: dict[int, BaseAsymAlgo] = {
    2048: BaseAsymAlgo.RSASSA_2048 | BaseAsymAlgo.RSAPSS_2048,
    3072: BaseAsymAlgo.RSASSA_3072 | BaseAsymAlgo.RSAPSS_3072,
    4096: BaseAsymAlgo.RSASSA_4096 | BaseAsymAlgo.RSAPSS_4096,
}
_EC_CURVES: dict[str, BaseAsymAlgo] = {
    "secp256r1": BaseAsymAlgo.ECDSA_P256,
    "secp384r1": BaseAsymAlgo.ECDSA_P384,
    "secp521r1": BaseAsymAlgo.ECDSA_P521,
}


class _Bit(int):
    """An internal signature-algorithm id with a ``name`` (for error messages)."""

    @property
    def name(self) -> str:
        return signing_algo_name(int(self))


@functools.lru_cache(maxsize=128)
def _asym(asym: int) -> tuple[_Bit, _AsymInfo]:
    """The single algorithm bit of ``asym`` and its facts (worked out once per id)."""
    if asym >> PQC_ASYM_SHIFT:
        if asym & ((1 << PQC_ASYM_SHIFT) - 1):
            raise CryptoError(f"signature algorithm 0x{asym:X}: both BaseAsymAlgo and PqcAsymAlgo")
        pqc = single_bit(PqcAsymAlgo, asym >> PQC_ASYM_SHIFT, "PqcAsymAlgo")
        return _Bit(pqc << PQC_ASYM_SHIFT), _ASYM[pqc << PQC_ASYM_SHIFT]  # type: ignore[index]
    bit = single_bit(BaseAsymAlgo, asym, "BaseAsymAlgo")
    return _Bit(bit), _ASYM[bit]


def signature_size(asym: int) -> int:
    """Signature size in bytes of a signature algorithm id (DSP0274 tables "BaseAsymAlgo",
    1.4 "PqcAsymAlgo")."""
    return _asym(asym)[1].signature_size


def is_pqc(asym: int) -> bool:
    """True for an internal id naming a PqcAsymAlgo (SPDM 1.4) algorithm."""
    return bool(asym >> PQC_ASYM_SHIFT)


def _describe(key: object) -> str:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return f"RSA-{key.key_size} key"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name} key"
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "Ed25519 key"
    if isinstance(key, ed448.Ed448PrivateKey | ed448.Ed448PublicKey):
        return "Ed448 key"
    for bit, (_size, priv, pub) in _MLDSA.items():
        if isinstance(key, priv | pub):
            return f"{signing_algo_name(bit).replace('_', '-')} key"
    return f"{type(key).__name__}"


def asym_algo_for_key(key: PrivateKey | PublicKey) -> int:
    """The signature algorithm ids a key can serve (an RSA-3072 key -> RSASSA_3072 |
    RSAPSS_3072; an ML-DSA-65 key -> ML_DSA_65 << 32).

    An unsupported key (RSA of another size, another curve, another key type)
    gives 0.
    """
    for bit, (_size, priv, pub) in _MLDSA.items():
        if isinstance(key, priv | pub):
            return int(bit) << PQC_ASYM_SHIFT
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return _RSA_BITS.get(key.key_size, BaseAsymAlgo(0))
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return _EC_CURVES.get(key.curve.name, BaseAsymAlgo(0))
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return BaseAsymAlgo.EDDSA_ED25519
    if isinstance(key, ed448.Ed448PrivateKey | ed448.Ed448PublicKey):
        return BaseAsymAlgo.EDDSA_ED448
    return BaseAsymAlgo(0)


def check_key_matches(asym: int, key: PrivateKey | PublicKey) -> None:
    """CryptoError unless ``key`` can produce/check signatures of the BaseAsymAlgo bit ``asym``.

    A key that passed once for ``asym`` is remembered (by identity: the entry holds the
    key, so its id stays its own), so a device key is checked once, not per signature."""
    if _MATCHED.get((id(key), asym)) is key:
        return
    bit, info = _asym(asym)
    if info.family is _Family.SM2:
        raise CryptoError(f"BaseAsymAlgo {bit.name}: not supported")
    if info.family is _Family.SLHDSA:
        raise CryptoError(f"PqcAsymAlgo {bit.name}: not supported (cryptography has no SLH-DSA)")
    if not asym_algo_for_key(key) & bit:
        raise CryptoError(f"{bit.name}: does not match the {_describe(key)}")
    if len(_MATCHED) >= _MATCHED_MAX:
        _MATCHED.clear()
    _MATCHED[(id(key), int(asym))] = key


#: (id(key), asym) -> key, for the keys :func:`check_key_matches` accepted
_MATCHED: dict[tuple[int, int], object] = {}
_MATCHED_MAX = 1024


def _check_version(version: int) -> tuple[int, int]:
    major, minor = version >> 4, version & 0xF
    if major != 1 or minor > 9:
        raise CryptoError(f"SPDM version 0x{version:02X}: not an SPDM 1.x version")
    return major, minor


def _ecdsa(algorithm: utils.Prehashed | hashes.HashAlgorithm) -> ec.ECDSA:
    """Deterministic ECDSA (RFC 6979) with ``algorithm`` (one object per algorithm)."""
    if isinstance(algorithm, utils.Prehashed):
        return ec.ECDSA(algorithm, deterministic_signing=True)
    shared = _ECDSA_BY_HASH.get(algorithm.name)
    if shared is None:
        shared = _ECDSA_BY_HASH[algorithm.name] = ec.ECDSA(algorithm, deterministic_signing=True)
    return shared


_ECDSA_BY_HASH: dict[str, ec.ECDSA] = {}


def _ecdsa_raw(der: bytes, size: int) -> bytes:
    r, s = utils.decode_dss_signature(der)
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def _ecdsa_der(raw: bytes) -> bytes | None:
    half = len(raw) // 2
    r = int.from_bytes(raw[:half], "big")
    s = int.from_bytes(raw[half:], "big")
    if r == 0 or s == 0:
        return None
    return utils.encode_dss_signature(r, s)


def _sign(
    asym: int,
    hash_algo: int,
    key: PrivateKey,
    data: bytes,
    prehashed: bool,
    ed448_context: bytes,
) -> bytes:
    bit, info = _asym(asym)
    check_key_matches(bit, key)
    data = bytes(data)
    if info.family is _Family.MLDSA:
        if prehashed:
            raise CryptoError(f"{bit.name}: ML-DSA signs the message, not a digest")
        assert isinstance(key, MlDsaPrivateKey)
        return key.sign(data, bytes(ed448_context) or None)
    if info.family in (_Family.ED25519, _Family.ED448):
        if prehashed:
            raise CryptoError(f"BaseAsymAlgo {bit.name}: EdDSA signs the message, not a digest")
        if isinstance(key, ed448.Ed448PrivateKey) and ed448_context:
            return ed448_sign(key.private_bytes_raw(), data, bytes(ed448_context))
        assert isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        return key.sign(data)
    h = cryptography_hash(hash_algo)
    if prehashed and len(data) != h.digest_size:
        raise CryptoError(f"message hash: {len(data)} bytes, {h.name} gives {h.digest_size}")
    algorithm: utils.Prehashed | hashes.HashAlgorithm = utils.Prehashed(h) if prehashed else h
    if info.family is not _Family.ECDSA:  # RSA (check_key_matches made sure of the key)
        assert isinstance(key, rsa.RSAPrivateKey)
        pad: padding.AsymmetricPadding
        if info.family is _Family.RSASSA:
            pad = padding.PKCS1v15()
        else:
            pad = padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size)
        return key.sign(data, pad, algorithm)
    der = cast(ec.EllipticCurvePrivateKey, key).sign(data, _ecdsa(algorithm))
    return _ecdsa_raw(der, info.signature_size // 2)


def _verify(
    asym: int,
    hash_algo: int,
    key: PublicKey,
    data: bytes,
    signature: bytes,
    prehashed: bool,
    ed448_context: bytes,
) -> bool:
    bit, info = _asym(asym)
    check_key_matches(bit, key)
    data = bytes(data)
    signature = bytes(signature)
    if len(signature) != info.signature_size:
        return False
    if info.family is _Family.MLDSA:
        if prehashed:
            raise CryptoError(f"{bit.name}: ML-DSA signs the message, not a digest")
        assert isinstance(key, MlDsaPublicKey)
        try:
            key.verify(signature, data, bytes(ed448_context) or None)
        except InvalidSignature:
            return False
        return True
    if info.family in (_Family.ED25519, _Family.ED448):
        if prehashed:
            raise CryptoError(f"BaseAsymAlgo {bit.name}: EdDSA signs the message, not a digest")
        if isinstance(key, ed448.Ed448PublicKey) and ed448_context:
            return ed448_verify(key.public_bytes_raw(), data, signature, bytes(ed448_context))
        assert isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
        try:
            key.verify(signature, data)
        except InvalidSignature:
            return False
        return True
    h = cryptography_hash(hash_algo)
    if prehashed and len(data) != h.digest_size:
        raise CryptoError(f"message hash: {len(data)} bytes, {h.name} gives {h.digest_size}")
    algorithm: utils.Prehashed | hashes.HashAlgorithm = utils.Prehashed(h) if prehashed else h
    try:
        if isinstance(key, rsa.RSAPublicKey):
            pad: padding.AsymmetricPadding
            if info.family is _Family.RSASSA:
                pad = padding.PKCS1v15()
            else:
                pad = padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size)
            key.verify(signature, data, pad, algorithm)
            return True
        assert isinstance(key, ec.EllipticCurvePublicKey)
        der = _ecdsa_der(signature)
        if der is None:
            return False
        key.verify(der, data, ec.ECDSA(algorithm))
        return True
    except InvalidSignature:
        return False


def sign(
    asym: int,
    hash_algo: int,
    private_key: PrivateKey,
    message: bytes,
    *,
    ed448_context: bytes = b"",
) -> bytes:
    """Sign ``message`` in the wire format of ``asym`` (see the module docstring).

    RSA/ECDSA hash ``message`` with ``hash_algo`` (a BaseHashAlgo bit); EdDSA
    ignores ``hash_algo`` and signs ``message`` (Ed448 with ``ed448_context``).
    RSASSA, ECDSA (RFC 6979) and EdDSA are deterministic; RSAPSS is randomised
    by ``cryptography`` (random salt), so its bytes differ on every call.
    """
    return _sign(asym, hash_algo, private_key, message, False, ed448_context)


def sign_digest(asym: int, hash_algo: int, private_key: PrivateKey, message_hash: bytes) -> bytes:
    """RSA/ECDSA signature over an already computed ``Hash(message)`` (same bytes as :func:`sign`).

    EdDSA cannot sign a digest: CryptoError.
    """
    return _sign(asym, hash_algo, private_key, message_hash, True, b"")


def verify(
    asym: int,
    hash_algo: int,
    public_key: PublicKey,
    message: bytes,
    signature: bytes,
    *,
    ed448_context: bytes = b"",
) -> bool:
    """True if ``signature`` (wire format of ``asym``) is valid for ``message``.

    A signature of the wrong length or with ECDSA r or s = 0 is simply invalid
    (False); a key that cannot serve ``asym`` raises CryptoError.
    """
    return _verify(asym, hash_algo, public_key, message, signature, False, ed448_context)


def verify_digest(
    asym: int, hash_algo: int, public_key: PublicKey, message_hash: bytes, signature: bytes
) -> bool:
    """RSA/ECDSA check against an already computed ``Hash(message)``."""
    return _verify(asym, hash_algo, public_key, message_hash, signature, True, b"")


# --- keys and certificates -------------------------------------------------------------------


def _check_private(key: object, where: str) -> PrivateKey:
    if isinstance(key, _PRIVATE_TYPES):
        return key
    raise CryptoError(f"{where}: unsupported private key type {type(key).__name__}")


def load_private_key(source: bytes | str | os.PathLike[str]) -> PrivateKey:
    """Load an unencrypted private key (PKCS#8 or traditional; PEM or DER).

    ``source`` is the key itself (``bytes``) or a path to a file holding it.
    """
    if isinstance(source, bytes | bytearray):
        where = "private key"
        data = bytes(source)
    else:
        where = os.fspath(source)
        try:
            with open(source, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise CryptoError(f"{where}: cannot read private key ({exc.strerror})") from None
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CryptoError(f"{where}: not a usable private key ({exc})") from None
    return _check_private(key, where)


def load_certificate(data: bytes) -> x509.Certificate:
    """Parse one X.509 certificate, PEM or DER."""
    data = bytes(data)
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise CryptoError(f"certificate: does not parse ({exc})") from None


def public_key_of_cert(cert: bytes | x509.Certificate) -> PublicKey:
    """The subject public key of a certificate (DER/PEM bytes or a parsed certificate)."""
    if not isinstance(cert, x509.Certificate):
        cert = load_certificate(cert)
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CryptoError(f"certificate SubjectPublicKeyInfo: unusable ({exc})") from None
    if isinstance(key, _PUBLIC_TYPES):
        return key
    raise CryptoError(
        f"certificate SubjectPublicKeyInfo: unsupported key type {type(key).__name__}"
    )


# --- SPDM 1.2+ signing -----------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def signing_prefix(version: int, context: str) -> bytes:
    """The 100-byte "combined SPDM prefix" of DSP0274 1.2+ ("Signature generation"),
    made once per version and context.

    ``"dmtf-spdm-v1.X.*"`` four times (64 bytes), then zero bytes so that the
    context string ends at byte 100: ``36 - len(context)`` zeros, then the
    context (libspdm ``libspdm_create_signing_context``).
    """
    major, minor = _check_version(version)
    if version < 0x12:
        raise CryptoError(f"SPDM version {major}.{minor}: has no signing prefix (1.2+ only)")
    try:
        raw = context.encode("ascii")
    except UnicodeEncodeError:
        raw = bytes(_CONTEXT_FIELD + 1)
    if len(raw) > _CONTEXT_FIELD:
        raise CryptoError(f"signing context {context!r}: must be ASCII, at most 36 bytes")
    prefix = f"dmtf-spdm-v{major}.{minor}.*".encode("ascii") * _PREFIX_REPEAT
    return prefix + bytes(_CONTEXT_FIELD - len(raw)) + raw


def spdm_sign_message(
    version: int, asym: int, hash_algo: int, context: str, message: bytes
) -> bytes:
    """The exact data given to the signature primitive for message ``M`` (the transcript).

    SPDM 1.0/1.1: ``M`` itself.  SPDM 1.2+: ``signing_prefix(version, context)
    || Hash(M)``.  Independent of the algorithm family (``asym`` is only
    checked); what the primitive does with it is described in the module
    docstring.
    """
    _asym(asym)
    _check_version(version)
    if version < 0x12:
        return bytes(message)
    return signing_prefix(version, context) + digest(hash_algo, message)


def spdm_sign_message_from_hash(
    version: int, hash_algo: int, context: str, message_hash: bytes
) -> bytes:
    """SPDM 1.2+ signed data from an already computed ``Hash(M)``: ``prefix || Hash(M)``."""
    if len(message_hash) != hash_size(hash_algo):
        raise CryptoError(
            f"message hash: {len(message_hash)} bytes, expected {hash_size(hash_algo)}"
        )
    return signing_prefix(version, context) + bytes(message_hash)


def _ed448_context(version: int, asym: int, context: str) -> bytes:
    """The context string given to the primitive: Ed448 (1.2+) and ML-DSA (1.4) only."""
    _bit, info = _asym(asym)
    if version >= 0x12 and info.family in (_Family.ED448, _Family.MLDSA):
        return context.encode("ascii")
    return b""


def spdm_sign(
    version: int,
    asym: int,
    hash_algo: int,
    private_key: PrivateKey,
    context: str,
    message: bytes,
) -> bytes:
    """Sign transcript ``M`` the way DSP0274 (and libspdm ``libspdm_asym_sign``) does per version.

    ``context`` is one of the ``*_SIGN_CONTEXT`` strings (ignored before 1.2).
    """
    data = spdm_sign_message(version, asym, hash_algo, context, message)
    return sign(
        asym, hash_algo, private_key, data, ed448_context=_ed448_context(version, asym, context)
    )


def spdm_sign_hash(
    version: int,
    asym: int,
    hash_algo: int,
    private_key: PrivateKey,
    context: str,
    message_hash: bytes,
) -> bytes:
    """As :func:`spdm_sign` from ``Hash(M)`` (libspdm ``libspdm_asym_sign_hash``).

    Same bytes as :func:`spdm_sign` on ``M``.  Before 1.2 only RSA/ECDSA can
    sign a digest (EdDSA: CryptoError).
    """
    _check_version(version)
    if version < 0x12:
        return sign_digest(asym, hash_algo, private_key, message_hash)
    data = spdm_sign_message_from_hash(version, hash_algo, context, message_hash)
    return sign(
        asym, hash_algo, private_key, data, ed448_context=_ed448_context(version, asym, context)
    )


def spdm_verify(
    version: int,
    asym: int,
    hash_algo: int,
    public_key: PublicKey,
    context: str,
    message: bytes,
    signature: bytes,
) -> bool:
    """Check a signature made by :func:`spdm_sign` (big-endian signatures only)."""
    data = spdm_sign_message(version, asym, hash_algo, context, message)
    return verify(
        asym,
        hash_algo,
        public_key,
        data,
        signature,
        ed448_context=_ed448_context(version, asym, context),
    )


def spdm_verify_hash(
    version: int,
    asym: int,
    hash_algo: int,
    public_key: PublicKey,
    context: str,
    message_hash: bytes,
    signature: bytes,
) -> bool:
    """Check a signature over transcript ``M`` given only ``Hash(M)``."""
    _check_version(version)
    if version < 0x12:
        return verify_digest(asym, hash_algo, public_key, message_hash, signature)
    data = spdm_sign_message_from_hash(version, hash_algo, context, message_hash)
    return verify(
        asym,
        hash_algo,
        public_key,
        data,
        signature,
        ed448_context=_ed448_context(version, asym, context),
    )
