"""Sans-I/O codec of the spdm-emu "platform socket" frame (spdm-emu ``command.h``, QEMU
``backends/spdm-socket.c``).

Every message, in either direction, is a 12-byte big-endian header (command u32,
transport type u32, payload size u32) followed by the payload.  The header is the only
framing: after a malformed header the stream cannot be resynchronised.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

from emulator.errors import FrameError

HEADER_SIZE = 12
#: QEMU's SPDM_SOCKET_MAX_MESSAGE_BUFFER_SIZE: the largest message it accepts.
DEFAULT_MAX_PAYLOAD = 0x1200
_HEADER = struct.Struct(">III")
#: an empty, never filled stand-in for a decoder's buffers until it needs them
_NONE = bytearray()
_U32_MAX = 0xFFFF_FFFF


class PlatformCommand(IntEnum):
    """Platform-socket commands (spdm-emu ``SOCKET_SPDM_COMMAND_*``, QEMU names for storage)."""

    NORMAL = 0x0001
    STORAGE_IF_SEND = 0x0002
    STORAGE_IF_RECV = 0x0003
    STORAGE_ACK_STATUS = 0x0004
    OOB_ENCAP_KEY_UPDATE = 0x8001
    OOB_ENCAP_ENDPOINT_INFO = 0x8002
    CONTINUE = 0xFFFD
    SHUTDOWN = 0xFFFE
    UNKNOWN = 0xFFFF
    TEST = 0xDEAD


def command_name(command: int) -> str:
    """``NORMAL`` for a known command, ``0x1234`` otherwise (for logs)."""
    try:
        return PlatformCommand(command).name
    except ValueError:
        return f"0x{command:04x}"


class Frame(NamedTuple):
    """One platform-socket message: command, transport type and payload (immutable; a
    named tuple: one is made per message in each direction)."""

    command: int
    transport: int
    payload: bytes = b""


def encode_frame(frame: Frame) -> bytes:
    """Serialise ``frame``: the 12-byte big-endian header followed by the payload."""
    for field, value in (("command", frame.command), ("transport", frame.transport)):
        if not 0 <= value <= _U32_MAX:
            raise FrameError(f"frame {field} {value} does not fit in a u32")
    if len(frame.payload) > _U32_MAX:
        raise FrameError(f"frame payload of {len(frame.payload)} bytes does not fit in a u32")
    return _HEADER.pack(frame.command, frame.transport, len(frame.payload)) + frame.payload


class FrameDecoder:
    """Incremental frame decoder: feed it bytes as they arrive, get whole frames back.

    The payload size is checked against ``max_payload`` as soon as the header is
    complete, before any payload byte is stored, so the decoder never holds more than
    ``HEADER_SIZE + max_payload`` bytes.  After an error the decoder is dead: the only
    framing is the header, so there is no way to find the next frame.
    """

    # one per connection: slots, not a dict
    __slots__ = ("_command", "_error", "_header", "_payload", "_size", "_transport", "max_payload")

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        if max_payload < 0:
            raise ValueError("max_payload must be >= 0")
        self.max_payload = max_payload
        # the incomplete frame's header and payload bytes, made on the first frame that
        # arrives in pieces (a server keeps a decoder per connection; most never need them)
        self._header: bytearray = _NONE
        self._command = 0
        self._transport = 0
        self._size: int | None = None
        self._payload: bytearray = _NONE
        self._error: FrameError | None = None

    @property
    def error(self) -> FrameError | None:
        """The error that killed the decoder, if any."""
        return self._error

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held (0 between frames)."""
        return len(self._header) + len(self._payload)

    @property
    def needed(self) -> int:
        """Bytes still missing to complete the current header, or the current payload."""
        if self._size is None:
            return HEADER_SIZE - len(self._header)
        return self._size - len(self._payload)

    def _too_large(self, command: int, transport: int, size: int) -> FrameError:
        return FrameError(
            f"platform frame payload size is {size} bytes (0x{size:x}), over the "
            f"limit of {self.max_payload} bytes (0x{self.max_payload:x}); command "
            f"{command_name(command)}, transport {transport}"
        )

    def feed(self, data: bytes | memoryview) -> list[Frame]:
        """Consume ``data``; return the frames it completed, in order.

        Raises :class:`FrameError` for a payload size over ``max_payload``.  If frames were
        completed earlier in the same ``data``, they are returned first, :attr:`error` is
        set, and the next call raises.
        """
        if self._error is not None:
            raise self._error
        frames: list[Frame] = []
        offset = 0
        end = len(data)
        if self._size is None and not self._header:
            # at a frame boundary: whole frames straight from ``data`` (one header unpack
            # and one payload copy each); what is left over goes the byte-counting way
            unpack = _HEADER.unpack_from
            while end - offset >= HEADER_SIZE:
                command, transport, size = unpack(data, offset)
                if size > self.max_payload:
                    self._error = self._too_large(command, transport, size)
                    if frames:
                        return frames
                    raise self._error
                start = offset + HEADER_SIZE
                if end - start < size:
                    break
                frames.append(Frame(command, transport, bytes(data[start : start + size])))
                offset = start + size
            if offset == end:
                return frames
        view = memoryview(data)
        if self._header is _NONE:
            self._header, self._payload = bytearray(), bytearray()
        while offset < end or (self._size == 0):
            if self._size is None:
                take = min(HEADER_SIZE - len(self._header), end - offset)
                self._header += view[offset : offset + take]
                offset += take
                if len(self._header) < HEADER_SIZE:
                    break
                self._command, self._transport, size = _HEADER.unpack(self._header)
                if size > self.max_payload:
                    self._error = self._too_large(self._command, self._transport, size)
                    self._header.clear()
                    if frames:
                        return frames
                    raise self._error
                self._size = size
                continue
            take = min(self._size - len(self._payload), end - offset)
            self._payload += view[offset : offset + take]
            offset += take
            if len(self._payload) < self._size:
                break
            frames.append(Frame(self._command, self._transport, bytes(self._payload)))
            self._header.clear()
            self._payload.clear()
            self._size = None
        return frames


class PlatformStreamCodec:
    """A connection's stream as platform-socket frames: :class:`FrameDecoder` in,
    :func:`encode_frame` out (the :class:`~emulator.transport.base.StreamCodec` of every
    binding that speaks the platform socket)."""

    __slots__ = ("decoder",)  # one per connection

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.decoder = FrameDecoder(max_payload)

    @property
    def error(self) -> FrameError | None:
        return self.decoder.error

    @property
    def pending(self) -> int:
        return self.decoder.pending

    @property
    def needed(self) -> int:
        return self.decoder.needed

    def feed(self, data: bytes) -> list[Frame | bytes]:
        """The frames ``data`` completed (FrameError as :meth:`FrameDecoder.feed`)."""
        return list(self.decoder.feed(data))

    def encode(self, frame: Frame) -> bytes:
        return encode_frame(frame)


__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "HEADER_SIZE",
    "Frame",
    "FrameDecoder",
    "PlatformCommand",
    "PlatformStreamCodec",
    "command_name",
    "encode_frame",
]
