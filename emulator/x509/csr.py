"""PKCS#10 certification requests (RFC 2986) for GET_CSR (DSP0274 1.2 10.13).

The requester may send ``RequesterInfo``: a DER CertificationRequestInfo whose subject
and attributes the device copies into its CSR (its SubjectPublicKeyInfo is ignored: the
CSR carries the device's own key).  :func:`parse_requester_info` checks it as libspdm's
``libspdm_verify_req_info`` does (SEQUENCE of version 0, a Name, a SubjectPublicKeyInfo
and ``[0]`` attributes, each attribute a SEQUENCE of an OID and a SET), and
:func:`build_csr` signs the request with the key pair's private key.

Signature algorithms: ECDSA and RSASSA-PKCS1-v1_5 with SHA-256/384/512 (a SHA3 base hash
maps to the SHA-2 hash of its size, as X.509 stacks rarely verify SHA3 signatures),
Ed25519 and Ed448 (PureEdDSA).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa

from emulator.crypto import PrivateKey
from emulator.x509 import der
from emulator.x509.chain import CertError

__all__ = [
    "OID_EXTENSION_REQUEST",
    "RequesterInfo",
    "build_csr",
    "csr_hash_for",
    "default_attributes",
    "device_subject",
    "parse_requester_info",
]

#: PKCS#9 extensionRequest
OID_EXTENSION_REQUEST = "1.2.840.113549.1.9.14"

_ECDSA_OIDS = {
    "sha256": "1.2.840.10045.4.3.2",
    "sha384": "1.2.840.10045.4.3.3",
    "sha512": "1.2.840.10045.4.3.4",
}
_RSA_OIDS = {
    "sha256": "1.2.840.113549.1.1.11",
    "sha384": "1.2.840.113549.1.1.12",
    "sha512": "1.2.840.113549.1.1.13",
}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


@dataclass(frozen=True, slots=True)
class RequesterInfo:
    """What the device takes from a RequesterInfo: the subject Name and the attributes
    (each a whole DER Attribute)."""

    subject: bytes
    attributes: tuple[bytes, ...] = ()

    @property
    def has_subject(self) -> bool:
        """False for an empty Name (``30 00``): the device then uses its own subject."""
        return self.subject != b"\x30\x00"


def parse_requester_info(data: bytes) -> RequesterInfo | None:
    """The subject and attributes of a DER CertificationRequestInfo (None when empty);
    CertError naming the field that is wrong."""
    if not data:
        return None
    what = "RequesterInfo"
    top = der.expect(data, 0, der.SEQUENCE, None, what)
    if top.end != len(data):
        raise CertError(f"{what}: {len(data) - top.end} bytes after the CertificationRequestInfo")
    fields = der.children(data, top, what)
    if len(fields) != 4:
        raise CertError(
            f"{what}: {len(fields)} fields, a CertificationRequestInfo has version, subject, "
            "subjectPKInfo and attributes"
        )
    version, subject, spki, attrs = fields
    if version.tag != der.INTEGER or version.value(data) != b"\x00":
        raise CertError(f"{what}: version must be INTEGER 0 (PKCS#10 v1)")
    if subject.tag != der.SEQUENCE:
        raise CertError(f"{what}: subject is not a Name (SEQUENCE)")
    if spki.tag != der.SEQUENCE:
        raise CertError(f"{what}: subjectPKInfo is not a SEQUENCE")
    if attrs.tag != der.CONTEXT_0:
        raise CertError(f"{what}: attributes are not tagged [0]")
    out: list[bytes] = []
    for n, attr in enumerate(der.children(data, attrs, f"{what} attribute")):
        where = f"{what}: attribute {n}"
        if attr.tag != der.SEQUENCE:
            raise CertError(f"{where} is not a SEQUENCE")
        parts = der.children(data, attr, where)
        if len(parts) != 2 or parts[0].tag != der.OID or parts[1].tag != der.SET:
            raise CertError(f"{where} is not SEQUENCE {{ OID, SET OF values }}")
        out.append(attr.raw(data))
    try:  # the subject must be a Name that X.509 stacks can read
        _name_from_der(subject.raw(data))
    except ValueError as exc:
        raise CertError(f"{what}: subject does not parse as a Name ({exc})") from None
    return RequesterInfo(subject.raw(data), tuple(out))


def _name_from_der(name_der: bytes) -> x509.Name:
    """Parse a DER Name by wrapping it into a minimal CSR ``cryptography`` can load."""
    info = der.tlv(
        der.SEQUENCE,
        der.integer(0) + name_der + _DUMMY_SPKI + der.tlv(der.CONTEXT_0, b""),
    )
    alg = der.tlv(der.SEQUENCE, der.oid("1.3.101.112"))
    csr = der.tlv(der.SEQUENCE, info + alg + der.tlv(der.BIT_STRING, b"\x00" + bytes(64)))
    return x509.load_der_x509_csr(csr).subject


_DUMMY_SPKI = (
    ed25519.Ed25519PrivateKey.from_private_bytes(bytes(32))
    .public_key()
    .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
)


def csr_hash_for(hash_name: str) -> str:
    """The SHA-2 hash a CSR is signed with for a negotiated hash (``sha3_384`` -> ``sha384``)."""
    name = hash_name.replace("sha3_", "sha")
    if name not in _HASHES:
        raise CertError(f"CSR: no signature hash for {hash_name}")
    return name


def _extension(oid: str, critical: bool, value: bytes) -> bytes:
    body = der.oid(oid)
    if critical:
        body += der.tlv(0x01, b"\xff")
    return der.tlv(der.SEQUENCE, body + der.tlv(0x04, value))


def default_attributes(ca: bool) -> tuple[bytes, ...]:
    """The extensionRequest the device adds when the requester sent no attributes:
    keyUsage digitalSignature (a device / generic certificate) or keyCertSign with
    basicConstraints CA (the DeviceCert CA of the AliasCert model)."""
    if ca:
        bc = x509.BasicConstraints(ca=True, path_length=None).public_bytes()
        ku = x509.KeyUsage(
            digital_signature=False,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        ).public_bytes()
        exts = _extension("2.5.29.19", True, bc) + _extension("2.5.29.15", True, ku)
    else:
        ku = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        ).public_bytes()
        exts = _extension("2.5.29.15", True, ku)
    attr = der.tlv(
        der.SEQUENCE,
        der.oid(OID_EXTENSION_REQUEST) + der.tlv(der.SET, der.tlv(der.SEQUENCE, exts)),
    )
    return (attr,)


def build_csr(
    key: PrivateKey, hash_name: str, subject_der: bytes, attributes: tuple[bytes, ...]
) -> bytes:
    """A DER CertificationRequest for ``key`` with this subject and these attributes,
    signed with ``key`` (``hash_name``: sha256/sha384/sha512; ignored for EdDSA)."""
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    info = der.tlv(
        der.SEQUENCE,
        der.integer(0) + subject_der + spki + der.tlv(der.CONTEXT_0, b"".join(attributes)),
    )
    if isinstance(key, ed25519.Ed25519PrivateKey):
        alg = der.tlv(der.SEQUENCE, der.oid("1.3.101.112"))
        signature = key.sign(info)
    elif isinstance(key, ed448.Ed448PrivateKey):
        alg = der.tlv(der.SEQUENCE, der.oid("1.3.101.113"))
        signature = key.sign(info)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        alg = der.tlv(der.SEQUENCE, der.oid(_ECDSA_OIDS[hash_name]))
        signature = key.sign(info, ec.ECDSA(_HASHES[hash_name]()))
    elif isinstance(key, rsa.RSAPrivateKey):
        alg = der.tlv(der.SEQUENCE, der.oid(_RSA_OIDS[hash_name]) + der.tlv(der.NULL, b""))
        signature = key.sign(info, padding.PKCS1v15(), _HASHES[hash_name]())
    else:  # ML-DSA (SPDM 1.4): profiles refuse CSR_CAP on a PQC device
        raise CertError(f"CSR: unsupported key type {type(key).__name__}")
    return der.tlv(der.SEQUENCE, info + alg + der.tlv(der.BIT_STRING, b"\x00" + signature))


def device_subject(common_name: str, organization: str = "spdm-emulator") -> bytes:
    """The DER Name the device uses when the requester gives none."""
    name = x509.Name(
        [
            x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name[:64]),
        ]
    )
    return name.public_bytes()
