"""The DSP0286 storage binding as QEMU 10.2's ``spdm_trans=nvme`` speaks it, byte for byte.

Expected bytes are written out here from QEMU's ``hw/nvme/ctrl.c`` / ``spdm-socket.h`` and
libspdm's ``spdm_storage_binding.h`` layouts (PROTOCOL.md "Storage binding"), never built
with the code under test: the 12-byte big-endian platform header, QEMU's 7-byte
little-endian storage header (SECP, SPSP, length), the 2-byte big-endian NVMe status
(ACK_STATUS 0x0004), the IF_RECV data, DISCOVERY / PENDING_INFO data and the secured
message's reserved bytes and descriptor block.  Sockets are real (the emulator's server on
a loopback port); secure sessions are decrypted by the test side.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from emulator.app import Emulator
from emulator.codec.constants import AeadSuite, BaseAsymAlgo, BaseHashAlgo, ResponseCode
from emulator.connection import SpdmConnection
from emulator.errors import RequesterError, TransportError
from emulator.options import RunOptions
from emulator.requester import Requester, RequesterConfig, identity, measurements
from emulator.requester.session import ConnectionChannel, open_session
from emulator.requester.transport import StorageClient, open_client
from emulator.trace import read_pcap
from emulator.transport import get_binding
from emulator.transport.platform import Frame
from emulator.transport.storage import (
    StorageAppData,
    StorageBinding,
    StorageStreamCodec,
    discovery_response,
    encode_header,
    parse_header,
    pending_info_response,
    status_frame,
)
from tests.test_session import CHAIN384, FULL_FLAGS, make_device

IF_SEND, IF_RECV, ACK, NORMAL, UNKNOWN, TEST = 0x0002, 0x0003, 0x0004, 0x0001, 0xFFFF, 0xDEAD
NVME = 4
GET_VERSION = bytes.fromhex("10840000")
#: VERSION 1.0 with the default profile's entries 1.0, 1.1, 1.2, 1.3
VERSION = bytes.fromhex("10040000 0004 0010 0011 0012 0013".replace(" ", ""))
OK = b"\x00\x00"
INVALID = b"\x40\x02"  # NVMe Do Not Retry | Invalid Field in Command, big-endian


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def frame(command: int, payload: bytes = b"", transport: int = NVME) -> bytes:
    """A platform frame, packed here: command, transport, size (big-endian), payload."""
    return struct.pack(">III", command, transport, len(payload)) + payload


def header(secp: int, spsp0: int, length: int, spsp1: int = 0) -> bytes:
    """QEMU's StorageSpdmTransportHeader, packed here: u8, u16 LE (SPSP0, SPSP1), u32 LE."""
    return bytes((secp, spsp0, spsp1)) + struct.pack("<I", length)


def send_payload(message: bytes, spsp0: int = 0x14) -> bytes:
    return header(0xE8, spsp0, len(message)) + message


