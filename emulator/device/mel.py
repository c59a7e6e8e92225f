"""The measurement extension log (DSP0274 1.3 10.12, MEL_CAP), in the DMTF format.

The log starts with the profile's ``[[mel]]`` entries; :meth:`MeasurementExtensionLog.append`
adds one at run time (the Python API, the MQTT ``mel`` command).  Every entry extends a
hash-extended measurement block (``[[measurements]] mel = true``): the block reports
v = H(v || entry) over its entries (:meth:`emulator.device.measurements.StoredBlock.render`),
so a verifier can replay the log against GET_MEASUREMENTS.  MELIndex counts from 1.

Thread-safe: an append replaces the encoded log and the block under a lock; GET_MEL reads
one consistent encoding.  The log is at most :data:`MAX_MEL_SIZE` bytes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from emulator.codec.measurements import RAW_BIT_STREAM, MeasurementValueType
from emulator.codec.mel import MEL_HEADER_SIZE, MelEntry, encode_mel
from emulator.device.measurements import MeasurementError, MeasurementStore

__all__ = ["MAX_MEL_SIZE", "MeasurementExtensionLog"]

#: Largest log the device keeps (the 32-bit Offset/Length of GET_MEL allow more; a
#: requester has to buffer it all).
MAX_MEL_SIZE = 1 << 20

Notify = Callable[[str, object], None]


class MeasurementExtensionLog:
    """The device's MEL and the hash-extended blocks it extends."""

    def __init__(
        self,
        measurements: MeasurementStore,
        entries: Iterable[tuple[int, int, bytes]] = (),
        *,
        notify: Notify | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._measurements = measurements
        self._entries: list[MelEntry] = []
        self._encoded = encode_mel(())
        self._notify = notify
        self.extended_indices = sorted(
            b.index for b in measurements.snapshot() if b.extension is not None
        )
        for index, value_type, value in entries:
            self.append(index, value_type, value, announce=False)

    def bind(self, notify: Notify | None) -> None:
        self._notify = notify

    def encoded(self) -> bytes:
        """The whole log (header and entries) as GET_MEASUREMENT_EXTENSION_LOG serves it."""
        with self._lock:
            return self._encoded

    def entries(self) -> list[MelEntry]:
        with self._lock:
            return list(self._entries)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def append(
        self,
        index: int | None,
        value_type: int,
        value: bytes,
        *,
        raw: bool = True,
        announce: bool = True,
    ) -> MelEntry:
        """Add an entry extending block ``index`` (None: the only MEL-extended block);
        ``value_type`` is a DMTF measurement value type (0..10).  MeasurementError for an
        unknown block or type, or a log over :data:`MAX_MEL_SIZE`."""
        if index is None:
            if len(self.extended_indices) != 1:
                raise MeasurementError(
                    f"the device has {len(self.extended_indices)} MEL-extended blocks "
                    f"({self.extended_indices}); give the index"
                )
            index = self.extended_indices[0]
        if index not in self.extended_indices:
            raise MeasurementError(
                f"measurement {index} is not extended by the MEL "
                f"(MEL-extended blocks: {self.extended_indices or 'none'})"
            )
        if value_type not in {int(m) for m in MeasurementValueType}:
            raise MeasurementError(f"MEL entry type {value_type} is not a DMTF value type (0..10)")
        if len(value) > 0xFFFF:
            raise MeasurementError(f"MEL entry value is {len(value)} bytes, at most 65535")
        with self._lock:
            entry = MelEntry(
                len(self._entries) + 1,
                index,
                value_type | (RAW_BIT_STREAM if raw else 0),
                bytes(value),
            )
            entries = [*self._entries, entry]
            encoded = encode_mel(entries)
            if len(encoded) > MAX_MEL_SIZE:
                raise MeasurementError(
                    f"the MEL would be {len(encoded)} bytes, the device keeps {MAX_MEL_SIZE}"
                )
            self._entries = entries
            self._encoded = encoded
            extension = tuple(e.encode() for e in entries if e.meas_index == index)
        self._measurements.set_extension(index, extension)
        if announce and self._notify is not None:
            self._notify(
                "mel",
                {
                    "change": "append",
                    "mel_index": entry.mel_index,
                    "measurement_index": index,
                    "type": value_type,
                    "value": entry.value.hex(),
                    "size": len(encoded) - MEL_HEADER_SIZE,
                },
            )
        return entry
