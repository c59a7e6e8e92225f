"""KEY_EXCHANGE / KEY_EXCHANGE_RSP and FINISH / FINISH_RSP (DSP0274 10.11, 10.12).

Behaviour of libspdm ``libspdm_rsp_key_exchange_rsp.c`` / ``libspdm_rsp_finish_rsp.c``:

KEY_EXCHANGE (outside a session, SPDM 1.1+, KEY_EX_CAP on both sides; MAC_CAP on both
sides else InvalidRequest; after ALGORITHMS; 1.2+ needs OPAQUE_DATA_FMT_1): checks the
measurement summary hash type (1 or 0xFF need MEAS_CAP and a negotiated measurement hash),
the slot (0..7 provisioned for the negotiated BaseAsymAlgo, or 0xFF with PUB_KEY_ID_CAP),
the sizes, the DSP0277 opaque data (a supported version list; the highest common version is
selected, and from DSP0277 1.3 the AEAD limit element is read and sent back).  Errors:
InvalidRequest, SessionLimitExceeded when the table is full, Unspecified when the
requester's DHE value is unusable.  The response carries HeartbeatPeriod (HBEAT_CAP on both
sides), the RspSessionID, MutAuthRequested only when the profile asks for it AND the
requester set MUT_AUTH_CAP (and ENCAP_CAP for the encapsulated flows), RandomData and the
DHE value from the injected rng, the measurement summary hash, the version selection, the
signature over

    TH = A || [D] || Hash(Ct) || K     (K = KEY_EXCHANGE || KEY_EXCHANGE_RSP up to OpaqueData)

(Ct: the slot's SPDM certificate chain, or the public key for slot 0xFF; D only with 1.3
MULTI_KEY_CONN), context "responder-key_exchange_rsp signing" from 1.2; then the handshake
keys from TH1 = Hash(TH || Signature) and, unless HANDSHAKE_IN_THE_CLEAR is set on both
sides, ResponderVerifyData = HMAC(response finished key, TH1).

FINISH (inside the session, or in the clear when HANDSHAKE_IN_THE_CLEAR is set on both
sides, for the latest session): the session must be handshaking and not PSK; the
signature-included bit must match MutAuthRequested; the requester signature (mutual auth,
context "requester-finish signing") over A || Hash(Ct) || K || Hash(CM) || FINISH header and
RequesterVerifyData = HMAC(request finished key, Hash(... || signature)) are checked (failure:
ERROR(DecryptError), then the session ends); FINISH_RSP carries ResponderVerifyData only in
the clear; the data keys come from TH2 = Hash(A || Hash(Ct) || K || [EncapD] || [Hash(CM)] ||
F), and the session becomes ESTABLISHED once FINISH_RSP is sent (EncapD: the first
encapsulated DIGESTS, when the requester's keys make a 1.3 multi-key connection).
"""

from __future__ import annotations

import functools
import hmac as _hmac
from typing import TYPE_CHECKING

from emulator.codec.constants import (
    MEAS_CAP_MASK,
    OPAQUE_DATA_FMT_MASK,
    AeadSuite,
    BaseHashAlgo,
    ErrorCode,
    OtherParams,
    RequestCode,
    RequesterCap,
    ResponderCap,
)
from emulator.codec.identity import KeyUsage
from emulator.codec.session import (
    FINISH_SIGNATURE_INCLUDED,
    PUBLIC_KEY_SLOT,
    RANDOM_DATA_SIZE,
    KeyExchangeRequest,
    KeyExchangeResponse,
    MeasurementSummaryHashType,
    MutAuthRequested,
    OpaqueData,
    SessionPolicy,
    build_finish_rsp,
    parse_aead_limit,
    parse_supported_versions,
    read_opaque_field,
    sm_aead_limit_element,
    sm_version_selection_element,
)
from emulator.crypto import (
    FINISH_SIGN_CONTEXT,
    KEY_EXCHANGE_RSP_SIGN_CONTEXT,
    DheKeyPair,
    KeySchedule,
    digest,
    exchange_sizes,
    hash_size,
    hmac_digest,
    kem_encapsulate,
    public_key_of_cert,
    signature_size,
    spdm_verify,
)
from emulator.device.random import RandomSource, SystemRandom
from emulator.errors import CodecError, CryptoError, EmulatorError
from emulator.responder.base import (
    ConnectionState,
    Request,
    Response,
    SpdmErrorResponse,
    end,
    establish,
    invalid,
    unexpected,
)
from emulator.responder.certificates import message_d, reset_via_request_code
from emulator.session.record import MAX_SEQUENCE_NUMBER
from emulator.session.table import EncapState, Session, SessionState, SessionTable, SessionType

