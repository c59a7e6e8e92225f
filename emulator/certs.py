"""Device identity: X.509 certificate chains for the emulated SPDM endpoint.

Builds root CA -> intermediate CA -> leaf chains (DSP0274 "Certificate chain format",
DSP0274 1.3 "Certificate models") with the X.509 v3 content that real requesters check:

* libspdm ``libspdm_x509_certificate_check`` (leaf: v3, serial, issuer, subject,
  validity, SPKI of the negotiated algorithm, keyUsage with digitalSignature,
  SPDM EKU consistent with the role, SPDM extension <= 30 bytes without the
  hardware-identity OID in the AliasCert model, basicConstraints exactly ``30 00``)
  and ``libspdm_is_root_certificate`` (self-issued, ``CA:TRUE``, self-signed, DN
  under 100 bytes) before it checks the RootHash;
* the Linux PCI CMA requester (``lib/spdm`` + ``drivers/pci/cma.c``): ``CA:TRUE`` on
  every certificate but the leaf, no keyCertSign on the leaf, digitalSignature on
  the slot-0 leaf, the first certificate's issuer found in the ``.cma`` keyring by
  its authorityKeyIdentifier, and a subjectAltName otherName (type-id 2.23.147,
  ``[0] EXPLICIT UTF8String``) equal byte for byte to
  ``Vendor=%04x:Device=%04x:CC=%06x:REV=%02x[:SSVID=%04x:SSID=%04x][:%016x DSN]``.

Everything here is test material: keys are generated in memory and written
unencrypted.  The module also implements the ``spdm-emulator certs`` command
(:func:`add_certs_subparser`, :func:`run_certs`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from emulator.codec.constants import BaseAsymAlgo
from emulator.crypto.dhe import derive_ec_private_key
from emulator.errors import EmulatorError

__all__ = [
    "ASYM_NAMES",
    "OID_DMTF_EKU_REQUESTER_AUTH",
    "OID_DMTF_EKU_RESPONDER_AUTH",
    "OID_DMTF_HARDWARE_IDENTITY",
    "OID_DMTF_MUTABLE_CERTIFICATE",
    "OID_DMTF_SPDM_EXTENSION",
    "OID_PCI_SIG_CMA",
    "QEMU_NVME_PCI_IDS",
    "CertError",
    "Chain",
    "PciIds",
    "PrivateKey",
    "SpdmCertChain",
    "add_certs_subparser",
    "asym_of_public_key",
    "base_asym_algo",
    "generate_chain",
    "load_chain",
    "parse_spdm_cert_chain",
    "run_certs",
    "spdm_cert_chain",
    "split_der_chain",
    "verify_chain",
    "write_chain",
]


class CertError(EmulatorError):
    """A certificate request or file is invalid; the message names the item and problem."""


PrivateKey = (
    ec.EllipticCurvePrivateKey
    | rsa.RSAPrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)
Model = Literal["device", "alias"]
Role = Literal["responder", "requester"]

# --- OIDs (DSP0274 1.3 "Definition of other OIDs"; PCIe r6.1 sec 6.31.3) -------------

#: id-DMTF-hardware-identity, 1.3.6.1.4.1.412.274.2
OID_DMTF_HARDWARE_IDENTITY: Final = x509.ObjectIdentifier("1.3.6.1.4.1.412.274.2")
#: id-DMTF-eku-responder-auth, 1.3.6.1.4.1.412.274.3
OID_DMTF_EKU_RESPONDER_AUTH: Final = x509.ObjectIdentifier("1.3.6.1.4.1.412.274.3")
#: id-DMTF-eku-requester-auth, 1.3.6.1.4.1.412.274.4
OID_DMTF_EKU_REQUESTER_AUTH: Final = x509.ObjectIdentifier("1.3.6.1.4.1.412.274.4")
#: id-DMTF-mutable-certificate, 1.3.6.1.4.1.412.274.5
OID_DMTF_MUTABLE_CERTIFICATE: Final = x509.ObjectIdentifier("1.3.6.1.4.1.412.274.5")
#: id-DMTF-SPDM-extension, 1.3.6.1.4.1.412.274.6
OID_DMTF_SPDM_EXTENSION: Final = x509.ObjectIdentifier("1.3.6.1.4.1.412.274.6")
#: PCI-SIG CMA otherName type-id, 2.23.147
OID_PCI_SIG_CMA: Final = x509.ObjectIdentifier("2.23.147")

#: libspdm LIBSPDM_MAX_EXTENSION_LEN: the SPDM extension value it can read.
MAX_SPDM_EXTENSION_LEN: Final = 30
#: libspdm LIBSPDM_MAX_NAME_SIZE: a root whose DN is longer is not recognised as a root.
MAX_ROOT_NAME_LEN: Final = 100


# --- algorithms ----------------------------------------------------------------------


@dataclass(frozen=True)
class _AsymSpec:
    algo: BaseAsymAlgo
    default_hash: str | None  # None: EdDSA (the signature has no separate hash)
    curve: ec.EllipticCurve | None = None
    rsa_bits: int = 0


_ASYM: Final[dict[str, _AsymSpec]] = {
    "ecdsa-p256": _AsymSpec(BaseAsymAlgo.ECDSA_P256, "sha256", curve=ec.SECP256R1()),
    "ecdsa-p384": _AsymSpec(BaseAsymAlgo.ECDSA_P384, "sha384", curve=ec.SECP384R1()),
    "ecdsa-p521": _AsymSpec(BaseAsymAlgo.ECDSA_P521, "sha512", curve=ec.SECP521R1()),
    "rsa-2048": _AsymSpec(
        BaseAsymAlgo.RSASSA_2048 | BaseAsymAlgo.RSAPSS_2048, "sha256", rsa_bits=2048
    ),
    "rsa-3072": _AsymSpec(
        BaseAsymAlgo.RSASSA_3072 | BaseAsymAlgo.RSAPSS_3072, "sha384", rsa_bits=3072
    ),
    "rsa-4096": _AsymSpec(
        BaseAsymAlgo.RSASSA_4096 | BaseAsymAlgo.RSAPSS_4096, "sha512", rsa_bits=4096
    ),
    "ed25519": _AsymSpec(BaseAsymAlgo.EDDSA_ED25519, None),
    "ed448": _AsymSpec(BaseAsymAlgo.EDDSA_ED448, None),
}

#: Asymmetric algorithm names as the CLI and profiles spell them.
ASYM_NAMES: Final[tuple[str, ...]] = tuple(_ASYM)

_CertHash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512
_CERT_HASHES: Final[dict[str, Callable[[], _CertHash]]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

_CHAIN_HASHES: Final[dict[str, str]] = {
    "sha256": "sha256",
    "sha384": "sha384",
    "sha512": "sha512",
    "sha3_256": "sha3_256",
    "sha3_384": "sha3_384",
    "sha3_512": "sha3_512",
}


def _asym_spec(asym: str) -> _AsymSpec:
    try:
        return _ASYM[asym]
    except KeyError:
        raise CertError(
            f"asym: unknown algorithm {asym!r} (expected one of {', '.join(ASYM_NAMES)})"
        ) from None


def _norm_hash(name: str, table: Collection[str]) -> str:
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key.startswith("sha3") and len(key) == 7:
        key = "sha3_" + key[4:]
    if key not in table:
        raise CertError(
            f"hash: unknown hash algorithm {name!r} (expected one of {', '.join(table)})"
        )
    return key


def base_asym_algo(asym: str) -> BaseAsymAlgo:
    """The BaseAsymAlgo bits a chain of *asym* can serve (RSA keys serve SSA and PSS)."""
    return _asym_spec(asym).algo


def asym_of_public_key(key: object) -> str:
    """The CLI name of a public (or private) key's algorithm; CertError if unsupported."""
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        for name, spec in _ASYM.items():
            if spec.curve is not None and spec.curve.name == key.curve.name:
                return name
        raise CertError(f"key: unsupported elliptic curve {key.curve.name}")
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        for name, spec in _ASYM.items():
            if spec.rsa_bits and spec.rsa_bits == key.key_size:
                return name
        raise CertError(f"key: unsupported RSA modulus size {key.key_size}")
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, ed448.Ed448PublicKey | ed448.Ed448PrivateKey):
        return "ed448"
    raise CertError(f"key: unsupported key type {type(key).__name__}")


