#!/usr/bin/env python3
"""A lean platform-socket load generator, run as its own process by bench.py.

Raw non-blocking sockets and ``selectors`` (no asyncio, no SPDM code): the client costs
as little CPU as a Python client can, so that the server, not the client, is what is
measured.  Requests are whole platform frames given in hex; a reply is one frame.

Modes (each prints one JSON object on stdout):

``rtt``    ``--connections N`` closed loops: each connection sends ``--sequence`` requests
           one at a time (cycling), waiting for each reply; runs for ``--count`` replies
           in all, or ``--seconds``.  Prints the replies, the elapsed time and latency
           percentiles (microseconds).
``flood``  one connection writes ``--frames`` copies of the first request at once, then
           reads the replies (or, with ``--no-read``, reads nothing for ``--seconds``).
``hold``   opens ``--connections`` connections, runs the sequence once on each, prints
           ``{"ready": N}`` and keeps them open until stdin closes.

    python3 bench/loadgen.py rtt --port 2323 --connections 64 --seconds 5 --sequence HEX
"""

from __future__ import annotations

import argparse
import contextlib
import json
import selectors
import socket
import struct
import sys
import time

_HEADER = struct.Struct(">III")


class Conn:
    __slots__ = ("buffer", "index", "sent_at", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.index = 0
        self.sent_at = 0


def connect(port: int, n: int) -> list[Conn]:
    out = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        out.append(Conn(sock))
    return out


def take_frames(conn: Conn) -> int:
    """Whole reply frames in the connection's buffer (removed from it)."""
    buffer = conn.buffer
    offset = 0
    count = 0
    while len(buffer) - offset >= 12:
        size = _HEADER.unpack_from(buffer, offset)[2]
        if len(buffer) - offset - 12 < size:
            break
        offset += 12 + size
        count += 1
    conn.buffer = buffer[offset:]
    return count


def percentiles(samples: list[int]) -> dict[str, float]:
    if not samples:
        return {}
    ordered = sorted(samples)
    n = len(ordered)

    def at(q: float) -> float:
        return ordered[min(n - 1, int(q * n))] / 1000

    return {
        "p50_us": at(0.50),
        "p90_us": at(0.90),
        "p99_us": at(0.99),
        "max_us": ordered[-1] / 1000,
        "mean_us": sum(ordered) / n / 1000,
    }


def run_rtt(args: argparse.Namespace, sequence: list[bytes]) -> dict[str, object]:
    conns = connect(args.port, args.connections)
    sel = selectors.DefaultSelector()
    for c in conns:
        sel.register(c.sock, selectors.EVENT_READ, c)
    clock = time.perf_counter_ns
    latencies: list[int] = []
    sent_log: list[int] = []
    replies = 0
    warm = args.warmup
    start = clock()
    deadline = start + int(args.seconds * 1e9) if args.seconds else None
    for c in conns:
        c.sent_at = clock()
        c.sock.send(sequence[0])
    done = False
    while not done:
        for key, _ in sel.select(timeout=30):
            c = key.data
            data = c.sock.recv(65536)
            if not data:
                raise SystemExit("the server closed a connection")
            c.buffer = c.buffer + data if c.buffer else data
            if take_frames(c) == 0:
                continue
            now = clock()
            if warm > 0:
                warm -= 1
                if warm == 0:
                    start = now
                    if args.seconds:
                        deadline = start + int(args.seconds * 1e9)
            else:
                latencies.append(now - c.sent_at)
                if args.dump:
                    sent_log.append(c.sent_at)
                replies += 1
            if (args.count and replies >= args.count) or (deadline and now >= deadline):
                done = True
                break
            c.index = (c.index + 1) % len(sequence)
            c.sent_at = clock()
            c.sock.send(sequence[c.index])
    elapsed = (clock() - start) / 1e9
    for c in conns:
        c.sock.close()
    if args.dump:
        # (send time, latency) of every timed reply, monotonic ns (comparable across
        # processes: CLOCK_MONOTONIC), for a caller that looks at a time window
        with open(args.dump, "w") as out:
            json.dump({"sent_ns": sent_log, "latency_ns": latencies}, out)
    return {
        "mode": "rtt",
        "connections": args.connections,
        "replies": replies,
        "seconds": elapsed,
        "per_second": replies / elapsed if elapsed else 0.0,
        **percentiles(latencies),
    }


def run_flood(args: argparse.Namespace, sequence: list[bytes]) -> dict[str, object]:
    (c,) = connect(args.port, 1)
    burst = sequence[0] * args.frames
    c.sock.setblocking(True)
    t0 = time.perf_counter()
    started_ns = time.perf_counter_ns()
    if args.no_read:
        c.sock.settimeout(args.seconds)
        sent = 0
        try:
            while sent < len(burst):
                sent += c.sock.send(burst[sent : sent + 65536])
        except (TimeoutError, OSError):
            pass
        remaining = args.seconds - (time.perf_counter() - t0)
        if remaining > 0:
            time.sleep(remaining)
        ended_ns = time.perf_counter_ns()
        c.sock.close()
        return {
            "mode": "flood",
            "frames": args.frames,
            "sent_bytes": sent,
            "read": False,
            "started_ns": started_ns,
            "ended_ns": ended_ns,
        }
    c.sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
    sent = 0
    got = 0
    while got < args.frames:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if sent < len(burst) else 0)
        sel.modify(c.sock, events, c)
        for _key, mask in sel.select(timeout=60):
            if mask & selectors.EVENT_WRITE and sent < len(burst):
                with contextlib.suppress(BlockingIOError):
                    sent += c.sock.send(burst[sent : sent + 262144])
            if mask & selectors.EVENT_READ:
                data = c.sock.recv(262144)
                if not data:
                    raise SystemExit("the server closed the flooding connection")
                c.buffer = c.buffer + data if c.buffer else data
                got += take_frames(c)
    elapsed = time.perf_counter() - t0
    ended_ns = time.perf_counter_ns()
    c.sock.close()
    return {
        "mode": "flood",
        "frames": args.frames,
        "seconds": elapsed,
        "read": True,
        "started_ns": started_ns,
        "ended_ns": ended_ns,
    }


def run_hold(args: argparse.Namespace, sequence: list[bytes]) -> dict[str, object]:
    conns = connect(args.port, args.connections)
    for c in conns:
        c.sock.setblocking(True)
        for request in sequence:
            c.sock.sendall(request)
            while take_frames(c) == 0:
                data = c.sock.recv(65536)
                if not data:
                    raise SystemExit("the server closed a held connection")
                c.buffer += data
    print(json.dumps({"ready": len(conns)}), flush=True)
    sys.stdin.read()
    for c in conns:
        c.sock.close()
    return {"mode": "hold", "connections": len(conns)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("rtt", "flood", "hold"))
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sequence", required=True, help="comma-separated request frames, hex")
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--count", type=int, default=0, help="rtt: stop after this many replies")
    p.add_argument("--seconds", type=float, default=0.0)
    p.add_argument("--warmup", type=int, default=0, help="rtt: untimed replies first")
    p.add_argument("--frames", type=int, default=100_000, help="flood: frames in the burst")
    p.add_argument("--no-read", action="store_true", help="flood: never read a reply")
    p.add_argument("--dump", metavar="FILE", help="rtt: write every (send time, latency)")
    args = p.parse_args()
    sequence = [bytes.fromhex(h) for h in args.sequence.split(",")]
    run = {"rtt": run_rtt, "flood": run_flood, "hold": run_hold}[args.mode]
    result = run(args, sequence)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
