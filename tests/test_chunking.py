"""Large SPDM message transfer (DSP0274 1.2+): ERROR(LargeResponse) + CHUNK_GET/CHUNK_RESPONSE
and CHUNK_SEND/CHUNK_SEND_ACK, responder and requester sides.

Layouts are checked against vectors written out by hand from the spec tables (libspdm's
``spdm_chunk_*`` structs); reassembled responses against the same response produced
without chunking by a second responder with the same random source; signatures by the
measurement and identity requesters, which keep their own transcripts and verify with
``cryptography`` public keys.
"""

from __future__ import annotations

import copy
import hashlib
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from emulator.codec.chunking import (
    ChunkGet,
    ChunkResponse,
    ChunkSend,
    ChunkSendAck,
    build_large_response_error,
    large_response_handle,
)
from emulator.codec.constants import (
    AeadSuite,
    BaseAsymAlgo,
    BaseHashAlgo,
    DheGroup,
    RequestCode,
    RequesterCap,
    ResponderCap,
    ResponseCode,
)
from emulator.connection import SpdmConnection
from emulator.device.model import Device
from emulator.errors import CodecError, RequesterError
from emulator.requester import chunking as rc
from emulator.requester.identity import challenge, get_certificate, get_digests
from emulator.requester.measurements import get_measurements
from emulator.requester.requester import (
    LoopbackChannel,
    Requester,
    RequesterConfig,
    SpdmErrorReply,
)
from emulator.requester.session import ConnectionChannel, finish, key_exchange, open_session
from emulator.responder import Responder
from emulator.responder.chunking import ChunkState, chunk_state
from emulator.responder.measurements import MeasurementLog, current_log
from emulator.transport import get_binding
from emulator.x509.chain import split_der_chain
from tests.helpers import make_device

ROOT = Path(__file__).resolve().parent.parent
CHUNK_FLAGS = int(RequesterCap.CERT_CAP | RequesterCap.CHAL_CAP | RequesterCap.CHUNK_CAP)
PLAIN_FLAGS = int(RequesterCap.CERT_CAP | RequesterCap.CHAL_CAP)
SESSION_FLAGS = int(
    RequesterCap.CERT_CAP
    | RequesterCap.CHAL_CAP
    | RequesterCap.ENCRYPT_CAP
    | RequesterCap.MAC_CAP
    | RequesterCap.KEY_EX_CAP
    | RequesterCap.HBEAT_CAP
    | RequesterCap.KEY_UPD_CAP
    | RequesterCap.CHUNK_CAP
)