if TYPE_CHECKING:
    from emulator.responder.core import Responder

#: RequestCode values of the encapsulated flow (mutual authentication).
ENCAP_GET_DIGESTS = int(RequestCode.GET_DIGESTS)
ENCAP_GET_CERTIFICATE = int(RequestCode.GET_CERTIFICATE)


# flag bits as plain ints (IntFlag arithmetic costs ~1 us per operation)
_MEAS_CAPS = int(MEAS_CAP_MASK)
_CERT_CAP = int(ResponderCap.CERT_CAP)
_MUT_AUTH_CAP = int(ResponderCap.MUT_AUTH_CAP)
_EVENT_CAP = int(ResponderCap.EVENT_CAP)
_MULTI_KEY_CONN = int(OtherParams.MULTI_KEY_CONN)
_OPAQUE_DATA_FMT_1 = int(OtherParams.OPAQUE_DATA_FMT_1)


# --- helpers shared by the session families ----------------------------------------------


def both_support(r: Responder, flag: int) -> bool:
    """The capability bit is set by the device and by the requester (same bit position)."""
    bit = int(flag)
    return bool(int(r.device.capabilities) & bit) and r.peer_has(bit)


def handshake_in_clear(r: Responder) -> bool:
    return both_support(r, ResponderCap.HANDSHAKE_IN_THE_CLEAR_CAP)


def no_session_error(r: Responder, reason: str) -> SpdmErrorResponse:
    """libspdm: SessionRequired from 1.2, Unspecified in 1.1."""
    if r.version >= 0x12:
        return SpdmErrorResponse(ErrorCode.SessionRequired, reason)
    return SpdmErrorResponse(ErrorCode.Unspecified, reason)


def require_negotiated(r: Responder, what: str) -> None:
    if r.state < ConnectionState.NEGOTIATED:
        raise unexpected(f"{what} before NEGOTIATE_ALGORITHMS")


def current_session(r: Responder, req: Request, what: str) -> Session:
    """The session the request arrived in (SessionRequired / Unspecified when outside one)."""
    if req.session_id is None:
        raise no_session_error(r, f"{what} outside a session")
    session = r.session_table().get(req.session_id)
    if session is None:
        raise no_session_error(r, f"{what}: session 0x{req.session_id:08X} is not known")
    return session


def secured_message_check(r: Responder, what: str) -> None:
    """MAC_CAP on both sides (libspdm needs it for DSP0277); 1.2+ opaque data format 1."""
    if not both_support(r, ResponderCap.MAC_CAP):
        raise invalid(f"{what}: MAC_CAP is not set on both sides")
    if r.version >= 0x12 and (
        r.algorithms.other_params & OPAQUE_DATA_FMT_MASK != _OPAQUE_DATA_FMT_1
    ):
        raise invalid(f"{what}: SPDM 1.2+ sessions need OPAQUE_DATA_FMT_1")


def summary_hash_size(r: Responder, kind: int) -> int:
    """libspdm ``libspdm_get_measurement_summary_hash_size``: H for 1 / 0xFF with MEAS_CAP."""
    if not int(r.device.capabilities) & _MEAS_CAPS:
        return 0
    if kind in (MeasurementSummaryHashType.TCB, MeasurementSummaryHashType.ALL):
        return hash_size(r.algorithms.base_hash)
    return 0


