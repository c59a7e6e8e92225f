"""GET_MEASUREMENT_EXTENSION_LOG / MEASUREMENT_EXTENSION_LOG and the DMTF MEL format
(DSP0274 1.3 10.12 and "Measurement extension log format"), little-endian:

* GET_MEASUREMENT_EXTENSION_LOG: Param1/Param2 reserved, Offset (u32), Length (u32).
* MEASUREMENT_EXTENSION_LOG: Param1/Param2 reserved, PortionLength (u32),
  RemainderLength (u32), a portion of the MEL.
* DMTF MEL: NumberOfEntries (u32), MELEntriesLen (u32), Reserved (8), then each entry:
  MELIndex (u32), MeasIndex (u8), Reserved (3), a DMTF measurement header
  (DMTFSpecMeasurementValueType u8, DMTFSpecMeasurementValueSize u16) and the value.

Each entry extends the hash-extended measurement block its MeasIndex names
(:func:`extend`): the block's value is Hash(previous value || the whole entry), starting
from zeros, as libspdm's sample device computes it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from emulator.codec.constants import RequestCode, ResponseCode
from emulator.codec.messages import HEADER_SIZE, build_header
from emulator.errors import CodecError

GET_MEL_SIZE = HEADER_SIZE + 8
MEL_RESPONSE_HEADER_SIZE = HEADER_SIZE + 8
MEL_HEADER_SIZE = 16
MEL_ENTRY_HEADER_SIZE = 11


def build_get_mel(version: int, offset: int, length: int) -> bytes:
    return build_header(version, RequestCode.GET_MEASUREMENT_EXTENSION_LOG) + struct.pack(
        "<II", offset & 0xFFFFFFFF, length & 0xFFFFFFFF
    )


def parse_get_mel(data: bytes) -> tuple[int, int]:
    """(Offset, Length) of a GET_MEASUREMENT_EXTENSION_LOG."""
    if len(data) < GET_MEL_SIZE:
        raise CodecError(f"GET_MEASUREMENT_EXTENSION_LOG: {len(data)} bytes, need {GET_MEL_SIZE}")
    offset, length = struct.unpack_from("<II", data, HEADER_SIZE)
    return offset, length


def build_mel_response(version: int, portion: bytes, remainder: int) -> bytes:
    return (
        build_header(version, ResponseCode.MEASUREMENT_EXTENSION_LOG)
        + struct.pack("<II", len(portion), remainder)
        + portion
    )


def parse_mel_response(data: bytes) -> tuple[bytes, int]:
    """(portion, RemainderLength) of a MEASUREMENT_EXTENSION_LOG response."""
    if len(data) < MEL_RESPONSE_HEADER_SIZE:
        raise CodecError(
            f"MEASUREMENT_EXTENSION_LOG: {len(data)} bytes, need {MEL_RESPONSE_HEADER_SIZE}"
        )
    portion, remainder = struct.unpack_from("<II", data, HEADER_SIZE)
    end = MEL_RESPONSE_HEADER_SIZE + portion
    if len(data) < end:
        raise CodecError(
            f"MEASUREMENT_EXTENSION_LOG: PortionLength {portion} but {len(data)} bytes"
        )
    return bytes(data[MEL_RESPONSE_HEADER_SIZE:end]), remainder


@dataclass(frozen=True, slots=True)
class MelEntry:
    """One DMTF MEL entry: MELIndex, the measurement index it extends, the DMTF
    measurement value type (bit 7: raw bit stream) and the value."""

    mel_index: int
    meas_index: int
    value_type: int
    value: bytes

    def encode(self) -> bytes:
        if len(self.value) > 0xFFFF:
            raise CodecError(f"MEL entry {self.mel_index}: value over 65535 bytes")
        return (
            struct.pack("<IB3x", self.mel_index, self.meas_index)
            + struct.pack("<BH", self.value_type, len(self.value))
            + self.value
        )


def encode_mel(entries: Sequence[MelEntry]) -> bytes:
    """The whole DMTF MEL: header then entries."""
    body = b"".join(e.encode() for e in entries)
    return struct.pack("<II8x", len(entries), len(body)) + body


def decode_mel(data: bytes) -> list[MelEntry]:
    """Parse a whole DMTF MEL; CodecError naming the entry that does not fit."""
    if len(data) < MEL_HEADER_SIZE:
        raise CodecError(f"MEL: {len(data)} bytes, shorter than its 16-byte header")
    count, entries_len = struct.unpack_from("<II", data)
    if MEL_HEADER_SIZE + entries_len != len(data):
        raise CodecError(
            f"MEL: MELEntriesLen {entries_len} but {len(data) - MEL_HEADER_SIZE} bytes follow"
        )
    out: list[MelEntry] = []
    off = MEL_HEADER_SIZE
    for n in range(count):
        if off + MEL_ENTRY_HEADER_SIZE > len(data):
            raise CodecError(f"MEL entry {n}: header past the end")
        mel_index, meas_index = struct.unpack_from("<IB", data, off)
        value_type, size = struct.unpack_from("<BH", data, off + 8)
        start = off + MEL_ENTRY_HEADER_SIZE
        if start + size > len(data):
            raise CodecError(f"MEL entry {n}: {size}-byte value past the end")
        out.append(MelEntry(mel_index, meas_index, value_type, bytes(data[start : start + size])))
        off = start + size
    if off != len(data):
        raise CodecError(f"MEL: {len(data) - off} bytes after NumberOfEntries {count} entries")
    return out


def extend(
    previous: bytes, entries: Iterable[MelEntry], hash_fn: Callable[[bytes], bytes]
) -> bytes:
    """The hash-extended measurement after ``entries``: v = H(v || entry) for each one
    (``hash_fn(data) -> digest``; ``previous`` is the start value, zeros at reset)."""
    value = previous
    for e in entries:
        value = hash_fn(value + e.encode())
    return value
