"""The asyncio platform-socket server over real loopback sockets, with a fake endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from emulator.connection import Reply
from emulator.errors import RequesterError
from emulator.options import RunOptions
from emulator.requester.transport import CLIENT_HELLO, SocketClient
from emulator.server import server as server_mod
from emulator.server.platform import Frame, FrameDecoder, PlatformCommand, encode_frame
from emulator.server.server import SERVER_HELLO, SpdmServer, configure_socket
from emulator.transport import (
    CommandAnswer,
    Endpoint,
    RecordFormat,
    SocketTransport,
    TransportMessage,
    get_binding,
)

LOOPBACK = "127.0.0.1"


class FakeConn:
    """A ConnectionLike whose behaviour is chosen by the payload's first word."""

    def __init__(self, number: int, peer: str) -> None:
        self.number = number
        self.peer = peer
        self.received: list[bytes] = []
        self.closed = 0

    def receive(self, payload: bytes) -> Reply:
        self.received.append(payload)
        if payload.startswith(b"raise"):
            raise RuntimeError("bug in the responder")
        if payload.startswith(b"delay"):
            return Reply([b"delayed:" + payload], delay=0.05)
        if payload.startswith(b"partial"):
            return Reply([b"X" * 20], partial=5)
        if payload.startswith(b"close"):
            return Reply([b"bye"], close=True)
        if payload.startswith(b"drop"):
            return Reply([])
        if payload.startswith(b"two"):
            return Reply([b"one", b"two"])
        # stateful echo: the count proves each connection has its own endpoint
        return Reply([b"%d:" % len(self.received) + payload])

    def close(self) -> None:
        self.closed += 1


class Factory:
    def __init__(self) -> None:
        self.conns: list[FakeConn] = []

    def __call__(self, number: int, peer: str) -> FakeConn:
        conn = FakeConn(number, peer)
        self.conns.append(conn)
        return conn


ServerMaker = Callable[..., Awaitable[tuple[SpdmServer, Factory]]]


@pytest.fixture
async def make_server() -> AsyncIterator[ServerMaker]:
    servers: list[SpdmServer] = []

    async def make(binding: str = "none", **config: Any) -> tuple[SpdmServer, Factory]:
        factory = Factory()
        srv = SpdmServer(RunOptions(host=LOOPBACK, port=0, **config), get_binding(binding), factory)
        await srv.start()
        servers.append(srv)
        return srv, factory

    yield make
    for srv in servers:
        await srv.stop()


async def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll until ``predicate`` holds (a hang guard, not a timing assertion)."""
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


_open_peers: list[RawPeer] = []


@pytest.fixture(autouse=True)
async def _hygiene() -> AsyncIterator[None]:
    """Close raw peers; fail if any task ended with an error the loop had to report."""
    loop_errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
    yield
    while _open_peers:
        await _open_peers.pop().close()
    await asyncio.sleep(0)  # let done-callbacks run
    assert loop_errors == []


class RawPeer:
    """A bare asyncio stream peer, to send arbitrary bytes and read frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder(1 << 20)
        self.frames: list[Frame] = []

    @classmethod
    async def open(cls, port: int) -> RawPeer:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        peer = cls(reader, writer)
        _open_peers.append(peer)
        return peer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_frame(self, command: int, transport: int, payload: bytes = b"") -> None:
        await self.send(encode_frame(Frame(command, transport, payload)))

    async def recv_frame(self) -> Frame:
        async with asyncio.timeout(5):
            while not self.frames:
                data = await self.reader.read(65536)
                assert data, "server closed the connection"
                self.frames += self.decoder.feed(data)
        return self.frames.pop(0)

    async def read_to_eof(self) -> bytes:
        async with asyncio.timeout(5):
            return await self.reader.read()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


NONE_T = 0
MCTP_T = 1
DOE_T = 2


# --------------------------------------------------------------------------- basics


async def test_port_zero_binds_a_real_port(make_server: ServerMaker) -> None:
    srv, _ = await make_server()
    assert 0 < srv.port < 65536
    assert srv.connection_count == 0