def check_summary_type(r: Responder, kind: int) -> int:
    """Validate Param1 of KEY_EXCHANGE / PSK_EXCHANGE; returns the summary hash size."""
    alg = r.algorithms
    if kind and (
        not int(r.device.capabilities) & _MEAS_CAPS
        or not alg.measurement_spec
        or not alg.measurement_hash
    ):
        raise invalid(
            f"measurement summary hash type 0x{kind:02X}: the device does not measure "
            f"or no measurement algorithm was negotiated"
        )
    size = summary_hash_size(r, kind)
    if size == 0 and kind != MeasurementSummaryHashType.NONE:
        raise invalid(f"measurement summary hash type 0x{kind:02X} is not 0, 1 or 0xFF")
    return size


def measurement_summary(r: Responder, req: Request, kind: int, size: int) -> bytes:
    """MeasurementSummaryHash of the device as this exchange sees it."""
    if not size:
        return b""
    alg = r.algorithms
    try:
        value = req.device.measurement_summary_hash(kind, alg.measurement_hash, alg.base_hash)
    except EmulatorError as exc:
        raise SpdmErrorResponse(ErrorCode.Unspecified, f"measurement summary: {exc}") from None
    if len(value) != size:
        raise SpdmErrorResponse(ErrorCode.Unspecified, "measurement summary hash size")
    return value


def negotiate_secured_version(r: Responder, opaque: bytes, what: str) -> tuple[int, int, bytes]:
    """Select the DSP0277 version from the requester's opaque data.

    Returns (selected version, the requester's AEAD limit exponent, the response opaque
    data).  No opaque data: DSP0277 1.0 is implied and the response carries none (libspdm
    also answers without opaque data then).  A malformed list, or no common version:
    InvalidRequest.
    """
    if not opaque:
        return 0x1000, 64, b""
    return _secured_version_choice(
        r.version, bytes(opaque), tuple(r.device.sessions.secured_versions), what
    )


@functools.lru_cache(maxsize=256)
def _secured_version_choice(
    version: int, opaque: bytes, ours: tuple[int, ...], what: str
) -> tuple[int, int, bytes]:
    """:func:`negotiate_secured_version` for non-empty opaque data (a pure function of
    its arguments: worked out once per requester offer, not per KEY_EXCHANGE)."""
    try:
        parsed = OpaqueData.decode(version, opaque)
        offered = parse_supported_versions(parsed)
    except CodecError as exc:
        raise invalid(f"{what} OpaqueData: {exc}") from None
    common = [v for v in ours if any((o >> 8) == (v >> 8) for o in offered)]
    if not common:
        listed = ", ".join(f"{o >> 12}.{(o >> 8) & 0xF}" for o in offered)
        raise invalid(f"{what}: no common DSP0277 version (requester offers {listed})")
    selected = max(common)
    peer_exponent = 64
    elements = [sm_version_selection_element(selected)]
    if selected >= 0x1300:
        try:
            exp = parse_aead_limit(parsed)
        except CodecError as exc:
            raise invalid(f"{what} OpaqueData: {exc}") from None
        peer_exponent = 64 if exp is None else exp
        elements.append(sm_aead_limit_element(64))
    return selected, peer_exponent, OpaqueData(elements).encode(version)


def max_sequence_for(exponent: int) -> int:
    """Inclusive maximum sequence number for an AEAD limit of 2 ** exponent."""
    if exponent >= 64:
        return MAX_SEQUENCE_NUMBER - 1
    return (1 << exponent) - 1


def session_type(r: Responder) -> SessionType:
    if both_support(r, ResponderCap.ENCRYPT_CAP):
        return SessionType.ENC_MAC
    return SessionType.MAC_ONLY


