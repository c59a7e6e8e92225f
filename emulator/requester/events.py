"""Requester side of events (DSP0274 1.3 10.26-10.28) and of the requests a device sends
through the encapsulated flow: GET_SUPPORTED_EVENT_TYPES, SUBSCRIBE_EVENT_TYPES, and
:func:`serve_encapsulated`, which asks the device for its pending requests
(GET_ENCAPSULATED_REQUEST) and answers them as libspdm's requester does:

* SEND_EVENT: checked like ``libspdm_get_encap_response_event_ack`` (EventCount not 0, a
  DMTF event's EventDetailLen its type's size, the message exactly as long as its events,
  EventInstanceIDs consecutive or at least without gaps or repeats) and acknowledged with
  EVENT_ACK; the events are collected;
* GET_ENDPOINT_INFO: ENDPOINT_INFO with this requester's EPInfo, signed with its
  identity's key over A || GET_ENDPOINT_INFO || ENDPOINT_INFO without the signature
  (context "requester-endpoint_info signing") when the device asks for a signature;
* anything else: ERROR(UnsupportedRequest).

A device with nothing pending answers ERROR(NoPendingRequests): no requests, no error.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from emulator.codec.constants import ErrorCode, RequestCode, ResponseCode
from emulator.codec.endpoint_info import (
    ClassIdentifier,
    EndpointInfoResponse,
    GetEndpointInfoRequest,
    encode_device_class_identifier,
)
from emulator.codec.events import (
    DMTF_EVENT_DETAIL_SIZES,
    DMTF_REGISTRY_ID,
    EventData,
    EventGroup,
    build_get_supported_event_types,
    build_subscribe_event_types,
    parse_send_event,
    parse_supported_event_types,
)
from emulator.codec.messages import build_header
from emulator.errors import CodecError, RequesterError
from emulator.requester.errors import SpdmErrorReply
from emulator.requester.requester import Requester
from emulator.requester.session import (
    RequesterIdentity,
    RequesterSession,
    _hash,
    _sign,
    _signing_prefix,
)

__all__ = [
    "EncapResult",
    "get_supported_event_types",
    "serve_encapsulated",
    "subscribe_event_types",
]

MUT_ENDPOINT_INFO_CONTEXT = b"requester-endpoint_info signing"
#: what this requester reports as its EPInfo (a DMTF element with one sub-identifier)
DEFAULT_REQUESTER_EP_INFO = encode_device_class_identifier(
    [ClassIdentifier(DMTF_REGISTRY_ID, b"", (b"spdm-emulator requester",))]
)


async def get_supported_event_types(s: RequesterSession) -> list[EventGroup]:
    """GET_SUPPORTED_EVENT_TYPES in the session; Param1 must count the groups listed."""
    rsp = await s.send(build_get_supported_event_types(s.version))
    s._expect(rsp, ResponseCode.SUPPORTED_EVENT_TYPES)
    try:
        groups = parse_supported_event_types(rsp)
    except CodecError as exc:
        raise RequesterError(f"SUPPORTED_EVENT_TYPES: {exc}") from None
    (length,) = struct.unpack_from("<I", rsp, 4)
    if len(rsp) != 8 + length:
        raise RequesterError(
            f"SUPPORTED_EVENT_TYPES: {len(rsp)} bytes, its list makes {8 + length}"
        )
    if not groups:
        raise RequesterError("SUPPORTED_EVENT_TYPES: no event group")
    return groups


async def subscribe_event_types(s: RequesterSession, groups: list[EventGroup]) -> None:
    """SUBSCRIBE_EVENT_TYPES (no groups: unsubscribe from everything)."""
    rsp = await s.send(build_subscribe_event_types(s.version, groups))
    s._expect(rsp, ResponseCode.SUBSCRIBE_EVENT_TYPES_ACK)
    if len(rsp) != 4:
        raise RequesterError(f"SUBSCRIBE_EVENT_TYPES_ACK is {len(rsp)} bytes, not 4")


def check_events(request: bytes) -> list[EventData]:
    """SEND_EVENT with libspdm's recipient rules (module docstring); RequesterError."""
    try:
        events = parse_send_event(request)
    except CodecError as exc:
        raise RequesterError(f"SEND_EVENT: {exc}") from None
    for e in events:
        if e.registry_id == DMTF_REGISTRY_ID:
            size = DMTF_EVENT_DETAIL_SIZES.get(e.event_type)
            if size is None:
                raise RequesterError(f"SEND_EVENT: unknown DMTF event type {e.event_type}")
            if len(e.detail) != size:
                raise RequesterError(
                    f"SEND_EVENT: DMTF event type {e.event_type} has a {len(e.detail)}-byte "
                    f"detail, not {size}"
                )
    ids = [e.instance_id for e in events]
    if len(set(ids)) != len(ids) or max(ids) - min(ids) + 1 != len(ids):
        raise RequesterError(f"SEND_EVENT: EventInstanceIDs {ids} have gaps or repeats")
    return events


