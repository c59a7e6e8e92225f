"""Codes, flags and algorithm bits of DSP0274 (SPDM 1.0-1.4) and DSP0277.

Values are those of the spec tables (and libspdm's ``industry_standard/spdm.h``).
"""

from __future__ import annotations

from enum import IntEnum, IntFlag


class SpdmVersion(IntEnum):
    """Version byte of the SPDM header (major in the high nibble, minor in the low)."""

    V10 = 0x10
    V11 = 0x11
    V12 = 0x12
    V13 = 0x13
    V14 = 0x14

    @property
    def text(self) -> str:
        return f"{self >> 4}.{self & 0xF}"

    @classmethod
    def from_text(cls, text: str) -> SpdmVersion:
        major, _, minor = text.strip().partition(".")
        return cls((int(major) << 4) | int(minor or "0"))

    @property
    def entry(self) -> int:
        """The VersionNumberEntry of the VERSION response (Major.Minor, Update 0, Alpha 0)."""
        return self << 8


class RequestCode(IntEnum):
    """Request codes (DSP0274 table "SPDM request codes")."""

    GET_DIGESTS = 0x81
    GET_CERTIFICATE = 0x82
    CHALLENGE = 0x83
    GET_VERSION = 0x84
    CHUNK_SEND = 0x85
    CHUNK_GET = 0x86
    GET_ENDPOINT_INFO = 0x87
    SLOT_MANAGEMENT = 0x88  # 1.4
    GET_MEASUREMENTS = 0xE0
    GET_CAPABILITIES = 0xE1
    GET_SUPPORTED_EVENT_TYPES = 0xE2
    NEGOTIATE_ALGORITHMS = 0xE3
    KEY_EXCHANGE = 0xE4
    FINISH = 0xE5
    PSK_EXCHANGE = 0xE6
    PSK_FINISH = 0xE7
    HEARTBEAT = 0xE8
    KEY_UPDATE = 0xE9
    GET_ENCAPSULATED_REQUEST = 0xEA
    DELIVER_ENCAPSULATED_RESPONSE = 0xEB
    END_SESSION = 0xEC
    GET_CSR = 0xED
    SET_CERTIFICATE = 0xEE
    GET_MEASUREMENT_EXTENSION_LOG = 0xEF
    SUBSCRIBE_EVENT_TYPES = 0xF0
    SEND_EVENT = 0xF1
    GET_KEY_PAIR_INFO = 0xFC
    SET_KEY_PAIR_INFO = 0xFD
    VENDOR_DEFINED_REQUEST = 0xFE
    RESPOND_IF_READY = 0xFF


class ResponseCode(IntEnum):
    """Response codes (DSP0274 table "SPDM response codes")."""

    DIGESTS = 0x01
    CERTIFICATE = 0x02
    CHALLENGE_AUTH = 0x03
    VERSION = 0x04
    CHUNK_SEND_ACK = 0x05
    CHUNK_RESPONSE = 0x06
    ENDPOINT_INFO = 0x07
    SLOT_MANAGEMENT_RESP = 0x08  # 1.4
    MEASUREMENTS = 0x60
    CAPABILITIES = 0x61
    SUPPORTED_EVENT_TYPES = 0x62
    ALGORITHMS = 0x63
    KEY_EXCHANGE_RSP = 0x64
    FINISH_RSP = 0x65
    PSK_EXCHANGE_RSP = 0x66
    PSK_FINISH_RSP = 0x67
    HEARTBEAT_ACK = 0x68
    KEY_UPDATE_ACK = 0x69
    ENCAPSULATED_REQUEST = 0x6A
    ENCAPSULATED_RESPONSE_ACK = 0x6B
    END_SESSION_ACK = 0x6C
    CSR = 0x6D
    SET_CERTIFICATE_RSP = 0x6E
    MEASUREMENT_EXTENSION_LOG = 0x6F
    SUBSCRIBE_EVENT_TYPES_ACK = 0x70
    EVENT_ACK = 0x71
    KEY_PAIR_INFO = 0x7C
    SET_KEY_PAIR_INFO_ACK = 0x7D
    VENDOR_DEFINED_RESPONSE = 0x7E
    ERROR = 0x7F


