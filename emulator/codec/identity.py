"""Layouts of the identity messages (DSP0274 10.6-10.8, SPDM 1.0-1.3).

GET_DIGESTS/DIGESTS, GET_CERTIFICATE/CERTIFICATE and CHALLENGE/CHALLENGE_AUTH,
as libspdm's ``industry_standard/spdm.h`` defines them:

* DIGESTS: Param1 = SupportedSlotMask (1.3, reserved before), Param2 =
  ProvisionedSlotMask (the "slot mask" of 1.0-1.2); one digest per provisioned
  slot, then, in 1.3 when MULTI_KEY_CONN was negotiated, KeyPairID[n],
  CertificateInfo[n] and KeyUsageMask[n] (u16 LE).
* GET_CERTIFICATE: Param1 bits 3:0 = SlotID, Param2 bit 0 = SlotSizeRequested
  (1.3), Offset (u16), Length (u16).  CERTIFICATE: Param1 = SlotID, Param2 =
  CertificateInfo (1.3 multi-key), PortionLength, RemainderLength, the portion.
* CHALLENGE: Param1 = SlotID (0xFF: the provisioned public key), Param2 =
  MeasurementSummaryHashType (0 none, 1 TCB, 0xFF all), Nonce (32), 1.3
  RequesterContext (8).  CHALLENGE_AUTH: Param1 = ResponseAttribute (SlotID in
  bits 3:0, BasicMutAuthReq bit 7), Param2 = slot mask, CertChainHash (H),
  Nonce (32), MeasurementSummaryHash (H or 0), OpaqueDataLength (u16),
  OpaqueData, 1.3 RequesterContext (8), Signature.

All little-endian.  No behaviour here: which sizes apply (H, the signature size,
whether a summary hash is present) is passed in by the caller.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag

import construct as cs

from emulator.codec.constants import RequestCode, ResponseCode
from emulator.codec.layout import Layout
from emulator.codec.messages import HEADER_SIZE, build_header
from emulator.errors import CodecError

#: Number of certificate slots (DSP0274 "Certificate slots").
SLOT_COUNT = 8
#: SlotID that names the provisioned raw public key (PUB_KEY_ID_CAP) in CHALLENGE.
PUBLIC_KEY_SLOT = 0xFF
#: Nonce size of CHALLENGE / CHALLENGE_AUTH.
NONCE_SIZE = 32
#: RequesterContext size (1.3).
REQUESTER_CONTEXT_SIZE = 8
#: Largest OpaqueDataLength (DSP0274 1.0 table 21 and later: 1024).
MAX_OPAQUE_DATA_SIZE = 1024
#: GET_CERTIFICATE Param1 mask for the SlotID.
SLOT_ID_MASK = 0x0F
#: GET_CERTIFICATE Param2 (1.3 Request Attributes) SlotSizeRequested.
SLOT_SIZE_REQUESTED = 0x01
#: CHALLENGE_AUTH ResponseAttribute BasicMutAuthReq (deprecated in 1.2).
BASIC_MUT_AUTH_REQ = 0x80
#: Size of GET_DIGESTS and of the fixed parts of the other messages.
GET_DIGESTS_SIZE = HEADER_SIZE
GET_CERTIFICATE_SIZE = 8
CERTIFICATE_HEADER_SIZE = 8
#: SPDM 1.4 GET_CERTIFICATE / CERTIFICATE Param1 bit 7 LargeCertChain: u32 LargeOffset +
#: LargeLength (request) and LargePortionLength + LargeRemainderLength (response) follow
LARGE_CERT_CHAIN = 0x80
GET_CERTIFICATE_LARGE_SIZE = 16
CERTIFICATE_LARGE_HEADER_SIZE = 16
CHALLENGE_SIZE_V10 = HEADER_SIZE + NONCE_SIZE
CHALLENGE_SIZE_V13 = CHALLENGE_SIZE_V10 + REQUESTER_CONTEXT_SIZE


class MeasurementSummaryType(IntEnum):
    """MeasurementSummaryHashType of CHALLENGE / KEY_EXCHANGE Param2."""

    NONE = 0x00
    TCB = 0x01
    ALL = 0xFF


class CertificateInfo(IntEnum):
    """CertificateInfo CertModel (1.3, bits 2:0)."""

    NONE = 0
    DEVICE_CERT = 1
    ALIAS_CERT = 2
    GENERIC_CERT = 3


class KeyUsage(IntFlag):
    """KeyUsageMask bits (1.3)."""

    KEY_EX = 0x0001
    CHALLENGE = 0x0002
    MEASUREMENT = 0x0004
    ENDPOINT_INFO = 0x0008
    STANDARDS_KEY = 0x4000
    VENDOR_KEY = 0x8000


#: Every defined KeyUsageMask bit.
KEY_USAGE_MASK = 0xC00F


def key_usage_bits(names: list[str]) -> int:
    """KeyUsageMask of profile names (``KEY_EX``, ``challenge-use``...); KeyError if one
    is unknown (profiles validate the names first)."""
    out = 0
    for n in names:
        out |= KeyUsage[n.strip().upper().replace("-", "_").replace(" ", "_").removesuffix("_USE")]
    return out


def _need(data: bytes, size: int, what: str) -> None:
    if len(data) < size:
        raise CodecError(f"{what}: {len(data)} bytes, need {size}")


# --- GET_DIGESTS / DIGESTS (DSP0274 10.6) ----------------------------------------------


def build_get_digests(version: int) -> bytes:
    """GET_DIGESTS: the bare header (Param1/Param2 reserved)."""
    return build_header(version, RequestCode.GET_DIGESTS)


@dataclass(slots=True)
class DigestsMsg:
    """DIGESTS.  ``supported_mask`` is Param1 (1.3 SupportedSlotMask, else 0);
    ``provisioned_mask`` is Param2.  The multi-key arrays are present only when
    ``multi_key`` (1.3 with MULTI_KEY_CONN) and then have one entry per digest."""

    version: int
    supported_mask: int
    provisioned_mask: int
    digests: list[bytes] = field(default_factory=list)
    multi_key: bool = False
    key_pair_ids: list[int] = field(default_factory=list)
    certificate_infos: list[int] = field(default_factory=list)
    key_usages: list[int] = field(default_factory=list)

    def encode(self) -> bytes:
        n = len(self.digests)
        if bin(self.provisioned_mask & 0xFF).count("1") != n:
            raise CodecError(
                f"DIGESTS: {n} digests for provisioned slot mask 0x{self.provisioned_mask:02X}"
            )
        out = bytearray(
            build_header(
                self.version, ResponseCode.DIGESTS, self.supported_mask, self.provisioned_mask
            )
        )
        for d in self.digests:
            out += d
        if self.multi_key:
            lists = (self.key_pair_ids, self.certificate_infos, self.key_usages)
            if any(len(x) != n for x in lists):
                raise CodecError("DIGESTS: multi-key arrays must have one entry per digest")
            out += bytes(self.key_pair_ids)
            out += bytes(self.certificate_infos)
            for usage in self.key_usages:
                out += usage.to_bytes(2, "little")
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes, hash_size: int, multi_key: bool = False) -> tuple[DigestsMsg, int]:
        """Parse with digest size ``hash_size``; returns the message and its size."""
        _need(data, HEADER_SIZE, "DIGESTS")
        mask = data[3]
        n = bin(mask).count("1")
        size = HEADER_SIZE + n * hash_size
        extra = n * 4 if multi_key else 0
        _need(data, size + extra, f"DIGESTS with slot mask 0x{mask:02X}")
        digests = [
            bytes(data[HEADER_SIZE + i * hash_size : HEADER_SIZE + (i + 1) * hash_size])
            for i in range(n)
        ]
        msg = cls(data[0], data[2], mask, digests, multi_key)
        if multi_key:
            off = size
            msg.key_pair_ids = list(data[off : off + n])
            msg.certificate_infos = list(data[off + n : off + 2 * n])
            off += 2 * n
            msg.key_usages = [
                int.from_bytes(data[off + 2 * i : off + 2 * i + 2], "little") for i in range(n)
            ]
        return msg, size + extra


# --- GET_CERTIFICATE / CERTIFICATE (DSP0274 10.7) ----------------------------------------

GetCertificate = Layout(
    "GET_CERTIFICATE",
    cs.Struct(
        "version" / cs.Int8ul,
        "code" / cs.Int8ul,
        "param1" / cs.Int8ul,
        "param2" / cs.Int8ul,
        "offset" / cs.Int16ul,
        "length" / cs.Int16ul,
    ),
)

CertificateHeader = Layout(
    "CERTIFICATE",
    cs.Struct(
        "version" / cs.Int8ul,
        "code" / cs.Int8ul,
        "param1" / cs.Int8ul,
        "param2" / cs.Int8ul,
        "portion_length" / cs.Int16ul,
        "remainder_length" / cs.Int16ul,
    ),
)


@dataclass(slots=True)
class GetCertificateMsg:
    """GET_CERTIFICATE: ``param1`` is kept whole (SlotID in bits 3:0; 1.4 LargeCertChain in
    bit 7, then ``offset``/``length`` are the u32 LargeOffset/LargeLength)."""

    version: int
    param1: int
    offset: int
    length: int
    param2: int = 0

    @property
    def large(self) -> bool:
        """SPDM 1.4 LargeCertChain (Param1 bit 7; reserved before 1.4)."""
        return self.version >= 0x14 and bool(self.param1 & LARGE_CERT_CHAIN)

    @property
    def size(self) -> int:
        """The request's own size: 8, or 16 with LargeCertChain."""
        return GET_CERTIFICATE_LARGE_SIZE if self.large else GET_CERTIFICATE_SIZE

    @property
    def slot_id(self) -> int:
        return self.param1 & SLOT_ID_MASK

    @property
    def slot_size_requested(self) -> bool:
        """1.3 SlotSizeRequested (Param2 bit 0; reserved before 1.3)."""
        return self.version >= 0x13 and bool(self.param2 & SLOT_SIZE_REQUESTED)

    def encode(self) -> bytes:
        if self.large:  # Offset/Length 0, then LargeOffset/LargeLength
            head = GetCertificate.build(
                version=self.version,
                code=RequestCode.GET_CERTIFICATE,
                param1=self.param1,
                param2=self.param2,
                offset=0,
                length=0,
            )
            return head + struct.pack("<II", self.offset, self.length)
        return GetCertificate.build(
            version=self.version,
            code=RequestCode.GET_CERTIFICATE,
            param1=self.param1,
            param2=self.param2,
            offset=self.offset,
            length=self.length,
        )

    @classmethod
    def decode(cls, data: bytes) -> GetCertificateMsg:
        f = GetCertificate.parse(data)
        msg = cls(f.version, f.param1, f.offset, f.length, f.param2)
        if msg.large:
            _need(data, GET_CERTIFICATE_LARGE_SIZE, "GET_CERTIFICATE with LargeCertChain")
            msg.offset, msg.length = struct.unpack_from("<II", data, GET_CERTIFICATE_SIZE)
        return msg


