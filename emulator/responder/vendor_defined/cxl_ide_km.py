"""CXL.cachemem IDE key management (CXL 3.1 11.4.11, CXL_IDE_KM) over PCI-SIG
VENDOR_DEFINED_REQUEST with the CXL VendorID 0x1E98, protocol 0x00.

As much as libspdm's requester application flow (spdm-emu ``cxl_ide_km_process_session_
message_setup`` / ``_teardown``) uses, answered as spdm-emu's ``cxl_ide_km_responder_lib``
does, with the checks of the PCIe IDE_KM responder (:mod:`.ide_km`) where the sample is
silent:

* QUERY (3 bytes) -> QUERY_RESP echoing PortIndex, with the profile's BDF, MaxPortIndex,
  capability bits and CXL IDE capability registers; a port the device does not have:
  ERROR(InvalidRequest).
* KEY_PROG (51 bytes) -> KP_ACK echoing StreamID, KeySubStream, PortIndex with Status 0,
  or 1 (invalid) for a wrong length, an unknown port, a sub-stream other than CXL
  (1000b) or reserved KeySubStream bits.
* K_SET_GO / K_SET_STOP (7 bytes) -> K_GOSTOP_ACK; GO for a direction without a key, an
  unknown port or a bad KeySubStream: ERROR(InvalidRequest); K_SET_STOP on a device
  without K_SET_STOP capability: ERROR(UnsupportedRequest).
* GET_KEY (7 bytes) -> GET_KEY_ACK with a device-generated key and/or IV (the key
  generation / IV generation capabilities; neither: ERROR(UnsupportedRequest)).
* KEY_PROG, K_SET_GO, K_SET_STOP, GET_KEY outside a secure session: ERROR(SessionRequired)
  from SPDM 1.2 (UnexpectedRequest before); another ObjectID: ERROR(InvalidRequest).

Key bytes are never logged or published.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emulator.codec.constants import ErrorCode
from emulator.codec.cxl import (
    CAPS_IV_GENERATION,
    CAPS_K_SET_STOP,
    CAPS_KEY_GENERATION,
    CAPS_VERSION_1,
    CXL_IV_SIZE,
    CXL_KEY_HEADER_SIZE,
    CXL_KEY_PROG_SIZE,
    CXL_KEY_SIZE,
    CXL_QUERY_SIZE,
    KP_ACK_INVALID,
    KP_ACK_SUCCESS,
    KSS_DIRECTION_TX,
    KSS_MODE_CONTAINMENT,
    KSS_RESERVED,
    KSS_SUB_STREAM_CXL,
    KSS_SUB_STREAM_MASK,
    CxlIdeKmObject,
    cxl_key_message,
)
from emulator.responder.base import Request, SpdmErrorResponse, invalid

if TYPE_CHECKING:
    from emulator.profiles import CxlIdeKmSection, Profile
    from emulator.responder.core import Responder

log = logging.getLogger("emulator.responder.cxl_ide_km")

#: the event name of :meth:`Device.notify` for CXL IDE_KM changes
EVENT = "cxl_ide_km"


@dataclass
class CxlKey:
    """One programmed CXL.cachemem IDE key (never logged or published)."""

    key: bytes = field(repr=False)
    iv: bytes = field(repr=False)
    iv_default: bool
    session_id: int | None
    connection: int


@dataclass
class CxlIdeKmState:
    """The device's CXL IDE keys: one per (port, direction), and whether it is in use."""

    cfg: CxlIdeKmSection
    keys: dict[tuple[int, bool], CxlKey] = field(default_factory=dict)
    #: (port, TX) -> "skid" / "containment" once K_SET_GO started the key
    active: dict[tuple[int, bool], str] = field(default_factory=dict)

    @classmethod
    def from_profile(cls, profile: Profile) -> CxlIdeKmState | None:
        cfg = profile.cxl_ide_km
        if cfg is None or not cfg.enabled:
            return None
        return cls(cfg)

    @property
    def caps(self) -> int:
        c = self.cfg
        return (
            CAPS_VERSION_1
            | (CAPS_IV_GENERATION if c.iv_generation else 0)
            | (CAPS_KEY_GENERATION if c.key_generation else 0)
            | (CAPS_K_SET_STOP if c.k_set_stop else 0)
        )

    def snapshot(self) -> list[dict[str, Any]]:
        return [
            {
                "port": port,
                "direction": "TX" if tx else "RX",
                "active": self.active.get((port, tx)),
            }
            for (port, tx) in sorted(self.keys)
        ]

    def clear(self) -> None:
        self.keys.clear()
        self.active.clear()


