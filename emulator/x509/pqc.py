"""X.509 certificates with ML-DSA keys (RFC 9881; FIPS 204), which ``cryptography`` 48
parses but cannot build, sign, or return the key of.

* Building: the certificate is first built by ``cryptography`` with a stand-in Ed25519
  subject key and issuer key (so every extension is encoded by the library); its
  TBSCertificate is then rewritten with the ML-DSA ``signature`` AlgorithmIdentifier and
  the ML-DSA SubjectPublicKeyInfo, signed with ML-DSA (pure, empty context, as RFC 9881
  says) and wrapped as ``Certificate ::= SEQUENCE { tbs, algorithm, BIT STRING }``.
* Reading: the SubjectPublicKeyInfo is cut out of the TBSCertificate and loaded with
  ``load_der_public_key`` (which knows ML-DSA); the issuer's signature is checked with
  the ML-DSA public key over the TBSCertificate bytes.

Algorithm identifiers (RFC 9881 section 2): id-ml-dsa-44/65/87 =
2.16.840.1.101.3.4.3.17/18/19, parameters absent.
"""

from __future__ import annotations

import hashlib
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mldsa

from emulator.x509.chain import CertError

__all__ = [
    "MLDSA_OIDS",
    "MlDsaPrivate",
    "MlDsaPublic",
    "is_mldsa_certificate",
    "mldsa_public_key",
    "mldsa_sign_certificate",
    "mldsa_verify_issued_by",
    "spki_of",
    "subject_key_id",
    "verify_issued_by",
]

MlDsaPrivate = mldsa.MLDSA44PrivateKey | mldsa.MLDSA65PrivateKey | mldsa.MLDSA87PrivateKey
MlDsaPublic = mldsa.MLDSA44PublicKey | mldsa.MLDSA65PublicKey | mldsa.MLDSA87PublicKey

#: parameter set name -> OID (RFC 9881)
MLDSA_OIDS: Final[dict[str, str]] = {
    "ML-DSA-44": "2.16.840.1.101.3.4.3.17",
    "ML-DSA-65": "2.16.840.1.101.3.4.3.18",
    "ML-DSA-87": "2.16.840.1.101.3.4.3.19",
}
_OID_DER: Final[dict[str, bytes]] = {
    name: b"\x06\x09\x60\x86\x48\x01\x65\x03\x04\x03" + bytes([0x11 + i])
    for i, name in enumerate(MLDSA_OIDS)
}


def _param_set(key: object) -> str:
    for name, classes in (
        ("ML-DSA-44", (mldsa.MLDSA44PrivateKey, mldsa.MLDSA44PublicKey)),
        ("ML-DSA-65", (mldsa.MLDSA65PrivateKey, mldsa.MLDSA65PublicKey)),
        ("ML-DSA-87", (mldsa.MLDSA87PrivateKey, mldsa.MLDSA87PublicKey)),
    ):
        if isinstance(key, classes):
            return name
    raise CertError(f"key: {type(key).__name__} is not an ML-DSA key")


# --- minimal DER (definite lengths only, as X.509 DER is) ---------------------------------


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _len(len(body)) + body


def _elements(der: bytes) -> list[bytes]:
    """The TLVs (whole, tag and length included) of one constructed value's contents."""
    out: list[bytes] = []
    off = 0
    while off < len(der):
        if off + 2 > len(der):
            raise CertError("DER: truncated element")
        first = der[off + 1]
        head = 2
        if first & 0x80:
            n = first & 0x7F
            if n == 0 or n > 4 or off + 2 + n > len(der):
                raise CertError("DER: bad length")
            size = int.from_bytes(der[off + 2 : off + 2 + n], "big")
            head += n
        else:
            size = first
        end = off + head + size
        if end > len(der):
            raise CertError("DER: element runs past its container")
        out.append(der[off:end])
        off = end
    return out


