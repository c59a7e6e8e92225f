"""GET_ENDPOINT_INFO / ENDPOINT_INFO (DSP0274 1.3 10.16), as libspdm's
``libspdm_rsp_endpoint_info.c``.

EP_INFO_CAP (signed or not) and SPDM 1.3 are checked by the core.  Then, in libspdm's
order: before ALGORITHMS UnexpectedRequest; SubCode other than 1 (device class
identifier) InvalidRequest; shorter than 8 bytes (40 when a signature is requested)
InvalidRequest; a signature requested from a device with EP_INFO_CAP_NO_SIG:
UnsupportedRequest; SlotID neither 0..7 nor 0xF, an empty slot (for the negotiated
algorithm), 0xF without a provisioned public key, or (multi-key connection) a key without
ENDPOINT_INFO_USE: InvalidRequest.

The response carries the profile's EPInfo (``[endpoint_info]``, :func:`emulator.device.model`)
and, when signed, a nonce from ``req.rng`` and the signature of the slot's key over

    IL = A || GET_ENDPOINT_INFO || ENDPOINT_INFO without the signature

(VCA, then only this exchange: libspdm resets message E on each GET_ENDPOINT_INFO, inside
a session and outside), context "responder-endpoint_info signing" (1.3 signs prefix ||
Hash(IL)).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emulator.codec.constants import ErrorCode, ResponderCap
from emulator.codec.endpoint_info import (
    NONCE_SIZE,
    SUBCODE_DEVICE_CLASS_IDENTIFIER,
    EndpointInfoResponse,
    GetEndpointInfoRequest,
)
from emulator.codec.identity import PUBLIC_KEY_SLOT, SLOT_COUNT, KeyUsage
from emulator.crypto import ENDPOINT_INFO_SIGN_CONTEXT
from emulator.errors import CodecError, EmulatorError
from emulator.responder.base import Request, SpdmErrorResponse, invalid
from emulator.responder.certificates import multi_key, require_negotiated

if TYPE_CHECKING:
    from emulator.device.identity import SlotKey
    from emulator.responder.core import Responder

#: GET_ENDPOINT_INFO SlotID 0xF names the provisioned public key (PUB_KEY_ID_CAP)
SLOT_PUBLIC_KEY = 0x0F


def signing_key(r: Responder, req: Request, slot: int) -> SlotKey:
    """The key a signed ENDPOINT_INFO uses (InvalidRequest when the slot cannot sign)."""
    if slot != SLOT_PUBLIC_KEY and slot >= SLOT_COUNT:
        raise invalid(f"GET_ENDPOINT_INFO: SlotID {slot} is not 0..7 or 0xF")
    asym = r.algorithms.base_asym
    key = req.device.identity.key_for(PUBLIC_KEY_SLOT if slot == SLOT_PUBLIC_KEY else slot, asym)
    if key is None:
        what = "no provisioned public key" if slot == SLOT_PUBLIC_KEY else f"slot {slot} is empty"
        raise invalid(f"GET_ENDPOINT_INFO: {what} for the negotiated algorithm")
    if multi_key(r) and slot != SLOT_PUBLIC_KEY and not key.key_usage & KeyUsage.ENDPOINT_INFO:
        raise invalid(f"GET_ENDPOINT_INFO: slot {slot}'s key is not for ENDPOINT_INFO (KeyUsage)")
    return key


def get_endpoint_info(r: Responder, req: Request) -> bytes:
    """ENDPOINT_INFO with the device class identifier, signed when asked."""
    require_negotiated(r, "GET_ENDPOINT_INFO")
    if req.param1 != SUBCODE_DEVICE_CLASS_IDENTIFIER:
        raise invalid(f"GET_ENDPOINT_INFO: SubCode {req.param1} is not 1 (device class)")
    try:
        msg, size = GetEndpointInfoRequest.decode(req.raw)
    except CodecError as exc:
        raise invalid(str(exc)) from None
    ep_info = req.device.endpoint_info
    if not msg.signed:
        return EndpointInfoResponse(r.version, 0, ep_info).encode()
    if not r.device.capabilities & ResponderCap.EP_INFO_CAP_SIG:
        raise SpdmErrorResponse(
            ErrorCode.UnsupportedRequest,
            "GET_ENDPOINT_INFO: a signature is requested from a device with EP_INFO_CAP_NO_SIG",
            data=req.code,
        )
    key = signing_key(r, req, msg.slot_id)
    rsp = EndpointInfoResponse(r.version, msg.slot_id, ep_info, req.rng(NONCE_SIZE))
    il = bytes(r.transcripts.a) + req.raw[:size] + rsp.encode_unsigned()
    alg = r.algorithms
    try:
        rsp.signature = key.sign(
            r.version, alg.base_asym, alg.base_hash, ENDPOINT_INFO_SIGN_CONTEXT, il
        )
    except EmulatorError as exc:
        raise SpdmErrorResponse(ErrorCode.Unspecified, f"ENDPOINT_INFO signing: {exc}") from None
    return rsp.encode()
