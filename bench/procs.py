"""Processes of bench.py: servers (this tree's ``spdm-emulator serve``, another revision's,
the canned-reply floor), the load generator, and what is read from /proc about them.

A server's CPU is read from ``/proc/PID/schedstat`` (nanoseconds on a CPU, counted by the
scheduler: load from other processes does not inflate it), else from ``/proc/PID/stat``
(clock ticks).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


@dataclass(frozen=True)
class Tree:
    """A source tree whose server the bench runs: this checkout, or a revision of it."""

    label: str
    root: Path
    #: ``serve --event-loop`` exists in this tree
    has_event_loop: bool = True


def this_tree() -> Tree:
    return Tree("this tree", ROOT)


@contextlib.contextmanager
def revision_tree(rev: str) -> Iterator[Tree]:
    """``git archive REV`` unpacked in a temporary directory (removed afterwards)."""
    short = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", rev],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix=f"bench-{short}-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", rev],
            capture_output=True,
            check=True,
        ).stdout
        import io

        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        has_loop = "--event-loop" in (Path(tmp) / "emulator" / "cli.py").read_text()
        yield Tree(f"{rev} ({short})", Path(tmp), has_loop)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    return env


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
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


@dataclass
class Server:
    label: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_ns(self) -> int:
        return cpu_ns(self.proc.pid)

    def rss_kib(self) -> int:
        return rss_kib(self.proc.pid)


@contextlib.contextmanager
def _running(label: str, cmd: list[str], env: dict[str, str], cwd: Path) -> Iterator[Server]:
    port = free_port()
    cmd = [*cmd, "--port", str(port)]
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        try:
            wait_port(port, proc)
        except RuntimeError as exc:
            err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
            raise RuntimeError(f"{label}: {exc}\n{err}") from None
        time.sleep(0.3)  # the probe connection above is served and closed
        yield Server(label, port, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def emulator(
    tree: Tree,
    *,
    transport: str = "doe",
    profile: str = "default",
    event_loop: str | None = "asyncio",
) -> contextlib.AbstractContextManager[Server]:
    """``spdm-emulator serve`` of ``tree`` (``--log-level warning``: no line per exchange)."""
    cmd = [sys.executable, "-m", "emulator", "serve", "--transport", transport]
    cmd += ["--profile", profile, "--log-level", "warning"]
    label = f"serve ({tree.label})"
    if tree.has_event_loop and event_loop is not None:
        cmd += ["--event-loop", event_loop]
        label = f"serve {event_loop} ({tree.label})"
    return _running(label, cmd, _env(tree.root), tree.root)


def canned(reply: bytes, *, uvloop: bool = False) -> contextlib.AbstractContextManager[Server]:
    """The canned-reply floor server (bench/canned_server.py)."""
    cmd = [sys.executable, str(BENCH / "canned_server.py"), "--reply", reply.hex()]
    if uvloop:
        cmd.append("--uvloop")
    label = f"canned floor {'uvloop' if uvloop else 'asyncio'}"
    return _running(label, cmd, dict(os.environ), ROOT)


def bare(*, uvloop: bool = False) -> contextlib.AbstractContextManager[Server]:
    """The bare responder on a socket (bench/bare.py): the handshake's floor for any
    Python responder behind an asyncio server."""
    cmd = [sys.executable, str(BENCH / "bare.py")]
    if uvloop:
        cmd.append("--uvloop")
    label = f"bare responder {'uvloop' if uvloop else 'asyncio'}"
    return _running(label, cmd, dict(os.environ), ROOT)


def cpu_ns(pid: int) -> int:
    """CPU time a process has used, in nanoseconds."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def loadgen(port: int, mode: str, sequence: list[bytes], *args: str) -> dict[str, object]:
    """Run bench/loadgen.py to completion; its JSON result."""
    cmd = [sys.executable, str(BENCH / "loadgen.py"), mode, "--port", str(port)]
    cmd += ["--sequence", ",".join(s.hex() for s in sequence), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"loadgen {mode} failed: {done.stderr[-2000:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def loadgen_start(port: int, mode: str, sequence: list[bytes], *args: str) -> subprocess.Popen[str]:
    """Start bench/loadgen.py (read its JSON with :func:`loadgen_result`)."""
    cmd = [sys.executable, str(BENCH / "loadgen.py"), mode, "--port", str(port)]
    cmd += ["--sequence", ",".join(s.hex() for s in sequence), *args]
    return subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def loadgen_result(proc: subprocess.Popen[str], timeout: float = 600) -> dict[str, object]:
    out, err = proc.communicate(input="", timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen failed: {err[-2000:]}")
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


def raise_fd_limit(needed: int) -> None:
    """Raise RLIMIT_NOFILE's soft limit (children inherit it) as far as the hard one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
