"""TEE Device Interface Security Protocol (TDISP) messages (PCIe 6.1 chapter 11, "TDISP",
version 1.0), carried in PCI-SIG VENDOR_DEFINED_REQUEST/RESPONSE with protocol ID 0x01.

Layouts, all little-endian, as PCIe 6.1 11.3 tables and libspdm
``industry_standard/pci_tdisp.h`` define them; every message starts with the 16-byte
header (table 11-5):

======  ==============  ====  ============================================================
offset  field           size
======  ==============  ====  ============================================================
0       TDISPVersion    1     major (7:4) . minor (3:0); this version is 1.0 (0x10)
1       MessageType     1     request 0x81-0x8B, response 0x01-0x0B, TDISP_ERROR 0x7F
2       Reserved        2
4       INTERFACE_ID    12    FUNCTION_ID (u32: 15:0 Requester ID, 23:16 Requester
                              Segment, 24 Requester Segment Valid) + 8 reserved bytes
======  ==============  ====  ============================================================

Payloads (offsets from the start of the message):

* GET_TDISP_VERSION (0x81): none.  TDISP_VERSION (0x01): VERSION_NUM_COUNT (u8) @16,
  VERSION_NUM_ENTRY[N] (u8 each) @17 (table 11-7).
* GET_TDISP_CAPABILITIES (0x82): TSM_CAPS (u32) @16.  TDISP_CAPABILITIES (0x02):
  DSM_CAPS (u32) @16, REQ_MSGS_SUPPORTED (16 bytes, bit n = request code 80h + n) @20,
  LOCK_INTERFACE_FLAGS_SUPPORTED (u16) @36, reserved (3) @38, DEV_ADDR_WIDTH @41,
  NUM_REQ_THIS @42, NUM_REQ_ALL @43 (table 11-9): 44 bytes.
* LOCK_INTERFACE_REQUEST (0x83): FLAGS (u16) @16, StreamID (u8) @18, reserved @19,
  MMIO_REPORTING_OFFSET (u64, two's complement) @20, BIND_P2P_ADDRESS_MASK (u64) @28:
  36 bytes.  LOCK_INTERFACE_RESPONSE (0x03): START_INTERFACE_NONCE (32) @16: 48 bytes.
* GET_DEVICE_INTERFACE_REPORT (0x84): OFFSET (u16) @16, LENGTH (u16) @18: 20 bytes.
  DEVICE_INTERFACE_REPORT (0x04): PORTION_LENGTH (u16) @16, REMAINDER_LENGTH (u16) @18,
  REPORT_BYTES @20 (table 11-14).
* GET_DEVICE_INTERFACE_STATE (0x85): none.  DEVICE_INTERFACE_STATE (0x05): TDI_STATE
  (u8) @16: 17 bytes.
* START_INTERFACE_REQUEST (0x86): START_INTERFACE_NONCE (32) @16: 48 bytes;
  START_INTERFACE_RESPONSE (0x06): none.
* STOP_INTERFACE_REQUEST (0x87) / STOP_INTERFACE_RESPONSE (0x07): none.
* BIND_P2P_STREAM_REQUEST (0x88) / UNBIND_P2P_STREAM_REQUEST (0x89): P2P_STREAM_ID (u8)
  @16: 17 bytes; their responses (0x08 / 0x09): none.
* SET_MMIO_ATTRIBUTE_REQUEST (0x8A): MMIO_RANGE (16) @16: 32 bytes; response (0x0A): none.
* VDM_REQUEST (0x8B) / VDM_RESPONSE (0x0B): REGISTRY_ID (u8) @16, VENDOR_ID_LEN (u8)
  @17, VENDOR_ID @18, vendor data (tables 11-29, 11-30).
* TDISP_ERROR (0x7F): ERROR_CODE (u32) @16, ERROR_DATA (u32) @20, EXTENDED_ERROR_DATA @24
  (table 11-26): 24 bytes and more.

The TDI report (table 11-15): INTERFACE_INFO (u16), reserved (u16), MSI_X_MESSAGE_CONTROL
(u16), LNR_CONTROL (u16), TPH_CONTROL (u32), MMIO_RANGE_COUNT (u32), MMIO_RANGE[N] (16
bytes each: first 4K page (u64, reporting offset added), number of 4K pages (u32), range
attributes (u16: bit 0 MSI-X table, 1 MSI-X PBA, 2 IS_NON_TEE_MEM, 3 IS_MEM_ATTR_UPDATABLE),
Range ID (u16)), DEVICE_SPECIFIC_INFO_LEN (u32), DEVICE_SPECIFIC_INFO.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag

from emulator.codec.constants import RequestCode
from emulator.codec.vendor import (
    PCISIG_VENDOR_ID_BYTES,
    PciProtocol,
    StandardId,
    parse_vendor,
)
from emulator.errors import CodecError

#: TDISPVersion of this specification (PCIe 6.1 11.3.3: "V1.0, represented as 10h")
TDISP_VERSION_10 = 0x10
HEADER_SIZE = 16
INTERFACE_ID_SIZE = 12
NONCE_SIZE = 32
MMIO_RANGE_SIZE = 16
REPORT_HEADER_SIZE = 16  # INTERFACE_INFO .. MMIO_RANGE_COUNT
PAGE_SHIFT = 12  # MMIO ranges are in 4K pages


class TdispRequest(IntEnum):
    """TDISP request codes (PCIe 6.1 table 11-3)."""

    GET_TDISP_VERSION = 0x81
    GET_TDISP_CAPABILITIES = 0x82
    LOCK_INTERFACE_REQUEST = 0x83
    GET_DEVICE_INTERFACE_REPORT = 0x84
    GET_DEVICE_INTERFACE_STATE = 0x85
    START_INTERFACE_REQUEST = 0x86
    STOP_INTERFACE_REQUEST = 0x87
    BIND_P2P_STREAM_REQUEST = 0x88
    UNBIND_P2P_STREAM_REQUEST = 0x89
    SET_MMIO_ATTRIBUTE_REQUEST = 0x8A
    VDM_REQUEST = 0x8B


class TdispResponse(IntEnum):
    """TDISP response codes (PCIe 6.1 table 11-4)."""

    TDISP_VERSION = 0x01
    TDISP_CAPABILITIES = 0x02
    LOCK_INTERFACE_RESPONSE = 0x03
    DEVICE_INTERFACE_REPORT = 0x04
    DEVICE_INTERFACE_STATE = 0x05
    START_INTERFACE_RESPONSE = 0x06
    STOP_INTERFACE_RESPONSE = 0x07
    BIND_P2P_STREAM_RESPONSE = 0x08
    UNBIND_P2P_STREAM_RESPONSE = 0x09
    SET_MMIO_ATTRIBUTE_RESPONSE = 0x0A
    VDM_RESPONSE = 0x0B
    TDISP_ERROR = 0x7F


#: the response code answering each request code
RESPONSE_FOR: dict[int, TdispResponse] = {
    TdispRequest.GET_TDISP_VERSION: TdispResponse.TDISP_VERSION,
    TdispRequest.GET_TDISP_CAPABILITIES: TdispResponse.TDISP_CAPABILITIES,
    TdispRequest.LOCK_INTERFACE_REQUEST: TdispResponse.LOCK_INTERFACE_RESPONSE,
    TdispRequest.GET_DEVICE_INTERFACE_REPORT: TdispResponse.DEVICE_INTERFACE_REPORT,
    TdispRequest.GET_DEVICE_INTERFACE_STATE: TdispResponse.DEVICE_INTERFACE_STATE,
    TdispRequest.START_INTERFACE_REQUEST: TdispResponse.START_INTERFACE_RESPONSE,
    TdispRequest.STOP_INTERFACE_REQUEST: TdispResponse.STOP_INTERFACE_RESPONSE,
    TdispRequest.BIND_P2P_STREAM_REQUEST: TdispResponse.BIND_P2P_STREAM_RESPONSE,
    TdispRequest.UNBIND_P2P_STREAM_REQUEST: TdispResponse.UNBIND_P2P_STREAM_RESPONSE,
    TdispRequest.SET_MMIO_ATTRIBUTE_REQUEST: TdispResponse.SET_MMIO_ATTRIBUTE_RESPONSE,
    TdispRequest.VDM_REQUEST: TdispResponse.VDM_RESPONSE,
}

#: the request messages every TDISP device supports (table 11-3 "Required")
REQUIRED_REQUESTS = frozenset(
    {
        TdispRequest.GET_TDISP_VERSION,
        TdispRequest.GET_TDISP_CAPABILITIES,
        TdispRequest.LOCK_INTERFACE_REQUEST,
        TdispRequest.GET_DEVICE_INTERFACE_REPORT,
        TdispRequest.GET_DEVICE_INTERFACE_STATE,
        TdispRequest.START_INTERFACE_REQUEST,
        TdispRequest.STOP_INTERFACE_REQUEST,
    }
)

#: the exact size of each request (VDM_REQUEST: at least this many bytes)
REQUEST_SIZES: dict[int, int] = {
    TdispRequest.GET_TDISP_VERSION: HEADER_SIZE,
    TdispRequest.GET_TDISP_CAPABILITIES: HEADER_SIZE + 4,
    TdispRequest.LOCK_INTERFACE_REQUEST: HEADER_SIZE + 20,
    TdispRequest.GET_DEVICE_INTERFACE_REPORT: HEADER_SIZE + 4,
    TdispRequest.GET_DEVICE_INTERFACE_STATE: HEADER_SIZE,
    TdispRequest.START_INTERFACE_REQUEST: HEADER_SIZE + NONCE_SIZE,
    TdispRequest.STOP_INTERFACE_REQUEST: HEADER_SIZE,
    TdispRequest.BIND_P2P_STREAM_REQUEST: HEADER_SIZE + 1,
    TdispRequest.UNBIND_P2P_STREAM_REQUEST: HEADER_SIZE + 1,
    TdispRequest.SET_MMIO_ATTRIBUTE_REQUEST: HEADER_SIZE + MMIO_RANGE_SIZE,
    TdispRequest.VDM_REQUEST: HEADER_SIZE + 2,
}


class TdispErrorCode(IntEnum):
    """TDISP_ERROR ERROR_CODE values (PCIe 6.1 table 11-27)."""

    INVALID_REQUEST = 0x0001
    BUSY = 0x0003
    INVALID_INTERFACE_STATE = 0x0004
    UNSPECIFIED = 0x0005
    UNSUPPORTED_REQUEST = 0x0007
    VERSION_MISMATCH = 0x0041
    VENDOR_SPECIFIC_ERROR = 0x00FF
    INVALID_INTERFACE = 0x0101
    INVALID_NONCE = 0x0102
    INSUFFICIENT_ENTROPY = 0x0103
    INVALID_DEVICE_CONFIGURATION = 0x0104


class TdiState(IntEnum):
    """TDI_STATE of DEVICE_INTERFACE_STATE (PCIe 6.1 table 11-17; figure 11-5)."""

    CONFIG_UNLOCKED = 0
    CONFIG_LOCKED = 1
    RUN = 2
    ERROR = 3


class LockFlags(IntFlag):
    """LOCK_INTERFACE_REQUEST FLAGS (PCIe 6.1 table 11-10; libspdm ``pci_tdisp.h``)."""

    NO_FW_UPDATE = 0x01
    #: 0: 64-byte system cache line, 1: 128-byte
    SYSTEM_CACHE_LINE_SIZE = 0x02
    LOCK_MSIX = 0x04
    BIND_P2P = 0x08
    ALL_REQUEST_REDIRECT = 0x10


LOCK_FLAGS_DEFINED = 0x1F


class InterfaceInfo(IntFlag):
    """TDI report INTERFACE_INFO (PCIe 6.1 table 11-15)."""

    NO_UPDATE_AFTER_LOCK = 0x01
    DMA_WITHOUT_PASID = 0x02
    DMA_WITH_PASID = 0x04
    ATS_SUPPORTED = 0x08
    PRS_SUPPORTED = 0x10


class MmioAttr(IntFlag):
    """MMIO_RANGE Range Attributes bits 15:0 (PCIe 6.1 table 11-15)."""

    MSIX_TABLE = 0x01
    MSIX_PBA = 0x02
    IS_NON_TEE_MEM = 0x04
    IS_MEM_ATTR_UPDATABLE = 0x08


#: SET_MMIO_ATTRIBUTE_REQUEST: bits 1:0 of the range attributes "Reserved - must be zero"
SET_MMIO_MUST_BE_ZERO = 0x03


class RegistryId(IntEnum):
    """REGISTRY_ID of VDM_REQUEST / EXTENDED_ERROR_DATA (PCIe 6.1 table 11-28)."""

    PCISIG = 0x00
    CXL = 0x01


# ---- interface ID and header -------------------------------------------------------------

SEGMENT_VALID = 1 << 24


@dataclass(frozen=True, slots=True)
class InterfaceId:
    """INTERFACE_ID (PCIe 6.1 table 11-1): FUNCTION_ID and 8 reserved bytes."""

    function_id: int
    reserved: bytes = bytes(8)

    @property
    def requester_id(self) -> int:
        return self.function_id & 0xFFFF

    @property
    def segment_valid(self) -> bool:
        return bool(self.function_id & SEGMENT_VALID)

    @property
    def segment(self) -> int:
        return (self.function_id >> 16) & 0xFF

    def encode(self) -> bytes:
        if len(self.reserved) != 8:
            raise CodecError(f"INTERFACE_ID reserved part is {len(self.reserved)} bytes, not 8")
        return struct.pack("<I", self.function_id & 0xFFFFFFFF) + self.reserved

    @classmethod
    def decode(cls, data: bytes) -> InterfaceId:
        if len(data) < INTERFACE_ID_SIZE:
            raise CodecError(f"INTERFACE_ID is {len(data)} bytes, 12 needed")
        return cls(struct.unpack_from("<I", data)[0], bytes(data[4:12]))


def function_id_text(function_id: int) -> str:
    """``0x0000BEEF`` -> ``BE:1D.7`` (with ``SSSS:`` when the segment is valid)."""
    rid = function_id & 0xFFFF
    text = f"{rid >> 8:02X}:{(rid >> 3) & 0x1F:02X}.{rid & 7}"
    if function_id & SEGMENT_VALID:
        text = f"{(function_id >> 16) & 0xFF:04X}:" + text
    return text


@dataclass(frozen=True, slots=True)
class TdispHeader:
    """The 16-byte header of every TDISP message (PCIe 6.1 table 11-5)."""

    version: int
    message_type: int
    interface_id: InterfaceId

    def encode(self) -> bytes:
        return bytes((self.version, self.message_type, 0, 0)) + self.interface_id.encode()

    @classmethod
    def decode(cls, data: bytes) -> TdispHeader:
        if len(data) < HEADER_SIZE:
            raise CodecError(f"TDISP message is {len(data)} bytes, shorter than the 16-byte header")
        return cls(data[0], data[1], InterfaceId.decode(data[4:16]))


def message(version: int, message_type: int, function_id: int, payload: bytes = b"") -> bytes:
    """A whole TDISP message: the header (reserved fields zero) and ``payload``."""
    return TdispHeader(version, message_type, InterfaceId(function_id)).encode() + payload


def message_name(code: int) -> str:
    """``0x83`` -> ``LOCK_INTERFACE_REQUEST``, ``0x7F`` -> ``TDISP_ERROR``."""
    for enum in (TdispRequest, TdispResponse):
        try:
            return enum(code).name
        except ValueError:
            continue
    return f"TDISP_0x{code:02X}"


# ---- payloads ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capabilities:
    """TDISP_CAPABILITIES payload (PCIe 6.1 table 11-9)."""

    dsm_caps: int = 0
    req_msgs_supported: bytes = bytes(16)
    lock_interface_flags_supported: int = 0
    dev_addr_width: int = 52
    num_req_this: int = 1
    num_req_all: int = 1

    _STRUCT = struct.Struct("<I16sH3xBBB")

    def encode(self) -> bytes:
        if len(self.req_msgs_supported) != 16:
            raise CodecError("REQ_MSGS_SUPPORTED is 16 bytes")
        return self._STRUCT.pack(
            self.dsm_caps,
            self.req_msgs_supported,
            self.lock_interface_flags_supported,
            self.dev_addr_width,
            self.num_req_this,
            self.num_req_all,
        )

    @classmethod
    def decode(cls, payload: bytes) -> Capabilities:
        if len(payload) != cls._STRUCT.size:
            raise CodecError(f"TDISP_CAPABILITIES payload is {len(payload)} bytes, 28 expected")
        return cls(*cls._STRUCT.unpack(payload))

    def supports(self, code: int) -> bool:
        """Whether REQ_MSGS_SUPPORTED has the bit of request ``code`` (bit = code - 80h)."""
        bit = code - 0x80
        return 0 <= bit < 128 and bool(self.req_msgs_supported[bit // 8] >> (bit % 8) & 1)


def req_msgs_bitmap(codes: set[int] | frozenset[int]) -> bytes:
    """REQ_MSGS_SUPPORTED for these request codes: bit index = code - 80h (table 11-9)."""
    bits = bytearray(16)
    for code in codes:
        bit = code - 0x80
        if not 0 <= bit < 128:
            raise CodecError(f"0x{code:02X} is not a TDISP request code")
        bits[bit // 8] |= 1 << (bit % 8)
    return bytes(bits)


@dataclass(frozen=True, slots=True)
class LockParams:
    """LOCK_INTERFACE_REQUEST payload (PCIe 6.1 table 11-10)."""

    flags: int = 0
    default_stream_id: int = 0
    #: signed (two's complement) 64-bit offset added to every reported MMIO address
    mmio_reporting_offset: int = 0
    bind_p2p_address_mask: int = 0

    _STRUCT = struct.Struct("<HBxqQ")

    def encode(self) -> bytes:
        return self._STRUCT.pack(
            self.flags,
            self.default_stream_id,
            self.mmio_reporting_offset,
            self.bind_p2p_address_mask,
        )

    @classmethod
    def decode(cls, payload: bytes) -> LockParams:
        if len(payload) != cls._STRUCT.size:
            raise CodecError(f"LOCK_INTERFACE_REQUEST payload is {len(payload)} bytes, 20 expected")
        return cls(*cls._STRUCT.unpack(payload))


@dataclass(frozen=True, slots=True)
class MmioRange:
    """One MMIO_RANGE (PCIe 6.1 table 11-15 / 11-24): 16 bytes."""

    first_page: int
    pages: int
    attributes: int = 0
    range_id: int = 0

    _STRUCT = struct.Struct("<QIHH")

    def encode(self) -> bytes:
        return self._STRUCT.pack(self.first_page, self.pages, self.attributes, self.range_id)

    @classmethod
    def decode(cls, data: bytes, offset: int = 0) -> MmioRange:
        if len(data) < offset + MMIO_RANGE_SIZE:
            raise CodecError(f"MMIO_RANGE at {offset}: {len(data) - offset} bytes, 16 needed")
        return cls(*cls._STRUCT.unpack_from(data, offset))


@dataclass(frozen=True, slots=True)
class InterfaceReport:
    """The TDI report (PCIe 6.1 table 11-15) that DEVICE_INTERFACE_REPORT carries."""

    interface_info: int = 0
    msix_message_control: int = 0
    lnr_control: int = 0
    tph_control: int = 0
    mmio_ranges: tuple[MmioRange, ...] = ()
    device_specific_info: bytes = b""

    def encode(self) -> bytes:
        head = struct.pack(
            "<HHHHII",
            self.interface_info,
            0,
            self.msix_message_control,
            self.lnr_control,
            self.tph_control,
            len(self.mmio_ranges),
        )
        ranges = b"".join(r.encode() for r in self.mmio_ranges)
        info = struct.pack("<I", len(self.device_specific_info)) + self.device_specific_info
        return head + ranges + info

    @classmethod
    def decode(cls, data: bytes) -> InterfaceReport:
        if len(data) < REPORT_HEADER_SIZE + 4:
            raise CodecError(f"TDI report is {len(data)} bytes, at least 20 needed")
        info, _rsvd, msix, lnr, tph, count = struct.unpack_from("<HHHHII", data)
        end = REPORT_HEADER_SIZE + count * MMIO_RANGE_SIZE
        if len(data) < end + 4:
            raise CodecError(
                f"TDI report: MMIO_RANGE_COUNT {count} needs {end + 4} bytes, {len(data)} given"
            )
        ranges = tuple(
            MmioRange.decode(data, REPORT_HEADER_SIZE + i * MMIO_RANGE_SIZE) for i in range(count)
        )
        (dlen,) = struct.unpack_from("<I", data, end)
        if len(data) != end + 4 + dlen:
            raise CodecError(
                f"TDI report: DEVICE_SPECIFIC_INFO_LEN {dlen}, {len(data) - end - 4} bytes follow"
            )
        return cls(info, msix, lnr, tph, ranges, bytes(data[end + 4 :]))


@dataclass(frozen=True, slots=True)
class TdispError:
    """TDISP_ERROR payload (PCIe 6.1 table 11-26)."""

    code: int
    data: int = 0
    extended: bytes = b""

    def encode(self) -> bytes:
        return struct.pack("<II", self.code, self.data) + self.extended

    @classmethod
    def decode(cls, payload: bytes) -> TdispError:
        if len(payload) < 8:
            raise CodecError(f"TDISP_ERROR payload is {len(payload)} bytes, at least 8 needed")
        code, data = struct.unpack_from("<II", payload)
        return cls(code, data, bytes(payload[8:]))


@dataclass(frozen=True, slots=True)
class VdmBody:
    """VDM_REQUEST / VDM_RESPONSE payload (PCIe 6.1 tables 11-29, 11-30)."""

    registry_id: int
    vendor_id: bytes
    data: bytes = field(default=b"")

    def encode(self) -> bytes:
        if len(self.vendor_id) > 0xFF:
            raise CodecError("VENDOR_ID longer than 255 bytes")
        return bytes((self.registry_id, len(self.vendor_id))) + self.vendor_id + self.data

    @classmethod
    def decode(cls, payload: bytes) -> VdmBody:
        if len(payload) < 2:
            raise CodecError(f"VDM payload is {len(payload)} bytes, at least 2 needed")
        vlen = payload[1]
        if len(payload) < 2 + vlen:
            raise CodecError(f"VDM VENDOR_ID_LEN {vlen} but only {len(payload) - 2} bytes follow")
        return cls(payload[0], bytes(payload[2 : 2 + vlen]), bytes(payload[2 + vlen :]))


# ---- from an SPDM message ------------------------------------------------------------------


def tdisp_in_vendor(spdm_message: bytes) -> bytes | None:
    """The TDISP message inside a VENDOR_DEFINED_REQUEST/RESPONSE (PCI-SIG, protocol 01h),
    or None when ``spdm_message`` carries something else."""
    if len(spdm_message) < 2 or spdm_message[1] not in (
        RequestCode.VENDOR_DEFINED_REQUEST,
        0x7E,
    ):
        return None
    try:
        body, _size = parse_vendor(spdm_message)
    except CodecError:
        return None
    if body.standard_id != StandardId.PCISIG or body.vendor_id != PCISIG_VENDOR_ID_BYTES:
        return None
    if not body.payload or body.payload[0] != PciProtocol.TDISP:
        return None
    return body.payload[1:]


__all__ = [
    "HEADER_SIZE",
    "NONCE_SIZE",
    "REQUEST_SIZES",
    "REQUIRED_REQUESTS",
    "RESPONSE_FOR",
    "TDISP_VERSION_10",
    "Capabilities",
    "InterfaceId",
    "InterfaceInfo",
    "InterfaceReport",
    "LockFlags",
    "LockParams",
    "MmioAttr",
    "MmioRange",
    "RegistryId",
    "TdiState",
    "TdispError",
    "TdispErrorCode",
    "TdispHeader",
    "TdispRequest",
    "TdispResponse",
    "VdmBody",
    "function_id_text",
    "message",
    "message_name",
    "req_msgs_bitmap",
    "tdisp_in_vendor",
]
