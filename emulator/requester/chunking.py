"""Large SPDM message transfer, requester side (DSP0274 1.2+ "Large SPDM message transfer
mechanism"), checked like libspdm's requester (``libspdm_req_send_receive.c``
``libspdm_handle_large_request``, ``libspdm_req_handle_error_response.c``
``libspdm_handle_error_large_response``) and a little stricter.

:meth:`Requester.send` uses it transparently once SPDM 1.2+ with CHUNK_CAP on both sides
is negotiated: an ERROR(LargeResponse) is followed by CHUNK_GETs and the reassembled
response is returned; a request over ``min(responder DataTransferSize, own
DataTransferSize)`` goes out by CHUNK_SEND (:meth:`Requester.send_large` forces it).
:func:`session_send` does the same inside a secure session.

Checks on every CHUNK_RESPONSE: version, code, Handle, ChunkSeqNo in order, the message
not over our DataTransferSize, chunk 0 with LargeMessageSize (> MinDataTransferSize, not
over our MaxSPDMmsgSize) and at least 42 bytes, ChunkSize within the message and the
large message, non-final chunks of at least MinDataTransferSize, LastChunk set exactly on
the chunk that completes the message.  On every CHUNK_SEND_ACK: version, code, Handle,
ChunkSeqNo echoed, no ResponseToLargeRequest before the last chunk, one after it;
EarlyErrorDetected raises :class:`ChunkSendEarlyError` with the embedded ERROR.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from emulator.codec.chunking import (
    CHUNK_HEADER_SIZE,
    LARGE_MESSAGE_SIZE_FIELD,
    ChunkGet,
    ChunkResponse,
    ChunkSend,
    ChunkSendAck,
    large_response_handle,
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
from emulator.errors import CodecError, RequesterError
from emulator.requester.errors import SpdmErrorReply

if TYPE_CHECKING:
    from emulator.requester.requester import Requester
    from emulator.requester.session import RequesterSession

#: sends one SPDM message and returns the response bytes as they came (ERROR included)
RawSend = Callable[[bytes], Awaitable[bytes]]

_FIRST_OVERHEAD = CHUNK_HEADER_SIZE + LARGE_MESSAGE_SIZE_FIELD
#: requests that are never chunked (DSP0274; libspdm_send_spdm_request)
_NEVER_CHUNKED = {RequestCode.GET_VERSION, RequestCode.GET_CAPABILITIES}


class ChunkSendEarlyError(SpdmErrorReply):
    """CHUNK_SEND_ACK with EarlyErrorDetected: ``response`` is the embedded ERROR."""


@dataclass
class ChunkTransfer:
    """One chunked transfer as it went over the wire (for tests and traces)."""

    kind: str  # "get" (large response) or "send" (large request)
    handle: int
    #: the large request (CHUNK_SEND transfers)
    request: bytes = b""
    #: the response: reassembled from CHUNK_RESPONSEs, or the last CHUNK_SEND_ACK's
    response: bytes = b""
    #: every (chunk message, answer) pair on the wire
    exchanges: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: the Handle of the ERROR(LargeResponse) the response was read with, if any
    large_response_handle: int | None = None


@dataclass
class ChunkingState:
    """Per-requester chunking state (``Requester.chunking_state``)."""

    #: the Handle of the next CHUNK_SEND transfer (libspdm starts at 0, +1 per transfer)
    next_send_handle: int = 0
    transfers: list[ChunkTransfer] = field(default_factory=list)


def state(req: Requester) -> ChunkingState:
    """The requester's chunking state (made on first use)."""
    if req.chunking_state is None:
        req.chunking_state = ChunkingState()
    return req.chunking_state


def negotiated(req: Requester) -> bool:
    """SPDM 1.2+ and CHUNK_CAP on both sides."""
    return (
        req.version >= 0x12
        and bool(req.config.flags & RequesterCap.CHUNK_CAP)
        and bool(req.neg.rsp_flags & ResponderCap.CHUNK_CAP)
    )


def transfer_limit(req: Requester) -> int:
    """The largest message that goes unchunked: min(responder's and own DataTransferSize)."""
    sizes = [req.config.data_transfer_size]
    if req.neg.rsp_data_transfer_size:
        sizes.append(req.neg.rsp_data_transfer_size)
    return min(sizes)


