#!/usr/bin/env python3
"""Fuzz the DSP0287 TCP binding: its stream codec and the connection behind it (atheris).

Input: byte 0 picks the size limit (0: 0x1200, else ``byte * 7``), byte 1 seeds how the
stream is cut into reads (0: one read), the rest is what a peer sends on the TCP
connection: DSP0287 messages back to back, or (third byte not 0x01) spdm-emu's platform
frames.  The stream goes through :class:`TcpStreamCodec`, and each NORMAL frame of
transport type 3 through ``TcpBinding.handle_command`` with one real
:class:`~emulator.connection.SpdmConnection` (what the server does).  Checked:

* the codec raises only :class:`~emulator.errors.FrameError`, and gives the same output
  however the stream is cut; in DSP0287 mode the same as an independent reading of the
  binding header (PayloadLength 0: a 4-byte message; 1: the end; else 2 + PayloadLength
  bytes; over the limit: ERROR_TOO_LARGE and skipped);
* ``binding.decode`` raises only :class:`~emulator.errors.TransportError`, and what it
  accepts re-encodes to exactly the same bytes;
* ``handle_command`` never raises; each reply is either a DSP0287 message of type SPDM
  (a well-formed SPDM response to the request, :func:`fuzz.harness.check_spdm_message`)
  or secured SPDM, or a header-only binding error: ERROR_CANNOT_OPERATE_AS_REQUESTER for a
  Role-Inquiry, ERROR_NOT_SUPPORTED for another type or binding version; a binding error
  from the peer gets no reply;
* closing the connection leaves the shared device clean.

    python3 fuzz/fuzz_tcp.py -runs=20000 fuzz/corpus/tcp
"""

from __future__ import annotations

import random
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzz.instrument import instrumented, warn_uninstrumented

with instrumented(__name__ == "__main__"):
    from emulator.connection import SpdmConnection
    from emulator.device.random import SeededRandom
    from emulator.errors import FrameError, TransportError
    from emulator.transport.platform import DEFAULT_MAX_PAYLOAD, Frame
    from emulator.transport.tcp import TcpBinding, TcpStreamCodec
    from fuzz.harness import (
        FUZZ_SEED,
        ContractViolation,
        FakeClock,
        check_device_clean,
        check_spdm_message,
        fuzz_device,
        log_to_sink,
    )

NORMAL = 0x0001
TCP = 3
TOO_LARGE = b"\x00\x00\x01\xc0"


def reference_dsp0287(stream: bytes, limit: int) -> tuple[list[Frame | bytes], bool]:
    """DSP0287 messages of ``stream`` by a direct reading of the header rule."""
    out: list[Frame | bytes] = []
    pos = 0
    while len(stream) - pos >= 4:
        (length,) = struct.unpack_from("<H", stream, pos)
        if length == 1:
            return out, True
        size = 4 if length == 0 else 2 + length
        if size > limit:
            out.append(TOO_LARGE)
            pos += size
            continue
        if len(stream) - pos < size:
            break
        out.append(Frame(NORMAL, TCP, stream[pos : pos + size]))
        pos += size
    return out, False


def decode(stream: bytes, limit: int, cuts: list[int]) -> tuple[list[Frame | bytes], bool, str]:
    codec = TcpStreamCodec(limit)
    out: list[Frame | bytes] = []
    pos = 0
    error = False
    for cut in [*cuts, len(stream)]:
        try:
            out += codec.feed(stream[pos:cut])
        except FrameError:
            error = True
            break
        pos = cut
        if codec.error is not None:
            error = True
            break
    return out, error, codec.mode or ""


def check_reply(request: bytes, reply: bytes, binding: TcpBinding, versions: list[int]) -> None:
    if len(reply) < 4 or reply[2] != 0x01:
        raise ContractViolation(f"reply {reply.hex()} has no DSP0287 binding header")
    kind = reply[3]
    if kind in (0x05, 0x06):
        message = binding.decode(reply)
        if not message.secured:
            spdm_request = request[4:] if request[3:4] == b"\x05" else b""
            check_spdm_message(message.message, versions, spdm_request)
        return
    if reply[:3] != b"\x00\x00\x01":
        raise ContractViolation(f"binding error {reply.hex()} is not header-only")
    if len(request) >= 4 and request[2] == 0x01 and request[3] == 0xBF:
        want = 0xC2
    elif len(request) >= 4 and (request[2] != 0x01 or request[3] < 0xC0):
        want = 0xC1
    else:
        raise ContractViolation(f"{reply.hex()} answers the peer's own error {request.hex()}")
    if kind != want:
        raise ContractViolation(f"binding error 0x{kind:02x} for {request[:4].hex()}")


def TestOneInput(data: bytes) -> None:
    if len(data) < 2:
        return
    limit = DEFAULT_MAX_PAYLOAD if data[0] == 0 else data[0] * 7
    stream = data[2:]
    cuts: list[int] = []
    if data[1]:
        rng = random.Random(data[1])
        pos = 0
        while pos < len(stream):
            pos += rng.randint(1, 40)
            cuts.append(min(pos, len(stream)))
    whole = decode(stream, limit, [])
    if decode(stream, limit, cuts) != whole:
        raise ContractViolation("the TCP stream codec's output depends on how reads are cut")
    units, _error, mode = whole
    if mode == "dsp0287" and (units, _error) != reference_dsp0287(stream, limit):
        raise ContractViolation("DSP0287 messages differ from the reference reading")
    binding = TcpBinding()
    device = fuzz_device()
    versions = [int(v) for v in device.versions]
    listeners = len(device.listeners)
    conn = SpdmConnection(
        device, binding, rng=SeededRandom(FUZZ_SEED, "fuzz-tcp"), clock=FakeClock()
    )
    for unit in units:
        if isinstance(unit, bytes) or unit.command != NORMAL or unit.transport != TCP:
            continue
        payload = unit.payload
        try:
            decoded = binding.decode(payload)
        except TransportError:
            decoded = None
        if decoded is not None and binding.encode(decoded.message, decoded.secured) != payload:
            raise ContractViolation(f"re-encoding changed {payload.hex()}")
        answer = binding.handle_command(NORMAL, payload, conn)
        replies = answer.reply.payloads if answer.reply is not None else []
        if answer.frames:
            raise ContractViolation("a NORMAL frame answered with extra frames")
        peer_error = len(payload) >= 4 and payload[2] == 0x01 and payload[3] >= 0xC0
        if peer_error and replies:
            raise ContractViolation(f"the peer's binding error {payload.hex()} was answered")
        for reply in replies:
            check_reply(payload, reply, binding, versions)
    conn.close()
    check_device_clean(device, listeners)


def main() -> None:
    import atheris

    log_to_sink()

    fuzz_device()
    warn_uninstrumented()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