def cxl_ide_state(r: Responder) -> CxlIdeKmState | None:
    state = getattr(r.device, "cxl_ide_km", None)
    return state if isinstance(state, CxlIdeKmState) else None


def _session_required(r: Responder, what: str) -> SpdmErrorResponse:
    code = ErrorCode.SessionRequired if r.version >= 0x12 else ErrorCode.UnexpectedRequest
    return SpdmErrorResponse(code, f"CXL_IDE_KM {what} needs a secure session")


def _kss_ok(kss: int) -> bool:
    return kss & KSS_SUB_STREAM_MASK == KSS_SUB_STREAM_CXL and not kss & KSS_RESERVED


def _direction(kss: int) -> str:
    return "TX" if kss & KSS_DIRECTION_TX else "RX"


def handle(r: Responder, req: Request, state: CxlIdeKmState, msg: bytes) -> bytes:
    """Answer one CXL_IDE_KM message (``msg`` starts at the ObjectID)."""
    if not msg:
        raise invalid("CXL_IDE_KM message without an ObjectID")
    obj = msg[0]
    if obj == CxlIdeKmObject.QUERY:
        return _query(state, msg)
    if obj in (
        CxlIdeKmObject.KEY_PROG,
        CxlIdeKmObject.K_SET_GO,
        CxlIdeKmObject.K_SET_STOP,
        CxlIdeKmObject.GET_KEY,
    ):
        name = CxlIdeKmObject(obj).name
        if not req.in_session:
            raise _session_required(r, name)
        if obj == CxlIdeKmObject.KEY_PROG:
            return _key_prog(r, req, state, msg)
        if obj == CxlIdeKmObject.GET_KEY:
            return _get_key(req, state, msg)
        return _key_set(r, state, msg, go=obj == CxlIdeKmObject.K_SET_GO)
    raise invalid(f"CXL_IDE_KM ObjectID 0x{obj:02X} is not a request")


def _query(state: CxlIdeKmState, msg: bytes) -> bytes:
    if len(msg) != CXL_QUERY_SIZE:
        raise invalid(f"CXL_IDE_KM QUERY is {len(msg)} bytes, 3 expected")
    port = msg[2]
    c = state.cfg
    if port not in c.ports:
        raise invalid(f"CXL_IDE_KM QUERY for port {port}, which the device does not have")
    head = bytes(
        (
            CxlIdeKmObject.QUERY_RESP,
            0,
            port,
            (c.device << 3) | c.function,
            c.bus,
            c.segment,
            c.max_port_index,
            state.caps,
        )
    )
    return head + b"".join(r.to_bytes(4, "little") for r in c.registers)


def _key_prog(r: Responder, req: Request, state: CxlIdeKmState, msg: bytes) -> bytes:
    if len(msg) < CXL_KEY_HEADER_SIZE:
        raise invalid(f"CXL_IDE_KM KEY_PROG is {len(msg)} bytes, shorter than its header")
    stream_id, kss, port = msg[3], msg[5], msg[6]

    def ack(status: int) -> bytes:
        return cxl_key_message(CxlIdeKmObject.KP_ACK, stream_id, kss, port, status)

    if len(msg) != CXL_KEY_PROG_SIZE:
        log.info("CXL_IDE_KM KEY_PROG: %d bytes, not %d", len(msg), CXL_KEY_PROG_SIZE)
        return ack(KP_ACK_INVALID)
    if port not in state.cfg.ports or not _kss_ok(kss):
        log.info("CXL_IDE_KM KEY_PROG port %d KeySubStream 0x%02X: invalid", port, kss)
        return ack(KP_ACK_INVALID)
    tx = bool(kss & KSS_DIRECTION_TX)
    key = bytes(msg[CXL_KEY_HEADER_SIZE : CXL_KEY_HEADER_SIZE + CXL_KEY_SIZE])
    iv = bytes(msg[CXL_KEY_HEADER_SIZE + CXL_KEY_SIZE :])
    state.keys[(port, tx)] = CxlKey(key, iv, bool(kss & 0x08), req.session_id, r.connection_number)
    state.active.pop((port, tx), None)
    log.info("CXL_IDE_KM key programmed for port %d direction %s", port, _direction(kss))
    _notify(r, "key_programmed", port, kss)
    return ack(KP_ACK_SUCCESS)


