"""The fault SPEC grammar (``--fault SPEC``, profile ``[[faults]]``, MQTT commands).

A SPEC is a comma-separated list of ``key=value`` items, e.g.::

    on=GET_MEASUREMENTS,nth=2,do=error:Busy
    on=CHALLENGE,do=not_ready,rdt=3
    prob=0.25,seed=7,do=drop
    on=KEY_EXCHANGE,do=lie:bad_signature

*When* keys (all optional):

=========  ==================================================================
``on``     request codes, ``|``-separated: names (``GET_MEASUREMENTS``, any case)
           or numbers (``0xE0``); ``any`` / ``*`` (the default) matches all
``session`` ``in`` (only inside a secured session), ``out``, ``any`` (default)
``conn``   connection numbers, ``|``-separated (the server numbers them from 1)
``version`` SPDM versions, ``|``-separated (``1.2|1.3``): the negotiated one
``tdisp``  TDISP message types, ``|``-separated (``LOCK_INTERFACE_REQUEST``, any
           case, or numbers ``0x83``): only VENDOR_DEFINED_REQUESTs carrying one
``nth``    fire on the n-th matching request only
``every``  fire on every n-th matching request
``after``  fire on every matching request after the first n
``prob``   fire with this probability (0 < p <= 1), drawn from a seeded stream
``seed``   seed of the ``prob`` draws (default: the engine's seed)
``times``  fire at most this many times
``id``     a name for the rule (default ``f1``, ``f2``...)
=========  ==================================================================

*What*: ``do=ACTION[:ARG]`` plus the action's own keys:

===========================  ========================================================
``error:CODE``               ERROR instead of the response; CODE an ErrorCode name
                             (``Busy``, ``Unspecified``, ``ResetRequired``,
                             ``RequestResynch``, ``VendorDefined``...) or number;
                             keys ``data`` (Param2), ``ext`` (extended data, hex)
``not_ready``                ERROR(ResponseNotReady); the RESPOND_IF_READY that
                             follows gets the real answer; keys ``rdt``
                             (RDTExponent, default 1), ``rdtm`` (default 2),
                             ``token`` (default: per connection counter),
                             ``repeat`` (RESPOND_IF_READYs answered not-ready again)
``delay:SECONDS``            wait before answering; ``delay:ct`` waits ``factor``
                             (default 2) times the device's CT (2^CTExponent us)
``drop``                     no answer (the responder still processed the request)
``close[:before|after]``     close the connection without answering (``before``,
                             the default) or right after answering (``after``)
``partial:N``                send only N bytes of the reply frame, then close
``duplicate[:N]``            send the response N times (default 2)
``flip:OFFSET``              XOR the response byte at OFFSET with ``mask``
                             (default 0x01); ``at=O1|O2`` for several bytes
``set:OFFSET``               set the byte at OFFSET to ``value``
``truncate:N``               keep the first N bytes (``-N``: drop the last N)
``extend:N``                 append N bytes of ``value`` (default 0)
``code:CODE``                change the response code (name or number)
``version:V``                change the version byte (``1.1`` or ``0x11``)
``length[:+N|-N|=N]``        change the response's length field (default +1)
``lie:KIND``                 a well-formed lie: ``bad_signature``, ``other_key``,
                             ``chain_digest_mismatch``, ``expired_chain``,
                             ``untrusted_chain``, ``wrong_measurement``,
                             ``reused_nonce``
``tamper[:request|response]`` man in the middle: flip a bit of the request the
                             responder sees (default) or of the signed response the
                             requester sees; keys ``at``, ``mask``
``record:KIND``              secured messages: ``bad_mac``, ``bad_seq``,
                             ``bad_session_id``
``mutate``                   hostile device: a seeded, structure-aware lie in the
                             response (length/count fields, codes, version, algorithm
                             bits, truncation, signature/hash/DER bytes); ``seed``
                             seeds it (emulator.faults.hostile; ``--mutate SEED[:RATE]``)
``tdisp:KIND``               a misbehaving TDISP device (PCIe 6.1 ch. 11): ``refuse_lock``
                             (LOCK_INTERFACE_REQUEST gets TDISP_ERROR ``code``, default
                             INVALID_DEVICE_CONFIGURATION), ``refuse`` (any matching
                             TDISP request, default code UNSPECIFIED), ``error`` (the TDI
                             moves to ERROR before the request is handled),
                             ``wrong_nonce`` (LOCK returns a nonce START will not accept),
                             ``report_lie`` (the reported MMIO range 0 moves after LOCK
                             while the TDI stays locked); key ``code`` (a TDISP error
                             code name or number)
===========================  ========================================================

Numbers may be decimal or ``0x`` hex; offsets may be negative (from the end).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from emulator.codec.constants import ErrorCode, RequestCode, ResponseCode, SpdmVersion
from emulator.codec.tdisp import TdispErrorCode, TdispRequest
from emulator.faults.model import (
    Action,
    ActionKind,
    FaultRule,
    FaultSpecError,
    LieKind,
    RecordFault,
    TamperSide,
    When,
)
from emulator.responder.vendor_defined.tdisp import TdispFaultKind

#: keys that say when a rule fires
WHEN_KEYS = (
    "id",
    "on",
    "session",
    "conn",
    "version",
    "tdisp",
    "nth",
    "every",
    "after",
    "prob",
    "seed",
    "times",
)
#: action parameter keys, and which actions accept them
PARAM_KEYS: dict[str, frozenset[ActionKind]] = {
    "data": frozenset({ActionKind.ERROR}),
    "ext": frozenset({ActionKind.ERROR}),
    "rdt": frozenset({ActionKind.NOT_READY}),
    "rdtm": frozenset({ActionKind.NOT_READY}),
    "token": frozenset({ActionKind.NOT_READY}),
    "repeat": frozenset({ActionKind.NOT_READY}),
    "factor": frozenset({ActionKind.DELAY}),
    "mask": frozenset({ActionKind.FLIP, ActionKind.TAMPER}),
    "value": frozenset({ActionKind.SET, ActionKind.EXTEND}),
    "at": frozenset({ActionKind.FLIP, ActionKind.SET, ActionKind.TAMPER}),
    "code": frozenset({ActionKind.TDISP}),
}
ALL_KEYS = (*WHEN_KEYS, "do", *PARAM_KEYS)

_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _norm(name: str) -> str:
    return name.strip().upper().replace("-", "_")


def _int(key: str, text: str, lo: int | None = None, hi: int | None = None) -> int:
    t = text.strip()
    try:
        value = int(t, 0)
    except ValueError:
        raise FaultSpecError(key, f"{text!r} is not an integer") from None
    if lo is not None and value < lo:
        raise FaultSpecError(key, f"{value} is below the minimum {lo}")
    if hi is not None and value > hi:
        raise FaultSpecError(key, f"{value} is above the maximum {hi}")
    return value


def _float(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FaultSpecError(key, f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise FaultSpecError(key, f"{text!r} is not a finite number")
    return value


def _list(text: str) -> list[str]:
    return [p.strip() for p in text.split("|") if p.strip()]


def _enum_code(key: str, text: str, enum: type[RequestCode] | type[ResponseCode]) -> int:
    t = text.strip()
    if t[:2].lower() == "0x" or t.isdigit():
        return _int(key, t, 0, 0xFF)
    member = enum.__members__.get(_norm(t))
    if member is None:
        raise FaultSpecError(
            key, f"unknown {'request' if enum is RequestCode else 'response'} code {t!r}"
        )
    return int(member)


def parse_error_code(text: str, key: str = "do") -> int:
    """An ErrorCode name (any case, ``Busy``, ``response_not_ready``) or number."""
    t = text.strip()
    if t[:2].lower() == "0x" or t.isdigit():
        return _int(key, t, 0, 0xFF)
    wanted = t.replace("_", "").replace("-", "").lower()
    for member in ErrorCode:
        if member.name.lower() == wanted:
            return int(member)
    choices = ", ".join(m.name for m in ErrorCode)
    raise FaultSpecError(key, f"unknown error code {t!r}; choose from {choices}")


def parse_tdisp_error(text: str, key: str = "code") -> int:
    """A TDISP ERROR_CODE name (``BUSY``, ``invalid-nonce``) or number (PCIe 6.1 table 11-27)."""
    t = text.strip()
    if t[:2].lower() == "0x" or t.isdigit():
        return _int(key, t, 0, 0xFFFFFFFF)
    member = TdispErrorCode.__members__.get(_norm(t))
    if member is None:
        choices = ", ".join(TdispErrorCode.__members__)
        raise FaultSpecError(key, f"unknown TDISP error code {t!r}; choose from {choices}")
    return int(member)


def _tdisp_type(key: str, text: str) -> int:
    t = text.strip()
    if t[:2].lower() == "0x" or t.isdigit():
        code = _int(key, t, 0x81, 0x8B)
    else:
        member = TdispRequest.__members__.get(_norm(t))
        if member is None:
            choices = ", ".join(TdispRequest.__members__)
            raise FaultSpecError(key, f"unknown TDISP request {t!r}; choose from {choices}")
        code = int(member)
    return code


#: the TDISP messages a tdisp:KIND fault applies to when the rule names none
_TDISP_DEFAULT_FILTER: dict[TdispFaultKind, frozenset[int]] = {
    TdispFaultKind.REFUSE_LOCK: frozenset({TdispRequest.LOCK_INTERFACE_REQUEST}),
    TdispFaultKind.WRONG_NONCE: frozenset({TdispRequest.LOCK_INTERFACE_REQUEST}),
    TdispFaultKind.REPORT_LIE: frozenset({TdispRequest.GET_DEVICE_INTERFACE_REPORT}),
}


def _version(key: str, text: str) -> int:
    t = text.strip()
    if t[:2].lower() == "0x":
        return _int(key, t, 0, 0xFF)
    try:
        return int(SpdmVersion.from_text(t))
    except ValueError:
        raise FaultSpecError(key, f"{t!r} is not an SPDM version (1.0, 1.1, 1.2, 1.3)") from None


def _choice(key: str, text: str, enum: Any, what: str) -> Any:
    t = text.strip().lower().replace("-", "_")
    for member in enum:
        if member.value == t:
            return member
    choices = ", ".join(m.value for m in enum)
    raise FaultSpecError(key, f"unknown {what} {text.strip()!r}; choose from {choices}")


def split_items(text: str) -> list[tuple[str, str]]:
    """``"a=1,b=2"`` -> ``[("a", "1"), ("b", "2")]``; FaultSpecError if an item is not k=v."""
    items: list[tuple[str, str]] = []
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise FaultSpecError("", f"{part!r} is not key=value")
        items.append((key.strip().lower(), value.strip()))
    return items


def _parse_action(do: str, params: dict[str, str]) -> tuple[Action, str]:
    """The ``do=`` value and its parameter keys -> Action and its canonical text."""
    name, _, arg = do.partition(":")
    name = name.strip().lower().replace("-", "_")
    arg = arg.strip()
    try:
        kind = ActionKind(name)
    except ValueError:
        choices = ", ".join(k.value for k in ActionKind)
        raise FaultSpecError("do", f"unknown action {name!r}; choose from {choices}") from None
    for key in params:
        if kind not in PARAM_KEYS[key]:
            users = ", ".join(sorted(k.value for k in PARAM_KEYS[key]))
            raise FaultSpecError(key, f"does not apply to do={kind.value} (only to {users})")

    def needs_arg(what: str) -> str:
        if not arg:
            raise FaultSpecError("do", f"{kind.value} needs an argument: {kind.value}:{what}")
        return arg

    def no_arg() -> None:
        if arg:
            raise FaultSpecError("do", f"{kind.value} takes no argument (got {arg!r})")

    def offsets(default: str | None) -> tuple[int, ...]:
        if "at" in params and arg:
            raise FaultSpecError("at", f"give the offset either as {kind.value}:N or as at=")
        text = params.get("at", arg) or default
        if text is None:
            raise FaultSpecError("do", f"{kind.value} needs an offset: {kind.value}:N or at=N")
        out = tuple(_int("at", o, -(1 << 20), 1 << 20) for o in _list(text))
        if not out:
            raise FaultSpecError("at", "no offset given")
        return out

    mask = _int("mask", params["mask"], 1, 0xFF) if "mask" in params else 0x01
    canon = kind.value + (f":{arg}" if arg else "")
    if kind is ActionKind.ERROR:
        code = parse_error_code(needs_arg("CODE"))
        ext = b""
        if "ext" in params:
            try:
                ext = bytes.fromhex(params["ext"].removeprefix("0x"))
            except ValueError:
                raise FaultSpecError("ext", f"{params['ext']!r} is not hex bytes") from None
        data = _int("data", params["data"], 0, 0xFF) if "data" in params else 0
        try:
            canon = f"error:{ErrorCode(code).name}"
        except ValueError:
            canon = f"error:0x{code:02X}"
        return Action(kind, error_code=code, data=data, ext=ext), canon
    if kind is ActionKind.NOT_READY:
        no_arg()
        return (
            Action(
                kind,
                rdt=_int("rdt", params["rdt"], 0, 0xFF) if "rdt" in params else 1,
                rdtm=_int("rdtm", params["rdtm"], 0, 0xFF) if "rdtm" in params else 2,
                token=_int("token", params["token"], 0, 0xFF) if "token" in params else None,
                repeat=_int("repeat", params["repeat"], 0, 255) if "repeat" in params else 0,
            ),
            canon,
        )
    if kind is ActionKind.DELAY:
        text = needs_arg("SECONDS")
        if text.lower() == "ct":
            factor = _float("factor", params["factor"]) if "factor" in params else 2.0
            if factor <= 0:
                raise FaultSpecError("factor", f"{factor} is not positive")
            return Action(kind, ct_factor=factor), canon
        if "factor" in params:
            raise FaultSpecError("factor", "only applies to delay:ct")
        seconds = _float("do", text)
        if not 0 <= seconds <= 3600:
            raise FaultSpecError("do", f"delay {seconds} s is not within 0..3600")
        return Action(kind, seconds=seconds), canon
    if kind is ActionKind.DROP:
        no_arg()
        return Action(kind), canon
    if kind is ActionKind.CLOSE:
        when = (arg or "before").lower()
        if when not in ("before", "after"):
            raise FaultSpecError("do", f"close:{arg}: choose close:before or close:after")
        return Action(kind, close_after=when == "after"), f"close:{when}"
    if kind is ActionKind.PARTIAL:
        return Action(kind, count=_int("do", needs_arg("BYTES"), 0, 1 << 24)), canon
    if kind is ActionKind.DUPLICATE:
        copies = _int("do", arg, 2, 16) if arg else 2
        return Action(kind, copies=copies), f"duplicate:{copies}"
    if kind is ActionKind.FLIP:
        return Action(kind, offsets=offsets(None), mask=mask), canon
    if kind is ActionKind.SET:
        if "value" not in params:
            raise FaultSpecError("value", "set needs value=BYTE")
        return (
            Action(kind, offsets=offsets(None), value=_int("value", params["value"], 0, 0xFF)),
            canon,
        )
    if kind is ActionKind.TRUNCATE:
        n = _int("do", needs_arg("N"), -(1 << 20), 1 << 20)
        return Action(kind, count=n), canon
    if kind is ActionKind.EXTEND:
        n = _int("do", needs_arg("N"), 1, 1 << 16)
        value = _int("value", params["value"], 0, 0xFF) if "value" in params else 0
        return Action(kind, count=n, value=value), canon
    if kind is ActionKind.CODE:
        code = _enum_code("do", needs_arg("CODE"), ResponseCode)
        return Action(kind, new_byte=code), canon
    if kind is ActionKind.VERSION:
        return Action(kind, new_byte=_version("do", needs_arg("VERSION"))), canon
    if kind is ActionKind.LENGTH:
        text = arg or "+1"
        if text.startswith("="):
            return Action(kind, length_set=_int("do", text[1:], 0, 0xFFFFFFFF)), canon
        if not text.startswith(("+", "-")):
            raise FaultSpecError("do", f"length:{text}: write +N, -N or =N")
        delta = _int("do", text, -(1 << 24), 1 << 24)
        return Action(kind, length_delta=delta), f"length:{'+' if delta >= 0 else ''}{delta}"
    if kind is ActionKind.LIE:
        lie = _choice("do", needs_arg("KIND"), LieKind, "lie")
        return Action(kind, lie=lie), f"lie:{lie.value}"
    if kind is ActionKind.TAMPER:
        side = _choice("do", arg or "request", TamperSide, "tamper side")
        offs = offsets("") if "at" in params else ()
        return Action(kind, tamper=side, offsets=offs, mask=mask), f"tamper:{side.value}"
    if kind is ActionKind.RECORD:
        rec = _choice("do", needs_arg("KIND"), RecordFault, "record fault")
        return Action(kind, record=rec), f"record:{rec.value}"
    if kind is ActionKind.MUTATE:
        no_arg()
        return Action(kind), canon
    if kind is ActionKind.TDISP:
        fault = _choice("do", needs_arg("KIND"), TdispFaultKind, "TDISP fault")
        refusing = fault in (TdispFaultKind.REFUSE, TdispFaultKind.REFUSE_LOCK)
        if "code" in params and not refusing:
            raise FaultSpecError(
                "code", f"only for tdisp:refuse and tdisp:refuse_lock, not {fault.value}"
            )
        default = (
            TdispErrorCode.INVALID_DEVICE_CONFIGURATION
            if fault is TdispFaultKind.REFUSE_LOCK
            else TdispErrorCode.UNSPECIFIED
        )
        code = parse_tdisp_error(params["code"]) if "code" in params else int(default)
        return Action(kind, tdisp=fault, tdisp_code=code), f"tdisp:{fault.value}"
    raise FaultSpecError("do", f"unhandled action {kind.value}")  # pragma: no cover


def rule_from_items(
    items: Iterable[tuple[str, str]], source: str = "", origin: str = "api"
) -> FaultRule:
    """Build a rule from (key, value) pairs; FaultSpecError names the bad key."""
    seen: dict[str, str] = {}
    try:
        for key, value in items:
            if key not in ALL_KEYS:
                raise FaultSpecError(key, f"unknown key; choose from {', '.join(ALL_KEYS)}")
            if key in seen:
                raise FaultSpecError(key, "is given twice")
            if not value:
                raise FaultSpecError(key, "has no value")
            seen[key] = value
        if "do" not in seen:
            raise FaultSpecError("do", "missing: a fault needs an action (do=ACTION)")
        params = {k: v for k, v in seen.items() if k in PARAM_KEYS}
        action, action_text = _parse_action(seen["do"], params)
        when, when_text = _parse_when(seen, action)
    except FaultSpecError as exc:
        raise FaultSpecError(exc.key, exc.problem, source) from None
    rule_id = seen.get("id", "")
    if rule_id and not _ID_RE.match(rule_id):
        raise FaultSpecError("id", f"{rule_id!r}: use 1-64 letters, digits, '_', '.', '-'", source)
    seed = None
    if "seed" in seen:
        seed = _int("seed", seen["seed"], 0)
    canon = ",".join(
        [*when_text, f"do={action_text}"] + [f"{k}={params[k]}" for k in PARAM_KEYS if k in params]
    )
    return FaultRule(
        rule_id, when, action, spec=canon, action_text=action_text, seed=seed, origin=origin
    )


def _parse_when(seen: Mapping[str, str], action: Action) -> tuple[When, list[str]]:
    text: list[str] = []
    codes: set[int] = set()
    if "on" in seen:
        names = _list(seen["on"])
        if not names:
            raise FaultSpecError("on", "no request code given")
        if not any(n.lower() in ("any", "*") for n in names):
            for n in names:
                codes.add(_enum_code("on", n, RequestCode))
    tdisp: frozenset[int] = frozenset()
    if "tdisp" in seen:
        tdisp = frozenset(_tdisp_type("tdisp", n) for n in _list(seen["tdisp"]))
        if not tdisp:
            raise FaultSpecError("tdisp", "no TDISP message type given")
    elif action.tdisp is not None:
        tdisp = _TDISP_DEFAULT_FILTER.get(action.tdisp, frozenset())
    if tdisp or action.kind is ActionKind.TDISP:
        vendor = int(RequestCode.VENDOR_DEFINED_REQUEST)
        if codes and codes != {vendor}:
            raise FaultSpecError(
                "on", "TDISP messages travel in VENDOR_DEFINED_REQUEST; drop on= or use it"
            )
        codes = {vendor}
    if codes:
        text.append("on=" + "|".join(_code_text(c) for c in sorted(codes)))
    if tdisp:
        text.append("tdisp=" + "|".join(TdispRequest(c).name for c in sorted(tdisp)))
    session = "any"
    if "session" in seen:
        s = seen["session"].strip().lower()
        session = {"in": "in", "inside": "in", "out": "out", "outside": "out", "any": "any"}.get(
            s, ""
        )
        if not session:
            raise FaultSpecError("session", f"{s!r}: choose in, out or any")
        if session != "any":
            text.append(f"session={session}")
    conns = frozenset(_int("conn", c, 0) for c in _list(seen.get("conn", "")))
    if "conn" in seen and not conns:
        raise FaultSpecError("conn", "no connection number given")
    if conns:
        text.append("conn=" + "|".join(str(c) for c in sorted(conns)))
    versions = frozenset(_version("version", v) for v in _list(seen.get("version", "")))
    if "version" in seen and not versions:
        raise FaultSpecError("version", "no version given")
    if versions:
        text.append("version=" + "|".join(f"{v >> 4}.{v & 0xF}" for v in sorted(versions)))
    nth = _int("nth", seen["nth"], 1) if "nth" in seen else None
    every = _int("every", seen["every"], 1) if "every" in seen else None
    after = _int("after", seen["after"], 0) if "after" in seen else None
    times = _int("times", seen["times"], 1) if "times" in seen else None
    prob = None
    if "prob" in seen:
        prob = _float("prob", seen["prob"])
        if not 0 < prob <= 1:
            raise FaultSpecError("prob", f"{prob} is not within (0, 1]")
    for key, value in (("nth", nth), ("every", every), ("after", after), ("prob", prob)):
        if value is not None:
            text.append(f"{key}={value}")
    if "seed" in seen:
        text.append(f"seed={_int('seed', seen['seed'], 0)}")
    if times is not None:
        text.append(f"times={times}")
    when = When(frozenset(codes), session, conns, versions, tdisp, nth, every, after, prob, times)
    return when, text


def _code_text(code: int) -> str:
    try:
        return RequestCode(code).name
    except ValueError:
        return f"0x{code:02X}"


def parse_fault_spec(text: str, origin: str = "cli") -> FaultRule:
    """Parse one SPEC string (``on=GET_MEASUREMENTS,nth=2,do=error:Busy``).

    Raises :class:`FaultSpecError` whose message names the bad key and the problem.
    """
    try:
        items = split_items(text)
    except FaultSpecError as exc:
        raise FaultSpecError(exc.key, exc.problem, text) from None
    if not items:
        raise FaultSpecError("", "empty fault spec", text)
    return rule_from_items(items, source=text, origin=origin)


def _value_text(key: str, value: Any) -> str:
    if isinstance(value, bool) or value is None:
        raise FaultSpecError(key, f"{value!r} is not a valid value")
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, list | tuple):
        return "|".join(_value_text(key, v) for v in value)
    raise FaultSpecError(key, f"{type(value).__name__} is not a valid value")


def rule_from_mapping(data: Mapping[str, Any], source: str = "", origin: str = "api") -> FaultRule:
    """A rule from a mapping (profile table, MQTT JSON): the SPEC keys as fields.

    ``{"on": ["GET_MEASUREMENTS"], "nth": 2, "do": "error:Busy"}``, or
    ``{"spec": "on=GET_MEASUREMENTS,nth=2,do=error:Busy"}`` (other keys may be added).
    """
    if not isinstance(data, Mapping):
        raise FaultSpecError("", f"a fault rule is an object, not {type(data).__name__}", source)
    items: list[tuple[str, str]] = []
    for key, value in data.items():
        if not isinstance(key, str):
            raise FaultSpecError(str(key), "keys must be strings", source)
        if key == "spec":
            if not isinstance(value, str):
                raise FaultSpecError("spec", "must be a string", source)
            try:
                items.extend(split_items(value))
            except FaultSpecError as exc:
                raise FaultSpecError("spec", exc.problem, source) from None
            continue
        try:
            items.append((key.lower(), _value_text(key, value)))
        except FaultSpecError as exc:
            raise FaultSpecError(exc.key, exc.problem, source) from None
    return rule_from_items(items, source=source, origin=origin)


def rule_to_dict(rule: FaultRule) -> dict[str, Any]:
    """A JSON-friendly view of a rule (for ``list`` replies and telemetry)."""
    return {
        "id": rule.id,
        "spec": rule.spec,
        "origin": rule.origin,
        "matched": rule.count,
        "fired": rule.fired,
    }


#: what the CLI shows under ``--help`` for ``--fault``
FAULT_HELP = (
    "inject a fault: comma-separated key=value, e.g. on=GET_MEASUREMENTS,nth=2,do=error:Busy "
    "(keys: on, session, conn, version, tdisp, nth, every, after, prob, seed, times, id, do; "
    "see 'Fault injection' in README.md). May be repeated."
)
