"""The DSP0287 TCP binding, byte for byte, as libspdm's ``spdm_transport_tcp_lib`` frames it.

Expected bytes are written out here from ``industry_standard/spdm_tcp_binding.h`` and
``libspdm_tcp_tcp.c`` (never built with the code under test): the 4-byte binding header
(PayloadLength u16 LE = size - 2 for SPDM messages, 0 for Role-Inquiry and the binding
errors; BindingVersion 0x01; MessageType 0x05 / 0x06 / 0xBF / 0xC0-0xC3), the header
inside a secured record, no sequence number, no random padding.  Both framings are served
on one port: DSP0287 messages on the stream, and spdm-emu's ``--trans TCP`` platform
frames (transport type 3).  Secure sessions are decrypted by the test side.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from emulator import cli
from emulator.app import Emulator
from emulator.codec.constants import AeadSuite, BaseAsymAlgo, BaseHashAlgo, ResponseCode
from emulator.errors import FrameError, RequesterError, TransportError
from emulator.options import RunOptions
from emulator.requester import Requester, RequesterConfig, identity, measurements
from emulator.requester.session import open_session
from emulator.requester.transport import SocketClient, TcpStreamClient, open_client
from emulator.trace import read_pcap
from emulator.transport import get_binding
from emulator.transport.platform import Frame, PlatformCommand
from emulator.transport.tcp import TcpAppData, TcpBinding, TcpStreamCodec, message_size
from tests.test_session import FULL_FLAGS

GET_VERSION = bytes.fromhex("10840000")
VERSION = bytes.fromhex("10040000 0004 0010 0011 0012 0013".replace(" ", ""))
TCP_T = 3


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def dsp0287(message_type: int, message: bytes) -> bytes:
    """A DSP0287 message packed here: PayloadLength = 2 + len(message), version 1, type."""
    return struct.pack("<HBB", 2 + len(message), 1, message_type) + message


def frame(command: int, payload: bytes = b"", transport: int = TCP_T) -> bytes:
    return struct.pack(">III", command, transport, len(payload)) + payload


ROLE_INQUIRY = h("0000 01 bf")
CANNOT_BE_REQUESTER = h("0000 01 c2")
NOT_SUPPORTED = h("0000 01 c1")
TOO_LARGE = h("0000 01 c0")


class Stream:
    """A raw DSP0287 peer: hand-made bytes out, whole messages in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Stream:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def message(self) -> bytes:
        async with asyncio.timeout(5):
            head = await self.reader.readexactly(4)
            length = struct.unpack_from("<H", head)[0]
            rest = await self.reader.readexactly(length - 2 if length else 0)
            return head + rest

    async def exchange(self, data: bytes) -> bytes:
        await self.send(data)
        return await self.message()

    async def frame(self) -> tuple[int, int, bytes]:
        async with asyncio.timeout(5):
            command, transport, size = struct.unpack(">III", await self.reader.readexactly(12))
            return command, transport, await self.reader.readexactly(size)

    async def eof(self) -> bytes:
        async with asyncio.timeout(5):
            return await self.reader.read()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    emu = Emulator(RunOptions(port=0, transport="tcp"))
    await emu.start()
    yield emu
    await emu.stop()


# --------------------------------------------------------------------- codec, sans-I/O


def test_messages_as_libspdm_encodes_them() -> None:
    b = TcpBinding()
    assert b.encode(GET_VERSION) == h("0600 01 05 10840000")
    record = h("78563412 0400 aabbccdd")
    assert b.encode(record, secured=True) == h("0c00 01 06") + record
    assert b.decode(h("0600 01 05 10840000")).message == GET_VERSION
    decoded = b.decode(h("0c00 01 06") + record)
    assert decoded.secured and decoded.message == record
    assert (b.default_port, b.socket_transport, b.pcap_link_type) == (4194, 3, 148)


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (h("0600 01"), "shorter than the 4-byte binding header"),
        (h("0600 02 05 10840000"), "binding version is 0x02"),
        (h("0600 01 07 10840000"), "message type 0x07 is not SPDM"),
        (h("0600 01 bf 10840000"), "Role-Inquiry is not SPDM"),
        (h("0700 01 05 10840000"), "PayloadLength is 7, but 6 bytes follow"),
        (h("0200 01 05"), "empty SPDM message"),
        (h("0600 01 06 78563412"), "too short for a session ID"),
    ],
)
def test_decode_errors(payload: bytes, problem: str) -> None:
    with pytest.raises(TransportError, match=problem):
        TcpBinding().decode(payload)


