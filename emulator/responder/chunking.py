"""Large SPDM message transfer, responder side (DSP0274 1.2+ "Large SPDM message transfer
mechanism"): ERROR(LargeResponse) + CHUNK_GET/CHUNK_RESPONSE, CHUNK_SEND/CHUNK_SEND_ACK.

Behaviour follows libspdm (``libspdm_rsp_receive_send.c``, ``libspdm_rsp_chunk_response.c``,
``libspdm_rsp_chunk_send_ack.c``).  Chunking is *active* when the connection is SPDM 1.2+
and both sides advertised CHUNK_CAP.  Then:

* **Too large responses** (:func:`too_large`, the pipeline's "limit" step, run on every
  response in the clear and in sessions, and on the response to a reassembled large
  request): a response over what the requester can receive at all
  (:func:`response_limit`: its MaxSPDMmsgSize, with chunking also what 65536 chunks
  carry, without chunking its DataTransferSize) is ERROR(ResponseTooLarge) with the 4-byte
  size as extended error data, and the pipeline undoes what the handler changed
  (:mod:`emulator.responder.core`, "ResponseTooLarge and state").
* **Large responses** (a response filter run after the handler and the observers, so the
  transcripts hold the whole response, as in libspdm where the handler appended it): a
  response over ``min(requester DataTransferSize, device DataTransferSize)`` is kept and
  answered with ERROR(LargeResponse, Handle).  Handles follow libspdm's counter:
  incremented when a large response is stored and again when its last chunk is sent
  (1, 3, 5, ... on a connection).  A CHUNK_SEND_ACK whose ResponseToLargeRequest makes it
  too large is stored *without* the ACK header (only the response is chunked).
* **CHUNK_GET** (1.2+): no CHUNK_CAP on either side: UnexpectedRequest; nothing pending:
  UnexpectedRequest; Handle or ChunkSeqNo not the expected ones: InvalidRequest (the
  transfer goes on).  Chunk 0 carries LargeMessageSize and ``limit - 16`` bytes, later
  chunks up to ``limit - 12``; the one that completes the message has LastChunk set and
  ends the transfer.
* **CHUNK_SEND** (1.2+): no CHUNK_CAP on the device (core gate) or the requester:
  UnsupportedRequest; shorter than its header: InvalidRequest.  A chunk whose fields are
  wrong (ChunkSeqNo, Handle, sizes under MinDataTransferSize or over the device's
  DataTransferSize/MaxSPDMmsgSize, LargeMessageSize <= 42, LastChunk in chunk 0 or on a
  chunk that does not end the message...) gets CHUNK_SEND_ACK with EarlyErrorDetected and
  ERROR(InvalidRequest) as ResponseToLargeRequest, and the transfer is dropped.  When the
  message is complete it is processed as a request of its own (gates, handler, observers;
  CHUNK_SEND/CHUNK_GET or an unknown code inside: InvalidRequest, as libspdm) and its
  response is the ACK's ResponseToLargeRequest.
* **While a transfer is in progress** every other request is refused with
  UnexpectedRequest without ending the transfer, except GET_VERSION, which ends it (a
  request gate, before any handler: transcripts and logs are untouched).  Requests the
  generic rules reject (shorter than a header, unknown code, wrong version byte) get
  their usual ERROR (libspdm's gate answers UnexpectedRequest to those too).

This emulator also keeps a transfer to the session context it started in (a CHUNK_GET or
CHUNK_SEND from another context is "another request": UnexpectedRequest), so a response
produced inside a session is never delivered in the clear; libspdm keeps one chunk context
per connection and does not check.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from emulator.codec.chunking import (
    CHUNK_HEADER_SIZE,
    LARGE_MESSAGE_SIZE_FIELD,
    LAST_CHUNK,
    ChunkGet,
    ChunkResponse,
    ChunkSendAck,
    build_large_response_error,
    max_chunks,
    max_large_message,
    short_chunk_size,
)
from emulator.codec.constants import (
    MIN_DATA_TRANSFER_SIZE_V12,
    ErrorCode,
    RequestCode,
    RequesterCap,
    ResponderCap,
    ResponseCode,
    code_name,
)
from emulator.errors import CodecError
from emulator.responder.base import Request, invalid, unexpected
from emulator.responder.context import ChunkState, IncomingRequest, PendingResponse

if TYPE_CHECKING:
    from emulator.responder.core import Responder

log = logging.getLogger("emulator.responder.chunking")

#: first-chunk overhead: CHUNK_SEND/CHUNK_RESPONSE header + LargeMessageSize
_FIRST_OVERHEAD = CHUNK_HEADER_SIZE + LARGE_MESSAGE_SIZE_FIELD


def _state(r: Responder) -> ChunkState:
    st = r.ctx.chunking
    if st is None:
        st = r.ctx.chunking = ChunkState()
    return st


def chunk_state(r: Responder) -> ChunkState | None:
    """The connection's chunking state, if any chunking happened (tests, telemetry)."""
    return r.ctx.chunking


