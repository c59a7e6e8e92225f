"""PCI-SIG IDE key management (IDE_KM, PCIe r6 6.33.3) over VENDOR_DEFINED_REQUEST.

The device's IDE state (:class:`IdeKmState`) lives on the :class:`~emulator.device.model.
Device`, not on a connection: IDE keys are programmed into the device's port hardware
(the link's / selective stream's key registers), which every DOE mailbox and SPDM
connection of the device sees, and which outlives the SPDM message exchange that set it
(the PCIe spec ties key *programming* to a secure session, not the keys' lifetime to a
connection).  Each slot records the session that programmed it.

Answers, as DMTF spdm-emu's ``pci_ide_km_responder_lib`` + ``pci_ide_km_device_lib_sample``
(with the device rules of the spec where the sample is silent):

* QUERY (3 bytes) -> QUERY_RESP echoing PortIndex, with the profile's segment, bus,
  device/function, MaxPortIndex and IDE registers.  A port the device does not have:
  ERROR(InvalidRequest), as spdm-emu turns a device-library failure into.
* KEY_PROG (47 bytes) -> KP_ACK echoing StreamID, KeySubStream, PortIndex, with Status
  01h (Incorrect Length: the 7-byte header arrived but not 47 bytes), 02h (Unsupported
  Port Index), 03h (Unsupported Value: reserved KeySubStream bits, a sub-stream other than
  PR/NPR/CPL, or a new StreamID when ``max_streams`` stream IDs of the port already hold
  keys) or 00h (stored).  Shorter than the header: ERROR(InvalidRequest).
* K_SET_GO / K_SET_STOP (7 bytes) -> K_GOSTOP_ACK echoing the fields.  GO makes the key
  set the active one of its (stream, direction, sub-stream); STOP ends its use and
  invalidates it.  GO for a key set that was never programmed, an unknown port or a bad
  KeySubStream: ERROR(InvalidRequest) (K_GOSTOP_ACK has no status field).
* KEY_PROG, K_SET_GO, K_SET_STOP outside a secure session: ERROR(SessionRequired) from
  SPDM 1.2, UnexpectedRequest before (PCIe requires IDE_KM key material to travel in a
  secure SPDM session); QUERY is answered outside one unless the profile says otherwise.
* Another ObjectID (a response ID included): ERROR(InvalidRequest), as spdm-emu.

Key bytes never leave this module's state: logs and device events say only "key
programmed for stream X, sub-stream Y, direction Z".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emulator.codec.constants import ErrorCode
from emulator.codec.vendor import (
    DIRECTION_TX,
    KEY_HEADER_SIZE,
    KEY_PROG_SIZE,
    KEY_SET_MASK,
    KEY_SIZE,
    KEY_SUB_STREAM_RESERVED,
    QUERY_SIZE,
    IdeKmKeyMessage,
    IdeKmObject,
    IdeKmQueryResp,
    KpAckStatus,
    SubStream,
)
from emulator.responder.base import Request, SpdmErrorResponse, invalid

if TYPE_CHECKING:
    from emulator.profiles import IdeKmSection, Profile
    from emulator.responder.core import Responder

log = logging.getLogger("emulator.responder.ide_km")

# IDE Capability register bits (PCIe r6 7.9.26.2)
CAP_LINK = 0x01
CAP_SELECTIVE = 0x02
CAP_IDE_KM = 0x40
CAP_LINK_TCS_SHIFT = 13
CAP_SELECTIVE_SHIFT = 16

#: the event name of :meth:`Device.notify` for IDE_KM changes
EVENT = "ide_km"


def default_registers(cfg: IdeKmSection) -> tuple[int, ...]:
    """The IDE extended capability registers QUERY_RESP reports (from IDE Capability on)."""
    if cfg.registers is not None:
        return tuple(cfg.registers)
    cap = cfg.ide_capability
    if cap is None:
        cap = CAP_IDE_KM  # AES-GCM 256 / 96b MAC is algorithm 0
        if cfg.link_tcs:
            cap |= CAP_LINK | (cfg.link_tcs - 1) << CAP_LINK_TCS_SHIFT
        if cfg.selective_streams:
            cap |= CAP_SELECTIVE | (cfg.selective_streams - 1) << CAP_SELECTIVE_SHIFT
    regs = [cap, cfg.ide_control]
    for _ in range(cfg.link_tcs):
        regs += [cfg.link_stream_control, cfg.link_stream_status]
    for _ in range(cfg.selective_streams):
        regs += [cfg.address_associations, cfg.selective_stream_control]
        regs += [cfg.selective_stream_status, 0, 0]  # RID Association 1, 2
        regs += [0, 0, 0] * cfg.address_associations
    return tuple(regs)


@dataclass
class KeySlot:
    """One programmed key (never logged or published)."""

    key: bytes = field(repr=False)
    ifv: bytes = field(repr=False)
    session_id: int | None = None
    connection: int = 0


@dataclass
class SubStreamKeys:
    """The K0/K1 key sets of one (port, stream, direction, sub-stream), and the active one."""

    sets: dict[int, KeySlot] = field(default_factory=dict)
    active: int | None = None


SlotKey = tuple[int, int, bool, int]  # port, stream ID, TX, sub-stream


def describe(stream_id: int, kss: int, port: int) -> str:
    """'port P stream X sub-stream NPR direction TX key set K1' (no key bytes)."""
    try:
        sub = SubStream(kss >> 4).name
    except ValueError:
        sub = f"0x{kss >> 4:X}"
    direction = "TX" if kss & DIRECTION_TX else "RX"
    return (
        f"port {port} stream {stream_id} sub-stream {sub} direction {direction} "
        f"key set K{kss & KEY_SET_MASK}"
    )


@dataclass
class IdeKmState:
    """The device's IDE key state (PCIe r6 6.33.3), shared by its connections."""

    ports: frozenset[int]
    max_port_index: int
    dev_func_num: int
    bus: int
    segment: int
    registers: tuple[int, ...]
    max_streams: int
    query_outside_session: bool = True
    slots: dict[SlotKey, SubStreamKeys] = field(default_factory=dict)

    @classmethod
    def from_section(cls, cfg: IdeKmSection) -> IdeKmState:
        ports = cfg.ports if cfg.ports is not None else range(cfg.max_port_index + 1)
        return cls(
            ports=frozenset(ports),
            max_port_index=cfg.max_port_index,
            dev_func_num=(cfg.device << 3) | cfg.function,
            bus=cfg.bus,
            segment=cfg.segment,
            registers=default_registers(cfg),
            max_streams=cfg.max_streams or max(1, cfg.link_tcs + cfg.selective_streams),
            query_outside_session=cfg.query_outside_session,
        )

    @classmethod
    def from_profile(cls, profile: Profile) -> IdeKmState | None:
        """The state of a profile with an enabled [ide_km] section, else None."""
        cfg = profile.ide_km
        if cfg is None or not cfg.enabled:
            return None
        return cls.from_section(cfg)

    # ---- queries (tests, control plane) ---------------------------------------------

    def streams_on_port(self, port: int) -> set[int]:
        return {k[1] for k, v in self.slots.items() if k[0] == port and v.sets}

    def slot(self, port: int, stream_id: int, kss: int) -> SubStreamKeys | None:
        return self.slots.get((port, stream_id, bool(kss & DIRECTION_TX), kss >> 4))

    def snapshot(self) -> list[dict[str, Any]]:
        """The programmed key sets, without key bytes."""
        out = []
        for (port, stream, tx, sub), keys in sorted(self.slots.items()):
            out.append(
                {
                    "port": port,
                    "stream": stream,
                    "direction": "TX" if tx else "RX",
                    "sub_stream": SubStream(sub).name,
                    "programmed": sorted(f"K{k}" for k in keys.sets),
                    "active": None if keys.active is None else f"K{keys.active}",
                }
            )
        return out

    def clear(self) -> None:
        """Forget every key (a device reset)."""
        self.slots.clear()