class CountingRng:
    """Deterministic randomness: two responders given one each produce the same nonces."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, n: int) -> bytes:
        self.n += 1
        return bytes((self.n * 7 + i) & 0xFF for i in range(n))


_DEVICES: dict[str, Device] = {}


def load(name: str) -> Device:
    if name not in _DEVICES:
        _DEVICES[name] = make_device(name)
    return _DEVICES[name]


def cstate(r: Responder) -> ChunkState:
    st = chunk_state(r)
    assert st is not None
    return st


def mlog(r: Responder) -> MeasurementLog:
    log_ = current_log(r, None)
    assert log_ is not None
    return log_


def without_chunk_cap(dev: Device) -> Device:
    other = copy.copy(dev)
    other.capabilities = dev.capabilities & ~ResponderCap.CHUNK_CAP
    other.max_spdm_msg_size = dev.data_transfer_size
    return other


async def connect(
    dev: Device,
    *,
    version: int = 0x12,
    dts: int = 128,
    mx: int = 0x10000,
    flags: int = CHUNK_FLAGS,
    rng: CountingRng | None = None,
) -> tuple[Responder, Requester]:
    r = Responder(dev, rng=rng or CountingRng())
    q = Requester(
        LoopbackChannel(r),
        RequesterConfig(
            version=version,
            flags=flags,
            data_transfer_size=dts,
            max_spdm_msg_size=mx,
            base_asym=int(BaseAsymAlgo.ECDSA_P384),
            base_hash=int(BaseHashAlgo.SHA_384),
        ),
    )
    await q.vca()
    return r, q


def get_meas(version: int, op: int = 0xFF, pad: int = 0) -> bytes:
    """Unsigned GET_MEASUREMENTS (1.3 adds the 8-byte RequesterContext), ``pad`` zero bytes."""
    body = bytes(range(8)) if version >= 0x13 else b""
    return bytes((version, RequestCode.GET_MEASUREMENTS, 0, op)) + body + bytes(pad)


def err(version: int, code: int, data: int = 0) -> bytes:
    return bytes((version, 0x7F, code, data))


def chunk_get(version: int, handle: int, seq: int) -> bytes:
    return bytes((version, 0x86, 0, handle)) + struct.pack("<H", seq)


def chunk_send(
    version: int, handle: int, seq: int, chunk: bytes, *, last: bool = False, large: int | None
) -> bytes:
    head = bytes((version, 0x85, 1 if last else 0, handle)) + struct.pack(
        "<HHI", seq, 0, len(chunk)
    )
    return head + (struct.pack("<I", large) if large is not None else b"") + chunk


def split_expected(message: bytes, limit: int) -> list[bytes]:
    """The chunks DSP0274/libspdm cut ``message`` into for a ``limit``-byte transfer size."""
    first = limit - 16
    out = [message[:first]]
    pos = first
    while pos < len(message):
        out.append(message[pos : pos + limit - 12])
        pos += limit - 12
    return out


# --- layouts, byte for byte ----------------------------------------------------------------


def test_chunk_get_layout() -> None:
    msg = ChunkGet(0x12, handle=7, seq=0x0103)
    assert msg.encode() == bytes.fromhex("12 86 00 07 03 01")
    assert ChunkGet.decode(bytes.fromhex("13 86 00 09 02 00 00 00")) == ChunkGet(0x13, 9, 2)
    with pytest.raises(CodecError):
        ChunkGet.decode(bytes.fromhex("12 86 00 07 03"))
    with pytest.raises(CodecError):
        ChunkGet.decode(bytes.fromhex("12 85 00 07 03 00"))


def test_chunk_response_layout() -> None:
    first = ChunkResponse(0x12, handle=1, seq=0, chunk=b"\xaa" * 26, large_message_size=0x1234)
    assert first.encode() == (
        bytes.fromhex("12 06 00 01  0000  0000  1a000000  34120000") + b"\xaa" * 26
    )
    last = ChunkResponse(0x13, handle=3, seq=2, chunk=b"\x01\x02\x03", last=True)
    assert last.encode() == bytes.fromhex("13 06 01 03  0200  0000  03000000  010203")
    assert ChunkResponse.decode(last.encode() + b"\x00") == last
    assert ChunkResponse.decode(first.encode()).large_message_size == 0x1234
    with pytest.raises(CodecError):  # ChunkSize larger than what follows
        ChunkResponse.decode(bytes.fromhex("13 06 01 03  0200  0000  04000000  010203"))
    with pytest.raises(CodecError):  # LargeMessageSize belongs to chunk 0 only
        ChunkResponse(0x12, 1, 1, b"x", large_message_size=5).encode()


def test_chunk_send_and_ack_layouts() -> None:
    send = ChunkSend(0x12, handle=5, seq=0, chunk=b"\x12\xe0", large_message_size=0x40)
    assert send.encode() == bytes.fromhex("12 85 00 05  0000  0000  02000000  40000000  12e0")
    nxt = ChunkSend(0x12, handle=5, seq=1, chunk=b"\xff", last=True)
    assert nxt.encode() == bytes.fromhex("12 85 01 05  0100  0000  01000000  ff")
    assert ChunkSend.decode(nxt.encode()) == nxt
    ack = ChunkSendAck(0x12, handle=5, seq=1, response=bytes.fromhex("12600000"))
    assert ack.encode() == bytes.fromhex("12 05 00 05 0100 12600000")
    early = ChunkSendAck(0x13, handle=2, seq=0, early_error=True, response=err(0x13, 1))
    assert early.encode() == bytes.fromhex("13 05 01 02 0000 137f0100")
    assert ChunkSendAck.decode(early.encode()) == early
    assert build_large_response_error(0x12, 0x81) == bytes.fromhex("12 7f 0f 00 81")
    assert large_response_handle(bytes.fromhex("12 7f 0f 00 81")) == 0x81
    assert large_response_handle(bytes.fromhex("12 7f 0d 00 00010000")) is None
    with pytest.raises(CodecError):
        large_response_handle(bytes.fromhex("12 7f 0f 00"))


# --- the responder: ERROR(LargeResponse) and CHUNK_GET, byte for byte ------------------------


@pytest.mark.parametrize("version", [0x12, 0x13])
async def test_large_measurements_by_chunk_get_byte_exact(version: int) -> None:
    gpu = load("gpu")
    r, _q = await connect(gpu, version=version, dts=64, rng=CountingRng())
    ref, _ = await connect(gpu, version=version, dts=4096, rng=CountingRng())
    request = get_meas(version)
    whole = ref.handle(request)  # the same response, unchunked (same nonces)
    assert whole[1] == ResponseCode.MEASUREMENTS and whole[4] == len(gpu.measurements)
    assert len(whole) > 1500

    assert r.handle(request) == bytes((version, 0x7F, 0x0F, 0x00, 0x01))  # handle 1
    chunks = split_expected(whole, 64)
    for seq, piece in enumerate(chunks):
        last = seq == len(chunks) - 1
        rsp = r.handle(chunk_get(version, 1, seq))
        head = bytes((version, 0x06, 1 if last else 0, 1)) + struct.pack("<HHI", seq, 0, len(piece))
        size = struct.pack("<I", len(whole)) if seq == 0 else b""
        assert rsp == head + size + piece, f"chunk {seq}"
        assert len(rsp) <= 64
    # the transfer is over: nothing pending, and the next large response gets handle 3
    assert r.handle(chunk_get(version, 1, len(chunks))) == err(version, 0x04)
    assert r.handle(request) == bytes((version, 0x7F, 0x0F, 0x00, 0x03))


async def test_transcript_holds_the_whole_large_response() -> None:
    """L1/L2 gets the whole MEASUREMENTS when it is stored, none of the chunks."""
    gpu = load("gpu")
    r, _q = await connect(gpu, dts=64)
    ref, _ = await connect(gpu, dts=4096)
    request = get_meas(0x12)
    whole = ref.handle(request)
    r.handle(request)
    log_ = current_log(r, None)
    ref_log = current_log(ref, None)
    assert log_ is not None and ref_log is not None
    assert log_.length == ref_log.length == len(r.transcripts.a) + len(request) + len(whole)
    seq = 0
    while cstate(r).pending is not None:
        r.handle(chunk_get(0x12, 1, seq))
        seq += 1
    expected = hashlib.sha384(bytes(r.transcripts.a) + request + whole).digest()
    assert log_.length == ref_log.length and log_.hash.copy().digest() == expected


@pytest.mark.parametrize(("version", "dts"), [(0x12, 64), (0x12, 256), (0x13, 42), (0x13, 100)])
async def test_gpu_measurements_reassembled_and_signature_verified(version: int, dts: int) -> None:
    """The requester reassembles every large response transparently; its own M1 and L1/L2
    (full messages, no chunks) verify the CHALLENGE and MEASUREMENTS signatures."""
    gpu = load("gpu")
    r, q = await connect(gpu, version=version, dts=dts, mx=0x10000)
    await get_digests(q)
    chain = await get_certificate(q, 0, portion=0x8000)  # one CERTIFICATE, chunked
    assert chain.leaf_key is not None
    await challenge(q, 0)
    unsigned = await get_measurements(q, 0xFF)
    assert len(unsigned.blocks) == len(gpu.measurements)
    signed = await get_measurements(q, 0xFF, signed=True)  # L2 spans both large responses
    assert signed.signed and len(signed.blocks) == len(gpu.measurements)
    assert signed.l1l2 is not None and unsigned.request in signed.l1l2
    transfers = rc.state(q).transfers
    gets = [t for t in transfers if t.kind == "get"]
    assert len(gets) >= 3  # CERTIFICATE, MEASUREMENTS x2 (and CHALLENGE_AUTH at 42)
    for t in gets:
        for request, response in t.exchanges:
            assert request[1] == RequestCode.CHUNK_GET and len(response) <= dts
    if dts == 42:  # a 1.3 signed GET_MEASUREMENTS is 45 bytes: it went by CHUNK_SEND too
        assert any(t.kind == "send" and t.request[1] == 0xE0 for t in transfers)
        # and NEGOTIATE_ALGORITHMS (48 bytes) / ALGORITHMS (52 bytes) were chunked in VCA
        assert any(t.kind == "send" and t.request[1] == 0xE3 for t in transfers)
    # the log has the logical exchanges only
    assert all(req[1] not in (0x85, 0x86) for req, _ in q.log)
    assert cstate(r).pending is None


async def test_certificate_chain_in_one_chunked_response() -> None:
    """With CHUNK_CAP both ways the whole chain comes in one CERTIFICATE (default device)."""
    dev = load("default")
    _r, q = await connect(dev, dts=256)
    chain = await get_certificate(q, 0, portion=0xFFFF)
    cert_requests = [req for req, _ in q.log if req[1] == RequestCode.GET_CERTIFICATE]
    assert len(cert_requests) == 1
    rsp = next(rsp for req, rsp in q.log if req[1] == RequestCode.GET_CERTIFICATE)
    assert struct.unpack_from("<HH", rsp, 4) == (len(chain.chain), 0)  # portion, remainder
    await challenge(q, 0)


# --- ResponseTooLarge stays where chunking is not possible -----------------------------------


async def test_no_chunk_cap_keeps_response_too_large() -> None:
    gpu = load("gpu")
    # requester without CHUNK_CAP
    r, q = await connect(gpu, dts=256, mx=256, flags=PLAIN_FLAGS)
    rsp = r.handle(get_meas(0x12))
    assert rsp[:4] == err(0x12, 0x0D) and int.from_bytes(rsp[4:8], "little") > 256
    assert r.handle(chunk_get(0x12, 1, 0)) == err(0x12, 0x04)  # CHUNK_CAP not on both sides
    assert r.handle(chunk_send(0x12, 0, 0, bytes(30), large=50)) == err(0x12, 0x07, 0x85)
    with pytest.raises(SpdmErrorReply) as exc:
        await get_measurements(q, 0xFF)
    assert exc.value.error_name == "ResponseTooLarge"
    # device without CHUNK_CAP, requester with it
    r, q = await connect(without_chunk_cap(gpu), dts=256, mx=0x10000)
    rsp = r.handle(get_meas(0x12))
    assert rsp[:4] == err(0x12, 0x0D)
    assert r.handle(chunk_get(0x12, 1, 0)) == err(0x12, 0x04)
    assert r.handle(chunk_send(0x12, 0, 0, bytes(30), large=50)) == err(0x12, 0x07, 0x85)
    assert not rc.negotiated(q)
    with pytest.raises(SpdmErrorReply) as exc:
        await get_measurements(q, 0xFF)
    assert exc.value.error_name == "ResponseTooLarge"
    # chunking cannot exceed the requester's MaxSPDMmsgSize
    r, q = await connect(gpu, dts=256, mx=1024)
    rsp = r.handle(get_meas(0x12))
    assert rsp[:4] == err(0x12, 0x0D) and int.from_bytes(rsp[4:8], "little") > 1024
    st = chunk_state(r)
    assert st is None or st.pending is None


async def test_chunk_messages_need_spdm_1_2() -> None:
    r, _q = await connect(load("gpu"), version=0x11, dts=256, flags=PLAIN_FLAGS)
    assert r.handle(chunk_get(0x11, 1, 0)) == err(0x11, 0x07, 0x86)
    assert r.handle(chunk_send(0x11, 0, 0, bytes(30), large=50)) == err(0x11, 0x07, 0x85)


# --- CHUNK_GET errors --------------------------------------------------------------------------


async def test_chunk_get_errors_and_interruptions() -> None:
    gpu = load("gpu")
    r, _q = await connect(gpu, dts=128)
    assert r.handle(chunk_get(0x12, 0, 0)) == err(0x12, 0x04)  # nothing pending
    assert r.handle(get_meas(0x12)) == bytes.fromhex("12 7f 0f 00 01")
    log_len = mlog(r).length
    assert r.handle(chunk_get(0x12, 2, 0)) == err(0x12, 0x01)  # wrong handle
    assert r.handle(chunk_get(0x12, 1, 1)) == err(0x12, 0x01)  # wrong ChunkSeqNo
    assert r.handle(bytes((0x12, 0x86, 0, 1, 0))) == err(0x12, 0x01)  # 5 bytes
    # any other request is refused and does not end the transfer (nor touch L1/L2)
    assert r.handle(get_meas(0x12, 1)) == err(0x12, 0x04)
    assert r.handle(bytes((0x12, 0x81, 0, 0))) == err(0x12, 0x04)  # GET_DIGESTS
    assert r.handle(chunk_send(0x12, 0, 0, bytes(30), large=50)) == err(0x12, 0x04)
    # what the generic rules reject keeps its usual ERROR (and does not end the transfer)
    assert r.handle(bytes((0x13, 0x81, 0, 0))) == err(0x12, 0x41)  # VersionMismatch
    assert r.handle(bytes((0x12, 0x70, 0, 0))) == err(0x12, 0x07, 0x70)  # unknown code
    assert r.handle(bytes((0x12, 0x86, 0))) == err(0x12, 0x01)  # shorter than a header
    assert mlog(r).length == log_len
    first = r.handle(chunk_get(0x12, 1, 0))
    assert first[:4] == bytes.fromhex("12 06 00 01") and len(first) == 128
    assert r.handle(chunk_get(0x12, 1, 0)) == err(0x12, 0x01)  # 0 was already read
    second = r.handle(chunk_get(0x12, 1, 1))
    assert second[:6] == bytes.fromhex("12 06 00 01 0100")
    # GET_VERSION ends the transfer and resets the connection
    assert r.handle(bytes((0x10, 0x84, 0, 0)))[1] == ResponseCode.VERSION
    assert chunk_state(r) is None
    assert r.handle(chunk_get(0x12, 1, 2)) == err(0x10, 0x04)  # before GET_CAPABILITIES


async def test_a_new_large_response_replaces_an_unread_one_only_via_chunk_send() -> None:
    """Handles: 1 for the first large response, 3 for the next (libspdm's counter)."""
    gpu = load("gpu")
    r, _q = await connect(gpu, dts=128)
    assert r.handle(get_meas(0x12)) == bytes.fromhex("12 7f 0f 00 01")
    seq = 0
    while True:
        rsp = r.handle(chunk_get(0x12, 1, seq))
        seq += 1
        if rsp[2] & 1:
            break
    assert r.handle(get_meas(0x12)) == bytes.fromhex("12 7f 0f 00 03")


# --- CHUNK_SEND ----------------------------------------------------------------------------


async def test_chunk_send_byte_exact_acks() -> None:
    """A 48-byte GET_MEASUREMENTS (zero padded) in two chunks; the last ACK carries the
    MEASUREMENTS a responder gives to the same request sent whole."""
    dev = load("gpu")
    r, _q = await connect(dev, version=0x13, dts=4096, rng=CountingRng())
    ref, _ = await connect(dev, version=0x13, dts=4096, rng=CountingRng())
    large = get_meas(0x13, 3, pad=36)
    assert len(large) == 48
    ack0 = r.handle(chunk_send(0x13, 9, 0, large[:30], large=48))
    assert ack0 == bytes.fromhex("13 05 00 09 0000")
    assert r.handle(get_meas(0x13, 3)) == err(0x13, 0x04)  # refused mid-transfer
    ack1 = r.handle(chunk_send(0x13, 9, 1, large[30:], last=True, large=None))
    expected = ref.handle(large)
    assert expected[1] == ResponseCode.MEASUREMENTS
    assert ack1 == bytes.fromhex("13 05 00 09 0100") + expected
    assert cstate(r).requests_completed == 1
    # the reassembled request entered L1/L2 like a whole one
    assert mlog(r).hash.copy().digest() == mlog(ref).hash.copy().digest()


async def test_chunk_send_whose_response_is_large() -> None:
    """ACK + response over the DataTransferSize: ERROR(LargeResponse), then only the
    response (not the ACK) by CHUNK_GET."""
    dev = load("gpu")
    r, _q = await connect(dev, dts=64, rng=CountingRng())
    ref, _ = await connect(dev, dts=4096, rng=CountingRng())
    large = get_meas(0x12, 0xFF, pad=60)
    assert r.handle(chunk_send(0x12, 4, 0, large[:48], large=64)) == bytes.fromhex(
        "12 05 00 04 0000"
    )
    assert r.handle(chunk_send(0x12, 4, 1, large[48:], last=True, large=None)) == bytes.fromhex(
        "12 7f 0f 00 01"
    )
    whole = ref.handle(large)
    got = bytearray()
    for seq, piece in enumerate(split_expected(whole, 64)):
        rsp = r.handle(chunk_get(0x12, 1, seq))
        body = rsp[16:] if seq == 0 else rsp[12:]
        assert body == piece
        got += body
    assert bytes(got) == whole


def _early(version: int, handle: int, seq: int) -> bytes:
    return bytes((version, 0x05, 0x01, handle)) + struct.pack("<H", seq) + err(version, 0x01)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("ChunkSeqNo not 0", chunk_send(0x12, 2, 1, bytes(40), large=100)),
        ("LastChunk in chunk 0", chunk_send(0x12, 2, 0, bytes(40), last=True, large=100)),
        ("LargeMessageSize <= 42", chunk_send(0x12, 2, 0, bytes(30), large=42)),
        ("LargeMessageSize > MaxSPDMmsgSize", chunk_send(0x12, 2, 0, bytes(40), large=0x10001)),
        ("ChunkSize < 26", chunk_send(0x12, 2, 0, bytes(25), large=100)),
        (
            "ChunkSize over the data",
            chunk_send(0x12, 2, 0, bytes(40), large=100)[:-1],
        ),
        ("message over DataTransferSize", chunk_send(0x12, 2, 0, bytes(4544), large=9000)),
    ],
)
async def test_chunk_send_first_chunk_early_errors(name: str, message: bytes) -> None:
    r, _q = await connect(load("gpu"), dts=4096)
    seq = struct.unpack_from("<H", message, 4)[0]
    assert r.handle(message) == _early(0x12, 2, seq), name
    assert cstate(r).incoming is None


