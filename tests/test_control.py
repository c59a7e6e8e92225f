"""The MQTT control plane against a real mosquitto broker (tests/mqtt_broker.py).

Everything is observed as a user would: a separate MQTT client subscribes to the device's
topics and sends commands; the project's requester talks to the emulator over a real
socket.  No assertion depends on timing: waits are hang guards that poll for a condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from emulator.app import Emulator
from emulator.codec.constants import ErrorCode, RequestCode
from emulator.connection import ExchangeEvent
from emulator.control import (
    ControlConfig,
    ControlConfigError,
    ControlPlane,
    control_config,
    parse_mqtt_address,
)
from emulator.control.commands import CommandProcessor
from emulator.faults.engine import FaultEngine
from emulator.options import RunOptions
from emulator.profiles import Profile, load_profile, load_profile_text
from emulator.requester import Requester, SpdmErrorReply
from emulator.requester.transport import SocketClient
from emulator.transport import get_binding
from tests.mqtt_broker import Broker, mqtt_broker, mqtt_broker_with_password

__all__ = ["mqtt_broker", "mqtt_broker_with_password"]  # fixtures used by name below

pytestmark = pytest.mark.mqtt

_PROFILE: list[Profile] = []


def profile() -> Profile:
    if not _PROFILE:
        _PROFILE.append(load_profile("default"))
    return _PROFILE[0]


async def until(predicate: Callable[[], bool], what: str, tries: int = 1000) -> None:
    """Poll until ``predicate`` holds (a hang guard, never a timing assertion)."""
    for _ in range(tries):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


class Watcher:
    """An MQTT client that records every message under the device's topics."""

    def __init__(self, broker: Broker, device: str = "default", **kw: Any) -> None:
        self.broker = broker
        self.base = f"spdm-emulator/{device}"
        self.kw = kw
        self.messages: list[tuple[str, Any]] = []
        self.client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> Watcher:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await self._task

    async def _run(self) -> None:
        async with aiomqtt.Client(self.broker.host, self.broker.port, **self.kw) as client:
            self.client = client
            await client.subscribe(f"{self.base}/#", qos=1)
            self._ready.set()
            async for msg in client.messages:
                raw = msg.payload
                text = raw.decode() if isinstance(raw, bytes) else str(raw)
                try:
                    value: Any = json.loads(text)
                except json.JSONDecodeError:
                    value = text
                self.messages.append((msg.topic.value[len(self.base) + 1 :], value))

    def of(self, topic: str) -> list[Any]:
        return [v for t, v in self.messages if t == topic]

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.of("event")

    @property
    def state(self) -> dict[str, Any] | None:
        states = self.of("state")
        return states[-1] if states else None

    async def command(self, name: str, payload: Any, cid: str | None = None) -> dict[str, Any]:
        """Publish a command, wait for the reply with its id."""
        assert self.client is not None
        if isinstance(payload, dict) and cid is not None:
            payload = {"id": cid, **payload}
        text = payload if isinstance(payload, str | bytes) else json.dumps(payload)
        before = len(self.of("reply"))
        await self.client.publish(f"{self.base}/cmd/{name}", text, qos=1)
        await until(lambda: len(self.of("reply")) > before, f"a reply to {name}")
        reply: dict[str, Any] = self.of("reply")[before]
        return reply


class Running:
    """An emulator on a free port with a control plane, inside the test's loop."""

    def __init__(self, broker: Broker | None, **config: Any) -> None:
        self.emulator = Emulator(RunOptions(profile=profile(), port=0, transport="doe", seed=5))
        self.emulator.device.seed = 5
        cfg = ControlConfig(
            host="127.0.0.1",
            port=broker.port if broker else 1,
            reconnect_min=0.05,
            reconnect_max=0.2,
            state_interval=0.05,
            **config,
        )
        self.plane = ControlPlane(
            self.emulator.device,
            self.emulator.faults,
            cfg,
            connections=self.emulator.connections,
        )
        self.emulator.observers.append(self.plane.observer)

    async def __aenter__(self) -> Running:
        await self.emulator.start()
        await self.plane.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.plane.stop()
        await self.emulator.stop()

    async def requester(self) -> tuple[Requester, SocketClient]:
        client = SocketClient("127.0.0.1", self.emulator.port, get_binding("doe"), timeout=10)
        await client.connect()
        return Requester(client), client