@dataclass(slots=True)
class CertificateMsg:
    """CERTIFICATE: ``param2`` is the 1.3 CertificateInfo (0 otherwise)."""

    version: int
    slot_id: int
    portion: bytes
    remainder_length: int
    param2: int = 0
    #: SPDM 1.4 LargeCertChain: Param1 bit 7, u16 lengths 0, then u32 lengths
    large: bool = False

    @property
    def portion_length(self) -> int:
        return len(self.portion)

    def encode(self) -> bytes:
        if self.large:
            return (
                CertificateHeader.build(
                    version=self.version,
                    code=ResponseCode.CERTIFICATE,
                    param1=self.slot_id | LARGE_CERT_CHAIN,
                    param2=self.param2,
                    portion_length=0,
                    remainder_length=0,
                )
                + struct.pack("<II", len(self.portion), self.remainder_length)
                + self.portion
            )
        return (
            CertificateHeader.build(
                version=self.version,
                code=ResponseCode.CERTIFICATE,
                param1=self.slot_id,
                param2=self.param2,
                portion_length=len(self.portion),
                remainder_length=self.remainder_length,
            )
            + self.portion
        )

    @classmethod
    def decode(cls, data: bytes) -> tuple[CertificateMsg, int]:
        """Parse; returns the message and its size (8 + PortionLength)."""
        f = CertificateHeader.parse(data)
        if f.version >= 0x14 and f.param1 & LARGE_CERT_CHAIN:
            _need(data, CERTIFICATE_LARGE_HEADER_SIZE, "CERTIFICATE with LargeCertChain")
            plen, rem = struct.unpack_from("<II", data, CERTIFICATE_HEADER_SIZE)
            size = CERTIFICATE_LARGE_HEADER_SIZE + plen
            _need(data, size, f"CERTIFICATE with LargePortionLength {plen}")
            portion = bytes(data[CERTIFICATE_LARGE_HEADER_SIZE:size])
            slot = f.param1 & ~LARGE_CERT_CHAIN
            return cls(f.version, slot, portion, rem, f.param2, large=True), size
        size = CERTIFICATE_HEADER_SIZE + f.portion_length
        _need(data, size, f"CERTIFICATE with PortionLength {f.portion_length}")
        portion = bytes(data[CERTIFICATE_HEADER_SIZE:size])
        return cls(f.version, f.param1, portion, f.remainder_length, f.param2), size