def _checked_7(state: CxlIdeKmState, msg: bytes, name: str) -> tuple[int, int, int]:
    if len(msg) != CXL_KEY_HEADER_SIZE:
        raise invalid(f"CXL_IDE_KM {name} is {len(msg)} bytes, 7 expected")
    stream_id, kss, port = msg[3], msg[5], msg[6]
    if port not in state.cfg.ports:
        raise invalid(f"CXL_IDE_KM {name} for port {port}, which the device does not have")
    if not _kss_ok(kss & ~KSS_MODE_CONTAINMENT):
        raise invalid(f"CXL_IDE_KM {name}: KeySubStream 0x{kss:02X} is not CXL.cachemem")
    return stream_id, kss, port


def _key_set(r: Responder, state: CxlIdeKmState, msg: bytes, *, go: bool) -> bytes:
    name = "K_SET_GO" if go else "K_SET_STOP"
    if not go and not state.cfg.k_set_stop:
        raise SpdmErrorResponse(
            ErrorCode.UnsupportedRequest, "CXL_IDE_KM K_SET_STOP: the device has no K_SET_STOP_CAP"
        )
    stream_id, kss, port = _checked_7(state, msg, name)
    tx = bool(kss & KSS_DIRECTION_TX)
    if go:
        if (port, tx) not in state.keys:
            raise invalid(f"CXL_IDE_KM K_SET_GO port {port} {_direction(kss)}: no key programmed")
        state.active[(port, tx)] = "containment" if kss & KSS_MODE_CONTAINMENT else "skid"
        log.info("CXL_IDE_KM key set go for port %d direction %s", port, _direction(kss))
    else:
        state.active.pop((port, tx), None)
        state.keys.pop((port, tx), None)
        log.info("CXL_IDE_KM key set stop for port %d direction %s", port, _direction(kss))
    _notify(r, "key_set_go" if go else "key_set_stop", port, kss)
    return cxl_key_message(CxlIdeKmObject.K_GOSTOP_ACK, stream_id, kss, port)


def _get_key(req: Request, state: CxlIdeKmState, msg: bytes) -> bytes:
    c = state.cfg
    if not (c.key_generation or c.iv_generation):
        raise SpdmErrorResponse(
            ErrorCode.UnsupportedRequest,
            "CXL_IDE_KM GET_KEY: the device generates neither keys nor IVs",
        )
    stream_id, kss, port = _checked_7(state, msg, "GET_KEY")
    key = bytes(req.rng(CXL_KEY_SIZE)) if c.key_generation else bytes(CXL_KEY_SIZE)
    # an initial IV: the fixed field 80000000h, then a device-chosen invocation counter
    iv = (
        (0x80000000).to_bytes(4, "little") + bytes(req.rng(CXL_IV_SIZE - 4))
        if c.iv_generation
        else bytes(CXL_IV_SIZE)
    )
    log.info("CXL_IDE_KM GET_KEY for port %d direction %s", port, _direction(kss))
    return cxl_key_message(CxlIdeKmObject.GET_KEY_ACK, stream_id, kss, port) + key + iv


def _notify(r: Responder, change: str, port: int, kss: int) -> None:
    notify = getattr(r.device, "notify", None)
    if notify is None:
        return
    notify(
        EVENT,
        {
            "change": change,
            "port": port,
            "direction": _direction(kss),
            "connection": r.connection_number,
            "text": f"CXL IDE {change.replace('_', ' ')} for port {port} {_direction(kss)}",
        },
    )


__all__ = ["EVENT", "CxlIdeKmState", "CxlKey", "cxl_ide_state", "handle"]
