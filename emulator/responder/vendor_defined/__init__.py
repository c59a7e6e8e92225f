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
   an enabled ``[ide_km]`` section, TDISP (0x01) to :mod:`.tdisp` with ``[tdisp]``;
3. CXL (StandardID 3, VendorID 0x1E98): protocol 0x00 CXL_IDE_KM (:mod:`.cxl_ide_km`,
   ``[cxl_ide_km]``), 0x01 TSP (:mod:`.cxl_tsp`, ``[cxl_tsp]``);
4. anything else: ERROR(UnsupportedRequest, data 0xFE), what libspdm answers when no
   vendor handler is registered.  (DMTF spdm-emu's responder answers InvalidRequest for a
   PCI-SIG protocol it has no handler for.)

An IDE_KM K_SET_STOP makes the stream insecure for TDISP: the locked TDIs bound to it go
to ERROR (PCIe 6.1 11.2).

The response echoes StandardID and VendorID, with the answering payload (a PCI-SIG
answer starts with the request's protocol ID, as spdm-emu's ``pci_doe`` dispatcher).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emulator.codec.constants import ErrorCode, RequestCode, RequesterCap, ResponderCap
from emulator.codec.cxl import CXL_VENDOR_ID_BYTES, CxlProtocol
from emulator.codec.vendor import (
    PCISIG_VENDOR_ID_BYTES,
    IdeKmObject,
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
from emulator.responder.vendor_defined import cxl_ide_km, cxl_tsp, ide_km, tdisp

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
            answer = ide_km.handle(r, req, state, payload[1:])
            _after_ide_km(r, payload[1:])
            return bytes((protocol,)) + answer
        raise _unsupported("PCI-SIG IDE_KM: the device profile has no [ide_km]")
    if protocol == PciProtocol.TDISP:
        tdi_state = tdisp.tdisp_state(r)
        if tdi_state is not None:
            return bytes((protocol,)) + tdisp.handle(r, req, tdi_state, payload[1:])
        raise _unsupported("PCI-SIG TDISP: the device profile has no [tdisp]")
    raise _unsupported(f"PCI-SIG protocol 0x{protocol:02X} is not supported")


def _after_ide_km(r: Responder, msg: bytes) -> None:
    """A K_SET_STOP that was answered ends the key set's use: the stream is no longer
    secure for the TDIs bound to it (PCIe 6.1 11.2)."""
    state = tdisp.tdisp_state(r)
    if state is None or len(msg) != 7 or msg[0] != IdeKmObject.K_SET_STOP:
        return
    state.ide_stream_insecure(msg[6], msg[3], "K_SET_STOP")


def _cxl(r: Responder, req: Request, payload: bytes) -> bytes:
    if not payload:
        raise invalid("CXL vendor-defined payload without a protocol ID")
    protocol = payload[0]
    if protocol == CxlProtocol.IDE_KM:
        ide = cxl_ide_km.cxl_ide_state(r)
        if ide is not None:
            return bytes((protocol,)) + cxl_ide_km.handle(r, req, ide, payload[1:])
        raise _unsupported("CXL IDE_KM: the device profile has no [cxl_ide_km]")
    if protocol == CxlProtocol.TSP:
        tsp = cxl_tsp.tsp_state(r)
        if tsp is not None:
            return bytes((protocol,)) + cxl_tsp.handle(r, req, tsp, payload[1:])
        raise _unsupported("CXL TSP: the device profile has no [cxl_tsp]")
    raise _unsupported(f"CXL protocol 0x{protocol:02X} is not supported")


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
        elif msg.standard_id == StandardId.PCISIG and msg.vendor_id == CXL_VENDOR_ID_BYTES:
            payload = _cxl(r, req, msg.payload)
        else:
            raise _unsupported(
                f"no handler for StandardID 0x{msg.standard_id:04X} "
                f"VendorID {msg.vendor_id.hex() or '(none)'}"
            )
    return build_vendor_response(
        r.version, VendorDefined(msg.standard_id, msg.vendor_id, payload, large=msg.large)
    )
