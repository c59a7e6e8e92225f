"""Large SPDM message transfer (DSP0274 1.2/1.3 "Large SPDM message transfer mechanism").

Layouts (little-endian; libspdm ``spdm_chunk_*`` structs, SPDM 1.2/1.3 forms)::

    CHUNK_SEND      SPDMVersion, 0x85, Param1 = attributes (bit 0 LastChunk), Param2 = Handle
                    ChunkSeqNo (2), Reserved (2), ChunkSize (4),
                    [LargeMessageSize (4)   only when ChunkSeqNo = 0], SPDMchunk (ChunkSize)
    CHUNK_SEND_ACK  SPDMVersion, 0x05, Param1 = attributes (bit 0 EarlyErrorDetected),
                    Param2 = Handle, ChunkSeqNo (2),
                    [ResponseToLargeRequest   after the last chunk, or the ERROR of an early
                                              error]
    CHUNK_GET       SPDMVersion, 0x86, Param1 = reserved, Param2 = Handle, ChunkSeqNo (2)
    CHUNK_RESPONSE  SPDMVersion, 0x06, Param1 = attributes (bit 0 LastChunk), Param2 = Handle
                    ChunkSeqNo (2), Reserved (2), ChunkSize (4),
                    [LargeMessageSize (4)   only when ChunkSeqNo = 0], ResponseChunk (ChunkSize)
    ERROR(LargeResponse)  SPDMVersion, 0x7F, 0x0F, 0x00, Handle (1)

SPDM 1.4 (libspdm ``spdm_chunk_*_14_t``) widens ChunkSeqNo to 4 bytes: in CHUNK_SEND and
CHUNK_RESPONSE it takes the place of ChunkSeqNo + Reserved (same 12-byte header), in
CHUNK_GET and CHUNK_SEND_ACK the short form grows from 6 to 8 bytes.

Decoders ignore trailing bytes (DOE padding) and raise :class:`CodecError` only.
"""

from __future__ import annotations

from dataclasses import dataclass

import construct as cs

from emulator.codec.constants import ErrorCode, RequestCode, ResponseCode
from emulator.codec.layout import Layout
from emulator.codec.messages import build_error
from emulator.errors import CodecError

#: CHUNK_SEND / CHUNK_RESPONSE fixed part (header, ChunkSeqNo, Reserved, ChunkSize)
CHUNK_HEADER_SIZE = 12
#: CHUNK_SEND_ACK fixed part (header, ChunkSeqNo)
CHUNK_SEND_ACK_HEADER_SIZE = 6
#: CHUNK_GET size
CHUNK_GET_SIZE = 6
#: the LargeMessageSize field of the first chunk
LARGE_MESSAGE_SIZE_FIELD = 4
#: CHUNK_SEND / CHUNK_RESPONSE Param1 bit 0
LAST_CHUNK = 0x01
#: CHUNK_SEND_ACK Param1 bit 0
EARLY_ERROR_DETECTED = 0x01
#: ChunkSeqNo is a 16-bit counter in SPDM 1.2/1.3
MAX_CHUNKS = 0x10000
#: ... and a 32-bit one from SPDM 1.4
MAX_CHUNKS_14 = 0x100000000


def short_chunk_size(version: int) -> int:
    """Size of CHUNK_GET / the CHUNK_SEND_ACK header: 6 bytes, 8 from SPDM 1.4."""
    return 8 if version >= 0x14 else 6


def max_chunks(version: int) -> int:
    """How many chunks one large message may have (ChunkSeqNo range) in ``version``."""
    return MAX_CHUNKS_14 if version >= 0x14 else MAX_CHUNKS


_ChunkHeader = Layout(
    "chunk header",
    cs.Struct(
        "version" / cs.Int8ul,
        "code" / cs.Int8ul,
        "param1" / cs.Int8ul,
        "handle" / cs.Int8ul,
        "seq" / cs.Int16ul,
        "reserved" / cs.Int16ul,
        "chunk_size" / cs.Int32ul,
    ),
)