async def test_chunk_send_later_chunk_early_errors() -> None:
    r, _q = await connect(load("gpu"), dts=4096)
    start = chunk_send(0x12, 6, 0, bytes(40), large=120)
    cases = [
        ("wrong ChunkSeqNo", chunk_send(0x12, 6, 2, bytes(40), large=None), 2),
        ("wrong Handle", chunk_send(0x12, 7, 1, bytes(40), large=None), 1),
        ("overrun", chunk_send(0x12, 6, 1, bytes(81), large=None), 1),
        ("LastChunk short", chunk_send(0x12, 6, 1, bytes(40), last=True, large=None), 1),
        ("non-final chunk < 30", chunk_send(0x12, 6, 1, bytes(29), large=None), 1),
    ]
    for name, message, seq in cases:
        assert r.handle(start) == bytes.fromhex("12 05 00 06 0000"), name
        handle = message[3]
        assert r.handle(message) == _early(0x12, handle, seq), name
        assert cstate(r).incoming is None, name
        # the transfer is gone: its next chunk is a first chunk with a bad ChunkSeqNo
        cont = chunk_send(0x12, 6, 1, bytes(40), large=None)
        assert r.handle(cont)[:3] == bytes.fromhex("12 05 01"), name


async def test_chunk_send_refusals() -> None:
    r, _q = await connect(load("gpu"), dts=4096)
    assert r.handle(bytes.fromhex("12 85 00 00 0000 0000 0000")) == err(0x12, 0x01)  # 11 bytes
    assert r.handle(bytes.fromhex("12 85 00 00 0000 0000 1e000000 0000")) == err(0x12, 0x01)
    # a large "request" that is CHUNK_GET, or an unknown code: InvalidRequest in the ACK
    for code in (0x86, 0x85, 0x70):
        inner = bytes((0x12, code, 0, 0)) + bytes(40)
        r.handle(chunk_send(0x12, 1, 0, inner[:30], large=44))
        ack = r.handle(chunk_send(0x12, 1, 1, inner[30:], last=True, large=None))
        assert ack == bytes.fromhex("12 05 00 01 0100") + err(0x12, 0x01), hex(code)
    # a request of another connection version inside: the core's VersionMismatch
    inner = get_meas(0x13, 1, pad=40)
    r.handle(chunk_send(0x12, 1, 0, inner[:30], large=len(inner)))
    ack = r.handle(chunk_send(0x12, 1, 1, inner[30:], last=True, large=None))
    assert ack == bytes.fromhex("12 05 00 01 0100") + err(0x12, 0x41)
    # another request during a CHUNK_SEND transfer: refused, the transfer goes on
    inner = get_meas(0x12, 2, pad=40)
    r.handle(chunk_send(0x12, 3, 0, inner[:30], large=len(inner)))
    assert r.handle(bytes((0x12, 0x81, 0, 0))) == err(0x12, 0x04)
    assert r.handle(chunk_get(0x12, 3, 0)) == err(0x12, 0x04)
    ack = r.handle(chunk_send(0x12, 3, 1, inner[30:], last=True, large=None))
    assert ack[:6] == bytes.fromhex("12 05 00 03 0100") and ack[7] == ResponseCode.MEASUREMENTS