@pytest.fixture
async def running(mqtt_broker: Broker) -> AsyncIterator[Running]:
    async with Running(mqtt_broker) as run:
        await run.plane.wait_connected()
        yield run


# ---------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("broker", ("broker", 1883)),
        ("10.0.0.5:1884", ("10.0.0.5", 1884)),
        ("[::1]", ("::1", 1883)),
        ("[::1]:8883", ("::1", 8883)),
    ],
)
def test_parse_mqtt_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_mqtt_address(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty address"),
        ("host:x", "port 'x' is not a number"),
        ("host:0", "not within 1..65535"),
        ("::1", "write an IPv6 address as [ADDR]:PORT"),
        ("[::1", "missing ']'"),
        (":1883", "no host"),
    ],
)
def test_parse_mqtt_address_errors(text: str, problem: str) -> None:
    with pytest.raises(ControlConfigError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        parse_mqtt_address(text)


def test_control_config_from_profile_and_flag(tmp_path: Path) -> None:
    base = (
        '[device]\nname = "d"\n[spdm]\nversions = ["1.2"]\n[algorithms]\nbase_hash = ["SHA_256"]\n'
    )
    off = load_profile_text(base, "p.toml")
    assert control_config(off) is None  # off unless asked
    on = control_config(off, "broker:1999")
    assert on is not None and (on.host, on.port, on.topic_prefix) == (
        "broker",
        1999,
        "spdm-emulator",
    )
    prof = load_profile_text(
        base + '[mqtt]\nenabled = true\nhost = "mq"\nusername = "u"\npassword = "p"\n'
        'topic_prefix = "lab/spdm"\ntls = true\nca_file = "ca.pem"\n',
        "p.toml",
        base_dir=tmp_path,
    )
    cfg = control_config(prof)
    assert cfg is not None
    assert (cfg.host, cfg.port, cfg.username, cfg.password) == ("mq", 1883, "u", "p")
    assert cfg.ca_file == str(tmp_path / "ca.pem") and cfg.tls
    flagged = control_config(prof, "other")
    assert flagged is not None and (flagged.host, flagged.port) == ("other", 8883)  # TLS default
    with pytest.raises(ControlConfigError, match="mqtt TLS files"):
        cfg.ssl_context()  # ca.pem does not exist
    with pytest.raises(ControlConfigError, match=r"password: needs mqtt\.username"):
        ControlConfig(password="x")


def test_observer_queue_is_bounded_and_counts_drops() -> None:
    emulator = Emulator(RunOptions(profile=profile(), port=0))
    device = emulator.device
    plane = ControlPlane(device, emulator.faults, ControlConfig(queue_size=3))
    for i in range(10):
        plane.observer(ExchangeEvent(1, "default", bytes([0x10, 0x84, 0, 0]), None, None))
        assert plane.queued == min(i + 1, 3)
    assert plane.dropped == 7
    assert plane.state()["telemetry"]["dropped"] == 7


# ---------------------------------------------------------------------------- commands (sans-I/O)


def _processor() -> tuple[CommandProcessor, FaultEngine]:
    emulator = Emulator(RunOptions(profile=profile(), port=0))
    return CommandProcessor(emulator.device, emulator.faults, {}), emulator.faults


@pytest.mark.parametrize(
    ("command", "payload", "error"),
    [
        ("faults", b"{not json", "payload is not valid JSON"),
        ("faults", b"\xff\xfe", "payload is not UTF-8"),
        ("faults", b"", "empty payload"),
        ("faults", b"[1, 2]", "payload must be a JSON object, not list"),
        ("faults", b'{"op": "add", "spec": "do=drop", "color": 1}', "unknown field 'color'"),
        ("faults", b'{"op": "explode"}', "op: 'explode' is not one of add, clear, list"),
        ("faults", b'{"spec": "do=drop"}', "op: missing"),
        ("faults", b'{"op": "add"}', "exactly one of rule (object) or spec (string)"),
        ("faults", b'{"op": "add", "spec": "nth=0,do=drop"}', "spec: nth: 0 is below"),
        ("faults", b'{"op": "add", "rule": {"do": "drop", "nht": 2}}', "rule: nht: unknown key"),
        ("faults", b'{"op": "add", "rule": "do=drop"}', "rule: must be a JSON object"),
        ("faults", b'{"op": "clear", "rule": "f9"}', "no rule 'f9'"),
        ("measurements", b'{"index": 2}', "exactly one of value (hex) or text"),
        ("measurements", b'{"index": 2, "value": "zz"}', "value: 'zz' is not hex"),
        ("measurements", b'{"index": 99, "value": "00"}', "99"),
        ("measurements", b'{"op": "list", "index": 1}', "index: not for op list"),
        ("reset", b'{"connection": 3}', "no live connection 3"),
        ("reset", b'{"connection": "all"}', "not a connection number"),
        ("reboot", b"{}", "unknown command 'reboot'"),
    ],
)
def test_bad_commands_get_clear_errors(command: str, payload: bytes, error: str) -> None:
    proc, _ = _processor()
    reply = proc.handle(command, payload)
    assert reply["ok"] is False and reply["command"] == command
    assert error in reply["error"], reply["error"]


def test_command_ids_are_echoed_even_on_errors() -> None:
    proc, engine = _processor()
    ok = proc.handle("faults", json.dumps({"id": "c-1", "op": "add", "spec": "do=drop,id=x"}))
    assert ok == {
        "id": "c-1",
        "command": "faults",
        "ok": True,
        "result": {
            "rule": {"id": "x", "spec": "do=drop", "origin": "mqtt", "matched": 0, "fired": 0}
        },
    }
    bad = proc.handle("faults", json.dumps({"id": 17, "op": "add", "spec": "do=nope"}))
    assert bad["id"] == 17 and bad["ok"] is False
    assert [r.id for r in engine.rules] == ["x"]


# ---------------------------------------------------------------------------- over a broker


async def test_events_and_state_are_published(running: Running, mqtt_broker: Broker) -> None:
    async with Watcher(mqtt_broker) as w:
        req, client = await running.requester()
        await req.vca()
        await until(lambda: len(w.events) >= 3, "three events")
        names = [(e["request"]["name"], e["response"]["name"]) for e in w.events]
        assert names == [
            ("GET_VERSION", "VERSION"),
            ("GET_CAPABILITIES", "CAPABILITIES"),
            ("NEGOTIATE_ALGORITHMS", "ALGORITHMS"),
        ]
        for event, (request, response) in zip(w.events, req.log, strict=True):
            assert event["request"] == {
                "direction": "to_device",
                "name": event["request"]["name"],
                "code": request[1],
                "size": len(request),
            }
            # DOE pads to whole DWORDs; the event has the SPDM message's own size
            assert (event["response"]["size"] + 3) // 4 * 4 == len(response)
            assert event["response"]["code"] == response[1]
            assert event["connection"] == 1 and event["faults"] == [] and event["error"] is None
            assert event["session"] is None and event["secured"] is False
        assert [e["seq"] for e in w.events] == [1, 2, 3]

        def negotiated() -> bool:
            st = w.state
            return bool(st and st["connections"] and st["connections"][0]["version"] == "1.3")

        await until(negotiated, "the state with the negotiated version")
        state = w.state
        assert state is not None and state["online"] is True
        conn = state["connections"][0]
        assert conn["state"] == "NEGOTIATED"
        assert req.neg.algorithms is not None
        from emulator.codec.constants import BaseAsymAlgo, BaseHashAlgo

        assert conn["algorithms"]["base_asym"] == BaseAsymAlgo(req.neg.base_asym).name
        assert conn["algorithms"]["base_hash"] == BaseHashAlgo(req.neg.base_hash).name
        assert state["telemetry"]["dropped"] == 0
        await client.close()


async def test_faults_over_mqtt(running: Running, mqtt_broker: Broker) -> None:
    async with Watcher(mqtt_broker) as w:
        reply = await w.command(
            "faults",
            {"op": "add", "spec": "on=NEGOTIATE_ALGORITHMS,nth=1,do=error:Busy,id=busy"},
            cid="c1",
        )
        assert reply["id"] == "c1" and reply["ok"] is True
        assert reply["result"]["rule"]["spec"] == "on=NEGOTIATE_ALGORITHMS,nth=1,do=error:Busy"
        reply = await w.command(
            "faults", {"op": "add", "rule": {"on": ["GET_CAPABILITIES"], "do": "drop", "nth": 9}}
        )
        assert reply["ok"] and reply["id"] is None and reply["result"]["rule"]["id"] == "f1"
        req, client = await running.requester()
        await req.get_version()
        await req.get_capabilities()
        with pytest.raises(SpdmErrorReply) as info:
            await req.negotiate_algorithms()
        assert info.value.response == bytes([0x13, 0x7F, ErrorCode.Busy, 0])
        await req.negotiate_algorithms()
        await until(lambda: len(w.events) >= 4, "four events")
        assert w.events[2]["faults"] == ["busy: error:Busy"]
        assert w.events[2]["error"] == "Busy" and w.events[2]["error_code"] == 3
        listing = await w.command("faults", {"op": "list"}, cid="c3")
        rules = {r["id"]: r for r in listing["result"]["rules"]}
        assert rules["busy"]["matched"] == 2 and rules["busy"]["fired"] == 1
        assert rules["f1"]["matched"] == 1 and rules["f1"]["fired"] == 0
        assert listing["result"]["applied"] == 1
        cleared = await w.command("faults", {"op": "clear", "rule": "busy"})
        assert cleared["result"] == {"removed": 1}
        cleared = await w.command("faults", {"op": "clear"})
        assert cleared["result"] == {"removed": 1}
        assert len(running.emulator.faults) == 0
        await until(
            lambda: bool(w.state) and w.state["faults"]["rules"] == [],  # type: ignore[index]
            "the state without rules",
        )
        await client.close()


async def test_bad_command_over_mqtt_gets_an_error_reply(
    running: Running, mqtt_broker: Broker
) -> None:
    async with Watcher(mqtt_broker) as w:
        reply = await w.command("faults", "{oops")
        assert reply["ok"] is False and reply["id"] is None
        assert "not valid JSON" in reply["error"]
        reply = await w.command("faults", {"op": "add", "spec": "do=drop", "when": 1}, cid="x")
        assert reply == {
            "id": "x",
            "command": "faults",
            "ok": False,
            "error": "unknown field 'when'; faults takes id, op, rule, spec",
        }
        reply = await w.command("nonsense", {"id": "y"})
        assert reply["id"] == "y" and "unknown command 'nonsense'" in reply["error"]
        # the emulator still answers
        req, client = await running.requester()
        await req.vca()
        await client.close()


async def test_measurement_and_reset_commands(running: Running, mqtt_broker: Broker) -> None:
    from emulator.requester.measurements import get_measurements

    async with Watcher(mqtt_broker) as w:
        req, client = await running.requester()
        await req.vca()
        store = running.emulator.device.measurements
        index = store.indices()[0]
        reply = await w.command(
            "measurements", {"op": "set", "index": index, "value": "c0ffee"}, cid="m1"
        )
        assert reply["ok"], reply
        assert reply["result"]["blocks"][0]["value"] == "c0ffee"
        result = await get_measurements(req, index, raw=True)
        block = result.blocks[0]
        from emulator.device.measurements import Representation

        stored = store.get(index)
        assert stored is not None and stored.value == bytes.fromhex("c0ffee")
        if stored.representation is Representation.RAW or req.version >= 0x12:
            assert block.value == bytes.fromhex("c0ffee") or len(block.value) in (32, 48, 64)
        # reset: the connection forgets VCA (as after GET_VERSION)
        reply = await w.command("reset", {"connection": 1}, cid="r1")
        assert reply["ok"] and reply["result"]["connections"] == [1]
        with pytest.raises(SpdmErrorReply) as info:
            await req.send(req.negotiate_request())
        assert info.value.code == ErrorCode.UnexpectedRequest
        await req.vca()
        await client.close()


async def test_broker_killed_mid_run(mqtt_broker: Broker) -> None:
    """The emulator keeps answering with the broker gone, and publishes again when it
    returns: the events queued meanwhile first, then new ones."""
    async with Running(mqtt_broker) as run:
        await run.plane.wait_connected()
        async with Watcher(mqtt_broker) as w:
            req, client = await run.requester()
            await req.vca()
            await until(lambda: len(w.events) == 3, "the first events")
        mqtt_broker.stop()
        await until(lambda: not run.plane.connected, "the plane to notice")
        answered = 0
        for _ in range(20):
            await req.get_version()
            answered += 1
        assert answered == 20  # every request answered with no broker
        assert run.plane.queued == 20 and run.plane.dropped == 0
        mqtt_broker.start()
        await run.plane.wait_connected()
        await until(lambda: run.plane.queued == 0, "the queue to drain")
        assert run.plane.published == 23 and run.plane.reconnects == 1
        async with Watcher(mqtt_broker) as w2:
            await req.vca()

            def seqs() -> set[int]:
                return {e["seq"] for e in w2.events}

            # the broker may still be delivering queued events: wait for the new ones
            await until(lambda: {24, 25, 26} <= seqs(), "events after the broker returned")
            assert min(seqs()) > 3  # nothing from before the outage is published twice
            await until(
                lambda: bool(w2.state) and w2.state["telemetry"]["published"] >= 23,  # type: ignore[index]
                "the retained state",
            )
            assert w2.state is not None and w2.state["telemetry"]["reconnects"] == 1
        await client.close()


async def test_broker_absent_then_small_queue_drops(mqtt_broker: Broker) -> None:
    mqtt_broker.stop()
    async with Running(mqtt_broker, queue_size=5) as run:
        req, client = await run.requester()
        for _ in range(4):
            await req.vca()  # 12 exchanges, broker absent
        assert run.plane.queued == 5 and run.plane.dropped == 7 and not run.plane.connected
        mqtt_broker.start()
        await run.plane.wait_connected()
        await until(lambda: run.plane.queued == 0, "the queue to drain")
        async with Watcher(mqtt_broker) as w:

            def telemetry() -> dict[str, Any]:
                return w.state["telemetry"] if w.state else {}

            # the retained state catches up with the counters (at most state_interval later)
            await until(lambda: telemetry().get("published") == 5, "the state after the drain")
            assert telemetry()["dropped"] == 7 and telemetry()["queued"] == 0
        await client.close()


async def test_username_and_password(mqtt_broker_with_password: Broker) -> None:
    broker = mqtt_broker_with_password
    async with Running(broker, username="spdm", password="secret") as run:
        await run.plane.wait_connected()
        async with Watcher(broker, username="spdm", password="secret") as w:
            await until(lambda: w.state is not None, "the retained state")
            req, client = await run.requester()
            await req.vca()
            await until(lambda: len(w.events) == 3, "events")
            await client.close()
    async with Running(broker, username="spdm", password="wrong") as run:
        req, client = await run.requester()
        await req.vca()  # refused by the broker: the emulator does not care
        assert not run.plane.connected and run.plane.queued == 3
        await client.close()


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _tls_material(tmp: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 (P-256)."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test mqtt CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        # what OpenSSL's strict checks (Python 3.13's default VERIFY_X509_STRICT) require
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (tmp / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp / "server.pem").write_bytes(cert.public_bytes(pem))
    (tmp / "server.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"


async def test_tls_broker(tmp_path: Path) -> None:
    from tests.mqtt_broker import find_mosquitto

    binary = find_mosquitto()
    if binary is None:
        pytest.skip("mosquitto is not installed")
    ca, cert, key = _tls_material(tmp_path)
    broker = Broker(binary, tmp_path)
    broker.conf.write_text(
        broker.conf.read_text() + f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
    )
    broker.start()
    try:
        async with Running(broker, tls=True, ca_file=str(ca)) as run:
            await run.plane.wait_connected()
            ctx = ssl.create_default_context(cafile=str(ca))
            async with Watcher(broker, tls_context=ctx) as w:
                await until(lambda: w.state is not None, "the retained state over TLS")
                req, client = await run.requester()
                await req.vca()
                await until(lambda: len(w.events) == 3, "events over TLS")
                await client.close()
    finally:
        broker.stop()


def test_request_codes_in_events_are_numbers() -> None:
    from emulator.control.telemetry import event_json

    ev = ExchangeEvent(
        2,
        "d",
        bytes([0x13, RequestCode.CHALLENGE, 0, 0]),
        bytes([0x13, 0x7F, 0x03, 0]),
        0x1234,
        True,
        3,
        "busy",
        ("f1: error:Busy",),
    )
    out = event_json(ev, 9, 100.0)
    assert out == {
        "seq": 9,
        "time": 100.0,
        "device": "d",
        "connection": 2,
        "request": {"direction": "to_device", "name": "CHALLENGE", "code": 0x83, "size": 4},
        "response": {"direction": "from_device", "name": "ERROR", "code": 0x7F, "size": 4},
        "secured": True,
        "session": "0x00001234",
        "error": "Busy",
        "error_code": 3,
        "reason": "busy",
        "faults": ["f1: error:Busy"],
    }


async def test_serve_cli_with_mqtt_and_fault(mqtt_broker: Broker, tmp_path: Path) -> None:
    """``spdm-emulator serve --mqtt ... --fault ...`` as a user runs it."""
    import os
    import re
    import signal
    import sys

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    async with Watcher(mqtt_broker) as w:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "emulator",
            "serve",
            "--port",
            "0",
            "--log-level",
            "warning",
            "--mqtt",
            mqtt_broker.address,
            "--fault",
            "on=NEGOTIATE_ALGORITHMS,nth=1,do=error:ResetRequired",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=tmp_path,
        )
        try:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            match = re.search(r"listening on [\d.]+:(\d+)", line)
            assert match, line
            port = int(match.group(1))
            await until(lambda: w.state is not None, "the device state")
            client = SocketClient("127.0.0.1", port, get_binding("doe"), timeout=10)
            await client.connect()
            req = Requester(client)
            await req.get_version()
            await req.get_capabilities()
            with pytest.raises(SpdmErrorReply) as info:
                await req.negotiate_algorithms()
            assert info.value.error_name == "ResetRequired"
            await req.negotiate_algorithms()
            await client.close()
            await until(lambda: len(w.events) >= 4, "the events")
            assert w.events[2]["faults"] == ["f1: error:ResetRequired"]
            reply = await w.command("faults", {"op": "list"}, cid="cli")
            assert reply["result"]["rules"][0]["origin"] == "cli"
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
    assert proc.returncode == 0


async def test_device_changes_are_published(running: Running, mqtt_broker: Broker) -> None:
    """device.notify (a measurement update here) goes to <base>/device as JSON."""
    async with Watcher(mqtt_broker) as w:
        store = running.emulator.device.measurements
        index = store.indices()[0]
        store.set_value(index, bytes.fromhex("0badc0de"))
        await until(lambda: bool(w.of("device")), "a device change message")
        note = w.of("device")[0]
        assert note["what"] == "measurement"
        assert isinstance(note["time"], float)
        assert str(index) in json.dumps(note["detail"])
    await running.plane.stop()
    assert running.plane._on_device not in running.emulator.device.listeners