def needs_chunk_send(req: Requester, request: bytes) -> bool:
    """Whether :meth:`Requester.send` sends ``request`` by CHUNK_SEND."""
    return (
        negotiated(req)
        and len(request) > transfer_limit(req)
        and len(request) >= 2
        and request[1] not in _NEVER_CHUNKED
    )


def is_large_response(req: Requester, response: bytes) -> bool:
    """ERROR(LargeResponse) on a connection where chunking was negotiated."""
    return (
        negotiated(req)
        and len(response) >= 4
        and response[1] == ResponseCode.ERROR
        and response[2] == ErrorCode.LargeResponse
    )


def _fail(what: str, problem: str) -> RequesterError:
    return RequesterError(f"{what}: {problem}")


def _check_padding(what: str, extra: bytes) -> None:
    if extra and (len(extra) > 3 or any(extra)):
        raise _fail(what, f"{len(extra)} unexpected bytes after the message")


# --- large responses (CHUNK_GET) ----------------------------------------------------------


async def fetch_large_response(
    send: RawSend,
    error: bytes,
    *,
    version: int,
    data_transfer_size: int,
    max_spdm_msg_size: int,
    after_chunk_send: bool = False,
    transfer: ChunkTransfer | None = None,
) -> bytes:
    """Read the large response announced by ``error`` (ERROR(LargeResponse)) with CHUNK_GET.

    ``data_transfer_size``/``max_spdm_msg_size`` are this requester's own (what it told
    the responder).  Returns the reassembled response; raises :class:`SpdmErrorReply` for
    an ERROR to CHUNK_GET and :class:`RequesterError` for anything malformed.
    """
    what = "CHUNK_RESPONSE"
    try:
        handle = large_response_handle(error)
    except CodecError as exc:
        raise _fail("ERROR(LargeResponse)", str(exc)) from None
    if handle is None:
        raise _fail("ERROR(LargeResponse)", "not an ERROR(LargeResponse)")
    if error[0] != version:
        raise _fail("ERROR(LargeResponse)", f"version byte 0x{error[0]:02X}")
    _check_padding("ERROR(LargeResponse)", error[5:])
    if transfer is not None:
        transfer.large_response_handle = handle
        if transfer.kind == "get":
            transfer.handle = handle
    data = bytearray()
    large = 0
    seq = 0
    max_large = max_large_message(data_transfer_size, version)
    wrap = max_chunks(version) - 1  # ChunkSeqNo: 16 bits, 32 from SPDM 1.4
    while True:
        if seq and seq & wrap == 0:
            raise _fail(what, "ChunkSeqNo would wrap around")
        request = ChunkGet(version, handle, seq).encode()
        response = await send(request)
        if transfer is not None:
            transfer.exchanges.append((request, response))
        if len(response) < 4:
            raise _fail(what, f"{len(response)}-byte response to CHUNK_GET")
        if response[1] == ResponseCode.ERROR:
            raise SpdmErrorReply(RequestCode.CHUNK_GET, response)
        if response[0] != version:
            raise _fail(what, f"version byte 0x{response[0]:02X}, expected 0x{version:02X}")
        if response[1] != ResponseCode.CHUNK_RESPONSE:
            raise _fail(what, f"response code {code_name(response[1])} to CHUNK_GET")
        try:
            msg = ChunkResponse.decode(response)
        except CodecError as exc:
            raise _fail(what, str(exc)) from None
        if msg.handle != handle:
            raise _fail(what, f"Handle {msg.handle}, expected {handle}")
        if msg.seq != seq:
            raise _fail(what, f"ChunkSeqNo {msg.seq}, expected {seq}")
        # the message's own size: a transport may pad it (DOE: to whole DWORDs)
        end = (_FIRST_OVERHEAD if seq == 0 else CHUNK_HEADER_SIZE) + len(msg.chunk)
        _check_padding(what, response[end:])
        if end > data_transfer_size:
            raise _fail(what, f"{end} bytes, over our DataTransferSize {data_transfer_size}")
        size = len(msg.chunk)
        if seq == 0:
            assert msg.large_message_size is not None
            large = msg.large_message_size
            if end < MIN_DATA_TRANSFER_SIZE_V12:
                raise _fail(what, f"chunk 0 is {end} bytes, under 42")
            if size < MIN_DATA_TRANSFER_SIZE_V12 - _FIRST_OVERHEAD:
                raise _fail(what, f"chunk 0 ChunkSize {size} is under 26")
            if size > large:
                raise _fail(what, f"ChunkSize {size} over LargeMessageSize {large}")
            if large > max_spdm_msg_size:
                raise _fail(
                    what, f"LargeMessageSize {large} over our MaxSPDMmsgSize {max_spdm_msg_size}"
                )
            if large > max_large:
                raise _fail(what, f"LargeMessageSize {large} needs more than {wrap + 1} chunks")
            floor = MIN_DATA_TRANSFER_SIZE_V12 - (
                short_chunk_size(version) if after_chunk_send else 0
            )
            if large <= floor:
                raise _fail(what, f"LargeMessageSize {large} is not over {floor}")
        elif size + len(data) > large:
            raise _fail(what, f"ChunkSize {size} overruns LargeMessageSize {large}")
        data += msg.chunk
        complete = len(data) == large
        if msg.last != complete:
            raise _fail(
                what,
                f"LastChunk {'set' if msg.last else 'clear'} with {len(data)} of {large} bytes",
            )
        if not complete:
            if end < MIN_DATA_TRANSFER_SIZE_V12:
                raise _fail(what, f"non-final chunk of {end} bytes, under 42")
            if seq and size < MIN_DATA_TRANSFER_SIZE_V12 - CHUNK_HEADER_SIZE:
                raise _fail(what, f"non-final ChunkSize {size} is under 30")
        seq += 1
        if complete:
            break
    message = bytes(data)
    if transfer is not None:
        transfer.response = message
    return message


