"""A paused QEMU q35 machine with one NVMe controller, driven through QEMU's qtest protocol.

The shared half of :mod:`emulator.qemu_doe` (the controller's PCIe DOE mailbox) and
:mod:`emulator.qemu_nvme` (its admin queue: Security Send / Security Receive).  QEMU is
started paused (``-S``, no vCPU ever runs) with a qtest server socket; the driver plays
the guest with ``readl``/``writel``/``b64read``/``b64write`` text commands.  ECAM is
enabled on q35 (PCIEXBAR, 00:00.0 config register 0x60, through 0xcf8/0xcfc) and the
controller (1b36:0010) found on bus 0.

Everything is asyncio: the qtest socket is an asyncio stream, so an emulator served by the
same event loop keeps running while QEMU waits for its reply.  QEMU does the SPDM socket
I/O with its big lock held (it blocks in ``recv()`` until the responder answers), so every
qtest round-trip is bounded by a timeout, and :meth:`QtestNvme.close` always kills QEMU.

Finding a QEMU (:func:`probe_qemu`): ``$SPDM_EMULATOR_QEMU`` (and, for a feature only
newer QEMU has, ``$SPDM_EMULATOR_QEMU_NVME`` and the build ``scripts/qemu-spdm-nvme.sh``
caches in ``$SPDM_EMULATOR_CACHE/qemu-*``), then ``qemu-system-x86_64`` on PATH; the first
whose ``-device nvme,help`` lists the property wins.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import functools
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from types import TracebackType
from typing import Any, ClassVar

from emulator.errors import TransportError

#: QEMU's NVMe controller: Red Hat vendor ID, device 0x0010
NVME_VENDOR_ID = 0x1B36
NVME_DEVICE_ID = 0x0010

# q35 ECAM: PCIEXBAR lives at 00:00.0 config register 0x60; bit 0 enables it
# with the default 256 MiB size (buses 0-255).
ECAM_BASE = 0xB000_0000
PCIEXBAR_REG = 0x60
PCI_CONFIG_ADDRESS = 0xCF8
PCI_CONFIG_DATA = 0xCFC

#: qtest commands sent per batch when pipelining
_BATCH = 256
#: where scripts/qemu-spdm-nvme.sh caches its build
DEFAULT_CACHE = "/var/cache/spdm-emulator"


class QtestError(TransportError):
    """QEMU could not be started, or the device did not behave as expected."""


def ecam_address(bus: int, device: int, function: int, register: int) -> int:
    """Physical address of a config register through ECAM (PCIe r6 sec 7.2.2)."""
    return ECAM_BASE | (bus << 20) | (device << 15) | (function << 12) | register


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child
    """Linux: have the kernel SIGKILL QEMU if the process that started it dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _candidates(feature: str) -> list[str]:
    """QEMU binaries to try for an NVMe property, in order (module docstring)."""
    system = shutil.which("qemu-system-x86_64")
    if feature == "spdm_port":  # DOE: $SPDM_EMULATOR_QEMU alone decides when set
        env = os.environ.get("SPDM_EMULATOR_QEMU")
        if env:
            return [env]
        return [system] if system else []
    found = [
        value
        for value in (
            os.environ.get("SPDM_EMULATOR_QEMU_NVME"),
            os.environ.get("SPDM_EMULATOR_QEMU"),
        )
        if value
    ]
    cache = os.environ.get("SPDM_EMULATOR_CACHE", DEFAULT_CACHE)
    found += sorted(glob.glob(os.path.join(cache, "qemu-*", "bin", "qemu-system-x86_64")))
    if system:
        found.append(system)
    return list(dict.fromkeys(found))


