"""The control plane's ``mel``, ``provisioning`` and ``reset`` commands (sans-I/O processor)
and, through a real mosquitto, a MEL entry appended by MQTT: the reply, the device event on
``<base>/device`` and the new entry in GET_MEASUREMENT_EXTENSION_LOG."""

from __future__ import annotations

import json

import pytest

from emulator.app import Emulator
from emulator.codec.constants import MelSpec
from emulator.control.commands import CommandProcessor
from emulator.options import RunOptions
from emulator.requester import RequesterConfig
from emulator.requester.mel import get_mel
from tests.mqtt_broker import Broker, mqtt_broker  # noqa: F401 (fixture)
from tests.test_control import Running, Watcher, until


def processor() -> tuple[CommandProcessor, Emulator]:
    emulator = Emulator(RunOptions(port=0))
    return CommandProcessor(emulator.device, emulator.faults, {}), emulator


def test_mel_append_and_list() -> None:
    proc, emu = processor()
    mel = emu.device.mel
    assert mel is not None
    before = mel.encoded()
    reply = proc.handle("mel", json.dumps({"text": "kernel 6.9", "type": "version"}))
    assert reply["ok"], reply
    assert reply["result"]["entry"] == {
        "mel_index": 4,
        "measurement_index": 8,
        "type": 6,
        "raw": True,
        "value": b"kernel 6.9".hex(),
    }
    assert mel.encoded() != before and len(mel) == 4
    listed = proc.handle("mel", b'{"op": "list"}')["result"]["entries"]
    assert [e["mel_index"] for e in listed] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b'{"op": "append"}', "exactly one of value (hex) or text"),
        (b'{"value": "zz"}', "value: 'zz' is not hex"),
        (b'{"text": "x", "type": "nonsense"}', "unknown measurement type"),
        (b'{"text": "x", "index": 3}', "measurement 3 is not extended by the MEL"),
        (b'{"text": "x", "raw": "yes"}', "raw: must be true or false"),
        (b'{"op": "list", "text": "x"}', "text: not for op list"),
        (b'{"op": "drop"}', "op: 'drop' is not one of append, list"),
    ],
)
def test_mel_command_errors(payload: bytes, error: str) -> None:
    proc, _ = processor()
    reply = proc.handle("mel", payload)
    assert reply["ok"] is False and error in reply["error"], reply


def test_provisioning_show_and_reset() -> None:
    proc, emu = processor()
    shown = proc.handle("provisioning", b"{}")
    assert shown["ok"], shown
    result = shown["result"]
    assert result["store"] == "memory (ephemeral)"
    assert [kp["key_pair_id"] for kp in result["key_pairs"]] == list(range(1, 13))
    assert result["key_pairs"][0]["capabilities"] == 0x3F and result["changed_slots"] == []
    assert proc.handle("provisioning", b'{"op": "device_reset"}')["ok"]
    reset = proc.handle("reset", b"{}")
    assert reset["ok"] and reset["result"] == {
        "connections": [],
        "measurements_applied": [],
        "slots_installed": [],
        "csrs_ready": [],
        "tdisp_unlocked": [],  # the default device has TDIs; none was locked
    }
    _ = emu


async def test_mel_append_over_mqtt(mqtt_broker: Broker) -> None:  # noqa: F811
    async with Running(mqtt_broker) as run:
        await run.plane.wait_connected()
        async with Watcher(mqtt_broker) as w:
            reply = await w.command("mel", {"op": "append", "text": "over mqtt"}, cid="m1")
            assert reply["ok"] and reply["id"] == "m1", reply
            await until(
                lambda: any(d.get("what") == "mel" for d in w.of("device")), "the mel event"
            )
            note = next(d for d in w.of("device") if d.get("what") == "mel")
            assert note["detail"]["value"] == b"over mqtt".hex()
            req, client = await run.requester()
            req.config = RequesterConfig(mel_spec=int(MelSpec.DMTF))
            await req.vca()
            assert (await get_mel(req)).entries[-1].value == b"over mqtt"
            await client.close()
