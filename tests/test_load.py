"""Load: 1000 connections at once, each negotiating VCA, against a real ``spdm-emulator
serve`` process on loopback; all are answered and the server still serves afterwards.

The server runs in its own process so that its memory can be read from /proc: the
test reports (and bounds, generously) the resident memory per idle negotiated connection.
Bounded in count (1000) and in time (each wait has a cap), loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.requester import Requester, RequesterConfig
from emulator.requester.transport import SocketClient
from emulator.transport import get_binding

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
N_CONNECTIONS = 1000
#: file descriptors needed: the test's 1000 client sockets, the server's 1000, and slack
FDS_NEEDED = 2 * N_CONNECTIONS + 100
#: a generous sanity bound on resident memory per idle negotiated connection
MAX_BYTES_PER_CONNECTION = 256 * 1024
DOE = get_binding("doe")


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < FDS_NEEDED:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below the {FDS_NEEDED} fds needed")
    if soft != resource.RLIM_INFINITY and soft < FDS_NEEDED:
        resource.setrlimit(resource.RLIMIT_NOFILE, (FDS_NEEDED, hard))


def _rss(pid: int) -> int:
    """Resident set size of a process, in bytes (Linux /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert match, status
    return int(match.group(1)) * 1024


@pytest.fixture
def server() -> Iterator[tuple[subprocess.Popen[str], int]]:
    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux /proc to read the server's memory")
    _raise_fd_limit()  # before the spawn: the server inherits the limit
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator.cli", "serve", "--port", "0", "--log-level", "error"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "... listening on 127.0.0.1:PORT, transport doe"
        match = re.search(r"listening on [^ ]+:(\d+)", line)
        if not match:
            proc.kill()
            _, err = proc.communicate(timeout=10)
            pytest.fail(f"server did not start: {line!r} {err[-2000:]}")
        yield proc, int(match.group(1))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_1000_connections_at_once(server: tuple[subprocess.Popen[str], int]) -> None:
    proc, port = server
    versions = (0x10, 0x11, 0x12, 0x13)

    # the server process has loaded and warmed up: one negotiation before measuring
    async with SocketClient(LOOPBACK, port, DOE, timeout=30) as warm:
        await Requester(warm).vca()
    await asyncio.sleep(0.2)
    rss_before = _rss(proc.pid)

    clients = [SocketClient(LOOPBACK, port, DOE, timeout=60) for _ in range(N_CONNECTIONS)]
    negotiated = asyncio.Event()
    done = 0

    async def one(i: int, client: SocketClient) -> int:
        nonlocal done
        await client.connect()
        neg = await Requester(client, RequesterConfig(version=versions[i % 4])).vca()
        done += 1
        if done == N_CONNECTIONS:
            negotiated.set()
        await negotiated.wait()  # every connection stays open until all have negotiated
        return neg.version

    try:
        async with asyncio.timeout(180):
            results = await asyncio.gather(*(one(i, c) for i, c in enumerate(clients)))
        assert results == [versions[i % 4] for i in range(N_CONNECTIONS)]
        await asyncio.sleep(0.2)
        rss_loaded = _rss(proc.pid)
        per_connection = (rss_loaded - rss_before) / N_CONNECTIONS
        print(
            f"\nserver RSS {rss_before / 2**20:.1f} MiB -> {rss_loaded / 2**20:.1f} MiB with "
            f"{N_CONNECTIONS} idle negotiated connections: {per_connection / 1024:.1f} KiB each"
        )
        assert per_connection < MAX_BYTES_PER_CONNECTION
        # all of them still answer (every connection kept its own state)
        async with asyncio.timeout(120):
            replies = await asyncio.gather(*(c.exchange(b"\x10\x84\x00\x00") for c in clients))
        assert all(r.message[1] == 0x04 for r in replies)
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()

    # and the server keeps serving after they are gone
    async with SocketClient(LOOPBACK, port, DOE, timeout=30) as after:
        neg = await Requester(after).vca()
        assert neg.version == 0x13
    assert proc.poll() is None
