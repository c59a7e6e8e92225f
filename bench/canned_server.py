#!/usr/bin/env python3
"""The floor of a Python platform-socket server: an asyncio.Protocol that answers every
frame with the same canned reply frame (no SPDM, no transport decoding, no logging).

It does what any asyncio server must do for one round trip (the event loop wakes up, one
``recv``, find the frame boundaries, one ``send``) and nothing else, so the emulator's
server CPU per GET_VERSION is compared with it (bench.py section ``floor``).

    python3 bench/canned_server.py --port 2399 --reply 00000001000000020000000c...
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import struct
import sys
from typing import cast

_HEADER = struct.Struct(">III")


class Canned(asyncio.Protocol):
    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's does not subclass it
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        offset = 0
        count = 0
        while len(buffer) - offset >= 12:
            size = _HEADER.unpack_from(buffer, offset)[2]
            if len(buffer) - offset - 12 < size:
                break
            offset += 12 + size
            count += 1
        self.buffer = buffer[offset:]
        if count and self.transport is not None:
            self.transport.write(self.reply * count)


async def serve(port: int, reply: bytes, use_uvloop: bool) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Canned(reply), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--reply", required=True, help="the reply frame, hex")
    p.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = p.parse_args()
    reply = bytes.fromhex(args.reply)
    if args.uvloop:
        import uvloop

        uvloop.run(serve(args.port, reply, True))
    else:
        asyncio.run(serve(args.port, reply, False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