def _contents(tlv: bytes) -> bytes:
    first = tlv[1]
    head = 2 + (first & 0x7F if first & 0x80 else 0)
    return tlv[head:]


def _tbs_fields(tbs: bytes) -> list[bytes]:
    fields = _elements(_contents(tbs))
    if len(fields) < 7 or fields[0][0] != 0xA0:
        raise CertError("TBSCertificate: not an X.509 v3 TBSCertificate")
    return fields


def spki_of(cert: x509.Certificate) -> bytes:
    """The DER SubjectPublicKeyInfo of a certificate (field 7 of its TBSCertificate)."""
    return _tbs_fields(cert.tbs_certificate_bytes)[6]


def subject_key_id(public_key: MlDsaPublic) -> bytes:
    """RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING value."""
    raw = public_key.public_bytes_raw()
    return hashlib.sha1(raw, usedforsecurity=False).digest()


# --- building -------------------------------------------------------------------------------


def mldsa_sign_certificate(
    stand_in: x509.Certificate, subject_key: MlDsaPublic, issuer_key: MlDsaPrivate
) -> x509.Certificate:
    """Re-sign ``stand_in`` (built with stand-in keys) as an ML-DSA certificate of
    ``subject_key`` issued by ``issuer_key``; all other TBSCertificate fields are kept."""
    issuer_set = _param_set(issuer_key)
    alg_id = _tlv(0x30, _OID_DER[issuer_set])
    spki = subject_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fields = _tbs_fields(stand_in.tbs_certificate_bytes)
    fields[2] = alg_id
    fields[6] = spki
    tbs = _tlv(0x30, b"".join(fields))
    signature = issuer_key.sign(tbs)
    der = _tlv(0x30, tbs + alg_id + _tlv(0x03, b"\x00" + signature))
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:  # pragma: no cover - we built it
        raise CertError(f"ML-DSA certificate does not parse back ({exc})") from None


# --- reading --------------------------------------------------------------------------------


def is_mldsa_certificate(cert: x509.Certificate) -> bool:
    """True if the certificate's subject key is an ML-DSA key."""
    return cert.public_key_algorithm_oid.dotted_string in MLDSA_OIDS.values()


def mldsa_public_key(cert: x509.Certificate) -> MlDsaPublic:
    """The ML-DSA subject public key of ``cert``; CertError if it has none."""
    try:
        key = serialization.load_der_public_key(spki_of(cert))
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertError(f"certificate SubjectPublicKeyInfo: unusable ({exc})") from None
    if not isinstance(
        key, mldsa.MLDSA44PublicKey | mldsa.MLDSA65PublicKey | mldsa.MLDSA87PublicKey
    ):
        raise CertError(f"certificate: {type(key).__name__} is not an ML-DSA key")
    return key


def mldsa_verify_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    """CertError unless ``issuer`` issued ``cert`` (names and ML-DSA signature)."""
    if cert.issuer != issuer.subject:
        raise CertError("issuer name does not match the issuer's subject")
    oid = cert.signature_algorithm_oid.dotted_string
    if oid not in MLDSA_OIDS.values():
        raise CertError(f"signature algorithm {oid} is not ML-DSA")
    key = mldsa_public_key(issuer)
    if MLDSA_OIDS[_param_set(key)] != oid:
        raise CertError("the issuer's ML-DSA parameter set differs from the signature's")
    try:
        key.verify(cert.signature, cert.tbs_certificate_bytes)
    except InvalidSignature:
        raise CertError("ML-DSA certificate signature is invalid") from None


def verify_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    """``cert.verify_directly_issued_by(issuer)`` for every key type, ML-DSA included.

    Raises what ``cryptography`` raises (ValueError, TypeError, InvalidSignature) for the
    classic algorithms and CertError for ML-DSA.
    """
    if is_mldsa_certificate(issuer):
        mldsa_verify_issued_by(cert, issuer)
    else:
        cert.verify_directly_issued_by(issuer)
