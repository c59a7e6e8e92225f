"""Fault injection: rules (SPEC grammar, profile, API) and each fault kind, observed from the
project's requester.  Byte-exact expectations are written from DSP0274 tables:

* ERROR: SPDMVersion, 0x7F, Param1 = ErrorCode, Param2 = ErrorData, extended data.
* ResponseNotReady extended error data: RDTExponent, RequestCode, Token, RDTM.
* RESPOND_IF_READY: SPDMVersion, 0xFF, Param1 = original request code, Param2 = token.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from emulator.app import add_fault_options, build_fault_engine
from emulator.codec.constants import ErrorCode, RequestCode, ResponseCode
from emulator.codec.messages import build_header
from emulator.connection import ExchangeEvent, Reply, SpdmConnection
from emulator.device.model import Device
from emulator.errors import ProfileError, RequesterError
from emulator.faults.engine import FaultEngine
from emulator.faults.model import ActionKind, FaultSpecError, LieKind, Stage
from emulator.faults.spec import parse_fault_spec, rule_from_mapping
from emulator.options import RunOptions
from emulator.profiles import PROFILES_DIR, load_profile_text
from emulator.requester import Requester, RequesterConfig, SpdmErrorReply
from emulator.requester.not_ready import NotReady, send_if_ready
from emulator.requester.transport import SocketClient
from emulator.server.server import SpdmServer
from emulator.transport import get_binding
from emulator.transport.base import TransportMessage
from tests import helpers

LOOPBACK = "127.0.0.1"

# ---------------------------------------------------------------------------- helpers


class ConnChannel:
    """A requester channel through a sans-I/O SpdmConnection (binding "none").

    It behaves like a socket: an empty reply (drop) raises, extra payloads (duplicate)
    wait and answer the next request, ``close``/``partial`` raise.
    """

    def __init__(self, conn: SpdmConnection) -> None:
        self.conn = conn
        self.pending: list[bytes] = []
        self.replies: list[Reply] = []

    async def exchange(self, message: bytes, secured: bool = False) -> TransportMessage:
        reply = self.conn.receive(self.conn.binding.encode(message, secured=secured))
        self.replies.append(reply)
        if reply.partial is not None:
            raise RequesterError(f"partial frame ({reply.partial} bytes), connection closed")
        self.pending.extend(reply.payloads)
        if reply.close and not reply.payloads:
            raise RequesterError("responder closed the connection")
        if not self.pending:
            raise RequesterError("no response (dropped)")
        return self.conn.binding.decode(self.pending.pop(0))


def make_device(*specs: str, seed: int | None = 1) -> tuple[Device, FaultEngine]:
    """A device and its fault engine (the profile's rules, then ``specs``), as the app
    builds them."""
    device = helpers.make_device()
    device.seed = seed
    engine = build_fault_engine(device.profile)
    for spec in specs:
        engine.add(spec)
    return device, engine


class Harness:
    """One device, one connection, one requester, and the events it emitted."""

    def __init__(self, device: Device, engine: FaultEngine, number: int = 1, **cfg: Any) -> None:
        self.device = device
        self.engine = engine
        self.events: list[ExchangeEvent] = []
        self.conn = SpdmConnection(
            device,
            get_binding("none"),
            number=number,
            observers=[self.events.append],
            faults=engine,
        )
        self.channel = ConnChannel(self.conn)
        self.req = Requester(self.channel, RequesterConfig(**cfg))

    @property
    def faults(self) -> list[tuple[str, ...]]:
        return [e.faults for e in self.events]


def harness(*specs: str, **cfg: Any) -> Harness:
    return Harness(*make_device(*specs), **cfg)


async def baseline_vca(**cfg: Any) -> list[tuple[bytes, bytes]]:
    """The exchanges of a fault-free VCA (same seed) to compare against."""
    h = harness(**cfg)
    await h.req.vca()
    return list(h.req.log)


def error_bytes(version: int, code: int, data: int = 0, ext: bytes = b"") -> bytes:
    return bytes([version, 0x7F, code, data]) + ext


# ---------------------------------------------------------------------------- SPEC grammar


def test_spec_parses_to_canonical_rule() -> None:
    rule = parse_fault_spec("on=get_measurements|0x81,nth=2,do=error:busy,session=out")
    assert rule.when.codes == {RequestCode.GET_MEASUREMENTS, RequestCode.GET_DIGESTS}
    assert rule.when.nth == 2 and rule.when.session == "out"
    assert rule.action.kind is ActionKind.ERROR and rule.action.error_code == ErrorCode.Busy
    assert rule.spec == "on=GET_DIGESTS|GET_MEASUREMENTS,session=out,nth=2,do=error:Busy"
    assert rule.action.stage is Stage.REQUEST
    # the canonical text parses back to the same rule
    again = parse_fault_spec(rule.spec)
    assert again.when == rule.when and again.action == rule.action


@pytest.mark.parametrize(
    ("spec", "key", "problem"),
    [
        ("on=GET_MEASUREMENTS,nht=2,do=drop", "nht", "unknown key"),
        ("nth=0,do=drop", "nth", "below the minimum 1"),
        ("nth=two,do=drop", "nth", "'two' is not an integer"),
        ("on=GET_MEASUREMENT,do=drop", "on", "unknown request code 'GET_MEASUREMENT'"),
        ("on=CHALLENGE", "do", "missing"),
        ("do=explode", "do", "unknown action 'explode'"),
        ("do=error:Bussy", "do", "unknown error code 'Bussy'"),
        ("do=error", "do", "error needs an argument"),
        ("do=drop,mask=3", "mask", "does not apply to do=drop"),
        ("do=drop,do=close", "do", "given twice"),
        ("prob=1.5,do=drop", "prob", "not within (0, 1]"),
        ("session=maybe,do=drop", "session", "choose in, out or any"),
        ("version=1.7,do=drop", "version", "not an SPDM version"),
        ("do=lie:fib", "do", "unknown lie 'fib'"),
        ("do=record:bad_crc", "do", "unknown record fault 'bad_crc'"),
        ("do=length:7", "do", "write +N, -N or =N"),
        ("do=delay:soon", "do", "'soon' is not a number"),
        ("do=delay:1,factor=2", "factor", "only applies to delay:ct"),
        ("do=set:4", "value", "set needs value=BYTE"),
        ("do=close:later", "do", "close:before or close:after"),
        ("id=a b,do=drop", "id", "letters, digits"),
        ("do=error:Busy,ext=zz", "ext", "not hex"),
    ],
)
def test_spec_errors_name_the_key(spec: str, key: str, problem: str) -> None:
    with pytest.raises(FaultSpecError) as info:
        parse_fault_spec(spec)
    assert info.value.key == key
    assert problem in str(info.value)
    assert f"{key}: " in str(info.value) and spec in str(info.value)


def test_spec_item_without_equals() -> None:
    with pytest.raises(FaultSpecError, match="'nth2' is not key=value"):
        parse_fault_spec("nth2,do=drop")
    with pytest.raises(FaultSpecError, match="empty fault spec"):
        parse_fault_spec(" , ")


def test_mapping_form_equals_spec_form() -> None:
    a = rule_from_mapping({"on": ["GET_MEASUREMENTS", "CHALLENGE"], "every": 3, "do": "drop"})
    b = parse_fault_spec("on=CHALLENGE|GET_MEASUREMENTS,every=3,do=drop")
    assert a.spec == b.spec and a.when == b.when
    c = rule_from_mapping({"spec": "on=CHALLENGE,do=drop", "times": 2})
    assert c.when.times == 2 and c.when.codes == {RequestCode.CHALLENGE}
    with pytest.raises(FaultSpecError, match="nth: True is not a valid value"):
        rule_from_mapping({"nth": True, "do": "drop"})
    with pytest.raises(FaultSpecError, match="a fault rule is an object"):
        rule_from_mapping(["do=drop"])  # type: ignore[arg-type]


def test_every_action_has_a_stage() -> None:
    samples = {
        "error:Busy": Stage.REQUEST,
        "not_ready": Stage.REQUEST,
        "tamper": Stage.REQUEST,
        "tamper:response": Stage.RESPONSE,
        "lie:reused_nonce": Stage.REQUEST,
        "lie:other_key": Stage.REQUEST,
        "lie:bad_signature": Stage.RESPONSE,
        "flip:4": Stage.RESPONSE,
        "record:bad_mac": Stage.RECORD,
        "delay:1": Stage.SOCKET,
        "duplicate": Stage.SOCKET,
    }
    for do, stage in samples.items():
        assert parse_fault_spec(f"do={do}").action.stage is stage, do
    assert {LieKind(k) for k in [lk.value for lk in LieKind]} == set(LieKind)


def test_engine_ids_and_removal() -> None:
    engine = FaultEngine()
    a = engine.add("do=drop")
    b = engine.add({"do": "drop", "id": "mine"})
    assert (a.id, b.id) == ("f1", "mine")
    with pytest.raises(FaultSpecError, match="already exists"):
        engine.add("id=mine,do=close")
    assert engine.remove("f1") is a and engine.remove("f1") is None
    assert [r.id for r in engine.rules] == ["mine"]
    assert engine.clear() == 1 and len(engine) == 0


# ---------------------------------------------------------------------------- profile


PROFILE_WITH_FAULTS = """
[device]
name = "faulty"
[spdm]
versions = ["1.2"]
[algorithms]
base_hash = ["SHA_256"]
[[faults]]
on = "NEGOTIATE_ALGORITHMS"
nth = 1
do = "error:Busy"
[[faults]]
spec = "on=GET_CAPABILITIES,do=error:Unspecified,times=1"
"""


async def test_profile_faults_reach_the_requester() -> None:
    profile = load_profile_text(PROFILE_WITH_FAULTS, "faulty.toml", base_dir=PROFILES_DIR)
    device = Device.from_profile(profile)
    engine = build_fault_engine(profile)
    assert [r.origin for r in engine.rules] == ["profile", "profile"]
    h = Harness(device, engine)
    await h.req.get_version()
    with pytest.raises(SpdmErrorReply) as info:
        await h.req.get_capabilities()
    assert info.value.response == error_bytes(0x10, ErrorCode.Unspecified)
    await h.req.get_capabilities()  # times=1: the retry works
    with pytest.raises(SpdmErrorReply) as info2:
        await h.req.negotiate_algorithms()
    assert info2.value.response == error_bytes(0x12, ErrorCode.Busy)
    await h.req.negotiate_algorithms()  # nth=1 only
    assert h.faults == [(), ("f2: error:Unspecified",), (), ("f1: error:Busy",), ()]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ('nth = 0\ndo = "drop"', "faults[0]: nth: 0 is below the minimum 1"),
        ('do = "drop"\nwhen = 3', "faults[0]: when: unknown key"),
        ('on = "NOPE"\ndo = "drop"', "faults[0]: on: unknown request code 'NOPE'"),
    ],
)
def test_profile_fault_errors_name_file_and_field(entry: str, problem: str) -> None:
    text = PROFILE_WITH_FAULTS.split("[[faults]]")[0] + "[[faults]]\n" + entry + "\n"
    with pytest.raises(ProfileError) as info:
        load_profile_text(text, "bad.toml")
    assert str(info.value).startswith("bad.toml: ")
    assert problem in str(info.value)


def test_profile_mqtt_section_checks() -> None:
    base = PROFILE_WITH_FAULTS.split("[[faults]]")[0]
    p = load_profile_text(base + '[mqtt]\nenabled = true\nport = 1884\nusername = "u"\n', "m.toml")
    assert p.mqtt.enabled and p.mqtt.port == 1884 and p.mqtt.username == "u"
    with pytest.raises(ProfileError, match=r"m\.toml: mqtt: password needs username"):
        load_profile_text(base + '[mqtt]\npassword = "x"\n', "m.toml")
    with pytest.raises(ProfileError, match=r"mqtt\.port"):
        load_profile_text(base + "[mqtt]\nport = 0\n", "m.toml")
    with pytest.raises(ProfileError, match="need tls = true"):
        load_profile_text(base + '[mqtt]\nca_file = "ca.pem"\n', "m.toml")


# ---------------------------------------------------------------------------- ERROR


@pytest.mark.parametrize(
    ("do", "code", "data", "ext"),
    [
        ("error:Busy", ErrorCode.Busy, 0, b""),
        ("error:Unspecified", ErrorCode.Unspecified, 0, b""),
        ("error:ResetRequired", ErrorCode.ResetRequired, 0, b""),
        ("error:request_resynch", ErrorCode.RequestResynch, 0, b""),
        ("error:0x05,data=0x42", ErrorCode.Unspecified, 0x42, b""),
        # VendorDefined: ErrorData 0, extended = Len, VendorID ... (any bytes the user gives)
        ("error:VendorDefined,ext=021b36aa", ErrorCode.VendorDefined, 0, bytes.fromhex("021b36aa")),
    ],
)
async def test_error_code_of_choice(do: str, code: int, data: int, ext: bytes) -> None:
    h = harness(f"on=NEGOTIATE_ALGORITHMS,nth=1,do={do}")
    await h.req.get_version()
    await h.req.get_capabilities()
    with pytest.raises(SpdmErrorReply) as info:
        await h.req.negotiate_algorithms()
    assert info.value.response == error_bytes(0x13, code, data, ext)
    assert info.value.code == code
    # the responder never saw the request: its state allows the retry
    await h.req.negotiate_algorithms()
    assert h.req.neg.version == 0x13
    assert len(h.events[2].faults) == 1 and h.events[2].error == code


async def test_error_on_get_version_is_version_10() -> None:
    h = harness("on=GET_VERSION,nth=2,do=error:Busy")
    await h.req.vca()
    with pytest.raises(SpdmErrorReply) as info:
        await h.req.get_version()
    assert info.value.response == error_bytes(0x10, ErrorCode.Busy)


async def test_request_resynch_then_recovery() -> None:
    """RequestResynch tells the requester to start again at GET_VERSION; it then works."""
    h = harness("on=GET_DIGESTS|NEGOTIATE_ALGORITHMS,nth=1,do=error:RequestResynch")
    await h.req.get_version()
    await h.req.get_capabilities()
    with pytest.raises(SpdmErrorReply) as info:
        await h.req.negotiate_algorithms()
    assert info.value.error_name == "RequestResynch"
    await h.req.vca()
    assert h.req.neg.algorithms is not None


# ---------------------------------------------------------------------------- ResponseNotReady


async def no_sleep(seconds: float) -> None:
    no_sleep.waits.append(seconds)  # type: ignore[attr-defined]


no_sleep.waits = []  # type: ignore[attr-defined]


async def test_not_ready_then_respond_if_ready_gets_the_real_answer() -> None:
    reference = await baseline_vca()
    h = harness("on=NEGOTIATE_ALGORITHMS,do=not_ready,rdt=3,rdtm=5,token=0x2A")
    await h.req.get_version()
    await h.req.get_capabilities()
    request = h.req.negotiate_request()
    no_sleep.waits.clear()  # type: ignore[attr-defined]
    response, seen = await send_if_ready(h.req, request, sleep=no_sleep)
    assert seen == [NotReady(3, RequestCode.NEGOTIATE_ALGORITHMS, 0x2A, 5)]
    assert no_sleep.waits == [8e-6]  # type: ignore[attr-defined]  # 2^3 us
    # what went on the wire, byte by byte
    assert h.req.log[2] == (request, error_bytes(0x13, 0x42, 0, bytes([3, 0xE3, 0x2A, 5])))
    assert h.req.log[3][0] == bytes([0x13, 0xFF, 0xE3, 0x2A])
    # the real answer is what a fault-free device sends
    assert response == reference[2][1]
    assert h.faults[2] == ("f1: not_ready (token 0x2A)",)
    assert h.events[3].response_name == "ALGORITHMS" and h.events[3].faults == ()


async def test_not_ready_default_tokens_count_up_per_connection() -> None:
    h = harness("on=GET_VERSION|GET_CAPABILITIES,do=not_ready")
    tokens = []
    for code in (RequestCode.GET_VERSION, RequestCode.GET_VERSION):
        with pytest.raises(SpdmErrorReply) as info:
            await h.req.send(build_header(0x10, code))
        tokens.append(NotReady.parse(info.value.response).token)
        assert info.value.response[:4] == bytes([0x10, 0x7F, 0x42, 0x00])
        assert info.value.response[4:8] == bytes([1, 0x84, tokens[-1], 2])  # defaults: 1, 2
    assert tokens == [0, 1]


async def _deferred(h: Harness, spec_token: int = 7) -> bytes:
    await h.req.get_version()
    await h.req.get_capabilities()
    with pytest.raises(SpdmErrorReply):
        await h.req.send(h.req.negotiate_request())
    return bytes([0x13, 0xFF, 0xE3, spec_token])


@pytest.mark.parametrize(
    ("rif", "error"),
    [
        (bytes([0x13, 0xFF, 0xE3, 0x08]), ErrorCode.InvalidRequest),  # wrong token
        (bytes([0x13, 0xFF, 0xE1, 0x07]), ErrorCode.InvalidRequest),  # wrong request code
        (bytes([0x13, 0xFF, 0xFF, 0x07]), ErrorCode.InvalidRequest),  # Param1 = 0xFF
        (bytes([0x12, 0xFF, 0xE3, 0x07]), ErrorCode.VersionMismatch),  # wrong version
    ],
)
async def test_bad_respond_if_ready_is_rejected(rif: bytes, error: ErrorCode) -> None:
    h = harness("on=NEGOTIATE_ALGORITHMS,nth=1,do=not_ready,token=7")
    good = await _deferred(h)
    with pytest.raises(SpdmErrorReply) as info:
        await h.req.send(rif)
    assert info.value.response == error_bytes(0x13, error)
    # a bad RESPOND_IF_READY does not consume the deferred request
    response = await h.req.send(good)
    assert response[1] == ResponseCode.ALGORITHMS


async def test_respond_if_ready_without_pending_request() -> None:
    h = harness()
    await h.req.vca()
    with pytest.raises(SpdmErrorReply) as info:
        await h.req.send(bytes([0x13, 0xFF, 0xE3, 0x00]))
    assert info.value.response == error_bytes(0x13, ErrorCode.UnexpectedRequest)


async def test_respond_if_ready_after_another_request_is_unexpected() -> None:
    h = harness("on=NEGOTIATE_ALGORITHMS,nth=1,do=not_ready,token=7")
    good = await _deferred(h)
    await h.req.negotiate_algorithms()  # the requester moved on (nth=1: answered now)
    with pytest.raises(SpdmErrorReply) as info:
        await h.req.send(good)
    assert info.value.code == ErrorCode.UnexpectedRequest


async def test_not_ready_repeat() -> None:
    h = harness("on=NEGOTIATE_ALGORITHMS,nth=1,do=not_ready,repeat=2,token=9")
    await h.req.get_version()
    await h.req.get_capabilities()
    response, seen = await send_if_ready(h.req, h.req.negotiate_request(), sleep=no_sleep)
    assert [s.token for s in seen] == [9, 9, 9]
    assert response[1] == ResponseCode.ALGORITHMS
    # RESPOND_IF_READY -> ResponseNotReady again, twice
    assert [e.response_name for e in h.events[2:]] == ["ERROR", "ERROR", "ERROR", "ALGORITHMS"]
    with pytest.raises(RequesterError, match="still not ready after 1"):
        h2 = harness("on=NEGOTIATE_ALGORITHMS,nth=1,do=not_ready,repeat=5")
        await h2.req.get_version()
        await h2.req.get_capabilities()
        await send_if_ready(h2.req, h2.req.negotiate_request(), max_not_ready=1, sleep=no_sleep)


async def test_requester_rejects_rdtm_of_one() -> None:
    """libspdm's requester refuses RDTM <= 1 (the emulator sends what the rule says)."""
    h = harness("on=NEGOTIATE_ALGORITHMS,do=not_ready,rdtm=1")
    await h.req.get_version()
    await h.req.get_capabilities()
    with pytest.raises(RequesterError, match="RDTM 1 must be > 1"):
        await send_if_ready(h.req, h.req.negotiate_request(), sleep=no_sleep)


# ---------------------------------------------------------------------------- corruption


async def test_corruptions_are_byte_exact_and_detected() -> None:
    reference = await baseline_vca()
    version_rsp = reference[0][1]
    cases: list[tuple[str, Callable[[bytes], bytes], str]] = [
        ("flip:1,mask=0x80", lambda b: b[:1] + bytes([b[1] ^ 0x80]) + b[2:], "expected VERSION"),
        ("set:0,value=0x11", lambda b: b"\x11" + b[1:], "version byte 0x11"),
        ("code:CAPABILITIES", lambda b: b[:1] + b"\x61" + b[2:], "got CAPABILITIES"),
        ("version:1.2", lambda b: b"\x12" + b[1:], "version byte 0x12"),
        ("truncate:5", lambda b: b[:5], "VERSION"),
        ("length:+1", lambda b: b[:5] + bytes([b[5] + 1]) + b[6:], "VERSION"),
    ]
    for do, expect, message in cases:
        h = harness(f"on=GET_VERSION,do={do}")
        with pytest.raises(RequesterError, match=message):
            await h.req.get_version()
        assert h.req.log[0][1] == expect(version_rsp), do
        assert len(h.events[0].faults) == 1, do


async def test_extend_and_length_on_algorithms() -> None:
    reference = await baseline_vca()
    algorithms = reference[2][1]
    for do, expect, message in [
        ("extend:3,value=0xEE", algorithms + b"\xee\xee\xee", None),
        (
            "length:=9",
            algorithms[:4] + (9).to_bytes(2, "little") + algorithms[6:],
            "ALGORITHMS",
        ),
        ("truncate:-4", algorithms[:-4], "ALGORITHMS"),
    ]:
        h = harness(f"on=NEGOTIATE_ALGORITHMS,do={do}")
        await h.req.get_version()
        await h.req.get_capabilities()
        if message is None:
            # trailing bytes: the requester takes Length bytes (like a transport pad)
            await h.req.negotiate_algorithms()
        else:
            with pytest.raises(RequesterError, match=message):
                await h.req.negotiate_algorithms()
        assert h.req.log[2][1] == expect, do


async def test_corruption_that_cannot_apply_is_logged_not_recorded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = harness("on=GET_VERSION,do=flip:200", "on=GET_VERSION,nth=1,do=length:+1,id=len")
    h.engine.add("on=GET_CAPABILITIES,do=length:+1,id=nolen")
    with pytest.raises(RequesterError, match="VERSION"):
        await h.req.get_version()  # flip:200 is outside VERSION; length applies
    await h.req.get_version()
    await h.req.get_capabilities()  # CAPABILITIES has no length field
    assert h.faults[0] == ("len: length:+1 (VersionNumberEntryCount)",)
    assert h.faults[2] == ()
    assert "offset 200 is outside" in caplog.text
    assert "no length field known for CAPABILITIES" in caplog.text


# ---------------------------------------------------------------------------- when


async def _versions(h: Harness, n: int) -> list[bool]:
    """n GET_VERSION exchanges; True where a fault fired."""
    out = []
    for _ in range(n):
        with contextlib.suppress(SpdmErrorReply, RequesterError):
            await h.req.get_version()
        out.append(bool(h.events[-1].faults))
    return out


@pytest.mark.parametrize(
    ("when", "pattern"),
    [
        ("nth=3", [False, False, True, False, False, False]),
        ("every=2", [False, True, False, True, False, True]),
        ("after=4", [False, False, False, False, True, True]),
        ("every=2,times=2", [False, True, False, True, False, False]),
        ("after=1,every=2,times=1", [False, True, False, False, False, False]),
        ("prob=1", [True] * 6),
    ],
)
async def test_occurrence_triggers(when: str, pattern: list[bool]) -> None:
    h = harness(f"on=GET_VERSION,{when},do=error:Busy")
    assert await _versions(h, 6) == pattern


async def test_filters_code_connection_version_session() -> None:
    device, engine = make_device(
        "on=GET_CAPABILITIES,conn=2,do=error:Busy,id=c2",
        "version=1.1,on=NEGOTIATE_ALGORITHMS,do=error:Busy,id=v11",
        "session=in,do=error:Busy,id=inside",
    )
    one = Harness(device, engine, number=1)
    await one.req.vca()  # conn 1, version 1.3: nothing fires, not even session=in
    assert all(e.faults == () for e in one.events)
    two = Harness(device, engine, number=2)
    await two.req.get_version()
    with pytest.raises(SpdmErrorReply):
        await two.req.get_capabilities()
    eleven = Harness(device, engine, number=3, version=0x11)
    await eleven.req.get_version()
    await eleven.req.get_capabilities()
    with pytest.raises(SpdmErrorReply):
        await eleven.req.negotiate_algorithms()
    rules = {r.id: r for r in engine.rules}
    assert rules["c2"].fired == 1 and rules["v11"].fired == 1 and rules["inside"].fired == 0
    assert rules["inside"].count == 0  # nothing was inside a session


async def test_seeded_probability_is_reproducible() -> None:
    async def run(seed: int) -> tuple[list[bool], list[bytes]]:
        h = Harness(*make_device(f"on=GET_VERSION,prob=0.5,seed={seed},do=flip:-1,mask=0x04"))
        fired = await _versions(h, 40)
        return fired, [e.response or b"" for e in h.events]

    a, b, c = await run(11), await run(11), await run(12)
    assert a == b  # same seed, same requests: same faults and the same bytes
    assert a[0] != c[0]  # another seed draws another sequence
    assert 5 < sum(a[0]) < 35  # it is a coin, not a constant


async def test_engine_seed_is_the_default_rule_seed() -> None:
    def engine(seed: int) -> FaultEngine:
        return FaultEngine([parse_fault_spec("prob=0.5,do=drop")], seed=seed)

    class R:
        version = 0x13
        family: dict[str, Any] = {}

    def pattern(e: FaultEngine) -> list[bool]:
        return [e.begin(R(), b"\x10\x84\x00\x00") is not None for _ in range(32)]

    assert pattern(engine(3)) == pattern(engine(3))
    assert pattern(engine(3)) != pattern(engine(4))


async def test_rules_added_and_cleared_at_run_time() -> None:
    h = harness()
    await h.req.vca()
    rule = h.engine.add("on=GET_VERSION,do=error:Busy")
    with pytest.raises(SpdmErrorReply):
        await h.req.get_version()
    h.engine.remove(rule.id)
    await h.req.vca()
    assert [bool(f) for f in h.faults] == [False] * 3 + [True] + [False] * 3


# ------------------------------------------------------------- socket actions (sans-I/O)


async def test_socket_actions_on_the_reply() -> None:
    cases = {
        "delay:0.25": Reply([b"x"], delay=0.25),
        "delay:ct": Reply([b"x"], delay=2 * 4096e-6),  # CTExponent 12, factor 2
        "delay:ct,factor=0.5": Reply([b"x"], delay=0.5 * 4096e-6),
        "drop": Reply([]),
        "close": Reply([], close=True),
        "close:after": Reply([b"x"], close=True),
        "partial:7": Reply([b"x"], partial=7),
        "duplicate": Reply([b"x", b"x"]),
        "duplicate:3": Reply([b"x", b"x", b"x"]),
    }
    for do, expected in cases.items():
        device, engine = make_device(f"on=GET_VERSION,do={do}")
        conn = SpdmConnection(device, get_binding("none"), faults=engine)
        reply = conn.receive(build_header(0x10, RequestCode.GET_VERSION))
        payload = reply.payloads[0] if reply.payloads else b""
        got = Reply([b"x" for _ in reply.payloads], reply.delay, reply.close, reply.partial)
        assert got == expected, do
        if payload:
            assert payload[1] == ResponseCode.VERSION


# ---------------------------------------------------------- socket actions (real server)


@pytest.fixture
async def served() -> AsyncIterator[Callable[..., Any]]:
    servers: list[SpdmServer] = []

    async def start(*specs: str) -> tuple[SpdmServer, Device, list[ExchangeEvent]]:
        device, engine = make_device(*specs)
        events: list[ExchangeEvent] = []

        def factory(number: int, peer: str) -> SpdmConnection:
            return SpdmConnection(
                device,
                get_binding("doe"),
                number=number,
                peer=peer,
                observers=[events.append],
                faults=engine,
            )

        srv = SpdmServer(RunOptions(host=LOOPBACK, port=0), get_binding("doe"), factory)
        await srv.start()
        servers.append(srv)
        return srv, device, events

    yield start
    for srv in servers:
        await srv.stop()


async def _client(port: int, timeout: float = 5.0) -> SocketClient:
    client = SocketClient(LOOPBACK, port, get_binding("doe"), timeout=timeout)
    await client.connect()
    return client


async def test_socket_drop_close_partial_duplicate(served: Callable[..., Any]) -> None:
    srv, _device, events = await served(
        "on=GET_CAPABILITIES,conn=1,nth=1,do=drop",
        "on=GET_CAPABILITIES,conn=2,do=close",
        "on=GET_CAPABILITIES,conn=3,do=partial:14",
        "on=GET_VERSION,conn=4,do=duplicate",
        "on=GET_VERSION,conn=5,do=delay:0.05",
    )
    # drop: no answer (the client times out), the connection stays usable
    c1 = await _client(srv.port, timeout=0.3)
    r1 = Requester(c1)
    await r1.get_version()
    with pytest.raises(RequesterError, match="no frame from the responder within"):
        await r1.get_capabilities()
    c1.timeout = 5.0
    await r1.vca()
    await c1.close()
    # close: the responder closes without answering
    r2 = Requester(await _client(srv.port))
    await r2.get_version()
    with pytest.raises(RequesterError, match="responder closed the connection"):
        await r2.get_capabilities()
    # partial: 14 bytes of the frame (12-byte header + 2), then close
    r3 = Requester(await _client(srv.port))
    await r3.get_version()
    with pytest.raises(RequesterError, match=r"mid-frame \(14 bytes received\)"):
        await r3.get_capabilities()
    # duplicate: the second VERSION answers the next request
    c4 = await _client(srv.port)
    r4 = Requester(c4)
    await r4.get_version()
    with pytest.raises(RequesterError, match="expected CAPABILITIES, got VERSION"):
        await r4.get_capabilities()
    await c4.close()
    # delay: the answer comes (no timing assertion), the event says why it was late
    c5 = await _client(srv.port)
    await Requester(c5).vca()
    await c5.close()
    # the server kept serving everyone; events name each fault
    applied = [e.faults for e in events if e.faults]
    assert applied == [
        ("f1: drop",),
        ("f2: close:before",),
        ("f3: partial:14",),
        ("f4: duplicate:2",),
        ("f5: delay:0.05 (0.05 s)",),
    ]


async def test_delay_beyond_ct_still_answers(served: Callable[..., Any]) -> None:
    srv, device, events = await served("on=GET_VERSION,do=delay:ct,factor=4")
    device.ct_exponent = 10  # 1.024 ms: 4x is still quick in a test
    c = await _client(srv.port)
    await Requester(c).vca()
    await c.close()
    assert events[0].faults == ("f1: delay:ct (0.004096 s)",)


async def test_fault_events_name_connection_and_request() -> None:
    h = harness("on=NEGOTIATE_ALGORITHMS,do=error:Busy,id=busy")
    await h.req.get_version()
    await h.req.get_capabilities()
    with pytest.raises(SpdmErrorReply):
        await h.req.negotiate_algorithms()
    ev = h.events[-1]
    assert (ev.connection, ev.request_name, ev.response_name, ev.error) == (
        1,
        "NEGOTIATE_ALGORITHMS",
        "ERROR",
        ErrorCode.Busy,
    )
    assert ev.faults == ("busy: error:Busy",)
    assert h.engine.applied_total == 1


def test_no_rules_no_exchange() -> None:
    class R:
        version = 0
        family: dict[str, Any] = {}

    assert FaultEngine().begin(R(), b"\x10\x84\x00\x00") is None


_ = asyncio


# ---------------------------------------------------------------------------- CLI


def test_cli_fault_flag_errors_name_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    from emulator import cli

    with pytest.raises(SystemExit) as info:
        cli.main(["serve", "--fault", "on=CHALLENGE,nth=0,do=drop"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert (
        "argument --fault: fault 'on=CHALLENGE,nth=0,do=drop': nth: 0 is below the minimum 1" in err
    )


def test_cli_fault_flags_reach_the_engine() -> None:
    import argparse

    from emulator import cli

    parser = cli.build_parser()
    args = parser.parse_args(
        [
            "serve",
            "--fault",
            "on=GET_VERSION,prob=0.5,do=drop",
            "--fault",
            "id=x,do=close",
            "--fault-seed",
            "9",
        ]
    )
    assert isinstance(args, argparse.Namespace)

    _device, engine = make_device()
    add_fault_options(engine, cli.run_options(args))
    assert [(r.id, r.origin) for r in engine.rules] == [("f1", "cli"), ("x", "cli")]
    assert engine.seed == 9
