"""TDISP (PCIe 6.1 chapter 11) against the emulator over real loopback sockets, in real
secure sessions.

Messages are written out here byte by byte from the tables of PCIe 6.1 11.3 (header table
11-5, the request/response tables 11-7 ... 11-30) with ``struct``; the TDISP requester
(:mod:`emulator.requester.tdisp`, its own layouts) drives the flows; sessions are the
project's session requester (its own key schedule).  The state machine is walked through
every legal and illegal transition of table 11-3 ("Legal TDISP states"), and the reset
rules of 11.4 (session end, IDE stream insecure, FLR, conventional reset).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.codec.constants import (
    AeadSuite,
    BaseAsymAlgo,
    BaseHashAlgo,
    DheGroup,
    ErrorCode,
    RequestCode,
)
from emulator.codec.tdisp import (
    Capabilities,
    InterfaceId,
    InterfaceReport,
    LockParams,
    MmioRange,
    TdispError,
    TdispHeader,
    TdiState,
    message,
    req_msgs_bitmap,
    tdisp_in_vendor,
)
from emulator.connection import SpdmConnection
from emulator.device.model import Device
from emulator.errors import ProfileError, RequesterError
from emulator.faults.engine import FaultEngine
from emulator.options import RunOptions
from emulator.profiles import profile_from_dict
from emulator.requester import Requester, RequesterConfig, SpdmErrorReply
from emulator.requester.identity import flow_for
from emulator.requester.session import RequesterSession, open_session, psk_exchange
from emulator.requester.tdisp import (
    TdiReport,
    TdispErrorReply,
    TdispRequester,
    tdisp_session_flow,
)
from emulator.requester.transport import SocketClient
from emulator.requester.vendor import IdeKmRequester, vendor_defined
from emulator.responder.vendor_defined.tdisp import TdispState
from emulator.server.server import SpdmServer
from emulator.transport import get_binding
from tests.helpers import make_device, profile_data
from tests.mqtt_broker import Broker, mqtt_broker
from tests.test_session import FULL_FLAGS, HINT, PSK

__all__ = ["mqtt_broker"]  # the fixture, used by name below

# ---- numbers of the spec tables -------------------------------------------------------

V10 = 0x10
TDI = 0xBEEF  # the default profile's TDI (spdm-emu's requester addresses it)
# request codes (table 11-3) and response codes (table 11-4)
GET_VERSION, GET_CAPS, LOCK, GET_REPORT, GET_STATE, START, STOP = range(0x81, 0x88)
BIND, UNBIND, SET_MMIO, VDM = range(0x88, 0x8C)
TDISP_ERROR = 0x7F
# ERROR_CODE (table 11-27)
INVALID_REQUEST, BUSY, INVALID_INTERFACE_STATE, UNSPECIFIED = 0x1, 0x3, 0x4, 0x5
UNSUPPORTED_REQUEST, VERSION_MISMATCH, VENDOR_SPECIFIC = 0x7, 0x41, 0xFF
INVALID_INTERFACE, INVALID_NONCE, INSUFFICIENT_ENTROPY, INVALID_DEVICE_CONFIG = range(0x101, 0x105)
UNLOCKED, LOCKED, RUN, ERROR = range(4)
# LOCK_INTERFACE_REQUEST FLAGS: NO_FW_UPDATE | SYSTEM_CACHE_LINE_SIZE | LOCK_MSIX
DEFAULT_FLAGS = 0x07
OFFSET = 0xD0000000  # the MMIO_REPORTING_OFFSET libspdm's requester sends


def hdr(message_type: int, function_id: int = TDI, version: int = V10) -> bytes:
    """Table 11-5: TDISPVersion, MessageType, Reserved (2), INTERFACE_ID (FUNCTION_ID u32 +
    8 reserved bytes)."""
    return bytes((version, message_type, 0, 0)) + struct.pack("<I", function_id) + bytes(8)


def error_msg(code: int, data: int = 0, function_id: int = TDI, version: int = V10) -> bytes:
    """Table 11-26: TDISP_ERROR = header + ERROR_CODE (u32) + ERROR_DATA (u32)."""
    return hdr(TDISP_ERROR, function_id, version) + struct.pack("<II", code, data)


def lock_req(
    flags: int = DEFAULT_FLAGS, stream: int = 0, offset: int = OFFSET, mask: int = 0
) -> bytes:
    """Table 11-10: FLAGS (u16), StreamID, Reserved, MMIO_REPORTING_OFFSET (u64),
    BIND_P2P_ADDRESS_MASK (u64)."""
    return hdr(LOCK) + struct.pack("<HBBqQ", flags, stream, 0, offset, mask)


def expected_default_report(flags: int = DEFAULT_FLAGS, offset: int = OFFSET) -> bytes:
    """Table 11-15 for the default profile's TDI, written out from its [[tdisp.interfaces]]."""
    ranges = [
        (0xFE000000, 16, 0x0, 0),
        (0xFE010000, 1, 0x1, 0),  # MSI-X table: only when LOCK_MSIX locked it
        (0xFE011000, 1, 0x2, 0),  # MSI-X PBA
        (0xFE100000, 256, 0x8, 2),
        (0xFE200000, 1, 0x4, 4),
    ]
    if not flags & 0x04:
        ranges = [r for r in ranges if not r[2] & 0x3]
    info = b"spdm-emulator TDI BE:1D.7"
    out = struct.pack("<HHHHII", 0x0003, 0, 0, 0, 0, len(ranges))  # DMA w/o PASID | NO_UPDATE
    for addr, pages, attrs, rid in ranges:
        out += struct.pack("<QIHH", (addr + offset) >> 12, pages, attrs, rid)
    return out + struct.pack("<I", len(info)) + info


# ---- sockets and sessions ---------------------------------------------------------------

