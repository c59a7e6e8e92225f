"""Property tests (hypothesis).

* Every message layout in ``emulator/codec`` round-trips: decode(encode(m)) == m, the size
  decode reports is the encoded size, trailing bytes (DOE padding) are ignored, and
  arbitrary bytes make a decoder raise nothing but CodecError.
* The VCA transcript (message A) equals an independent concatenation of the exchanged
  bytes, built here with ``struct`` (not the codec), for random valid parameter choices,
  with DOE padding and rejected requests mixed in.
* Random request sequences never raise out of ``Responder.handle`` and always get a
  well-formed response (the contract of ``fuzz/harness.py``), from every prefix stage.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.codec.constants import (
    AlgType,
    ErrorCode,
    RequestCode,
    RequesterCap,
    ResponseCode,
)
from emulator.codec.identity import (
    CertificateMsg,
    ChallengeAuthMsg,
    ChallengeMsg,
    DigestsMsg,
    GetCertificateMsg,
)
from emulator.codec.measurements import (
    GetMeasurementsRequest,
    MeasurementBlock,
    MeasurementsResponse,
    encode_record,
    parse_record,
)
from emulator.codec.messages import (
    AlgorithmsMsg,
    AlgStruct,
    CapabilitiesMsg,
    Header,
    NegotiateAlgorithmsMsg,
    ResponseNotReadyData,
    Version,
    build_header,
    build_version_response,
    get_capabilities_size,
)
from emulator.codec.session import (
    EncapsulatedResponseAck,
    FinishRequest,
    KeyExchangeRequest,
    KeyExchangeResponse,
    OpaqueData,
    OpaqueElement,
    PskExchangeRequest,
    PskExchangeResponse,
)
from emulator.errors import CodecError
from emulator.responder import ConnectionState
from fuzz.harness import STAGE_NAMES, ResponderHarness, choose_prefix, fuzz_device

VERSIONS = (0x10, 0x11, 0x12, 0x13)
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
version = st.sampled_from(VERSIONS)
v11 = st.sampled_from(VERSIONS[1:])


def blob(lo: int = 0, hi: int = 64) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=lo, max_size=hi)


def exact(n: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=n, max_size=n)


padding = blob(0, 7)


def never_raises_but_codec_error(decode: Callable[[bytes], Any], data: bytes) -> None:
    with contextlib.suppress(CodecError):
        decode(data)


# ---- DSP0274 connection messages (emulator/codec/messages.py) --------------------------------


@PROPS
@given(version, u8, u8, u8, padding)
def test_header_round_trip(v: int, code: int, p1: int, p2: int, pad: bytes) -> None:
    raw = build_header(v, code, p1, p2)
    assert raw == bytes((v, code, p1, p2))
    h = Header.parse(raw + pad)
    assert (h.version, h.code, h.param1, h.param2) == (v, code, p1, p2)


@PROPS
@given(u8, u8, u8, u8)
def test_response_not_ready_data_round_trip(rdt: int, code: int, token: int, rdtm: int) -> None:
    raw = ResponseNotReadyData.build(rdt_exponent=rdt, request_code=code, token=token, rdtm=rdtm)
    assert raw == bytes((rdt, code, token, rdtm))
    f = ResponseNotReadyData.parse(raw)
    assert (f.rdt_exponent, f.request_code, f.token, f.rdtm) == (rdt, code, token, rdtm)


@PROPS
@given(st.lists(u16, min_size=0, max_size=20), padding)
def test_version_round_trip(entries: list[int], pad: bytes) -> None:
    raw = build_version_response(entries)
    assert raw[:6] == bytes((0x10, 0x04, 0, 0, 0, len(entries)))
    assert raw[6:] == b"".join(struct.pack("<H", e) for e in entries)
    assert list(Version.parse(raw + pad).entries) == entries


@PROPS
@given(
    version,
    st.sampled_from([int(RequestCode.GET_CAPABILITIES), int(ResponseCode.CAPABILITIES)]),
    u8,
    u32,
    u32,
    u32,
    u8,
    u8,
    padding,
)
def test_capabilities_round_trip(
    v: int, code: int, ct: int, flags: int, dts: int, mx: int, p1: int, p2: int, pad: bytes
) -> None:
    msg = CapabilitiesMsg(v, code, ct, flags, dts, mx, p1, p2)
    raw = msg.encode()
    bare = v == 0x10 and code == RequestCode.GET_CAPABILITIES
    want_size = 4 if bare else 20 if v >= 0x12 else 12
    assert len(raw) == want_size
    if code == RequestCode.GET_CAPABILITIES:
        assert get_capabilities_size(v) == want_size
    back = CapabilitiesMsg.decode(raw + pad)
    if bare:
        msg = CapabilitiesMsg(v, code, param1=p1, param2=p2)
    elif v < 0x12:
        msg.data_transfer_size = msg.max_spdm_msg_size = 0
    assert back == msg


def ext_algs(n: int = 3) -> st.SearchStrategy[list[bytes]]:
    return st.lists(exact(4), max_size=n)


@st.composite
def alg_structs(draw: st.DrawFn) -> list[AlgStruct]:
    types = draw(st.lists(st.sampled_from([2, 3, 4, 5]), unique=True, max_size=4))
    return [AlgStruct(t, draw(u16), 2, draw(ext_algs(2))) for t in sorted(types)]


@PROPS
@given(version, u8, u8, u32, u32, u8, ext_algs(), ext_algs(), alg_structs(), u8, padding)
def test_negotiate_algorithms_round_trip(
    v: int,
    mspec: int,
    other: int,
    asym: int,
    hash_: int,
    mel: int,
    ext_asym: list[bytes],
    ext_hash: list[bytes],
    structs: list[AlgStruct],
    p2: int,
    pad: bytes,
) -> None:
    if v == 0x10:
        structs = []
    msg = NegotiateAlgorithmsMsg(v, mspec, other, asym, hash_, mel, ext_asym, ext_hash, structs, p2)
    raw = msg.encode()
    back, size = NegotiateAlgorithmsMsg.decode(raw + pad)
    assert size == len(raw) == back.length
    msg.length = size
    assert back == msg
    assert raw[4:6] == struct.pack("<H", len(raw))
    assert raw[8:16] == struct.pack("<II", asym, hash_)


@PROPS
@given(version, u8, u8, u32, u32, u32, u8, ext_algs(), ext_algs(), alg_structs(), padding)
def test_algorithms_round_trip(
    v: int,
    mspec: int,
    other: int,
    mhash: int,
    asym: int,
    hash_: int,
    mel: int,
    ext_asym: list[bytes],
    ext_hash: list[bytes],
    structs: list[AlgStruct],
    pad: bytes,
) -> None:
    if v == 0x10:
        structs = []
    msg = AlgorithmsMsg(v, mspec, other, mhash, asym, hash_, mel, ext_asym, ext_hash, structs)
    raw = msg.encode()
    back, size = AlgorithmsMsg.decode(raw + pad)
    assert size == len(raw) == back.length
    msg.length = size
    assert back == msg
    assert raw[8:20] == struct.pack("<III", mhash, asym, hash_)
    for st_ in structs:
        assert back.struct_value(AlgType(st_.alg_type)) == st_.supported


# ---- identity (emulator/codec/identity.py) ---------------------------------------------------

hash_sizes = st.sampled_from([32, 48, 64])
sig_sizes = st.sampled_from([64, 96, 132, 256, 384, 512, 114])


@PROPS
@given(version, u8, u8, hash_sizes, st.booleans(), st.data(), padding)
def test_digests_round_trip(
    v: int, supported: int, mask: int, h: int, multi: bool, data: st.DataObject, pad: bytes
) -> None:
    n = bin(mask).count("1")
    digests = [data.draw(exact(h)) for _ in range(n)]
    msg = DigestsMsg(v, supported, mask, digests, multi)
    if multi:
        msg.key_pair_ids = data.draw(st.lists(u8, min_size=n, max_size=n))
        msg.certificate_infos = data.draw(st.lists(u8, min_size=n, max_size=n))
        msg.key_usages = data.draw(st.lists(u16, min_size=n, max_size=n))
    raw = msg.encode()
    assert len(raw) == 4 + n * h + (4 * n if multi else 0)
    back, size = DigestsMsg.decode(raw + pad, h, multi)
    assert size == len(raw)
    assert back == msg


@PROPS
@given(version, u8, u16, u16, u8, padding)
def test_get_certificate_round_trip(
    v: int, p1: int, off: int, length: int, p2: int, pad: bytes
) -> None:
    msg = GetCertificateMsg(v, p1, off, length, p2)
    raw = msg.encode()
    assert raw == bytes((v, 0x82, p1, p2)) + struct.pack("<HH", off, length)
    assert GetCertificateMsg.decode(raw + pad) == msg


@PROPS
@given(version, u8, blob(0, 300), u16, u8, padding)
def test_certificate_round_trip(
    v: int, slot: int, portion: bytes, remainder: int, p2: int, pad: bytes
) -> None:
    msg = CertificateMsg(v, slot, portion, remainder, p2)
    raw = msg.encode()
    assert raw[4:8] == struct.pack("<HH", len(portion), remainder)
    back, size = CertificateMsg.decode(raw + pad)
    assert size == len(raw) and back == msg


@PROPS
@given(version, u8, u8, exact(32), exact(8), padding)
def test_challenge_round_trip(
    v: int, slot: int, summary: int, nonce: bytes, ctx: bytes, pad: bytes
) -> None:
    msg = ChallengeMsg(v, slot, summary, nonce, ctx if v >= 0x13 else b"")
    raw = msg.encode()
    assert len(raw) == (44 if v >= 0x13 else 36)
    back, size = ChallengeMsg.decode(raw + pad)
    assert size == len(raw) and back == msg


@PROPS
@given(
    version,
    u8,
    u8,
    hash_sizes,
    st.booleans(),
    sig_sizes,
    exact(32),
    blob(0, 40),
    exact(8),
    st.data(),
    padding,
)
def test_challenge_auth_round_trip(
    v: int,
    attrs: int,
    mask: int,
    h: int,
    summary: bool,
    s: int,
    nonce: bytes,
    opaque: bytes,
    ctx: bytes,
    data: st.DataObject,
    pad: bytes,
) -> None:
    msg = ChallengeAuthMsg(
        v,
        attrs,
        mask,
        data.draw(exact(h)),
        nonce,
        data.draw(exact(h)) if summary else b"",
        opaque,
        ctx if v >= 0x13 else b"",
        data.draw(exact(s)),
    )
    raw = msg.encode()
    assert raw == msg.encode_unsigned() + msg.signature
    back, size = ChallengeAuthMsg.decode(raw + pad, h, h if summary else 0, s)
    assert size == len(raw) and back == msg


# ---- measurements (emulator/codec/measurements.py) -------------------------------------------


@PROPS
@given(version, u8, u8, exact(32), u8, exact(8), padding)
def test_get_measurements_round_trip(
    v: int, attrs: int, op: int, nonce: bytes, slot: int, ctx: bytes, pad: bytes
) -> None:
    signed = bool(attrs & 1)
    msg = GetMeasurementsRequest(
        v,
        attrs,
        op,
        nonce if signed else b"",
        slot if signed and v >= 0x11 else 0,
        ctx if v >= 0x13 else b"",
    )
    raw = msg.encode()
    assert len(raw) == msg.size == 4 + (32 + (v >= 0x11) if signed else 0) + (8 if v >= 0x13 else 0)
    assert GetMeasurementsRequest.decode(raw + pad) == msg


blocks = st.lists(st.builds(MeasurementBlock, st.integers(1, 0xFE), u8, blob(0, 80)), max_size=6)


@PROPS
@given(blocks)
def test_measurement_record_round_trip(bs: list[MeasurementBlock]) -> None:
    record = encode_record(bs)
    assert len(record) == sum(7 + len(b.value) for b in bs)
    assert parse_record(record) == bs


@PROPS
@given(version, u8, u8, u8, blocks, exact(32), blob(0, 40), exact(8), st.booleans(), sig_sizes)
def test_measurements_round_trip(
    v: int,
    p1: int,
    p2: int,
    count: int,
    bs: list[MeasurementBlock],
    nonce: bytes,
    opaque: bytes,
    ctx: bytes,
    signed: bool,
    s: int,
) -> None:
    msg = MeasurementsResponse(
        v,
        p1,
        p2,
        count,
        encode_record(bs),
        nonce,
        opaque,
        ctx if v >= 0x13 else b"",
        bytes(range(256))[:s] * 2 if signed else b"",
        bs,
    )
    msg.signature = msg.signature[:s]
    raw = msg.encode()
    assert raw[5:8] == len(msg.record).to_bytes(3, "little")
    back, size = MeasurementsResponse.decode(raw + b"\x00\x00\x00", s if signed else 0)
    assert size == len(raw) and back == msg


# ---- sessions (emulator/codec/session.py) ----------------------------------------------------

exchange_sizes = st.sampled_from([64, 96, 132, 256, 384, 512])


@PROPS
@given(v11, u8, u8, u16, u8, exact(32), exchange_sizes, blob(0, 40), u8, st.data(), padding)
def test_key_exchange_round_trip(
    v: int,
    summary: int,
    slot: int,
    sid: int,
    policy: int,
    random: bytes,
    d: int,
    opaque: bytes,
    reserved: int,
    data: st.DataObject,
    pad: bytes,
) -> None:
    msg = KeyExchangeRequest(
        v, summary, slot, sid, policy, random, data.draw(exact(d)), opaque, reserved
    )
    raw = msg.encode()
    back, size = KeyExchangeRequest.decode(raw + pad, d)
    assert size == len(raw) == 42 + d + len(opaque) and back == msg


@PROPS
@given(
    v11,
    u8,
    u16,
    u8,
    u8,
    exact(32),
    exchange_sizes,
    hash_sizes,
    st.booleans(),
    blob(0, 40),
    sig_sizes,
    st.booleans(),
    st.data(),
    padding,
)
def test_key_exchange_rsp_round_trip(
    v: int,
    hb: int,
    sid: int,
    mut: int,
    slot: int,
    random: bytes,
    d: int,
    h: int,
    summary: bool,
    opaque: bytes,
    s: int,
    verify: bool,
    data: st.DataObject,
    pad: bytes,
) -> None:
    msg = KeyExchangeResponse(
        v,
        hb,
        sid,
        mut,
        slot,
        random,
        data.draw(exact(d)),
        data.draw(exact(h)) if summary else b"",
        opaque,
        data.draw(exact(s)),
        data.draw(exact(h)) if verify else b"",
    )
    raw = msg.encode()
    back, size = KeyExchangeResponse.decode(
        raw + pad,
        exchange_size=d,
        summary_hash_size=h if summary else 0,
        signature_size=s,
        verify_size=h if verify else 0,
    )
    assert size == len(raw) and back == msg


@PROPS
@given(v11, hash_sizes, st.booleans(), sig_sizes, u8, st.data(), padding)
def test_finish_round_trip(
    v: int, h: int, signed: bool, s: int, req_slot: int, data: st.DataObject, pad: bytes
) -> None:
    msg = FinishRequest(
        v, data.draw(exact(h)), data.draw(exact(s)) if signed else b"", req_slot, int(signed)
    )
    raw = msg.encode()
    back, size = FinishRequest.decode(raw + pad, s if signed else 0, h)
    assert size == len(raw) and back == msg


@PROPS
@given(v11, u8, u8, u16, blob(0, 40), blob(0, 64), blob(0, 40), padding)
def test_psk_exchange_round_trip(
    v: int, summary: int, policy: int, sid: int, hint: bytes, ctx: bytes, opaque: bytes, pad: bytes
) -> None:
    msg = PskExchangeRequest(v, summary, policy, sid, hint, ctx, opaque)
    raw = msg.encode()
    back, size = PskExchangeRequest.decode(raw + pad)
    assert size == len(raw) and back == msg


@PROPS
@given(v11, u8, u16, hash_sizes, st.booleans(), blob(0, 64), blob(0, 40), u16, st.data(), padding)
def test_psk_exchange_rsp_round_trip(
    v: int,
    hb: int,
    sid: int,
    h: int,
    summary: bool,
    ctx: bytes,
    opaque: bytes,
    reserved: int,
    data: st.DataObject,
    pad: bytes,
) -> None:
    msg = PskExchangeResponse(
        v,
        hb,
        sid,
        data.draw(exact(h)) if summary else b"",
        ctx,
        opaque,
        data.draw(exact(h)),
        reserved,
    )
    raw = msg.encode()
    back, size = PskExchangeResponse.decode(
        raw + pad, summary_hash_size=h if summary else 0, hash_size=h
    )
    assert size == len(raw) and back == msg


@PROPS
@given(v11, u8, u8, u8, blob(0, 40))
def test_encapsulated_response_ack_round_trip(
    v: int, rid: int, ptype: int, ack: int, payload: bytes
) -> None:
    msg = EncapsulatedResponseAck(v, rid, ptype, ack if v >= 0x12 else 0, payload)
    assert EncapsulatedResponseAck.decode(msg.encode()) == msg


@PROPS
@given(
    v11,
    st.lists(st.builds(OpaqueElement, u8, blob(0, 20), blob(0, 6)), min_size=1, max_size=4),
)
def test_opaque_data_round_trip(v: int, elements: list[OpaqueElement]) -> None:
    raw = OpaqueData(elements).encode(v)
    if v >= 0x12:
        assert len(raw) % 4 == 0 and raw[0] == len(elements)
    try:
        back = OpaqueData.decode(v, raw)
    except CodecError:
        # the strict decoder may refuse element ids / vendor lengths libspdm refuses; what
        # it accepts must round-trip exactly
        return
    assert back.encode(v) == raw


# ---- decoders on arbitrary bytes raise CodecError only ----------------------------------------


DECODERS: list[Callable[[bytes], object]] = [
    Header.parse,
    Version.parse,
    CapabilitiesMsg.decode,
    NegotiateAlgorithmsMsg.decode,
    AlgorithmsMsg.decode,
    lambda d: DigestsMsg.decode(d, 48, True),
    GetCertificateMsg.decode,
    CertificateMsg.decode,
    ChallengeMsg.decode,
    lambda d: ChallengeAuthMsg.decode(d, 48, 48, 96),
    GetMeasurementsRequest.decode,
    parse_record,
    lambda d: MeasurementsResponse.decode(d, 96),
    lambda d: KeyExchangeRequest.decode(d, 96),
    lambda d: KeyExchangeResponse.decode(
        d, exchange_size=96, summary_hash_size=48, signature_size=96, verify_size=48
    ),
    lambda d: FinishRequest.decode(d, 96, 48),
    PskExchangeRequest.decode,
    lambda d: PskExchangeResponse.decode(d, summary_hash_size=0, hash_size=48),
    EncapsulatedResponseAck.decode,
    lambda d: OpaqueData.decode(0x12, d),
    lambda d: OpaqueData.decode(0x11, d),
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(range(len(DECODERS))), blob(0, 200))
def test_decoders_raise_only_codec_error(which: int, data: bytes) -> None:
    never_raises_but_codec_error(DECODERS[which], data)


# ---- the VCA transcript against an independent concatenation ----------------------------------

#: requester flag sets DSP0274 allows (CERT/CHAL, sessions with MAC/ENCRYPT, PSK, ...)
VALID_FLAGS = [
    0,
    int(RequesterCap.CERT_CAP | RequesterCap.CHAL_CAP),
    int(
        RequesterCap.CERT_CAP
        | RequesterCap.CHAL_CAP
        | RequesterCap.KEY_EX_CAP
        | RequesterCap.MAC_CAP
    ),
    int(
        RequesterCap.CERT_CAP
        | RequesterCap.CHAL_CAP
        | RequesterCap.ENCRYPT_CAP
        | RequesterCap.MAC_CAP
        | RequesterCap.KEY_EX_CAP
        | RequesterCap.PSK_CAP
        | RequesterCap.ENCAP_CAP
        | RequesterCap.HBEAT_CAP
        | RequesterCap.KEY_UPD_CAP
    ),
    int(RequesterCap.PSK_CAP | RequesterCap.ENCRYPT_CAP),
    int(
        RequesterCap.KEY_EX_CAP | RequesterCap.ENCRYPT_CAP | RequesterCap.HANDSHAKE_IN_THE_CLEAR_CAP
    ),
]


def _bits(mask: int) -> st.SearchStrategy[int]:
    """A non-empty subset of ``mask``'s bits."""
    bits = [1 << i for i in range(32) if mask >> i & 1]
    return st.lists(st.sampled_from(bits), min_size=1, unique=True).map(sum)


