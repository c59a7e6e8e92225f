"""End-to-end tests through a real QEMU NVMe controller's Security Send / Security Receive.

QEMU >= 10.2 (``-device nvme,spdm_port=P,spdm_trans=nvme``) forwards the admin commands
Security Send / Receive with SECP 0xE8 to a platform-socket responder;
:mod:`emulator.qemu_nvme` plays the guest's NVMe driver through qtest (admin queues in
guest memory, PRPs, doorbells; no guest kernel).  Two groups, as tests/test_qemu.py:

* driver tests against a scripted storage peer, checking byte for byte what QEMU forwards
  (the 12-byte platform header, transport type 4, QEMU's 7-byte storage header) and what
  it makes of the replies (the 2-byte big-endian status in the completion, the data
  copied to the guest, 0x4004 for data QEMU cannot take, its own refusals);
* the real emulator (``spdm_responder`` fixture, storage binding) behind QEMU, verified by
  the project's requester plus independent checks: DISCOVERY, VCA, GET_DIGESTS,
  GET_CERTIFICATE up to the committed root, CHALLENGE with its signature verified here,
  signed GET_MEASUREMENTS, a secure session in SECURED_MESSAGE commands, the statuses of
  the pending-response model, and faults (a dropped response is "nothing pending").

QEMU comes from ``scripts/qemu-spdm-nvme.sh`` (its cached build of Debian's 10.2.2 source
on Debian 12), ``$SPDM_EMULATOR_QEMU_NVME`` or PATH; without one these tests skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from emulator.codec.constants import BaseAsymAlgo, MeasurementHashAlgo, RequestCode, ResponseCode
from emulator.codec.session import KeyUpdateOperation
from emulator.pytest_plugin import SpdmResponder
from emulator.qemu_nvme import QemuNvmeSecurity, QemuStorageError
from emulator.qemu_qtest import probe_qemu
from emulator.requester import Requester, RequesterConfig, measurements, session
from tests.test_qemu import MEAS_HASHES, authenticate, check_vca

QEMU, MISSING = probe_qemu("spdm_trans")

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(QEMU is None, reason=f"no QEMU with spdm_trans=nvme: {MISSING}"),
]

IF_SEND, IF_RECV, ACK = 0x0002, 0x0003, 0x0004
NVME = 4
GET_VERSION = bytes.fromhex("10840000")
CANNED_VERSION = bytes.fromhex("10040000 0001 0010".replace(" ", ""))
STORAGE = pytest.mark.spdm_profile("default", transport="storage")


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def frame(command: int, payload: bytes, transport: int = NVME) -> bytes:
    return struct.pack(">III", command, transport, len(payload)) + payload


def status(value: int) -> bytes:
    return frame(ACK, value.to_bytes(2, "big"))


# --------------------------------------------------------------------- scripted peer


@dataclass
class StoragePeer:
    """A platform-socket listener that records frames; ``reply(command, payload)`` gives
    the raw bytes to send back (None: stay silent)."""

    reply: Callable[[int, bytes], bytes | None]
    frames: list[tuple[int, int, bytes]] = field(default_factory=list)
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
        try:
            while True:
                command, transport, size = struct.unpack(">III", await reader.readexactly(12))
                payload = await reader.readexactly(size)
                self.frames.append((command, transport, payload))
                answer = self.reply(command, payload)
                if answer is not None:
                    writer.write(answer)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def canned(command: int, payload: bytes) -> bytes:
    """Status 0 to an IF_SEND; status 0 and a canned VERSION to an IF_RECV."""
    if command == IF_SEND:
        return status(0)
    return status(0) + frame(IF_RECV, CANNED_VERSION)


@pytest.fixture
async def peer() -> AsyncIterator[StoragePeer]:
    p = StoragePeer(canned)
    await p.start()
    yield p
    await p.stop()


@contextlib.asynccontextmanager
async def scripted(reply: Callable[[int, bytes], bytes | None]) -> AsyncIterator[StoragePeer]:
    p = StoragePeer(reply)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def test_qemu_answers_protocol_list_and_other_secps_itself(peer: StoragePeer) -> None:
    async with QemuNvmeSecurity(peer.port) as dev:
        # SECP 0 / SPSP 0: 0x00 and 0xE8 (DMTF SPDM) while the socket is connected
        assert await dev.supported_protocols() == [0x00, 0xE8]
        assert (await dev.security_send(GET_VERSION, 0x14, secp=0xEA)).status == 0x4002
        assert (await dev.security_receive(16, 0x14, secp=0x01)).status == 0x4002
        assert (await dev.security_receive(0, 0x14)).status == 0x4002  # allocation 0
        # a transfer over the 0x1200-byte buffer (header included) never leaves QEMU
        assert (await dev.security_send(bytes(0x1200 - 7 + 1), 0x14)).status == 0x4002
    assert peer.frames == []


async def test_security_send_and_receive_as_qemu_forwards_them(peer: StoragePeer) -> None:
    async with QemuNvmeSecurity(peer.port) as dev:
        sent = await dev.security_send(GET_VERSION, 0x14)
        received = await dev.security_receive(64, 0x14)
        largest = await dev.security_send(bytes(range(256)) * 17 + bytes(0x1200 - 7 - 4352), 0x14)
        spsp1 = await dev.security_send(GET_VERSION, 0x14, spsp1=0x5A)
        spsp1_recv = await dev.security_receive(64, 0x14, spsp1=0x5A)
    assert sent.status == 0 and received.status == 0 and largest.status == 0
    assert received.data == CANNED_VERSION + bytes(64 - len(CANNED_VERSION))
    assert peer.frames[0] == (IF_SEND, NVME, h("e8 14 00 04000000") + GET_VERSION)
    assert peer.frames[1] == (IF_RECV, NVME, h("e8 14 00 40000000"))
    assert peer.frames[2][2][:7] == h("e8 14 00 f9110000") and len(peer.frames[2][2]) == 0x1200
    # QEMU passes SPSP1 on a Security Send, and keeps only 8 bits of SPSP on a receive
    assert peer.frames[3] == (IF_SEND, NVME, h("e8 14 5a 04000000") + GET_VERSION)
    assert spsp1.status == 0
    assert peer.frames[4] == (IF_RECV, NVME, h("e8 14 00 40000000"))
    assert spsp1_recv.status == 0


async def test_qemu_completes_with_the_responders_status() -> None:
    def reply(command: int, payload: bytes) -> bytes:
        return status(0x4002 if command == IF_SEND else 0x0006)

    async with scripted(reply) as p, QemuNvmeSecurity(p.port) as dev:
        assert (await dev.security_send(GET_VERSION, 0x14)).status == 0x4002
        got = await dev.security_receive(64, 0x14)
        assert got.status == 0x0006 and got.data == b""  # no data read after a non-zero one
        assert len(p.frames) == 2


async def test_data_qemu_cannot_take_fails_the_receive_with_0x4004() -> None:
    replies = iter(
        [
            status(0) + frame(IF_RECV, b""),  # zero bytes of data
            status(0) + frame(IF_RECV, CANNED_VERSION),
        ]
    )
    async with scripted(lambda c, pl: next(replies)) as p, QemuNvmeSecurity(p.port) as dev:
        assert (await dev.security_receive(64, 0x14)).status == 0x4004
        good = await dev.security_receive(len(CANNED_VERSION), 0x14)
        assert good.status == 0 and good.data == CANNED_VERSION
    # more data than the allocation length: 0x4004, and the unread bytes stay in the socket
    longer = status(0) + frame(IF_RECV, CANNED_VERSION)
    async with scripted(lambda c, pl: longer) as p, QemuNvmeSecurity(p.port) as dev:
        assert (await dev.security_receive(4, 0x14)).status == 0x4004
        assert (await dev.security_receive(64, 0x14)).status == 0x4004  # out of step now


async def test_a_status_frame_of_the_wrong_size_is_a_transfer_error() -> None:
    async with scripted(lambda c, pl: frame(ACK, b"\x00")) as p, QemuNvmeSecurity(p.port) as dev:
        assert (await dev.security_send(GET_VERSION, 0x14)).status == 0x4004


async def test_a_silent_responder_freezes_qemu_until_it_is_killed() -> None:
    async with scripted(lambda c, pl: None) as p:
        dev = QemuNvmeSecurity(p.port, exchange_timeout=1.5)
        async with dev:
            with pytest.raises(QemuStorageError, match="timed out"):
                await dev.security_send(GET_VERSION, 0x14)
        assert dev.returncode is not None


# --------------------------------------------------------------------- real emulator


@STORAGE
async def test_discovery_vca_and_pending_info_through_qemu(spdm_responder: SpdmResponder) -> None:
    device = spdm_responder.device
    async with QemuNvmeSecurity(spdm_responder.port) as dev:
        assert await dev.discovery() == h("2000 0010 00 000000 66") + bytes(23)
        assert await dev.pending_info() == (False, 0)
        assert (await dev.security_send(GET_VERSION, 0x14)).status == 0
        entries = b"".join(struct.pack("<H", int(v) << 8) for v in device.versions)
        version = bytes([0x10, 0x04, 0, 0, 0, len(device.versions)]) + entries
        assert await dev.pending_info() == (True, len(version))
        # an allocation length too small: 0x4002, and the response is still there
        assert (await dev.security_receive(len(version) - 1, 0x14)).status == 0x4002
        got = await dev.security_receive(len(version), 0x14)
        assert got.status == 0 and got.data == version
        # nothing pending any more
        assert (await dev.security_receive(64, 0x14)).status == 0x4002
        assert await check_vca(Requester(dev), device) == max(int(v) for v in device.versions)
    assert spdm_responder.requests[:4] == [
        "GET_VERSION",
        "GET_VERSION",
        "GET_CAPABILITIES",
        "NEGOTIATE_ALGORITHMS",
    ]


@STORAGE
@pytest.mark.parametrize(
    ("version", "asym"),
    [(0x13, BaseAsymAlgo.ECDSA_P384), (0x12, BaseAsymAlgo.RSASSA_3072)],
    ids=["1.3-p384", "1.2-rsa3072"],
)
async def test_authenticates_the_device_through_security_send_receive(
    spdm_responder: SpdmResponder, version: int, asym: int
) -> None:
    """GET_DIGESTS, GET_CERTIFICATE up to the committed root, CHALLENGE_AUTH's signature
    verified here (tests/test_qemu.py's checks, through the storage path)."""
    async with QemuNvmeSecurity(spdm_responder.port) as dev:
        await authenticate(dev, spdm_responder.device, version, asym)
    names = spdm_responder.requests
    assert names[:4] == ["GET_VERSION", "GET_CAPABILITIES", "NEGOTIATE_ALGORITHMS", "GET_DIGESTS"]
    assert names[-1] == "CHALLENGE"
    assert all(event.error is None for event in spdm_responder.events)


@STORAGE
async def test_signed_measurements_through_qemu(spdm_responder: SpdmResponder) -> None:
    device = spdm_responder.device
    async with QemuNvmeSecurity(spdm_responder.port) as dev:
        requester, chain = await authenticate(dev, device, 0x13, BaseAsymAlgo.ECDSA_P384)
        blocks = await measurements.get_all_measurements(
            requester, signed=True, public_key=chain.leaf_key
        )
        assert [b.index for b in blocks] == device.measurements.indices()
        digest = MEAS_HASHES[MeasurementHashAlgo(requester.neg.measurement_hash)]
        firmware = device.measurements.get(2)
        assert firmware is not None
        by_index = {b.index: b for b in blocks}
        assert by_index[2].value == digest(firmware.value).digest()
    assert all(event.error is None for event in spdm_responder.events)


@STORAGE
async def test_secure_session_through_secured_message_commands(
    spdm_responder: SpdmResponder,
) -> None:
    """KEY_EXCHANGE and FINISH, then GET_DIGESTS, HEARTBEAT, KEY_UPDATE and END_SESSION as
    DSP0277 records in SECURED_MESSAGE (SPSP0 0x18) Security Send/Receive commands,
    encrypted and decrypted by the requester's own key schedule."""
    device = spdm_responder.device
    async with QemuNvmeSecurity(spdm_responder.port) as dev:
        requester, chain = await authenticate(dev, device, 0x13, BaseAsymAlgo.ECDSA_P384)
        digest = hashlib.new("sha384", chain.chain).digest()
        secure = await session.open_session(requester, peer_chain=chain.chain, binding="storage")
        digests = await secure.send(bytes((0x13, RequestCode.GET_DIGESTS, 0, 0)))
        assert digests[:2] == bytes((0x13, ResponseCode.DIGESTS))
        assert digests[4 : 4 + len(digest)] == digest
        await secure.heartbeat()
        await secure.key_update(KeyUpdateOperation.UPDATE_ALL_KEYS)
        await secure.heartbeat()
        await secure.end_session()
        # plain SPDM again over the same controller
        assert (await requester.send(bytes((0x13, RequestCode.GET_DIGESTS, 0, 0))))[1] == 0x01
    in_session = [e for e in spdm_responder.events if e.secured]
    assert [e.request_name for e in in_session][:2] == ["FINISH", "GET_DIGESTS"]
    assert in_session[-1].request_name == "END_SESSION"
    assert {e.session_id for e in in_session} == {secure.session_id}
    assert all(event.error is None for event in spdm_responder.events)


@STORAGE
async def test_faults_through_qemu_drop_is_nothing_pending(spdm_responder: SpdmResponder) -> None:
    """Unlike DOE, a dropped response does not freeze the VM: the Security Receive
    completes with 0x4002 and the next request works."""
    faults = spdm_responder.faults
    faults.add("on=GET_VERSION,nth=1,do=drop")
    faults.add("on=CHALLENGE,nth=1,do=error:Busy")
    async with QemuNvmeSecurity(spdm_responder.port, exchange_timeout=5.0) as dev:
        assert (await dev.security_send(GET_VERSION, 0x14)).status == 0
        assert await dev.pending_info() == (False, 0)
        assert (await dev.security_receive(64, 0x14)).status == 0x4002
        requester = Requester(dev, RequesterConfig(version=0x13))
        await check_vca(requester, spdm_responder.device, 0x13)
        from emulator.requester import SpdmErrorReply, identity

        flow = identity.flow_for(requester)
        await flow.get_digests()
        await flow.get_certificate(0)
        with pytest.raises(SpdmErrorReply) as busy:
            await flow.challenge(0)
        assert busy.value.error_name == "Busy"
        await flow.challenge(0)


@STORAGE
async def test_restarting_qemu_against_a_running_emulator(spdm_responder: SpdmResponder) -> None:
    for _ in range(2):
        async with QemuNvmeSecurity(spdm_responder.port) as dev:
            await check_vca(Requester(dev), spdm_responder.device)
    assert sorted({e.connection for e in spdm_responder.events}) == [1, 2]
