"""RESPOND_IF_READY (DSP0274 10.17 "ResponseNotReady", request code 0xFF).

After a ResponseNotReady (given by a fault, :mod:`emulator.faults.notready`), the
requester sends RESPOND_IF_READY with Param1 = the original request code and
Param2 = the token.  The responder then runs the kept request and answers with its
real response.  Checks follow libspdm ``libspdm_rsp_respond_if_ready.c``:

* the same session context as the original request, else UnexpectedRequest;
* Param1 not the original request code (or Param1 = RESPOND_IF_READY): InvalidRequest;
* Param2 not the token: InvalidRequest.

With no deferred request at all this emulator answers UnexpectedRequest (libspdm
compares Param1 with stale error data and so answers InvalidRequest).  The version
byte and the connection state are checked by the core as for every request.
"""

from __future__ import annotations

from emulator.codec.constants import ErrorCode, RequestCode, code_name
from emulator.faults.notready import PENDING_KEY, pending
from emulator.responder.core import (
    Request,
    Responder,
    SessionRule,
    SpdmErrorResponse,
    handler,
    invalid,
    unexpected,
)


def _session(sid: int | None) -> str:
    return "outside a session" if sid is None else f"in session 0x{sid:08X}"


@handler(RequestCode.RESPOND_IF_READY, session=SessionRule.EITHER)
def respond_if_ready(r: Responder, req: Request) -> bytes:
    """Answer the deferred request, or ERROR if this RESPOND_IF_READY does not match it."""
    waiting = pending(r)
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
    if waiting.remaining > 0:
        waiting.remaining -= 1
        error = waiting.error(r.version)
        raise SpdmErrorResponse(
            ErrorCode.ResponseNotReady, "still not ready (fault repeat)", extended=error[4:]
        )
    del r.family[PENDING_KEY]
    # Run the kept request through the normal gating and its handler, as libspdm calls
    # the original request's handler on its cached copy.
    return r._dispatch(waiting.request, waiting.session_id)
