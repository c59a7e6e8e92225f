"""The secured-message layer of one connection (DSP0277 1.2; DSP0274 1.3 10.19-10.23):
open request records, seal responses, gate the handshake phase, expire sessions, and
commit what handlers decided once the response is sent (sans-I/O).

Order of work for one secured record, as libspdm's responder does it
(``libspdm_process_request`` / ``libspdm_build_response``):

1. heartbeat watchdogs that ran out end their sessions; a pending device runtime update
   ends the sessions whose SessionPolicy does not survive it (DSP0274 1.3 table 72);
2. the record's SessionID must name a live session (else: dropped, or a plain
   ERROR(InvalidSession) when the profile says ``unknown_session = "error"``);
3. the record must decode under the session's request key (else: ERROR(DecryptError)
   sealed under the session's response key, and the session ends);
4. the application data must carry an SPDM message (MCTP: message type 0x05; the
   binding's ``RecordFormat.unwrap``) or, in an established session, a message of an
   application protocol the binding declares (``RecordFormat.app_protocols``; MCTP: 0x01
   PLDM), and in the handshake phase only FINISH, PSK_FINISH and the encapsulated /
   not-ready / chunk requests are accepted (else: ERROR sealed in the session);
5. after the response record is built, the handlers' :class:`SessionCommit` values are
   applied (established after FINISH_RSP, ended after END_SESSION_ACK), and any message
   in an established session restarts its watchdog.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from enum import Enum
from typing import NamedTuple

from emulator.codec.constants import ErrorCode
from emulator.errors import SessionError, TransportError
from emulator.responder.base import CommitKind, SessionCommit
from emulator.responder.core import Responder
from emulator.session.record import peek_session_id
from emulator.session.table import DecryptFailure, Session, SessionState, SessionTable
from emulator.transport.base import RecordFormat

log = logging.getLogger("emulator.session")


class Disposition(Enum):
    """What became of a secured record."""

    #: an SPDM request for the responder
    REQUEST = "request"
    #: a message of another application protocol (``Opened.protocol``) for the responder
    APPLICATION = "application"
    #: answered in the session without the responder (wrong phase, not SPDM)
    REFUSED = "refused"
    #: did not decode: ERROR(DecryptError) in the session, then the session ends
    DECRYPT_ERROR = "decrypt-error"
    #: no such session: dropped, or answered in the clear
    UNKNOWN_SESSION = "unknown-session"


class Opened(NamedTuple):
    """The result of :meth:`SessionLayer.open`.

    ``request``: the SPDM request (REQUEST, REFUSED), the application message without
    its header (APPLICATION), the raw record otherwise; ``response``: the ERROR to send
    instead of asking the responder (REFUSED and DECRYPT_ERROR are sealed in
    ``session``, UNKNOWN_SESSION goes in the clear; empty for a dropped record; for
    APPLICATION the answer when the responder has none for ``protocol``); ``reason``: why,
    for logs and telemetry; ``protocol`` / ``header``: the application protocol and its
    header bytes (APPLICATION).
    """

    disposition: Disposition
    request: bytes
    session: Session | None = None
    session_id: int | None = None
    response: bytes = b""
    reason: str = ""
    protocol: str = ""
    header: bytes = b""


class SessionLayer:
    """DSP0277 records of one connection, over the responder's session table."""

    __slots__ = ("connection", "format", "responder")  # one per connection

    def __init__(
        self, responder: Responder, record_format: RecordFormat, connection: int = 0
    ) -> None:
        self.responder = responder
        self.format = record_format
        #: the connection number, for log lines
        self.connection = connection

    @property
    def table(self) -> SessionTable | None:
        return self.responder.ctx.sessions

    def open(self, record: bytes) -> Opened:
        """Steps 1-4 of the module docstring for one secured record."""
        r = self.responder
        connection = self.connection
        table = self.table
        sid = peek_session_id(record)
        if table is not None:
            for gone in table.expire(r.clock()):
                log.info("conn %d: session 0x%08X ended: heartbeat timeout", connection, gone)
            if table.runtime_update_pending:
                table.apply_runtime_update()
        session = table.get(sid) if table is not None else None
        if session is None:
            what = f"0x{sid:08X}" if sid is not None else "(none)"
            reason = f"secured record for unknown session {what}"
            answer = b""
            if r.device.sessions.unknown_session == "error":
                answer = r.error(ErrorCode.InvalidSession)
            else:
                log.info(
                    "conn %d: dropped a secured record for unknown session %s", connection, what
                )
            return Opened(Disposition.UNKNOWN_SESSION, record, None, sid, answer, reason)
        try:
            app = session.open_request(record, self.format)
        except DecryptFailure as exc:
            log.info("conn %d: session 0x%08X: %s", connection, session.session_id, exc)
            return Opened(
                Disposition.DECRYPT_ERROR,
                record,
                session,
                session.session_id,
                r.error(ErrorCode.DecryptError),
                str(exc),
            )
        try:
            request = self.format.unwrap(app)
        except TransportError as exc:
            # not an SPDM message (another MCTP message type inside the session, a TCP
            # header or storage descriptor that names none)
            refusal = r.error(ErrorCode.UnsupportedRequest, app[0] if app else 0)
            protocol = self.format.app_protocol(app[0]) if app else None
            if protocol is not None and session.state is SessionState.ESTABLISHED:
                return Opened(
                    Disposition.APPLICATION,
                    app[1:],
                    session,
                    session.session_id,
                    refusal,
                    f"the device does not speak {protocol.upper()}",
                    protocol=protocol,
                    header=app[:1],
                )
            return Opened(
                Disposition.REFUSED,
                app,
                session,
                session.session_id,
                refusal,
                f"the secured record does not carry an SPDM message: {exc}",
            )
        code = request[1] if len(request) > 1 else 0
        if not session.accepts(code):
            return Opened(
                Disposition.REFUSED,
                request,
                session,
                session.session_id,
                r.error(ErrorCode.UnexpectedRequest),
                "only FINISH/PSK_FINISH/encapsulated requests in the handshake",
            )
        return Opened(Disposition.REQUEST, request, session, session.session_id)

    def seal(
        self,
        session: Session,
        response: bytes,
        *,
        skip_sequence_number: bool = False,
        header: bytes | None = None,
    ) -> bytes | None:
        """The response record under the session's current response key; None when the
        sequence number ran out (the session is ended).  ``skip_sequence_number``: a fault
        wants the record sealed with the next number; ``header``: an application
        protocol's header instead of the SPDM one."""
        try:
            if skip_sequence_number:
                session.response_keys().sequence += 1
            data = self.format.wrap(response) if header is None else header + response
            return session.seal_response(data, self.format, self.responder.rng)
        except SessionError as exc:
            log.warning(
                "conn %d: session 0x%08X ended: %s", self.connection, session.session_id, exc
            )
            table = self.table
            if table is not None:
                table.terminate(session.session_id)
            return None

    def commit(self, commits: Iterable[SessionCommit], session_id: int | None) -> None:
        """Step 5: apply what the handlers decided, now that the response is out."""
        r = self.responder
        table = r.ctx.sessions
        if table is None or (session_id is None and not commits):
            return
        now = r.clock()
        reset = False
        touched: set[int] = set()
        for commit in commits:
            touched.add(commit.session_id)
            if commit.kind is CommitKind.END:
                reset = reset or commit.clear_negotiated_state
                table.terminate(commit.session_id)
                continue
            session = table.get(commit.session_id)
            if session is not None:
                session.state = SessionState.ESTABLISHED
                session.start_watchdog(now)
        if session_id is not None and session_id not in touched:
            session = table.get(session_id)
            if session is not None and session.state is SessionState.ESTABLISHED:
                session.start_watchdog(now)  # any message in the session restarts it
        if reset:
            r.reset()
