"""Event notification of one session (DSP0274 1.3 10.26-10.28, EVENT_CAP).

A session's requester subscribes (SUBSCRIBE_EVENT_TYPES, or EventAllPolicy in
KEY_EXCHANGE) to DMTF event types the device supports (the profile's ``[events]``).
Device changes, as :meth:`emulator.device.model.Device.notify` announces them, become
events of the subscribed types:

* a measurement reported with a new value (a runtime change, a MEL append, a device
  reset applying pending values) -> MeasurementChanged with that index in its mask;
* a change held back until the next reset (no MEAS_FRESH_CAP) -> MeasurementPreUpdate;
* a certificate chain set, erased or installed at a reset -> CertificateChanged with
  the slot mask.

Events wait in the session's :class:`EventQueue` until the requester collects them: the
device cannot speak first on any SPDM transport, so, as libspdm's responder, it sends
SEND_EVENT as an encapsulated request when the requester asks for one
(GET_ENCAPSULATED_REQUEST in the session) and drops them once EVENT_ACK comes back.
Undelivered events of a type merge into one (their masks OR-ed).  At most ``limit``
events wait; beyond that the oldest is dropped and an EventLost (last acknowledged and
last lost EventInstanceID) is queued.  EventInstanceIDs count up by one per session, so
every SEND_EVENT lists consecutive IDs.

Thread-safe: device changes may come from another thread (the control plane).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from emulator.codec.events import (
    DMTF_EVENT_GROUP_VERSION,
    DMTF_REGISTRY_ID,
    SUBSCRIBE_ALL,
    DmtfEventType,
    EventData,
    EventGroup,
    index_mask,
)

__all__ = ["EventQueue", "EventSettings", "SubscriptionError", "supported_groups"]


class SubscriptionError(ValueError):
    """A SUBSCRIBE_EVENT_TYPES list the device cannot accept (InvalidRequest)."""


@dataclass(frozen=True)
class EventSettings:
    """The profile's ``[events]``: supported DMTF event types and the queue limit."""

    supported: tuple[int, ...] = tuple(int(t) for t in DmtfEventType)
    queue_limit: int = 32


def supported_groups(settings: EventSettings) -> list[EventGroup]:
    """SUPPORTED_EVENT_TYPES: the DMTF event group with the supported types."""
    return [
        EventGroup(
            DMTF_REGISTRY_ID, b"", DMTF_EVENT_GROUP_VERSION, 0, tuple(sorted(settings.supported))
        )
    ]


def _merge(detail: bytes, more: bytes) -> bytes:
    return bytes(a | b for a, b in zip(detail, more, strict=True))