def _new_key(spec: _AsymSpec, key_rng: Callable[[int], bytes] | None = None) -> PrivateKey:
    """A fresh key; with ``key_rng`` (a seeded stream) EC and EdDSA keys are derived from
    it, so the same seed gives the same key.  RSA keys cannot be derived from a seed with
    ``cryptography``: they are always random."""
    if spec.curve is not None:
        if key_rng is not None:
            return derive_ec_private_key(spec.curve, key_rng)
        return ec.generate_private_key(spec.curve)
    if spec.rsa_bits:
        return rsa.generate_private_key(public_exponent=65537, key_size=spec.rsa_bits)
    if spec.algo == BaseAsymAlgo.EDDSA_ED25519:
        if key_rng is not None:
            return ed25519.Ed25519PrivateKey.from_private_bytes(key_rng(32))
        return ed25519.Ed25519PrivateKey.generate()
    if key_rng is not None:
        return ed448.Ed448PrivateKey.from_private_bytes(key_rng(57))
    return ed448.Ed448PrivateKey.generate()


# --- PCI identity ----------------------------------------------------------------------


_PCI_FIELDS: Final = (  # label in messages, attribute, bits
    ("VENDOR", "vendor", 16),
    ("DEVICE", "device", 16),
    ("CC", "class_code", 24),
    ("REV", "revision", 8),
    ("SSVID", "ssvid", 16),
    ("SSID", "ssid", 16),
    ("DSN", "dsn", 64),
)
_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")


