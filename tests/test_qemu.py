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
from emulator.codec.constants import (
    AeadSuite,
    AlgType,
    BaseAsymAlgo,
    BaseHashAlgo,
    DheGroup,
    KeySchedule,
    MeasurementSpec,
    OtherParams,
    RequesterCap,
    SpdmVersion,
)
from emulator.connection import SpdmConnection
from emulator.device.model import Device
from emulator.qemu_doe import (
    DoeProtocol,
    QemuDoeError,
    QemuNvmeDoe,
    doe_object,
    find_qemu,
    qemu_missing_reason,
)
from emulator.server.server import ServerConfig, SpdmServer
from emulator.transport import get_binding

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


QEMU_BUFFER = 0x1200  # SPDM_SOCKET_MAX_MESSAGE_BUFFER_SIZE


async def test_largest_reply_qemu_accepts_is_read_in_full() -> None:
    body = bytes((i * 7 + 3) & 0xFF for i in range(QEMU_BUFFER - 8))
    p = ScriptedPeer(lambda _payload: frame(doe(1, body)))
    await p.start()
    try:
        async with QemuNvmeDoe(p.port) as dev:
            reply = await dev.exchange(GET_VERSION)
        assert reply.message == body
    finally:
        await p.stop()


async def test_reply_over_qemus_buffer_is_dropped_by_qemu() -> None:
    body = bytes(QEMU_BUFFER - 8 + 4)
    p = ScriptedPeer(lambda _payload: frame(doe(1, body)))
    await p.start()
    try:
        async with QemuNvmeDoe(p.port) as dev:
            with pytest.raises(QemuDoeError, match="no DOE response object"):
                await dev.exchange(GET_VERSION)
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


# --------------------------------------------------------------------- real emulator
#
# Requests are built, and responses parsed, right here from the DSP0274 tables
# (GET_VERSION / VERSION, GET_CAPABILITIES / CAPABILITIES, NEGOTIATE_ALGORITHMS /
# ALGORITHMS), independently of the emulator's codec.

REQ_CAPS = RequesterCap.CERT_CAP | RequesterCap.CHAL_CAP
CT_EXPONENT = 20
TRANSFER_SIZE = 0x1200
OFFER_ASYM = BaseAsymAlgo.ECDSA_P256 | BaseAsymAlgo.ECDSA_P384 | BaseAsymAlgo.RSASSA_3072
OFFER_HASH = BaseHashAlgo.SHA_256 | BaseHashAlgo.SHA_384
OFFER_TABLES = {
    AlgType.DHE: DheGroup.SECP_256_R1 | DheGroup.SECP_384_R1,
    AlgType.AEAD: AeadSuite.AES_128_GCM | AeadSuite.AES_256_GCM,
    AlgType.REQ_BASE_ASYM_ALG: BaseAsymAlgo.ECDSA_P256 | BaseAsymAlgo.ECDSA_P384,
    AlgType.KEY_SCHEDULE: KeySchedule.SPDM,
}


def popcount(value: int) -> int:
    return bin(value).count("1")


def check_padding(reply: bytes, length: int) -> None:
    """The DOE payload is the message plus fewer than 4 zero bytes of padding."""
    assert len(reply) >= length
    assert len(reply) - length < 4 and reply[length:] == bytes(len(reply) - length)


def parse_version(reply: bytes) -> list[int]:
    """VERSION (DSP0274 table "Successful VERSION response"): the version entries."""
    assert reply[:5] == bytes([0x10, 0x04, 0, 0, 0]), reply.hex()
    count = reply[5]
    assert count >= 1
    check_padding(reply, 6 + 2 * count)
    return list(struct.unpack_from(f"<{count}H", reply, 6))


def get_capabilities(version: int) -> bytes:
    if version == 0x10:
        return bytes([version, 0xE1, 0, 0])
    request = bytes([version, 0xE1, 0, 0, 0, CT_EXPONENT, 0, 0]) + struct.pack("<I", REQ_CAPS)
    if version >= 0x12:
        request += struct.pack("<II", TRANSFER_SIZE, TRANSFER_SIZE)
    return request


@dataclass
class Capabilities:
    ct_exponent: int
    flags: int
    data_transfer_size: int | None
    max_spdm_msg_size: int | None


def parse_capabilities(reply: bytes, version: int) -> Capabilities:
    """CAPABILITIES: 12 bytes (1.0/1.1), 20 bytes with the transfer sizes (1.2+)."""
    assert reply[:4] == bytes([version, 0x61, 0, 0]), reply.hex()
    size = 20 if version >= 0x12 else 12
    check_padding(reply, size)
    ct_exponent = reply[5]
    (flags,) = struct.unpack_from("<I", reply, 8)
    if version >= 0x12:
        dts, mms = struct.unpack_from("<II", reply, 12)
        return Capabilities(ct_exponent, flags, dts, mms)
    return Capabilities(ct_exponent, flags, None, None)


