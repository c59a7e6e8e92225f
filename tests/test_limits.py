"""Resource limits, tested from the outside (real loopback sockets, the real Emulator) and,
for memory, in-process with tracemalloc.

Every limit has a safe default and is configurable (RunOptions / ``serve`` flags).  No
assertion depends on how fast the machine is: waits are bounded only so that a broken
limit fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import struct
import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from emulator.app import Emulator
from emulator.cli import build_parser
from emulator.codec.constants import RequestCode
from emulator.connection import SpdmConnection
from emulator.device.model import Device
from emulator.options import DEFAULT_FRAME_TIMEOUT, RunOptions
from emulator.profiles import Profile, load_profile
from emulator.requester import LoopbackChannel, Requester, RequesterConfig
from emulator.requester.transport import SocketClient
from emulator.responder import Responder
from emulator.server.platform import Frame, FrameDecoder, PlatformCommand, encode_frame
from emulator.transport import get_binding
from tests.helpers import make_device

LOOPBACK = "127.0.0.1"
#: generous bound on any wait: reaching it means the limit did not act
HANG = 20.0
DOE = get_binding("doe")
GET_VERSION = b"\x10\x84\x00\x00"


@pytest.fixture(scope="module")
def profile() -> Profile:
    """The default profile, loaded once (its certificate chains are slow to load)."""
    return load_profile("default")


@pytest.fixture
def serve(profile: Profile) -> Callable[..., Any]:
    @contextlib.asynccontextmanager
    async def run(**options: Any) -> AsyncIterator[Emulator]:
        emu = Emulator(RunOptions(profile=profile, host=LOOPBACK, port=0, **options))
        await emu.start()
        try:
            yield emu
        finally:
            await emu.stop()

    return run


async def raw_connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(LOOPBACK, port)


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (bounded by HANG)."""
    data = bytearray()
    async with asyncio.timeout(HANG):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    return bytes(data)


def normal(payload: bytes) -> bytes:
    return encode_frame(Frame(PlatformCommand.NORMAL, 2, payload))


async def vca_ok(port: int, transport: str = "doe") -> int:
    async with SocketClient(LOOPBACK, port, get_binding(transport), timeout=HANG) as client:
        neg = await Requester(client, RequesterConfig(version=0x12)).vca()
        return neg.version


# ---- defaults and configuration -------------------------------------------------------------


def test_safe_defaults() -> None:
    cfg = RunOptions()
    assert cfg.max_payload == 0x1200  # QEMU's buffer
    assert cfg.max_connections == 1024
    assert cfg.frame_timeout == DEFAULT_FRAME_TIMEOUT == 30.0
    assert cfg.backlog >= cfg.max_connections
    opts = RunOptions()
    assert opts.frame_timeout == 30.0 and opts.max_connections == 1024


def test_serve_flags_reach_the_server_config(profile: Profile) -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--max-payload",
            "0x400",
            "--max-connections",
            "7",
            "--idle-timeout",
            "12",
            "--frame-timeout",
            "2.5",
        ]
    )
    assert (args.max_payload, args.max_connections) == (0x400, 7)
    assert (args.idle_timeout, args.frame_timeout) == (12.0, 2.5)
    emu = Emulator(
        RunOptions(
            profile=profile,
            max_payload=args.max_payload,
            max_connections=args.max_connections,
            idle_timeout=args.idle_timeout,
            frame_timeout=args.frame_timeout,
        )
    )
    cfg = emu.server.config
    assert (cfg.max_payload, cfg.max_connections, cfg.idle_timeout, cfg.frame_timeout) == (
        0x400,
        7,
        12.0,
        2.5,
    )
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--frame-timeout", "0"])


# ---- maximum concurrent connections --------------------------------------------------------


async def test_connection_over_the_maximum_is_refused_cleanly(
    serve: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "emulator.server")
    async with serve(max_connections=2) as emu:
        held = [SocketClient(LOOPBACK, emu.port, DOE, timeout=HANG) for _ in range(2)]
        for client in held:
            await client.connect()
            await Requester(client).vca()  # both are being served
        reader, writer = await raw_connect(emu.port)
        writer.write(normal(DOE.encode(GET_VERSION)))
        # accepted, then closed at once: nothing is answered
        assert await read_until_closed(reader) == b""
        writer.close()
        assert "max_connections" in caplog.text
        # the two held connections are unaffected ...
        for client in held:
            assert (await client.exchange(GET_VERSION)).message[1] == 0x04
        # ... and once one goes, a new connection is served again
        await held[0].close()
        for _ in range(200):
            if emu.server.connection_count < 2:
                break
            await asyncio.sleep(0.01)
        assert await vca_ok(emu.port) == 0x12
        await held[1].close()


