"""CXL IDE_KM and CXL TSP over PCI DOE, and secured PLDM over MCTP, as libspdm's requester
application flow sends them, over real loopback sockets in real secure sessions.

Messages are written here byte by byte from libspdm ``industry_standard/cxl_idekm.h``,
``cxl_tsp.h`` and ``pldm.h`` (DSP0240); the PLDM messages go in DSP0277 records that the
test's session requester seals and opens itself.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from emulator.codec.constants import ErrorCode
from emulator.connection import SpdmConnection
from emulator.device.model import Device
from emulator.errors import RequesterError
from emulator.requester import Requester, RequesterConfig, SpdmErrorReply
from emulator.requester.identity import flow_for
from emulator.requester.session import ConnectionChannel, RequesterSession, open_session
from emulator.requester.transport import SocketClient
from emulator.requester.vendor import vendor_defined
from emulator.trace import describe_pldm
from emulator.transport import get_binding
from tests.helpers import make_device, profile_data
from tests.test_tdisp import CFG, Serve, serve

__all__ = ["serve"]  # the socket fixture, used by name below

PCISIG = 3
CXL_VID = b"\x98\x1e"  # VendorID 0x1E98
IDE_KM, TSP = 0x00, 0x01
KEY = bytes(range(0x20, 0x40))
IV = struct.pack("<III", 0x80000000, 0, 1)  # libspdm's initial IV


@dataclass
class Conn:
    req: Requester
    session: RequesterSession

    async def cxl(self, protocol: int, body: bytes, *, in_session: bool = True) -> bytes:
        """A CXL vendor-defined message; the answer after the echoed protocol ID."""
        sid = self.session.session_id if in_session else None
        answer = await vendor_defined(
            self.req, PCISIG, CXL_VID, bytes((protocol,)) + body, session_id=sid
        )
        assert answer[0] == protocol
        return answer[1:]


@asynccontextmanager
async def connect(port: int, binding: str = "doe") -> AsyncIterator[Conn]:
    async with SocketClient("127.0.0.1", port, get_binding(binding), timeout=10) as client:
        req = Requester(client, RequesterConfig(version=0x12, **CFG))  # type: ignore[arg-type]
        await req.vca()
        flow = flow_for(req)
        await flow.get_digests()
        await flow.get_certificate(0)
        s = await open_session(req, peer_chain=flow.chains[0].chain, binding=binding)
        yield Conn(req, s)


def key7(obj: int, kss: int, port: int = 0, stream: int = 0, status: int = 0) -> bytes:
    """ObjectID, Reserved (2), StreamID, Reserved/Status, KeySubStream, PortIndex."""
    return bytes((obj, 0, 0, stream, status, kss, port))


# ---- CXL IDE_KM ----------------------------------------------------------------------------


async def test_cxl_ide_km_byte_exact(serve: Serve) -> None:
    port = await serve(make_device())
    async with connect(port) as c:
        # QUERY_RESP: port, DevFunc, Bus, Segment, MaxPortIndex, Caps (v1 | K_SET_STOP_CAP),
        # then the 9 CXL IDE capability DWORDs of the profile
        rsp = await c.cxl(IDE_KM, bytes((0x00, 0, 0)))
        assert rsp == bytes((0x01, 0, 0, 0, 0, 0, 7, 0x41)) + struct.pack("<9I", 1, *[0] * 8)
        for kss in (0x80, 0x82 | 0x08):  # RX initial IV, TX default IV
            rsp = await c.cxl(IDE_KM, key7(0x02, kss) + KEY + IV)
            assert rsp == key7(0x03, kss, status=0)
        for kss in (0x80, 0x82):  # K_SET_GO RX / TX (skid mode)
            assert await c.cxl(IDE_KM, key7(0x04, kss)) == key7(0x06, kss)
        for kss in (0x80, 0x82):
            assert await c.cxl(IDE_KM, key7(0x05, kss)) == key7(0x06, kss)
        # KP_ACK status 1 (invalid): wrong length, a port it does not have, reserved bits,
        # a sub-stream other than CXL.cachemem
        for bad in (
            key7(0x02, 0x80) + KEY,
            key7(0x02, 0x80, port=3) + KEY + IV,
            key7(0x02, 0x81) + KEY + IV,
            key7(0x02, 0x10) + KEY + IV,
        ):
            rsp = await c.cxl(IDE_KM, bad)
            assert rsp[0] == 0x03 and rsp[4] == 0x01, bad.hex()
        # protocol errors: ERROR(InvalidRequest) as spdm-emu's device library fails them
        for bad in (
            bytes((0x00, 0, 5)),  # QUERY for a port it does not have
            key7(0x04, 0x80),  # K_SET_GO after K_SET_STOP forgot the key
            key7(0x04, 0x80)[:6],
            bytes((0x01, 0, 0)),  # QUERY_RESP is no request
        ):
            with pytest.raises(SpdmErrorReply) as exc:
                await c.cxl(IDE_KM, bad)
            assert exc.value.code == ErrorCode.InvalidRequest, bad.hex()
        # GET_KEY: this device generates no keys
        with pytest.raises(SpdmErrorReply) as exc:
            await c.cxl(IDE_KM, key7(0x07, 0x80))
        assert exc.value.code == ErrorCode.UnsupportedRequest
        # key programming needs the session
        with pytest.raises(SpdmErrorReply) as exc:
            await c.cxl(IDE_KM, key7(0x02, 0x80) + KEY + IV, in_session=False)
        assert exc.value.code == ErrorCode.SessionRequired
        assert (await c.cxl(IDE_KM, bytes((0x00, 0, 0)), in_session=False))[0] == 0x01


async def test_cxl_ide_km_key_generation(serve: Serve) -> None:
    section = profile_data()["cxl_ide_km"]
    section.update(key_generation=True, iv_generation=True, k_set_stop=False)
    device = make_device(cxl_ide_km=section)
    port = await serve(device)
    async with connect(port) as c:
        rsp = await c.cxl(IDE_KM, bytes((0x00, 0, 0)))
        assert rsp[7] == 0x01 | 0x10 | 0x20
        a = await c.cxl(IDE_KM, key7(0x07, 0x80))
        b = await c.cxl(IDE_KM, key7(0x07, 0x80))
        assert a[:7] == key7(0x08, 0x80) and len(a) == 7 + 32 + 12
        assert a[7:39] != b[7:39] and a[7:39] != bytes(32)  # fresh device keys
        assert a[39:43] == struct.pack("<I", 0x80000000)
        with pytest.raises(SpdmErrorReply) as exc:
            await c.cxl(IDE_KM, key7(0x05, 0x80))
        assert exc.value.code == ErrorCode.UnsupportedRequest  # no K_SET_STOP_CAP
    assert device.cxl_ide_km is not None and "key" not in str(device.cxl_ide_km.snapshot())


# ---- CXL TSP ---------------------------------------------------------------------------------


def tsp(op: int, body: bytes = b"\x00\x00", version: int = 0x10) -> bytes:
    return bytes((version, op)) + body


def set_configuration(
    *,
    enc: int = 0x01,
    alg: int = 0x02,
    te: int = 0x02 | 0x04 | 0x10,
    oob: int = 0,
    features: int = 0x01,
    validity: int = 0,
) -> bytes:
    """SET_TARGET_CONFIGURATION as libspdm's requester sends it (352 bytes)."""
    head = struct.pack("<BBHI4xHHI4xHHII12x", 0x10, 0x83, enc, alg, te, 0, oob, features, 0, 0, 0)
    entries = struct.pack("<QB7x", 0, 0) + struct.pack("<QB7x", 0, 0xFF) * 7
    tail = struct.pack("<16xH14xB15x", validity, 0) + bytes(128)
    msg = head + entries + tail
    assert len(msg) == 352
    return msg


