"""VENDOR_DEFINED_REQUEST -> VENDOR_DEFINED_RESPONSE (DSP0274 "VENDOR_DEFINED_REQUEST request
and VENDOR_DEFINED_RESPONSE response"), allowed inside and outside sessions.

Checks as libspdm ``libspdm_rsp_vendor_defined_response.c``: after ALGORITHMS
(UnexpectedRequest before), in a session that exists (UnexpectedRequest otherwise), at
least the 7-byte header + VendorID + PayloadLength + the payload it announces, and a
VendorID length that the StandardID's registry allows (InvalidRequest otherwise).  The
LargeReq bit (Param1 bit 7) exists from SPDM 1.4 (reserved and ignored before): it needs
LARGE_RESP_CAP on both sides (InvalidRequest otherwise), then PayloadLength is followed by
the u32 LargePayloadLength, and the response is sent in the same large form (LargeResp).
Then:

1. the profile's ``[[vendor_defined]]`` entries, in order: the first whose StandardID,
   VendorID and payload prefix match answers with its canned payload;
2. PCI-SIG (StandardID 3, VendorID 0x0001): the payload's first byte is the PCI protocol
   ID; IDE_KM (0x00) goes to :mod:`emulator.responder.vendor_defined.ide_km` when the profile has
   an enabled ``[ide_km]`` section;
3. anything else: ERROR(UnsupportedRequest, data 0xFE), what libspdm answers when no
   vendor handler is registered.  (DMTF spdm-emu's responder answers InvalidRequest for a
   PCI-SIG protocol it has no handler for.)

The response echoes StandardID and VendorID, with the answering payload (a PCI-SIG
answer starts with the request's protocol ID, as spdm-emu's ``pci_doe`` dispatcher).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emulator.codec.constants import ErrorCode, RequestCode, RequesterCap, ResponderCap
from emulator.codec.vendor import (
    PCISIG_VENDOR_ID_BYTES,
    PciProtocol,
    StandardId,
    VendorDefined,
    build_vendor_response,
    parse_vendor,
    valid_vendor_id_len,
)
from emulator.errors import CodecError
from emulator.responder.base import Request, SpdmErrorResponse, invalid, unexpected
from emulator.responder.certificates import reset_via_request_code
from emulator.responder.key_exchange import require_negotiated
from emulator.responder.vendor_defined import ide_km

if TYPE_CHECKING:
    from emulator.responder.core import Responder


def _unsupported(reason: str) -> SpdmErrorResponse:
    return SpdmErrorResponse(
        ErrorCode.UnsupportedRequest, reason, data=RequestCode.VENDOR_DEFINED_REQUEST
    )


def _canned(r: Responder, msg: VendorDefined) -> bytes | None:
    for entry in getattr(r.device.profile, "vendor_defined", ()):
        if (
            entry.standard_id == msg.standard_id
            and bytes.fromhex(entry.vendor_id) == msg.vendor_id
            and msg.payload.startswith(bytes.fromhex(entry.request_prefix))
        ):
            return bytes.fromhex(entry.response)
    return None


def _pcisig(r: Responder, req: Request, payload: bytes) -> bytes:
    if not payload:
        raise invalid("PCI-SIG vendor-defined payload without a protocol ID")
    protocol = payload[0]
    if protocol == PciProtocol.IDE_KM:
        state = ide_km.ide_state(r)
        if state is not None:
            return bytes((protocol,)) + ide_km.handle(r, req, state, payload[1:])
        raise _unsupported("PCI-SIG IDE_KM: the device profile has no [ide_km]")
    raise _unsupported(f"PCI-SIG protocol 0x{protocol:02X} is not supported")


def vendor_defined(r: Responder, req: Request) -> bytes:
    """VENDOR_DEFINED_RESPONSE, or ERROR(UnsupportedRequest) for an unknown vendor."""
    require_negotiated(r, "VENDOR_DEFINED_REQUEST")
    if req.session_id is not None:
        table = r.ctx.sessions
        if table is None or table.get(req.session_id) is None:
            raise unexpected(f"VENDOR_DEFINED_REQUEST in unknown session 0x{req.session_id:08X}")
    try:
        msg, _size = parse_vendor(req.raw, large_allowed=r.version >= 0x14)
    except CodecError as exc:
        raise invalid(str(exc)) from None
    if msg.large and not (
        r.device.capabilities & ResponderCap.LARGE_RESP_CAP
        and r.peer_has(RequesterCap.LARGE_RESP_CAP)
    ):
        raise invalid("VENDOR_DEFINED_REQUEST LargeReq without LARGE_RESP_CAP on both sides")
    if not valid_vendor_id_len(msg.standard_id, len(msg.vendor_id)):
        raise invalid(
            f"VendorID of {len(msg.vendor_id)} bytes is not allowed for StandardID "
            f"0x{msg.standard_id:04X}"
        )
    reset_via_request_code(r, RequestCode.VENDOR_DEFINED_REQUEST)
    payload = _canned(r, msg)
    if payload is None:
        if msg.standard_id == StandardId.PCISIG and msg.vendor_id == PCISIG_VENDOR_ID_BYTES:
            payload = _pcisig(r, req, msg.payload)
        else:
            raise _unsupported(
                f"no handler for StandardID 0x{msg.standard_id:04X} "
                f"VendorID {msg.vendor_id.hex() or '(none)'}"
            )
    return build_vendor_response(
        r.version, VendorDefined(msg.standard_id, msg.vendor_id, payload, large=msg.large)
    )