@st.composite
def vca_choices(draw: st.DrawFn) -> dict[str, Any]:
    v = draw(version)
    dts = draw(st.integers(42, 0x10000))
    chunk = draw(st.booleans()) and v >= 0x12
    flags = draw(st.sampled_from(VALID_FLAGS)) if v >= 0x11 else 0
    if chunk:
        flags |= int(RequesterCap.CHUNK_CAP)
    return {
        "version": v,
        "ct": draw(st.integers(0, 31)),
        "flags": flags,
        "dts": dts,
        "max": draw(st.integers(dts, 0x100000)) if chunk else dts,
        "asym": draw(_bits(0xDFF)),
        "hash": draw(_bits(0x3F)),
        "mspec": draw(st.sampled_from([0, 1])),
        "other": draw(st.sampled_from([0, 1, 2, 3])),
        "dhe": draw(_bits(0x3F)),
        "aead": draw(_bits(0x7)),
        "req_asym": draw(_bits(0xDFF)),
        "structs": draw(st.lists(st.sampled_from([2, 3, 4, 5]), unique=True).map(sorted)),
        "pad": draw(st.sampled_from([0, 1, 2, 3, 4, 40])),
        "noise": draw(st.booleans()),
    }


def _caps_bytes(c: dict[str, Any]) -> bytes:
    v = c["version"]
    if v == 0x10:
        return bytes((v, 0xE1, 0, 0))
    body = struct.pack("<BBHI", 0, c["ct"], 0, c["flags"])
    if v >= 0x12:
        body += struct.pack("<II", c["dts"], c["max"])
    return bytes((v, 0xE1, 0, 0)) + body


