#!/usr/bin/env python3
"""Fuzz the DSP0286 storage binding as QEMU's NVMe forwarding drives it (atheris).

Input: byte 0 picks the frame limit (0: QEMU's 0x1200, else ``byte * 7``), byte 1 seeds
how the stream is cut into reads (0: one read), the rest is the platform-socket byte
stream QEMU would send.  The stream goes through :class:`StorageStreamCodec`, and each
IF_SEND / IF_RECV frame of transport type 4 through ``StorageBinding.handle_command`` with
one real :class:`~emulator.connection.SpdmConnection` (what the server does).  Checked:

* the codec raises only :class:`~emulator.errors.FrameError`, gives the same frames and
  answers however the stream is cut, and the same as an independent reading of the
  12-byte headers (an oversized IF_SEND: status 0x4002 and its bytes skipped; any other
  oversized frame: the end);
* ``handle_command`` never raises; every answer starts with exactly one 2-byte status
  frame (ACK_STATUS, transport 4) whose value is the one an independent model of the
  rules (QEMU's header, the operation, the lengths, the pending response) predicts; an
  IF_SEND is answered by the status alone; a zero IF_RECV status is followed by exactly
  one data frame of 1..Allocation Length bytes (what QEMU accepts), a non-zero one by
  nothing;
* DISCOVERY data is the libspdm layout, PENDING_INFO reports what is pending, and the
  data of a plain MESSAGE is a well-formed SPDM response to the request
  (:func:`fuzz.harness.check_spdm_message`);
* closing the connection leaves the shared device clean.

    python3 fuzz/fuzz_storage.py -runs=20000 fuzz/corpus/storage
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
    from emulator.errors import FrameError
    from emulator.transport.platform import DEFAULT_MAX_PAYLOAD, Frame
    from emulator.transport.storage import StorageBinding, StorageStreamCodec
    from fuzz.harness import (
        FUZZ_SEED,
        ContractViolation,
        FakeClock,
        check_device_clean,
        check_spdm_message,
        fuzz_device,
        log_to_sink,
    )

IF_SEND, IF_RECV, ACK = 0x0002, 0x0003, 0x0004
NVME = 4
OK, INVALID = 0x0000, 0x4002
ACK_INVALID = struct.pack(">III", ACK, NVME, 2) + b"\x40\x02"
DISCOVERY = struct.pack("<HH", 32, 0x1000) + b"\x00\x00\x00\x00\x66" + bytes(23)


def reference_stream(stream: bytes, limit: int) -> tuple[list[Frame | bytes], bool]:
    """The codec's output by a direct reading of the rules; True if the stream ends in an
    error."""
    out: list[Frame | bytes] = []
    pos = 0
    while len(stream) - pos >= 12:
        command, transport, size = struct.unpack_from(">III", stream, pos)
        pos += 12
        if size > limit:
            if command != IF_SEND:
                return out, True
            out.append(ACK_INVALID)
            pos += size
            continue
        if len(stream) - pos < size:
            break
        out.append(Frame(command, transport, stream[pos : pos + size]))
        pos += size
    return out, False


def decode(stream: bytes, limit: int, cuts: list[int]) -> tuple[list[Frame | bytes], bool]:
    codec = StorageStreamCodec(limit)
    out: list[Frame | bytes] = []
    pos = 0
    for cut in [*cuts, len(stream)]:
        try:
            out += codec.feed(stream[pos:cut])
        except FrameError:
            return out, True
        pos = cut
        if codec.error is not None:
            return out, True
    return out, False


def expected_status(command: int, payload: bytes, pending: bytes | str | None) -> int:
    """The status the rules give (module docstring); ``pending``: the pending response's
    data, None when none, "dropped" when it carries nothing."""
    if command == IF_RECV and len(payload) != 7:
        return INVALID
    if len(payload) < 7:
        return INVALID
    secp, spsp0, spsp1 = payload[0], payload[1], payload[2]
    (length,) = struct.unpack_from("<I", payload, 3)
    op, connection = spsp0 >> 2, spsp0 & 3
    if secp != 0xE8 or spsp1 != 0 or connection != 0 or op not in (1, 2, 5, 6):
        return INVALID
    if command == IF_SEND:
        data = len(payload) - 7
        if length != data:
            return INVALID
        if op in (1, 2):
            return OK if data == 0 else INVALID
        if op == 5:
            return OK if data else INVALID
        return OK if data > 8 else INVALID
    if length == 0:
        return INVALID
    if op == 1:
        return OK if length >= 32 else INVALID
    if op == 2:
        return OK if length >= 12 else INVALID
    if pending is None or pending == "dropped":
        return INVALID
    return OK if len(pending) <= length else INVALID


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
    want, want_error = reference_stream(stream, limit)
    for got, error in (decode(stream, limit, []), decode(stream, limit, cuts)):
        if got != want or error != want_error:
            raise ContractViolation(
                f"storage codec: {len(got)} units (error {error}), reference "
                f"{len(want)} (error {want_error})"
            )
    binding = StorageBinding()
    device = fuzz_device()
    versions = [int(v) for v in device.versions]
    listeners = len(device.listeners)
    conn = SpdmConnection(
        device, binding, rng=SeededRandom(FUZZ_SEED, "fuzz-storage"), clock=FakeClock()
    )
    request, secured = b"", False
    for unit in want:
        if isinstance(unit, bytes) or unit.transport != NVME:
            continue
        if unit.command not in (IF_SEND, IF_RECV):
            continue
        kept = conn.peek()
        pending: bytes | str | None = None
        if kept is not None:
            pending = kept.payloads[0] if kept.payloads else "dropped"
        want_status = expected_status(unit.command, unit.payload, pending)
        answer = binding.handle_command(unit.command, unit.payload, conn)
        if len(answer.frames) != 1:
            raise ContractViolation(f"{len(answer.frames)} status frames for one command")
        status_frame = answer.frames[0]
        if (status_frame.command, status_frame.transport) != (ACK, NVME) or len(
            status_frame.payload
        ) != 2:
            raise ContractViolation(f"not a 2-byte ACK_STATUS: {status_frame}")
        status = int.from_bytes(status_frame.payload, "big")
        if status != want_status:
            raise ContractViolation(
                f"status 0x{status:04x}, the rules say 0x{want_status:04x}\n"
                f"  command {unit.command} payload {unit.payload[:40].hex()}"
            )
        if unit.command == IF_SEND:
            if answer.reply is not None:
                raise ContractViolation("IF_SEND answered with data")
            if status == OK and unit.payload[1] >> 2 in (5, 6):
                request, secured = unit.payload[7:], unit.payload[1] >> 2 == 6
            continue
        if status != OK:
            if answer.reply is not None:
                raise ContractViolation("a non-zero IF_RECV status followed by data")
            continue
        if answer.reply is None or len(answer.reply.payloads) != 1:
            raise ContractViolation("a zero IF_RECV status without exactly one data frame")
        out = answer.reply.payloads[0]
        (allocation,) = struct.unpack_from("<I", unit.payload, 3)
        if not 0 < len(out) <= allocation:
            raise ContractViolation(f"{len(out)} bytes of data for allocation {allocation}")
        op = unit.payload[1] >> 2
        if op == 1 and out != DISCOVERY:
            raise ContractViolation(f"DISCOVERY data {out.hex()}")
        if op == 2:
            flag, size = struct.unpack_from("<II", out, 4)
            want_flag = (1, len(pending)) if isinstance(pending, bytes) and pending else (0, 0)
            if out[:4] != struct.pack("<HH", 12, 0x1000) or (flag, size) != want_flag:
                raise ContractViolation(f"PENDING_INFO data {out.hex()} (pending {pending!r})")
        if op in (5, 6) and not secured:  # the response to a plain MESSAGE
            check_spdm_message(out, versions, request)
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
