"""Identity message layouts, byte for byte against vectors written from DSP0274's tables."""

from __future__ import annotations

import pytest

from emulator.codec.identity import (
    CertificateMsg,
    ChallengeAuthMsg,
    ChallengeMsg,
    DigestsMsg,
    GetCertificateMsg,
    build_get_digests,
    challenge_size,
)
from emulator.errors import CodecError


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("\n", ""))


D32A = bytes(range(32))
D32B = bytes(range(0x40, 0x60))


def test_get_digests() -> None:
    assert build_get_digests(0x12) == h("12 81 00 00")


def test_digests_1_2() -> None:
    # Param1 reserved, Param2 = slot mask 0b101, then one digest per set bit
    msg = DigestsMsg(0x12, 0, 0x05, [D32A, D32B])
    assert msg.encode() == h("12 01 00 05") + D32A + D32B
    parsed, size = DigestsMsg.decode(msg.encode() + b"\x00\x00", 32)
    assert size == 68 and parsed.digests == [D32A, D32B] and parsed.provisioned_mask == 5


def test_digests_1_3_multi_key() -> None:
    # Param1 SupportedSlotMask 0x0F, Param2 ProvisionedSlotMask 0x05; then KeyPairID[2],
    # CertificateInfo[2], KeyUsageMask[2] (u16 LE)
    msg = DigestsMsg(
        0x13,
        0x0F,
        0x05,
        [D32A, D32B],
        multi_key=True,
        key_pair_ids=[1, 0x11],
        certificate_infos=[1, 3],
        key_usages=[0x000F, 0x4002],
    )
    wire = h("13 01 0f 05") + D32A + D32B + h("01 11  01 03  0f00 0240")
    assert msg.encode() == wire
    parsed, size = DigestsMsg.decode(wire, 32, multi_key=True)
    assert size == len(wire)
    assert parsed.supported_mask == 0x0F
    assert parsed.key_pair_ids == [1, 0x11]
    assert parsed.certificate_infos == [1, 3]
    assert parsed.key_usages == [0x000F, 0x4002]


def test_digests_errors() -> None:
    with pytest.raises(CodecError):
        DigestsMsg(0x12, 0, 0x07, [D32A]).encode()  # 3 slots, 1 digest
    with pytest.raises(CodecError):
        DigestsMsg.decode(h("12 01 00 03") + D32A, 32)  # second digest missing
    with pytest.raises(CodecError):
        DigestsMsg.decode(h("13 01 01 01") + D32A + h("01 01"), 32, multi_key=True)


def test_get_certificate() -> None:
    # Param1 SlotID 3, Param2 1.3 SlotSizeRequested, Offset 0x0400, Length 0x0200
    msg = GetCertificateMsg(0x13, 3, 0x400, 0x200, param2=1)
    assert msg.encode() == h("13 82 03 01 0004 0002")
    parsed = GetCertificateMsg.decode(h("13 82 03 01 0004 0002 0000"))
    assert (parsed.slot_id, parsed.offset, parsed.length) == (3, 0x400, 0x200)
    assert parsed.slot_size_requested
    # before 1.3 Param2 is reserved: never SlotSizeRequested
    assert not GetCertificateMsg.decode(h("12 82 03 01 0004 0002")).slot_size_requested
    with pytest.raises(CodecError):
        GetCertificateMsg.decode(h("12 82 00 00 00 00 10"))


def test_certificate() -> None:
    msg = CertificateMsg(0x12, 2, b"\xaa\xbb\xcc", 0x0102)
    assert msg.encode() == h("12 02 02 00 0300 0201 aabbcc")
    parsed, size = CertificateMsg.decode(h("12 02 02 03 0300 0201 aabbcc 00"))
    assert size == 11 and parsed.portion == b"\xaa\xbb\xcc" and parsed.param2 == 3
    with pytest.raises(CodecError):
        CertificateMsg.decode(h("12 02 02 00 0400 0000 aabbcc"))  # PortionLength past the end


def test_challenge() -> None:
    nonce = bytes(range(32))
    assert ChallengeMsg(0x12, 1, 0xFF, nonce).encode() == h("12 83 01 ff") + nonce
    ctx = h("0102030405060708")
    wire = h("13 83 00 01") + nonce + ctx
    assert ChallengeMsg(0x13, 0, 1, nonce, ctx).encode() == wire
    parsed, size = ChallengeMsg.decode(wire + b"\x00\x00")
    assert size == 44 and parsed.requester_context == ctx and parsed.nonce == nonce
    assert challenge_size(0x10) == 36 and challenge_size(0x13) == 44
    with pytest.raises(CodecError):
        ChallengeMsg.decode(h("13 83 00 00") + nonce)  # 1.3 without RequesterContext


def test_challenge_auth_layouts() -> None:
    cch = bytes([0x11] * 48)
    nonce = bytes([0x22] * 32)
    summary = bytes([0x33] * 48)
    sig = bytes([0x44] * 96)
    ctx = h("a1a2a3a4a5a6a7a8")
    # 1.2: header, CertChainHash, Nonce, MeasurementSummaryHash, OpaqueDataLength, opaque, sig
    msg = ChallengeAuthMsg(0x12, 0x02, 0x07, cch, nonce, summary, b"\x01\x02", b"", sig)
    wire = h("12 03 02 07") + cch + nonce + summary + h("0200 0102") + sig
    assert msg.encode() == wire
    assert msg.encode_unsigned() == wire[: -len(sig)]
    parsed, size = ChallengeAuthMsg.decode(wire, 48, 48, 96)
    assert size == len(wire) and parsed.opaque_data == b"\x01\x02" and parsed.signature == sig
    # 1.3: RequesterContext after the opaque data, before the signature; no summary
    msg13 = ChallengeAuthMsg(0x13, 0x00, 0x01, cch, nonce, b"", b"", ctx, sig)
    wire13 = h("13 03 00 01") + cch + nonce + h("0000") + ctx + sig
    assert msg13.encode() == wire13
    parsed13, _ = ChallengeAuthMsg.decode(wire13, 48, 0, 96)
    assert parsed13.requester_context == ctx
    # one byte short: the signature does not fit
    with pytest.raises(CodecError):
        ChallengeAuthMsg.decode(wire13[:-1], 48, 0, 96)
    with pytest.raises(CodecError):
        ChallengeAuthMsg(0x13, 0, 1, cch, nonce).encode()  # 1.3 needs the context
