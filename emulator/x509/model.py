"""One slot's certificate chain in memory, its key algorithm and the identity it carries.

:class:`Chain` is root -> intermediate -> leaf (DeviceCert model) or root -> intermediate ->
DeviceCert CA -> alias leaf (AliasCert model, DSP0274 1.3 "Certificate models") with the
leaf's private key; :class:`PciIds` is the PCI identity a Linux CMA requester expects in the
leaf's subjectAltName; the OIDs are DSP0274 1.3 "Definition of other OIDs" and PCIe r6.1
sec 6.31.3.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, mldsa, rsa

from emulator.codec.constants import PQC_ASYM_SHIFT, BaseAsymAlgo, PqcAsymAlgo
from emulator.crypto.asym import PrivateKey
from emulator.x509.chain import CertError, spdm_cert_chain

__all__ = [
    "ASYM_NAMES",
    "MAX_ROOT_NAME_LEN",
    "MAX_SPDM_EXTENSION_LEN",
    "OID_DMTF_EKU_REQUESTER_AUTH",
    "OID_DMTF_EKU_RESPONDER_AUTH",
    "OID_DMTF_HARDWARE_IDENTITY",
    "OID_DMTF_MUTABLE_CERTIFICATE",
    "OID_DMTF_SPDM_EXTENSION",
    "OID_PCI_SIG_CMA",
    "PQC_ASYM_NAMES",
    "QEMU_NVME_PCI_IDS",
    "AsymSpec",
    "Chain",
    "Model",
    "PciIds",
    "PrivateKey",
    "Role",
    "asym_of_public_key",
    "asym_spec",
    "base_asym_algo",
]

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
class AsymSpec:
    """A key algorithm as the CLI and profiles name it: its signature algorithm ids
    (BaseAsymAlgo bits, or a 1.4 PqcAsymAlgo bit << 32), default certificate signature
    hash and key parameters."""

    algo: int
    default_hash: str | None  # None: EdDSA / ML-DSA (the signature has no separate hash)
    curve: ec.EllipticCurve | None = None
    rsa_bits: int = 0
    #: FIPS 204 parameter set ("ML-DSA-65") for ML-DSA keys
    mldsa: str = ""


_ASYM: Final[dict[str, AsymSpec]] = {
    "ecdsa-p256": AsymSpec(BaseAsymAlgo.ECDSA_P256, "sha256", curve=ec.SECP256R1()),
    "ecdsa-p384": AsymSpec(BaseAsymAlgo.ECDSA_P384, "sha384", curve=ec.SECP384R1()),
    "ecdsa-p521": AsymSpec(BaseAsymAlgo.ECDSA_P521, "sha512", curve=ec.SECP521R1()),
    "rsa-2048": AsymSpec(
        BaseAsymAlgo.RSASSA_2048 | BaseAsymAlgo.RSAPSS_2048, "sha256", rsa_bits=2048
    ),
    "rsa-3072": AsymSpec(
        BaseAsymAlgo.RSASSA_3072 | BaseAsymAlgo.RSAPSS_3072, "sha384", rsa_bits=3072
    ),
    "rsa-4096": AsymSpec(
        BaseAsymAlgo.RSASSA_4096 | BaseAsymAlgo.RSAPSS_4096, "sha512", rsa_bits=4096
    ),
    "ed25519": AsymSpec(BaseAsymAlgo.EDDSA_ED25519, None),
    "ed448": AsymSpec(BaseAsymAlgo.EDDSA_ED448, None),
}

_PQC_ASYM: Final[dict[str, AsymSpec]] = {
    # SPDM 1.4 PqcAsymAlgo (RFC 9881 certificates); cryptography 48 has no SLH-DSA
    "ml-dsa-44": AsymSpec(PqcAsymAlgo.ML_DSA_44 << PQC_ASYM_SHIFT, None, mldsa="ML-DSA-44"),
    "ml-dsa-65": AsymSpec(PqcAsymAlgo.ML_DSA_65 << PQC_ASYM_SHIFT, None, mldsa="ML-DSA-65"),
    "ml-dsa-87": AsymSpec(PqcAsymAlgo.ML_DSA_87 << PQC_ASYM_SHIFT, None, mldsa="ML-DSA-87"),
}

#: Classic (BaseAsymAlgo) algorithm names as the CLI and profiles spell them
#: (``certs generate --asym all``).
ASYM_NAMES: Final[tuple[str, ...]] = tuple(_ASYM)
#: SPDM 1.4 post-quantum (PqcAsymAlgo) algorithm names (``certs generate --asym pqc``).
PQC_ASYM_NAMES: Final[tuple[str, ...]] = tuple(_PQC_ASYM)
_ASYM.update(_PQC_ASYM)


def asym_spec(asym: str) -> AsymSpec:
    """The algorithm named *asym* (``"ecdsa-p384"``...); CertError naming the choices."""
    try:
        return _ASYM[asym]
    except KeyError:
        choices = ", ".join(ASYM_NAMES + PQC_ASYM_NAMES)
        raise CertError(f"asym: unknown algorithm {asym!r} (expected one of {choices})") from None


def base_asym_algo(asym: str) -> int:
    """The signature algorithm ids a chain of *asym* can serve (RSA keys serve SSA and PSS;
    ML-DSA keys their PqcAsymAlgo bit << 32)."""
    return asym_spec(asym).algo


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
    for name, classes in (
        ("ml-dsa-44", (mldsa.MLDSA44PublicKey, mldsa.MLDSA44PrivateKey)),
        ("ml-dsa-65", (mldsa.MLDSA65PublicKey, mldsa.MLDSA65PrivateKey)),
        ("ml-dsa-87", (mldsa.MLDSA87PublicKey, mldsa.MLDSA87PrivateKey)),
    ):
        if isinstance(key, classes):
            return name
    raise CertError(f"key: unsupported key type {type(key).__name__}")


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

    def base_asym_algo(self) -> int:
        return base_asym_algo(self.asym)