def key_schedule(r: Responder) -> KeySchedule:
    try:
        return _key_schedule(r.version, r.algorithms.base_hash, r.algorithms.aead)
    except CryptoError as exc:
        raise SpdmErrorResponse(ErrorCode.Unspecified, f"key schedule: {exc}") from None


@functools.lru_cache(maxsize=64)
def _key_schedule(version: int, base_hash: int, aead: int) -> KeySchedule:
    """One (immutable) KeySchedule per negotiated version, hash and AEAD suite."""
    return KeySchedule(version, BaseHashAlgo(base_hash), AeadSuite(aead))


def new_session_id(req: Request, table: SessionTable, req_session_id: int) -> int:
    sid = table.allocate_id(req_session_id, req.rng)
    if sid is None:
        raise SpdmErrorResponse(
            ErrorCode.SessionLimitExceeded,
            f"{len(table)} sessions open, the device allows {table.settings.max_sessions}",
        )
    return sid


def heartbeat_period(r: Responder) -> int:
    if both_support(r, ResponderCap.HBEAT_CAP):
        return r.device.sessions.heartbeat_period
    return 0


def th_base(session: Session) -> bytes:
    """A || [D] || Hash(Ct) (the session's th_prefix) followed by message K."""
    return session.th_prefix + bytes(session.message_k)


def th_finish(session: Session) -> bytes:
    """A || [D] || Hash(Ct) || K || [Hash(CM)] || F (libspdm ``calculate_th_for_finish``)."""
    return _th_with(session, session.message_f)


# --- KEY_EXCHANGE ----------------------------------------------------------------------------


def _slot_key_material(r: Responder, req: Request, slot: int) -> tuple[bytes, object]:
    """(Ct, SlotKey) of the slot KEY_EXCHANGE names; InvalidRequest when it is not usable."""
    identity = req.device.identity
    asym = r.algorithms.asym
    if r.device.capabilities & ResponderCap.CERT_CAP:
        if slot >= 8:
            raise invalid(f"KEY_EXCHANGE SlotID {slot} is not 0..7")
        key = identity.key_for(slot, asym)
        if key is None:
            raise invalid(f"KEY_EXCHANGE: slot {slot} is not provisioned for this algorithm")
    else:
        if slot != PUBLIC_KEY_SLOT:
            raise invalid(f"KEY_EXCHANGE SlotID {slot}: without CERT_CAP only 0xFF is valid")
        key = identity.key_for(PUBLIC_KEY_SLOT, asym)
        if key is None:
            raise invalid("KEY_EXCHANGE: no provisioned public key (slot 0xFF)")
    try:
        data = key.provisioned_data(r.algorithms.base_hash)
    except EmulatorError as exc:
        raise SpdmErrorResponse(ErrorCode.Unspecified, f"slot {slot}: {exc}") from None
    return data, key


def _mut_auth_choice(r: Responder) -> int:
    """MutAuthRequested for this KEY_EXCHANGE_RSP (0 unless profile AND requester allow it)."""
    settings = r.device.sessions
    mode = settings.mut_auth
    if not mode or not int(r.device.capabilities) & _MUT_AUTH_CAP:
        return 0
    peer_mut = r.peer_has(RequesterCap.MUT_AUTH_CAP)
    peer_encap = r.peer_has(RequesterCap.ENCAP_CAP)
    need_encap = mode in (MutAuthRequested.WITH_ENCAP_REQUEST, MutAuthRequested.WITH_GET_DIGESTS)
    usable = peer_mut and (peer_encap or not need_encap)
    if not usable:
        if settings.mut_auth_mandatory:
            code = ErrorCode.InvalidPolicy if r.version >= 0x13 else ErrorCode.Unspecified
            raise SpdmErrorResponse(
                code, "the device requires mutual authentication the requester cannot do"
            )
        return 0
    return int(mode)