class Peer:
    """A raw socket playing QEMU: sends hand-made frames, reads frames as bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Peer:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def frame(self) -> tuple[int, int, bytes]:
        async with asyncio.timeout(5):
            command, transport, size = struct.unpack(">III", await self.reader.readexactly(12))
            return command, transport, await self.reader.readexactly(size)

    async def raw_frame(self) -> bytes:
        command, transport, payload = await self.frame()
        return struct.pack(">III", command, transport, len(payload)) + payload

    async def eof(self) -> bytes:
        async with asyncio.timeout(5):
            return await self.reader.read()

    async def if_send(self, payload: bytes) -> bytes:
        await self.send(frame(IF_SEND, payload))
        return await self.raw_frame()

    async def if_recv(self, spsp0: int, allocation: int) -> list[bytes]:
        """IF_RECV; the status frame, and the data frame when the status is 0."""
        await self.send(frame(IF_RECV, header(0xE8, spsp0, allocation)))
        status = await self.raw_frame()
        if status[12:] != OK:
            return [status]
        return [status, await self.raw_frame()]

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


ACK_OK = frame(ACK, OK)
ACK_INVALID = frame(ACK, INVALID)


def data_frame(data: bytes) -> bytes:
    return frame(IF_RECV, data)


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    emu = Emulator(RunOptions(port=0, transport="storage"))
    await emu.start()
    yield emu
    await emu.stop()


# --------------------------------------------------------------------- codec, sans-I/O


def test_storage_header_layout() -> None:
    assert encode_header(5, 4) == h("e8 14 00 04000000")
    assert encode_header(6, 0x11F9, connection_id=3) == h("e8 1b 00 f9110000")
    assert encode_header(2, 12, secp=0, spsp1=0x12) == h("00 08 12 0c000000")
    parsed = parse_header(h("e8 19 00 20000000 aa"))
    assert (parsed.secp, parsed.spsp0, parsed.spsp1, parsed.length) == (0xE8, 0x19, 0, 32)
    assert (parsed.operation, parsed.connection_id) == (6, 1)
    with pytest.raises(TransportError, match="shorter than QEMU's 7-byte storage header"):
        parse_header(h("e8 14 00 0400"))


def test_status_discovery_and_pending_info_bytes() -> None:
    assert status_frame(0) == Frame(ACK, NVME, OK)
    assert status_frame(0x4002) == Frame(ACK, NVME, INVALID)
    # DataLength 32, binding version 0x1000, ConnParams 0, 3 reserved, supported
    # operations 1<<1 | 1<<2 | 1<<5 | 1<<6, 7 + 16 reserved (libspdm's layout)
    assert discovery_response() == h("2000 0010 00 000000 66") + bytes(23)
    assert pending_info_response(None) == h("0c00 0010 00000000 00000000")
    assert pending_info_response(0x1234) == h("0c00 0010 01000000 34120000")


def test_secured_descriptor_block_as_libspdm_writes_it() -> None:
    app = StorageAppData()
    heartbeat = h("13 68 00 00")
    # NumDescriptors 1, 2 reserved; descriptor from byte 3: reserved, type 4 (SPDM),
    # status 0, reserved, Length 4, Offset 36, reserved; a zero byte; the message at 20
    block = h("01 0000 00 04 00 00 04000000 24000000 00000000 00")
    assert app.wrap(heartbeat) == block + heartbeat
    assert app.unwrap(block + heartbeat) == heartbeat
    # DSP0286's own layout, the descriptor at byte 4, is read too
    spec = h("01 000000") + h("00 04 00 00") + h("04000000 24000000 00000000")
    assert len(spec) == 20 and app.unwrap(spec + heartbeat) == heartbeat
    # a later Offset skips bytes; Length bounds the message (random padding after it)
    later = h("01 0000 00 04 00 00 02000000 26000000 00000000 00") + h("ffff 1368")
    assert app.unwrap(later + h("0000")) == h("1368")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (h("01") + bytes(10), "shorter than the 20-byte descriptor block"),
        (h("00 0000 00 04") + bytes(19), "NumDescriptors is 0"),
        (h("02 0000 00 04") + bytes(19), "NumDescriptors is 2"),
        (h("01 0000 00 05") + bytes(19), "descriptor type 0x05 is not SPDM"),
        (h("01 0000 00 04 00 00 04000000 10000000 00000000 00") + bytes(4), "points into"),
        (h("01 0000 00 04 00 00 09000000 24000000 00000000 00") + bytes(4), "does not fit"),
        (h("01 0000 00 04 00 00 00000000 24000000 00000000 00") + bytes(4), "Length 0"),
    ],
)
def test_secured_descriptor_errors(data: bytes, problem: str) -> None:
    with pytest.raises(TransportError, match=problem):
        StorageAppData().unwrap(data)


def test_decode_and_encode_payloads() -> None:
    b = StorageBinding()
    assert b.decode(send_payload(GET_VERSION)).message == GET_VERSION
    record = h("00000000 78563412 0100 0400 aabbccdd")  # reserved, SessionID, seq, length...
    decoded = b.decode(send_payload(record, 0x18))
    assert decoded.secured and decoded.message == record[4:]
    assert b.encode(VERSION) == VERSION
    assert b.encode(record[4:], secured=True) == record
    assert b.encode_request(GET_VERSION) == h("e8 14 00 04000000") + GET_VERSION
    assert b.encode_request(record[4:], secured=True) == h("e8 18 00 10000000") + record
    assert b.decode_response(record, secured=True).message == record[4:]
    with pytest.raises(TransportError, match="SECP 0x00"):
        b.decode(header(0x00, 0x14, 4) + GET_VERSION)
    with pytest.raises(TransportError, match="length 5, but 4 data bytes"):
        b.decode(header(0xE8, 0x14, 5) + GET_VERSION)
    with pytest.raises(TransportError, match="DISCOVERY carries no SPDM message"):
        b.decode(header(0xE8, 0x04, 0))
    with pytest.raises(TransportError, match="too short"):
        b.decode(send_payload(h("00000000 7856"), 0x18))


def test_stream_codec_skips_an_oversized_if_send_and_keeps_step() -> None:
    codec = StorageStreamCodec(64)
    big = frame(IF_SEND, send_payload(bytes(100)))
    out = codec.feed(big[:30])
    assert out == [ACK_INVALID]  # answered as soon as the header is read
    assert codec.pending and codec.needed == len(big) - 30
    out = codec.feed(big[30:] + frame(IF_RECV, header(0xE8, 0x14, 16)))
    assert out == [Frame(IF_RECV, NVME, header(0xE8, 0x14, 16))]
    assert codec.pending == 0
    from emulator.errors import FrameError

    with pytest.raises(FrameError, match="over the limit"):
        StorageStreamCodec(64).feed(frame(NORMAL, bytes(100)))


# --------------------------------------------------------------------- over the socket


async def test_get_version_send_then_receive(emulator: Emulator) -> None:
    peer = await Peer.open(emulator.port)
    assert await peer.if_send(send_payload(GET_VERSION)) == ACK_OK
    assert await peer.if_recv(0x14, 0x1200) == [ACK_OK, data_frame(VERSION)]
    # what QEMU 10.2 sends for a plain request/response: CDW10 0xE8001400 both ways
    await peer.close()


async def test_full_flow_over_storage_client(emulator: Emulator) -> None:
    """VCA, digests, certificate, CHALLENGE (signature verified by the requester) and
    signed measurements through IF_SEND/IF_RECV."""
    async with open_client("127.0.0.1", emulator.port, emulator.binding) as client:
        assert isinstance(client, StorageClient)
        req = Requester(client)
        neg = await req.vca()
        assert neg.version == 0x13
        flow = identity.flow_for(req)
        assert (await flow.get_digests()).provisioned_mask & 1
        chain = await flow.get_certificate(0)
        await flow.challenge(0)
        blocks = await measurements.get_all_measurements(
            req, signed=True, public_key=chain.leaf_key
        )
        assert [b.index for b in blocks] == emulator.device.measurements.indices()


ERRORS = [
    ("SECP 0x00", frame(IF_SEND, header(0x00, 0x14, 4) + GET_VERSION)),
    ("SPSP1 0x01", frame(IF_SEND, header(0xE8, 0x14, 4, spsp1=1) + GET_VERSION)),
    ("connection 1", frame(IF_SEND, header(0xE8, 0x15, 4) + GET_VERSION)),
    ("operation 3", frame(IF_SEND, header(0xE8, 0x0C, 4) + GET_VERSION)),
    ("length 5 / 4 bytes", frame(IF_SEND, header(0xE8, 0x14, 5) + GET_VERSION)),
    ("length 3 / 4 bytes", frame(IF_SEND, header(0xE8, 0x14, 3) + GET_VERSION)),
    ("short header", frame(IF_SEND, h("e8 14 00"))),
    ("MESSAGE of 0 bytes", frame(IF_SEND, header(0xE8, 0x14, 0))),
    ("DISCOVERY with data", frame(IF_SEND, header(0xE8, 0x04, 4) + GET_VERSION)),
    ("short SECURED", frame(IF_SEND, send_payload(bytes(8), 0x18))),
    ("IF_RECV nothing pending", frame(IF_RECV, header(0xE8, 0x14, 0x100))),
    ("IF_RECV allocation 0", frame(IF_RECV, header(0xE8, 0x14, 0))),
    ("IF_RECV with data", frame(IF_RECV, header(0xE8, 0x14, 16) + b"x")),
    ("IF_RECV SECP 0x01", frame(IF_RECV, header(0x01, 0x14, 16))),
    ("IF_RECV DISCOVERY allocation 31", frame(IF_RECV, header(0xE8, 0x04, 31))),
    ("IF_RECV PENDING_INFO allocation 11", frame(IF_RECV, header(0xE8, 0x08, 11))),
]


@pytest.mark.parametrize(("what", "request_frame"), ERRORS, ids=[e[0] for e in ERRORS])
async def test_error_statuses(
    emulator: Emulator, what: str, request_frame: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Each bad command gets status 0x4002 alone (no data frame), reaches no responder,
    and the connection goes on."""
    peer = await Peer.open(emulator.port)
    await peer.send(request_frame)
    assert await peer.raw_frame() == ACK_INVALID
    assert "refused (status 0x4002)" in caplog.text
    assert emulator.connections and all(
        c.responder.version == 0 for c in emulator.connections.values()
    )
    assert await peer.if_send(send_payload(GET_VERSION)) == ACK_OK
    assert await peer.if_recv(0x14, 0x100) == [ACK_OK, data_frame(VERSION)]
    await peer.close()


