"""The ``spdm-emulator`` command: serve, probe, profiles, and its errors (as a user runs it)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "emulator", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server() -> Iterator[tuple[int, subprocess.Popen[str]]]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    banner = proc.stdout.readline()  # printed once listening
    assert f"listening on 127.0.0.1:{port}" in banner, banner + (
        proc.stderr.read() if proc.stderr else ""
    )
    try:
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_serve_then_probe_json(server: tuple[int, subprocess.Popen[str]]) -> None:
    port, _proc = server
    result = run("probe", f"127.0.0.1:{port}", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["versions"] == ["1.0", "1.1", "1.2", "1.3"]
    assert report["version"] == "1.3"
    assert report["base_hash"] == "SHA_384"
    # the device keeps serving after the probe's connection is gone
    again = run("probe", f"127.0.0.1:{port}", "--spdm-version", "1.1")
    assert again.returncode == 0 and "1.1" in again.stdout


def test_serve_prints_qemu_option_and_stops_on_sigterm(
    server: tuple[int, subprocess.Popen[str]],
) -> None:
    port, proc = server
    assert proc.stdout is not None
    assert f"spdm_port={port}" in proc.stdout.readline()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert proc.stderr is not None
    assert "Traceback" not in proc.stderr.read()


def test_probe_without_device_fails_cleanly() -> None:
    result = run("probe", f"127.0.0.1:{free_port()}", "--timeout", "2")
    assert result.returncode == 1
    assert "ok                   False" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "abc"], "port 'abc' is not a number"),
        (["serve", "--port", "70000"], "port 70000 is outside 0..65535"),
        (["serve", "--transport", "pcie"], "invalid choice: 'pcie'"),
        (["serve", "--max-payload", "1"], "size 1 is outside"),
        (["serve", "--profile", "no-such-profile"], "no such file"),
        (["probe", "127.0.0.1:x"], "port 'x' is not a number"),
    ],
)
def test_bad_flags_give_one_clear_error(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_profile_names_file_field_and_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[device]\nname = "x"\n[spdm]\nversions = ["1.2"]\n'
        'capabilities = ["MEAS_CAP_NO_SIG", "MEAS_CAP_SIG"]\n'
        '[algorithms]\nbase_hash = ["SHA_256"]\nmeasurement_hash = ["SHA_256"]\n'
    )
    result = run("serve", "--profile", str(bad))
    assert result.returncode == 2
    assert f"{bad}: spdm.capabilities: MEAS_CAP_NO_SIG and MEAS_CAP_SIG" in result.stderr
    check = run("profiles", "check", str(bad))
    assert check.returncode == 1 and "reserves" in check.stderr


def test_port_in_use_is_reported(server: tuple[int, subprocess.Popen[str]]) -> None:
    port, _proc = server
    result = run("serve", "--port", str(port))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_profiles_list_and_show() -> None:
    listed = run("profiles", "list")
    assert listed.returncode == 0
    assert listed.stdout.startswith("default") or "\ndefault " in listed.stdout
    shown = run("profiles", "show", "default")
    assert json.loads(shown.stdout)["device"]["name"] == "default"
    for path in sorted((ROOT / "profiles").glob("*.toml")):
        assert run("profiles", "check", str(path)).returncode == 0, path


def test_version_flag() -> None:
    result = run("--version")
    assert result.returncode == 0 and result.stdout.startswith("spdm-emulator ")


def test_port_accepts_connections_once_banner_printed(
    server: tuple[int, subprocess.Popen[str]],
) -> None:
    # the banner promise: once printed, the port accepts connections
    port, _ = server
    deadline = time.monotonic() + 5
    with socket.create_connection(("127.0.0.1", port), timeout=deadline - time.monotonic()):
        pass


def test_probe_authenticates_and_reads_measurements(
    server: tuple[int, subprocess.Popen[str]],
) -> None:
    port, _proc = server
    root = ROOT / "certs" / "ecdsa-p384" / "slot0" / "root.der"
    result = run("probe", f"127.0.0.1:{port}", "--root", str(root), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["challenge"] == "signature verified"
    assert report["certificate"]["slot"] == 0 and report["certificate"]["trusted_root"]
    assert report["measurements"]["signed"] is True
    assert report["measurements"]["blocks"]


def test_probe_linux_cma_mode(server: tuple[int, subprocess.Popen[str]]) -> None:
    port, _proc = server
    root = ROOT / "certs" / "ecdsa-p384" / "slot0" / "root.der"
    ok = run("probe", f"127.0.0.1:{port}", "--mode", "linux-cma", "--root", str(root), "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["linux_cma"]["ok"] is True
    # a SAN for another device is rejected with the kernel's reason
    bad = run(
        "probe",
        f"127.0.0.1:{port}",
        "--mode",
        "linux-cma",
        "--root",
        str(root),
        "--san",
        "Vendor=8086:Device=0953:CC=010802:REV=01",
    )
    assert bad.returncode == 1
    assert "ok                   False" in bad.stdout
    assert "Leaf certificate of slot 0 has invalid Subject Alternative Name" in bad.stdout
    # an argument error, found before connecting (issue 12): usage status 2, on stderr
    missing = run("probe", f"127.0.0.1:{port}", "--mode", "linux-cma")
    assert missing.returncode == 2 and "needs --root" in missing.stderr


def test_probe_tdisp(server: tuple[int, subprocess.Popen[str]]) -> None:
    """probe --tdisp locks, attests, starts and stops the default profile's TDI."""
    port, _proc = server
    result = run("probe", f"127.0.0.1:{port}", "--no-auth", "--tdisp", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    tdisp = json.loads(result.stdout)["tdisp"]
    assert tdisp["function_id"] == "0xBEEF" and tdisp["versions"] == ["1.0"]
    assert tdisp["states"] == ["CONFIG_UNLOCKED", "CONFIG_LOCKED", "RUN", "CONFIG_UNLOCKED"]
    assert tdisp["report"]["bytes"] == 125 and tdisp["report"]["portions"] == 2
    assert tdisp["ide"].startswith("stream 0 keyed")
    # a TDI the device does not host: the TDISP error, by name, exit 1
    bad = run("probe", f"127.0.0.1:{port}", "--no-auth", "--tdisp", "0x0100")
    assert bad.returncode == 1
    assert "GET_TDISP_VERSION answered TDISP_ERROR INVALID_INTERFACE" in bad.stdout
    flag = run("probe", f"127.0.0.1:{port}", "--tdisp", "0x10000")
    assert flag.returncode == 2 and "not a 16-bit Requester ID" in flag.stderr
