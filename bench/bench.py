#!/usr/bin/env python3
"""Benchmarks of the emulator: figures and ratios, printed (not a test; it asserts nothing).

Sections (``--only``; bench/README.md has the figures and how they were measured):

* ``core``      CPU of the sans-I/O responder per request, every family of the dispatch table.
* ``floor``     (a) server CPU per GET_VERSION round trip: ``serve`` against a canned-reply
                asyncio.Protocol server (the Python socket floor), as a ratio.
* ``handshake`` (b) the responder CPU of a full handshake (VCA .. END_SESSION, 14 requests)
                against its crypto floor, in process and over a socket, as ratios, beside
                the bare responder's (bench/bare.py: the least Python that answers it); and
                the same handshake replayed on fresh connections of a seeded device with
                nothing between two requests (the responder's own cost per request, hot).
* ``load``      (c) throughput and latency percentiles at 1, 8, 64 and 256 connections.
* ``memory``    (d) server memory per idle connection, connected and after VCA.
* ``fuzz``      (e) executions per second of every fuzz target, instrumented, from the seed
                corpus.
* ``flood``     (f) another connection's latency while one peer pipelines 100,000 frames
                (reading its replies, and not reading them).
* ``socket``    SocketClient round trips (GET_VERSION, VCA) against ``serve``.
* ``c``         the ``socket`` figures against DMTF's C spdm_responder_emu (``--c-responder``).

Every ratio is measured in one run: the two sides alternate, round after round, and the
medians are compared.  Server CPU is the server process's own (``/proc/PID/schedstat``),
so other load on the machine does not inflate it; in-process figures are thread CPU time.
``--baseline REV`` runs that revision's server (and fuzz targets) beside this tree's, for
the "against today's" ratios; ``--json`` prints the results as one JSON document.

    python3 bench/bench.py                      # every section but c
    python3 bench/bench.py --only floor,handshake --json
    python3 bench/bench.py --baseline 7d068f9   # ratios against that revision
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import procs  # noqa: E402

from emulator.codec.constants import (  # noqa: E402
    AeadSuite,
    AlgType,
    BaseAsymAlgo,
    BaseHashAlgo,
    DheGroup,
    KemAlgo,
    KeySchedule,
    MeasurementSpec,
    OtherParams,
    PqcAsymAlgo,
    RequestCode,
    RequesterCap,
    ResponseCode,
    code_name,
)
from emulator.codec.messages import (  # noqa: E402
    AlgStruct,
    CapabilitiesMsg,
    NegotiateAlgorithmsMsg,
)
from emulator.device.model import Device  # noqa: E402
from emulator.profiles import load_profile  # noqa: E402
from emulator.server.platform import Frame, PlatformCommand, encode_frame  # noqa: E402

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None

# ---------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------


@dataclass
class Section:
    """One section's output: text lines and the same figures for ``--json``."""

    lines: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def say(self, line: str) -> None:
        self.lines.append(line)
        print(line, file=OUT, flush=True)


#: where text goes (stderr with --json, so that stdout is the JSON document)
OUT = sys.stdout


@dataclass
class Stats:
    """Samples in nanoseconds."""

    samples: list[int] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p95(self) -> float:
        ordered = sorted(self.samples)
        return float(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))])

    def line(self, label: str, extra: str = "") -> str:
        return (
            f"  {label:56} median {fmt_ns(self.median):>10}  p95 {fmt_ns(self.p95):>10}"
            f"  n={len(self.samples):<6}{extra}"
        )

    def as_dict(self) -> dict[str, float]:
        return {"median_us": self.median / 1e3, "p95_us": self.p95 / 1e3, "n": len(self.samples)}


def fmt_ns(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e3:.1f} us"


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def frame(payload: bytes, command: int = PlatformCommand.NORMAL, transport: int = 2) -> bytes:
    return encode_frame(Frame(int(command), transport, payload))


# ---------------------------------------------------------------------------------------
# requests (hand-built from the DSP0274 tables, independent of the requester package)
# ---------------------------------------------------------------------------------------

REQ_FLAGS = (
    RequesterCap.CERT_CAP
    | RequesterCap.CHAL_CAP
    | RequesterCap.ENCRYPT_CAP
    | RequesterCap.MAC_CAP
    | RequesterCap.KEY_EX_CAP
)


class Requests:
    """The requests of one benchmark run, for one SPDM version."""

    def __init__(self, version: int) -> None:
        self.version = version
        from cryptography.hazmat.primitives.asymmetric import ec, mlkem

        nums = ec.generate_private_key(ec.SECP384R1()).public_key().public_numbers()
        self.dhe_public = nums.x.to_bytes(48, "big") + nums.y.to_bytes(48, "big")
        if version >= 0x14:  # SPDM 1.4: offer ML-DSA-65 and send an ML-KEM-768 key
            self.dhe_public = mlkem.MLKEM768PrivateKey.generate().public_key().public_bytes_raw()

    def get_version(self) -> bytes:
        return bytes((0x10, RequestCode.GET_VERSION, 0, 0))

    def get_capabilities(self) -> bytes:
        return CapabilitiesMsg(
            self.version,
            RequestCode.GET_CAPABILITIES,
            ct_exponent=12,
            flags=int(REQ_FLAGS),
            data_transfer_size=4608,
            max_spdm_msg_size=4608,
        ).encode()

    def negotiate_algorithms(self) -> bytes:
        structs = [
            AlgStruct(AlgType.DHE, int(DheGroup.SECP_384_R1)),
            AlgStruct(AlgType.AEAD, int(AeadSuite.AES_256_GCM)),
            AlgStruct(AlgType.REQ_BASE_ASYM_ALG, int(BaseAsymAlgo.ECDSA_P384)),
            AlgStruct(AlgType.KEY_SCHEDULE, int(KeySchedule.SPDM)),
        ]
        pqc = 0
        if self.version >= 0x14:
            pqc = int(PqcAsymAlgo.ML_DSA_65)
            structs += [
                AlgStruct(AlgType.REQ_PQC_ASYM_ALG, pqc),
                AlgStruct(AlgType.KEM, int(KemAlgo.ML_KEM_768)),
            ]
        return NegotiateAlgorithmsMsg(
            self.version,
            measurement_spec=int(MeasurementSpec.DMTF),
            other_params=int(OtherParams.OPAQUE_DATA_FMT_1) if self.version >= 0x12 else 0,
            base_asym=int(BaseAsymAlgo.ECDSA_P384),
            base_hash=int(BaseHashAlgo.SHA_384),
            alg_structs=structs if self.version >= 0x11 else [],
            pqc_asym=pqc,
        ).encode()

    def get_digests(self) -> bytes:
        return bytes((self.version, RequestCode.GET_DIGESTS, 0, 0))

    def get_certificate(self, offset: int = 0, length: int = 0x400) -> bytes:
        return bytes((self.version, RequestCode.GET_CERTIFICATE, 0, 0)) + struct.pack(
            "<HH", offset, length
        )

    def _context(self) -> bytes:
        return bytes(8) if self.version >= 0x13 else b""  # 1.3 RequesterContext

    def challenge(self) -> bytes:
        return (
            bytes((self.version, RequestCode.CHALLENGE, 0, 0)) + bytes(range(32)) + self._context()
        )

    def get_measurements(self, signed: bool, operation: int) -> bytes:
        head = bytes((self.version, RequestCode.GET_MEASUREMENTS, 1 if signed else 0, operation))
        if not signed:
            return head + self._context()
        slot = b"\x00" if self.version >= 0x11 else b""
        return head + bytes(range(32)) + slot + self._context()

    def key_exchange(self) -> bytes:
        return (
            bytes((self.version, RequestCode.KEY_EXCHANGE, 0, 0))
            + struct.pack("<HBB", 0xFFFF, 0, 0)
            + bytes(range(32))
            + self.dhe_public
            + struct.pack("<H", 0)
        )


