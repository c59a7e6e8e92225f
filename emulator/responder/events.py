"""GET_SUPPORTED_EVENT_TYPES and SUBSCRIBE_EVENT_TYPES (DSP0274 1.3 10.26-10.27), as libspdm's
``libspdm_rsp_supported_event_types.c`` / ``libspdm_rsp_subscribe_event_types_ack.c``.

Both exist in a secure session only (the core answers SessionRequired outside one) of
SPDM 1.3 with EVENT_CAP.  GET_SUPPORTED_EVENT_TYPES must be exactly its 4-byte header (it
travels in a session: no transport padding, as libspdm checks); SUBSCRIBE_EVENT_TYPES
must be exactly as long as its SubscribeListLen says (count 0: the bare header, which
unsubscribes from everything), and may name only the DMTF event group with supported
event types (or its "all event types" attribute): InvalidRequest otherwise.

The subscription belongs to the session (:class:`emulator.device.events.EventQueue`);
events reach the requester as encapsulated SEND_EVENT requests
(:mod:`emulator.responder.encapsulated`).  KEY_EXCHANGE's EventAllPolicy subscribes a
session to every supported type at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emulator.codec.constants import ResponseCode
from emulator.codec.events import build_supported_event_types, parse_subscribe_event_types
from emulator.codec.messages import HEADER_SIZE, build_header
from emulator.device.events import EventQueue, SubscriptionError, supported_groups
from emulator.errors import CodecError
from emulator.responder.base import Request, invalid
from emulator.responder.key_exchange import current_session, require_negotiated

if TYPE_CHECKING:
    from emulator.responder.core import Responder
    from emulator.session.table import Session


def event_queue(r: Responder, session: Session) -> EventQueue:
    """The session's event queue, made on first use."""
    if session.events is None:
        session.events = EventQueue(r.device.events)
    return session.events


def get_supported_event_types(r: Responder, req: Request) -> bytes:
    """SUPPORTED_EVENT_TYPES: the DMTF event group with the types of ``[events]``."""
    require_negotiated(r, "GET_SUPPORTED_EVENT_TYPES")
    current_session(r, req, "GET_SUPPORTED_EVENT_TYPES")
    if len(req.raw) != HEADER_SIZE:
        raise invalid(
            f"GET_SUPPORTED_EVENT_TYPES is {len(req.raw)} bytes, must be the 4-byte header"
        )
    return build_supported_event_types(r.version, supported_groups(r.device.events))


def subscribe_event_types(r: Responder, req: Request) -> bytes:
    """SUBSCRIBE_EVENT_TYPES_ACK: the session's subscription is replaced."""
    require_negotiated(r, "SUBSCRIBE_EVENT_TYPES")
    session = current_session(r, req, "SUBSCRIBE_EVENT_TYPES")
    try:
        groups = parse_subscribe_event_types(req.raw)
    except CodecError as exc:
        raise invalid(str(exc)) from None
    try:
        event_queue(r, session).subscribe(groups)
    except SubscriptionError as exc:
        raise invalid(f"SUBSCRIBE_EVENT_TYPES: {exc}") from None
    return build_header(r.version, ResponseCode.SUBSCRIBE_EVENT_TYPES_ACK)