Serve = Callable[..., Awaitable[int]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[SpdmServer] = []

    async def start(
        device: Device, binding_name: str = "doe", faults: FaultEngine | None = None
    ) -> int:
        binding = get_binding(binding_name)
        srv = SpdmServer(
            RunOptions(host="127.0.0.1", port=0),
            binding,
            lambda number, peer: SpdmConnection(
                device, binding, number=number, peer=peer, faults=faults
            ),
        )
        await srv.start()
        servers.append(srv)
        return srv.port

    yield start
    for srv in servers:
        await srv.stop()


@dataclass
class Tsm:
    """One TSM connection: requester, session, TDISP requester and IDE_KM requester."""

    req: Requester
    session: RequesterSession
    tdisp: TdispRequester
    ide: IdeKmRequester
    client: SocketClient

    async def raw(self, msg: bytes) -> bytes:
        return await self.tdisp.raw(msg)

    async def state(self) -> int:
        return await self.tdisp.get_state()

    async def key_stream(self, stream: int = 0, port: int = 0, subs: int = 6) -> None:
        """IDE_KM KEY_PROG + K_SET_GO for the first ``subs`` of the six sub-streams."""
        for i, (tx, sub) in enumerate((tx, sub) for tx in (0, 2) for sub in (0, 1, 2)):
            if i >= subs:
                break
            kss = sub << 4 | tx
            assert await self.ide.key_prog(stream, kss, port, bytes(range(32)), bytes(8)) == 0
            await self.ide.set_go(stream, kss, port)


CFG = dict(
    flags=FULL_FLAGS,
    base_asym=int(BaseAsymAlgo.ECDSA_P384),
    base_hash=int(BaseHashAlgo.SHA_384),
    dhe=int(DheGroup.SECP_384_R1),
    aead=int(AeadSuite.AES_256_GCM),
)


@asynccontextmanager
async def tsm(
    port: int,
    *,
    binding: str = "doe",
    version: int = 0x12,
    keys: bool = True,
    function_id: int = TDI,
    psk: bool = False,
) -> AsyncIterator[Tsm]:
    """A requester over a socket with a secure session (and IDE stream 0 keyed)."""
    async with SocketClient("127.0.0.1", port, get_binding(binding), timeout=10) as client:
        req = Requester(client, RequesterConfig(version=version, **CFG))  # type: ignore[arg-type]
        await req.vca()
        if psk:
            s = await psk_exchange(req, psk=PSK, hint=HINT, binding=binding)
        else:
            flow = flow_for(req)
            await flow.get_digests()
            await flow.get_certificate(0)
            s = await open_session(req, peer_chain=flow.chains[0].chain, binding=binding)
        t = Tsm(
            req,
            s,
            TdispRequester(req, s.session_id, function_id),
            IdeKmRequester(req, s.session_id),
            client,
        )
        if keys:
            await t.key_stream()
        yield t


def tdisp_of(device: Device) -> TdispState:
    assert device.tdisp is not None
    return device.tdisp


async def until(predicate: Callable[[], bool], what: str) -> None:
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


#: a second and third TDI: P2P, an updatable range and a small report portion limit; and
#: one that needs no IDE (an RCIEP), knows its segment and may update firmware when locked
P2P_TDI = {
    "function_id": 0x0100,
    "lock_flags_supported": ["NO_FW_UPDATE", "LOCK_MSIX", "BIND_P2P"],
    "p2p": True,
    "ide_port": 0,
    "interface_info": ["DMA_WITH_PASID", "ATS_SUPPORTED"],
    "msix_message_control": 0x8003,
    "tph_control": 0x00000101,
    "mmio_ranges": [
        {"address": 0x10000000, "pages": 4, "range_id": 0},
        {"address": 0x10004000, "pages": 1, "attributes": ["MSIX_TABLE"], "range_id": 0},
        {"address": 0x20000000, "pages": 2, "attributes": ["IS_MEM_ATTR_UPDATABLE"], "range_id": 2},
    ],
    "device_specific_info_hex": "00112233",
}
RCIEP_TDI = {
    "function_id": 0x0200,
    "segment": 1,
    "ide_required": False,
    "runtime_firmware_update": True,
    "lock_flags_supported": ["NO_FW_UPDATE"],
    "interface_info": [],
}


def rich_device(**tdisp: Any) -> Device:
    section = profile_data()["tdisp"]
    section["interfaces"] = [*section["interfaces"], P2P_TDI, RCIEP_TDI]
    section["vdm"] = [
        {"registry_id": "PCISIG", "vendor_id": "8680", "request_prefix": "01", "response": "a5a5"}
    ]
    section.update(tdisp)
    return make_device(tdisp=section)


# ---- codec: byte-exact layouts -------------------------------------------------------------


def test_header_and_interface_id_layout() -> None:
    msg = message(V10, LOCK, 0x0100BEEF, b"\xaa")
    assert msg == bytes.fromhex("10830000efbe0001" + "00" * 8 + "aa")
    h = TdispHeader.decode(msg)
    assert (h.version, h.message_type) == (V10, LOCK)
    iid = h.interface_id
    assert (iid.requester_id, iid.segment, iid.segment_valid) == (0xBEEF, 0x00, True)
    assert InterfaceId(0x0002BEEF).segment_valid is False


def test_capabilities_layout() -> None:
    caps = Capabilities(
        dsm_caps=0,
        req_msgs_supported=req_msgs_bitmap(set(range(0x81, 0x88))),
        lock_interface_flags_supported=0x0007,
        dev_addr_width=52,
        num_req_this=1,
        num_req_all=2,
    )
    # table 11-9: DSM_CAPS, REQ_MSGS_SUPPORTED (bit = code - 80h: 81h..87h -> 0xFE), flags,
    # 3 reserved, DEV_ADDR_WIDTH, NUM_REQ_THIS, NUM_REQ_ALL
    want = bytes(4) + b"\xfe" + bytes(15) + b"\x07\x00" + bytes(3) + bytes((52, 1, 2))
    assert caps.encode() == want and Capabilities.decode(want) == caps
    assert caps.supports(0x81) and not caps.supports(0x88) and not caps.supports(0x80)


def test_lock_report_and_error_layouts() -> None:
    lp = LockParams(flags=0x05, default_stream_id=3, mmio_reporting_offset=-0x1000)
    assert lp.encode() == bytes.fromhex("0500030000f0ffffffffffff" + "00" * 8)
    assert LockParams.decode(lp.encode()) == lp
    rng = MmioRange(0x1CE000, 16, 0x0008, 2)
    assert rng.encode() == bytes.fromhex("00e01c00000000001000000008000200")
    report = InterfaceReport(0x0003, 0x8001, 0, 0x101, (rng,), b"ab")
    raw = report.encode()
    assert (
        raw
        == bytes.fromhex("03000000018000000101000001000000")
        + rng.encode()
        + bytes.fromhex("02000000")
        + b"ab"
    )
    assert InterfaceReport.decode(raw) == report
    assert TdispError(0x102, 7).encode() == bytes.fromhex("0201000007000000")


# ---- the whole flow, byte by byte, over DOE -----------------------------------------------


async def test_tdisp_session_byte_exact(serve: Serve) -> None:
    device = make_device()
    port = await serve(device)
    async with tsm(port) as t:
        # TDISP_VERSION: count 1, entry 1.0 (table 11-7)
        assert await t.raw(hdr(GET_VERSION)) == hdr(0x01) + b"\x01\x10"
        # TDISP_CAPABILITIES (table 11-9): the 7 required requests + SET_MMIO_ATTRIBUTE
        # (the default TDI has an IS_MEM_ATTR_UPDATABLE range), the lock flags, 52 bits
        caps = await t.raw(hdr(GET_CAPS) + struct.pack("<I", 0))
        req_msgs = bytes((0xFE, 0x04)) + bytes(14)
        assert caps == hdr(0x02) + bytes(4) + req_msgs + b"\x07\x00" + bytes(3) + b"\x34\x01\x01"
        assert await t.raw(hdr(GET_STATE)) == hdr(0x05) + bytes((UNLOCKED,))
        lock = await t.raw(lock_req())
        assert lock[:16] == hdr(0x03) and len(lock) == 48
        nonce = lock[16:]
        assert nonce == tdisp_of(device).interfaces[TDI].nonce
        assert await t.raw(hdr(GET_STATE)) == hdr(0x05) + bytes((LOCKED,))
        # the report in portions of 0x40 bytes (libspdm's requester), then of 1000
        report = expected_default_report()
        assert len(report) == 125
        first = await t.raw(hdr(GET_REPORT) + struct.pack("<HH", 0, 0x40))
        assert first == hdr(0x04) + struct.pack("<HH", 0x40, 125 - 0x40) + report[:0x40]
        second = await t.raw(hdr(GET_REPORT) + struct.pack("<HH", 0x40, 1000))
        assert second == hdr(0x04) + struct.pack("<HH", 125 - 0x40, 0) + report[0x40:]
        assert await t.raw(hdr(START) + nonce) == hdr(0x06)
        assert await t.raw(hdr(GET_STATE)) == hdr(0x05) + bytes((RUN,))
        assert await t.raw(hdr(STOP)) == hdr(0x07)
        assert await t.raw(hdr(GET_STATE)) == hdr(0x05) + bytes((UNLOCKED,))


async def test_requester_flow_over_mctp_and_psk(serve: Serve) -> None:
    """The TSM flow in a PSK session over MCTP (TDISP does not care about the binding)."""
    port = await serve(make_device(), "mctp")
    async with tsm(port, binding="mctp", psk=True) as t:
        out = await tdisp_session_flow(t.req, t.session.session_id, TDI)
        assert out["states"] == ["CONFIG_UNLOCKED", "CONFIG_LOCKED", "RUN", "CONFIG_UNLOCKED"]
        assert out["report"]["portions"] == 2 and out["report"]["bytes"] == 125


# ---- the state machine: every request in every state (table 11-3) ----------------------------


async def _bring(t: Tsm, device: Device, state: int, function_id: int = TDI) -> bytes:
    """Move the TDI to ``state`` from CONFIG_UNLOCKED; the LOCK nonce (or b"")."""
    nonce = b""
    tdisp = TdispRequester(t.req, t.session.session_id, function_id)
    flags = DEFAULT_FLAGS if function_id == TDI else 0x0D  # P2P TDI: NO_FW|LOCK_MSIX|BIND_P2P
    if state in (LOCKED, RUN, ERROR):
        nonce = await tdisp.lock(flags, 0, OFFSET, 0xFFFF0000)
    if state == RUN:
        await tdisp.start(nonce)
    if state == ERROR:
        assert tdisp_of(device).force_error(function_id, "test") == [function_id]
    assert await tdisp.get_state() == state
    return nonce


# (request, its payload builder, {state: expected result}); a result is a TDISP_ERROR
# code or ("ok", the state after)
IIS = INVALID_INTERFACE_STATE
TRANSITIONS: list[tuple[str, int, dict[int, Any]]] = [
    ("LOCK", LOCK, {UNLOCKED: ("ok", LOCKED), LOCKED: IIS, RUN: IIS, ERROR: IIS}),
    ("START", START, {UNLOCKED: IIS, LOCKED: ("ok", RUN), RUN: IIS, ERROR: IIS}),
    ("REPORT", GET_REPORT, {UNLOCKED: IIS, LOCKED: ("ok", LOCKED), RUN: ("ok", RUN), ERROR: IIS}),
    (
        "STATE",
        GET_STATE,
        {
            UNLOCKED: ("ok", UNLOCKED),
            LOCKED: ("ok", LOCKED),
            RUN: ("ok", RUN),
            ERROR: ("ok", ERROR),
        },
    ),
    (
        "STOP",
        STOP,
        {
            UNLOCKED: ("ok", UNLOCKED),
            LOCKED: ("ok", UNLOCKED),
            RUN: ("ok", UNLOCKED),
            ERROR: ("ok", UNLOCKED),
        },
    ),
    ("BIND", BIND, {UNLOCKED: IIS, LOCKED: IIS, RUN: ("ok", RUN), ERROR: IIS}),
    ("UNBIND", UNBIND, {UNLOCKED: IIS, LOCKED: IIS, RUN: INVALID_REQUEST, ERROR: IIS}),
    ("SET_MMIO", SET_MMIO, {UNLOCKED: IIS, LOCKED: IIS, RUN: ("ok", RUN), ERROR: IIS}),
    (
        "VDM",
        VDM,
        {
            UNLOCKED: ("ok", UNLOCKED),
            LOCKED: ("ok", LOCKED),
            RUN: ("ok", RUN),
            ERROR: ("ok", ERROR),
        },
    ),
]


def _request_for(code: int, function_id: int, nonce: bytes) -> bytes:
    h = hdr(code, function_id)
    if code == LOCK:
        return h + struct.pack("<HBBqQ", 0x0D, 0, 0, OFFSET, 0xFFFF0000)
    if code == START:
        return h + (nonce or bytes(32))
    if code == GET_REPORT:
        return h + struct.pack("<HH", 0, 0xFFFF)
    if code in (BIND, UNBIND):
        return h + b"\x05"  # P2P stream 5 (keyed in _keyed)
    if code == SET_MMIO:
        # the updatable range of the P2P TDI, reported at (0x20000000 + OFFSET) >> 12
        return h + struct.pack("<QIHH", (0x20000000 + OFFSET) >> 12, 2, 0x4, 2)
    if code == VDM:
        return h + bytes.fromhex("00028680") + b"\x01\x02"
    return h


def _payload_for(code: int, device: Device) -> bytes:
    """The payload each successful answer must have (tables 11-11 ... 11-30)."""
    tdi = tdisp_of(device).interfaces[0x0100]
    if code == LOCK:
        assert tdi.nonce is not None
        return tdi.nonce  # the 32-byte START_INTERFACE_NONCE the device keeps
    if code == GET_REPORT:
        return struct.pack("<HH", len(tdi.report), 0) + tdi.report
    if code == GET_STATE:
        return bytes((tdi.state,))
    if code == VDM:
        return bytes.fromhex("00028680a5a5")  # registry, VENDOR_ID echoed, vendor data
    return b""  # START, STOP, BIND, UNBIND, SET_MMIO responses: the header alone


@pytest.mark.parametrize(
    "start", [UNLOCKED, LOCKED, RUN, ERROR], ids=["UNLOCKED", "LOCKED", "RUN", "ERROR"]
)
async def test_every_transition(serve: Serve, start: int) -> None:
    device = rich_device()
    port = await serve(device)
    async with tsm(port) as t:
        await t.key_stream(stream=5)  # the P2P stream (all sub-streams, same session)
        p2p = TdispRequester(t.req, t.session.session_id, 0x0100)
        for name, code, results in TRANSITIONS:
            await p2p.stop()
            nonce = await _bring(t, device, start, 0x0100)
            answer = await t.raw(_request_for(code, 0x0100, nonce))
            want = results[start]
            state = await p2p.get_state()
            if isinstance(want, tuple):
                assert answer[:16] == hdr(code - 0x80, 0x0100), (name, start, answer.hex())
                assert answer[16:] == _payload_for(code, device), (name, start)
                assert state == want[1], (name, start)
            else:
                assert answer == error_msg(want, function_id=0x0100), (name, start, answer.hex())
                assert state == start, f"{name} in state {start} changed the state to {state}"


async def test_start_needs_the_lock_nonce_once(serve: Serve) -> None:
    device = make_device()
    port = await serve(device)
    async with tsm(port) as t:
        nonce = (await t.raw(lock_req()))[16:]
        wrong = bytes((nonce[0] ^ 0x80,)) + nonce[1:]
        assert await t.raw(hdr(START) + wrong) == error_msg(INVALID_NONCE)
        assert await t.state() == LOCKED  # a wrong nonce leaves the TDI locked
        assert await t.raw(hdr(START) + nonce) == hdr(0x06)
        await t.tdisp.stop()
        # a new LOCK has a new nonce; the old one does not start the TDI
        nonce2 = (await t.raw(lock_req()))[16:]
        assert nonce2 != nonce
        assert await t.raw(hdr(START) + nonce) == error_msg(INVALID_NONCE)
        assert await t.raw(hdr(START) + nonce2) == hdr(0x06)


async def test_tdisp_only_inside_a_session(serve: Serve) -> None:
    port = await serve(make_device())
    for version, code in ((0x12, ErrorCode.SessionRequired), (0x11, ErrorCode.UnexpectedRequest)):
        async with SocketClient("127.0.0.1", port, get_binding("doe"), timeout=10) as client:
            req = Requester(client, RequesterConfig(version=version, **CFG))  # type: ignore[arg-type]
            await req.vca()
            with pytest.raises(SpdmErrorReply) as exc:
                await vendor_defined(req, 3, b"\x01\x00", b"\x01" + hdr(GET_VERSION))
            assert (exc.value.code, exc.value.data) == (code, 0)


# ---- shared device state, sessions and resets (11.2, 11.4) --------------------------------


async def test_state_is_the_devices_across_connections(serve: Serve) -> None:
    device = make_device()
    port = await serve(device)
    async with tsm(port) as a, tsm(port, keys=False) as b:
        nonce = await a.tdisp.lock(DEFAULT_FLAGS, 0, OFFSET)
        assert await b.state() == LOCKED  # another connection sees the lock
        report = await b.tdisp.get_report()
        assert report.raw == expected_default_report()
        # another session cannot START without the nonce ...
        assert await b.raw(hdr(START) + bytes(32)) == error_msg(INVALID_NONCE)
        # ... and the nonce is not tied to the session
        await b.tdisp.start(nonce)
        assert await a.state() == RUN
        await b.tdisp.stop()
        assert await a.state() == UNLOCKED


@pytest.mark.parametrize("how", ["end_session", "get_version", "close", "k_set_stop"])
async def test_locked_tdi_goes_to_error(serve: Serve, how: str) -> None:
    device = make_device()
    port = await serve(device)
    tdi = tdisp_of(device).interfaces[TDI]
    async with tsm(port, keys=False) as watcher:
        async with tsm(port) as t:
            await t.tdisp.lock(DEFAULT_FLAGS, 0, OFFSET)
            if how != "k_set_stop":
                await t.tdisp.start(await _nonce(device))
            if how == "end_session":
                await t.session.end_session()
            elif how == "get_version":
                await t.req.get_version()  # the connection starts over: its sessions end
            elif how == "k_set_stop":
                await t.ide.set_stop(0, 0x12, 0)  # NPR TX key of the default stream
        if how == "close":
            await until(lambda: tdi.state == ERROR, "the TDI in ERROR")
        assert await watcher.state() == ERROR
        assert tdi.reason
        # ERROR: only STOP leaves it (LOCK, START, REPORT are refused)
        assert await watcher.raw(lock_req()) == error_msg(IIS)
        assert await watcher.raw(hdr(GET_REPORT) + struct.pack("<HH", 0, 64)) == error_msg(IIS)
        await watcher.tdisp.stop()
        assert await watcher.state() == UNLOCKED


async def _nonce(device: Device) -> bytes:
    nonce = tdisp_of(device).interfaces[TDI].nonce
    assert nonce is not None
    return nonce


async def test_session_end_of_another_session_leaves_the_tdi(serve: Serve) -> None:
    device = make_device()
    port = await serve(device)
    async with tsm(port) as t:
        await t.tdisp.lock(DEFAULT_FLAGS, 0, OFFSET)
        async with tsm(port, keys=False) as other:
            await other.session.end_session()
        assert await t.state() == LOCKED
        # and an unlocked TDI does not care about its session
        await t.tdisp.stop()
    assert tdisp_of(device).interfaces[TDI].state is not None
    assert tdisp_of(device).interfaces[TDI].state == UNLOCKED


async def test_heartbeat_timeout_ends_the_lock() -> None:
    """A session that times out (DSP0274 HEARTBEAT) ends: its TDIs go to ERROR."""
    from emulator.requester.session import ConnectionChannel

    device = make_device()
    now = [1000.0]
    conn = SpdmConnection(device, get_binding("doe"), number=1, clock=lambda: now[0])
    req = Requester(ConnectionChannel(conn), RequesterConfig(version=0x12, **CFG))  # type: ignore[arg-type]
    await req.vca()
    flow = flow_for(req)
    await flow.get_digests()
    await flow.get_certificate(0)
    s = await open_session(req, peer_chain=flow.chains[0].chain, binding="doe")
    assert s.heartbeat_period
    t = Tsm(req, s, TdispRequester(req, s.session_id, TDI), IdeKmRequester(req, s.session_id), None)  # type: ignore[arg-type]
    await t.key_stream()
    await t.tdisp.lock(DEFAULT_FLAGS, 0, 0)
    now[0] += 3 * s.heartbeat_period  # past the watchdog (2 x HeartbeatPeriod)
    with pytest.raises(RequesterError):
        await t.tdisp.get_state()  # the record is for a session that is gone
    assert tdisp_of(device).interfaces[TDI].state == ERROR


async def test_flr_and_conventional_reset() -> None:
    state = tdisp_of(make_device())
    tdi = state.interfaces[TDI]
    assert state.function_level_reset(TDI) == []  # an unlocked TDI is not affected
    tdi.state = TdiState.CONFIG_LOCKED
    tdi.owner = (1, 1)
    assert state.function_level_reset(None) == [TDI]
    assert tdi.state == ERROR and tdi.reason == "function level reset"
    assert state.conventional_reset() == [TDI]
    assert tdi.state == UNLOCKED and tdi.owner is None and tdi.nonce is None
    with pytest.raises(KeyError, match="0x1234"):
        state.force_error(0x1234, "x")


# ---- LOCK checks (table 11-12) and the report (11.3.10, table 11-15) -----------------------


async def test_lock_needs_ide_keys_of_this_session(serve: Serve) -> None:
    device = make_device()
    port = await serve(device)
    async with tsm(port, keys=False) as t:
        await t.key_stream(subs=5)  # CPL TX missing
        assert await t.raw(lock_req()) == error_msg(INVALID_REQUEST)
        await t.key_stream()
        assert await t.raw(lock_req(stream=1)) == error_msg(INVALID_REQUEST)  # stream 1 unkeyed
        async with tsm(port, keys=False) as other:
            # the keys were programmed over the first session, not this one
            assert await other.raw(lock_req()) == error_msg(INVALID_REQUEST)
        assert (await t.raw(lock_req()))[1] == 0x03
        assert await t.state() == LOCKED


async def test_lock_flags_offset_and_report(serve: Serve) -> None:
    device = rich_device()
    port = await serve(device)
    async with tsm(port) as t:
        # BIND_P2P is not supported by the default TDI; reserved bits are ignored
        assert await t.raw(lock_req(flags=0x08)) == error_msg(INVALID_REQUEST)
        # an offset that moves a range past 2^64
        assert await t.raw(lock_req(offset=-0xFE000000 - 1)) == error_msg(INVALID_REQUEST)
        assert await t.state() == UNLOCKED
        # without LOCK_MSIX the MSI-X table and PBA are not reported
        assert (await t.raw(lock_req(flags=0x01 | 0x8000, offset=-0x100000)))[1] == 0x03
        report = await t.tdisp.get_report(portion=7)
        assert report.raw == expected_default_report(flags=0x01, offset=-0x100000)
        assert report.portions == -(-len(report.raw) // 7)
        await t.tdisp.stop()
        # the P2P TDI: MSI-X locked, so MSI-X message control and TPH are reported too
        p2p = TdispRequester(t.req, t.session.session_id, 0x0100)
        await p2p.lock(0x05, 0, 0)  # NO_FW_UPDATE | LOCK_MSIX
        report = await p2p.get_report(portion=0x400)
        assert report.portions == 1
        assert (report.interface_info, report.msix_message_control, report.tph_control) == (
            0x1 | 0x4 | 0x8,
            0x8003,
            0x101,
        )
        assert [(r.first_page, r.pages, r.attributes) for r in report.ranges] == [
            (0x10000, 4, 0),
            (0x10004, 1, 1),
            (0x20000, 2, 8),
        ]
        assert report.device_specific_info == bytes.fromhex("00112233")
        # the RCIEP: no IDE needed; runtime firmware updates unless NO_FW_UPDATE
        rciep = TdispRequester(t.req, t.session.session_id, 0x0200)
        await rciep.lock(0, 5, 0)  # StreamID ignored: no IDE
        assert (await rciep.get_report()).interface_info == 0
        await rciep.stop()
        await rciep.lock(0x01, 0, 0)
        assert (await rciep.get_report()).interface_info == 0x1


async def test_report_offsets_and_lengths(serve: Serve) -> None:
    device = rich_device(max_report_portion=48)
    port = await serve(device)
    async with tsm(port) as t:
        await t.tdisp.lock(DEFAULT_FLAGS, 0, OFFSET)
        report = expected_default_report()
        # the device's buffer limit (48): PORTION_LENGTH <= LENGTH, the rest remains
        got = await t.raw(hdr(GET_REPORT) + struct.pack("<HH", 0, 0xFFFF))
        assert got == hdr(0x04) + struct.pack("<HH", 48, 125 - 48) + report[:48]
        # any offset inside the report, any length
        got = await t.raw(hdr(GET_REPORT) + struct.pack("<HH", 124, 10))
        assert got == hdr(0x04) + struct.pack("<HH", 1, 0) + report[124:]
        got = await t.raw(hdr(GET_REPORT) + struct.pack("<HH", 100, 3))
        assert got == hdr(0x04) + struct.pack("<HH", 3, 22) + report[100:103]
        # OFFSET outside the report, LENGTH 0: INVALID_REQUEST (table 11-16)
        for offset, length in ((125, 1), (0xFFFF, 1), (0, 0)):
            got = await t.raw(hdr(GET_REPORT) + struct.pack("<HH", offset, length))
            assert got == error_msg(INVALID_REQUEST), (offset, length)
        assert (await t.tdisp.get_report(portion=48)).raw == report


async def test_p2p_mmio_attribute_and_vdm(serve: Serve) -> None:
    device = rich_device()
    port = await serve(device)
    async with tsm(port) as t:
        await t.key_stream(stream=5)
        p2p = TdispRequester(t.req, t.session.session_id, 0x0100)
        caps = await p2p.get_capabilities()
        assert all(caps.supports(c) for c in (BIND, UNBIND, SET_MMIO, VDM))
        nonce = await p2p.lock(0x0D, 0, 0, 0xFFFF0000)
        await p2p.start(nonce)
        # the default stream and an unkeyed stream cannot be P2P streams
        for stream in (0, 6):
            with pytest.raises(TdispErrorReply) as exc:
                await p2p.bind_p2p(stream)
            assert exc.value.code == INVALID_REQUEST
        await p2p.bind_p2p(5)
        with pytest.raises(TdispErrorReply):
            await p2p.bind_p2p(5)  # already bound
        assert tdisp_of(device).interfaces[0x0100].p2p_streams == {5}
        await p2p.unbind_p2p(5)
        with pytest.raises(TdispErrorReply):
            await p2p.unbind_p2p(5)
        # SET_MMIO_ATTRIBUTE: only the updatable range, bits 1:0 zero
        await p2p.set_mmio_attribute(0x20000, 2, 2, True)
        assert tdisp_of(device).interfaces[0x0100].non_tee == {2: True}
        for fields in ((0x10000, 4, 0, True), (0x20000, 1, 2, True), (0x20001, 2, 2, True)):
            with pytest.raises(TdispErrorReply) as exc:
                await p2p.set_mmio_attribute(*fields)
            assert exc.value.code == INVALID_REQUEST, fields
        bad_bits = hdr(SET_MMIO, 0x0100) + struct.pack("<QIHH", 0x20000, 2, 0x5, 2)
        assert await t.raw(bad_bits) == error_msg(INVALID_REQUEST, function_id=0x0100)
        # the report keeps the attributes as locked (table 11-15)
        assert (await p2p.get_report()).ranges[2].attributes == 0x8
        # VDM: the canned answer echoes registry and vendor ID
        assert await p2p.vdm(0, b"\x86\x80", b"\x01\x02") == b"\xa5\xa5"
        for registry, vid, data in ((1, b"\x86\x80", b"\x01"), (0, b"\x86\x80", b"\x02")):
            with pytest.raises(TdispErrorReply) as exc:
                await p2p.vdm(registry, vid, data)
            assert exc.value.code == INVALID_REQUEST
        # the default TDI does not do P2P
        nonce = await t.tdisp.lock(DEFAULT_FLAGS, 0, 0)
        await t.tdisp.start(nonce)
        with pytest.raises(TdispErrorReply) as exc:
            await t.tdisp.bind_p2p(5)
        assert exc.value.code == INVALID_REQUEST


# ---- every TDISP_ERROR path of the generic checks (table 11-6) ---------------------------


async def test_generic_errors(serve: Serve) -> None:
    device = rich_device()
    port = await serve(device)
    async with tsm(port) as t:
        cases = [
            # shorter than the header: INVALID_REQUEST, in the version asked
            (hdr(GET_STATE)[:15], error_msg(INVALID_REQUEST)),
            # a response code, an unknown code, a request no TDI supports
            (hdr(0x05), error_msg(UNSUPPORTED_REQUEST, 0x05)),
            (hdr(0x8C), error_msg(UNSUPPORTED_REQUEST, 0x8C)),
            (hdr(0x80), error_msg(UNSUPPORTED_REQUEST, 0x80)),
            # wrong sizes
            (hdr(GET_STATE) + b"\x00", error_msg(INVALID_REQUEST)),
            (hdr(GET_CAPS), error_msg(INVALID_REQUEST)),
            (lock_req()[:-1], error_msg(INVALID_REQUEST)),
            (hdr(START) + bytes(31), error_msg(INVALID_REQUEST)),
            (hdr(VDM) + b"\x00", error_msg(INVALID_REQUEST)),
            # versions: GET_TDISP_VERSION needs major 1, the rest 1.0
            (hdr(GET_VERSION, version=0x20), error_msg(VERSION_MISMATCH, version=0x20)),
            (hdr(GET_STATE, version=0x11), error_msg(VERSION_MISMATCH, version=0x11)),
            # interfaces the DSM does not host
            (hdr(GET_STATE, 0xBEEE), error_msg(INVALID_INTERFACE, function_id=0xBEEE)),
            (hdr(GET_STATE, 0x01020200), error_msg(INVALID_INTERFACE, function_id=0x01020200)),
        ]
        for request, want in cases:
            got = await t.raw(request)
            assert got == want, (request.hex(), got.hex())
        # GET_TDISP_VERSION 1.1 (a later minor): answered with the versions spoken
        assert await t.raw(hdr(GET_VERSION, version=0x11)) == hdr(0x01) + b"\x01\x10"
        # the segment: valid and matching, or valid on a TDI that does not know it
        assert (await t.raw(hdr(GET_STATE, 0x01010200)))[1] == 0x05
        assert (await t.raw(hdr(GET_STATE, 0x0107BEEF)))[1] == 0x05
    # a device without optional requests: BIND_P2P is UNSUPPORTED_REQUEST
    port = await serve(make_device())
    async with tsm(port) as t:
        assert await t.raw(hdr(BIND) + b"\x01") == error_msg(UNSUPPORTED_REQUEST, BIND)
        assert await t.raw(hdr(VDM) + b"\x00\x00") == error_msg(UNSUPPORTED_REQUEST, VDM)


# ---- faults (profile, --fault spec, MQTT all build these rules) -----------------------------


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        ("do=tdisp:refuse_lock", INVALID_DEVICE_CONFIG),
        ("do=tdisp:refuse_lock,code=INSUFFICIENT_ENTROPY", INSUFFICIENT_ENTROPY),
        ("do=tdisp:refuse_lock,code=busy", BUSY),
        ("tdisp=LOCK_INTERFACE_REQUEST,do=tdisp:refuse", UNSPECIFIED),
        ("tdisp=LOCK_INTERFACE_REQUEST,do=tdisp:refuse,code=0xff", VENDOR_SPECIFIC),
    ],
)
async def test_fault_refuse_lock(serve: Serve, spec: str, code: int) -> None:
    engine = FaultEngine([spec])
    device = make_device()
    port = await serve(device, faults=engine)
    async with tsm(port) as t:
        assert await t.state() == UNLOCKED  # other TDISP requests are not refused
        assert await t.raw(lock_req()) == error_msg(code)
        assert await t.state() == UNLOCKED
        assert engine.rules[0].fired == 1 and engine.applied_total == 1
        # without the rule the same LOCK works
        engine.clear()
        assert (await t.raw(lock_req()))[1] == 0x03


