"""GET_ENCAPSULATED_REQUEST / DELIVER_ENCAPSULATED_RESPONSE: mutual authentication in a session.

As libspdm ``libspdm_rsp_encap_response.c``, ``libspdm_rsp_encap_get_digests.c`` and
``libspdm_rsp_encap_get_certificate.c``.  When KEY_EXCHANGE_RSP asked for mutual
authentication with the encapsulated flow (MutAuthRequested 2, or 4 where the requester
answers an implicit GET_DIGESTS with RequestID 0), the session (still in its handshake
phase) runs, as the responder's requests to the requester:

    GET_DIGESTS -> DIGESTS, GET_CERTIFICATE (ReqSlotID, repeated until the whole chain
    arrived) -> CERTIFICATE

ENCAPSULATED_REQUEST (Param1 = RequestID) carries the first request;
DELIVER_ENCAPSULATED_RESPONSE (Param1 = that RequestID) returns the answer and
ENCAPSULATED_RESPONSE_ACK carries the next request (Param2 = 1), or none (Param2 = 0, or 2
with the ReqSlotID byte when it is neither 0 nor 0xFF).  RequestID grows by one per request.

The chain is checked when complete: the SPDM chain header (Length, RootHash = Hash(first
certificate)), each certificate issued by the one before, the leaf key of the negotiated
ReqBaseAsymAlg, and the first certificate being (or issued by) a trusted requester root of
the profile.  A bad answer or an untrusted chain ends the flow with
ERROR(InvalidResponseCode) (libspdm); FINISH then fails (no usable requester key).

With HANDSHAKE_IN_THE_CLEAR the requester sends these in the clear, like FINISH; the flow
of the latest session is used then.

The same mechanism carries what the device asks of the requester on its own (libspdm
``libspdm_rsp_encap_*``): a responder-initiated KEY_UPDATE (spdm-emu OOB_ENCAP_KEY_UPDATE),
GET_ENDPOINT_INFO (spdm-emu OOB_ENCAP_ENDPOINT_INFO: a flow of the connection, served in
or outside a session; signed when the requester has EP_INFO_CAP_SIG and the device knows
its certificate chain, from mutual authentication or the profile, and then verified over
A || GET_ENDPOINT_INFO || ENDPOINT_INFO with context "requester-endpoint_info signing"),
and SEND_EVENT: in an established session whose subscribed events wait, a
GET_ENCAPSULATED_REQUEST gets them (consecutive EventInstanceIDs); EVENT_ACK delivers them,
and the ACK carries the next SEND_EVENT while more wait.  A flow of the session goes first,
then the connection's, then events.  With MULTI_KEY_CONN for the requester's keys
(ALGORITHMS selection), the encapsulated DIGESTS carries the key fields and the first one
of the session is message EncapD of the FINISH transcript.

Errors: encapsulation not supported (ENCAP_CAP on both sides; in 1.2 MUT_AUTH_CAP counts as
well) -> UnsupportedRequest; no flow pending -> NoPendingRequests (1.3) / UnexpectedRequest;
DELIVER with another RequestID or no payload -> InvalidRequest.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from emulator.codec.constants import (
    ErrorCode,
    RequestCode,
    RequesterCap,
    ResponderCap,
    ResponseCode,
)
from emulator.codec.endpoint_info import (
    NONCE_SIZE,
    SIGNATURE_REQUESTED,
    SUBCODE_DEVICE_CLASS_IDENTIFIER,
    EndpointInfoResponse,
    GetEndpointInfoRequest,
)
from emulator.codec.events import build_send_event
from emulator.codec.messages import build_header
from emulator.codec.session import (
    EncapPayloadType,
    EncapsulatedResponseAck,
    KeyUpdateOperation,
    build_encapsulated_request,
)
from emulator.crypto import (
    MUT_ENDPOINT_INFO_SIGN_CONTEXT,
    check_key_matches,
    hash_name,
    hash_size,
    public_key_of_cert,
    signature_size,
    spdm_verify,
)
from emulator.errors import CodecError, EmulatorError
from emulator.responder.base import (
    Request,
    SpdmErrorResponse,
    end,
    invalid,
    unexpected,
)
from emulator.responder.certificates import reset_via_request_code
from emulator.responder.key_exchange import require_negotiated
from emulator.session.table import EncapState, Session, SessionState

if TYPE_CHECKING:
    from emulator.responder.core import Responder

#: libspdm SPDM_MAX_CERTIFICATE_CHAIN_SIZE (the 16-bit Offset/Length space).
MAX_CHAIN_SIZE = 0xFFFF
#: DELIVER_ENCAPSULATED_RESPONSE header size.
DELIVER_HEADER_SIZE = 4
CERTIFICATE_HEADER_SIZE = 8


class EncapFailure(Exception):
    """The requester's encapsulated response is unusable (InvalidResponseCode);
    ``end_session``: the session ends with the ERROR (libspdm frees it)."""

    def __init__(self, reason: str, *, end_session: bool = False) -> None:
        super().__init__(reason)
        self.end_session = end_session


def encap_supported(r: Responder) -> bool:
    """libspdm ``libspdm_is_encap_supported`` (1.2 also accepts MUT_AUTH_CAP, see there)."""
    caps = r.device.capabilities
    if r.version == 0x12:
        req = r.peer_has(RequesterCap.ENCAP_CAP) or r.peer_has(RequesterCap.MUT_AUTH_CAP)
        rsp = bool(caps & (ResponderCap.ENCAP_CAP | ResponderCap.MUT_AUTH_CAP))
        return req and rsp
    return bool(caps & ResponderCap.ENCAP_CAP) and r.peer_has(RequesterCap.ENCAP_CAP)


def _no_pending(r: Responder, reason: str) -> SpdmErrorResponse:
    if r.version >= 0x13:
        return SpdmErrorResponse(ErrorCode.NoPendingRequests, reason)
    return unexpected(reason)


def _check_supported(r: Responder, code: RequestCode) -> None:
    require_negotiated(r, code.name)
    if not encap_supported(r):
        raise SpdmErrorResponse(
            ErrorCode.UnsupportedRequest,
            f"{code.name}: encapsulated requests are not supported by both sides",
            data=code,
        )


def _pending(encap: EncapState | None) -> bool:
    return encap is not None and not encap.done


def _active_encap(
    r: Responder, req: Request, *, start_events: bool = False
) -> tuple[Session | None, EncapState] | None:
    """The pending flow, in this order: the request's session's (or, outside a session, the
    latest session's: libspdm does not require a session for the encapsulated flow, and
    with HANDSHAKE_IN_THE_CLEAR its requester sends the handshake phase in the clear); the
    connection's (GET_ENDPOINT_INFO); with ``start_events``, a SEND_EVENT of the request's
    established session when events wait for it.
    """
    table = r.session_table()
    sid = req.session_id if req.session_id is not None else table.latest_session_id
    session = table.get(sid)
    if session is not None and _pending(session.encap):
        assert session.encap is not None
        return session, session.encap
    own = table.get(req.session_id) if req.session_id is not None else None
    if _pending(r.ctx.encap):
        assert r.ctx.encap is not None
        return own, r.ctx.encap
    if (
        start_events
        and own is not None
        and own.state is SessionState.ESTABLISHED
        and own.events is not None
        and own.events.pending
    ):
        own.encap = EncapState(sequence=[int(RequestCode.SEND_EVENT)])
        return own, own.encap
    return None


def _next_op(encap: EncapState) -> int:
    if encap.current == 0:
        return encap.sequence[0] if encap.sequence else 0
    if encap.current in encap.sequence:
        idx = encap.sequence.index(encap.current)
        return encap.sequence[idx + 1] if idx + 1 < len(encap.sequence) else 0
    return 0


def _build_request(r: Responder, session: Session | None, encap: EncapState, op: int) -> bytes:
    if op == RequestCode.GET_DIGESTS:
        return build_header(r.version, RequestCode.GET_DIGESTS)
    if op == RequestCode.GET_ENDPOINT_INFO:
        return _endpoint_info_request(r, session, encap)
    if op == RequestCode.SEND_EVENT:
        assert session is not None and session.events is not None
        room = r.device.data_transfer_size - 64  # the SEND_EVENT header and record overhead
        events = session.events.take(max(room, 64))
        return build_send_event(r.version, events)
    assert session is not None
    if op == RequestCode.KEY_UPDATE:
        # libspdm ``libspdm_get_encap_request_key_update``: UpdateKey first; then
        # VerifyNewKey, sent (in this ACK) already under the new response key
        tag = r.rng(1)[0]
        if len(encap.last_request) >= 2 and encap.last_request[1] == RequestCode.KEY_UPDATE:
            session.update_response_key()
            return build_header(
                r.version, RequestCode.KEY_UPDATE, KeyUpdateOperation.VERIFY_NEW_KEY, tag
            )
        return build_header(r.version, RequestCode.KEY_UPDATE, KeyUpdateOperation.UPDATE_KEY, tag)
    # GET_CERTIFICATE: offset = what arrived so far, length = what one message can carry
    length = min(
        r.device.max_spdm_msg_size - DELIVER_HEADER_SIZE - CERTIFICATE_HEADER_SIZE, MAX_CHAIN_SIZE
    )
    return build_header(r.version, RequestCode.GET_CERTIFICATE, session.req_slot_id) + struct.pack(
        "<HH", len(encap.chain), length
    )


def _advance(
    r: Responder, session: Session | None, encap: EncapState, need_continue: bool
) -> bytes:
    """libspdm ``libspdm_process_encapsulated_response`` after a response: the next request."""
    encap.request_id = (encap.request_id + 1) & 0xFF
    if not need_continue:
        encap.current = _next_op(encap)
    if encap.current == 0:
        encap.done = True
        encap.last_request = b""
        return b""
    encap.last_request = _build_request(r, session, encap, encap.current)
    return encap.last_request


def _fail(
    session: Session | None, encap: EncapState, reason: str, *, end_session: bool = False
) -> SpdmErrorResponse:
    encap.done = True
    encap.current = 0
    if session is not None and session.events is not None:
        session.events.abandon()
    commits = (end(session.session_id),) if end_session and session is not None else ()
    return SpdmErrorResponse(ErrorCode.InvalidResponseCode, reason, commits=commits)


def get_encapsulated_request(r: Responder, req: Request) -> bytes:
    """ENCAPSULATED_REQUEST with the first request of the pending flow."""
    _check_supported(r, RequestCode.GET_ENCAPSULATED_REQUEST)
    active = _active_encap(r, req, start_events=True)
    if active is None:
        raise _no_pending(r, "GET_ENCAPSULATED_REQUEST: no encapsulated request is pending")
    session, encap = active
    reset_via_request_code(r, RequestCode.GET_ENCAPSULATED_REQUEST)
    if RequestCode.KEY_UPDATE in encap.sequence and (
        session is None
        or session.state is not SessionState.ESTABLISHED
        or not (r.device.capabilities & ResponderCap.KEY_UPD_CAP)
        or not r.peer_has(RequesterCap.KEY_UPD_CAP)
    ):
        raise _fail(
            session, encap, "encapsulated KEY_UPDATE needs an established session and KEY_UPD_CAP"
        )
    if RequestCode.GET_ENDPOINT_INFO in encap.sequence and (
        r.version < 0x13 or not r.peer_has(_EP_INFO_CAPS)
    ):
        raise _fail(session, encap, "encapsulated GET_ENDPOINT_INFO needs 1.3 and EP_INFO_CAP")
    if encap.current != 0:
        # libspdm processes an empty "previous response" here, which fails the flow
        raise _fail(
            session, encap, "GET_ENCAPSULATED_REQUEST in the middle of the encapsulated flow"
        )
    payload = _advance(r, session, encap, False)
    return build_encapsulated_request(r.version, encap.request_id, payload)


def deliver_encapsulated_response(r: Responder, req: Request) -> bytes:
    """Process the requester's answer; ENCAPSULATED_RESPONSE_ACK with the next request."""
    _check_supported(r, RequestCode.DELIVER_ENCAPSULATED_RESPONSE)
    active = _active_encap(r, req)
    if active is None:
        raise unexpected("DELIVER_ENCAPSULATED_RESPONSE: no encapsulated request is pending")
    session, encap = active
    if len(req.raw) <= DELIVER_HEADER_SIZE:
        raise invalid("DELIVER_ENCAPSULATED_RESPONSE carries no response")
    if req.param1 != encap.request_id:
        raise invalid(
            f"DELIVER_ENCAPSULATED_RESPONSE RequestID {req.param1}, expected {encap.request_id}"
        )
    payload = req.raw[DELIVER_HEADER_SIZE:]
    if len(payload) < 4:
        raise invalid("DELIVER_ENCAPSULATED_RESPONSE: the response is shorter than a header")
    reset_via_request_code(r, RequestCode.DELIVER_ENCAPSULATED_RESPONSE)
    need_continue = False
    stop = False
    try:
        if payload[1] == ResponseCode.ERROR and payload[2] == ErrorCode.ResponseNotReady:
            stop = True  # DSP0274: ResponseNotReady ends the encapsulated flow
            if session is not None and session.events is not None:
                session.events.abandon()
        elif encap.current == RequestCode.GET_DIGESTS:
            if session is None:
                raise EncapFailure("mutual authentication outside a session")
            _process_digests(r, session, encap, payload)
        elif encap.current == RequestCode.GET_CERTIFICATE:
            if session is None:
                raise EncapFailure("mutual authentication outside a session")
            need_continue = _process_certificate(r, session, encap, payload)
        elif encap.current == RequestCode.KEY_UPDATE:
            if session is None:
                raise EncapFailure("KEY_UPDATE outside a session")
            need_continue = _process_key_update(r, session, encap, payload)
        elif encap.current == RequestCode.GET_ENDPOINT_INFO:
            _process_endpoint_info(r, session, encap, payload)
        elif encap.current == RequestCode.SEND_EVENT:
            if session is None:
                raise EncapFailure("SEND_EVENT outside a session")
            need_continue = _process_event_ack(r, session, payload)
        else:
            raise EncapFailure("no encapsulated request is awaiting an answer")
    except EncapFailure as exc:
        raise _fail(
            session,
            encap,
            f"encapsulated {_name(encap.current)}: {exc}",
            end_session=exc.end_session,
        ) from None
    if stop:
        encap.done = True
        encap.current = 0
        next_request = b""
    else:
        next_request = _advance(r, session, encap, need_continue)
    ack = EncapsulatedResponseAck(
        version=r.version,
        request_id=encap.request_id,
        payload_type=EncapPayloadType.PRESENT,
        ack_request_id=req.param1,
        payload=next_request,
    )
    if not next_request:
        ack.request_id = 0
        ack.payload_type = EncapPayloadType.ABSENT
        if (
            session is not None
            and encap.sequence[:1] == [int(RequestCode.GET_DIGESTS)]
            and session.mut_auth_requested
            and session.req_slot_id not in (0, 0xFF)
        ):
            ack.payload_type = EncapPayloadType.REQ_SLOT_NUMBER
            ack.payload = bytes((session.req_slot_id,))
    return ack.encode()