@dataclass(frozen=True)
class PciIds:
    """PCI identity a Linux CMA requester expects in the leaf's subjectAltName.

    ``ssvid``/``ssid`` exist only for type-0 (endpoint) headers; ``dsn`` is the
    Device Serial Number extended capability, appended by the kernel when non-zero.
    """

    vendor: int
    device: int
    class_code: int
    revision: int
    ssvid: int | None = None
    ssid: int | None = None
    dsn: int | None = None

    def __post_init__(self) -> None:
        if (self.ssvid is None) != (self.ssid is None):
            raise CertError("pci ids: SSVID and SSID must be given together")
        if self.dsn is not None and self.ssvid is None:
            raise CertError("pci ids: DSN is only accepted after SSVID and SSID")
        for label, attr, bits in _PCI_FIELDS:
            value = getattr(self, attr)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise CertError(f"pci ids: {label} must be an integer, not {value!r}")
            if not 0 <= value < (1 << bits):
                raise CertError(f"pci ids: {label} 0x{value:x} does not fit in {bits} bits")

    @classmethod
    def parse(cls, text: str) -> PciIds:
        """Parse ``VENDOR:DEVICE:CC:REV[:SSVID:SSID[:DSN]]`` (hexadecimal, no 0x)."""
        parts = text.strip().split(":")
        if len(parts) not in (4, 6, 7):
            raise CertError(
                f"pci ids {text!r}: expected VENDOR:DEVICE:CC:REV[:SSVID:SSID[:DSN]] "
                f"(4, 6 or 7 hex fields), got {len(parts)} field(s)"
            )
        values: dict[str, int] = {}
        for (label, attr, bits), part in zip(_PCI_FIELDS, parts, strict=False):
            digits = bits // 4
            if not part or len(part) > digits or any(c not in _HEX_DIGITS for c in part):
                raise CertError(
                    f"pci ids {text!r}: {label} {part!r} is not a hexadecimal number "
                    f"of at most {digits} digits"
                )
            values[attr] = int(part, 16)
        return cls(**values)

    def spec(self) -> str:
        """The ``VENDOR:DEVICE:CC:REV[...]`` text :meth:`parse` reads back."""
        text = f"{self.vendor:04x}:{self.device:04x}:{self.class_code:06x}:{self.revision:02x}"
        if self.ssvid is not None and self.ssid is not None:
            text += f":{self.ssvid:04x}:{self.ssid:04x}"
            if self.dsn is not None:
                text += f":{self.dsn:016x}"
        return text

    def san_string(self) -> str:
        """The otherName UTF8String, as Linux ``pci_cma_construct_san()`` builds it."""
        text = (
            f"Vendor={self.vendor:04x}:Device={self.device:04x}"
            f":CC={self.class_code:06x}:REV={self.revision:02x}"
        )
        if self.ssvid is not None and self.ssid is not None:
            text += f":SSVID={self.ssvid:04x}:SSID={self.ssid:04x}"
        if self.dsn:
            text += f":{self.dsn:016x}"
        return text


#: QEMU's emulated NVMe controller (hw/nvme: 1b36:0010, class 01:08:02, rev 2, 1af4:1100).
QEMU_NVME_PCI_IDS: Final = PciIds(0x1B36, 0x0010, 0x010802, 0x02, 0x1AF4, 0x1100)


# --- DER helpers ----------------------------------------------------------------------


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der_tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(body)) + body