async def test_fault_wrong_nonce_and_spontaneous_error(serve: Serve) -> None:
    engine = FaultEngine(["do=tdisp:wrong_nonce,times=1"])
    device = make_device()
    port = await serve(device, faults=engine)
    async with tsm(port) as t:
        nonce = await t.tdisp.lock(DEFAULT_FLAGS, 0, OFFSET)
        assert nonce != await _nonce(device)  # the device lied about the nonce
        with pytest.raises(TdispErrorReply) as exc:
            await t.tdisp.start(nonce)
        assert exc.value.code == INVALID_NONCE
        await t.tdisp.stop()
        nonce = await t.tdisp.lock(DEFAULT_FLAGS, 0, OFFSET)  # times=1: honest now
        await t.tdisp.start(nonce)
        engine.add("tdisp=GET_DEVICE_INTERFACE_STATE,nth=2,do=tdisp:error")
        assert await t.state() == RUN
        assert await t.state() == ERROR  # the TDI failed just before the second query
        assert "fault" in tdisp_of(device).interfaces[TDI].reason


async def test_fault_report_lie(serve: Serve) -> None:
    engine = FaultEngine(["do=tdisp:report_lie"])
    port = await serve(make_device(), faults=engine)
    async with tsm(port) as t:
        await t.tdisp.lock(DEFAULT_FLAGS, 0, OFFSET)
        report = await t.tdisp.get_report()  # consistent across its two portions
        honest = expected_default_report()
        assert report.raw != honest and len(report.raw) == len(honest)
        assert report.ranges[0].first_page == ((0xFE000000 + OFFSET) >> 12) + 1
        assert report.ranges[1:] == TdiReport.parse(honest).ranges[1:]
        assert await t.state() == LOCKED  # it hides the change: no ERROR


