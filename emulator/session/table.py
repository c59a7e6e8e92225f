"""Sessions of one connection: keys, sequence numbers, state and the session table.

A :class:`Session` holds what libspdm keeps in ``libspdm_session_info_t`` and its
secured-message context: the DSP0277 version, the session type (encrypt+MAC or MAC only),
the handshake and application ("data") keys of each direction with their sequence
numbers, the KEY_UPDATE backup of the request key, and the transcript pieces of the
session (message K, message F).  Keys come from :class:`emulator.crypto.KeySchedule`.

State, as libspdm sets it (``libspdm_rsp_receive_send.c``):

* KEY_EXCHANGE_RSP / PSK_EXCHANGE_RSP -> HANDSHAKING: records use the handshake keys;
* the FINISH_RSP / PSK_FINISH_RSP record is still protected with the handshake keys; the
  session becomes ESTABLISHED only after it is sent (the handler's
  :class:`~emulator.responder.base.SessionCommit`, applied by
  :mod:`emulator.session.layer`), then records use the data keys (sequence numbers
  restart at 0);
* END_SESSION_ACK is sent under the session's keys, then the session is gone (a
  commit too); a record that fails decoding gets ERROR(DecryptError) under the
  session's keys and the session is gone too.

The table allocates session IDs: ReqSessionID from the request, RspSessionID drawn from
the injected random source (never 0, never one already in use); SessionID =
``RspSessionID << 16 | ReqSessionID`` (libspdm ``libspdm_generate_session_id``).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from emulator.codec.constants import RequestCode
from emulator.crypto.aead import AeadCipher, aead_cipher
from emulator.crypto.keyschedule import DataSecrets, HandshakeSecrets, KeySchedule, TrafficKeys
from emulator.device.events import EventQueue
from emulator.errors import CryptoError, SessionError
from emulator.session.record import (
    MAX_SEQUENCE_NUMBER,
    RecordError,
    open_record,
    seal_record,
)
from emulator.session.settings import SessionSettings
from emulator.transport.base import RecordFormat

#: Requests accepted in a session's handshake phase (DSP0274 "Session handshake phase").
HANDSHAKE_REQUESTS = frozenset(
    {
        int(RequestCode.FINISH),
        int(RequestCode.PSK_FINISH),
        int(RequestCode.GET_ENCAPSULATED_REQUEST),
        int(RequestCode.DELIVER_ENCAPSULATED_RESPONSE),
        int(RequestCode.RESPOND_IF_READY),
        # a handshake message larger than a DataTransferSize travels in chunks (the
        # reassembled request is checked against this set by emulator.responder.chunking)
        int(RequestCode.CHUNK_SEND),
        int(RequestCode.CHUNK_GET),
    }
)

Rng = Callable[[int], bytes]


class SessionState(Enum):
    HANDSHAKING = "handshaking"
    ESTABLISHED = "established"


class SessionType(Enum):
    """libspdm ``libspdm_session_type_t``: ENCRYPT_CAP and MAC_CAP on both sides, or MAC only."""

    ENC_MAC = "encrypt+mac"
    MAC_ONLY = "mac-only"


class DecryptFailure(SessionError):
    """A record for a known session could not be decoded: answer DecryptError, end the session."""

    def __init__(self, session_id: int, reason: str) -> None:
        super().__init__(reason)
        self.session_id = session_id


@dataclass(slots=True)
class DirectionKeys:
    """One direction's secret, AEAD key and IV, the next sequence number and the generation.

    ``cipher`` is the keyed AEAD object, made on the first record and kept for the others
    under the same key (a new key is a new DirectionKeys).
    """

    secret: bytes
    key: bytes
    salt: bytes
    sequence: int = 0
    generation: int = 0
    cipher: AeadCipher | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_traffic(cls, keys: TrafficKeys, generation: int = 0) -> DirectionKeys:
        return cls(keys.secret, keys.key, keys.iv, 0, generation)

    def __deepcopy__(self, memo: dict[int, object]) -> DirectionKeys:
        """A copy that shares the keyed AEAD object (immutable; it does not pickle)."""
        return DirectionKeys(
            self.secret, self.key, self.salt, self.sequence, self.generation, self.cipher
        )

    def cipher_for(self, aead: int) -> AeadCipher:
        """The keyed AEAD object of this key (made once)."""
        cipher = self.cipher
        if cipher is None:
            cipher = self.cipher = aead_cipher(aead, self.key)
        return cipher


@dataclass(slots=True)
class EncapState:
    """The encapsulated request flow of a session: mutual authentication (GET_DIGESTS,
    GET_CERTIFICATE) or a responder-initiated KEY_UPDATE."""

    request_id: int = 0
    #: request codes to send, in order (GET_DIGESTS, GET_CERTIFICATE / KEY_UPDATE)
    sequence: list[int] = field(default_factory=list)
    #: the request code whose response is awaited (0: none)
    current: int = 0
    #: the last encapsulated request sent
    last_request: bytes = b""
    chain: bytearray = field(default_factory=bytearray)
    chain_total: int = 0
    digests: bytes = b""
    done: bool = False
    #: GET_ENDPOINT_INFO (spdm-emu OOB_ENCAP_ENDPOINT_INFO): the signature was requested
    #: with this requester slot, and what came back (EPInfo)
    endpoint_info_slot: int | None = None
    peer_endpoint_info: bytes | None = None


@dataclass
class Session:
    """One secure session (DSP0274 "Session", DSP0277)."""

    session_id: int
    version: int
    secured_version: int
    schedule: KeySchedule
    session_type: SessionType
    use_psk: bool = False
    state: SessionState = SessionState.HANDSHAKING
    #: inclusive maximum sequence number (DSP0277 1.3 AEAD limit - 1)
    max_sequence: int = MAX_SEQUENCE_NUMBER - 1
    slot_id: int = 0
    heartbeat_period: int = 0
    session_policy: int = 0
    psk_hint: bytes = b""
    mut_auth_requested: int = 0
    req_slot_id: int = 0
    #: the requester's SPDM certificate chain (mutual authentication), and its hash (CM)
    peer_chain: bytes = b""
    #: the first encapsulated DIGESTS of the session (1.3 message EncapD: in the FINISH
    #: transcript when the requester's keys make a multi-key connection)
    encap_digests: bytes = b""
    encap: EncapState | None = None
    #: the event subscription and the events waiting for it (EVENT_CAP, SPDM 1.3)
    events: EventQueue | None = None
    #: TH pieces: A (+ D) (+ Hash(Ct)) snapshot, message K and message F
    th_prefix: bytes = b""
    message_k: bytearray = field(default_factory=bytearray)
    message_f: bytearray = field(default_factory=bytearray)
    #: the DHE shared secret (KEY_EXCHANGE) or the PSK (PSK_EXCHANGE) the keys come from:
    #: what DMTF spdm_dump's --dhe_secret / --psk take (``serve --keylog`` writes them)
    dhe_secret: bytes = b""
    psk: bytes = b""
    handshake_secret: bytes = b""
    request_finished_key: bytes = b""
    response_finished_key: bytes = b""
    hs_request: DirectionKeys | None = None
    hs_response: DirectionKeys | None = None
    app_request: DirectionKeys | None = None
    app_response: DirectionKeys | None = None
    #: the request key before an unverified KEY_UPDATE (libspdm application_secret_backup)
    request_backup: DirectionKeys | None = None
    export_master_secret: bytes = b""
    #: KEY_UPDATE (operation, tag) awaiting VerifyNewKey
    last_key_update: tuple[int, int] | None = None
    #: heartbeat watchdog: the session ends when a record arrives after this (clock seconds)
    deadline: float | None = None
    end_session_attributes: int = 0

    # ---- keys ------------------------------------------------------------------------

    def accepts(self, code: int) -> bool:
        """The session's phase allows request ``code`` (DSP0274 1.3 10.19 "Session
        handshake phase": only FINISH, PSK_FINISH and the encapsulated, not-ready and
        chunk requests before the session is established)."""
        return self.state is SessionState.ESTABLISHED or code in HANDSHAKE_REQUESTS

    @property
    def mac_only(self) -> bool:
        return self.session_type is SessionType.MAC_ONLY

    def install_handshake(self, hs: HandshakeSecrets) -> None:
        """Handshake keys from TH1 (KEY_EXCHANGE_RSP / PSK_EXCHANGE_RSP)."""
        self.handshake_secret = hs.handshake_secret
        self.request_finished_key = hs.request_finished_key
        self.response_finished_key = hs.response_finished_key
        self.hs_request = DirectionKeys.from_traffic(hs.request)
        self.hs_response = DirectionKeys.from_traffic(hs.response)

    def install_data(self, ds: DataSecrets) -> None:
        """Data keys from TH2; used once the session is ESTABLISHED."""
        self.app_request = DirectionKeys.from_traffic(ds.request)
        self.app_response = DirectionKeys.from_traffic(ds.response)
        self.export_master_secret = ds.export_master_secret

    def _keys(self, request: bool) -> DirectionKeys:
        if self.state is SessionState.ESTABLISHED:
            keys = self.app_request if request else self.app_response
        else:
            keys = self.hs_request if request else self.hs_response
        if keys is None:
            raise SessionError(f"session 0x{self.session_id:08X}: no keys yet")
        return keys

    def response_keys(self) -> DirectionKeys:
        return self._keys(False)

    def update_request_key(self) -> None:
        """KEY_UPDATE: new request data key; the old one is kept until VerifyNewKey."""
        cur = self._keys(True)
        self.request_backup = replace(cur)
        self.app_request = self._next(cur)

    def update_response_key(self) -> None:
        """KEY_UPDATE UpdateAllKeys: new response data key, used from this ACK on."""
        self.app_response = self._next(self._keys(False))

    def commit_request_key(self) -> None:
        """VerifyNewKey: the requester proved it uses the new key; forget the old one."""
        self.request_backup = None

    def _next(self, cur: DirectionKeys) -> DirectionKeys:
        return DirectionKeys.from_traffic(self.schedule.update(cur.secret), cur.generation + 1)

    # ---- records ---------------------------------------------------------------------

    def open_request(self, record: bytes, fmt: RecordFormat) -> bytes:
        """Decode a request record; DecryptFailure if it does not verify.

        While a KEY_UPDATE is unverified, a record that fails under the new request key is
        tried under the old one (libspdm ``LIBSPDM_STATUS_SESSION_TRY_DISCARD_KEY_UPDATE``):
        if that works, the new key is re-derived with its sequence number at 0.
        """
        keys = self._keys(True)
        try:
            app = self._open(keys, record, fmt)
        except RecordError as exc:
            backup = self.request_backup
            if backup is None or self.state is not SessionState.ESTABLISHED:
                raise DecryptFailure(self.session_id, str(exc)) from None
            try:
                app = self._open(backup, record, fmt)
            except RecordError:
                raise DecryptFailure(self.session_id, str(exc)) from None
            backup.sequence += 1
            keys.sequence = 0
            return app
        keys.sequence += 1
        return app

    def _open(self, keys: DirectionKeys, record: bytes, fmt: RecordFormat) -> bytes:
        return open_record(
            aead=self.schedule.aead,
            key=keys.key,
            salt=keys.salt,
            sequence_number=keys.sequence,
            session_id=self.session_id,
            sequence_number_size=fmt.sequence_number_size,
            record=record,
            mac_only=self.mac_only,
            max_sequence_number=self.max_sequence,
            cipher=self._cipher(keys),
        )

    def _cipher(self, keys: DirectionKeys) -> AeadCipher | None:
        """The direction's keyed AEAD object; None when the key is not one the suite takes
        (then the record code reports the problem)."""
        try:
            return keys.cipher_for(self.schedule.aead)
        except CryptoError:
            return None

    def seal_response(self, app: bytes, fmt: RecordFormat, rng: Rng) -> bytes:
        """Encode a response record under the current response key (SequenceOverflow at the
        AEAD limit); MCTP-style bindings add 1..max random padding bytes from ``rng``."""
        keys = self._keys(False)
        padding = b""
        if fmt.max_random_padding and not self.mac_only:
            count = int.from_bytes(rng(4), "little") % fmt.max_random_padding + 1
            padding = rng(count)
        record = seal_record(
            aead=self.schedule.aead,
            key=keys.key,
            salt=keys.salt,
            sequence_number=keys.sequence,
            session_id=self.session_id,
            sequence_number_size=fmt.sequence_number_size,
            app_data=app,
            padding=padding,
            mac_only=self.mac_only,
            max_sequence_number=self.max_sequence,
            cipher=self._cipher(keys),
        )
        keys.sequence += 1
        return record

    # ---- checkpoints -------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Every field, the mutable ones copied (keys are replaced, never changed, by the
        handlers; sequence numbers move only when records are opened and sealed)."""
        fields = vars(self).copy()
        fields["message_k"] = bytearray(self.message_k)
        fields["message_f"] = bytearray(self.message_f)
        encap = self.encap
        if encap is not None:
            fields["encap"] = replace(
                encap, sequence=list(encap.sequence), chain=bytearray(encap.chain)
            )
        return fields

    def restore(self, fields: dict[str, Any]) -> None:
        """Put back what :meth:`snapshot` returned (into this same object)."""
        vars(self).update(fields)

    # ---- watchdog ----------------------------------------------------------------------

    def start_watchdog(self, now: float) -> None:
        """libspdm starts a 2 * HeartbeatPeriod watchdog when the session is established."""
        self.deadline = now + 2 * self.heartbeat_period if self.heartbeat_period else None

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now > self.deadline

    def wipe(self) -> None:
        """Forget the key material (the session ended)."""
        self.handshake_secret = self.request_finished_key = self.response_finished_key = b""
        self.dhe_secret = self.psk = b""
        self.hs_request = self.hs_response = self.app_request = self.app_response = None
        self.request_backup = None
        self.export_master_secret = b""
        self.message_k.clear()
        self.message_f.clear()


