"""Event messages (DSP0274 1.3 10.26-10.28, "Event mechanism"), little-endian, as libspdm's
``industry_standard/spdm.h`` and its event helpers lay them out:

* GET_SUPPORTED_EVENT_TYPES: the header.  SUPPORTED_EVENT_TYPES: Param1 =
  EventGroupCount, SupportedEventGroupsListLen (u32), the event group list.
* SUBSCRIBE_EVENT_TYPES: Param1 = SubscribeEventGroupCount; with a count, then
  SubscribeListLen (u32) and an event group list (count 0: the bare header, which
  unsubscribes from everything).  SUBSCRIBE_EVENT_TYPES_ACK: the header.
* An event group: EventGroupID = SVH (ID u8, VendorIDLen u8, VendorID), EventTypeCount
  (u16), EventGroupVer (u16), Attributes (u32; in a subscription bit 0 = all event types
  of the group), then EventTypeCount x (EventTypeID u16, Reserved u16).
* SEND_EVENT: EventCount (u32), then each event: EventInstanceID (u32), Reserved (4),
  SVH, EventTypeID (u16), EventDetailLen (u16), EventDetail.  EVENT_ACK: the header.

DMTF event types (group ID 0, version 1): EventLost (1, detail: last acknowledged and
last lost EventInstanceID, u32 each), MeasurementChanged (2, a 32-byte bit mask of the
changed measurement indices), MeasurementPreUpdate (3, the same mask for pending
changes), CertificateChanged (4, one byte: the slot mask).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from emulator.codec.constants import RequestCode, ResponseCode
from emulator.codec.messages import HEADER_SIZE, build_header
from emulator.errors import CodecError

#: DMTF event group: registry ID 0 (DMTF, no VendorID), EventGroupVer 1.
DMTF_REGISTRY_ID = 0
DMTF_EVENT_GROUP_VERSION = 1
#: Subscription Attributes bit 0: every event type of the group.
SUBSCRIBE_ALL = 0x00000001
SUPPORTED_EVENT_TYPES_HEADER_SIZE = HEADER_SIZE + 4
SEND_EVENT_HEADER_SIZE = HEADER_SIZE + 4


class DmtfEventType(IntEnum):
    """DMTF event types (DSP0274 1.3 table "DMTF event types")."""

    EVENT_LOST = 1
    MEASUREMENT_CHANGED = 2
    MEASUREMENT_PRE_UPDATE = 3
    CERTIFICATE_CHANGED = 4


#: EventDetailLen of each DMTF event type.
DMTF_EVENT_DETAIL_SIZES: dict[int, int] = {
    DmtfEventType.EVENT_LOST: 8,
    DmtfEventType.MEASUREMENT_CHANGED: 32,
    DmtfEventType.MEASUREMENT_PRE_UPDATE: 32,
    DmtfEventType.CERTIFICATE_CHANGED: 1,
}


def _need(data: bytes, size: int, what: str) -> None:
    if len(data) < size:
        raise CodecError(f"{what}: {len(data)} bytes, need {size}")


@dataclass(frozen=True, slots=True)
class EventGroup:
    """One event group of a supported list or a subscription."""

    registry_id: int = DMTF_REGISTRY_ID
    vendor_id: bytes = b""
    version: int = DMTF_EVENT_GROUP_VERSION
    attributes: int = 0
    event_types: tuple[int, ...] = field(default_factory=tuple)

    def encode(self) -> bytes:
        out = bytes((self.registry_id, len(self.vendor_id))) + self.vendor_id
        out += struct.pack("<HHI", len(self.event_types), self.version, self.attributes)
        for t in self.event_types:
            out += struct.pack("<HH", t, 0)
        return out

    @property
    def is_dmtf(self) -> bool:
        return self.registry_id == DMTF_REGISTRY_ID and not self.vendor_id


def encode_event_groups(groups: Sequence[EventGroup]) -> bytes:
    return b"".join(g.encode() for g in groups)


def decode_event_groups(data: bytes, count: int) -> list[EventGroup]:
    """Parse ``count`` event groups that fill ``data`` exactly."""
    out: list[EventGroup] = []
    off = 0
    for n in range(count):
        if off + 2 > len(data):
            raise CodecError(f"event group {n}: past the end of the list")
        reg, vlen = data[off], data[off + 1]
        off += 2
        vendor = bytes(data[off : off + vlen])
        off += vlen
        if off + 8 > len(data):
            raise CodecError(f"event group {n}: header past the end of the list")
        ntypes, version, attributes = struct.unpack_from("<HHI", data, off)
        off += 8
        if off + 4 * ntypes > len(data):
            raise CodecError(f"event group {n}: {ntypes} event types past the end of the list")
        types = tuple(struct.unpack_from("<H", data, off + 4 * i)[0] for i in range(ntypes))
        off += 4 * ntypes
        out.append(EventGroup(reg, vendor, version, attributes, types))
    if off != len(data):
        raise CodecError(f"event group list: {len(data) - off} bytes after {count} group(s)")
    return out


def build_get_supported_event_types(version: int) -> bytes:
    return build_header(version, RequestCode.GET_SUPPORTED_EVENT_TYPES)


def build_supported_event_types(version: int, groups: Sequence[EventGroup]) -> bytes:
    body = encode_event_groups(groups)
    return (
        build_header(version, ResponseCode.SUPPORTED_EVENT_TYPES, len(groups))
        + struct.pack("<I", len(body))
        + body
    )


def parse_supported_event_types(data: bytes) -> list[EventGroup]:
    _need(data, SUPPORTED_EVENT_TYPES_HEADER_SIZE, "SUPPORTED_EVENT_TYPES")
    (length,) = struct.unpack_from("<I", data, HEADER_SIZE)
    end = SUPPORTED_EVENT_TYPES_HEADER_SIZE + length
    _need(data, end, f"SUPPORTED_EVENT_TYPES with list length {length}")
    return decode_event_groups(data[SUPPORTED_EVENT_TYPES_HEADER_SIZE:end], data[2])


def build_subscribe_event_types(version: int, groups: Sequence[EventGroup]) -> bytes:
    """SUBSCRIBE_EVENT_TYPES; no groups: the bare header (unsubscribe from all)."""
    if not groups:
        return build_header(version, RequestCode.SUBSCRIBE_EVENT_TYPES)
    body = encode_event_groups(groups)
    return (
        build_header(version, RequestCode.SUBSCRIBE_EVENT_TYPES, len(groups))
        + struct.pack("<I", len(body))
        + body
    )


def parse_subscribe_event_types(data: bytes) -> list[EventGroup]:
    """The groups of a SUBSCRIBE_EVENT_TYPES that must be exactly as long as its fields
    say (it travels in a session, so no transport padding: libspdm checks the same)."""
    _need(data, HEADER_SIZE, "SUBSCRIBE_EVENT_TYPES")
    count = data[2]
    if count == 0:
        if len(data) != HEADER_SIZE:
            raise CodecError(
                f"SUBSCRIBE_EVENT_TYPES with SubscribeEventGroupCount 0 is {len(data)} bytes, "
                "must be the 4-byte header"
            )
        return []
    _need(data, HEADER_SIZE + 4, "SUBSCRIBE_EVENT_TYPES")
    (length,) = struct.unpack_from("<I", data, HEADER_SIZE)
    if length == 0:
        raise CodecError(f"SUBSCRIBE_EVENT_TYPES: {count} group(s) but SubscribeListLen 0")
    if len(data) != HEADER_SIZE + 4 + length:
        raise CodecError(
            f"SUBSCRIBE_EVENT_TYPES: SubscribeListLen {length} but {len(data) - 8} bytes follow"
        )
    return decode_event_groups(data[HEADER_SIZE + 4 :], count)


@dataclass(frozen=True, slots=True)
class EventData:
    """One event of SEND_EVENT."""

    instance_id: int
    event_type: int
    detail: bytes
    registry_id: int = DMTF_REGISTRY_ID
    vendor_id: bytes = b""

    def encode(self) -> bytes:
        return (
            struct.pack("<I4x", self.instance_id)
            + bytes((self.registry_id, len(self.vendor_id)))
            + self.vendor_id
            + struct.pack("<HH", self.event_type, len(self.detail))
            + self.detail
        )


def build_send_event(version: int, events: Sequence[EventData]) -> bytes:
    return (
        build_header(version, RequestCode.SEND_EVENT)
        + struct.pack("<I", len(events))
        + b"".join(e.encode() for e in events)
    )


def parse_send_event(data: bytes) -> list[EventData]:
    """The events of a SEND_EVENT that fills ``data`` exactly."""
    _need(data, SEND_EVENT_HEADER_SIZE, "SEND_EVENT")
    (count,) = struct.unpack_from("<I", data, HEADER_SIZE)
    if count == 0:
        raise CodecError("SEND_EVENT: EventCount is 0")
    off = SEND_EVENT_HEADER_SIZE
    out: list[EventData] = []
    for n in range(count):
        if off + 10 > len(data):
            raise CodecError(f"SEND_EVENT event {n}: header past the end")
        (instance,) = struct.unpack_from("<I", data, off)
        reg, vlen = data[off + 8], data[off + 9]
        off += 10
        vendor = bytes(data[off : off + vlen])
        off += vlen
        if off + 4 > len(data):
            raise CodecError(f"SEND_EVENT event {n}: EventTypeID past the end")
        etype, dlen = struct.unpack_from("<HH", data, off)
        off += 4
        if off + dlen > len(data):
            raise CodecError(f"SEND_EVENT event {n}: {dlen}-byte EventDetail past the end")
        out.append(EventData(instance, etype, bytes(data[off : off + dlen]), reg, vendor))
        off += dlen
    if off != len(data):
        raise CodecError(f"SEND_EVENT: {len(data) - off} bytes after {count} event(s)")
    return out


def index_mask(indices: Sequence[int]) -> bytes:
    """The 32-byte bit mask of MeasurementChanged / MeasurementPreUpdate (bit n of byte
    n // 8 for measurement index n)."""
    mask = bytearray(32)
    for i in indices:
        if not 0 <= i <= 0xFF:
            raise CodecError(f"measurement index {i} is not 0..255")
        mask[i // 8] |= 1 << (i % 8)
    return bytes(mask)


def mask_indices(mask: bytes) -> list[int]:
    """The measurement indices set in a 32-byte bit mask."""
    return [i for i in range(len(mask) * 8) if mask[i // 8] >> (i % 8) & 1]
