"""The sans-I/O responder pipeline: ``Responder.respond(request) -> Outcome``.

Every request goes through the same steps, in this order (libspdm
``libspdm_build_response`` does the same work in one function):

1. **release** (DSP0274 1.3 10.17): a RESPOND_IF_READY that matches the deferred request
   stands for it from here on; any other request ends the wait.
2. **fault defer**: a fault context may answer ResponseNotReady and keep the request.
3. **gate** (:func:`emulator.responder.chunking.gate`): a large-message transfer in
   progress refuses other requests (DSP0274 1.3 10.24).
4. **dispatch**: header length, the dispatch-table line of the code (``table.py``), its
   version / capability / connection-state / session / requester-capability rules, then
   the handler.  An :class:`SpdmErrorResponse` becomes the ERROR.
5. **limit** (:func:`emulator.responder.chunking.too_large`): a response larger than the
   requester can receive at all (its MaxSPDMmsgSize; its DataTransferSize without
   chunking) becomes ERROR(ResponseTooLarge) with the size, in the clear and in sessions
   alike, and the request then has the effects of an ERROR (below).
6. **observe**: transcript resets that depend on which request came next (B/C by
   :func:`emulator.responder.certificates.observe`, L1/L2 by
   :func:`emulator.responder.measurements.observe`); they see the ERROR of step 5.
7. **filter** (:func:`emulator.responder.chunking.size_filter`): a response larger than
   the requester can take at once becomes ERROR(LargeResponse) for CHUNK_GET.

Steps 4-6 are :meth:`Responder.dispatch`, which a request reassembled from CHUNK_SEND goes
through too (its response, or the ERROR(ResponseTooLarge) standing for it, travels in the
CHUNK_SEND_ACK).

**ResponseTooLarge and state.**  DSP0274 has no rule that every ERROR leaves state alone:
it says what each exchange changes, and an ERROR has the effects DSP0274 gives it (an
ERROR to GET_MEASUREMENTS ends the L1/L2 log; RequestResynch and a failed FINISH end
things; most change nothing).  What a response changes, a transcript, the connection
state, a session opened or moved on, comes from the messages both sides exchanged, and
ERROR(ResponseTooLarge) means the requester never saw that response: keeping its effects
would leave the two sides with different transcripts (every later signature fails) and,
for KEY_EXCHANGE, a session the requester cannot know of, holding a slot of the table.  So
``dispatch`` takes a checkpoint of the connection context (transcripts, state, measurement
logs, chunking, not-ready and session table: ``ConnectionContext.checkpoint``) before the
handler runs whenever a size limit applies, and puts it back when step 5 refuses the
response; the handler's session commits are dropped; then the observers see the ERROR as
they see any other.  Device-wide changes (a provisioned certificate, an IDE key) are not
undone (their responses are far below any limit).  libspdm's responder
(``libspdm_rsp_receive_send.c``) replaces the response after its handler ran and so keeps
the changes behind the ERROR; its GET_MEASUREMENTS handler checks the size itself first.

The core never does I/O, never reads the clock and never calls ``os.urandom``:
randomness and time come in through ``rng`` and ``clock``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import emulator.responder.certificates as certificates
import emulator.responder.chunking as chunking
import emulator.responder.measurements as measurements
from emulator.codec.constants import ErrorCode, RequestCode, RequesterCap, ResponderCap, code_name
from emulator.codec.messages import HEADER_SIZE, build_error
from emulator.device.random import RandomSource
from emulator.responder.base import (
    ConnectionState,
    HandlerSpec,
    Request,
    Response,
    SessionCommit,
    SessionRule,
    SpdmErrorResponse,
    invalid,
    unexpected,
)
from emulator.responder.context import (
    ConnectionContext,
    DeferredRequest,
    NegotiatedAlgorithms,
    PeerCapabilities,
    Transcripts,
)
from emulator.responder.table import APPLICATION_PROTOCOLS, DEFAULT_TABLE
from emulator.session.table import SessionTable

if TYPE_CHECKING:
    from emulator.device.model import Device
    from emulator.responder.vendor_defined.tdisp import TdispFault

log = logging.getLogger("emulator.responder")


@dataclass(frozen=True, slots=True)
class Deferral:
    """A fault's ResponseNotReady (DSP0274 1.3 10.17): keep the request, answer
    ERROR(ResponseNotReady) with these values (``token`` None: the connection's next)."""

    rdt_exponent: int = 1
    rdtm: int = 2
    token: int | None = None
    repeat: int = 0


@dataclass(frozen=True, slots=True)
class FaultContext:
    """What a fault changes in one exchange, passed in explicitly: the device as this
    exchange sees it (a lying view), the randomness it draws from (recorded or
    replayed), a ResponseNotReady to answer instead of running the handler."""

    device: Device | None = None
    rng: RandomSource | None = None
    defer: Deferral | None = None
    #: TDISP faults (emulator.responder.vendor_defined.tdisp) for a TDISP request
    tdisp: tuple[TdispFault, ...] = ()


class Outcome(NamedTuple):
    """The result of one request: the response, the request it answers (the deferred
    one when RESPOND_IF_READY released it), the session commits to apply once the
    response is sent, and why it is an ERROR (for logs and telemetry)."""

    response: bytes
    request: bytes
    commits: tuple[SessionCommit, ...] = ()
    reason: str = ""


class Responder:
    """One connection's SPDM responder state machine (sans-I/O).

    ``respond(request, session_id)`` takes the bytes of one SPDM request (already
    decrypted when it arrived in a session) and returns an :class:`Outcome`;
    ``handle`` returns just the response bytes.  Neither raises for bad input: every
    problem is an ERROR message.
    """

    def __init__(
        self,
        device: Device,
        *,
        rng: RandomSource | None = None,
        clock: Callable[[], float] | None = None,
        connection_number: int = 0,
        table: Mapping[int, HandlerSpec] | None = None,
    ) -> None:
        self.device = device
        self.rng: RandomSource = rng or device.random_source(f"conn-{connection_number}")
        self.clock: Callable[[], float] = clock or time.monotonic
        self.connection_number = connection_number
        #: request code -> handler spec (``table.py``); one per responder
        self.table: Mapping[int, HandlerSpec] = table if table is not None else DEFAULT_TABLE
        self.ctx = ConnectionContext()
        #: the last error reason (for logs / telemetry)
        self.last_error: str = ""
        self._commits: list[SessionCommit] = []
        #: :func:`emulator.responder.chunking.response_limit`'s last answer and what it
        #: depends on (the requester's capabilities object, the device's, the version and
        #: DataTransferSize)
        self.limit_cache: tuple[object, object, int, int, int | None] | None = None

    # ---- negotiated state (in the context) -------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self.ctx.state

    @state.setter
    def state(self, value: ConnectionState) -> None:
        self.ctx.state = value

    @property
    def version(self) -> int:
        return self.ctx.version

    @version.setter
    def version(self, value: int) -> None:
        self.ctx.version = value

    @property
    def peer(self) -> PeerCapabilities | None:
        return self.ctx.peer

    @peer.setter
    def peer(self, value: PeerCapabilities | None) -> None:
        self.ctx.peer = value

    @property
    def algorithms(self) -> NegotiatedAlgorithms:
        return self.ctx.algorithms

    @algorithms.setter
    def algorithms(self, value: NegotiatedAlgorithms) -> None:
        self.ctx.algorithms = value

    @property
    def transcripts(self) -> Transcripts:
        return self.ctx.transcripts

    def session_table(self) -> SessionTable:
        """The connection's session table, created (and listening to the device's runtime
        changes) on first use."""
        table = self.ctx.sessions
        if table is None:
            table = SessionTable(self.device.sessions)
            table.listen(self.device.listeners)
            table.on_end = self._session_ended
            self.ctx.sessions = table
        return table

    def _session_ended(self, session_id: int) -> None:
        """A session of this connection ended: tell the device-wide state that depends
        on sessions (TDIs locked over it go to ERROR, PCIe 6.1 11.4.5)."""
        for hook in list(self.device.session_hooks):
            try:
                hook(self.connection_number, session_id)
            except Exception:  # device state must never break the session layer
                log.exception("session-end hook failed")

    # ---- public API ------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything negotiated (GET_VERSION, DSP0274 1.3 10.3; a closed
        connection): every session ends and the context starts anew (a context on which
        nothing but GET_VERSION happened only drops transcript A)."""
        ctx = self.ctx
        if ctx.pristine():
            ctx.transcripts.a.clear()
            ctx.state = ConnectionState.NOT_STARTED
            return
        table = ctx.sessions
        if table is not None:
            table.clear()
            table.detach()
        self.ctx = ConnectionContext()

    def application(self, protocol: str, message: bytes, session_id: int) -> bytes | None:
        """Answer a message of another application protocol that a secured record carried
        (MCTP: PLDM, DSP0275): its response (b"": none is due), or None when the device
        does not speak ``protocol``.  The table of these protocols is
        :data:`emulator.responder.table.APPLICATION_PROTOCOLS`."""
        handler = APPLICATION_PROTOCOLS.get(protocol)
        if handler is None:
            return None
        return handler(self, message, session_id)

    def handle(self, request: bytes, session_id: int | None = None) -> bytes:
        """Answer one request; an ERROR response for anything wrong with it."""
        return self.respond(request, session_id).response

    def respond(
        self, request: bytes, session_id: int | None = None, fault: FaultContext | None = None
    ) -> Outcome:
        """Run the pipeline (module docstring) on one request."""
        self.last_error = ""
        self._commits = []
        if self.ctx.not_ready.deferred is not None:
            request = self._release(request, session_id)
        if fault is not None and fault.defer is not None and len(request) >= HEADER_SIZE:
            return Outcome(self._defer(request, session_id, fault.defer), request)
        if self.ctx.chunking is not None:  # no transfer ever started: nothing to gate
            try:
                chunking.gate(self, request, session_id)
            except SpdmErrorResponse as err:
                return Outcome(self._error_for(request, err), request, (), self.last_error)
        response = self.dispatch(request, session_id, fault)
        response = chunking.size_filter(self, request, session_id, response)
        commits = tuple(self._commits) if self._commits else ()
        return Outcome(response, request, commits, self.last_error)

    def dispatch(
        self, request: bytes, session_id: int | None, fault: FaultContext | None = None
    ) -> bytes:
        """Steps 4-6 for one request: the checks and the handler, the size limit, the
        observers.  Also what a reassembled CHUNK_SEND request goes through (DSP0274 1.3
        10.25)."""
        # a checkpoint only where a limit may refuse the response (SPDM 1.2+ requesters;
        # not when the handler's responses are known to fit)
        limit = chunking.response_limit(self)
        saved = None
        if limit is not None:
            spec = self.table.get(request[1]) if len(request) > 1 else None
            if spec is None or limit < spec.max_response or not spec.max_response:
                saved = self.ctx.checkpoint()
        first_commit = len(self._commits)
        try:
            result = self._run_handler(request, session_id, fault)
        except SpdmErrorResponse as err:
            self._commits.extend(err.commits)
            response = self._error_for(request, err)
        else:
            if isinstance(result, Response):
                self._commits.extend(result.commits)
                response = result.message
            else:
                response = result
        refused = chunking.too_large(self, request, response)
        if refused is not None:
            # the requester never sees the response: the request has an ERROR's effects
            # (module docstring, "ResponseTooLarge and state")
            if saved is not None:
                self.ctx = saved.restore()
            del self._commits[first_commit:]
            response = refused
        self.observe(request, session_id, response)
        return response

    def observe(self, request: bytes, session_id: int | None, response: bytes) -> None:
        """Step 6 alone: what answering ``request`` with ``response`` ends in the
        transcripts.  The connection calls it for an ERROR a fault sent without asking
        the responder, so that the device's L1/L2 end where the requester's do (libspdm's
        GET_MEASUREMENTS handler resets message M when it answers Busy)."""
        certificates.observe(self, request, response)
        measurements.observe(self, request, session_id, response)

    def error(self, code: ErrorCode | int, data: int = 0, extended: bytes = b"") -> bytes:
        """An ERROR in the connection's version (1.0 before negotiation, as libspdm)."""
        return build_error(self.version or 0x10, code, data, extended)

    def has_cap(self, cap: ResponderCap | int) -> bool:
        return bool(int(self.device.capabilities) & int(cap))

    def peer_has(self, flag: int) -> bool:
        peer = self.ctx.peer
        return peer is not None and bool(peer.flags & int(flag))

    # ---- pipeline steps --------------------------------------------------------------

    def _release(self, request: bytes, session_id: int | None) -> bytes:
        """Step 1: the deferred request, when ``request`` is the RESPOND_IF_READY that
        releases it (same version and session context, Param1 = its code, Param2 = its
        token, no "still not ready" left); any request but RESPOND_IF_READY ends the wait.
        A RESPOND_IF_READY that does not match is answered by its handler."""
        nr = self.ctx.not_ready
        waiting = nr.deferred
        if waiting is None:
            return request
        if len(request) < 2 or request[1] != RequestCode.RESPOND_IF_READY:
            nr.deferred = None
            return request
        if (
            len(request) >= HEADER_SIZE
            and request[0] == self.version
            and session_id == waiting.session_id
            and request[2] == waiting.request_code
            and request[3] == waiting.token
            and waiting.remaining == 0
        ):
            nr.deferred = None
            log.info(
                "conn %d: RESPOND_IF_READY releases the deferred %s (token 0x%02X)",
                self.connection_number,
                code_name(waiting.request_code),
                waiting.token,
            )
            return waiting.request
        return request

    def _defer(self, request: bytes, session_id: int | None, spec: Deferral) -> bytes:
        """Step 2: keep ``request`` for RESPOND_IF_READY, answer ERROR(ResponseNotReady)."""
        nr = self.ctx.not_ready
        waiting = DeferredRequest(
            request=bytes(request),
            session_id=session_id,
            request_code=request[1],
            token=nr.take_token() if spec.token is None else spec.token & 0xFF,
            rdt_exponent=spec.rdt_exponent,
            rdtm=spec.rdtm,
            remaining=spec.repeat,
        )
        nr.deferred = waiting
        # the ERROR's version is the connection's (1.0 before negotiation), as the core's
        version = 0x10 if request[1] == RequestCode.GET_VERSION else (self.version or 0x10)
        return waiting.error(version)

    def _error_for(self, request: bytes, err: SpdmErrorResponse) -> bytes:
        """The ERROR answering ``request`` for ``err`` (and its log line)."""
        self.last_error = err.reason or err.code.name
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "ERROR %s for %s: %s",
                err.code.name,
                code_name(request[1]) if len(request) > 1 else "short request",
                err.reason,
            )
        return self.error(err.code, err.data, err.extended)

    def _run_handler(
        self, raw: bytes, session_id: int | None, fault: FaultContext | None
    ) -> bytes | Response:
        """Step 4: the generic checks of DSP0274 1.3 9 in its order, then the handler."""
        if len(raw) < HEADER_SIZE:
            raise invalid(f"{len(raw)}-byte request is shorter than the 4-byte header")
        version, code, p1, p2 = raw[0], raw[1], raw[2], raw[3]
        spec = self.table.get(code)
        if spec is None:
            raise SpdmErrorResponse(
                ErrorCode.UnsupportedRequest, f"unknown request code 0x{code:02X}", data=code
            )
        device = self.device if fault is None or fault.device is None else fault.device
        rng = self.rng if fault is None or fault.rng is None else fault.rng
        tdisp_faults = fault.tdisp if fault is not None else ()
        req = Request(raw, version, code, p1, p2, session_id, device, rng, tdisp_faults)
        if spec.own_ordering:
            return spec.fn(self, req)
        ctx = self.ctx
        if ctx.state < ConnectionState.AFTER_CAPABILITIES:
            if ctx.state == ConnectionState.NOT_STARTED:
                raise unexpected(f"{code_name(code)} before GET_VERSION")
            raise unexpected(f"{code_name(code)} before GET_CAPABILITIES")
        if version != ctx.version:
            raise SpdmErrorResponse(
                ErrorCode.VersionMismatch,
                f"version byte 0x{version:02X}, negotiated 0x{ctx.version:02X}",
            )
        if ctx.version < spec.min_version:
            raise SpdmErrorResponse(
                ErrorCode.UnsupportedRequest,
                f"{code_name(code)} does not exist in SPDM {ctx.version >> 4}.{ctx.version & 0xF}",
                data=code,
            )
        if spec.capability and not int(self.device.capabilities) & spec.capability:
            raise SpdmErrorResponse(
                ErrorCode.UnsupportedRequest,
                f"{code_name(code)}: the device does not advertise the capability",
                data=code,
            )
        if spec.session is SessionRule.OUTSIDE_ONLY and session_id is not None:
            raise unexpected(f"{code_name(code)} is not allowed inside a session")
        if spec.session is SessionRule.INSIDE_ONLY and session_id is None:
            if self.version >= 0x12:
                raise SpdmErrorResponse(
                    ErrorCode.SessionRequired, f"{code_name(code)} needs a session"
                )
            raise unexpected(f"{code_name(code)} needs a session")
        if spec.peer_capability and not self.peer_has(spec.peer_capability):
            flag = RequesterCap(spec.peer_capability).name
            raise SpdmErrorResponse(
                ErrorCode.UnsupportedRequest,
                f"{code_name(code)}: the requester did not set {flag}",
                data=code,
            )
        return spec.fn(self, req)
