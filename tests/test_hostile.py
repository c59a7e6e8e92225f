"""Hostile-device mode (emulator/faults/hostile.py): seeded structure-aware mutations.

* Same seed + same requests -> byte-identical mutated responses; another seed differs.
* Every mutation is described with its seed, exchange index, operator, field and byte
  position, and changes exactly what the description says.
* The operators find the fields DSP0274 defines (checked against independent parses:
  the DER walker against ``cryptography``'s certificate, sizes against the spec tables).
* The project's requester notices every mutation marked ``strict`` (and the test knows
  how many it tried, so it cannot pass vacuously).
* ``--mutate SEED[:RATE]`` maps onto a fault rule.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509

from emulator.app import build_fault_engine
from emulator.codec.constants import ResponseCode
from emulator.codec.measurements import OPERATION_ALL
from emulator.device.model import Device
from emulator.errors import RequesterError
from emulator.faults import hostile
from emulator.faults.engine import FaultEngine
from emulator.faults.hostile import (
    MutationContext,
    applicable,
    der_elements,
    exchange_rng,
    mutate,
    mutate_exchange,
    mutate_spec,
    mutate_with,
    parse_mutate,
    response_fields,
)
from emulator.requester import Requester, RequesterConfig
from emulator.requester import identity as identity_flow
from emulator.requester import measurements as measurement_flow
from emulator.responder import Responder
from emulator.transport.base import TransportMessage
from fuzz.harness import choose_prefix, fuzz_device, new_responder, selector_of


@pytest.fixture(scope="module")
def device() -> Device:
    return fuzz_device()


def flow_requests(version: int = 0x13) -> list[bytes]:
    """VCA, digests, certificate, challenge, measurements: as the requester sends them."""
    prefix = choose_prefix(selector_of("measurements", version))
    assert len(prefix.steps) >= 8
    return [s.request for s in prefix.steps]


def exchanges(device: Device, seed: int, version: int = 0x13) -> list[tuple[bytes, str]]:
    """Every response of the flow, each mutated under ``seed`` (index = exchange number)."""
    r = new_responder(device)
    out = []
    for i, request in enumerate(flow_requests(version)):
        response = r.handle(request)
        mutated, m = mutate_exchange(response, request, r, seed=seed, index=i)
        out.append((mutated, m.describe()))
    return out


# ---- determinism and descriptions ---------------------------------------------------------------


@pytest.mark.parametrize("version", [0x10, 0x12, 0x13])
def test_same_seed_same_requests_same_bytes(device: Device, version: int) -> None:
    first = exchanges(device, 1234, version)
    again = exchanges(device, 1234, version)
    assert first == again
    other = exchanges(device, 1235, version)
    assert [m for m, _ in other] != [m for m, _ in first]


def test_rng_is_stable_across_processes() -> None:
    """The exchange rng is seeded with a string: stable whatever PYTHONHASHSEED is."""
    assert exchange_rng(7, 3).getrandbits(64) == exchange_rng(7, 3).getrandbits(64)
    assert exchange_rng(7, 3).random() == random.Random("spdm-emulator/mutate/7/3").random()


def test_descriptions_name_seed_index_and_position(device: Device) -> None:
    r = new_responder(device)
    for i, request in enumerate(flow_requests()):
        response = r.handle(request)
        mutated, m = mutate_exchange(response, request, r, seed=99, index=i)
        text = m.describe()
        assert text.startswith(f"mutate seed=99 #{i} {m.operator}:")
        assert f"at byte {m.offset} " in text
        assert mutated != response
        if m.operator in ("truncate",):
            assert mutated == response[: m.offset]
        elif m.operator == "extend":
            assert mutated == response + m.after
        else:  # a replacement at the described position, nothing else changed
            assert mutated[: m.offset] == response[: m.offset]
            assert mutated[m.offset : m.offset + len(m.after)] == m.after
            assert response[m.offset : m.offset + len(m.before)] == m.before
            end = m.offset + len(m.after)
            assert mutated[end:] == response[end:]


def test_mutate_returns_bytes_and_description() -> None:
    response = bytes.fromhex("10040000000400100011001200130000")[:14]
    out, text = mutate(response, random.Random(1), MutationContext(seed=5, index=2))
    assert isinstance(out, bytes) and out != response
    assert text.startswith("mutate seed=5 #2 ")


# ---- the operators find the spec's fields -----------------------------------------------------


def _responses(device: Device, version: int = 0x13) -> dict[int, tuple[bytes, bytes, Responder]]:
    r = new_responder(device)
    out: dict[int, tuple[bytes, bytes, Responder]] = {}
    for request in flow_requests(version):
        response = r.handle(request)
        if response[1] != ResponseCode.CERTIFICATE or response[1] not in out:
            out[response[1]] = (request, response, r)  # the last of each (first portion)
    return out


def test_fields_of_each_response(device: Device) -> None:
    rs = _responses(device)
    version_rsp = rs[ResponseCode.VERSION][1]
    names = {f.name: f for f in response_fields(version_rsp, MutationContext())}
    assert names["VersionNumberEntryCount"].offset == 5
    assert "VersionNumberEntry[3]" in names  # 1.0 .. 1.3
    request, alg, r = rs[ResponseCode.ALGORITHMS]
    ctx = MutationContext.from_responder(r, request)
    assert (ctx.hash_size, ctx.signature_size) == (48, 96)  # SHA-384, ECDSA P-384
    fields = {f.name: f for f in response_fields(alg, ctx)}
    assert (fields["Length"].offset, fields["BaseAsymSel"].offset) == (4, 12)
    assert int.from_bytes(alg[12:16], "little") == 0x80  # the selected ECDSA P-384
    request, auth, r = rs[ResponseCode.CHALLENGE_AUTH]
    ctx = MutationContext.from_responder(r, request)
    sig = {f.name: f for f in response_fields(auth, ctx)}["Signature"]
    assert sig.offset + sig.size == len(auth) and sig.size == 96
    request, meas, r = rs[ResponseCode.MEASUREMENTS]
    fields = {f.name: f for f in response_fields(meas, MutationContext.from_responder(r, request))}
    assert fields["MeasurementRecordLength"].offset == 5
    assert "Block[0].MeasurementSize" in fields


def test_der_walker_matches_the_certificate(device: Device) -> None:
    request, cert_rsp, _r = _responses(device)[ResponseCode.CERTIFICATE]
    assert request[4:6] == b"\x00\x00"  # the first portion: chain header, root hash, root
    h = 48
    start = 8 + 4 + h
    elements = der_elements(cert_rsp, 8, len(cert_rsp))
    root_tlv = next(e for e in elements if e[0] == start)
    chain = bytes(cert_rsp[start:])
    assert chain[:2] == b"\x30\x82"  # the root certificate, long-form length
    first = chain[: 4 + int.from_bytes(chain[2:4], "big")]
    _tag_at, tag, _len_at, len_n, length = root_tlv
    assert tag == 0x30 and 1 + len_n + length == len(first)
    root = x509.load_der_x509_certificate(first)
    oids = [e for e in elements if e[1] == 0x06 and start <= e[0] < start + len(first)]
    sig_oid = root.signature_algorithm_oid.dotted_string
    assert any(_oid(cert_rsp[e[2] + e[3] : e[2] + e[3] + e[4]]) == sig_oid for e in oids)


def _oid(value: bytes) -> str:
    first, rest = divmod(value[0], 40)
    parts = [first, rest]
    n = 0
    for b in value[1:]:
        n = n << 7 | (b & 0x7F)
        if not b & 0x80:
            parts.append(n)
            n = 0
    return ".".join(map(str, parts))


def test_applicable_operators(device: Device) -> None:
    rs = _responses(device)
    for code, (request, response, r) in rs.items():
        ctx = MutationContext.from_responder(r, request)
        ops = applicable(response, ctx)
        assert {"code", "version", "truncate", "extend"} <= set(ops)
        if code in (ResponseCode.CHALLENGE_AUTH,):
            assert "signature" in ops
        if code == ResponseCode.CERTIFICATE:
            assert "der" in ops
        if code == ResponseCode.ALGORITHMS:
            assert "algo" in ops and "length" in ops


# ---- the requester notices what it must --------------------------------------------------------


class MutatingChannel:
    """A loopback channel that mutates the response of exchange number ``target``."""

    def __init__(
        self,
        responder: Responder,
        target: int,
        mutate_fn: Callable[[bytes, bytes, Responder], bytes | None],
    ) -> None:
        self.responder = responder
        self.target = target
        self.mutate_fn = mutate_fn
        self.count = 0
        self.applied: bool = False

    async def exchange(self, message: bytes, secured: bool = False) -> TransportMessage:
        response = self.responder.handle(message)
        if self.count == self.target:
            out = self.mutate_fn(message, response, self.responder)
            if out is not None:
                response = out
                self.applied = True
        self.count += 1
        return TransportMessage(response)


async def authenticate(requester: Requester) -> None:
    """VCA, every provisioned slot's chain, CHALLENGE, signed measurements."""
    await requester.vca()
    digests = await identity_flow.get_digests(requester)
    for slot in sorted(digests.digests):
        await identity_flow.get_certificate(requester, slot)
    await identity_flow.challenge(requester, 0)
    await measurement_flow.get_measurements(requester, OPERATION_ALL, signed=True)


