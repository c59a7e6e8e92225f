"""PLDM base messages (DSP0240 1.1 "PLDM Base Specification", DSP0245 completion codes) as
the MCTP binding carries them inside DSP0277 secured records (MCTP message type 0x01).

Header (3 bytes): byte 0 = Rq (bit 7, request), D (bit 6, datagram), reserved (bit 5),
Instance ID (bits 4:0); byte 1 = Header Version (bits 7:6, 00b) and PLDM Type (bits 5:0);
byte 2 = PLDM Command Code.  A response has Rq = 0 and D = 0, the request's Instance ID,
type and command, then a Completion Code byte and the command's data.  Layouts as libspdm
``industry_standard/pldm.h``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from emulator.errors import CodecError

HEADER_SIZE = 3
REQUEST_BIT = 0x80
DATAGRAM_BIT = 0x40
INSTANCE_MASK = 0x1F
HEADER_VERSION_MASK = 0xC0
TYPE_MASK = 0x3F


class PldmType(IntEnum):
    """PLDM Types (DSP0245 table "PLDM Type codes")."""

    CONTROL_DISCOVERY = 0x00
    SMBIOS = 0x01
    PLATFORM_MONITORING_CONTROL = 0x02
    BIOS_CONTROL_CONFIGURATION = 0x03
    FRU_DATA = 0x04
    FIRMWARE_UPDATE = 0x05
    REDFISH_DEVICE_ENABLEMENT = 0x06
    OEM = 0x3F


class ControlCommand(IntEnum):
    """PLDM messaging control and discovery commands (DSP0240 table "PLDM commands")."""

    SET_TID = 0x01
    GET_TID = 0x02
    GET_PLDM_VERSION = 0x03
    GET_PLDM_TYPES = 0x04
    GET_PLDM_COMMANDS = 0x05


class CompletionCode(IntEnum):
    """PLDM base completion codes (DSP0240 table "PLDM completion codes")."""

    SUCCESS = 0x00
    ERROR = 0x01
    ERROR_INVALID_DATA = 0x02
    ERROR_INVALID_LENGTH = 0x03
    ERROR_NOT_READY = 0x04
    ERROR_UNSUPPORTED_PLDM_CMD = 0x05
    ERROR_INVALID_PLDM_TYPE = 0x20


@dataclass(frozen=True, slots=True)
class PldmHeader:
    """The 3-byte PLDM message header."""

    request: bool
    datagram: bool
    instance_id: int
    header_version: int
    pldm_type: int
    command: int

    def encode(self) -> bytes:
        b0 = (REQUEST_BIT if self.request else 0) | (DATAGRAM_BIT if self.datagram else 0)
        b0 |= self.instance_id & INSTANCE_MASK
        b1 = (self.header_version & 0x3) << 6 | (self.pldm_type & TYPE_MASK)
        return bytes((b0, b1, self.command))

    @classmethod
    def decode(cls, data: bytes) -> PldmHeader:
        if len(data) < HEADER_SIZE:
            raise CodecError(f"PLDM message is {len(data)} bytes, shorter than the header")
        return cls(
            bool(data[0] & REQUEST_BIT),
            bool(data[0] & DATAGRAM_BIT),
            data[0] & INSTANCE_MASK,
            data[1] >> 6,
            data[1] & TYPE_MASK,
            data[2],
        )

    def response(self, completion: int, data: bytes = b"") -> bytes:
        """The response to this request: Rq = D = 0, same instance, type and command."""
        head = PldmHeader(False, False, self.instance_id, 0, self.pldm_type, self.command)
        return head.encode() + bytes((completion,)) + data


def command_name(pldm_type: int, command: int) -> str:
    """``(0, 2)`` -> ``GetTID``; other commands by number."""
    if pldm_type == PldmType.CONTROL_DISCOVERY:
        names = {
            ControlCommand.SET_TID: "SetTID",
            ControlCommand.GET_TID: "GetTID",
            ControlCommand.GET_PLDM_VERSION: "GetPLDMVersion",
            ControlCommand.GET_PLDM_TYPES: "GetPLDMTypes",
            ControlCommand.GET_PLDM_COMMANDS: "GetPLDMCommands",
        }
        name = names.get(command)  # type: ignore[call-overload]
        if name is not None:
            return str(name)
    return f"type 0x{pldm_type:02X} command 0x{command:02X}"


__all__ = [
    "CompletionCode",
    "ControlCommand",
    "PldmHeader",
    "PldmType",
    "command_name",
]