async def test_fault_not_applicable_is_reported(serve: Serve) -> None:
    engine = FaultEngine(["on=VENDOR_DEFINED_REQUEST,do=tdisp:error,id=e1"])
    port = await serve(make_device(), faults=engine)
    async with tsm(port) as t:
        # IDE_KM requests are no TDISP messages; an unlocked TDI cannot fail
        assert await t.state() == UNLOCKED
    assert engine.rules[0].fired > 0 and engine.applied_total == 0


def test_fault_specs_and_profile_rules() -> None:
    from emulator.faults.model import FaultSpecError
    from emulator.faults.spec import parse_fault_spec

    rule = parse_fault_spec("tdisp=start_interface_request|0x87,do=drop")
    assert rule.when.codes == {RequestCode.VENDOR_DEFINED_REQUEST}
    assert rule.when.tdisp == {START, STOP}
    assert rule.spec == (
        "on=VENDOR_DEFINED_REQUEST,tdisp=START_INTERFACE_REQUEST|STOP_INTERFACE_REQUEST,do=drop"
    )
    for bad, key in (
        ("do=tdisp:nonsense", "do"),
        ("do=tdisp:error,code=BUSY", "code"),
        ("do=tdisp:refuse,code=NOPE", "code"),
        ("tdisp=GET_DIGESTS,do=drop", "tdisp"),
        ("on=CHALLENGE,do=tdisp:error", "on"),
    ):
        with pytest.raises(FaultSpecError) as exc:
            parse_fault_spec(bad)
        assert exc.value.key == key, bad
    data = profile_data()
    data["faults"] = [{"do": "tdisp:refuse_lock", "code": "BUSY"}]
    prof = profile_from_dict(data, "p.toml")
    (rule,) = prof.fault_rules()
    assert rule.action.tdisp_code == BUSY and rule.when.tdisp == {LOCK}


