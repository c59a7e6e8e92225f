"""The whole line over real loopback sockets: server -> transport -> responder and back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest

from emulator.app import Emulator
from emulator.connection import ExchangeEvent
from emulator.options import RunOptions
from emulator.requester import Requester, RequesterConfig, SpdmErrorReply
from emulator.requester.transport import SocketClient
from emulator.server.platform import PlatformCommand
from emulator.transport import get_binding


@contextlib.asynccontextmanager
async def running(transport: str = "doe") -> AsyncIterator[Emulator]:
    emu = Emulator(RunOptions(port=0, transport=transport))
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


@pytest.mark.parametrize("transport", ["doe", "mctp", "none"])
@pytest.mark.parametrize("version", [0x10, 0x11, 0x12, 0x13])
async def test_vca_over_socket(transport: str, version: int) -> None:
    async with (
        running(transport) as emu,
        SocketClient("127.0.0.1", emu.port, get_binding(transport)) as client,
    ):
        requester = Requester(client, RequesterConfig(version=version))
        neg = await requester.vca()
        assert neg.version == version
        conn = next(iter(emu.connections.values()))
        assert bytes(conn.responder.transcripts.a) == bytes(requester.message_a)


async def test_100_concurrent_connections_negotiate_independently() -> None:
    async with running() as emu:
        versions = [0x10, 0x11, 0x12, 0x13]
        hashes = [0x01, 0x02, 0x04]

        async def one(i: int) -> tuple[int, int, int]:
            cfg = RequesterConfig(version=versions[i % 4], base_hash=hashes[i % 3])
            async with SocketClient("127.0.0.1", emu.port, get_binding("doe")) as client:
                requester = Requester(client, cfg)
                neg = await requester.vca()
                # a second, stateful request on the same connection must see its own state
                with pytest.raises(SpdmErrorReply) as info:
                    await requester.send(requester.negotiate_request())
                assert info.value.error_name == "UnexpectedRequest"  # already negotiated
                return i, neg.version, neg.base_hash

        results = await asyncio.gather(*(one(i) for i in range(100)))
        for i, version, base_hash in results:
            assert version == versions[i % 4]
            assert base_hash == hashes[i % 3]


async def test_server_keeps_serving_after_shutdown_and_abrupt_close() -> None:
    async with running() as emu:
        binding = get_binding("doe")
        client = SocketClient("127.0.0.1", emu.port, binding)
        await client.connect()
        await Requester(client).vca()
        await client.shutdown()
        await client.close()
        # abrupt close in the middle of a frame
        _reader, writer = await asyncio.open_connection("127.0.0.1", emu.port)
        writer.write(b"\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x20\x01\x00")
        await writer.drain()
        writer.transport.abort()
        async with SocketClient("127.0.0.1", emu.port, binding) as client2:
            assert (await Requester(client2).vca()).version == 0x13


async def test_malformed_doe_object_gets_error_and_keeps_state(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with (
        running() as emu,
        SocketClient("127.0.0.1", emu.port, get_binding("doe")) as client,
    ):
        requester = Requester(client, RequesterConfig(version=0x12))
        await requester.get_version()
        await requester.get_capabilities()
        conn = next(iter(emu.connections.values()))
        state = conn.responder.state
        with caplog.at_level(logging.WARNING, logger="emulator.connection"):
            # vendor ID 0x0002 is not PCI-SIG
            await client.send_frame(
                PlatformCommand.NORMAL, bytes.fromhex("02000100 03000000 12e30000")
            )
            frame = await client.recv_frame()
        assert frame.payload == bytes.fromhex("01000100 03000000 127f0100")
        assert "vendor" in caplog.text.lower()
        assert conn.responder.state == state
        # ... and the negotiation continues where it was
        assert (await requester.negotiate_algorithms()).base_hash_sel == 0x02


async def test_error_reply_and_events_observed() -> None:
    events: list[ExchangeEvent] = []
    emu = Emulator(RunOptions(port=0), observers=[events.append])
    await emu.start()
    try:
        async with SocketClient("127.0.0.1", emu.port, get_binding("doe")) as client:
            requester = Requester(client, RequesterConfig(version=0x12))
            await requester.get_version()
            with pytest.raises(SpdmErrorReply) as info:
                await requester.send(bytes.fromhex("12e30000"))  # before GET_CAPABILITIES
            assert info.value.error_name == "UnexpectedRequest"
    finally:
        await emu.stop()
    names = [(e.request_name, e.response_name, e.error) for e in events]
    assert names == [("GET_VERSION", "VERSION", None), ("NEGOTIATE_ALGORITHMS", "ERROR", 0x04)]
    assert "before GET_CAPABILITIES" in events[1].reason


async def test_doe_discovery_answered_as_spdm_emu_does() -> None:
    async with (
        running() as emu,
        SocketClient("127.0.0.1", emu.port, get_binding("doe")) as client,
    ):
        seen = []
        index = 0
        for _ in range(4):
            # DOE header: vendor 0x0001, type 0 (discovery), length 3 DW; DW2: index
            await client.send_frame(
                PlatformCommand.NORMAL,
                bytes.fromhex("01000000 03000000") + bytes([index, 0, 0, 0]),
            )
            frame = await client.recv_frame()
            assert frame.payload[:8] == bytes.fromhex("01000000 03000000")
            vendor = int.from_bytes(frame.payload[8:10], "little")
            proto, next_index = frame.payload[10], frame.payload[11]
            seen.append((vendor, proto))
            if next_index == 0:
                break
            index = next_index
        assert seen == [(1, 0), (1, 1), (1, 2)]
        # past the end: QEMU's answer
        await client.send_frame(PlatformCommand.NORMAL, bytes.fromhex("01000000 03000000 09000000"))
        assert (await client.recv_frame()).payload == bytes.fromhex("01000000 03000000 ffffff00")
        # and SPDM still works on the same connection
        assert (await Requester(client).vca()).version == 0x13


async def test_oob_encap_key_update_is_echoed(caplog: pytest.LogCaptureFixture) -> None:
    async with (
        running() as emu,
        SocketClient("127.0.0.1", emu.port, get_binding("doe")) as client,
    ):
        await Requester(client).vca()
        with caplog.at_level(logging.INFO, logger="emulator.connection"):
            await client.send_frame(PlatformCommand.OOB_ENCAP_KEY_UPDATE, bytes(4))
            frame = await client.recv_frame()
        assert frame.command == PlatformCommand.OOB_ENCAP_KEY_UPDATE and frame.payload == b""
        assert "OOB_ENCAP_KEY_UPDATE for session 0x00000000: no such session" in caplog.text
        # the connection goes on
        assert (await Requester(client).vca()).version == 0x13
