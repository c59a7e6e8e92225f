"""Byte-level mutations of SPDM messages, and where the interesting fields are.

Pure functions.  Field positions follow DSP0274 (and libspdm ``spdm.h``):

* CHALLENGE_AUTH: header, CertChainHash (H), Nonce (32), MeasurementSummaryHash
  (H when the request's Param2 asks for one), OpaqueDataLength (2), OpaqueData,
  RequesterContext (8, 1.3), Signature (S).
* MEASUREMENTS: header, NumberOfBlocks (1) @4, MeasurementRecordLength (3) @5, record
  @8, Nonce (32), OpaqueDataLength (2), OpaqueData, RequesterContext (8, 1.3),
  Signature (S, when the request's Param1 bit 0 asked for one).
* KEY_EXCHANGE_RSP: header, RspSessionID (2), MutAuthRequested, SlotIDParam,
  RandomData (32) @8, ExchangeData (D), MeasurementSummaryHash (0/H), OpaqueDataLength
  (2), OpaqueData, Signature (S), ResponderVerifyData (H, absent when the handshake is
  in the clear).
* Requests: CHALLENGE and GET_MEASUREMENTS carry the requester's Nonce @4,
  KEY_EXCHANGE its RandomData @8, PSK_EXCHANGE its RequesterContext after the hint.

A mutation that cannot apply (offset out of range, an ERROR where a signature was
expected...) raises :class:`NotApplicable` with the reason, for the log.
"""

from __future__ import annotations

from typing import Any

from emulator.codec.constants import (
    RequestCode,
    RequesterCap,
    ResponderCap,
    ResponseCode,
)
from emulator.crypto import exchange_sizes, hash_size, signature_size
from emulator.errors import CryptoError

NONCE_SIZE = 32


class NotApplicable(Exception):
    """The fault does not apply to this message (the reason says why)."""


def _index(msg: bytes, offset: int) -> int:
    index = offset if offset >= 0 else len(msg) + offset
    if not 0 <= index < len(msg):
        raise NotApplicable(f"offset {offset} is outside the {len(msg)}-byte message")
    return index


def flip(msg: bytes, offsets: tuple[int, ...], mask: int) -> bytes:
    """XOR the byte at each offset with ``mask``."""
    out = bytearray(msg)
    for off in offsets:
        out[_index(msg, off)] ^= mask
    return bytes(out)


def set_bytes(msg: bytes, offsets: tuple[int, ...], value: int) -> bytes:
    """Set the byte at each offset to ``value``."""
    out = bytearray(msg)
    for off in offsets:
        out[_index(msg, off)] = value & 0xFF
    return bytes(out)


def truncate(msg: bytes, count: int) -> bytes:
    """Keep the first ``count`` bytes (negative: drop the last ``-count``)."""
    if count >= len(msg) or -count >= len(msg):
        raise NotApplicable(f"cannot truncate a {len(msg)}-byte message to {count}")
    return msg[:count]


def extend(msg: bytes, count: int, value: int) -> bytes:
    """Append ``count`` bytes of ``value``."""
    return msg + bytes([value & 0xFF]) * count


def _hash_size(r: Any) -> int:
    try:
        return hash_size(r.algorithms.base_hash)
    except CryptoError:
        raise NotApplicable("no hash algorithm negotiated") from None


def _sig_size(r: Any) -> int:
    try:
        return signature_size(r.algorithms.asym)
    except CryptoError:
        raise NotApplicable("no signature algorithm negotiated") from None


def _dhe_size(r: Any) -> int:
    try:
        # KEY_EXCHANGE_RSP ExchangeData: the DHE value or (1.4) the ML-KEM ciphertext
        return exchange_sizes(r.algorithms.dhe, r.algorithms.kem)[1]
    except CryptoError:
        raise NotApplicable("no DHE group or KEM negotiated") from None


def _record_length(response: bytes) -> int:
    if len(response) < 8:
        raise NotApplicable("MEASUREMENTS shorter than its fixed fields")
    return int.from_bytes(response[5:8], "little")


def _handshake_in_clear(r: Any) -> bool:
    caps = int(getattr(r.device, "capabilities", 0))
    peer = getattr(r, "peer", None)
    peer_flags = int(peer.flags) if peer is not None else 0
    return bool(
        caps & ResponderCap.HANDSHAKE_IN_THE_CLEAR_CAP
        and peer_flags & RequesterCap.HANDSHAKE_IN_THE_CLEAR_CAP
    )


def _check(response: bytes, end: int, what: str) -> None:
    if end > len(response):
        raise NotApplicable(f"{what} ends at byte {end}, beyond the {len(response)}-byte response")


