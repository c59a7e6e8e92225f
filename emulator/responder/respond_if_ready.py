"""RESPOND_IF_READY (DSP0274 1.3 10.17 "ResponseNotReady", request code 0xFF).

After a ResponseNotReady (given by a fault), the requester sends RESPOND_IF_READY with
Param1 = the original request code and Param2 = the token.  A RESPOND_IF_READY that
matches the deferred request is released by the pipeline itself (step "release" of
:mod:`emulator.responder.core`): the deferred request runs, and its real response is the
answer.  This handler answers the ones that do not match, with libspdm's checks
(``libspdm_rsp_respond_if_ready.c``):

* the same session context as the original request, else UnexpectedRequest;
* Param1 not the original request code (or Param1 = RESPOND_IF_READY): InvalidRequest;
* Param2 not the token: InvalidRequest;
* a fault that repeats "not ready": ResponseNotReady again.

With no deferred request at all this emulator answers UnexpectedRequest (libspdm
compares Param1 with stale error data and so answers InvalidRequest).  The version
byte and the connection state are checked by the core as for every request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emulator.codec.constants import ErrorCode, RequestCode, code_name
from emulator.responder.base import Request, SpdmErrorResponse, invalid, unexpected

if TYPE_CHECKING:
    from emulator.responder.core import Responder


def _session(sid: int | None) -> str:
    return "outside a session" if sid is None else f"in session 0x{sid:08X}"


def respond_if_ready(r: Responder, req: Request) -> bytes:
    """ERROR for a RESPOND_IF_READY that does not release the deferred request."""
    waiting = r.ctx.not_ready.deferred
    if waiting is None:
        raise unexpected("RESPOND_IF_READY, but no request is waiting (no ResponseNotReady sent)")
    if req.session_id != waiting.session_id:
        raise unexpected(
            f"RESPOND_IF_READY {_session(req.session_id)}, but the deferred "
            f"{code_name(waiting.request_code)} came {_session(waiting.session_id)}"
        )
    if req.param1 == RequestCode.RESPOND_IF_READY or req.param1 != waiting.request_code:
        raise invalid(
            f"RESPOND_IF_READY Param1 0x{req.param1:02X} is not the deferred request code "
            f"0x{waiting.request_code:02X} ({code_name(waiting.request_code)})"
        )
    if req.param2 != waiting.token:
        raise invalid(
            f"RESPOND_IF_READY Param2 (token) 0x{req.param2:02X}, expected 0x{waiting.token:02X}"
        )
    # only a fault that repeats "not ready" gets here (a match is released before dispatch)
    waiting.remaining = max(0, waiting.remaining - 1)
    error = waiting.error(r.version)
    raise SpdmErrorResponse(
        ErrorCode.ResponseNotReady, "still not ready (fault repeat)", extended=error[4:]
    )