# --- the requester checks what it receives ----------------------------------------------------


def fake(responses: list[bytes]) -> Callable[[bytes], Awaitable[bytes]]:
    queue = list(responses)

    async def send(_message: bytes) -> bytes:
        return queue.pop(0)

    return send


def _resp(
    seq: int, chunk: bytes, *, last: bool = False, large: int | None = None, h: int = 1
) -> bytes:
    return ChunkResponse(0x12, h, seq, chunk, last, large).encode()


GOOD = [_resp(0, bytes(30), large=60), _resp(1, bytes(30), last=True)]


@pytest.mark.parametrize(
    ("name", "responses"),
    [
        ("wrong handle", [_resp(0, bytes(30), large=60, h=2)]),
        ("wrong seq", [GOOD[0], _resp(2, bytes(30), last=True)]),
        ("LastChunk missing", [GOOD[0], _resp(1, bytes(30))]),
        ("LastChunk early", [_resp(0, bytes(30), large=60, last=True)]),
        ("overrun", [GOOD[0], _resp(1, bytes(31), last=True)]),
        ("over our DataTransferSize", [_resp(0, bytes(200), large=300)]),
        ("LargeMessageSize <= 42", [_resp(0, bytes(26), large=42)]),
        ("over our MaxSPDMmsgSize", [_resp(0, bytes(30), large=0x20000)]),
        ("not CHUNK_RESPONSE", [bytes.fromhex("12 60 00 00") + bytes(40)]),
        ("version", [bytes((0x13,)) + GOOD[0][1:]]),
    ],
)
async def test_requester_rejects_bad_chunk_responses(name: str, responses: list[bytes]) -> None:
    with pytest.raises(RequesterError):
        await rc.fetch_large_response(
            fake(responses),
            bytes.fromhex("12 7f 0f 00 01"),
            version=0x12,
            data_transfer_size=128,
            max_spdm_msg_size=0x10000,
        )


