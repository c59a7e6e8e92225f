"""Provisioning through a real ``spdm-emulator serve`` process and socket: a chain set with
SET_CERTIFICATE survives a restart of the emulator (its --state-dir), ``state show`` /
``state reset`` see and clear it, and spdm-emu's OOB_ENCAP_ENDPOINT_INFO (0x8002) platform
command arms the encapsulated GET_ENDPOINT_INFO."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from emulator.codec.constants import BaseAsymAlgo, BaseHashAlgo, RequesterCap
from emulator.requester import Requester, RequesterConfig
from emulator.requester.events import serve_encapsulated
from emulator.requester.identity import flow_for
from emulator.requester.provisioning import get_csr, set_certificate
from emulator.requester.transport import SocketClient
from emulator.transport import get_binding
from emulator.transport.platform import PlatformCommand
from tests.test_cli import free_port, run
from tests.test_provisioning import TestCa

ROOT = Path(__file__).resolve().parent.parent
FLAGS = int(RequesterCap.CERT_CAP | RequesterCap.CHAL_CAP | RequesterCap.ENCAP_CAP)


@contextmanager
def serving(*args: str) -> Iterator[int]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator", "serve", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    banner = proc.stdout.readline()
    assert f"listening on 127.0.0.1:{port}" in banner, banner + (
        proc.stderr.read() if proc.stderr else ""
    )
    try:
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.stderr is not None
        assert "Traceback" not in proc.stderr.read()


def config() -> RequesterConfig:
    return RequesterConfig(
        version=0x13,
        flags=FLAGS,
        base_asym=int(BaseAsymAlgo.ECDSA_P384),
        base_hash=int(BaseHashAlgo.SHA_384),
    )


async def test_set_certificate_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ca = TestCa("restart CA")
    with serving("--state-dir", str(state)) as port:
        async with SocketClient("127.0.0.1", port, get_binding("doe")) as client:
            req = Requester(client, config())
            await req.vca()
            csr = await get_csr(req)
            certs = ca.issue(csr.csr.public_key())
            await set_certificate(req, 0, certs)
    assert (state / "state.json").is_file()
    shown = run("state", "show", "--state-dir", str(state), "--json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["document"]["slots"][0]["slot"] == 0
    assert "CN=dev" in report["document"]["slots"][0]["leaf"]
    shown = run("state", "show", "--state-dir", str(state), "--profile", "default", "--json")
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)["next_start"]
    assert "store" not in view and view["changed_slots"] == [[0, 2]]
    with serving("--state-dir", str(state)) as port:
        async with SocketClient("127.0.0.1", port, get_binding("doe")) as client:
            req = Requester(client, config())
            await req.vca()
            flow = flow_for(req, trusted_roots=[certs[0]])
            chain = await flow.get_certificate(0)
            assert [c.public_bytes(serialization.Encoding.DER) for c in chain.certs] == certs
            await flow.challenge(0)  # the device still signs with the key of that leaf
    cleared = run("state", "reset", "--state-dir", str(state))
    assert cleared.returncode == 0 and "state cleared" in cleared.stdout
    with serving("--state-dir", str(state)) as port:
        async with SocketClient("127.0.0.1", port, get_binding("doe")) as client:
            req = Requester(client, config())
            await req.vca()
            chain = await flow_for(req).get_certificate(0)
            assert [c.public_bytes(serialization.Encoding.DER) for c in chain.certs] != certs


async def test_ephemeral_keeps_nothing(tmp_path: Path) -> None:
    ca = TestCa("ephemeral CA")
    with serving("--state-dir", str(tmp_path), "--ephemeral") as port:
        async with SocketClient("127.0.0.1", port, get_binding("doe")) as client:
            req = Requester(client, config())
            await req.vca()
            csr = await get_csr(req)
            await set_certificate(req, 0, ca.issue(csr.csr.public_key()))
    assert not (tmp_path / "state.json").exists()


async def test_oob_encap_endpoint_info_over_the_socket() -> None:
    with serving("--ephemeral") as port:
        async with SocketClient("127.0.0.1", port, get_binding("doe")) as client:
            cfg = config()
            cfg.flags |= int(RequesterCap.EP_INFO_CAP_NO_SIG)
            req = Requester(client, cfg)
            await req.vca()
            await client.send_frame(PlatformCommand.OOB_ENCAP_ENDPOINT_INFO)
            frame = await client.recv_frame()
            assert frame.command == PlatformCommand.OOB_ENCAP_ENDPOINT_INFO
            res = await serve_encapsulated(req)
            assert [m.signed for m in res.endpoint_info_requests] == [False]
            assert res.requests[0][:4] == bytes((0x13, 0x87, 0x01, 0x00))
            # answered (with DEFAULT_REQUESTER_EP_INFO): nothing else is pending
            assert (await serve_encapsulated(req)).requests == []


def test_state_reset_refuses_while_an_emulator_writes(tmp_path: Path) -> None:
    from emulator.device.store import DirectoryStore

    store = DirectoryStore(tmp_path)
    store.save({"format": 1})  # takes the lock, as a serving emulator's first write
    try:
        result = run("state", "reset", "--state-dir", str(tmp_path))
        assert result.returncode == 2
        assert "in use by a running emulator" in result.stderr
    finally:
        store.unlock()
    assert run("state", "reset", "--state-dir", str(tmp_path)).returncode == 0


def test_probe_reports_key_pairs_mel_and_endpoint_info() -> None:
    with serving("--ephemeral") as port:
        result = run("probe", f"127.0.0.1:{port}", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert [p["id"] for p in report["key_pairs"]] == list(range(1, 13))
    assert report["key_pairs"][0] == {
        "id": 1,
        "asym": "0x10",
        "usage": "0x000F",
        "slots": "0x00",
        "caps": "0x3F",
    }
    # the MEL replays to block 8 (checked by the probe against GET_MEASUREMENTS)
    assert report["mel"] == {"entries": 3, "bytes": 63, "replayed": [8]}
    assert report["endpoint_info"]["signed"] is True
    assert report["endpoint_info"]["identifiers"][0]["vendor_id"] == "361b"