def negotiate_algorithms(version: int) -> bytes:
    tables = b""
    if version >= 0x11:
        for alg_type, bits in OFFER_TABLES.items():
            tables += struct.pack("<BBH", alg_type, 0x20, bits)
    other = OtherParams.OPAQUE_DATA_FMT_1 if version >= 0x12 else 0
    length = 32 + len(tables)
    return (
        bytes([version, 0xE3, len(tables) // 4, 0])
        + struct.pack("<HBBII", length, MeasurementSpec.DMTF, other, OFFER_ASYM, OFFER_HASH)
        + bytes(12)  # reserved
        + bytes([0, 0, 0, 0])  # ExtAsymCount, ExtHashCount, reserved, MEL specification
        + tables
    )


@dataclass
class Algorithms:
    measurement_spec: int
    other_params: int
    measurement_hash: int
    base_asym: int
    base_hash: int
    tables: dict[int, int]


def parse_algorithms(reply: bytes, version: int) -> Algorithms:
    """ALGORITHMS (DSP0274 table "Successful ALGORITHMS response")."""
    assert reply[:2] == bytes([version, 0x63]), reply.hex()
    table_count, reserved = reply[2], reply[3]
    assert reserved == 0
    (length,) = struct.unpack_from("<H", reply, 4)
    mspec, other = reply[6], reply[7]
    meas_hash, asym, hash_ = struct.unpack_from("<III", reply, 8)
    ext_asym, ext_hash = reply[32], reply[33]
    assert (ext_asym, ext_hash) == (0, 0), "no extended algorithms were offered"
    assert length == 36 + 4 * table_count, f"Length {length} for {table_count} tables"
    check_padding(reply, length)
    tables: dict[int, int] = {}
    for i in range(table_count):
        alg_type, alg_count, selected = struct.unpack_from("<BBH", reply, 36 + 4 * i)
        assert alg_count == 0x20, f"table {alg_type}: AlgCount {alg_count:#x}"
        assert alg_type not in tables and all(alg_type > t for t in tables), "ascending types"
        tables[alg_type] = selected
    return Algorithms(mspec, other, meas_hash, asym, hash_, tables)


def expected_choice(priorities: list[int], offered: int) -> int:
    """The device's first-priority algorithm among the offered ones."""
    return next((bit for bit in priorities if bit & offered), 0)


@pytest.fixture
async def emulator() -> AsyncIterator[tuple[SpdmServer, Device]]:
    """The real emulator (default profile, PCI DOE binding) on a free loopback port."""
    device = Device.load("default")
    binding = get_binding("doe")

    def factory(number: int, peer: str) -> SpdmConnection:
        return SpdmConnection(device, binding, number=number, peer=peer)

    server = SpdmServer(ServerConfig(host="127.0.0.1", port=0), binding, factory)
    await server.start()
    try:
        yield server, device
    finally:
        await server.stop()


async def vca(dev: QemuNvmeDoe, device: Device, version: int | None = None) -> int:
    """GET_VERSION, GET_CAPABILITIES, NEGOTIATE_ALGORITHMS through QEMU, checked field by field.

    Returns the version used (the highest common one unless ``version`` is given).
    """
    reply = await dev.exchange(GET_VERSION)
    assert not reply.secured
    entries = parse_version(reply.message)
    offered = sorted({e >> 8 for e in entries})
    assert offered == sorted(int(v) for v in device.versions)
    if version is None:
        version = max(v for v in offered if v in {int(x) for x in SpdmVersion})
    assert version in offered

    reply = await dev.exchange(get_capabilities(version))
    caps = parse_capabilities(reply.message, version)
    assert caps.ct_exponent == device.ct_exponent
    assert caps.flags & ~int(device.capabilities) == 0
    if version >= 0x12:
        assert caps.data_transfer_size == device.data_transfer_size
        assert caps.max_spdm_msg_size == device.max_spdm_msg_size

    reply = await dev.exchange(negotiate_algorithms(version))
    algs = parse_algorithms(reply.message, version)
    assert algs.base_asym == expected_choice(device.priorities["base_asym"], OFFER_ASYM)
    assert algs.base_hash == expected_choice(device.priorities["base_hash"], OFFER_HASH)
    assert popcount(algs.base_asym) == 1 and algs.base_asym & OFFER_ASYM
    assert popcount(algs.base_hash) == 1 and algs.base_hash & OFFER_HASH
    assert algs.measurement_spec in (0, MeasurementSpec.DMTF)
    assert popcount(algs.measurement_hash) <= 1
    if algs.measurement_spec == 0:
        assert algs.measurement_hash == 0
    if version >= 0x12:
        assert algs.other_params & 0x0F in (0, OtherParams.OPAQUE_DATA_FMT_1)
    else:
        assert algs.other_params == 0
    if version == 0x10:
        assert algs.tables == {}
    else:
        assert set(algs.tables) <= set(OFFER_TABLES)
        for alg_type, selected in algs.tables.items():
            assert popcount(selected) <= 1
            assert selected & ~int(OFFER_TABLES[AlgType(alg_type)]) == 0
    return version


async def test_emulator_through_qemu_discovery_and_vca(
    emulator: tuple[SpdmServer, Device],
) -> None:
    server, device = emulator
    async with QemuNvmeDoe(server.port) as dev:
        assert await dev.discover() == [DoeProtocol(1, 0), DoeProtocol(1, 1), DoeProtocol(1, 2)]
        version = await vca(dev, device)
        assert version == max(int(v) for v in device.versions)
        # GET_VERSION resets the connection: VCA again over the same QEMU works
        await vca(dev, device)


@pytest.mark.parametrize("version", [0x10, 0x11, 0x12])
async def test_emulator_through_qemu_older_versions(
    emulator: tuple[SpdmServer, Device], version: int
) -> None:
    server, device = emulator
    if version not in device.versions:
        pytest.skip(f"the default profile does not offer {version:#x}")
    async with QemuNvmeDoe(server.port) as dev:
        assert await vca(dev, device, version) == version


async def test_restarting_qemu_against_a_running_emulator(
    emulator: tuple[SpdmServer, Device],
) -> None:
    server, device = emulator
    for _ in range(2):
        dev = QemuNvmeDoe(server.port)
        async with dev:
            await vca(dev, device)
        assert dev.returncode is not None
    # both QEMU connections were served by the one emulator, which still listens
    async with QemuNvmeDoe(server.port) as dev:
        assert parse_version((await dev.exchange(GET_VERSION)).message)
