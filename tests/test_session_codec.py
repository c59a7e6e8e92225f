"""Byte-exact session message layouts, DSP0277 opaque data and the secured record format.

Vectors are written by hand from the DSP0274 / DSP0277 tables (and libspdm's
``spdm.h`` / ``spdm_secured_message.h``); records are checked against AES-GCM /
ChaCha20-Poly1305 computed here directly with ``cryptography``.
"""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from emulator.codec.session import (
    EncapsulatedResponseAck,
    FinishRequest,
    KeyExchangeRequest,
    KeyExchangeResponse,
    OpaqueData,
    PskExchangeRequest,
    PskExchangeResponse,
    build_end_session,
    build_key_update_ack,
    parse_aead_limit,
    parse_supported_versions,
    parse_version_selection,
    sm_aead_limit_element,
    sm_supported_versions_element,
    sm_version_selection_element,
)
from emulator.errors import CodecError, SessionError
from emulator.session.record import (
    RecordError,
    open_record,
    parse_header,
    record_iv,
    seal_record,
)
from emulator.transport import get_binding
from emulator.transport.base import RecordFormat

# --- messages ---------------------------------------------------------------------------


def test_key_exchange_request_layout() -> None:
    random = bytes(range(32))
    exchange = bytes([0xAA]) * 64
    opaque = bytes.fromhex("01000000000008000101 02 0010 0011 00 00".replace(" ", ""))
    msg = KeyExchangeRequest(
        version=0x12,
        measurement_summary_hash_type=0xFF,
        slot_id=3,
        req_session_id=0xBEEF,
        session_policy=0x01,
        random_data=random,
        exchange_data=exchange,
        opaque_data=opaque,
    )
    expected = (
        bytes.fromhex("12 e4 ff 03".replace(" ", ""))
        + bytes.fromhex("efbe 01 00".replace(" ", ""))
        + random
        + exchange
        + struct.pack("<H", len(opaque))
        + opaque
    )
    assert msg.encode() == expected
    parsed, size = KeyExchangeRequest.decode(expected + bytes(3), 64)  # DOE padding ignored
    assert size == len(expected)
    assert parsed == msg


def test_key_exchange_request_truncated() -> None:
    raw = KeyExchangeRequest(0x11, 0, 0, 1, 0, bytes(32), bytes(64), b"\x01\x02\x03\x04").encode()
    with pytest.raises(CodecError):
        KeyExchangeRequest.decode(raw[:-1], 64)
    with pytest.raises(CodecError):
        KeyExchangeRequest.decode(raw[:100], 64)


def test_key_exchange_response_layout() -> None:
    rsp = KeyExchangeResponse(
        version=0x13,
        heartbeat_period=60,
        rsp_session_id=0x1234,
        mut_auth_requested=2,
        req_slot_id_param=0,
        random_data=bytes([1]) * 32,
        exchange_data=bytes([2]) * 96,
        measurement_summary_hash=bytes([3]) * 48,
        opaque_data=bytes([4]) * 12,
        signature=bytes([5]) * 96,
        verify_data=bytes([6]) * 48,
    )
    head = bytes.fromhex("13 64 3c 00 3412 02 00".replace(" ", ""))
    unsigned = (
        head + bytes([1]) * 32 + bytes([2]) * 96 + bytes([3]) * 48 + b"\x0c\x00" + bytes([4]) * 12
    )
    assert rsp.encode_unsigned() == unsigned
    assert rsp.encode() == unsigned + bytes([5]) * 96 + bytes([6]) * 48
    parsed, size = KeyExchangeResponse.decode(
        rsp.encode(), exchange_size=96, summary_hash_size=48, signature_size=96, verify_size=48
    )
    assert size == len(rsp.encode())
    assert parsed == rsp


def test_finish_layout() -> None:
    f = FinishRequest(version=0x12, verify_data=bytes([9]) * 32)
    assert f.encode() == bytes.fromhex("12e50000") + bytes([9]) * 32
    mutual = FinishRequest(0x12, bytes([9]) * 32, signature=bytes([8]) * 64, req_slot_id=2)
    assert mutual.encode()[:4] == bytes.fromhex("12e50102")
    parsed, size = FinishRequest.decode(mutual.encode() + b"\x00", 64, 32)
    assert size == 4 + 64 + 32 and parsed.signature == bytes([8]) * 64


def test_psk_exchange_layouts() -> None:
    req = PskExchangeRequest(
        version=0x12,
        measurement_summary_hash_type=1,
        session_policy=1,
        req_session_id=0x0102,
        psk_hint=b"TestPskHint\x00",
        context=bytes(48),
        opaque_data=b"\x01\x00\x00\x00",
    )
    raw = req.encode()
    assert raw[:12] == bytes.fromhex("12 e6 01 01 0201 0c00 3000 0400".replace(" ", ""))
    assert raw[12:24] == b"TestPskHint\x00"
    assert PskExchangeRequest.decode(raw)[0] == req
    with pytest.raises(CodecError):
        PskExchangeRequest.decode(raw[:-1])
    rsp = PskExchangeResponse(0x12, 5, 0xABCD, bytes(32), bytes([7]) * 64, b"\x01\x00\x00\x00")
    rsp.verify_data = bytes([8]) * 32
    enc = rsp.encode()
    assert enc[:12] == bytes.fromhex("12 66 05 00 cdab 0000 4000 0400".replace(" ", ""))
    parsed, size = PskExchangeResponse.decode(enc, summary_hash_size=32, hash_size=32)
    assert parsed == rsp and size == len(enc)