class ErrorCode(IntEnum):
    """ERROR response codes, carried in Param1 (DSP0274 table "Error code and error data")."""

    InvalidRequest = 0x01
    InvalidSession = 0x02  # 1.1 only; reserved from 1.2
    Busy = 0x03
    UnexpectedRequest = 0x04
    Unspecified = 0x05
    DecryptError = 0x06
    UnsupportedRequest = 0x07
    RequestInFlight = 0x08
    InvalidResponseCode = 0x09
    SessionLimitExceeded = 0x0A
    SessionRequired = 0x0B
    ResetRequired = 0x0C
    ResponseTooLarge = 0x0D
    RequestTooLarge = 0x0E
    LargeResponse = 0x0F
    MessageLost = 0x10
    InvalidPolicy = 0x11
    DataTooLarge = 0x12  # 1.4
    VersionMismatch = 0x41
    ResponseNotReady = 0x42
    RequestResynch = 0x43
    OperationFailed = 0x44
    NoPendingRequests = 0x45
    RequestSessionTerminated = 0x46  # 1.4
    InvalidState = 0x47  # 1.4
    VendorDefined = 0xFF


def code_name(code: int) -> str:
    """Human name of a request or response code (``0x84`` -> ``GET_VERSION``)."""
    name = _CODE_NAMES.get(code)
    return name if name is not None else f"UNKNOWN_0x{code:02X}"


#: code -> name, request codes first (as ``RequestCode(code).name`` then ``ResponseCode``)
_CODE_NAMES: dict[int, str] = {
    **{int(m): m.name for m in ResponseCode},
    **{int(m): m.name for m in RequestCode},
}


class ResponderCap(IntFlag):
    """Responder CAPABILITIES Flags (DSP0274 1.3, "Flag fields definitions for the Responder")."""

    CACHE_CAP = 1 << 0
    CERT_CAP = 1 << 1
    CHAL_CAP = 1 << 2
    MEAS_CAP_NO_SIG = 1 << 3  # MEAS_CAP = 01b
    MEAS_CAP_SIG = 1 << 4  # MEAS_CAP = 10b
    MEAS_FRESH_CAP = 1 << 5
    ENCRYPT_CAP = 1 << 6
    MAC_CAP = 1 << 7
    MUT_AUTH_CAP = 1 << 8
    KEY_EX_CAP = 1 << 9
    PSK_CAP = 1 << 10  # PSK_CAP = 01b: PSK without context
    PSK_CAP_WITH_CONTEXT = 1 << 11  # PSK_CAP = 10b
    ENCAP_CAP = 1 << 12
    HBEAT_CAP = 1 << 13
    KEY_UPD_CAP = 1 << 14
    HANDSHAKE_IN_THE_CLEAR_CAP = 1 << 15
    PUB_KEY_ID_CAP = 1 << 16
    CHUNK_CAP = 1 << 17
    ALIAS_CERT_CAP = 1 << 18
    SET_CERT_CAP = 1 << 19
    CSR_CAP = 1 << 20
    CERT_INSTALL_RESET_CAP = 1 << 21
    EP_INFO_CAP_NO_SIG = 1 << 22
    EP_INFO_CAP_SIG = 1 << 23
    MEL_CAP = 1 << 24
    EVENT_CAP = 1 << 25
    MULTI_KEY_CAP_ONLY = 1 << 26
    MULTI_KEY_CAP_NEG = 1 << 27
    GET_KEY_PAIR_INFO_CAP = 1 << 28
    SET_KEY_PAIR_INFO_CAP = 1 << 29
    SET_KEY_PAIR_RESET_CAP = 1 << 30  # 1.4
    LARGE_RESP_CAP = 1 << 31  # 1.4


class ResponderExtCap(IntFlag):
    """Responder CAPABILITIES ExtFlags (DSP0274 1.4; the field is reserved before 1.4)."""

    SLOT_MGMT_CAP = 1 << 0