@functools.lru_cache(maxsize=4)
def probe_qemu(feature: str) -> tuple[str | None, str]:
    """The first QEMU whose ``nvme`` device has the property ``feature`` (``spdm_port``:
    DOE, QEMU >= 9.1; ``spdm_trans``: Security Send/Receive too, QEMU >= 10.2), and the
    reason when there is none."""
    candidates = _candidates(feature)
    needs = "QEMU >= 9.1" if feature == "spdm_port" else "QEMU >= 10.2"
    if not candidates:
        hint = (
            "install QEMU >= 9.1, or set SPDM_EMULATOR_QEMU"
            if feature == "spdm_port"
            else "run scripts/qemu-spdm-nvme.sh, or set SPDM_EMULATOR_QEMU_NVME"
        )
        return None, f"no qemu-system-x86_64 found ({hint})"
    reasons = []
    for path in candidates:
        try:
            proc = subprocess.run(
                [path, "-device", "nvme,help"],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            reasons.append(f"{path}: cannot run it: {exc}")
            continue
        if feature in proc.stdout + proc.stderr:
            return path, ""
        reasons.append(
            f"{path}: its nvme device has no {feature} property (needs {needs} built "
            "with the SPDM socket backend)"
        )
    if feature != "spdm_port":
        reasons.append("scripts/qemu-spdm-nvme.sh builds one (Debian's qemu 10.2.2, ~8 min)")
    return None, "; ".join(reasons)


class QtestNvme:
    """A paused QEMU q35 machine with one NVMe controller (``-device nvme,...``).

    Use as ``async with Driver(port) as dev: ...``.  The platform-socket responder must
    already listen on 127.0.0.1:``spdm_port``: QEMU connects to it once, while realizing
    the device, and exits if it cannot.  Subclasses set up their part of the controller
    in :meth:`_setup_device` and name their error class and QEMU feature.
    """

    #: the exception raised for every failure
    error: ClassVar[type[QtestError]] = QtestError
    #: the NVMe property the QEMU binary must have
    feature: ClassVar[str] = "spdm_port"

    def __init__(
        self,
        spdm_port: int,
        *,
        qemu: str | None = None,
        start_timeout: float = 20.0,
        exchange_timeout: float = 20.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.spdm_port = spdm_port
        self.qemu = qemu
        self.start_timeout = start_timeout
        self.exchange_timeout = exchange_timeout
        self.extra_args = tuple(extra_args)
        #: PCI function of the NVMe controller (bus, device, function), set by start()
        self.pci_function: tuple[int, int, int] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._tmpdir: str | None = None
        self._server: asyncio.Server | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._broken: str | None = None
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle

    def _find_binary(self) -> tuple[str | None, str]:
        """The QEMU to start when none was given: (path, reason if absent)."""
        return probe_qemu(self.feature)

    def device_option(self) -> str:
        """The ``-device`` value of the NVMe controller."""
        return f"nvme,serial=spdm0,spdm_port={self.spdm_port}"

    def command_line(self, qemu: str, qtest_socket: str) -> list[str]:
        """The QEMU command line (QEMU connects to ``qtest_socket``, a listening socket)."""
        return [
            qemu,
            "-machine",
            "q35",
            "-accel",
            "tcg",
            "-S",
            "-display",
            "none",
            "-nodefaults",
            "-qtest",
            f"unix:{qtest_socket}",
            "-qtest-log",
            "none",
            "-device",
            self.device_option(),
            *self.extra_args,
        ]

    @property
    def pid(self) -> int | None:
        """QEMU's process ID while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        """QEMU's exit status once it has ended (None while it runs or before start)."""
        return self._proc.returncode if self._proc is not None else None

    @property
    def workdir(self) -> str | None:
        """The temporary directory holding the qtest socket and QEMU's stderr (removed on close)."""
        return self._tmpdir

    async def __aenter__(self) -> Any:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Start QEMU, set up ECAM, find the NVMe controller, set up the subclass's part.

        On any failure QEMU is killed and the temporary files removed before the error
        (naming QEMU's own complaint when it exited) propagates.
        """
        if self._proc is not None or self._broken == "closed":
            raise self.error("QEMU already started (a driver runs QEMU once)")
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> None:
        qemu = self.qemu
        if qemu is None:
            qemu, reason = self._find_binary()
            if qemu is None:
                raise self.error(f"no suitable QEMU: {reason}")
        self._tmpdir = tempfile.mkdtemp(prefix="spdm-qemu-")
        sock_path = os.path.join(self._tmpdir, "qtest.sock")
        connected: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
        connected = asyncio.get_running_loop().create_future()

        def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if connected.done():
                writer.close()
            else:
                connected.set_result((reader, writer))

        # `-qtest unix:PATH` makes QEMU a *client*: listen before starting it.
        self._server = await asyncio.start_unix_server(on_connect, path=sock_path)
        stderr_path = os.path.join(self._tmpdir, "qemu.stderr")
        with open(stderr_path, "wb") as stderr:
            self._proc = await asyncio.create_subprocess_exec(
                *self.command_line(qemu, sock_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                preexec_fn=_set_parent_death_signal if sys.platform == "linux" else None,
            )
        exited: asyncio.Future[Any] = asyncio.ensure_future(self._proc.wait())
        waiting: set[asyncio.Future[Any]] = {connected, exited}
        try:
            done, _ = await asyncio.wait(
                waiting,
                timeout=self.start_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if connected not in done:
                if exited in done:
                    raise self.error(
                        f"QEMU exited with status {self._proc.returncode} before connecting "
                        f"to the qtest socket: {self.stderr_tail()}"
                    )
                raise self.error(
                    f"QEMU did not connect to its qtest socket within {self.start_timeout} s"
                )
        finally:
            exited.cancel()
        self._reader, self._writer = connected.result()
        self._server.close()
        deadline = asyncio.get_running_loop().time() + self.start_timeout
        try:
            await self._find_controller(deadline)
            await self._setup_device(deadline)
        except QtestError as exc:
            # The first qtest answer comes only once machine init (and the device's
            # connection to the responder) is done; a refused connection ends QEMU.
            with contextlib.suppress(TimeoutError, ProcessLookupError):
                await asyncio.wait_for(self._proc.wait(), 1.0)
            if self._proc.returncode is not None:
                raise self.error(
                    f"QEMU exited with status {self._proc.returncode}: {self.stderr_tail()}"
                ) from exc
            raise

    def stderr_tail(self, limit: int = 2000) -> str:
        """The end of QEMU's stderr (for error messages)."""
        if self._tmpdir is None:
            return ""
        try:
            with open(os.path.join(self._tmpdir, "qemu.stderr"), "rb") as f:
                data = f.read()
        except OSError:
            return ""
        text = data[-limit:].decode("utf-8", "replace").strip()
        return text or "(no output)"

    async def close(self) -> None:
        """Kill QEMU (SIGTERM, then SIGKILL after a short wait) and remove temp files."""
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 1.0)
            self._writer = None
            self._reader = None
        if self._server is not None:
            self._server.close()
            self._server = None
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 3.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        self._broken = "closed"

    # ------------------------------------------------------------------ qtest

    def _deadline(self, timeout: float | None = None) -> float:
        loop = asyncio.get_running_loop()
        return loop.time() + (self.exchange_timeout if timeout is None else timeout)

    async def _commands(self, commands: Sequence[str], deadline: float) -> list[str]:
        """Send qtest commands (pipelined) and return their answers, bounded by ``deadline``."""
        if self._broken is not None:
            raise self.error(f"QEMU connection unusable: {self._broken}")
        reader, writer = self._reader, self._writer
        if reader is None or writer is None:
            raise self.error("QEMU not started")
        loop = asyncio.get_running_loop()
        answers: list[str] = []
        try:
            for first in range(0, len(commands), _BATCH):
                chunk = commands[first : first + _BATCH]
                writer.write("".join(c + "\n" for c in chunk).encode("ascii"))
                for command in chunk:
                    while True:
                        remaining = deadline - loop.time()
                        if remaining <= 0:
                            raise TimeoutError
                        line = await asyncio.wait_for(reader.readline(), remaining)
                        if not line:
                            self._broken = "QEMU closed the qtest socket"
                            raise self.error(
                                f"QEMU closed the qtest socket during {command[:60]!r}: "
                                f"{self.stderr_tail()}"
                            )
                        text = line.decode("ascii", "replace").strip()
                        if not text.startswith("IRQ"):  # asynchronous IRQ events
                            break
                    if not text.startswith("OK"):
                        self._broken = f"qtest answered {text!r} to {command[:60]!r}"
                        raise self.error(f"qtest answered {text!r} to {command[:60]!r}")
                    answers.append(text)
        except TimeoutError:
            self._broken = (
                "a qtest command timed out (QEMU may be blocked waiting on the responder)"
            )
            raise self.error(
                f"timed out waiting for QEMU's answer to {commands[len(answers)][:60]!r} "
                "(QEMU blocks in recv() until the responder replies)"
            ) from None
        except (ConnectionError, OSError) as exc:
            self._broken = f"qtest socket error: {exc}"
            raise self.error(
                f"qtest socket error during {commands[len(answers)][:60]!r}: {exc}: "
                f"{self.stderr_tail()}"
            ) from None
        return answers

    def _value(self, answer: str) -> int:
        parts = answer.split()
        if len(parts) != 2:
            raise self.error(f"qtest answer {answer!r} carries no value")
        return int(parts[1], 16)

    async def _readl_many(self, addresses: Sequence[int], deadline: float) -> list[int]:
        answers = await self._commands([f"readl {a:#x}" for a in addresses], deadline)
        return [self._value(a) & 0xFFFF_FFFF for a in answers]

    async def _readl(self, address: int, deadline: float) -> int:
        return (await self._readl_many([address], deadline))[0]

    async def _writel(self, address: int, value: int, deadline: float) -> None:
        await self._commands([f"writel {address:#x} {value:#x}"], deadline)

    async def _writeq(self, address: int, value: int, deadline: float) -> None:
        await self._commands([f"writeq {address:#x} {value:#x}"], deadline)

    async def _write_memory(self, address: int, data: bytes, deadline: float) -> None:
        """Guest memory write (qtest ``b64write``)."""
        if not data:
            return
        encoded = base64.b64encode(data).decode("ascii")
        await self._commands([f"b64write {address:#x} {len(data):#x} {encoded}"], deadline)

    async def _read_memory(self, address: int, size: int, deadline: float) -> bytes:
        """Guest memory read (qtest ``b64read``)."""
        if size == 0:
            return b""
        (answer,) = await self._commands([f"b64read {address:#x} {size:#x}"], deadline)
        parts = answer.split()
        if len(parts) != 2:
            raise self.error(f"qtest answer {answer[:60]!r} carries no data")
        data = base64.b64decode(parts[1])
        if len(data) != size:
            raise self.error(f"qtest b64read returned {len(data)} bytes, asked {size}")
        return data

    def _cfg(self, register: int) -> int:
        if self.pci_function is None:
            raise self.error("NVMe controller not found yet")
        return ecam_address(*self.pci_function, register)

    async def _find_controller(self, deadline: float) -> None:
        # Enable ECAM: PCIEXBAR (00:00.0 reg 0x60) = base | enable, via 0xcf8/0xcfc.
        await self._commands(
            [
                f"outl {PCI_CONFIG_ADDRESS:#x} {0x8000_0000 | PCIEXBAR_REG:#x}",
                f"outl {PCI_CONFIG_DATA:#x} {ECAM_BASE | 1:#x}",
            ],
            deadline,
        )
        ids = await self._readl_many([ecam_address(0, d, 0, 0) for d in range(32)], deadline)
        for device, value in enumerate(ids):
            if value == (NVME_DEVICE_ID << 16) | NVME_VENDOR_ID:
                self.pci_function = (0, device, 0)
                return
        raise self.error("no QEMU NVMe controller (1b36:0010) on PCI bus 0")

    async def _setup_device(self, deadline: float) -> None:
        """The subclass's part of the controller (DOE capability, admin queues)."""


__all__ = [
    "ECAM_BASE",
    "NVME_DEVICE_ID",
    "NVME_VENDOR_ID",
    "QtestError",
    "QtestNvme",
    "ecam_address",
    "probe_qemu",
]