def _name(code: int) -> str:
    try:
        return RequestCode(code).name
    except ValueError:
        return f"0x{code:02X}"


def _process_digests(r: Responder, session: Session, encap: EncapState, rsp: bytes) -> None:
    if rsp[0] != r.version:
        raise EncapFailure(f"DIGESTS version 0x{rsp[0]:02X}, expected 0x{r.version:02X}")
    if rsp[1] == ResponseCode.ERROR:
        raise EncapFailure(f"the requester answered ERROR 0x{rsp[2]:02X}")
    if rsp[1] != ResponseCode.DIGESTS:
        raise EncapFailure(f"response code 0x{rsp[1]:02X}, expected DIGESTS")
    if r.version >= 0x13 and rsp[2] & rsp[3] != rsp[3]:
        raise EncapFailure("DIGESTS ProvisionedSlotMask has slots outside SupportedSlotMask")
    count = bin(rsp[3]).count("1")
    if count == 0:
        raise EncapFailure("DIGESTS names no provisioned slot")
    size = 4 + count * hash_size(r.algorithms.base_hash)
    if r.version >= 0x13 and r.algorithms.multi_key_req:
        size += count * 4  # KeyPairID, CertificateInfo, KeyUsageMask of each slot
    if len(rsp) < size:
        raise EncapFailure(f"DIGESTS is {len(rsp)} bytes, {count} digests need {size}")
    encap.digests = bytes(rsp[:size])
    if r.algorithms.multi_key_req and not session.encap_digests:
        session.encap_digests = encap.digests  # message EncapD (libspdm: the first one)