# ---- profile validation: errors name the file, the field and the problem -------------------


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"function_id": 0x10000}, "tdisp.interfaces[0].function_id", "less than or equal"),
        ({"mmio_ranges": [{"address": 0x1001, "pages": 1}]}, "mmio_ranges[0].address", "4 KiB"),
        (
            {"mmio_ranges": [{"address": 0, "pages": 1, "attributes": ["X"]}]},
            "attributes",
            "unknown MMIO",
        ),
        ({"lock_flags_supported": ["NO_FW_UPDATE", "no-fw-update"]}, "lock_flags", "twice"),
        ({"p2p": True}, "tdisp.interfaces[0]", "BIND_P2P"),
        (
            {"mmio_ranges": [{"address": 0, "pages": 2}, {"address": 0x1000, "pages": 1}]},
            "tdisp.interfaces[0]",
            "overlaps",
        ),
        ({"device_specific_info_hex": "zz"}, "device_specific_info_hex", "not hex"),
    ],
)
def test_profile_errors(change: dict[str, Any], field: str, problem: str) -> None:
    data = profile_data()
    data["tdisp"]["interfaces"][0].update(change)
    with pytest.raises(ProfileError) as exc:
        profile_from_dict(data, "bad.toml")
    text = str(exc.value)
    assert text.startswith("bad.toml: ") and field in text and problem in text, text