def test_transport_level_answers() -> None:
    b = TcpBinding()
    assert b.answer_discovery(ROLE_INQUIRY) == CANNOT_BE_REQUESTER
    assert b.answer_discovery(h("0000 01 10")) == NOT_SUPPORTED
    assert b.answer_discovery(h("0600 02 05 10840000")) == NOT_SUPPORTED
    assert b.answer_discovery(TOO_LARGE) == b""  # the peer's error: not answered
    assert b.answer_discovery(h("0000 01 c7")) == b""
    assert b.answer_discovery(h("0600 01 05 10840000")) is None
    assert b.answer_discovery(h("0600")) is None


def test_application_data_inside_records() -> None:
    app = TcpAppData()
    assert app.wrap(h("13 68 00 00")) == h("0600 01 05 13680000")
    assert app.unwrap(h("0600 01 05 13680000")) == h("13680000")
    for data, problem in [
        (h("0600 02 05 13680000"), "binding version 0x02"),
        (h("0600 01 06 13680000"), "message type secured SPDM"),
        (h("0500 01 05 13680000"), "PayloadLength 5, but 6"),
        (h("0200 01 05"), "carries no SPDM message"),
        (h("05"), "shorter than the 4-byte binding header"),
    ]:
        with pytest.raises(TransportError, match=problem):
            app.unwrap(data)


def test_message_sizes_on_the_stream() -> None:
    assert message_size(h("0000 01 bf")) == 4  # header-only: PayloadLength 0
    assert message_size(h("0200 01 05")) == 4
    assert message_size(h("0600 01 05")) == 8
    assert message_size(h("ffff 01 05")) == 0x10001
    with pytest.raises(FrameError, match="PayloadLength is 1"):
        message_size(h("0100 01 05"))


def test_stream_codec_tells_the_framings_apart() -> None:
    raw = TcpStreamCodec(0x1200)
    data = dsp0287(5, GET_VERSION) + ROLE_INQUIRY
    out: list[Frame | bytes] = []
    for i in range(len(data)):  # a byte at a time
        out += raw.feed(data[i : i + 1])
    assert raw.mode == "dsp0287"
    assert out == [
        Frame(PlatformCommand.NORMAL, TCP_T, dsp0287(5, GET_VERSION)),
        Frame(PlatformCommand.NORMAL, TCP_T, ROLE_INQUIRY),
    ]
    assert raw.encode(Frame(PlatformCommand.NORMAL, TCP_T, b"abc")) == b"abc"
    assert raw.encode(Frame(PlatformCommand.UNKNOWN, TCP_T)) == b""
    platform = TcpStreamCodec(0x1200)
    hello = frame(0xDEAD, b"Client Hello!\x00")
    assert platform.feed(hello[:2]) == [] and platform.mode is None
    assert platform.feed(hello[2:]) == [Frame(0xDEAD, TCP_T, b"Client Hello!\x00")]
    assert platform.mode == "platform"
    assert platform.encode(Frame(1, TCP_T, b"x")) == frame(1, b"x")


def test_stream_codec_skips_an_oversized_message() -> None:
    codec = TcpStreamCodec(64)
    big = dsp0287(5, bytes(100))
    assert codec.feed(big[:10]) == [TOO_LARGE]
    assert codec.feed(big[10:] + dsp0287(5, GET_VERSION)) == [
        Frame(PlatformCommand.NORMAL, TCP_T, dsp0287(5, GET_VERSION))
    ]
    broken = TcpStreamCodec(64)
    with pytest.raises(FrameError, match="PayloadLength is 1"):
        broken.feed(h("0100 01 05 00"))
    with pytest.raises(FrameError):
        broken.feed(b"more")


# --------------------------------------------------------------------- DSP0287 on the stream