def _process_certificate(r: Responder, session: Session, encap: EncapState, rsp: bytes) -> bool:
    """Append one CERTIFICATE portion; True when more is needed."""
    if rsp[0] != r.version:
        raise EncapFailure(f"CERTIFICATE version 0x{rsp[0]:02X}, expected 0x{r.version:02X}")
    if rsp[1] == ResponseCode.ERROR:
        raise EncapFailure(f"the requester answered ERROR 0x{rsp[2]:02X}")
    if rsp[1] != ResponseCode.CERTIFICATE:
        raise EncapFailure(f"response code 0x{rsp[1]:02X}, expected CERTIFICATE")
    if len(rsp) < CERTIFICATE_HEADER_SIZE:
        raise EncapFailure(f"CERTIFICATE is {len(rsp)} bytes, shorter than its header")
    portion, remainder = struct.unpack_from("<HH", rsp, 4)
    asked = (
        struct.unpack_from("<H", encap.last_request, 6)[0] if len(encap.last_request) >= 8 else 0
    )
    if portion == 0 or portion > asked:
        raise EncapFailure(f"PortionLength {portion} (asked for {asked})")
    offset = len(encap.chain)
    if portion > MAX_CHAIN_SIZE - offset or remainder > MAX_CHAIN_SIZE - offset - portion:
        raise EncapFailure("the chain would exceed 65535 bytes")
    if offset == 0:
        encap.chain_total = portion + remainder
    elif encap.chain_total != offset + portion + remainder:
        raise EncapFailure("PortionLength + RemainderLength changed between portions")
    if rsp[2] & 0x0F != session.req_slot_id:
        raise EncapFailure(f"CERTIFICATE for slot {rsp[2] & 0x0F}, asked {session.req_slot_id}")
    if r.version >= 0x13 and rsp[3] & 0x07 and not r.algorithms.multi_key_req:
        raise EncapFailure("CERTIFICATE CertModel must be 0 without a multi-key connection")
    if len(rsp) < CERTIFICATE_HEADER_SIZE + portion:
        raise EncapFailure(f"CERTIFICATE carries fewer than PortionLength {portion} bytes")
    encap.chain += rsp[CERTIFICATE_HEADER_SIZE : CERTIFICATE_HEADER_SIZE + portion]
    if remainder:
        return True
    chain = bytes(encap.chain)
    problem = verify_requester_chain(
        chain,
        r.algorithms.base_hash,
        r.algorithms.req_asym,
        r.device.sessions.requester_roots,
    )
    if problem:
        raise EncapFailure(problem)
    session.peer_chain = chain
    return False


