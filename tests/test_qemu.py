"""End-to-end tests through a real QEMU NVMe controller's PCIe DOE mailbox.

QEMU (``-device nvme,spdm_port=P``) forwards CMA/SPDM data objects to a platform-socket
responder; :mod:`emulator.qemu_doe` plays the guest through qtest.  Two groups:

* driver tests against a tiny scripted platform-socket peer (``ScriptedPeer``), which
  check what QEMU forwards byte by byte and how the driver reports bad replies;
* the real emulator (the ``spdm_responder`` fixture of the project's pytest plugin)
  behind QEMU, verified by the project's requester: DOE discovery, VCA at 1.0-1.3,
  device authentication (GET_DIGESTS, GET_CERTIFICATE up to the committed root,
  CHALLENGE with its signature verified), the Linux PCI CMA sequence, signed
  GET_MEASUREMENTS with a runtime change, a secure session in secured (type 2) DOE
  objects, QEMU restarted against one running emulator, and faults (an ERROR, and a
  dropped reply that hangs QEMU until killed).

QEMU is always killed: ``QemuNvmeDoe`` is used as an async context manager.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from emulator import qemu_doe
from emulator.codec.constants import (
    BaseAsymAlgo,
    BaseHashAlgo,
    MeasurementHashAlgo,
    RequestCode,
    ResponseCode,
)
from emulator.codec.session import KeyUpdateOperation
from emulator.device.model import Device
from emulator.pytest_plugin import SpdmResponder
from emulator.qemu_doe import (
    DoeProtocol,
    QemuDoeError,
    QemuNvmeDoe,
    doe_object,
    find_qemu,
    qemu_missing_reason,
)
from emulator.requester import (
    Requester,
    RequesterConfig,
    SpdmErrorReply,
    identity,
    linux_cma,
    measurements,
    session,
)

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(find_qemu() is None, reason=f"no suitable QEMU: {qemu_missing_reason()}"),
]

ROOT = Path(__file__).resolve().parent.parent
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
# The emulator runs in-process through the project's pytest plugin (``spdm_responder``:
# its own thread and event loop, free loopback port, default profile over PCI DOE);
# QEMU forwards the guest's DOE objects to it.  Everything is verified by the project's
# requester (emulator.requester), which checks with its own code (never the responder's),
# plus a few independent checks right here: the committed root certificate, each
# certificate signed by its parent, and the CHALLENGE_AUTH signature, with
# ``cryptography`` objects directly.

#: the committed test chains, by the base asym algorithm that selects them
CHAIN_DIRS = {
    BaseAsymAlgo.ECDSA_P256: "ecdsa-p256",
    BaseAsymAlgo.ECDSA_P384: "ecdsa-p384",
    BaseAsymAlgo.ECDSA_P521: "ecdsa-p521",
    BaseAsymAlgo.RSASSA_2048: "rsa-2048",
    BaseAsymAlgo.RSASSA_3072: "rsa-3072",
    BaseAsymAlgo.RSASSA_4096: "rsa-4096",
}
#: what the Linux PCI CMA requester compares with the leaf's SAN for QEMU's NVMe controller
QEMU_NVME_SAN = "Vendor=1b36:Device=0010:CC=010802:REV=02:SSVID=1af4:SSID=1100"
HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    BaseHashAlgo.SHA_256: hashes.SHA256,
    BaseHashAlgo.SHA_384: hashes.SHA384,
    BaseHashAlgo.SHA_512: hashes.SHA512,
}
RSASSA_ALL = BaseAsymAlgo.RSASSA_2048 | BaseAsymAlgo.RSASSA_3072 | BaseAsymAlgo.RSASSA_4096
MEAS_HASHES = {
    MeasurementHashAlgo.SHA_256: hashlib.sha256,
    MeasurementHashAlgo.SHA_384: hashlib.sha384,
    MeasurementHashAlgo.SHA_512: hashlib.sha512,
}


def committed_root(asym: int) -> bytes:
    return (ROOT / "certs" / CHAIN_DIRS[BaseAsymAlgo(asym)] / "slot0" / "root.der").read_bytes()


def check_padding(reply: bytes, length: int) -> None:
    """The DOE payload is the message plus fewer than 4 zero bytes of padding."""
    assert len(reply) >= length
    assert len(reply) - length < 4 and reply[length:] == bytes(len(reply) - length)


def check_chain_independently(chain: identity.SlotChain, root_der: bytes) -> None:
    """The chain starts at the committed root, and each certificate is signed by its parent."""
    ders = [c.public_bytes(serialization.Encoding.DER) for c in chain.certs]
    assert ders[0] == root_der, "the chain's root is not the committed root.der"
    root = x509.load_der_x509_certificate(root_der)
    root.verify_directly_issued_by(root)
    for parent, cert in itertools.pairwise(chain.certs):
        cert.verify_directly_issued_by(parent)
    assert int.from_bytes(chain.chain[:2], "little") == len(chain.chain)  # chain Length
    assert chain.chain.endswith(b"".join(ders)), "the SPDM chain ends with the certificates"


def check_challenge_signature(
    version: int, asym: int, hash_algo: int, leaf: x509.Certificate, m1: bytes, signature: bytes
) -> None:
    """DSP0274: 1.0/1.1 sign M1; 1.2+ sign the combined prefix || Hash(M1) (libspdm)."""
    hash_cls = HASHES[hash_algo]
    if version >= 0x12:
        context = b"responder-challenge_auth signing"
        prefix = f"dmtf-spdm-v{version >> 4}.{version & 0xF}.*".encode() * 4
        digest = hashes.Hash(hash_cls())
        digest.update(m1)
        data = prefix + bytes(36 - len(context)) + context + digest.finalize()
    else:
        data = m1
    key = leaf.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        half = len(signature) // 2
        der = encode_dss_signature(
            int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
        )
        key.verify(der, data, ec.ECDSA(hash_cls()))
    else:
        assert isinstance(key, rsa.RSAPublicKey) and asym & RSASSA_ALL
        key.verify(signature, data, padding.PKCS1v15(), hash_cls())


async def check_vca(requester: Requester, device: Device, version: int | None = None) -> int:
    """VCA through QEMU with the project's requester; the choices match the device's."""
    neg = await requester.vca()
    assert neg.versions == sorted(int(v) for v in device.versions)
    assert neg.version == (max(neg.versions) if version is None else version)
    assert neg.rsp_ct_exponent == device.ct_exponent
    assert neg.rsp_flags & ~int(device.capabilities) == 0
    if neg.version >= 0x12:
        assert neg.rsp_data_transfer_size == device.data_transfer_size
    offered = requester.config.base_asym
    assert neg.base_asym == next(b for b in device.priorities["base_asym"] if b & offered)
    return neg.version


async def test_emulator_through_qemu_discovery_and_vca(spdm_responder: SpdmResponder) -> None:
    device = spdm_responder.device
    async with QemuNvmeDoe(spdm_responder.port) as dev:
        assert await dev.discover() == [DoeProtocol(1, 0), DoeProtocol(1, 1), DoeProtocol(1, 2)]
        # byte-exact VERSION (DSP0274 "Successful VERSION response") through the mailbox
        reply = await dev.exchange(GET_VERSION)
        assert not reply.secured
        entries = b"".join(struct.pack("<H", int(v) << 8) for v in device.versions)
        expected = bytes([0x10, 0x04, 0, 0, 0, len(device.versions)]) + entries
        assert reply.message[: len(expected)] == expected
        check_padding(reply.message, len(expected))
        assert await check_vca(Requester(dev), device) == max(int(v) for v in device.versions)
        # GET_VERSION resets the connection: VCA again over the same QEMU works
        await check_vca(Requester(dev), device)
    assert spdm_responder.requests[:4] == [
        "GET_VERSION",
        "GET_VERSION",
        "GET_CAPABILITIES",
        "NEGOTIATE_ALGORITHMS",
    ]
    assert all(event.error is None for event in spdm_responder.events)


@pytest.mark.parametrize("version", [0x10, 0x11, 0x12])
async def test_emulator_through_qemu_older_versions(
    spdm_responder: SpdmResponder, version: int
) -> None:
    if version not in spdm_responder.device.versions:
        pytest.skip(f"the default profile does not offer {version:#x}")
    async with QemuNvmeDoe(spdm_responder.port) as dev:
        requester = Requester(dev, RequesterConfig(version=version))
        assert await check_vca(requester, spdm_responder.device, version) == version


async def authenticate(
    dev: QemuNvmeDoe, device: Device, version: int, asym: int
) -> tuple[Requester, identity.SlotChain]:
    """VCA, GET_DIGESTS, GET_CERTIFICATE (portions of 0x400), CHALLENGE through QEMU.

    The project's requester verifies the chain up to the committed slot-0 root and the
    CHALLENGE_AUTH signature over its own M1; the test checks both once more itself.
    """
    root_der = committed_root(asym)
    requester = Requester(dev, RequesterConfig(version=version, base_asym=asym))
    await check_vca(requester, device, version)
    assert requester.neg.base_asym == asym
    flow = identity.flow_for(requester, trusted_roots=[root_der])
    digests = await flow.get_digests()
    assert digests.provisioned_mask & 1
    chain = await flow.get_certificate(0)
    assert chain.portions == -(-len(chain.chain) // 0x400)
    assert (
        hashlib.new(HASHES[requester.neg.base_hash]().name, chain.chain).digest()
        == (digests.digests[0])
    )
    check_chain_independently(chain, root_der)
    result = await flow.challenge(0)
    assert result.transcript.startswith(bytes(requester.message_a))
    check_challenge_signature(
        version,
        asym,
        requester.neg.base_hash,
        chain.certs[-1],
        result.transcript,
        result.signature,
    )
    return requester, chain


@pytest.mark.parametrize(
    ("version", "asym"),
    [
        (0x13, BaseAsymAlgo.ECDSA_P384),
        (0x12, BaseAsymAlgo.RSASSA_3072),
        (0x11, BaseAsymAlgo.ECDSA_P256),
        (0x10, BaseAsymAlgo.ECDSA_P384),
    ],
    ids=["1.3-p384", "1.2-rsa3072", "1.1-p256", "1.0-p384"],
)
async def test_authenticates_the_device_through_qemus_doe_mailbox(
    spdm_responder: SpdmResponder, version: int, asym: int
) -> None:
    async with QemuNvmeDoe(spdm_responder.port) as dev:
        await authenticate(dev, spdm_responder.device, version, asym)
    names = spdm_responder.requests
    assert names[:4] == ["GET_VERSION", "GET_CAPABILITIES", "NEGOTIATE_ALGORITHMS", "GET_DIGESTS"]
    assert names[-1] == "CHALLENGE"
    assert set(names[4:-1]) == {"GET_CERTIFICATE"}
    assert all(event.error is None for event in spdm_responder.events)


async def test_linux_cma_sequence_through_qemu(spdm_responder: SpdmResponder) -> None:
    """What a guest kernel with the PCI CMA patches does: its algorithms, its whole-chain
    GET_CERTIFICATE, the SAN check against QEMU's NVMe IDs, then CHALLENGE."""
    root = committed_root(BaseAsymAlgo.ECDSA_P384)
    async with QemuNvmeDoe(spdm_responder.port) as dev:
        report = await linux_cma.authenticate_linux_cma(dev, [root], QEMU_NVME_SAN)
    assert report.ok and report.slot == 0
    assert (report.version, report.base_asym) == (0x13, BaseAsymAlgo.ECDSA_P384)
    # the kernel reads every provisioned slot, each whole chain in one request; every
    # CERTIFICATE fits one DOE object within QEMU's 0x1200-byte buffer
    certificate_events = [e for e in spdm_responder.events if e.request_name == "GET_CERTIFICATE"]
    slots = [e.request[2] & 0x0F for e in certificate_events]
    assert slots == [s for s in range(8) if report.provisioned_slots & (1 << s)]
    for event in certificate_events:
        assert event.response is not None and event.error is None
        assert int.from_bytes(event.response[6:8], "little") == 0  # RemainderLength
        assert 8 + len(event.response) <= QEMU_BUFFER


