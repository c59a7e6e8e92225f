"""PCI DOE binding: SPDM over PCIe Data Object Exchange (PCIe r6 sec 6.30, "CMA/SPDM").

A data object is an 8-byte header followed by whole DWORDs of payload:

* DW0: vendor ID (u16 LE, 0x0001 = PCI-SIG), data object type (u8: 0 discovery,
  1 SPDM, 2 secured SPDM), reserved (u8, 0).
* DW1: length of the whole object in DWORDs, header included, in bits 17:0
  (0 means 2^18 DWORDs); bits 31:18 are reserved.

The SPDM message (or DSP0277 record) is zero-padded to a DWORD on encode.  On decode the
message is everything after the header, padding included: SPDM messages carry their own
lengths, so the responder trims.
"""

from __future__ import annotations

import struct

from emulator.errors import TransportError
from emulator.transport.base import PushFraming, RecordFormat, SocketTransport, TransportMessage

#: PCI-SIG vendor ID in DW0 of every CMA/SPDM data object.
PCI_SIG_VENDOR_ID = 0x0001
#: Data object types (PCIe r6 table 6-62 / libspdm ``pcidoe.h``).
DOE_TYPE_DISCOVERY = 0x00
DOE_TYPE_SPDM = 0x01
DOE_TYPE_SECURED_SPDM = 0x02

DOE_HEADER_SIZE = 8
#: pcap link type of DOE captures (libspdm ``industry_standard/link_type_ex.h``): each
#: packet is a whole data object, DOE header first.
LINKTYPE_PCI_DOE = 292
#: Largest data object: 2^18 DWORDs (a length field of 0).
DOE_MAX_SIZE_DW = 1 << 18
DOE_MAX_SIZE = DOE_MAX_SIZE_DW * 4
_LENGTH_MASK = DOE_MAX_SIZE_DW - 1
#: DSP0277 records start with a 4-byte session ID; anything not longer carries nothing.
SESSION_ID_SIZE = 4

_HEADER = struct.Struct("<HBBI")
#: (vendor ID, data object protocol) listed by DOE discovery, in index order.
DISCOVERY_PROTOCOLS = (
    (PCI_SIG_VENDOR_ID, DOE_TYPE_DISCOVERY),
    (PCI_SIG_VENDOR_ID, DOE_TYPE_SPDM),
    (PCI_SIG_VENDOR_ID, DOE_TYPE_SECURED_SPDM),
)