def _process_key_update(r: Responder, session: Session, encap: EncapState, rsp: bytes) -> bool:
    """KEY_UPDATE_ACK for the responder's KEY_UPDATE; True while VerifyNewKey is still due."""
    if rsp[0] != r.version:
        raise EncapFailure(f"KEY_UPDATE_ACK version 0x{rsp[0]:02X}, expected 0x{r.version:02X}")
    if rsp[1] == ResponseCode.ERROR and rsp[2] == ErrorCode.DecryptError:
        raise EncapFailure("the requester could not decrypt: the session ends", end_session=True)
    sent = encap.last_request
    if len(rsp) != 4 or rsp[1] != ResponseCode.KEY_UPDATE_ACK or rsp[2:4] != sent[2:4]:
        raise EncapFailure(f"expected KEY_UPDATE_ACK echoing {sent[2:4].hex()}, got {rsp.hex()}")
    return sent[2] != KeyUpdateOperation.VERIFY_NEW_KEY


_EP_INFO_CAPS = int(RequesterCap.EP_INFO_CAP_NO_SIG | RequesterCap.EP_INFO_CAP_SIG)


def _requester_chain(r: Responder, session: Session | None) -> bytes:
    """The requester's SPDM certificate chain the device knows: from the session's mutual
    authentication, else the profile's provisioned one (``sessions.requester_chain``)."""
    if session is not None and session.peer_chain:
        return session.peer_chain
    certs = r.device.sessions.requester_chain
    if certs and r.algorithms.req_base_asym:
        from emulator.x509.chain import spdm_cert_chain

        return spdm_cert_chain(hash_name(r.algorithms.base_hash), list(certs))
    return b""