async def test_requester_reassembles_and_reports_chunk_get_errors() -> None:
    out = await rc.fetch_large_response(
        fake(GOOD),
        bytes.fromhex("12 7f 0f 00 01"),
        version=0x12,
        data_transfer_size=128,
        max_spdm_msg_size=0x10000,
    )
    assert out == bytes(60)
    with pytest.raises(SpdmErrorReply) as exc:
        await rc.fetch_large_response(
            fake([err(0x12, 0x01)]),
            bytes.fromhex("12 7f 0f 00 01"),
            version=0x12,
            data_transfer_size=128,
            max_spdm_msg_size=0x10000,
        )
    assert exc.value.request_code == RequestCode.CHUNK_GET


async def test_requester_early_error_and_send_large() -> None:
    r, q = await connect(load("gpu"), dts=4096)
    # send_large forces CHUNK_SEND; the responder refuses a LargeMessageSize of 12
    with pytest.raises(rc.ChunkSendEarlyError) as exc:
        await q.send_large(get_meas(0x12, 1))
    assert exc.value.error_name == "InvalidRequest"
    # a padded request is accepted and answered
    rsp = await q.send_large(get_meas(0x12, 1, pad=60))
    assert rsp[1] == ResponseCode.MEASUREMENTS and rsp[4] == 1
    sends = [t for t in rc.state(q).transfers if t.kind == "send"]
    assert [t.handle for t in sends] == [0, 1]
    assert r.ctx.chunking.requests_completed == 1