async def test_response_is_collected_once_and_replaced_by_a_new_request(
    emulator: Emulator,
) -> None:
    peer = await Peer.open(emulator.port)
    assert await peer.if_send(send_payload(GET_VERSION)) == ACK_OK
    assert await peer.if_recv(0x14, 64) == [ACK_OK, data_frame(VERSION)]
    assert await peer.if_recv(0x14, 64) == [ACK_INVALID]  # collected already
    # two requests without a receive between them: the second one's response waits
    assert await peer.if_send(send_payload(GET_VERSION)) == ACK_OK
    assert await peer.if_send(send_payload(h("10e10000"))) == ACK_OK
    status, data = await peer.if_recv(0x14, 256)
    assert status == ACK_OK and data[12:14] == h("1061")  # CAPABILITIES 1.0
    await peer.close()


async def test_secured_receive_may_use_either_message_operation(emulator: Emulator) -> None:
    """spdm-utils' host receives every response with SPSP0 0x14; 0x18 works as well."""
    peer = await Peer.open(emulator.port)
    for spsp0 in (0x14, 0x18):
        assert await peer.if_send(send_payload(GET_VERSION)) == ACK_OK
        assert await peer.if_recv(spsp0, 64) == [ACK_OK, data_frame(VERSION)]
    await peer.close()