def _endpoint_info_request(r: Responder, session: Session | None, encap: EncapState) -> bytes:
    """GET_ENDPOINT_INFO for the requester: signed when it can sign and its chain is known."""
    slot = session.req_slot_id if session is not None else r.device.sessions.req_slot_id
    signed = bool(r.peer_has(RequesterCap.EP_INFO_CAP_SIG)) and bool(_requester_chain(r, session))
    encap.endpoint_info_slot = slot if signed else None
    return GetEndpointInfoRequest(
        r.version,
        SUBCODE_DEVICE_CLASS_IDENTIFIER,
        slot if signed else 0,
        SIGNATURE_REQUESTED if signed else 0,
        r.rng(NONCE_SIZE) if signed else b"",
    ).encode()


def _process_endpoint_info(
    r: Responder, session: Session | None, encap: EncapState, rsp: bytes
) -> None:
    """ENDPOINT_INFO from the requester; a signed one must verify with its leaf key."""
    if rsp[0] != r.version:
        raise EncapFailure(f"ENDPOINT_INFO version 0x{rsp[0]:02X}, expected 0x{r.version:02X}")
    if rsp[1] == ResponseCode.ERROR:
        raise EncapFailure(f"the requester answered ERROR 0x{rsp[2]:02X}")
    if rsp[1] != ResponseCode.ENDPOINT_INFO:
        raise EncapFailure(f"response code 0x{rsp[1]:02X}, expected ENDPOINT_INFO")
    slot = encap.endpoint_info_slot
    signed = slot is not None
    sig_size = signature_size(r.algorithms.req_base_asym) if signed else 0
    try:
        msg, end = EndpointInfoResponse.decode(rsp, signed, sig_size)
    except (CodecError, EmulatorError) as exc:
        raise EncapFailure(str(exc)) from None
    if end != len(rsp):
        raise EncapFailure(f"ENDPOINT_INFO is {len(rsp)} bytes, its fields make {end}")
    if msg.slot_id != (slot if signed else 0):
        raise EncapFailure(f"ENDPOINT_INFO SlotID {msg.slot_id}, asked {slot or 0}")
    if signed:
        chain = _requester_chain(r, session)
        il = bytes(r.transcripts.a) + encap.last_request + msg.encode_unsigned()
        try:
            from emulator.x509.chain import parse_spdm_cert_chain

            parsed = parse_spdm_cert_chain(hash_name(r.algorithms.base_hash), chain)
            key = public_key_of_cert(parsed.certs[-1])
            ok = spdm_verify(
                r.version,
                r.algorithms.req_base_asym,
                r.algorithms.base_hash,
                key,
                MUT_ENDPOINT_INFO_SIGN_CONTEXT,
                il,
                msg.signature,
            )
        except (EmulatorError, ValueError, TypeError) as exc:
            raise EncapFailure(f"ENDPOINT_INFO signature: {exc}") from None
        if not ok:
            raise EncapFailure("ENDPOINT_INFO signature does not verify with the requester's key")
    encap.peer_endpoint_info = msg.ep_info
    r.ctx.peer_endpoint_info = msg.ep_info


