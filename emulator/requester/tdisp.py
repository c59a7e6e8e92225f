"""A TDISP requester (the TSM side, PCIe 6.1 chapter 11) over the project's requester,
inside a secure session: GET_TDISP_VERSION, GET_TDISP_CAPABILITIES, LOCK_INTERFACE_REQUEST,
GET_DEVICE_INTERFACE_REPORT (in portions), GET_DEVICE_INTERFACE_STATE,
START_INTERFACE_REQUEST, STOP_INTERFACE_REQUEST and the optional requests.

The checks are those of DMTF spdm-emu's ``pci_tdisp_requester_lib`` and more: every
answer is a VENDOR_DEFINED_RESPONSE for PCI-SIG with protocol 01h, TDISPVersion 1.0, the
message type that answers the request (TDISP_ERROR raises :class:`TdispErrorReply`), the
INTERFACE_ID asked about with its reserved bytes zero, and the exact size of the response;
report portions must add up (PORTION_LENGTH <= LENGTH, the same total in every portion)
and the whole report must parse (MMIO_RANGE_COUNT and DEVICE_SPECIFIC_INFO_LEN).  Layouts
are written here byte by byte with ``struct``, not with the responder's codec.

:func:`tdisp_session_flow` is what ``spdm-emulator probe --tdisp`` runs: version,
capabilities, state (a TDI found locked or in ERROR is stopped first), LOCK (with the flags
the device supports), the report, START with the nonce of LOCK, state, STOP, state.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Any

from emulator.errors import RequesterError
from emulator.requester.requester import Requester
from emulator.requester.vendor import PCISIG, PCISIG_VENDOR_ID, vendor_defined

TDISP_PROTOCOL = 0x01
V10 = 0x10
TDISP_ERROR = 0x7F
(
    GET_TDISP_VERSION,
    GET_TDISP_CAPABILITIES,
    LOCK_INTERFACE_REQUEST,
    GET_DEVICE_INTERFACE_REPORT,
    GET_DEVICE_INTERFACE_STATE,
    START_INTERFACE_REQUEST,
    STOP_INTERFACE_REQUEST,
    BIND_P2P_STREAM_REQUEST,
    UNBIND_P2P_STREAM_REQUEST,
    SET_MMIO_ATTRIBUTE_REQUEST,
    VDM_REQUEST,
) = range(0x81, 0x8C)
#: request names (PCIe 6.1 table 11-3)
REQUEST_NAMES = {
    GET_TDISP_VERSION: "GET_TDISP_VERSION",
    GET_TDISP_CAPABILITIES: "GET_TDISP_CAPABILITIES",
    LOCK_INTERFACE_REQUEST: "LOCK_INTERFACE_REQUEST",
    GET_DEVICE_INTERFACE_REPORT: "GET_DEVICE_INTERFACE_REPORT",
    GET_DEVICE_INTERFACE_STATE: "GET_DEVICE_INTERFACE_STATE",
    START_INTERFACE_REQUEST: "START_INTERFACE_REQUEST",
    STOP_INTERFACE_REQUEST: "STOP_INTERFACE_REQUEST",
    BIND_P2P_STREAM_REQUEST: "BIND_P2P_STREAM_REQUEST",
    UNBIND_P2P_STREAM_REQUEST: "UNBIND_P2P_STREAM_REQUEST",
    SET_MMIO_ATTRIBUTE_REQUEST: "SET_MMIO_ATTRIBUTE_REQUEST",
    VDM_REQUEST: "VDM_REQUEST",
}
#: TDI_STATE names (PCIe 6.1 table 11-17)
STATES = {0: "CONFIG_UNLOCKED", 1: "CONFIG_LOCKED", 2: "RUN", 3: "ERROR"}
#: ERROR_CODE names (PCIe 6.1 table 11-27)
ERROR_NAMES = {
    0x0001: "INVALID_REQUEST",
    0x0003: "BUSY",
    0x0004: "INVALID_INTERFACE_STATE",
    0x0005: "UNSPECIFIED",
    0x0007: "UNSUPPORTED_REQUEST",
    0x0041: "VERSION_MISMATCH",
    0x00FF: "VENDOR_SPECIFIC_ERROR",
    0x0101: "INVALID_INTERFACE",
    0x0102: "INVALID_NONCE",
    0x0103: "INSUFFICIENT_ENTROPY",
    0x0104: "INVALID_DEVICE_CONFIGURATION",
}
LOCK_FLAG_NAMES = {
    0x01: "NO_FW_UPDATE",
    0x02: "SYSTEM_CACHE_LINE_SIZE",
    0x04: "LOCK_MSIX",
    0x08: "BIND_P2P",
    0x10: "ALL_REQUEST_REDIRECT",
}
#: expected payload size of each response (None: variable)
_RESPONSE_SIZES: dict[int, int | None] = {
    0x01: None,
    0x02: 28,
    0x03: 32,
    0x04: None,
    0x05: 1,
    0x06: 0,
    0x07: 0,
    0x08: 0,
    0x09: 0,
    0x0A: 0,
    0x0B: None,
}


class TdispErrorReply(RequesterError):
    """The device answered TDISP_ERROR."""

    def __init__(self, request_type: int, code: int, data: int, extended: bytes) -> None:
        self.request_type = request_type
        self.code = code
        self.data = data
        self.extended = extended
        self.error_name = ERROR_NAMES.get(code, f"0x{code:04X}")
        name = REQUEST_NAMES.get(request_type, f"TDISP request 0x{request_type:02X}")
        super().__init__(f"{name} answered TDISP_ERROR {self.error_name} (data 0x{data:X})")


@dataclass(frozen=True)
class TdispCaps:
    """TDISP_CAPABILITIES as received."""

    dsm_caps: int
    req_msgs_supported: bytes
    lock_interface_flags_supported: int
    dev_addr_width: int
    num_req_this: int
    num_req_all: int

    def supports(self, code: int) -> bool:
        bit = code - 0x80
        return 0 <= bit < 128 and bool(self.req_msgs_supported[bit // 8] >> (bit % 8) & 1)


@dataclass(frozen=True)
class Range:
    """One MMIO_RANGE of a report."""

    first_page: int
    pages: int
    attributes: int
    range_id: int


@dataclass(frozen=True)
class TdiReport:
    """A whole TDI report, parsed (PCIe 6.1 table 11-15)."""

    raw: bytes
    interface_info: int
    msix_message_control: int
    lnr_control: int
    tph_control: int
    ranges: tuple[Range, ...]
    device_specific_info: bytes
    #: how many DEVICE_INTERFACE_REPORT responses it took
    portions: int = 1

    @classmethod
    def parse(cls, raw: bytes, portions: int = 1) -> TdiReport:
        if len(raw) < 20:
            raise RequesterError(f"TDI report is {len(raw)} bytes, at least 20")
        info, _rsvd, msix, lnr, tph, count = struct.unpack_from("<HHHHII", raw)
        end = 16 + 16 * count
        if len(raw) < end + 4:
            raise RequesterError(f"TDI report: {count} MMIO ranges need {end + 4} bytes")
        ranges = tuple(Range(*struct.unpack_from("<QIHH", raw, 16 + 16 * i)) for i in range(count))
        (dlen,) = struct.unpack_from("<I", raw, end)
        if len(raw) != end + 4 + dlen:
            raise RequesterError(
                f"TDI report: DEVICE_SPECIFIC_INFO_LEN {dlen} but {len(raw) - end - 4} bytes"
            )
        if info & 0xFFE0:
            raise RequesterError(f"TDI report: reserved INTERFACE_INFO bits 0x{info & 0xFFE0:X}")
        for i, r in enumerate(ranges):
            if r.attributes & 0xFFF0:
                raise RequesterError(f"TDI report: reserved attribute bits in MMIO range {i}")
        return cls(raw, info, msix, lnr, tph, ranges, raw[end + 4 :], portions)


@dataclass
class TdispRequester:
    """TDISP messages for one TDI (``function_id``) inside session ``session_id``."""

    req: Requester
    session_id: int
    function_id: int
    #: every (request, response) TDISP message pair, for tests and reports
    log: list[tuple[bytes, bytes]] = field(default_factory=list)

    def build(self, message_type: int, payload: bytes = b"", *, version: int = V10) -> bytes:
        """A TDISP message for this TDI: header (reserved bytes zero) + payload."""
        return (
            bytes((version, message_type, 0, 0))
            + struct.pack("<I", self.function_id)
            + bytes(8)
            + payload
        )

    async def raw(self, message: bytes) -> bytes:
        """Send one TDISP message as given; the TDISP answer (header included)."""
        answer = await vendor_defined(
            self.req,
            PCISIG,
            PCISIG_VENDOR_ID,
            bytes((TDISP_PROTOCOL,)) + message,
            session_id=self.session_id,
        )
        if not answer or answer[0] != TDISP_PROTOCOL:
            raise RequesterError(f"PCI-SIG answer with protocol {answer[:1].hex()}, not TDISP")
        self.log.append((message, answer[1:]))
        return answer[1:]

    async def exchange(self, message_type: int, payload: bytes = b"") -> bytes:
        """One request -> the response payload, after the header and size checks."""
        rsp = await self.raw(self.build(message_type, payload))
        if len(rsp) < 16:
            raise RequesterError(f"TDISP answer is {len(rsp)} bytes, shorter than the header")
        if rsp[0] != V10:
            raise RequesterError(f"TDISP answer with TDISPVersion 0x{rsp[0]:02X}")
        fid, reserved = struct.unpack_from("<I", rsp, 4)[0], rsp[8:16]
        if fid != self.function_id or reserved != bytes(8):
            raise RequesterError(
                f"TDISP answer for INTERFACE_ID {rsp[4:16].hex()}, asked 0x{self.function_id:08X}"
            )
        if rsp[1] == TDISP_ERROR:
            if len(rsp) < 24:
                raise RequesterError(f"TDISP_ERROR is {len(rsp)} bytes, at least 24")
            code, data = struct.unpack_from("<II", rsp, 16)
            raise TdispErrorReply(message_type, code, data, rsp[24:])
        if rsp[1] != message_type - 0x80:
            raise RequesterError(
                f"TDISP request 0x{message_type:02X} answered with message type 0x{rsp[1]:02X}"
            )
        payload_out = rsp[16:]
        want = _RESPONSE_SIZES[rsp[1]]
        if want is not None and len(payload_out) != want:
            raise RequesterError(
                f"TDISP response 0x{rsp[1]:02X} has {len(payload_out)} payload bytes, {want}"
            )
        return payload_out

    async def get_version(self) -> list[int]:
        p = await self.exchange(GET_TDISP_VERSION)
        if not p or p[0] == 0 or len(p) != 1 + p[0]:
            raise RequesterError(f"TDISP_VERSION payload {p.hex()}: count and entries disagree")
        versions = list(p[1:])
        if V10 not in versions:
            raise RequesterError(f"TDISP_VERSION lists {versions}, not 1.0")
        return versions

    async def get_capabilities(self, tsm_caps: int = 0) -> TdispCaps:
        p = await self.exchange(GET_TDISP_CAPABILITIES, struct.pack("<I", tsm_caps))
        caps = TdispCaps(*struct.unpack("<I16sH3xBBB", p))
        for code in range(0x81, 0x88):
            if not caps.supports(code):
                raise RequesterError(f"REQ_MSGS_SUPPORTED lacks the required request 0x{code:02X}")
        return caps

    async def get_state(self) -> int:
        return (await self.exchange(GET_DEVICE_INTERFACE_STATE))[0]

    async def lock(
        self,
        flags: int = 0,
        stream_id: int = 0,
        mmio_reporting_offset: int = 0,
        bind_p2p_address_mask: int = 0,
    ) -> bytes:
        """LOCK_INTERFACE_REQUEST; the START_INTERFACE_NONCE."""
        payload = struct.pack(
            "<HBxqQ", flags, stream_id, mmio_reporting_offset, bind_p2p_address_mask
        )
        return await self.exchange(LOCK_INTERFACE_REQUEST, payload)

    async def report_portion(self, offset: int, length: int) -> tuple[bytes, int]:
        """One DEVICE_INTERFACE_REPORT: (the portion, REMAINDER_LENGTH)."""
        p = await self.exchange(GET_DEVICE_INTERFACE_REPORT, struct.pack("<HH", offset, length))
        if len(p) < 4:
            raise RequesterError(f"DEVICE_INTERFACE_REPORT payload is {len(p)} bytes")
        portion, remainder = struct.unpack_from("<HH", p)
        if portion > length:
            raise RequesterError(f"PORTION_LENGTH {portion} > LENGTH {length}")
        if len(p) != 4 + portion:
            raise RequesterError(f"PORTION_LENGTH {portion} but {len(p) - 4} report bytes")
        if portion == 0 and remainder:
            raise RequesterError("an empty portion with report bytes remaining")
        return p[4:], remainder

    async def get_report(self, portion: int = 0x40) -> TdiReport:
        """The whole report, read ``portion`` bytes at a time (as libspdm's requester)."""
        data = b""
        total: int | None = None
        count = 0
        while True:
            length = portion if total is None else min(portion, total - len(data))
            chunk, remainder = await self.report_portion(len(data), length)
            count += 1
            if total is None:
                total = len(chunk) + remainder
            elif len(data) + len(chunk) + remainder != total:
                raise RequesterError(
                    f"report portion at {len(data)}: {len(chunk)} + {remainder} bytes do not "
                    f"add up to the first portion's total {total}"
                )
            data += chunk
            if remainder == 0:
                return TdiReport.parse(data, count)
            if count > 0x10000:
                raise RequesterError("the device never finishes the report")

    async def start(self, nonce: bytes) -> None:
        if len(nonce) != 32:
            raise RequesterError("START_INTERFACE_NONCE is 32 bytes")
        await self.exchange(START_INTERFACE_REQUEST, nonce)

    async def stop(self) -> None:
        await self.exchange(STOP_INTERFACE_REQUEST)

    async def bind_p2p(self, stream_id: int) -> None:
        await self.exchange(BIND_P2P_STREAM_REQUEST, bytes((stream_id,)))

    async def unbind_p2p(self, stream_id: int) -> None:
        await self.exchange(UNBIND_P2P_STREAM_REQUEST, bytes((stream_id,)))

    async def set_mmio_attribute(
        self, first_page: int, pages: int, range_id: int, non_tee: bool
    ) -> None:
        attrs = 0x04 if non_tee else 0
        await self.exchange(
            SET_MMIO_ATTRIBUTE_REQUEST, struct.pack("<QIHH", first_page, pages, attrs, range_id)
        )

    async def vdm(self, registry_id: int, vendor_id: bytes, data: bytes) -> bytes:
        """VDM_REQUEST -> the vendor data of VDM_RESPONSE (registry and vendor ID checked)."""
        body = bytes((registry_id, len(vendor_id))) + vendor_id + data
        p = await self.exchange(VDM_REQUEST, body)
        head = bytes((registry_id, len(vendor_id))) + vendor_id
        if not p.startswith(head):
            raise RequesterError(f"VDM_RESPONSE for {p[: len(head)].hex()}, asked {head.hex()}")
        return p[len(head) :]


def _flags_text(flags: int) -> list[str]:
    return [name for bit, name in LOCK_FLAG_NAMES.items() if flags & bit]


async def tdisp_session_flow(
    req: Requester,
    session_id: int,
    function_id: int,
    *,
    stream_id: int = 0,
    mmio_reporting_offset: int = 0,
    portion: int = 0x40,
) -> dict[str, Any]:
    """Lock, attest (the report), start and stop one TDI as a TSM does; a JSON-able report
    of what the device answered.  RequesterError (TdispErrorReply) on a failure."""
    t = TdispRequester(req, session_id, function_id)
    out: dict[str, Any] = {"function_id": f"0x{function_id:04X}"}
    out["versions"] = [f"{v >> 4}.{v & 0xF}" for v in await t.get_version()]
    caps = await t.get_capabilities()
    out["capabilities"] = {
        "lock_flags_supported": _flags_text(caps.lock_interface_flags_supported),
        "requests": [f"0x{c:02X}" for c in range(0x81, 0x8C) if caps.supports(c)],
        "dev_addr_width": caps.dev_addr_width,
        "num_req_this": caps.num_req_this,
        "num_req_all": caps.num_req_all,
    }
    first = STATES.get(await t.get_state(), "?")
    if first != "CONFIG_UNLOCKED":
        # left locked or failed by someone else: a TSM stops the TDI before it locks it
        out["initial_state"] = first
        await t.stop()
    states = [STATES.get(await t.get_state(), "?")]
    flags = caps.lock_interface_flags_supported & ~0x08  # BIND_P2P needs an address mask
    nonce = await t.lock(flags, stream_id, mmio_reporting_offset)
    states.append(STATES.get(await t.get_state(), "?"))
    report = await t.get_report(portion)
    out["report"] = {
        "bytes": len(report.raw),
        "portions": report.portions,
        "interface_info": f"0x{report.interface_info:04X}",
        "mmio_ranges": [
            {
                "first_page": f"0x{r.first_page:X}",
                "pages": r.pages,
                "attributes": f"0x{r.attributes:X}",
                "range_id": r.range_id,
            }
            for r in report.ranges
        ],
        "device_specific_info": report.device_specific_info.hex(),
    }
    await t.start(nonce)
    states.append(STATES.get(await t.get_state(), "?"))
    await t.stop()
    states.append(STATES.get(await t.get_state(), "?"))
    out["states"] = states
    out["lock_flags"] = _flags_text(flags)
    want = ["CONFIG_UNLOCKED", "CONFIG_LOCKED", "RUN", "CONFIG_UNLOCKED"]
    if states != want:
        raise RequesterError(f"TDI states {states}, expected {want}")
    return out


#: IDE sub-streams a default stream needs keys for: (TX?, sub-stream PR/NPR/CPL)
_SUB_STREAMS = [(tx, sub) for tx in (False, True) for sub in (0, 1, 2)]


async def probe_tdisp(
    req: Requester,
    report: dict[str, Any],
    *,
    function_id: int,
    binding: str,
    stream_id: int = 0,
    ide_port: int = 0,
) -> None:
    """``probe --tdisp``: open a secure session (KEY_EXCHANGE with the slot-0 chain the
    probe read, or PSK with spdm-emu's test key), program IDE keys for every sub-stream
    of ``stream_id`` on ``ide_port`` when the device has IDE_KM, run
    :func:`tdisp_session_flow`, stop the keys and end the session.  The result goes to
    ``report["tdisp"]``; ``ok`` False and ``error`` on a failure."""
    from emulator.codec.constants import ResponderCap
    from emulator.requester.errors import SpdmErrorReply
    from emulator.requester.identity import flow_for
    from emulator.requester.session import open_session, psk_exchange
    from emulator.requester.vendor import IdeKmRequester

    if not report.get("ok"):
        return
    out: dict[str, Any] = {}
    report["tdisp"] = out
    flags = req.neg.rsp_flags
    try:
        if flags & ResponderCap.KEY_EX_CAP and flags & ResponderCap.CERT_CAP:
            flow = flow_for(req)
            if 0 not in flow.chains:
                await flow.get_digests()
                await flow.get_certificate(0)
            session = await open_session(req, peer_chain=flow.chains[0].chain, binding=binding)
            out["session"] = "KEY_EXCHANGE"
        elif flags & (ResponderCap.PSK_CAP | ResponderCap.PSK_CAP_WITH_CONTEXT):
            session = await psk_exchange(
                req, psk=b"TestPskData\x00", hint=b"TestPskHint\x00", binding=binding
            )
            out["session"] = "PSK_EXCHANGE"
        else:
            raise RequesterError("the device offers no secure session (KEY_EX_CAP, PSK_CAP)")
        sid = session.session_id
        out["session_id"] = f"0x{sid:08X}"
        ide = IdeKmRequester(req, sid)
        programmed = False
        try:
            await ide.query(ide_port)
        except SpdmErrorReply:
            out["ide"] = "the device has no IDE_KM (or not that port); no keys programmed"
        else:
            for tx, sub in _SUB_STREAMS:
                kss = sub << 4 | (0x02 if tx else 0)
                status = await ide.key_prog(stream_id, kss, ide_port, os.urandom(32), bytes(8))
                if status:
                    raise RequesterError(f"KEY_PROG answered KP_ACK status {status}")
                await ide.set_go(stream_id, kss, ide_port)
            programmed = True
            out["ide"] = f"stream {stream_id} keyed on port {ide_port} (6 sub-streams)"
        out.update(await tdisp_session_flow(req, sid, function_id, stream_id=stream_id))
        if programmed:
            for tx, sub in _SUB_STREAMS:
                await ide.set_stop(stream_id, sub << 4 | (0x02 if tx else 0), ide_port)
        await session.end_session()
    except RequesterError as exc:
        report.update(ok=False, error=f"tdisp: {exc}")


__all__ = [
    "STATES",
    "TdiReport",
    "TdispCaps",
    "TdispErrorReply",
    "TdispRequester",
    "probe_tdisp",
    "tdisp_session_flow",
]