# --- CHALLENGE / CHALLENGE_AUTH (DSP0274 10.8) -------------------------------------------


def challenge_size(version: int) -> int:
    """Size of CHALLENGE for a version (36, or 44 with the 1.3 RequesterContext)."""
    return CHALLENGE_SIZE_V13 if version >= 0x13 else CHALLENGE_SIZE_V10


@dataclass(slots=True)
class ChallengeMsg:
    """CHALLENGE: ``requester_context`` is present (8 bytes) from 1.3 on."""

    version: int
    slot_id: int
    measurement_summary_type: int
    nonce: bytes
    requester_context: bytes = b""

    def encode(self) -> bytes:
        if len(self.nonce) != NONCE_SIZE:
            raise CodecError(f"CHALLENGE: nonce of {len(self.nonce)} bytes, need {NONCE_SIZE}")
        ctx = b""
        if self.version >= 0x13:
            if len(self.requester_context) != REQUESTER_CONTEXT_SIZE:
                raise CodecError("CHALLENGE: 1.3 RequesterContext must be 8 bytes")
            ctx = self.requester_context
        return (
            build_header(
                self.version, RequestCode.CHALLENGE, self.slot_id, self.measurement_summary_type
            )
            + self.nonce
            + ctx
        )

    @classmethod
    def decode(cls, data: bytes) -> tuple[ChallengeMsg, int]:
        """Parse by the version byte; returns the message and its size."""
        _need(data, HEADER_SIZE, "CHALLENGE")
        size = challenge_size(data[0])
        _need(data, size, f"CHALLENGE (SPDM 0x{data[0]:02X})")
        ctx = bytes(data[CHALLENGE_SIZE_V10:size])
        msg = cls(data[0], data[2], data[3], bytes(data[HEADER_SIZE:CHALLENGE_SIZE_V10]), ctx)
        return msg, size