def _process_event_ack(r: Responder, session: Session, rsp: bytes) -> bool:
    """EVENT_ACK for SEND_EVENT; True while more events wait (the ACK carries the next)."""
    if rsp[0] != r.version:
        raise EncapFailure(f"EVENT_ACK version 0x{rsp[0]:02X}, expected 0x{r.version:02X}")
    if rsp[1] == ResponseCode.ERROR:
        raise EncapFailure(f"the requester answered ERROR 0x{rsp[2]:02X}")
    if rsp[1] != ResponseCode.EVENT_ACK or len(rsp) != 4:
        raise EncapFailure(f"expected the 4-byte EVENT_ACK, got {rsp.hex()}")
    events = session.events
    assert events is not None
    events.acknowledge()
    return events.pending


def arm_endpoint_info(r: Responder) -> None:
    """spdm-emu ``OOB_ENCAP_ENDPOINT_INFO``: the next GET_ENCAPSULATED_REQUEST (in or outside
    a session) gets GET_ENDPOINT_INFO (libspdm ``libspdm_init_get_endpoint_info_encap_state``
    with no session)."""
    r.ctx.encap = EncapState(sequence=[int(RequestCode.GET_ENDPOINT_INFO)])


def arm_key_update(r: Responder, session_id: int) -> bool:
    """Responder-initiated KEY_UPDATE (spdm-emu ``OOB_ENCAP_KEY_UPDATE``): the next
    GET_ENCAPSULATED_REQUEST of the session gets KEY_UPDATE(UpdateKey), then
    VerifyNewKey under the new response key (libspdm ``libspdm_rsp_encap_key_update.c``).
    ``session_id`` 0 names the latest session.  False when there is no such session."""
    table = r.session_table()
    session = table.get(session_id or table.latest_session_id)
    if session is None:
        return False
    session.encap = EncapState(sequence=[int(RequestCode.KEY_UPDATE)])
    return True


