"""Everything one connection's responder remembers between requests, typed (as h11's
``_state.py``): what was negotiated, the transcripts, and each family's state.

A :class:`ConnectionContext` is made new by GET_VERSION (DSP0274 1.3 10.3: "the
responder shall reset the connection") and by a closed connection; nothing else holds
per-connection state.  The session table is created on the first KEY_EXCHANGE or
PSK_EXCHANGE (:meth:`emulator.responder.core.Responder.session_table`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from emulator.codec.constants import signing_algo
from emulator.codec.messages import build_response_not_ready
from emulator.crypto import HashObject
from emulator.responder.base import ConnectionState
from emulator.session.table import EncapState, SessionTable, TableCheckpoint


@dataclass(slots=True)
class PeerCapabilities:
    """What the requester said in GET_CAPABILITIES."""

    version: int
    ct_exponent: int = 0
    flags: int = 0
    data_transfer_size: int = 0
    max_spdm_msg_size: int = 0


@dataclass(slots=True)
class NegotiatedAlgorithms:
    """The selections sent in ALGORITHMS (one bit each, 0 when not negotiated)."""

    measurement_spec: int = 0
    other_params: int = 0
    measurement_hash: int = 0
    base_asym: int = 0
    base_hash: int = 0
    mel_spec: int = 0
    dhe: int = 0
    aead: int = 0
    req_base_asym: int = 0
    key_schedule: int = 0
    #: 1.3 multi-key connection for the responder's keys: the requester set MULTI_KEY_CONN
    #: in NEGOTIATE_ALGORITHMS (DIGESTS/CERTIFICATE key fields, message D, KeyPairID in
    #: GET_CSR / SET_CERTIFICATE, KeyUsageMask checks)
    multi_key_rsp: bool = False
    #: 1.3 multi-key connection for the requester's keys: MULTI_KEY_CONN in ALGORITHMS
    #: (encapsulated DIGESTS key fields, message EncapD in the FINISH transcript)
    multi_key_req: bool = False
    #: SPDM 1.4 PqcAsymSel, ReqPqcAsymAlg and KEM selections (0 when not negotiated)
    pqc_asym: int = 0
    req_pqc_asym: int = 0
    kem: int = 0

    @property
    def asym(self) -> int:
        """The responder's signature algorithm as one id (BaseAsymSel, or PqcAsymSel << 32)."""
        return signing_algo(self.base_asym, self.pqc_asym)

    @property
    def req_asym(self) -> int:
        """The requester's signature algorithm (ReqBaseAsymAlg, or ReqPqcAsymAlg << 32)."""
        return signing_algo(self.req_base_asym, self.req_pqc_asym)


@dataclass(slots=True)
class Transcripts:
    """Connection transcripts (DSP0274 1.3 10.16 "Transcript and transcript hash").

    ``a`` is VCA (GET_VERSION .. ALGORITHMS); ``b`` GET_DIGESTS/GET_CERTIFICATE;
    ``c`` CHALLENGE/CHALLENGE_AUTH.  Measurement (L1/L2) logs are in
    :class:`MeasurementsState`, session transcripts (TH) in each session.
    """

    a: bytearray = field(default_factory=bytearray)
    b: bytearray = field(default_factory=bytearray)
    c: bytearray = field(default_factory=bytearray)

    def reset(self) -> None:
        self.a.clear()
        self.b.clear()
        self.c.clear()


@dataclass(slots=True)
class IdentityState:
    """Certificates family (DSP0274 1.3 10.6-10.8).

    ``message_d`` is the first DIGESTS after VCA when MULTI_KEY_CONN was negotiated
    (DSP0274 1.3 "message D"); ``digest_window_closed`` is set once a request other than
    GET_DIGESTS was handled after VCA (then no DIGESTS joins D).
    """

    message_d: bytes = b""
    digest_window_closed: bool = False


@dataclass(slots=True)
class MeasurementLog:
    """L1/L2 of one context (outside sessions or one session): a running hash."""

    hash: HashObject
    #: index -> generation of every block reported in this log (content-changed)
    seen: dict[int, int] = field(default_factory=dict)
    #: bytes hashed so far (for logs and tests)
    length: int = 0

    def update(self, data: bytes) -> None:
        self.hash.update(data)
        self.length += len(data)

    def copy(self) -> MeasurementLog:
        """A copy with its own running hash."""
        return MeasurementLog(self.hash.copy(), dict(self.seen), self.length)

    def __deepcopy__(self, memo: dict[int, object]) -> MeasurementLog:
        """A copy with its own running hash (hash objects copy, they do not pickle):
        snapshots of a connection (the fuzz harness) copy contexts."""
        return self.copy()