# --- large requests (CHUNK_SEND) ----------------------------------------------------------


async def send_large_request(
    send: RawSend,
    request: bytes,
    *,
    version: int,
    handle: int,
    chunk_limit: int,
    data_transfer_size: int,
    max_spdm_msg_size: int,
    transfer: ChunkTransfer | None = None,
) -> bytes:
    """Send ``request`` in CHUNK_SENDs of at most ``chunk_limit`` bytes; return the
    response to it (from the last CHUNK_SEND_ACK, or read by CHUNK_GET after an
    ERROR(LargeResponse)).  The response may be an ERROR (the large request's answer)."""
    what = "CHUNK_SEND_ACK"
    if chunk_limit < MIN_DATA_TRANSFER_SIZE_V12:
        raise RequesterError(f"CHUNK_SEND: transfer size {chunk_limit} is under 42")
    if len(request) > max_large_message(chunk_limit, version):
        raise RequesterError(
            f"CHUNK_SEND: a {len(request)}-byte request needs > {max_chunks(version)} chunks"
        )
    if transfer is not None:
        transfer.request = request
    sent = 0
    seq = 0
    while sent < len(request):
        room = chunk_limit - (_FIRST_OVERHEAD if seq == 0 else CHUNK_HEADER_SIZE)
        if seq == 0:
            # LastChunk is not allowed in chunk 0: a (forced) request that would fit in
            # it leaves its last byte for chunk 1
            room = min(room, len(request) - 1)
        chunk = request[sent : sent + room]
        sent += len(chunk)
        last = sent == len(request)
        message = ChunkSend(
            version=version,
            handle=handle,
            seq=seq,
            chunk=chunk,
            last=last,
            large_message_size=len(request) if seq == 0 else None,
        ).encode()
        response = await send(message)
        if transfer is not None:
            transfer.exchanges.append((message, response))
        if len(response) < 4:
            raise _fail(what, f"{len(response)}-byte response to CHUNK_SEND")
        if response[0] != version:
            raise _fail(what, f"version byte 0x{response[0]:02X}, expected 0x{version:02X}")
        if response[1] == ResponseCode.ERROR:
            if response[2] != ErrorCode.LargeResponse:
                raise SpdmErrorReply(RequestCode.CHUNK_SEND, response)
            if not last:
                raise _fail(what, "ERROR(LargeResponse) before the last chunk was sent")
            # the response to the large request is itself large: only it is chunked
            return await fetch_large_response(
                send,
                response,
                version=version,
                data_transfer_size=data_transfer_size,
                max_spdm_msg_size=max_spdm_msg_size,
                after_chunk_send=True,
                transfer=transfer,
            )
        if response[1] != ResponseCode.CHUNK_SEND_ACK:
            raise _fail(what, f"response code {code_name(response[1])} to CHUNK_SEND")
        try:
            ack = ChunkSendAck.decode(response)
        except CodecError as exc:
            raise _fail(what, str(exc)) from None
        if ack.early_error:
            embedded = ack.response
            if len(embedded) < 4 or embedded[1] != ResponseCode.ERROR or embedded[0] != version:
                raise _fail(what, f"EarlyErrorDetected without an ERROR ({embedded[:4].hex()})")
            raise ChunkSendEarlyError(RequestCode.CHUNK_SEND, embedded)
        if ack.handle != handle:
            raise _fail(what, f"Handle {ack.handle}, expected {handle}")
        if ack.seq != seq:
            raise _fail(what, f"ChunkSeqNo {ack.seq}, expected {seq}")
        seq += 1
        if not last:
            _check_padding(f"{what} {seq - 1}", ack.response)
            continue
        if len(ack.response) < 4:
            raise _fail(what, "the last CHUNK_SEND_ACK carries no ResponseToLargeRequest")
        inner = ack.response
        if large_response_handle(inner) is not None:
            return await fetch_large_response(
                send,
                inner,
                version=version,
                data_transfer_size=data_transfer_size,
                max_spdm_msg_size=max_spdm_msg_size,
                after_chunk_send=True,
                transfer=transfer,
            )
        if transfer is not None:
            transfer.response = inner
        return inner
    raise RequesterError("CHUNK_SEND: empty request")  # pragma: no cover