async def test_get_version_on_the_stream(emulator: Emulator) -> None:
    peer = await Stream.open(emulator.port)
    assert await peer.exchange(h("0600 01 05 10840000")) == dsp0287(5, VERSION)
    assert dsp0287(5, VERSION)[:4] == h("1000 01 05")
    await peer.close()


async def test_transport_messages_on_the_stream(emulator: Emulator) -> None:
    peer = await Stream.open(emulator.port)
    assert await peer.exchange(ROLE_INQUIRY) == CANNOT_BE_REQUESTER
    assert await peer.exchange(h("0000 01 10")) == NOT_SUPPORTED
    assert await peer.exchange(h("0600 02 05 10840000")) == NOT_SUPPORTED
    await peer.send(TOO_LARGE)  # the peer's error: logged, no answer; the next one is
    assert await peer.exchange(dsp0287(5, GET_VERSION)) == dsp0287(5, VERSION)
    # a truncated SPDM message gets an SPDM ERROR(InvalidRequest), in a DSP0287 message
    assert await peer.exchange(h("0400 01 05 1084")) == dsp0287(5, h("10 7f 01 00"))
    await peer.close()


async def test_oversized_message_is_skipped_with_error_too_large() -> None:
    emu = Emulator(RunOptions(port=0, transport="tcp", max_payload=0x100))
    async with emu:
        peer = await Stream.open(emu.port)
        assert await peer.exchange(dsp0287(5, bytes(0x200))) == TOO_LARGE
        assert await peer.exchange(dsp0287(5, GET_VERSION)) == dsp0287(5, VERSION)
        # a PayloadLength of 1 cannot be framed: the connection ends
        await peer.send(h("0100 01 05"))
        assert await peer.eof() == b""
        await peer.close()


async def test_full_flow_and_session_on_the_stream(emulator: Emulator) -> None:
    """VCA, digests, certificate, CHALLENGE, signed measurements, then a KEY_EXCHANGE
    session whose HEARTBEAT_ACK record is decrypted here: outer header type 0x06,
    SessionID, Length (no sequence number), ApplicationDataLength, inner header, the
    message, no padding."""
    cfg = RequesterConfig(
        version=0x13,
        flags=FULL_FLAGS,
        base_asym=int(BaseAsymAlgo.ECDSA_P384),
        base_hash=int(BaseHashAlgo.SHA_384),
        aead=int(AeadSuite.AES_256_GCM),
    )
    async with open_client("127.0.0.1", emulator.port, emulator.binding) as client:
        assert isinstance(client, TcpStreamClient)
        req = Requester(client, cfg)
        await req.vca()
        flow = identity.flow_for(req)
        await flow.get_digests()
        chain = await flow.get_certificate(0)
        await flow.challenge(0)
        blocks = await measurements.get_all_measurements(
            req, signed=True, public_key=chain.leaf_key
        )
        assert blocks
        s = await open_session(req, peer_chain=chain.chain, binding="tcp")
        keys = s.keys["rsp"]
        seq = keys.seq
        request = s.encrypt(s.record.wrap(bytes((0x13, 0xE8, 0, 0))))
        await client.send_raw(dsp0287(6, request))
        reply = await client.recv_message()
        assert reply[:4] == struct.pack("<HBB", len(reply) - 2, 1, 6)
        sid, length = struct.unpack_from("<IH", reply, 4)
        assert sid == s.session_id and length == len(reply) - 10
        nonce = bytes(a ^ b for a, b in zip(keys.iv[:8], struct.pack("<Q", seq), strict=True))
        plain = AESGCM(keys.key).decrypt(nonce + keys.iv[8:], reply[10:], reply[4:10])
        assert plain == h("0800") + h("0600 01 05") + h("13 68 00 00")
        keys.seq += 1
        digests = await s.send(bytes((0x13, 0x81, 0, 0)))
        assert digests[1] == ResponseCode.DIGESTS
        await s.key_update(1)
        await s.heartbeat()
        await s.end_session()
        assert await client.role_inquiry() == 0xC2


# --------------------------------------------------------------------- spdm-emu's framing


