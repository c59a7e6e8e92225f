#!/usr/bin/env python3
"""Write the seed corpus of every fuzz target from real exchanges.

The project's requester runs every flow it has (VCA, and the families' flows as they
land) against an in-process responder at every SPDM version of the fuzz device; each
request is recorded and written in the input format of each target:

* ``responder/``: for each prefix stage, the selector byte of that stage and the requests
  that followed it (so the fuzzer starts from real deep states);
* ``frames/``: the requests as NORMAL platform-socket frames (DOE), plus TEST/SHUTDOWN;
* ``transport/``: the requests as DOE, MCTP and bare payloads, in sequence;
* ``profile/``: every shipped profile, as text and as the structured-mode seed;
* ``secured/``: records of a real session, when the session layer exists;
* ``storage/``: the requests as QEMU forwards Security Send/Receive (IF_SEND with its
  storage header, then IF_RECV), with DISCOVERY and PENDING_INFO;
* ``tcp/``: the requests as DSP0287 messages on the stream (and a Role-Inquiry), and in
  spdm-emu's platform frames after its TEST hello.

It also writes ``<out>/profile.dict``, a libFuzzer dictionary of profile keys and names.
Output is deterministic (file names are content hashes).

    python3 fuzz/make_corpus.py [--out fuzz/corpus]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib
import struct
import sys
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulator.codec.constants import RequestCode
from emulator.profiles import PROFILES_DIR
from emulator.requester import Requester, RequesterConfig
from emulator.server.platform import Frame, PlatformCommand, encode_frame
from emulator.transport import get_binding
from fuzz.harness import (
    STAGE_NAMES,
    RecordingChannel,
    Step,
    flows,
    fuzz_device,
    join_messages,
    new_responder,
    record_session,
    selector_of,
)

TARGETS = ("responder", "frames", "transport", "profile", "secured", "storage", "tcp")


async def record_flow(version: int) -> list[tuple[str, list[Step]]]:
    """Run every available stage at ``version``; the steps each stage sent."""
    channel = RecordingChannel(new_responder())
    requester = Requester(channel, RequesterConfig(version=version))
    out: list[tuple[str, list[Step]]] = []
    available = flows()
    for name in STAGE_NAMES[1:]:
        flow = available.get(name)
        if flow is None:
            continue
        start = len(channel.steps)
        try:
            await flow(requester)
        except Exception as exc:  # a stage this version/device cannot do ends the flow
            print(f"  {name}@{version:#x}: stopped ({exc})", file=sys.stderr)
            break
        out.append((name, channel.steps[start:]))
    return out


def _write(directory: Path, data: bytes) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)


def responder_inputs(version: int, stages: list[tuple[str, list[Step]]]) -> Iterable[bytes]:
    """From each stage boundary: the stage's selector + every later request."""
    all_steps = [s for _, steps in stages for s in steps]
    yield bytes((selector_of("none", version),)) + join_messages(
        (s.request, s.in_session) for s in all_steps
    )
    done = 0
    for name, steps in stages:
        done += len(steps)
        rest = all_steps[done:]
        yield bytes((selector_of(name, version),)) + join_messages(
            (s.request, s.in_session) for s in rest
        )


def in_session_requests(version: int) -> list[bytes]:
    """Requests a requester sends inside an established session (DSP0274 10.14-10.16)."""
    ctx = bytes(8 if version >= 0x13 else 0)
    return [
        bytes((version, RequestCode.HEARTBEAT, 0, 0)),
        bytes((version, RequestCode.GET_MEASUREMENTS, 0, 0)) + ctx,
        bytes((version, RequestCode.GET_MEASUREMENTS, 0, 0xFF)) + ctx,
        bytes((version, RequestCode.KEY_UPDATE, 1, 0x11)),  # UpdateKey
        bytes((version, RequestCode.KEY_UPDATE, 3, 0x12)),  # VerifyNewKey
        bytes((version, RequestCode.GET_DIGESTS, 0, 0)),
        bytes((version, RequestCode.GET_CERTIFICATE, 0, 0, 0, 0, 0, 4)),
        bytes((version, RequestCode.KEY_UPDATE, 2, 0x13)),  # UpdateAllKeys
        bytes((version, RequestCode.END_SESSION, 0, 0)),
    ]


def session_inputs(version: int) -> Iterable[bytes]:
    """Session-stage inputs: requests sent in the session, and some outside it."""
    if record_session(version) is None:
        return
    reqs = in_session_requests(version)
    for stage in ("session", "session_measurements"):
        selector = bytes((selector_of(stage, version),))
        yield selector + join_messages((r, True) for r in reqs)
        yield selector + join_messages([(reqs[0], True), (reqs[0], False), (reqs[-1], True)])
        yield selector + join_messages((r, True) for r in reqs[:3])


