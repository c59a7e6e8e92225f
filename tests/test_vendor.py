"""VENDOR_DEFINED_REQUEST/RESPONSE and PCI-SIG IDE_KM (PCIe r6 6.33.3).

Vectors are written out here from the layouts of DSP0274 ("VENDOR_DEFINED_REQUEST request
and VENDOR_DEFINED_RESPONSE response"), libspdm ``pcidoe.h`` and ``pci_idekm.h``; the
in-session flow runs through :class:`emulator.connection.SpdmConnection` with the project's
session requester (its own key schedule), and one KEY_PROG record is sealed and the answer
opened here with ``cryptography``'s AESGCM directly.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from emulator.codec.constants import (
    AeadSuite,
    BaseAsymAlgo,
    BaseHashAlgo,
    DheGroup,
    ErrorCode,
)
from emulator.codec.vendor import (
    IdeKmKeyMessage,
    IdeKmKeyProg,
    IdeKmObject,
    IdeKmQuery,
    IdeKmQueryResp,
    VendorDefined,
    build_vendor_request,
    build_vendor_response,
    key_sub_stream,
    parse_vendor,
    pcisig_message,
)
from emulator.connection import SpdmConnection
from emulator.device.model import Device
from emulator.errors import CodecError, ProfileError
from emulator.profiles import profile_from_dict
from emulator.requester import Requester, RequesterConfig, SpdmErrorReply
from emulator.requester.requester import LoopbackChannel
from emulator.requester.session import ConnectionChannel, open_session
from emulator.requester.vendor import IdeKmRequester, vendor_defined
from emulator.responder import Responder
from emulator.transport import get_binding
from tests.helpers import make_device, profile_data
from tests.test_session import CHAIN384, FULL_FLAGS

V12 = 0x12
KEY = bytes(range(0x40, 0x60))
IFV = bytes.fromhex("0000000001000000")  # spdm-emu: iv[0] = 0, iv[1] = 1 (u32 LE)


@pytest.fixture(scope="module")
def base_device() -> Device:
    return make_device()


@pytest.fixture
def device(base_device: Device) -> Device:
    assert base_device.ide_km is not None
    base_device.ide_km.clear()
    return base_device


async def plain(dev: Device, version: int = V12) -> Requester:
    req = Requester(LoopbackChannel(Responder(dev)), RequesterConfig(version=version))
    await req.vca()
    return req


async def in_session(dev: Device, version: int = V12) -> tuple[Requester, int, Any]:
    conn = SpdmConnection(dev, get_binding("doe"))
    cfg = RequesterConfig(
        version=version,
        flags=FULL_FLAGS,
        base_asym=int(BaseAsymAlgo.ECDSA_P384),
        base_hash=int(BaseHashAlgo.SHA_384),
        dhe=int(DheGroup.SECP_384_R1),
        aead=int(AeadSuite.AES_256_GCM),
    )
    req = Requester(ConnectionChannel(conn), cfg)
    await req.vca()
    s = await open_session(req, peer_chain=CHAIN384, binding="doe")
    return req, s.session_id, s


def ide_km_request(version: int, body: bytes) -> bytes:
    """VENDOR_DEFINED_REQUEST for PCI-SIG IDE_KM, by hand."""
    payload = b"\x00" + body
    return (
        bytes((version, 0xFE, 0, 0, 0x03, 0x00, 0x02, 0x01, 0x00))
        + struct.pack("<H", len(payload))
        + payload
    )


def error_of(exc: pytest.ExceptionInfo[SpdmErrorReply]) -> tuple[int, int]:
    return exc.value.code, exc.value.data


# ---- codec: byte-exact layouts ---------------------------------------------------------


def test_vendor_request_response_layout() -> None:
    msg = VendorDefined(0x0003, b"\x01\x00", b"\xaa\xbb\xcc")
    want = bytes.fromhex("12fe000003000201000300aabbcc")
    assert build_vendor_request(V12, msg) == want
    assert build_vendor_response(V12, msg) == bytes.fromhex(
        "127e0000030002010003 00aabbcc".replace(" ", "")
    )
    assert parse_vendor(want + b"\x00\x00\x00") == (msg, len(want))  # DOE padding ignored
    # DMTF registry: no VendorID
    assert build_vendor_request(0x13, VendorDefined(0, b"", b"")) == bytes.fromhex(
        "13fe00000000000000"
    )
    with pytest.raises(CodecError, match="PayloadLength 4"):
        parse_vendor(bytes.fromhex("12fe000003000201000400aabbcc"))
    with pytest.raises(CodecError, match="at least 7"):
        parse_vendor(bytes.fromhex("12fe000003"))


def test_ide_km_layouts() -> None:
    assert IdeKmQuery(1).encode() == bytes.fromhex("000001")
    resp = IdeKmQueryResp(1, 0x08, 0x02, 0x00, 7, (0x30043, 0x0))
    wire = bytes.fromhex("010001080200074300030000000000")
    assert resp.encode() == wire and IdeKmQueryResp.decode(wire) == resp
    kss = key_sub_stream(1, True, 2)  # K1 | TX | CPL
    assert kss == 0x23
    kp = IdeKmKeyProg(5, kss, 1, KEY, IFV).encode()
    assert kp == bytes.fromhex("02000005002301") + KEY + IFV and len(kp) == 47
    ack = IdeKmKeyMessage(IdeKmObject.KP_ACK, 5, kss, 1, 3).encode()
    assert ack == bytes.fromhex("03000005032301")
    go = IdeKmKeyMessage(IdeKmObject.K_SET_GO, 5, 0x10, 1).encode()
    assert go == bytes.fromhex("04000005001001")
    assert IdeKmKeyMessage(IdeKmObject.K_SET_STOP, 0, 0, 0).encode() == bytes.fromhex(
        "05000000000000"
    )
    assert (
        IdeKmKeyMessage.decode(
            bytes.fromhex("06000005001001"), IdeKmObject.K_GOSTOP_ACK
        ).key_sub_stream
        == 0x10
    )
    assert pcisig_message(0, b"\x00\x00\x01").payload == bytes.fromhex("00000001")
    with pytest.raises(CodecError, match="7 expected"):
        IdeKmKeyMessage.decode(b"\x06\x00", IdeKmObject.K_GOSTOP_ACK)


# ---- outside a session -------------------------------------------------------------------


async def test_query_outside_session_byte_exact(device: Device) -> None:
    req = await plain(device)
    rsp = await req.send(ide_km_request(V12, bytes.fromhex("000001")))
    # default profile: ports 0..7, BDF 00:00.0, 1 link TC, 4 selective streams, 1 address block
    cap = 0x40 | 0x01 | 0x02 | (3 << 16)
    regs = [cap, 0, 0, 0] + [1, 0, 0, 0, 0, 0, 0, 0] * 4
    body = bytes.fromhex("01000100000007") + struct.pack("<36I", *regs)
    payload = b"\x00" + body
    want = bytes.fromhex("127e00000300020100") + struct.pack("<H", len(payload)) + payload
    assert rsp == want
    # the project's requester reads the same
    q = await IdeKmRequester(req).query(1)
    assert (q.port_index, q.max_port_index, q.registers[0]) == (1, 7, cap)
    assert len(q.registers) == 36


@pytest.mark.parametrize(
    ("version", "code"), [(0x12, ErrorCode.SessionRequired), (0x11, ErrorCode.UnexpectedRequest)]
)
async def test_key_requests_need_a_session(device: Device, version: int, code: ErrorCode) -> None:
    req = await plain(device, version)
    ide = IdeKmRequester(req)
    with pytest.raises(SpdmErrorReply) as exc:
        await ide.key_prog(0, 0x00, 1, KEY, IFV)
    assert exc.value.code == code
    for call in (ide.set_go, ide.set_stop):
        with pytest.raises(SpdmErrorReply) as exc:
            await call(0, 0x00, 1)
        assert exc.value.code == code
    assert device.ide_km is not None and device.ide_km.slots == {}
    # QUERY still works after the refusals
    assert (await ide.query(0)).port_index == 0


async def test_query_can_be_restricted_to_sessions() -> None:
    dev = make_device(ide_km={"query_outside_session": False, "bus": 3, "device": 2, "function": 1})
    req = await plain(dev)
    with pytest.raises(SpdmErrorReply) as exc:
        await IdeKmRequester(req).query(0)
    assert exc.value.code == ErrorCode.SessionRequired
    _, sid, _s = await in_session(dev)
    q = await IdeKmRequester(_, sid).query(0)
    assert (q.bus_num, q.dev_func_num) == (3, (2 << 3) | 1)


async def test_unknown_vendors_and_protocols(device: Device) -> None:
    req = await plain(device)
    cases = [
        (0x0002, b"\x6b\x1d", b"\x00"),  # USB vendor: no handler
        (0x0000, b"", b"hello"),  # DMTF
        (0x0003, b"\x98\x1e", b"\x7f\x00\x00\x01"),  # CXL vendor ID, unknown protocol
        (0x0003, b"\x01\x00", b"\x7f"),  # PCI-SIG unknown protocol
    ]
    for sid, vid, payload in cases:
        with pytest.raises(SpdmErrorReply) as exc:
            await vendor_defined(req, sid, vid, payload)
        assert error_of(exc) == (ErrorCode.UnsupportedRequest, 0xFE), (sid, vid, payload)


async def test_malformed_vendor_requests(device: Device) -> None:
    req = await plain(device)
    bad = [
        bytes.fromhex("12fe0000030003010000010000"),  # PCI-SIG VendorID of 3 bytes
        bytes.fromhex("12fe0000000002ffff0000"),  # DMTF with a VendorID
        bytes.fromhex("12fe0000ff00000000"),  # unknown registry 0xFF
        bytes.fromhex("12fe000003000201"),  # truncated VendorID
        bytes.fromhex("12fe000003000201000500000000"),  # payload shorter than its length
        bytes.fromhex("12fe000003000201000000"),  # PCI-SIG without a protocol ID
        ide_km_request(V12, b""),  # IDE_KM without an ObjectID
        ide_km_request(V12, bytes.fromhex("0000")),  # QUERY of 2 bytes
        ide_km_request(V12, bytes.fromhex("000008")),  # QUERY for port 8 (max 7)
        ide_km_request(V12, bytes.fromhex("010001")),  # a QUERY_RESP sent as a request
    ]
    for request in bad:
        with pytest.raises(SpdmErrorReply) as exc:
            await req.send(request)
        assert exc.value.code == ErrorCode.InvalidRequest, request.hex()
    # a version byte other than the negotiated one
    with pytest.raises(SpdmErrorReply) as exc:
        await req.send(ide_km_request(0x11, bytes.fromhex("000001")))
    assert exc.value.code == ErrorCode.VersionMismatch


async def test_vendor_request_before_algorithms(device: Device) -> None:
    req = Requester(LoopbackChannel(Responder(device)), RequesterConfig(version=V12))
    await req.get_version()
    await req.get_capabilities()
    with pytest.raises(SpdmErrorReply) as exc:
        await req.send(ide_km_request(V12, bytes.fromhex("000001")))
    assert exc.value.response == bytes((V12, 0x7F, ErrorCode.UnexpectedRequest, 0))


async def test_profile_without_ide_km() -> None:
    dev = make_device(ide_km=None, tdisp=None)  # TDISP's default TDI requires IDE
    assert dev.ide_km is None
    req = await plain(dev)
    with pytest.raises(SpdmErrorReply) as exc:
        await IdeKmRequester(req).query(0)
    assert error_of(exc) == (ErrorCode.UnsupportedRequest, 0xFE)


async def test_canned_vendor_table() -> None:
    table = [
        {"standard_id": "USB", "vendor_id": "6b1d", "request_prefix": "0102", "response": "cafe"},
        {"standard_id": 2, "vendor_id": "6b1d", "response": "00"},
        {"standard_id": "PCISIG", "vendor_id": "0100", "request_prefix": "01", "response": "01ff"},
        {"standard_id": 0, "response": "64 6d 74 66"},
    ]
    dev = make_device(vendor_defined=table)
    req = await plain(dev)
    rsp = await req.send(bytes.fromhex("12fe00000200026b1d0300010203"))
    assert rsp == bytes.fromhex("127e00000200026b1d0200cafe")
    assert await vendor_defined(req, 2, b"\x6b\x1d", b"\x09") == b"\x00"  # second entry
    assert await vendor_defined(req, 3, b"\x01\x00", b"\x01\x00\x00") == b"\x01\xff"  # TDISP
    assert await vendor_defined(req, 0, b"", b"") == b"dmtf"
    # IDE_KM still goes to the built-in responder
    assert (await IdeKmRequester(req).query(2)).port_index == 2
    with pytest.raises(SpdmErrorReply) as exc:
        await vendor_defined(req, 2, b"\x6c\x1d", b"\x01\x02")
    assert exc.value.code == ErrorCode.UnsupportedRequest


@pytest.mark.parametrize(
    ("entry", "field", "problem"),
    [
        ({"standard_id": "NOPE", "response": ""}, "vendor_defined[0]", "not a number"),
        ({"standard_id": 3, "vendor_id": "010000", "response": ""}, "vendor_defined[0]", "3-byte"),
        (
            {"standard_id": 3, "vendor_id": "0100", "response": "zz"},
            "vendor_defined[0].response",
            "not hex",
        ),
    ],
)
def test_canned_table_profile_errors(entry: dict[str, Any], field: str, problem: str) -> None:
    data = profile_data()
    data["vendor_defined"] = [entry]
    with pytest.raises(ProfileError) as exc:
        profile_from_dict(data, "p.toml")
    assert exc.value.field == field and problem in exc.value.problem


def test_ide_km_profile_errors() -> None:
    data = profile_data()
    data["ide_km"] = {"max_port_index": 1, "ports": [0, 2]}
    with pytest.raises(ProfileError) as exc:
        profile_from_dict(data, "p.toml")
    assert exc.value.field == "ide_km.ports[1]" and "above max_port_index" in exc.value.problem
    data["ide_km"] = {"registers": [1]}
    with pytest.raises(ProfileError, match=r"ide_km\.registers"):
        profile_from_dict(data, "p.toml")


# ---- inside a session --------------------------------------------------------------------

SUBSTREAMS = [(tx, sub) for tx in (False, True) for sub in (0, 1, 2)]


async def test_ide_km_flow_in_session(device: Device) -> None:
    events: list[tuple[str, object]] = []
    device.listeners.append(lambda what, detail: events.append((what, detail)))
    try:
        req, sid, s = await in_session(device)
        ide = IdeKmRequester(req, sid)
        q = await ide.query(1)
        assert (q.port_index, q.max_port_index, len(q.registers)) == (1, 7, 36)
        # spdm-emu's requester flow: K0 for RX/TX x PR/NPR/CPL of stream 0 on port 1, GO each
        keys = {}
        for i, (tx, sub) in enumerate(SUBSTREAMS):
            kss = key_sub_stream(0, tx, sub)
            keys[kss] = bytes([i]) * 32
            assert await ide.key_prog(0, kss, 1, keys[kss], IFV) == 0
            await ide.set_go(0, kss, 1)
        state = device.ide_km
        assert state is not None
        for kss, key in keys.items():
            slot = state.slot(1, 0, kss)
            assert slot is not None and slot.active == 0
            assert slot.sets[0].key == key and slot.sets[0].ifv == IFV
            assert slot.sets[0].session_id == sid
        # the next key set: program K1, GO switches to it, STOP K0 invalidates the old one
        kss1 = key_sub_stream(1, False, 0)
        assert await ide.key_prog(0, kss1, 1, KEY, IFV) == 0
        await ide.set_go(0, kss1, 1)
        slot = state.slot(1, 0, kss1)
        assert slot is not None and slot.active == 1 and set(slot.sets) == {0, 1}
        await ide.set_stop(0, key_sub_stream(0, False, 0), 1)
        assert slot.active == 1 and set(slot.sets) == {1}
        assert len(state.snapshot()) == 6
        for kss in keys:
            if kss != 0:
                await ide.set_stop(0, kss, 1)
        await ide.set_stop(0, kss1, 1)
        assert state.snapshot() == [] and state.slots == {}
        # every request went in the session: its log holds the decrypted exchanges
        assert sum(1 for r, _ in s.log if r[1] == 0xFE) == 1 + 12 + 2 + 1 + 5 + 1
    finally:
        device.listeners.clear()
    ide_events = [d for w, d in events if w == "ide_km"]
    assert ide_events and isinstance(ide_events[0], dict)
    first = ide_events[0]
    assert first["change"] == "key_programmed" and first["text"] == (
        "key programmed for port 1 stream 0 sub-stream PR direction RX key set K0"
    )
    blob = repr(events)
    for key in [*keys.values(), KEY]:
        assert key.hex() not in blob and repr(key) not in blob


async def test_key_prog_statuses(device: Device) -> None:
    req, sid, _s = await in_session(device)
    ide = IdeKmRequester(req, sid)
    assert await ide.key_prog(1, 0x00, 9, KEY, IFV) == 2  # port 9 > MaxPortIndex 7
    assert await ide.key_prog(1, 0x30, 1, KEY, IFV) == 3  # sub-stream 3
    assert await ide.key_prog(1, 0x04, 1, KEY, IFV) == 3  # reserved bit 2
    # incorrect length: KEY_PROG without its IFV, by hand
    short = bytes.fromhex("02000001000001") + KEY
    ack = await ide.exchange(short)
    assert ack == bytes.fromhex("03000001010001")
    # max_streams (link TCs + selective streams = 5) distinct stream IDs per port
    for stream in range(5):
        assert await ide.key_prog(stream, 0x00, 2, KEY, IFV) == 0
    assert await ide.key_prog(5, 0x00, 2, KEY, IFV) == 3
    assert await ide.key_prog(4, 0x12, 2, KEY, IFV) == 0  # a known stream ID still works
    assert await ide.key_prog(5, 0x00, 3, KEY, IFV) == 0  # another port has its own slots
    assert device.ide_km is not None and device.ide_km.streams_on_port(1) == set()
    # K_SET_GO without a programmed key, bad port, bad sub-stream, bad sizes: InvalidRequest
    for body in (
        "04000007000001",  # stream 7 was never programmed
        "04000001000101",  # K1 of stream 1 was never programmed
        "04000000000009",  # port 9
        "04000000003002",  # sub-stream 3
        "040000000000",  # 6 bytes
        "0500000000000200",  # 8 bytes
        "020000",  # KEY_PROG shorter than its header
    ):
        with pytest.raises(SpdmErrorReply) as exc:
            await ide.exchange(bytes.fromhex(body))
        assert exc.value.code == ErrorCode.InvalidRequest, body
    # K_SET_STOP of a key set that is not programmed is acknowledged
    await ide.set_stop(7, 0x00, 1)


async def test_key_prog_record_sealed_by_hand(device: Device) -> None:
    """Seal KEY_PROG with AESGCM directly (DSP0277 record for DOE: SessionID, Length,
    AEAD(AppLength + message)), send it raw and open the KP_ACK record here."""
    req, sid, s = await in_session(device)
    conn = req.channel.connection  # type: ignore[attr-defined]
    d = s.keys["req"]
    message = ide_km_request(V12, bytes.fromhex("02000009002101") + KEY + IFV)
    plain_text = struct.pack("<H", len(message)) + message
    aad = struct.pack("<IH", sid, len(plain_text) + 16)
    nonce = bytes(a ^ b for a, b in zip(d.iv[:8], struct.pack("<Q", d.seq), strict=True)) + d.iv[8:]
    record = aad + AESGCM(d.key).encrypt(nonce, plain_text, aad)
    payloads = conn.receive(conn.binding.encode(record, secured=True)).payloads
    reply = conn.binding.decode(payloads[0])
    assert reply.secured
    r = s.keys["rsp"]
    head = reply.message[:6]
    (rsid, length) = struct.unpack("<IH", head)
    assert rsid == sid
    rn = bytes(a ^ b for a, b in zip(r.iv[:8], struct.pack("<Q", r.seq), strict=True)) + r.iv[8:]
    opened = AESGCM(r.key).decrypt(rn, reply.message[6 : 6 + length], head)
    (alen,) = struct.unpack_from("<H", opened)
    answer = opened[2 : 2 + alen]
    assert answer == bytes.fromhex("127e0000030002010008000003000009002101")
    state = device.ide_km
    assert state is not None
    slot = state.slot(1, 9, 0x21)
    assert slot is not None and slot.sets[1].key == KEY and slot.active is None
