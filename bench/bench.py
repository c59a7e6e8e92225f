#!/usr/bin/env python3
"""Benchmarks of the emulator (prints figures; not a test).

Four measurements, each reported as median and p95 (``time.perf_counter_ns``, warm-up
runs first, the garbage collector paused while timing):

1. ``core``   - per-message cost of the sans-I/O responder (``Responder.handle``) for
   every request family in the dispatch table ``emulator.responder.DEFAULT_TABLE``: GET_VERSION,
   GET_CAPABILITIES, NEGOTIATE_ALGORITHMS, then GET_DIGESTS, GET_CERTIFICATE, CHALLENGE,
   GET_MEASUREMENTS, KEY_EXCHANGE when present.  Each sample uses a fresh responder brought
   to the right state by untimed requests; only the measured request is timed.
2. ``socket`` - round trips per second over loopback with the project's SocketClient
   against ``spdm-emulator serve`` run as a separate process (GET_VERSION, the
   smallest exchange, and a whole VCA).
3. ``memory`` - memory per idle (negotiated) connection: the server process's RSS growth
   with N open connections, and the Python heap per SpdmConnection (tracemalloc).
4. ``c``      - the ``socket`` figure against DMTF's C ``spdm_responder_emu``, when its
   path is given with ``--c-responder`` (it is run in its own directory, where it finds
   libspdm's sample keys: ``make copy_sample_key`` in spdm-emu's build).

Run from the repository root:  ``python3 bench/bench.py`` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import socket
import statistics
import struct
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

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

# ---------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------


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


def fmt_ns(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e3:.1f} us"


@contextmanager
def gc_paused() -> Iterator[None]:
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


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


def bench_core(args: argparse.Namespace) -> list[str]:
    from emulator.responder import DEFAULT_TABLE, Responder

    device = Device.from_profile(load_profile(args.profile))
    q = Requests(args.version)
    out = [
        f"responder core, in process (Responder.handle; SPDM {args.version >> 4}."
        f"{args.version & 0xF}, profile {args.profile}, "
        f"{'ML-DSA-65 + ML-KEM-768 where selected' if args.version >= 0x14 else 'ECDSA P-384'}"
        " / SHA-384):"
    ]
    for step in STEPS:
        if step.code not in DEFAULT_TABLE:
            out.append(f"  {step.name:56} not registered")
            continue
        samples = max(20, int(args.samples * step.weight))
        stats = Stats()
        try:
            for i in range(args.warmup + samples):
                r = Responder(device, connection_number=i)
                step.setup(r, q)
                req = step.request(q)
                with gc_paused():
                    t0 = time.perf_counter_ns()
                    rsp = r.handle(req)
                    t1 = time.perf_counter_ns()
                _check(rsp, step.expect, step.name, r)
                if i >= args.warmup:
                    stats.samples.append(t1 - t0)
        except StepError as exc:
            out.append(f"  {step.name:56} skipped: {exc}")
            continue
        name = step.name
        if args.version >= 0x14:  # what the pqc profile selects for a 1.4 requester
            name = name.replace("SECP384R1, P-384 signed", "ML-KEM-768, ML-DSA-65 signed")
        out.append(stats.line(name))
    return out


# ---------------------------------------------------------------------------------------
# 2./4. socket round trips
# ---------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


@contextmanager
def python_server(transport: str, profile: str) -> Iterator[tuple[int, int]]:
    """``spdm-emulator serve`` in a child process: yields (port, pid)."""
    port = _free_port()
    cmd = [sys.executable, "-m", "emulator", "serve", "--port", str(port)]
    cmd += ["--transport", transport, "--profile", profile, "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, proc)
        time.sleep(0.2)  # the probe connection above is served and closed
        yield port, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def c_server(binary: str, transport: str) -> Iterator[tuple[int, int]]:
    """DMTF's spdm_responder_emu in its own directory: yields (port, pid).

    It serves one connection and exits after SHUTDOWN, so no probe connection is made:
    the client retries connecting instead.
    """
    port = _free_port()
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


def bench_socket(args: argparse.Namespace) -> list[str]:
    out = [
        f"loopback socket, SocketClient -> server process (transport {args.transport}, "
        f"one connection, requests in sequence):"
    ]
    for quickack in (False, True):
        with python_server(args.transport, args.profile) as (port, _pid):
            out += asyncio.run(_round_trips(port, args, "python emulator", quickack))
    return out


def bench_c(args: argparse.Namespace) -> list[str]:
    out = [f"loopback socket, SocketClient -> {args.c_responder} (transport {args.transport}):"]
    for quickack in (False, True):
        with c_server(args.c_responder, args.transport) as (port, _pid):
            out += asyncio.run(_round_trips(port, args, "C spdm_responder_emu", quickack))
    return out


# ---------------------------------------------------------------------------------------
# 3. memory per idle connection
# ---------------------------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def _open_idle(port: int, args: argparse.Namespace, n: int, vca: bool) -> list[object]:
    q = Requests(args.version)
    clients = []
    for _ in range(n):
        client = await _connect(port, args.transport)
        if vca:
            for req in (q.get_version(), q.get_capabilities(), q.negotiate_algorithms()):
                await client.exchange(req)  # type: ignore[attr-defined]
        clients.append(client)
    return clients


def bench_memory(args: argparse.Namespace) -> list[str]:
    n = args.connections
    out = [f"memory per idle connection ({n} connections, transport {args.transport}):"]
    for vca in (False, True):
        with python_server(args.transport, args.profile) as (port, pid):

            async def run(port: int = port, pid: int = pid, vca: bool = vca) -> tuple[int, int]:
                warm = await _open_idle(port, args, 5, vca)  # first-use allocations
                for c in warm:
                    await c.close()  # type: ignore[attr-defined]
                await asyncio.sleep(0.3)
                before = _rss_kib(pid)
                clients = await _open_idle(port, args, n, vca)
                await asyncio.sleep(0.5)
                after = _rss_kib(pid)
                for c in clients:
                    await c.close()  # type: ignore[attr-defined]
                return before, after

            before, after = asyncio.run(run())
        what = "after VCA" if vca else "connected, no SPDM"
        out.append(
            f"  server RSS, {what:22} {before / 1024:7.1f} MiB -> {after / 1024:7.1f} MiB"
            f"   = {(after - before) / n:6.1f} KiB per connection"
        )
    # Python heap of the per-connection objects alone (no sockets, no asyncio streams)
    from emulator.connection import SpdmConnection
    from emulator.transport import get_binding

    device = Device.from_profile(load_profile(args.profile))
    binding = get_binding(args.transport)
    q = Requests(args.version)
    reqs = [binding.encode(m) for m in (q.get_version(), q.get_capabilities())]
    reqs.append(binding.encode(q.negotiate_algorithms()))
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    conns = []
    for i in range(n):
        conn = SpdmConnection(device, binding, number=i)
        for req in reqs:
            conn.receive(req)
        conns.append(conn)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    out.append(
        f"  Python heap per SpdmConnection after VCA (tracemalloc): {used / n / 1024:6.1f} KiB"
    )
    return out


# ---------------------------------------------------------------------------------------


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return (
        f"# {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} "
        f"CPUs ({cpu}), {platform.system()} {platform.release()}, commit {commit or '?'}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--only",
        default="core,socket,memory,c",
        help="comma-separated subset of core,socket,memory,c (default: all)",
    )
    p.add_argument("--profile", default="default", help="device profile (default: default)")
    p.add_argument("--transport", choices=("doe", "mctp"), default="doe")
    p.add_argument(
        "--spdm-version",
        default="1.3",
        choices=("1.1", "1.2", "1.3", "1.4"),
        help="1.4 (with --profile pqc) offers ML-DSA-65 and ML-KEM-768 besides ECDSA P-384",
    )
    p.add_argument("--samples", type=int, default=2000, help="core samples per message")
    p.add_argument("--warmup", type=int, default=50, help="untimed runs first")
    p.add_argument("--round-trips", type=int, default=3000, help="socket round trips")
    p.add_argument("--connections", type=int, default=200, help="idle connections")
    p.add_argument(
        "--budget",
        type=float,
        default=20.0,
        help="seconds at most per socket measurement (fewer samples when a peer is slow)",
    )
    p.add_argument(
        "--c-responder",
        metavar="PATH",
        help="DMTF spdm_responder_emu binary (run in its directory, beside the sample keys)",
    )
    args = p.parse_args(argv)
    major, minor = args.spdm_version.split(".")
    args.version = (int(major) << 4) | int(minor)
    only = {s.strip() for s in args.only.split(",")}
    print(machine())
    sections: list[tuple[str, Callable[[argparse.Namespace], list[str]]]] = [
        ("core", bench_core),
        ("socket", bench_socket),
        ("memory", bench_memory),
    ]
    if args.c_responder:
        sections.append(("c", bench_c))
    elif "c" in only and args.only != p.get_default("only"):
        print("c: --c-responder PATH not given; skipped")
    for name, fn in sections:
        if name in only:
            for line in fn(args):
                print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
