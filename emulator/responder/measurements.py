"""GET_MEASUREMENTS -> MEASUREMENTS (DSP0274 10.11), as libspdm's responder behaves.

Checks, in libspdm's order (``libspdm_get_response_measurements``); every one
answers ERROR and resets the measurement transcript:

* MEAS_CAP not advertised: UnsupportedRequest (done by the core's capability gate);
* no measurement specification / hash negotiated, or state before NEGOTIATED:
  UnexpectedRequest;
* request shorter than its version and Param1 need: InvalidRequest;
* SignatureRequested without MEAS_CAP=10b: InvalidRequest;
* an index the device does not have: InvalidRequest (libspdm's
  LIBSPDM_STATUS_MEAS_INVALID_INDEX; every version);
* signed, 1.1+: SlotID > 7 (and not 0xF), an empty slot, no public key for
  0xF, or (1.3, MULTI_KEY_CONN) a key whose KeyUsageMask lacks measurements:
  InvalidRequest;
* 1.2+: a response over the requester's MaxSPDMmsgSize or DataTransferSize
  or over the device's own size: ResponseTooLarge with the 4-byte response size
  as extended data; when both sides advertised CHUNK_CAP, only the
  MaxSPDMmsgSizes limit it (a response over a DataTransferSize is delivered by
  CHUNK_GET, :mod:`emulator.responder.chunking`); 1.0/1.1 over the device's own
  size: Unspecified.

Transcript L1/L2 (DSP0274 "Measurement transcript", libspdm
``libspdm_append_message_m`` without LIBSPDM_RECORD_TRANSCRIPT_DATA_SUPPORT):
a *running hash* with the negotiated BaseHashAlgo over ``[VCA (1.2+)] ||
GET_MEASUREMENTS || MEASUREMENTS || ...``; a signed response contributes itself
without the signature, is signed over the hash (1.0/1.1: the hash is the
message digest of L1; 1.2+: prefix || Hash(L1/L2), context "responder-measurements
signing") and ends the log.  Memory is constant however many unsigned requests
arrive (libspdm's buffered mode would instead fail once
LIBSPDM_MAX_MESSAGE_L1L2_BUFFER_SIZE is exceeded).  One log per session (and one
outside sessions).  Any other request that succeeds resets the log of the
context it came in (libspdm_reset_message_buffer_via_request_code), and so
does an ERROR to GET_MEASUREMENTS; GET_VERSION resets everything.

Content changed (1.2+, signed only; Param2 bits 5:4): 01b when a block reported
earlier in the same log has changed since, else 10b.  Unsigned: 00b (libspdm's
requester rejects anything else).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from emulator.codec.constants import (
    OPAQUE_DATA_FMT_MASK,
    ErrorCode,
    RequestCode,
    ResponderCap,
    ResponseCode,
)
from emulator.codec.measurements import (
    CONTENT_CHANGE_DETECTED,
    CONTENT_NO_CHANGE_DETECTED,
    OPERATION_ALL,
    OPERATION_COUNT,
    PUBLIC_KEY_SLOT,
    SLOT_ID_MASK,
    GetMeasurementsRequest,
    MeasurementsResponse,
)
from emulator.crypto import (
    MEASUREMENTS_SIGN_CONTEXT,
    PrivateKey,
    new_hash,
    spdm_sign_hash,
)
from emulator.crypto.asym import signature_size
from emulator.device.measurements import StoredBlock
from emulator.errors import CodecError, CryptoError
from emulator.responder.base import (
    ConnectionState,
    Request,
    SpdmErrorResponse,
    invalid,
    unexpected,
)
from emulator.responder.chunking import chunking_active, response_limit
from emulator.responder.context import MeasurementLog

if TYPE_CHECKING:
    from emulator.device.model import Device
    from emulator.responder.core import Responder

log = logging.getLogger("emulator.responder.measurements")

_MEAS_CAP_SIG = int(ResponderCap.MEAS_CAP_SIG)
#: identity slot id of the raw public key (PUB_KEY_ID_CAP); SlotIDParam 0xF selects it
_IDENTITY_PUBLIC_KEY_SLOT = 0xFF
#: KeyUsageMask bit "measurement use" (DSP0274 1.3 GET_KEY_PAIR_INFO)
_KEY_USAGE_MEASUREMENT = 0x0004
#: at most this many per-session logs are kept (old sessions' logs are dropped first)
_MAX_LOGS = 64
#: requests that are part of delivering another request's response: they do not reset L1/L2
_TRANSPARENT = {RequestCode.GET_MEASUREMENTS, RequestCode.CHUNK_GET, RequestCode.CHUNK_SEND}


def reset_log(r: Responder, session_id: int | None) -> None:
    """Forget L1/L2 of one context (libspdm_reset_message_m)."""
    r.ctx.measurements.logs.pop(session_id, None)


def current_log(r: Responder, session_id: int | None) -> MeasurementLog | None:
    """The open L1/L2 log of a context, if any (tests and telemetry)."""
    return r.ctx.measurements.logs.get(session_id)


def observe(r: Responder, request: bytes, session_id: int | None, response: bytes) -> None:
    """Pipeline step "observe": reset L1/L2 as libspdm does after each request (see the
    module docstring)."""
    if len(request) < 2 or not r.ctx.measurements.logs:
        return
    is_error = len(response) >= 2 and response[1] == ResponseCode.ERROR
    code = request[1]
    if code == RequestCode.GET_MEASUREMENTS:
        if is_error:
            reset_log(r, session_id)
    elif code not in _TRANSPARENT and not is_error:
        reset_log(r, session_id)


def _too_large(size: int) -> SpdmErrorResponse:
    return SpdmErrorResponse(
        ErrorCode.ResponseTooLarge,
        f"MEASUREMENTS would be {size} bytes",
        extended=size.to_bytes(4, "little"),
    )


def _check_size(r: Responder, size: int) -> None:
    """ERROR unless a ``size``-byte response can be delivered (see the module docstring);
    checked before signing, with the pipeline's own rule for the requester's limits
    (:func:`emulator.responder.chunking.response_limit`)."""
    limit = response_limit(r)
    if limit is not None and size > limit:
        raise _too_large(size)
    own = min(r.device.data_transfer_size, r.device.max_spdm_msg_size)
    if chunking_active(r):
        # a response over the DataTransferSizes is delivered by CHUNK_GET
        if size > r.device.max_spdm_msg_size:
            raise _too_large(size)
    elif r.version >= 0x12:
        if size > own:
            raise _too_large(size)
    elif size > own:
        raise SpdmErrorResponse(
            ErrorCode.Unspecified,
            f"MEASUREMENTS would be {size} bytes, over the device's {own}-byte limit",
        )


def _signing_key(r: Responder, device: Device, req: GetMeasurementsRequest) -> PrivateKey:
    """The private key for a signed response (InvalidRequest if the slot cannot sign)."""
    slot = req.slot_id & SLOT_ID_MASK if r.version >= 0x11 else 0
    if slot != PUBLIC_KEY_SLOT and slot >= 8:
        raise invalid(f"SlotIDParam {slot} is not a slot (0..7, or 0xF for the public key)")
    identity = device.identity
    asym = r.algorithms.asym
    key = identity.key_for(_IDENTITY_PUBLIC_KEY_SLOT if slot == PUBLIC_KEY_SLOT else slot, asym)
    if key is None:
        what = "no provisioned public key" if slot == PUBLIC_KEY_SLOT else f"slot {slot} is empty"
        raise invalid(f"signed GET_MEASUREMENTS: {what} for the negotiated algorithm")
    if (
        r.version >= 0x13
        and r.algorithms.multi_key_rsp
        and slot != PUBLIC_KEY_SLOT
        and not key.key_usage & _KEY_USAGE_MEASUREMENT
    ):
        raise invalid(f"slot {slot}: its key is not for measurements (KeyUsageMask)")
    private: PrivateKey = key.key
    return private


def _collect(r: Responder, device: Device, op: int, raw: bool) -> tuple[list[StoredBlock], bytes]:
    """The blocks the operation reports and their encoding (each block rendered once per
    change: :meth:`StoredBlock.encoded`)."""
    store = device.measurements
    if op == OPERATION_COUNT:
        return store.snapshot(), b""
    mhash = r.algorithms.measurement_hash
    if op == OPERATION_ALL:
        stored = store.snapshot()
    else:
        block = store.get(op)
        if block is None:
            raise invalid(f"the device has no measurement index {op}")
        stored = [block]
    try:
        return stored, b"".join([b.encoded(mhash, raw) for b in stored])
    except CryptoError as exc:
        raise SpdmErrorResponse(ErrorCode.Unspecified, f"measurement hash: {exc}") from None


def get_measurements(r: Responder, req: Request) -> bytes:
    """DSP0274 10.11: answer GET_MEASUREMENTS with MEASUREMENTS (or ERROR)."""
    alg = r.algorithms
    if not alg.measurement_spec or not alg.measurement_hash:
        raise unexpected("no measurement specification / hash was negotiated")
    if r.state < ConnectionState.NEGOTIATED:
        raise unexpected("GET_MEASUREMENTS before NEGOTIATE_ALGORITHMS")
    try:
        request = GetMeasurementsRequest.decode(req.raw)
    except CodecError as exc:
        raise invalid(str(exc)) from None
    signed = request.signature_requested
    if signed and not int(r.device.capabilities) & _MEAS_CAP_SIG:
        raise invalid("a signature was requested but the device has MEAS_CAP=01b (no signing)")
    op = request.operation
    stored, record = _collect(r, req.device, op, request.raw_requested)
    key = _signing_key(r, req.device, request) if signed else None

    st = r.ctx.measurements
    sid = req.session_id
    log_ = st.logs.get(sid)
    param2 = 0
    if signed and r.version >= 0x11:
        param2 = request.slot_id & SLOT_ID_MASK
        if r.version >= 0x12:
            changed = log_ is not None and any(
                (b := req.device.measurements.get(i)) is None or b.generation != g
                for i, g in log_.seen.items()
            )
            param2 |= CONTENT_CHANGE_DETECTED if changed else CONTENT_NO_CHANGE_DETECTED
    if r.version >= 0x12 and not alg.other_params & OPAQUE_DATA_FMT_MASK:
        opaque = b""
    else:
        opaque = r.device.profile.measurement_options.opaque
    response = MeasurementsResponse(
        version=r.version,
        param1=len(stored) if op == OPERATION_COUNT else 0,
        param2=param2,
        number_of_blocks=0 if op == OPERATION_COUNT else len(stored),
        record=record,
        nonce=req.rng(32),
        opaque=opaque,
        requester_context=request.requester_context,
    )
    try:
        unsigned = response.encode_unsigned()
        sig_size = signature_size(alg.asym) if signed else 0
    except (CodecError, CryptoError) as exc:
        raise SpdmErrorResponse(ErrorCode.Unspecified, f"MEASUREMENTS: {exc}") from None
    _check_size(r, len(unsigned) + sig_size)

    # -- every check passed: extend L1/L2 -------------------------------------------
    if log_ is None:
        try:
            log_ = MeasurementLog(new_hash(alg.base_hash))
        except CryptoError as exc:
            raise SpdmErrorResponse(ErrorCode.Unspecified, f"L1/L2 hash: {exc}") from None
        if r.version >= 0x12:
            log_.update(bytes(r.transcripts.a))
        if len(st.logs) >= _MAX_LOGS:
            st.logs.pop(next(iter(st.logs)))
        st.logs[sid] = log_
    log_.update(req.raw[: request.size])
    log_.update(unsigned)
    for b in stored if op != OPERATION_COUNT else []:
        log_.seen.setdefault(b.index, b.generation)
    if key is None:
        return unsigned
    st.logs.pop(sid, None)
    l1l2_hash = log_.hash.digest()
    try:
        signature = spdm_sign_hash(
            r.version,
            alg.asym,
            alg.base_hash,
            key,
            MEASUREMENTS_SIGN_CONTEXT,
            l1l2_hash,
        )
    except CryptoError as exc:
        raise SpdmErrorResponse(ErrorCode.Unspecified, f"signing L1/L2: {exc}") from None
    log.debug("signed MEASUREMENTS over %d L1/L2 bytes", log_.length)
    return unsigned + signature