def _der_oid(oid: x509.ObjectIdentifier) -> bytes:
    arcs = [int(a) for a in oid.dotted_string.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return _der_tlv(0x06, bytes(body))


def spdm_extension_value(oids: Sequence[x509.ObjectIdentifier]) -> bytes:
    """DER of the SPDM extension value: ``SEQUENCE SIZE (1..MAX) OF SEQUENCE { OID }``."""
    if not oids:
        raise CertError("spdm extension: needs at least one OID")
    value = _der_tlv(0x30, b"".join(_der_tlv(0x30, _der_oid(o)) for o in oids))
    if len(value) > MAX_SPDM_EXTENSION_LEN:
        raise CertError(
            f"spdm extension: value is {len(value)} bytes, libspdm reads at most "
            f"{MAX_SPDM_EXTENSION_LEN}"
        )
    return value


def split_der_chain(data: bytes) -> list[bytes]:
    """Split concatenated DER certificates (each a definite-length SEQUENCE)."""
    certs: list[bytes] = []
    pos = 0
    while pos < len(data):
        start = pos
        if data[pos] != 0x30:
            raise CertError(
                f"certificate chain: byte 0x{data[pos]:02x} at offset {pos} is not a SEQUENCE tag"
            )
        if pos + 2 > len(data):
            raise CertError(f"certificate chain: truncated length at offset {pos}")
        first = data[pos + 1]
        pos += 2
        if first < 0x80:
            length = first
        elif first == 0x80 or first > 0x84:
            raise CertError(
                f"certificate chain: unsupported DER length byte 0x{first:02x} at offset {start}"
            )
        else:
            n = first & 0x7F
            if pos + n > len(data):
                raise CertError(f"certificate chain: truncated length at offset {start}")
            length = int.from_bytes(data[pos : pos + n], "big")
            pos += n
        if pos + length > len(data):
            raise CertError(
                f"certificate chain: certificate at offset {start} claims {length} bytes, "
                f"only {len(data) - pos} remain"
            )
        pos += length
        certs.append(data[start:pos])
    if not certs:
        raise CertError("certificate chain: empty")
    return certs


# --- SPDM certificate chain format (DSP0274 "Certificate chain format") ------------


def _hash_bytes(hash_name: str, data: bytes) -> bytes:
    return hashlib.new(_CHAIN_HASHES[_norm_hash(hash_name, _CHAIN_HASHES)], data).digest()


def spdm_cert_chain(hash_name: str, certs_der: Sequence[bytes]) -> bytes:
    """Length (u16 LE, whole chain) + Reserved (u16) + RootHash(H(first cert)) + certs."""
    if not certs_der:
        raise CertError("certificate chain: needs at least one certificate")
    root_hash = _hash_bytes(hash_name, certs_der[0])
    body = b"".join(certs_der)
    total = 4 + len(root_hash) + len(body)
    if total > 0xFFFF:
        raise CertError(f"certificate chain: {total} bytes does not fit the 16-bit Length field")
    return total.to_bytes(2, "little") + b"\x00\x00" + root_hash + body


@dataclass(frozen=True)
class SpdmCertChain:
    """A parsed SPDM certificate chain; ``root_hash_ok`` compares RootHash with H(certs[0])."""

    length: int
    reserved: int
    root_hash: bytes
    certs: list[bytes]
    root_hash_ok: bool


def parse_spdm_cert_chain(hash_name: str, data: bytes) -> SpdmCertChain:
    """Parse the DSP0274 certificate chain format; CertError on a malformed header."""
    hash_len = hashlib.new(_CHAIN_HASHES[_norm_hash(hash_name, _CHAIN_HASHES)]).digest_size
    if len(data) < 4 + hash_len + 1:
        raise CertError(f"certificate chain: {len(data)} bytes is shorter than its header")
    length = int.from_bytes(data[0:2], "little")
    if length != len(data):
        raise CertError(f"certificate chain: Length field {length} != {len(data)} bytes")
    certs = split_der_chain(data[4 + hash_len :])
    root_hash = data[4 : 4 + hash_len]
    return SpdmCertChain(
        length=length,
        reserved=int.from_bytes(data[2:4], "little"),
        root_hash=root_hash,
        certs=certs,
        root_hash_ok=_hash_bytes(hash_name, certs[0]) == root_hash,
    )


# --- chains -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Chain:
    """One slot's certificate chain, root first, and the leaf's private key.

    ``ca_keys`` holds the CA private keys when the chain was generated in this
    process (root first); chains loaded from disk only carry the leaf key.
    """

    certs: list[x509.Certificate]
    leaf_key: PrivateKey
    asym: str
    model: Model = "device"
    role: Role = "responder"
    pci_ids: PciIds | None = None
    ca_keys: tuple[PrivateKey, ...] = field(default=(), repr=False)

    @property
    def root(self) -> x509.Certificate:
        return self.certs[0]

    @property
    def leaf(self) -> x509.Certificate:
        return self.certs[-1]

    def cert_ders(self) -> list[bytes]:
        return [c.public_bytes(serialization.Encoding.DER) for c in self.certs]

    def der_chain(self) -> bytes:
        """Concatenated DER, root first, as SPDM carries it after the chain header."""
        return b"".join(self.cert_ders())

    def root_der(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.DER)

    def leaf_der(self) -> bytes:
        return self.leaf.public_bytes(serialization.Encoding.DER)

    def spdm_cert_chain(self, hash_name: str) -> bytes:
        """This chain in the DSP0274 certificate chain format for the negotiated hash."""
        return spdm_cert_chain(hash_name, self.cert_ders())

    def base_asym_algo(self) -> BaseAsymAlgo:
        return base_asym_algo(self.asym)


def _name(prefix: str, cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, prefix),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _serials(rng: Callable[[int], bytes] | None, serial_start: int | None) -> Callable[[], int]:
    counter = [serial_start if serial_start is not None else 0]
    source = rng if rng is not None else os.urandom

    def next_serial() -> int:
        if serial_start is not None:
            value = counter[0]
            counter[0] += 1
            if not 0 < value < (1 << 159):
                raise CertError(f"serial_start: serial {value} is not a positive 20-octet integer")
            return value
        raw = source(16)
        if len(raw) != 16:
            raise CertError(f"rng: returned {len(raw)} bytes, 16 requested")
        return (int.from_bytes(raw, "big") & ((1 << 127) - 1)) or 1

    return next_serial


def generate_chain(
    asym: str,
    *,
    hash_name: str | None = None,
    pci_ids: PciIds | None = None,
    model: Model = "device",
    validity_days: int = 10950,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    subject_prefix: str = "spdm-emulator",
    label: str = "",
    role: Role = "responder",
    rng: Callable[[int], bytes] | None = None,
    serial_start: int | None = None,
    key_rng: Callable[[int], bytes] | None = None,
) -> Chain:
    """Generate root -> intermediate -> leaf (DeviceCert model) or root -> intermediate ->
    DeviceCert CA -> alias leaf (AliasCert model, DSP0274 1.3), all keys of *asym*.

    *hash_name* is the certificate signature hash (default per key size; none for EdDSA).
    Serial numbers are positive 127-bit values from *rng* (default ``os.urandom``) or,
    with *serial_start*, consecutive integers.  *not_before* defaults to one day ago
    (UTC); *not_after* defaults to *not_before* + *validity_days*.  *label* (e.g.
    ``"slot1"``) goes into every common name so that chains of different slots have
    distinct DNs.  With *key_rng* (a seeded stream), EC and EdDSA keys are derived from
    it; with that, fixed serials and fixed dates the whole chain is reproducible (ECDSA
    certificate signatures are RFC 6979 deterministic).
    """
    spec = _asym_spec(asym)
    if model not in ("device", "alias"):
        raise CertError(f"model: {model!r} is not 'device' or 'alias'")
    if role not in ("responder", "requester"):
        raise CertError(f"role: {role!r} is not 'responder' or 'requester'")
    hash_alg: _CertHash | None
    if spec.default_hash is None:
        if hash_name is not None:
            raise CertError(f"hash: {asym} signatures have no separate hash; omit hash_name")
        hash_alg = None
    else:
        hash_alg = _CERT_HASHES[_norm_hash(hash_name or spec.default_hash, _CERT_HASHES)]()

    if not_before is None:
        not_before = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    elif not_before.tzinfo is None:
        not_before = not_before.replace(tzinfo=UTC)
    if not_after is None:
        if validity_days <= 0:
            raise CertError(f"validity_days: {validity_days} is not positive")
        not_after = not_before + timedelta(days=validity_days)
    elif not_after.tzinfo is None:
        not_after = not_after.replace(tzinfo=UTC)
    if not_after <= not_before:
        raise CertError(f"validity: not_after {not_after} is not after not_before {not_before}")
    if not_after.year > 9999 or not_before.year < 1970:
        raise CertError("validity: libspdm accepts only 1970-01-01 .. 9999-12-31")

    next_serial = _serials(rng, serial_start)
    tags = ("alias" if model == "alias" else "", "requester" if role == "requester" else "")
    base = " ".join(p for p in (asym, *tags, label) if p)

    def cn(kind: str) -> x509.Name:
        return _name(subject_prefix, f"{base} {kind}")

    kinds = ["Root CA", "Intermediate CA"]
    if model == "alias":
        kinds.append("DeviceCert CA")
    kinds.append("Alias" if model == "alias" else role.capitalize())
    names = [cn(k) for k in kinds]
    root_len = len(names[0].public_bytes())
    if root_len > MAX_ROOT_NAME_LEN:
        raise CertError(
            f"subject_prefix/label: root DN is {root_len} bytes; libspdm recognises a root "
            f"only up to {MAX_ROOT_NAME_LEN}"
        )

    keys = [_new_key(spec, key_rng) for _ in kinds]
    eku = OID_DMTF_EKU_REQUESTER_AUTH if role == "requester" else OID_DMTF_EKU_RESPONDER_AUTH
    certs: list[x509.Certificate] = []
    for i, (name, key) in enumerate(zip(names, keys, strict=True)):
        is_leaf = i == len(kinds) - 1
        issuer_key = keys[i - 1] if i else key
        pub = key.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(names[i - 1] if i else name)
            .public_key(pub)
            .serial_number(next_serial())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
        )
        if is_leaf:
            builder = builder.add_extension(
                x509.BasicConstraints(ca=False, path_length=None), critical=True
            ).add_extension(_key_usage(digital_signature=True), critical=True)
            builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        else:
            builder = builder.add_extension(
                x509.BasicConstraints(ca=True, path_length=None), critical=True
            ).add_extension(
                _key_usage(
                    digital_signature=(model == "alias" and i == 2),
                    key_cert_sign=True,
                    crl_sign=True,
                ),
                critical=True,
            )
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(pub), critical=False
        ).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        if is_leaf and pci_ids is not None:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.OtherName(
                            OID_PCI_SIG_CMA,
                            _der_tlv(0x0C, pci_ids.san_string().encode("utf-8")),
                        )
                    ]
                ),
                critical=False,
            )
        spdm_oids: list[x509.ObjectIdentifier] = []
        # DeviceCert model: the leaf is the hardware-bound DeviceCert.  AliasCert model:
        # the DeviceCert CA (index 2) is; the alias leaf is mutable and must not be.
        if (model == "device" and is_leaf) or (model == "alias" and i == 2):
            spdm_oids = [OID_DMTF_HARDWARE_IDENTITY]
        elif model == "alias" and is_leaf:  # alias leaves are mutable, never hardware-bound
            spdm_oids = [OID_DMTF_MUTABLE_CERTIFICATE]
        if spdm_oids:
            builder = builder.add_extension(
                x509.UnrecognizedExtension(
                    OID_DMTF_SPDM_EXTENSION, spdm_extension_value(spdm_oids)
                ),
                critical=False,
            )
        # RFC 6979 ECDSA: the same keys and content give the same certificate bytes
        deterministic = True if isinstance(issuer_key, ec.EllipticCurvePrivateKey) else None
        certs.append(builder.sign(issuer_key, hash_alg, ecdsa_deterministic=deterministic))

    return Chain(
        certs=certs,
        leaf_key=keys[-1],
        asym=asym,
        model=model,
        role=role,
        pci_ids=pci_ids,
        ca_keys=tuple(keys[:-1]),
    )


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def verify_chain(chain: Chain) -> None:
    """Check links, signatures, CA flags, the leaf's basicConstraints and its key.

    Raises CertError naming the certificate and the problem.
    """
    certs = chain.certs
    if not certs:
        raise CertError("chain: no certificates")
    for i, cert in enumerate(certs):
        parent = certs[i - 1] if i else cert
        where = f"certificate {i} ({cert.subject.rfc4514_string()})"
        if cert.issuer != parent.subject:
            raise CertError(
                f"{where}: issuer does not match the subject of certificate {max(i - 1, 0)}"
            )
        try:
            cert.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise CertError(f"{where}: signature does not verify with its issuer ({exc})") from None
        is_leaf = i == len(certs) - 1
        try:
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            raise CertError(f"{where}: basicConstraints missing") from None
        if bc.value.ca == is_leaf:
            raise CertError(f"{where}: basicConstraints CA must be {not is_leaf}")
        if is_leaf and bc.value.public_bytes() != b"\x30\x00":
            raise CertError(f"{where}: leaf basicConstraints is not encoded exactly 30 00")
    leaf_pub = chain.leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_pub = chain.leaf_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if leaf_pub != key_pub:
        raise CertError("leaf key: does not match the leaf certificate's public key")
    if asym_of_public_key(chain.leaf_key) != chain.asym:
        raise CertError(f"leaf key: is not {chain.asym}")