async def test_hello(make_server: ServerMaker) -> None:
    srv, factory = await make_server("doe")
    async with SocketClient(LOOPBACK, srv.port, get_binding("doe")) as client:
        assert await client.hello() == b"Server Hello!\x00"
    assert SERVER_HELLO == b"Server Hello!\x00"
    assert CLIENT_HELLO == b"Client Hello!\x00"
    await wait_until(lambda: srv.connection_count == 0, "disconnect")
    assert factory.conns[0].received == []  # TEST never reaches the responder
    assert factory.conns[0].closed == 1


async def test_test_frame_bytes_exact(make_server: ServerMaker) -> None:
    srv, _ = await make_server("mctp")
    peer = await RawPeer.open(srv.port)
    await peer.send(bytes.fromhex("0000dead 00000001 0000000e") + b"Client Hello!\x00")
    async with asyncio.timeout(5):
        raw = await peer.reader.readexactly(12 + 14)
    assert raw == bytes.fromhex("0000dead 00000001 0000000e") + b"Server Hello!\x00"
    await peer.close()


async def test_doe_exchange_end_to_end(make_server: ServerMaker) -> None:
    """A DOE GET_VERSION frame reaches the endpoint whole; its reply goes back as is."""
    doe = get_binding("doe")
    seen: list[bytes] = []

    class DoeConn(FakeConn):
        def receive(self, payload: bytes) -> Reply:
            seen.append(payload)
            request = doe.decode(payload).message
            assert request == bytes.fromhex("10840000")
            version = bytes.fromhex("10 04 00 00 00 02 0010 0011")  # VERSION 1.0, 1.1
            return Reply([doe.encode(version)])

    srv = SpdmServer(RunOptions(host=LOOPBACK, port=0), doe, DoeConn)
    async with srv:
        peer = await RawPeer.open(srv.port)
        await peer.send(
            bytes.fromhex("00000001 00000002 0000000c")
            + bytes.fromhex("01000100 03000000 10840000")
        )
        frame = await peer.recv_frame()
        assert frame == Frame(1, 2, bytes.fromhex("01000100 05000000 10040000 00020010 00110000"))
        await peer.close()
    assert seen == [bytes.fromhex("01000100 03000000 10840000")]


async def test_client_exchange_mctp_secured_and_bad_reply(make_server: ServerMaker) -> None:
    mctp = get_binding("mctp")

    class MctpConn(FakeConn):
        def receive(self, payload: bytes) -> Reply:
            self.received.append(payload)
            if payload == b"\x05\xff\x00\x00\x00":
                return Reply([b"\x01junk"])  # MCTP type 0x01: not SPDM
            decoded = mctp.decode(payload)
            return Reply([mctp.encode(decoded.message[::-1], secured=decoded.secured)])

    conns: list[MctpConn] = []

    def factory(number: int, peer: str) -> MctpConn:
        conns.append(MctpConn(number, peer))
        return conns[-1]

    srv = SpdmServer(RunOptions(host=LOOPBACK, port=0), mctp, factory)
    async with srv, SocketClient(LOOPBACK, srv.port, mctp) as client:
        reply = await client.exchange(b"\x10\x84\x00\x00")
        assert (reply.message, reply.secured) == (b"\x00\x00\x84\x10", False)
        record = bytes.fromhex("78563412 0400 01020304")
        reply = await client.exchange(record, secured=True)
        assert (reply.message, reply.secured) == (record[::-1], True)
        with pytest.raises(RequesterError, match=r"bad mctp reply.*0x01"):
            await client.exchange(b"\xff\x00\x00\x00")
    assert conns[0].received[:2] == [b"\x05\x10\x84\x00\x00", b"\x06" + record]


async def test_replies_use_binding_transport(make_server: ServerMaker) -> None:
    srv, _ = await make_server("mctp")
    peer = await RawPeer.open(srv.port)
    await peer.send_frame(PlatformCommand.NORMAL, MCTP_T, b"\x05abc")
    assert await peer.recv_frame() == Frame(1, MCTP_T, b"1:\x05abc")
    await peer.send_frame(PlatformCommand.CONTINUE, 0)
    assert await peer.recv_frame() == Frame(0xFFFD, MCTP_T, b"")
    await peer.close()


