"""Telemetry as JSON: one object per exchange, and the device state (sans-I/O).

An event (``.../event``)::

    {"seq": 7, "time": 1764159000.12, "device": "default", "connection": 1,
     "request":  {"direction": "to_device",   "name": "GET_MEASUREMENTS", "code": 224, "size": 37},
     "response": {"direction": "from_device", "name": "ERROR", "code": 127, "size": 4},
     "secured": false, "session": null, "error": "Busy", "error_code": 3,
     "reason": "", "faults": ["f1: error:Busy"]}

The state (``.../state``, retained) lists the connections (negotiated version and
algorithms, sessions), the fault rules and the telemetry counters (events published,
dropped because the queue was full, queued now, reconnects).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from enum import IntFlag
from typing import TYPE_CHECKING, Any

from emulator.codec.constants import (
    AeadSuite,
    AlgType,
    BaseAsymAlgo,
    BaseHashAlgo,
    DheGroup,
    ErrorCode,
    KemAlgo,
    KeySchedule,
    MeasurementHashAlgo,
    PqcAsymAlgo,
    ResponseCode,
    code_name,
)
from emulator.codec.messages import AlgorithmsMsg
from emulator.codec.pldm import command_name
from emulator.codec.tdisp import message_name, tdisp_in_vendor
from emulator.errors import CodecError
from emulator.events import ExchangeEvent

if TYPE_CHECKING:
    from emulator.connection import SpdmConnection


def _message(direction: str, data: bytes | None, protocol: str = "spdm") -> dict[str, Any] | None:
    if data is None:
        return None
    if protocol == "pldm":
        cmd = data[2] if len(data) > 2 else None
        name = command_name(data[1] & 0x3F, cmd) if cmd is not None else "MALFORMED"
        return {"direction": direction, "name": f"PLDM {name}", "code": cmd, "size": len(data)}
    code = data[1] if len(data) > 1 else None
    out: dict[str, Any] = {
        "direction": direction,
        "name": code_name(code) if code is not None else "MALFORMED",
        "code": code,
        "size": len(data),
    }
    tdisp = tdisp_in_vendor(data)
    if tdisp is not None and len(tdisp) > 1:
        out["tdisp"] = message_name(tdisp[1])
    return out


def _error_name(code: int | None) -> str | None:
    if code is None:
        return None
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"0x{code:02X}"


def event_json(event: ExchangeEvent, seq: int, time: float) -> dict[str, Any]:
    """The JSON object published for one exchange."""
    return {
        "seq": seq,
        "time": round(time, 6),
        "device": event.device,
        "connection": event.connection,
        "request": _message("to_device", event.request, event.protocol),
        "response": _message("from_device", event.response, event.protocol),
        "secured": event.secured,
        "session": f"0x{event.session_id:08X}" if event.session_id is not None else None,
        "error": _error_name(event.error),
        "error_code": event.error,
        "reason": event.reason,
        "faults": list(event.faults),
    }


def _flag_name(enum: type[IntFlag], value: int) -> str | None:
    if not value:
        return None
    try:
        name = enum(value).name
    except ValueError:
        name = None
    return name or f"0x{value:X}"


def _version_text(v: int) -> str | None:
    return f"{v >> 4}.{v & 0xF}" if v else None


def algorithms_json(
    base_asym: int,
    base_hash: int,
    measurement_hash: int,
    dhe: int,
    aead: int,
    key_schedule: int,
    pqc_asym: int = 0,
    kem: int = 0,
) -> dict[str, str | None]:
    """The negotiated algorithms by name; SPDM 1.4 ``pqc_asym`` / ``kem`` only when set."""
    out = {
        "base_asym": _flag_name(BaseAsymAlgo, base_asym),
        "base_hash": _flag_name(BaseHashAlgo, base_hash),
        "measurement_hash": _flag_name(MeasurementHashAlgo, measurement_hash),
        "dhe": _flag_name(DheGroup, dhe),
        "aead": _flag_name(AeadSuite, aead),
        "key_schedule": _flag_name(KeySchedule, key_schedule),
    }
    if pqc_asym or kem:
        out["pqc_asym"] = _flag_name(PqcAsymAlgo, pqc_asym)
        out["kem"] = _flag_name(KemAlgo, kem)
    return out


class StateTracker:
    """What each connection negotiated, as seen in the exchanges (cheap, per event).

    Used when the control plane has no live connection table; with one, the live
    responder state is reported instead (see :func:`connection_state`).
    """

    def __init__(self, max_connections: int = 256) -> None:
        self.connections: dict[int, dict[str, Any]] = {}
        self.max_connections = max_connections
        self.exchanges = 0

    def update(self, event: ExchangeEvent) -> bool:
        """Fold one exchange in; True when the state changed beyond counters."""
        self.exchanges += 1
        info = self.connections.get(event.connection)
        changed = False
        if info is None:
            if len(self.connections) >= self.max_connections:
                self.connections.pop(next(iter(self.connections)))
            info = {"connection": event.connection, "version": None, "algorithms": None}
            info["sessions"] = []
            info["exchanges"] = 0
            self.connections[event.connection] = info
            changed = True
        info["exchanges"] += 1
        rsp = event.response
        if rsp is None or len(rsp) < 2:
            return changed
        code = rsp[1]
        if code == ResponseCode.VERSION:
            info.update(version=None, algorithms=None, sessions=[])
            changed = True
        elif code == ResponseCode.CAPABILITIES:
            info["version"] = _version_text(rsp[0])
            changed = True
        elif code == ResponseCode.ALGORITHMS:
            with contextlib.suppress(CodecError, ValueError):
                alg, _ = AlgorithmsMsg.decode(rsp)
                info["version"] = _version_text(rsp[0])
                info["algorithms"] = algorithms_json(
                    alg.base_asym_sel,
                    alg.base_hash_sel,
                    alg.measurement_hash_algo,
                    alg.struct_value(AlgType.DHE),
                    alg.struct_value(AlgType.AEAD),
                    alg.struct_value(AlgType.KEY_SCHEDULE),
                    alg.pqc_asym_sel,
                    alg.struct_value(AlgType.KEM),
                )
                changed = True
        sid = event.session_id
        if sid is not None:
            text = f"0x{sid:08X}"
            sessions: list[str] = info["sessions"]
            if code == ResponseCode.END_SESSION_ACK:
                if text in sessions:
                    sessions.remove(text)
                    changed = True
            elif text not in sessions:
                sessions.append(text)
                changed = True
        return changed

    def snapshot(self) -> list[dict[str, Any]]:
        return [dict(v) for _, v in sorted(self.connections.items())]


def connection_state(number: int, conn: SpdmConnection) -> dict[str, Any]:
    """The live state of one :class:`~emulator.connection.SpdmConnection`."""
    r = conn.responder
    a = r.algorithms
    sessions = []
    table = r.ctx.sessions
    if table is not None:
        for sid, session in sorted(table.sessions.items()):
            sessions.append(
                {"id": f"0x{sid:08X}", "state": session.state.name, "psk": session.use_psk}
            )
    return {
        "connection": number,
        "peer": getattr(conn, "peer", ""),
        "state": r.state.name,
        "version": _version_text(r.version),
        "algorithms": algorithms_json(
            a.base_asym,
            a.base_hash,
            a.measurement_hash,
            a.dhe,
            a.aead,
            a.key_schedule,
            a.pqc_asym,
            a.kem,
        )
        if r.version
        else None,
        "sessions": sessions,
    }


def connections_state(
    live: Mapping[int, Any] | None, tracker: StateTracker
) -> list[dict[str, Any]]:
    """Per-connection state: live objects when known, else what the events showed."""
    if live is None:
        return tracker.snapshot()
    out = []
    for number, conn in sorted(dict(live).items()):
        info = connection_state(number, conn)
        seen = tracker.connections.get(number)
        info["exchanges"] = seen["exchanges"] if seen else 0
        out.append(info)
    return out
