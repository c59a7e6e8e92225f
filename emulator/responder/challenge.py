"""CHALLENGE / CHALLENGE_AUTH (DSP0274 10.8), as libspdm ``libspdm_rsp_challenge_auth.c``.

Checks, in libspdm's order, each answered with ERROR(InvalidRequest) and no
state change: CHALLENGE shorter than 36 bytes (44 in 1.3); a measurement summary
hash requested (Param2 != 0) while the device does not measure or no measurement
spec/hash was negotiated; SlotID neither 0..7 nor 0xFF; an empty slot (or 0xFF
without a provisioned public key); 1.3 MULTI_KEY_CONN and the slot's
KeyUsageMask lacks CHALLENGE_USE; a summary hash type other than 0, 1 or 0xFF.
CHAL_CAP (core), state after ALGORITHMS (UnexpectedRequest) and "not in a
session" (core, UnexpectedRequest) come first.

The response: Param1 = SlotID (bits 3:0; BasicMutAuthReq stays 0), Param2 =
provisioned slot mask (0 for 0xFF), CertChainHash = Hash(SPDM cert chain of the
slot), a 32-byte nonce from ``req.rng``, the measurement summary hash (empty for
type 0 or a device without MEAS_CAP), OpaqueDataLength/OpaqueData (0 in 1.2+
unless an opaque data format was negotiated, else the identity's configured
opaque data), the 1.3 RequesterContext echoed, and the signature over

    M1 = A || B || C   (A = VCA, B = GET_DIGESTS..CERTIFICATE, C = CHALLENGE +
                        CHALLENGE_AUTH without the signature)

signed as M1 itself for 1.0/1.1 and as combined prefix + Hash(M1) with context
"responder-challenge_auth signing" for 1.2+ (:func:`emulator.crypto.spdm_sign`).
On success the connection is AUTHENTICATED and B and C are emptied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emulator.codec.constants import (
    MEAS_CAP_MASK,
    OPAQUE_DATA_FMT_MASK,
    ErrorCode,
    RequestCode,
)
from emulator.codec.identity import (
    PUBLIC_KEY_SLOT,
    SLOT_COUNT,
    SLOT_ID_MASK,
    ChallengeAuthMsg,
    ChallengeMsg,
    KeyUsage,
    MeasurementSummaryType,
    challenge_size,
)
from emulator.crypto import CHALLENGE_AUTH_SIGN_CONTEXT, hash_size
from emulator.errors import CodecError, EmulatorError
from emulator.responder.base import (
    ConnectionState,
    Request,
    SpdmErrorResponse,
    invalid,
)
from emulator.responder.certificates import (
    multi_key,
    require_negotiated,
    reset_via_request_code,
)

if TYPE_CHECKING:
    from emulator.responder.core import Responder

_MEAS_CAPS = int(MEAS_CAP_MASK)
NONCE_SIZE = 32


def challenge(r: Responder, req: Request) -> bytes:
    """CHALLENGE_AUTH signed over M1 with the key of the requested slot."""
    require_negotiated(r, "CHALLENGE")
    size = challenge_size(r.version)
    if len(req.raw) < size:
        raise invalid(f"CHALLENGE is {len(req.raw)} bytes, SPDM {r.version:02X} needs {size}")
    try:
        msg, size = ChallengeMsg.decode(req.raw)
    except CodecError as exc:
        raise invalid(str(exc)) from None
    dev = req.device
    alg = r.algorithms
    measures = bool(int(dev.capabilities) & _MEAS_CAPS)
    kind = msg.measurement_summary_type
    if kind and (not measures or not alg.measurement_spec or not alg.measurement_hash):
        raise invalid(
            f"measurement summary hash type 0x{kind:02X} requested, but no measurements "
            "were negotiated"
        )
    slot = msg.slot_id
    if slot != PUBLIC_KEY_SLOT and slot >= SLOT_COUNT:
        raise invalid(f"SlotID {slot} is not 0..7 or 0xFF")
    key = dev.identity.key_for(slot, alg.asym)
    if key is None:
        what = (
            "no public key is provisioned" if slot == PUBLIC_KEY_SLOT else f"slot {slot} is empty"
        )
        raise invalid(what)
    mk = multi_key(r)
    if mk and slot != PUBLIC_KEY_SLOT and not key.key_usage & KeyUsage.CHALLENGE:
        raise invalid(f"slot {slot}'s KeyUsageMask does not allow CHALLENGE")
    summary_size = 0
    if measures and kind in (MeasurementSummaryType.TCB, MeasurementSummaryType.ALL):
        summary_size = hash_size(alg.base_hash)
    if summary_size == 0 and kind != MeasurementSummaryType.NONE:
        raise invalid(f"measurement summary hash type 0x{kind:02X} is not 0, 1 or 0xFF")

    reset_via_request_code(r, RequestCode.CHALLENGE)
    if slot == PUBLIC_KEY_SLOT:
        slot_mask = 0
    else:
        slot_mask = dev.identity.provisioned_mask(alg.asym)
        if slot_mask == 0:  # pragma: no cover - a key was found above
            raise SpdmErrorResponse(ErrorCode.Unspecified, "no provisioned slot")
    try:
        cert_chain_hash = key.digest(alg.base_hash)
        summary = (
            dev.measurement_summary_hash(kind, alg.measurement_hash, alg.base_hash)
            if summary_size
            else b""
        )
    except EmulatorError as exc:
        raise SpdmErrorResponse(ErrorCode.Unspecified, f"CHALLENGE_AUTH: {exc}") from None
    if len(summary) != summary_size:
        raise SpdmErrorResponse(
            ErrorCode.Unspecified,
            f"measurement summary hash is {len(summary)} bytes, expected {summary_size}",
        )
    opaque = dev.identity.challenge_opaque_data
    if r.version >= 0x12 and not alg.other_params & OPAQUE_DATA_FMT_MASK:
        opaque = b""
    nonce = req.rng(NONCE_SIZE)
    auth = ChallengeAuthMsg(
        version=r.version,
        attributes=slot & SLOT_ID_MASK,
        slot_mask=slot_mask,
        cert_chain_hash=cert_chain_hash,
        nonce=nonce,
        measurement_summary_hash=summary,
        opaque_data=opaque,
        requester_context=msg.requester_context if r.version >= 0x13 else b"",
    )
    unsigned = auth.encode_unsigned()
    c = r.transcripts.c
    c += req.raw[:size]
    c += unsigned
    m1 = bytes(r.transcripts.a) + bytes(r.transcripts.b) + bytes(c)
    try:
        signature = key.sign(r.version, alg.asym, alg.base_hash, CHALLENGE_AUTH_SIGN_CONTEXT, m1)
    except EmulatorError as exc:
        r.transcripts.b.clear()  # libspdm empties B and C whether or not signing worked
        c.clear()
        raise SpdmErrorResponse(ErrorCode.Unspecified, f"signing failed: {exc}") from None
    r.state = ConnectionState.AUTHENTICATED
    r.transcripts.b.clear()
    r.transcripts.c.clear()
    return unsigned + signature
