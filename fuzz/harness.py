"""What every fuzz target shares: input splitting, deep-state prefixes, and the contract.

The contract (checked after every exchange, by code independent of the responder's):

* nothing escapes ``Responder.handle`` (it never raises; any exception is a bug), and
  decoders raise only the project's documented error types (:mod:`emulator.errors`);
* every response is a well-formed SPDM message: at least the 4-byte header, a version
  byte the device offers (or 1.0 before negotiation), a response code (bit 7 clear), an
  ERROR code from DSP0274's table, and for anything but ERROR the response code that
  answers the request (request code with bit 7 clear);
* where the request is bad in a way the generic rules decide (short header, unknown code,
  order, version byte), the answer is ERROR with the right code (DSP0274 "Generic SPDM
  message format", "Ordering of messages", libspdm ``libspdm_rsp_receive_send.c``);
* an ERROR leaves the connection state and the VCA transcript as they were, and the VCA
  transcript always equals the concatenation this harness computed itself.

Inputs of the responder target are a *sequence* of requests: the first byte picks a
prefix (a real exchange recorded from the project's requester: VCA, and deeper flows as
the request families provide them), the rest is split into messages by
:func:`split_messages`.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import importlib
import logging
import os
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emulator.codec.constants import ErrorCode, RequestCode, ResponseCode
from emulator.codec.messages import CapabilitiesMsg
from emulator.device.model import Device
from emulator.device.random import SeededRandom
from emulator.profiles import load_profile
from emulator.requester import Requester, RequesterConfig
from emulator.responder import DEFAULT_TABLE, ConnectionState, FaultContext, Responder
from emulator.responder.core import Outcome
from emulator.transport.base import TransportMessage
from fuzz import wire
from fuzz.snapshot import Copier, compile_copier, listen_to

if TYPE_CHECKING:
    from emulator.connection import SpdmConnection

ROOT = Path(__file__).resolve().parent.parent
#: seed of the fuzz device (nonces, DHE keys): prefixes replay byte for byte
FUZZ_SEED = 0x5EED
#: most messages taken from one input (keeps one execution bounded)
MAX_MESSAGES = 48
#: bit 15 of a message header: send the message inside the prefix's session
IN_SESSION_FLAG = 0x8000
_LENGTH_MASK = 0x7FFF
ERROR = int(ResponseCode.ERROR)
_ERROR_CODES = frozenset(int(c) for c in ErrorCode)
#: ERROR codes after which the responder may have reset the connection on purpose
_RESETTING_ERRORS = frozenset({int(ErrorCode.RequestResynch)})
#: ERROR(LargeResponse) stands in for a response kept for CHUNK_GET (DSP0274 large
#: messages): the request succeeded, so state and message A may have moved
_DEFERRING_ERRORS = frozenset({int(ErrorCode.LargeResponse)})
#: DSP0274 1.2+: no response over the requester's MaxSPDMmsgSize (FUZZ_STRICT_SIZE=0: off)
STRICT_SIZE = os.environ.get("FUZZ_STRICT_SIZE", "1") != "0"


class ContractViolation(AssertionError):
    """The code under test broke the fuzzing contract (a finding)."""


class _FormattingSink(logging.Handler):
    """Formats every record (a logging call that cannot format is a finding) and drops it."""

    def emit(self, record: logging.LogRecord) -> None:
        record.getMessage()


#: attributes of a LogRecord (``extra`` may not overwrite them: Logger.makeRecord)
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


def _format_and_drop(
    self: logging.Logger,
    level: int,
    msg: object,
    args: Any,
    exc_info: Any = None,
    extra: Mapping[str, object] | None = None,
    stack_info: bool = False,
    stacklevel: int = 1,
) -> None:
    """``Logger._log`` for a fuzz target's process: what a record would raise, raised (an
    ``extra`` key a record has: Logger.makeRecord; the message formatting:
    LogRecord.getMessage, a single mapping argument included), and nothing else done (no
    record, no handler: the fuzzer's output stays readable, and no execution pays for
    log records nobody reads)."""
    if extra is not None:
        for key in extra:
            if key in _RECORD_FIELDS:
                raise KeyError(f"Attempt to overwrite {key!r} in LogRecord")
    if args and len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
        args = args[0]
    text = str(msg)
    if args:
        text % args


def log_to_sink(level: int = logging.INFO) -> None:
    """Run the emulator's log calls as ``serve --log-level info`` would, without output:
    every call at ``level`` or above formats its message (a call that cannot format is a
    finding) and the result is dropped, with no log record made (``Logger._log``
    replaced, in the fuzz target's process only)."""
    root = logging.getLogger()
    root.handlers[:] = [_FormattingSink()]
    root.setLevel(level)
    logging.Logger._log = _format_and_drop  # type: ignore[method-assign,assignment]


# ---- input format ------------------------------------------------------------------------


def split_messages(data: bytes, limit: int = MAX_MESSAGES) -> list[tuple[bytes, bool]]:
    """Split ``data`` into (message, in_session) pairs.

    Each message is a little-endian u16 header (bit 15: send inside the session, bits
    14..0: length) followed by that many bytes (fewer if the input ends first).
    """
    out: list[tuple[bytes, bool]] = []
    pos = 0
    while pos < len(data) and len(out) < limit:
        if pos + 2 > len(data):
            out.append((data[pos:], False))
            break
        header = data[pos] | (data[pos + 1] << 8)
        pos += 2
        length = header & _LENGTH_MASK
        out.append((data[pos : pos + length], bool(header & IN_SESSION_FLAG)))
        pos += length
    return out


def join_messages(messages: Iterable[bytes | tuple[bytes, bool]]) -> bytes:
    """The inverse of :func:`split_messages` (for the corpus generator and tests)."""
    out = bytearray()
    for item in messages:
        msg, in_session = item if isinstance(item, tuple) else (item, False)
        if len(msg) > _LENGTH_MASK:
            raise ValueError(f"message of {len(msg)} bytes is over {_LENGTH_MASK}")
        out += (len(msg) | (IN_SESSION_FLAG if in_session else 0)).to_bytes(2, "little")
        out += msg
    return bytes(out)


# ---- the fuzz device ---------------------------------------------------------------------


@functools.cache
def fuzz_device() -> Device:
    """The default profile (every implemented capability) with a fixed seed."""
    profile = load_profile("default")
    profile.determinism.seed = FUZZ_SEED
    device = Device.from_profile(profile)
    _saved_parts(device)  # as made: what put_back_device_state puts back
    return device


class FakeClock:
    """A deterministic monotonic clock: one millisecond per reading."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


def new_responder(device: Device | None = None) -> Responder:
    """A responder whose randomness and clock are deterministic."""
    dev = device or fuzz_device()
    return Responder(dev, rng=SeededRandom(FUZZ_SEED, "fuzz-conn"), clock=FakeClock())


# ---- prefixes: real exchanges recorded from the project's requester -------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One recorded request: the bytes, and whether it was sent inside the session."""

    request: bytes
    in_session: bool = False


@dataclass(frozen=True, slots=True)
class Prefix:
    """A recorded exchange that brings a fresh responder to a deep state."""

    name: str
    version: int
    steps: tuple[Step, ...]
    session_id: int | None = None
    #: session stages: DOE payloads to replay into an SpdmConnection, and the keys
    session: SessionPrefix | None = None


class RecordingChannel:
    """A loopback channel that records every request it forwards."""

    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.steps: list[Step] = []

    async def exchange(self, message: bytes, secured: bool = False) -> TransportMessage:
        if secured:
            raise ContractViolation("the recording channel carries plain messages only")
        self.steps.append(Step(bytes(message)))
        return TransportMessage(self.responder.handle(message))


Flow = Callable[[Requester], Awaitable[Any]]

#: Prefix stages, in protocol order.  Positions are stable (a saved input keeps its
#: meaning when a family lands): input byte 0 = stage index << 2 | version index.
STAGE_NAMES = (
    "none",
    "version",
    "capabilities",
    "vca",
    "digests",
    "certificate",
    "challenge",
    "measurements",
    "session",
    "session_measurements",
)


def _vca_flows() -> dict[str, Flow]:
    return {
        "version": lambda q: q.get_version(),
        "capabilities": lambda q: q.get_capabilities(),
        "vca": lambda q: q.negotiate_algorithms(),
    }


def _optional(module: str) -> Any:
    """A family module, or None while it does not exist yet."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        return None


def _family_flows() -> dict[str, Flow]:
    """Deeper stages, from the request families' requester flows when they exist."""
    flows: dict[str, Flow] = {}
    identity = _optional("emulator.requester.identity")
    if identity is not None:
        for stage, name in (
            ("digests", "get_digests"),
            ("certificate", "get_certificate"),
            ("challenge", "challenge"),
        ):
            fn = getattr(identity, name, None)
            if fn is not None:
                flows[stage] = fn
    measurements = _optional("emulator.requester.measurements")
    if measurements is not None:
        fn = getattr(measurements, "get_all_measurements", None)
        if fn is not None:
            flows["measurements"] = fn
    return flows


@functools.cache
def flows() -> dict[str, Flow]:
    """The requester flow of each available stage."""
    return {**_vca_flows(), **_family_flows()}


async def _record(device: Device, version: int, stage: int) -> tuple[Step, ...]:
    """Requests of every available stage up to ``stage``, stopping at the first failure."""
    responder = new_responder(device)
    channel = RecordingChannel(responder)
    requester = Requester(channel, RequesterConfig(version=version))
    recorded: tuple[Step, ...] = ()
    available = flows()
    for name in STAGE_NAMES[1 : stage + 1]:
        flow = available.get(name)
        if flow is None:
            continue
        try:
            await flow(requester)
        except Exception:
            break
        recorded = tuple(channel.steps)
    return recorded


#: stages that run through the connection glue with an established session
SESSION_STAGES = frozenset({"session", "session_measurements"})


@functools.cache
def prefix_for(stage: int, version: int) -> Prefix:
    """The recorded prefix of one stage at one version (cached).

    A session stage the device or version cannot reach falls back to the deepest
    plain stage.
    """
    name = f"{STAGE_NAMES[stage]}@{version >> 4}.{version & 0xF}"
    if STAGE_NAMES[stage] in SESSION_STAGES:
        session = record_session(version, STAGE_NAMES[stage] == "session_measurements")
        if session is not None:
            return Prefix(name, version, (), session.keys.session_id, session)
        return prefix_for(STAGE_NAMES.index("measurements"), version)
    steps = asyncio.run(_record(fuzz_device(), version, stage)) if stage else ()
    return Prefix(name, version, steps)


def vca_requests(version: int, config: RequesterConfig | None = None) -> list[bytes]:
    """GET_VERSION, GET_CAPABILITIES, NEGOTIATE_ALGORITHMS as the project's requester sends
    them at ``version`` (with a permissive default configuration)."""
    cfg = config or RequesterConfig(version=version)
    requester = Requester(RecordingChannel(new_responder()), cfg)
    requester.neg.version = version
    caps = CapabilitiesMsg(
        version=version,
        code=RequestCode.GET_CAPABILITIES,
        ct_exponent=cfg.ct_exponent,
        flags=cfg.flags if version >= 0x11 else 0,
        data_transfer_size=cfg.data_transfer_size,
        max_spdm_msg_size=cfg.max_spdm_msg_size,
    ).encode()
    return [bytes((0x10, RequestCode.GET_VERSION, 0, 0)), caps, requester.negotiate_request()]


def selector_of(stage: str, version: int) -> int:
    """The first input byte that selects ``stage`` at ``version``."""
    versions = [int(v) for v in fuzz_device().versions]
    return (STAGE_NAMES.index(stage) << 2) | versions.index(version)


@functools.cache
def choose_prefix(selector: int) -> Prefix:
    """The prefix a first input byte selects (every byte value selects one)."""
    versions = [int(v) for v in fuzz_device().versions]
    stage = (selector >> 2) % len(STAGE_NAMES)
    return prefix_for(stage, versions[(selector & 3) % len(versions)])


def prefixes() -> list[Prefix]:
    """Every prefix, recorded and brought to a snapshot template now (call before timing
    starts)."""
    out = [choose_prefix(s) for s in range(4 * len(STAGE_NAMES))]
    for prefix in out:
        template(prefix.session if prefix.session is not None else prefix)
    return out


def settle_heap() -> None:
    """Collect, then move every object alive now (the device, the prefixes, the snapshot
    templates) to the garbage collector's permanent generation: the collections that run
    while fuzzing scan only what an execution allocates (Python's gc.freeze)."""
    gc.collect()
    gc.freeze()


# ---- the contract --------------------------------------------------------------------------


def _violation(what: str, request: bytes, response: bytes | None) -> ContractViolation:
    rsp = response.hex() if response is not None else "-"
    return ContractViolation(f"{what}\n  request  {request.hex()}\n  response {rsp}")


def check_spdm_message(response: object, versions: Collection[int], request: bytes = b"") -> bytes:
    """Check the shape every SPDM response must have; return it as bytes."""
    if not isinstance(response, bytes):
        raise _violation(f"response is {type(response).__name__}, not bytes", request, None)
    if len(response) < 4:
        raise _violation(
            f"{len(response)}-byte response is shorter than a header", request, response
        )
    if response[0] != 0x10 and response[0] not in versions:
        raise _violation(f"response version byte 0x{response[0]:02X}", request, response)
    if response[1] & 0x80:
        raise _violation(f"response code 0x{response[1]:02X} has bit 7 set", request, response)
    if response[1] == ERROR and response[2] not in _ERROR_CODES:
        raise _violation(f"ERROR code 0x{response[2]:02X} is not in DSP0274", request, response)
    return response


def expected_error(
    request: bytes, in_session: bool, state: ConnectionState, version: int
) -> int | None:
    """The ERROR code the generic rules require for this request, or None.

    An independent statement of DSP0274's generic rules (and libspdm's order of checks):
    length, unknown code, GET_VERSION's version byte, order, the negotiated version byte.
    """
    if len(request) < 4:
        return int(ErrorCode.InvalidRequest)
    code = request[1]
    if code not in DEFAULT_TABLE:
        return int(ErrorCode.UnsupportedRequest)
    if code == RequestCode.GET_VERSION:
        if in_session:
            return int(ErrorCode.UnexpectedRequest)
        if request[0] != 0x10:
            return int(ErrorCode.VersionMismatch)
        return None
    if code == RequestCode.GET_CAPABILITIES:
        if in_session or state != ConnectionState.AFTER_VERSION:
            return int(ErrorCode.UnexpectedRequest)
        return None
    if state < ConnectionState.AFTER_CAPABILITIES:
        return int(ErrorCode.UnexpectedRequest)
    if request[0] != version:
        return int(ErrorCode.VersionMismatch)
    return None


def _caps_request_size(version: int) -> int:
    return 20 if version >= 0x12 else 12 if version == 0x11 else 4


@dataclass
class ResponderHarness:
    """A fresh responder brought to a prefix, with the contract checked on every exchange."""

    device: Device = field(default_factory=fuzz_device)
    prefix: Prefix | None = None
    responder: Responder = field(init=False)
    #: the VCA transcript as this harness computes it
    model_a: bytearray = field(init=False, default_factory=bytearray)
    exchanges: int = field(init=False, default=0)
    _handle: Callable[[bytes, int | None], bytes] = field(init=False, repr=False)
    #: the version bytes a response may carry
    versions: frozenset[int] = field(init=False)

    def __post_init__(self) -> None:
        self.versions = frozenset({0x10, *(int(v) for v in self.device.versions)})
        self.responder = new_responder(self.device)
        self._handle = self.responder.handle
        if self.prefix is not None:
            for step in self.prefix.steps:
                self.send(step.request, step.in_session)

    @classmethod
    def around(cls, responder: Responder) -> ResponderHarness:
        """Check every ``responder.handle`` call made by someone else (the connection glue):
        the responder's ``handle`` is replaced by the checking :meth:`exchange`."""
        harness = cls(device=responder.device)
        harness.responder = responder
        harness._handle = responder.handle
        harness.model_a = bytearray(responder.transcripts.a)
        responder.handle = harness.exchange  # type: ignore[method-assign]
        return harness

    @property
    def session_id(self) -> int | None:
        return self.prefix.session_id if self.prefix is not None else None

    def close(self) -> None:
        """End the connection as the server does (``SpdmConnection.close`` resets)."""
        self.responder.reset()

    def send(self, request: bytes, in_session: bool = False) -> bytes:
        """Send one request and check the contract; return the response."""
        return self.exchange(request, self.session_id if in_session else None)

    def exchange(self, request: bytes, session_id: int | None = None) -> bytes:
        """``Responder.handle`` with the contract checked around it."""
        return self.checked(request, session_id, self._handle)

    def checked(
        self, request: bytes, session_id: int | None, call: Callable[[bytes, int | None], bytes]
    ) -> bytes:
        """``call(request, session_id)`` (the responder's answer) with the contract
        checked around it."""
        ctx = self.responder.ctx
        in_session = session_id is not None
        state, version = ctx.state, ctx.version
        if state == ConnectionState.NOT_STARTED and not ctx.transcripts.a:
            self.model_a.clear()  # reset outside handle (e.g. END_SESSION clearing state)
        before_a = bytes(ctx.transcripts.a)
        response = check_spdm_message(call(request, session_id), self.versions, request)
        self.exchanges += 1
        want = expected_error(request, in_session, state, version)
        is_error = response[1] == ERROR
        if want is not None and (not is_error or response[2] != want):
            raise _violation(
                f"expected ERROR {ErrorCode(want).name} in state {state.name}", request, response
            )
        if is_error:
            self._check_error(request, response, state, before_a, in_session)
        else:
            self._check_success(request, response, state)
        return response

    def _check_error(
        self,
        request: bytes,
        response: bytes,
        state: ConnectionState,
        before_a: bytes,
        in_session: bool,
    ) -> None:
        r = self.responder.ctx  # the responder's context, read directly
        if response[2] in _RESETTING_ERRORS or response[2] in _DEFERRING_ERRORS:
            self.model_a = bytearray(r.transcripts.a)
            return
        if r.state != state:
            raise _violation(
                f"ERROR moved the state from {state.name} to {r.state.name}", request, response
            )
        if bytes(r.transcripts.a) != before_a:
            raise _violation("ERROR changed the VCA transcript", request, response)
        get_version = len(request) >= 4 and request[1] == RequestCode.GET_VERSION
        if get_version and not in_session and response[0] != 0x10:
            raise _violation("ERROR to GET_VERSION not in version 1.0", request, response)

    def _check_success(self, request: bytes, response: bytes, state: ConnectionState) -> None:
        r = self.responder.ctx  # the responder's context, read directly
        code = request[1]
        answered = request[2] if code == RequestCode.RESPOND_IF_READY else code
        if response[1] != answered & 0x7F:
            raise _violation(
                f"response code 0x{response[1]:02X} does not answer 0x{answered:02X}",
                request,
                response,
            )
        if code == RequestCode.GET_VERSION:
            if response[0] != 0x10:
                raise _violation("VERSION not in version 1.0", request, response)
            self.model_a = bytearray(request[:4] + response)
            if r.state != ConnectionState.AFTER_VERSION:
                raise _violation(f"VERSION left state {r.state.name}", request, response)
        else:
            if response[0] != r.version:
                raise _violation(
                    f"response version 0x{response[0]:02X}, negotiated 0x{r.version:02X}",
                    request,
                    response,
                )
            if code == RequestCode.GET_CAPABILITIES:
                self.model_a += request[: _caps_request_size(r.version)] + response
                if r.state != ConnectionState.AFTER_CAPABILITIES:
                    raise _violation(f"CAPABILITIES left state {r.state.name}", request, response)
            elif code == RequestCode.NEGOTIATE_ALGORITHMS:
                length = int.from_bytes(request[4:6], "little")
                self.model_a += request[:length] + response
                _check_algorithms(request, response)
                if r.state != ConnectionState.NEGOTIATED:
                    raise _violation(f"ALGORITHMS left state {r.state.name}", request, response)
            elif code in (RequestCode.CHUNK_SEND, RequestCode.CHUNK_GET):
                # large message transfer (1.2+, from AFTER_CAPABILITIES on): the CHUNK_SEND
                # that completes a large request has run it (it may be NEGOTIATE_ALGORITHMS)
                self.model_a = bytearray(r.transcripts.a)
            elif state < ConnectionState.NEGOTIATED:
                raise _violation(
                    f"{response[1]:#04x} answered before negotiation (state {state.name})",
                    request,
                    response,
                )
        if bytes(r.transcripts.a) != bytes(self.model_a):
            raise _violation("VCA transcript differs from the harness's", request, response)
        if STRICT_SIZE and r.peer is not None and r.version >= 0x12:
            limit = r.peer.max_spdm_msg_size
            if limit and len(response) > limit:
                raise _violation(
                    f"{len(response)}-byte response over the requester's MaxSPDMmsgSize {limit} "
                    "(DSP0274: ERROR ResponseTooLarge)",
                    request,
                    response,
                )


def _check_algorithms(request: bytes, response: bytes) -> None:
    """ALGORITHMS: Length is the size, one bit per selection, only offered bits."""
    if len(response) < 36:
        raise _violation("ALGORITHMS shorter than 36 bytes", request, response)
    length = int.from_bytes(response[4:6], "little")
    if length != len(response):
        raise _violation(f"ALGORITHMS Length {length}, size {len(response)}", request, response)
    fields = (
        ("BaseAsymSel", 12, 4, 8),
        ("BaseHashSel", 16, 4, 12),
    )
    for name, rsp_off, size, req_off in fields:
        sel = int.from_bytes(response[rsp_off : rsp_off + size], "little")
        offered = int.from_bytes(request[req_off : req_off + size], "little")
        if sel & (sel - 1) or sel & ~offered:
            raise _violation(
                f"ALGORITHMS {name} 0x{sel:X}: not one offered bit (offered 0x{offered:X})",
                request,
                response,
            )


class RespondCheck:
    """``Responder.respond`` with the contract checked around it: what the connection glue
    calls (:class:`~emulator.connection.SpdmConnection` answers with ``respond``, not
    ``handle``).  An object, not a closure, so that a snapshot's copy checks its own
    responder."""

    def __init__(self, harness: ResponderHarness, respond: Callable[..., Outcome]) -> None:
        self.harness = harness
        self.respond = respond
        self.outcome: Outcome | None = None

    def __call__(
        self, request: bytes, session_id: int | None = None, fault: FaultContext | None = None
    ) -> Outcome:
        self.outcome = None
        self.harness.checked(request, session_id, lambda q, s: self._answer(q, s, fault))
        outcome, self.outcome = self.outcome, None
        assert outcome is not None
        return outcome

    def _answer(self, request: bytes, session_id: int | None, fault: FaultContext | None) -> bytes:
        self.outcome = self.respond(request, session_id, fault)
        return self.outcome.response


def _shared(device: Device) -> dict[int, Any]:
    """Objects a snapshot copy shares with its template (deepcopy memo): the device and
    its listener list (a copied session table listens to the same device), the dispatch
    table, the bindings.  Built once per device; the caller copies it."""
    found = _SHARED.get(id(device))
    if found is not None and found[0] is device:
        return found[1]
    from emulator.transport import get_binding

    shared: list[Any] = [device, device.listeners, DEFAULT_TABLE, get_binding("doe")]
    memo = {id(obj): obj for obj in shared}
    _SHARED[id(device)] = (device, memo)
    return memo


_SHARED: dict[int, tuple[Device, dict[int, Any]]] = {}


#: id(prefix) -> the prefix and a harness brought to it (copied for every input: no
#: prefix replay per input); prefixes are cached for the process, so ids stay theirs
_TEMPLATES: dict[int, tuple[Prefix | SessionPrefix, ResponderHarness | ConnectionHarness]] = {}


def snapshot(prefix: Prefix | SessionPrefix) -> ResponderHarness | ConnectionHarness:
    """A harness in the state ``prefix`` leads to: a copy of one brought there once.

    Replaying a prefix for every input costs its whole exchange each time (KEY_EXCHANGE
    and FINISH for the session stages); a copy of the connection state it leaves is
    the same state (the responder is deterministic: seeded randomness, a fake clock) at
    the cost of copying a few dozen objects.
    """
    template(prefix)
    copied: ResponderHarness | ConnectionHarness = _COPIERS[id(prefix)]()
    return copied


def _memo(
    prefix: Prefix | SessionPrefix, original: ResponderHarness | ConnectionHarness
) -> dict[int, Any]:
    memo = dict(_shared(original.responder.device))
    memo[id(prefix)] = prefix  # immutable: recorded requests, keys
    if isinstance(original, ResponderHarness):
        memo[id(original.prefix)] = original.prefix
    else:
        memo[id(original.keys)] = original.keys
    return memo


#: id(prefix) -> the copier of its template (fuzz.snapshot.compile_copier)
_COPIERS: dict[int, Copier] = {}


def template(prefix: Prefix | SessionPrefix) -> ResponderHarness | ConnectionHarness:
    """The harness :func:`snapshot` copies (made once).  Its session table stops
    listening to the device (a copy listens instead): device events cannot change a
    template, so no input's device-wide changes reach the inputs after it this way, and
    the compiled copier's walk of the template stays right."""
    found = _TEMPLATES.get(id(prefix))
    if found is not None and found[0] is prefix:
        return found[1]
    made: ResponderHarness | ConnectionHarness
    if isinstance(prefix, SessionPrefix):
        made = ConnectionHarness(prefix)
    else:
        made = ResponderHarness(prefix=prefix)
    table = made.responder.ctx.sessions
    if table is not None and table._listeners is not None:
        listen_to[id(table)] = table._listeners
        table.detach()
    _COPIERS[id(prefix)] = compile_copier(made, _memo(prefix, made))
    _TEMPLATES[id(prefix)] = (prefix, made)
    return made


def run_sequence(data: bytes) -> ResponderHarness | ConnectionHarness:
    """The responder target's body: prefix by the first byte, then the messages; then the
    connection ends, and must leave nothing behind on the shared device (what the
    input changed device-wide is put back: :func:`put_back_device_state`)."""
    prefix = choose_prefix(data[0]) if data else None
    device = fuzz_device()
    source: Prefix | SessionPrefix | None = prefix
    if prefix is not None and prefix.session is not None:
        source = prefix.session
    listeners = len(device.listeners)
    harness = snapshot(source) if source is not None else ResponderHarness()
    try:
        for message, in_session in split_messages(data[1:]):
            harness.send(message, in_session)
    finally:
        harness.close()
        put_back_device_state(device)
    check_device_clean(device, listeners)
    return harness


def check_device_clean(device: Device, listeners: int) -> None:
    """A closed connection leaves no listener on the shared device (a per-connection leak
    in a long-running server otherwise)."""
    if len(device.listeners) != listeners:
        raise ContractViolation(
            f"the device has {len(device.listeners)} listeners after the connection closed, "
            f"{listeners} before"
        )


# ---- the shared device: what an input changes on it is put back ---------------------------


def device_parts(device: Device) -> list[Any]:
    """The device-wide state requests change, beyond one connection: the IDE_KM key slots
    (PCIe r6 6.33.3), each TDI's TDISP state (PCIe 6.1 11.2), the CXL IDE_KM keys and the
    CXL TSP target.  (The fuzz device does not advertise the provisioning requests that
    change slots and key pairs; measurements and the MEL change only from the control
    plane.  tests/test_fuzz_device.py checks that nothing else on the device moves.)"""
    parts: list[Any] = [
        p for p in (device.ide_km, device.cxl_ide_km, device.cxl_tsp) if p is not None
    ]
    if device.tdisp is not None:
        parts.extend(device.tdisp.interfaces.values())
    return parts


@dataclass
class _SavedPart:
    """One part's fields as the fuzz device was made: ``values``, compared with the live
    ones (``read``) in one tuple comparison, which takes identical objects as equal
    without calling their ``__eq__``; ``shared``: what copies of them share (a memo to
    start each copy from)."""

    part: Any
    names: tuple[str, ...]
    values: tuple[Any, ...]
    read: Callable[[Any], tuple[Any, ...]]
    shared: dict[int, Any]


#: id(device) -> its parts' saved fields
_SAVED_PARTS: dict[int, tuple[Device, list[_SavedPart]]] = {}


def _saved_parts(device: Device) -> list[_SavedPart]:
    found = _SAVED_PARTS.get(id(device))
    if found is not None and found[0] is device:
        return found[1]
    import dataclasses
    import operator

    from fuzz.snapshot import copy_state

    saved = []
    for part in device_parts(device):
        names = tuple(f.name for f in dataclasses.fields(part))
        shared = _part_memo(device, part, names)
        values = tuple(copy_state(getattr(part, n), dict(shared)) for n in names)
        read = operator.attrgetter(*names) if len(names) > 1 else _one(names[0])
        saved.append(_SavedPart(part, names, values, read, shared))
    _SAVED_PARTS[id(device)] = (device, saved)
    return saved


def _one(name: str) -> Callable[[Any], tuple[Any, ...]]:
    def read(part: Any) -> tuple[Any, ...]:
        return (getattr(part, name),)

    return read


def _part_memo(device: Device, part: Any, names: tuple[str, ...]) -> dict[int, Any]:
    """Objects a part's copies share: the device (a part's callback is a bound method of
    it) and the part's configuration (profile sections: read, never changed)."""
    from pydantic import BaseModel

    memo = dict(_shared(device))
    for name in names:
        value = getattr(part, name)
        if isinstance(value, BaseModel):
            memo[id(value)] = value
    return memo


def put_back_device_state(device: Device) -> int:
    """Put every part of :func:`device_parts` that an input changed back as it was when
    the fuzz device was made (fresh copies: the saved fields stay as they were); the
    number of parts put back.  Without it, an input that programs an IDE key or locks a
    TDI would change the answers to the inputs after it, and a finding would not
    reproduce from its input alone."""
    from fuzz.snapshot import copy_state

    restored = 0
    for saved in _saved_parts(device):
        part, names = saved.part, saved.names
        if saved.read(part) == saved.values:
            continue
        memo = dict(saved.shared)
        for name, value in zip(names, saved.values, strict=True):
            setattr(part, name, copy_state(value, memo))
        restored += 1
    return restored


# ---- sessions: the connection glue (DSP0277 records) around the checked responder ------------


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """One established session as the requester side holds it after the prefix."""

    session_id: int
    aead: int
    mac_only: bool
    req_key: bytes
    req_iv: bytes
    req_seq: int
    rsp_key: bytes
    rsp_iv: bytes
    rsp_seq: int


@dataclass(frozen=True, slots=True)
class SessionPrefix:
    """DOE payloads that establish a session in a fresh connection, and its keys."""

    name: str
    version: int
    payloads: tuple[bytes, ...]
    replies: tuple[tuple[bytes, ...], ...]
    keys: SessionKeys


def new_connection(device: Device | None = None) -> SpdmConnection:
    """A DOE connection whose randomness and clock are deterministic."""
    from emulator.connection import SpdmConnection
    from emulator.transport import get_binding

    return SpdmConnection(
        device or fuzz_device(),
        get_binding("doe"),
        rng=SeededRandom(FUZZ_SEED, "fuzz-conn"),
        clock=FakeClock(),
    )


class RecordingConnectionChannel:
    """A requester channel into an in-process connection that records what crosses it."""

    def __init__(self, connection: SpdmConnection) -> None:
        self.connection = connection
        self.binding = connection.binding
        self.payloads: list[bytes] = []
        self.replies: list[tuple[bytes, ...]] = []

    async def exchange(self, message: bytes, secured: bool = False) -> TransportMessage:
        payload = self.binding.encode(message, secured=secured)
        reply = self.connection.receive(payload)
        self.payloads.append(payload)
        self.replies.append(tuple(reply.payloads))
        if not reply.payloads:
            raise ContractViolation("the responder dropped a message of the recorded flow")
        decoded: TransportMessage = self.binding.decode(reply.payloads[0])
        return decoded


#: the requester's half of the session ID in recorded sessions
RECORDED_REQ_SESSION_ID = 0x5EED


async def _record_session(version: int, measurements: bool) -> SessionPrefix | None:
    identity = _optional("emulator.requester.identity")
    session_mod = _optional("emulator.requester.session")
    if identity is None or session_mod is None or version < 0x11:
        return None
    conn = new_connection()
    channel = RecordingConnectionChannel(conn)
    requester = Requester(channel, RequesterConfig(version=version))
    try:
        await requester.vca()
        chain = (await identity.get_certificate(requester)).chain
        s = await session_mod.open_session(
            requester, peer_chain=chain, binding="doe", req_session_id=RECORDED_REQ_SESSION_ID
        )
        if measurements:
            count = bytes((version, RequestCode.GET_MEASUREMENTS, 0, 0))
            await s.send(count + bytes(8 if version >= 0x13 else 0))
    except Exception:
        return None
    req, rsp = s.keys["req"], s.keys["rsp"]
    keys = SessionKeys(
        s.session_id, s.aead, s.mac_only, req.key, req.iv, req.seq, rsp.key, rsp.iv, rsp.seq
    )
    name = f"session{'_measurements' if measurements else ''}@{version:#x}"
    return SessionPrefix(name, version, tuple(channel.payloads), tuple(channel.replies), keys)


@functools.cache
def record_session(version: int, measurements: bool = False) -> SessionPrefix | None:
    """A recorded session at ``version``, checked to replay byte for byte (else None)."""
    prefix = asyncio.run(_record_session(version, measurements))
    if prefix is None:
        return None
    conn = new_connection()
    for payload, reply in zip(prefix.payloads, prefix.replies, strict=True):
        if tuple(conn.receive(payload).payloads) != reply:
            return None  # not deterministic: the session cannot be replayed
    return prefix


class ConnectionHarness:
    """A fresh connection with the recorded session established; requests marked
    in-session are sealed with the session's request keys (the project's record code)."""

    def __init__(self, prefix: SessionPrefix) -> None:
        from emulator.transport import get_binding

        self.connection = new_connection()
        self.binding = get_binding("doe")
        responder = self.connection.responder
        self.checker = ResponderHarness.around(responder)
        responder.respond = RespondCheck(self.checker, responder.respond)  # type: ignore[method-assign]
        # every request goes through the checks (no repeated-GET_VERSION shortcut around
        # respond; tests/test_fast_paths.py checks that shortcut against the pipeline)
        self.connection.version_shortcut = False
        self.keys = prefix.keys
        self.req_seq = prefix.keys.req_seq
        self.versions = [int(v) for v in fuzz_device().versions]
        for payload in prefix.payloads:
            self._receive(payload)

    @property
    def responder(self) -> Responder:
        return self.connection.responder

    def close(self) -> None:
        self.connection.close()

    def seal(self, message: bytes) -> bytes:
        """``message`` as the session's next request record (the harness's own record
        code, :mod:`fuzz.wire`)."""
        k = self.keys
        record = wire.seal(
            aead=k.aead,
            key=k.req_key,
            iv=k.req_iv,
            sequence_number=self.req_seq,
            session_id=k.session_id,
            app_data=message,
            mac_only=k.mac_only,
        )
        self.req_seq += 1
        return record

    def send(self, message: bytes, in_session: bool = False) -> list[bytes]:
        """One message (sealed when ``in_session``); returns the reply payloads."""
        if not message:
            return []
        if in_session:
            return self._receive(wire.doe_object(self.seal(message), secured=True))
        return self._receive(wire.doe_object(message))

    def send_record(self, record: bytes) -> list[bytes]:
        """Raw record bytes in a secured DOE object."""
        if len(record) <= 4:
            return []
        return self._receive(wire.doe_object(record, secured=True))

    def _receive(self, payload: bytes) -> list[bytes]:
        reply = self.connection.receive(payload)
        for out in reply.payloads:
            try:
                message, secured = wire.doe_message(out)
            except wire.WireError as exc:
                raise _violation(str(exc), payload, out) from None
            if not secured:
                check_spdm_message(message, self.versions, payload)
        return list(reply.payloads)
