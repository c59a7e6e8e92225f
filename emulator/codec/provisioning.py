"""Layouts of the provisioning messages (DSP0274 1.2 10.13-10.14, 1.3 10.13-10.15).

As libspdm's ``industry_standard/spdm.h`` defines them, all little-endian:

* GET_CSR (1.2): Param1 = KeyPairID (1.3, else reserved), Param2 = RequestAttributes
  (1.3: bits 2:0 CSRCertModel, bits 5:3 CSRTrackingTag, bit 7 Overwrite),
  RequesterInfoLength (u16), OpaqueDataLength (u16), RequesterInfo, OpaqueData.
  CSR: Param1/Param2 reserved, CSRLength (u16), Reserved (u16), the DER CSR.
* SET_CERTIFICATE (1.2): Param1 bits 3:0 = SlotID, 1.3 bits 6:4 = SetCertModel and
  bit 7 = Erase; Param2 = KeyPairID (1.3); then the SPDM certificate chain (absent with
  Erase).  SET_CERTIFICATE_RSP: Param1 bits 3:0 = SlotID.
* GET_KEY_PAIR_INFO (1.3): KeyPairID (u8).  KEY_PAIR_INFO: TotalKeyPairs (u8), KeyPairID
  (u8), Capabilities (u16), KeyUsageCapabilities (u16), CurrentKeyUsage (u16),
  AsymAlgoCapabilities (u32), CurrentAsymAlgo (u32), PublicKeyInfoLen (u16),
  AssocCertSlotMask (u8), PublicKeyInfo (the DER AlgorithmIdentifier of the key).
* SET_KEY_PAIR_INFO (1.3): Param1 = Operation (0 change, 1 erase, 2 generate), KeyPairID
  (u8), Reserved (u8), DesiredKeyUsage (u16), DesiredAsymAlgo (u32),
  DesiredAssocCertSlotMask (u8); an erase needs only the KeyPairID.
  SET_KEY_PAIR_INFO_ACK: the header.

No behaviour here: what the fields mean for a device is in
:mod:`emulator.responder.provisioning`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from emulator.codec.constants import BaseAsymAlgo, RequestCode, ResponseCode
from emulator.codec.messages import HEADER_SIZE, build_header
from emulator.errors import CodecError

#: GET_CSR fixed part (header + RequesterInfoLength + OpaqueDataLength).
GET_CSR_SIZE = HEADER_SIZE + 4
#: CSR fixed part (header + CSRLength + Reserved).
CSR_HEADER_SIZE = HEADER_SIZE + 4
#: Largest CSR (a 16-bit CSRLength).
MAX_CSR_SIZE = 0xFFFF
#: GET_CSR RequestAttributes (1.3).
CSR_CERT_MODEL_MASK = 0x07
CSR_TRACKING_TAG_MASK = 0x38
CSR_TRACKING_TAG_SHIFT = 3
CSR_OVERWRITE = 0x80
#: CSRTrackingTag values 1..7 (0: none).
MAX_CSR_TRACKING_TAG = 7

#: SET_CERTIFICATE Param1 (1.3 request attributes).
SET_CERT_SLOT_MASK = 0x0F
SET_CERT_MODEL_MASK = 0x70
SET_CERT_MODEL_SHIFT = 4
SET_CERT_ERASE = 0x80

GET_KEY_PAIR_INFO_SIZE = HEADER_SIZE + 1
KEY_PAIR_INFO_HEADER_SIZE = HEADER_SIZE + 19
#: SET_KEY_PAIR_INFO with every field / an erase (KeyPairID only).
SET_KEY_PAIR_INFO_SIZE = HEADER_SIZE + 9
SET_KEY_PAIR_INFO_ERASE_SIZE = HEADER_SIZE + 1


class KeyPairCap(IntFlag):
    """KEY_PAIR_INFO Capabilities (DSP0274 1.3 table "Key pair capabilities")."""

    GEN_KEY = 0x0001
    ERASABLE = 0x0002
    CERT_ASSOC = 0x0004
    KEY_USAGE = 0x0008
    ASYM_ALGO = 0x0010
    SHAREABLE = 0x0020


#: Every defined key pair capability bit.
KEY_PAIR_CAP_MASK = 0x003F


class KeyPairAsymAlgo(IntFlag):
    """AsymAlgoCapabilities / CurrentAsymAlgo / DesiredAsymAlgo bits (1.3)."""

    RSA2048 = 0x0001
    RSA3072 = 0x0002
    RSA4096 = 0x0004
    ECC256 = 0x0008
    ECC384 = 0x0010
    ECC521 = 0x0020
    SM2 = 0x0040
    ED25519 = 0x0080
    ED448 = 0x0100


KEY_PAIR_ASYM_MASK = 0x01FF

#: BaseAsymAlgo bit -> the key pair asym bit of the same key type (RSASSA and RSAPSS of
#: one size are one key type).
KEY_PAIR_ASYM_OF_BASE: dict[int, KeyPairAsymAlgo] = {
    int(BaseAsymAlgo.RSASSA_2048): KeyPairAsymAlgo.RSA2048,
    int(BaseAsymAlgo.RSAPSS_2048): KeyPairAsymAlgo.RSA2048,
    int(BaseAsymAlgo.RSASSA_3072): KeyPairAsymAlgo.RSA3072,
    int(BaseAsymAlgo.RSAPSS_3072): KeyPairAsymAlgo.RSA3072,
    int(BaseAsymAlgo.RSASSA_4096): KeyPairAsymAlgo.RSA4096,
    int(BaseAsymAlgo.RSAPSS_4096): KeyPairAsymAlgo.RSA4096,
    int(BaseAsymAlgo.ECDSA_P256): KeyPairAsymAlgo.ECC256,
    int(BaseAsymAlgo.ECDSA_P384): KeyPairAsymAlgo.ECC384,
    int(BaseAsymAlgo.ECDSA_P521): KeyPairAsymAlgo.ECC521,
    int(BaseAsymAlgo.SM2_P256): KeyPairAsymAlgo.SM2,
    int(BaseAsymAlgo.EDDSA_ED25519): KeyPairAsymAlgo.ED25519,
    int(BaseAsymAlgo.EDDSA_ED448): KeyPairAsymAlgo.ED448,
}


def key_pair_asym_of(base_asym_mask: int) -> int:
    """The key pair asym bits of every BaseAsymAlgo bit in ``base_asym_mask``."""
    out = 0
    for bit, kp in KEY_PAIR_ASYM_OF_BASE.items():
        if base_asym_mask & bit:
            out |= int(kp)
    return out


def base_asym_of(key_pair_asym: int) -> int:
    """The BaseAsymAlgo bits a key pair asym bit stands for (RSA: SSA and PSS)."""
    out = 0
    for bit, kp in KEY_PAIR_ASYM_OF_BASE.items():
        if key_pair_asym & kp:
            out |= bit
    return out


class KeyPairOperation(IntEnum):
    """SET_KEY_PAIR_INFO Operation (Param1)."""

    CHANGE = 0
    ERASE = 1
    GENERATE = 2


def _need(data: bytes, size: int, what: str) -> None:
    if len(data) < size:
        raise CodecError(f"{what}: {len(data)} bytes, need {size}")


# --- GET_CSR / CSR -------------------------------------------------------------------


@dataclass(slots=True)
class GetCsrRequest:
    """GET_CSR: ``key_pair_id`` is Param1 and ``attributes`` Param2 (1.3; 0 before)."""

    version: int
    key_pair_id: int = 0
    attributes: int = 0
    requester_info: bytes = b""
    opaque_data: bytes = b""

    @property
    def cert_model(self) -> int:
        return self.attributes & CSR_CERT_MODEL_MASK

    @property
    def tracking_tag(self) -> int:
        return (self.attributes & CSR_TRACKING_TAG_MASK) >> CSR_TRACKING_TAG_SHIFT

    @property
    def overwrite(self) -> bool:
        return bool(self.attributes & CSR_OVERWRITE)

    @staticmethod
    def make_attributes(cert_model: int = 0, tracking_tag: int = 0, overwrite: bool = False) -> int:
        """RequestAttributes from its fields."""
        return (
            (cert_model & CSR_CERT_MODEL_MASK)
            | ((tracking_tag << CSR_TRACKING_TAG_SHIFT) & CSR_TRACKING_TAG_MASK)
            | (CSR_OVERWRITE if overwrite else 0)
        )

    def encode(self) -> bytes:
        return (
            build_header(self.version, RequestCode.GET_CSR, self.key_pair_id, self.attributes)
            + struct.pack("<HH", len(self.requester_info), len(self.opaque_data))
            + self.requester_info
            + self.opaque_data
        )

    @classmethod
    def decode(cls, data: bytes) -> tuple[GetCsrRequest, int]:
        """Parse; returns the request and its size (RequesterInfo, then OpaqueData)."""
        _need(data, GET_CSR_SIZE, "GET_CSR")
        info_len, opaque_len = struct.unpack_from("<HH", data, HEADER_SIZE)
        size = GET_CSR_SIZE + info_len + opaque_len
        if len(data) < size:
            raise CodecError(
                f"GET_CSR: RequesterInfoLength {info_len} + OpaqueDataLength {opaque_len} "
                f"need {size} bytes, the request has {len(data)}"
            )
        info = bytes(data[GET_CSR_SIZE : GET_CSR_SIZE + info_len])
        opaque = bytes(data[GET_CSR_SIZE + info_len : size])
        return cls(data[0], data[2], data[3], info, opaque), size


def build_csr_response(version: int, csr: bytes) -> bytes:
    """CSR: CSRLength, Reserved, the DER certification request."""
    if not csr or len(csr) > MAX_CSR_SIZE:
        raise CodecError(f"CSR: {len(csr)} bytes does not fit CSRLength (1..65535)")
    return build_header(version, ResponseCode.CSR) + struct.pack("<HH", len(csr), 0) + csr


def parse_csr_response(data: bytes) -> bytes:
    """The DER CSR of a CSR response (CodecError when the lengths do not add up)."""
    _need(data, CSR_HEADER_SIZE, "CSR")
    (length,) = struct.unpack_from("<H", data, HEADER_SIZE)
    if length == 0:
        raise CodecError("CSR: CSRLength is 0")
    _need(data, CSR_HEADER_SIZE + length, f"CSR with CSRLength {length}")
    return bytes(data[CSR_HEADER_SIZE : CSR_HEADER_SIZE + length])


# --- SET_CERTIFICATE / SET_CERTIFICATE_RSP ----------------------------------------------


@dataclass(slots=True)
class SetCertificateRequest:
    """SET_CERTIFICATE: ``cert_chain`` is the SPDM certificate chain (empty with erase)."""

    version: int
    slot_id: int
    cert_chain: bytes = b""
    cert_model: int = 0
    erase: bool = False
    key_pair_id: int = 0

    @property
    def param1(self) -> int:
        return (
            (self.slot_id & SET_CERT_SLOT_MASK)
            | ((self.cert_model << SET_CERT_MODEL_SHIFT) & SET_CERT_MODEL_MASK)
            | (SET_CERT_ERASE if self.erase else 0)
        )

    def encode(self) -> bytes:
        return (
            build_header(self.version, RequestCode.SET_CERTIFICATE, self.param1, self.key_pair_id)
            + self.cert_chain
        )

    @classmethod
    def decode(cls, data: bytes) -> SetCertificateRequest:
        """Parse; the chain is everything after the header (its Length field says how
        much of it counts; trailing transport padding is the caller's concern)."""
        _need(data, HEADER_SIZE, "SET_CERTIFICATE")
        p1 = data[2]
        return cls(
            version=data[0],
            slot_id=p1 & SET_CERT_SLOT_MASK,
            cert_chain=bytes(data[HEADER_SIZE:]),
            cert_model=(p1 & SET_CERT_MODEL_MASK) >> SET_CERT_MODEL_SHIFT,
            erase=bool(p1 & SET_CERT_ERASE),
            key_pair_id=data[3],
        )


def build_set_certificate_rsp(version: int, slot_id: int) -> bytes:
    """SET_CERTIFICATE_RSP: Param1 = SlotID."""
    return build_header(version, ResponseCode.SET_CERTIFICATE_RSP, slot_id & SET_CERT_SLOT_MASK)


# --- GET_KEY_PAIR_INFO / KEY_PAIR_INFO --------------------------------------------------


def build_get_key_pair_info(version: int, key_pair_id: int) -> bytes:
    return build_header(version, RequestCode.GET_KEY_PAIR_INFO) + bytes((key_pair_id & 0xFF,))


@dataclass(slots=True)
class KeyPairInfoResponse:
    """KEY_PAIR_INFO (DSP0274 1.3 table "KEY_PAIR_INFO response message format")."""

    version: int
    total_key_pairs: int
    key_pair_id: int
    capabilities: int
    key_usage_capabilities: int
    current_key_usage: int
    asym_algo_capabilities: int
    current_asym_algo: int
    assoc_cert_slot_mask: int
    public_key_info: bytes = b""

    def encode(self) -> bytes:
        if len(self.public_key_info) > 0xFFFF:
            raise CodecError("KEY_PAIR_INFO: PublicKeyInfo is longer than 65535 bytes")
        return (
            build_header(self.version, ResponseCode.KEY_PAIR_INFO)
            + struct.pack(
                "<BBHHHIIHB",
                self.total_key_pairs,
                self.key_pair_id,
                self.capabilities,
                self.key_usage_capabilities,
                self.current_key_usage,
                self.asym_algo_capabilities,
                self.current_asym_algo,
                len(self.public_key_info),
                self.assoc_cert_slot_mask,
            )
            + self.public_key_info
        )

    @classmethod
    def decode(cls, data: bytes) -> tuple[KeyPairInfoResponse, int]:
        _need(data, KEY_PAIR_INFO_HEADER_SIZE, "KEY_PAIR_INFO")
        (total, kpid, caps, usage_caps, usage, asym_caps, asym, pk_len, assoc) = struct.unpack_from(
            "<BBHHHIIHB", data, HEADER_SIZE
        )
        size = KEY_PAIR_INFO_HEADER_SIZE + pk_len
        _need(data, size, f"KEY_PAIR_INFO with PublicKeyInfoLen {pk_len}")
        return (
            cls(
                data[0],
                total,
                kpid,
                caps,
                usage_caps,
                usage,
                asym_caps,
                asym,
                assoc,
                bytes(data[KEY_PAIR_INFO_HEADER_SIZE:size]),
            ),
            size,
        )


# --- SET_KEY_PAIR_INFO / SET_KEY_PAIR_INFO_ACK ------------------------------------------


@dataclass(slots=True)
class SetKeyPairInfoRequest:
    """SET_KEY_PAIR_INFO; ``full`` is False for an erase sent with the KeyPairID only."""

    version: int
    operation: int
    key_pair_id: int
    desired_key_usage: int = 0
    desired_asym_algo: int = 0
    desired_assoc_cert_slot_mask: int = 0
    full: bool = True

    def encode(self) -> bytes:
        out = build_header(self.version, RequestCode.SET_KEY_PAIR_INFO, self.operation) + bytes(
            (self.key_pair_id & 0xFF,)
        )
        if self.full:
            out += struct.pack(
                "<BHIB",
                0,
                self.desired_key_usage,
                self.desired_asym_algo,
                self.desired_assoc_cert_slot_mask,
            )
        return out

    @classmethod
    def decode(cls, data: bytes) -> SetKeyPairInfoRequest:
        """Parse; an erase may stop after the KeyPairID, the others need every field."""
        _need(data, SET_KEY_PAIR_INFO_ERASE_SIZE, "SET_KEY_PAIR_INFO")
        op = data[2]
        if len(data) < SET_KEY_PAIR_INFO_SIZE:
            if op != KeyPairOperation.ERASE:
                raise CodecError(
                    f"SET_KEY_PAIR_INFO: {len(data)} bytes, operation {op} needs "
                    f"{SET_KEY_PAIR_INFO_SIZE}"
                )
            return cls(data[0], op, data[4], full=False)
        _reserved, usage, asym, assoc = struct.unpack_from("<BHIB", data, HEADER_SIZE + 1)
        return cls(data[0], op, data[4], usage, asym, assoc)


def build_set_key_pair_info_ack(version: int) -> bytes:
    return build_header(version, ResponseCode.SET_KEY_PAIR_INFO_ACK)