_ShortChunk = Layout(
    "CHUNK_GET / CHUNK_SEND_ACK",
    cs.Struct(
        "version" / cs.Int8ul,
        "code" / cs.Int8ul,
        "param1" / cs.Int8ul,
        "handle" / cs.Int8ul,
        "seq" / cs.Int16ul,
    ),
)

_ShortChunk14 = Layout(
    "CHUNK_GET / CHUNK_SEND_ACK (1.4)",
    cs.Struct(
        "version" / cs.Int8ul,
        "code" / cs.Int8ul,
        "param1" / cs.Int8ul,
        "handle" / cs.Int8ul,
        "seq" / cs.Int32ul,
    ),
)


def _short_layout(data_or_version: bytes | int) -> Layout:
    version = data_or_version if isinstance(data_or_version, int) else data_or_version[0]
    return _ShortChunk14 if version >= 0x14 else _ShortChunk


def max_large_message(chunk_limit: int, version: int = 0x13) -> int:
    """The largest message ``max_chunks(version)`` chunks of ``chunk_limit``-byte messages
    carry (libspdm's max_chunk_data_transfer_size), capped at the u32 LargeMessageSize."""
    most = (chunk_limit - CHUNK_HEADER_SIZE) * max_chunks(version) - LARGE_MESSAGE_SIZE_FIELD
    return min(most, 0xFFFFFFFF)


@dataclass(frozen=True, slots=True)
class _Chunk:
    """Shared shape of CHUNK_SEND and CHUNK_RESPONSE."""

    version: int
    handle: int
    seq: int
    chunk: bytes
    last: bool = False
    #: LargeMessageSize (present only in chunk 0)
    large_message_size: int | None = None
    param1_extra: int = 0
    reserved: int = 0

    _CODE = 0

    def encode(self) -> bytes:
        if (self.seq == 0) != (self.large_message_size is not None):
            raise CodecError("LargeMessageSize must be present exactly in chunk 0")
        wide = self.version >= 0x14  # ChunkSeqNo u32 over the 1.2/1.3 seq + reserved
        head = _ChunkHeader.build(
            version=self.version,
            code=self._CODE,
            param1=(LAST_CHUNK if self.last else 0) | self.param1_extra,
            handle=self.handle,
            seq=self.seq & 0xFFFF if wide else self.seq,
            reserved=(self.seq >> 16) & 0xFFFF if wide else self.reserved,
            chunk_size=len(self.chunk),
        )
        size = b""
        if self.large_message_size is not None:
            if not 0 <= self.large_message_size <= 0xFFFFFFFF:
                raise CodecError(f"LargeMessageSize {self.large_message_size} is not a u32")
            size = self.large_message_size.to_bytes(4, "little")
        return head + size + self.chunk

    @classmethod
    def _decode_fields(cls, data: bytes) -> tuple[int, int, int, int, int, int | None, bytes]:
        h = _ChunkHeader.parse(data)
        if h.code != cls._CODE:
            raise CodecError(f"chunk message: code 0x{h.code:02X}, expected 0x{cls._CODE:02X}")
        seq, reserved = h.seq, h.reserved
        if h.version >= 0x14:
            seq, reserved = seq | (reserved << 16), 0
        offset = CHUNK_HEADER_SIZE
        large: int | None = None
        if seq == 0:
            if len(data) < offset + LARGE_MESSAGE_SIZE_FIELD:
                raise CodecError("chunk 0: no room for LargeMessageSize")
            large = int.from_bytes(data[offset : offset + 4], "little")
            offset += LARGE_MESSAGE_SIZE_FIELD
        if h.chunk_size > len(data) - offset:
            raise CodecError(
                f"ChunkSize {h.chunk_size} but only {len(data) - offset} bytes follow the header"
            )
        return (
            h.version,
            h.param1,
            h.handle,
            seq,
            reserved,
            large,
            bytes(data[offset : offset + h.chunk_size]),
        )