# --- files -------------------------------------------------------------------------

_SLOT_FILES: Final = (
    "root.der",
    "root.pem",
    "intermediate.der",
    "intermediate.pem",
    "device_ca.der",
    "device_ca.pem",
    "leaf.der",
    "leaf.pem",
    "leaf.key.pem",
    "chain.der",
    "chain.pem",
    "info.json",
)

_INFO_WARNING: Final = "TEST KEY MATERIAL: the private key is public; never use in production"


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_chain(chain: Chain, out_dir: Path | str, slot: int) -> Path:
    """Write *chain* into ``out_dir/slot<slot>/`` and return that directory.

    Files: root/intermediate[/device_ca]/leaf ``.der`` + ``.pem``, ``leaf.key.pem``
    (PKCS#8, unencrypted), ``chain.der``/``chain.pem`` (root first) and ``info.json``.
    ``root.der`` is ready for ``keyctl padd asymmetric "" %:.cma``.
    """
    if not 0 <= slot <= 7:
        raise CertError(f"slot: {slot} is not in 0..7")
    expected = 4 if chain.model == "alias" else 3
    if len(chain.certs) != expected:
        raise CertError(
            f"chain: {chain.model} model needs {expected} certificates, got {len(chain.certs)}"
        )
    slot_dir = Path(out_dir) / f"slot{slot}"
    slot_dir.mkdir(parents=True, exist_ok=True)
    for stale in _SLOT_FILES:  # never leave files of an earlier model behind
        (slot_dir / stale).unlink(missing_ok=True)
    names = ["root", "intermediate"] + (["device_ca"] if chain.model == "alias" else []) + ["leaf"]
    pem = serialization.Encoding.PEM
    der = serialization.Encoding.DER
    for name, cert in zip(names, chain.certs, strict=True):
        _write(slot_dir / f"{name}.der", cert.public_bytes(der))
        _write(slot_dir / f"{name}.pem", cert.public_bytes(pem))
    _write(
        slot_dir / "leaf.key.pem",
        chain.leaf_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        0o600,
    )
    _write(slot_dir / "chain.der", chain.der_chain())
    _write(slot_dir / "chain.pem", b"".join(c.public_bytes(pem) for c in chain.certs))
    leaf = chain.leaf
    info = {
        "warning": _INFO_WARNING,
        "asym": chain.asym,
        "model": chain.model,
        "role": chain.role,
        "slot": slot,
        "signature_hash": leaf.signature_hash_algorithm.name
        if leaf.signature_hash_algorithm
        else None,
        "pci_ids": chain.pci_ids.spec() if chain.pci_ids else None,
        "subject_alt_name": chain.pci_ids.san_string() if chain.pci_ids else None,
        "not_before": leaf.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "not_after": leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "files": [f"{n}.der" for n in names],
        "subjects": [c.subject.rfc4514_string() for c in chain.certs],
    }
    _write(slot_dir / "info.json", (json.dumps(info, indent=2) + "\n").encode())
    return slot_dir