# --- in a secure session ----------------------------------------------------------------------


def p384_chain() -> bytes:
    """The SPDM certificate chain of the committed P-384 slot 0 (hashlib, no emulator code)."""
    certs = split_der_chain((ROOT / "certs" / "ecdsa-p384" / "slot0" / "chain.der").read_bytes())
    root_hash = hashlib.sha384(certs[0]).digest()
    body = b"".join(certs)
    return struct.pack("<HH", 4 + len(root_hash) + len(body), 0) + root_hash + body


async def session_requester(dts: int) -> tuple[Requester, SpdmConnection]:
    conn = SpdmConnection(load("default"), get_binding("doe"))
    q = Requester(
        ConnectionChannel(conn),
        RequesterConfig(
            version=0x12,
            flags=SESSION_FLAGS,
            data_transfer_size=dts,
            max_spdm_msg_size=0x10000,
            base_asym=int(BaseAsymAlgo.ECDSA_P384),
            base_hash=int(BaseHashAlgo.SHA_384),
            dhe=int(DheGroup.SECP_384_R1),
            aead=int(AeadSuite.AES_256_GCM),
        ),
    )
    await q.vca()
    return q, conn


async def test_chunking_in_a_secure_session() -> None:
    dev = load("default")
    q, conn = await session_requester(64)
    s = await open_session(q, peer_chain=p384_chain(), binding="doe")
    assert s.established
    ke = [t for t in rc.state(q).transfers if t.request[:2] == bytes((0x12, 0xE4))]
    # KEY_EXCHANGE went by CHUNK_SEND and its KEY_EXCHANGE_RSP came back by CHUNK_GET
    assert len(ke) == 1 and ke[0].kind == "send" and len(ke[0].exchanges) > 2
    assert ke[0].response[1] == ResponseCode.KEY_EXCHANGE_RSP
    assert ke[0].exchanges[-1][1][:3] == bytes.fromhex("12 06 01")  # the last CHUNK_RESPONSE
    request = get_meas(0x12)
    inside = await rc.session_send(s, request)
    assert inside[1] == ResponseCode.MEASUREMENTS and len(inside) > 64
    assert rc.state(q).transfers[-1].kind == "get"
    gets = rc.state(q).transfers[-1].exchanges
    assert len(gets) >= 2 and all(len(rsp) <= 64 for _, rsp in gets)
    # the record matches what the same device gives outside, unchunked
    ref_r, _ = await connect(dev, dts=4096)
    outside = ref_r.handle(request)
    n = 8 + int.from_bytes(outside[5:8], "little")
    assert inside[:n] == outside[:n]
    # a CHUNK_GET outside the session cannot read a response produced in the session
    r = conn.responder
    assert r.handle(request, session_id=s.session_id)[2] == 0x0F
    handle = r.ctx.chunking.pending.handle
    assert r.handle(chunk_get(0x12, handle, 0)) == err(0x12, 0x04)
    assert r.handle(chunk_get(0x12, handle, 0), session_id=s.session_id)[1] == 0x06
    r.handle(bytes((0x10, 0x84, 0, 0)))  # GET_VERSION ends everything