def key_exchange(r: Responder, req: Request) -> bytes:
    """KEY_EXCHANGE_RSP: open a session in the handshake phase."""
    secured_message_check(r, "KEY_EXCHANGE")
    require_negotiated(r, "KEY_EXCHANGE")
    kind = req.param1
    summary_size = check_summary_type(r, kind)
    _ct, slot_key = _slot_key_material(r, req, req.param2)  # _slot_key_material checks Ct
    if r.version >= 0x13:
        if (
            r.algorithms.multi_key_rsp
            and req.param2 != PUBLIC_KEY_SLOT
            and not getattr(slot_key, "key_usage", KeyUsage.KEY_EX) & KeyUsage.KEY_EX
        ):
            raise invalid(f"KEY_EXCHANGE: slot {req.param2} key usage lacks KEY_EX_USE")
        policy = req.raw[6] if len(req.raw) > 6 else 0
        if policy & SessionPolicy.EVENT_ALL_POLICY and not (
            int(r.device.capabilities) & _EVENT_CAP
        ):
            raise invalid("KEY_EXCHANGE SessionPolicy EventAllPolicy without EVENT_CAP")
    alg = r.algorithms
    try:
        exchange_size, _ = exchange_sizes(alg.dhe, alg.kem)
    except CryptoError as exc:
        raise invalid(f"KEY_EXCHANGE: {exc}") from None
    try:
        msg, size = KeyExchangeRequest.decode(req.raw, exchange_size)
    except CodecError as exc:
        raise invalid(str(exc)) from None
    selected, peer_exponent, rsp_opaque = negotiate_secured_version(
        r, msg.opaque_data, "KEY_EXCHANGE"
    )
    mut = _mut_auth_choice(r)
    schedule = key_schedule(r)
    table = r.session_table()
    reset_via_request_code(r, RequestCode.KEY_EXCHANGE)
    in_clear = handshake_in_clear(r)

    sid = new_session_id(req, table, msg.req_session_id)
    random_data = req.rng(RANDOM_DATA_SIZE)
    try:
        if alg.kem:
            # DSP0274 1.4: the responder encapsulates to the requester's ML-KEM key
            shared, exchange_data = kem_encapsulate(alg.kem, msg.exchange_data)
        else:
            dhe = _dhe_key(alg.dhe, req.rng)
            shared = dhe.shared_secret(msg.exchange_data)
            exchange_data = dhe.public_bytes
    except CryptoError as exc:
        raise SpdmErrorResponse(ErrorCode.Unspecified, f"KEY_EXCHANGE: {exc}") from None
    summary = measurement_summary(r, req, kind, summary_size)
    settings = r.device.sessions
    req_slot_param = settings.req_slot_id if mut == MutAuthRequested.REQUESTED else 0
    response = KeyExchangeResponse(
        version=r.version,
        heartbeat_period=heartbeat_period(r),
        rsp_session_id=sid >> 16,
        mut_auth_requested=mut,
        req_slot_id_param=req_slot_param,
        random_data=random_data,
        exchange_data=exchange_data,
        measurement_summary_hash=summary,
        opaque_data=rsp_opaque,
    )
    session = Session(
        session_id=sid,
        version=r.version,
        secured_version=selected,
        schedule=schedule,
        session_type=session_type(r),
        max_sequence=max_sequence_for(peer_exponent),
        slot_id=req.param2,
        heartbeat_period=response.heartbeat_period,
        session_policy=msg.session_policy if r.version >= 0x12 else 0,
        mut_auth_requested=mut,
        req_slot_id=settings.req_slot_id,
    )
    if session.session_policy & SessionPolicy.EVENT_ALL_POLICY and r.version >= 0x13:
        subscribe_all_events(r, session)
    if mut == MutAuthRequested.REQUESTED:
        session.peer_chain = _provisioned_requester_chain(r)
    elif mut:
        encap = EncapState(sequence=[ENCAP_GET_DIGESTS, ENCAP_GET_CERTIFICATE])
        if mut == MutAuthRequested.WITH_GET_DIGESTS:
            # the requester answers an implicit GET_DIGESTS with RequestID 0
            encap.current = ENCAP_GET_DIGESTS
            encap.last_request = bytes((r.version, RequestCode.GET_DIGESTS, 0, 0))
        session.encap = encap
    # Hash(Ct): the slot's digest of that data, made once per slot and hash
    ct_hash: bytes = slot_key.digest(alg.base_hash)  # type: ignore[attr-defined]
    session.th_prefix = bytes(r.transcripts.a) + _message_d(r) + ct_hash
    session.message_k += req.raw[:size]
    session.message_k += response.encode_unsigned()
    try:
        signature = slot_key.sign(  # type: ignore[attr-defined]
            r.version,
            alg.asym,
            alg.base_hash,
            KEY_EXCHANGE_RSP_SIGN_CONTEXT,
            th_base(session),
        )
    except EmulatorError as exc:
        raise SpdmErrorResponse(ErrorCode.Unspecified, f"KEY_EXCHANGE_RSP signing: {exc}") from None
    response.signature = signature
    session.message_k += signature
    th1 = digest(alg.base_hash, th_base(session))
    session.install_handshake(schedule.handshake(shared, th1))
    session.dhe_secret = shared
    if not in_clear:
        response.verify_data = hmac_digest(alg.base_hash, session.response_finished_key, th1)
        session.message_k += response.verify_data
    table.add(session)
    return response.encode()