async def test_measurements_through_qemu_and_a_runtime_change(
    spdm_responder: SpdmResponder,
) -> None:
    device = spdm_responder.device
    async with QemuNvmeDoe(spdm_responder.port) as dev:
        requester, chain = await authenticate(dev, device, 0x13, BaseAsymAlgo.ECDSA_P384)
        blocks = await measurements.get_all_measurements(
            requester, signed=True, public_key=chain.leaf_key
        )
        assert [b.index for b in blocks] == device.measurements.indices()
        digest = MEAS_HASHES[MeasurementHashAlgo(requester.neg.measurement_hash)]
        by_index = {b.index: b for b in blocks}
        # the profile's version text goes out raw; the firmware image as its digest
        assert by_index[5].raw and by_index[5].value == b"1.2.3"
        firmware = device.measurements.get(2)
        assert firmware is not None
        assert not by_index[2].raw and by_index[2].value == digest(firmware.value).digest()

        # a firmware update, made through the fixture while QEMU stays attached
        new_image = b"\x7fELF updated firmware image"
        spdm_responder.device.measurements.set_value(2, new_image)
        result = await measurements.get_measurements(
            requester, 2, signed=True, public_key=chain.leaf_key
        )
        assert result.signed and len(result.blocks) == 1
        assert result.blocks[0].value == digest(new_image).digest()
    assert all(event.error is None for event in spdm_responder.events)