async def test_chunk_send_in_the_handshake_phase() -> None:
    """DataTransferSize 42: the 52-byte FINISH goes by CHUNK_SEND inside the session while it
    is still handshaking (as libspdm's requester does); a non-handshake request reassembled
    there is refused like one sent whole."""
    q, conn = await session_requester(42)
    s = await key_exchange(q, peer_chain=p384_chain(), binding="doe")
    assert not s.established
    # GET_MEASUREMENTS (padded to 50 bytes) by CHUNK_SEND in the handshake: UnexpectedRequest
    inner = get_meas(0x12, 1, pad=46)
    ack0 = await s.send(chunk_send(0x12, 0x40, 0, inner[:26], large=len(inner)))
    assert ack0 == bytes.fromhex("12 05 00 40 0000")
    ack1 = await s.send(chunk_send(0x12, 0x40, 1, inner[26:], last=True, large=None))
    assert ack1 == bytes.fromhex("12 05 00 40 0100") + err(0x12, 0x04)
    # FINISH by CHUNK_SEND in the session (the session requester sends it whole: route it)
    plain_send = s.send
    sent: list[bytes] = []

    async def chunked(request: bytes, *, allow_error: bool = False) -> bytes:
        if request[1] == RequestCode.FINISH and rc.needs_chunk_send(q, request):
            sent.append(request)

            async def raw(message: bytes) -> bytes:
                return await plain_send(message, allow_error=True)

            return await rc.send_large(q, request, raw)
        return await plain_send(request, allow_error=allow_error)

    s.send = chunked  # type: ignore[method-assign]
    await finish(s)
    assert s.established and len(sent) == 1 and len(sent[0]) == 52
    s.send = plain_send
    last = rc.state(q).transfers[-1]
    assert last.kind == "send" and last.request == sent[0]
    assert last.response == bytes((0x12, ResponseCode.FINISH_RSP, 0, 0))
    await s.heartbeat()
    rsp = await rc.session_send(s, get_meas(0x12, 0xFF))
    assert rsp[1] == ResponseCode.MEASUREMENTS
    # NEGOTIATE_ALGORITHMS (48 bytes), KEY_EXCHANGE, the GET_MEASUREMENTS above, FINISH
    assert conn.responder.ctx.chunking.requests_completed == 4
