"""PLDM in secured MCTP messages (DSP0240 1.1, DSP0275): the messaging control and
discovery commands libspdm's requester application flow uses (spdm-emu
``pldm_control_get_tid``), as spdm-emu's ``pldm_rsp_control_get_tid`` answers them.

* GetTID (type 0, command 0x02, no data) -> SUCCESS and the profile's ``[pldm] tid``;
  data after the header: ERROR_INVALID_LENGTH.
* GetPLDMTypes (0x04) -> SUCCESS and the 64-bit type bitfield (type 0 only).
* any other control command: ERROR_UNSUPPORTED_PLDM_CMD; another PLDM type:
  ERROR_INVALID_PLDM_TYPE; a header version other than 00b: ERROR_INVALID_DATA.
* a response (Rq = 0), an unacknowledged datagram (Rq = 1, D = 1) or fewer than 3 bytes:
  no answer (DSP0240: only requests are answered).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from emulator.codec.pldm import (
    CompletionCode,
    ControlCommand,
    PldmHeader,
    PldmType,
    command_name,
)
from emulator.errors import CodecError

if TYPE_CHECKING:
    from emulator.responder.core import Responder

log = logging.getLogger("emulator.responder.pldm")

#: the PLDM types this terminus supports (GetPLDMTypes)
SUPPORTED_TYPES = (PldmType.CONTROL_DISCOVERY,)


def respond(r: Responder, message: bytes, session_id: int | None) -> bytes | None:
    """The PLDM response to ``message`` (b"": none is due); None: the device does not
    speak PLDM (no enabled ``[pldm]`` section)."""
    cfg = r.device.profile.pldm
    if cfg is None or not cfg.enabled:
        return None
    where = f"conn {r.connection_number} session 0x{session_id or 0:08X}"
    try:
        head = PldmHeader.decode(message)
    except CodecError as exc:
        log.info("%s: PLDM message dropped: %s", where, exc)
        return b""
    if not head.request or head.datagram:
        log.info("%s: PLDM message that is no request dropped", where)
        return b""
    code, data = _answer(head, message[3:], cfg.tid)
    log.info("%s: PLDM %s -> %s", where, command_name(head.pldm_type, head.command), code.name)
    return head.response(code, data)


def _answer(head: PldmHeader, data: bytes, tid: int) -> tuple[CompletionCode, bytes]:
    """The completion code and response data of one request."""
    if head.header_version != 0:
        return CompletionCode.ERROR_INVALID_DATA, b""
    if head.pldm_type != PldmType.CONTROL_DISCOVERY:
        return CompletionCode.ERROR_INVALID_PLDM_TYPE, b""
    if head.command not in (ControlCommand.GET_TID, ControlCommand.GET_PLDM_TYPES):
        return CompletionCode.ERROR_UNSUPPORTED_PLDM_CMD, b""
    if data:
        return CompletionCode.ERROR_INVALID_LENGTH, b""
    if head.command == ControlCommand.GET_TID:
        return CompletionCode.SUCCESS, bytes((tid,))
    bits = 0
    for t in SUPPORTED_TYPES:
        bits |= 1 << t
    return CompletionCode.SUCCESS, bits.to_bytes(8, "little")


__all__ = ["SUPPORTED_TYPES", "respond"]
