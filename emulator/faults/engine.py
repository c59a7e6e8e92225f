"""The fault engine: decides which rules fire on an exchange and applies them (sans-I/O).

One :class:`FaultEngine` per device (shared by its connections, so a rule added at
run time applies everywhere).  :class:`~emulator.connection.SpdmConnection` asks it
for a :class:`FaultExchange` per request and calls its stages in order::

    fx = engine.begin(responder, request, connection=n, session_id=sid)   # None: no fault
    request, response = fx.on_request(request)     # response set: the responder is skipped
    outcome = responder.respond(request, sid, fx.context)   # lies, replayed rng, not-ready
    response = fx.on_response(outcome.response, outcome.request)   # before encryption
    record = fx.on_record(record)                  # after encryption (secured only)
    fx.on_reply(reply)                             # delay / drop / close / partial / copies

The responder is never changed from here: what a fault wants it to see differently in one
exchange (a lying device view, recorded or replayed random bytes, a ResponseNotReady) goes
in the exchange's :class:`~emulator.responder.FaultContext`.

Determinism: ``prob`` draws come from a SHA-256 stream per rule keyed by the rule's
seed (or the engine's) and the rule id, and happen only for exchanges that match the
rule's filters, so the same seed and the same requests give the same faults and the
same bytes.  Nothing here reads a clock or touches a socket.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from emulator.codec.constants import RequestCode, code_name
from emulator.codec.messages import build_error
from emulator.codec.tdisp import tdisp_in_vendor
from emulator.device.random import RandomSource, SeededRandom
from emulator.faults import hostile, mutate
from emulator.faults.lies import VIEW_LIES, DeviceView, LieMaterial
from emulator.faults.model import (
    ActionKind,
    FaultRule,
    FaultSpecError,
    LieKind,
    RecordFault,
    Stage,
)
from emulator.faults.spec import parse_fault_spec, rule_from_mapping
from emulator.responder import Deferral, FaultContext
from emulator.responder.vendor_defined.tdisp import TdispFault

if TYPE_CHECKING:
    from emulator.events import Reply

log = logging.getLogger("emulator.faults")

#: ``listener(what, detail)``: "added" / "removed" / "cleared" rule changes
RuleListener = Callable[[str, object], None]


class _HasVersion(Protocol):
    version: int


@dataclass(slots=True)
class ActiveLies:
    """Lies wanted in the current exchange (kind -> rule id) and those told (the device
    view marks what was read through it)."""

    wanted: dict[LieKind, str] = field(default_factory=dict)
    told: set[LieKind] = field(default_factory=set)


class FaultEngine:
    """The rules of one device and their counters."""

    def __init__(self, rules: Iterable[FaultRule] = (), *, seed: int = 0) -> None:
        self.seed = seed
        self._rules: list[FaultRule] = []
        self._rngs: dict[str, SeededRandom] = {}
        self._next_id = 1
        #: request code -> random bytes the responder drew in its last such exchange
        self._random_memory: dict[int, bytes] = {}
        #: substitute keys and chains for the identity lies (made once, reused)
        self.material = LieMaterial(seed)
        #: faults applied so far (all rules)
        self.applied_total = 0
        self.listeners: list[RuleListener] = []
        for rule in rules:
            self.add(rule)

    # ---- rules -----------------------------------------------------------------------

    @property
    def rules(self) -> list[FaultRule]:
        return list(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    def add(self, rule: FaultRule | str | Mapping[str, Any], origin: str = "api") -> FaultRule:
        """Add a rule, a SPEC string or a mapping of SPEC keys; returns the rule.

        A rule without an id gets ``f<N>``; FaultSpecError for a bad spec or a dup id.
        """
        if isinstance(rule, str):
            rule = parse_fault_spec(rule, origin=origin)
        elif not isinstance(rule, FaultRule):
            rule = rule_from_mapping(rule, origin=origin)
        if not rule.id:
            while any(r.id == f"f{self._next_id}" for r in self._rules):
                self._next_id += 1
            rule.id = f"f{self._next_id}"
            self._next_id += 1
        elif any(r.id == rule.id for r in self._rules):
            raise FaultSpecError("id", f"a rule with id {rule.id!r} already exists")
        rule.count = rule.fired = 0
        seed = rule.seed if rule.seed is not None else self.seed
        self._rngs[rule.id] = SeededRandom(seed, f"fault/{rule.id}")
        self._rules.append(rule)
        log.info("fault rule %s added (%s)", rule.describe(), rule.origin)
        self._notify("added", rule)
        return rule

    def remove(self, rule_id: str) -> FaultRule | None:
        for rule in self._rules:
            if rule.id == rule_id:
                self._rules.remove(rule)
                self._rngs.pop(rule_id, None)
                log.info("fault rule %s removed", rule.describe())
                self._notify("removed", rule)
                return rule
        return None

    def clear(self) -> int:
        """Remove every rule; returns how many there were."""
        n = len(self._rules)
        self._rules.clear()
        self._rngs.clear()
        self._random_memory.clear()
        if n:
            log.info("fault rules cleared (%d)", n)
        self._notify("cleared", n)
        return n

    def reseed(self, seed: int) -> None:
        """Use ``seed`` for every rule without a seed of its own (restarts their draws)."""
        self.seed = seed
        self.material = LieMaterial(seed)
        for rule in self._rules:
            rule_seed = rule.seed if rule.seed is not None else seed
            self._rngs[rule.id] = SeededRandom(rule_seed, f"fault/{rule.id}")

    def _notify(self, what: str, detail: object) -> None:
        for cb in list(self.listeners):
            try:
                cb(what, detail)
            except Exception:  # a listener must never break the engine
                log.exception("fault listener failed")

    def _draw(self, rule: FaultRule) -> float:
        rng = self._rngs[rule.id]
        return int.from_bytes(rng(8), "big") / float(1 << 64)

    # ---- exchanges -------------------------------------------------------------------

    def begin(
        self,
        responder: _HasVersion,
        request: bytes,
        *,
        connection: int = 0,
        session_id: int | None = None,
    ) -> FaultExchange | None:
        """Match the rules against one request; None when nothing is to be done."""
        code = request[1] if len(request) > 1 else -1
        if not self._rules:
            return None
        version = responder.version or (request[0] if request else 0)
        fired: list[FaultRule] = []
        remember = False
        tdisp_type: int | None = None
        tdisp_parsed = False
        for rule in list(self._rules):
            w = rule.when
            if w.codes and code not in w.codes:
                continue
            if w.tdisp:
                if not tdisp_parsed:
                    inner = tdisp_in_vendor(request)
                    tdisp_type = inner[1] if inner is not None and len(inner) > 1 else None
                    tdisp_parsed = True
                if tdisp_type not in w.tdisp:
                    continue
            if w.session == "in" and session_id is None:
                continue
            if w.session == "out" and session_id is not None:
                continue
            if w.connections and connection not in w.connections:
                continue
            if w.versions and version not in w.versions:
                continue
            if rule.action.lie is LieKind.REUSED_NONCE:
                remember = True
            rule.count += 1
            if w.times is not None and rule.fired >= w.times:
                continue
            k = rule.count
            if w.nth is not None and k != w.nth:
                continue
            if w.every is not None and k % w.every:
                continue
            if w.after is not None and k <= w.after:
                continue
            if w.prob is not None and self._draw(rule) >= w.prob:
                continue
            rule.fired += 1
            fired.append(rule)
        if not fired and not remember:
            return None
        return FaultExchange(self, responder, request, connection, session_id, fired, remember)


class _ReplayRandom:
    """Wraps the responder's random source: records what it draws, or replays old bytes."""

    def __init__(self, inner: RandomSource, replay: bytes | None) -> None:
        self.inner = inner
        self.replay = replay
        self.pos = 0
        self.drawn = bytearray()
        self.replayed = 0

    def __call__(self, n: int) -> bytes:
        if self.replay is not None and self.pos + n <= len(self.replay):
            out = self.replay[self.pos : self.pos + n]
            self.pos += n
            self.replayed += n
        else:
            out = self.inner(n)
        self.drawn += out
        return out


