"""CXL messages in PCI-SIG VENDOR_DEFINED_REQUEST/RESPONSE (VendorID 0x1E98, the CXL
consortium): CXL IDE key management (protocol 0x00, CXL 3.1 11.4.11 "CXL.cachemem IDE Key
Management (CXL_IDE_KM)") and the Trusted Security Protocol (protocol 0x01, CXL 3.1 11.5
"CXL Trusted Security Protocol (TSP)"), with the layouts of libspdm
``industry_standard/cxl_idekm.h`` and ``cxl_tsp.h`` (all little-endian).

CXL_IDE_KM (from the ObjectID byte, after the protocol ID):

* QUERY (0x00): ObjectID, Reserved, PortIndex (3 bytes).  QUERY_RESP (0x01): ObjectID,
  Reserved, PortIndex, DevFuncNum, BusNum, Segment, MaxPortIndex, Caps (bits 3:0 version
  = 1, bit 4 IV generation, bit 5 key generation, bit 6 K_SET_STOP), then the CXL IDE
  capability structure's DWORDs.
* KEY_PROG (0x02): ObjectID, Reserved (2), StreamID, Reserved, KeySubStream, PortIndex,
  Key (8 DW), pending initial IV (3 DW): 51 bytes.  KP_ACK (0x03): ObjectID, Reserved (2),
  StreamID, Status (0 success, 1 invalid), KeySubStream, PortIndex (7 bytes).
* K_SET_GO (0x04) / K_SET_STOP (0x05) / K_GOSTOP_ACK (0x06): the 7-byte layout.
* GET_KEY (0x07): the 7-byte layout; GET_KEY_ACK (0x08): the 7 bytes, key, IV (51 bytes).

KeySubStream: bit 1 direction (TX), bit 3 IV default (KEY_PROG) / containment mode
(K_SET_GO), bits 7:4 sub-stream (1000b: CXL.cachemem).

TSP: a 2-byte header (TSPVersion 0x10, OpCode), then the payload of each request and
response (struct formats below); errors are ERROR_RSP (0x7F): Reserved (2), ErrorCode
(u32), ErrorData (u32).
"""

from __future__ import annotations

import struct
from enum import IntEnum

CXL_VENDOR_ID = 0x1E98
CXL_VENDOR_ID_BYTES = struct.pack("<H", CXL_VENDOR_ID)


class CxlProtocol(IntEnum):
    """Protocol IDs in CXL vendor-defined payloads."""

    IDE_KM = 0x00
    TSP = 0x01


# ---- CXL_IDE_KM ---------------------------------------------------------------------------


class CxlIdeKmObject(IntEnum):
    QUERY = 0x00
    QUERY_RESP = 0x01
    KEY_PROG = 0x02
    KP_ACK = 0x03
    K_SET_GO = 0x04
    K_SET_STOP = 0x05
    K_GOSTOP_ACK = 0x06
    GET_KEY = 0x07
    GET_KEY_ACK = 0x08


CAPS_VERSION_1 = 0x01
CAPS_IV_GENERATION = 0x10
CAPS_KEY_GENERATION = 0x20
CAPS_K_SET_STOP = 0x40
KSS_DIRECTION_TX = 0x02
#: KEY_PROG: the IV is the default one (the pending initial IV is ignored)
KSS_IV_DEFAULT = 0x08
#: K_SET_GO: containment mode (skid mode when clear)
KSS_MODE_CONTAINMENT = 0x08
KSS_SUB_STREAM_MASK = 0xF0
KSS_SUB_STREAM_CXL = 0x80
KSS_RESERVED = 0x05
CXL_KEY_SIZE = 32
CXL_IV_SIZE = 12
CXL_QUERY_SIZE = 3
CXL_QUERY_RESP_HEADER_SIZE = 8
CXL_KEY_HEADER_SIZE = 7
CXL_KEY_PROG_SIZE = CXL_KEY_HEADER_SIZE + CXL_KEY_SIZE + CXL_IV_SIZE
KP_ACK_SUCCESS = 0x00
KP_ACK_INVALID = 0x01


def cxl_key_message(obj: int, stream_id: int, kss: int, port: int, status: int = 0) -> bytes:
    """The common 7-byte CXL_IDE_KM layout (KP_ACK has ``status`` in byte 4)."""
    return bytes((obj, 0, 0, stream_id, status, kss, port))


# ---- TSP ------------------------------------------------------------------------------------

TSP_VERSION_10 = 0x10