@dataclass(frozen=True, slots=True)
class ChunkSend(_Chunk):
    """CHUNK_SEND (request 0x85): one chunk of a large request."""

    _CODE = RequestCode.CHUNK_SEND

    @classmethod
    def decode(cls, data: bytes) -> ChunkSend:
        version, p1, handle, seq, reserved, large, chunk = cls._decode_fields(data)
        return cls(version, handle, seq, chunk, bool(p1 & LAST_CHUNK), large, p1 & ~1, reserved)


@dataclass(frozen=True, slots=True)
class ChunkResponse(_Chunk):
    """CHUNK_RESPONSE (response 0x06): one chunk of a large response."""

    _CODE = ResponseCode.CHUNK_RESPONSE

    @classmethod
    def decode(cls, data: bytes) -> ChunkResponse:
        version, p1, handle, seq, reserved, large, chunk = cls._decode_fields(data)
        return cls(version, handle, seq, chunk, bool(p1 & LAST_CHUNK), large, p1 & ~1, reserved)


@dataclass(frozen=True, slots=True)
class ChunkGet:
    """CHUNK_GET (request 0x86): ask for chunk ``seq`` of the large response ``handle``."""

    version: int
    handle: int
    seq: int
    param1: int = 0

    def encode(self) -> bytes:
        return _short_layout(self.version).build(
            version=self.version,
            code=RequestCode.CHUNK_GET,
            param1=self.param1,
            handle=self.handle,
            seq=self.seq,
        )

    @classmethod
    def decode(cls, data: bytes) -> ChunkGet:
        h = _short_layout(data).parse(data) if data else _ShortChunk.parse(data)
        if h.code != RequestCode.CHUNK_GET:
            raise CodecError(f"CHUNK_GET: code 0x{h.code:02X}")
        return cls(h.version, h.handle, h.seq, h.param1)


@dataclass(frozen=True, slots=True)
class ChunkSendAck:
    """CHUNK_SEND_ACK (response 0x05); ``response`` is ResponseToLargeRequest (may be empty)."""

    version: int
    handle: int
    seq: int
    early_error: bool = False
    response: bytes = b""
    param1_extra: int = 0

    def encode(self) -> bytes:
        return (
            _short_layout(self.version).build(
                version=self.version,
                code=ResponseCode.CHUNK_SEND_ACK,
                param1=(EARLY_ERROR_DETECTED if self.early_error else 0) | self.param1_extra,
                handle=self.handle,
                seq=self.seq,
            )
            + self.response
        )

    @classmethod
    def decode(cls, data: bytes) -> ChunkSendAck:
        h = _short_layout(data).parse(data) if data else _ShortChunk.parse(data)
        if h.code != ResponseCode.CHUNK_SEND_ACK:
            raise CodecError(f"CHUNK_SEND_ACK: code 0x{h.code:02X}")
        return cls(
            h.version,
            h.handle,
            h.seq,
            bool(h.param1 & EARLY_ERROR_DETECTED),
            bytes(data[short_chunk_size(h.version) :]),
            h.param1 & ~1,
        )


def build_large_response_error(version: int, handle: int) -> bytes:
    """ERROR(LargeResponse) with the chunk handle as extended error data."""
    return build_error(version, ErrorCode.LargeResponse, 0, bytes((handle & 0xFF,)))


def large_response_handle(error: bytes) -> int | None:
    """The handle of an ERROR(LargeResponse), or None if ``error`` is not one."""
    if len(error) < 4 or error[1] != ResponseCode.ERROR or error[2] != ErrorCode.LargeResponse:
        return None
    if len(error) < 5:
        raise CodecError("ERROR(LargeResponse) without the 1-byte Handle extended data")
    return error[4]
