"""End-to-end tests through a real QEMU NVMe controller's PCIe DOE mailbox.

QEMU (``-device nvme,spdm_port=P``) forwards CMA/SPDM data objects to a platform-socket
responder; :mod:`emulator.qemu_doe` plays the guest through qtest.  Two groups:

* driver tests against a tiny scripted platform-socket peer (``ScriptedPeer``), which
  check what QEMU forwards byte by byte and how the driver reports bad replies;
* the real emulator (``SpdmServer`` + ``SpdmConnection``) behind QEMU: DOE discovery,
  then GET_VERSION, GET_CAPABILITIES and NEGOTIATE_ALGORITHMS, checked with the
  minimal parsing below (DSP0274 tables), and QEMU restarted against one emulator.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from emulator import qemu_doe
from emulator.qemu_doe import (
    DoeProtocol,
    QemuDoeError,
    QemuNvmeDoe,
    doe_object,
    find_qemu,
    qemu_missing_reason,
)

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(find_qemu() is None, reason=f"no suitable QEMU: {qemu_missing_reason()}"),
]

NORMAL = 0x0001
PCI_DOE = 2

GET_VERSION = bytes.fromhex("10840000")
#: VERSION 1.0 response with one entry, 1.0 (DSP0274 table "Successful VERSION response")
CANNED_VERSION = bytes.fromhex("10040000 0001 0010".replace(" ", ""))


def doe(obj_type: int, payload: bytes, length: int | None = None) -> bytes:
    """A DOE data object built independently of the code under test."""
    padded = payload + bytes(-len(payload) % 4)
    dwords = 2 + len(padded) // 4 if length is None else length
    return struct.pack("<HBBI", 0x0001, obj_type, 0, dwords) + padded


# --------------------------------------------------------------------- scripted peer


@dataclass
class ScriptedPeer:
    """A platform-socket listener that records NORMAL frames and answers per ``reply``.

    ``reply(payload)`` returns the raw bytes to send back (whole frames, or anything),
    ``None`` to stay silent, or ``b"close"`` to close the connection.
    """

    reply: Callable[[bytes], bytes | None]
    frames: list[tuple[int, int, bytes]] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                command, transport, size = struct.unpack(">III", await reader.readexactly(12))
                payload = await reader.readexactly(size)
                self.frames.append((command, transport, payload))
                answer = self.reply(payload)
                if answer == b"close":
                    break
                if answer is not None:
                    writer.write(answer)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def frame(payload: bytes, command: int = NORMAL, transport: int = PCI_DOE) -> bytes:
    return struct.pack(">III", command, transport, len(payload)) + payload


def version_reply(payload: bytes) -> bytes | None:
    """Answer a DOE-wrapped GET_VERSION with a canned VERSION object (type echoed)."""
    return frame(doe(payload[2], CANNED_VERSION))


@pytest.fixture
async def peer() -> AsyncIterator[ScriptedPeer]:
    p = ScriptedPeer(version_reply)
    await p.start()
    yield p
    await p.stop()


# --------------------------------------------------------------------- driver tests


def test_find_qemu_explains_a_missing_or_unsuitable_binary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]
) -> None:
    fake = os.path.join(os.fspath(tmp_path), "qemu-system-x86_64")
    with open(fake, "w") as f:
        f.write("#!/bin/sh\necho 'nvme options:'\necho '  serial=<str>'\n")
    os.chmod(fake, 0o755)
    monkeypatch.setenv("SPDM_EMULATOR_QEMU", fake)
    qemu_doe._probe_qemu.cache_clear()
    try:
        assert find_qemu() is None
        reason = qemu_missing_reason()
        assert reason is not None and fake in reason and "spdm_port" in reason
    finally:
        monkeypatch.delenv("SPDM_EMULATOR_QEMU")
        qemu_doe._probe_qemu.cache_clear()
    assert find_qemu() is not None and qemu_missing_reason() is None


def test_doe_object_wraps_with_dword_length_and_zero_padding() -> None:
    assert doe_object(GET_VERSION, 1) == bytes.fromhex(
        "01000100 03000000 10840000".replace(" ", "")
    )
    assert doe_object(b"\xaa\xbb\xcc\xdd\xee", 2) == bytes.fromhex(
        "01000200 04000000 aabbccdd ee000000".replace(" ", "")
    )


async def test_discovery_lists_cma_spdm_and_secured_cma_spdm(peer: ScriptedPeer) -> None:
    async with QemuNvmeDoe(peer.port) as dev:
        assert dev.pci_function is not None and dev.doe_offset is not None
        protocols = await dev.discover()
    assert protocols == [DoeProtocol(1, 0), DoeProtocol(1, 1), DoeProtocol(1, 2)]
    # QEMU answers discovery itself: nothing reached the responder
    assert peer.frames == []
    assert peer.connections == 1


async def test_exchange_forwards_the_whole_doe_object_and_strips_the_reply(
    peer: ScriptedPeer,
) -> None:
    async with QemuNvmeDoe(peer.port) as dev:
        reply = await dev.exchange(GET_VERSION)
    assert peer.frames == [
        (NORMAL, PCI_DOE, bytes.fromhex("0100010003000000 10840000".replace(" ", "")))
    ]
    assert reply.message == CANNED_VERSION
    assert reply.secured is False


async def test_secured_exchange_uses_type_2_and_pads(peer: ScriptedPeer) -> None:
    record = bytes(range(1, 8))  # 7 bytes: one byte of padding
    async with QemuNvmeDoe(peer.port) as dev:
        reply = await dev.exchange(record, secured=True)
    assert peer.frames == [(NORMAL, PCI_DOE, doe(2, record + b"\x00"))]
    assert peer.frames[0][2][:8] == bytes.fromhex("0100020004000000")
    assert reply.secured is True
    assert reply.message == CANNED_VERSION


async def test_reply_longer_than_its_length_field_is_reported_and_recovered() -> None:
    replies = iter(
        [
            frame(doe(1, CANNED_VERSION, length=3)),  # claims 3 DWORDs, carries 4
            frame(doe(1, CANNED_VERSION)),
        ]
    )
    p = ScriptedPeer(lambda _payload: next(replies))
    await p.start()
    try:
        async with QemuNvmeDoe(p.port) as dev:
            with pytest.raises(QemuDoeError, match="still holds data"):
                await dev.exchange(GET_VERSION)
            assert (await dev.exchange(GET_VERSION)).message == CANNED_VERSION
    finally:
        await p.stop()


async def test_empty_reply_is_discarded_by_qemu() -> None:
    replies = iter([frame(b""), frame(doe(1, CANNED_VERSION))])
    p = ScriptedPeer(lambda _payload: next(replies))
    await p.start()
    try:
        async with QemuNvmeDoe(p.port) as dev:
            with pytest.raises(QemuDoeError, match="no DOE response object"):
                await dev.exchange(GET_VERSION)
            # the mailbox is usable again afterwards
            assert (await dev.exchange(GET_VERSION)).message == CANNED_VERSION
    finally:
        await p.stop()


async def test_closed_responder_connection_breaks_the_device_for_good() -> None:
    p = ScriptedPeer(lambda _payload: b"close")
    await p.start()
    try:
        async with QemuNvmeDoe(p.port) as dev:
            with pytest.raises(QemuDoeError, match="no DOE response object"):
                await dev.exchange(GET_VERSION)
            p.reply = version_reply
            # QEMU never reconnects
            with pytest.raises(QemuDoeError, match="no DOE response object"):
                await dev.exchange(GET_VERSION)
        assert p.connections == 1
    finally:
        await p.stop()


async def test_silent_responder_times_out_and_qemu_is_killed() -> None:
    p = ScriptedPeer(lambda _payload: None)
    await p.start()
    try:
        dev = QemuNvmeDoe(p.port, exchange_timeout=1.0)
        async with dev:
            with pytest.raises(QemuDoeError, match="timed out"):
                await dev.exchange(GET_VERSION)
            with pytest.raises(QemuDoeError, match="unusable"):
                await dev.exchange(GET_VERSION)
            assert dev.returncode is None
        assert dev.returncode is not None
        assert dev.workdir is None
    finally:
        await p.stop()


async def test_body_exception_still_kills_qemu(peer: ScriptedPeer) -> None:
    dev = QemuNvmeDoe(peer.port)
    workdir = ""
    with pytest.raises(RuntimeError, match="boom"):
        async with dev:
            assert dev.workdir is not None and os.path.isdir(dev.workdir)
            workdir = dev.workdir
            raise RuntimeError("boom")
    assert dev.returncode is not None
    assert not os.path.exists(workdir)


async def test_no_listener_fails_start_with_qemus_reason() -> None:
    # a port that was just free: nothing listens there
    p = ScriptedPeer(version_reply)
    await p.start()
    await p.stop()
    dev = QemuNvmeDoe(p.port)
    with pytest.raises(QemuDoeError, match="Connection refused"):
        await dev.start()
    assert dev.returncode is not None
    assert dev.workdir is None