def ide_state(r: Responder) -> IdeKmState | None:
    """The device's IDE_KM state (None: the profile has no enabled [ide_km])."""
    state = getattr(r.device, "ide_km", None)
    return state if isinstance(state, IdeKmState) else None


def _session_required(r: Responder, what: str) -> SpdmErrorResponse:
    if r.version >= 0x12:
        return SpdmErrorResponse(ErrorCode.SessionRequired, f"IDE_KM {what} needs a session")
    return SpdmErrorResponse(ErrorCode.UnexpectedRequest, f"IDE_KM {what} needs a session")


def _kss_ok(kss: int) -> bool:
    return not kss & KEY_SUB_STREAM_RESERVED and (kss >> 4) in (s.value for s in SubStream)


def handle(r: Responder, req: Request, state: IdeKmState, msg: bytes) -> bytes:
    """Answer one IDE_KM message (``msg`` starts at the ObjectID); the IDE_KM response
    bytes, or SpdmErrorResponse."""
    if not msg:
        raise invalid("IDE_KM message without an ObjectID")
    obj = msg[0]
    if obj == IdeKmObject.QUERY:
        if not state.query_outside_session and not req.in_session:
            raise _session_required(r, "QUERY")
        return _query(state, msg)
    if obj in (IdeKmObject.KEY_PROG, IdeKmObject.K_SET_GO, IdeKmObject.K_SET_STOP):
        if not req.in_session:
            raise _session_required(r, IdeKmObject(obj).name)
        if obj == IdeKmObject.KEY_PROG:
            return _key_prog(r, req, state, msg)
        return _key_set(r, state, msg, go=obj == IdeKmObject.K_SET_GO)
    raise invalid(f"IDE_KM ObjectID 0x{obj:02X} is not a request")