def _neg_bytes(c: dict[str, Any]) -> bytes:
    v = c["version"]
    values = {2: c["dhe"], 3: c["aead"], 4: c["req_asym"], 5: 1}
    structs = (
        b"".join(struct.pack("<BBH", t, 0x20, values[t]) for t in c["structs"])
        if v >= 0x11
        else b""
    )
    length = 32 + len(structs)
    fixed = struct.pack(
        "<BBBBHBBII12sBBBB",
        v,
        0xE3,
        len(c["structs"]) if v >= 0x11 else 0,
        0,
        length,
        c["mspec"],
        c["other"] if v >= 0x12 else 0,
        c["asym"],
        c["hash"],
        bytes(12),
        0,
        0,
        0,
        0,
    )
    return fixed + structs


def _read_large_response(harness: ResponderHarness, error: bytes) -> bytes:
    """DSP0274 large response: CHUNK_GET until LastChunk; chunk 0 carries the total size."""
    version, handle = error[0], error[4]
    data, total, seq = b"", -1, 0
    while len(data) != total:
        rsp = harness.send(bytes((version, 0x86, 0, handle)) + struct.pack("<H", seq))
        assert (rsp[0], rsp[1], rsp[3]) == (version, 0x06, handle)
        assert struct.unpack_from("<H", rsp, 4)[0] == seq
        size = struct.unpack_from("<I", rsp, 8)[0]
        if seq == 0:
            total = struct.unpack_from("<I", rsp, 12)[0]
            data += rsp[16 : 16 + size]
        else:
            data += rsp[12 : 12 + size]
        assert bool(rsp[2] & 1) == (len(data) == total)
        seq += 1
    return data