_RSP_CHUNK_CAP = int(ResponderCap.CHUNK_CAP)
_REQ_CHUNK_CAP = int(RequesterCap.CHUNK_CAP)


def chunking_active(r: Responder) -> bool:
    """SPDM 1.2+ with CHUNK_CAP advertised by both sides."""
    ctx = r.ctx
    peer = ctx.peer
    return (
        ctx.version >= 0x12
        and peer is not None
        and bool(peer.flags & _REQ_CHUNK_CAP)
        and bool(int(r.device.capabilities) & _RSP_CHUNK_CAP)
    )


def chunk_limit(r: Responder) -> int:
    """The largest message this connection carries unchunked: the smaller of the
    requester's DataTransferSize and the device's (libspdm: sender_data_transfer_size)."""
    sizes = [r.device.data_transfer_size]
    if r.peer is not None and r.peer.data_transfer_size:
        sizes.append(r.peer.data_transfer_size)
    return min(sizes)


def _context(sid: int | None) -> str:
    return "outside sessions" if sid is None else f"in session 0x{sid:08X}"


# --- the request gate ------------------------------------------------------------------


def gate(r: Responder, request: bytes, session_id: int | None) -> None:
    """Pipeline step "gate": refuse requests that would interrupt a chunked transfer
    (DSP0274 1.3 10.24; libspdm_build_response)."""
    st = r.ctx.chunking
    if st is None or not st.in_transfer:
        return
    if len(request) < 4 or request[1] not in r.table:
        return  # the generic rules answer (InvalidRequest, UnsupportedRequest)
    code = request[1]
    if code == RequestCode.GET_VERSION:
        # GET_VERSION may interrupt a transfer: it ends it and proceeds normally
        if st.pending is not None:
            st.pending = None
            st.get_handle = (st.get_handle + 1) & 0xFF
        st.incoming = None
        return
    if request[0] != r.version:
        return  # the core answers VersionMismatch (DSP0274's generic order of checks)
    if st.pending is not None and (
        code != RequestCode.CHUNK_GET or session_id != st.pending.session_id
    ):
        raise unexpected(
            f"{code_name(code)} {_context(session_id)} while the large response "
            f"(handle {st.pending.handle}) is being read by CHUNK_GET "
            f"{_context(st.pending.session_id)}"
        )
    if st.incoming is not None and (
        code != RequestCode.CHUNK_SEND or session_id != st.incoming.session_id
    ):
        raise unexpected(
            f"{code_name(code)} {_context(session_id)} while a large request "
            f"(handle {st.incoming.handle}) is being sent by CHUNK_SEND "
            f"{_context(st.incoming.session_id)}"
        )


# --- the size limit and the response filter --------------------------------------------