class PciDoeBinding(PushFraming):
    """Encode/decode PCI DOE data objects (types 1 and 2), as libspdm's pcidoe transport.

    Platform socket: NORMAL frames of transport type 2 (spdm-emu ``--trans PCI_DOE``,
    QEMU's ``spdm_trans=doe``).
    """

    name: str = "doe"
    socket_transport: SocketTransport = SocketTransport.PCI_DOE
    pcap_link_type: int | None = LINKTYPE_PCI_DOE
    carries_secured: bool = True

    def decode(self, payload: bytes) -> TransportMessage:
        """Check a whole data object and return its payload (padding included)."""
        size = len(payload)
        if size < DOE_HEADER_SIZE:
            raise TransportError(
                f"DOE data object is {size} bytes, shorter than the {DOE_HEADER_SIZE}-byte header"
            )
        vendor_id, object_type, reserved, length_dw = _HEADER.unpack_from(payload)
        if vendor_id != PCI_SIG_VENDOR_ID:
            raise TransportError(
                f"DOE vendor ID is 0x{vendor_id:04x}, expected 0x{PCI_SIG_VENDOR_ID:04x} (PCI-SIG)"
            )
        if object_type == DOE_TYPE_DISCOVERY:
            raise TransportError(
                "DOE data object type 0x00 (discovery): DOE discovery is handled by the DOE "
                "mailbox, not the SPDM responder"
            )
        if object_type not in (DOE_TYPE_SPDM, DOE_TYPE_SECURED_SPDM):
            raise TransportError(
                f"DOE data object type 0x{object_type:02x} is not SPDM (0x01) "
                f"or secured SPDM (0x02)"
            )
        if reserved != 0:
            raise TransportError(f"DOE header reserved byte is 0x{reserved:02x}, must be 0")
        if length_dw & ~_LENGTH_MASK:
            raise TransportError(
                f"DOE length DWORD is 0x{length_dw:08x}: reserved bits 31:18 must be 0"
            )
        if size % 4:
            raise TransportError(f"DOE data object is {size} bytes, not a whole number of DWORDs")
        declared = length_dw if length_dw else DOE_MAX_SIZE_DW
        if declared * 4 != size:
            raise TransportError(
                f"DOE length field says {declared} DWORDs ({declared * 4} bytes) "
                f"but the data object is {size} bytes ({size // 4} DWORDs)"
            )
        message = payload[DOE_HEADER_SIZE:]
        if not message:
            raise TransportError("DOE data object carries an empty SPDM message")
        secured = object_type == DOE_TYPE_SECURED_SPDM
        if secured and len(message) <= SESSION_ID_SIZE:
            raise TransportError(
                f"secured DOE data object carries {len(message)} bytes, "
                f"too short for a session ID and a record"
            )
        return TransportMessage(message=bytes(message), secured=secured)

    def answer_discovery(self, payload: bytes) -> bytes | None:
        """The DOE discovery response for a discovery request, else None (PCIe r6 6.30.1.1).

        QEMU answers discovery itself, but a requester on the socket (libspdm's
        ``spdm_requester_emu --trans PCI_DOE``) asks the responder, as spdm-emu's
        responder answers it.  The protocols listed are discovery (0), CMA/SPDM (1)
        and secured CMA/SPDM (2); an index past the end is answered as QEMU does
        (vendor 0xFFFF, type 0xFF, next index 0).
        """
        if len(payload) < DOE_HEADER_SIZE + 4:
            return None
        vendor_id, object_type, reserved, length_dw = _HEADER.unpack_from(payload)
        if (
            vendor_id != PCI_SIG_VENDOR_ID
            or object_type != DOE_TYPE_DISCOVERY
            or reserved
            or length_dw * 4 != len(payload)
        ):
            return None
        index = payload[DOE_HEADER_SIZE]
        if index < len(DISCOVERY_PROTOCOLS):
            vendor, proto = DISCOVERY_PROTOCOLS[index]
            next_index = index + 1 if index + 1 < len(DISCOVERY_PROTOCOLS) else 0
        else:
            vendor, proto, next_index = 0xFFFF, 0xFF, 0
        body = struct.pack("<HBB", vendor, proto, next_index)
        return _HEADER.pack(PCI_SIG_VENDOR_ID, DOE_TYPE_DISCOVERY, 0, 3) + body

    def encode(self, message: bytes, secured: bool = False) -> bytes:
        """Wrap ``message`` in a DOE header and zero-pad it to a DWORD."""
        if not message:
            raise TransportError("cannot encode an empty SPDM message in a DOE data object")
        padded = len(message) + (-len(message) % 4)
        total = DOE_HEADER_SIZE + padded
        if total > DOE_MAX_SIZE:
            raise TransportError(
                f"message of {len(message)} bytes does not fit in a DOE data object "
                f"(at most {DOE_MAX_SIZE - DOE_HEADER_SIZE} bytes)"
            )
        object_type = DOE_TYPE_SECURED_SPDM if secured else DOE_TYPE_SPDM
        length_dw = (total // 4) & _LENGTH_MASK  # 2^18 DWORDs is encoded as 0
        header = _HEADER.pack(PCI_SIG_VENDOR_ID, object_type, 0, length_dw)
        return header + message + bytes(padded - len(message))

    @property
    def record_format(self) -> RecordFormat:
        """No sequence number on the wire and no random padding (libspdm pcidoe)."""
        return RecordFormat(sequence_number_size=0, max_random_padding=0)

    def pcap_packet(self, payload: bytes, from_requester: bool) -> bytes:
        """The data object as is (spdm-emu's ``--pcap``, link type 292)."""
        return payload