def signature_span(response: bytes, request: bytes, r: Any) -> tuple[int, int]:
    """(offset, size) of the responder's signature in a signed response."""
    code = response[1] if len(response) > 1 else -1
    s = _sig_size(r)
    if code in (ResponseCode.CHALLENGE_AUTH, ResponseCode.ENDPOINT_INFO):
        start = len(response) - s
    elif code == ResponseCode.MEASUREMENTS:
        if len(request) < 3 or not request[2] & 0x01:
            raise NotApplicable("MEASUREMENTS without a signature (none was requested)")
        start = len(response) - s
    elif code == ResponseCode.KEY_EXCHANGE_RSP:
        tail = 0 if _handshake_in_clear(r) else _hash_size(r)
        start = len(response) - tail - s
    else:
        name = _name(code)
        raise NotApplicable(f"{name} carries no responder signature")
    if start < 4:
        raise NotApplicable("response shorter than its signature")
    return start, s


def nonce_offset_request(request: bytes) -> int:
    """Offset of the requester's nonce / random data in a request."""
    code = request[1] if len(request) > 1 else -1
    if code == RequestCode.CHALLENGE:
        off = 4
    elif code == RequestCode.GET_MEASUREMENTS:
        if len(request) < 3 or not request[2] & 0x01:
            raise NotApplicable("GET_MEASUREMENTS without a signature request has no nonce")
        off = 4
    elif code == RequestCode.KEY_EXCHANGE:
        off = 8
    elif code == RequestCode.PSK_EXCHANGE:
        if len(request) < 12:
            raise NotApplicable("PSK_EXCHANGE shorter than its fixed fields")
        hint = int.from_bytes(request[6:8], "little")
        ctx = int.from_bytes(request[8:10], "little")
        if ctx == 0:
            raise NotApplicable("PSK_EXCHANGE without a RequesterContext")
        off = 12 + hint
    else:
        raise NotApplicable(f"{_name(code)} carries no requester nonce; give at=OFFSET")
    if off >= len(request):
        raise NotApplicable(f"{_name(code)} too short for its nonce")
    return off


def nonce_offset_response(response: bytes, request: bytes, r: Any) -> int:
    """Offset of the responder's nonce / random data in a response."""
    code = response[1] if len(response) > 1 else -1
    if code == ResponseCode.CHALLENGE_AUTH:
        off = 4 + _hash_size(r)
    elif code == ResponseCode.MEASUREMENTS:
        off = 8 + _record_length(response)
    elif code == ResponseCode.KEY_EXCHANGE_RSP:
        off = 8
    else:
        raise NotApplicable(f"{_name(code)} carries no responder nonce; give at=OFFSET")
    _check(response, off + NONCE_SIZE, "the nonce")
    return off


def digest_span(response: bytes, r: Any) -> tuple[int, int]:
    """(offset, size) of the first digest of a DIGESTS response."""
    if len(response) < 2 or response[1] != ResponseCode.DIGESTS:
        raise NotApplicable(f"{_name(response[1] if len(response) > 1 else -1)} is not DIGESTS")
    h = _hash_size(r)
    _check(response, 4 + h, "the first digest")
    return 4, h


def length_field(response: bytes, request: bytes, r: Any) -> tuple[int, int, str]:
    """(offset, size, name) of the main length field of a response."""
    code = response[1] if len(response) > 1 else -1
    if code == ResponseCode.VERSION:
        field = (5, 1, "VersionNumberEntryCount")
    elif code == ResponseCode.ALGORITHMS:
        field = (4, 2, "Length")
    elif code == ResponseCode.CERTIFICATE and response[0] >= 0x14 and response[2] & 0x80:
        field = (8, 4, "LargePortionLength")  # SPDM 1.4 LargeCertChain
    elif code == ResponseCode.CERTIFICATE:
        field = (4, 2, "PortionLength")
    elif code == ResponseCode.MEASUREMENTS:
        field = (5, 3, "MeasurementRecordLength")
    elif code == ResponseCode.CHALLENGE_AUTH:
        h = _hash_size(r)
        msh = h if len(request) > 3 and request[3] != 0 else 0
        field = (4 + h + NONCE_SIZE + msh, 2, "OpaqueDataLength")
    elif code == ResponseCode.KEY_EXCHANGE_RSP:
        msh = _hash_size(r) if len(request) > 2 and request[2] != 0 else 0
        field = (8 + NONCE_SIZE + _dhe_size(r) + msh, 2, "OpaqueDataLength")
    elif code == ResponseCode.PSK_EXCHANGE_RSP:
        field = (8, 2, "ResponderContextLength")
    else:
        raise NotApplicable(f"no length field known for {_name(code)}")
    _check(response, field[0] + field[1], field[2])
    return field


def change_length(
    response: bytes, field: tuple[int, int, str], delta: int, new_value: int | None
) -> bytes:
    """Add ``delta`` to a little-endian length field, or set it to ``new_value``."""
    off, size, _ = field
    old = int.from_bytes(response[off : off + size], "little")
    value = (new_value if new_value is not None else old + delta) % (1 << (8 * size))
    return response[:off] + value.to_bytes(size, "little") + response[off + size :]


def _name(code: int) -> str:
    for enum in (ResponseCode, RequestCode):
        try:
            return enum(code).name
        except ValueError:
            continue
    return f"code 0x{code:02X}" if code >= 0 else "a short message"
