"""DSP0277 secured message records: encode and decode one record (sans-I/O, pure functions).

Record layout (DSP0277 "Secured message format"; libspdm ``libspdm_secmes_encode_decode.c``)::

    SessionID (u32 LE) | SequenceNumber (transport-specific size, LE) | Length (u16 LE)
    | ciphertext or MAC-only payload | MAC (16)

* The associated data is the whole header: SessionID, the on-wire sequence number (0
  bytes on PCI DOE, the low 2 bytes on MCTP) and Length.  Length counts everything after
  it, MAC included.
* Encrypt-and-MAC sessions: the plaintext is ``ApplicationDataLength (u16 LE) ||
  application data || random padding``; Length = plaintext size + 16.
* MAC-only sessions (MAC_CAP without ENCRYPT_CAP on both sides): the application data is
  sent in the clear right after the header, without ApplicationDataLength or padding, and
  is authenticated as associated data (AAD = header || application data, empty plaintext).
* The AEAD nonce is the direction's 12-byte IV ("salt") XOR the 64-bit sequence number,
  little-endian, in bytes 0..7 (libspdm ``LIBSPDM_DATA_SESSION_SEQ_NUM_ENC_LITTLE_DEC_LITTLE``,
  the only order DSP0277 1.2+ allows and libspdm's default for 1.0/1.1).
* The implicit sequence number counts the records of one direction under one key, from 0.
  A record whose on-wire sequence number, SessionID or Length is wrong, or whose MAC does
  not verify, is rejected (:class:`RecordError`).

On MCTP the application data carries the MCTP message type (0x05 for SPDM) in front of the
SPDM message (libspdm ``libspdm_transport_mctp_encode_message``); PCI DOE carries the bare
SPDM message.  Each binding's :class:`~emulator.transport.base.RecordFormat` holds these
facts.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from emulator.crypto.aead import AEAD_IV_SIZE, AEAD_TAG_SIZE, AeadCipher, aead_open, aead_seal
from emulator.errors import CryptoError, SessionError

SESSION_ID_SIZE = 4
LENGTH_SIZE = 2
APP_LENGTH_SIZE = 2
TAG_SIZE = AEAD_TAG_SIZE
#: The all-ones sequence number is never used (libspdm LIBSPDM_MAX_SPDM_SESSION_SEQUENCE_NUMBER).
MAX_SEQUENCE_NUMBER = (1 << 64) - 1


class RecordError(SessionError):
    """A secured record failed decoding or authentication (answered with DecryptError)."""


class SequenceOverflow(SessionError):
    """The direction's sequence number reached the AEAD limit: the session must end."""


class RecordHeader(NamedTuple):
    """The associated-data header of a record."""

    session_id: int
    sequence_field: bytes
    length: int
    size: int


_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")


def parse_header(record: bytes, sequence_number_size: int) -> RecordHeader:
    """Split off the header; RecordError when the record is shorter than it."""
    size = SESSION_ID_SIZE + sequence_number_size + LENGTH_SIZE
    if len(record) < size:
        raise RecordError(
            f"secured record: {len(record)} bytes, shorter than its {size}-byte header"
        )
    (session_id,) = _U32.unpack_from(record, 0)
    seq = bytes(record[SESSION_ID_SIZE : SESSION_ID_SIZE + sequence_number_size])
    (length,) = _U16.unpack_from(record, size - LENGTH_SIZE)
    return RecordHeader(session_id, seq, length, size)


def peek_session_id(record: bytes) -> int | None:
    """The SessionID of a record, None when it is too short to hold one."""
    if len(record) < SESSION_ID_SIZE:
        return None
    value: int = _U32.unpack_from(record, 0)[0]
    return value