@dataclass(slots=True)
class MeasurementsState:
    """Measurements family (DSP0274 1.3 10.11): one L1/L2 log per session context."""

    logs: dict[int | None, MeasurementLog] = field(default_factory=dict)


@dataclass(slots=True)
class PendingResponse:
    """A large response waiting for CHUNK_GET (libspdm ``chunk_context.get``)."""

    handle: int
    message: bytes
    session_id: int | None
    #: the ChunkSeqNo the next CHUNK_GET must carry
    seq: int = 0
    #: bytes of ``message`` already sent
    sent: int = 0


@dataclass(slots=True)
class IncomingRequest:
    """A large request arriving by CHUNK_SEND (libspdm ``chunk_context.send``)."""

    handle: int
    session_id: int | None
    size: int
    data: bytearray
    #: ChunkSeqNo of the last chunk accepted
    seq: int = 0


@dataclass(slots=True)
class ChunkState:
    """Large SPDM messages (DSP0274 1.3 10.24-10.25, CHUNK_SEND / CHUNK_GET)."""

    #: libspdm's chunk_context.get.chunk_handle counter
    get_handle: int = 0
    pending: PendingResponse | None = None
    incoming: IncomingRequest | None = None
    #: large responses stored / large requests completed (telemetry, tests)
    responses_stored: int = 0
    requests_completed: int = 0

    @property
    def in_transfer(self) -> bool:
        return self.pending is not None or self.incoming is not None

    def copy(self) -> ChunkState:
        pending = self.pending
        if pending is not None:
            pending = PendingResponse(
                pending.handle, pending.message, pending.session_id, pending.seq, pending.sent
            )
        incoming = self.incoming
        if incoming is not None:
            incoming = IncomingRequest(
                incoming.handle,
                incoming.session_id,
                incoming.size,
                bytearray(incoming.data),
                incoming.seq,
            )
        return ChunkState(
            self.get_handle, pending, incoming, self.responses_stored, self.requests_completed
        )


@dataclass(slots=True)
class DeferredRequest:
    """A request answered ResponseNotReady, waiting for its RESPOND_IF_READY (DSP0274 1.3
    10.17; extended error data: RDTExponent, RequestCode, Token, RDTM)."""

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


@dataclass(slots=True)
class NotReadyState:
    """ResponseNotReady / RESPOND_IF_READY (DSP0274 1.3 10.17)."""

    deferred: DeferredRequest | None = None
    #: the connection's next token (0, 1, ... 255, 0...), as libspdm's current_token
    next_token: int = 0

    def take_token(self) -> int:
        token = self.next_token
        self.next_token = (token + 1) & 0xFF
        return token