@dataclass
class EncapResult:
    """What one :func:`serve_encapsulated` run answered."""

    requests: list[bytes] = field(default_factory=list)
    events: list[EventData] = field(default_factory=list)
    endpoint_info_requests: list[GetEndpointInfoRequest] = field(default_factory=list)


async def serve_encapsulated(
    req: Requester,
    session: RequesterSession | None = None,
    *,
    identity: RequesterIdentity | None = None,
    ep_info: bytes = DEFAULT_REQUESTER_EP_INFO,
    rng: Callable[[int], bytes] = os.urandom,
) -> EncapResult:
    """Answer the device's encapsulated requests (module docstring) until it has none."""
    v = req.version
    result = EncapResult()

    async def send(message: bytes) -> bytes:
        if session is not None:
            return await session.send(message)
        return await req.send(message)

    try:
        rsp = await send(build_header(v, RequestCode.GET_ENCAPSULATED_REQUEST))
    except SpdmErrorReply as err:
        if err.code == ErrorCode.NoPendingRequests:
            return result
        raise
    if rsp[1] != ResponseCode.ENCAPSULATED_REQUEST:
        raise RequesterError(f"expected ENCAPSULATED_REQUEST, got {rsp[:4].hex()}")
    request_id, request = rsp[2], rsp[4:]
    ack_size = 8 if v >= 0x12 else 4
    while request:
        result.requests.append(request)
        answer = _answer(req, request, identity, ep_info, rng, result)
        rsp = await send(
            bytes((v, RequestCode.DELIVER_ENCAPSULATED_RESPONSE, request_id, 0)) + answer
        )
        if rsp[1] != ResponseCode.ENCAPSULATED_RESPONSE_ACK:
            raise RequesterError(f"expected ENCAPSULATED_RESPONSE_ACK, got {rsp[:4].hex()}")
        if v >= 0x12 and rsp[4] != request_id:
            raise RequesterError("ENCAPSULATED_RESPONSE_ACK: AckRequestID does not match")
        if rsp[3] == 1:
            request_id, request = rsp[2], rsp[ack_size:]
        else:
            request = b""
    return result


def _answer(
    req: Requester,
    request: bytes,
    identity: RequesterIdentity | None,
    ep_info: bytes,
    rng: Callable[[int], bytes],
    result: EncapResult,
) -> bytes:
    v = req.version
    if len(request) < 4 or request[0] != v:
        return build_header(v, ResponseCode.ERROR, ErrorCode.VersionMismatch)
    if request[1] == RequestCode.SEND_EVENT:
        result.events.extend(check_events(request))
        return build_header(v, ResponseCode.EVENT_ACK)
    if request[1] == RequestCode.GET_ENDPOINT_INFO:
        try:
            msg, size = GetEndpointInfoRequest.decode(request)
        except CodecError:
            return build_header(v, ResponseCode.ERROR, ErrorCode.InvalidRequest)
        result.endpoint_info_requests.append(msg)
        if not msg.signed:
            return EndpointInfoResponse(v, 0, ep_info).encode()
        if identity is None:
            return build_header(v, ResponseCode.ERROR, ErrorCode.InvalidRequest)
        rsp = EndpointInfoResponse(v, msg.slot_id, ep_info, rng(32))
        il = bytes(req.message_a) + request[:size] + rsp.encode_unsigned()
        from emulator.codec.constants import AlgType

        asym = req.neg.struct(AlgType.REQ_BASE_ASYM_ALG)
        name = {0x01: "sha256", 0x02: "sha384", 0x04: "sha512"}.get(req.neg.base_hash, "sha384")
        data = _signing_prefix(v, MUT_ENDPOINT_INFO_CONTEXT) + _hash(name, il)
        rsp.signature = _sign(asym, name, identity.key, data)
        return rsp.encode()
    return build_header(v, ResponseCode.ERROR, ErrorCode.UnsupportedRequest, request[1])
