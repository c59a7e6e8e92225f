"""Fairness and back-pressure of the platform-socket server over real loopback sockets
(issue 12 item 2): a peer that pipelines thousands of frames does not hold up another
connection, a peer that does not read its replies is not read either, and nothing is lost
or reordered.  No assertion depends on the machine's speed: they count frames handled,
never seconds (the latency figures are in bench/, section ``flood``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from emulator.connection import Reply
from emulator.options import RunOptions
from emulator.server import server as server_mod
from emulator.server.platform import Frame, FrameDecoder, PlatformCommand, encode_frame
from emulator.server.server import SpdmServer
from emulator.transport import get_binding

LOOPBACK = "127.0.0.1"
NONE_T = 0
#: the hang guard of every wait (reaching it means the server is stuck)
HANG = 60.0


class Log:
    """The order in which the server handed frames to the endpoints."""

    def __init__(self) -> None:
        self.by_conn: dict[int, list[bytes]] = {}
        #: for each frame of connection 2 (the victim): how many frames of connection 1
        #: (the flooder) had been handled when it was
        self.flood_count_at_victim: list[int] = []


class Echo:
    """An endpoint that answers each payload with itself (and records the order)."""

    def __init__(self, number: int, log: Log) -> None:
        self.number = number
        self.log = log
        log.by_conn[number] = []

    def receive(self, payload: bytes) -> Reply:
        self.log.by_conn[self.number].append(payload)
        if self.number == 2:
            self.log.flood_count_at_victim.append(len(self.log.by_conn.get(1, [])))
        return Reply([payload])

    def close(self) -> None:
        pass


@pytest.fixture
async def served() -> AsyncIterator[tuple[SpdmServer, Log]]:
    log = Log()
    srv = SpdmServer(
        RunOptions(host=LOOPBACK, port=0, max_payload=0x1200),
        get_binding("none"),
        lambda number, peer: Echo(number, log),
    )
    async with srv:
        yield srv, log


def frames_of(payloads: list[bytes]) -> bytes:
    return b"".join(encode_frame(Frame(PlatformCommand.NORMAL, NONE_T, p)) for p in payloads)


async def read_frames(reader: asyncio.StreamReader, count: int) -> list[Frame]:
    decoder = FrameDecoder(0x10000)
    out: list[Frame] = []
    async with asyncio.timeout(HANG):
        while len(out) < count:
            data = await reader.read(1 << 16)
            assert data, f"the server closed the connection after {len(out)} of {count} frames"
            out += decoder.feed(data)
    return out


async def test_a_flooding_peer_does_not_hold_up_another(served: tuple[SpdmServer, Log]) -> None:
    """The victim's request, sent right after 20,000 pipelined frames of another peer,
    is handled before 2,000 more of them are: the flooder's frames are handled in short
    turns.  (A server that handles every frame of a read before looking at other
    sockets handles thousands of them first: a 64 KiB read holds 4,096 of these frames.)"""
    srv, log = served
    flood_reader, flood_writer = await asyncio.open_connection(LOOPBACK, srv.port)
    victim_reader, victim_writer = await asyncio.open_connection(LOOPBACK, srv.port)
    try:
        # both connections are served (numbers 1 and 2, in that order)
        flood_writer.write(frames_of([b"hello"]))
        assert (await read_frames(flood_reader, 1))[0].payload == b"hello"
        victim_writer.write(frames_of([b"hello"]))
        assert (await read_frames(victim_reader, 1))[0].payload == b"hello"
        assert sorted(log.by_conn) == [1, 2]

        n = 20_000
        flood = [b"f%d" % i for i in range(n)]
        replies = asyncio.ensure_future(read_frames(flood_reader, n))  # the flooder reads
        flood_writer.write(frames_of(flood))
        sent_at = len(log.by_conn[1])
        victim_writer.write(frames_of([b"victim"]))
        assert (await read_frames(victim_reader, 1))[0].payload == b"victim"
        handled_before = log.flood_count_at_victim[-1] - sent_at
        assert handled_before < 2_000, f"{handled_before} flood frames went first"
        got = await replies
        assert [f.payload for f in got] == flood  # nothing lost, nothing reordered
        assert log.by_conn[1][1:] == flood
    finally:
        for writer in (flood_writer, victim_writer):
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


async def test_a_peer_that_does_not_read_is_not_read_either(
    served: tuple[SpdmServer, Log],
) -> None:
    """Back-pressure: replies a peer does not read fill the server's write buffer, and
    the server stops handling (and reading) that peer's frames, so they wait in the TCP
    window; another connection is served meanwhile; once the peer reads, every reply
    arrives, in order."""
    srv, log = served
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, (LOOPBACK, srv.port))
    payload = bytes(4000)
    n = 3_000  # 12 MB of replies: far more than the kernel and the write buffer hold
    stream = frames_of([payload[:-6] + b"%06d" % i for i in range(n)])
    sent = 0

    async def send_what_fits() -> None:
        nonlocal sent
        while sent < len(stream):
            try:
                sent += sock.send(stream[sent : sent + 65536])
            except BlockingIOError:
                return

    try:
        await send_what_fits()
        # wait until the server stops taking frames from this peer
        stable = 0
        last = -1
        async with asyncio.timeout(HANG):
            while stable < 20:
                await asyncio.sleep(0.02)
                await send_what_fits()
                handled = len(log.by_conn.get(1, []))
                stable = stable + 1 if handled == last else 0
                last = handled
        assert 0 < last < n, f"{last} of {n} frames handled while the peer reads nothing"
        assert sent < len(stream), "the server kept reading a peer that does not read"
        # another connection is served meanwhile
        reader, writer = await asyncio.open_connection(LOOPBACK, srv.port)
        writer.write(frames_of([b"other"]))
        assert (await read_frames(reader, 1))[0].payload == b"other"
        writer.close()
        # the peer reads: everything arrives, in order
        decoder = FrameDecoder(0x10000)
        got: list[Frame] = []
        async with asyncio.timeout(HANG):
            while len(got) < n:
                await send_what_fits()
                try:
                    data = await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), 0.5)
                except TimeoutError:
                    continue
                assert data, "the server closed the connection"
                got += decoder.feed(data)
        assert [f.payload[-6:] for f in got] == [b"%06d" % i for i in range(n)]
    finally:
        sock.close()


async def test_quickack_is_rearmed_only_inside_a_frame(
    served: tuple[SpdmServer, Log], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read that ends on a frame boundary is answered (the reply carries the ACK); a
    read that ends inside a frame re-arms TCP_QUICKACK, so a peer that waits for our ACK
    before sending the rest of the frame (Nagle) is not delayed."""
    srv, _log = served
    calls: list[Any] = []
    monkeypatch.setattr(server_mod, "rearm_quickack", calls.append)
    reader, writer = await asyncio.open_connection(LOOPBACK, srv.port)
    whole = frames_of([b"whole"])
    writer.write(whole)
    assert (await read_frames(reader, 1))[0].payload == b"whole"
    assert calls == []
    writer.write(whole[:5])
    await writer.drain()
    async with asyncio.timeout(HANG):
        while not calls:
            await asyncio.sleep(0.01)
    writer.write(whole[5:])
    assert (await read_frames(reader, 1))[0].payload == b"whole"
    assert len(calls) == 1
    writer.close()
