"""What a user of the command meets (issue 12, items 5-7): probe follows ResponseNotReady and
Busy as libspdm's requester does and shows the retries; no traceback for a closed pipe,
a linux-cma probe without a root or a negative seed; the documented behaviour (health
check VCA only, per-connection seeded streams, PCI IDs in hex, skip reasons, the Linux
CMA attribute and log prefix).

Commands run as a user runs them: ``python -m emulator`` in a subprocess, over real
loopback sockets.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from emulator.app import Emulator
from emulator.options import RunOptions
from emulator.requester import Requester, RequesterConfig
from emulator.requester.transport import SocketClient
from emulator.transport import get_binding
from tests.helpers import shipped_profile
from tests.test_cli import free_port, run

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


@contextmanager
def serving(*args: str) -> Iterator[int]:
    """``spdm-emulator serve ARGS`` on a free port, stopped afterwards."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator", "serve", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    banner = proc.stdout.readline()
    assert "listening on" in banner, banner + (proc.stderr.read() if proc.stderr else "")
    try:
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def readme_block(marker: str) -> str:
    """The README code block whose first line contains ``marker``."""
    for block in re.findall(r"```\w*\n(.*?)```", (ROOT / "README.md").read_text(), re.S):
        if marker in block.splitlines()[0]:
            return str(block)
    raise AssertionError(f"no README block starts with {marker!r}")


# --- 5: probe and ResponseNotReady / Busy --------------------------------------------------


