"""Requester side of GET_ENDPOINT_INFO (DSP0274 1.3 10.16), checked like libspdm's
``libspdm_try_get_endpoint_info``: the response's SlotID (the asked one when signed, 0
otherwise), its length exactly what EPInfoLength and the signature make, and a signed
response verified with the slot's leaf key (``cryptography``, this requester's own code)
over IL = VCA || GET_ENDPOINT_INFO || ENDPOINT_INFO without its signature, context
"responder-endpoint_info signing".  The EPInfo of SubCode 1 must parse as a device class
identifier.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from emulator.codec.constants import ResponseCode
from emulator.codec.endpoint_info import (
    SIGNATURE_REQUESTED,
    SUBCODE_DEVICE_CLASS_IDENTIFIER,
    ClassIdentifier,
    EndpointInfoResponse,
    GetEndpointInfoRequest,
    decode_device_class_identifier,
)
from emulator.errors import CodecError, RequesterError
from emulator.requester.identity import PublicKey, signature_size, verify_challenge_signature
from emulator.requester.requester import Requester

__all__ = ["ENDPOINT_INFO_CONTEXT", "EndpointInfoResult", "get_endpoint_info"]

ENDPOINT_INFO_CONTEXT = b"responder-endpoint_info signing"


@dataclass(frozen=True)
class EndpointInfoResult:
    slot: int
    ep_info: bytes
    identifiers: list[ClassIdentifier]
    signed: bool
    nonce: bytes = b""


async def get_endpoint_info(
    req: Requester,
    *,
    signed: bool = True,
    slot: int = 0,
    public_key: PublicKey | None = None,
    session_id: int | None = None,
    rng: Callable[[int], bytes] = os.urandom,
) -> EndpointInfoResult:
    """GET_ENDPOINT_INFO (SubCode 1); a signed answer is verified with ``public_key`` or
    the leaf key of the chain :mod:`emulator.requester.identity` verified for ``slot``."""
    if req.version < 0x13:
        raise RequesterError("GET_ENDPOINT_INFO needs SPDM 1.3")
    nonce = rng(32) if signed else b""
    request = GetEndpointInfoRequest(
        req.version,
        SUBCODE_DEVICE_CLASS_IDENTIFIER,
        slot if signed else 0,
        SIGNATURE_REQUESTED if signed else 0,
        nonce,
    ).encode()
    rsp = await req.send(request, session_id=session_id)
    req.expect(rsp, ResponseCode.ENDPOINT_INFO)
    asym = req.neg.base_asym
    sig_size = signature_size(asym) if signed else 0
    try:
        msg, end = EndpointInfoResponse.decode(rsp, signed, sig_size)
    except CodecError as exc:
        raise RequesterError(str(exc)) from None
    if session_id is not None and end != len(rsp):
        raise RequesterError(f"ENDPOINT_INFO: {len(rsp)} bytes, its fields make {end}")
    if len(rsp) - end >= 4:  # DOE pads to 4 bytes at most
        raise RequesterError(f"ENDPOINT_INFO: {len(rsp) - end} bytes after the response")
    if msg.slot_id != (slot if signed else 0):
        raise RequesterError(
            f"ENDPOINT_INFO: SlotID {msg.slot_id}, expected {slot if signed else 0}"
        )
    if signed:
        key = public_key
        if key is None:
            flow = req.identity_flow
            held = flow.chains.get(slot) if flow is not None else None
            if held is None:
                raise RequesterError(
                    f"ENDPOINT_INFO: no verified chain of slot {slot} to check with"
                )
            key = held.leaf_key
        il = bytes(req.message_a) + request + msg.encode_unsigned()
        if not verify_challenge_signature(
            req.version, asym, req.neg.base_hash, key, il, msg.signature, ENDPOINT_INFO_CONTEXT
        ):
            raise RequesterError("ENDPOINT_INFO: the signature does not verify over IL")
    try:
        identifiers = decode_device_class_identifier(msg.ep_info)
    except CodecError as exc:
        raise RequesterError(f"ENDPOINT_INFO: EPInfo: {exc}") from None
    return EndpointInfoResult(msg.slot_id, msg.ep_info, identifiers, signed, msg.nonce)