async def test_secure_session_through_qemus_secured_doe_objects(
    spdm_responder: SpdmResponder,
) -> None:
    """KEY_EXCHANGE in the clear, then FINISH, GET_DIGESTS, HEARTBEAT, KEY_UPDATE and
    END_SESSION as DSP0277 records in secured CMA/SPDM (type 2) DOE objects, encrypted and
    decrypted by the requester's own key schedule."""
    device = spdm_responder.device
    async with QemuNvmeDoe(spdm_responder.port) as dev:
        requester, chain = await authenticate(dev, device, 0x13, BaseAsymAlgo.ECDSA_P384)
        digest_in_clear = hashlib.new(HASHES[requester.neg.base_hash]().name, chain.chain)
        secure = await session.open_session(requester, peer_chain=chain.chain, binding="doe")
        digests = await secure.send(bytes((0x13, RequestCode.GET_DIGESTS, 0, 0)))
        assert digests[:2] == bytes((0x13, ResponseCode.DIGESTS))
        assert digests[3] & 1 and digests[4 : 4 + digest_in_clear.digest_size] == (
            digest_in_clear.digest()
        )
        await secure.heartbeat()
        await secure.key_update(KeyUpdateOperation.UPDATE_ALL_KEYS)
        await secure.heartbeat()  # with the new keys both ways
        await secure.end_session()
    in_session = [e for e in spdm_responder.events if e.secured]
    assert [e.request_name for e in in_session][:2] == ["FINISH", "GET_DIGESTS"]
    assert in_session[-1].request_name == "END_SESSION"
    assert {e.session_id for e in in_session} == {secure.session_id}
    assert all(event.error is None for event in spdm_responder.events)