class FaultExchange:
    """The faults firing on one request, applied stage by stage."""

    def __init__(
        self,
        engine: FaultEngine,
        responder: Any,
        request: bytes,
        connection: int,
        session_id: int | None,
        fired: list[FaultRule],
        remember_random: bool,
    ) -> None:
        self.engine = engine
        self.responder = responder
        self.request = request
        self.connection = connection
        self.session_id = session_id
        self.fired = fired
        self.code = request[1] if len(request) > 1 else -1
        #: descriptions of the faults applied, for the ExchangeEvent
        self.applied: list[str] = []
        self._remember = remember_random
        self._random: _ReplayRandom | None = None
        self._lies: ActiveLies | None = None
        self._lie_rules: dict[LieKind, FaultRule] = {}
        #: the ResponseNotReady rule and where its entry goes in ``applied``
        self._deferred: tuple[FaultRule, int] | None = None
        #: what the responder sees differently in this exchange (lies, rng, not-ready)
        self.context: FaultContext | None = None
        #: TDISP faults handed to the responder, and their rules
        self._tdisp: list[tuple[FaultRule, TdispFault]] = []

    def _rules(self, stage: Stage) -> list[FaultRule]:
        return [r for r in self.fired if r.action.stage is stage]

    def _applied(self, rule: FaultRule, detail: str = "") -> None:
        text = f"{rule.id}: {rule.action_text}"
        if detail:
            text += f" ({detail})"
        self.applied.append(text)
        self.engine.applied_total += 1
        log.warning(
            "conn %d: fault %s on %s%s",
            self.connection,
            text,
            code_name(self.code) if self.code >= 0 else "a short request",
            f" in session 0x{self.session_id:08X}" if self.session_id is not None else "",
        )

    def _skipped(self, rule: FaultRule, reason: str) -> None:
        log.warning(
            "conn %d: fault %s not applied to %s: %s",
            self.connection,
            rule.describe(),
            code_name(self.code) if self.code >= 0 else "a short request",
            reason,
        )

    # ---- stage 1: before the responder ----------------------------------------------

    def on_request(self, request: bytes) -> tuple[bytes, bytes | None]:
        """Returns the request the responder sees, and a response when it must be skipped."""
        r = self.responder
        response: bytes | None = None
        defer: Deferral | None = None
        replay: bytes | None = None
        for rule in self._rules(Stage.REQUEST):
            a = rule.action
            if a.kind in (ActionKind.ERROR, ActionKind.NOT_READY):
                if response is not None or defer is not None:
                    self._skipped(rule, "an earlier fault already answered this request")
                    continue
                if a.kind is ActionKind.ERROR:
                    version = 0x10 if self.code == RequestCode.GET_VERSION else (r.version or 0x10)
                    response = build_error(version, a.error_code, a.data, a.ext)
                    self._applied(rule)
                elif self.code == RequestCode.RESPOND_IF_READY or len(request) < 4:
                    self._skipped(rule, "ResponseNotReady needs an ordinary request")
                else:  # the responder keeps the request (its token is known after)
                    defer = Deferral(a.rdt, a.rdtm, a.token, a.repeat)
                    self._deferred = (rule, len(self.applied))
            elif a.kind is ActionKind.TAMPER:
                try:
                    offsets = a.offsets or (mutate.nonce_offset_request(request),)
                    request = mutate.flip(request, offsets, a.mask)
                except mutate.NotApplicable as exc:
                    self._skipped(rule, str(exc))
                    continue
                self._applied(rule, f"request byte {offsets[0]} ^ 0x{a.mask:02X}")
            elif a.kind is ActionKind.LIE and a.lie is LieKind.REUSED_NONCE:
                previous = self.engine._random_memory.get(self.code)
                if previous is None:
                    self._skipped(rule, "no earlier exchange of this request to reuse")
                else:
                    replay = previous
                    self._lie_rules[LieKind.REUSED_NONCE] = rule
            elif a.kind is ActionKind.LIE and a.lie is not None:
                if self._lies is None:
                    self._lies = ActiveLies()
                self._lies.wanted[a.lie] = rule.id
                self._lie_rules[a.lie] = rule
            elif a.kind is ActionKind.TDISP and a.tdisp is not None:
                if tdisp_in_vendor(request) is None:
                    self._skipped(rule, "the request carries no TDISP message")
                else:
                    self._tdisp.append((rule, TdispFault(a.tdisp, a.tdisp_code)))
        self.request = request
        if response is not None:
            return request, response
        if defer is not None:
            self.context = FaultContext(defer=defer)
            return request, None
        device: Any = None
        if self._lies is not None:
            view_lies = set(self._lies.wanted) & VIEW_LIES
            if view_lies:  # this exchange sees a lying device
                device = DeviceView(r.device, view_lies, self.engine.material, self._lies.told)
        if self._remember or replay is not None:
            self._random = _ReplayRandom(r.rng, replay)
        tdisp = tuple(f for _rule, f in self._tdisp)
        if device is not None or self._random is not None or tdisp:
            self.context = FaultContext(device=device, rng=self._random, tdisp=tdisp)
        return request, None

    # ---- stage 2: after the responder, before encryption ---------------------------

    def _finish_responder(self, response: bytes) -> None:
        """Account for what the responder did with the fault context."""
        if self._deferred is not None:
            deferring, at = self._deferred
            self._deferred = None
            text = f"{deferring.id}: {deferring.action_text} (token 0x{response[6]:02X})"
            self.applied.insert(at, text)
            self.engine.applied_total += 1
            log.warning("conn %d: fault %s on %s", self.connection, text, code_name(self.code))
        rnd = self._random
        if rnd is not None:
            rule = self._lie_rules.get(LieKind.REUSED_NONCE)
            if rule is not None:
                if rnd.replayed:
                    self._applied(rule, f"{rnd.replayed} random bytes replayed")
                else:
                    self._skipped(rule, "the responder drew no random bytes")
            if rnd.drawn and self.code >= 0:
                self.engine._random_memory[self.code] = bytes(rnd.drawn)
            self._random = None
        for rule, fault in self._tdisp:
            if fault.applied is not None:
                self._applied(rule, fault.applied)
            else:
                self._skipped(rule, f"nothing in this TDISP request can carry {rule.action_text}")
        self._tdisp = []
        if self._lies is not None:
            for kind, _rule_id in self._lies.wanted.items():
                rule = self._lie_rules[kind]
                if kind in self._lies.told:
                    self._applied(rule)
                else:
                    self._skipped(rule, f"nothing in this exchange can tell lie:{kind.value}")
            self._lies = None

    def on_response(self, response: bytes, request: bytes | None = None) -> bytes:
        """Corrupt the response (before encryption); returns what the requester gets.
        ``request``: the request the response answers (the deferred one when
        RESPOND_IF_READY released it)."""
        self._finish_responder(response)
        if request is not None:
            self.request = request
        r = self.responder
        for rule in self._rules(Stage.RESPONSE):
            a = rule.action
            try:
                if a.kind is ActionKind.FLIP:
                    response = mutate.flip(response, a.offsets, a.mask)
                    detail = f"byte {'|'.join(map(str, a.offsets))} ^ 0x{a.mask:02X}"
                elif a.kind is ActionKind.SET:
                    response = mutate.set_bytes(response, a.offsets, a.value)
                    detail = ""
                elif a.kind is ActionKind.TRUNCATE:
                    response = mutate.truncate(response, a.count)
                    detail = f"{len(response)} bytes left"
                elif a.kind is ActionKind.EXTEND:
                    response = mutate.extend(response, a.count, a.value)
                    detail = ""
                elif a.kind is ActionKind.CODE:
                    response = mutate.set_bytes(response, (1,), a.new_byte)
                    detail = ""
                elif a.kind is ActionKind.VERSION:
                    response = mutate.set_bytes(response, (0,), a.new_byte)
                    detail = ""
                elif a.kind is ActionKind.LENGTH:
                    field = mutate.length_field(response, self.request, r)
                    response = mutate.change_length(response, field, a.length_delta, a.length_set)
                    detail = field[2]
                elif a.kind is ActionKind.TAMPER:
                    offsets = a.offsets or (
                        mutate.nonce_offset_response(response, self.request, r),
                    )
                    response = mutate.flip(response, offsets, a.mask)
                    detail = f"response byte {offsets[0]} ^ 0x{a.mask:02X} after signing"
                elif a.lie is LieKind.BAD_SIGNATURE:
                    start, size = mutate.signature_span(response, self.request, r)
                    response = mutate.flip(response, (start + size // 2,), 0x01)
                    detail = f"signature byte {start + size // 2}"
                elif a.kind is ActionKind.MUTATE:
                    seed = rule.seed if rule.seed is not None else self.engine.seed
                    response, m = hostile.mutate_exchange(
                        response, self.request, r, seed=seed, index=rule.fired
                    )
                    detail = m.describe()
                elif a.lie is LieKind.CHAIN_DIGEST_MISMATCH:
                    start, _size = mutate.digest_span(response, r)
                    response = mutate.flip(response, (start,), 0x01)
                    detail = "slot digest altered"
                else:  # pragma: no cover - every response-stage action is listed above
                    raise mutate.NotApplicable(f"unhandled action {a.kind.value}")
            except mutate.NotApplicable as exc:
                self._skipped(rule, str(exc))
                continue
            self._applied(rule, detail)
        return response

    # ---- stage 3: after encryption ---------------------------------------------------

    @property
    def skip_sequence_number(self) -> bool:
        """A ``record:bad_seq`` fault fired: encrypt this response with the next number."""
        return any(r.action.record is RecordFault.BAD_SEQ for r in self._rules(Stage.RECORD))

    def on_record(self, record: bytes, *, sequence_skipped: bool = False) -> bytes:
        """Corrupt a DSP0277 secured record (SessionID @0, MAC = the last 16 bytes)."""
        for rule in self._rules(Stage.RECORD):
            rec = rule.action.record
            try:
                if rec is RecordFault.BAD_MAC:
                    record = mutate.flip(record, (-1,), 0x01)
                    detail = "last MAC byte ^ 0x01"
                elif rec is RecordFault.BAD_SESSION_ID:
                    record = mutate.flip(record, (0, 2), 0xFF)
                    detail = "SessionID altered"
                elif rec is RecordFault.BAD_SEQ:
                    if not sequence_skipped:
                        raise mutate.NotApplicable("the session layer did not skip a number")
                    detail = "encrypted with the next sequence number"
                else:  # pragma: no cover
                    raise mutate.NotApplicable(f"unhandled record fault {rec}")
            except mutate.NotApplicable as exc:
                self._skipped(rule, str(exc))
                continue
            self._applied(rule, detail)
        return record

    # ---- stage 4: the socket ----------------------------------------------------------

    def on_reply(self, reply: Reply) -> Reply:
        """Socket actions: delay, drop, close, partial frame, several copies."""
        for rule in self._rules(Stage.SOCKET):
            a = rule.action
            detail = ""
            if a.kind is ActionKind.DELAY:
                if a.ct_factor is not None:
                    ct = (1 << int(self.responder.device.ct_exponent)) / 1e6
                    seconds = ct * a.ct_factor
                else:
                    seconds = a.seconds
                reply.delay += seconds
                detail = f"{seconds:g} s"
            elif a.kind is ActionKind.DROP:
                reply.payloads = []
            elif a.kind is ActionKind.CLOSE:
                if not a.close_after:
                    reply.payloads = []
                reply.close = True
            elif a.kind is ActionKind.PARTIAL:
                reply.partial = a.count
            elif a.kind is ActionKind.DUPLICATE:
                if not reply.payloads:
                    self._skipped(rule, "no response to send twice")
                    continue
                reply.payloads = [p for p in reply.payloads for _ in range(a.copies)]
            self._applied(rule, detail)
        return reply


def attach(emulator: Any) -> FaultEngine:
    """The fault engine of an :class:`emulator.app.Emulator` (the one every connection
    of its device consults); used by the pytest plugin."""
    engine: FaultEngine = emulator.faults
    return engine


__all__ = ["FaultEngine", "FaultExchange", "attach"]
