"""Drive a real QEMU NVMe controller's PCIe DOE mailbox through QEMU's qtest protocol.

QEMU (>= 9.1, ``-device nvme,spdm_port=P``) gives its NVMe controller a DOE
extended capability (PCIe r6 sec 6.30) whose CMA/SPDM (type 1) and secured
CMA/SPDM (type 2) data objects are forwarded, whole, to a platform-socket
responder on 127.0.0.1:P.  This module plays the *guest*: it starts QEMU paused
(``-S``, no vCPU ever runs) with a qtest server socket, and pokes the DOE
registers through ECAM with ``readl``/``writel`` text commands, exactly as a
guest driver would.  It gives end-to-end tests a real QEMU between the
requester and the emulator.

Everything is asyncio: the qtest socket is an asyncio stream, so an emulator
served by the same event loop keeps running while QEMU waits for its reply.
QEMU handles the DOE GO bit synchronously (it blocks in ``recv()`` until the
responder answers), so every qtest round-trip is bounded by a timeout, and
:meth:`QemuNvmeDoe.close` always kills QEMU.

Register layout (PCIe r6 sec 7.9.24): capability base +4 capabilities,
+8 control (ABORT bit 0, GO bit 31), +0xC status (BUSY bit 0, ERROR bit 2,
DATA_OBJECT_READY bit 31), +0x10 write mailbox, +0x14 read mailbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from emulator.errors import TransportError
from emulator.transport.base import TransportMessage

__all__ = [
    "DOE_TYPE_DISCOVERY",
    "DOE_TYPE_SECURED_SPDM",
    "DOE_TYPE_SPDM",
    "PCI_SIG_VENDOR_ID",
    "DoeProtocol",
    "QemuDoeError",
    "QemuNvmeDoe",
    "find_qemu",
    "qemu_missing_reason",
]

#: PCI-SIG vendor ID, used by the DOE discovery and CMA/SPDM data object types
PCI_SIG_VENDOR_ID = 0x0001
DOE_TYPE_DISCOVERY = 0x00
DOE_TYPE_SPDM = 0x01
DOE_TYPE_SECURED_SPDM = 0x02

#: PCIe extended capability ID of Data Object Exchange (PCIe r6 sec 7.9.24)
PCI_EXT_CAP_ID_DOE = 0x002E
#: QEMU's NVMe controller: Red Hat vendor ID, device 0x0010
NVME_VENDOR_ID = 0x1B36
NVME_DEVICE_ID = 0x0010

# q35 ECAM: PCIEXBAR lives at 00:00.0 config register 0x60; bit 0 enables it
# with the default 256 MiB size (buses 0-255).
ECAM_BASE = 0xB000_0000
PCIEXBAR_REG = 0x60
PCI_CONFIG_ADDRESS = 0xCF8
PCI_CONFIG_DATA = 0xCFC

DOE_CAP = 0x04
DOE_CTRL = 0x08
DOE_STATUS = 0x0C
DOE_WRITE_MAILBOX = 0x10
DOE_READ_MAILBOX = 0x14

DOE_CTRL_ABORT = 1 << 0
DOE_CTRL_GO = 1 << 31
DOE_STATUS_BUSY = 1 << 0
DOE_STATUS_ERROR = 1 << 2
DOE_STATUS_READY = 1 << 31

#: a data object's length field has 18 bits; 0 means 2^18 DWORDs (PCIe r6 sec 6.30.1)
DOE_MAX_DWORDS = 1 << 18

#: qtest commands sent per batch when pipelining mailbox accesses
_BATCH = 256


class QemuDoeError(TransportError):
    """QEMU could not be started, or its DOE mailbox did not behave as expected."""


@dataclass(frozen=True, slots=True)
class DoeProtocol:
    """One entry of DOE discovery (PCIe r6 sec 6.30.1.1): vendor ID and data object type."""

    vendor_id: int
    data_object_type: int


def _qemu_candidates() -> list[str]:
    env = os.environ.get("SPDM_EMULATOR_QEMU")
    if env:
        return [env]
    found = shutil.which("qemu-system-x86_64")
    return [found] if found else []


@functools.lru_cache(maxsize=1)
def _probe_qemu() -> tuple[str | None, str]:
    """Find a QEMU whose ``nvme`` device has ``spdm_port``; return (path, reason if absent)."""
    candidates = _qemu_candidates()
    if not candidates:
        return None, (
            "no qemu-system-x86_64 on PATH (install QEMU >= 9.1, or set SPDM_EMULATOR_QEMU)"
        )
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
        if "spdm_port" in proc.stdout + proc.stderr:
            return path, ""
        reasons.append(
            f"{path}: its nvme device has no spdm_port property (needs QEMU >= 9.1 "
            "built with the SPDM socket backend)"
        )
    return None, "; ".join(reasons)


def find_qemu() -> str | None:
    """Path of an x86_64 QEMU whose NVMe device can forward DOE SPDM objects, or None.

    ``$SPDM_EMULATOR_QEMU`` overrides the ``qemu-system-x86_64`` found on PATH.
    """
    return _probe_qemu()[0]


def qemu_missing_reason() -> str | None:
    """Why :func:`find_qemu` found nothing (a sentence for a skip message), or None."""
    path, reason = _probe_qemu()
    return None if path else reason


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child
    """Linux: have the kernel SIGKILL QEMU if the process that started it dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def ecam_address(bus: int, device: int, function: int, register: int) -> int:
    """Physical address of a config register through ECAM (PCIe r6 sec 7.2.2)."""
    return ECAM_BASE | (bus << 20) | (device << 15) | (function << 12) | register


