"""GET_DIGESTS / DIGESTS and GET_CERTIFICATE / CERTIFICATE (DSP0274 10.6, 10.7).

Behaviour follows libspdm (``libspdm_rsp_digests.c``, ``libspdm_rsp_certificate.c``):

* both need CERT_CAP (checked by the core) and a connection after ALGORITHMS
  (UnexpectedRequest before); both are allowed in a session, where they do not
  touch message B;
* a slot's content depends on the negotiated BaseAsymAlgo (see
  :mod:`emulator.device.identity`): a slot whose keys cannot sign with it is
  empty for this connection;
* GET_DIGESTS with no provisioned slot: ERROR(Unspecified); GET_CERTIFICATE for
  SlotID > 7, an empty slot (unless 1.3 SlotSizeRequested) or Offset at/after the
  end of the chain: ERROR(InvalidRequest), message B untouched;
* PortionLength = min(Length, what is left, what one response can carry): the
  smaller of our and the requester's DataTransferSize (1.2+) minus the 8-byte
  header, unless both sides do CHUNK_CAP (then MaxSPDMmsgSize, the chunking
  layer splits); at most 0xFFFF;
* SPDM 1.4 LargeCertChain (GET_CERTIFICATE Param1 bit 7, u32 LargeOffset/LargeLength):
  only with LARGE_RESP_CAP advertised (else ERROR(UnsupportedRequest)); the CERTIFICATE
  then has Param1 bit 7, zero u16 lengths and u32 LargePortionLength/LargeRemainderLength,
  and PortionLength is not capped at 0xFFFF.  (Chains themselves stay within the 16-bit
  Length of the chain format, :func:`emulator.x509.chain.spdm_cert_chain`, so the 1.4
  DataTooLarge answer for a longer chain never arises);
* transcripts (libspdm ``libspdm_reset_message_buffer_via_request_code``):
  GET_DIGESTS empties message B first, then request + response are appended to
  B; with 1.3 MULTI_KEY_CONN the first DIGESTS right after VCA is also kept as
  message D (for the KEY_EXCHANGE transcript, see :func:`message_d`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emulator.codec.constants import (
    ErrorCode,
    RequestCode,
    RequesterCap,
    ResponderCap,
    ResponseCode,
)
from emulator.codec.identity import (
    CERTIFICATE_HEADER_SIZE,
    CERTIFICATE_LARGE_HEADER_SIZE,
    GET_DIGESTS_SIZE,
    SLOT_COUNT,
    CertificateMsg,
    DigestsMsg,
    GetCertificateMsg,
)
from emulator.errors import CodecError, EmulatorError
from emulator.responder.base import (
    ConnectionState,
    Request,
    SpdmErrorResponse,
    invalid,
    unexpected,
)

if TYPE_CHECKING:
    from emulator.responder.core import Responder

#: SPDM_MAX_CERTIFICATE_CHAIN_SIZE: the 16-bit Length/Offset space of a chain.
MAX_CHAIN_SIZE = 0xFFFF
#: What SlotSizeRequested reports for a slot's storage when SET_CERT_CAP is set
#: (libspdm's sample: the largest chain, truncated to the 16-bit field).
SLOT_STORAGE_SIZE = 0xFFFF

# flag bits as plain ints (IntFlag arithmetic costs ~1 us per operation)
_RSP_CHUNK_CAP = int(ResponderCap.CHUNK_CAP)
_REQ_CHUNK_CAP = int(RequesterCap.CHUNK_CAP)
_SET_CERT_CAP = int(ResponderCap.SET_CERT_CAP)

#: Requests that empty M1/M2 (B and C) when sent before the connection is authenticated.
M1_RESETTING_REQUESTS = frozenset(
    {
        RequestCode.KEY_EXCHANGE,
        RequestCode.GET_MEASUREMENTS,
        RequestCode.FINISH,
        RequestCode.PSK_EXCHANGE,
        RequestCode.PSK_FINISH,
        RequestCode.KEY_UPDATE,
        RequestCode.HEARTBEAT,
        RequestCode.GET_ENCAPSULATED_REQUEST,
        RequestCode.END_SESSION,
        RequestCode.GET_MEASUREMENT_EXTENSION_LOG,
        RequestCode.DELIVER_ENCAPSULATED_RESPONSE,
    }
)


def message_d(r: Responder) -> bytes:
    """Message D for the KEY_EXCHANGE transcript (empty unless 1.3 MULTI_KEY_CONN)."""
    return r.ctx.identity.message_d


def multi_key(r: Responder) -> bool:
    """True in a 1.3 multi-key connection for the responder's keys (the requester set
    MULTI_KEY_CONN in NEGOTIATE_ALGORITHMS): multi-key DIGESTS / CERTIFICATE fields."""
    return r.version >= 0x13 and r.algorithms.multi_key_rsp


def reset_via_request_code(r: Responder, code: int) -> None:
    """libspdm ``libspdm_reset_message_buffer_via_request_code`` for B, C and the D window.

    Handlers call it after their checks passed (an ERROR before it leaves the
    transcripts as they were).  Request families that reset M1/M2 (GET_MEASUREMENTS,
    KEY_EXCHANGE, ...) should call it too; it empties B and C when they arrive
    before the connection is authenticated.
    """
    st = r.ctx.identity
    if code != RequestCode.GET_DIGESTS and r.state >= ConnectionState.NEGOTIATED:
        st.digest_window_closed = True
    if code in M1_RESETTING_REQUESTS:
        if r.state < ConnectionState.AUTHENTICATED:
            r.transcripts.b.clear()
            r.transcripts.c.clear()
    elif code == RequestCode.GET_DIGESTS:
        r.transcripts.b.clear()


def require_negotiated(r: Responder, what: str) -> None:
    """UnexpectedRequest unless ALGORITHMS has completed (libspdm: state < NEGOTIATED)."""
    if r.state < ConnectionState.NEGOTIATED:
        raise unexpected(f"{what} before NEGOTIATE_ALGORITHMS")


#: Requests whose own handlers apply the resets (ours), or that never do (VCA, chunks).
_SELF_OR_EXEMPT = frozenset(
    {
        RequestCode.GET_DIGESTS,
        RequestCode.GET_CERTIFICATE,
        RequestCode.CHALLENGE,
        RequestCode.GET_VERSION,
        RequestCode.GET_CAPABILITIES,
        RequestCode.NEGOTIATE_ALGORITHMS,
        RequestCode.RESPOND_IF_READY,
        RequestCode.CHUNK_GET,
        RequestCode.CHUNK_SEND,
        # their handlers call reset_via_request_code on every path to a response
        RequestCode.KEY_EXCHANGE,
        RequestCode.FINISH,
        RequestCode.HEARTBEAT,
        RequestCode.KEY_UPDATE,
        RequestCode.END_SESSION,
    }
)


def observe(r: Responder, request: bytes, response: bytes) -> None:
    """Pipeline step "observe": :func:`reset_via_request_code` for the other families'
    requests.

    libspdm calls it inside each handler once the request passed its checks, so
    a successful response is taken as "processed"; an ERROR leaves B and C alone.
    """
    if len(request) < 2 or len(response) < 2 or response[1] == ResponseCode.ERROR:
        return
    if request[1] in _SELF_OR_EXEMPT:
        return
    reset_via_request_code(r, request[1])


def _reset_pending(req: Request, slots: int, what: str) -> None:
    """ERROR(ResetRequired) while a SET_CERTIFICATE of these slots waits for a device
    reset (CERT_INSTALL_RESET_CAP; libspdm ``cert_slot_reset_mask``)."""
    prov = req.device.provisioning
    pending = prov.reset_pending_slots & slots if prov is not None else 0
    if pending:
        raise SpdmErrorResponse(
            ErrorCode.ResetRequired,
            f"{what}: slot mask 0x{pending:02X} takes a new chain at the next device reset",
        )


def get_digests(r: Responder, req: Request) -> bytes:
    """DIGESTS: Hash(SPDM cert chain) of every slot provisioned for the negotiated asym."""
    require_negotiated(r, "GET_DIGESTS")
    _reset_pending(req, 0xFF, "GET_DIGESTS")
    reset_via_request_code(r, RequestCode.GET_DIGESTS)
    asym = r.algorithms.asym
    base_hash = r.algorithms.base_hash
    identity = req.device.identity
    keys = identity.provisioned(asym)
    if not keys:
        raise SpdmErrorResponse(
            ErrorCode.Unspecified, "no certificate slot is provisioned for the negotiated asym"
        )
    mk = multi_key(r)
    try:
        digests = [k.digest(base_hash) for k in keys]
    except EmulatorError as exc:
        raise SpdmErrorResponse(ErrorCode.Unspecified, f"digest: {exc}") from None
    mask = identity.provisioned_mask(asym)
    response = DigestsMsg(
        version=r.version,
        supported_mask=identity.supported_mask if r.version >= 0x13 else 0,
        provisioned_mask=mask,
        digests=digests,
        multi_key=mk,
        key_pair_ids=[k.key_pair_id for k in keys],
        certificate_infos=[k.certificate_info for k in keys],
        key_usages=[k.key_usage for k in keys],
    ).encode()
    if not req.in_session:
        r.transcripts.b += req.raw[:GET_DIGESTS_SIZE]
        r.transcripts.b += response
        st = r.ctx.identity
        if mk and not st.digest_window_closed and not st.message_d:
            st.message_d = response
    if r.state < ConnectionState.AFTER_DIGESTS:
        r.state = ConnectionState.AFTER_DIGESTS
    return response


def max_portion(r: Responder, large: bool = False) -> int:
    """The largest PortionLength one CERTIFICATE may carry on this connection (no 0xFFFF
    cap for a 1.4 LargeCertChain response)."""
    dev = r.device
    peer = r.peer
    both_chunk = bool(
        int(dev.capabilities) & _RSP_CHUNK_CAP and peer is not None and peer.flags & _REQ_CHUNK_CAP
    )
    if both_chunk:
        limit = dev.max_spdm_msg_size
        if peer is not None and peer.max_spdm_msg_size:
            limit = min(limit, peer.max_spdm_msg_size)
    else:
        limit = dev.data_transfer_size
        if r.version >= 0x12 and peer is not None and peer.data_transfer_size:
            limit = min(limit, peer.data_transfer_size)
    if large:
        return max(0, limit - CERTIFICATE_LARGE_HEADER_SIZE)
    return max(0, min(limit - CERTIFICATE_HEADER_SIZE, MAX_CHAIN_SIZE))


def get_certificate(r: Responder, req: Request) -> bytes:
    """CERTIFICATE: one portion of a slot's SPDM certificate chain."""
    require_negotiated(r, "GET_CERTIFICATE")
    try:
        msg = GetCertificateMsg.decode(req.raw)
    except CodecError as exc:
        raise invalid(str(exc)) from None
    if msg.large and not r.device.capabilities & ResponderCap.LARGE_RESP_CAP:
        raise SpdmErrorResponse(
            ErrorCode.UnsupportedRequest,
            "GET_CERTIFICATE LargeCertChain without LARGE_RESP_CAP",
            data=RequestCode.GET_CERTIFICATE,
        )
    slot = msg.slot_id
    if slot >= SLOT_COUNT:
        raise invalid(f"SlotID {slot} is not 0..7")
    _reset_pending(req, 1 << slot, "GET_CERTIFICATE")
    size_requested = msg.slot_size_requested
    key = req.device.identity.key_for(slot, r.algorithms.asym)
    if key is None and not size_requested:
        raise invalid(f"slot {slot} is empty")
    try:
        chain = key.spdm_chain(r.algorithms.base_hash) if key is not None else b""
    except EmulatorError as exc:
        raise SpdmErrorResponse(ErrorCode.Unspecified, f"slot {slot}: {exc}") from None
    size = len(chain)
    offset, length = (0, 0) if size_requested else (msg.offset, msg.length)
    if not size_requested and offset >= size:
        raise invalid(f"Offset {offset} is past the {size}-byte chain of slot {slot}")
    length = min(length, max_portion(r, msg.large), size - offset)
    remainder = size - offset - length
    if size_requested and int(r.device.capabilities) & _SET_CERT_CAP:
        remainder = SLOT_STORAGE_SIZE
    reset_via_request_code(r, RequestCode.GET_CERTIFICATE)
    response = CertificateMsg(
        version=r.version,
        slot_id=slot,
        portion=chain[offset : offset + length],
        remainder_length=remainder,
        param2=key.certificate_info if key is not None and multi_key(r) else 0,
        large=msg.large,
    ).encode()
    if not req.in_session:
        r.transcripts.b += req.raw[: msg.size]
        r.transcripts.b += response
    if r.state < ConnectionState.AFTER_CERTIFICATE:
        r.state = ConnectionState.AFTER_CERTIFICATE
    return response