@PROPS
@given(vca_choices())
def test_vca_transcript_is_the_concatenation(c: dict[str, Any]) -> None:
    harness = ResponderHarness()  # the contract is checked on every exchange too
    r = harness.responder
    pad = bytes(c["pad"])
    get_version = bytes((0x10, 0x84, 0, 0))
    version_rsp = harness.send(get_version + pad)
    assert version_rsp[1] == ResponseCode.VERSION
    caps = _caps_bytes(c)
    caps_rsp = harness.send(caps + pad)
    if caps_rsp[1] == ResponseCode.ERROR:
        assert bytes(r.transcripts.a) == get_version + version_rsp
        return
    expected = get_version + version_rsp + caps + caps_rsp
    assert bytes(r.transcripts.a) == expected
    if c["noise"]:  # a rejected request between the two leaves message A alone
        bad = harness.send(bytes((c["version"], 0xE3, 0, 0)) + b"\x05\x00" + bytes(26))
        assert bad[1] == ResponseCode.ERROR and bad[2] == ErrorCode.InvalidRequest
        assert bytes(r.transcripts.a) == expected
    neg = _neg_bytes(c)
    alg_rsp = harness.send(neg + pad)
    if alg_rsp[1] == ResponseCode.ERROR and alg_rsp[2] == ErrorCode.LargeResponse:
        alg_rsp = _read_large_response(harness, alg_rsp)  # CHUNK_CAP and a small DTS
    if alg_rsp[1] == ResponseCode.ERROR:
        assert r.state == ConnectionState.AFTER_CAPABILITIES
        assert bytes(r.transcripts.a) == expected
        return
    assert r.state == ConnectionState.NEGOTIATED
    assert len(alg_rsp) == struct.unpack_from("<H", alg_rsp, 4)[0]
    assert bytes(r.transcripts.a) == expected + neg + alg_rsp