def response_limit(r: Responder) -> int | None:
    """The largest response the requester can receive on this connection, None for no
    limit (before GET_CAPABILITIES, and SPDM 1.0/1.1, which have no MaxSPDMmsgSize).

    SPDM 1.2+ (DSP0274 1.2 10.4 GET_CAPABILITIES, "Large SPDM message transfer"): with
    chunking, the requester's MaxSPDMmsgSize and what the most chunks (65536; 2^32 in 1.4)
    can carry; without,
    its DataTransferSize too (the message must arrive whole; DSP0274 1.2 makes the two
    sizes equal for a requester without CHUNK_CAP).
    """
    ctx = r.ctx
    peer = ctx.peer
    version = ctx.version
    if peer is None or version < 0x12:
        return None
    device = r.device
    caps = device.capabilities
    dts = device.data_transfer_size
    cached = r.limit_cache
    if (
        cached is not None
        and cached[0] is peer
        and cached[1] is caps
        and cached[2] == version
        and cached[3] == dts
    ):
        return cached[4]  # (peer is replaced, never changed, by GET_CAPABILITIES)
    sizes = [peer.max_spdm_msg_size] if peer.max_spdm_msg_size else []
    if chunking_active(r):
        sizes.append(max_large_message(chunk_limit(r), version))
    elif peer.data_transfer_size:
        sizes.append(peer.data_transfer_size)
    limit = min(sizes) if sizes else None
    r.limit_cache = (peer, caps, version, dts, limit)
    return limit


def too_large(r: Responder, request: bytes, response: bytes) -> bytes | None:
    """Pipeline step "limit": the ERROR(ResponseTooLarge) that replaces ``response`` when
    the requester cannot receive it, else None (DSP0274 1.2+ ResponseTooLarge: the
    extended error data is the 4-byte size of the response).  Chunks and CHUNK_SEND_ACK
    are exempt: a chunk is sized to fit, and the response to a large request was
    limited when it was made."""
    if len(response) < 2 or response[1] in _SIZED_BY_CONSTRUCTION:
        return None
    limit = response_limit(r)
    if limit is None or len(response) <= limit:
        return None
    peer = r.peer
    what = code_name(request[1]) if len(request) > 1 else "?"
    if peer is not None and peer.max_spdm_msg_size and len(response) > peer.max_spdm_msg_size:
        why = f"MaxSPDMmsgSize {peer.max_spdm_msg_size}"
    elif chunking_active(r):
        why = f"what {max_chunks(r.version)} chunks of {chunk_limit(r)} bytes carry ({limit})"
    else:
        why = f"DataTransferSize {limit} (no CHUNK_CAP on both sides)"
    r.last_error = (
        f"the {len(response)}-byte {code_name(response[1])} to {what} is over the requester's {why}"
    )
    log.debug("ResponseTooLarge: %s", r.last_error)
    return r.error(ErrorCode.ResponseTooLarge, 0, len(response).to_bytes(4, "little"))


#: responses the limit does not apply to
_SIZED_BY_CONSTRUCTION = frozenset(
    {int(ResponseCode.CHUNK_RESPONSE), int(ResponseCode.CHUNK_SEND_ACK)}
)


def size_filter(r: Responder, request: bytes, session_id: int | None, response: bytes) -> bytes:
    """Pipeline step "filter": a response the requester cannot receive at once becomes
    ERROR(LargeResponse) (DSP0274 1.3 10.24); transcripts saw the real response.  What
    the requester cannot receive at all was refused by :func:`too_large` already."""
    if len(response) < 2 or not chunking_active(r):
        return response
    if response[1] == ResponseCode.CHUNK_RESPONSE:
        return response  # sized to fit by construction
    limit = chunk_limit(r)
    if len(response) <= limit:
        return response
    message = response
    if response[1] == ResponseCode.CHUNK_SEND_ACK:
        # only the response to the large request is chunked, not the ACK around it
        message = response[short_chunk_size(r.version) :]
    st = _state(r)
    if st.pending is not None:
        log.debug("dropping the unread large response (handle %d)", st.pending.handle)
    st.get_handle = (st.get_handle + 1) & 0xFF
    st.pending = PendingResponse(st.get_handle, bytes(message), session_id)
    st.responses_stored += 1
    log.debug(
        "%s: %d-byte %s kept for CHUNK_GET (handle %d, chunk limit %d)",
        code_name(request[1]) if len(request) > 1 else "?",
        len(message),
        code_name(message[1]) if len(message) > 1 else "response",
        st.get_handle,
        limit,
    )
    return build_large_response_error(r.version, st.get_handle)


# --- CHUNK_GET -------------------------------------------------------------------------