@dataclass(slots=True)
class ConnectionContext:
    """The typed per-connection state of a responder."""

    state: ConnectionState = ConnectionState.NOT_STARTED
    #: the negotiated SPDM version (0 before VERSION)
    version: int = 0
    peer: PeerCapabilities | None = None
    algorithms: NegotiatedAlgorithms = field(default_factory=NegotiatedAlgorithms)
    transcripts: Transcripts = field(default_factory=Transcripts)
    identity: IdentityState = field(default_factory=IdentityState)
    measurements: MeasurementsState = field(default_factory=MeasurementsState)
    #: large-message transfers; None until the first one (DSP0274 1.3 10.24)
    chunking: ChunkState | None = None
    not_ready: NotReadyState = field(default_factory=NotReadyState)
    #: secure sessions (DSP0274 1.3 10.19+); None until the first KEY_EXCHANGE/PSK_EXCHANGE
    sessions: SessionTable | None = None
    #: an encapsulated flow of the connection, not of a session (GET_ENDPOINT_INFO armed by
    #: spdm-emu's OOB_ENCAP_ENDPOINT_INFO); None when there is none
    encap: EncapState | None = None
    #: EPInfo the requester sent in the last encapsulated ENDPOINT_INFO
    peer_endpoint_info: bytes | None = None

    def pristine(self) -> bool:
        """Nothing but GET_VERSION happened on this context: every field still has its
        default value, except the state (at most AFTER_VERSION) and transcript A.  A new
        GET_VERSION then needs no new context (DSP0274 1.3 10.3: there is nothing else
        to reset).  ``tests/test_fast_paths.py`` changes each field in turn and expects False,
        so a field added here without a check fails there."""
        return (
            self.state <= ConnectionState.AFTER_VERSION
            and self.version == 0
            and self.peer is None
            and self.chunking is None
            and self.sessions is None
            and not self.transcripts.b
            and not self.transcripts.c
            and not self.measurements.logs
            and self.not_ready.deferred is None
            and self.not_ready.next_token == 0
            and not self.identity.message_d
            and not self.identity.digest_window_closed
            and self.algorithms == _NOTHING_NEGOTIATED
            and self.encap is None
            and self.peer_endpoint_info is None
        )

    def checkpoint(self) -> ContextCheckpoint:
        """Everything a request may change here, copied (see :class:`ContextCheckpoint`).
        ``peer`` and ``algorithms`` are replaced by their handlers, never changed, so they
        are kept by reference."""
        t = self.transcripts
        sessions = self.sessions
        deferred = self.not_ready.deferred
        logs = self.measurements.logs
        return ContextCheckpoint(
            self,
            self.state,
            self.version,
            self.peer,
            self.algorithms,
            (bytes(t.a), bytes(t.b), bytes(t.c)),
            (self.identity.message_d, self.identity.digest_window_closed),
            {sid: log.copy() for sid, log in logs.items()} if logs else {},
            self.chunking.copy() if self.chunking is not None else None,
            (deferred, deferred.remaining if deferred is not None else 0),
            self.not_ready.next_token,
            sessions,
            sessions.checkpoint() if sessions is not None else None,
            _copy_encap(self.encap),
            self.peer_endpoint_info,
        )


@dataclass(slots=True)
class ContextCheckpoint:
    """A connection context as it was before a request (``ConnectionContext.checkpoint``).

    The pipeline takes one before the handler runs when the requester's size limits may
    refuse the response: a response that cannot be delivered (ERROR(ResponseTooLarge),
    DSP0274 1.2+) is an ERROR to the request, and the request then has the effects of
    an ERROR, not those of the response the requester never saw (no transcript, state,
    measurement-log or session change).  :meth:`restore` puts every field back, in the
    same objects (the session layer keeps references to sessions).
    """

    context: ConnectionContext
    state: ConnectionState
    version: int
    peer: PeerCapabilities | None
    algorithms: NegotiatedAlgorithms
    transcripts: tuple[bytes, bytes, bytes]
    identity: tuple[bytes, bool]
    logs: dict[int | None, MeasurementLog]
    chunking: ChunkState | None
    deferred: tuple[DeferredRequest | None, int]
    next_token: int
    sessions: SessionTable | None
    table: TableCheckpoint | None
    encap: EncapState | None
    peer_endpoint_info: bytes | None

    def restore(self) -> ConnectionContext:
        """The context as it was (the same object, fields put back); install it."""
        ctx = self.context
        ctx.state = self.state
        ctx.version = self.version
        ctx.peer = self.peer
        ctx.algorithms = self.algorithms
        t = ctx.transcripts
        t.a[:], t.b[:], t.c[:] = self.transcripts
        ctx.identity.message_d, ctx.identity.digest_window_closed = self.identity
        ctx.measurements.logs = self.logs
        ctx.chunking = self.chunking
        deferred, remaining = self.deferred
        if deferred is not None:
            deferred.remaining = remaining
        ctx.not_ready.deferred = deferred
        ctx.not_ready.next_token = self.next_token
        created = ctx.sessions
        if created is not None and created is not self.sessions:
            # the table was made by this request (its first KEY_EXCHANGE / PSK_EXCHANGE)
            created.clear()
            created.detach()
        ctx.sessions = self.sessions
        if self.sessions is not None and self.table is not None:
            self.sessions.restore(self.table)
        ctx.encap = self.encap
        ctx.peer_endpoint_info = self.peer_endpoint_info
        return ctx


def _copy_encap(encap: EncapState | None) -> EncapState | None:
    """The connection's encapsulated flow, its mutable fields copied."""
    if encap is None:
        return None
    return replace(encap, sequence=list(encap.sequence), chain=bytearray(encap.chain))


_NOTHING_NEGOTIATED = NegotiatedAlgorithms()