async def test_restarting_qemu_against_a_running_emulator(spdm_responder: SpdmResponder) -> None:
    device = spdm_responder.device
    for _ in range(2):
        dev = QemuNvmeDoe(spdm_responder.port)
        async with dev:
            await authenticate(dev, device, 0x13, BaseAsymAlgo.ECDSA_P384)
        assert dev.returncode is not None
    # both QEMU connections were served by the one emulator, which still listens
    async with QemuNvmeDoe(spdm_responder.port) as dev:
        await authenticate(dev, device, 0x12, BaseAsymAlgo.ECDSA_P384)
    assert sorted({e.connection for e in spdm_responder.events}) == [1, 2, 3]


async def test_faults_through_qemu_error_then_drop_freezes_until_qemu_is_killed(
    spdm_responder: SpdmResponder,
) -> None:
    faults = spdm_responder.faults
    if faults is None:
        pytest.skip("this build has no fault engine")
    device = spdm_responder.device
    faults.add("on=CHALLENGE,nth=1,do=error:Busy")
    async with QemuNvmeDoe(spdm_responder.port) as dev:
        requester = Requester(dev)
        await check_vca(requester, device)
        flow = identity.flow_for(requester, trusted_roots=[committed_root(requester.neg.base_asym)])
        await flow.get_digests()
        await flow.get_certificate(0)
        with pytest.raises(SpdmErrorReply) as busy:
            await flow.challenge(0)
        assert busy.value.error_name == "Busy"
        await flow.challenge(0)  # nth=1: the retry is answered

    # A dropped response leaves QEMU blocked in recv(): the guest (here, qtest) hangs
    # until QEMU is killed; the emulator keeps serving the next QEMU.
    faults.clear()
    faults.add("on=GET_VERSION,do=drop")
    hung = QemuNvmeDoe(spdm_responder.port, exchange_timeout=2.0)
    async with hung:
        with pytest.raises(QemuDoeError, match="timed out"):
            await hung.exchange(GET_VERSION)
    assert hung.returncode is not None
    faults.clear()
    async with QemuNvmeDoe(spdm_responder.port) as dev:
        await authenticate(dev, device, 0x13, BaseAsymAlgo.ECDSA_P384)
