"""Control-plane commands: validate a JSON command, apply it, build the JSON reply.

Sans-I/O: :meth:`CommandProcessor.handle` takes the command name (the last topic
level) and the payload bytes and returns the reply object; it never raises for bad
input.  Every reply carries ``id`` (echoed from the command, ``null`` when absent),
``command``, ``ok`` and either ``result`` or ``error``.

Commands (payload = a JSON object; ``id`` is optional and may be any JSON scalar):

``faults``
    ``{"op": "add", "rule": {"on": "CHALLENGE", "do": "error:Busy"}}`` or
    ``{"op": "add", "spec": "on=CHALLENGE,do=error:Busy"}`` -> ``{"rule": {...}}``;
    ``{"op": "clear"}`` (all) or ``{"op": "clear", "rule": "f2"}`` -> ``{"removed": n}``;
    ``{"op": "list"}`` -> ``{"rules": [...], "applied": n}``.
``measurements``
    ``{"op": "set", "index": 2, "value": "hex"}`` (or ``"text": "..."``, UTF-8);
    ``{"op": "bump_version"}`` (all version/SVN blocks) or with ``"index"``;
    ``{"op": "device_reset"}`` (pending values become visible without MEAS_FRESH_CAP);
    ``{"op": "list"}``.  ``op`` defaults to ``set``.
``reset``
    ``{}`` forgets the negotiated state of every connection (as GET_VERSION does) and
    resets the device: pending measurement changes become visible, certificate installs
    and CSRs waiting for a reset (ERROR ResetRequired, CERT_INSTALL_RESET_CAP) complete,
    TDIs go back to CONFIG_UNLOCKED (PCIe 6.1 11.4.8); ``{"connection": 3}`` only that
    connection.
``mel``
    ``{"op": "append", "type": "informational", "text": "..."}`` (or ``"value": "hex"``;
    ``"index"``: the MEL-extended block, default the only one; ``"raw"``: default true)
    adds an entry to the measurement extension log (its hash-extended block changes,
    subscribed sessions get MeasurementChanged); ``{"op": "list"}``.  ``op`` defaults to
    ``append``.
``provisioning``
    ``{"op": "show"}``: the key pairs, the slot chains (leaf subject, issuer, SHA-256),
    what differs from the profile and what waits for a reset; ``{"op": "device_reset"}``:
    a device reset without touching the connections.
``tdisp``
    ``{"op": "list"}`` -> ``{"interfaces": [...]}`` (state, locking session, flags);
    ``{"op": "error", "function_id": "0xBEEF"}`` moves the locked TDI (no ``function_id``:
    every locked TDI) to ERROR, as a device that detects a configuration change does
    (``reason`` optional); ``{"op": "flr", ...}`` the same for a function level reset
    (PCIe 6.1 11.4.9); ``{"op": "reset"}`` a conventional reset: every TDI to
    CONFIG_UNLOCKED (11.4.8).  Each change is published on ``<base>/device``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from emulator.errors import EmulatorError
from emulator.faults.engine import FaultEngine
from emulator.faults.model import FaultSpecError
from emulator.faults.spec import rule_to_dict

log = logging.getLogger("emulator.control")

#: command -> fields it accepts (besides "id")
COMMAND_FIELDS: dict[str, frozenset[str]] = {
    "faults": frozenset({"op", "rule", "spec"}),
    "measurements": frozenset({"op", "index", "value", "text"}),
    "reset": frozenset({"connection"}),
    "mel": frozenset({"op", "index", "type", "value", "text", "raw"}),
    "provisioning": frozenset({"op"}),
    "tdisp": frozenset({"op", "function_id", "reason"}),
}
FAULT_OPS = ("add", "clear", "list")
MEASUREMENT_OPS = ("set", "bump_version", "device_reset", "list")
MEL_OPS = ("append", "list")
PROVISIONING_OPS = ("show", "device_reset")
TDISP_OPS = ("list", "error", "flr", "reset")


class CommandError(EmulatorError):
    """A command is invalid; the message is what the reply's ``error`` says."""