def _dhe_key(group: int, rng: RandomSource) -> DheKeyPair:
    """The responder's ephemeral DHE key: from OpenSSL's key generation when the exchange
    draws from the operating system, else derived from ``rng`` bytes (a seed, a fault's
    recorded or replayed randomness) so that the key is reproducible."""
    if type(rng) is SystemRandom:
        return DheKeyPair.fresh(group)
    return DheKeyPair.generate(group, rng)


def subscribe_all_events(r: Responder, session: Session) -> None:
    """SessionPolicy EventAllPolicy (1.3): the session is subscribed to every supported
    event type from its start (DSP0274 1.3 KEY_EXCHANGE / PSK_EXCHANGE)."""
    from emulator.device.events import EventQueue

    session.events = EventQueue(r.device.events)
    session.events.subscribe_all()


def _message_d(r: Responder) -> bytes:
    """Message D (1.3 MULTI_KEY_CONN only), as the identity family recorded it."""
    if r.version >= 0x13 and r.algorithms.multi_key_rsp:
        return message_d(r)
    return b""


def _provisioned_requester_chain(r: Responder) -> bytes:
    """The SPDM chain of the provisioned requester certificates (MutAuthRequested = 1)."""
    from emulator.crypto import hash_name
    from emulator.x509.chain import spdm_cert_chain

    certs = r.device.sessions.requester_chain
    if not certs:
        raise SpdmErrorResponse(ErrorCode.Unspecified, "no provisioned requester chain")
    return spdm_cert_chain(hash_name(r.algorithms.base_hash), list(certs))


# --- FINISH ----------------------------------------------------------------------------------