def record_iv(salt: bytes, sequence_number: int) -> bytes:
    """The AEAD nonce: ``salt`` XOR the little-endian 64-bit sequence number (bytes 0..7)."""
    if len(salt) != AEAD_IV_SIZE:
        raise SessionError(f"session IV: {len(salt)} bytes, expected {AEAD_IV_SIZE}")
    low = int.from_bytes(salt[:8], "little") ^ sequence_number
    return low.to_bytes(8, "little") + bytes(salt[8:])


def _sequence_field(sequence_number: int, size: int) -> bytes:
    return sequence_number.to_bytes(8, "little")[:size]


def _check_sequence(sequence_number: int, max_sequence_number: int) -> None:
    if sequence_number > max_sequence_number or sequence_number >= MAX_SEQUENCE_NUMBER:
        raise SequenceOverflow(
            f"sequence number {sequence_number} is over the session's limit {max_sequence_number}"
        )


def seal_record(
    *,
    aead: int,
    key: bytes,
    salt: bytes,
    sequence_number: int,
    session_id: int,
    sequence_number_size: int,
    app_data: bytes,
    padding: bytes = b"",
    mac_only: bool = False,
    max_sequence_number: int = MAX_SEQUENCE_NUMBER,
    cipher: AeadCipher | None = None,
) -> bytes:
    """Build one record for ``app_data`` (the caller advances the sequence number).
    ``cipher``: the keyed AEAD object of ``key``, when the caller keeps one."""
    _check_sequence(sequence_number, max_sequence_number)
    fast = _FAST_HEADERS.get(sequence_number_size)
    if fast is not None and cipher is not None and not mac_only and len(salt) == AEAD_IV_SIZE:
        # the usual record, in one pass (the same bytes as below)
        plain = _U16.pack(len(app_data)) + app_data + padding
        length = len(plain) + TAG_SIZE
        if length <= 0xFFFF:
            if sequence_number_size:
                seq_mask = (1 << (8 * sequence_number_size)) - 1
                head = fast.pack(session_id, sequence_number & seq_mask, length)
            else:
                head = fast.pack(session_id, length)
            iv = record_iv(salt, sequence_number)
            return head + cipher.encrypt(iv, plain, head)
    iv = record_iv(salt, sequence_number)
    seq_field = _sequence_field(sequence_number, sequence_number_size)
    if mac_only:
        length = len(app_data) + TAG_SIZE
        header = _U32.pack(session_id) + seq_field + _U16.pack(length)
        try:
            tag = aead_seal(aead, key, iv, header + app_data, b"", cipher=cipher)
        except CryptoError as exc:
            raise SessionError(f"secured record: {exc}") from None
        return header + app_data + tag
    plaintext = _U16.pack(len(app_data)) + app_data + padding
    length = len(plaintext) + TAG_SIZE
    if length > 0xFFFF:
        raise SessionError(f"secured record: {length} bytes do not fit the 16-bit Length")
    header = _U32.pack(session_id) + seq_field + _U16.pack(length)
    try:
        sealed = aead_seal(aead, key, iv, header, plaintext, cipher=cipher)
    except CryptoError as exc:
        raise SessionError(f"secured record: {exc}") from None
    return header + sealed