def test_small_messages() -> None:
    assert build_key_update_ack(0x11, 2, 0x5A) == bytes.fromhex("1169025a")
    assert build_end_session(0x13, 1) == bytes.fromhex("13ec0100")
    ack12 = EncapsulatedResponseAck(0x12, 3, 1, ack_request_id=2, payload=b"\x12\x82\x00\x00")
    assert ack12.encode() == bytes.fromhex("126b0301 02000000 12820000".replace(" ", ""))
    ack11 = EncapsulatedResponseAck(0x11, 0, 0)
    assert ack11.encode() == bytes.fromhex("116b0000")
    assert EncapsulatedResponseAck.decode(ack12.encode()) == ack12


# --- DSP0277 opaque data ---------------------------------------------------------------------


def test_opaque_supported_versions_12() -> None:
    data = OpaqueData([sm_supported_versions_element([0x1000, 0x1100, 0x1200])]).encode(0x12)
    # TotalElements 1 + 3 reserved; element: ID 0, VendorLen 0, len 9, SMDataVersion 1,
    # SMDataID 1, count 3, versions LE, 3 bytes of padding
    assert data == bytes.fromhex("010000000000 090001 01 03 0010 0011 0012000000")
    assert parse_supported_versions(OpaqueData.decode(0x12, data)) == [0x1000, 0x1100, 0x1200]


def test_opaque_selection_11_and_aead_limit() -> None:
    data = OpaqueData([sm_version_selection_element(0x1100)]).encode(0x11)
    assert data == bytes.fromhex("46544d44 01 01 00000000 040001 00 0011")
    assert parse_version_selection(OpaqueData.decode(0x11, data)) == 0x1100
    both = OpaqueData([sm_version_selection_element(0x1300), sm_aead_limit_element(40)])
    raw = both.encode(0x13)
    assert raw == bytes.fromhex("0200000000000400 0100001300000300 010228 00")
    parsed = OpaqueData.decode(0x13, raw)
    assert parse_version_selection(parsed) == 0x1300
    assert parse_aead_limit(parsed) == 40


@pytest.mark.parametrize(
    "raw",
    [
        bytes.fromhex("01000000 0000 0900 010103 0010 0011 0012 0000"),  # 19 bytes: not aligned
        bytes.fromhex("00000000"),  # no element
        bytes.fromhex("02000000 00000400 01000012"),  # 2 declared, 1 present
        bytes.fromhex("01000000 00000500 0100001200 010000"),  # non-zero padding
        bytes.fromhex("01000000 00000400 01000012 00000000"),  # trailing bytes
    ],
)
def test_opaque_malformed_12(raw: bytes) -> None:
    with pytest.raises(CodecError):
        OpaqueData.decode(0x12, raw)


def test_opaque_11_needs_dsp0277_header() -> None:
    with pytest.raises(CodecError, match="SpecID"):
        OpaqueData.decode(0x11, bytes.fromhex("44544d46 01 01 0000 0000 0400 01000011"))
    with pytest.raises(CodecError, match="no DSP0277 supported version"):
        parse_supported_versions(OpaqueData([sm_version_selection_element(0x1100)]))


# --- DSP0277 records ---------------------------------------------------------------------------

KEY16 = bytes(range(16))
KEY32 = bytes(range(32))
SALT = bytes.fromhex("a0a1a2a3a4a5a6a7a8a9aaab")


def test_record_iv_little_endian_sequence() -> None:
    # sequence number 0x0102 little-endian XOR into bytes 0..7 of the salt
    assert record_iv(SALT, 0x0102) == bytes.fromhex("a2a0a2a3a4a5a6a7a8a9aaab")
    assert record_iv(SALT, 0) == SALT


def test_record_doe_against_aes_gcm() -> None:
    app = bytes.fromhex("12e80000")  # HEARTBEAT
    rec = seal_record(
        aead=0x01,
        key=KEY16,
        salt=SALT,
        sequence_number=5,
        session_id=0xFFFE0001,
        sequence_number_size=0,
        app_data=app,
    )
    header = struct.pack("<IH", 0xFFFE0001, 2 + 4 + 16)
    nonce = bytes([SALT[0] ^ 5]) + SALT[1:]
    expected = header + AESGCM(KEY16).encrypt(nonce, b"\x04\x00" + app, header)
    assert rec == expected
    assert (
        open_record(
            aead=0x01,
            key=KEY16,
            salt=SALT,
            sequence_number=5,
            session_id=0xFFFE0001,
            sequence_number_size=0,
            record=rec + bytes(2),  # DOE DWORD padding after the record is ignored
        )
        == app
    )