def chunk_get(r: Responder, req: Request) -> bytes:
    """CHUNK_GET -> CHUNK_RESPONSE: the next chunk of the pending large response."""
    if not chunking_active(r):
        raise unexpected("CHUNK_GET: CHUNK_CAP was not advertised by both sides")
    need = short_chunk_size(r.version)
    if len(req.raw) < need:
        raise invalid(f"CHUNK_GET is {len(req.raw)} bytes, needs {need}")
    st = _state(r)
    pending = st.pending
    if pending is None:
        raise unexpected("CHUNK_GET, but no large response is pending")
    try:
        msg = ChunkGet.decode(req.raw)
    except CodecError as exc:  # pragma: no cover - the size was checked
        raise invalid(str(exc)) from None
    if msg.handle != pending.handle:
        raise invalid(f"CHUNK_GET Handle {msg.handle}, the pending response has {pending.handle}")
    if msg.seq != pending.seq:
        raise invalid(f"CHUNK_GET ChunkSeqNo {msg.seq}, expected {pending.seq}")
    limit = chunk_limit(r)
    total = len(pending.message)
    if pending.seq == 0:
        size = min(limit - _FIRST_OVERHEAD, total)
        large: int | None = total
    else:
        size = min(limit - CHUNK_HEADER_SIZE, total - pending.sent)
        large = None
    chunk = pending.message[pending.sent : pending.sent + size]
    seq = pending.seq
    pending.seq += 1
    pending.sent += size
    last = pending.sent == total
    if last:
        st.pending = None
        st.get_handle = (st.get_handle + 1) & 0xFF  # libspdm: implicit wrap-around
    return ChunkResponse(
        version=r.version,
        handle=pending.handle,
        seq=seq,
        chunk=chunk,
        last=last,
        large_message_size=large,
    ).encode()


# --- CHUNK_SEND ------------------------------------------------------------------------

#: smallest chunk of a non-final CHUNK_SEND: MinDataTransferSize less its header
_MIN_CHUNK = MIN_DATA_TRANSFER_SIZE_V12 - CHUNK_HEADER_SIZE
_MIN_FIRST_CHUNK = MIN_DATA_TRANSFER_SIZE_V12 - _FIRST_OVERHEAD


def _first_chunk_problem(
    r: Responder, raw: bytes, seq: int, last: bool, chunk_size: int
) -> tuple[str | None, int]:
    """Why chunk 0 of a large request is refused (libspdm's checks, in its order)."""
    dev = r.device
    large = int.from_bytes(raw[CHUNK_HEADER_SIZE:_FIRST_OVERHEAD], "little")
    if seq != 0:
        return f"first CHUNK_SEND has ChunkSeqNo {seq}, not 0", large
    if chunk_size < _MIN_FIRST_CHUNK:
        return f"ChunkSize {chunk_size} of chunk 0 is under {_MIN_FIRST_CHUNK}", large
    if chunk_size > len(raw) - _FIRST_OVERHEAD:
        return f"ChunkSize {chunk_size} but {len(raw) - _FIRST_OVERHEAD} bytes follow", large
    real = _FIRST_OVERHEAD + chunk_size  # trailing bytes (DOE padding) do not count
    if real > dev.data_transfer_size:
        return (
            f"a {real}-byte CHUNK_SEND is over the DataTransferSize {dev.data_transfer_size}",
            large,
        )
    if large > dev.max_spdm_msg_size:
        return f"LargeMessageSize {large} is over MaxSPDMmsgSize {dev.max_spdm_msg_size}", large
    if large > max_large_message(dev.data_transfer_size, r.version):
        return f"LargeMessageSize {large} needs more than {max_chunks(r.version)} chunks", large
    if large <= MIN_DATA_TRANSFER_SIZE_V12:
        return (
            f"LargeMessageSize {large} is not over MinDataTransferSize "
            f"{MIN_DATA_TRANSFER_SIZE_V12}",
            large,
        )
    if last:
        return "LastChunk set in chunk 0", large
    return None, large


