"""HEARTBEAT, KEY_UPDATE and END_SESSION (DSP0274 10.15, 10.16, 10.19).

As libspdm ``libspdm_rsp_heartbeat_ack.c``, ``libspdm_rsp_key_update_ack.c`` and
``libspdm_rsp_end_session_ack.c``.  All three: SPDM 1.1+, after ALGORITHMS, inside an
ESTABLISHED session (outside one: SessionRequired from 1.2, Unspecified in 1.1; in the
handshake phase: UnexpectedRequest), and exactly 4 bytes (they only travel inside a
session, so there is no transport padding to tolerate): else InvalidRequest.

* HEARTBEAT needs HBEAT_CAP on both sides (UnsupportedRequest) and a non-zero
  HeartbeatPeriod for the session (UnexpectedRequest); HEARTBEAT_ACK.  Any message in the
  session restarts the 2 * HeartbeatPeriod watchdog (done by the connection).
* KEY_UPDATE needs KEY_UPD_CAP on both sides.  UpdateKey (1): a new request key (the old
  one is kept until verified); UpdateAllKeys (2): a new request key and a new response key,
  the KEY_UPDATE_ACK already goes out under the new response key; VerifyNewKey (3): must
  arrive under the new request key after 1 or 2, then the old key is forgotten.  1 or 2
  while an update awaits verification, 3 without one, or another operation: InvalidRequest.
  The ACK echoes the operation and the tag.
* END_SESSION: END_SESSION_ACK goes out under the session's keys, then the session ends.
  Param1 bit 0 (Negotiated State Preservation Indicator) with CACHE_CAP: the negotiated
  state is cleared after the ACK (a new GET_VERSION is needed); without CACHE_CAP it is
  recorded and otherwise ignored, as libspdm does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emulator.codec.constants import ErrorCode, RequestCode, RequesterCap, ResponderCap
from emulator.codec.session import (
    END_SESSION_CLEAR_NEGOTIATED_STATE,
    KeyUpdateOperation,
    build_end_session_ack,
    build_heartbeat_ack,
    build_key_update_ack,
)
from emulator.responder.base import (
    Request,
    Response,
    SpdmErrorResponse,
    end,
    invalid,
    unexpected,
)
from emulator.responder.certificates import reset_via_request_code
from emulator.responder.key_exchange import current_session, require_negotiated
from emulator.session.table import Session, SessionState

if TYPE_CHECKING:
    from emulator.responder.core import Responder

HEADER_ONLY = 4


def _established(r: Responder, req: Request, what: str) -> Session:
    require_negotiated(r, what)
    session = current_session(r, req, what)
    if session.state is not SessionState.ESTABLISHED:
        raise unexpected(f"{what}: the session is still in its handshake phase")
    if len(req.raw) != HEADER_ONLY:
        raise invalid(f"{what} is {len(req.raw)} bytes, must be exactly 4")
    return session


def _require_both(r: Responder, flag: int, code: RequestCode) -> None:
    bit = int(flag)
    if not (int(r.device.capabilities) & bit and r.peer_has(bit)):
        raise SpdmErrorResponse(
            ErrorCode.UnsupportedRequest,
            f"{code.name}: {ResponderCap(flag).name} is not set on both sides",
            data=code,
        )


def heartbeat(r: Responder, req: Request) -> bytes:
    """HEARTBEAT_ACK (the watchdog restart is the connection's job)."""
    _require_both(r, RequesterCap.HBEAT_CAP, RequestCode.HEARTBEAT)
    session = _established(r, req, "HEARTBEAT")
    if session.heartbeat_period == 0:
        raise unexpected("HEARTBEAT in a session without a heartbeat period")
    reset_via_request_code(r, RequestCode.HEARTBEAT)
    return build_heartbeat_ack(r.version)


def key_update(r: Responder, req: Request) -> bytes:
    """KEY_UPDATE_ACK: derive the next key generation of one or both directions."""
    _require_both(r, RequesterCap.KEY_UPD_CAP, RequestCode.KEY_UPDATE)
    session = _established(r, req, "KEY_UPDATE")
    op, tag = req.param1, req.param2
    if op in (KeyUpdateOperation.UPDATE_KEY, KeyUpdateOperation.UPDATE_ALL_KEYS):
        if session.last_key_update is not None:
            raise invalid("KEY_UPDATE: the previous key update was not verified yet")
        session.update_request_key()
        if op == KeyUpdateOperation.UPDATE_ALL_KEYS:
            session.update_response_key()
        session.last_key_update = (op, tag)
    elif op == KeyUpdateOperation.VERIFY_NEW_KEY:
        if session.last_key_update is None:
            raise invalid("KEY_UPDATE VerifyNewKey without a preceding UpdateKey/UpdateAllKeys")
        session.commit_request_key()
        session.last_key_update = None
    else:
        raise invalid(f"KEY_UPDATE operation {op} is not 1, 2 or 3")
    reset_via_request_code(r, RequestCode.KEY_UPDATE)
    return build_key_update_ack(r.version, op, tag)


def end_session(r: Responder, req: Request) -> Response:
    """END_SESSION_ACK; the session ends once the ACK is sent."""
    session = _established(r, req, "END_SESSION")
    reset_via_request_code(r, RequestCode.END_SESSION)
    session.end_session_attributes = req.param1
    clear = bool(
        req.param1 & END_SESSION_CLEAR_NEGOTIATED_STATE
        and int(r.device.capabilities) & int(ResponderCap.CACHE_CAP)
    )
    return Response(
        build_end_session_ack(r.version),
        (end(session.session_id, clear_negotiated_state=clear),),
    )