def test_record_mctp_sequence_in_header_and_padding() -> None:
    app = b"\x05" + bytes.fromhex("13e80000")
    rec = seal_record(
        aead=0x04,
        key=KEY32,
        salt=SALT,
        sequence_number=0x10203,
        session_id=0x00010002,
        sequence_number_size=2,
        app_data=app,
        padding=b"\xee\xee\xee",
    )
    hdr = parse_header(rec, 2)
    assert (hdr.session_id, hdr.sequence_field, hdr.length) == (
        0x00010002,
        b"\x03\x02",
        2 + 5 + 3 + 16,
    )
    aad = rec[:8]
    nonce = (
        bytes(a ^ b for a, b in zip(SALT[:8], struct.pack("<Q", 0x10203), strict=True)) + SALT[8:]
    )
    plain = ChaCha20Poly1305(KEY32).decrypt(nonce, rec[8:], aad)
    assert plain == b"\x05\x00" + app + b"\xee\xee\xee"


def test_record_mac_only_layout() -> None:
    app = bytes.fromhex("12e80000")
    rec = seal_record(
        aead=0x02,
        key=KEY32,
        salt=SALT,
        sequence_number=0,
        session_id=7,
        sequence_number_size=2,
        app_data=app,
        mac_only=True,
    )
    # header, then the application data in the clear (no ApplicationDataLength), then the MAC
    assert rec[:8] == struct.pack("<I", 7) + b"\x00\x00" + struct.pack("<H", 4 + 16)
    assert rec[8:12] == app
    tag = AESGCM(KEY32).encrypt(SALT, b"", rec[:12])
    assert rec[12:] == tag


def _open(rec: bytes, seq: int = 0, size: int = 2, mac_only: bool = False) -> bytes:
    return open_record(
        aead=0x02,
        key=KEY32,
        salt=SALT,
        sequence_number=seq,
        session_id=0x11112222,
        sequence_number_size=size,
        record=rec,
        mac_only=mac_only,
    )


@pytest.mark.parametrize("mac_only", [False, True])
@pytest.mark.parametrize("bit", [0, 4 * 8, 6 * 8, 9 * 8, -1])
def test_record_tamper_rejected(bit: int, mac_only: bool) -> None:
    rec = bytearray(
        seal_record(
            aead=0x02,
            key=KEY32,
            salt=SALT,
            sequence_number=3,
            session_id=0x11112222,
            sequence_number_size=2,
            app_data=b"\x05\x12\xe0\x00\x00",
            mac_only=mac_only,
        )
    )
    assert _open(bytes(rec), 3, mac_only=mac_only) == b"\x05\x12\xe0\x00\x00"
    idx = bit // 8 if bit >= 0 else len(rec) - 1
    rec[idx] ^= 1 << (bit % 8 if bit >= 0 else 7)
    with pytest.raises(RecordError):
        _open(bytes(rec), 3, mac_only=mac_only)


def test_record_wrong_sequence_and_short() -> None:
    rec = seal_record(
        aead=0x02,
        key=KEY32,
        salt=SALT,
        sequence_number=1,
        session_id=0x11112222,
        sequence_number_size=0,
        app_data=b"abc",
    )
    with pytest.raises(RecordError):  # replay: the receiver expects sequence number 2
        _open(rec, 2, size=0)
    with pytest.raises(RecordError):
        _open(rec[:10], 1, size=0)
    with pytest.raises(SessionError):
        _open(rec, (1 << 64) - 1, size=0)  # the all-ones sequence number is never used


def test_record_application_length_overrun_rejected() -> None:
    # a well-authenticated plaintext whose ApplicationDataLength exceeds the data
    header = struct.pack("<IH", 0x11112222, 2 + 3 + 16)
    body = AESGCM(KEY32).encrypt(SALT, b"\x09\x00abc", header)
    with pytest.raises(RecordError, match="ApplicationDataLength"):
        _open(header + body, 0, size=0)


def test_record_format_per_binding() -> None:
    assert get_binding("doe").record_format == RecordFormat(0, 0, b"")
    # MCTP: secured PLDM (message type 0x01) besides SPDM (DSP0275)
    assert get_binding("mctp").record_format == RecordFormat(
        2, 32, b"\x05", app_protocols=((1, "pldm"),)
    )


def test_requester_record_params_come_from_the_binding() -> None:
    """The requester's own record code takes its facts from the binding's record_format."""
    from emulator.errors import RequesterError
    from emulator.requester.session import RecordParams

    assert RecordParams.for_binding("mctp") == RecordParams(2, b"\x05", 32)
    assert RecordParams.for_binding("doe") == RecordParams(0, b"", 0)
    assert RecordParams.for_binding(get_binding("mctp")) == RecordParams.for_binding("MCTP")
    for name in ("none", "pcie"):
        with pytest.raises(RequesterError, match=f"transport '{name}' has no secured-message"):
            RecordParams.for_binding(name)
    with pytest.raises(RequesterError, match="'none' has no secured-message binding"):
        RecordParams.for_binding(get_binding("none"))