def test_profile_cross_checks() -> None:
    data = profile_data()
    data["tdisp"]["interfaces"].append(dict(data["tdisp"]["interfaces"][0]))
    with pytest.raises(ProfileError, match=r"interfaces\[1\].function_id: 0xBEEF is already"):
        profile_from_dict(data, "p.toml")
    data = profile_data()
    del data["ide_km"]
    with pytest.raises(ProfileError, match=r"ide_required: IDE cannot be required"):
        profile_from_dict(data, "p.toml")
    data = profile_data()
    data["tdisp"]["interfaces"][0]["ide_port"] = 9
    with pytest.raises(ProfileError, match=r"ide_port: port 9 is not an \[ide_km\] port"):
        profile_from_dict(data, "p.toml")
    data = profile_data()
    data["tdisp"]["dev_addr_width"] = 24
    with pytest.raises(ProfileError, match=r"mmio_ranges\[0\]: ends at .* dev_addr_width 24"):
        profile_from_dict(data, "p.toml")
    minimal = {
        "device": {"name": "d"},
        "spdm": {"versions": ["1.2"], "capabilities": []},
        "algorithms": {"base_hash": ["SHA_256"]},
        "pldm": {"tid": 3},
    }
    with pytest.raises(ProfileError, match=r"p\.toml: pldm: travels in secure sessions only"):
        profile_from_dict(minimal, "p.toml")


