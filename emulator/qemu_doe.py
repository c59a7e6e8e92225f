"""Drive a real QEMU NVMe controller's PCIe DOE mailbox through QEMU's qtest protocol.

QEMU (>= 9.1, ``-device nvme,spdm_port=P``) gives its NVMe controller a DOE
extended capability (PCIe r6 sec 6.30) whose CMA/SPDM (type 1) and secured
CMA/SPDM (type 2) data objects are forwarded, whole, to a platform-socket
responder on 127.0.0.1:P.  This module plays the *guest*: it starts QEMU paused
(``-S``, no vCPU ever runs) with a qtest server socket, and pokes the DOE
registers through ECAM with ``readl``/``writel`` text commands, exactly as a
guest driver would.  It gives end-to-end tests a real QEMU between the
requester and the emulator.

The QEMU lifecycle and the qtest plumbing are :mod:`emulator.qemu_qtest`'s (shared
with :mod:`emulator.qemu_nvme`, the Security Send/Receive driver).  QEMU handles the
DOE GO bit synchronously (it blocks in ``recv()`` until the responder answers), so
every qtest round-trip is bounded by a timeout, and :meth:`QemuNvmeDoe.close` always
kills QEMU.

Register layout (PCIe r6 sec 7.9.24): capability base +4 capabilities,
+8 control (ABORT bit 0, GO bit 31), +0xC status (BUSY bit 0, ERROR bit 2,
DATA_OBJECT_READY bit 31), +0x10 write mailbox, +0x14 read mailbox.
"""

from __future__ import annotations

import asyncio
import functools
import struct
from dataclasses import dataclass

from emulator.qemu_qtest import (
    ECAM_BASE,
    NVME_DEVICE_ID,
    NVME_VENDOR_ID,
    QtestError,
    QtestNvme,
    ecam_address,
    probe_qemu,
)
from emulator.transport.base import TransportMessage

__all__ = [
    "DOE_TYPE_DISCOVERY",
    "DOE_TYPE_SECURED_SPDM",
    "DOE_TYPE_SPDM",
    "ECAM_BASE",
    "NVME_DEVICE_ID",
    "NVME_VENDOR_ID",
    "PCI_SIG_VENDOR_ID",
    "DoeProtocol",
    "QemuDoeError",
    "QemuNvmeDoe",
    "ecam_address",
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


class QemuDoeError(QtestError):
    """QEMU could not be started, or its DOE mailbox did not behave as expected."""


@dataclass(frozen=True, slots=True)
class DoeProtocol:
    """One entry of DOE discovery (PCIe r6 sec 6.30.1.1): vendor ID and data object type."""

    vendor_id: int
    data_object_type: int


@functools.lru_cache(maxsize=1)
def _probe_qemu() -> tuple[str | None, str]:
    """A QEMU whose ``nvme`` device has ``spdm_port``: (path, reason if absent)."""
    return probe_qemu.__wrapped__("spdm_port")


def find_qemu() -> str | None:
    """Path of an x86_64 QEMU whose NVMe device can forward DOE SPDM objects, or None.

    ``$SPDM_EMULATOR_QEMU`` overrides the ``qemu-system-x86_64`` found on PATH.
    """
    return _probe_qemu()[0]


def qemu_missing_reason() -> str | None:
    """Why :func:`find_qemu` found nothing (a sentence for a skip message), or None."""
    path, reason = _probe_qemu()
    return None if path else reason


def doe_object(message: bytes, object_type: int, vendor_id: int = PCI_SIG_VENDOR_ID) -> bytes:
    """Wrap ``message`` in a DOE data object: 8-byte header, zero padding to a DWORD."""
    padded = message + b"\x00" * (-len(message) % 4)
    dwords = 2 + len(padded) // 4
    if dwords > DOE_MAX_DWORDS:
        raise QemuDoeError(f"message: {len(message)} bytes do not fit one DOE data object")
    return struct.pack("<HBBI", vendor_id, object_type, 0, dwords % DOE_MAX_DWORDS) + padded


class QemuNvmeDoe(QtestNvme):
    """A paused QEMU q35 machine with one NVMe controller, driven through its DOE mailbox.

    Use as ``async with QemuNvmeDoe(port) as doe: reply = await doe.exchange(msg)``.
    The platform-socket responder must already listen on 127.0.0.1:``spdm_port``:
    QEMU connects to it once, while realizing the device, and exits if it cannot.
    """

    error = QemuDoeError
    feature = "spdm_port"
    #: config-space offset of the DOE extended capability, set by start()
    doe_offset: int | None = None

    def _find_binary(self) -> tuple[str | None, str]:
        return _probe_qemu()

    async def __aenter__(self) -> QemuNvmeDoe:
        await self.start()
        return self

    def _doe(self, register: int) -> int:
        if self.doe_offset is None:
            raise QemuDoeError("DOE capability not found yet")
        return self._cfg(self.doe_offset + register)

    async def _setup_device(self, deadline: float) -> None:
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