async def test_platform_frames_as_spdm_emu_sends_them(emulator: Emulator) -> None:
    peer = await Stream.open(emulator.port)
    await peer.send(frame(0xDEAD, b"Client Hello!\x00"))
    assert await peer.frame() == (0xDEAD, TCP_T, b"Server Hello!\x00")
    await peer.send(frame(1, dsp0287(5, GET_VERSION)))
    assert await peer.frame() == (1, TCP_T, dsp0287(5, VERSION))
    await peer.send(frame(1, ROLE_INQUIRY))
    assert await peer.frame() == (1, TCP_T, CANNOT_BE_REQUESTER)
    await peer.send(frame(1, dsp0287(5, GET_VERSION), transport=2))  # not TCP's type
    assert await peer.frame() == (0xFFFF, TCP_T, b"")
    await peer.send(frame(0xFFFE))
    assert await peer.frame() == (0xFFFE, TCP_T, b"")
    await peer.close()


async def test_session_in_platform_frames(emulator: Emulator) -> None:
    async with open_client(
        "127.0.0.1", emulator.port, emulator.binding, platform_frames=True
    ) as client:
        assert isinstance(client, SocketClient)
        assert await client.hello() == b"Server Hello!\x00"
        req = Requester(client)
        await req.vca()
        flow = identity.flow_for(req)
        await flow.get_digests()
        chain = await flow.get_certificate(0)
        s = await open_session(req, peer_chain=chain.chain, binding="tcp")
        await s.heartbeat()
        await s.key_update(2)
        await s.end_session()


async def test_many_connections_in_both_framings(emulator: Emulator) -> None:
    seen: set[int] = set()
    emulator.observers.append(lambda event: seen.add(event.connection))

    async def one(i: int) -> int:
        async with open_client(
            "127.0.0.1", emulator.port, emulator.binding, platform_frames=bool(i % 2)
        ) as client:
            neg = await Requester(client).vca()
            return neg.version

    versions = await asyncio.gather(*(one(i) for i in range(16)))
    assert versions == [0x13] * 16
    assert len(seen) == 16  # sixteen connections, each with its own responder state


# --------------------------------------------------------------------- faults, pcap, cli


async def test_faults_on_the_stream() -> None:
    faults = ("on=GET_VERSION,nth=1,do=drop", "on=GET_VERSION,nth=2,do=partial:6")
    emu = Emulator(RunOptions(port=0, transport="tcp", faults=faults))
    async with emu:
        peer = await Stream.open(emu.port)
        await peer.send(dsp0287(5, GET_VERSION))  # dropped: nothing comes back
        assert await peer.exchange(ROLE_INQUIRY) == CANNOT_BE_REQUESTER
        await peer.send(dsp0287(5, GET_VERSION))  # 6 bytes of the DSP0287 message, then EOF
        assert await peer.eof() == dsp0287(5, VERSION)[:6]
        await peer.close()
    with pytest.raises(RequesterError, match="responder closed the connection"):
        emu = Emulator(RunOptions(port=0, transport="tcp", faults=("do=close",)))
        async with emu, TcpStreamClient("127.0.0.1", emu.port, emu.binding) as client:
            await client.exchange(GET_VERSION)


async def test_pcap_of_a_tcp_connection(tmp_path: Path) -> None:
    path = tmp_path / "tcp.pcap"
    emu = Emulator(RunOptions(port=0, transport="tcp", pcap=str(path)))
    async with emu:
        peer = await Stream.open(emu.port)
        assert await peer.exchange(dsp0287(5, GET_VERSION)) == dsp0287(5, VERSION)
        await peer.close()
    link_type, records = read_pcap(path.read_bytes())
    assert link_type == 148
    assert [r.data for r in records] == [dsp0287(5, GET_VERSION), dsp0287(5, VERSION)]


def test_serve_and_probe_default_to_port_4194_for_tcp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.PASSWORD_ENV, raising=False)
    parser = cli.build_parser()
    assert cli.run_options(parser.parse_args(["serve", "--transport", "tcp"])).port == 4194
    assert cli.run_options(parser.parse_args(["serve", "--transport", "storage"])).port == 2323
    given = parser.parse_args(["serve", "--transport", "tcp", "--port", "0"])
    assert cli.run_options(given).port == 0
    assert get_binding("tcp").client_hint.format(port=4194).endswith("--trans TCP --port 4194")
