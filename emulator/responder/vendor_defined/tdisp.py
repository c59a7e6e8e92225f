"""PCI-SIG TDISP responder (PCIe 6.1 chapter 11, TDISP 1.0) over VENDOR_DEFINED_REQUEST,
protocol ID 01h: the Device Security Manager (DSM) side of TEE-I/O.

State lives on the :class:`~emulator.device.model.Device` (:class:`TdispState`): one
:class:`Tdi` per ``[[tdisp.interfaces]]`` entry, with its TDISP state machine (PCIe 6.1
11.2, figure 11-5), shared by every connection and session of the device as a real DSM
keeps it.  Transitions:

* CONFIG_UNLOCKED -> CONFIG_LOCKED: LOCK_INTERFACE_REQUEST (11.3.8), which binds the TDI to
  the SPDM session it arrived in, checks the default IDE stream (keys for every sub-stream
  programmed over *that* session, when IDE is required), generates the
  START_INTERFACE_NONCE and freezes the TDI report (MMIO ranges with the TSM's
  MMIO_REPORTING_OFFSET added; the MSI-X table/PBA only when LOCK_MSIX locked them);
* CONFIG_LOCKED -> RUN: START_INTERFACE_REQUEST with the nonce of the LOCK response
  (11.3.14; a wrong nonce: INVALID_NONCE and the TDI stays locked; the nonce is used once);
* CONFIG_LOCKED / RUN -> ERROR: the locking session ends (END_SESSION, GET_VERSION, a
  heartbeat timeout, the connection closing: 11.4.5), the bound IDE stream becomes
  insecure (K_SET_STOP of one of its keys, 11.2), a function level reset (11.4.9) or any
  other fault (MQTT ``tdisp`` command, fault rule ``do=tdisp:error``);
* any state -> CONFIG_UNLOCKED: STOP_INTERFACE_REQUEST (11.3.16), and a conventional reset
  (11.4.8).

Every request is checked in this order, each failure answered with TDISP_ERROR
(11.3.24): shorter than the 16-byte header: INVALID_REQUEST; a code that is no request
(or a request no TDI of the device supports): UNSUPPORTED_REQUEST (ERROR_DATA = the
code); a size other than the message's: INVALID_REQUEST; TDISPVersion not 1.0 (major 1
for GET_TDISP_VERSION): VERSION_MISMATCH; an INTERFACE_ID the DSM does not host (or a
valid Requester Segment that is not the TDI's): INVALID_INTERFACE; then the message's own
rules (table 11-3 "Legal TDISP states": INVALID_INTERFACE_STATE).  TDISP messages outside
a secure session are not TDISP messages (11.2.2: "must not be used"): ERROR(SessionRequired)
from SPDM 1.2, UnexpectedRequest before, as IDE_KM key programming.

Faults (:class:`TdispFault` in the request, from ``do=tdisp:KIND`` rules): ``refuse`` /
``refuse_lock`` answer TDISP_ERROR(code) without a state change, ``error`` moves the TDI
to ERROR before the request is handled, ``wrong_nonce`` returns a LOCK nonce that is not
the one START is checked against, ``report_lie`` changes the first reported MMIO range
after LOCK without leaving CONFIG_LOCKED/RUN (a device that hides a configuration change).
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import TYPE_CHECKING, Any

from emulator.codec.constants import ErrorCode
from emulator.codec.tdisp import (
    HEADER_SIZE,
    LOCK_FLAGS_DEFINED,
    NONCE_SIZE,
    PAGE_SHIFT,
    REQUEST_SIZES,
    REQUIRED_REQUESTS,
    RESPONSE_FOR,
    SET_MMIO_MUST_BE_ZERO,
    TDISP_VERSION_10,
    Capabilities,
    InterfaceId,
    InterfaceInfo,
    InterfaceReport,
    LockFlags,
    LockParams,
    MmioAttr,
    MmioRange,
    TdispError,
    TdispErrorCode,
    TdispRequest,
    TdispResponse,
    TdiState,
    VdmBody,
    function_id_text,
    message,
    message_name,
    req_msgs_bitmap,
)
from emulator.codec.vendor import SubStream
from emulator.errors import CodecError
from emulator.responder.base import Request, SpdmErrorResponse
from emulator.responder.vendor_defined.ide_km import ide_state

if TYPE_CHECKING:
    from emulator.profiles import Profile, TdispInterface, TdispSection
    from emulator.responder.core import Responder

log = logging.getLogger("emulator.responder.tdisp")

#: the event name of :meth:`Device.notify` for TDISP changes
EVENT = "tdisp"
#: the TDISP versions this DSM speaks (VERSION_NUM_ENTRY)
VERSIONS = (TDISP_VERSION_10,)
PAGE = 1 << PAGE_SHIFT

Notify = Callable[[str, object], None]
#: a session of the device: (connection number, SessionID)
SessionKey = tuple[int, int]


class TdispFaultKind(Enum):
    """What a TDISP fault rule makes the DSM do wrong (``do=tdisp:KIND``)."""

    #: TDISP_ERROR(code) instead of handling the request (state unchanged)
    REFUSE = "refuse"
    #: the same, for LOCK_INTERFACE_REQUEST only (default code INVALID_DEVICE_CONFIGURATION)
    REFUSE_LOCK = "refuse_lock"
    #: the TDI moves to ERROR before the request is handled (a spontaneous transition)
    ERROR = "error"
    #: LOCK_INTERFACE_RESPONSE carries a nonce that START is not checked against
    WRONG_NONCE = "wrong_nonce"
    #: the reported MMIO layout changes after LOCK while the TDI stays locked
    REPORT_LIE = "report_lie"


@dataclass(slots=True)
class TdispFault:
    """One TDISP fault of an exchange; the responder fills ``applied`` when it acted
    (None: nothing in this request could carry it) so the engine can report it."""

    kind: TdispFaultKind
    code: int = TdispErrorCode.INVALID_DEVICE_CONFIGURATION
    applied: str | None = None


class TdispReply(Exception):
    """A TDISP_ERROR for the request being handled (raised inside this module)."""

    def __init__(self, code: TdispErrorCode, reason: str, data: int = 0) -> None:
        super().__init__(f"{code.name}: {reason}")
        self.code = code
        self.reason = reason
        self.data = data


# ---- device-wide state ------------------------------------------------------------------


@dataclass
class Tdi:
    """One TEE Device Interface and its TDISP state (PCIe 6.1 11.2)."""

    cfg: TdispInterface
    state: TdiState = TdiState.CONFIG_UNLOCKED
    #: START_INTERFACE_NONCE of the last LOCK (None: none valid)
    nonce: bytes | None = field(default=None, repr=False)
    lock: LockParams | None = None
    #: the session that locked the TDI
    owner: SessionKey | None = None
    #: the frozen TDI report and its MMIO ranges (as reported, offset added)
    report: bytes = b""
    ranges: tuple[MmioRange, ...] = ()
    #: current IS_NON_TEE_MEM of the updatable ranges (index into ``ranges``)
    non_tee: dict[int, bool] = field(default_factory=dict)
    p2p_streams: set[int] = field(default_factory=set)
    tsm_caps: int = 0
    report_lied: bool = False
    #: why the TDI is in ERROR
    reason: str = ""

    @property
    def function_id(self) -> int:
        return self.cfg.function_id

    @property
    def name(self) -> str:
        return f"TDI {function_id_text(self.cfg.function_id)}"

    @property
    def locked(self) -> bool:
        return self.state in (TdiState.CONFIG_LOCKED, TdiState.RUN)

    def clear_lock(self) -> None:
        """Forget what LOCK bound and what RUN used (the TDI's TVM data is scrubbed)."""
        self.nonce = None
        self.lock = None
        self.owner = None
        self.report = b""
        self.ranges = ()
        self.non_tee.clear()
        self.p2p_streams.clear()
        self.report_lied = False

    def requests(self, vdm: bool) -> frozenset[int]:
        """The request codes this TDI supports (REQ_MSGS_SUPPORTED)."""
        codes = set(REQUIRED_REQUESTS)
        if self.cfg.p2p:
            codes |= {TdispRequest.BIND_P2P_STREAM_REQUEST, TdispRequest.UNBIND_P2P_STREAM_REQUEST}
        if any(r.attribute_bits & MmioAttr.IS_MEM_ATTR_UPDATABLE for r in self.cfg.mmio_ranges):
            codes.add(TdispRequest.SET_MMIO_ATTRIBUTE_REQUEST)
        if vdm:
            codes.add(TdispRequest.VDM_REQUEST)
        return frozenset(codes)

    def snapshot(self) -> dict[str, Any]:
        """The TDI as the control plane shows it (no nonce)."""
        out: dict[str, Any] = {
            "function_id": f"0x{self.cfg.function_id:04X}",
            "interface": function_id_text(self.cfg.function_id),
            "state": self.state.name,
        }
        if self.owner is not None:
            out["locked_by"] = {"connection": self.owner[0], "session": f"0x{self.owner[1]:08X}"}
        if self.lock is not None:
            out["lock_flags"] = _flag_names(LockFlags, self.lock.flags)
            out["default_stream"] = self.lock.default_stream_id
        if self.p2p_streams:
            out["p2p_streams"] = sorted(self.p2p_streams)
        if self.non_tee:
            out["non_tee_ranges"] = sorted(i for i, v in self.non_tee.items() if v)
        if self.state is TdiState.ERROR and self.reason:
            out["reason"] = self.reason
        return out


def _flag_names(enum: Any, value: int) -> list[str]:
    return [m.name for m in enum if value & m]


class TdispState:
    """The TDIs of one device (PCIe 6.1 11.2), shared by its connections."""

    def __init__(self, section: TdispSection, notify: Notify | None = None) -> None:
        self.section = section
        self.interfaces: dict[int, Tdi] = {t.function_id: Tdi(t) for t in section.interfaces}
        self._notify = notify
        #: TDISP messages change device state from several connections (and the control
        #: plane): one at a time
        self.lock = threading.RLock()

    @classmethod
    def from_profile(cls, profile: Profile) -> TdispState | None:
        """The state of a profile with an enabled [tdisp] section, else None."""
        section = profile.tdisp
        if section is None or not section.enabled:
            return None
        return cls(section)

    def bind(self, notify: Notify | None) -> None:
        """Set the callback that hears about TDI changes (``Device.notify``)."""
        self._notify = notify

    # ---- lookups --------------------------------------------------------------------

    def find(self, iid: InterfaceId) -> Tdi | None:
        """The TDI an INTERFACE_ID names (11.2: the Requester Segment must match when it
        is valid and the device knows its segment); None: not hosted by this DSM."""
        tdi = self.interfaces.get(iid.requester_id)
        if tdi is None:
            return None
        if iid.segment_valid and tdi.cfg.segment is not None and iid.segment != tdi.cfg.segment:
            return None
        return tdi

    @property
    def device_requests(self) -> frozenset[int]:
        """Request codes some TDI of the device supports."""
        vdm = bool(self.section.vdm)
        out: set[int] = set(REQUIRED_REQUESTS)
        for tdi in self.interfaces.values():
            out |= tdi.requests(vdm)
        return frozenset(out)

    def capabilities(self, tdi: Tdi) -> Capabilities:
        s = self.section
        return Capabilities(
            dsm_caps=0,
            req_msgs_supported=req_msgs_bitmap(tdi.requests(bool(s.vdm))),
            lock_interface_flags_supported=tdi.cfg.lock_flag_bits,
            dev_addr_width=s.dev_addr_width,
            num_req_this=s.num_req_this,
            num_req_all=s.num_req_all,
        )

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return [self.interfaces[f].snapshot() for f in sorted(self.interfaces)]

    # ---- transitions -------------------------------------------------------------------

    def transition(
        self, tdi: Tdi, new: TdiState, reason: str, *, connection: int | None = None
    ) -> None:
        """Move ``tdi`` to ``new`` (logged and published on ``<base>/device``)."""
        old = tdi.state
        if new is TdiState.CONFIG_UNLOCKED:
            tdi.clear_lock()
            tdi.reason = ""
        elif new is TdiState.ERROR:
            tdi.nonce = None  # 11.3.9: destroyed when leaving CONFIG_LOCKED
            tdi.reason = reason
        tdi.state = new
        log.info("%s: %s -> %s (%s)", tdi.name, old.name, new.name, reason)
        self._publish(
            tdi,
            "state",
            {"from": old.name, "to": new.name, "reason": reason, "connection": connection},
            f"{tdi.name} {old.name} -> {new.name}: {reason}",
        )

    def _publish(self, tdi: Tdi, change: str, detail: dict[str, Any], text: str) -> None:
        if self._notify is None:
            return
        note: dict[str, Any] = {
            "change": change,
            "function_id": f"0x{tdi.function_id:04X}",
            "interface": function_id_text(tdi.function_id),
            "state": tdi.state.name,
        }
        note.update({k: v for k, v in detail.items() if v is not None})
        note["text"] = text
        self._notify(EVENT, note)

    def to_error(self, tdi: Tdi, reason: str, *, connection: int | None = None) -> bool:
        """CONFIG_LOCKED / RUN -> ERROR (11.2); False when the TDI is not locked."""
        if not tdi.locked:
            return False
        self.transition(tdi, TdiState.ERROR, reason, connection=connection)
        return True

    def session_ended(self, connection: int, session_id: int) -> None:
        """A session of the device ended: the TDIs it locked go to ERROR (11.4.5)."""
        with self.lock:
            for tdi in self.interfaces.values():
                if tdi.locked and tdi.owner == (connection, session_id):
                    self.to_error(
                        tdi,
                        f"the SPDM session 0x{session_id:08X} that locked it ended",
                        connection=connection,
                    )

    def ide_stream_insecure(self, port: int, stream_id: int, why: str) -> None:
        """An IDE stream became insecure: the locked TDIs bound to it go to ERROR (11.2)."""
        with self.lock:
            for tdi in self.interfaces.values():
                if not tdi.locked or tdi.lock is None or not tdi.cfg.ide_required:
                    continue
                if tdi.cfg.ide_port is not None and tdi.cfg.ide_port != port:
                    continue
                if stream_id == tdi.lock.default_stream_id or stream_id in tdi.p2p_streams:
                    self.to_error(tdi, f"IDE stream {stream_id} on port {port} is insecure: {why}")

    def force_error(self, function_id: int | None, reason: str) -> list[int]:
        """Move the locked TDI (None: every locked TDI) to ERROR; their function IDs."""
        with self.lock:
            out = []
            for tdi in self._select(function_id):
                if self.to_error(tdi, reason):
                    out.append(tdi.function_id)
            return out

    def function_level_reset(self, function_id: int | None) -> list[int]:
        """FLR of the function(s) hosting the TDI(s): locked -> ERROR (11.4.9)."""
        return self.force_error(function_id, "function level reset")

    def conventional_reset(self) -> list[int]:
        """Every TDI to CONFIG_UNLOCKED (11.4.8); the function IDs that changed."""
        with self.lock:
            out = []
            for tdi in self.interfaces.values():
                if tdi.state is not TdiState.CONFIG_UNLOCKED:
                    self.transition(tdi, TdiState.CONFIG_UNLOCKED, "conventional reset")
                    out.append(tdi.function_id)
            return out

    def _select(self, function_id: int | None) -> list[Tdi]:
        if function_id is None:
            return list(self.interfaces.values())
        tdi = self.interfaces.get(function_id)
        if tdi is None:
            have = ", ".join(f"0x{f:04X}" for f in sorted(self.interfaces)) or "none"
            raise KeyError(f"no TDI with function ID 0x{function_id:04X} (TDIs: {have})")
        return [tdi]


def tdisp_state(r: Responder) -> TdispState | None:
    """The device's TDISP state (None: the profile has no enabled [tdisp])."""
    state = getattr(r.device, "tdisp", None)
    return state if isinstance(state, TdispState) else None


# ---- one message -----------------------------------------------------------------------


def _session_required(r: Responder) -> SpdmErrorResponse:
    why = "TDISP messages travel in secure sessions only (PCIe 6.1 11.2.2)"
    if r.version >= 0x12:
        return SpdmErrorResponse(ErrorCode.SessionRequired, why)
    return SpdmErrorResponse(ErrorCode.UnexpectedRequest, why)


def _error_message(version: int, function_id: int, err: TdispReply) -> bytes:
    return message(
        version, TdispResponse.TDISP_ERROR, function_id, TdispError(err.code, err.data).encode()
    )


def handle(r: Responder, req: Request, state: TdispState, msg: bytes) -> bytes:
    """Answer one TDISP message (``msg`` starts at the TDISP header): the TDISP response,
    TDISP_ERROR for a bad request, or SpdmErrorResponse outside a session."""
    if req.session_id is None:
        raise _session_required(r)
    with state.lock:
        version = msg[0] if msg else TDISP_VERSION_10
        function_id = int.from_bytes(msg[4:8].ljust(4, b"\x00"), "little") if msg else 0
        try:
            return _handle(r, req, state, msg)
        except TdispReply as err:
            code = msg[1] if len(msg) > 1 else -1
            log.info(
                "conn %d session 0x%08X: TDISP %s -> TDISP_ERROR(%s): %s",
                r.connection_number,
                req.session_id,
                message_name(code) if code >= 0 else "(no message type)",
                err.code.name,
                err.reason,
            )
            return _error_message(version, function_id & 0xFFFFFFFF, err)


def _handle(r: Responder, req: Request, state: TdispState, msg: bytes) -> bytes:
    if len(msg) < HEADER_SIZE:
        raise TdispReply(
            TdispErrorCode.INVALID_REQUEST,
            f"{len(msg)}-byte TDISP message is shorter than the 16-byte header",
        )
    version, code = msg[0], msg[1]
    iid = InterfaceId.decode(msg[4:16])
    if code not in RESPONSE_FOR:
        raise TdispReply(
            TdispErrorCode.UNSUPPORTED_REQUEST,
            f"0x{code:02X} ({message_name(code)}) is not a TDISP request",
            data=code,
        )
    name = TdispRequest(code).name
    if code not in state.device_requests:
        raise TdispReply(
            TdispErrorCode.UNSUPPORTED_REQUEST, f"no TDI of this device supports {name}", data=code
        )
    size = REQUEST_SIZES[code]
    if code == TdispRequest.VDM_REQUEST:
        if len(msg) < size:
            raise TdispReply(
                TdispErrorCode.INVALID_REQUEST, f"{name} is {len(msg)} bytes, at least {size}"
            )
    elif len(msg) != size:
        raise TdispReply(
            TdispErrorCode.INVALID_REQUEST, f"{name} is {len(msg)} bytes, {size} expected"
        )
    if code == TdispRequest.GET_TDISP_VERSION:
        if version >> 4 != 1:
            raise TdispReply(
                TdispErrorCode.VERSION_MISMATCH,
                f"GET_TDISP_VERSION with major version {version >> 4}; discovery uses major 1",
            )
    elif version not in VERSIONS:
        raise TdispReply(
            TdispErrorCode.VERSION_MISMATCH,
            f"TDISPVersion {version >> 4}.{version & 0xF}; this DSM speaks 1.0",
        )
    tdi = state.find(iid)
    if tdi is None:
        raise TdispReply(
            TdispErrorCode.INVALID_INTERFACE,
            f"INTERFACE_ID FUNCTION_ID 0x{iid.function_id:08X} is not hosted by this device",
        )
    owner = (r.connection_number, req.session_id or 0)
    _apply_faults(state, tdi, req, code, owner)
    body = msg[HEADER_SIZE:]
    handler = _DISPATCH[TdispRequest(code)]
    payload = handler(r, req, state, tdi, body, owner)
    # responses carry the TDI's INTERFACE_ID (reserved bytes zero, 11.3.3)
    return message(TDISP_VERSION_10, RESPONSE_FOR[code], iid.function_id, payload)


def _apply_faults(state: TdispState, tdi: Tdi, req: Request, code: int, owner: SessionKey) -> None:
    """The TDISP faults of this exchange that act before the message's handler."""
    for fault in req.tdisp_faults:
        if fault.kind is TdispFaultKind.ERROR and state.to_error(
            tdi, "fault: spontaneous transition", connection=owner[0]
        ):
            fault.applied = f"{tdi.name} moved to ERROR"
        elif fault.kind in (TdispFaultKind.REFUSE, TdispFaultKind.REFUSE_LOCK):
            if (
                fault.kind is TdispFaultKind.REFUSE_LOCK
                and code != TdispRequest.LOCK_INTERFACE_REQUEST
            ):
                continue
            try:
                err = TdispErrorCode(fault.code)
            except ValueError:
                err = TdispErrorCode.UNSPECIFIED
            fault.applied = f"{message_name(code)} refused with {err.name}"
            raise TdispReply(err, "fault: the device refuses the request")
        elif (
            fault.kind is TdispFaultKind.REPORT_LIE
            and tdi.locked
            and tdi.ranges
            and not tdi.report_lied
        ):
            first = tdi.ranges[0]
            moved = replace(first, first_page=(first.first_page + 1) & (2**64 - 1))
            tdi.ranges = (moved, *tdi.ranges[1:])
            tdi.report = _report_bytes(tdi, tdi.ranges)
            tdi.report_lied = True
            fault.applied = (
                f"{tdi.name} reports MMIO range 0 at page 0x{moved.first_page:X} "
                f"(locked at 0x{first.first_page:X})"
            )


# ---- the messages ------------------------------------------------------------------------

Handler = Callable[["Responder", Request, TdispState, Tdi, bytes, SessionKey], bytes]


def _get_version(
    r: Responder, req: Request, state: TdispState, tdi: Tdi, body: bytes, owner: SessionKey
) -> bytes:
    """TDISP_VERSION (11.3.5): every version this DSM speaks."""
    return bytes((len(VERSIONS), *VERSIONS))


def _get_capabilities(
    r: Responder, req: Request, state: TdispState, tdi: Tdi, body: bytes, owner: SessionKey
) -> bytes:
    """TDISP_CAPABILITIES (11.3.7); TSM_CAPS (all reserved in 1.0) is kept."""
    tdi.tsm_caps = int.from_bytes(body[:4], "little")
    return state.capabilities(tdi).encode()


def _ide_keys_ready(r: Responder, tdi: Tdi, stream_id: int, owner: SessionKey) -> str | None:
    """Why the IDE stream ``stream_id`` cannot be bound in session ``owner`` (None: it can):
    keys for all six sub-streams (PR/NPR/CPL, RX and TX) programmed over that session on the
    TDI's port (11.3.8, 11.3.18)."""
    ide = ide_state(r)
    if ide is None:
        return "the device has no IDE_KM"
    ports = [tdi.cfg.ide_port] if tdi.cfg.ide_port is not None else sorted(ide.ports)
    connection, sid = owner
    for port in ports:
        complete = True
        for tx in (False, True):
            for sub in SubStream:
                keys = ide.slots.get((port, stream_id, tx, int(sub)))
                if keys is None or not any(
                    k.session_id == sid and k.connection == connection for k in keys.sets.values()
                ):
                    complete = False
        if complete:
            return None
    where = f"port {tdi.cfg.ide_port}" if tdi.cfg.ide_port is not None else "any port"
    return (
        f"IDE stream {stream_id} has no keys for every sub-stream (PR/NPR/CPL, RX and TX) "
        f"programmed over this session on {where}"
    )


def _report_bytes(tdi: Tdi, ranges: tuple[MmioRange, ...]) -> bytes:
    lock = tdi.lock or LockParams()
    cfg = tdi.cfg
    info = cfg.interface_info_bits
    if lock.flags & LockFlags.NO_FW_UPDATE or not cfg.runtime_firmware_update:
        info |= InterfaceInfo.NO_UPDATE_AFTER_LOCK
    msix_locked = bool(lock.flags & LockFlags.LOCK_MSIX)
    return InterfaceReport(
        interface_info=info,
        msix_message_control=cfg.msix_message_control if msix_locked else 0,
        lnr_control=cfg.lnr_control,
        tph_control=cfg.tph_control if msix_locked else 0,
        mmio_ranges=ranges,
        device_specific_info=cfg.device_specific_bytes,
    ).encode()


def _reported_ranges(tdi: Tdi, lock: LockParams) -> tuple[MmioRange, ...]:
    """The TDI's MMIO ranges as the report shows them: MMIO_REPORTING_OFFSET added
    (11.3.8), the MSI-X table and PBA only when LOCK_MSIX locked them (table 11-15)."""
    out = []
    for i, rng in enumerate(tdi.cfg.mmio_ranges):
        attrs = rng.attribute_bits
        if (
            attrs & (MmioAttr.MSIX_TABLE | MmioAttr.MSIX_PBA)
            and not lock.flags & LockFlags.LOCK_MSIX
        ):
            continue
        start = rng.address + lock.mmio_reporting_offset
        if start < 0 or start + rng.pages * PAGE > 1 << 64:
            raise TdispReply(
                TdispErrorCode.INVALID_REQUEST,
                f"MMIO_REPORTING_OFFSET 0x{lock.mmio_reporting_offset & (2**64 - 1):016X} makes "
                f"MMIO range {i} leave the 64-bit address space",
            )
        out.append(MmioRange(start >> PAGE_SHIFT, rng.pages, attrs, rng.range_id))
    return tuple(out)


def _lock(
    r: Responder, req: Request, state: TdispState, tdi: Tdi, body: bytes, owner: SessionKey
) -> bytes:
    """LOCK_INTERFACE_RESPONSE (11.3.8, 11.3.9, errors of table 11-12)."""
    if tdi.state is not TdiState.CONFIG_UNLOCKED:
        raise TdispReply(
            TdispErrorCode.INVALID_INTERFACE_STATE,
            f"LOCK_INTERFACE_REQUEST in {tdi.state.name} (legal in CONFIG_UNLOCKED only)",
        )
    params = LockParams.decode(body)
    asked = params.flags & LOCK_FLAGS_DEFINED  # reserved bits are ignored (11.3.3)
    unsupported = asked & ~tdi.cfg.lock_flag_bits
    if unsupported:
        raise TdispReply(
            TdispErrorCode.INVALID_REQUEST,
            f"FLAGS {'|'.join(_flag_names(LockFlags, unsupported))} not in "
            "LOCK_INTERFACE_FLAGS_SUPPORTED",
        )
    params = replace(params, flags=asked)
    if tdi.cfg.ide_required:
        problem = _ide_keys_ready(r, tdi, params.default_stream_id, owner)
        if problem is not None:
            raise TdispReply(TdispErrorCode.INVALID_REQUEST, problem)
    ranges = _reported_ranges(tdi, params)
    nonce = bytes(req.rng(NONCE_SIZE))
    if len(nonce) != NONCE_SIZE:
        raise TdispReply(TdispErrorCode.INSUFFICIENT_ENTROPY, "no random bytes for the nonce")
    tdi.lock = params
    tdi.owner = owner
    tdi.nonce = nonce
    tdi.ranges = ranges
    tdi.report = _report_bytes(tdi, ranges)
    tdi.non_tee = {
        i: bool(rng.attributes & MmioAttr.IS_NON_TEE_MEM)
        for i, rng in enumerate(ranges)
        if rng.attributes & MmioAttr.IS_MEM_ATTR_UPDATABLE
    }
    state.transition(
        tdi,
        TdiState.CONFIG_LOCKED,
        f"LOCK_INTERFACE_REQUEST in session 0x{owner[1]:08X}, default stream "
        f"{params.default_stream_id}",
        connection=owner[0],
    )
    sent = nonce
    for fault in req.tdisp_faults:
        if fault.kind is TdispFaultKind.WRONG_NONCE:
            sent = bytes((nonce[0] ^ 0x01,)) + nonce[1:]
            fault.applied = "LOCK_INTERFACE_RESPONSE nonce differs from the one START expects"
    return sent


def _get_report(
    r: Responder, req: Request, state: TdispState, tdi: Tdi, body: bytes, owner: SessionKey
) -> bytes:
    """DEVICE_INTERFACE_REPORT (11.3.10, 11.3.11): a portion of the frozen TDI report."""
    if not tdi.locked:
        raise TdispReply(
            TdispErrorCode.INVALID_INTERFACE_STATE,
            f"GET_DEVICE_INTERFACE_REPORT in {tdi.state.name} (legal in CONFIG_LOCKED and RUN)",
        )
    offset = int.from_bytes(body[0:2], "little")
    length = int.from_bytes(body[2:4], "little")
    report = tdi.report
    if offset >= len(report):
        raise TdispReply(
            TdispErrorCode.INVALID_REQUEST,
            f"OFFSET {offset} is not within the {len(report)}-byte report",
        )
    if length == 0:
        raise TdispReply(TdispErrorCode.INVALID_REQUEST, "LENGTH 0")
    portion = min(length, len(report) - offset, state.section.max_report_portion)
    remainder = len(report) - offset - portion
    return (
        portion.to_bytes(2, "little")
        + remainder.to_bytes(2, "little")
        + report[offset : offset + portion]
    )


def _get_state(
    r: Responder, req: Request, state: TdispState, tdi: Tdi, body: bytes, owner: SessionKey
) -> bytes:
    """DEVICE_INTERFACE_STATE (11.3.13), in every state."""
    return bytes((tdi.state,))


def _start(
    r: Responder, req: Request, state: TdispState, tdi: Tdi, body: bytes, owner: SessionKey
) -> bytes:
    """START_INTERFACE_RESPONSE (11.3.14, 11.3.15)."""
    if tdi.state is not TdiState.CONFIG_LOCKED:
        raise TdispReply(
            TdispErrorCode.INVALID_INTERFACE_STATE,
            f"START_INTERFACE_REQUEST in {tdi.state.name} (legal in CONFIG_LOCKED only)",
        )
    if tdi.nonce is None or not hmac.compare_digest(bytes(body), tdi.nonce):
        raise TdispReply(
            TdispErrorCode.INVALID_NONCE,
            "START_INTERFACE_NONCE is not the one of LOCK_INTERFACE_RESPONSE",
        )
    tdi.nonce = None  # used once (11.3.14)
    state.transition(
        tdi,
        TdiState.RUN,
        f"START_INTERFACE_REQUEST in session 0x{owner[1]:08X}",
        connection=owner[0],
    )
    return b""


def _stop(
    r: Responder, req: Request, state: TdispState, tdi: Tdi, body: bytes, owner: SessionKey
) -> bytes:
    """STOP_INTERFACE_RESPONSE (11.3.16, 11.3.17): to CONFIG_UNLOCKED from any state."""
    if tdi.state is not TdiState.CONFIG_UNLOCKED:
        state.transition(
            tdi,
            TdiState.CONFIG_UNLOCKED,
            f"STOP_INTERFACE_REQUEST in session 0x{owner[1]:08X}",
            connection=owner[0],
        )
    return b""


def _p2p_checks(tdi: Tdi, name: str) -> None:
    if tdi.state is not TdiState.RUN:
        raise TdispReply(
            TdispErrorCode.INVALID_INTERFACE_STATE, f"{name} in {tdi.state.name} (legal in RUN)"
        )
    if not tdi.cfg.p2p:
        raise TdispReply(TdispErrorCode.INVALID_REQUEST, f"{tdi.name} does not support P2P streams")
    if tdi.lock is None or not tdi.lock.flags & LockFlags.BIND_P2P:
        raise TdispReply(
            TdispErrorCode.INVALID_REQUEST, f"{tdi.name} was locked without the BIND_P2P flag"
        )


def _bind_p2p(
    r: Responder, req: Request, state: TdispState, tdi: Tdi, body: bytes, owner: SessionKey
) -> bytes:
    """BIND_P2P_STREAM_RESPONSE (11.3.18, 11.3.19)."""
    _p2p_checks(tdi, "BIND_P2P_STREAM_REQUEST")
    stream = body[0]
    assert tdi.lock is not None and tdi.owner is not None
    if stream == tdi.lock.default_stream_id:
        raise TdispReply(
            TdispErrorCode.INVALID_REQUEST, f"P2P_STREAM_ID {stream} is the default stream"
        )
    if stream in tdi.p2p_streams:
        raise TdispReply(TdispErrorCode.INVALID_REQUEST, f"P2P stream {stream} is already bound")
    problem = _ide_keys_ready(r, tdi, stream, tdi.owner)
    if problem is not None:
        raise TdispReply(
            TdispErrorCode.INVALID_REQUEST, problem.replace("this session", "the locking session")
        )
    tdi.p2p_streams.add(stream)
    log.info("%s: P2P stream %d bound", tdi.name, stream)
    state._publish(tdi, "p2p_bound", {"stream": stream}, f"{tdi.name}: P2P stream {stream} bound")
    return b""


def _unbind_p2p(
    r: Responder, req: Request, state: TdispState, tdi: Tdi, body: bytes, owner: SessionKey
) -> bytes:
    """UNBIND_P2P_STREAM_RESPONSE (11.3.20, 11.3.21)."""
    _p2p_checks(tdi, "UNBIND_P2P_STREAM_REQUEST")
    stream = body[0]
    if stream not in tdi.p2p_streams:
        raise TdispReply(
            TdispErrorCode.INVALID_REQUEST, f"P2P stream {stream} was not bound to {tdi.name}"
        )
    tdi.p2p_streams.discard(stream)
    log.info("%s: P2P stream %d unbound", tdi.name, stream)
    state._publish(
        tdi, "p2p_unbound", {"stream": stream}, f"{tdi.name}: P2P stream {stream} unbound"
    )
    return b""


def _set_mmio(
    r: Responder, req: Request, state: TdispState, tdi: Tdi, body: bytes, owner: SessionKey
) -> bytes:
    """SET_MMIO_ATTRIBUTE_RESPONSE (11.3.22, 11.3.23): IS_NON_TEE_MEM of an updatable range
    (a failure does not change the TDI state)."""
    if tdi.state is not TdiState.RUN:
        raise TdispReply(
            TdispErrorCode.INVALID_INTERFACE_STATE,
            f"SET_MMIO_ATTRIBUTE_REQUEST in {tdi.state.name} (legal in RUN)",
        )
    want = MmioRange.decode(body)
    if want.attributes & SET_MMIO_MUST_BE_ZERO:
        raise TdispReply(
            TdispErrorCode.INVALID_REQUEST, "range attribute bits 1:0 are reserved and must be 0"
        )
    key = (want.first_page, want.pages, want.range_id)
    found = [
        i for i, rng in enumerate(tdi.ranges) if (rng.first_page, rng.pages, rng.range_id) == key
    ]
    if not found:
        raise TdispReply(
            TdispErrorCode.INVALID_REQUEST,
            f"no reported MMIO range at page 0x{want.first_page:X} with {want.pages} pages "
            f"and Range ID {want.range_id}",
        )
    i = found[0]
    if i not in tdi.non_tee:
        raise TdispReply(
            TdispErrorCode.INVALID_REQUEST,
            f"MMIO range {i} is not IS_MEM_ATTR_UPDATABLE",
        )
    value = bool(want.attributes & MmioAttr.IS_NON_TEE_MEM)
    tdi.non_tee[i] = value
    log.info("%s: MMIO range %d IS_NON_TEE_MEM=%d", tdi.name, i, value)
    state._publish(
        tdi,
        "mmio_attribute",
        {"range": i, "is_non_tee_mem": value},
        f"{tdi.name}: MMIO range {i} IS_NON_TEE_MEM={int(value)}",
    )
    return b""


def _vdm(
    r: Responder, req: Request, state: TdispState, tdi: Tdi, body: bytes, owner: SessionKey
) -> bytes:
    """VDM_RESPONSE (11.3.25, 11.3.26) from the profile's [[tdisp.vdm]] entries."""
    try:
        vdm = VdmBody.decode(body)
    except CodecError as exc:
        raise TdispReply(TdispErrorCode.INVALID_REQUEST, str(exc)) from None
    for entry in state.section.vdm:
        if (
            entry.registry_id == vdm.registry_id
            and bytes.fromhex(entry.vendor_id) == vdm.vendor_id
            and vdm.data.startswith(bytes.fromhex(entry.request_prefix))
        ):
            return VdmBody(vdm.registry_id, vdm.vendor_id, bytes.fromhex(entry.response)).encode()
    raise TdispReply(
        TdispErrorCode.INVALID_REQUEST,
        f"no vendor message for registry {vdm.registry_id} VENDOR_ID {vdm.vendor_id.hex() or '-'}",
    )


_DISPATCH: dict[TdispRequest, Handler] = {
    TdispRequest.GET_TDISP_VERSION: _get_version,
    TdispRequest.GET_TDISP_CAPABILITIES: _get_capabilities,
    TdispRequest.LOCK_INTERFACE_REQUEST: _lock,
    TdispRequest.GET_DEVICE_INTERFACE_REPORT: _get_report,
    TdispRequest.GET_DEVICE_INTERFACE_STATE: _get_state,
    TdispRequest.START_INTERFACE_REQUEST: _start,
    TdispRequest.STOP_INTERFACE_REQUEST: _stop,
    TdispRequest.BIND_P2P_STREAM_REQUEST: _bind_p2p,
    TdispRequest.UNBIND_P2P_STREAM_REQUEST: _unbind_p2p,
    TdispRequest.SET_MMIO_ATTRIBUTE_REQUEST: _set_mmio,
    TdispRequest.VDM_REQUEST: _vdm,
}


__all__ = [
    "EVENT",
    "Tdi",
    "TdispFault",
    "TdispFaultKind",
    "TdispState",
    "handle",
    "tdisp_state",
]