def _query(state: IdeKmState, msg: bytes) -> bytes:
    if len(msg) != QUERY_SIZE:
        raise invalid(f"IDE_KM QUERY is {len(msg)} bytes, 3 expected")
    port = msg[2]
    if port not in state.ports:
        raise invalid(f"IDE_KM QUERY for port {port}, which the device does not have")
    return IdeKmQueryResp(
        port, state.dev_func_num, state.bus, state.segment, state.max_port_index, state.registers
    ).encode()


def _key_prog(r: Responder, req: Request, state: IdeKmState, msg: bytes) -> bytes:
    if len(msg) < KEY_HEADER_SIZE:
        raise invalid(f"IDE_KM KEY_PROG is {len(msg)} bytes, shorter than its 7-byte header")
    stream_id, kss, port = msg[3], msg[5], msg[6]

    def ack(status: KpAckStatus) -> bytes:
        return IdeKmKeyMessage(IdeKmObject.KP_ACK, stream_id, kss, port, status).encode()

    what = describe(stream_id, kss, port)
    if len(msg) != KEY_PROG_SIZE:
        log.info("IDE_KM KEY_PROG %s: %d bytes, not 47: Incorrect Length", what, len(msg))
        return ack(KpAckStatus.INCORRECT_LENGTH)
    if port not in state.ports:
        log.info("IDE_KM KEY_PROG %s: unsupported port index", what)
        return ack(KpAckStatus.UNSUPPORTED_PORT_INDEX)
    if not _kss_ok(kss):
        log.info("IDE_KM KEY_PROG %s: KeySubStream 0x%02X unsupported", what, kss)
        return ack(KpAckStatus.UNSUPPORTED_VALUE)
    used = state.streams_on_port(port)
    if stream_id not in used and len(used) >= state.max_streams:
        log.info("IDE_KM KEY_PROG %s: all %d stream key slots in use", what, state.max_streams)
        return ack(KpAckStatus.UNSUPPORTED_VALUE)
    key = bytes(msg[KEY_HEADER_SIZE : KEY_HEADER_SIZE + KEY_SIZE])
    ifv = bytes(msg[KEY_HEADER_SIZE + KEY_SIZE : KEY_PROG_SIZE])
    slot_key = (port, stream_id, bool(kss & DIRECTION_TX), kss >> 4)
    keys = state.slots.setdefault(slot_key, SubStreamKeys())
    keys.sets[kss & KEY_SET_MASK] = KeySlot(key, ifv, req.session_id, r.connection_number)
    log.info("IDE_KM key programmed for %s", what)
    _notify(r, "key_programmed", stream_id, kss, port)
    return ack(KpAckStatus.SUCCESS)


def _key_set(r: Responder, state: IdeKmState, msg: bytes, *, go: bool) -> bytes:
    name = "K_SET_GO" if go else "K_SET_STOP"
    if len(msg) != KEY_HEADER_SIZE:
        raise invalid(f"IDE_KM {name} is {len(msg)} bytes, 7 expected")
    stream_id, kss, port = msg[3], msg[5], msg[6]
    what = describe(stream_id, kss, port)
    if port not in state.ports:
        raise invalid(f"IDE_KM {name} for {what}: the device has no such port")
    if not _kss_ok(kss):
        raise invalid(f"IDE_KM {name} for {what}: KeySubStream 0x{kss:02X} unsupported")
    key_set = kss & KEY_SET_MASK
    keys = state.slot(port, stream_id, kss)
    if go:
        if keys is None or key_set not in keys.sets:
            raise invalid(f"IDE_KM K_SET_GO for {what}: no key was programmed")
        keys.active = key_set
        log.info("IDE_KM key set active for %s", what)
        _notify(r, "key_set_go", stream_id, kss, port)
    else:
        if keys is not None:
            keys.sets.pop(key_set, None)
            if keys.active == key_set:
                keys.active = None
            if not keys.sets:
                del state.slots[(port, stream_id, bool(kss & DIRECTION_TX), kss >> 4)]
        log.info("IDE_KM key set stopped for %s", what)
        _notify(r, "key_set_stop", stream_id, kss, port)
    return IdeKmKeyMessage(IdeKmObject.K_GOSTOP_ACK, stream_id, kss, port).encode()


def _notify(r: Responder, change: str, stream_id: int, kss: int, port: int) -> None:
    notify = getattr(r.device, "notify", None)
    if notify is None:
        return
    notify(
        EVENT,
        {
            "change": change,
            "port": port,
            "stream": stream_id,
            "sub_stream": SubStream(kss >> 4).name,
            "direction": "TX" if kss & DIRECTION_TX else "RX",
            "key_set": f"K{kss & KEY_SET_MASK}",
            "connection": r.connection_number,
            "text": f"{change.replace('_', ' ')} for {describe(stream_id, kss, port)}",
        },
    )


__all__ = [
    "EVENT",
    "IdeKmState",
    "KeySlot",
    "SubStreamKeys",
    "default_registers",
    "describe",
    "handle",
    "ide_state",
]