class RequesterCap(IntFlag):
    """Requester GET_CAPABILITIES Flags (DSP0274 1.3, Requester flag fields)."""

    CERT_CAP = 1 << 1
    CHAL_CAP = 1 << 2
    ENCRYPT_CAP = 1 << 6
    MAC_CAP = 1 << 7
    MUT_AUTH_CAP = 1 << 8
    KEY_EX_CAP = 1 << 9
    PSK_CAP = 1 << 10
    PSK_CAP_RESERVED = 1 << 11  # PSK_CAP = 10b / 11b are reserved for a requester
    ENCAP_CAP = 1 << 12
    HBEAT_CAP = 1 << 13
    KEY_UPD_CAP = 1 << 14
    HANDSHAKE_IN_THE_CLEAR_CAP = 1 << 15
    PUB_KEY_ID_CAP = 1 << 16
    CHUNK_CAP = 1 << 17
    EP_INFO_CAP_NO_SIG = 1 << 22
    EP_INFO_CAP_SIG = 1 << 23
    EVENT_CAP = 1 << 25
    MULTI_KEY_CAP_ONLY = 1 << 26
    MULTI_KEY_CAP_NEG = 1 << 27
    LARGE_RESP_CAP = 1 << 31  # 1.4


MEAS_CAP_MASK = ResponderCap.MEAS_CAP_NO_SIG | ResponderCap.MEAS_CAP_SIG
PSK_CAP_MASK = ResponderCap.PSK_CAP | ResponderCap.PSK_CAP_WITH_CONTEXT

#: Capability flags defined per version (anything else is reserved and must be zero
#: in what the responder sends).
RESPONDER_CAPS_BY_VERSION: dict[int, int] = {
    0x10: 0x3F,  # CACHE .. MEAS_FRESH
    0x11: 0x1FFFF,  # .. PUB_KEY_ID
    0x12: 0x3FFFFF,  # .. CERT_INSTALL_RESET
    0x13: 0x3FFFFFFF,  # .. SET_KEY_PAIR_INFO
    0x14: 0xFFFFFFFF,  # .. LARGE_RESP
}
REQUESTER_CAPS_BY_VERSION: dict[int, int] = {
    0x10: 0x06,
    0x11: 0x1F7C6,
    0x12: 0x3F7C6,
    0x13: 0x0EC3F7C6 | (1 << 11),
    0x14: 0x0EC3F7C6 | (1 << 11) | (1 << 31),
}


class BaseAsymAlgo(IntFlag):
    """BaseAsymAlgo / ReqBaseAsymAlg bits (DSP0274 NEGOTIATE_ALGORITHMS)."""

    RSASSA_2048 = 1 << 0
    RSAPSS_2048 = 1 << 1
    RSASSA_3072 = 1 << 2
    RSAPSS_3072 = 1 << 3
    ECDSA_P256 = 1 << 4
    RSASSA_4096 = 1 << 5
    RSAPSS_4096 = 1 << 6
    ECDSA_P384 = 1 << 7
    ECDSA_P521 = 1 << 8
    SM2_P256 = 1 << 9
    EDDSA_ED25519 = 1 << 10
    EDDSA_ED448 = 1 << 11


class PqcAsymAlgo(IntFlag):
    """PqcAsymAlgo / PqcAsymSel and the ReqPqcAsymAlg AlgStruct bits (DSP0274 1.4).

    ``cryptography`` (48) implements ML-DSA-44/65/87 only; the SLH-DSA bits are defined
    here for parsing and traces but cannot be offered (see :data:`PQC_IMPLEMENTED`).
    """

    ML_DSA_44 = 1 << 0
    ML_DSA_65 = 1 << 1
    ML_DSA_87 = 1 << 2
    SLH_DSA_SHA2_128S = 1 << 3
    SLH_DSA_SHAKE_128S = 1 << 4
    SLH_DSA_SHA2_128F = 1 << 5
    SLH_DSA_SHAKE_128F = 1 << 6
    SLH_DSA_SHA2_192S = 1 << 7
    SLH_DSA_SHAKE_192S = 1 << 8
    SLH_DSA_SHA2_192F = 1 << 9
    SLH_DSA_SHAKE_192F = 1 << 10
    SLH_DSA_SHA2_256S = 1 << 11
    SLH_DSA_SHAKE_256S = 1 << 12
    SLH_DSA_SHA2_256F = 1 << 13
    SLH_DSA_SHAKE_256F = 1 << 14