# ---- trace and telemetry name the messages ------------------------------------------------


def test_trace_decodes_tdisp_by_name() -> None:
    from emulator.codec.vendor import build_vendor_request, build_vendor_response, pcisig_message
    from emulator.trace import describe_message

    def vendor(build: Any, tdisp: bytes) -> bytes:
        return bytes(build(0x12, pcisig_message(1, tdisp)))

    lock = describe_message(vendor(build_vendor_request, lock_req()))
    assert lock == (
        "VENDOR_DEFINED_REQUEST 1.2 StandardID=PCISIG VendorID=0100 TDISP "
        "LOCK_INTERFACE_REQUEST 1.0 TDI=BE:1D.7 Flags=NO_FW_UPDATE|SYSTEM_CACHE_LINE_SIZE|"
        "LOCK_MSIX StreamID=0 MMIO_REPORTING_OFFSET=0xD0000000"
    )
    err = describe_message(vendor(build_vendor_response, error_msg(INVALID_NONCE)))
    assert err.endswith("TDISP TDISP_ERROR 1.0 TDI=BE:1D.7 INVALID_NONCE(0x0102) ErrorData=0x0")
    state = describe_message(vendor(build_vendor_response, hdr(0x05) + b"\x02"))
    assert state.endswith("TDISP DEVICE_INTERFACE_STATE 1.0 TDI=BE:1D.7 TDI_STATE=RUN")
    nonce = describe_message(vendor(build_vendor_request, hdr(START) + bytes(range(32))))
    assert "START_INTERFACE_NONCE=(32 bytes)" in nonce and "1f" not in nonce
    ide = describe_message(
        bytes(
            build_vendor_request(
                0x12, pcisig_message(0, bytes.fromhex("02000005002301") + bytes(40))
            )
        )
    )
    assert ide.endswith("IDE_KM KEY_PROG StreamID=5 KeySubStream=K1|TX|CPL Port=1")
    assert tdisp_in_vendor(vendor(build_vendor_request, hdr(STOP))) == hdr(STOP)


async def test_trace_and_telemetry_of_a_live_session(serve: Serve) -> None:
    import io

    from emulator.control.telemetry import event_json
    from emulator.trace import Tracer

    device = make_device()
    stream = io.StringIO()
    tracer = Tracer(stream)
    events: list[Any] = []
    binding = get_binding("doe")
    srv = SpdmServer(
        RunOptions(host="127.0.0.1", port=0),
        binding,
        lambda number, peer: SpdmConnection(
            device, binding, number=number, peer=peer, observers=[tracer, events.append]
        ),
    )
    await srv.start()
    try:
        async with tsm(srv.port) as t:
            await t.tdisp.get_state()
    finally:
        await srv.stop()
    text = stream.getvalue()
    assert "TDISP GET_DEVICE_INTERFACE_STATE 1.0 TDI=BE:1D.7" in text
    assert "TDISP DEVICE_INTERFACE_STATE 1.0 TDI=BE:1D.7 TDI_STATE=CONFIG_UNLOCKED" in text
    last = event_json(events[-1], 1, 0.0)
    assert last["request"]["tdisp"] == "GET_DEVICE_INTERFACE_STATE"
    assert last["response"]["tdisp"] == "DEVICE_INTERFACE_STATE"