async def _count_exchanges(device: Device, version: int) -> int:
    channel = MutatingChannel(new_responder(device), -1, lambda q, r, s: None)
    await authenticate(Requester(channel, RequesterConfig(version=version)))
    return channel.count


def _applier(
    operator: str, seed: int, target: int, record: dict[str, Any]
) -> Callable[[bytes, bytes, Responder], bytes | None]:
    """Mutate one response with ``operator``; the Mutation is left in ``record``."""

    def apply(request: bytes, response: bytes, r: Responder) -> bytes | None:
        ctx = MutationContext.from_responder(r, request, seed=seed, index=target)
        try:
            out, m = mutate_with(operator, response, exchange_rng(seed, target), ctx)
        except hostile.NotApplicable:
            return None
        record["m"] = m
        return out

    return apply


@pytest.mark.parametrize(("version", "seeds"), [(0x11, 1), (0x13, 2)])
async def test_requester_detects_strict_mutations(device: Device, version: int, seeds: int) -> None:
    total = await _count_exchanges(device, version)
    assert total >= 10  # VCA + digests + 4 chains in portions + challenge + measurements
    tried = detected = 0
    undetected: list[str] = []
    for target in range(total):
        for operator in hostile.OPERATORS:
            for seed in range(seeds):
                record: dict[str, Any] = {}
                apply = _applier(operator, seed, target, record)
                channel = MutatingChannel(new_responder(device), target, apply)
                requester = Requester(channel, RequesterConfig(version=version))
                try:
                    await authenticate(requester)
                    noticed = False
                except RequesterError:
                    noticed = True
                m = record.get("m")
                if m is None or not m.strict:
                    continue
                tried += 1
                if noticed:
                    detected += 1
                else:
                    undetected.append(m.describe())
    print(f"\n{tried} strict mutations tried at {version:#x}, {detected} detected")
    assert tried >= 60 * seeds, tried
    assert not undetected, "\n".join(undetected[:20])
    assert detected == tried


