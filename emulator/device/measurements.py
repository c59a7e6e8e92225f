"""The device's measurement blocks (DSP0274 10.11 "Measurement block") and their runtime changes.

Each block holds the *raw* value (the bit stream the device measured) plus how it
is reported:

* ``representation = "digest"``: DMTFSpecMeasurementValue = Hash(raw) with the
  negotiated MeasurementHashAlgo; with RawBitStreamRequested (1.2+) the raw value
  is sent instead when the block allows it (``raw_on_request``), otherwise the
  digest (DSP0274: a Responder that cannot provide the raw bit stream returns the
  digest).
* ``representation = "raw"``: always the raw bit stream (device mode, SVN,
  version strings... as libspdm's sample device does).
* MeasurementHashAlgo RAW_BIT_STREAM_ONLY: every block is sent raw.

MEAS_FRESH_CAP (DSP0274 CAPABILITIES): with it the Responder recomputes the
measurements for every request, so a runtime change shows up in the next
response.  Without it the Responder may return the values computed at its last
reset: changes are kept pending until :meth:`MeasurementStore.device_reset`.

The measurement summary hash (CHALLENGE_AUTH, KEY_EXCHANGE_RSP, PSK_EXCHANGE_RSP)
is computed as libspdm's ``libspdm_generate_measurement_summary_hash`` does:
Hash_BaseHashAlgo over the concatenation of the whole measurement blocks
(4-byte block header + DMTF measurement), in index order, as an unsigned
``GET_MEASUREMENTS(0xFF)`` without RawBitStreamRequested would report them; for
the TCB kind only the blocks marked ``tcb``.

The runtime API (:meth:`~MeasurementStore.set_value`, :meth:`~MeasurementStore.bump_version`,
:meth:`~MeasurementStore.set_device_mode`, :meth:`~MeasurementStore.device_reset`) may be
called from another thread (the control plane): each change replaces an immutable
:class:`StoredBlock` under a lock, and readers take a consistent snapshot.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum

from emulator.codec.constants import MeasurementHashAlgo, ResponderCap
from emulator.codec.measurements import (
    DEVICE_MODE_SIZE,
    INDEX_DEVICE_MODE,
    RAW_BIT_STREAM,
    MeasurementBlock,
    MeasurementValueType,
    decode_device_mode,
    encode_device_mode,
)
from emulator.crypto.hashes import digest, measurement_digest
from emulator.errors import CodecError, EmulatorError
from emulator.profiles import Profile

#: MeasurementSummaryHashType values (CHALLENGE Param2, KEY_EXCHANGE / PSK_EXCHANGE Param1)
SUMMARY_NONE = 0x00
SUMMARY_TCB = 0x01
SUMMARY_ALL = 0xFF

Notify = Callable[[str, object], None]


class MeasurementError(EmulatorError):
    """A runtime measurement change is invalid (unknown index, wrong value type...)."""


class Representation(StrEnum):
    """How a block's value is normally reported."""

    DIGEST = "digest"
    RAW = "raw"


