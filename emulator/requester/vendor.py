"""VENDOR_DEFINED_REQUEST and an IDE_KM requester (PCIe r6 6.33.3) over a
:class:`~emulator.requester.requester.Requester`, plain or inside a secured session.

The checks are those of DMTF spdm-emu's ``pci_ide_km_requester_lib`` and
``pci_doe_spdm_vendor_send_receive_data``: a VENDOR_DEFINED_RESPONSE in the negotiated
version that echoes StandardID and VendorID, a PCI-SIG payload that echoes the protocol
ID, then per IDE_KM answer its ObjectID, exact size and the echoed StreamID,
KeySubStream and PortIndex.  Layouts are built here byte by byte (``struct``), not with
the responder's codec.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from emulator.codec.constants import RequestCode, ResponseCode
from emulator.errors import RequesterError
from emulator.requester.requester import Requester

PCISIG = 3
PCISIG_VENDOR_ID = b"\x01\x00"
IDE_KM_PROTOCOL = 0x00
QUERY, QUERY_RESP, KEY_PROG, KP_ACK, K_SET_GO, K_SET_STOP, K_GOSTOP_ACK = range(7)


async def vendor_defined(
    req: Requester,
    standard_id: int,
    vendor_id: bytes,
    payload: bytes,
    *,
    session_id: int | None = None,
) -> bytes:
    """Send VENDOR_DEFINED_REQUEST; return the response payload (ERROR raises
    SpdmErrorReply)."""
    v = req.version
    request = (
        bytes((v, RequestCode.VENDOR_DEFINED_REQUEST, 0, 0))
        + struct.pack("<HB", standard_id, len(vendor_id))
        + vendor_id
        + struct.pack("<H", len(payload))
        + payload
    )
    rsp = await req.send(request, session_id=session_id)
    req.expect(rsp, ResponseCode.VENDOR_DEFINED_RESPONSE)
    if len(rsp) < 7:
        raise RequesterError(f"VENDOR_DEFINED_RESPONSE is {len(rsp)} bytes")
    sid, vlen = struct.unpack_from("<HB", rsp, 4)
    if sid != standard_id or rsp[7 : 7 + vlen] != vendor_id:
        raise RequesterError(
            f"VENDOR_DEFINED_RESPONSE for StandardID {sid} VendorID "
            f"{rsp[7 : 7 + vlen].hex()}, asked {standard_id} {vendor_id.hex()}"
        )
    off = 7 + vlen
    if len(rsp) < off + 2:
        raise RequesterError("VENDOR_DEFINED_RESPONSE has no PayloadLength")
    (plen,) = struct.unpack_from("<H", rsp, off)
    if len(rsp) != off + 2 + plen:
        raise RequesterError(
            f"VENDOR_DEFINED_RESPONSE: PayloadLength {plen}, {len(rsp) - off - 2} bytes follow"
        )
    return rsp[off + 2 :]


@dataclass(frozen=True)
class QueryResult:
    """What QUERY_RESP reported."""

    port_index: int
    dev_func_num: int
    bus_num: int
    segment: int
    max_port_index: int
    registers: tuple[int, ...]


class IdeKmRequester:
    """IDE_KM QUERY / KEY_PROG / K_SET_GO / K_SET_STOP (the root port's side)."""

    def __init__(self, req: Requester, session_id: int | None = None) -> None:
        self.req = req
        self.session_id = session_id

    async def exchange(self, message: bytes) -> bytes:
        """One IDE_KM message (from its ObjectID) -> the IDE_KM answer (from its ObjectID)."""
        payload = await vendor_defined(
            self.req,
            PCISIG,
            PCISIG_VENDOR_ID,
            bytes((IDE_KM_PROTOCOL,)) + message,
            session_id=self.session_id,
        )
        if not payload or payload[0] != IDE_KM_PROTOCOL:
            raise RequesterError(f"PCI-SIG answer with protocol {payload[:1].hex()}, not IDE_KM")
        return payload[1:]

    async def query(self, port_index: int = 0) -> QueryResult:
        rsp = await self.exchange(bytes((QUERY, 0, port_index)))
        if len(rsp) < 7 or (len(rsp) - 7) % 4:
            raise RequesterError(f"QUERY_RESP is {len(rsp)} bytes: 7 + 4n expected")
        if rsp[0] != QUERY_RESP:
            raise RequesterError(f"QUERY answered with ObjectID 0x{rsp[0]:02X}")
        if rsp[2] != port_index:
            raise RequesterError(f"QUERY_RESP for port {rsp[2]}, asked {port_index}")
        n = (len(rsp) - 7) // 4
        return QueryResult(rsp[2], rsp[3], rsp[4], rsp[5], rsp[6], struct.unpack(f"<{n}I", rsp[7:]))

    def _check_ack(self, rsp: bytes, obj: int, stream_id: int, kss: int, port: int) -> None:
        if len(rsp) != 7:
            raise RequesterError(f"IDE_KM answer is {len(rsp)} bytes, 7 expected")
        if rsp[0] != obj:
            raise RequesterError(f"IDE_KM ObjectID 0x{rsp[0]:02X}, expected 0x{obj:02X}")
        if (rsp[3], rsp[5], rsp[6]) != (stream_id, kss, port):
            raise RequesterError(
                f"IDE_KM answer echoes stream {rsp[3]} sub-stream 0x{rsp[5]:02X} port "
                f"{rsp[6]}, asked {stream_id} 0x{kss:02X} {port}"
            )

    async def key_prog(
        self, stream_id: int, key_sub_stream: int, port_index: int, key: bytes, ifv: bytes
    ) -> int:
        """KEY_PROG; returns the KP_ACK Status (0 = success)."""
        if len(key) != 32 or len(ifv) != 8:
            raise RequesterError("KEY_PROG needs a 32-byte key and an 8-byte IFV")
        msg = bytes((KEY_PROG, 0, 0, stream_id, 0, key_sub_stream, port_index)) + key + ifv
        rsp = await self.exchange(msg)
        self._check_ack(rsp, KP_ACK, stream_id, key_sub_stream, port_index)
        return rsp[4]

    async def _set(self, obj: int, stream_id: int, key_sub_stream: int, port_index: int) -> None:
        rsp = await self.exchange(bytes((obj, 0, 0, stream_id, 0, key_sub_stream, port_index)))
        self._check_ack(rsp, K_GOSTOP_ACK, stream_id, key_sub_stream, port_index)

    async def set_go(self, stream_id: int, key_sub_stream: int, port_index: int) -> None:
        """K_SET_GO -> K_GOSTOP_ACK."""
        await self._set(K_SET_GO, stream_id, key_sub_stream, port_index)

    async def set_stop(self, stream_id: int, key_sub_stream: int, port_index: int) -> None:
        """K_SET_STOP -> K_GOSTOP_ACK."""
        await self._set(K_SET_STOP, stream_id, key_sub_stream, port_index)
