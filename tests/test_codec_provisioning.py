"""Byte-exact layouts of the SPDM 1.2/1.3 provisioning, MEL, endpoint info and event
messages, written out from the DSP0274 1.3 tables (and libspdm's industry_standard/spdm.h
structs), parsed back and rejected when truncated."""

from __future__ import annotations

import pytest

from emulator.codec.endpoint_info import (
    ClassIdentifier,
    EndpointInfoResponse,
    GetEndpointInfoRequest,
    decode_device_class_identifier,
    encode_device_class_identifier,
)
from emulator.codec.events import (
    EventData,
    EventGroup,
    build_send_event,
    build_subscribe_event_types,
    build_supported_event_types,
    index_mask,
    mask_indices,
    parse_send_event,
    parse_subscribe_event_types,
    parse_supported_event_types,
)
from emulator.codec.mel import (
    MelEntry,
    build_get_mel,
    build_mel_response,
    decode_mel,
    encode_mel,
    extend,
    parse_get_mel,
    parse_mel_response,
)
from emulator.codec.provisioning import (
    GetCsrRequest,
    KeyPairInfoResponse,
    SetCertificateRequest,
    SetKeyPairInfoRequest,
    build_csr_response,
    build_get_key_pair_info,
    build_set_certificate_rsp,
    build_set_key_pair_info_ack,
    key_pair_asym_of,
    parse_csr_response,
)
from emulator.errors import CodecError


