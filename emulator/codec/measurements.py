"""GET_MEASUREMENTS / MEASUREMENTS and measurement blocks (DSP0274 10.11, 1.0-1.3).

Request (``spdm_get_measurements_request_t``)::

    SPDMVersion, 0xE0, Param1 = attributes, Param2 = MeasurementOperation
    [Nonce (32)              only when Param1 bit 0 (SignatureRequested)]
    [SlotIDParam (1)         only when signed, SPDM 1.1+; bits 3:0 = slot]
    [RequesterContext (8)    SPDM 1.3+, signed or not]

Param1 bits: 0 SignatureRequested, 1 RawBitStreamRequested (1.2+), 2
NewMeasurementRequested (1.3).  Param2: 0 = total number of indices, 0xFF = all
blocks, otherwise one index.

Response (``spdm_measurements_response_t``)::

    SPDMVersion, 0x60, Param1, Param2
    NumberOfBlocks (1), MeasurementRecordLength (3, little-endian)
    MeasurementRecord (MeasurementRecordLength)
    Nonce (32), OpaqueDataLength (2), OpaqueData
    [RequesterContext (8)    SPDM 1.3+]
    [Signature               when requested]

Param1 = TotalNumberOfMeasurement for operation 0, else 0.  Param2 (signed, 1.1+):
bits 3:0 the slot, 1.2+ bits 5:4 content changed.

A measurement block is ``Index, MeasurementSpecification, MeasurementSize (2),
Measurement``; the DMTF measurement is ``DMTFSpecMeasurementValueType (bit 7 =
raw bit stream), DMTFSpecMeasurementValueSize (2), DMTFSpecMeasurementValue``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, IntFlag

import construct as cs

from emulator.codec.constants import MeasurementSpec, RequestCode, ResponseCode
from emulator.codec.layout import Layout
from emulator.errors import CodecError

NONCE_SIZE = 32
REQUESTER_CONTEXT_SIZE = 8

#: GET_MEASUREMENTS Param1 (request attributes)
ATTR_SIGNATURE_REQUESTED = 0x01
ATTR_RAW_BIT_STREAM_REQUESTED = 0x02  # SPDM 1.2+
ATTR_NEW_MEASUREMENT_REQUESTED = 0x04  # SPDM 1.3

#: GET_MEASUREMENTS Param2 (MeasurementOperation)
OPERATION_COUNT = 0x00
OPERATION_ALL = 0xFF

SLOT_ID_MASK = 0x0F
#: SlotIDParam 0xF: the provisioned public key (PUB_KEY_ID_CAP) instead of a slot
PUBLIC_KEY_SLOT = 0x0F

#: MEASUREMENTS Param2 bits 5:4 (SPDM 1.2+, signed responses)
CONTENT_CHANGE_MASK = 0x30
CONTENT_CHANGE_NOT_SUPPORTED = 0x00
CONTENT_CHANGE_DETECTED = 0x10
CONTENT_NO_CHANGE_DETECTED = 0x20

#: Measurement indices with a fixed meaning (DSP0274 "Measurement index assignments")
INDEX_MIN = 0x01
INDEX_MAX_FREE = 0xEF  # 0xF0-0xFC are reserved
INDEX_MANIFEST = 0xFD
INDEX_DEVICE_MODE = 0xFE

#: DMTFSpecMeasurementValueType bit 7: the value is a raw bit stream (else a digest)
RAW_BIT_STREAM = 0x80
VALUE_TYPE_MASK = 0x7F

#: Largest MeasurementRecordLength (3-byte field)
MAX_RECORD_LENGTH = 0xFFFFFF

MEASUREMENTS_FIXED_SIZE = 8
BLOCK_HEADER_SIZE = 4
DMTF_HEADER_SIZE = 3


class MeasurementValueType(IntEnum):
    """DMTFSpecMeasurementValueType bits 6:0 (DSP0274 table "DMTF measurement specification")."""

    IMMUTABLE_ROM = 0
    MUTABLE_FIRMWARE = 1
    HARDWARE_CONFIG = 2
    FIRMWARE_CONFIG = 3
    MEASUREMENT_MANIFEST = 4
    DEVICE_MODE = 5
    VERSION = 6
    SECURE_VERSION_NUMBER = 7
    HASH_EXTENDED = 8
    INFORMATIONAL = 9
    STRUCTURED_MANIFEST = 10


class OperationalMode(IntFlag):
    """OperationalModeCapabilities / OperationalModeState bits of the device mode block."""

    MANUFACTURING = 0x01
    VALIDATION = 0x02
    NORMAL = 0x04
    RECOVERY = 0x08
    RMA = 0x10
    DECOMMISSIONED = 0x20


class DeviceMode(IntFlag):
    """DeviceModeCapabilities / DeviceModeState bits of the device mode block."""

    NON_INVASIVE_DEBUG_ACTIVE = 0x01
    INVASIVE_DEBUG_ACTIVE = 0x02
    NON_INVASIVE_DEBUG_HAS_BEEN_ACTIVE = 0x04
    INVASIVE_DEBUG_HAS_BEEN_ACTIVE = 0x08
    INVASIVE_DEBUG_HAS_BEEN_ACTIVE_AFTER_MFG = 0x10


#: Size of the device mode value (four little-endian u32: OperationalModeCapabilities,
#: OperationalModeState, DeviceModeCapabilities, DeviceModeState)
DEVICE_MODE_SIZE = 16


def encode_device_mode(
    operational_capabilities: int,
    operational_state: int,
    device_mode_capabilities: int,
    device_mode_state: int,
) -> bytes:
    """The DMTF device mode measurement value (``spdm_measurements_device_mode_t``)."""
    fields = (
        operational_capabilities,
        operational_state,
        device_mode_capabilities,
        device_mode_state,
    )
    for v in fields:
        if not 0 <= v <= 0xFFFFFFFF:
            raise CodecError(f"device mode: field value 0x{v:X} is not a 32-bit unsigned integer")
    return b"".join(v.to_bytes(4, "little") for v in fields)


def decode_device_mode(value: bytes) -> tuple[int, int, int, int]:
    """The four fields of a device mode value, in wire order."""
    if len(value) != DEVICE_MODE_SIZE:
        raise CodecError(f"device mode: {len(value)} bytes, need 16")
    a, b, c, d = (int.from_bytes(value[i : i + 4], "little") for i in range(0, 16, 4))
    return a, b, c, d


def request_size(version: int, attributes: int) -> int:
    """Size of GET_MEASUREMENTS for a version and Param1 (libspdm's spdm_request_size)."""
    size = 4
    if attributes & ATTR_SIGNATURE_REQUESTED:
        size += NONCE_SIZE + (1 if version >= 0x11 else 0)
    if version >= 0x13:
        size += REQUESTER_CONTEXT_SIZE
    return size


@dataclass(slots=True)
class GetMeasurementsRequest:
    """GET_MEASUREMENTS, any version (fields absent in a version are empty / 0)."""

    version: int
    attributes: int = 0
    operation: int = OPERATION_ALL
    nonce: bytes = b""
    slot_id: int = 0
    requester_context: bytes = b""

    @property
    def signature_requested(self) -> bool:
        return bool(self.attributes & ATTR_SIGNATURE_REQUESTED)

    @property
    def raw_requested(self) -> bool:
        """RawBitStreamRequested; the bit is reserved (ignored) before SPDM 1.2."""
        return self.version >= 0x12 and bool(self.attributes & ATTR_RAW_BIT_STREAM_REQUESTED)

    @property
    def size(self) -> int:
        return request_size(self.version, self.attributes)

    def encode(self) -> bytes:
        """Build the request in the form its version defines."""
        out = bytearray(
            (self.version, RequestCode.GET_MEASUREMENTS, self.attributes & 0xFF, self.operation)
        )
        if self.signature_requested:
            if len(self.nonce) != NONCE_SIZE:
                raise CodecError(f"GET_MEASUREMENTS: Nonce is {len(self.nonce)} bytes, need 32")
            out += self.nonce
            if self.version >= 0x11:
                out.append(self.slot_id & 0xFF)
        if self.version >= 0x13:
            ctx = self.requester_context or bytes(REQUESTER_CONTEXT_SIZE)
            if len(ctx) != REQUESTER_CONTEXT_SIZE:
                raise CodecError(f"GET_MEASUREMENTS: RequesterContext is {len(ctx)} bytes, need 8")
            out += ctx
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> GetMeasurementsRequest:
        """Parse by the version byte and Param1; trailing bytes (DOE padding) are ignored."""
        if len(data) < 4:
            raise CodecError(f"GET_MEASUREMENTS: {len(data)} bytes, need 4")
        version, code, attributes, operation = data[0], data[1], data[2], data[3]
        if code != RequestCode.GET_MEASUREMENTS:
            raise CodecError(f"GET_MEASUREMENTS: request code 0x{code:02X}")
        need = request_size(version, attributes)
        if len(data) < need:
            signed = "signed " if attributes & ATTR_SIGNATURE_REQUESTED else ""
            raise CodecError(
                f"GET_MEASUREMENTS: {len(data)} bytes, a {signed}request in SPDM "
                f"{version >> 4}.{version & 0xF} needs {need}"
            )
        req = cls(version, attributes, operation)
        off = 4
        if attributes & ATTR_SIGNATURE_REQUESTED:
            req.nonce = bytes(data[off : off + NONCE_SIZE])
            off += NONCE_SIZE
            if version >= 0x11:
                req.slot_id = data[off]
                off += 1
        if version >= 0x13:
            req.requester_context = bytes(data[off : off + REQUESTER_CONTEXT_SIZE])
        return req


# --- measurement blocks -------------------------------------------------------------

BlockHeader = Layout(
    "measurement block header",
    cs.Struct("index" / cs.Int8ul, "spec" / cs.Int8ul, "size" / cs.Int16ul),
)
DmtfHeader = Layout(
    "DMTF measurement header",
    cs.Struct("value_type" / cs.Int8ul, "value_size" / cs.Int16ul),
)


@dataclass(frozen=True, slots=True)
class MeasurementBlock:
    """One measurement block with a DMTF measurement (DSP0274 "Measurement block").

    ``value_type`` is the whole DMTFSpecMeasurementValueType byte (bit 7 = raw).
    """

    index: int
    value_type: int
    value: bytes
    spec: int = int(MeasurementSpec.DMTF)

    @property
    def raw(self) -> bool:
        return bool(self.value_type & RAW_BIT_STREAM)

    @property
    def kind(self) -> int:
        """The value type without the raw bit."""
        return self.value_type & VALUE_TYPE_MASK

    @property
    def measurement_size(self) -> int:
        return DMTF_HEADER_SIZE + len(self.value)

    def encode(self) -> bytes:
        if not 0 <= self.index <= 0xFF:
            raise CodecError(f"measurement block: Index {self.index} is not a byte")
        if self.measurement_size > 0xFFFF:
            raise CodecError(
                f"measurement block {self.index}: {len(self.value)}-byte value does not fit "
                "the 16-bit MeasurementSize"
            )
        return (
            bytes((self.index, self.spec))
            + self.measurement_size.to_bytes(2, "little")
            + bytes((self.value_type,))
            + len(self.value).to_bytes(2, "little")
            + self.value
        )


def encode_record(blocks: list[MeasurementBlock]) -> bytes:
    """A MeasurementRecord: the blocks back to back."""
    return b"".join(b.encode() for b in blocks)


def parse_record(record: bytes) -> list[MeasurementBlock]:
    """Split a MeasurementRecord into DMTF blocks; CodecError if anything does not add up.

    Checks: every block header and DMTF header fits, MeasurementSize == 3 +
    DMTFSpecMeasurementValueSize, the blocks fill the record exactly, and the
    MeasurementSpecification is DMTF (the only one DSP0274 defines).
    """
    blocks: list[MeasurementBlock] = []
    off = 0
    while off < len(record):
        if len(record) - off < BLOCK_HEADER_SIZE:
            raise CodecError(
                f"MeasurementRecord: {len(record) - off} trailing bytes after block "
                f"{len(blocks)}, shorter than a block header"
            )
        hdr = BlockHeader.parse(record[off : off + BLOCK_HEADER_SIZE])
        body_start = off + BLOCK_HEADER_SIZE
        if body_start + hdr.size > len(record):
            raise CodecError(
                f"measurement block {len(blocks)} (Index {hdr.index}): MeasurementSize "
                f"{hdr.size} overruns the record"
            )
        if hdr.spec != MeasurementSpec.DMTF:
            raise CodecError(
                f"measurement block {len(blocks)} (Index {hdr.index}): "
                f"MeasurementSpecification 0x{hdr.spec:02X} is not DMTF"
            )
        if hdr.size < DMTF_HEADER_SIZE:
            raise CodecError(
                f"measurement block Index {hdr.index}: MeasurementSize {hdr.size} is shorter "
                "than the DMTF header"
            )
        dmtf = DmtfHeader.parse(record[body_start : body_start + DMTF_HEADER_SIZE])
        if DMTF_HEADER_SIZE + dmtf.value_size != hdr.size:
            raise CodecError(
                f"measurement block Index {hdr.index}: DMTFSpecMeasurementValueSize "
                f"{dmtf.value_size} + 3 != MeasurementSize {hdr.size}"
            )
        value = bytes(record[body_start + DMTF_HEADER_SIZE : body_start + hdr.size])
        blocks.append(MeasurementBlock(hdr.index, dmtf.value_type, value, hdr.spec))
        off = body_start + hdr.size
    return blocks


# --- MEASUREMENTS ---------------------------------------------------------------------

MeasurementsFixed = Layout(
    "MEASUREMENTS",
    cs.Struct(
        "version" / cs.Int8ul,
        "code" / cs.Int8ul,
        "param1" / cs.Int8ul,
        "param2" / cs.Int8ul,
        "number_of_blocks" / cs.Int8ul,
        "record_length" / cs.Int24ul,
    ),
)


@dataclass(slots=True)
class MeasurementsResponse:
    """MEASUREMENTS, any version.  ``signature`` is empty for an unsigned response."""

    version: int
    param1: int = 0
    param2: int = 0
    number_of_blocks: int = 0
    record: bytes = b""
    nonce: bytes = b""
    opaque: bytes = b""
    requester_context: bytes = b""
    signature: bytes = b""
    #: the parsed record (filled by :meth:`decode`; informative when encoding)
    blocks: list[MeasurementBlock] = field(default_factory=list)

    @property
    def slot_id(self) -> int:
        return self.param2 & SLOT_ID_MASK

    @property
    def content_changed(self) -> int:
        return self.param2 & CONTENT_CHANGE_MASK

    def encode_unsigned(self) -> bytes:
        """Everything but the signature (what goes into L1/L2 for a signed response)."""
        if len(self.nonce) != NONCE_SIZE:
            raise CodecError(f"MEASUREMENTS: Nonce is {len(self.nonce)} bytes, need 32")
        if len(self.record) > MAX_RECORD_LENGTH:
            raise CodecError(f"MEASUREMENTS: {len(self.record)}-byte record over 0xFFFFFF")
        if len(self.opaque) > 0xFFFF:
            raise CodecError(f"MEASUREMENTS: {len(self.opaque)}-byte opaque data over 0xFFFF")
        out = MeasurementsFixed.build(
            version=self.version,
            code=ResponseCode.MEASUREMENTS,
            param1=self.param1,
            param2=self.param2,
            number_of_blocks=self.number_of_blocks,
            record_length=len(self.record),
        )
        out += self.record + self.nonce + len(self.opaque).to_bytes(2, "little") + self.opaque
        if self.version >= 0x13:
            if len(self.requester_context) != REQUESTER_CONTEXT_SIZE:
                raise CodecError(
                    f"MEASUREMENTS: RequesterContext is {len(self.requester_context)} bytes, need 8"
                )
            out += self.requester_context
        return out

    def encode(self) -> bytes:
        return self.encode_unsigned() + self.signature

    @classmethod
    def decode(cls, data: bytes, signature_size: int = 0) -> tuple[MeasurementsResponse, int]:
        """Parse a MEASUREMENTS (the version byte decides the 1.3 fields).

        ``signature_size`` is the negotiated signature size when a signature was
        requested, else 0.  Returns the message and its size (bytes after it are
        padding the caller may check).  The record is split into blocks with
        :func:`parse_record` (CodecError on any inconsistency).
        """
        fixed = MeasurementsFixed.parse(data)
        if fixed.code != ResponseCode.MEASUREMENTS:
            raise CodecError(f"MEASUREMENTS: response code 0x{fixed.code:02X}")
        version = fixed.version
        off = MEASUREMENTS_FIXED_SIZE
        end_record = off + fixed.record_length
        if len(data) < end_record + NONCE_SIZE + 2:
            raise CodecError(
                f"MEASUREMENTS: {len(data)} bytes, MeasurementRecordLength "
                f"{fixed.record_length} needs at least {end_record + NONCE_SIZE + 2}"
            )
        record = bytes(data[off:end_record])
        off = end_record
        nonce = bytes(data[off : off + NONCE_SIZE])
        off += NONCE_SIZE
        opaque_len = int.from_bytes(data[off : off + 2], "little")
        off += 2
        ctx_len = REQUESTER_CONTEXT_SIZE if version >= 0x13 else 0
        size = off + opaque_len + ctx_len + signature_size
        if len(data) < size:
            raise CodecError(
                f"MEASUREMENTS: {len(data)} bytes, OpaqueDataLength {opaque_len}"
                f"{' + RequesterContext' if ctx_len else ''}"
                f"{f' + {signature_size}-byte signature' if signature_size else ''} "
                f"need {size}"
            )
        opaque = bytes(data[off : off + opaque_len])
        off += opaque_len
        ctx = bytes(data[off : off + ctx_len])
        off += ctx_len
        signature = bytes(data[off : off + signature_size])
        msg = cls(
            version=version,
            param1=fixed.param1,
            param2=fixed.param2,
            number_of_blocks=fixed.number_of_blocks,
            record=record,
            nonce=nonce,
            opaque=opaque,
            requester_context=ctx,
            signature=signature,
            blocks=parse_record(record),
        )
        return msg, size


# --- opaque data -------------------------------------------------------------------------

#: DSP0274 "OpaqueDataLength": at most 1024 bytes
MAX_OPAQUE_DATA_SIZE = 1024
#: Largest registry ID of an opaque element (DSP0274 table "Standards body or vendor
#: defined header registry"; libspdm SPDM_REGISTRY_ID_MAX)
MAX_REGISTRY_ID = 0x0B


def general_opaque_data_problem(data: bytes) -> str | None:
    """Why ``data`` is not valid in the general opaque data format (OpaqueDataFmt1), or None.

    Mirrors libspdm ``libspdm_process_general_opaque_data_check``, which a libspdm
    requester runs on non-empty OpaqueData in SPDM 1.2+: 4-byte aligned,
    TotalElements >= 1, each element ``ID (<= 0x0B), VendorLen, VendorID,
    OpaqueElementDataLen (2), data`` zero-padded to 4 bytes, all inside the data.
    """
    if len(data) % 4:
        return f"{len(data)} bytes is not a multiple of 4"
    if len(data) < 4:
        return "shorter than the 4-byte general opaque data header"
    total = data[0]
    if total < 1:
        return "TotalElements is 0"
    off = 4
    for n in range(total):
        if off + 2 > len(data):
            return f"element {n}: header past the end"
        elem_id, vendor_len = data[off], data[off + 1]
        if elem_id > MAX_REGISTRY_ID:
            return f"element {n}: ID 0x{elem_id:02X} is over 0x{MAX_REGISTRY_ID:02X}"
        len_at = off + 2 + vendor_len
        if len_at + 2 > len(data):
            return f"element {n}: VendorID / OpaqueElementDataLen past the end"
        data_len = int.from_bytes(data[len_at : len_at + 2], "little")
        cur = 2 + vendor_len + 2 + data_len
        padded = (cur + 3) & ~3
        if off + padded > len(data):
            return f"element {n}: {data_len}-byte element data past the end"
        if any(data[off + cur : off + padded]):
            return f"element {n}: padding is not zero"
        off += padded
    return None