class TspOpcode(IntEnum):
    """TSP request and response opcodes (libspdm ``cxl_tsp.h``)."""

    GET_TARGET_TSP_VERSION = 0x81
    GET_TARGET_CAPABILITIES = 0x82
    SET_TARGET_CONFIGURATION = 0x83
    GET_TARGET_CONFIGURATION = 0x84
    GET_TARGET_CONFIGURATION_REPORT = 0x85
    LOCK_TARGET_CONFIGURATION = 0x86
    SET_TARGET_CKID_SPECIFIC_KEY = 0x87
    SET_TARGET_CKID_RANDOM_KEY = 0x88
    CLEAR_TARGET_CKID_KEY = 0x89
    SET_TARGET_RANGE_SPECIFIC_KEY = 0x8A
    SET_TARGET_RANGE_RANDOM_KEY = 0x8B
    CLEAR_TARGET_RANGE_KEY = 0x8C
    SET_TARGET_TE_STATE = 0x8D
    CHECK_TARGET_DELAYED_COMPLETION = 0x8E
    GET_TARGET_TSP_VERSION_RSP = 0x01
    GET_TARGET_CAPABILITIES_RSP = 0x02
    SET_TARGET_CONFIGURATION_RSP = 0x03
    GET_TARGET_CONFIGURATION_RSP = 0x04
    GET_TARGET_CONFIGURATION_REPORT_RSP = 0x05
    LOCK_TARGET_CONFIGURATION_RSP = 0x06
    SET_TARGET_CKID_SPECIFIC_KEY_RSP = 0x07
    SET_TARGET_CKID_RANDOM_KEY_RSP = 0x08
    CLEAR_TARGET_CKID_KEY_RSP = 0x09
    SET_TARGET_RANGE_SPECIFIC_KEY_RSP = 0x0A
    SET_TARGET_RANGE_RANDOM_KEY_RSP = 0x0B
    CLEAR_TARGET_RANGE_KEY_RSP = 0x0C
    SET_TARGET_TE_STATE_RSP = 0x0D
    CHECK_TARGET_DELAYED_COMPLETION_RSP = 0x0E
    DELAYED_RSP = 0x7E
    ERROR_RSP = 0x7F


class TspErrorCode(IntEnum):
    """TSP ERROR_RSP ErrorCode values."""

    INVALID_REQUEST = 0x01
    BUSY = 0x02
    UNSPECIFIED = 0x03
    UNSUPPORTED_REQUEST = 0x04
    VERSION_MISMATCH = 0x05
    VENDOR_SPECIFIC_ERROR = 0x06
    NO_PRIVILEGE = 0x07
    NO_ENTROPY = 0x08
    INVALID_CKID = 0x09
    INVALID_SECURITY_CONFIGURATION = 0x0A
    INVALID_SECURITY_STATE = 0x0B
    LONG_EXECUTION_TIME = 0x0C
    ALREADY_LOCKED = 0x0D


class TspState(IntEnum):
    """current_tsp_state of GET_TARGET_CONFIGURATION_RSP."""

    CONFIG_UNLOCKED = 0
    CONFIG_LOCKED = 1
    ERROR = 2


#: request / response layouts (``struct`` formats, little-endian, header included)
TSP_SIMPLE = struct.Struct("<BBH")  # header + reserved: most requests and responses
TSP_VERSION_RSP = struct.Struct("<BBHB")  # + VersionNumberEntry[count]
TSP_CAPABILITIES_RSP = struct.Struct("<BBHIHHHHIIHHIB19x")
TSP_CONFIG_HEAD = struct.Struct("<BBHI4xHHI4xHHII12x")  # SET: up to reserved5
TSP_IB_ENTRY = struct.Struct("<QB7x")
TSP_SET_CONFIG_TAIL = struct.Struct("<16xH14xB15x128s")
TSP_GET_CONFIG_RSP_HEAD = struct.Struct("<BBHI4xHHI4xHHIIB11x")
TSP_REPORT_REQ = struct.Struct("<BBHHH")
TSP_REPORT_RSP = struct.Struct("<BBHHH")  # + report bytes
TSP_TE_STATE_REQ = struct.Struct("<BBBB12x")  # + memory ranges
TSP_MEMORY_RANGE = struct.Struct("<QQ")
TSP_ERROR_RSP = struct.Struct("<BBHII")

SET_CONFIG_SIZE = TSP_CONFIG_HEAD.size + 8 * TSP_IB_ENTRY.size + TSP_SET_CONFIG_TAIL.size
GET_CONFIG_RSP_SIZE = TSP_GET_CONFIG_RSP_HEAD.size + 8 * TSP_IB_ENTRY.size + 16

#: request opcode -> response opcode
TSP_RESPONSE_FOR = {code: code - 0x80 for code in range(0x81, 0x8F)}


def tsp_error(version: int, code: int, data: int = 0) -> bytes:
    """ERROR_RSP (12 bytes)."""
    return TSP_ERROR_RSP.pack(version, TspOpcode.ERROR_RSP, 0, code, data)


__all__ = [
    "CXL_VENDOR_ID",
    "CXL_VENDOR_ID_BYTES",
    "CxlIdeKmObject",
    "CxlProtocol",
    "TspErrorCode",
    "TspOpcode",
    "TspState",
    "cxl_key_message",
    "tsp_error",
]