def te_state(state: int, ranges: list[tuple[int, int]]) -> bytes:
    return struct.pack("<BBBB12x", 0x10, 0x8D, state, len(ranges)) + b"".join(
        struct.pack("<QQ", a, n) for a, n in ranges
    )


def tsp_error(code: int, data: int = 0, version: int = 0x10) -> bytes:
    return struct.pack("<BBHII", version, 0x7F, 0, code, data)


INVALID_REQUEST, UNSUPPORTED, VERSION_MISMATCH, NO_PRIVILEGE = 0x01, 0x04, 0x05, 0x07
INVALID_CONFIG, INVALID_STATE, ALREADY_LOCKED = 0x0A, 0x0B, 0x0D


async def test_cxl_tsp_primary_session_flow(serve: Serve) -> None:
    device = make_device()
    port = await serve(device)
    async with connect(port) as c:
        # version 1.0 only; this session becomes the primary one
        assert await c.cxl(TSP, tsp(0x81)) == bytes((0x10, 0x01, 0, 0, 1, 0x10))
        caps = await c.cxl(TSP, tsp(0x82))
        want = struct.pack(
            "<BBHIHHHHIIHHIB19x", 0x10, 0x02, 0x01, 0x02, 0, 0, 0x16, 0, 0, 0x01, 0x01, 0, 0, 0
        )
        assert caps == want and len(caps) == 52
        # LOCK before any configuration
        assert await c.cxl(TSP, tsp(0x86)) == tsp_error(INVALID_CONFIG)
        # configurations libspdm's validation would refuse
        for bad in (
            set_configuration(alg=0x03),  # two algorithms
            set_configuration(alg=0x01),  # AES-XTS-128 not supported
            set_configuration(te=0x01 | 0x10),  # write access control not supported
            set_configuration(te=0x02),  # read access control without a TE state change
            set_configuration(enc=0, alg=0x02),  # an algorithm without encryption
            set_configuration(oob=0x1),  # an OOB granularity without OOB TE state change
            set_configuration(validity=0x1),  # no secondary sessions are offered
        ):
            assert await c.cxl(TSP, bad) == tsp_error(INVALID_REQUEST)
        assert await c.cxl(TSP, set_configuration()) == tsp(0x03)
        config = await c.cxl(TSP, tsp(0x84))
        assert len(config) == 192
        assert struct.unpack_from("<BBHI4xHHI4xHHIIB", config) == (
            0x10, 0x04, 0x01, 0x02, 0x16, 0, 0, 0x01, 0, 0, 0, 0,
        )  # fmt: skip
        # the report, in portions that add up
        first = await c.cxl(TSP, struct.pack("<BBHHH", 0x10, 0x85, 0, 0, 100))
        assert struct.unpack_from("<BBHHH", first) == (0x10, 0x05, 0, 100, 0xDC - 100)
        assert first[8] == 0x01 and len(first) == 8 + 100
        rest = await c.cxl(TSP, struct.pack("<BBHHH", 0x10, 0x85, 0, 100, 0x200))
        assert struct.unpack_from("<BBHHH", rest) == (0x10, 0x05, 0, 0xDC - 100, 0)
        for off, length in ((0xDC, 1), (0, 0)):
            got = await c.cxl(TSP, struct.pack("<BBHHH", 0x10, 0x85, 0, off, length))
            assert got == tsp_error(INVALID_REQUEST)
        # TE state needs the lock
        assert await c.cxl(TSP, te_state(1, [(0x100000, 0x10000)])) == tsp_error(INVALID_STATE)
        assert await c.cxl(TSP, tsp(0x86)) == tsp(0x06)
        assert await c.cxl(TSP, tsp(0x86)) == tsp_error(ALREADY_LOCKED)
        assert await c.cxl(TSP, set_configuration()) == tsp_error(INVALID_STATE)
        assert (await c.cxl(TSP, tsp(0x84)))[36] == 1  # current_tsp_state CONFIG_LOCKED
        assert await c.cxl(TSP, te_state(1, [(0x100000, 0x10000)])) == tsp(0x0D)
        assert await c.cxl(TSP, te_state(0, [(0x100000, 0x10000)])) == tsp(0x0D)
        for bad in (te_state(2, []), te_state(1, [(0x100001, 64)]), te_state(1, [(0, 0)])):
            assert await c.cxl(TSP, bad) == tsp_error(INVALID_REQUEST), bad.hex()
        assert await c.cxl(TSP, te_state(1, [(0, 64)])[:-1]) == tsp_error(INVALID_REQUEST)
        # generic errors
        assert await c.cxl(TSP, tsp(0x87)) == tsp_error(UNSUPPORTED, 0x87)
        assert await c.cxl(TSP, tsp(0x01)) == tsp_error(UNSUPPORTED, 0x01)
        assert await c.cxl(TSP, tsp(0x82, version=0x11)) == tsp_error(
            VERSION_MISMATCH, version=0x11
        )
        assert await c.cxl(TSP, tsp(0x82, b"\x00")) == tsp_error(INVALID_REQUEST)
        assert await c.cxl(TSP, tsp(0x82), in_session=False) == tsp_error(NO_PRIVILEGE)
    assert device.cxl_tsp is not None and device.cxl_tsp.state.name == "CONFIG_LOCKED"
    # another session: version and capabilities, no privilege for the rest
    async with connect(port) as other:
        assert (await other.cxl(TSP, tsp(0x81)))[1] == 0x01
        assert (await other.cxl(TSP, tsp(0x82)))[1] == 0x02
        for op in (0x84, 0x86):
            assert await other.cxl(TSP, tsp(op)) == tsp_error(NO_PRIVILEGE)