# --- Requester / session integration ------------------------------------------------------


def _raw_send(req: Requester) -> RawSend:
    async def send(message: bytes) -> bytes:
        reply = await req.channel.exchange(message)
        return reply.message

    return send


async def get_large(req: Requester, error: bytes, send: RawSend | None = None) -> bytes:
    """Follow an ERROR(LargeResponse) with CHUNK_GETs (what :meth:`Requester.send` does)."""
    transfer = ChunkTransfer("get", -1)
    state(req).transfers.append(transfer)
    return await fetch_large_response(
        send or _raw_send(req),
        error,
        version=req.version,
        data_transfer_size=req.config.data_transfer_size,
        max_spdm_msg_size=req.config.max_spdm_msg_size,
        transfer=transfer,
    )


async def send_large(req: Requester, request: bytes, send: RawSend | None = None) -> bytes:
    """Send ``request`` by CHUNK_SEND whatever its size; return the response (may be an
    ERROR; :meth:`Requester.send_large` raises for it)."""
    if not negotiated(req):
        raise RequesterError("CHUNK_SEND needs SPDM 1.2+ and CHUNK_CAP on both sides")
    if len(request) < 4:
        raise RequesterError(f"a {len(request)}-byte request has no SPDM header")
    if len(request) > req.neg.rsp_max_spdm_msg_size:
        raise RequesterError(
            f"a {len(request)}-byte request is over the responder's MaxSPDMmsgSize "
            f"{req.neg.rsp_max_spdm_msg_size}"
        )
    st = state(req)
    handle = st.next_send_handle
    st.next_send_handle = (handle + 1) & 0xFF
    transfer = ChunkTransfer("send", handle)
    st.transfers.append(transfer)
    return await send_large_request(
        send or _raw_send(req),
        request,
        version=req.version,
        handle=handle,
        chunk_limit=transfer_limit(req),
        data_transfer_size=req.config.data_transfer_size,
        max_spdm_msg_size=req.config.max_spdm_msg_size,
        transfer=transfer,
    )


async def session_send(s: RequesterSession, request: bytes, *, allow_error: bool = False) -> bytes:
    """:meth:`RequesterSession.send` with chunking in both directions (in the session)."""
    req = s.requester

    async def send(message: bytes) -> bytes:
        return await s.send(message, allow_error=True)

    if needs_chunk_send(req, request):
        response = await send_large(req, request, send)
    else:
        response = await send(request)
        if is_large_response(req, response):
            response = await get_large(req, response, send)
    if len(response) < 4:
        raise RequesterError(f"{code_name(request[1])}: {len(response)}-byte response")
    if response[1] == ResponseCode.ERROR and not allow_error:
        raise SpdmErrorReply(request[1], response)
    return response