# --------------------------------------------------------------------------- commands


async def test_shutdown_closes_only_that_connection(make_server: ServerMaker) -> None:
    srv, factory = await make_server("doe")
    first = await RawPeer.open(srv.port)
    second = await RawPeer.open(srv.port)
    await second.send_frame(PlatformCommand.NORMAL, DOE_T, b"a")
    assert (await second.recv_frame()).payload == b"1:a"

    await first.send_frame(PlatformCommand.SHUTDOWN, DOE_T)
    assert await first.recv_frame() == Frame(0xFFFE, DOE_T, b"")
    assert await first.read_to_eof() == b""  # then the server closed it

    await second.send_frame(PlatformCommand.NORMAL, DOE_T, b"b")
    assert (await second.recv_frame()).payload == b"2:b"

    third = await RawPeer.open(srv.port)
    await third.send_frame(PlatformCommand.NORMAL, DOE_T, b"c")
    assert (await third.recv_frame()).payload == b"1:c"
    await second.close()
    await third.close()
    await wait_until(lambda: srv.connection_count == 0, "all disconnects")
    assert [c.closed for c in factory.conns] == [1, 1, 1]


async def test_client_shutdown(make_server: ServerMaker) -> None:
    srv, factory = await make_server("doe")
    client = SocketClient(LOOPBACK, srv.port, get_binding("doe"))
    await client.connect()
    await client.shutdown()
    await wait_until(lambda: srv.connection_count == 0, "disconnect")
    assert factory.conns[0].closed == 1
    async with SocketClient(LOOPBACK, srv.port, get_binding("doe")) as again:
        assert await again.hello() == SERVER_HELLO


async def test_continue_keeps_connection(make_server: ServerMaker) -> None:
    srv, _ = await make_server("doe")
    peer = await RawPeer.open(srv.port)
    await peer.send_frame(PlatformCommand.CONTINUE, DOE_T)
    assert await peer.recv_frame() == Frame(0xFFFD, DOE_T, b"")
    await peer.send_frame(PlatformCommand.NORMAL, DOE_T, b"x")
    assert (await peer.recv_frame()).payload == b"1:x"
    await peer.close()


@pytest.mark.parametrize(
    "command", [0x0002, 0x0003, 0x0004, 0x8001, 0x8002, 0xFFFF, 0x1234, 0x0000, 0xFFFF_FFFF]
)
async def test_unknown_commands_answered_unknown(
    make_server: ServerMaker, command: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="emulator.server")
    srv, factory = await make_server("doe")
    peer = await RawPeer.open(srv.port)
    await peer.send_frame(command, DOE_T, b"payload")
    assert await peer.recv_frame() == Frame(0xFFFF, DOE_T, b"")
    # connection still usable, and the responder never saw the frame
    await peer.send_frame(PlatformCommand.NORMAL, DOE_T, b"n")
    assert (await peer.recv_frame()).payload == b"1:n"
    assert factory.conns[0].received == [b"n"]
    assert "unsupported platform command" in caplog.text
    await peer.close()


async def test_wrong_transport_type(
    make_server: ServerMaker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="emulator.server")
    srv, factory = await make_server("doe")
    peer = await RawPeer.open(srv.port)
    await peer.send_frame(PlatformCommand.NORMAL, MCTP_T, b"\x05\x10\x84\x00\x00")
    assert await peer.recv_frame() == Frame(0xFFFF, DOE_T, b"")
    assert factory.conns[0].received == []
    assert "transport type 1 (MCTP)" in caplog.text
    assert "2 (PCI_DOE)" in caplog.text
    # the stream is still in step
    await peer.send_frame(PlatformCommand.NORMAL, DOE_T, b"ok")
    assert (await peer.recv_frame()).payload == b"1:ok"
    await peer.close()


async def test_pipelined_frames_answered_in_order(make_server: ServerMaker) -> None:
    srv, _ = await make_server()
    peer = await RawPeer.open(srv.port)
    await peer.send(
        encode_frame(Frame(1, NONE_T, b"delay-A"))
        + encode_frame(Frame(1, NONE_T, b"B"))
        + encode_frame(Frame(0xDEAD, NONE_T, CLIENT_HELLO))
    )
    assert (await peer.recv_frame()).payload == b"delayed:delay-A"
    assert (await peer.recv_frame()).payload == b"2:B"
    assert (await peer.recv_frame()).payload == SERVER_HELLO
    await peer.close()


