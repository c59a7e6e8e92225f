"""CXL Trusted Security Protocol target (CXL 3.1 11.5, TSP 1.0) over PCI-SIG
VENDOR_DEFINED_REQUEST with the CXL VendorID 0x1E98, protocol 0x01.

The requests libspdm's requester application flow sends (spdm-emu
``cxl_tsp_process_session_message``) are answered; every other opcode gets ERROR_RSP
(UNSUPPORTED_REQUEST, ErrorData = the opcode):

* GET_TARGET_TSP_VERSION -> one version entry, 1.0.  The first session of the device that
  asks becomes the *primary* session (again the next one, while the configuration is
  unlocked and the primary session has ended);
* GET_TARGET_CAPABILITIES -> the profile's [cxl_tsp] capabilities (no secondary sessions);
* SET_TARGET_CONFIGURATION (primary session, CONFIG_UNLOCKED) -> checked against the
  capabilities with the rules libspdm's requester applies to a configuration
  (``cxl_tsp_validate_configruation``): INVALID_REQUEST for a feature, algorithm or
  granularity the target does not support or a contradictory combination;
* GET_TARGET_CONFIGURATION (primary session) -> the configuration and current TSP state;
* GET_TARGET_CONFIGURATION_REPORT (primary session) -> the report by offset/length;
* LOCK_TARGET_CONFIGURATION (primary session) -> CONFIG_LOCKED (ALREADY_LOCKED when it is;
  INVALID_SECURITY_CONFIGURATION before a configuration was set);
* SET_TARGET_TE_STATE (primary session, CONFIG_LOCKED, explicit in-band TE state change
  enabled) -> the TE state of 64-byte aligned memory ranges.

Outside a secure session, and from a session without the privilege: ERROR_RSP
(NO_PRIVILEGE).  A wrong size: INVALID_REQUEST; TSPVersion other than 1.0:
VERSION_MISMATCH.  The state lives on the device (the target's configuration outlives
connections until a device reset).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emulator.codec.cxl import (
    GET_CONFIG_RSP_SIZE,
    SET_CONFIG_SIZE,
    TSP_CAPABILITIES_RSP,
    TSP_CONFIG_HEAD,
    TSP_GET_CONFIG_RSP_HEAD,
    TSP_IB_ENTRY,
    TSP_MEMORY_RANGE,
    TSP_REPORT_REQ,
    TSP_REPORT_RSP,
    TSP_SET_CONFIG_TAIL,
    TSP_SIMPLE,
    TSP_TE_STATE_REQ,
    TSP_VERSION_10,
    TSP_VERSION_RSP,
    TspErrorCode,
    TspOpcode,
    TspState,
    tsp_error,
)
from emulator.profiles import (
    CXL_TSP_ALGORITHMS,
    CXL_TSP_CONFIG_FEATURES,
    CXL_TSP_ENCRYPTION_FEATURES,
    CXL_TSP_TE_FEATURES,
)
from emulator.responder.base import Request

if TYPE_CHECKING:
    from emulator.profiles import CxlTspSection, Profile
    from emulator.responder.core import Responder

log = logging.getLogger("emulator.responder.cxl_tsp")

EVENT = "cxl_tsp"
Notify = Callable[[str, object], None]
SessionKey = tuple[int, int]

# SET/GET configuration bits (they differ from the capability bits for CKID_BASED_REQUIRED)
ENABLE_ENCRYPTION = 0x01
ENABLE_CKID = 0x02
ENABLE_RANGE = 0x04
ENABLE_CKID_REQUIRED = 0x08
TE_WRITE_AC, TE_READ_AC, TE_IMPLICIT, TE_OOB, TE_IB, TE_SANITIZE = (1 << i for i in range(6))
GRANULARITY = 64  # bytes: the smallest TE state granularity


def _bits(names: list[str], table: dict[str, int]) -> int:
    out = 0
    for n in names:
        out |= table[n.strip().upper().replace("-", "_")]
    return out


class TspReply(Exception):
    """An ERROR_RSP for the request being handled."""

    def __init__(self, code: TspErrorCode, reason: str, data: int = 0) -> None:
        super().__init__(f"{code.name}: {reason}")
        self.code = code
        self.reason = reason
        self.data = data


@dataclass
class TspConfiguration:
    """What SET_TARGET_CONFIGURATION set (and GET_TARGET_CONFIGURATION reports)."""

    encryption_features: int = 0
    algorithm: int = 0
    te_features: int = 0
    oob_granularity: int = 0
    configuration_features: int = 0
    ckid_base: int = 0
    number_of_ckids: int = 0
    ib_entries: tuple[tuple[int, int], ...] = ((0, 0),) * 8

    def encode_get(self, state: TspState) -> bytes:
        head = TSP_GET_CONFIG_RSP_HEAD.pack(
            TSP_VERSION_10,
            TspOpcode.GET_TARGET_CONFIGURATION_RSP,
            self.encryption_features,
            self.algorithm,
            self.te_features,
            0,
            self.oob_granularity,
            self.configuration_features & 0x01,  # SPECIAL_PURPOSE_MEMORY is SET-only
            0,
            self.ckid_base,
            self.number_of_ckids,
            state,
        )
        entries = b"".join(TSP_IB_ENTRY.pack(g, i) for g, i in self.ib_entries)
        out = head + entries + bytes(16)
        assert len(out) == GET_CONFIG_RSP_SIZE
        return out


@dataclass
class CxlTspState:
    """The target's TSP state, shared by the device's connections."""

    cfg: CxlTspSection
    state: TspState = TspState.CONFIG_UNLOCKED
    configuration: TspConfiguration | None = None
    primary: SessionKey | None = None
    primary_alive: bool = False
    #: (start, length) -> TE state of the ranges SET_TARGET_TE_STATE set
    te_states: dict[tuple[int, int], int] = field(default_factory=dict)
    _notify: Notify | None = None

    @classmethod
    def from_profile(cls, profile: Profile) -> CxlTspState | None:
        cfg = profile.cxl_tsp
        if cfg is None or not cfg.enabled:
            return None
        return cls(cfg)

    def bind(self, notify: Notify | None) -> None:
        self._notify = notify

    def session_ended(self, connection: int, session_id: int) -> None:
        if self.primary == (connection, session_id):
            self.primary_alive = False

    def reset(self) -> None:
        """A device reset: unlocked, unconfigured, no primary session."""
        self.state = TspState.CONFIG_UNLOCKED
        self.configuration = None
        self.primary = None
        self.primary_alive = False
        self.te_states.clear()

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state.name}
        if self.primary is not None:
            out["primary"] = {
                "connection": self.primary[0],
                "session": f"0x{self.primary[1]:08X}",
                "alive": self.primary_alive,
            }
        return out

    def publish(self, change: str, text: str) -> None:
        if self._notify is not None:
            self._notify(EVENT, {"change": change, "state": self.state.name, "text": text})

    # ---- capabilities ---------------------------------------------------------------

    @property
    def encryption_supported(self) -> int:
        return _bits(self.cfg.encryption_features, CXL_TSP_ENCRYPTION_FEATURES)

    @property
    def algorithms_supported(self) -> int:
        return _bits(self.cfg.algorithms, CXL_TSP_ALGORITHMS)

    @property
    def te_supported(self) -> int:
        return _bits(self.cfg.te_features, CXL_TSP_TE_FEATURES)

    @property
    def config_supported(self) -> int:
        return _bits(self.cfg.configuration_features, CXL_TSP_CONFIG_FEATURES)

    def capabilities(self) -> bytes:
        c = self.cfg
        return TSP_CAPABILITIES_RSP.pack(
            TSP_VERSION_10,
            TspOpcode.GET_TARGET_CAPABILITIES_RSP,
            self.encryption_supported,
            self.algorithms_supported,
            c.range_based_keys,
            0,
            self.te_supported,
            0,
            c.explicit_oob_granularity,
            c.explicit_ib_granularity,
            self.config_supported,
            0,
            c.number_of_ckids,
            0,  # no secondary sessions
        )

    def report(self) -> bytes:
        """The configuration report: valid-fields byte (bit 0: the DVSEC for CXL devices
        snapshot), reserved, then the register snapshots (zeros in this emulator)."""
        return bytes((0x01, 0, 0, 0)) + bytes(self.cfg.report_size - 4)


def tsp_state(r: Responder) -> CxlTspState | None:
    state = getattr(r.device, "cxl_tsp", None)
    return state if isinstance(state, CxlTspState) else None


def handle(r: Responder, req: Request, state: CxlTspState, msg: bytes) -> bytes:
    """Answer one TSP message (``msg`` starts at TSPVersion): the response or ERROR_RSP."""
    version = msg[0] if msg else TSP_VERSION_10
    try:
        return _handle(r, req, state, msg)
    except TspReply as err:
        op = msg[1] if len(msg) > 1 else -1
        log.info(
            "conn %d: TSP opcode %s -> ERROR_RSP(%s): %s",
            r.connection_number,
            f"0x{op:02X}" if op >= 0 else "(none)",
            err.code.name,
            err.reason,
        )
        return tsp_error(version, err.code, err.data)


_SIZES = {
    TspOpcode.GET_TARGET_TSP_VERSION: TSP_SIMPLE.size,
    TspOpcode.GET_TARGET_CAPABILITIES: TSP_SIMPLE.size,
    TspOpcode.SET_TARGET_CONFIGURATION: SET_CONFIG_SIZE,
    TspOpcode.GET_TARGET_CONFIGURATION: TSP_SIMPLE.size,
    TspOpcode.GET_TARGET_CONFIGURATION_REPORT: TSP_REPORT_REQ.size,
    TspOpcode.LOCK_TARGET_CONFIGURATION: TSP_SIMPLE.size,
}
#: requests only the primary session may send
_PRIVILEGED = frozenset(
    {
        TspOpcode.SET_TARGET_CONFIGURATION,
        TspOpcode.GET_TARGET_CONFIGURATION,
        TspOpcode.GET_TARGET_CONFIGURATION_REPORT,
        TspOpcode.LOCK_TARGET_CONFIGURATION,
        TspOpcode.SET_TARGET_TE_STATE,
    }
)


def _handle(r: Responder, req: Request, state: CxlTspState, msg: bytes) -> bytes:
    if len(msg) < 2:
        raise TspReply(TspErrorCode.INVALID_REQUEST, f"{len(msg)}-byte TSP message, no opcode")
    version, op = msg[0], msg[1]
    if op not in _SIZES and op != TspOpcode.SET_TARGET_TE_STATE:
        raise TspReply(TspErrorCode.UNSUPPORTED_REQUEST, f"opcode 0x{op:02X} is not supported", op)
    name = TspOpcode(op).name
    if req.session_id is None:
        raise TspReply(TspErrorCode.NO_PRIVILEGE, f"{name} outside a secure session")
    if op == TspOpcode.SET_TARGET_TE_STATE:
        if (
            len(msg) < TSP_TE_STATE_REQ.size
            or len(msg) != TSP_TE_STATE_REQ.size + msg[3] * TSP_MEMORY_RANGE.size
        ):
            raise TspReply(TspErrorCode.INVALID_REQUEST, f"{name}: {len(msg)} bytes")
    elif len(msg) != _SIZES[TspOpcode(op)]:
        raise TspReply(
            TspErrorCode.INVALID_REQUEST, f"{name} is {len(msg)} bytes, {_SIZES[TspOpcode(op)]}"
        )
    if version != TSP_VERSION_10:
        raise TspReply(TspErrorCode.VERSION_MISMATCH, f"TSPVersion 0x{version:02X}; 1.0 is 0x10")
    me = (r.connection_number, req.session_id)
    if op == TspOpcode.GET_TARGET_TSP_VERSION:
        if state.primary is None or (
            not state.primary_alive and state.state is TspState.CONFIG_UNLOCKED
        ):
            state.primary, state.primary_alive = me, True
            log.info("CXL TSP: session 0x%08X is the primary session", req.session_id)
        return TSP_VERSION_RSP.pack(version, TspOpcode.GET_TARGET_TSP_VERSION_RSP, 0, 1) + bytes(
            (TSP_VERSION_10,)
        )
    if op == TspOpcode.GET_TARGET_CAPABILITIES:
        return state.capabilities()
    if op in _PRIVILEGED and not (state.primary == me and state.primary_alive):
        raise TspReply(TspErrorCode.NO_PRIVILEGE, f"{name} from a session that is not the primary")
    if op == TspOpcode.SET_TARGET_CONFIGURATION:
        return _set_configuration(state, msg)
    if op == TspOpcode.GET_TARGET_CONFIGURATION:
        if state.state is TspState.ERROR:
            raise TspReply(TspErrorCode.INVALID_SECURITY_STATE, "the target is in ERROR")
        config = state.configuration or TspConfiguration()
        return config.encode_get(state.state)
    if op == TspOpcode.GET_TARGET_CONFIGURATION_REPORT:
        return _report(state, msg)
    if op == TspOpcode.LOCK_TARGET_CONFIGURATION:
        if state.state is TspState.CONFIG_LOCKED:
            raise TspReply(TspErrorCode.ALREADY_LOCKED, "the configuration is locked already")
        if state.state is not TspState.CONFIG_UNLOCKED:
            raise TspReply(TspErrorCode.INVALID_SECURITY_STATE, f"the target is {state.state.name}")
        if state.configuration is None:
            raise TspReply(
                TspErrorCode.INVALID_SECURITY_CONFIGURATION, "no configuration has been set"
            )
        state.state = TspState.CONFIG_LOCKED
        log.info("CXL TSP: configuration locked")
        state.publish("locked", "CXL TSP configuration locked")
        return TSP_SIMPLE.pack(version, TspOpcode.LOCK_TARGET_CONFIGURATION_RSP, 0)
    return _set_te_state(state, msg)


def _onehot0(v: int) -> bool:
    return not v & (v - 1)


def _set_configuration(state: CxlTspState, msg: bytes) -> bytes:
    if state.state is not TspState.CONFIG_UNLOCKED:
        raise TspReply(
            TspErrorCode.INVALID_SECURITY_STATE, f"SET_TARGET_CONFIGURATION in {state.state.name}"
        )
    f = TSP_CONFIG_HEAD.unpack_from(msg)
    enc, alg, te, oob, cfg_feat, ckid_base, n_ckids = f[2], f[3], f[4], f[6], f[7], f[9], f[10]
    off = TSP_CONFIG_HEAD.size
    entries = tuple(TSP_IB_ENTRY.unpack_from(msg, off + i * TSP_IB_ENTRY.size) for i in range(8))
    validity, _ckid_type, _psk = TSP_SET_CONFIG_TAIL.unpack_from(msg, off + 8 * TSP_IB_ENTRY.size)

    def bad(why: str) -> TspReply:
        return TspReply(TspErrorCode.INVALID_REQUEST, f"SET_TARGET_CONFIGURATION: {why}")

    sup = state.encryption_supported
    enc &= 0x0F
    if not enc & ENABLE_ENCRYPTION:
        if enc:
            raise bad("CKID/range-based encryption without ENCRYPTION")
        if alg:
            raise bad("an algorithm without ENCRYPTION")
    else:
        if not sup & 0x01:
            raise bad("the target does not support encryption")
        if enc & ENABLE_CKID and not sup & 0x02:
            raise bad("CKID-based encryption is not supported")
        if enc & ENABLE_RANGE and not sup & 0x04:
            raise bad("range-based encryption is not supported")
        if enc & ENABLE_CKID_REQUIRED and not sup & 0x10:
            raise bad("CKID_BASED_REQUIRED is not supported")
        if enc & ENABLE_CKID and enc & ENABLE_RANGE:
            raise bad("CKID-based and range-based encryption together")
        if bool(enc & ENABLE_CKID) != bool(enc & ENABLE_CKID_REQUIRED):
            raise bad("CKID-based encryption and CKID_BASED_REQUIRED go together")
        if not alg or not _onehot0(alg) or not alg & state.algorithms_supported:
            raise bad(f"algorithm 0x{alg:08X} is not exactly one supported algorithm")
    te &= 0x3F
    if te & ~state.te_supported:
        raise bad(f"TE features 0x{te & ~state.te_supported:04X} are not supported")
    if te & TE_WRITE_AC and not te & (TE_OOB | TE_IB):
        raise bad("write access control needs an explicit TE state change")
    if te & TE_READ_AC and not te & (TE_IMPLICIT | TE_OOB | TE_IB):
        raise bad("read access control needs a TE state change")
    if te & TE_SANITIZE and not te & (TE_OOB | TE_IB):
        raise bad("sanitize needs an explicit TE state change")
    if not te & TE_OOB:
        if oob:
            raise bad("an out-of-band granularity without explicit OOB TE state change")
    elif not oob or not _onehot0(oob) or not oob & state.cfg.explicit_oob_granularity:
        raise bad(f"out-of-band granularity 0x{oob:08X} is not one supported granularity")
    if cfg_feat & 0x01 and not state.config_supported & 0x01:
        raise bad("locked target firmware update is not supported")
    if enc & ENABLE_CKID_REQUIRED and (
        n_ckids > state.cfg.number_of_ckids or ckid_base + n_ckids >= 0x2000
    ):
        raise bad(f"CKIDs {ckid_base}+{n_ckids} are out of range")
    if te & TE_IB:
        seen = 0
        for _granularity, index in entries:
            if index == 0xFF:
                continue
            if index > 7 or seen & (1 << index):
                raise bad(f"explicit in-band granularity entry length index {index}")
            seen |= 1 << index
    if validity not in (0,):  # no secondary sessions are offered
        raise bad(f"configuration validity flags 0x{validity:04X}: no secondary sessions")
    state.configuration = TspConfiguration(
        enc, alg, te, oob, cfg_feat, ckid_base, n_ckids, tuple((g, i) for g, i in entries)
    )
    log.info("CXL TSP: configuration set")
    state.publish("configured", "CXL TSP configuration set")
    return TSP_SIMPLE.pack(TSP_VERSION_10, TspOpcode.SET_TARGET_CONFIGURATION_RSP, 0)


def _report(state: CxlTspState, msg: bytes) -> bytes:
    if state.state is TspState.ERROR:
        raise TspReply(TspErrorCode.INVALID_SECURITY_STATE, "the target is in ERROR")
    _v, _op, _r, offset, length = TSP_REPORT_REQ.unpack(msg)
    report = state.report()
    if length == 0 or offset >= len(report):
        raise TspReply(
            TspErrorCode.INVALID_REQUEST,
            f"OFFSET {offset} LENGTH {length} for a {len(report)}-byte report",
        )
    portion = min(length, len(report) - offset, state.cfg.max_report_portion)
    remainder = len(report) - offset - portion
    head = TSP_REPORT_RSP.pack(
        TSP_VERSION_10, TspOpcode.GET_TARGET_CONFIGURATION_REPORT_RSP, 0, portion, remainder
    )
    return head + report[offset : offset + portion]


def _set_te_state(state: CxlTspState, msg: bytes) -> bytes:
    if state.state is not TspState.CONFIG_LOCKED:
        raise TspReply(
            TspErrorCode.INVALID_SECURITY_STATE, f"SET_TARGET_TE_STATE in {state.state.name}"
        )
    config = state.configuration
    if config is None or not config.te_features & (TE_IB | TE_IMPLICIT):
        raise TspReply(
            TspErrorCode.INVALID_REQUEST, "explicit in-band TE state change is not enabled"
        )
    te_state, count = msg[2], msg[3]
    if te_state > 1:
        raise TspReply(TspErrorCode.INVALID_REQUEST, f"TE state {te_state} (0 or 1)")
    ranges = []
    for i in range(count):
        start, length = TSP_MEMORY_RANGE.unpack_from(msg, TSP_TE_STATE_REQ.size + 16 * i)
        if length == 0 or start % GRANULARITY or length % GRANULARITY or start + length > 1 << 64:
            raise TspReply(
                TspErrorCode.INVALID_REQUEST,
                f"memory range {i} (0x{start:X}+0x{length:X}) is not 64-byte aligned",
            )
        ranges.append((start, length))
    for rng in ranges:
        state.te_states[rng] = te_state
    log.info("CXL TSP: TE state %d for %d range(s)", te_state, len(ranges))
    return TSP_SIMPLE.pack(TSP_VERSION_10, TspOpcode.SET_TARGET_TE_STATE_RSP, 0)


__all__ = ["EVENT", "CxlTspState", "TspConfiguration", "handle", "tsp_state"]