def test_probe_passes_the_readme_flaky_ssd(tmp_path: Path) -> None:
    """The README's my-flaky-ssd profile, verbatim, plus a Busy on the second GET_MEASUREMENTS:
    probe answers the ResponseNotReady of GET_CERTIFICATE with RESPOND_IF_READY after RDT,
    sends GET_MEASUREMENTS again after each Busy (the profile's every=3 makes the retry
    Busy too), verifies the signed measurements over an L1/L2 that both sides restarted at
    each Busy, and lists every retry."""
    text = readme_block("# my-flaky-ssd.toml")
    assert tomllib.loads(text)["faults"][1] == {
        "on": "GET_CERTIFICATE",
        "nth": 1,
        "do": "not_ready",
        "rdt": 4,
    }
    (tmp_path / "profiles").mkdir()
    (tmp_path / "certs").symlink_to(ROOT / "certs")  # the profile's ../certs/...
    profile = tmp_path / "profiles" / "my-flaky-ssd.toml"
    profile.write_text(text)
    busy = "on=GET_MEASUREMENTS,nth=2,do=error:Busy"
    with serving("--profile", str(profile), "--fault", busy) as port:
        result = run("probe", f"127.0.0.1:{port}", "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(result.stdout)
        assert report["ok"] is True and report["challenge"] == "signature verified"
        assert report["measurements"]["signed"] is True
        retries = report["retries"]
        assert len(retries) == 3, retries
        assert retries[0].startswith("GET_CERTIFICATE: ERROR(ResponseNotReady) RDTExponent 4")
        assert "RESPOND_IF_READY" in retries[0]
        assert retries[1] == "GET_MEASUREMENTS: ERROR(Busy), sent again (1 of 3) after 0.1 s"
        assert retries[2] == "GET_MEASUREMENTS: ERROR(Busy), sent again (2 of 3) after 0.1 s"
        again = run("probe", f"127.0.0.1:{port}")  # the profile's second CHALLENGE lies
        assert again.returncode == 1
        assert "CHALLENGE_AUTH: the signature does not verify" in again.stdout


def test_busy_retries_are_bounded() -> None:
    with serving("--fault", "on=GET_DIGESTS,do=error:Busy") as port:
        result = run("probe", f"127.0.0.1:{port}", "--json", "--busy-delay", "0.01")
    report = json.loads(result.stdout)
    assert result.returncode == 1 and report["ok"] is False
    assert report["error"] == "GET_DIGESTS answered ERROR Busy (data 0x00)"
    assert len(report["retries"]) == 3 and report["retries"][-1].endswith("(3 of 3) after 0.01 s")


# --- 6: no tracebacks ------------------------------------------------------------------------


def closed_pipe_run(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run with stdout a pipe whose reader is already gone (``... | head`` after it quit)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "emulator", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            env=ENV,
            cwd=ROOT,
            timeout=60,
        )
    finally:
        os.close(write)


def test_a_closed_pipe_is_not_a_traceback() -> None:
    shown = closed_pipe_run("profiles", "show", "gpu")
    assert shown.returncode == 141 and shown.stderr == b""
    with serving() as port:
        probed = closed_pipe_run("probe", f"127.0.0.1:{port}")
    assert probed.returncode == 141 and probed.stderr == b""


def test_linux_cma_without_a_root_is_refused_before_connecting() -> None:
    accepted: list[object] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        port = listener.getsockname()[1]

        def accept() -> None:
            with suppress(OSError):
                accepted.append(listener.accept())

        thread = threading.Thread(target=accept)
        thread.start()
        result = run("probe", f"127.0.0.1:{port}", "--mode", "linux-cma")
        missing = run("probe", f"127.0.0.1:{port}", "--root", "/nonexistent/root.der")
        thread.join()
    assert result.returncode == 2
    assert result.stderr == (
        "spdm-emulator probe: error: --mode linux-cma needs --root FILE (the root the "
        "guest's .cma keyring trusts)\n"
    )
    assert missing.returncode == 2 and "--root /nonexistent/root.der" in missing.stderr
    assert accepted == []


@pytest.mark.parametrize("flag", ["--seed", "--fault-seed"])
def test_a_negative_seed_is_refused(flag: str) -> None:
    result = run("serve", flag, "-1")
    assert result.returncode == 2
    assert f"argument {flag}: seed -1 is negative (seeds are 0 or more)" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_negative_profile_seed_is_refused(tmp_path: Path) -> None:
    text = (ROOT / "profiles" / "nvme-ssd.toml").read_text()
    text = text.replace("../certs/", f"{ROOT / 'certs'}/") + "\n[determinism]\nseed = -1\n"
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    result = run("profiles", "check", str(bad))
    assert result.returncode == 1 and "determinism.seed" in result.stderr


# --- 7: what the documentation says is what happens -----------------------------------------


def test_the_health_check_probe_is_vca_only(tmp_path: Path) -> None:
    trace = tmp_path / "trace.txt"
    with serving("--trace", str(trace)) as port:
        result = run("probe", "--no-auth", f"127.0.0.1:{port}")
    assert result.returncode == 0, result.stderr
    requests = [
        line.split(" -> ")[1].split()[0]
        for line in trace.read_text().splitlines()
        if " -> " in line
    ]
    assert requests == ["GET_VERSION", "GET_CAPABILITIES", "NEGOTIATE_ALGORITHMS"]


async def _measurement_nonces(port: int, connections: int) -> list[bytes]:
    out = []
    for _ in range(connections):
        async with SocketClient("127.0.0.1", port, get_binding("doe")) as client:
            q = Requester(client, RequesterConfig(version=0x12))
            await q.vca()
            rsp = await q.send(bytes((0x12, 0xE0, 0, 0xFF)))  # all blocks, unsigned
            out.append(rsp)
    return out


async def test_seeded_streams_are_per_connection() -> None:
    """--seed: connection N of a run gets the same bytes as connection N of another run
    with the same requests; connections of one run get different streams."""
    runs = []
    for _ in range(2):
        emu = Emulator(
            RunOptions(profile=shipped_profile("default"), host="127.0.0.1", port=0, seed=7)
        )
        await emu.start()
        try:
            runs.append(await _measurement_nonces(emu.port, 2))
        finally:
            await emu.stop()
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[0][1]
    help_text = run("serve", "--help").stdout
    assert "each connection draws from its own stream" in re.sub(r"\s+", " ", help_text)
    assert "connection number" in re.sub(r"\s+", " ", (ROOT / "README.md").read_text())


def test_profiles_show_prints_pci_ids_in_hex() -> None:
    shown = json.loads(run("profiles", "show", "default").stdout)
    assert shown["device"]["pci"] == {
        "vendor_id": "0x1b36",
        "device_id": "0x0010",
        "class_code": "0x010802",
        "revision": "0x02",
        "subsystem_vendor_id": "0x1af4",
        "subsystem_id": "0x1100",
    }


def test_pytest_shows_skip_reasons() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "-rs" in config["tool"]["pytest"]["ini_options"]["addopts"].split()


def test_readme_states_the_linux_cma_interface() -> None:
    text = re.sub(r"\s+", " ", (ROOT / "README.md").read_text())
    assert "echo re > /sys/bus/pci/devices/0000:00:04.0/authenticated" in text
    assert "anything else written there is refused with EINVAL" in text
    assert "`SPDM:` prefix" in text and "`CMA:` prefix" not in text
    assert "write anything" not in text.lower()