async def test_discovery_and_pending_info(emulator: Emulator) -> None:
    peer = await Peer.open(emulator.port)
    assert await peer.if_recv(0x04, 32) == [ACK_OK, data_frame(discovery_bytes())]
    assert await peer.if_recv(0x08, 12) == [ACK_OK, data_frame(h("0c00 0010 00000000 00000000"))]
    assert await peer.if_send(send_payload(GET_VERSION)) == ACK_OK
    # an IF_SEND of DISCOVERY or PENDING_INFO has nothing to do, and keeps the response
    assert await peer.if_send(header(0xE8, 0x04, 0)) == ACK_OK
    assert await peer.if_send(header(0xE8, 0x08, 0)) == ACK_OK
    pending = h("0c00 0010 01000000") + struct.pack("<I", len(VERSION))
    assert await peer.if_recv(0x08, 0x100) == [ACK_OK, data_frame(pending)]
    # an allocation length too small: 0x4002, the response stays pending
    assert await peer.if_recv(0x14, len(VERSION) - 1) == [ACK_INVALID]
    assert await peer.if_recv(0x08, 12) == [ACK_OK, data_frame(pending)]
    assert await peer.if_recv(0x14, len(VERSION)) == [ACK_OK, data_frame(VERSION)]
    assert await peer.if_recv(0x08, 12) == [ACK_OK, data_frame(h("0c00 0010") + bytes(8))]
    await peer.close()


def discovery_bytes() -> bytes:
    return h("2000 0010 00 000000 66") + bytes(23)


