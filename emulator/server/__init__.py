"""The platform-socket server: frame codec (sans-I/O) and the asyncio server."""

from __future__ import annotations

from emulator.server.platform import (
    DEFAULT_MAX_PAYLOAD,
    HEADER_SIZE,
    Frame,
    FrameDecoder,
    PlatformCommand,
    encode_frame,
)
from emulator.server.server import (
    SERVER_HELLO,
    ConnectionFactory,
    ConnectionLike,
    SpdmServer,
)

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "HEADER_SIZE",
    "SERVER_HELLO",
    "ConnectionFactory",
    "ConnectionLike",
    "Frame",
    "FrameDecoder",
    "PlatformCommand",
    "SpdmServer",
    "encode_frame",
]