@dataclass(frozen=True, slots=True)
class StoredBlock:
    """One measurement block of the device: the raw value and how to report it."""

    index: int
    kind: MeasurementValueType
    value: bytes
    representation: Representation = Representation.DIGEST
    tcb: bool = False
    raw_on_request: bool = True
    description: str = ""
    #: bumped on every change of ``value`` (content-changed detection)
    generation: int = 0
    #: encoded blocks by (MeasurementHashAlgo, raw requested): a block is immutable (a
    #: change makes a new StoredBlock), so each encoding is rendered and hashed once
    _encoded: dict[tuple[int, bool], bytes] = field(
        init=False, default_factory=dict, repr=False, compare=False
    )
    #: a hash-extended block linked to the measurement extension log: the encoded MEL
    #: entries that extend it, in order (None: an ordinary block, ``value`` is reported)
    extension: tuple[bytes, ...] | None = None

    def sends_raw(self, meas_hash_algo: int, raw_requested: bool) -> bool:
        """Whether this block goes out as a raw bit stream for the request."""
        if meas_hash_algo == MeasurementHashAlgo.RAW_BIT_STREAM_ONLY:
            return True
        if self.representation is Representation.RAW:
            return True
        return raw_requested and self.raw_on_request

    def render(self, meas_hash_algo: int, raw_requested: bool = False) -> MeasurementBlock:
        """The measurement block as GET_MEASUREMENTS reports it.

        ``meas_hash_algo`` is the negotiated MeasurementHashAlgo bit.  Raises
        CryptoError for an unsupported algorithm.  A block extended by the MEL reports
        the extend chain v = H(v || entry) from zeros with ``meas_hash_algo`` (as libspdm's
        sample device), or the concatenated entries with RAW_BIT_STREAM_ONLY.
        """
        if self.extension is not None:
            if meas_hash_algo == MeasurementHashAlgo.RAW_BIT_STREAM_ONLY:
                return MeasurementBlock(
                    self.index, int(self.kind) | RAW_BIT_STREAM, b"".join(self.extension)
                )
            value = bytes(len(measurement_digest(meas_hash_algo, b"")))
            for entry in self.extension:
                value = measurement_digest(meas_hash_algo, value + entry)
            return MeasurementBlock(self.index, int(self.kind), value)
        if self.sends_raw(meas_hash_algo, raw_requested):
            return MeasurementBlock(self.index, int(self.kind) | RAW_BIT_STREAM, self.value)
        return MeasurementBlock(
            self.index, int(self.kind), measurement_digest(meas_hash_algo, self.value)
        )

    def encoded(self, meas_hash_algo: int, raw_requested: bool = False) -> bytes:
        """``render(...).encode()``, computed once per block and request kind."""
        key = (meas_hash_algo, raw_requested)
        out = self._encoded.get(key)
        if out is None:
            out = self._encoded[key] = self.render(meas_hash_algo, raw_requested).encode()
        return out


def _bump_text_version(value: bytes, index: int) -> bytes:
    """'1.2.3' -> '1.2.4' (the last run of decimal digits plus one)."""
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        raise MeasurementError(
            f"measurement {index}: version value is not ASCII text, cannot bump it"
        ) from None
    matches = list(re.finditer(r"\d+", text))
    if not matches:
        raise MeasurementError(f"measurement {index}: version {text!r} has no number to bump")
    m = matches[-1]
    width = len(m.group())
    bumped = str(int(m.group()) + 1).zfill(width)
    return (text[: m.start()] + bumped + text[m.end() :]).encode("ascii")


def _bump_svn(value: bytes, index: int) -> bytes:
    """A little-endian unsigned SVN (8 bytes in DSP0274) plus one."""
    if not value or len(value) > 8:
        raise MeasurementError(
            f"measurement {index}: SVN value is {len(value)} bytes, expected 1..8 (u64 LE)"
        )
    n = int.from_bytes(value, "little") + 1
    if n >= 1 << (8 * len(value)):
        raise MeasurementError(f"measurement {index}: SVN would overflow {len(value)} bytes")
    return n.to_bytes(len(value), "little")