# ---------------------------------------------------------------------------------------
# 1. responder core, in process
# ---------------------------------------------------------------------------------------


class StepError(Exception):
    pass


def _check(response: bytes, expect: int, what: str, responder: object) -> None:
    if len(response) < 2 or response[1] != expect:
        reason = getattr(responder, "last_error", "")
        got = code_name(response[1]) if len(response) > 1 else "nothing"
        detail = f" ({response[2]:#04x}: {reason})" if got == "ERROR" and len(response) > 2 else ""
        raise StepError(f"{what}: got {got}{detail}")


@dataclass
class Step:
    name: str
    code: int
    expect: int
    request: Callable[[Requests], bytes]
    #: untimed requests run first on a fresh responder
    setup: Callable[[object, Requests], None]
    #: relative sample count (signing steps are slower)
    weight: float = 1.0


def _vca(r: object, q: Requests, upto: int = 3) -> None:
    handle = r.handle  # type: ignore[attr-defined]
    steps = [
        (q.get_version(), ResponseCode.VERSION, "GET_VERSION"),
        (q.get_capabilities(), ResponseCode.CAPABILITIES, "GET_CAPABILITIES"),
        (q.negotiate_algorithms(), ResponseCode.ALGORITHMS, "NEGOTIATE_ALGORITHMS"),
    ]
    for req, expect, what in steps[:upto]:
        _check(handle(req), expect, what, r)


def _vca_digests(r: object, q: Requests) -> None:
    _vca(r, q)
    _check(r.handle(q.get_digests()), ResponseCode.DIGESTS, "GET_DIGESTS", r)  # type: ignore[attr-defined]


def _vca_digests_certificate(r: object, q: Requests) -> None:
    _vca_digests(r, q)
    handle = r.handle  # type: ignore[attr-defined]
    offset = 0
    for _ in range(256):
        rsp = handle(q.get_certificate(offset))
        _check(rsp, ResponseCode.CERTIFICATE, "GET_CERTIFICATE", r)
        portion, remainder = struct.unpack_from("<HH", rsp, 4)
        offset += portion
        if remainder == 0:
            return
    raise StepError("GET_CERTIFICATE: the chain never ends")


STEPS = [
    Step(
        "GET_VERSION",
        RequestCode.GET_VERSION,
        ResponseCode.VERSION,
        lambda q: q.get_version(),
        lambda r, q: None,
    ),
    Step(
        "GET_CAPABILITIES",
        RequestCode.GET_CAPABILITIES,
        ResponseCode.CAPABILITIES,
        lambda q: q.get_capabilities(),
        lambda r, q: _vca(r, q, 1),
    ),
    Step(
        "NEGOTIATE_ALGORITHMS",
        RequestCode.NEGOTIATE_ALGORITHMS,
        ResponseCode.ALGORITHMS,
        lambda q: q.negotiate_algorithms(),
        lambda r, q: _vca(r, q, 2),
    ),
    Step(
        "GET_DIGESTS",
        RequestCode.GET_DIGESTS,
        ResponseCode.DIGESTS,
        lambda q: q.get_digests(),
        _vca,
    ),
    Step(
        "GET_CERTIFICATE (offset 0, 1024 bytes)",
        RequestCode.GET_CERTIFICATE,
        ResponseCode.CERTIFICATE,
        lambda q: q.get_certificate(),
        _vca_digests,
    ),
    Step(
        "CHALLENGE (slot 0, signed)",
        RequestCode.CHALLENGE,
        ResponseCode.CHALLENGE_AUTH,
        lambda q: q.challenge(),
        _vca_digests_certificate,
        weight=0.2,
    ),
    Step(
        "GET_MEASUREMENTS (count, unsigned)",
        RequestCode.GET_MEASUREMENTS,
        ResponseCode.MEASUREMENTS,
        lambda q: q.get_measurements(False, 0),
        _vca,
    ),
    Step(
        "GET_MEASUREMENTS (all, signed)",
        RequestCode.GET_MEASUREMENTS,
        ResponseCode.MEASUREMENTS,
        lambda q: q.get_measurements(True, 0xFF),
        _vca_digests_certificate,
        weight=0.2,
    ),
    Step(
        "KEY_EXCHANGE (SECP384R1, P-384 signed)",
        RequestCode.KEY_EXCHANGE,
        ResponseCode.KEY_EXCHANGE_RSP,
        lambda q: q.key_exchange(),
        _vca_digests_certificate,
        weight=0.2,
    ),
]