async def test_cxl_tsp_primary_moves_while_unlocked(serve: Serve) -> None:
    port = await serve(make_device())
    async with connect(port) as first:
        await first.cxl(TSP, tsp(0x81))
        async with connect(port) as second:
            await second.cxl(TSP, tsp(0x81))
            assert await second.cxl(TSP, tsp(0x84)) == tsp_error(NO_PRIVILEGE)
    # the primary session ended before anything was locked: the next one takes over
    async with connect(port) as third:
        await third.cxl(TSP, tsp(0x81))
        assert (await third.cxl(TSP, tsp(0x84)))[1] == 0x04


# ---- PLDM in MCTP secured messages -----------------------------------------------------------


async def pldm(s: RequesterSession, message: bytes) -> bytes:
    """One PLDM message in the session: MCTP message type 0x01 inside the record."""
    reply = await s.exchange_record(s.encrypt(b"\x01" + message))
    app = s.decrypt(reply.message)
    assert app[:1] == b"\x01", app.hex()  # answered as PLDM, not as SPDM
    return app[1:]


async def test_secured_pldm_get_tid_over_mctp(serve: Serve) -> None:
    section = profile_data()["pldm"]
    section["tid"] = 0x42
    port = await serve(make_device(pldm=section), "mctp")
    async with connect(port, "mctp") as c:
        s = c.session
        # GetTID (libspdm: instance 0): Rq=0, same instance/type/command, SUCCESS, TID
        assert await pldm(s, bytes.fromhex("800002")) == bytes.fromhex("00000200") + b"\x42"
        assert await pldm(s, bytes.fromhex("9f0002")) == bytes.fromhex("1f00020042")
        # GetPLDMTypes: type 0 only
        assert await pldm(s, bytes.fromhex("800004")) == bytes.fromhex("00000400") + bytes(
            (1, 0, 0, 0, 0, 0, 0, 0)
        )
        cases = {
            "800003": "00000305",  # GetPLDMVersion: ERROR_UNSUPPORTED_PLDM_CMD
            "80020a": "00020a20",  # a platform monitoring command: ERROR_INVALID_PLDM_TYPE
            "80000200": "00000203",  # GetTID with data: ERROR_INVALID_LENGTH
            "804002": "00000202",  # header version 01b: ERROR_INVALID_DATA
        }
        for request, response in cases.items():
            assert await pldm(s, bytes.fromhex(request)) == bytes.fromhex(response), request
        # SPDM still works in the same session, and the session survives
        await s.heartbeat()
        await s.end_session()