# --------------------------------------------------------------------------- Reply actions


async def test_reply_multiple_payloads_and_drop(make_server: ServerMaker) -> None:
    srv, _ = await make_server()
    peer = await RawPeer.open(srv.port)
    await peer.send_frame(1, NONE_T, b"two")
    assert await peer.recv_frame() == Frame(1, NONE_T, b"one")
    assert await peer.recv_frame() == Frame(1, NONE_T, b"two")
    await peer.send_frame(1, NONE_T, b"drop")
    await peer.send_frame(1, NONE_T, b"after")
    # the dropped request produced nothing: the next frame answers "after"
    assert await peer.recv_frame() == Frame(1, NONE_T, b"3:after")
    await peer.close()


async def test_reply_partial(make_server: ServerMaker) -> None:
    srv, factory = await make_server()
    peer = await RawPeer.open(srv.port)
    await peer.send_frame(1, NONE_T, b"partial")
    data = await peer.read_to_eof()
    assert data == encode_frame(Frame(1, NONE_T, b"X" * 20))[:5]
    await wait_until(lambda: srv.connection_count == 0, "disconnect")
    assert factory.conns[0].closed == 1


async def test_reply_close(make_server: ServerMaker) -> None:
    srv, factory = await make_server()
    peer = await RawPeer.open(srv.port)
    await peer.send_frame(1, NONE_T, b"close")
    data = await peer.read_to_eof()
    assert data == encode_frame(Frame(1, NONE_T, b"bye"))
    await wait_until(lambda: srv.connection_count == 0, "disconnect")
    assert factory.conns[0].closed == 1


async def test_responder_exception_closes_connection_only(
    make_server: ServerMaker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="emulator.server")
    srv, factory = await make_server()
    peer = await RawPeer.open(srv.port)
    await peer.send_frame(1, NONE_T, b"raise")
    assert await peer.read_to_eof() == b""
    await wait_until(lambda: srv.connection_count == 0, "disconnect")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and any(
        r.exc_info and "bug in the responder" in str(r.exc_info[1]) for r in errors
    )
    assert factory.conns[0].closed == 1
    async with SocketClient(LOOPBACK, srv.port, get_binding("none")) as client:
        assert (await client.exchange(b"alive")).message == b"1:alive"


