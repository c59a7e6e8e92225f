"""The ResponseNotReady / RESPOND_IF_READY state of one connection (DSP0274 10.17).

When a fault answers a request with ERROR(ResponseNotReady), the request is kept
here (in ``r.family``) with the token sent in the extended error data; the
RESPOND_IF_READY handler (:mod:`emulator.responder.respond_if_ready`) then runs the
kept request and returns its real response.  This module has no responder imports
so that the fault engine can use it without an import cycle.

ResponseNotReady extended error data (DSP0274 table "ResponseNotReady extended error
data", libspdm ``spdm_error_data_response_not_ready_t``): RDTExponent (u8),
RequestCode (u8), Token (u8), RDTM (u8).  The requester waits 2^RDTExponent us and
sends RESPOND_IF_READY with Param1 = RequestCode, Param2 = Token.  libspdm's requester
rejects RDTM <= 1 and RDTExponent > 31.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from emulator.codec.constants import RequestCode
from emulator.codec.messages import build_response_not_ready

#: r.family key of the deferred request
PENDING_KEY = "respond_if_ready"
#: r.family key of the next token of this connection
TOKEN_KEY = "respond_if_ready.token"


class _HasFamily(Protocol):
    version: int
    family: dict[str, Any]


@dataclass(slots=True)
class PendingRequest:
    """A request answered ResponseNotReady, waiting for its RESPOND_IF_READY."""

    request: bytes
    session_id: int | None
    request_code: int
    token: int
    rdt_exponent: int
    rdtm: int
    #: RESPOND_IF_READY requests still to be answered ResponseNotReady again
    remaining: int = 0

    def error(self, version: int) -> bytes:
        """The ERROR(ResponseNotReady) for this request."""
        return build_response_not_ready(
            version, self.rdt_exponent, self.request_code, self.token, self.rdtm
        )


def next_token(r: _HasFamily) -> int:
    """The connection's next token (0, 1, ... 255, 0...), as libspdm's current_token."""
    token = int(r.family.get(TOKEN_KEY, 0))
    r.family[TOKEN_KEY] = (token + 1) & 0xFF
    return token


def defer(
    r: _HasFamily,
    request: bytes,
    session_id: int | None,
    *,
    rdt_exponent: int = 1,
    rdtm: int = 2,
    token: int | None = None,
    repeat: int = 0,
) -> bytes:
    """Keep ``request`` for RESPOND_IF_READY and return the ERROR(ResponseNotReady)."""
    pending = PendingRequest(
        request=bytes(request),
        session_id=session_id,
        request_code=request[1],
        token=next_token(r) if token is None else token & 0xFF,
        rdt_exponent=rdt_exponent,
        rdtm=rdtm,
        remaining=repeat,
    )
    r.family[PENDING_KEY] = pending
    # the ERROR's version is the connection's (1.0 before negotiation), as the core's
    version = 0x10 if request[1] == RequestCode.GET_VERSION else (r.version or 0x10)
    return pending.error(version)


def pending(r: _HasFamily) -> PendingRequest | None:
    """The request waiting for RESPOND_IF_READY, if any."""
    value = r.family.get(PENDING_KEY)
    return value if isinstance(value, PendingRequest) else None


def ready(r: _HasFamily, request: bytes, session_id: int | None) -> PendingRequest | None:
    """The deferred request when ``request`` is a RESPOND_IF_READY that releases it.

    That is: same version, same session context, Param1 = its request code, Param2 =
    its token, and no "still not ready" answer left to give.  Anything else returns
    None, and the RESPOND_IF_READY handler answers it with the right ERROR.
    """
    waiting = pending(r)
    if (
        waiting is None
        or len(request) < 4
        or request[1] != RequestCode.RESPOND_IF_READY
        or request[0] != r.version
        or session_id != waiting.session_id
        or request[2] != waiting.request_code
        or request[3] != waiting.token
        or waiting.remaining > 0
    ):
        return None
    return waiting


def discard(r: _HasFamily) -> None:
    """Forget the deferred request (another request came instead of RESPOND_IF_READY)."""
    r.family.pop(PENDING_KEY, None)