def _ops(ops: tuple[str, ...]) -> str:
    return ", ".join(ops)


class CommandProcessor:
    """Applies commands to one device, its fault engine and its live connections."""

    def __init__(
        self,
        device: Any,
        faults: FaultEngine | None,
        connections: Mapping[int, Any] | None = None,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.device = device
        self.faults = faults
        self.connections = connections
        #: called after a command changed something ("faults", "measurements", "reset")
        self.on_change = on_change

    def handle(self, command: str, payload: bytes | str) -> dict[str, Any]:
        """Run one command; the reply object (never raises for bad input)."""
        cid: Any = None
        try:
            data = self._parse(payload)
            cid = data.get("id")
            if cid is not None and not isinstance(cid, str | int | float):
                cid = None
                raise CommandError("id: must be a string or a number")
            fields = COMMAND_FIELDS.get(command)
            if fields is None:
                raise CommandError(
                    f"unknown command {command!r}; commands: {', '.join(COMMAND_FIELDS)}"
                )
            unknown = sorted(set(data) - fields - {"id"})
            if unknown:
                allowed = ", ".join(["id", *sorted(fields)])
                raise CommandError(f"unknown field {unknown[0]!r}; {command} takes {allowed}")
            result = getattr(self, f"_cmd_{command}")(data)
        except CommandError as exc:
            log.warning("control: command %s rejected: %s", command, exc)
            return {"id": cid, "command": command, "ok": False, "error": str(exc)}
        except EmulatorError as exc:
            log.warning("control: command %s failed: %s", command, exc)
            return {"id": cid, "command": command, "ok": False, "error": str(exc)}
        except Exception as exc:  # a bug must not kill the control plane
            log.exception("control: command %s crashed", command)
            return {"id": cid, "command": command, "ok": False, "error": f"internal error: {exc}"}
        log.info("control: command %s done", command)
        if self.on_change is not None and not (
            isinstance(data.get("op"), str) and data["op"] in ("list", "show")
        ):
            self.on_change(command)
        return {"id": cid, "command": command, "ok": True, "result": result}

    @staticmethod
    def _parse(payload: bytes | str) -> dict[str, Any]:
        try:
            text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
        except UnicodeDecodeError as exc:
            raise CommandError(f"payload is not UTF-8: {exc}") from None
        if not text.strip():
            raise CommandError("empty payload; send a JSON object")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CommandError(f"payload is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise CommandError(f"payload must be a JSON object, not {type(data).__name__}")
        return data

    @staticmethod
    def _op(data: Mapping[str, Any], ops: tuple[str, ...], default: str | None) -> str:
        op = data.get("op", default)
        if op is None:
            raise CommandError(f"op: missing; choose from {_ops(ops)}")
        if not isinstance(op, str) or op not in ops:
            raise CommandError(f"op: {op!r} is not one of {_ops(ops)}")
        return op

    # ---- faults ------------------------------------------------------------------

    def _cmd_faults(self, data: Mapping[str, Any]) -> dict[str, Any]:
        engine = self.faults
        if engine is None:
            raise CommandError("this device has no fault engine")
        op = self._op(data, FAULT_OPS, None)
        if op == "add":
            if ("rule" in data) == ("spec" in data):
                raise CommandError("add needs exactly one of rule (object) or spec (string)")
            try:
                if "spec" in data:
                    if not isinstance(data["spec"], str):
                        raise CommandError("spec: must be a string like on=CHALLENGE,do=drop")
                    rule = engine.add(data["spec"], origin="mqtt")
                else:
                    if not isinstance(data["rule"], dict):
                        raise CommandError("rule: must be a JSON object of SPEC keys")
                    rule = engine.add(data["rule"], origin="mqtt")
            except FaultSpecError as exc:
                where = "spec" if "spec" in data else "rule"
                detail = f"{exc.key}: {exc.problem}" if exc.key else exc.problem
                raise CommandError(f"{where}: {detail}") from None
            return {"rule": rule_to_dict(rule)}
        if "spec" in data:
            raise CommandError(f"spec: only for op add, not {op}")
        if op == "clear":
            target = data.get("rule")
            if target is None:
                return {"removed": engine.clear()}
            if not isinstance(target, str):
                raise CommandError("rule: give the id of the rule to remove (a string)")
            if engine.remove(target) is None:
                ids = ", ".join(r.id for r in engine.rules) or "none"
                raise CommandError(f"rule: no rule {target!r} (rules: {ids})")
            return {"removed": 1}
        if "rule" in data:
            raise CommandError("rule: not for op list")
        return {
            "rules": [rule_to_dict(r) for r in engine.rules],
            "applied": engine.applied_total,
        }

    # ---- measurements ------------------------------------------------------------

    def _cmd_measurements(self, data: Mapping[str, Any]) -> dict[str, Any]:
        store = getattr(self.device, "measurements", None)
        if store is None:
            raise CommandError("this device has no measurement blocks")
        op = self._op(data, MEASUREMENT_OPS, "set")
        index = data.get("index")
        if index is not None and (
            isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= 0xFF
        ):
            raise CommandError(f"index: {index!r} is not a measurement index (1..254)")
        if op != "set" and ("value" in data or "text" in data):
            raise CommandError(f"value/text: only for op set, not {op}")
        if op == "set":
            if index is None:
                raise CommandError("index: missing (the block to change)")
            if ("value" in data) == ("text" in data):
                raise CommandError("set needs exactly one of value (hex) or text (UTF-8)")
            if "value" in data:
                raw = data["value"]
                if not isinstance(raw, str):
                    raise CommandError("value: must be a hex string")
                try:
                    value = bytes.fromhex(raw.removeprefix("0x").replace(" ", ""))
                except ValueError:
                    raise CommandError(f"value: {raw[:40]!r} is not hex") from None
            else:
                if not isinstance(data["text"], str):
                    raise CommandError("text: must be a string")
                value = data["text"].encode("utf-8")
            block = store.set_value(index, value)
            return {"blocks": [_block(block)]}
        if op == "bump_version":
            return {"blocks": [_block(b) for b in store.bump_version(index)]}
        if index is not None:
            raise CommandError(f"index: not for op {op}")
        if op == "device_reset":
            return {"applied": store.device_reset()}
        return {"blocks": [_block(b) for b in store.snapshot()]}

    # ---- reset -------------------------------------------------------------------

    def _cmd_reset(self, data: Mapping[str, Any]) -> dict[str, Any]:
        conns = self.connections
        target = data.get("connection")
        if target is not None and (isinstance(target, bool) or not isinstance(target, int)):
            raise CommandError(f"connection: {target!r} is not a connection number")
        live = dict(conns) if conns is not None else {}
        if target is not None:
            if target not in live:
                have = ", ".join(str(n) for n in sorted(live)) or "none"
                raise CommandError(f"connection: no live connection {target} (live: {have})")
            numbers = [target]
        else:
            numbers = sorted(live)
        for n in numbers:
            live[n].responder.reset()
        done: dict[str, Any] = {"measurements_applied": []}
        if target is None:
            reset = getattr(self.device, "reset", None)
            if reset is not None:
                done = reset()
        log.warning("control: reset connection(s) %s", numbers or "none")
        return {"connections": numbers, **done}

    # ---- mel -----------------------------------------------------------------------

    def _cmd_mel(self, data: Mapping[str, Any]) -> dict[str, Any]:
        mel = getattr(self.device, "mel", None)
        if mel is None:
            raise CommandError("this device has no measurement extension log (no mel = true block)")
        op = self._op(data, MEL_OPS, "append")
        if op == "list":
            extra = sorted(set(data) - {"op", "id"})
            if extra:
                raise CommandError(f"{extra[0]}: not for op list")
            return {"entries": [_mel_entry(e) for e in mel.entries()]}
        from emulator.profiles import MEASUREMENT_TYPE_NAMES

        index = data.get("index")
        if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
            raise CommandError(f"index: {index!r} is not a measurement index")
        kind = data.get("type", "informational")
        if isinstance(kind, str):
            key = kind.strip().upper().replace("-", "_").replace(" ", "_")
            if key not in MEASUREMENT_TYPE_NAMES:
                raise CommandError(f"type: unknown measurement type {kind!r}")
            value_type = int(MEASUREMENT_TYPE_NAMES[key])
        elif isinstance(kind, int) and not isinstance(kind, bool):
            value_type = kind
        else:
            raise CommandError("type: a measurement type name or number")
        if ("value" in data) == ("text" in data):
            raise CommandError("append needs exactly one of value (hex) or text (UTF-8)")
        if "value" in data:
            if not isinstance(data["value"], str):
                raise CommandError("value: must be a hex string")
            try:
                value = bytes.fromhex(data["value"].removeprefix("0x").replace(" ", ""))
            except ValueError:
                raise CommandError(f"value: {data['value'][:40]!r} is not hex") from None
        else:
            if not isinstance(data["text"], str):
                raise CommandError("text: must be a string")
            value = data["text"].encode("utf-8")
        raw = data.get("raw", True)
        if not isinstance(raw, bool):
            raise CommandError("raw: must be true or false")
        entry = mel.append(index, value_type, value, raw=raw)
        return {"entry": _mel_entry(entry), "entries": len(mel)}

    # ---- provisioning --------------------------------------------------------------

    def _cmd_provisioning(self, data: Mapping[str, Any]) -> dict[str, Any]:
        prov = getattr(self.device, "provisioning", None)
        if prov is None:
            raise CommandError("this device has no key pairs")
        op = self._op(data, PROVISIONING_OPS, "show")
        if op == "device_reset":
            result: dict[str, Any] = self.device.reset()
            return result
        described: dict[str, Any] = prov.describe()
        return described

    # ---- tdisp -------------------------------------------------------------------

    def _cmd_tdisp(self, data: Mapping[str, Any]) -> dict[str, Any]:
        state = getattr(self.device, "tdisp", None)
        if state is None:
            raise CommandError("this device has no TDISP interfaces (no [tdisp] in its profile)")
        op = self._op(data, TDISP_OPS, "list")
        raw = data.get("function_id")
        function_id: int | None = None
        if raw is not None:
            if isinstance(raw, bool) or not isinstance(raw, int | str):
                raise CommandError('function_id: give a number or a hex string like "0xBEEF"')
            try:
                function_id = int(raw, 0) if isinstance(raw, str) else raw
            except ValueError:
                raise CommandError(f"function_id: {raw!r} is not a number") from None
            if not 0 <= function_id <= 0xFFFF:
                raise CommandError(f"function_id: 0x{function_id:X} is not a Requester ID")
        reason = data.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise CommandError("reason: must be a string")
        if op in ("list", "reset") and (raw is not None or reason is not None):
            raise CommandError(f"function_id/reason: not for op {op}")
        try:
            if op == "error":
                why = f"control plane: {reason}" if reason else "control plane: forced to ERROR"
                changed = state.force_error(function_id, why)
            elif op == "flr":
                if reason is not None:
                    raise CommandError("reason: not for op flr")
                changed = state.function_level_reset(function_id)
            elif op == "reset":
                changed = state.conventional_reset()
            else:
                return {"interfaces": state.snapshot()}
        except KeyError as exc:
            raise CommandError(f"function_id: {exc.args[0]}") from None
        log.warning("control: tdisp %s changed %s", op, changed or "nothing")
        return {"changed": [f"0x{f:04X}" for f in changed], "interfaces": state.snapshot()}


def _mel_entry(entry: Any) -> dict[str, Any]:
    return {
        "mel_index": entry.mel_index,
        "measurement_index": entry.meas_index,
        "type": entry.value_type & 0x7F,
        "raw": bool(entry.value_type & 0x80),
        "value": entry.value.hex(),
    }


def _block(block: Any) -> dict[str, Any]:
    return {
        "index": block.index,
        "type": getattr(block.kind, "name", str(block.kind)).lower(),
        "value": block.value.hex(),
        "generation": block.generation,
    }