@dataclass(slots=True)
class ChallengeAuthMsg:
    """CHALLENGE_AUTH.  ``attributes`` is Param1 (SlotID | BasicMutAuthReq)."""

    version: int
    attributes: int
    slot_mask: int
    cert_chain_hash: bytes
    nonce: bytes
    measurement_summary_hash: bytes = b""
    opaque_data: bytes = b""
    requester_context: bytes = b""
    signature: bytes = b""

    @property
    def slot_id(self) -> int:
        return self.attributes & SLOT_ID_MASK

    def encode_unsigned(self) -> bytes:
        """Everything but the Signature: the part that goes into transcript C / M1."""
        if len(self.nonce) != NONCE_SIZE:
            raise CodecError(f"CHALLENGE_AUTH: nonce of {len(self.nonce)} bytes")
        if len(self.opaque_data) > 0xFFFF:
            raise CodecError("CHALLENGE_AUTH: opaque data does not fit OpaqueDataLength")
        ctx = b""
        if self.version >= 0x13:
            if len(self.requester_context) != REQUESTER_CONTEXT_SIZE:
                raise CodecError("CHALLENGE_AUTH: 1.3 RequesterContext must be 8 bytes")
            ctx = self.requester_context
        return (
            build_header(self.version, ResponseCode.CHALLENGE_AUTH, self.attributes, self.slot_mask)
            + self.cert_chain_hash
            + self.nonce
            + self.measurement_summary_hash
            + len(self.opaque_data).to_bytes(2, "little")
            + self.opaque_data
            + ctx
        )

    def encode(self) -> bytes:
        return self.encode_unsigned() + self.signature

    @classmethod
    def decode(
        cls, data: bytes, hash_size: int, summary_size: int, signature_size: int
    ) -> tuple[ChallengeAuthMsg, int]:
        """Parse with the negotiated sizes; returns the message and its size.

        ``summary_size`` is H when a measurement summary hash was requested and
        the responder measures, else 0.  Raises CodecError when any field runs
        past the end of ``data``.
        """
        off = HEADER_SIZE
        _need(data, off + hash_size + NONCE_SIZE + summary_size + 2, "CHALLENGE_AUTH")
        version = data[0]
        cert_chain_hash = bytes(data[off : off + hash_size])
        off += hash_size
        nonce = bytes(data[off : off + NONCE_SIZE])
        off += NONCE_SIZE
        summary = bytes(data[off : off + summary_size])
        off += summary_size
        opaque_len = int.from_bytes(data[off : off + 2], "little")
        off += 2
        _need(data, off + opaque_len, f"CHALLENGE_AUTH with OpaqueDataLength {opaque_len}")
        opaque = bytes(data[off : off + opaque_len])
        off += opaque_len
        ctx = b""
        if version >= 0x13:
            _need(data, off + REQUESTER_CONTEXT_SIZE, "CHALLENGE_AUTH RequesterContext")
            ctx = bytes(data[off : off + REQUESTER_CONTEXT_SIZE])
            off += REQUESTER_CONTEXT_SIZE
        _need(data, off + signature_size, "CHALLENGE_AUTH Signature")
        signature = bytes(data[off : off + signature_size])
        off += signature_size
        msg = cls(
            version,
            data[2],
            data[3],
            cert_chain_hash,
            nonce,
            summary,
            opaque,
            ctx,
            signature,
        )
        return msg, off