@dataclass
class EventQueue:
    """One session's subscription and the events waiting for it."""

    settings: EventSettings = field(default_factory=EventSettings)
    subscribed: frozenset[int] = frozenset()
    #: the next EventInstanceID
    next_id: int = 1
    last_acked: int = 0
    last_lost: int | None = None
    _waiting: list[EventData] = field(default_factory=list)
    #: EventInstanceIDs in the SEND_EVENT awaiting its EVENT_ACK
    _in_flight: tuple[int, ...] = ()
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # ---- subscription --------------------------------------------------------------

    def subscribe(self, groups: Iterable[EventGroup]) -> frozenset[int]:
        """Replace the subscription (no groups: none); SubscriptionError names a group or
        type the device does not support."""
        wanted: set[int] = set()
        supported = set(self.settings.supported)
        for n, group in enumerate(groups):
            if not group.is_dmtf:
                raise SubscriptionError(
                    f"event group {n}: registry {group.registry_id} / VendorID "
                    f"{group.vendor_id.hex() or '-'} is not supported (only DMTF events)"
                )
            if group.version > DMTF_EVENT_GROUP_VERSION or group.version == 0:
                raise SubscriptionError(
                    f"event group {n}: EventGroupVer {group.version}, the device has "
                    f"{DMTF_EVENT_GROUP_VERSION}"
                )
            if group.attributes & SUBSCRIBE_ALL:
                if group.event_types:
                    raise SubscriptionError(
                        f"event group {n}: 'all event types' with a list of event types"
                    )
                wanted |= supported
                continue
            if not group.event_types:
                raise SubscriptionError(f"event group {n}: no event type to subscribe to")
            for t in group.event_types:
                if t not in supported:
                    raise SubscriptionError(f"event group {n}: event type {t} is not supported")
                wanted.add(t)
        with self._lock:
            self.subscribed = frozenset(wanted)
            self._waiting = [e for e in self._waiting if e.event_type in wanted]
        return self.subscribed

    def subscribe_all(self) -> None:
        with self._lock:
            self.subscribed = frozenset(self.settings.supported)

    # ---- events from device changes ----------------------------------------------------

    def on_device_change(self, what: str, detail: object) -> bool:
        """Queue the event a device change means for this session; True if it did."""
        if not isinstance(detail, dict):
            return False
        if what == "measurement":
            if detail.get("change") == "device_reset":
                indices = [int(i) for i in detail.get("indices", ())]
                kind = DmtfEventType.MEASUREMENT_CHANGED
            else:
                if "index" not in detail:
                    return False
                indices = [int(detail["index"])]
                kind = (
                    DmtfEventType.MEASUREMENT_PRE_UPDATE
                    if detail.get("pending")
                    else DmtfEventType.MEASUREMENT_CHANGED
                )
            if not indices:
                return False
            return self.queue(kind, index_mask(indices))
        if what == "certificate":
            mask = int(detail.get("slot_mask", 0)) & 0xFF
            if not mask:
                return False
            return self.queue(DmtfEventType.CERTIFICATE_CHANGED, bytes((mask,)))
        return False

    def queue(self, event_type: int, detail: bytes) -> bool:
        """Queue one event if subscribed (merged into a waiting one of the same type)."""
        with self._lock:
            if event_type not in self.subscribed:
                return False
            for i, e in enumerate(self._waiting):
                if (
                    e.event_type == event_type
                    and e.instance_id not in self._in_flight
                    and event_type != DmtfEventType.EVENT_LOST
                ):
                    self._waiting[i] = EventData(
                        e.instance_id, event_type, _merge(e.detail, detail)
                    )
                    return True
            self._waiting.append(EventData(self._take_id(), event_type, detail))
            self._enforce_limit()
            return True

    def _take_id(self) -> int:
        value = self.next_id
        self.next_id = (self.next_id + 1) & 0xFFFFFFFF
        return value

    def _enforce_limit(self) -> None:
        """Drop the oldest undelivered events beyond the limit; report them lost."""
        limit = self.settings.queue_limit
        while sum(e.event_type != DmtfEventType.EVENT_LOST for e in self._waiting) > limit:
            victim = next(
                (
                    e
                    for e in self._waiting
                    if e.instance_id not in self._in_flight
                    and e.event_type != DmtfEventType.EVENT_LOST
                ),
                None,
            )
            if victim is None:
                return
            self._waiting.remove(victim)
            self.last_lost = victim.instance_id
            if DmtfEventType.EVENT_LOST in self.subscribed:
                self._waiting = [
                    e
                    for e in self._waiting
                    if e.event_type != DmtfEventType.EVENT_LOST or e.instance_id in self._in_flight
                ]
                detail = struct.pack("<II", self.last_acked, self.last_lost)
                self._waiting.append(EventData(self._take_id(), DmtfEventType.EVENT_LOST, detail))
            # keep the waiting list's IDs consecutive (what libspdm's recipient checks):
            self._waiting.sort(key=lambda e: e.instance_id)

    # ---- delivery ------------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        with self._lock:
            return bool(self._waiting)

    def take(self, max_size: int) -> list[EventData]:
        """The events for the next SEND_EVENT (consecutive IDs, within ``max_size``
        bytes of event data); they stay queued until :meth:`acknowledge`."""
        with self._lock:
            out: list[EventData] = []
            size = 0
            for e in sorted(self._waiting, key=lambda e: e.instance_id):
                n = len(e.encode())
                if out and (size + n > max_size or e.instance_id != out[-1].instance_id + 1):
                    break
                out.append(e)
                size += n
            self._in_flight = tuple(e.instance_id for e in out)
            return out

    def acknowledge(self) -> int:
        """EVENT_ACK: the events of the last SEND_EVENT are delivered; how many."""
        with self._lock:
            sent = set(self._in_flight)
            self._waiting = [e for e in self._waiting if e.instance_id not in sent]
            if sent:
                self.last_acked = max(sent)
            self._in_flight = ()
            return len(sent)

    def abandon(self) -> None:
        """The SEND_EVENT was not acknowledged: its events wait for the next one."""
        with self._lock:
            self._in_flight = ()