async def test_other_commands_and_transport_types(emulator: Emulator) -> None:
    """NORMAL is not a storage command (UNKNOWN); an IF_SEND of another transport type
    never reaches the binding (UNKNOWN); TEST and SHUTDOWN are the server's."""
    peer = await Peer.open(emulator.port)
    await peer.send(frame(NORMAL, GET_VERSION))
    assert await peer.raw_frame() == frame(UNKNOWN)
    await peer.send(frame(IF_SEND, send_payload(GET_VERSION), transport=2))
    assert await peer.raw_frame() == frame(UNKNOWN)
    await peer.send(frame(ACK, OK))  # a status from the host: not a command it may send
    assert await peer.raw_frame() == frame(UNKNOWN)
    await peer.send(frame(TEST, b"Client Hello!\x00"))
    assert await peer.raw_frame() == frame(TEST, b"Server Hello!\x00")
    assert await peer.if_send(send_payload(GET_VERSION)) == ACK_OK
    await peer.send(frame(0xFFFE))
    assert await peer.raw_frame() == frame(0xFFFE)
    assert await peer.eof() == b""
    await peer.close()


async def test_oversized_if_send_is_refused_and_the_stream_stays_in_step() -> None:
    emu = Emulator(RunOptions(port=0, transport="storage", max_payload=0x100))
    async with emu:
        peer = await Peer.open(emu.port)
        assert await peer.if_send(send_payload(bytes(0x200))) == ACK_INVALID
        assert await peer.if_send(send_payload(GET_VERSION)) == ACK_OK
        assert await peer.if_recv(0x14, 64) == [ACK_OK, data_frame(VERSION)]
        # any other oversized frame ends the connection, as the platform framing says
        await peer.send(frame(IF_RECV, bytes(0x200)))
        assert await peer.eof() == b""
        await peer.close()


async def test_connections_keep_their_own_pending_response(emulator: Emulator) -> None:
    a, b = await Peer.open(emulator.port), await Peer.open(emulator.port)
    assert await a.if_send(send_payload(GET_VERSION)) == ACK_OK
    assert await b.if_recv(0x14, 64) == [ACK_INVALID]
    assert await b.if_send(send_payload(h("10e10000"))) == ACK_OK
    assert await a.if_recv(0x14, 64) == [ACK_OK, data_frame(VERSION)]
    status, data = await b.if_recv(0x14, 64)
    assert status == ACK_OK
    assert data[12:14] == h("107f")  # ERROR: GET_CAPABILITIES before GET_VERSION
    await a.close()
    await b.close()


# --------------------------------------------------------------------- secure session


async def test_secure_session_over_storage_decrypted_by_hand(emulator: Emulator) -> None:
    """KEY_EXCHANGE, FINISH, in-session requests, KEY_UPDATE, END_SESSION through the
    socket; one response record checked field by field and decrypted with AES-GCM here:
    4 reserved bytes, SessionID, 2-byte sequence number, Length, then ApplicationDataLength,
    the descriptor block, HEARTBEAT_ACK and 1..32 random padding bytes."""
    cfg = RequesterConfig(
        version=0x13,
        flags=FULL_FLAGS,
        base_asym=int(BaseAsymAlgo.ECDSA_P384),
        base_hash=int(BaseHashAlgo.SHA_384),
        aead=int(AeadSuite.AES_256_GCM),
    )
    async with StorageClient("127.0.0.1", emulator.port, get_binding("storage")) as client:
        req = Requester(client, cfg)
        await req.vca()
        flow = identity.flow_for(req)
        await flow.get_digests()
        chain = await flow.get_certificate(0)
        s = await open_session(req, peer_chain=chain.chain, binding="storage")
        digests = await s.send(bytes((0x13, 0x81, 0, 0)))
        assert digests[:2] == bytes((0x13, ResponseCode.DIGESTS))
        # one HEARTBEAT by hand: the request record as the requester seals it
        keys = s.keys["rsp"]
        seq = keys.seq
        record = s.encrypt(s.record.wrap(bytes((0x13, 0xE8, 0, 0))))
        sent = h("e8 18 00") + struct.pack("<I", 4 + len(record)) + bytes(4) + record
        assert await client.security_send(sent) == 0
        status, data = await client.security_receive(6, 0x1000)
        assert status == 0
        assert data[:4] == bytes(4)  # DSP0286 reserved
        sid, seq_field, length = struct.unpack_from("<IHH", data, 4)
        assert (sid, seq_field) == (s.session_id, seq & 0xFFFF)
        assert length == len(data) - 12
        nonce = bytes(a ^ b for a, b in zip(keys.iv[:8], struct.pack("<Q", seq), strict=True))
        plain = AESGCM(keys.key).decrypt(nonce + keys.iv[8:], data[12:], data[4:12])
        app_length = int.from_bytes(plain[:2], "little")
        assert app_length == 24
        assert plain[2:26] == h("01 0000 00 04 00 00 04000000 24000000 00000000 00") + h(
            "13 68 00 00"
        )
        assert 1 <= len(plain) - 26 <= 32  # random padding (libspdm storage: up to 32)
        keys.seq += 1
        await s.key_update(2)
        await s.heartbeat()
        await s.end_session()
        assert (await req.send(bytes((0x13, 0x81, 0, 0))))[1] == ResponseCode.DIGESTS