async def test_plausible_trailing_bytes_are_tolerated(device: Device) -> None:
    """The requester does not choke on a mutation that is legal (bytes after a message)."""

    def pad(request: bytes, response: bytes, r: Responder) -> bytes:
        return response + bytes(4)

    for target in range(3):
        channel = MutatingChannel(new_responder(device), target, pad)
        await Requester(channel, RequesterConfig(version=0x12)).vca()
        assert channel.applied


# ---- --mutate SEED[:RATE] is a fault rule -------------------------------------------------------


def test_parse_mutate() -> None:
    assert parse_mutate("7") == (7, hostile.DEFAULT_RATE)
    assert parse_mutate("0x10:0.5") == (16, 0.5)
    assert parse_mutate("3:1") == (3, 1.0)
    for bad in ("x", "-1", "3:0", "3:1.5", "3:abc"):
        with pytest.raises(ValueError, match="--mutate"):
            parse_mutate(bad)
    assert mutate_spec("7:0.25") == "id=mutate,do=mutate,seed=7,prob=0.25"


def test_serve_flag() -> None:
    from emulator.app import add_fault_options
    from emulator.cli import build_parser, run_options

    args = build_parser().parse_args(["serve", "--mutate", "42:0.5"])
    assert args.mutate == "42:0.5"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--mutate", "42:2"])

    class FakeEngine:
        def __init__(self) -> None:
            self.added: list[tuple[str, str]] = []

        def add(self, spec: str, origin: str = "api") -> None:
            self.added.append((spec, origin))

    engine = FakeEngine()
    add_fault_options(engine, run_options(args))  # type: ignore[arg-type]
    assert engine.added == [("id=mutate,do=mutate,seed=42,prob=0.5", "cli")]


# ---- through the fault engine (do=mutate), as serve / profiles / MQTT set it up -----------------


def _engine_device() -> Device:
    """A device of its own, sharing the fuzz profile's loaded identity."""
    return Device.from_profile(fuzz_device().profile)


def _engine_of(device: Device) -> FaultEngine:
    """The fault engine the app builds for ``device``'s profile."""
    return build_fault_engine(device.profile)


def run_engine(spec: str, version: int = 0x13) -> tuple[list[bytes], list[tuple[str, ...]]]:
    from emulator.connection import ExchangeEvent, SpdmConnection
    from emulator.device.random import SeededRandom
    from emulator.transport import get_binding
    from fuzz.harness import FUZZ_SEED, FakeClock

    doe = get_binding("doe")
    dev = _engine_device()
    engine = _engine_of(dev)
    engine.add(spec)
    events: list[ExchangeEvent] = []
    conn = SpdmConnection(
        dev,
        doe,
        rng=SeededRandom(FUZZ_SEED, "fuzz-conn"),  # as new_responder: same nonces
        clock=FakeClock(),
        observers=[events.append],
        faults=engine,
    )
    responses = []
    for request in flow_requests(version):
        reply = conn.receive(doe.encode(request))
        responses.append(doe.decode(reply.payloads[0]).message if reply.payloads else b"")
    return responses, [e.faults for e in events]