#: Parsed private keys by PEM bytes: parsing an RSA key validates it (~0.1 s for RSA-4096),
#: and every Device built from a profile loads the same committed keys again.
_KEY_CACHE: dict[bytes, object] = {}
_KEY_CACHE_MAX = 64


def _load_key_cached(key_pem: bytes) -> object:
    cached = _KEY_CACHE.get(key_pem)
    if cached is None:
        cached = serialization.load_pem_private_key(key_pem, password=None)
        if len(_KEY_CACHE) >= _KEY_CACHE_MAX:
            _KEY_CACHE.pop(next(iter(_KEY_CACHE)))
        _KEY_CACHE[key_pem] = cached
    return cached


def load_chain(slot_dir: Path | str, *, verify: bool = True) -> Chain:
    """Load a slot directory written by :func:`write_chain` (``chain.der``,
    ``leaf.key.pem``, optional ``info.json``); with *verify*, run :func:`verify_chain`."""
    slot_dir = Path(slot_dir)
    try:
        chain_der = (slot_dir / "chain.der").read_bytes()
        key_pem = (slot_dir / "leaf.key.pem").read_bytes()
    except OSError as exc:
        raise CertError(
            f"{slot_dir}: cannot read slot files ({exc.strerror}: {exc.filename})"
        ) from None
    info: dict[str, object] = {}
    info_path = slot_dir / "info.json"
    if info_path.exists():
        try:
            loaded = json.loads(info_path.read_text())
        except (OSError, ValueError) as exc:
            raise CertError(f"{info_path}: not valid JSON ({exc})") from None
        if not isinstance(loaded, dict):
            raise CertError(f"{info_path}: expected a JSON object")
        info = loaded
    try:
        certs = [x509.load_der_x509_certificate(d) for d in split_der_chain(chain_der)]
    except ValueError as exc:
        raise CertError(f"{slot_dir / 'chain.der'}: not a DER certificate chain ({exc})") from None
    except CertError as exc:
        raise CertError(f"{slot_dir / 'chain.der'}: {exc}") from None
    try:
        key = _load_key_cached(key_pem)
    except (ValueError, TypeError) as exc:
        raise CertError(
            f"{slot_dir / 'leaf.key.pem'}: not an unencrypted PEM key ({exc})"
        ) from None
    if not isinstance(
        key,
        ec.EllipticCurvePrivateKey
        | rsa.RSAPrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey,
    ):
        raise CertError(f"{slot_dir / 'leaf.key.pem'}: unsupported key type {type(key).__name__}")
    model = info.get("model", "alias" if len(certs) >= 4 else "device")
    role = info.get("role", "responder")
    if model not in ("device", "alias"):
        raise CertError(f"{info_path}: model {model!r} is not 'device' or 'alias'")
    if role not in ("responder", "requester"):
        raise CertError(f"{info_path}: role {role!r} is not 'responder' or 'requester'")
    pci_spec = info.get("pci_ids")
    pci_ids = PciIds.parse(pci_spec) if isinstance(pci_spec, str) else None
    try:
        asym = asym_of_public_key(key)
    except CertError as exc:
        raise CertError(f"{slot_dir / 'leaf.key.pem'}: {exc}") from None
    chain = Chain(
        certs=certs,
        leaf_key=key,
        asym=asym,
        model=model,
        role=role,
        pci_ids=pci_ids,
    )
    if verify:
        try:
            verify_chain(chain)
        except CertError as exc:
            raise CertError(f"{slot_dir}: {exc}") from None
    return chain