def test_vca_transcript_strategy_reaches_success() -> None:
    """Guard: the generated parameters do negotiate (not only hit errors)."""
    c = {
        "version": 0x12, "ct": 0, "flags": VALID_FLAGS[3], "dts": 0x1200, "max": 0x1200,
        "asym": 0x80, "hash": 0x2, "mspec": 1, "other": 2, "dhe": 0x10, "aead": 0x2,
        "req_asym": 0x80, "structs": [2, 3, 4, 5], "pad": 0, "noise": True,
    }  # fmt: skip
    harness = ResponderHarness()
    harness.send(bytes((0x10, 0x84, 0, 0)))
    assert harness.send(_caps_bytes(c))[1] == ResponseCode.CAPABILITIES
    assert harness.send(_neg_bytes(c))[1] == ResponseCode.ALGORITHMS


# ---- random request sequences -----------------------------------------------------------------


@st.composite
def request(draw: st.DrawFn) -> tuple[bytes, bool]:
    if draw(st.integers(0, 9)) == 0:
        return draw(blob(0, 12)), False
    codes = [int(c) for c in RequestCode] + [0x00, 0x04, 0x7F]
    head = bytes(
        (
            draw(st.sampled_from([*VERSIONS, 0x14, 0x00])),
            draw(st.sampled_from(codes)),
            draw(u8),
            draw(u8),
        )
    )
    return head + draw(blob(0, 120)), draw(st.booleans())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 4 * len(STAGE_NAMES) - 1), st.lists(request(), max_size=12))
def test_random_sequences_keep_the_contract(
    selector: int, requests: list[tuple[bytes, bool]]
) -> None:
    harness = ResponderHarness(prefix=choose_prefix(selector))
    for message, in_session in requests:
        response = harness.send(message, in_session)  # raises ContractViolation if broken
        assert isinstance(response, bytes) and len(response) >= 4


def test_prefixes_reach_deep_states() -> None:
    """Guard: the recorded prefixes bring the responder past VCA at every version."""
    for v in fuzz_device().versions:
        states = [
            ResponderHarness(prefix=choose_prefix((stage << 2) | VERSIONS.index(v))).responder.state
            for stage in range(len(STAGE_NAMES))
        ]
        assert states[0] == ConnectionState.NOT_STARTED
        assert max(states) >= ConnectionState.NEGOTIATED
