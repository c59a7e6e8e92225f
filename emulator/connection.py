"""Sans-I/O glue for one requester connection: binding -> session layer -> responder.

:class:`SpdmConnection` is the model of aioquic's ``QuicConnection``: data in (one
transport payload), typed effects out (a :class:`~emulator.events.Reply`: what to send,
and socket actions a fault asks for) and events to observers.  The asyncio server
carries the reply out; nothing here touches a socket or a clock.

One exchange, in order (faults are hooks at named points, :class:`FaultHooks`):

1. binding: discovery objects answered by the binding, then ``decode`` (a malformed
   transport message gets ERROR(InvalidRequest) and never reaches the responder);
2. session layer (secured records only, :mod:`emulator.session.layer`): open, phase;
3. fault hook **request** (may answer instead of the responder, or pass a fault context:
   a lying device view, replayed randomness, a ResponseNotReady);
4. responder pipeline (:mod:`emulator.responder.core`);
5. fault hook **response** (before encryption);
6. session layer: seal, with fault hook **record** (after encryption);
7. fault hook **socket** (delay, drop, close, partial frame, copies);
8. session layer: commit what the handlers decided (sessions established / ended).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from emulator.codec.constants import ErrorCode, RequestCode, code_name
from emulator.codec.messages import build_error
from emulator.device.model import Device
from emulator.device.random import RandomSource
from emulator.errors import TransportError
from emulator.events import ExchangeEvent, Observer, Reply
from emulator.responder import FaultContext, Responder, SessionCommit
from emulator.responder.base import ConnectionState, end
from emulator.responder.encapsulated import arm_endpoint_info, arm_key_update
from emulator.responder.version import get_version
from emulator.session.layer import Disposition, Opened, SessionLayer
from emulator.session.table import Session
from emulator.transport.base import TransportBinding

log = logging.getLogger("emulator.connection")
_GET_VERSION = int(RequestCode.GET_VERSION)
_AFTER_VERSION = ConnectionState.AFTER_VERSION
#: a GET_VERSION answered with VERSION: transport payload, request, its 4-byte header,
#: response, encoded response, the device's version list then
_KeptVersion = tuple[bytes, bytes, bytes, bytes, bytes, list[object]]
#: the kept GET_VERSION exchanges, shared by the connections (one per binding, request
#: and version list: a VERSION depends on nothing else), so that each connection holds
#: only a reference; a few at most (cleared when full)
_KEPT_VERSIONS: dict[tuple[str, bytes, tuple[object, ...]], _KeptVersion] = {}
_KEPT_VERSIONS_MAX = 64

__all__ = [
    "ExchangeEvent",
    "ExchangeFaults",
    "FaultHooks",
    "Observer",
    "ObserverFanout",
    "Reply",
    "SpdmConnection",
]


class ObserverFanout:
    """One observer that hands each event to every observer of a list that may change
    while connections run (the app's ``Emulator.observers``).  It is false while the list
    is empty, and a connection builds no :class:`ExchangeEvent` when none of its observers
    is true: an exchange nobody watches costs nothing."""

    def __init__(self, targets: list[Observer]) -> None:
        self.targets = targets

    def __bool__(self) -> bool:
        return bool(self.targets)

    def __call__(self, event: ExchangeEvent) -> None:
        for obs in list(self.targets):
            try:
                obs(event)
            except Exception:  # an observer must never break the responder
                log.exception("observer failed")


class ExchangeFaults(Protocol):
    """The faults firing on one exchange (:class:`emulator.faults.engine.FaultExchange`),
    called at the named points of the module docstring."""

    #: descriptions of the faults applied, for the exchange event
    applied: list[str]
    #: what the responder must see differently in this exchange (None: nothing)
    context: FaultContext | None

    def on_request(self, request: bytes) -> tuple[bytes, bytes | None]:
        """The request the responder sees, and a response when it must be skipped."""
        ...

    def on_response(self, response: bytes, request: bytes) -> bytes:
        """The response the requester gets (``request``: the one it answers)."""
        ...

    @property
    def skip_sequence_number(self) -> bool:
        """Seal this response with the next sequence number."""
        ...

    def on_record(self, record: bytes, *, sequence_skipped: bool = False) -> bytes:
        """The secured record as sent."""
        ...

    def on_reply(self, reply: Reply) -> Reply:
        """Socket actions on the reply."""
        ...


class FaultHooks(Protocol):
    """Fault injection, plugged in from outside (the app composes it).  A hooks object
    that is false (``FaultEngine`` without rules: ``len() == 0``) fires nothing, and the
    connection does not ask it."""

    def begin(
        self, responder: Responder, request: bytes, *, connection: int, session_id: int | None
    ) -> ExchangeFaults | None:
        """The faults that fire on this request (None: none, the usual case)."""
        ...


class SpdmConnection:
    """Binding -> (session layer) -> responder for one socket connection (sans-I/O)."""

    def __init__(
        self,
        device: Device,
        binding: TransportBinding,
        *,
        number: int = 0,
        peer: str = "",
        rng: RandomSource | None = None,
        clock: Callable[[], float] | None = None,
        observers: Iterable[Observer] = (),
        faults: FaultHooks | None = None,
    ) -> None:
        self.device = device
        self.binding = binding
        self.number = number
        self.peer = peer
        self.responder = Responder(device, rng=rng, clock=clock, connection_number=number)
        self.sessions = SessionLayer(self.responder, binding.record_format, number)
        self.observers: list[Observer] = list(observers)
        #: fault injection (emulator.faults), composed by the app; None: no faults
        self.faults: FaultHooks | None = faults
        self.closed = False
        #: pull model (storage binding): the reply of the last delivered request, not
        #: yet collected
        self._kept: Reply | None = None
        #: the last GET_VERSION answered with VERSION (see :meth:`_version_again`): its
        #: transport payload, request, response, encoded response and the device's
        #: versions then; None until there is one
        self._version: _KeptVersion | None = None
        #: answer a repeated GET_VERSION without the pipeline (:meth:`_version_again`);
        #: off for a wrapper of ``Responder.respond`` that must see every request (the
        #: fuzz harness's contract checks)
        self.version_shortcut = True
        #: the context a GET_VERSION left when nothing reached the responder since (every
        #: other way to it clears this), else None
        self._settled: object = None

    # ---- push and pull -----------------------------------------------------------------

    def deliver(self, payload: bytes) -> None:
        """Pull model, request half (DSP0286 IF_SEND): handle ``payload`` now and keep its
        reply for :meth:`collect`.  A reply not collected yet is replaced, as a drive's
        pending response is when the host sends a new command."""
        self._kept = self.receive(payload)

    def collect(self) -> Reply | None:
        """Pull model, response half (DSP0286 IF_RECV): the kept reply, once; None when
        no request is waiting for collection."""
        kept, self._kept = self._kept, None
        return kept

    def peek(self) -> Reply | None:
        """Pull model: the kept reply, left in place (DSP0286 PENDING_INFO and the
        allocation-length check need its size before it is collected)."""
        return self._kept

    @property
    def has_pending_reply(self) -> bool:
        """A delivered request's reply waits for :meth:`collect`."""
        return self._kept is not None

    def receive(self, payload: bytes) -> Reply:
        """Push model (platform NORMAL frames): one transport payload in, its reply out."""
        cached = self._version
        if cached is not None and payload == cached[0]:
            again = self._version_again(cached)
            if again is not None:
                return again
        self._settled = None
        discovery = self.binding.answer_discovery(payload)
        if discovery is not None:
            log.info("conn %d: %s discovery answered", self.number, self.binding.name)
            return Reply([discovery] if discovery else [])
        try:
            msg = self.binding.decode(payload)
        except TransportError as exc:
            # Malformed transport object: the responder state is not touched; an ERROR
            # keeps a requester (or QEMU, which blocks until it gets an answer) moving.
            log.warning("conn %d: rejected %s message: %s", self.number, self.binding.name, exc)
            response = build_error(self.responder.version or 0x10, ErrorCode.InvalidRequest)
            self._emit(payload, response, None, False, reason=str(exc))
            return Reply([self.binding.encode(response)])
        request, secured = msg
        if secured:
            return self._secured(request)
        if not self.faults:
            # no fault rule: steps 4, 7 and 8 only (the usual case, kept short)
            outcome = self.responder.respond(request, None)
            response = outcome.response
            reply = Reply([self.binding.encode(response)])
            if log.isEnabledFor(logging.INFO):
                self._log(request, response, None, outcome.reason)
            if self.observers:
                self._emit(request, response, None, False, None, outcome.reason)
            if outcome.commits:
                self.sessions.commit(outcome.commits, None)
            elif request[1:2] == b"\x84" and response[1:2] == b"\x04":
                self._keep_version(payload, request, response, reply.payloads[0], outcome.request)
            return reply
        response, commits, fx, reason = self._exchange(request, None)
        reply = Reply([self.binding.encode(response)])
        return self._finish(request, response, None, False, commits, fx, reason, reply)

    # ---- a repeated GET_VERSION ---------------------------------------------------------

    def _keep_version(
        self, payload: bytes, request: bytes, response: bytes, encoded: bytes, answered: bytes
    ) -> None:
        """Remember a GET_VERSION the responder's own handler answered with VERSION (no
        fault, no session, not a released deferred request)."""
        spec = self.responder.table.get(_GET_VERSION)
        if spec is None or spec.fn is not get_version or answered is not request:
            return
        if not self.version_shortcut:
            return
        versions: list[object] = list(self.device.versions)
        key = (self.binding.name, bytes(payload), tuple(versions))
        kept = _KEPT_VERSIONS.get(key)
        if kept is None or kept[4] != encoded:
            if len(_KEPT_VERSIONS) >= _KEPT_VERSIONS_MAX:
                _KEPT_VERSIONS.clear()
            kept = (key[1], request, request[:4], response, encoded, versions)
            _KEPT_VERSIONS[key] = kept
        self._version = kept
        self._settled = self.responder.ctx

    def _version_again(self, cached: _KeptVersion) -> Reply | None:
        """The transport payload of a GET_VERSION answered before, byte for byte: VERSION
        depends only on the device's version list (DSP0274 1.3 10.3), so when nothing can
        change the exchange (no fault rule, no deferred request, no large-message
        transfer, the same versions) do what the pipeline and
        :func:`emulator.responder.version.get_version` do, and send the same bytes: the
        connection reset (sessions end), transcript A = request header + VERSION, state
        AFTER_VERSION, the log line and the observers' event.  When nothing reached the
        responder since a GET_VERSION left its context (the usual repeated GET_VERSION),
        those effects leave it as it is and only the log line and event remain.  None:
        take the usual way.  ``tests/test_fast_paths.py`` checks the two against each
        other."""
        r = self.responder
        ctx = r.ctx
        if self.faults or self.device.versions != cached[5]:
            return None
        _, request, header, response, encoded, _ = cached
        if (
            ctx is self._settled
            and ctx.state is _AFTER_VERSION
            and not ctx.version
            and ctx.sessions is None
            and len(ctx.transcripts.a) == len(header) + len(response)
            and not r.last_error
            and not r._commits
        ):
            # nothing reached the responder since a GET_VERSION left this context: the
            # reset and the handler would leave it exactly as it is
            pass
        elif ctx.not_ready.deferred is not None or ctx.chunking is not None:
            return None
        else:
            r.last_error = ""
            if r._commits:
                r._commits = []
            r.reset()
            ctx = r.ctx
            a = ctx.transcripts.a
            a += header
            a += response
            ctx.state = _AFTER_VERSION
            self._settled = ctx
        reply = Reply([encoded])
        if log.isEnabledFor(logging.INFO):
            self._log(request, response, None, "")
        observers = self.observers
        if observers and any(observers):
            self._emit(request, response, None, False, None, "")
        return reply

    # ---- the exchange ------------------------------------------------------------------

    def _exchange(
        self, request: bytes, session_id: int | None
    ) -> tuple[bytes, Sequence[SessionCommit], ExchangeFaults | None, str]:
        """Steps 3-5: fault hook, responder, fault hook.  Returns the response, the
        commits, the faults and the error reason."""
        fx = None
        if self.faults:
            fx = self.faults.begin(
                self.responder, request, connection=self.number, session_id=session_id
            )
        if fx is None:
            outcome = self.responder.respond(request, session_id)
            return outcome.response, outcome.commits, None, outcome.reason
        request, canned = fx.on_request(request)
        if canned is not None:
            self.responder.observe(request, session_id, canned)  # an ERROR's effects
            return fx.on_response(canned, request), (), fx, ""
        outcome = self.responder.respond(request, session_id, fx.context)
        response = fx.on_response(outcome.response, outcome.request)
        return response, outcome.commits, fx, outcome.reason

    def _secured(self, record: bytes) -> Reply:
        """A DSP0277 secured record through the session layer (its module docstring)."""
        opened = self.sessions.open(record)
        session = opened.session
        if opened.disposition is Disposition.UNKNOWN_SESSION or session is None:
            if not opened.response:
                self._emit(record, None, opened.session_id, True, reason=opened.reason)
                return Reply([])
            self._emit(record, opened.response, opened.session_id, True, reason=opened.reason)
            return Reply([self.binding.encode(opened.response)])
        sid = session.session_id
        if opened.disposition is Disposition.DECRYPT_ERROR:
            reply = self._seal(session, opened.response, None)
            self._emit(record, opened.response, sid, True, reason=opened.reason)
            self.sessions.commit((end(sid),), sid)
            return reply
        if opened.disposition is Disposition.APPLICATION:
            return self._application(opened, session)
        commits: Sequence[SessionCommit] = ()
        fx: ExchangeFaults | None = None
        if opened.disposition is Disposition.REFUSED:
            response, reason = opened.response, opened.reason
        else:
            response, commits, fx, reason = self._exchange(opened.request, sid)
        reply = self._seal(session, response, fx)
        return self._finish(opened.request, response, sid, True, commits, fx, reason, reply)

    def _application(self, opened: Opened, session: Session) -> Reply:
        """A non-SPDM application message in an established session (MCTP: PLDM): the
        responder's application handler answers under the same header; without one, the
        SPDM ERROR the session layer prepared.  Fault rules (SPDM request codes) do not
        apply to these messages."""
        sid = session.session_id
        answer = self.responder.application(opened.protocol, opened.request, sid)
        if answer is None:
            reply = self._seal(session, opened.response, None)
            self._emit(opened.request, opened.response, sid, True, reason=opened.reason)
            return reply
        if not answer:  # nothing is due (a PLDM response or datagram)
            self._emit(opened.request, None, sid, True, protocol=opened.protocol)
            self.sessions.commit((), sid)
            return Reply([])
        record = self.sessions.seal(session, answer, header=opened.header)
        reply = Reply([self.binding.encode(record, secured=True)] if record is not None else [])
        # (the protocol's handler logs the exchange by name: emulator.responder.pldm)
        self._emit(opened.request, answer, sid, True, protocol=opened.protocol)
        self.sessions.commit((), sid)
        return reply

    def _seal(self, session: Session, response: bytes, fx: ExchangeFaults | None) -> Reply:
        """Step 6: the response record, with the record fault hook; no reply when the
        sequence number ran out."""
        skip = fx is not None and fx.skip_sequence_number
        record = self.sessions.seal(session, response, skip_sequence_number=skip)
        if record is None:
            return Reply([])
        if fx is not None:
            record = fx.on_record(record, sequence_skipped=skip)
        return Reply([self.binding.encode(record, secured=True)])

    def _finish(
        self,
        request: bytes,
        response: bytes,
        session_id: int | None,
        secured: bool,
        commits: Sequence[SessionCommit],
        fx: ExchangeFaults | None,
        reason: str,
        reply: Reply,
    ) -> Reply:
        """Steps 7 and 8: the socket fault hook, the log and event, the commits."""
        if fx is not None:
            fx.on_reply(reply)
        self._log(request, response, session_id, reason)
        self._emit(request, response, session_id, secured, fx, reason)
        self.sessions.commit(commits, session_id)
        return reply

    def oob_encap_key_update(self, payload: bytes) -> bool:
        """Platform command OOB_ENCAP_KEY_UPDATE (0x8001, spdm-emu): ``payload`` is the
        SessionID (u32 LE; anything else: the latest session).  Arms a responder-initiated
        encapsulated KEY_UPDATE for the session's next GET_ENCAPSULATED_REQUEST; spdm-emu
        answers the command with an empty OOB_ENCAP_KEY_UPDATE frame.  False when there is
        no such session."""
        self._settled = None
        sid = int.from_bytes(payload, "little") if len(payload) == 4 else 0
        armed = arm_key_update(self.responder, sid)
        log.info(
            "conn %d: OOB_ENCAP_KEY_UPDATE for session 0x%08X: %s",
            self.number,
            sid,
            "armed" if armed else "no such session",
        )
        return armed

    def oob_encap_endpoint_info(self, payload: bytes) -> None:
        """Platform command OOB_ENCAP_ENDPOINT_INFO (0x8002, spdm-emu): the next
        GET_ENCAPSULATED_REQUEST, in or outside a session, gets GET_ENDPOINT_INFO for the
        requester (libspdm ``libspdm_init_get_endpoint_info_encap_state`` with no session);
        spdm-emu ignores any payload and answers with an empty OOB_ENCAP_ENDPOINT_INFO."""
        self._settled = None
        arm_endpoint_info(self.responder)
        log.info("conn %d: OOB_ENCAP_ENDPOINT_INFO: GET_ENDPOINT_INFO armed", self.number)

    def close(self) -> None:
        """The socket is gone (SHUTDOWN, peer closed): forget the connection state."""
        self._settled = None
        if not self.closed:
            self.closed = True
            self.responder.reset()

    # ---- helpers ---------------------------------------------------------------------

    def _log(self, request: bytes, response: bytes, session_id: int | None, reason: str) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        where = f" session 0x{session_id:08X}" if session_id is not None else ""
        req = code_name(request[1]) if len(request) > 1 else "MALFORMED"
        rsp = code_name(response[1]) if len(response) > 1 else "?"
        if len(response) > 2 and response[1] == 0x7F:
            try:
                rsp += f"({ErrorCode(response[2]).name})"
            except ValueError:
                rsp += f"(0x{response[2]:02X})"
            if reason:
                rsp += f": {reason}"
        log.info("conn %d%s: %s -> %s", self.number, where, req, rsp)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("conn %d  req %s", self.number, request.hex(" "))
            log.debug("conn %d  rsp %s", self.number, response.hex(" "))

    def _emit(
        self,
        request: bytes,
        response: bytes | None,
        session_id: int | None,
        secured: bool,
        fx: ExchangeFaults | None = None,
        reason: str = "",
        protocol: str = "spdm",
    ) -> None:
        """Tell every observer about one exchange (an observer never breaks the device).
        Nothing is built when no observer wants events (:class:`ObserverFanout`)."""
        if not any(self.observers):
            return
        error = None
        if (
            protocol == "spdm"
            and response is not None
            and len(response) > 2
            and response[1] == 0x7F
        ):
            error = response[2]
        event = ExchangeEvent(
            self.number,
            self.device.name,
            request,
            response,
            session_id,
            secured,
            error,
            reason,
            tuple(fx.applied) if fx is not None else (),
            protocol,
        )
        for obs in self.observers:
            try:
                obs(event)
            except Exception:  # an observer must never break the responder
                log.exception("observer failed")
