"""Layouts of the session messages (DSP0274 10.11-10.16, SPDM 1.1-1.4) and DSP0277 opaque data.

KEY_EXCHANGE / KEY_EXCHANGE_RSP, FINISH / FINISH_RSP, PSK_EXCHANGE / PSK_EXCHANGE_RSP,
PSK_FINISH / PSK_FINISH_RSP, HEARTBEAT / HEARTBEAT_ACK, KEY_UPDATE / KEY_UPDATE_ACK,
END_SESSION / END_SESSION_ACK, GET_ENCAPSULATED_REQUEST / ENCAPSULATED_REQUEST and
DELIVER_ENCAPSULATED_RESPONSE / ENCAPSULATED_RESPONSE_ACK, as libspdm's
``industry_standard/spdm.h`` lays them out (all little-endian):

* KEY_EXCHANGE: Param1 = MeasurementSummaryHashType, Param2 = SlotID, ReqSessionID (u16),
  SessionPolicy (u8, 1.2+; reserved before), Reserved (u8), RandomData (32),
  ExchangeData (D), OpaqueDataLength (u16), OpaqueData.
* KEY_EXCHANGE_RSP: Param1 = HeartbeatPeriod, RspSessionID (u16), MutAuthRequested (u8),
  ReqSlotIDParam (u8), RandomData (32), ExchangeData (D), MeasurementSummaryHash (H or 0),
  OpaqueDataLength (u16), OpaqueData, Signature (S), ResponderVerifyData (H, absent when
  HANDSHAKE_IN_THE_CLEAR was negotiated by both sides).
* FINISH: Param1 bit 0 = signature included, Param2 = ReqSlotID, Signature (S, mutual
  auth only), RequesterVerifyData (H).  FINISH_RSP: ResponderVerifyData (H) only when the
  handshake is in the clear.
* PSK_EXCHANGE: Param1 = MeasurementSummaryHashType, Param2 = SessionPolicy (1.2+),
  ReqSessionID, PSKHintLength, RequesterContextLength, OpaqueDataLength (u16 each), then
  PSKHint, RequesterContext, OpaqueData.  PSK_EXCHANGE_RSP: Param1 = HeartbeatPeriod,
  RspSessionID, Reserved (u16), ResponderContextLength, OpaqueDataLength, then
  MeasurementSummaryHash, ResponderContext, OpaqueData, ResponderVerifyData (H).
* PSK_FINISH: RequesterVerifyData (H).  HEARTBEAT(_ACK), END_SESSION(_ACK), PSK_FINISH_RSP:
  the header only.
* SPDM 1.4 (libspdm ``spdm.h``): FINISH, FINISH_RSP, PSK_FINISH and PSK_FINISH_RSP carry
  OpaqueDataLength (u16) + OpaqueData (at most 1024 bytes) right after the header; with a
  KEM selected KEY_EXCHANGE's ExchangeData is the ML-KEM encapsulation key and
  KEY_EXCHANGE_RSP's the ciphertext (:func:`emulator.crypto.exchange_sizes`).
* KEY_UPDATE(_ACK): Param1 = operation, Param2 = tag.
* ENCAPSULATED_REQUEST: Param1 = RequestID, then the encapsulated request.
  DELIVER_ENCAPSULATED_RESPONSE: Param1 = RequestID, then the encapsulated response.
  ENCAPSULATED_RESPONSE_ACK: Param1 = RequestID, Param2 = PayloadType; 1.2+ adds
  AckRequestID (u8) and 3 reserved bytes; then the next encapsulated request (or, with
  PayloadType 2, the one-byte ReqSlotID).

DSP0277 opaque data (the "general opaque data format" of DSP0274 1.2+ table "Opaque
data"): 1.2+ starts with TotalElements (u8) + 3 reserved bytes; 1.1 with SpecID
0x444D5446 ("DMTF" little-endian), OpaqueVersion 1, TotalElements, Reserved (u16).  Each
element: ID (u8, 0 = DMTF), VendorLen (u8), VendorID, OpaqueElementDataLen (u16),
data, zero padding to a multiple of 4.  The DSP0277 element data starts with
SMDataVersion (1) and SMDataID: 0 version selection (+ u16 version), 1 supported
versions (+ count + u16 list), 2 AEAD limit (DSP0277 1.3, + exponent u8).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag

from emulator.codec.constants import RequestCode, ResponseCode
from emulator.codec.messages import HEADER_SIZE, build_header
from emulator.errors import CodecError

#: RandomData size of KEY_EXCHANGE / KEY_EXCHANGE_RSP.
RANDOM_DATA_SIZE = 32
#: Fixed part of KEY_EXCHANGE / KEY_EXCHANGE_RSP (header + session fields + random).
KEY_EXCHANGE_FIXED_SIZE = HEADER_SIZE + 4 + RANDOM_DATA_SIZE
#: Fixed part of PSK_EXCHANGE / PSK_EXCHANGE_RSP.
PSK_EXCHANGE_FIXED_SIZE = HEADER_SIZE + 8
#: DSP0277 SpecID of the 1.1 opaque data header ("DMTF" as a little-endian u32).
SECURED_MESSAGE_OPAQUE_DATA_SPEC_ID = 0x444D5446
SECURED_MESSAGE_OPAQUE_VERSION = 1
#: OpaqueElement ID of the DMTF registry (DSP0274 table "Registry or standards body ID").
REGISTRY_ID_DMTF = 0
SM_DATA_VERSION = 1
#: Largest OpaqueDataLength the spec allows.
MAX_OPAQUE_DATA_SIZE = 1024
#: DSP0277 1.3 AEAD limit exponent range and default (absent element = 64).
AEAD_LIMIT_EXPONENT_MAX = 64


class SmDataId(IntEnum):
    """SMDataID of a DSP0277 opaque element."""

    VERSION_SELECTION = 0
    SUPPORTED_VERSIONS = 1
    AEAD_LIMIT = 2


class MeasurementSummaryHashType(IntEnum):
    """Param1 of KEY_EXCHANGE / PSK_EXCHANGE."""

    NONE = 0x00
    TCB = 0x01
    ALL = 0xFF


class MutAuthRequested(IntFlag):
    """KEY_EXCHANGE_RSP MutAuthRequested (one bit set, or 0)."""

    REQUESTED = 0x01
    WITH_ENCAP_REQUEST = 0x02
    WITH_GET_DIGESTS = 0x04


class SessionPolicy(IntFlag):
    """KEY_EXCHANGE SessionPolicy / PSK_EXCHANGE Param2 (1.2+; EventAllPolicy 1.3)."""

    TERMINATION_POLICY_RUNTIME_UPDATE = 0x01
    EVENT_ALL_POLICY = 0x02


class KeyUpdateOperation(IntEnum):
    """KEY_UPDATE Param1."""

    UPDATE_KEY = 1
    UPDATE_ALL_KEYS = 2
    VERIFY_NEW_KEY = 3


class EncapPayloadType(IntEnum):
    """ENCAPSULATED_RESPONSE_ACK Param2."""

    ABSENT = 0
    PRESENT = 1
    REQ_SLOT_NUMBER = 2


#: FINISH Param1 bit 0: a requester signature is included (mutual authentication).
FINISH_SIGNATURE_INCLUDED = 0x01
#: END_SESSION Param1 bit 0: clear the negotiated state (with CACHE_CAP).
END_SESSION_CLEAR_NEGOTIATED_STATE = 0x01
#: Slot ID meaning "the provisioned raw public key".
PUBLIC_KEY_SLOT = 0xFF


def _need(data: bytes, size: int, what: str) -> None:
    if len(data) < size:
        raise CodecError(f"{what}: {len(data)} bytes, needs at least {size}")


def _u16(data: bytes, offset: int) -> int:
    value: int = struct.unpack_from("<H", data, offset)[0]
    return value


# --- KEY_EXCHANGE / KEY_EXCHANGE_RSP (DSP0274 10.11) ------------------------------------


@dataclass(slots=True)
class KeyExchangeRequest:
    """KEY_EXCHANGE (SPDM 1.1+)."""

    version: int
    measurement_summary_hash_type: int
    slot_id: int
    req_session_id: int
    session_policy: int
    random_data: bytes
    exchange_data: bytes
    opaque_data: bytes = b""
    reserved: int = 0

    def encode(self) -> bytes:
        if len(self.random_data) != RANDOM_DATA_SIZE:
            raise CodecError(f"KEY_EXCHANGE RandomData: {len(self.random_data)} bytes, need 32")
        return (
            build_header(
                self.version,
                RequestCode.KEY_EXCHANGE,
                self.measurement_summary_hash_type,
                self.slot_id,
            )
            + struct.pack("<HBB", self.req_session_id, self.session_policy, self.reserved)
            + self.random_data
            + self.exchange_data
            + struct.pack("<H", len(self.opaque_data))
            + self.opaque_data
        )

    @classmethod
    def decode(cls, data: bytes, exchange_size: int) -> tuple[KeyExchangeRequest, int]:
        """Parse with the negotiated DHE ExchangeData size; returns the message and its size."""
        base = KEY_EXCHANGE_FIXED_SIZE + exchange_size
        _need(data, base + 2, "KEY_EXCHANGE")
        opaque_len = _u16(data, base)
        size = base + 2 + opaque_len
        _need(data, size, f"KEY_EXCHANGE with OpaqueDataLength {opaque_len}")
        req_sid, policy, reserved = struct.unpack_from("<HBB", data, HEADER_SIZE)
        return (
            cls(
                version=data[0],
                measurement_summary_hash_type=data[2],
                slot_id=data[3],
                req_session_id=req_sid,
                session_policy=policy,
                random_data=bytes(data[8:40]),
                exchange_data=bytes(data[40:base]),
                opaque_data=bytes(data[base + 2 : size]),
                reserved=reserved,
            ),
            size,
        )


@dataclass(slots=True)
class KeyExchangeResponse:
    """KEY_EXCHANGE_RSP (SPDM 1.1+)."""

    version: int
    heartbeat_period: int
    rsp_session_id: int
    mut_auth_requested: int
    req_slot_id_param: int
    random_data: bytes
    exchange_data: bytes
    measurement_summary_hash: bytes = b""
    opaque_data: bytes = b""
    signature: bytes = b""
    verify_data: bytes = b""

    def encode_unsigned(self) -> bytes:
        """Everything before Signature: the part the signature covers in message K."""
        return (
            build_header(self.version, ResponseCode.KEY_EXCHANGE_RSP, self.heartbeat_period, 0)
            + struct.pack(
                "<HBB", self.rsp_session_id, self.mut_auth_requested, self.req_slot_id_param
            )
            + self.random_data
            + self.exchange_data
            + self.measurement_summary_hash
            + struct.pack("<H", len(self.opaque_data))
            + self.opaque_data
        )

    def encode(self) -> bytes:
        return self.encode_unsigned() + self.signature + self.verify_data

    @classmethod
    def decode(
        cls,
        data: bytes,
        *,
        exchange_size: int,
        summary_hash_size: int,
        signature_size: int,
        verify_size: int,
    ) -> tuple[KeyExchangeResponse, int]:
        """Parse with the sizes the negotiation implies; returns the message and its size."""
        base = KEY_EXCHANGE_FIXED_SIZE + exchange_size + summary_hash_size
        _need(data, base + 2, "KEY_EXCHANGE_RSP")
        opaque_len = _u16(data, base)
        opaque_end = base + 2 + opaque_len
        size = opaque_end + signature_size + verify_size
        _need(data, size, f"KEY_EXCHANGE_RSP with OpaqueDataLength {opaque_len}")
        rsp_sid, mut, slot_param = struct.unpack_from("<HBB", data, HEADER_SIZE)
        ex_end = KEY_EXCHANGE_FIXED_SIZE + exchange_size
        return (
            cls(
                version=data[0],
                heartbeat_period=data[2],
                rsp_session_id=rsp_sid,
                mut_auth_requested=mut,
                req_slot_id_param=slot_param,
                random_data=bytes(data[8:40]),
                exchange_data=bytes(data[40:ex_end]),
                measurement_summary_hash=bytes(data[ex_end:base]),
                opaque_data=bytes(data[base + 2 : opaque_end]),
                signature=bytes(data[opaque_end : opaque_end + signature_size]),
                verify_data=bytes(data[opaque_end + signature_size : size]),
            ),
            size,
        )


# --- FINISH / FINISH_RSP (DSP0274 10.12) ------------------------------------------------


@dataclass(slots=True)
class FinishRequest:
    """FINISH: Param1 bit 0 = signature included, Param2 = ReqSlotID."""

    version: int
    verify_data: bytes
    signature: bytes = b""
    req_slot_id: int = 0
    attributes: int = 0
    #: OpaqueData (SPDM 1.4: OpaqueDataLength + OpaqueData follow the header)
    opaque_data: bytes = b""

    def header(self) -> bytes:
        """Everything before the Signature (what the FINISH signature and HMAC cover):
        the header and, from SPDM 1.4, OpaqueDataLength + OpaqueData."""
        attrs = self.attributes | (FINISH_SIGNATURE_INCLUDED if self.signature else 0)
        head = build_header(self.version, RequestCode.FINISH, attrs, self.req_slot_id)
        return head + opaque_field(self.version, self.opaque_data)

    def encode(self) -> bytes:
        return self.header() + self.signature + self.verify_data

    @classmethod
    def decode(cls, data: bytes, signature_size: int, hash_size: int) -> tuple[FinishRequest, int]:
        off, opaque = read_opaque_field(data, "FINISH")
        size = off + signature_size + hash_size
        _need(data, size, "FINISH")
        return (
            cls(
                version=data[0],
                attributes=data[2],
                req_slot_id=data[3],
                signature=bytes(data[off : off + signature_size]),
                verify_data=bytes(data[off + signature_size : size]),
                opaque_data=opaque,
            ),
            size,
        )


def opaque_field(version: int, opaque: bytes = b"") -> bytes:
    """SPDM 1.4 FINISH/FINISH_RSP/PSK_FINISH/PSK_FINISH_RSP ``OpaqueDataLength (2) ||
    OpaqueData`` after the header (nothing before 1.4)."""
    if version < 0x14:
        if opaque:
            raise CodecError("OpaqueData in FINISH/PSK_FINISH exists from SPDM 1.4 only")
        return b""
    if len(opaque) > MAX_FINISH_OPAQUE:
        raise CodecError(f"OpaqueData: {len(opaque)} bytes, at most {MAX_FINISH_OPAQUE}")
    return struct.pack("<H", len(opaque)) + bytes(opaque)


def read_opaque_field(data: bytes, what: str) -> tuple[int, bytes]:
    """``(offset after the opaque field, OpaqueData)`` of a 1.4 FINISH-family message
    (``(4, b"")`` before 1.4); CodecError when truncated or over 1024 bytes."""
    _need(data, HEADER_SIZE, what)
    if data[0] < 0x14:
        return HEADER_SIZE, b""
    _need(data, HEADER_SIZE + 2, f"{what} OpaqueDataLength")
    n = _u16(data, HEADER_SIZE)
    if n > MAX_FINISH_OPAQUE:
        raise CodecError(f"{what} OpaqueDataLength {n} is over {MAX_FINISH_OPAQUE}")
    end = HEADER_SIZE + 2 + n
    _need(data, end, f"{what} with OpaqueDataLength {n}")
    return end, bytes(data[HEADER_SIZE + 2 : end])


#: SPDM_MAX_OPAQUE_DATA_SIZE
MAX_FINISH_OPAQUE = 1024


def build_finish_rsp(version: int, verify_data: bytes = b"", opaque: bytes = b"") -> bytes:
    """FINISH_RSP (1.4: OpaqueDataLength + OpaqueData; ResponderVerifyData only when the
    handshake is in the clear)."""
    return (
        build_header(version, ResponseCode.FINISH_RSP) + opaque_field(version, opaque) + verify_data
    )


# --- PSK_EXCHANGE / PSK_EXCHANGE_RSP (DSP0274 10.13) ------------------------------------


@dataclass(slots=True)
class PskExchangeRequest:
    """PSK_EXCHANGE (SPDM 1.1+)."""

    version: int
    measurement_summary_hash_type: int
    session_policy: int
    req_session_id: int
    psk_hint: bytes = b""
    context: bytes = b""
    opaque_data: bytes = b""

    def encode(self) -> bytes:
        return (
            build_header(
                self.version,
                RequestCode.PSK_EXCHANGE,
                self.measurement_summary_hash_type,
                self.session_policy,
            )
            + struct.pack(
                "<HHHH",
                self.req_session_id,
                len(self.psk_hint),
                len(self.context),
                len(self.opaque_data),
            )
            + self.psk_hint
            + self.context
            + self.opaque_data
        )

    @classmethod
    def decode(cls, data: bytes) -> tuple[PskExchangeRequest, int]:
        _need(data, PSK_EXCHANGE_FIXED_SIZE, "PSK_EXCHANGE")
        req_sid, hint_len, ctx_len, opaque_len = struct.unpack_from("<HHHH", data, HEADER_SIZE)
        size = PSK_EXCHANGE_FIXED_SIZE + hint_len + ctx_len + opaque_len
        _need(data, size, "PSK_EXCHANGE with its PSKHint, RequesterContext and OpaqueData")
        off = PSK_EXCHANGE_FIXED_SIZE
        return (
            cls(
                version=data[0],
                measurement_summary_hash_type=data[2],
                session_policy=data[3],
                req_session_id=req_sid,
                psk_hint=bytes(data[off : off + hint_len]),
                context=bytes(data[off + hint_len : off + hint_len + ctx_len]),
                opaque_data=bytes(data[off + hint_len + ctx_len : size]),
            ),
            size,
        )


@dataclass(slots=True)
class PskExchangeResponse:
    """PSK_EXCHANGE_RSP (SPDM 1.1+)."""

    version: int
    heartbeat_period: int
    rsp_session_id: int
    measurement_summary_hash: bytes = b""
    context: bytes = b""
    opaque_data: bytes = b""
    verify_data: bytes = b""
    reserved: int = 0

    def encode_unverified(self) -> bytes:
        """Everything before ResponderVerifyData (what TH1 covers)."""
        return (
            build_header(self.version, ResponseCode.PSK_EXCHANGE_RSP, self.heartbeat_period, 0)
            + struct.pack(
                "<HHHH",
                self.rsp_session_id,
                self.reserved,
                len(self.context),
                len(self.opaque_data),
            )
            + self.measurement_summary_hash
            + self.context
            + self.opaque_data
        )

    def encode(self) -> bytes:
        return self.encode_unverified() + self.verify_data

    @classmethod
    def decode(
        cls, data: bytes, *, summary_hash_size: int, hash_size: int
    ) -> tuple[PskExchangeResponse, int]:
        _need(data, PSK_EXCHANGE_FIXED_SIZE, "PSK_EXCHANGE_RSP")
        rsp_sid, reserved, ctx_len, opaque_len = struct.unpack_from("<HHHH", data, HEADER_SIZE)
        off = PSK_EXCHANGE_FIXED_SIZE
        size = off + summary_hash_size + ctx_len + opaque_len + hash_size
        _need(data, size, "PSK_EXCHANGE_RSP with its context, opaque data and verify data")
        msh_end = off + summary_hash_size
        ctx_end = msh_end + ctx_len
        op_end = ctx_end + opaque_len
        return (
            cls(
                version=data[0],
                heartbeat_period=data[2],
                rsp_session_id=rsp_sid,
                reserved=reserved,
                measurement_summary_hash=bytes(data[off:msh_end]),
                context=bytes(data[msh_end:ctx_end]),
                opaque_data=bytes(data[ctx_end:op_end]),
                verify_data=bytes(data[op_end:size]),
            ),
            size,
        )


def build_psk_finish_rsp(version: int, opaque: bytes = b"") -> bytes:
    """PSK_FINISH_RSP (1.4: OpaqueDataLength + OpaqueData)."""
    return build_header(version, ResponseCode.PSK_FINISH_RSP) + opaque_field(version, opaque)


# --- HEARTBEAT, KEY_UPDATE, END_SESSION (DSP0274 10.14-10.16) ---------------------------


def build_heartbeat_ack(version: int) -> bytes:
    return build_header(version, ResponseCode.HEARTBEAT_ACK)


def build_key_update_ack(version: int, operation: int, tag: int) -> bytes:
    return build_header(version, ResponseCode.KEY_UPDATE_ACK, operation, tag)


def build_end_session(version: int, attributes: int = 0) -> bytes:
    return build_header(version, RequestCode.END_SESSION, attributes)


def build_end_session_ack(version: int) -> bytes:
    return build_header(version, ResponseCode.END_SESSION_ACK)


# --- encapsulated requests (DSP0274 10.17 / 10.18) --------------------------------------


def build_encapsulated_request(version: int, request_id: int, payload: bytes) -> bytes:
    """ENCAPSULATED_REQUEST: Param1 = RequestID, then the request for the requester."""
    return build_header(version, ResponseCode.ENCAPSULATED_REQUEST, request_id) + payload


def encapsulated_ack_header_size(version: int) -> int:
    """ENCAPSULATED_RESPONSE_ACK header: 4 bytes in 1.1, 8 (AckRequestID + 3 reserved) 1.2+."""
    return HEADER_SIZE + (4 if version >= 0x12 else 0)


@dataclass(slots=True)
class EncapsulatedResponseAck:
    """ENCAPSULATED_RESPONSE_ACK."""

    version: int
    request_id: int
    payload_type: int
    ack_request_id: int = 0
    payload: bytes = b""

    def encode(self) -> bytes:
        out = build_header(
            self.version,
            ResponseCode.ENCAPSULATED_RESPONSE_ACK,
            self.request_id,
            self.payload_type,
        )
        if self.version >= 0x12:
            out += bytes((self.ack_request_id, 0, 0, 0))
        return out + self.payload

    @classmethod
    def decode(cls, data: bytes) -> EncapsulatedResponseAck:
        size = encapsulated_ack_header_size(data[0] if data else 0)
        _need(data, size, "ENCAPSULATED_RESPONSE_ACK")
        return cls(
            version=data[0],
            request_id=data[2],
            payload_type=data[3],
            ack_request_id=data[4] if size > HEADER_SIZE else 0,
            payload=bytes(data[size:]),
        )


# --- DSP0277 opaque data ----------------------------------------------------------------


@dataclass(slots=True)
class OpaqueElement:
    """One element of the general opaque data format."""

    id: int
    data: bytes
    vendor_id: bytes = b""

    def encode(self) -> bytes:
        raw = (
            bytes((self.id, len(self.vendor_id)))
            + self.vendor_id
            + struct.pack("<H", len(self.data))
            + self.data
        )
        return raw + bytes(-len(raw) % 4)


@dataclass(slots=True)
class OpaqueData:
    """Opaque data in the DSP0277 / DSP0274 1.2 general format."""

    elements: list[OpaqueElement] = field(default_factory=list)

    def encode(self, version: int) -> bytes:
        """1.2+: TotalElements + 3 reserved; 1.1: SpecID, OpaqueVersion, TotalElements, u16."""
        if version >= 0x12:
            head = bytes((len(self.elements), 0, 0, 0))
        else:
            head = struct.pack(
                "<IBBH",
                SECURED_MESSAGE_OPAQUE_DATA_SPEC_ID,
                SECURED_MESSAGE_OPAQUE_VERSION,
                len(self.elements),
                0,
            )
        return head + b"".join(e.encode() for e in self.elements)

    @classmethod
    def decode(cls, version: int, data: bytes) -> OpaqueData:
        """Parse strictly, as libspdm's opaque data checks do.

        1.2+: the size is a multiple of 4, TotalElements >= 1, every element (with its
        zero padding) lies inside the data and the elements fill it exactly.  1.1: the
        SpecID and OpaqueVersion match DSP0277.
        """
        if version >= 0x12:
            if len(data) % 4:
                raise CodecError(f"opaque data: {len(data)} bytes is not a multiple of 4")
            _need(data, 4, "opaque data header")
            total = data[0]
            off = 4
        else:
            _need(data, 8, "DSP0277 opaque data header")
            spec_id, opaque_version, total, _ = struct.unpack_from("<IBBH", data, 0)
            if spec_id != SECURED_MESSAGE_OPAQUE_DATA_SPEC_ID:
                raise CodecError(f"opaque data: SpecID 0x{spec_id:08X}, expected 0x444D5446")
            if opaque_version != SECURED_MESSAGE_OPAQUE_VERSION:
                raise CodecError(f"opaque data: OpaqueVersion {opaque_version}, expected 1")
            off = 8
        if total < 1:
            raise CodecError("opaque data: TotalElements is 0")
        elements: list[OpaqueElement] = []
        for i in range(total):
            if off + 2 > len(data):
                raise CodecError(f"opaque element {i}: header runs past the data")
            elem_id, vendor_len = data[off], data[off + 1]
            if off + 2 + vendor_len + 2 > len(data):
                raise CodecError(f"opaque element {i}: VendorID runs past the data")
            vendor = bytes(data[off + 2 : off + 2 + vendor_len])
            dlen = _u16(data, off + 2 + vendor_len)
            start = off + 4 + vendor_len
            raw_len = 4 + vendor_len + dlen
            padded = raw_len + (-raw_len % 4)
            if off + padded > len(data):
                raise CodecError(f"opaque element {i}: {dlen} data bytes run past the data")
            if any(data[off + raw_len : off + padded]):
                raise CodecError(f"opaque element {i}: padding is not zero")
            elements.append(OpaqueElement(elem_id, bytes(data[start : start + dlen]), vendor))
            off += padded
        if off != len(data):
            raise CodecError(
                f"opaque data: {len(data) - off} bytes after the {total} declared elements"
            )
        return cls(elements)

    def sm_elements(self) -> list[tuple[int, bytes]]:
        """(SMDataID, rest) of every DMTF element that is DSP0277 secured-message data."""
        out: list[tuple[int, bytes]] = []
        for e in self.elements:
            dmtf = e.id == REGISTRY_ID_DMTF and not e.vendor_id
            if dmtf and len(e.data) >= 2 and e.data[0] == SM_DATA_VERSION:
                out.append((e.data[1], e.data))
        return out


def sm_supported_versions_element(versions: list[int]) -> OpaqueElement:
    """DSP0277 supported version list (SMDataID 1); versions as u16 VersionNumber values."""
    data = bytes((SM_DATA_VERSION, SmDataId.SUPPORTED_VERSIONS, len(versions)))
    data += b"".join(struct.pack("<H", v) for v in versions)
    return OpaqueElement(REGISTRY_ID_DMTF, data)


def sm_version_selection_element(version: int) -> OpaqueElement:
    """DSP0277 version selection (SMDataID 0)."""
    data = bytes((SM_DATA_VERSION, SmDataId.VERSION_SELECTION)) + struct.pack("<H", version)
    return OpaqueElement(REGISTRY_ID_DMTF, data)


def sm_aead_limit_element(exponent: int) -> OpaqueElement:
    """DSP0277 1.3 AEAD limit (SMDataID 2): AeadLimit = 2 ** exponent."""
    if not 0 <= exponent <= AEAD_LIMIT_EXPONENT_MAX:
        raise CodecError(f"AEAD limit exponent {exponent} is over 64")
    return OpaqueElement(REGISTRY_ID_DMTF, bytes((SM_DATA_VERSION, SmDataId.AEAD_LIMIT, exponent)))


def parse_supported_versions(opaque: OpaqueData) -> list[int]:
    """The versions of the first supported-version element; CodecError if missing/malformed."""
    for sm_id, data in opaque.sm_elements():
        if sm_id != SmDataId.SUPPORTED_VERSIONS:
            continue
        if len(data) < 3:
            raise CodecError("supported version element: no VersionCount")
        count = data[2]
        if count == 0:
            raise CodecError("supported version element: VersionCount is 0")
        if len(data) != 3 + 2 * count:
            raise CodecError(f"supported version element: {len(data)} bytes for {count} versions")
        return [_u16(data, 3 + 2 * i) for i in range(count)]
    raise CodecError("opaque data: no DSP0277 supported version element")


def parse_version_selection(opaque: OpaqueData) -> int:
    """The selected DSP0277 version; CodecError if missing or malformed."""
    for sm_id, data in opaque.sm_elements():
        if sm_id == SmDataId.VERSION_SELECTION:
            if len(data) != 4:
                raise CodecError(f"version selection element: {len(data)} bytes, expected 4")
            return _u16(data, 2)
    raise CodecError("opaque data: no DSP0277 version selection element")


def parse_aead_limit(opaque: OpaqueData) -> int | None:
    """The AEAD limit exponent (DSP0277 1.3), None when absent; CodecError if malformed."""
    for sm_id, data in opaque.sm_elements():
        if sm_id == SmDataId.AEAD_LIMIT:
            if len(data) != 3:
                raise CodecError(f"AEAD limit element: {len(data)} bytes, expected 3")
            if data[2] > AEAD_LIMIT_EXPONENT_MAX:
                raise CodecError(f"AEAD limit exponent {data[2]} is over 64")
            return data[2]
    return None