def test_fault_spec_grammar() -> None:
    from emulator.faults.model import ActionKind, FaultSpecError
    from emulator.faults.spec import parse_fault_spec, rule_from_mapping

    rule = parse_fault_spec(mutate_spec("9:0.3"))
    assert rule.action.kind is ActionKind.MUTATE and rule.seed == 9
    assert rule.when.prob == pytest.approx(0.3) and rule.id == "mutate"
    # the same rule from a profile's [[faults]] table or an MQTT command (a mapping)
    same = rule_from_mapping({"do": "mutate", "seed": "9", "prob": "0.3", "id": "mutate"})
    assert same.spec == rule.spec
    with pytest.raises(FaultSpecError, match="takes no argument"):
        parse_fault_spec("do=mutate:5")


def test_engine_mutation_is_deterministic_and_logged() -> None:
    first, faults = run_engine("do=mutate,seed=5")
    again, faults_again = run_engine("do=mutate,seed=5")
    assert first == again and faults == faults_again
    assert all(len(f) == 1 for f in faults)  # every response mutated (no prob)
    assert faults[0][0].startswith("f1: mutate (mutate seed=5 #1 ")
    assert faults[3][0].startswith("f1: mutate (mutate seed=5 #4 ")
    other, _ = run_engine("do=mutate,seed=6")
    assert other != first
    plain, none = run_engine("on=RESPOND_IF_READY,do=mutate,seed=5")  # never fires here
    assert all(not f for f in none)
    # mutate_exchange with the same seed and index gives the engine's bytes
    r = new_responder(_engine_device())
    for i, request in enumerate(flow_requests()):
        response = r.handle(request)
        assert response == plain[i][: len(response)]  # (the DOE padding aside)
        mutated, _m = mutate_exchange(response, request, r, seed=5, index=i + 1)
        assert first[i][: len(mutated)] == mutated


def test_engine_rate() -> None:
    responses, faults = run_engine("do=mutate,seed=3,prob=0.5")
    fired = [bool(f) for f in faults]
    assert any(fired) and not all(fired)
    assert run_engine("do=mutate,seed=3,prob=0.5") == (responses, faults)


def test_profile_faults_section_makes_the_rule() -> None:
    import tomllib

    from emulator.profiles import PROFILES_DIR, profile_from_dict

    data = tomllib.loads((PROFILES_DIR / "default.toml").read_text())
    data["faults"] = [{"do": "mutate", "seed": 11, "prob": 0.2}]
    profile = profile_from_dict(data, "hostile.toml")
    rules = profile.fault_rules()
    assert [r.action.kind.value for r in rules] == ["mutate"]
    assert rules[0].seed == 11 and rules[0].when.prob == pytest.approx(0.2)


async def test_serve_mutate_against_the_requester() -> None:
    """``serve --mutate 1:1`` end to end over a socket: the requester notices the lies."""
    from dataclasses import replace

    from emulator.app import Emulator
    from emulator.cli import build_parser, run_options
    from emulator.requester.transport import SocketClient
    from emulator.transport import get_binding

    args = build_parser().parse_args(["serve", "--mutate", "1:1"])
    emu = Emulator(replace(run_options(args), profile=fuzz_device().profile, port=0))
    (rule,) = emu.faults.rules
    assert (rule.id, rule.action.kind.value, rule.seed) == ("mutate", "mutate", 1)
    assert rule.origin == "cli" and rule.when.prob == 1.0
    async with (
        emu,
        SocketClient("127.0.0.1", emu.port, get_binding("doe"), timeout=10) as client,
    ):
        with pytest.raises(RequesterError):
            await authenticate(Requester(client, RequesterConfig(version=0x13)))


def test_mqtt_faults_command_makes_the_rule() -> None:
    """The control plane's ``faults`` command takes the same rule (spec or mapping)."""
    import json

    from emulator.control.commands import CommandProcessor

    dev = _engine_device()
    engine = _engine_of(dev)
    processor = CommandProcessor(dev, engine)
    reply = processor.handle("faults", json.dumps({"op": "add", "spec": mutate_spec("4:0.5")}))
    assert reply["ok"], reply
    rule = {"do": "mutate", "seed": 5, "prob": 0.25, "id": "m2"}
    reply = processor.handle("faults", json.dumps({"op": "add", "rule": rule}))
    assert reply["ok"], reply
    kinds = [(r.id, r.action.kind.value, r.seed) for r in engine.rules]
    assert kinds == [("mutate", "mutate", 4), ("m2", "mutate", 5)]
