"""PSK_EXCHANGE / PSK_EXCHANGE_RSP and PSK_FINISH / PSK_FINISH_RSP (DSP0274 10.13, 10.14).

Behaviour of libspdm ``libspdm_rsp_psk_exchange_rsp.c`` / ``libspdm_rsp_psk_finish_rsp.c``:

PSK_EXCHANGE (outside a session, SPDM 1.1+, PSK_CAP on both sides; MAC_CAP on both sides
else InvalidRequest; after ALGORITHMS; 1.2+ needs OPAQUE_DATA_FMT_1): the measurement
summary hash type and sizes are checked as for KEY_EXCHANGE; a PSKHint longer than 32 bytes
is InvalidRequest (libspdm ``LIBSPDM_PSK_MAX_HINT_LENGTH``); the hint selects a PSK from the
profile's ``[[sessions.psk]]`` (no match: ERROR(Unspecified), as libspdm answers when its PSK
lookup fails).  The response: HeartbeatPeriod, RspSessionID, the summary hash, a
ResponderContext of ``psk_context_length`` random bytes when the device advertises
PSK_CAP_WITH_CONTEXT (libspdm: 64) and none with plain PSK_CAP, the DSP0277 version
selection, and ResponderVerifyData = HMAC(response finished key, TH1) with

    TH1 = Hash(A || K)     K = PSK_EXCHANGE || PSK_EXCHANGE_RSP up to OpaqueData

and the handshake secret HKDF-Extract(Salt_0, PSK) (Salt_0 = 0xFF bytes from 1.3).  Without
PSK_CAP_WITH_CONTEXT the session is established at once (data keys from
TH2 = Hash(A || K || verify data)); otherwise PSK_FINISH follows.

PSK_FINISH (in the session, handshake keys; PSK_CAP_WITH_CONTEXT): exactly header +
RequesterVerifyData = HMAC(request finished key, Hash(A || K || PSK_FINISH header)), else
InvalidRequest / DecryptError; PSK_FINISH_RSP is sent under the handshake keys, then the
session is ESTABLISHED with the data keys of TH2 = Hash(A || K || F).
"""

from __future__ import annotations

import hmac as _hmac
from typing import TYPE_CHECKING

from emulator.codec.constants import ErrorCode, RequestCode, ResponderCap
from emulator.codec.session import (
    PskExchangeRequest,
    PskExchangeResponse,
    SessionPolicy,
    build_psk_finish_rsp,
    read_opaque_field,
)
from emulator.crypto import digest, hash_size, hmac_digest
from emulator.errors import CodecError, CryptoError
from emulator.responder.base import (
    Request,
    Response,
    SpdmErrorResponse,
    end,
    establish,
    invalid,
    unexpected,
)
from emulator.responder.certificates import reset_via_request_code
from emulator.responder.key_exchange import (
    check_summary_type,
    current_session,
    heartbeat_period,
    key_schedule,
    max_sequence_for,
    measurement_summary,
    negotiate_secured_version,
    new_session_id,
    require_negotiated,
    secured_message_check,
    session_type,
    subscribe_all_events,
)
from emulator.session.table import Session, SessionState

if TYPE_CHECKING:
    from emulator.responder.core import Responder

#: libspdm LIBSPDM_PSK_MAX_HINT_LENGTH.
MAX_PSK_HINT_LENGTH = 32
PSK_CAPS = ResponderCap.PSK_CAP | ResponderCap.PSK_CAP_WITH_CONTEXT


