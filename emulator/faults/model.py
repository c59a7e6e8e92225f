"""Fault rules: *when* a fault fires and *what* it does (pure data, no behaviour).

A :class:`FaultRule` pairs a :class:`When` (which requests, how often) with an
:class:`Action` (what the device does wrong).  Rules come from a profile
(``[[faults]]``), the command line (``--fault SPEC``, see :mod:`emulator.faults.spec`)
or the MQTT control plane, and are run by :class:`emulator.faults.engine.FaultEngine`.

Each action works at one :class:`Stage` of the request's path through the emulator
(ARCHITECTURE.md): before the responder, after it, after encryption, or on the socket.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from emulator.errors import EmulatorError
from emulator.responder.vendor_defined.tdisp import TdispFaultKind


class FaultSpecError(EmulatorError):
    """A fault rule (spec string, profile entry or MQTT command) is invalid.

    ``key`` names the offending key (``"nth"``, ``"do"``...), or is empty when the
    problem is the text as a whole.
    """

    def __init__(self, key: str, problem: str, source: str = "") -> None:
        self.key = key
        self.problem = problem
        self.source = source
        where = f"fault {source!r}: " if source else "fault: "
        super().__init__(f"{where}{key}: {problem}" if key else f"{where}{problem}")


class Stage(Enum):
    """Where on the request's path an action works."""

    REQUEST = "request"  # before the responder sees the request
    RESPONSE = "response"  # after the responder, before encryption
    RECORD = "record"  # after encryption (secured messages only)
    SOCKET = "socket"  # what the server does with the frame(s)


class ActionKind(Enum):
    """What a fault does (the ``do=`` name)."""

    ERROR = "error"
    NOT_READY = "not_ready"
    DELAY = "delay"
    DROP = "drop"
    CLOSE = "close"
    PARTIAL = "partial"
    DUPLICATE = "duplicate"
    FLIP = "flip"
    SET = "set"
    TRUNCATE = "truncate"
    EXTEND = "extend"
    CODE = "code"
    VERSION = "version"
    LENGTH = "length"
    LIE = "lie"
    TAMPER = "tamper"
    RECORD = "record"
    #: hostile device: seeded structure-aware lies (emulator.faults.hostile)
    MUTATE = "mutate"
    #: a TDISP device that misbehaves (emulator.responder.vendor_defined.tdisp)
    TDISP = "tdisp"


class LieKind(Enum):
    """Ways the device lies: well-formed answers with wrong content."""

    #: a bit of the signature flipped (the signature does not verify)
    BAD_SIGNATURE = "bad_signature"
    #: a valid signature, but by a key that is not the certificate's
    OTHER_KEY = "other_key"
    #: DIGESTS does not match the certificate chain that GET_CERTIFICATE returns
    CHAIN_DIGEST_MISMATCH = "chain_digest_mismatch"
    #: the chain's certificates are expired (signatures by the device key stay valid)
    EXPIRED_CHAIN = "expired_chain"
    #: the chain ends in a root the requester does not trust (device key unchanged)
    UNTRUSTED_CHAIN = "untrusted_chain"
    #: a measurement value differs from the device's real one (signed consistently)
    WRONG_MEASUREMENT = "wrong_measurement"
    #: the responder's nonce / random data repeats the previous exchange's
    REUSED_NONCE = "reused_nonce"


class RecordFault(Enum):
    """Secured-message (DSP0277) record faults."""

    BAD_MAC = "bad_mac"  # a bit of the MAC (AEAD tag) flipped
    BAD_SEQ = "bad_seq"  # encrypted with the next sequence number
    BAD_SESSION_ID = "bad_session_id"  # the record's SessionID is not the session's


class TamperSide(Enum):
    """Which message a man-in-the-middle alters."""

    REQUEST = "request"  # what the responder receives (its transcript diverges)
    RESPONSE = "response"  # what the requester receives, after signing


#: lie kinds that the engine carries out itself (no hook in the family modules needed)
ENGINE_LIES = frozenset(
    {LieKind.BAD_SIGNATURE, LieKind.CHAIN_DIGEST_MISMATCH, LieKind.REUSED_NONCE}
)