def open_record(
    *,
    aead: int,
    key: bytes,
    salt: bytes,
    sequence_number: int,
    session_id: int,
    sequence_number_size: int,
    record: bytes,
    mac_only: bool = False,
    max_sequence_number: int = MAX_SEQUENCE_NUMBER,
    cipher: AeadCipher | None = None,
) -> bytes:
    """Check and decrypt one record; returns the application data.

    The checks are libspdm's, in its order: size, SessionID, on-wire sequence number,
    Length within the record and at least the MAC, the MAC, ApplicationDataLength within
    the plaintext.  Bytes after Length (transport padding) are ignored.
    """
    _check_sequence(sequence_number, max_sequence_number)
    fast = _FAST_HEADERS.get(sequence_number_size)
    if fast is not None and cipher is not None and not mac_only:
        opened = _open_fast(fast, cipher, salt, sequence_number, session_id, record)
        if opened is not None:
            return opened
        # not the usual record: the checks below say what is wrong with it
    hdr = parse_header(record, sequence_number_size)
    if len(record) < hdr.size + TAG_SIZE:
        raise RecordError(f"secured record: {len(record)} bytes, too short for a MAC")
    if hdr.session_id != session_id:
        raise RecordError(
            f"secured record: SessionID 0x{hdr.session_id:08X}, expected 0x{session_id:08X}"
        )
    if hdr.sequence_field != _sequence_field(sequence_number, sequence_number_size):
        got = int.from_bytes(hdr.sequence_field, "little")
        raise RecordError(
            f"secured record: sequence number {got} in the header, expected "
            f"{sequence_number & ((1 << (8 * sequence_number_size)) - 1)}"
        )
    if hdr.length > len(record) - hdr.size:
        raise RecordError(
            f"secured record: Length {hdr.length} runs past the {len(record)}-byte record"
        )
    if hdr.length < TAG_SIZE:
        raise RecordError(f"secured record: Length {hdr.length} is shorter than the MAC")
    body = bytes(record[hdr.size : hdr.size + hdr.length])
    header = bytes(record[: hdr.size])
    iv = record_iv(salt, sequence_number)
    if mac_only:
        payload, tag = body[:-TAG_SIZE], body[-TAG_SIZE:]
        try:
            aead_open(aead, key, iv, header + payload, tag, cipher=cipher)
        except CryptoError:
            raise RecordError(
                f"secured record: MAC does not verify (sequence number {sequence_number})"
            ) from None
        return payload
    try:
        plaintext = aead_open(aead, key, iv, header, body, cipher=cipher)
    except CryptoError:
        raise RecordError(
            f"secured record: AEAD authentication failed (sequence number {sequence_number})"
        ) from None
    if len(plaintext) < APP_LENGTH_SIZE:
        raise RecordError("secured record: no ApplicationDataLength in the plaintext")
    (app_len,) = _U16.unpack_from(plaintext, 0)
    if APP_LENGTH_SIZE + app_len > len(plaintext):
        raise RecordError(
            f"secured record: ApplicationDataLength {app_len} exceeds the "
            f"{len(plaintext) - APP_LENGTH_SIZE}-byte plaintext"
        )
    return plaintext[APP_LENGTH_SIZE : APP_LENGTH_SIZE + app_len]


#: the record header of the usual sequence-number sizes (PCI DOE 0, MCTP 2 bytes), for
#: the one-pass seal and :func:`_open_fast`
_FAST_HEADERS = {0: struct.Struct("<IH"), 2: struct.Struct("<IHH"), 8: struct.Struct("<IQH")}


def _open_fast(
    header: struct.Struct,
    cipher: AeadCipher,
    salt: bytes,
    sequence_number: int,
    session_id: int,
    record: bytes,
) -> bytes | None:
    """:func:`open_record` of an encrypted record whose header and ApplicationDataLength
    are right and whose tag verifies, in one pass; None for any other record (the full
    checks then name the problem)."""
    size = header.size
    if len(record) < size + TAG_SIZE or len(salt) != AEAD_IV_SIZE:
        return None
    fields = header.unpack_from(record, 0)
    length = fields[-1]
    if fields[0] != session_id or length < TAG_SIZE or length > len(record) - size:
        return None
    if size > 6 and fields[1] != sequence_number & ((1 << (8 * (size - 6))) - 1):
        return None
    iv = record_iv(salt, sequence_number)
    try:
        plaintext = cipher.decrypt(iv, record[size : size + length], record[:size])
    except Exception:  # InvalidTag: the full path reports it
        return None
    if len(plaintext) < APP_LENGTH_SIZE:
        return None
    (app_len,) = _U16.unpack_from(plaintext, 0)
    if APP_LENGTH_SIZE + app_len > len(plaintext):
        return None
    return plaintext[APP_LENGTH_SIZE : APP_LENGTH_SIZE + app_len]