def psk_exchange(r: Responder, req: Request) -> Response:
    """PSK_EXCHANGE_RSP: open a PSK session (handshake phase, or established without context)."""
    secured_message_check(r, "PSK_EXCHANGE")
    require_negotiated(r, "PSK_EXCHANGE")
    kind = req.param1
    summary_size = check_summary_type(r, kind)
    try:
        msg, size = PskExchangeRequest.decode(req.raw)
    except CodecError as exc:
        raise invalid(str(exc)) from None
    if len(msg.psk_hint) > MAX_PSK_HINT_LENGTH:
        raise invalid(f"PSKHint is {len(msg.psk_hint)} bytes, at most {MAX_PSK_HINT_LENGTH}")
    selected, peer_exponent, rsp_opaque = negotiate_secured_version(
        r, msg.opaque_data, "PSK_EXCHANGE"
    )
    settings = r.device.sessions
    schedule = key_schedule(r)
    table = r.session_table()
    with_context = bool(r.device.capabilities & ResponderCap.PSK_CAP_WITH_CONTEXT)
    sid = new_session_id(req, table, msg.req_session_id)
    reset_via_request_code(r, RequestCode.PSK_EXCHANGE)
    psk = settings.psk_for_hint(msg.psk_hint)
    if psk is None:
        raise SpdmErrorResponse(
            ErrorCode.Unspecified, f"PSK_EXCHANGE: no PSK for hint {msg.psk_hint!r}"
        )
    summary = measurement_summary(r, req, kind, summary_size)
    context = req.rng(settings.psk_context_length) if with_context else b""
    response = PskExchangeResponse(
        version=r.version,
        heartbeat_period=heartbeat_period(r),
        rsp_session_id=sid >> 16,
        measurement_summary_hash=summary,
        context=context,
        opaque_data=rsp_opaque,
    )
    session = Session(
        session_id=sid,
        version=r.version,
        secured_version=selected,
        schedule=schedule,
        session_type=session_type(r),
        use_psk=True,
        max_sequence=max_sequence_for(peer_exponent),
        heartbeat_period=response.heartbeat_period,
        session_policy=req.param2 if r.version >= 0x12 else 0,
        psk_hint=msg.psk_hint,
        psk=psk,
    )
    if (
        r.version >= 0x13
        and session.session_policy & SessionPolicy.EVENT_ALL_POLICY
        and r.device.capabilities & ResponderCap.EVENT_CAP
    ):
        subscribe_all_events(r, session)
    session.th_prefix = bytes(r.transcripts.a)
    session.message_k += req.raw[:size]
    session.message_k += response.encode_unverified()
    alg = r.algorithms
    th1 = digest(alg.base_hash, session.th_prefix + bytes(session.message_k))
    try:
        session.install_handshake(schedule.psk_handshake(psk, th1))
    except CryptoError as exc:
        raise SpdmErrorResponse(ErrorCode.Unspecified, f"PSK key schedule: {exc}") from None
    response.verify_data = hmac_digest(alg.base_hash, session.response_finished_key, th1)
    session.message_k += response.verify_data
    if not with_context:
        th2 = digest(alg.base_hash, session.th_prefix + bytes(session.message_k))
        session.install_data(schedule.data(session.handshake_secret, th2))
    table.add(session)
    if not with_context:  # no PSK_FINISH: the session is established once this is sent
        return Response(response.encode(), (establish(sid),))
    return Response(response.encode())


def psk_finish(r: Responder, req: Request) -> Response:
    """PSK_FINISH_RSP: verify RequesterVerifyData, derive the data keys."""
    require_negotiated(r, "PSK_FINISH")
    session = current_session(r, req, "PSK_FINISH")
    if not session.use_psk:
        raise unexpected("PSK_FINISH in a KEY_EXCHANGE session")
    if session.state is not SessionState.HANDSHAKING:
        raise unexpected("PSK_FINISH: the session is not in its handshake phase")
    alg = r.algorithms
    hsize = hash_size(alg.base_hash)
    try:  # 1.4: OpaqueDataLength + OpaqueData follow the header
        head, _opaque = read_opaque_field(req.raw, "PSK_FINISH")
    except CodecError as exc:
        raise invalid(str(exc)) from None
    if len(req.raw) != head + hsize:
        # only ever sent in a session: no transport padding, the size is exact (libspdm)
        raise invalid(f"PSK_FINISH is {len(req.raw)} bytes, must be {head + hsize}")
    reset_via_request_code(r, RequestCode.PSK_FINISH)
    f = bytearray(req.raw[:head])
    th = session.th_prefix + bytes(session.message_k) + bytes(f)
    expected = hmac_digest(alg.base_hash, session.request_finished_key, digest(alg.base_hash, th))
    if not _hmac.compare_digest(expected, req.raw[head:]):
        raise SpdmErrorResponse(
            ErrorCode.DecryptError,
            "PSK_FINISH RequesterVerifyData mismatch",
            commits=(end(session.session_id),),
        )
    f += req.raw[head:]
    response = build_psk_finish_rsp(r.version)
    f += response
    session.message_f = f
    th2 = digest(alg.base_hash, session.th_prefix + bytes(session.message_k) + bytes(f))
    session.install_data(session.schedule.data(session.handshake_secret, th2))
    return Response(response, (establish(session.session_id),))