@dataclass(frozen=True, slots=True)
class When:
    """Which exchanges a rule matches and, among them, which ones it fires on.

    Filters (all must hold): request ``codes`` (empty: any), ``session``
    ("any" / "in" / "out"), ``connections`` and ``versions`` (empty: any), ``tdisp``
    (the TDISP message types a VENDOR_DEFINED_REQUEST must carry; empty: no filter).  Each
    matching exchange increments the rule's count k (1, 2, ...); the rule fires when
    every given trigger holds: ``nth`` (k == nth), ``every`` (k % every == 0),
    ``after`` (k > after), ``prob`` (seeded draw < prob), and it has fired fewer than
    ``times`` times.
    """

    codes: frozenset[int] = frozenset()
    session: str = "any"
    connections: frozenset[int] = frozenset()
    versions: frozenset[int] = frozenset()
    #: TDISP message types (VENDOR_DEFINED_REQUEST carrying TDISP; empty: any request)
    tdisp: frozenset[int] = frozenset()
    nth: int | None = None
    every: int | None = None
    after: int | None = None
    prob: float | None = None
    times: int | None = None


@dataclass(frozen=True, slots=True)
class Action:
    """What a rule does; only the fields of its ``kind`` are meaningful.

    Byte offsets may be negative (counted from the end of the message).
    """

    kind: ActionKind
    #: error: ErrorCode, Param2 error data, extended error data
    error_code: int = 0
    data: int = 0
    ext: bytes = b""
    #: not_ready: RDTExponent, RDTM, token (None: the connection's next token), and how
    #: many RESPOND_IF_READY requests are answered ResponseNotReady again
    rdt: int = 1
    rdtm: int = 2
    token: int | None = None
    repeat: int = 0
    #: delay: seconds, or a multiple of the device's CT (2^CTExponent us) when ct_factor
    seconds: float = 0.0
    ct_factor: float | None = None
    #: close: send the response first, then close
    close_after: bool = False
    #: partial: bytes of the frame sent (header included); truncate/extend: byte count
    count: int = 0
    #: duplicate: how many times the response is sent
    copies: int = 2
    #: flip/set/tamper: byte offsets; flip/tamper XOR mask; set/extend byte value
    offsets: tuple[int, ...] = ()
    mask: int = 0x01
    value: int = 0
    #: code / version: the new byte
    new_byte: int = 0
    #: length: delta added to the length field, or its new value (length_set)
    length_delta: int = 0
    length_set: int | None = None
    lie: LieKind | None = None
    tamper: TamperSide = TamperSide.REQUEST
    record: RecordFault | None = None
    #: tdisp: what the DSM does wrong, and the TDISP_ERROR code of refuse / refuse_lock
    tdisp: TdispFaultKind | None = None
    tdisp_code: int = 0x0104

    @property
    def stage(self) -> Stage:
        k = self.kind
        if k in (ActionKind.ERROR, ActionKind.NOT_READY, ActionKind.TDISP):
            return Stage.REQUEST
        if k in (
            ActionKind.DELAY,
            ActionKind.DROP,
            ActionKind.CLOSE,
            ActionKind.PARTIAL,
            ActionKind.DUPLICATE,
        ):
            return Stage.SOCKET
        if k is ActionKind.RECORD:
            return Stage.RECORD
        if k is ActionKind.TAMPER:
            return Stage.REQUEST if self.tamper is TamperSide.REQUEST else Stage.RESPONSE
        if k is ActionKind.LIE:
            if self.lie in (LieKind.BAD_SIGNATURE, LieKind.CHAIN_DIGEST_MISMATCH):
                return Stage.RESPONSE
            return Stage.REQUEST  # set up before the responder runs (hooks, randomness)
        return Stage.RESPONSE


@dataclass(slots=True)
class FaultRule:
    """One rule: identity, when, what, and its run-time counters."""

    id: str
    when: When
    action: Action
    #: canonical spec text (``on=...,do=...``), for listings and logs
    spec: str = ""
    #: the action part of it (``error:Busy``), for the events
    action_text: str = ""
    #: seed of the ``prob`` draws (None: the engine's seed)
    seed: int | None = None
    #: matching exchanges seen, and times fired
    count: int = 0
    fired: int = 0
    #: where the rule came from: "profile", "cli", "mqtt", "api"
    origin: str = "api"
    extra: dict[str, object] = field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.id}: {self.spec}" if self.spec else self.id