def _next_chunk_problem(
    r: Responder, inc: IncomingRequest, raw: bytes, handle: int, seq: int, last: bool, size: int
) -> str | None:
    """Why a later chunk of a large request is refused (libspdm's checks)."""
    wrap = max_chunks(r.version) - 1
    if seq != (inc.seq + 1) & wrap:
        return f"ChunkSeqNo {seq}, expected {(inc.seq + 1) & wrap}"
    if handle != inc.handle:
        return f"Handle {handle}, the transfer has {inc.handle}"
    if size > len(raw) - CHUNK_HEADER_SIZE:
        return f"ChunkSize {size} but {len(raw) - CHUNK_HEADER_SIZE} bytes follow"
    got = len(inc.data)
    if size + got > inc.size:
        return f"ChunkSize {size} overruns LargeMessageSize {inc.size} ({got} received)"
    if last and size + got != inc.size:
        return f"LastChunk, but {inc.size - got - size} bytes of the large request are missing"
    if not last:
        if size < _MIN_CHUNK:
            return f"ChunkSize {size} of a non-final chunk is under {_MIN_CHUNK}"
        real = CHUNK_HEADER_SIZE + size  # trailing bytes (DOE padding) do not count
        if real > r.device.data_transfer_size:
            return (
                f"a {real}-byte CHUNK_SEND is over the DataTransferSize "
                f"{r.device.data_transfer_size}"
            )
    if seq == 0:
        return "ChunkSeqNo wrapped around"
    return None


def _process_large_request(r: Responder, request: bytes, session_id: int | None) -> bytes:
    """Answer a reassembled large request as if it had arrived whole."""
    code = request[1] if len(request) >= 2 else -1
    if code in (RequestCode.CHUNK_SEND, RequestCode.CHUNK_GET) or code not in r.table:
        r.last_error = f"the large request is {code_name(code) if code >= 0 else 'empty'}"
        return r.error(ErrorCode.InvalidRequest)
    table = r.ctx.sessions
    session = table.get(session_id) if table is not None else None
    if session is not None and not session.accepts(code):
        # what the connection layer answers to such a request sent whole
        r.last_error = f"{code_name(code)} in the handshake phase (sent by CHUNK_SEND)"
        return r.error(ErrorCode.UnexpectedRequest)
    return r.dispatch(request, session_id)


def chunk_send(r: Responder, req: Request) -> bytes:
    """CHUNK_SEND -> CHUNK_SEND_ACK (with the response once the large request is whole)."""
    raw = req.raw
    if len(raw) < CHUNK_HEADER_SIZE:
        raise invalid(f"CHUNK_SEND is {len(raw)} bytes, needs {CHUNK_HEADER_SIZE}")
    st = _state(r)
    if st.pending is not None:  # pragma: no cover - the gate refuses it first
        raise unexpected("CHUNK_SEND while a large response is pending")
    handle = req.param2
    last = bool(req.param1 & LAST_CHUNK)
    seq = int.from_bytes(raw[4:8] if r.version >= 0x14 else raw[4:6], "little")
    size = int.from_bytes(raw[8:12], "little")
    version = r.version
    inc = st.incoming
    if inc is None:
        if len(raw) < _FIRST_OVERHEAD:
            raise invalid(f"first CHUNK_SEND is {len(raw)} bytes, needs {_FIRST_OVERHEAD}")
        problem, large = _first_chunk_problem(r, raw, seq, last, size)
        if problem is None:
            data = bytearray(raw[_FIRST_OVERHEAD : _FIRST_OVERHEAD + size])
            inc = IncomingRequest(handle, req.session_id, large, data, seq)
            st.incoming = inc
    else:
        problem = _next_chunk_problem(r, inc, raw, handle, seq, last, size)
        if problem is None:
            inc.data += raw[CHUNK_HEADER_SIZE : CHUNK_HEADER_SIZE + size]
            inc.seq = seq
    if problem is not None or inc is None:
        st.incoming = None
        r.last_error = f"CHUNK_SEND: {problem}"
        log.debug("CHUNK_SEND early error: %s", problem)
        return ChunkSendAck(
            version, handle, seq, early_error=True, response=r.error(ErrorCode.InvalidRequest)
        ).encode()
    if len(inc.data) < inc.size:
        return ChunkSendAck(version, handle, seq).encode()
    st.incoming = None
    st.requests_completed += 1
    request = bytes(inc.data)
    log.debug("CHUNK_SEND: %d-byte %s reassembled", len(request), code_name(request[1]))
    response = _process_large_request(r, request, req.session_id)
    return ChunkSendAck(version, handle, seq, response=response).encode()