async def test_session_in_process_over_the_storage_binding() -> None:
    """The session layer with storage records (no socket): the pull binding's encode /
    decode as the requester's channel uses them."""
    device = make_device()
    conn = SpdmConnection(device, get_binding("storage"))
    req = Requester(
        ConnectionChannel(conn),
        RequesterConfig(version=0x12, flags=FULL_FLAGS, base_asym=int(BaseAsymAlgo.ECDSA_P384)),
    )
    await req.vca()
    s = await open_session(req, peer_chain=CHAIN384, binding="storage")
    await s.heartbeat()
    # a record whose descriptor names no SPDM message: ERROR(UnsupportedRequest) sealed
    bad = s.encrypt(h("01 0000 00 07") + bytes(15) + bytes((0x12, 0xE8, 0, 0)))
    reply = conn.receive(get_binding("storage").encode_request(bad, secured=True))
    rsp = s.record.unwrap(s.decrypt(reply.payloads[0][4:]))
    assert rsp[:3] == h("12 7f 07")
    await s.end_session()


# --------------------------------------------------------------------- faults, pcap


async def test_faults_on_the_pull_model() -> None:
    """A dropped response is 'nothing pending' (0x4002, QEMU does not freeze); an ERROR
    fault arrives as data; a delay holds the data back; close ends the connection
    without a status."""
    faults = (
        "on=GET_VERSION,nth=1,do=drop",
        "on=GET_VERSION,nth=2,do=error:Busy",
        "on=GET_VERSION,nth=3,do=delay:0.3",
        "on=GET_VERSION,nth=4,do=close",
    )
    emu = Emulator(RunOptions(port=0, transport="storage", faults=faults))
    async with emu:
        peer = await Peer.open(emu.port)
        assert await peer.if_send(send_payload(GET_VERSION)) == ACK_OK
        assert await peer.if_recv(0x14, 64) == [ACK_INVALID]
        assert await peer.if_send(send_payload(GET_VERSION)) == ACK_OK
        assert await peer.if_recv(0x14, 64) == [ACK_OK, data_frame(h("10 7f 03 00"))]
        assert await peer.if_send(send_payload(GET_VERSION)) == ACK_OK
        started = time.monotonic()
        assert await peer.if_recv(0x14, 64) == [ACK_OK, data_frame(VERSION)]
        assert time.monotonic() - started >= 0.25
        assert await peer.if_send(send_payload(GET_VERSION)) == ACK_OK
        await peer.send(frame(IF_RECV, header(0xE8, 0x14, 64)))
        assert await peer.eof() == b""
        await peer.close()


async def test_hostile_mutation_over_storage() -> None:
    """The hostile device's seeded mutations reach the host through IF_RECV data."""
    emu = Emulator(RunOptions(port=0, transport="storage", mutate="7:1.0"))
    async with emu:
        peer = await Peer.open(emu.port)
        assert await peer.if_send(send_payload(GET_VERSION)) == ACK_OK
        status, data = await peer.if_recv(0x14, 0x1000)
        assert status == ACK_OK and data[12:] != VERSION
        await peer.close()