async def test_factory_exception_survives(
    make_server: ServerMaker, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    def factory(number: int, peer: str) -> FakeConn:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("factory bug")
        return FakeConn(number, peer)

    srv = SpdmServer(RunOptions(host=LOOPBACK, port=0), get_binding("none"), factory)
    async with srv:
        peer = await RawPeer.open(srv.port)
        assert await peer.read_to_eof() == b""
        async with SocketClient(LOOPBACK, srv.port, get_binding("none")) as client:
            assert (await client.exchange(b"z")).message == b"1:z"
    assert "factory bug" in caplog.text


# --------------------------------------------------------------------------- malformed input


async def test_short_header_then_close(
    make_server: ServerMaker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="emulator.server")
    srv, factory = await make_server()
    peer = await RawPeer.open(srv.port)
    await peer.send(b"\x00\x00\x00\x01\x00")
    await peer.close()
    await wait_until(lambda: srv.connection_count == 0, "disconnect")
    assert factory.conns[0].received == []
    assert factory.conns[0].closed == 1
    records = [r for r in caplog.records if "mid-frame" in r.getMessage()]
    assert records and records[0].levelno == logging.INFO
    assert "5 bytes" in records[0].getMessage()


async def test_payload_cut_short_then_close(make_server: ServerMaker) -> None:
    srv, factory = await make_server()
    peer = await RawPeer.open(srv.port)
    await peer.send(bytes.fromhex("00000001 00000000 00000010") + b"only8byt")
    await peer.close()
    await wait_until(lambda: srv.connection_count == 0, "disconnect")
    assert factory.conns[0].received == []
    assert factory.conns[0].closed == 1


async def test_length_over_limit(
    make_server: ServerMaker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="emulator.server")
    srv, factory = await make_server("doe")
    peer = await RawPeer.open(srv.port)
    await peer.send(bytes.fromhex("00000001 00000002 00001201"))
    assert await peer.read_to_eof() == b""  # closed without an answer
    await wait_until(lambda: srv.connection_count == 0, "disconnect")
    assert factory.conns[0].received == []
    assert factory.conns[0].closed == 1
    assert any(r.levelno == logging.WARNING and "0x1201" in r.getMessage() for r in caplog.records)


async def test_limit_is_configurable(make_server: ServerMaker) -> None:
    srv, _ = await make_server(max_payload=16)
    peer = await RawPeer.open(srv.port)
    await peer.send_frame(1, NONE_T, b"x" * 16)
    assert (await peer.recv_frame()).payload == b"1:" + b"x" * 16
    await peer.send_frame(1, NONE_T, b"x" * 17)
    assert await peer.read_to_eof() == b""
    await peer.close()


async def test_abrupt_close(make_server: ServerMaker) -> None:
    srv, factory = await make_server()
    # send a request and reset the connection without reading the answer
    _reader, writer = await asyncio.open_connection(LOOPBACK, srv.port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.write(encode_frame(Frame(1, NONE_T, b"delay-then-reset")))
    await writer.drain()
    await wait_until(lambda: len(factory.conns) == 1 and bool(factory.conns[0].received), "rx")
    writer.close()  # RST
    await wait_until(lambda: srv.connection_count == 0, "disconnect")
    assert factory.conns[0].closed == 1
    async with SocketClient(LOOPBACK, srv.port, get_binding("none")) as client:
        assert (await client.exchange(b"still")).message == b"1:still"


# --------------------------------------------------------------------------- scale and limits


async def test_concurrent_connections(make_server: ServerMaker) -> None:
    srv, factory = await make_server()
    rounds = 5

    async def run(index: int) -> None:
        async with SocketClient(LOOPBACK, srv.port, get_binding("none")) as client:
            for i in range(rounds):
                message = b"c%d-r%d" % (index, i)
                reply = await client.exchange(message)
                assert reply.message == b"%d:" % (i + 1) + message

    await asyncio.gather(*(run(i) for i in range(100)))
    await wait_until(lambda: srv.connection_count == 0, "all disconnects")
    assert len(factory.conns) == 100
    assert [c.closed for c in factory.conns] == [1] * 100
    assert sorted(c.number for c in factory.conns) == list(range(1, 101))
    assert all(len(c.received) == rounds for c in factory.conns)


async def test_max_connections(make_server: ServerMaker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="emulator.server")
    srv, factory = await make_server(max_connections=2)
    a = await RawPeer.open(srv.port)
    b = await RawPeer.open(srv.port)
    for peer in (a, b):
        await peer.send_frame(0xDEAD, NONE_T, CLIENT_HELLO)
        assert (await peer.recv_frame()).payload == SERVER_HELLO
    assert srv.connection_count == 2
    refused = await RawPeer.open(srv.port)  # accepted by the kernel ...
    assert await refused.read_to_eof() == b""  # ... then closed by the server
    assert len(factory.conns) == 2
    assert "refusing connection" in caplog.text
    await a.close()
    await wait_until(lambda: srv.connection_count == 1, "one disconnect")
    c = await RawPeer.open(srv.port)
    await c.send_frame(1, NONE_T, b"in")
    assert (await c.recv_frame()).payload == b"1:in"
    await b.close()
    await c.close()


async def test_idle_timeout(make_server: ServerMaker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="emulator.server")
    srv, factory = await make_server(idle_timeout=0.2)
    peer = await RawPeer.open(srv.port)
    await peer.send_frame(1, NONE_T, b"hi")
    assert (await peer.recv_frame()).payload == b"1:hi"
    assert await peer.read_to_eof() == b""  # silent peer is closed by the server
    await wait_until(lambda: srv.connection_count == 0, "disconnect")
    assert factory.conns[0].closed == 1
    assert "idle_timeout" in caplog.text


# --------------------------------------------------------------------------- sockets


def test_configure_socket_sets_nodelay() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        configure_socket(sock)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_accepted_socket_has_nodelay(
    make_server: ServerMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, int]] = []
    real = server_mod.configure_socket

    def spy(sock: Any) -> None:
        # undo asyncio's own default so only the server's call can set it
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        real(sock)
        seen.append(
            (sock.getsockname()[1], sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        )

    monkeypatch.setattr(server_mod, "configure_socket", spy)
    srv, _ = await make_server()
    async with SocketClient(LOOPBACK, srv.port, get_binding("none")) as client:
        assert await client.hello() == SERVER_HELLO
    assert len(seen) == 1
    port, nodelay = seen[0]
    assert port == srv.port and nodelay != 0


async def test_one_write_per_frame(
    make_server: ServerMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every write of both ends reaches the socket through the selector transport's write
    writes: list[bytes] = []
    transport_class: Any = vars(asyncio.selector_events)["_SelectorSocketTransport"]
    real_write = transport_class.write

    def spy(self: asyncio.Transport, data: Any) -> None:
        writes.append(bytes(data))
        real_write(self, data)

    srv, _ = await make_server()
    peer = await RawPeer.open(srv.port)
    monkeypatch.setattr(transport_class, "write", spy)
    await peer.send_frame(1, NONE_T, b"two")
    await peer.recv_frame()
    await peer.recv_frame()
    monkeypatch.undo()
    server_writes = writes[1:]  # the first is the peer's own request
    assert server_writes == [
        encode_frame(Frame(1, NONE_T, b"one")),
        encode_frame(Frame(1, NONE_T, b"two")),
    ]
    await peer.close()


# --------------------------------------------------------------------------- lifecycle


async def test_stop_is_graceful() -> None:
    factory = Factory()
    srv = SpdmServer(RunOptions(host=LOOPBACK, port=0), get_binding("none"), factory)
    forever = asyncio.create_task(srv.serve_forever())
    await wait_until(lambda: srv._server is not None, "start")
    peers = [await RawPeer.open(srv.port) for _ in range(3)]
    for peer in peers:
        await peer.send_frame(0xDEAD, NONE_T, CLIENT_HELLO)
        await peer.recv_frame()
    assert srv.connection_count == 3
    port = srv.port
    await srv.stop()
    async with asyncio.timeout(5):
        await forever
    assert srv.connection_count == 0
    assert [c.closed for c in factory.conns] == [1, 1, 1]
    for peer in peers:
        assert await peer.read_to_eof() == b""
    with pytest.raises(OSError):
        await asyncio.open_connection(LOOPBACK, port)
    await srv.stop()  # idempotent


async def test_client_errors(make_server: ServerMaker) -> None:
    srv, _ = await make_server()
    port = srv.port
    client = SocketClient(LOOPBACK, port, get_binding("none"), timeout=0.2)
    with pytest.raises(RequesterError, match="not connected"):
        await client.hello()
    await client.connect()
    await client.send_frame(1, b"drop")
    with pytest.raises(RequesterError, match="no frame from the responder"):
        await client.recv_frame()
    await client.close()
    with pytest.raises(RequesterError, match="cannot encode"):
        await SocketClient(LOOPBACK, port, get_binding("none")).exchange(b"x", secured=True)
    await srv.stop()
    with pytest.raises(RequesterError, match="cannot connect"):
        await SocketClient(LOOPBACK, port, get_binding("none")).connect()


async def test_client_rejects_non_normal_reply(make_server: ServerMaker) -> None:
    srv, _ = await make_server("doe")
    async with SocketClient(LOOPBACK, srv.port, get_binding("mctp")) as client:
        # an MCTP client talking to a DOE server: answered UNKNOWN
        with pytest.raises(RequesterError, match="got UNKNOWN"):
            await client.exchange(b"\x10\x84\x00\x00")


# --------------------------------------------------------------------------- binding commands

IF_SEND = PlatformCommand.STORAGE_IF_SEND
IF_RECV = PlatformCommand.STORAGE_IF_RECV
ACK = PlatformCommand.STORAGE_ACK_STATUS
PULL_T = 4
STATUS_OK = b"\x00\x00"
STATUS_NOTHING = b"\x40\x02"


class FakePullBinding:
    """A pull-model binding in the storage style: IF_SEND delivers a request and is acked,
    a later IF_RECV collects its reply (an ack, then the reply as NORMAL frames), or gets
    an error status when nothing is pending.  Payloads are bare messages."""

    name = "fake-pull"
    socket_transport = SocketTransport.LINUX_MCTP  # transport type 4, as QEMU's NVMe
    pcap_link_type = None
    carries_secured = False
    platform_commands = frozenset({IF_SEND, IF_RECV})
    record_format = RecordFormat()

    def decode(self, payload: bytes) -> TransportMessage:
        return TransportMessage(payload)

    def encode(self, message: bytes, secured: bool = False) -> bytes:
        return message

    def answer_discovery(self, payload: bytes) -> bytes | None:
        return None

    def pcap_packet(self, payload: bytes, from_requester: bool) -> bytes:
        raise AssertionError("no pcap here")

    def _ack(self, status: bytes) -> Frame:
        return Frame(ACK, PULL_T, status)

    def handle_command(self, command: int, payload: bytes, endpoint: Endpoint) -> CommandAnswer:
        if command == IF_SEND:
            endpoint.deliver(payload)
            return CommandAnswer([self._ack(STATUS_OK)])
        assert command == IF_RECV
        reply = endpoint.collect()
        if reply is None:
            return CommandAnswer([self._ack(STATUS_NOTHING)])
        return CommandAnswer([self._ack(STATUS_OK)], reply)


class PullConn(FakeConn):
    """FakeConn with the pull half, logging every call."""

    def __init__(self, number: int, peer: str) -> None:
        super().__init__(number, peer)
        self.calls: list[str] = []
        self.kept: Reply | None = None

    def deliver(self, payload: bytes) -> None:
        self.calls.append(f"deliver {payload.decode()}")
        self.kept = self.receive(payload)

    def collect(self) -> Reply | None:
        self.calls.append("collect")
        kept, self.kept = self.kept, None
        return kept

    @property
    def has_pending_reply(self) -> bool:
        return self.kept is not None


@pytest.fixture
async def pull_server() -> AsyncIterator[tuple[SpdmServer, list[PullConn]]]:
    conns: list[PullConn] = []

    def factory(number: int, peer: str) -> PullConn:
        conns.append(PullConn(number, peer))
        return conns[-1]

    srv = SpdmServer(RunOptions(host=LOOPBACK, port=0), FakePullBinding(), factory)
    async with srv:
        yield srv, conns


async def test_pull_binding_delivers_then_collects(
    pull_server: tuple[SpdmServer, list[PullConn]],
) -> None:
    """IF_SEND reaches deliver (answered by the binding's ack alone); a later IF_RECV
    collects the reply: the ack, then the reply's payloads as NORMAL frames."""
    srv, conns = pull_server
    peer = await RawPeer.open(srv.port)
    await peer.send_frame(IF_SEND, PULL_T, b"req")
    assert await peer.recv_frame() == Frame(ACK, PULL_T, STATUS_OK)
    await wait_until(lambda: bool(conns) and conns[0].has_pending_reply, "the delivered reply")
    assert conns[0].calls == ["deliver req"]
    await peer.send_frame(IF_RECV, PULL_T)
    assert await peer.recv_frame() == Frame(ACK, PULL_T, STATUS_OK)
    assert await peer.recv_frame() == Frame(PlatformCommand.NORMAL, PULL_T, b"1:req")
    assert conns[0].calls == ["deliver req", "collect"]
    # two payloads in one reply: both follow the ack, in order
    await peer.send_frame(IF_SEND, PULL_T, b"two")
    await peer.recv_frame()
    await peer.send_frame(IF_RECV, PULL_T)
    assert [await peer.recv_frame() for _ in range(3)] == [
        Frame(ACK, PULL_T, STATUS_OK),
        Frame(PlatformCommand.NORMAL, PULL_T, b"one"),
        Frame(PlatformCommand.NORMAL, PULL_T, b"two"),
    ]
    await peer.close()


async def test_pull_binding_collect_with_nothing_pending(
    pull_server: tuple[SpdmServer, list[PullConn]],
) -> None:
    srv, conns = pull_server
    peer = await RawPeer.open(srv.port)
    await peer.send_frame(IF_RECV, PULL_T)
    assert await peer.recv_frame() == Frame(ACK, PULL_T, STATUS_NOTHING)
    await peer.send_frame(IF_SEND, PULL_T, b"once")
    await peer.recv_frame()
    await peer.send_frame(IF_RECV, PULL_T)
    assert [await peer.recv_frame() for _ in range(2)][1].payload == b"1:once"
    await peer.send_frame(IF_RECV, PULL_T)  # collected already
    assert await peer.recv_frame() == Frame(ACK, PULL_T, STATUS_NOTHING)
    assert conns[0].calls == ["collect", "deliver once", "collect", "collect"]
    assert conns[0].received == [b"once"]
    await peer.close()


async def test_pull_binding_commands_and_generic_ones(
    pull_server: tuple[SpdmServer, list[PullConn]], caplog: pytest.LogCaptureFixture
) -> None:
    """The server answers only the binding's commands through it (NORMAL is not one of
    this binding's: UNKNOWN), checks their transport type, keeps TEST for itself, and
    carries out a collected reply's effects (close)."""
    srv, conns = pull_server
    peer = await RawPeer.open(srv.port)
    with caplog.at_level(logging.WARNING, logger="emulator.server"):
        await peer.send_frame(PlatformCommand.NORMAL, PULL_T, b"x")
        assert await peer.recv_frame() == Frame(PlatformCommand.UNKNOWN, PULL_T)
        await peer.send_frame(IF_SEND, DOE_T, b"x")
        assert await peer.recv_frame() == Frame(PlatformCommand.UNKNOWN, PULL_T)
    assert "unsupported platform command NORMAL" in caplog.text
    assert "STORAGE_IF_SEND frame with transport type 2 (PCI_DOE)" in caplog.text
    await peer.send_frame(PlatformCommand.TEST, PULL_T, CLIENT_HELLO)
    assert await peer.recv_frame() == Frame(PlatformCommand.TEST, PULL_T, SERVER_HELLO)
    assert conns[0].calls == []
    await peer.send_frame(IF_SEND, PULL_T, b"close")
    await peer.recv_frame()
    await peer.send_frame(IF_RECV, PULL_T)
    assert await peer.recv_frame() == Frame(ACK, PULL_T, STATUS_OK)
    assert await peer.recv_frame() == Frame(PlatformCommand.NORMAL, PULL_T, b"bye")
    assert await peer.read_to_eof() == b""
    await wait_until(lambda: conns[0].closed == 1, "the endpoint closed")


async def test_pull_binding_drives_a_real_connection() -> None:
    """The real SpdmConnection behind the pull binding: GET_VERSION sent with IF_SEND,
    VERSION collected with IF_RECV."""
    from emulator.connection import SpdmConnection
    from emulator.device.model import Device
    from emulator.profiles import load_profile

    device = Device.from_profile(load_profile("default"))
    binding = FakePullBinding()

    def factory(number: int, peer: str) -> SpdmConnection:
        return SpdmConnection(device, binding, number=number, peer=peer)

    srv = SpdmServer(RunOptions(host=LOOPBACK, port=0), binding, factory)
    async with srv:
        peer = await RawPeer.open(srv.port)
        await peer.send_frame(IF_SEND, PULL_T, bytes.fromhex("10840000"))
        assert await peer.recv_frame() == Frame(ACK, PULL_T, STATUS_OK)
        await peer.send_frame(IF_RECV, PULL_T)
        assert await peer.recv_frame() == Frame(ACK, PULL_T, STATUS_OK)
        version = await peer.recv_frame()
        assert version.command == PlatformCommand.NORMAL and version.payload[:2] == b"\x10\x04"
        await peer.send_frame(IF_RECV, PULL_T)
        assert await peer.recv_frame() == Frame(ACK, PULL_T, STATUS_NOTHING)
        await peer.close()