@dataclass(frozen=True, slots=True)
class TableCheckpoint:
    """A session table as it was (:meth:`SessionTable.checkpoint`)."""

    sessions: tuple[tuple[Session, dict[str, Any]], ...]
    latest_session_id: int | None
    runtime_update_pending: bool


class SessionTable:
    """The sessions of one connection (libspdm ``session_info[]``), at most ``max_sessions``."""

    def __init__(self, settings: SessionSettings | None = None) -> None:
        self.settings = settings or SessionSettings()
        self.sessions: dict[int, Session] = {}
        #: the session of the last KEY_EXCHANGE / PSK_EXCHANGE (FINISH in the clear uses it)
        self.latest_session_id: int | None = None
        #: a device runtime update happened (TerminationPolicy is applied at the next record)
        self.runtime_update_pending = False
        self._listeners: list[Callable[[str, object], None]] | None = None
        #: called with the SessionID of every session that ends (however it ends)
        self.on_end: Callable[[int], None] | None = None

    def __len__(self) -> int:
        return len(self.sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self.sessions

    @property
    def full(self) -> bool:
        return len(self.sessions) >= self.settings.max_sessions

    def allocate_id(self, req_session_id: int, rng: Rng) -> int | None:
        """A new SessionID for ``req_session_id``, None when the table is full.

        RspSessionID comes from ``rng``: never 0 (SessionID 0 is libspdm's invalid ID, and
        an RspSessionID of 0 marks a free entry) and never the half of a live session.
        """
        if self.full:
            return None
        used = {sid >> 16 for sid in self.sessions}
        for _ in range(256):
            rsp = int.from_bytes(rng(2), "little")
            if rsp != 0 and rsp not in used:
                return (rsp << 16) | (req_session_id & 0xFFFF)
        for rsp in range(0xFFFF, 0, -1):  # a hostile rng: fall back to libspdm's choice
            if rsp not in used:
                return (rsp << 16) | (req_session_id & 0xFFFF)
        return None

    def add(self, session: Session) -> None:
        if session.session_id in self.sessions:
            raise SessionError(f"session 0x{session.session_id:08X} already exists")
        if self.full:
            raise SessionError("session table is full")
        self.sessions[session.session_id] = session
        self.latest_session_id = session.session_id

    def get(self, session_id: int | None) -> Session | None:
        if session_id is None:
            return None
        return self.sessions.get(session_id)

    def terminate(self, session_id: int) -> None:
        """End a session and forget its keys (libspdm ``libspdm_free_session_id``)."""
        session = self.sessions.pop(session_id, None)
        if session is not None:
            session.wipe()
        if self.latest_session_id == session_id:
            self.latest_session_id = None
        if session is not None and self.on_end is not None:
            self.on_end(session_id)

    def clear(self) -> None:
        for sid in list(self.sessions):
            self.terminate(sid)

    def checkpoint(self) -> TableCheckpoint:
        """The sessions and their fields, to undo one request (a response the requester
        cannot receive: the session it would have opened or moved on never was)."""
        return TableCheckpoint(
            tuple((s, s.snapshot()) for s in self.sessions.values()),
            self.latest_session_id,
            self.runtime_update_pending,
        )

    def restore(self, checkpoint: TableCheckpoint) -> None:
        """The table as it was at ``checkpoint``; sessions opened since are forgotten."""
        kept = {id(s) for s, _ in checkpoint.sessions}
        for session in self.sessions.values():
            if id(session) not in kept:
                session.wipe()
        self.sessions = {}
        for session, fields in checkpoint.sessions:
            session.restore(fields)
            self.sessions[session.session_id] = session
        self.latest_session_id = checkpoint.latest_session_id
        self.runtime_update_pending = checkpoint.runtime_update_pending

    def expire(self, now: float) -> list[int]:
        """End every session whose heartbeat watchdog ran out; returns their IDs."""
        gone = [sid for sid, s in self.sessions.items() if s.expired(now)]
        for sid in gone:
            self.terminate(sid)
        return gone

    def listen(self, listeners: list[Callable[[str, object], None]]) -> None:
        """Hear about the device's runtime changes (``Device.listeners``)."""
        if self._listeners is None:
            self._listeners = listeners
            listeners.append(self._on_device_change)

    def __deepcopy__(self, memo: dict[int, object]) -> SessionTable:
        """A copy with copies of the sessions that listens to the same device (a snapshot
        of a connection: the fuzz harness copies established sessions)."""
        out = SessionTable(self.settings)
        memo[id(self)] = out
        out.sessions = copy.deepcopy(self.sessions, memo)
        out.latest_session_id = self.latest_session_id
        out.runtime_update_pending = self.runtime_update_pending
        if self.on_end is not None:
            # the copied owner's hook (a bound method of the responder copied with it)
            out.on_end = copy.deepcopy(self.on_end, memo)
        if self._listeners is not None:
            out.listen(self._listeners)
        return out

    def detach(self) -> None:
        """Stop listening (the connection is reset or closed)."""
        if self._listeners is not None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(self._on_device_change)
            self._listeners = None

    def _on_device_change(self, what: str, detail: object) -> None:
        """A measurement that changed for requesters is a runtime update (DSP0274
        SessionPolicy TerminationPolicy); a pending one (no MEAS_FRESH_CAP) is not yet.
        Sessions that subscribed to events queue the ones the change means."""
        for session in list(self.sessions.values()):
            if session.events is not None:
                session.events.on_device_change(what, detail)
        if not self.settings.terminate_on_update or what != "measurement":
            return
        if isinstance(detail, dict) and detail.get("pending"):
            return
        self.runtime_update_pending = True

    def apply_runtime_update(self) -> list[int]:
        """End the sessions whose SessionPolicy TerminationPolicy bit is 0 (DSP0274 1.2+)."""
        self.runtime_update_pending = False
        gone = [sid for sid, s in self.sessions.items() if not s.session_policy & 0x01]
        for sid in gone:
            self.terminate(sid)
        return gone