async def test_pcap_of_a_storage_connection(tmp_path: Path) -> None:
    path = tmp_path / "storage.pcap"
    emu = Emulator(RunOptions(port=0, transport="storage", pcap=str(path)))
    async with emu:
        peer = await Peer.open(emu.port)
        assert await peer.if_send(send_payload(GET_VERSION)) == ACK_OK
        assert await peer.if_recv(0x14, 64) == [ACK_OK, data_frame(VERSION)]
        await peer.close()
    link_type, records = read_pcap(path.read_bytes())
    assert link_type == 147  # LINKTYPE_USER0
    assert [r.data for r in records] == [
        b"\x00" + send_payload(GET_VERSION),  # Security Send: direction 0, header, data
        b"\x01" + header(0xE8, 0x14, len(VERSION)) + VERSION,  # Security Receive data
    ]


async def test_trace_and_serve_banner_for_storage(tmp_path: Path) -> None:
    trace = tmp_path / "trace.txt"
    emu = Emulator(RunOptions(port=0, transport="storage", trace=str(trace)))
    async with emu:
        peer = await Peer.open(emu.port)
        await peer.if_send(send_payload(GET_VERSION))
        await peer.if_recv(0x14, 64)
        await peer.close()
    text = trace.read_text()
    assert "GET_VERSION" in text and "VERSION" in text
    hint = emu.binding.client_hint.format(port=2323)
    assert hint.endswith("spdm_port=2323,spdm_trans=nvme")


async def test_storage_client_reports_statuses(emulator: Emulator) -> None:
    async with StorageClient("127.0.0.1", emulator.port, get_binding("storage")) as client:
        assert await client.discovery() == discovery_bytes()
        assert await client.pending_info() == (False, 0)
        with pytest.raises(
            RequesterError, match="Security Receive completed with NVMe status 0x4002"
        ):
            client.allocation_length = 4
            await client.exchange(GET_VERSION)
        assert await client.pending_info() == (True, len(VERSION))
    with pytest.raises(RequesterError, match="speaks the storage binding"):
        StorageClient("127.0.0.1", 1, get_binding("doe"))


async def test_partial_and_duplicate_over_storage() -> None:
    """partial: the status, then the first N bytes of the data frame, then EOF; duplicate:
    the status and two data frames (the copy answers nothing: the host's stream is out of
    step, as the fault intends)."""
    faults = ("on=GET_VERSION,nth=1,do=duplicate", "on=GET_VERSION,nth=2,do=partial:15")
    emu = Emulator(RunOptions(port=0, transport="storage", faults=faults))
    async with emu:
        peer = await Peer.open(emu.port)
        assert await peer.if_send(send_payload(GET_VERSION)) == ACK_OK
        assert await peer.if_recv(0x14, 64) == [ACK_OK, data_frame(VERSION)]
        assert await peer.raw_frame() == data_frame(VERSION)  # the copy
        assert await peer.if_send(send_payload(GET_VERSION)) == ACK_OK
        await peer.send(frame(IF_RECV, header(0xE8, 0x14, 64)))
        assert await peer.raw_frame() == ACK_OK
        assert await peer.eof() == data_frame(VERSION)[:15]
        await peer.close()


async def test_record_fault_and_lie_over_storage() -> None:
    """A record fault (a MAC bit flipped after encryption) makes the requester's own
    decryption fail; a signature lie makes CHALLENGE verification fail."""
    faults = ("on=HEARTBEAT,do=record:bad_mac", "on=CHALLENGE,do=lie:bad_signature")
    emu = Emulator(RunOptions(port=0, transport="storage", faults=faults))
    async with emu, StorageClient("127.0.0.1", emu.port, emu.binding) as client:
        req = Requester(client)
        await req.vca()
        flow = identity.flow_for(req)
        await flow.get_digests()
        chain = await flow.get_certificate(0)
        with pytest.raises(RequesterError, match="signature"):
            await flow.challenge(0)
        s = await open_session(req, peer_chain=chain.chain, binding="storage")
        with pytest.raises(RequesterError, match="secured response does not authenticate"):
            await s.heartbeat()