async def test_pldm_without_section_and_dropped_messages() -> None:
    """In-process (a dropped message has no reply frame to wait for on a socket)."""
    device = make_device()
    conn = SpdmConnection(device, get_binding("mctp"), number=1)
    req = Requester(ConnectionChannel(conn), RequesterConfig(version=0x12, **CFG))  # type: ignore[arg-type]
    await req.vca()
    flow = flow_for(req)
    await flow.get_digests()
    await flow.get_certificate(0)
    s = await open_session(req, peer_chain=flow.chains[0].chain, binding="mctp")
    for not_a_request in ("000002", "c00002", "80"):  # a response, a datagram, no header
        with pytest.raises(RequesterError, match="no reply"):
            await s.exchange_record(s.encrypt(b"\x01" + bytes.fromhex(not_a_request)))
    assert await pldm(s, bytes.fromhex("800002")) == bytes.fromhex("0000020001")
    # a device that does not speak PLDM: an SPDM ERROR(UnsupportedRequest, 0x01) in the session
    plain = SpdmConnection(make_device(pldm=None), get_binding("mctp"), number=2)
    req2 = Requester(ConnectionChannel(plain), RequesterConfig(version=0x12, **CFG))  # type: ignore[arg-type]
    await req2.vca()
    flow2 = flow_for(req2)
    await flow2.get_digests()
    await flow2.get_certificate(0)
    s2 = await open_session(req2, peer_chain=flow2.chains[0].chain, binding="mctp")
    reply = await s2.exchange_record(s2.encrypt(bytes.fromhex("01800002")))
    assert s2.decrypt(reply.message) == bytes.fromhex("05127f0701")


def test_pldm_trace_text() -> None:
    assert describe_pldm(bytes.fromhex("800002")) == "PLDM GetTID request Instance=0"
    assert describe_pldm(bytes.fromhex("0000020001")) == (
        "PLDM GetTID response Instance=0 SUCCESS Data=01"
    )
    assert describe_pldm(b"\x80").startswith("PLDM malformed")


def test_device_states_need_sections() -> None:
    dev: Device = make_device(cxl_ide_km=None, cxl_tsp=None)
    assert dev.cxl_ide_km is None and dev.cxl_tsp is None
