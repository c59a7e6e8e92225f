"""Drive a real QEMU NVMe controller's Security Send / Security Receive through qtest.

QEMU >= 10.2 (``-device nvme,spdm_port=P,spdm_trans=nvme``) forwards the admin commands
Security Send (0x81) and Security Receive (0x82) with SECP 0xE8 (DMTF SPDM) to a
platform-socket responder on 127.0.0.1:P (``hw/nvme/ctrl.c``; the wire is
:mod:`emulator.transport.storage`'s).  This module plays the *guest's NVMe driver*: it
starts QEMU paused (:mod:`emulator.qemu_qtest`), maps BAR0, enables the controller with
one admin queue pair in guest memory, and submits the commands with PRPs pointing at a
data buffer, exactly as a host would; the completion's status is what QEMU got from the
responder (or its own checks).  No guest kernel is involved.

Controller registers (NVMe 2.0 base spec 3.1): CAP 0x00, CC 0x14 (EN bit 0, IOSQES 19:16,
IOCQES 23:20), CSTS 0x1C (RDY bit 0, CFS bit 1), AQA 0x24, ASQ 0x28, ACQ 0x30, doorbells
from 0x1000 (stride ``4 << CAP.DSTRD``).  A submission entry is 64 bytes (CDW0 opcode and
command ID, NSID, PRP1 at 24, PRP2 at 32, CDW10 at 40, CDW11 at 44); a completion entry 16
bytes (DW3: command ID 15:0, phase 16, status 31:17 as QEMU writes it: 0x4002 = Do Not
Retry | Invalid Field).  Security Send/Receive: CDW10 = SECP << 24 | SPSP1 << 16 |
SPSP0 << 8 | NSSF, CDW11 = Transfer / Allocation Length.

A Security Receive completion does not say how many bytes came back.  :meth:`exchange`
therefore asks DSP0286 PENDING_INFO first (the pending response's length) and then
receives exactly that many bytes; :meth:`security_receive` returns the whole buffer.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

from emulator.qemu_qtest import QtestError, QtestNvme
from emulator.transport.base import TransportMessage
from emulator.transport.storage import (
    OP_DISCOVERY,
    OP_MESSAGE,
    OP_PENDING_INFO,
    OP_SECURED_MESSAGE,
    SECP_SPDM,
    StorageBinding,
)

__all__ = [
    "ADMIN_SECURITY_RECEIVE",
    "ADMIN_SECURITY_SEND",
    "NvmeCompletion",
    "QemuNvmeSecurity",
    "QemuStorageError",
    "cdw10",
]

ADMIN_SECURITY_SEND = 0x81
ADMIN_SECURITY_RECEIVE = 0x82
#: SPC-5 "security protocol information": SECP 0, SPSP 0 lists the supported protocols
SECP_INFO = 0x00

# controller registers (BAR0)
REG_CAP = 0x00
REG_CC = 0x14
REG_CSTS = 0x1C
REG_AQA = 0x24
REG_ASQ = 0x28
REG_ACQ = 0x30
DOORBELLS = 0x1000
CC_EN = 1 << 0
CC_IOSQES = 6 << 16
CC_IOCQES = 4 << 20
CSTS_RDY = 1 << 0
CSTS_CFS = 1 << 1

# PCI config space
PCI_COMMAND = 0x04
PCI_COMMAND_MEMORY = 1 << 1
PCI_COMMAND_MASTER = 1 << 2
PCI_BAR0 = 0x10

# where things live (guest-physical): BAR0 in the 32-bit PCI hole; queues and buffers in
# the first MiBs of RAM, which no firmware ever touches (the vCPUs never run)
BAR0_ADDRESS = 0xE000_0000
ASQ_ADDRESS = 0x0010_0000
ACQ_ADDRESS = 0x0010_1000
PRP_LIST_ADDRESS = 0x0010_2000
DATA_ADDRESS = 0x0020_0000
PAGE = 0x1000
#: the largest data buffer: one PRP list page of entries
MAX_TRANSFER = (PAGE // 8) * PAGE
QUEUE_ENTRIES = 16
SQE_SIZE = 64
CQE_SIZE = 16

_SQE = struct.Struct("<IIQQQQIIIIII")
_CQE = struct.Struct("<IIII")


class QemuStorageError(QtestError):
    """QEMU could not be started, or its NVMe controller did not behave as expected."""


@dataclass(frozen=True, slots=True)
class NvmeCompletion:
    """What came back for one admin command: the completion status (NVMe status field as
    QEMU sets it: 0 success, 0x4002 Do Not Retry | Invalid Field, 0x4004 Do Not Retry |
    Data Transfer Error...) and, for a Security Receive, the data buffer."""

    status: int
    data: bytes = b""

    @property
    def ok(self) -> bool:
        return self.status == 0


def cdw10(secp: int, spsp0: int, spsp1: int = 0, nssf: int = 0) -> int:
    """CDW10 of Security Send/Receive: SECP 31:24, SPSP1 23:16, SPSP0 15:8, NSSF 7:0."""
    return (secp << 24) | (spsp1 << 16) | (spsp0 << 8) | nssf


class QemuNvmeSecurity(QtestNvme):
    """A paused QEMU with one NVMe controller, driven through admin Security Send and
    Security Receive (``spdm_trans=nvme``).

    Use as ``async with QemuNvmeSecurity(port) as dev: reply = await dev.exchange(msg)``.
    The platform-socket responder must already listen on 127.0.0.1:``spdm_port``.
    """

    error = QemuStorageError
    feature = "spdm_trans"

    #: doorbell stride (bytes), from CAP.DSTRD; set by start()
    doorbell_stride = 4
    _sq_tail = 0
    _cq_head = 0
    _phase = 1
    _next_cid = 1

    def device_option(self) -> str:
        return f"nvme,serial=spdm0,spdm_port={self.spdm_port},spdm_trans=nvme"

    async def __aenter__(self) -> QemuNvmeSecurity:
        await self.start()
        return self

    # ------------------------------------------------------------------ set-up

    def _bar(self, register: int) -> int:
        return BAR0_ADDRESS + register

    async def _readq(self, address: int, deadline: float) -> int:
        (answer,) = await self._commands([f"readq {address:#x}"], deadline)
        return self._value(answer)

    async def _wait_ready(self, ready: bool, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            csts = await self._readl(self._bar(REG_CSTS), deadline)
            if csts & CSTS_CFS:
                raise QemuStorageError(f"NVMe controller fatal status (CSTS {csts:#010x})")
            if bool(csts & CSTS_RDY) == ready:
                return
            if loop.time() > deadline:
                state = "ready" if ready else "disabled"
                raise QemuStorageError(f"NVMe controller not {state} (CSTS {csts:#010x})")
            await asyncio.sleep(0.002)

    async def _setup_device(self, deadline: float) -> None:
        # BAR0 (64-bit memory BAR), then memory space and bus mastering (DMA to the queues)
        await self._writel(self._cfg(PCI_BAR0), BAR0_ADDRESS, deadline)
        await self._writel(self._cfg(PCI_BAR0 + 4), 0, deadline)
        await self._writel(
            self._cfg(PCI_COMMAND), PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER, deadline
        )
        cap = await self._readq(self._bar(REG_CAP), deadline)
        self.doorbell_stride = 4 << ((cap >> 32) & 0xF)
        await self._writel(self._bar(REG_CC), 0, deadline)
        await self._wait_ready(False, deadline)
        await self._write_memory(ASQ_ADDRESS, bytes(QUEUE_ENTRIES * SQE_SIZE), deadline)
        await self._write_memory(ACQ_ADDRESS, bytes(QUEUE_ENTRIES * CQE_SIZE), deadline)
        size = QUEUE_ENTRIES - 1
        await self._writel(self._bar(REG_AQA), (size << 16) | size, deadline)
        await self._writeq(self._bar(REG_ASQ), ASQ_ADDRESS, deadline)
        await self._writeq(self._bar(REG_ACQ), ACQ_ADDRESS, deadline)
        await self._writel(self._bar(REG_CC), CC_EN | CC_IOSQES | CC_IOCQES, deadline)
        await self._wait_ready(True, deadline)
        self._sq_tail, self._cq_head, self._phase = 0, 0, 1

    # ------------------------------------------------------------------ admin commands

    async def _prps(self, length: int, deadline: float) -> tuple[int, int]:
        """PRP1/PRP2 of a ``length``-byte buffer at DATA_ADDRESS (a PRP list beyond 2 pages)."""
        if length > MAX_TRANSFER:
            raise QemuStorageError(
                f"{length}-byte transfer: this driver moves at most {MAX_TRANSFER}"
            )
        pages = max(1, -(-length // PAGE))
        if pages == 1:
            return DATA_ADDRESS, 0
        if pages == 2:
            return DATA_ADDRESS, DATA_ADDRESS + PAGE
        entries = b"".join(struct.pack("<Q", DATA_ADDRESS + PAGE * i) for i in range(1, pages))
        await self._write_memory(PRP_LIST_ADDRESS, entries, deadline)
        return DATA_ADDRESS, PRP_LIST_ADDRESS

    async def admin(
        self, opcode: int, cdw10_value: int, cdw11_value: int, length: int, deadline: float
    ) -> int:
        """Submit one admin command with a ``length``-byte data buffer at DATA_ADDRESS and
        wait for its completion; returns the status field."""
        cid = self._next_cid
        self._next_cid = cid % 0xFFFF + 1
        prp1, prp2 = await self._prps(length, deadline)
        sqe = _SQE.pack(
            opcode | (cid << 16), 0, 0, 0, prp1, prp2, cdw10_value, cdw11_value, 0, 0, 0, 0
        )
        await self._write_memory(ASQ_ADDRESS + self._sq_tail * SQE_SIZE, sqe, deadline)
        self._sq_tail = (self._sq_tail + 1) % QUEUE_ENTRIES
        # QEMU processes the queue in a bottom half after this doorbell write; the socket
        # I/O with the responder happens there, with the big lock held
        await self._writel(self._bar(DOORBELLS), self._sq_tail, deadline)
        entry = ACQ_ADDRESS + self._cq_head * CQE_SIZE
        loop = asyncio.get_running_loop()
        while True:
            dw3: int = _CQE.unpack(await self._read_memory(entry, CQE_SIZE, deadline))[3]
            if (dw3 >> 16) & 1 == self._phase:
                break
            if loop.time() > deadline:
                raise QemuStorageError(
                    f"no completion for admin command 0x{opcode:02x} (command ID {cid})"
                )
            await asyncio.sleep(0.001)
        self._cq_head = (self._cq_head + 1) % QUEUE_ENTRIES
        if self._cq_head == 0:
            self._phase ^= 1
        await self._writel(self._bar(DOORBELLS + self.doorbell_stride), self._cq_head, deadline)
        if dw3 & 0xFFFF != cid:
            raise QemuStorageError(f"completion for command ID {dw3 & 0xFFFF}, expected {cid}")
        return dw3 >> 17

    async def security_send(
        self,
        data: bytes,
        spsp0: int,
        *,
        secp: int = SECP_SPDM,
        spsp1: int = 0,
        transfer_length: int | None = None,
        timeout: float | None = None,
    ) -> NvmeCompletion:
        """Security Send of ``data`` (``transfer_length``: CDW11, default ``len(data)``)."""
        deadline = self._deadline(timeout)
        length = len(data) if transfer_length is None else transfer_length
        async with self._lock:
            await self._write_memory(DATA_ADDRESS, data, deadline)
            status = await self.admin(
                ADMIN_SECURITY_SEND,
                cdw10(secp, spsp0, spsp1),
                length,
                max(length, len(data)),
                deadline,
            )
        return NvmeCompletion(status)

    async def security_receive(
        self,
        allocation_length: int,
        spsp0: int,
        *,
        secp: int = SECP_SPDM,
        spsp1: int = 0,
        timeout: float | None = None,
    ) -> NvmeCompletion:
        """Security Receive into a zeroed ``allocation_length``-byte buffer; the data is the
        whole buffer (the completion does not say how much QEMU wrote)."""
        deadline = self._deadline(timeout)
        async with self._lock:
            await self._write_memory(DATA_ADDRESS, bytes(allocation_length), deadline)
            status = await self.admin(
                ADMIN_SECURITY_RECEIVE,
                cdw10(secp, spsp0, spsp1),
                allocation_length,
                allocation_length,
                deadline,
            )
            data = b""
            if status == 0 and allocation_length:
                data = await self._read_memory(DATA_ADDRESS, allocation_length, deadline)
        return NvmeCompletion(status, data)

    # ------------------------------------------------------------------ SPDM on top

    async def supported_protocols(self) -> list[int]:
        """SECP 0 / SPSP 0, answered by QEMU itself: the supported security protocols."""
        result = await self.security_receive(16, 0, secp=SECP_INFO)
        if not result.ok:
            raise QemuStorageError(f"supported protocols: status 0x{result.status:04x}")
        count = int.from_bytes(result.data[6:8], "big")
        return list(result.data[8 : 8 + count])

    async def discovery(self, allocation_length: int = 32) -> bytes:
        """DSP0286 DISCOVERY (Security Receive, SPSP0 0x04): the responder's answer."""
        result = await self.security_receive(allocation_length, OP_DISCOVERY << 2)
        if not result.ok:
            raise QemuStorageError(f"DISCOVERY: status 0x{result.status:04x}")
        return result.data

    async def pending_info(self) -> tuple[bool, int]:
        """DSP0286 PENDING_INFO (Security Receive, SPSP0 0x08): (a response is pending,
        its length)."""
        result = await self.security_receive(12, OP_PENDING_INFO << 2)
        if not result.ok:
            raise QemuStorageError(f"PENDING_INFO: status 0x{result.status:04x}")
        flag, length = struct.unpack_from("<II", result.data, 4)
        return bool(flag & 1), length

    async def exchange(self, message: bytes, secured: bool = False) -> TransportMessage:
        """Send an SPDM message (or a DSP0277 record) and return the response: Security
        Send (MESSAGE, or SECURED_MESSAGE with the 4 reserved bytes), PENDING_INFO for the
        response's length, then a Security Receive of exactly that length."""
        binding = StorageBinding()
        operation = OP_SECURED_MESSAGE if secured else OP_MESSAGE
        data = binding.encode(message, secured)
        sent = await self.security_send(data, operation << 2)
        if not sent.ok:
            raise QemuStorageError(f"Security Send: status 0x{sent.status:04x}")
        pending, length = await self.pending_info()
        if not pending or length == 0:
            raise QemuStorageError("PENDING_INFO: no response pending after the request")
        received = await self.security_receive(length, operation << 2)
        if not received.ok:
            raise QemuStorageError(f"Security Receive: status 0x{received.status:04x}")
        try:
            return binding.decode_response(received.data, secured)
        except Exception as exc:  # TransportError: a malformed response
            raise QemuStorageError(f"Security Receive: {exc}") from None
