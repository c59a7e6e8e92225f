"""What every request family shares: the request as handlers see it, the handler spec of
one dispatch-table line, the typed result a handler returns, and the ERROR it raises.

No behaviour and no family imports, so each family module, the table (``table.py``) and
the pipeline (``core.py``) import this module and nothing imports in a circle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import TYPE_CHECKING, NamedTuple

from emulator.codec.constants import ErrorCode, RequestCode
from emulator.device.random import RandomSource

if TYPE_CHECKING:
    from emulator.device.model import Device
    from emulator.responder.core import Responder
    from emulator.responder.vendor_defined.tdisp import TdispFault


class ConnectionState(IntEnum):
    """Connection state, in the order DSP0274 requires (libspdm's connection_state)."""

    NOT_STARTED = 0
    AFTER_VERSION = 1
    AFTER_CAPABILITIES = 2
    NEGOTIATED = 3
    AFTER_DIGESTS = 4
    AFTER_CERTIFICATE = 5
    AUTHENTICATED = 6


class SessionRule(Enum):
    """Where a request may be sent (DSP0274 1.3 table 4 "SPDM request codes", session column)."""

    OUTSIDE_ONLY = "outside"  # e.g. GET_VERSION, KEY_EXCHANGE
    EITHER = "either"  # e.g. GET_MEASUREMENTS
    INSIDE_ONLY = "inside"  # e.g. HEARTBEAT, KEY_UPDATE, END_SESSION


class SpdmErrorResponse(Exception):
    """Raised by a handler to answer with ERROR(code, data[, extended data]).

    ``reason`` is for the log only (the wire carries just the code and data).
    """

    def __init__(
        self,
        code: ErrorCode,
        reason: str = "",
        data: int = 0,
        extended: bytes = b"",
        commits: tuple[SessionCommit, ...] = (),
    ) -> None:
        super().__init__(f"{code.name}: {reason}" if reason else code.name)
        self.code = code
        self.reason = reason
        self.data = data
        self.extended = extended
        #: session changes the ERROR decides (e.g. a FINISH that fails ends its session)
        self.commits = commits


def invalid(reason: str) -> SpdmErrorResponse:
    """ERROR(InvalidRequest) with a log reason."""
    return SpdmErrorResponse(ErrorCode.InvalidRequest, reason)


def unexpected(reason: str) -> SpdmErrorResponse:
    """ERROR(UnexpectedRequest) with a log reason."""
    return SpdmErrorResponse(ErrorCode.UnexpectedRequest, reason)


class Request(NamedTuple):
    """A request as the handlers see it: the raw bytes, the parsed header, and the device
    and randomness of this exchange (immutable; a named tuple because one is made per
    request and a frozen dataclass costs five times as much to build).

    ``device`` and ``rng`` are the connection's own unless a fault context replaces them
    for this one exchange (a lying device view, replayed random bytes): handlers read
    identity, measurements and random bytes from here, never swap anything.
    """

    raw: bytes
    version: int
    code: int
    param1: int
    param2: int
    session_id: int | None
    device: Device
    rng: RandomSource
    #: TDISP faults of this exchange (emulator.responder.vendor_defined.tdisp)
    tdisp_faults: tuple[TdispFault, ...] = ()

    @property
    def in_session(self) -> bool:
        return self.session_id is not None


class CommitKind(Enum):
    """What happens to a session once the response that decided it has been sent."""

    #: FINISH_RSP / PSK_FINISH_RSP sent: the session enters the application phase
    ESTABLISH = "establish"
    #: END_SESSION_ACK or an ERROR that ends the session: keys are forgotten
    END = "end"


@dataclass(frozen=True, slots=True)
class SessionCommit:
    """A session change that follows the response (DSP0274 1.3 10.20 / 10.23: the
    FINISH_RSP is still protected by the handshake keys; END_SESSION_ACK by the session's).

    ``clear_negotiated_state``: END_SESSION asked the responder to forget the negotiated
    state (DSP0274 1.3 table 79, CACHE_CAP) once the session is gone.
    """

    session_id: int
    kind: CommitKind
    clear_negotiated_state: bool = False


@dataclass(frozen=True, slots=True)
class Response:
    """A handler's typed result: the response message and the session commits it decided."""

    message: bytes
    commits: tuple[SessionCommit, ...] = ()


def establish(session_id: int) -> SessionCommit:
    """The session enters its application phase once this response is sent."""
    return SessionCommit(session_id, CommitKind.ESTABLISH)


def end(session_id: int, *, clear_negotiated_state: bool = False) -> SessionCommit:
    """The session ends once this response is sent."""
    return SessionCommit(session_id, CommitKind.END, clear_negotiated_state)


HandlerFn = Callable[["Responder", Request], "bytes | Response"]


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """One line of the dispatch table: how the pipeline gates a request code before its
    handler runs (DSP0274 1.3 9 "Generic SPDM message format", table 4)."""

    code: RequestCode
    fn: HandlerFn
    min_version: int = 0x10
    #: the responder must advertise one of these capability bits (0: none needed)
    capability: int = 0
    session: SessionRule = SessionRule.EITHER
    #: the requester must have advertised this GET_CAPABILITIES flag too (0: none needed)
    peer_capability: int = 0
    #: the handler checks its own version byte and connection state (GET_VERSION,
    #: GET_CAPABILITIES)
    own_ordering: bool = False
    #: the largest response the handler can give, its ERRORs included (0: no bound): a
    #: requester whose size limit is at least this needs no checkpoint before the handler
    #: runs, since the response cannot be refused for its size (``core.Responder.dispatch``)
    max_response: int = 0

    def __post_init__(self) -> None:
        # plain ints: the core tests them on every request, and IntFlag arithmetic costs
        # a microsecond per operation
        object.__setattr__(self, "capability", int(self.capability))
        object.__setattr__(self, "peer_capability", int(self.peer_capability))
