"""GET_ENDPOINT_INFO / ENDPOINT_INFO (DSP0274 1.3 10.16) and the device class identifier,
little-endian, as libspdm's ``industry_standard/spdm.h``:

* GET_ENDPOINT_INFO: Param1 = SubCode (1: device class identifier), Param2 bits 3:0 =
  SlotID; RequestAttributes (u8, bit 0 SignatureRequested), Reserved (3), and the
  32-byte Nonce when a signature is requested.
* ENDPOINT_INFO: Param1 reserved, Param2 bits 3:0 = SlotID; Reserved (u32); Nonce (32,
  signed only); EPInfoLength (u32); EPInfo; Signature (signed only).
* Device class identifier: NumIdentifiers (u8), Reserved (3), then each element:
  IdElemLength (u8, the bytes after it), SVH (ID u8, VendorIDLen u8, VendorID),
  NumSubIds (u8), then each sub-identifier: SubIdLen (u8), SubIdentifier.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from emulator.codec.constants import RequestCode, ResponseCode
from emulator.codec.messages import HEADER_SIZE, build_header
from emulator.errors import CodecError

SUBCODE_DEVICE_CLASS_IDENTIFIER = 0x01
SIGNATURE_REQUESTED = 0x01
SLOT_ID_MASK = 0x0F
NONCE_SIZE = 32
GET_ENDPOINT_INFO_SIZE = HEADER_SIZE + 4
ENDPOINT_INFO_HEADER_SIZE = HEADER_SIZE + 4


@dataclass(slots=True)
class GetEndpointInfoRequest:
    version: int
    sub_code: int = SUBCODE_DEVICE_CLASS_IDENTIFIER
    slot_id: int = 0
    attributes: int = 0
    nonce: bytes = b""

    @property
    def signed(self) -> bool:
        return bool(self.attributes & SIGNATURE_REQUESTED)

    def encode(self) -> bytes:
        out = build_header(
            self.version, RequestCode.GET_ENDPOINT_INFO, self.sub_code, self.slot_id & SLOT_ID_MASK
        ) + bytes((self.attributes, 0, 0, 0))
        if self.signed:
            if len(self.nonce) != NONCE_SIZE:
                raise CodecError("GET_ENDPOINT_INFO: a signed request carries a 32-byte nonce")
            out += self.nonce
        return out

    @classmethod
    def decode(cls, data: bytes) -> tuple[GetEndpointInfoRequest, int]:
        """Parse; returns the request and its size (with the nonce when signed)."""
        if len(data) < GET_ENDPOINT_INFO_SIZE:
            raise CodecError(f"GET_ENDPOINT_INFO: {len(data)} bytes, need {GET_ENDPOINT_INFO_SIZE}")
        attributes = data[4]
        size = GET_ENDPOINT_INFO_SIZE
        nonce = b""
        if attributes & SIGNATURE_REQUESTED:
            size += NONCE_SIZE
            if len(data) < size:
                raise CodecError(
                    f"GET_ENDPOINT_INFO: SignatureRequested needs {size} bytes (the nonce), "
                    f"got {len(data)}"
                )
            nonce = bytes(data[GET_ENDPOINT_INFO_SIZE:size])
        return cls(data[0], data[2], data[3] & SLOT_ID_MASK, attributes, nonce), size


@dataclass(slots=True)
class EndpointInfoResponse:
    """ENDPOINT_INFO; ``nonce`` empty for an unsigned response."""

    version: int
    slot_id: int
    ep_info: bytes
    nonce: bytes = b""
    signature: bytes = b""

    def encode_unsigned(self) -> bytes:
        """The response up to (not including) the signature: what the signature covers."""
        return (
            build_header(self.version, ResponseCode.ENDPOINT_INFO, 0, self.slot_id & SLOT_ID_MASK)
            + bytes(4)
            + self.nonce
            + struct.pack("<I", len(self.ep_info))
            + self.ep_info
        )

    def encode(self) -> bytes:
        return self.encode_unsigned() + self.signature

    @classmethod
    def decode(
        cls, data: bytes, signed: bool, signature_size: int = 0
    ) -> tuple[EndpointInfoResponse, int]:
        """Parse; ``signed`` says whether a nonce and a signature follow."""
        off = ENDPOINT_INFO_HEADER_SIZE
        nonce = b""
        if signed:
            nonce = bytes(data[off : off + NONCE_SIZE])
            off += NONCE_SIZE
        if len(data) < off + 4:
            raise CodecError(f"ENDPOINT_INFO: {len(data)} bytes, need {off + 4}")
        (length,) = struct.unpack_from("<I", data, off)
        off += 4
        end = off + length + (signature_size if signed else 0)
        if len(data) < end:
            raise CodecError(f"ENDPOINT_INFO: EPInfoLength {length} needs {end} bytes")
        ep_info = bytes(data[off : off + length])
        signature = bytes(data[off + length : end]) if signed else b""
        return cls(data[0], data[3] & SLOT_ID_MASK, ep_info, nonce, signature), end


@dataclass(frozen=True, slots=True)
class ClassIdentifier:
    """One device class identifier element: the SVH registry ID and VendorID, and its
    subordinate identifiers."""

    registry_id: int
    vendor_id: bytes = b""
    sub_ids: tuple[bytes, ...] = field(default_factory=tuple)

    def encode(self) -> bytes:
        if len(self.sub_ids) > 0xFF:
            raise CodecError("device class identifier: more than 255 sub-identifiers")
        body = bytes((self.registry_id, len(self.vendor_id))) + self.vendor_id
        body += bytes((len(self.sub_ids),))
        for sub in self.sub_ids:
            if len(sub) > 0xFF:
                raise CodecError("device class identifier: a sub-identifier over 255 bytes")
            body += bytes((len(sub),)) + sub
        if len(body) > 0xFF:
            raise CodecError(f"device class identifier element is {len(body)} bytes (max 255)")
        return bytes((len(body),)) + body


def encode_device_class_identifier(elements: Sequence[ClassIdentifier]) -> bytes:
    """EPInfo for SubCode 1: NumIdentifiers, Reserved (3), the elements."""
    if not 1 <= len(elements) <= 0xFF:
        raise CodecError("device class identifier: 1..255 identifier elements")
    return bytes((len(elements), 0, 0, 0)) + b"".join(e.encode() for e in elements)


def decode_device_class_identifier(data: bytes) -> list[ClassIdentifier]:
    """Parse EPInfo of SubCode 1; CodecError naming what does not fit."""
    if len(data) < 4:
        raise CodecError("device class identifier: shorter than its 4-byte header")
    count = data[0]
    off = 4
    out: list[ClassIdentifier] = []
    for n in range(count):
        if off >= len(data):
            raise CodecError(f"identifier {n}: past the end")
        elem_len = data[off]
        end = off + 1 + elem_len
        if end > len(data) or elem_len < 3:
            raise CodecError(f"identifier {n}: IdElemLength {elem_len} does not fit")
        p = off + 1
        reg, vlen = data[p], data[p + 1]
        p += 2
        vendor = bytes(data[p : p + vlen])
        p += vlen
        if p >= end:
            raise CodecError(f"identifier {n}: no NumSubIds")
        nsub = data[p]
        p += 1
        subs: list[bytes] = []
        for s in range(nsub):
            if p >= end:
                raise CodecError(f"identifier {n}: sub-identifier {s} past the element")
            slen = data[p]
            if p + 1 + slen > end:
                raise CodecError(f"identifier {n}: sub-identifier {s} past the element")
            subs.append(bytes(data[p + 1 : p + 1 + slen]))
            p += 1 + slen
        if p != end:
            raise CodecError(f"identifier {n}: {end - p} bytes left in the element")
        out.append(ClassIdentifier(reg, vendor, tuple(subs)))
        off = end
    if off != len(data):
        raise CodecError(f"device class identifier: {len(data) - off} trailing bytes")
    return out