def finish(r: Responder, req: Request) -> Response:
    """FINISH_RSP: verify the requester's HMAC (and signature), derive the data keys."""
    require_negotiated(r, "FINISH")
    in_clear = handshake_in_clear(r)
    if not in_clear and req.session_id is None:
        raise no_session_error(r, "FINISH must be sent in the session")
    if in_clear and req.session_id is not None:
        raise no_session_error(r, "FINISH must be sent in the clear (HANDSHAKE_IN_THE_CLEAR)")
    table = r.session_table()
    sid = req.session_id if req.session_id is not None else table.latest_session_id
    session = table.get(sid)
    if session is None:
        raise no_session_error(r, "FINISH without a session")
    if session.use_psk:
        raise unexpected("FINISH in a PSK session")
    if session.state is not SessionState.HANDSHAKING:
        raise unexpected("FINISH: the session is not in its handshake phase")
    if session.encap is not None and not session.encap.done:
        raise SpdmErrorResponse(
            ErrorCode.RequestInFlight, "FINISH before the encapsulated flow completed"
        )
    mut = session.mut_auth_requested
    included = bool(req.param1 & FINISH_SIGNATURE_INCLUDED)
    if bool(mut) != included:
        raise invalid(
            "FINISH signature-included bit does not match MutAuthRequested "
            f"(Param1 0x{req.param1:02X}, MutAuthRequested 0x{mut:02X})"
        )
    alg = r.algorithms
    hsize = hash_size(alg.base_hash)
    sig_size = signature_size(alg.req_asym) if mut else 0
    try:  # 1.4: OpaqueDataLength + OpaqueData follow the header
        head, _opaque = read_opaque_field(req.raw, "FINISH")
    except CodecError as exc:
        raise invalid(str(exc)) from None
    total = head + sig_size + hsize
    if len(req.raw) < total:
        raise invalid(f"FINISH is {len(req.raw)} bytes, needs {total}")
    if included:
        req_slot = req.param2
        if req_slot != PUBLIC_KEY_SLOT and req_slot >= 8:
            raise invalid(f"FINISH ReqSlotID {req_slot} is not 0..7 or 0xFF")
        if in_clear and mut != MutAuthRequested.REQUESTED and req_slot != session.req_slot_id:
            raise invalid(f"FINISH ReqSlotID {req_slot}, the encapsulated flow used another")
    reset_via_request_code(r, RequestCode.FINISH)
    raw = req.raw[:total]
    f = bytearray(raw[:head])
    if mut:
        signature = raw[head : head + sig_size]
        if not _verify_requester_signature(r, session, _th_with(session, f), signature):
            raise SpdmErrorResponse(
                ErrorCode.DecryptError,
                "FINISH requester signature invalid",
                commits=(end(session.session_id),),
            )
        f += signature
    verify = raw[head + sig_size : total]
    th_hash = digest(alg.base_hash, _th_with(session, f))
    expected = hmac_digest(alg.base_hash, session.request_finished_key, th_hash)
    if not _hmac.compare_digest(expected, verify):
        raise SpdmErrorResponse(
            ErrorCode.DecryptError,
            "FINISH RequesterVerifyData mismatch",
            commits=(end(session.session_id),),
        )
    f += verify
    response = build_finish_rsp(r.version)
    f += response
    if in_clear:
        rsp_verify = hmac_digest(
            alg.base_hash,
            session.response_finished_key,
            digest(alg.base_hash, _th_with(session, f)),
        )
        response += rsp_verify
        f += rsp_verify
    session.message_f = f
    th2 = digest(alg.base_hash, th_finish(session))
    session.install_data(session.schedule.data(session.handshake_secret, th2))
    return Response(response, (establish(session.session_id),))


def _th_with(session: Session, f: bytes | bytearray) -> bytes:
    """A || [D] || Hash(Ct) || K || [EncapD] || [Hash(CM)] || F (EncapD: the first
    encapsulated DIGESTS when the requester's keys make a 1.3 multi-key connection)."""
    out = session.th_prefix + bytes(session.message_k)
    if session.mut_auth_requested and session.peer_chain:
        out += session.encap_digests
        out += digest(session.schedule.hash_algo, session.peer_chain)
    return out + bytes(f)


def _verify_requester_signature(
    r: Responder, session: Session, th: bytes, signature: bytes
) -> bool:
    """Check the FINISH signature with the leaf key of the requester's chain."""
    from emulator.crypto import hash_name
    from emulator.x509.chain import parse_spdm_cert_chain

    if not session.peer_chain:
        return False
    try:
        parsed = parse_spdm_cert_chain(hash_name(r.algorithms.base_hash), session.peer_chain)
        key = public_key_of_cert(parsed.certs[-1])
        return spdm_verify(
            r.version,
            r.algorithms.req_asym,
            r.algorithms.base_hash,
            key,
            FINISH_SIGN_CONTEXT,
            th,
            signature,
        )
    except (EmulatorError, ValueError, TypeError):
        return False