# --- command line ------------------------------------------------------------------

_GENERATE_HELP = """\
Generate SPDM test certificate chains (root CA -> intermediate CA -> leaf; with
--model alias: root -> intermediate -> DeviceCert CA -> alias leaf).

Layout: with one --asym, slots go to DIR/slot<N>/; with several, to
DIR/<asym>/slot<N>/.  Each slot gets an independent chain (its own keys and DNs).
--slots N with --first-slot K writes slots K..K+N-1 (SPDM has slots 0..7).

Each slot directory holds root/intermediate[/device_ca]/leaf .der and .pem,
leaf.key.pem (PKCS#8, UNENCRYPTED: test keys only), chain.der/chain.pem (root
first) and info.json.  Install a root in a Linux guest with:
  keyctl padd asymmetric "" %:.cma < DIR/slot0/root.der

An existing non-empty slot directory is refused unless --force.
"""


def add_certs_subparser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``certs generate`` and ``certs verify`` to a CLI's subparsers."""
    certs = subparsers.add_parser(
        "certs",
        help="generate or check SPDM test certificate chains",
        description="Generate or check SPDM test certificate chains (test keys only).",
    )
    sub = certs.add_subparsers(dest="certs_command", metavar="{generate,verify}")
    sub.required = True
    gen = sub.add_parser(
        "generate",
        help="generate certificate chains into a directory",
        description=_GENERATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument("--out", required=True, metavar="DIR", help="output directory")
    gen.add_argument(
        "--asym",
        action="append",
        metavar="ALG[,ALG...]",
        help=f"key algorithm, repeatable or comma-separated, or 'all' "
        f"({', '.join(ASYM_NAMES)}; default ecdsa-p384)",
    )
    gen.add_argument(
        "--slots",
        type=int,
        default=1,
        metavar="N",
        help="number of slots per algorithm (default 1)",
    )
    gen.add_argument(
        "--first-slot", type=int, default=0, metavar="K", help="first slot number (default 0)"
    )
    gen.add_argument(
        "--pci-ids",
        metavar="VENDOR:DEVICE:CC:REV[:SSVID:SSID[:DSN]]",
        help="hex PCI identity for the leaf's subjectAltName (Linux CMA checks it); "
        f"default {QEMU_NVME_PCI_IDS.spec()} (QEMU NVMe) for responder chains, none for "
        "--requester; 'none' omits the subjectAltName",
    )
    gen.add_argument(
        "--model",
        choices=("device", "alias"),
        default="device",
        help="DSP0274 1.3 certificate model (default device)",
    )
    gen.add_argument(
        "--requester",
        action="store_true",
        help="requester chains for mutual authentication (EKU requester-auth)",
    )
    gen.add_argument(
        "--hash",
        metavar="HASH",
        help="certificate signature hash sha256|sha384|sha512 (default by key size; "
        "not used for EdDSA)",
    )
    gen.add_argument(
        "--not-before", metavar="YYYY-MM-DD", help="validity start (default: yesterday, UTC)"
    )
    gen.add_argument(
        "--not-after",
        metavar="YYYY-MM-DD",
        help="validity end, inclusive (23:59:59 UTC); default not-before + --days",
    )
    gen.add_argument(
        "--days", type=int, default=10950, metavar="N", help="validity in days (default 10950)"
    )
    gen.add_argument(
        "--subject-prefix",
        default="spdm-emulator",
        metavar="TEXT",
        help="organisation name in every DN (default spdm-emulator)",
    )
    gen.add_argument("--force", action="store_true", help="overwrite existing slot directories")
    ver = sub.add_parser(
        "verify",
        help="check slot directories written by 'certs generate'",
        description="Load each slot directory and check links, signatures, CA flags, the "
        "leaf's basicConstraints and that leaf.key.pem matches the leaf.",
    )
    ver.add_argument("slot_dirs", nargs="+", metavar="SLOT_DIR")


def _parse_date(text: str, what: str, end_of_day: bool) -> datetime:
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise CertError(f"{what}: {text!r} is not a date YYYY-MM-DD") from None
    return day + timedelta(hours=23, minutes=59, seconds=59) if end_of_day else day


def _parse_asyms(values: Sequence[str] | None) -> list[str]:
    if not values:
        return ["ecdsa-p384"]
    out: list[str] = []
    for value in values:
        for item in value.split(","):
            name = item.strip().lower()
            if not name:
                continue
            names = list(ASYM_NAMES) if name == "all" else [name]
            for n in names:
                _asym_spec(n)
                if n not in out:
                    out.append(n)
    if not out:
        raise CertError("asym: no algorithm given")
    return out


def _run_generate(args: argparse.Namespace) -> int:
    asyms = _parse_asyms(args.asym)
    if args.slots < 1 or args.first_slot < 0 or args.first_slot + args.slots > 8:
        raise CertError(
            f"slots: --first-slot {args.first_slot} --slots {args.slots} leaves SPDM slots 0..7"
        )
    role: Role = "requester" if args.requester else "responder"
    pci_ids: PciIds | None
    if args.pci_ids is None:
        pci_ids = None if args.requester else QEMU_NVME_PCI_IDS
    elif args.pci_ids.strip().lower() == "none":
        pci_ids = None
    else:
        pci_ids = PciIds.parse(args.pci_ids)
    hash_name = None if args.hash is None else _norm_hash(args.hash, _CERT_HASHES)
    not_before = _parse_date(args.not_before, "--not-before", False) if args.not_before else None
    not_after = _parse_date(args.not_after, "--not-after", True) if args.not_after else None
    out = Path(args.out)
    slots = range(args.first_slot, args.first_slot + args.slots)
    targets = [(a, out / a if len(asyms) > 1 else out) for a in asyms]
    if not args.force:
        for _, base in targets:
            for slot in slots:
                d = base / f"slot{slot}"
                if d.is_dir() and any(d.iterdir()):
                    raise CertError(f"{d}: exists and is not empty (use --force to overwrite)")
                if d.exists() and not d.is_dir():
                    raise CertError(f"{d}: exists and is not a directory")
    for asym, base in targets:
        spec = _ASYM[asym]
        for slot in slots:
            chain = generate_chain(
                asym,
                hash_name=hash_name if spec.default_hash is not None else None,
                pci_ids=pci_ids,
                model=args.model,
                validity_days=args.days,
                not_before=not_before,
                not_after=not_after,
                subject_prefix=args.subject_prefix,
                label=f"slot{slot}",
                role=role,
            )
            slot_dir = write_chain(chain, base, slot)
            print(f"{slot_dir}: {asym} {args.model} {role} chain")
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    for d in args.slot_dirs:
        chain = load_chain(d)
        leaf = chain.leaf
        print(
            f"{d}: OK {chain.asym} {chain.model} {chain.role}, {len(chain.certs)} certificates, "
            f"leaf valid {leaf.not_valid_before_utc:%Y-%m-%d}..{leaf.not_valid_after_utc:%Y-%m-%d}"
        )
    return 0


def run_certs(args: argparse.Namespace) -> int:
    """Run ``certs generate|verify``; errors print one line on stderr and return 2."""
    try:
        if args.certs_command == "generate":
            return _run_generate(args)
        if args.certs_command == "verify":
            return _run_verify(args)
        raise CertError(f"certs: unknown command {args.certs_command!r}")
    except CertError as exc:
        print(f"spdm-emulator certs: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"spdm-emulator certs: error: {exc.filename or ''}: {exc.strerror}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m emulator.certs generate|verify ...`` (same as ``spdm-emulator certs``)."""
    parser = argparse.ArgumentParser(prog="python3 -m emulator.certs")
    sub = parser.add_subparsers(dest="command")
    add_certs_subparser(sub)
    args = parser.parse_args(["certs", *(sys.argv[1:] if argv is None else argv)])
    return run_certs(args)


if __name__ == "__main__":
    sys.exit(main())
