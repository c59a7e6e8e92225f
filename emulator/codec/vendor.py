"""VENDOR_DEFINED_REQUEST / VENDOR_DEFINED_RESPONSE (DSP0274 "VENDOR_DEFINED_REQUEST request
and VENDOR_DEFINED_RESPONSE response") and the PCI-SIG IDE key management protocol carried
in them (PCIe r6 6.33.3 "IDE Key Management (IDE_KM)", PCI-SIG CMA).

Layouts, all little-endian, as libspdm ``industry_standard/spdm.h``, ``pcidoe.h`` and
``pci_idekm.h`` define them:

* VENDOR_DEFINED_REQUEST (0xFE) / VENDOR_DEFINED_RESPONSE (0x7E): header (Param1 bit 7 is
  LargeReq / LargeResp from SPDM 1.4, reserved before; Param2 reserved), StandardID (u16,
  the registry of DSP0274 table "Registry or standards body ID"), Len (u8), VendorID (Len
  bytes), PayloadLength (u16), Payload.  With Large* (1.4+): the u16 is reserved and a u32
  length follows.  Len is fixed per registry (libspdm ``libspdm_validate_svh_vendor_id_len``).
* PCI-SIG vendor-defined messages (StandardID 3, Len 2, VendorID 0x0001): the payload
  starts with the PCI protocol ID (u8): 0x00 IDE_KM, 0x01 TDISP.
* IDE_KM (after the protocol ID), byte offsets from the ObjectID:

  - QUERY (0x00): ObjectID, Reserved, PortIndex (3 bytes).
  - QUERY_RESP (0x01): ObjectID, Reserved, PortIndex, DevFuncNum, BusNum, Segment,
    MaxPortIndex, then the IDE extended capability registers from "IDE Capability"
    onward (u32 each): IDE Capability, IDE Control, a Link IDE Stream Control/Status pair
    per supported TC, and per Selective IDE Stream its Capability, Control, Status, RID
    Association 1 and 2 and three Address Association registers per address block.
  - KEY_PROG (0x02): ObjectID, Reserved (2), StreamID, Reserved, KeySubStream, PortIndex,
    Key (8 DW), IFV (invocation field of the IV, 2 DW): 47 bytes.
  - KP_ACK (0x03): ObjectID, Reserved (2), StreamID, Status, KeySubStream, PortIndex.
  - K_SET_GO (0x04), K_SET_STOP (0x05), K_GOSTOP_ACK (0x06): ObjectID, Reserved (2),
    StreamID, Reserved, KeySubStream, PortIndex (7 bytes).

  KeySubStream: bit 0 key set (K0/K1), bit 1 direction (0 RX, 1 TX), bits 3:2 reserved,
  bits 7:4 sub-stream (0 PR, 1 NPR, 2 CPL).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from emulator.codec.constants import RequestCode, ResponseCode
from emulator.errors import CodecError

VENDOR_HEADER_SIZE = 7  # header (4) + StandardID (2) + Len (1)
LARGE_PAYLOAD = 0x80  # Param1 bit 7: LargeReq / LargeResp (SPDM 1.4+)
MAX_PAYLOAD = 0xFFFF


class StandardId(IntEnum):
    """DSP0274 table "Registry or standards body ID"."""

    DMTF = 0x0
    TCG = 0x1
    USB = 0x2
    PCISIG = 0x3
    IANA = 0x4
    HDBASET = 0x5
    MIPI = 0x6
    CXL = 0x7
    JEDEC = 0x8
    VESA = 0x9
    IANA_CBOR = 0xA
    DMTF_DSP = 0xB


#: VendorID lengths each registry allows (libspdm ``libspdm_validate_svh_vendor_id_len``)
VENDOR_ID_LENGTHS: dict[int, tuple[int, ...]] = {
    StandardId.DMTF: (0,),
    StandardId.VESA: (0,),
    StandardId.TCG: (0, 2),
    StandardId.USB: (0, 2),
    StandardId.PCISIG: (0, 2),
    StandardId.MIPI: (0, 2),
    StandardId.CXL: (0, 2),
    StandardId.JEDEC: (0, 2),
    StandardId.IANA: (0, 4),
    StandardId.HDBASET: (0, 4),
    StandardId.IANA_CBOR: (1, 2, 3, 5, 9),
    StandardId.DMTF_DSP: (2,),
}


def valid_vendor_id_len(standard_id: int, length: int) -> bool:
    """Whether a VendorID of ``length`` bytes is allowed for ``standard_id``."""
    return length in VENDOR_ID_LENGTHS.get(standard_id, ())


@dataclass(frozen=True, slots=True)
class VendorDefined:
    """The body of a VENDOR_DEFINED_REQUEST or VENDOR_DEFINED_RESPONSE."""

    standard_id: int
    vendor_id: bytes
    payload: bytes
    #: Param1 bit 7 (SPDM 1.4+ large payload form)
    large: bool = False


def _build(version: int, code: int, msg: VendorDefined) -> bytes:
    if not 0 <= msg.standard_id <= 0xFFFF:
        raise CodecError(f"StandardID {msg.standard_id} does not fit in 16 bits")
    if len(msg.vendor_id) > 0xFF:
        raise CodecError(f"VendorID is {len(msg.vendor_id)} bytes, at most 255")
    head = bytes((version, code, LARGE_PAYLOAD if msg.large else 0, 0))
    head += struct.pack("<HB", msg.standard_id, len(msg.vendor_id)) + msg.vendor_id
    if msg.large:
        return head + struct.pack("<HI", 0, len(msg.payload)) + msg.payload
    if len(msg.payload) > MAX_PAYLOAD:
        raise CodecError(f"vendor payload is {len(msg.payload)} bytes, at most 65535")
    return head + struct.pack("<H", len(msg.payload)) + msg.payload


def build_vendor_request(version: int, msg: VendorDefined) -> bytes:
    """VENDOR_DEFINED_REQUEST bytes."""
    return _build(version, RequestCode.VENDOR_DEFINED_REQUEST, msg)


def build_vendor_response(version: int, msg: VendorDefined) -> bytes:
    """VENDOR_DEFINED_RESPONSE bytes."""
    return _build(version, ResponseCode.VENDOR_DEFINED_RESPONSE, msg)


def parse_vendor(data: bytes, *, large_allowed: bool = False) -> tuple[VendorDefined, int]:
    """Parse a VENDOR_DEFINED_REQUEST/RESPONSE; returns the body and the message's real
    size (trailing transport padding is not part of it).  ``large_allowed``: honour
    Param1 bit 7 (SPDM 1.4+); otherwise the bit is reserved and ignored."""
    if len(data) < VENDOR_HEADER_SIZE:
        raise CodecError(f"vendor-defined message: {len(data)} bytes, at least 7 needed")
    standard_id, vlen = struct.unpack_from("<HB", data, 4)
    large = large_allowed and bool(data[2] & LARGE_PAYLOAD)
    off = VENDOR_HEADER_SIZE + vlen
    need = off + (6 if large else 2)
    if len(data) < need:
        raise CodecError(
            f"vendor-defined message: {len(data)} bytes, VendorID Len {vlen} needs {need}"
        )
    vendor_id = bytes(data[VENDOR_HEADER_SIZE:off])
    if large:
        (plen,) = struct.unpack_from("<I", data, off + 2)
        off += 6
    else:
        (plen,) = struct.unpack_from("<H", data, off)
        off += 2
    if len(data) < off + plen:
        raise CodecError(
            f"vendor-defined message: PayloadLength {plen} but only {len(data) - off} payload bytes"
        )
    return VendorDefined(standard_id, vendor_id, bytes(data[off : off + plen]), large), off + plen


# ---- PCI-SIG vendor-defined protocols ---------------------------------------------------

PCISIG_VENDOR_ID = 0x0001
PCISIG_VENDOR_ID_BYTES = struct.pack("<H", PCISIG_VENDOR_ID)


class PciProtocol(IntEnum):
    """PCI-SIG protocol IDs in the vendor-defined payload (libspdm ``pcidoe.h``)."""

    IDE_KM = 0x00
    TDISP = 0x01


def pcisig_message(protocol: int, body: bytes) -> VendorDefined:
    """A PCI-SIG vendor-defined body: StandardID 3, VendorID 0x0001, protocol ID + body."""
    return VendorDefined(StandardId.PCISIG, PCISIG_VENDOR_ID_BYTES, bytes((protocol,)) + body)


# ---- IDE_KM -----------------------------------------------------------------------------


class IdeKmObject(IntEnum):
    """IDE_KM Object IDs (PCIe r6 table "IDE_KM messages")."""

    QUERY = 0x00
    QUERY_RESP = 0x01
    KEY_PROG = 0x02
    KP_ACK = 0x03
    K_SET_GO = 0x04
    K_SET_STOP = 0x05
    K_GOSTOP_ACK = 0x06


class KpAckStatus(IntEnum):
    """KP_ACK Status values."""

    SUCCESS = 0x00
    INCORRECT_LENGTH = 0x01
    UNSUPPORTED_PORT_INDEX = 0x02
    UNSUPPORTED_VALUE = 0x03
    UNSPECIFIED_FAILURE = 0x04


class SubStream(IntEnum):
    """KeySubStream bits 7:4."""

    PR = 0
    NPR = 1
    CPL = 2


KEY_SET_MASK = 0x01
DIRECTION_TX = 0x02
KEY_SUB_STREAM_RESERVED = 0x0C
KEY_SIZE = 32  # 8 DW
IFV_SIZE = 8  # 2 DW
QUERY_SIZE = 3
QUERY_RESP_HEADER_SIZE = 7
KEY_HEADER_SIZE = 7  # KEY_PROG header, KP_ACK, K_SET_GO/STOP, K_GOSTOP_ACK
KEY_PROG_SIZE = KEY_HEADER_SIZE + KEY_SIZE + IFV_SIZE


def key_sub_stream(key_set: int, tx: bool, sub_stream: int) -> int:
    """The KeySubStream byte: key set (0/1), direction (TX or RX), sub-stream (0-2)."""
    return (sub_stream & 0xF) << 4 | (DIRECTION_TX if tx else 0) | (key_set & KEY_SET_MASK)


@dataclass(frozen=True, slots=True)
class IdeKmQuery:
    port_index: int

    def encode(self) -> bytes:
        return bytes((IdeKmObject.QUERY, 0, self.port_index))


@dataclass(frozen=True, slots=True)
class IdeKmQueryResp:
    port_index: int
    dev_func_num: int
    bus_num: int
    segment: int
    max_port_index: int
    registers: tuple[int, ...] = ()

    def encode(self) -> bytes:
        head = bytes(
            (
                IdeKmObject.QUERY_RESP,
                0,
                self.port_index,
                self.dev_func_num,
                self.bus_num,
                self.segment,
                self.max_port_index,
            )
        )
        return head + b"".join(struct.pack("<I", r) for r in self.registers)

    @classmethod
    def decode(cls, data: bytes) -> IdeKmQueryResp:
        if len(data) < QUERY_RESP_HEADER_SIZE or (len(data) - QUERY_RESP_HEADER_SIZE) % 4:
            raise CodecError(f"QUERY_RESP is {len(data)} bytes: 7 + a multiple of 4 expected")
        if data[0] != IdeKmObject.QUERY_RESP:
            raise CodecError(f"QUERY_RESP: ObjectID 0x{data[0]:02X}")
        count = (len(data) - QUERY_RESP_HEADER_SIZE) // 4
        regs = struct.unpack_from(f"<{count}I", data, QUERY_RESP_HEADER_SIZE)
        return cls(data[2], data[3], data[4], data[5], data[6], tuple(regs))


@dataclass(frozen=True, slots=True)
class IdeKmKeyProg:
    stream_id: int
    key_sub_stream: int
    port_index: int
    key: bytes
    ifv: bytes

    def encode(self) -> bytes:
        if len(self.key) != KEY_SIZE or len(self.ifv) != IFV_SIZE:
            raise CodecError(
                f"KEY_PROG: key {len(self.key)} bytes and IFV {len(self.ifv)}, need 32 and 8"
            )
        return (
            bytes(
                (
                    IdeKmObject.KEY_PROG,
                    0,
                    0,
                    self.stream_id,
                    0,
                    self.key_sub_stream,
                    self.port_index,
                )
            )
            + self.key
            + self.ifv
        )


@dataclass(frozen=True, slots=True)
class IdeKmKeyMessage:
    """KP_ACK (``status`` in byte 4) and K_SET_GO / K_SET_STOP / K_GOSTOP_ACK (byte 4
    reserved, ``status`` 0): the common 7-byte layout."""

    object_id: int
    stream_id: int
    key_sub_stream: int
    port_index: int
    status: int = 0

    def encode(self) -> bytes:
        return bytes(
            (
                self.object_id,
                0,
                0,
                self.stream_id,
                self.status,
                self.key_sub_stream,
                self.port_index,
            )
        )

    @classmethod
    def decode(cls, data: bytes, object_id: int) -> IdeKmKeyMessage:
        if len(data) != KEY_HEADER_SIZE:
            raise CodecError(f"{IdeKmObject(object_id).name}: {len(data)} bytes, 7 expected")
        if data[0] != object_id:
            raise CodecError(
                f"{IdeKmObject(object_id).name} expected, ObjectID 0x{data[0]:02X} received"
            )
        return cls(data[0], data[3], data[5], data[6], data[4])
