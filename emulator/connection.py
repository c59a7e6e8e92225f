"""Sans-I/O glue for one requester connection: transport -> session -> responder.

:class:`SpdmConnection` owns the per-connection :class:`~emulator.responder.Responder`
and turns the payload of each platform-socket NORMAL frame into a :class:`Reply`:
what to send back, and socket-level actions (delay, drop, close, partial frame)
that fault injection asks for.  The asyncio server executes the reply; nothing
here touches a socket or a clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from emulator.codec.constants import ErrorCode, code_name
from emulator.codec.messages import build_error
from emulator.device.model import Device
from emulator.device.random import RandomSource
from emulator.errors import SessionError, TransportError
from emulator.events import ExchangeEvent, Observer, Reply
from emulator.faults.engine import FaultEngine, FaultExchange
from emulator.responder import Responder
from emulator.session.record import peek_session_id
from emulator.session.table import (
    HANDSHAKE_REQUESTS,
    DecryptFailure,
    Session,
    SessionState,
    SessionTable,
    existing_session_table,
)
from emulator.transport.base import RecordFormat, TransportBinding

log = logging.getLogger("emulator.connection")

__all__ = ["ExchangeEvent", "Observer", "Reply", "SpdmConnection"]


class SpdmConnection:
    """Transport -> (session) -> responder for one socket connection (sans-I/O)."""

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
        faults: FaultEngine | None = None,
    ) -> None:
        self.device = device
        self.binding = binding
        self.number = number
        self.peer = peer
        self.responder = Responder(device, rng=rng, clock=clock, connection_number=number)
        self.observers: list[Observer] = list(observers)
        #: fault injection (emulator.faults): the device's engine unless one is given
        self.faults: FaultEngine | None = faults
        self.closed = False
        #: pull model (storage binding): the reply of the last delivered request, not
        #: yet collected
        self._kept: Reply | None = None

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

    @property
    def has_pending_reply(self) -> bool:
        """A delivered request's reply waits for :meth:`collect`."""
        return self._kept is not None

    def receive(self, payload: bytes) -> Reply:
        """Push model (platform NORMAL frames): one transport payload in, its reply out."""
        discovery = getattr(self.binding, "answer_discovery", None)
        if discovery is not None:
            answer = discovery(payload)
            if answer is not None:
                log.info("conn %d: DOE discovery index %d", self.number, payload[8])
                return Reply([answer])
        try:
            msg = self.binding.decode(payload)
        except TransportError as exc:
            # Malformed transport object: the responder state is not touched; an ERROR
            # keeps a requester (or QEMU, which blocks until it gets an answer) moving.
            log.warning("conn %d: rejected %s message: %s", self.number, self.binding.name, exc)
            response = build_error(self.responder.version or 0x10, ErrorCode.InvalidRequest)
            self._emit(
                ExchangeEvent(
                    self.number,
                    self.device.name,
                    payload,
                    response,
                    error=ErrorCode.InvalidRequest,
                    reason=str(exc),
                )
            )
            return Reply([self.binding.encode(response)])
        if msg.secured:
            return self._secured(msg.message)
        fx = self._faults(msg.message, None)
        if fx is None:
            response = self.responder.handle(msg.message)
        else:  # fault stages around the responder: request, then response
            response = fx.run(msg.message, self.responder.handle)
        reply = Reply([self.binding.encode(response)])
        if fx is not None:
            fx.on_reply(reply)  # socket stage: delay, drop, close, partial, copies
        self._log(msg.message, response, None)
        self._emit(self._event(msg.message, response, None, False, fx))
        self._after_response(None)  # e.g. FINISH in the clear: the session is established now
        return reply

    def _secured(self, record: bytes) -> Reply:
        """A DSP0277 secured record: decode it with the session's keys, answer in the session.

        As libspdm's responder: an unknown (or heartbeat-expired) session is dropped (or
        answered with a plain ERROR(InvalidSession) when the profile says
        ``unknown_session = "error"``); a record that does not decode gets
        ERROR(DecryptError) under the session's response key and the session ends; in
        the handshake phase only FINISH, PSK_FINISH and the encapsulated requests are
        accepted (UnexpectedRequest otherwise).  Session state changes that must follow
        the response (established after FINISH_RSP, ended after END_SESSION_ACK) are
        applied once the response record is built.
        """
        r = self.responder
        fmt = self.binding.record_format
        table = existing_session_table(r)
        sid = peek_session_id(record)
        if table is not None:
            now = r.clock()
            for gone in table.expire(now):
                log.info("conn %d: session 0x%08X ended: heartbeat timeout", self.number, gone)
            if table.runtime_update_pending:
                table.apply_runtime_update()
        session = table.get(sid) if table is not None else None
        if table is None or session is None or sid is None:
            return self._unknown_session(record, sid)
        try:
            app = session.open_request(record, fmt)
        except DecryptFailure as exc:
            r.last_error = str(exc)
            log.info("conn %d: session 0x%08X: %s", self.number, session.session_id, exc)
            response = r.error(ErrorCode.DecryptError)
            session.pending_end = True
            reply = self._seal(table, session, fmt, response)
            self._emit(self._event(record, response, session.session_id, True))
            self._after_response(session.session_id)
            return reply
        fx: FaultExchange | None = None
        if fmt.app_header and not app.startswith(fmt.app_header):
            # not an SPDM message (another MCTP message type inside the session)
            request = app
            r.last_error = "the secured record does not carry an SPDM message"
            response = r.error(ErrorCode.UnsupportedRequest, app[0] if app else 0)
        else:
            request = app[len(fmt.app_header) :]
            code = request[1] if len(request) > 1 else 0
            if session.state is SessionState.HANDSHAKING and code not in HANDSHAKE_REQUESTS:
                r.last_error = "only FINISH/PSK_FINISH/encapsulated requests in the handshake"
                response = r.error(ErrorCode.UnexpectedRequest)
            else:
                fx = self._faults(request, session.session_id)

                def handle(msg: bytes) -> bytes:
                    return r.handle(msg, session_id=session.session_id)

                response = handle(request) if fx is None else fx.run(request, handle)
        reply = self._seal(table, session, fmt, response, fx)
        if fx is not None:
            fx.on_reply(reply)
        self._log(request, response, session.session_id)
        self._emit(self._event(request, response, session.session_id, True, fx))
        self._after_response(session.session_id)
        return reply

    def _seal(
        self,
        table: SessionTable,
        session: Session,
        fmt: RecordFormat,
        response: bytes,
        fx: FaultExchange | None = None,
    ) -> Reply:
        """Encrypt ``response`` into the session; no reply if the sequence number ran out.

        Record-stage faults (``fx``) alter the encrypted record: a sequence number is
        skipped before sealing for ``record:bad_seq``, the MAC or SessionID is changed after.
        """
        skipped = False
        try:
            if fx is not None and fx.skip_sequence_number:
                session.response_keys().sequence += 1
                skipped = True
            record = session.seal_response(fmt.app_header + response, fmt, self.responder.rng)
        except SessionError as exc:
            log.warning("conn %d: session 0x%08X ended: %s", self.number, session.session_id, exc)
            table.terminate(session.session_id)
            return Reply([])
        if fx is not None:
            record = fx.on_record(record, sequence_skipped=skipped)
        return Reply([self.binding.encode(record, secured=True)])

    def _unknown_session(self, record: bytes, sid: int | None) -> Reply:
        r = self.responder
        what = f"0x{sid:08X}" if sid is not None else "(none)"
        r.last_error = f"secured record for unknown session {what}"
        settings = getattr(self.device, "sessions", None)
        if settings is not None and getattr(settings, "unknown_session", "drop") == "error":
            response = r.error(ErrorCode.InvalidSession)
            self._emit(self._event(record, response, sid, True))
            return Reply([self.binding.encode(response)])
        log.info("conn %d: dropped a secured record for unknown session %s", self.number, what)
        self._emit(
            ExchangeEvent(
                self.number, self.device.name, record, None, sid, True, None, r.last_error
            )
        )
        return Reply([])

    def _after_response(self, session_id: int | None) -> None:
        """Session changes that follow the response (libspdm ``libspdm_build_response``)."""
        r = self.responder
        table = existing_session_table(r)
        if table is None:
            return
        now = r.clock()
        reset = False
        for session in list(table.sessions.values()):
            if session.pending_end:
                reset = reset or session.pending_clear_negotiated_state
                table.terminate(session.session_id)
                continue
            if session.pending_established:
                session.pending_established = False
                session.state = SessionState.ESTABLISHED
                session.start_watchdog(now)
            elif session.session_id == session_id and session.state is SessionState.ESTABLISHED:
                session.start_watchdog(now)  # any message in the session restarts the watchdog
        if reset:
            r.reset()

    def oob_encap_key_update(self, payload: bytes) -> bool:
        """Platform command OOB_ENCAP_KEY_UPDATE (0x8001, spdm-emu): ``payload`` is the
        SessionID (u32 LE; anything else: the latest session).  Arms a responder-initiated
        encapsulated KEY_UPDATE for the session's next GET_ENCAPSULATED_REQUEST; spdm-emu
        answers the command with an empty OOB_ENCAP_KEY_UPDATE frame.  False when there is
        no such session."""
        from emulator.responder.encapsulated import arm_key_update

        sid = int.from_bytes(payload, "little") if len(payload) == 4 else 0
        armed = arm_key_update(self.responder, sid)
        log.info(
            "conn %d: OOB_ENCAP_KEY_UPDATE for session 0x%08X: %s",
            self.number,
            sid,
            "armed" if armed else "no such session",
        )
        return armed

    def close(self) -> None:
        """The socket is gone (SHUTDOWN, peer closed): forget the connection state."""
        if not self.closed:
            self.closed = True
            self.responder.reset()

    # ---- helpers ---------------------------------------------------------------------

    def _faults(self, request: bytes, session_id: int | None) -> FaultExchange | None:
        """The faults that fire on this request (None: none, the usual case)."""
        if self.faults is None:
            return None
        return self.faults.begin(
            self.responder, request, connection=self.number, session_id=session_id
        )

    def _event(
        self,
        request: bytes,
        response: bytes,
        session_id: int | None,
        secured: bool,
        fx: FaultExchange | None = None,
    ) -> ExchangeEvent:
        error = response[2] if len(response) > 2 and response[1] == 0x7F else None
        return ExchangeEvent(
            self.number,
            self.device.name,
            request,
            response,
            session_id,
            secured,
            error,
            self.responder.last_error,
            tuple(fx.applied) if fx is not None else (),
        )

    def _log(self, request: bytes, response: bytes, session_id: int | None) -> None:
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
            if self.responder.last_error:
                rsp += f": {self.responder.last_error}"
        log.info("conn %d%s: %s -> %s", self.number, where, req, rsp)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("conn %d  req %s", self.number, request.hex(" "))
            log.debug("conn %d  rsp %s", self.number, response.hex(" "))

    def _emit(self, event: ExchangeEvent) -> None:
        for obs in self.observers:
            try:
                obs(event)
            except Exception:  # an observer must never break the responder
                log.exception("observer failed")