# ---- MQTT: state changes on <base>/device, the tdisp command, faults ------------------------


@pytest.mark.mqtt
async def test_mqtt_tdisp(mqtt_broker: Broker) -> None:
    from tests.test_control import Running, Watcher

    async with Running(mqtt_broker) as run:
        await run.plane.wait_connected()
        async with Watcher(mqtt_broker) as w:
            device = run.emulator.device
            async with tsm(run.emulator.port) as t:
                nonce = await t.tdisp.lock(DEFAULT_FLAGS, 0, OFFSET)
                await until(lambda: any(n["what"] == "tdisp" for n in w.of("device")), "a note")
                note = next(n for n in w.of("device") if n["what"] == "tdisp")["detail"]
                assert (note["change"], note["function_id"], note["from"], note["to"]) == (
                    "state",
                    "0xBEEF",
                    "CONFIG_UNLOCKED",
                    "CONFIG_LOCKED",
                )
                assert note["connection"] == 1 and "nonce" not in str(note).lower()
                reply = await w.command("tdisp", {"op": "list"}, cid="l")
                (tdi,) = reply["result"]["interfaces"]
                assert tdi["state"] == "CONFIG_LOCKED" and tdi["locked_by"]["connection"] == 1
                await until(
                    lambda: (w.state or {}).get("tdisp", [{}])[0].get("state") == "CONFIG_LOCKED",
                    "the TDI state in the retained state",
                )
                # a spontaneous transition to ERROR, from the control plane
                reply = await w.command("tdisp", {"op": "error", "function_id": "0xBEEF"}, cid="e")
                assert reply["ok"] and reply["result"]["changed"] == ["0xBEEF"]
                assert await t.state() == ERROR
                with pytest.raises(TdispErrorReply):
                    await t.tdisp.start(nonce)
                # a fault rule by MQTT: LOCK refused
                await t.tdisp.stop()
                reply = await w.command(
                    "faults", {"op": "add", "spec": "do=tdisp:refuse_lock,code=BUSY"}, cid="f"
                )
                assert reply["ok"], reply
                assert await t.raw(lock_req()) == error_msg(BUSY)
                run.emulator.faults.clear()
                await t.tdisp.lock(DEFAULT_FLAGS, 0, OFFSET)
                reply = await w.command("tdisp", {"op": "flr"}, cid="r")
                assert reply["result"]["changed"] == ["0xBEEF"]
                reply = await w.command("reset", {}, cid="x")
                assert reply["ok"] and device.tdisp.interfaces[TDI].state == UNLOCKED  # type: ignore[union-attr]
                for bad, problem in (
                    ({"op": "nope"}, "op:"),
                    ({"op": "error", "function_id": "0x1"}, "no TDI with function ID 0x0001"),
                    ({"op": "error", "function_id": "zz"}, "not a number"),
                    ({"op": "list", "function_id": 1}, "not for op list"),
                ):
                    reply = await w.command("tdisp", bad, cid="b")
                    assert not reply["ok"] and problem in reply["error"], reply
            await until(
                lambda: any(
                    n["what"] == "tdisp"
                    and n["detail"]["change"] == "state"
                    and n["detail"]["to"] == "ERROR"
                    for n in w.of("device")
                ),
                "the ERROR transition on <base>/device",
            )


def test_control_command_without_tdisp() -> None:
    from emulator.control.commands import CommandProcessor

    proc = CommandProcessor(make_device(tdisp=None), None)
    reply = proc.handle("tdisp", b'{"op": "list"}')
    assert not reply["ok"] and "no TDISP interfaces" in reply["error"]


# ---- robustness: any TDISP message gets a TDISP answer, never an exception -----------------

_FUZZ_DEVICE: list[Device] = []


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    version=st.sampled_from([0x10, 0x11, 0x20, 0x00, 0xFF]),
    code=st.integers(0x00, 0xFF) | st.sampled_from(list(range(0x81, 0x8C)) * 4),
    function_id=st.sampled_from([TDI, 0x0100, 0x0200, 0x01010200, 0xFFFFFFFF]),
    payload=st.binary(max_size=40),
    cut=st.integers(0, 20),
)
def test_any_tdisp_message_is_answered(
    version: int, code: int, function_id: int, payload: bytes, cut: int
) -> None:
    from emulator.device.random import SeededRandom
    from emulator.responder import Responder
    from emulator.responder.base import Request
    from emulator.responder.vendor_defined.tdisp import handle

    if not _FUZZ_DEVICE:
        _FUZZ_DEVICE.append(rich_device())
    device = _FUZZ_DEVICE[0]
    r = Responder(device, connection_number=1)
    msg = bytes((version, code, 0, 0)) + struct.pack("<I", function_id) + bytes(8) + payload
    if cut:
        msg = msg[: 16 - cut]  # shorter than the header
    req = Request(b"", 0x12, 0xFE, 0, 0, 7, device, SeededRandom(1, "fuzz"))
    answer = handle(r, req, tdisp_of(device), msg)
    assert len(answer) >= 16 and answer[2:4] == b"\x00\x00"
    if answer[1] == TDISP_ERROR:
        assert len(answer) == 24
        assert struct.unpack_from("<I", answer, 16)[0] in (
            INVALID_REQUEST, UNSUPPORTED_REQUEST, VERSION_MISMATCH, INVALID_INTERFACE,
            INVALID_INTERFACE_STATE, INVALID_NONCE,
        )  # fmt: skip
    else:
        assert answer[1] == code - 0x80 and answer[0] == V10
    for tdi in tdisp_of(device).interfaces.values():
        assert tdi.state in TdiState


async def test_faults_from_profile_and_run_options() -> None:
    """The app builds the engine: a profile [[faults]] rule and a --fault SPEC (RunOptions)."""
    from emulator.app import Emulator

    data = profile_data()
    data["faults"] = [{"do": "tdisp:refuse_lock", "code": "BUSY", "times": 1}]
    prof = profile_from_dict(data, "p.toml")
    prof._base_dir = make_device().profile.base_dir
    for m in prof.measurements:
        m.load_file(prof._base_dir)
    options = RunOptions(
        profile=prof, port=0, faults=["tdisp=START_INTERFACE_REQUEST,do=tdisp:refuse"]
    )
    async with Emulator(options) as emu:
        async with tsm(emu.port) as t:
            assert await t.raw(lock_req()) == error_msg(BUSY)  # the profile's rule, once
            nonce = await t.tdisp.lock(DEFAULT_FLAGS, 0, OFFSET)
            assert await t.raw(hdr(START) + nonce) == error_msg(UNSPECIFIED)  # the SPEC's
            assert await t.state() == LOCKED
        assert [r.origin for r in emu.faults.rules] == ["profile", "api"]