def doe_object(message: bytes, object_type: int, vendor_id: int = PCI_SIG_VENDOR_ID) -> bytes:
    """Wrap ``message`` in a DOE data object: 8-byte header, zero padding to a DWORD."""
    padded = message + b"\x00" * (-len(message) % 4)
    dwords = 2 + len(padded) // 4
    if dwords > DOE_MAX_DWORDS:
        raise QemuDoeError(f"message: {len(message)} bytes do not fit one DOE data object")
    return struct.pack("<HBBI", vendor_id, object_type, 0, dwords % DOE_MAX_DWORDS) + padded


class QemuNvmeDoe:
    """A paused QEMU q35 machine with one NVMe controller, driven through its DOE mailbox.

    Use as ``async with QemuNvmeDoe(port) as doe: reply = await doe.exchange(msg)``.
    The platform-socket responder must already listen on 127.0.0.1:``spdm_port``:
    QEMU connects to it once, while realizing the device, and exits if it cannot.
    """

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
        #: config-space offset of the DOE extended capability, set by start()
        self.doe_offset: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._tmpdir: str | None = None
        self._server: asyncio.Server | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._broken: str | None = None
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle

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
            f"nvme,serial=spdm0,spdm_port={self.spdm_port}",
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

    async def __aenter__(self) -> QemuNvmeDoe:
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
        """Start QEMU, set up ECAM, find the NVMe controller and its DOE capability.

        On any failure QEMU is killed and the temporary files removed before the
        :class:`QemuDoeError` (naming QEMU's own complaint when it exited) propagates.
        """
        if self._proc is not None or self._broken == "closed":
            raise QemuDoeError("QEMU already started (a QemuNvmeDoe runs QEMU once)")
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> None:
        qemu = self.qemu or find_qemu()
        if qemu is None:
            raise QemuDoeError(f"no suitable QEMU: {qemu_missing_reason()}")
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
                    raise QemuDoeError(
                        f"QEMU exited with status {self._proc.returncode} before connecting "
                        f"to the qtest socket: {self.stderr_tail()}"
                    )
                raise QemuDoeError(
                    f"QEMU did not connect to its qtest socket within {self.start_timeout} s"
                )
        finally:
            exited.cancel()
        self._reader, self._writer = connected.result()
        self._server.close()
        deadline = asyncio.get_running_loop().time() + self.start_timeout
        try:
            await self._setup(deadline)
        except QemuDoeError as exc:
            # The first qtest answer comes only once machine init (and the device's
            # connection to the responder) is done; a refused connection ends QEMU.
            with contextlib.suppress(TimeoutError, ProcessLookupError):
                await asyncio.wait_for(self._proc.wait(), 1.0)
            if self._proc.returncode is not None:
                raise QemuDoeError(
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

    async def _commands(self, commands: Sequence[str], deadline: float) -> list[str]:
        """Send qtest commands (pipelined) and return their answers, bounded by ``deadline``."""
        if self._broken is not None:
            raise QemuDoeError(f"QEMU connection unusable: {self._broken}")
        reader, writer = self._reader, self._writer
        if reader is None or writer is None:
            raise QemuDoeError("QEMU not started")
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
                            raise QemuDoeError(
                                f"QEMU closed the qtest socket during {command!r}: "
                                f"{self.stderr_tail()}"
                            )
                        text = line.decode("ascii", "replace").strip()
                        if not text.startswith("IRQ"):  # asynchronous IRQ events
                            break
                    if not text.startswith("OK"):
                        self._broken = f"qtest answered {text!r} to {command!r}"
                        raise QemuDoeError(f"qtest answered {text!r} to {command!r}")
                    answers.append(text)
        except TimeoutError:
            self._broken = (
                "a qtest command timed out (QEMU may be blocked waiting on the responder)"
            )
            raise QemuDoeError(
                f"timed out waiting for QEMU's answer to {commands[len(answers)]!r} "
                "(after GO, QEMU blocks in recv() until the responder replies)"
            ) from None
        except (ConnectionError, OSError) as exc:
            self._broken = f"qtest socket error: {exc}"
            raise QemuDoeError(
                f"qtest socket error during {commands[len(answers)]!r}: {exc}: {self.stderr_tail()}"
            ) from None
        return answers

    @staticmethod
    def _value(answer: str) -> int:
        parts = answer.split()
        if len(parts) != 2:
            raise QemuDoeError(f"qtest answer {answer!r} carries no value")
        return int(parts[1], 16)

    async def _readl_many(self, addresses: Sequence[int], deadline: float) -> list[int]:
        answers = await self._commands([f"readl {a:#x}" for a in addresses], deadline)
        return [self._value(a) & 0xFFFF_FFFF for a in answers]

    async def _readl(self, address: int, deadline: float) -> int:
        return (await self._readl_many([address], deadline))[0]

    async def _writel(self, address: int, value: int, deadline: float) -> None:
        await self._commands([f"writel {address:#x} {value:#x}"], deadline)

    def _cfg(self, register: int) -> int:
        if self.pci_function is None:
            raise QemuDoeError("NVMe controller not found yet")
        return ecam_address(*self.pci_function, register)

    def _doe(self, register: int) -> int:
        if self.doe_offset is None:
            raise QemuDoeError("DOE capability not found yet")
        return self._cfg(self.doe_offset + register)

    async def _setup(self, deadline: float) -> None:
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
                break
        else:
            raise QemuDoeError("no QEMU NVMe controller (1b36:0010) on PCI bus 0")
        # Walk the extended capability list from 0x100 (PCIe r6 sec 7.6.3).
        offset, seen = 0x100, set()
        while offset and offset not in seen:
            seen.add(offset)
            header = await self._readl(self._cfg(offset), deadline)
            if header & 0xFFFF == PCI_EXT_CAP_ID_DOE:
                self.doe_offset = offset
                break
            offset = (header >> 20) & 0xFFC
        else:
            raise QemuDoeError(
                "the NVMe controller has no DOE extended capability (is spdm_port set?)"
            )
        # Start from a clean mailbox.
        await self._writel(self._doe(DOE_CTRL), DOE_CTRL_ABORT, deadline)

    # ------------------------------------------------------------------ DOE

    async def exchange_object(self, data_object: bytes, timeout: float | None = None) -> bytes:
        """Send one raw DOE data object (whole DWORDs) and return the raw response object.

        The response is read up to the length its header claims; a mailbox that still
        holds data after that, a set ERROR bit or a discarded request raise
        :class:`QemuDoeError`.
        """
        if not data_object or len(data_object) % 4:
            raise QemuDoeError(
                f"data object: {len(data_object)} bytes is not a non-zero number of DWORDs"
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.exchange_timeout if timeout is None else timeout)
        async with self._lock:
            return await self._exchange_locked(data_object, deadline)

    async def _exchange_locked(self, data_object: bytes, deadline: float) -> bytes:
        status = await self._readl(self._doe(DOE_STATUS), deadline)
        if status & (DOE_STATUS_READY | DOE_STATUS_ERROR | DOE_STATUS_BUSY):
            await self._writel(self._doe(DOE_CTRL), DOE_CTRL_ABORT, deadline)
        mailbox = self._doe(DOE_WRITE_MAILBOX)
        dwords = struct.unpack(f"<{len(data_object) // 4}I", data_object)
        # QEMU handles GO synchronously: its answer comes once the responder replied.
        await self._commands(
            [f"writel {mailbox:#x} {dw:#x}" for dw in dwords]
            + [f"writel {self._doe(DOE_CTRL):#x} {DOE_CTRL_GO:#x}"],
            deadline,
        )
        idle_polls = 0
        while True:
            status = await self._readl(self._doe(DOE_STATUS), deadline)
            if status & DOE_STATUS_ERROR:
                await self._writel(self._doe(DOE_CTRL), DOE_CTRL_ABORT, deadline)
                raise QemuDoeError(f"DOE status {status:#010x}: ERROR set after GO")
            if status & DOE_STATUS_READY:
                break
            if not status & DOE_STATUS_BUSY:
                idle_polls += 1
                if idle_polls >= 3:
                    raise QemuDoeError(
                        "no DOE response object after GO (status not busy, not ready): "
                        "QEMU discarded the request (unknown type or wrong length) or the "
                        "responder's reply (socket closed, empty, over 0x1200 bytes; newer "
                        "QEMU also drops unknown socket commands)"
                    )
            await asyncio.sleep(0.001)
        read_mailbox = self._doe(DOE_READ_MAILBOX)
        pop = f"writel {read_mailbox:#x} 0x0"
        head = await self._commands([f"readl {read_mailbox:#x}", pop] * 2, deadline)
        header = [self._value(head[0]), self._value(head[2])]
        length = header[1] & (DOE_MAX_DWORDS - 1) or DOE_MAX_DWORDS
        if length < 2:
            await self._writel(self._doe(DOE_CTRL), DOE_CTRL_ABORT, deadline)
            raise QemuDoeError(
                f"response object: length {length} DWORDs is shorter than its header"
            )
        answers = await self._commands([f"readl {read_mailbox:#x}", pop] * (length - 2), deadline)
        body = [self._value(a) for a in answers[0::2]]
        status = await self._readl(self._doe(DOE_STATUS), deadline)
        if status & (DOE_STATUS_READY | DOE_STATUS_ERROR):
            await self._writel(self._doe(DOE_CTRL), DOE_CTRL_ABORT, deadline)
            raise QemuDoeError(
                f"response object: the mailbox still holds data after the {length} DWORDs "
                f"its length field claims (status {status:#010x})"
            )
        words = header + body
        return struct.pack(f"<{len(words)}I", *(w & 0xFFFF_FFFF for w in words))

    async def discover(self) -> list[DoeProtocol]:
        """DOE discovery (PCIe r6 sec 6.30.1.1): the protocols, index 0 onwards."""
        protocols: list[DoeProtocol] = []
        index = 0
        while True:
            request = struct.pack("<HBBIB3x", PCI_SIG_VENDOR_ID, DOE_TYPE_DISCOVERY, 0, 3, index)
            response = await self.exchange_object(request)
            vendor, obj_type = struct.unpack_from("<HB", response)
            if (vendor, obj_type) != (PCI_SIG_VENDOR_ID, DOE_TYPE_DISCOVERY) or len(response) < 12:
                raise QemuDoeError(
                    f"discovery response: header {response[:8].hex()} is not a discovery object"
                )
            vid, ptype, next_index = struct.unpack_from("<HBB", response, 8)
            protocols.append(DoeProtocol(vid, ptype))
            if next_index == 0:
                return protocols
            if next_index <= index or len(protocols) >= 256:
                raise QemuDoeError(f"discovery response: next index {next_index} after {index}")
            index = next_index

    async def exchange(self, message: bytes, secured: bool = False) -> TransportMessage:
        """Send an SPDM message (or a DSP0277 secured record) and return the response.

        The response payload keeps the DOE padding (SPDM messages carry their own
        lengths); ``secured`` of the result tells whether it came as a type-2 object.
        """
        obj_type = DOE_TYPE_SECURED_SPDM if secured else DOE_TYPE_SPDM
        response = await self.exchange_object(doe_object(message, obj_type))
        vendor, rsp_type, _, _ = struct.unpack_from("<HBBI", response)
        if vendor != PCI_SIG_VENDOR_ID or rsp_type not in (DOE_TYPE_SPDM, DOE_TYPE_SECURED_SPDM):
            raise QemuDoeError(
                f"response object: vendor {vendor:#06x} type {rsp_type:#04x} is not "
                "PCI-SIG CMA/SPDM or secured CMA/SPDM"
            )
        return TransportMessage(response[8:], secured=rsp_type == DOE_TYPE_SECURED_SPDM)