def bench_core(args: argparse.Namespace) -> Section:
    """Responder CPU per request (a fresh responder per sample, brought to the right state
    by untimed requests); the garbage collector runs as it does in the server."""
    from emulator.responder import DEFAULT_TABLE, Responder

    device = Device.from_profile(load_profile(args.profile))
    q = Requests(args.version)
    out = Section()
    out.say(
        f"responder core, in process (Responder.handle, thread CPU; SPDM {args.version >> 4}."
        f"{args.version & 0xF}, profile {args.profile}, "
        f"{'ML-DSA-65 + ML-KEM-768 where selected' if args.version >= 0x14 else 'ECDSA P-384'}"
        " / SHA-384):"
    )
    for step in STEPS:
        if step.code not in DEFAULT_TABLE:
            out.say(f"  {step.name:56} not registered")
            continue
        samples = max(20, int(args.samples * step.weight))
        stats = Stats()
        try:
            for i in range(args.warmup + samples):
                r = Responder(device, connection_number=i)
                step.setup(r, q)
                req = step.request(q)
                t0 = time.thread_time_ns()
                rsp = r.handle(req)
                t1 = time.thread_time_ns()
                _check(rsp, step.expect, step.name, r)
                if i >= args.warmup:
                    stats.samples.append(t1 - t0)
        except StepError as exc:
            out.say(f"  {step.name:56} skipped: {exc}")
            continue
        name = step.name
        if args.version >= 0x14:  # what the pqc profile selects for a 1.4 requester
            name = name.replace("SECP384R1, P-384 signed", "ML-KEM-768, ML-DSA-65 signed")
        out.say(stats.line(name))
        out.data[name] = stats.as_dict()
    return out


# ---------------------------------------------------------------------------------------
# (a) GET_VERSION server CPU against the canned-reply floor
# ---------------------------------------------------------------------------------------


def get_version_frame(transport: str) -> bytes:
    from emulator.transport import get_binding

    binding = get_binding(transport)
    return frame(
        binding.encode(bytes((0x10, RequestCode.GET_VERSION, 0, 0))),
        transport=int(binding.socket_transport),
    )


def _reply_of(port: int, request: bytes) -> bytes:
    import socket

    from emulator.server.platform import FrameDecoder

    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        decoder = FrameDecoder(1 << 20)
        while True:
            frames = decoder.feed(s.recv(65536))
            if frames:
                return encode_frame(frames[0])