def verify_requester_chain(
    chain: bytes, hash_algo: int, req_asym: int, roots: tuple[x509.Certificate, ...]
) -> str | None:
    """Why the requester's SPDM certificate chain is unacceptable, or None.

    libspdm ``libspdm_verify_peer_cert_chain_buffer_integrity`` (Length, RootHash, each
    certificate issued by the previous one, the leaf key matches ReqBaseAsymAlg) and
    ``..._authority`` (the first certificate is a trusted root or issued by one).
    """
    from emulator.x509.chain import CertError, parse_spdm_cert_chain
    from emulator.x509.pqc import verify_issued_by

    try:
        parsed = parse_spdm_cert_chain(hash_name(hash_algo), chain)
    except (CertError, EmulatorError) as exc:
        return f"requester chain: {exc}"
    if not parsed.root_hash_ok:
        return "requester chain: RootHash is not the hash of the first certificate"
    try:
        certs = [x509.load_der_x509_certificate(d) for d in parsed.certs]
    except ValueError as exc:
        return f"requester chain: a certificate does not parse ({exc})"
    for i in range(1, len(certs)):
        try:
            verify_issued_by(certs[i], certs[i - 1])
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm, EmulatorError):
            return f"requester chain: certificate {i} is not issued by certificate {i - 1}"
    try:
        check_key_matches(req_asym, public_key_of_cert(certs[-1]))
    except EmulatorError as exc:
        return f"requester chain: leaf key: {exc}"
    first = certs[0]
    first_der = first.public_bytes(serialization.Encoding.DER)
    for root in roots:
        if root.public_bytes(serialization.Encoding.DER) == first_der:
            return None
        try:
            first.verify_directly_issued_by(root)
            return None
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            continue
    return "requester chain does not lead to a trusted requester root"
