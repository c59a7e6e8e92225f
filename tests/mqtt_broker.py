"""A real mosquitto broker on a free loopback port, for the control-plane tests.

:class:`Broker` writes a tiny ``mosquitto.conf`` (``listener PORT 127.0.0.1``,
``allow_anonymous true``, optionally a password file) in a temporary directory and
runs ``mosquitto -c`` as a child process; ``stop()`` kills it (to test a broker that
goes away) and ``start()`` brings it back on the same port.

The ``mqtt_broker`` fixture (imported by the test modules that need it) skips the
test when mosquitto is not installed (``.ci/run`` installs the Debian package).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

MOSQUITTO_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/bin/mosquitto")


def find_mosquitto() -> str | None:
    for path in MOSQUITTO_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("mosquitto")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """One mosquitto process on 127.0.0.1:port (restartable on the same port)."""

    def __init__(self, binary: str, workdir: Path, password: tuple[str, str] | None = None):
        self.binary = binary
        self.workdir = workdir
        self.host = "127.0.0.1"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "mosquitto.log"
        lines = [f"listener {self.port} {self.host}"]
        if os.geteuid() == 0:
            # as root mosquitto drops to user "mosquitto", who cannot read files under the
            # test's private tmp_path (password file, TLS keys): stay who we are
            lines.append("user root")
        if password is None:
            lines.append("allow_anonymous true")
        else:
            pwfile = workdir / "passwd"
            pwfile.write_text("")
            subprocess.run(
                [_passwd_tool(binary), "-b", str(pwfile), password[0], password[1]],
                check=True,
                capture_output=True,
            )
            pwfile.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=0.2),
            ):
                return
            time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.address}")

    def stop(self) -> None:
        """Kill the broker (SIGKILL: it goes away without saying goodbye)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _passwd_tool(binary: str) -> str:
    for candidate in (
        str(Path(binary).with_name("mosquitto_passwd")),
        "/usr/bin/mosquitto_passwd",
        shutil.which("mosquitto_passwd") or "",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.skip("mosquitto_passwd is not installed")


@pytest.fixture
def mqtt_broker(tmp_path: Path) -> Iterator[Broker]:
    """A running mosquitto on a free loopback port (skips when mosquitto is missing)."""
    binary = find_mosquitto()
    if binary is None:
        pytest.skip("mosquitto is not installed")
    broker = Broker(binary, tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mqtt_broker_with_password(tmp_path: Path) -> Iterator[Broker]:
    """mosquitto that accepts only user ``spdm`` / password ``secret``."""
    binary = find_mosquitto()
    if binary is None:
        pytest.skip("mosquitto is not installed")
    broker = Broker(binary, tmp_path, password=("spdm", "secret"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
