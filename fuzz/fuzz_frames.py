#!/usr/bin/env python3
"""Fuzz the platform-socket frame decoder (atheris).

Input: byte 0 picks the payload limit (0: QEMU's 0x1200, else ``byte * 7``), byte 1 seeds
how the stream is cut into reads (0: one read), the rest is the byte stream.  Checked:

* only :class:`~emulator.errors.FrameError` escapes, and once the decoder has failed
  every later ``feed`` raises it again;
* the frames are the same however the stream is cut (chunked == one-shot == an
  independent parse of the 12-byte big-endian headers);
* re-encoding the frames gives back exactly the bytes they were decoded from;
* the decoder never holds more than a header plus ``max_payload`` bytes.

    python3 fuzz/fuzz_frames.py -runs=20000 fuzz/corpus/frames
"""

from __future__ import annotations

import random
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzz.instrument import instrumented, warn_uninstrumented

with instrumented(__name__ == "__main__"):
    from emulator.errors import FrameError
    from emulator.server.platform import (
        DEFAULT_MAX_PAYLOAD,
        HEADER_SIZE,
        Frame,
        FrameDecoder,
        encode_frame,
    )
    from fuzz.harness import ContractViolation, log_to_sink


def reference_parse(stream: bytes, max_payload: int) -> tuple[list[Frame], bool]:
    """Frames of ``stream`` by a direct reading of the header rule; True if an error."""
    frames: list[Frame] = []
    pos = 0
    while len(stream) - pos >= HEADER_SIZE:
        command, transport, size = struct.unpack_from(">III", stream, pos)
        if size > max_payload:
            return frames, True
        if len(stream) - pos - HEADER_SIZE < size:
            break
        start = pos + HEADER_SIZE
        frames.append(Frame(command, transport, stream[start : start + size]))
        pos = start + size
    return frames, False


def decode_chunked(
    stream: bytes, max_payload: int, cuts: list[int]
) -> tuple[list[Frame], FrameError | None]:
    decoder = FrameDecoder(max_payload)
    frames: list[Frame] = []
    error: FrameError | None = None
    pos = 0
    for cut in [*cuts, len(stream)]:
        chunk = stream[pos:cut]
        pos = cut
        try:
            frames += decoder.feed(chunk)
        except FrameError as exc:
            error = exc
            break
        if decoder.pending > HEADER_SIZE + max_payload:
            raise ContractViolation(f"decoder holds {decoder.pending} bytes")
        if decoder.error is not None:
            error = decoder.error
            break
    if error is not None:
        try:
            decoder.feed(b"\x00")
        except FrameError:
            pass
        else:
            raise ContractViolation("a failed decoder accepted more bytes")
    return frames, error


def TestOneInput(data: bytes) -> None:
    if len(data) < 2:
        return
    max_payload = DEFAULT_MAX_PAYLOAD if data[0] == 0 else data[0] * 7
    stream = data[2:]
    cuts: list[int] = []
    if data[1]:
        rng = random.Random(data[1])
        pos = 0
        while pos < len(stream):
            pos += rng.randint(1, 40)
            cuts.append(min(pos, len(stream)))
    want, want_error = reference_parse(stream, max_payload)
    whole, whole_error = decode_chunked(stream, max_payload, [])
    chunked, chunked_error = decode_chunked(stream, max_payload, cuts)
    if whole != want or chunked != want:
        raise ContractViolation(
            f"frames differ: reference {len(want)}, whole {len(whole)}, chunked {len(chunked)}"
        )
    if (whole_error is not None) != want_error or (chunked_error is not None) != want_error:
        raise ContractViolation(
            f"error differs: reference {want_error}, whole {whole_error}, chunked {chunked_error}"
        )
    encoded = b"".join(encode_frame(f) for f in want)
    if stream[: len(encoded)] != encoded:
        raise ContractViolation("re-encoded frames differ from the bytes they came from")


def main() -> None:
    import atheris

    log_to_sink()

    warn_uninstrumented()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
