"""Everything one connection's responder remembers between requests, typed (as h11's
``_state.py``): what was negotiated, the transcripts, and each family's state.

A :class:`ConnectionContext` is made new by GET_VERSION (DSP0274 1.3 10.3: "the
responder shall reset the connection") and by a closed connection; nothing else holds
per-connection state.  The session table is created on the first KEY_EXCHANGE or
PSK_EXCHANGE (:meth:`emulator.responder.core.Responder.session_table`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from emulator.codec.messages import build_response_not_ready
from emulator.crypto import HashObject
from emulator.responder.base import ConnectionState
from emulator.session.table import SessionTable


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

    def __deepcopy__(self, memo: dict[int, object]) -> MeasurementLog:
        """A copy with its own running hash (hash objects copy, they do not pickle):
        snapshots of a connection (the fuzz harness) copy contexts."""
        return MeasurementLog(self.hash.copy(), dict(self.seen), self.length)


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
        )


_NOTHING_NEGOTIATED = NegotiatedAlgorithms()