def _server_cpu_per_rt(server: procs.Server, request: bytes, count: int) -> float:
    procs.loadgen(server.port, "rtt", [request], "--count", str(max(200, count // 10)))
    before = server.cpu_ns()
    procs.loadgen(server.port, "rtt", [request], "--count", str(count))
    return (server.cpu_ns() - before) / count


@contextmanager
def pinned(args: argparse.Namespace) -> Iterator[None]:
    """Run this process and the servers and clients it starts on one CPU (``--pin``):
    round trips between processes on different CPUs of a virtual machine that is
    otherwise idle pay for every wake-up across CPUs (tens of microseconds, counted as
    the woken process's CPU time), on one CPU they pay for the work."""
    if args.pin is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {args.pin})
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


def bench_floor(args: argparse.Namespace) -> Section:
    with pinned(args):
        return _bench_floor(args)


def _bench_floor(args: argparse.Namespace) -> Section:
    out = Section()
    request = get_version_frame(args.transport)
    count = args.round_trips
    with contextlib.ExitStack() as stack:
        ours = stack.enter_context(procs.emulator(procs.this_tree(), transport=args.transport))
        reply = _reply_of(ours.port, request)
        servers = [ours, stack.enter_context(procs.canned(reply))]
        if HAVE_UVLOOP and "uvloop" in args.loops:
            servers.append(
                stack.enter_context(
                    procs.emulator(procs.this_tree(), transport=args.transport, event_loop="uvloop")
                )
            )
            servers.append(stack.enter_context(procs.canned(reply, uvloop=True)))
        for tree in args.baseline_trees:
            servers.append(stack.enter_context(procs.emulator(tree, transport=args.transport)))
        where = f"CPU {args.pin}" if args.pin is not None else "any CPU"
        out.say(
            f"GET_VERSION round trips, one connection, server CPU per round trip "
            f"(transport {args.transport}; {args.rounds} rounds of {count}, alternating; "
            f"median; server and client on {where}):"
        )
        cpu: dict[str, list[float]] = {s.label: [] for s in servers}
        for _ in range(args.rounds):
            for server in servers:
                cpu[server.label].append(_server_cpu_per_rt(server, request, count))
    floors = {"asyncio": median(cpu["canned floor asyncio"])}
    if "canned floor uvloop" in cpu:
        floors["uvloop"] = median(cpu["canned floor uvloop"])
    out.data = {"round_trips": count, "rounds": args.rounds, "servers": {}}
    for label, values in cpu.items():
        m = median(values)
        loop = "uvloop" if "uvloop" in label else "asyncio"
        ratio = m / floors[loop]
        extra = f"   {ratio:5.2f}x the {loop} floor"
        if loop == "uvloop":
            extra += f", {m / floors['asyncio']:5.2f}x the asyncio floor"
        out.say(f"  {label:40} {m / 1e3:8.2f} us{extra if 'canned' not in label else ''}")
        out.data["servers"][label] = {
            "cpu_us_per_round_trip": m / 1e3,
            "runs_us": [v / 1e3 for v in values],
            "ratio_to_floor": ratio,
        }
    return out


# ---------------------------------------------------------------------------------------
# (b) the full handshake against its crypto floor
# ---------------------------------------------------------------------------------------


def bench_handshake(args: argparse.Namespace) -> Section:
    import bare
    import handshake as hs

    from emulator.connection import SpdmConnection
    from emulator.crypto import load_private_key
    from emulator.requester.session import ConnectionChannel
    from emulator.transport import get_binding

    out = Section()
    device = Device.from_profile(load_profile(args.profile))
    binding = get_binding(args.transport)
    key = ROOT / "certs" / "ecdsa-p384" / "slot0" / "leaf.key.pem"
    # the bare responder speaks PCI DOE for the default profile's device only
    bare_plain = None
    if args.transport == "doe" and args.profile == "default":
        bare_plain = bare.record(device, binding, hs.handshake)
    bare_key = load_private_key(str(key))

    def one_in_process(number: int) -> tuple[list[int], hs.Transcript]:
        timed = hs.TimedConnection(SpdmConnection(device, binding, number=number))
        transcript = asyncio.run(hs.handshake(ConnectionChannel(timed)))
        return timed.cpu_ns, transcript

    def one_bare() -> list[int]:
        assert bare_plain is not None
        timed = hs.TimedConnection(bare.BareResponder(binding, bare_plain, bare_key))
        asyncio.run(hs.handshake(ConnectionChannel(timed)))
        return timed.cpu_ns

    _cpu, transcript = one_in_process(0)
    floor = hs.CryptoFloor(transcript, str(key))
    n = args.handshakes
    totals: list[float] = []
    bare_totals: list[float] = []
    floors: list[float] = []
    per_message: list[list[int]] = [[] for _ in hs.MESSAGES]
    bare_per_message: list[list[int]] = [[] for _ in hs.MESSAGES]
    for i in range(args.warmup // 10 + n):
        cpu, _ = one_in_process(i + 1)
        bare_cpu = one_bare() if bare_plain is not None else []
        floor_ns = hs.time_call(floor)
        if i < args.warmup // 10:
            continue
        if len(cpu) != len(hs.MESSAGES):
            raise RuntimeError(f"the handshake took {len(cpu)} requests, not {len(hs.MESSAGES)}")
        totals.append(sum(cpu))
        floors.append(floor_ns)
        for column, value in zip(per_message, cpu, strict=True):
            column.append(value)
        if bare_cpu:
            bare_totals.append(sum(bare_cpu))
            for column, value in zip(bare_per_message, bare_cpu, strict=True):
                column.append(value)
    resp, flo = median(totals), median(floors)
    out.say(
        f"full handshake ({len(hs.MESSAGES)} requests: VCA .. END_SESSION, SPDM 1.3, P-384, "
        f"SHA-384, SECP384R1, AES-256-GCM, {args.transport}), {n} handshakes, median:"
    )
    out.say(
        f"  in process: responder CPU {resp / 1e6:.3f} ms, crypto floor {flo / 1e6:.3f} ms: "
        f"{resp / flo:.2f}x"
    )
    out.data["in_process"] = {
        "responder_ms": resp / 1e6,
        "crypto_floor_ms": flo / 1e6,
        "ratio": resp / flo,
        "per_message_us": _per_message_us(per_message),
    }
    bare_per = _per_message_us(bare_per_message) if bare_totals else {}
    if bare_totals:
        b = median(bare_totals)
        out.say(
            f"  in process, bare responder (bench/bare.py): {b / 1e6:.3f} ms: {b / flo:.2f}x "
            f"the crypto floor (the emulator: {resp / b:.2f}x the bare responder)"
        )
        out.data["in_process"].update(
            bare_ms=b / 1e6, bare_ratio=b / flo, bare_per_message_us=bare_per
        )
    for name, value in out.data["in_process"]["per_message_us"].items():
        also = f"   (bare {bare_per[name]:6.1f} us)" if name in bare_per else ""
        out.say(f"      {name:34} {value:8.1f} us{also}")
    _replayed(args, binding, out)
    # over a socket: the server's own CPU per handshake, the floor in this process
    for label, server in _handshake_servers(args, bare_plain is not None):
        with pinned(args):
            sock = asyncio.run(_socket_handshakes(server, args, floor, n))
        out.say(
            f"  over a socket, {label}: server CPU {sock['server_ms']:.3f} ms per handshake, "
            f"crypto floor {sock['crypto_floor_ms']:.3f} ms: {sock['ratio']:.2f}x"
        )
        out.data.setdefault("socket", {})[label] = sock
    return out


def _per_message_us(columns: list[list[int]]) -> dict[str, float]:
    """The median of each request's column of thread CPU times (ns), in us, by request."""
    import handshake as hs

    return {
        f"{i + 1:02d} {name}": median(col) / 1e3
        for i, (name, col) in enumerate(zip(hs.MESSAGES, columns, strict=True))
    }


def _replayed(args: argparse.Namespace, binding: Any, out: Section) -> None:
    """The same handshake recorded against a seeded copy of the device and replayed on
    fresh connections, request by request, with no requester in between: the responder's
    own per-request cost, hot (bench/handshake.py ``Replay``)."""
    import handshake as hs

    profile = load_profile(args.profile)
    profile.determinism.seed = 17
    seeded = Device.from_profile(profile)
    replay = hs.Replay(seeded, binding)
    for _ in range(args.warmup // 10):
        replay()
    columns: list[list[int]] = [[] for _ in hs.MESSAGES]
    for _ in range(args.handshakes):
        for column, value in zip(columns, replay(), strict=True):
            column.append(value)
    per = _per_message_us(columns)
    out.say(
        "  replayed (a seeded device, fresh connections, nothing between requests; its "
        "KEY_EXCHANGE derives the DHE key from the seed), per request, median:"
    )
    figures = ", ".join(f"{name.split(' ', 1)[1]} {v:.1f}" for name, v in per.items())
    out.say(f"    {figures} us")
    out.data["replayed_per_message_us"] = per


def _socket_servers(args: argparse.Namespace) -> list[tuple[procs.Tree, str]]:
    servers = [(procs.this_tree(), "asyncio")]
    if HAVE_UVLOOP and "uvloop" in args.loops:
        servers.append((procs.this_tree(), "uvloop"))
    servers += [(tree, "asyncio") for tree in args.baseline_trees]
    return servers


def _handshake_servers(
    args: argparse.Namespace, with_bare: bool
) -> list[tuple[str, Callable[[], contextlib.AbstractContextManager[procs.Server]]]]:
    """The servers of the handshake over a socket, by label: :func:`_socket_servers`, and
    after this tree's on each event loop the bare responder (bench/bare.py) on it."""
    servers: list[tuple[str, Callable[[], contextlib.AbstractContextManager[procs.Server]]]] = []
    for tree, loop in _socket_servers(args):
        label = f"serve {loop} ({tree.label})" if tree.has_event_loop else f"serve ({tree.label})"

        def start(
            tree: procs.Tree = tree, loop: str = loop
        ) -> contextlib.AbstractContextManager[procs.Server]:
            return procs.emulator(tree, transport=args.transport, event_loop=loop)

        servers.append((label, start))
        if with_bare and tree.root == procs.ROOT:
            servers.append(
                (f"bare responder {loop}", lambda uv=loop == "uvloop": procs.bare(uvloop=uv))
            )
    return servers


async def _socket_handshakes(
    start: Callable[[], contextlib.AbstractContextManager[procs.Server]],
    args: argparse.Namespace,
    floor: Any,
    n: int,
) -> dict[str, Any]:
    import handshake as hs

    from emulator.requester.transport import SocketClient
    from emulator.transport import get_binding

    with start() as server:
        async with SocketClient(
            "127.0.0.1", server.port, get_binding(args.transport), timeout=30
        ) as client:
            cpu: list[float] = []
            floors: list[float] = []
            for i in range(args.warmup // 10 + n):
                before = server.cpu_ns()
                await hs.handshake(client)
                spent = server.cpu_ns() - before
                floor_ns = hs.time_call(floor)
                if i >= args.warmup // 10:
                    cpu.append(spent)
                    floors.append(floor_ns)
            await client.shutdown()
    s, f = median(cpu), median(floors)
    return {
        "server": server.label,
        "server_ms": s / 1e6,
        "crypto_floor_ms": f / 1e6,
        "ratio": s / f,
    }


# ---------------------------------------------------------------------------------------
# (c) throughput and latency under load
# ---------------------------------------------------------------------------------------


def bench_load(args: argparse.Namespace) -> Section:
    out = Section()
    request = get_version_frame(args.transport)
    levels = [int(x) for x in args.load_connections.split(",")]
    procs.raise_fd_limit(2 * max(levels) + 200)
    out.say(
        f"throughput, closed loops of GET_VERSION round trips ({args.seconds:g} s per level, "
        f"load generator in its own process; latencies per round trip):"
    )
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for tree, loop in _socket_servers(args):
        with procs.emulator(tree, transport=args.transport, event_loop=loop) as server:
            rows: dict[int, dict[str, Any]] = {}
            for n in levels:
                before = server.cpu_ns()
                r = procs.loadgen(
                    server.port,
                    "rtt",
                    [request],
                    "--connections",
                    str(n),
                    "--seconds",
                    str(args.seconds),
                    "--warmup",
                    str(10 * n),
                )
                r["server_cpu_us_per_request"] = (
                    (server.cpu_ns() - before) / max(1, int(r["replies"]) + 10 * n) / 1e3
                )
                rows[n] = r
                out.say(
                    f"  {server.label:32} {n:4d} conns: {float(r['per_second']):9,.0f} req/s"
                    f"   p50 {float(r['p50_us']):8.0f} us   p99 {float(r['p99_us']):8.0f} us"
                    f"   server CPU {r['server_cpu_us_per_request']:6.1f} us/req"
                )
            results[server.label] = rows
    out.data["levels"] = {
        label: {str(k): v for k, v in rows.items()} for label, rows in results.items()
    }
    labels = list(results)
    if args.baseline_trees and 64 in levels:
        base = results[labels[-1]][64]["per_second"]
        for label in labels[:-1]:
            ratio = float(results[label][64]["per_second"]) / float(base)
            out.say(
                f"  64 connections: {label} / {labels[-1]} = {ratio:.2f}x the requests per second"
            )
            out.data.setdefault("ratio_64", {})[label] = ratio
    return out


# ---------------------------------------------------------------------------------------
# (d) memory per idle connection
# ---------------------------------------------------------------------------------------


def vca_frames(args: argparse.Namespace) -> list[bytes]:
    from emulator.transport import get_binding

    binding = get_binding(args.transport)
    q = Requests(args.version)
    transport = int(binding.socket_transport)
    return [
        frame(binding.encode(m), transport=transport)
        for m in (q.get_version(), q.get_capabilities(), q.negotiate_algorithms())
    ]


def bench_memory(args: argparse.Namespace) -> Section:
    from emulator.connection import SpdmConnection
    from emulator.requester.transport import CLIENT_HELLO
    from emulator.transport import get_binding

    out = Section()
    n = args.connections
    procs.raise_fd_limit(2 * n + 200)
    binding = get_binding(args.transport)
    hello = frame(CLIENT_HELLO, PlatformCommand.TEST, int(binding.socket_transport))
    out.say(f"memory per idle connection ({n} connections, transport {args.transport}):")
    trees = [(procs.this_tree(), "asyncio")] + [(t, "asyncio") for t in args.baseline_trees]
    for tree, loop in trees:
        for what, sequence in (("connected, no SPDM", [hello]), ("after VCA", vca_frames(args))):
            with procs.emulator(tree, transport=args.transport, event_loop=loop) as server:
                warm = procs.loadgen_start(server.port, "hold", sequence, "--connections", "5")
                assert warm.stdout is not None
                warm.stdout.readline()
                procs.loadgen_result(warm)  # closes its stdin: it lets go
                time.sleep(0.5)
                before = server.rss_kib()
                held = procs.loadgen_start(server.port, "hold", sequence, "--connections", str(n))
                assert held.stdout is not None
                ready = json.loads(held.stdout.readline())
                time.sleep(0.5)
                after = server.rss_kib()
                procs.loadgen_result(held)
            per = (after - before) / int(ready["ready"])
            out.say(
                f"  {server.label:32} RSS, {what:20} {before / 1024:7.1f} MiB -> "
                f"{after / 1024:7.1f} MiB = {per:5.2f} KiB per connection"
            )
            out.data.setdefault(server.label, {})[what] = {
                "kib_per_connection": per,
                "rss_before_mib": before / 1024,
                "rss_after_mib": after / 1024,
            }
    # Python heap of the per-connection objects alone (no sockets, no transports)
    device = Device.from_profile(load_profile(args.profile))
    q = Requests(args.version)
    reqs = [binding.encode(m) for m in (q.get_version(), q.get_capabilities())]
    reqs.append(binding.encode(q.negotiate_algorithms()))
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    conns = []
    for i in range(n):
        conn = SpdmConnection(device, binding, number=i)
        for req in reqs:
            conn.receive(req)
        conns.append(conn)
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    out.say(f"  Python heap per SpdmConnection after VCA (tracemalloc): {used / n / 1024:6.2f} KiB")
    out.data["heap_kib_per_connection"] = used / n / 1024
    return out


# ---------------------------------------------------------------------------------------
# (e) fuzzing speed
# ---------------------------------------------------------------------------------------

FUZZ_TARGETS = ("responder", "frames", "transport", "profile", "secured")


def _fuzz_run(
    tree: procs.Tree, target: str, corpus: Path, runs: int, max_time: int
) -> dict[str, Any]:
    script = tree.root / "fuzz" / f"fuzz_{target}.py"
    cmd = [sys.executable, str(script), f"-runs={runs}", "-seed=1", "-print_final_stats=1"]
    cmd += [f"-max_total_time={max_time}", "-timeout=60", "-rss_limit_mb=4096"]
    dictionary = corpus.parent / "profile.dict"
    if target == "profile" and dictionary.exists():
        cmd.append(f"-dict={dictionary}")
    work = Path(tempfile.mkdtemp(prefix=f"bench-fuzz-{target}-"))
    try:
        shutil.copytree(corpus, work / "corpus")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tree.root), env.get("PYTHONPATH")) if p)
        start = time.monotonic()
        proc = subprocess.Popen(
            [*cmd, str(work / "corpus")],
            cwd=work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        inited: tuple[float, int] | None = None
        done: tuple[float, int] | None = None
        average = None
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.monotonic()
            if "\tINITED" in line or "\tDONE" in line:
                count = int(line.split("\t")[0].lstrip("#"))
                if "\tINITED" in line:
                    inited = (now, count)
                else:
                    done = (now, count)
            elif line.startswith("stat::average_exec_per_sec:"):
                average = int(line.rsplit(":", 1)[1])
        proc.wait()
        total = time.monotonic() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if proc.returncode != 0 or inited is None or done is None:
        return {"error": f"exit {proc.returncode}", "seconds": total}
    fuzzing = done[0] - inited[0]
    return {
        "runs": done[1],
        "exec_per_sec": (done[1] - inited[1]) / fuzzing if fuzzing > 0 else float("nan"),
        "libfuzzer_average_exec_per_sec": average,
        "seconds_fuzzing": fuzzing,
        "seconds_total": total,
    }


def bench_fuzz(args: argparse.Namespace) -> Section:
    out = Section()
    if importlib.util.find_spec("atheris") is None:
        out.say("fuzz: atheris is not installed (pip install 'spdm-emulator[fuzz]'); skipped")
        out.data["skipped"] = "atheris is not installed"
        return out
    targets = [t for t in args.fuzz_targets.split(",") if t]
    out.say(
        f"fuzzing, instrumented (atheris), from the seed corpus, {args.fuzz_runs} runs per "
        f"target (-seed=1); executions per second between libFuzzer's INITED and DONE:"
    )
    for tree in [procs.this_tree(), *args.baseline_trees]:
        with tempfile.TemporaryDirectory(prefix="bench-corpus-") as tmp:
            corpus = Path(tmp) / "corpus"
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(tree.root), env.get("PYTHONPATH")) if p
            )
            made = subprocess.run(
                [sys.executable, str(tree.root / "fuzz" / "make_corpus.py"), "--out", str(corpus)],
                cwd=tree.root,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            if made.returncode != 0:
                out.say(f"  {tree.label}: make_corpus.py failed: {made.stderr[-500:]}")
                continue
            for target in targets:
                if not (corpus / target).is_dir():
                    continue
                r = _fuzz_run(tree, target, corpus / target, args.fuzz_runs, args.fuzz_max_time)
                out.data.setdefault(tree.label, {})[target] = r
                if "error" in r:
                    out.say(f"  {tree.label:24} {target:10} failed ({r['error']})")
                    continue
                out.say(
                    f"  {tree.label:24} {target:10} {r['exec_per_sec']:8,.0f} exec/s"
                    f"   (libFuzzer's average {r['libfuzzer_average_exec_per_sec']}, "
                    f"{r['runs']} runs in {r['seconds_fuzzing']:.1f} s)"
                )
    if args.baseline_trees:
        now, then = procs.this_tree().label, args.baseline_trees[-1].label
        for target in targets:
            a = out.data.get(now, {}).get(target, {})
            b = out.data.get(then, {}).get(target, {})
            if "exec_per_sec" in a and "exec_per_sec" in b:
                ratio = a["exec_per_sec"] / b["exec_per_sec"]
                out.say(f"  {target:10} {now} / {then}: {ratio:.1f}x the executions per second")
                out.data.setdefault("ratios", {})[target] = ratio
    return out


# ---------------------------------------------------------------------------------------
# (f) a flooding peer against another connection's latency
# ---------------------------------------------------------------------------------------


def _window(dump: Path, start: int, end: int) -> list[int]:
    data = json.loads(dump.read_text())
    return [
        lat
        for sent, lat in zip(data["sent_ns"], data["latency_ns"], strict=True)
        if start <= sent <= end
    ]


def _pct(samples: list[int], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e3 if ordered else float("nan")


def bench_flood(args: argparse.Namespace) -> Section:
    out = Section()
    request = get_version_frame(args.transport)
    frames = args.flood_frames
    out.say(
        f"flood: one peer pipelines {frames:,} GET_VERSION frames at once while another "
        f"connection does round trips; that connection's latency (us):"
    )
    for tree, loop in _socket_servers(args):
        with (
            procs.emulator(tree, transport=args.transport, event_loop=loop) as server,
            tempfile.TemporaryDirectory() as tmp,
        ):
            rows: dict[str, Any] = {}
            quiet = Path(tmp) / "quiet.json"
            procs.loadgen(
                server.port,
                "rtt",
                [request],
                "--seconds",
                "2",
                "--warmup",
                "200",
                "--dump",
                str(quiet),
            )
            q = json.loads(quiet.read_text())["latency_ns"]
            base = {"p50": _pct(q, 0.5), "p99": _pct(q, 0.99), "max": _pct(q, 1.0), "n": len(q)}
            rows["alone"] = base
            for reading in (True, False):
                dump = Path(tmp) / f"victim-{reading}.json"
                seconds = args.flood_seconds
                victim = procs.loadgen_start(
                    server.port,
                    "rtt",
                    [request],
                    "--seconds",
                    str(seconds),
                    "--warmup",
                    "50",
                    "--dump",
                    str(dump),
                )
                time.sleep(0.3)
                flood_args = ["--frames", str(frames)]
                if not reading:
                    flood_args += ["--no-read", "--seconds", str(seconds - 1)]
                flood = procs.loadgen(server.port, "flood", [request], *flood_args)
                procs.loadgen_result(victim)
                during = _window(dump, int(flood["started_ns"]), int(flood["ended_ns"]))
                row = {
                    "p50": _pct(during, 0.5),
                    "p99": _pct(during, 0.99),
                    "max": _pct(during, 1.0),
                    "n": len(during),
                    "flood_seconds": (int(flood["ended_ns"]) - int(flood["started_ns"])) / 1e9,
                }
                row["worst_extra_us"] = row["max"] - base["p50"]
                row["p99_extra_us"] = row["p99"] - base["p50"]
                rows["flooder reads" if reading else "flooder does not read"] = row
            out.data[server.label] = rows
            out.say(f"  {server.label}:")
            out.say(
                f"    {'alone':24} p50 {base['p50']:8.0f}  p99 {base['p99']:8.0f}  max "
                f"{base['max']:8.0f}  n={base['n']}"
            )
            for label, row in rows.items():
                if label == "alone":
                    continue
                out.say(
                    f"    {label:24} p50 {row['p50']:8.0f}  p99 {row['p99']:8.0f}  max "
                    f"{row['max']:8.0f}  n={row['n']}  (flood {row['flood_seconds']:.1f} s): "
                    f"worst extra {row['worst_extra_us'] / 1e3:.2f} ms, p99 extra "
                    f"{row['p99_extra_us'] / 1e3:.2f} ms"
                )
    return out


# C responder helpers (section c)


@contextmanager
def c_server(binary: str, transport: str) -> Iterator[tuple[int, int]]:
    """DMTF's spdm_responder_emu in its own directory: yields (port, pid).

    It serves one connection and exits after SHUTDOWN, so no probe connection is made:
    the client retries connecting instead.
    """
    port = procs.free_port()
    trans = {"doe": "PCI_DOE", "mctp": "MCTP"}[transport]
    path = Path(binary).resolve()
    proc = subprocess.Popen(
        [str(path), "--trans", trans, "--port", str(port)],
        cwd=path.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield port, proc.pid
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _connect(port: int, transport: str, attempts: int = 100) -> object:
    from emulator.requester.transport import SocketClient
    from emulator.transport import get_binding

    for _ in range(attempts):
        client = SocketClient("127.0.0.1", port, get_binding(transport), timeout=10)
        try:
            await client.connect()
            return client
        except Exception:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"cannot connect to 127.0.0.1:{port}")


def _quickack_exchange(client: object) -> Callable[[bytes], object]:
    """``client.exchange`` re-arming TCP_QUICKACK on the client socket (Linux).

    A peer that writes a frame in several small send() calls without TCP_NODELAY (libspdm's
    socket code) waits for the client's delayed ACK (~40 ms) before sending the rest of its
    frame; re-arming TCP_QUICKACK after the request is sent makes the client ACK the first
    segment at once, as the emulator's server does after each read.
    """
    from emulator.server.platform import PlatformCommand
    from emulator.server.server import rearm_quickack

    sock = client._writer.get_extra_info("socket")  # type: ignore[attr-defined]
    binding = client.binding  # type: ignore[attr-defined]

    async def wrapped(message: bytes) -> object:
        await client.send_frame(PlatformCommand.NORMAL, binding.encode(message))  # type: ignore[attr-defined]
        rearm_quickack(sock)
        frame = await client.recv_frame()  # type: ignore[attr-defined]
        rearm_quickack(sock)
        return binding.decode(frame.payload)

    return wrapped


async def _round_trips(
    port: int, args: argparse.Namespace, label: str, quickack: bool = False
) -> list[str]:
    from emulator.server.platform import PlatformCommand

    client = await _connect(port, args.transport)
    q = Requests(args.version)
    exchange = _quickack_exchange(client) if quickack else client.exchange  # type: ignore[attr-defined]
    if quickack:
        label += " (client TCP_QUICKACK)"
    out: list[str] = []
    try:
        await client.hello()  # type: ignore[attr-defined]
        # GET_VERSION: the smallest exchange (it also resets the connection each time)
        stats = Stats()
        get_version = q.get_version()
        deadline = time.monotonic() + args.budget
        for i in range(args.warmup + args.round_trips):
            if i > args.warmup + 20 and time.monotonic() > deadline:
                break
            t0 = time.perf_counter_ns()
            msg = await exchange(get_version)
            t1 = time.perf_counter_ns()
            if msg.message[1] != ResponseCode.VERSION:
                raise RuntimeError(f"{label}: GET_VERSION answered {msg.message.hex()}")
            if i >= args.warmup:
                stats.samples.append(t1 - t0)
        out.append(
            stats.line(
                f"{label}: GET_VERSION round trip", f"  {1e9 / stats.median:,.0f} round trips/s"
            )
        )
        # a whole VCA (3 round trips)
        vca = Stats()
        reqs = [q.get_version(), q.get_capabilities(), q.negotiate_algorithms()]
        deadline = time.monotonic() + args.budget
        for i in range(args.warmup + args.round_trips // 3):
            if i > args.warmup + 20 and time.monotonic() > deadline:
                break
            t0 = time.perf_counter_ns()
            for req in reqs:
                msg = await exchange(req)
            t1 = time.perf_counter_ns()
            if msg.message[1] != ResponseCode.ALGORITHMS:
                raise RuntimeError(f"{label}: NEGOTIATE_ALGORITHMS answered {msg.message.hex()}")
            if i >= args.warmup:
                vca.samples.append(t1 - t0)
        out.append(vca.line(f"{label}: VCA (3 round trips)", f"  {1e9 / vca.median:,.0f} VCA/s"))
        await client.send_frame(PlatformCommand.SHUTDOWN)  # type: ignore[attr-defined]
    finally:
        await client.close()  # type: ignore[attr-defined]
    return out


# ---------------------------------------------------------------------------------------
# SocketClient round trips, and DMTF's C responder
# ---------------------------------------------------------------------------------------


def bench_socket(args: argparse.Namespace) -> Section:
    out = Section()
    out.say(
        f"loopback socket, SocketClient -> server process (transport {args.transport}, "
        f"one connection, requests in sequence):"
    )
    for quickack in (False, True):
        with procs.emulator(procs.this_tree(), transport=args.transport) as server:
            for line in asyncio.run(_round_trips(server.port, args, "python emulator", quickack)):
                out.say(line)
    return out


def bench_c(args: argparse.Namespace) -> Section:
    out = Section()
    out.say(f"loopback socket, SocketClient -> {args.c_responder} (transport {args.transport}):")
    for quickack in (False, True):
        with c_server(args.c_responder, args.transport) as (port, _pid):
            for line in asyncio.run(_round_trips(port, args, "C spdm_responder_emu", quickack)):
                out.say(line)
    return out


# ---------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    import cryptography

    info: dict[str, Any] = {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "system": f"{platform.system()} {platform.release()}",
        "commit": commit or "?",
        "cryptography": cryptography.__version__,
        "uvloop": None,
        "load_average": list(os.getloadavg()),
    }
    if HAVE_UVLOOP:
        import uvloop

        info["uvloop"] = uvloop.__version__
    return info


SECTIONS: dict[str, Callable[[argparse.Namespace], Section]] = {
    "core": bench_core,
    "floor": bench_floor,
    "handshake": bench_handshake,
    "load": bench_load,
    "memory": bench_memory,
    "fuzz": bench_fuzz,
    "flood": bench_flood,
    "socket": bench_socket,
    "c": bench_c,
}
DEFAULT_SECTIONS = "core,floor,handshake,load,memory,fuzz,flood,socket"


def main(argv: list[str] | None = None) -> int:
    global OUT
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--only",
        default=DEFAULT_SECTIONS,
        help=f"comma-separated sections of {','.join(SECTIONS)} (default: {DEFAULT_SECTIONS})",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    p.add_argument(
        "--baseline",
        metavar="REV",
        action="append",
        default=[],
        help="also run this git revision's server and fuzz targets (ratios against it)",
    )
    p.add_argument(
        "--loops",
        default="asyncio,uvloop",
        help="event loops to run this tree's server on (uvloop when installed)",
    )
    p.add_argument("--profile", default="default", help="device profile (default: default)")
    p.add_argument("--transport", choices=("doe", "mctp"), default="doe")
    p.add_argument(
        "--spdm-version",
        default="1.3",
        choices=("1.1", "1.2", "1.3", "1.4"),
        help="1.4 (with --profile pqc) offers ML-DSA-65 and ML-KEM-768 besides ECDSA P-384",
    )
    p.add_argument("--quick", action="store_true", help="fewer samples everywhere (a smoke run)")
    p.add_argument(
        "--pin",
        type=int,
        default=(os.cpu_count() or 1) - 1,
        help="floor and handshake over a socket: run servers and clients on this CPU "
        "(default: the last one; -1: no pinning)",
    )
    g = p.add_argument_group("sample sizes")
    g.add_argument("--samples", type=int, default=2000, help="core: samples per message")
    g.add_argument("--warmup", type=int, default=50, help="untimed runs first")
    g.add_argument(
        "--round-trips",
        type=int,
        default=20000,
        help="floor: round trips per round; socket: round trips",
    )
    g.add_argument("--rounds", type=int, default=5, help="floor: alternating rounds")
    g.add_argument("--handshakes", type=int, default=100, help="handshake: handshakes per side")
    g.add_argument("--load-connections", default="1,8,64,256", help="load: connection counts")
    g.add_argument("--seconds", type=float, default=5.0, help="load: seconds per level")
    g.add_argument("--connections", type=int, default=500, help="memory: idle connections")
    g.add_argument("--fuzz-runs", type=int, default=20000, help="fuzz: runs per target")
    g.add_argument(
        "--fuzz-max-time", type=int, default=300, help="fuzz: seconds at most per target"
    )
    g.add_argument("--fuzz-targets", default=",".join(FUZZ_TARGETS))
    g.add_argument("--flood-frames", type=int, default=100_000, help="flood: pipelined frames")
    g.add_argument("--flood-seconds", type=float, default=8.0, help="flood: victim's run")
    g.add_argument(
        "--budget",
        type=float,
        default=20.0,
        help="socket: seconds at most per measurement (fewer samples when slow)",
    )
    g.add_argument(
        "--c-responder",
        metavar="PATH",
        help="DMTF spdm_responder_emu binary (run in its directory, beside the keys)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.samples, args.round_trips, args.rounds = 200, 3000, 3
        args.handshakes, args.seconds, args.connections = 20, 1.5, 200
        args.fuzz_runs, args.flood_frames, args.flood_seconds = 3000, 20_000, 4.0
    major, minor = args.spdm_version.split(".")
    args.version = (int(major) << 4) | int(minor)
    args.loops = {loop.strip() for loop in args.loops.split(",")}
    if args.pin is not None and args.pin < 0:
        args.pin = None
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s): {', '.join(unknown)}")
    if args.json:
        OUT = sys.stderr
    results: dict[str, Any] = {"machine": machine(), "sections": {}}
    info = results["machine"]
    print(
        f"# {info['python']}, {info['cpus']} CPUs ({info['cpu']}), {info['system']}, "
        f"commit {info['commit']}, cryptography {info['cryptography']}, uvloop "
        f"{info['uvloop'] or 'not installed'}, load average {info['load_average'][0]:.2f}",
        file=OUT,
        flush=True,
    )
    with contextlib.ExitStack() as stack:
        args.baseline_trees = [
            stack.enter_context(procs.revision_tree(rev)) for rev in args.baseline
        ]
        for name in only:
            if name == "c" and not args.c_responder:
                print("c: --c-responder PATH not given; skipped", file=OUT)
                continue
            section = SECTIONS[name](args)
            results["sections"][name] = section.data
    results["machine"]["load_average_after"] = list(os.getloadavg())
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