class MeasurementStore:
    """The measurement blocks of one device, shared by all its connections."""

    def __init__(
        self,
        blocks: Iterable[StoredBlock] = (),
        *,
        fresh: bool = True,
        notify: Notify | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._reported: dict[int, StoredBlock] = {}
        for b in blocks:
            if b.index in self._reported:
                raise MeasurementError(f"measurement index {b.index} is defined twice")
            self._reported[b.index] = b
        #: changes not yet visible without MEAS_FRESH_CAP (applied by device_reset)
        self._pending: dict[int, StoredBlock] = {}
        #: summary hashes by (kind, MeasurementHashAlgo, BaseHashAlgo) of the reported
        #: blocks; emptied whenever a reported block changes
        self._summaries: dict[tuple[int, int, int], bytes] = {}
        self.fresh = fresh
        self._notify = notify

    def bind(self, notify: Notify | None) -> None:
        """Set the callback that hears about runtime changes (``Device.notify``)."""
        self._notify = notify

    # ---- reading ------------------------------------------------------------------

    def snapshot(self) -> list[StoredBlock]:
        """The reported blocks in index order (a consistent view)."""
        with self._lock:
            return [self._reported[i] for i in sorted(self._reported)]

    def indices(self) -> list[int]:
        with self._lock:
            return sorted(self._reported)

    def __len__(self) -> int:
        with self._lock:
            return len(self._reported)

    def get(self, index: int) -> StoredBlock | None:
        """The reported block at ``index`` (None if the device has none)."""
        with self._lock:
            return self._reported.get(index)

    def live(self, index: int) -> StoredBlock | None:
        """The latest value, pending or reported."""
        with self._lock:
            return self._pending.get(index) or self._reported.get(index)

    def pending(self) -> list[int]:
        """Indices changed since the last reset that are not reported yet (no MEAS_FRESH_CAP)."""
        with self._lock:
            return sorted(self._pending)

    def summary_hash(self, kind: int, meas_hash_algo: int, base_hash_algo: int) -> bytes:
        """The MeasurementSummaryHash of DSP0274 (libspdm ``generate_measurement_summary_hash``).

        ``kind`` 0: ``b""`` (no summary); 1: TCB blocks; 0xFF: every block.
        Each selected block contributes its whole encoding (block header + DMTF
        measurement) as an unsigned, non-raw GET_MEASUREMENTS would report it;
        the concatenation is hashed with ``base_hash_algo``.
        """
        if kind == SUMMARY_NONE:
            return b""
        if kind not in (SUMMARY_TCB, SUMMARY_ALL):
            raise MeasurementError(
                f"MeasurementSummaryHashType 0x{kind:02X} is reserved (0, 1 or 0xFF)"
            )
        key = (kind, meas_hash_algo, base_hash_algo)
        with self._lock:
            cached = self._summaries.get(key)
            blocks = [self._reported[i] for i in sorted(self._reported)]
        if cached is not None:
            return cached
        data = b"".join(
            block.encoded(meas_hash_algo) for block in blocks if kind == SUMMARY_ALL or block.tcb
        )
        value = digest(base_hash_algo, data)
        with self._lock:
            if all(self._reported.get(b.index) is b for b in blocks):  # no change meanwhile
                self._summaries[key] = value
        return value

    # ---- runtime changes -------------------------------------------------------------

    def _require(self, index: int) -> StoredBlock:
        block = self._pending.get(index) or self._reported.get(index)
        if block is None:
            known = ", ".join(f"0x{i:02X}" for i in sorted(self._reported)) or "none"
            raise MeasurementError(f"no measurement block with index {index} (have {known})")
        return block

    def _commit(self, new: StoredBlock) -> bool:
        """Store a changed block (pending without MEAS_FRESH_CAP); True if reported now."""
        if self.fresh:
            self._reported[new.index] = new
            self._pending.pop(new.index, None)
            self._summaries.clear()
            return True
        self._pending[new.index] = new
        return False

    def _changed(self, block: StoredBlock, visible: bool, what: str) -> None:
        if self._notify is not None:
            self._notify(
                "measurement",
                {
                    "change": what,
                    "index": block.index,
                    "type": block.kind.name.lower(),
                    "value": block.value.hex(),
                    "generation": block.generation,
                    "pending": not visible,
                },
            )

    def set_value(self, index: int, value: bytes) -> StoredBlock:
        """Give block ``index`` a new raw value (e.g. a firmware update).

        The device mode block (0xFE) takes a 16-byte device mode value.  Returns
        the new block.  MeasurementError for an unknown index or a bad value.
        """
        value = bytes(value)
        if len(value) > 0xFFFF - 3:
            raise MeasurementError(f"measurement {index}: {len(value)}-byte value is too large")
        with self._lock:
            old = self._require(index)
            if old.extension is not None:
                raise MeasurementError(
                    f"measurement {index} is extended by the measurement extension log: "
                    "append a MEL entry instead"
                )
            if old.kind is MeasurementValueType.DEVICE_MODE and len(value) != DEVICE_MODE_SIZE:
                raise MeasurementError(
                    f"measurement {index}: a device mode value is 16 bytes, got {len(value)}"
                )
            new = replace(old, value=value, generation=old.generation + 1)
            visible = self._commit(new)
        self._changed(new, visible, "set_value")
        return new

    def bump_version(self, index: int | None = None) -> list[StoredBlock]:
        """Raise a version (type 6, ASCII, last number + 1) or SVN (type 7, u64 LE + 1).

        With no index, every version and SVN block is bumped (a firmware update).
        Returns the changed blocks.
        """
        bumpable = (MeasurementValueType.VERSION, MeasurementValueType.SECURE_VERSION_NUMBER)
        changed: list[tuple[StoredBlock, bool]] = []
        with self._lock:
            if index is None:
                targets = [
                    self._pending.get(i) or b
                    for i, b in sorted(self._reported.items())
                    if b.kind in bumpable
                ]
                if not targets:
                    raise MeasurementError("the device has no version or SVN measurement block")
            else:
                target = self._require(index)
                if target.kind not in bumpable:
                    raise MeasurementError(
                        f"measurement {index} is {target.kind.name}, not a version or SVN block"
                    )
                targets = [target]
            news = []
            for old in targets:
                if old.kind is MeasurementValueType.VERSION:
                    value = _bump_text_version(old.value, old.index)
                else:
                    value = _bump_svn(old.value, old.index)
                news.append(replace(old, value=value, generation=old.generation + 1))
            for new in news:
                changed.append((new, self._commit(new)))
        for new, visible in changed:
            self._changed(new, visible, "bump_version")
        return [c[0] for c in changed]

    def set_device_mode(
        self,
        *,
        operational_state: int | None = None,
        device_mode_state: int | None = None,
        operational_capabilities: int | None = None,
        device_mode_capabilities: int | None = None,
    ) -> StoredBlock:
        """Change fields of the device mode block (index 0xFE); others stay as they are.

        A state bit must also be set in its capabilities (MeasurementError otherwise).
        """
        with self._lock:
            old = self._require(INDEX_DEVICE_MODE)
            try:
                cur = decode_device_mode(old.value)
            except CodecError as exc:
                raise MeasurementError(f"measurement 0xFE: {exc}") from None
            op_cap = cur[0] if operational_capabilities is None else operational_capabilities
            op_state = cur[1] if operational_state is None else operational_state
            dm_cap = cur[2] if device_mode_capabilities is None else device_mode_capabilities
            dm_state = cur[3] if device_mode_state is None else device_mode_state
            if op_state & ~op_cap:
                raise MeasurementError(
                    f"device mode: OperationalModeState 0x{op_state:X} has bits outside "
                    f"OperationalModeCapabilities 0x{op_cap:X}"
                )
            if dm_state & ~dm_cap:
                raise MeasurementError(
                    f"device mode: DeviceModeState 0x{dm_state:X} has bits outside "
                    f"DeviceModeCapabilities 0x{dm_cap:X}"
                )
            try:
                value = encode_device_mode(op_cap, op_state, dm_cap, dm_state)
            except CodecError as exc:
                raise MeasurementError(str(exc)) from None
            new = replace(old, value=value, generation=old.generation + 1)
            visible = self._commit(new)
        self._changed(new, visible, "set_device_mode")
        return new

    def set_extension(self, index: int, extension: tuple[bytes, ...]) -> StoredBlock:
        """The MEL entries that extend hash-extended block ``index`` (DSP0274 1.3 MEL): a
        hash-extend register is live, so the change is reported at once, MEAS_FRESH_CAP
        or not."""
        with self._lock:
            old = self._require(index)
            if old.extension is None:
                raise MeasurementError(
                    f"measurement {index} is not extended by the measurement extension log"
                )
            new = replace(old, extension=extension, generation=old.generation + 1)
            self._reported[index] = new
            self._pending.pop(index, None)
        self._changed(new, True, "mel_extend")
        return new

    def device_reset(self) -> list[int]:
        """A device reset: pending changes (no MEAS_FRESH_CAP) become the reported values."""
        with self._lock:
            applied = sorted(self._pending)
            for i in applied:
                self._reported[i] = self._pending.pop(i)
            if applied:
                self._summaries.clear()
        if applied and self._notify is not None:
            self._notify("measurement", {"change": "device_reset", "indices": applied})
        return applied


def measurement_store(profile: Profile) -> MeasurementStore:
    """The store for a profile's ``[[measurements]]`` (fresh iff MEAS_FRESH_CAP)."""
    blocks = [
        StoredBlock(
            index=m.index,
            kind=m.kind,
            value=m.raw_value(profile.base_dir),
            representation=Representation.RAW if m.raw else Representation.DIGEST,
            tcb=m.in_tcb,
            raw_on_request=m.raw_on_request,
            description=m.description,
            extension=() if m.mel else None,
        )
        for m in profile.measurements
    ]
    return MeasurementStore(blocks, fresh=ResponderCap.MEAS_FRESH_CAP in profile.capabilities)