def hx(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# --- GET_CSR / CSR (DSP0274 1.3 tables 84-86) ------------------------------------------


def test_get_csr_layout() -> None:
    # 1.3: Param1 KeyPairID 2, Param2 = CSRCertModel 1 | CSRTrackingTag 3 << 3 | Overwrite
    attrs = GetCsrRequest.make_attributes(cert_model=1, tracking_tag=3, overwrite=True)
    assert attrs == 0x99
    msg = GetCsrRequest(0x13, 2, attrs, requester_info=b"\x30\x00", opaque_data=b"\x01\x02")
    raw = msg.encode()
    assert raw == hx("13 ED 02 99 0200 0200 3000 0102")
    back, size = GetCsrRequest.decode(raw + b"\x00\x00")  # DOE padding after it
    assert size == len(raw)
    assert (back.key_pair_id, back.cert_model, back.tracking_tag, back.overwrite) == (2, 1, 3, True)
    assert back.requester_info == b"\x30\x00" and back.opaque_data == b"\x01\x02"
    with pytest.raises(CodecError, match="RequesterInfoLength 2"):
        GetCsrRequest.decode(raw[:-1])
    with pytest.raises(CodecError):
        GetCsrRequest.decode(hx("12 ED 00 00 00"))


def test_csr_response_layout() -> None:
    raw = build_csr_response(0x12, b"\x30\x03\x02\x01\x00")
    assert raw == hx("12 6D 00 00 0500 0000 3003020100")
    assert parse_csr_response(raw) == b"\x30\x03\x02\x01\x00"
    with pytest.raises(CodecError, match="CSRLength is 0"):
        parse_csr_response(hx("12 6D 00 00 0000 0000"))
    with pytest.raises(CodecError):
        parse_csr_response(raw[:-1])
    with pytest.raises(CodecError):
        build_csr_response(0x12, b"")


# --- SET_CERTIFICATE (tables 87-89) ------------------------------------------------------


def test_set_certificate_layout() -> None:
    chain = hx("0C00 0000") + bytes(8)
    msg = SetCertificateRequest(0x13, slot_id=3, cert_chain=chain, cert_model=3, key_pair_id=5)
    raw = msg.encode()
    # Param1: SlotID 3 | SetCertModel 3 << 4; Param2 KeyPairID 5
    assert raw[:4] == hx("13 EE 33 05") and raw[4:] == chain
    back = SetCertificateRequest.decode(raw)
    assert (back.slot_id, back.cert_model, back.erase, back.key_pair_id) == (3, 3, False, 5)
    erase = SetCertificateRequest(0x13, slot_id=1, erase=True, key_pair_id=2).encode()
    assert erase == hx("13 EE 81 02")
    assert SetCertificateRequest.decode(erase).erase
    assert build_set_certificate_rsp(0x12, 7) == hx("12 6E 07 00")


# --- GET_KEY_PAIR_INFO / KEY_PAIR_INFO / SET_KEY_PAIR_INFO (tables 90-96) ----------------


def test_key_pair_info_layouts() -> None:
    assert build_get_key_pair_info(0x13, 4) == hx("13 FC 00 00 04")
    info = KeyPairInfoResponse(
        version=0x13,
        total_key_pairs=12,
        key_pair_id=4,
        capabilities=0x3F,
        key_usage_capabilities=0xC00F,
        current_key_usage=0x0003,
        asym_algo_capabilities=0x01FF,
        current_asym_algo=0x0010,
        assoc_cert_slot_mask=0x03,
        public_key_info=hx("3010 0607 2A8648CE3D0201 0605 2B81040022"),
    )
    raw = info.encode()
    assert raw == hx(
        "13 7C 00 00 0C 04 3F00 0FC0 0300 FF010000 10000000 1200 03"
        "3010 0607 2A8648CE3D0201 0605 2B81040022"
    )
    back, size = KeyPairInfoResponse.decode(raw)
    assert back == info and size == len(raw)
    with pytest.raises(CodecError, match="PublicKeyInfoLen 18"):
        KeyPairInfoResponse.decode(raw[:-1])


def test_set_key_pair_info_layouts() -> None:
    full = SetKeyPairInfoRequest(0x13, 2, 7, 0x0001, 0x0010, 0x04).encode()
    assert full == hx("13 FD 02 00 07 00 0100 10000000 04")
    back = SetKeyPairInfoRequest.decode(full)
    assert (back.operation, back.key_pair_id, back.desired_key_usage) == (2, 7, 1)
    assert (back.desired_asym_algo, back.desired_assoc_cert_slot_mask) == (0x10, 4)
    # an erase may be sent with the KeyPairID only (libspdm does)
    erase = SetKeyPairInfoRequest(0x13, 1, 3, full=False).encode()
    assert erase == hx("13 FD 01 00 03")
    assert SetKeyPairInfoRequest.decode(erase).key_pair_id == 3
    with pytest.raises(CodecError, match="operation 0 needs 13"):
        SetKeyPairInfoRequest.decode(hx("13 FD 00 00 03"))
    assert build_set_key_pair_info_ack(0x13) == hx("13 7D 00 00")
    assert key_pair_asym_of(0x0C) == 0x02  # RSASSA/RSAPSS 3072 -> RSA3072


# --- GET_MEASUREMENT_EXTENSION_LOG (tables 48-50) and the DMTF MEL --------------------------


def test_mel_messages_and_format() -> None:
    assert build_get_mel(0x13, 0x10, 0x400) == hx("13 EF 00 00 10000000 00040000")
    assert parse_get_mel(hx("13 EF 00 00 10000000 00040000")) == (0x10, 0x400)
    with pytest.raises(CodecError):
        parse_get_mel(hx("13 EF 00 00 1000"))
    rsp = build_mel_response(0x13, b"abc", 5)
    assert rsp == hx("13 6F 00 00 03000000 05000000 616263")
    assert parse_mel_response(rsp) == (b"abc", 5)
    e1 = MelEntry(1, 8, 0x89, b"ROM")
    e2 = MelEntry(2, 8, 0x86, hx("0A030001"))
    # MELIndex (4), MeasIndex (1), Reserved (3), DMTF header: type, size (2), value
    assert e1.encode() == hx("01000000 08 000000 89 0300 524F4D")
    mel = encode_mel([e1, e2])
    assert mel[:16] == hx("02000000") + (14 + 15).to_bytes(4, "little") + bytes(8)
    assert decode_mel(mel) == [e1, e2]
    with pytest.raises(CodecError, match="MELEntriesLen"):
        decode_mel(mel[:-1])
    import hashlib

    def h(d: bytes) -> bytes:
        return hashlib.sha384(d).digest()

    assert extend(bytes(48), [e1, e2], h) == h(h(bytes(48) + e1.encode()) + e2.encode())


# --- GET_ENDPOINT_INFO / ENDPOINT_INFO (tables 102-107) -----------------------------------


def test_endpoint_info_layouts() -> None:
    nonce = bytes(range(32))
    req = GetEndpointInfoRequest(0x13, 1, slot_id=2, attributes=1, nonce=nonce).encode()
    assert req == hx("13 87 01 02 01 000000") + nonce
    back, size = GetEndpointInfoRequest.decode(req)
    assert back.signed and back.slot_id == 2 and back.nonce == nonce and size == 40
    with pytest.raises(CodecError, match="nonce"):
        GetEndpointInfoRequest.decode(req[:-1])
    unsigned, size = GetEndpointInfoRequest.decode(hx("13 87 01 00 00 000000"))
    assert not unsigned.signed and size == 8
    ep = encode_device_class_identifier([ClassIdentifier(3, hx("3612"), (hx("1000"), b"\x02"))])
    # NumIdentifiers 1, Reserved; IdElemLength 10 (the bytes after it): SVH 03 02 3612,
    # NumSubIds 2, then SubIdLen + SubIdentifier: 02 1000, 01 02
    assert ep == hx("01 000000 0A 03 02 3612 02 02 1000 01 02")
    assert decode_device_class_identifier(ep) == [
        ClassIdentifier(3, hx("3612"), (hx("1000"), b"\x02"))
    ]
    with pytest.raises(CodecError):
        decode_device_class_identifier(ep[:-1])
    rsp = EndpointInfoResponse(0x13, 2, ep, nonce, b"\xaa" * 4)
    raw = rsp.encode()
    assert (
        raw == hx("13 07 00 02 00000000") + nonce + len(ep).to_bytes(4, "little") + ep + b"\xaa" * 4
    )
    parsed, end = EndpointInfoResponse.decode(raw, signed=True, signature_size=4)
    assert parsed.ep_info == ep and parsed.signature == b"\xaa" * 4 and end == len(raw)
    plain = EndpointInfoResponse(0x13, 0, ep).encode()
    assert plain == hx("13 07 00 00 00000000") + len(ep).to_bytes(4, "little") + ep


# --- events (tables 108-117) ----------------------------------------------------------------


def test_event_layouts() -> None:
    group = EventGroup(0, b"", 1, 0, (1, 2, 3, 4))
    body = hx("00 00 0400 0100 00000000 0100 0000 0200 0000 0300 0000 0400 0000")
    assert group.encode() == body
    rsp = build_supported_event_types(0x13, [group])
    assert rsp == hx("13 62 01 00") + len(body).to_bytes(4, "little") + body
    assert parse_supported_event_types(rsp) == [group]
    sub_all = EventGroup(0, b"", 1, 1, ())
    sub = build_subscribe_event_types(0x13, [sub_all])
    assert sub == hx("13 F0 01 00 0A000000 00 00 0000 0100 01000000")
    assert parse_subscribe_event_types(sub) == [sub_all]
    assert build_subscribe_event_types(0x13, []) == hx("13 F0 00 00")
    assert parse_subscribe_event_types(hx("13 F0 00 00")) == []
    with pytest.raises(CodecError, match="must be the 4-byte header"):
        parse_subscribe_event_types(hx("13 F0 00 00 00"))
    with pytest.raises(CodecError, match="SubscribeListLen"):
        parse_subscribe_event_types(sub + b"\x00")
    ev = EventData(7, 4, b"\x03")
    send = build_send_event(0x13, [ev, EventData(8, 2, index_mask([1, 255]))])
    assert send[:4] == hx("13 F1 00 00") and send[4:8] == hx("02000000")
    # EventInstanceID, Reserved (4), SVH 00 00, EventTypeID, EventDetailLen, EventDetail
    assert send[8 : 8 + 15] == hx("07000000 00000000 00 00 0400 0100 03")
    events = parse_send_event(send)
    assert events[0] == ev and mask_indices(events[1].detail) == [1, 255]
    with pytest.raises(CodecError):
        parse_send_event(send[:-1])


def test_trace_decodes_the_new_messages() -> None:
    from emulator.trace import describe_message

    cases = [
        (hx("13 ED 01 99 0200 0000 3000"), "GET_CSR 1.3 KeyPairID=1 CSRCertModel=1 "
         "CSRTrackingTag=3 Overwrite=1 RequesterInfoLength=2 OpaqueDataLength=0"),
        (build_csr_response(0x12, b"\x30\x00"), "CSR 1.2 CSRLength=2"),
        (hx("13 EE 31 02 1000 0000"), "SET_CERTIFICATE 1.3 SlotID=1 SetCertModel=3 Erase=0 "
         "KeyPairID=2 CertChainLength=16"),
        (hx("12 6E 03 00"), "SET_CERTIFICATE_RSP 1.2 SlotID=3"),
        (hx("13 FC 00 00 04"), "GET_KEY_PAIR_INFO 1.3 KeyPairID=4"),
        (hx("13 FD 01 00 03"), "SET_KEY_PAIR_INFO 1.3 Operation=1 KeyPairID=3"),
        (build_get_mel(0x13, 16, 0x400), "GET_MEASUREMENT_EXTENSION_LOG 1.3 Offset=16 Length=1024"),
        (build_mel_response(0x13, b"abc", 5), "MEASUREMENT_EXTENSION_LOG 1.3 PortionLength=3 "
         "RemainderLength=5"),
        (hx("13 87 01 02 01 000000") + bytes(32), "GET_ENDPOINT_INFO 1.3 SubCode=1 SlotID=2 "
         "SignatureRequested=1"),
        (EndpointInfoResponse(0x13, 0, b"\x01" * 8).encode(), "ENDPOINT_INFO 1.3 SlotID=0 "
         "EPInfoLength=8"),
        (EndpointInfoResponse(0x13, 1, b"\x01" * 8, bytes(32), bytes(96)).encode(),
         "ENDPOINT_INFO 1.3 SlotID=1 EPInfoLength=8 SignatureLength=96"),
        (build_send_event(0x13, [EventData(7, 4, b"\x01")]), "SEND_EVENT 1.3 EventCount=1 "
         "Event(ID=7,Type=4,Detail=01)"),
    ]  # fmt: skip
    for message, text in cases:
        assert describe_message(message) == text
    # a malformed one is shown in hex with the reason, never an exception
    assert "malformed" in describe_message(hx("13 ED 00 00 0500 0000"))