# ---- maximum frame size ---------------------------------------------------------------------


def doe_object(size: int) -> bytes:
    """A DOE object of exactly ``size`` bytes carrying GET_VERSION (zero padding)."""
    body = GET_VERSION + bytes(size - 8 - len(GET_VERSION))
    return struct.pack("<HBBI", 1, 1, 0, size // 4) + body


async def test_frame_at_the_limit_is_served_and_one_byte_more_closes(
    serve: Callable[..., Any],
) -> None:
    async with serve(max_payload=0x100) as emu:
        reader, writer = await raw_connect(emu.port)
        writer.write(normal(doe_object(0x100)))
        decoder = FrameDecoder(0x1000)
        frames: list[Frame] = []
        async with asyncio.timeout(HANG):
            while not frames:
                frames = decoder.feed(await reader.read(4096))
        assert DOE.decode(frames[0].payload).message[:2] == b"\x10\x04"  # VERSION
        # the header alone announces 0x101 bytes: closed before any payload is sent
        writer.write(struct.pack(">III", PlatformCommand.NORMAL, 2, 0x101))
        assert await read_until_closed(reader) == b""
        writer.close()
        assert await vca_ok(emu.port) == 0x12  # the server still serves


async def test_huge_announced_size_is_never_buffered(serve: Callable[..., Any]) -> None:
    async with serve() as emu:
        reader, writer = await raw_connect(emu.port)
        writer.write(struct.pack(">III", PlatformCommand.NORMAL, 2, 0xFFFFFFFF) + bytes(1000))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        assert await read_until_closed(reader) == b""
        writer.close()


# ---- idle timeout ---------------------------------------------------------------------------


async def test_idle_connection_is_closed(
    serve: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "emulator.server")
    async with serve(idle_timeout=0.3) as emu:
        async with SocketClient(LOOPBACK, emu.port, DOE, timeout=HANG) as client:
            await Requester(client).vca()
            reader = client._reader
            assert reader is not None
            assert await read_until_closed(reader) == b""
        assert "idle_timeout" in caplog.text
        assert await vca_ok(emu.port) == 0x12


# ---- slow sender / slow reader (frame_timeout) ----------------------------------------------


async def test_frame_trickled_byte_by_byte_is_cut_off(
    serve: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "emulator.server")
    async with serve(frame_timeout=0.5) as emu:  # no idle timeout: only frame_timeout acts
        reader, writer = await raw_connect(emu.port)
        frame = normal(DOE.encode(GET_VERSION))
        sent = 0
        closed = asyncio.ensure_future(read_until_closed(reader))
        async with asyncio.timeout(HANG):
            while not closed.done():
                # one byte at a time, forever if need be: only the limit can end this
                if sent < len(frame):
                    try:
                        writer.write(frame[sent : sent + 1])
                        await writer.drain()
                    except ConnectionError:
                        break
                    sent += 1
                await asyncio.sleep(0.05)
        assert await closed == b""  # never answered
        writer.close()
        assert "frame_timeout" in caplog.text
        assert await vca_ok(emu.port) == 0x12


async def test_frame_left_incomplete_after_a_large_read_is_cut_off(
    serve: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A read larger than the server decodes at once (its whole frames handled over
    several slices) ending inside a frame: the frame deadline still applies."""
    caplog.set_level(logging.WARNING, "emulator.server")
    async with serve(frame_timeout=0.3) as emu:  # no idle timeout: only frame_timeout acts
        reader, writer = await raw_connect(emu.port)
        frame = normal(DOE.encode(GET_VERSION))
        count = 8192 // len(frame) + 1
        writer.write(frame * count + frame[:5])
        await writer.drain()
        data = await read_until_closed(reader)
        frames = FrameDecoder(0x1000).feed(data)
        assert len(frames) == count  # every whole frame answered, then closed
        assert all(DOE.decode(f.payload).message[1] == 0x04 for f in frames)
        writer.close()
        assert "frame incomplete" in caplog.text


async def test_idle_connection_without_idle_timeout_holds_no_timer(
    serve: Callable[..., Any],
) -> None:
    """No deadline applies to a connection at rest without idle_timeout: it holds no
    timer (one less object per idle connection)."""
    async with (
        serve(frame_timeout=0.3) as emu,
        SocketClient(LOOPBACK, emu.port, DOE, timeout=HANG) as client,
    ):
        await Requester(client).vca()
        (conn,) = emu.server._connections
        assert conn.timer is None
        await asyncio.sleep(0.4)  # longer than frame_timeout: the connection stays
        assert (await client.exchange(GET_VERSION)).message[1] == 0x04


async def test_frame_timeout_counts_per_frame(serve: Callable[..., Any]) -> None:
    """Many whole frames over a time longer than frame_timeout are all answered."""
    async with (
        serve(frame_timeout=0.3) as emu,
        SocketClient(LOOPBACK, emu.port, DOE, timeout=HANG) as client,
    ):
        for _ in range(10):
            reply = await client.exchange(GET_VERSION)
            assert reply.message[1] == 0x04
            await asyncio.sleep(0.05)


async def test_peer_that_never_reads_is_disconnected(
    serve: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Replies pile up unread: the server's writes stall and frame_timeout closes it."""
    caplog.set_level(logging.WARNING, "emulator.server")
    async with serve(transport="none", frame_timeout=0.5) as emu:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, (LOOPBACK, emu.port))
        vca = [
            GET_VERSION,
            *(msg for msg in vca_requests_12()),
        ]
        # each GET_CERTIFICATE answer is a whole DataTransferSize portion (~4.6 KB)
        cert = bytes((0x12, RequestCode.GET_CERTIFICATE, 0, 0, 0, 0, 0xFF, 0xFF))
        burst = b"".join(
            encode_frame(Frame(PlatformCommand.NORMAL, 0, m)) for m in [*vca, cert, cert]
        )
        await loop.sock_sendall(sock, burst)
        more = encode_frame(Frame(PlatformCommand.NORMAL, 0, cert)) * 64
        async with asyncio.timeout(HANG):
            while "frame_timeout" not in caplog.text:
                try:
                    await asyncio.wait_for(loop.sock_sendall(sock, more), 0.5)
                except (TimeoutError, ConnectionError, OSError):
                    await asyncio.sleep(0.1)
        sock.close()
        assert "has not taken" in caplog.text
        assert await vca_ok(emu.port, "none") == 0x12


def vca_requests_12() -> list[bytes]:
    from fuzz.harness import vca_requests

    return vca_requests(0x12)[1:]


# ---- memory per connection ------------------------------------------------------------------


def _growth(step: Callable[[], None], warmup: int, n: int) -> int:
    """Traced memory after ``warmup + n`` steps minus after ``warmup`` steps."""
    for _ in range(warmup):
        step()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            step()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return after - before


#: growth allowed over N requests, whatever N: a transcript that kept every message would
#: grow by ~100 bytes per request (over 200 KB here)
FLAT_BOUND = 48 * 1024
N_REQUESTS = 1000


@pytest.fixture(scope="module")
def device(profile: Profile) -> Device:
    return make_device(profile)


def negotiated(device: Device, version: int = 0x12) -> Responder:
    from fuzz.harness import vca_requests

    r = Responder(device)
    for request in vca_requests(version):
        assert r.handle(request)[1] != 0x7F
    return r


@pytest.mark.parametrize("version", [0x11, 0x12, 0x13])
def test_get_measurements_forever_does_not_grow_memory(device: Device, version: int) -> None:
    r = negotiated(device, version)
    request = bytes((version, RequestCode.GET_MEASUREMENTS, 0, 1))  # block 1, unsigned
    if version >= 0x13:
        request += bytes(8)  # RequesterContext
    first = r.handle(request)
    assert first[1] == 0x60, first.hex()

    def step() -> None:
        assert r.handle(request)[1] == 0x60

    assert _growth(step, 50, N_REQUESTS) < FLAT_BOUND


def test_the_measurement_catches_a_leak(device: Device) -> None:
    """A responder that kept ~100 bytes per request would fail the bound above."""
    r = negotiated(device)
    request = bytes((0x12, RequestCode.GET_MEASUREMENTS, 0, 1))
    kept: list[bytearray] = []

    def step() -> None:
        r.handle(request)
        kept.append(bytearray(100))

    assert _growth(step, 10, N_REQUESTS) > FLAT_BOUND


@pytest.mark.parametrize("version", [0x10, 0x12])
def test_get_digests_and_certificate_forever_do_not_grow_memory(
    device: Device, version: int
) -> None:
    r = negotiated(device, version)
    digests = bytes((version, RequestCode.GET_DIGESTS, 0, 0))
    cert = bytes((version, RequestCode.GET_CERTIFICATE, 0, 0, 0, 0, 0x00, 0x02))

    def step() -> None:
        assert r.handle(digests)[1] == 0x01
        assert r.handle(cert)[1] == 0x02

    assert r.handle(digests)[1] == 0x01
    assert _growth(step, 50, N_REQUESTS // 2) < FLAT_BOUND


def test_vca_forever_does_not_grow_memory(device: Device) -> None:
    from fuzz.harness import vca_requests

    r = Responder(device)
    requests = vca_requests(0x13)

    def step() -> None:
        for request in requests:
            assert r.handle(request)[1] != 0x7F

    assert _growth(step, 20, N_REQUESTS // 3) < FLAT_BOUND


def test_connection_path_does_not_grow_memory(device: Device) -> None:
    """The same through the transport glue, as the server drives it."""
    conn = SpdmConnection(device, DOE)
    for request in [GET_VERSION, *vca_requests_12()]:
        conn.receive(DOE.encode(request))
    request = DOE.encode(bytes((0x12, RequestCode.GET_MEASUREMENTS, 0, 0xFF)))

    def step() -> None:
        reply = conn.receive(request)
        assert DOE.decode(reply.payloads[0]).message[1] == 0x60

    assert _growth(step, 50, N_REQUESTS) < FLAT_BOUND


async def test_requester_loopback_sanity(device: Device) -> None:
    """The in-process requester sees the same device (guards the fixtures above)."""
    neg = await Requester(LoopbackChannel(Responder(device))).vca()
    assert neg.version == 0x13


# ---- maximum sessions (profile [sessions] max_sessions) -------------------------------------


async def test_session_over_the_maximum_is_refused(profile: Profile) -> None:
    from emulator.requester import SpdmErrorReply, identity
    from emulator.requester.session import ConnectionChannel, key_exchange, open_session

    assert profile.sessions.max_sessions == 4  # the default profile's (safe) default
    profile.sessions.max_sessions = 2
    try:
        device = make_device(profile)
    finally:
        profile.sessions.max_sessions = 4
    conn = SpdmConnection(device, DOE)
    req = Requester(ConnectionChannel(conn), RequesterConfig(version=0x12))
    await req.vca()
    chain = (await identity.get_certificate(req)).chain
    first = await open_session(req, peer_chain=chain, binding="doe", req_session_id=1)
    second = await open_session(req, peer_chain=chain, binding="doe", req_session_id=2)
    assert first.established and second.established
    with pytest.raises(SpdmErrorReply) as refused:
        await key_exchange(req, peer_chain=chain, binding="doe", req_session_id=3)
    assert refused.value.error_name == "SessionLimitExceeded"
    table = conn.responder.ctx.sessions
    assert table is not None and len(table) == 2
    # the refusal did not disturb the open sessions, and ending one makes room
    await second.heartbeat()
    await first.end_session()
    third = await open_session(req, peer_chain=chain, binding="doe", req_session_id=3)
    assert third.established and len(table) == 2


def test_in_session_requests_forever_do_not_grow_memory() -> None:
    """GET_MEASUREMENTS and HEARTBEAT in an established session (records, L2, sequence
    numbers) keep memory flat."""
    from fuzz.harness import ConnectionHarness, record_session

    prefix = record_session(0x12)
    assert prefix is not None, "the session could not be recorded"
    harness = ConnectionHarness(prefix)
    measure = bytes((0x12, RequestCode.GET_MEASUREMENTS, 0, 1))
    heartbeat = bytes((0x12, RequestCode.HEARTBEAT, 0, 0))

    def step() -> None:
        assert harness.send(measure, in_session=True)
        assert harness.send(heartbeat, in_session=True)

    assert _growth(step, 20, N_REQUESTS // 2) < FLAT_BOUND