def make(out: Path) -> dict[str, int]:
    device = fuzz_device()
    requests: list[bytes] = []
    counts = dict.fromkeys(TARGETS, 0)
    for version in (int(v) for v in device.versions):
        stages = asyncio.run(record_flow(version))
        for data in responder_inputs(version, stages):
            _write(out / "responder", data)
            counts["responder"] += 1
        for data in session_inputs(version):
            _write(out / "responder", data)
            counts["responder"] += 1
        requests += [s.request for _, steps in stages for s in steps if not s.in_session]
    doe = get_binding("doe")
    # frames: byte 0 = 0 (QEMU's limit), byte 1 = cut seed
    stream = b"".join(
        encode_frame(Frame(PlatformCommand.NORMAL, 2, doe.encode(r))) for r in requests
    )
    extra = encode_frame(Frame(PlatformCommand.TEST, 2, b"Client Hello!\x00")) + encode_frame(
        Frame(PlatformCommand.SHUTDOWN, 2)
    )
    for cut_seed in (0, 1, 7):
        _write(out / "frames", bytes((0, cut_seed)) + extra + stream[:4096])
        counts["frames"] += 1
    for i in range(0, len(requests), 6):
        frames = (Frame(PlatformCommand.NORMAL, 2, doe.encode(r)) for r in requests[i : i + 6])
        _write(out / "frames", bytes((0, 3)) + b"".join(encode_frame(f) for f in frames))
        counts["frames"] += 1
    # transport: byte 0 = binding (doe, mctp, none), then payloads in sequence
    for index, name in enumerate(("doe", "mctp", "none")):
        binding = get_binding(name)
        for version in (int(v) for v in device.versions):
            stages = asyncio.run(record_flow(version))
            payloads = [
                binding.encode(s.request) for _, steps in stages for s in steps if not s.in_session
            ]
            _write(out / "transport", bytes((index,)) + join_messages(payloads))
            counts["transport"] += 1
    discovery = [struct.pack("<HBBI", 1, 0, 0, 3) + bytes((i, 0, 0, 0)) for i in range(4)]
    _write(out / "transport", b"\x00" + join_messages(discovery))
    counts["transport"] += 1
    # profile: text mode (byte 0 even) and structured mode (odd, byte 1 = which profile)
    shipped = sorted(PROFILES_DIR.glob("*.toml"))
    words: set[str] = set()
    for i, path in enumerate(shipped):
        text = path.read_bytes()
        _write(out / "profile", b"\x00" + text)
        _write(out / "profile", bytes((1, i)))
        counts["profile"] += 2
        words |= _profile_words(text.decode("utf-8", "replace"))
    _write_dict(out / "profile.dict", words)
    counts["secured"] += _secured_inputs(out / "secured")
    counts["storage"] += _storage_inputs(out / "storage", requests)
    counts["tcp"] += _tcp_inputs(out / "tcp", requests)
    return counts


def _storage_inputs(directory: Path, requests: list[bytes]) -> int:
    """Byte 0 = 0 (QEMU's limit), byte 1 = cut seed, then IF_SEND/IF_RECV frames."""
    storage = get_binding("storage")

    def frame(command: int, payload: bytes) -> bytes:
        return encode_frame(Frame(command, 4, payload))

    recv = struct.pack("<BHI", 0xE8, 0x14, 0x1200)
    pairs = [
        frame(PlatformCommand.STORAGE_IF_SEND, storage.encode_request(r))
        + frame(PlatformCommand.STORAGE_IF_RECV, recv)
        for r in requests
    ]
    info = frame(PlatformCommand.STORAGE_IF_RECV, struct.pack("<BHI", 0xE8, 0x04, 32)) + frame(
        PlatformCommand.STORAGE_IF_RECV, struct.pack("<BHI", 0xE8, 0x08, 12)
    )
    n = 0
    for i in range(0, len(pairs), 6):
        for cut_seed in (0, 5):
            _write(directory, bytes((0, cut_seed)) + info + b"".join(pairs[i : i + 6]))
            n += 1
    return n


def _tcp_inputs(directory: Path, requests: list[bytes]) -> int:
    """Byte 0 = 0 (0x1200), byte 1 = cut seed, then DSP0287 messages (or platform frames)."""
    tcp = get_binding("tcp")
    messages = [tcp.encode(r) for r in requests]
    hello = encode_frame(Frame(PlatformCommand.TEST, 3, b"Client Hello!\x00"))
    n = 0
    for i in range(0, len(messages), 6):
        chunk = messages[i : i + 6]
        _write(directory, bytes((0, 0)) + b"".join(chunk) + b"\x00\x00\x01\xbf")
        _write(
            directory,
            bytes((0, 3))
            + hello
            + b"".join(encode_frame(Frame(PlatformCommand.NORMAL, 3, m)) for m in chunk),
        )
        n += 2
    return n


def _profile_words(text: str) -> set[str]:
    import re

    return set(re.findall(r"[A-Za-z_][A-Za-z0-9_.-]*", text))


def _write_dict(path: Path, words: set[str]) -> None:
    from emulator.codec.constants import (
        AeadSuite,
        BaseAsymAlgo,
        BaseHashAlgo,
        DheGroup,
        MeasurementHashAlgo,
        ResponderCap,
    )

    enums = (ResponderCap, BaseAsymAlgo, BaseHashAlgo, MeasurementHashAlgo, DheGroup, AeadSuite)
    for enum in enums:
        words |= set(enum.__members__)
    words |= {"[", "]", "[[", "]]", "=", '"', "true", "false", "0x", "\\n"}
    lines = [f'"{w}"' for w in sorted(words) if '"' not in w and "\\" not in w]
    lines += ['"\\x22"', '"\\x5c"']
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# profile keys and names (generated by fuzz/make_corpus.py)\n"
    path.write_text(header + "\n".join(lines) + "\n")


def _secured_inputs(directory: Path) -> int:
    """Real DSP0277 records, once the session layer and its requester flow exist."""
    try:
        module = importlib.import_module("fuzz.fuzz_secured")
    except ModuleNotFoundError as exc:
        if exc.name != "fuzz.fuzz_secured":
            raise
        return 0
    n = 0
    for data in module.corpus_inputs():
        _write(directory, data)
        n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "corpus")
    args = parser.parse_args(argv)
    counts = make(args.out)
    for target, n in counts.items():
        print(f"{target:10} {n} inputs -> {args.out / target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