#: Internal signature-algorithm ids: a BaseAsymAlgo bit as is, a PqcAsymAlgo bit shifted
#: left by this many bits (so one ``int`` names any negotiated signature algorithm).
PQC_ASYM_SHIFT = 32


def signing_algo(base_asym: int, pqc_asym: int) -> int:
    """The internal id of the negotiated signature algorithm (BaseAsymSel or PqcAsymSel)."""
    return base_asym if base_asym else pqc_asym << PQC_ASYM_SHIFT


def split_signing_algo(asym: int) -> tuple[int, int]:
    """(BaseAsymAlgo bits, PqcAsymAlgo bits) of an internal signature-algorithm id."""
    return asym & 0xFFFFFFFF, asym >> PQC_ASYM_SHIFT


def signing_algo_name(asym: int) -> str:
    """Human name of an internal signature-algorithm id (``ECDSA_P384``, ``ML_DSA_65``)."""
    base, pqc = split_signing_algo(asym)
    if pqc:
        return PqcAsymAlgo(pqc).name or f"PqcAsymAlgo 0x{pqc:X}"
    return BaseAsymAlgo(base).name or f"BaseAsymAlgo 0x{base:X}"


class KemAlgo(IntFlag):
    """KEM AlgStruct bits (AlgType 7, DSP0274 1.4)."""

    ML_KEM_512 = 1 << 0
    ML_KEM_768 = 1 << 1
    ML_KEM_1024 = 1 << 2


class BaseHashAlgo(IntFlag):
    """BaseHashAlgo bits (DSP0274 NEGOTIATE_ALGORITHMS)."""

    SHA_256 = 1 << 0
    SHA_384 = 1 << 1
    SHA_512 = 1 << 2
    SHA3_256 = 1 << 3
    SHA3_384 = 1 << 4
    SHA3_512 = 1 << 5
    SM3_256 = 1 << 6


class MeasurementHashAlgo(IntFlag):
    """MeasurementHashAlgo bits of ALGORITHMS."""

    RAW_BIT_STREAM_ONLY = 1 << 0
    SHA_256 = 1 << 1
    SHA_384 = 1 << 2
    SHA_512 = 1 << 3
    SHA3_256 = 1 << 4
    SHA3_384 = 1 << 5
    SHA3_512 = 1 << 6
    SM3_256 = 1 << 7


class DheGroup(IntFlag):
    """DHE AlgStruct bits (AlgType 2)."""

    FFDHE_2048 = 1 << 0
    FFDHE_3072 = 1 << 1
    FFDHE_4096 = 1 << 2
    SECP_256_R1 = 1 << 3
    SECP_384_R1 = 1 << 4
    SECP_521_R1 = 1 << 5
    SM2_P256 = 1 << 6


class AeadSuite(IntFlag):
    """AEAD AlgStruct bits (AlgType 3)."""

    AES_128_GCM = 1 << 0
    AES_256_GCM = 1 << 1
    CHACHA20_POLY1305 = 1 << 2
    AEAD_SM4_GCM = 1 << 3


class KeySchedule(IntFlag):
    """KeySchedule AlgStruct bits (AlgType 5)."""

    SPDM = 1 << 0


class MeasurementSpec(IntFlag):
    """MeasurementSpecification bits."""

    DMTF = 1 << 0


class OtherParams(IntFlag):
    """OtherParamsSupport / OtherParamsSelection (1.2+; MULTI_KEY_CONN 1.3)."""

    OPAQUE_DATA_FMT_0 = 1 << 0
    OPAQUE_DATA_FMT_1 = 1 << 1
    MULTI_KEY_CONN = 1 << 4


OPAQUE_DATA_FMT_MASK = 0x0F


class MelSpec(IntFlag):
    """MELspecification bits (1.3)."""

    DMTF = 1 << 0


class AlgType(IntEnum):
    """AlgType of an AlgStruct (DSP0274 table "Algorithm request structure")."""

    DHE = 2
    AEAD = 3
    REQ_BASE_ASYM_ALG = 4
    KEY_SCHEDULE = 5
    REQ_PQC_ASYM_ALG = 6  # 1.4
    KEM = 7  # 1.4


#: Minimum DataTransferSize of an SPDM 1.2+ endpoint (DSP0274 MinDataTransferSize).
MIN_DATA_TRANSFER_SIZE_V12 = 42
