"""Connection-phase layouts, byte for byte against vectors written from DSP0274's tables."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.codec.constants import RequestCode, ResponseCode
from emulator.codec.messages import (
    AlgorithmsMsg,
    AlgStruct,
    CapabilitiesMsg,
    NegotiateAlgorithmsMsg,
    ResponseNotReadyData,
    Version,
    build_error,
    build_response_not_ready,
    build_version_response,
)
from emulator.errors import CodecError


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("\n", ""))


def test_version_response_layout() -> None:
    # SPDMVersion 1.0, VERSION, Param1/2 0, Reserved, VersionNumberEntryCount 4, entries
    # 0x1000.. little-endian (Major<<12 | Minor<<8 | Update<<4 | Alpha).
    assert build_version_response([0x1000, 0x1100, 0x1200, 0x1300]) == h(
        "10 04 00 00 00 04 0010 0011 0012 0013"
    )
    parsed = Version.parse(h("10 04 00 00 00 02 0011 0012 ffff"))
    assert list(parsed.entries) == [0x1100, 0x1200]


def test_version_response_truncated_entries() -> None:
    with pytest.raises(CodecError):
        Version.parse(h("10 04 00 00 00 03 0011 0012"))


def test_error_layouts() -> None:
    assert build_error(0x12, 0x07, 0xE0) == h("12 7f 07 e0")
    # ResponseNotReady: RDTExponent, RequestCode, Token, RDTM
    assert build_response_not_ready(0x12, 5, 0xE0, 0x2A, 3) == h("12 7f 42 00 05 e0 2a 03")
    assert ResponseNotReadyData.parse(h("05 e0 2a 03")).token == 0x2A


@pytest.mark.parametrize(
    ("msg", "wire"),
    [
        # 1.0 GET_CAPABILITIES is the bare header
        (CapabilitiesMsg(0x10, RequestCode.GET_CAPABILITIES), "10 e1 00 00"),
        # 1.1: Reserved, CTExponent, Reserved(2), Flags(4)
        (
            CapabilitiesMsg(0x11, RequestCode.GET_CAPABILITIES, ct_exponent=0x0C, flags=0x72C6),
            "11 e1 00 00 00 0c 0000 c6720000",
        ),
        # 1.2+: + DataTransferSize, MaxSPDMmsgSize
        (
            CapabilitiesMsg(
                0x12,
                RequestCode.GET_CAPABILITIES,
                ct_exponent=0x14,
                flags=0x000272C6,
                data_transfer_size=0x1200,
                max_spdm_msg_size=0x2000,
            ),
            "12 e1 00 00 00 14 0000 c6720200 00120000 00200000",
        ),
        (
            CapabilitiesMsg(0x10, ResponseCode.CAPABILITIES, ct_exponent=12, flags=0x17),
            "10 61 00 00 00 0c 0000 17000000",
        ),
        (
            CapabilitiesMsg(
                0x13,
                ResponseCode.CAPABILITIES,
                ct_exponent=12,
                flags=0x0006FBF7,
                data_transfer_size=4608,
                max_spdm_msg_size=4608,
            ),
            "13 61 00 00 00 0c 0000 f7fb0600 00120000 00120000",
        ),
    ],
)
def test_capabilities_layouts(msg: CapabilitiesMsg, wire: str) -> None:
    assert msg.encode() == h(wire)
    assert CapabilitiesMsg.decode(h(wire)) == msg


def test_capabilities_too_short_for_version() -> None:
    with pytest.raises(CodecError):
        CapabilitiesMsg.decode(h("12 e1 00 00 00 14 0000 c6720200"))


NEG_11 = (
    # header (Param1 = 4 structs), Length 0x30, MeasSpec 01, OtherParams 00,
    # BaseAsym ECDSA_P384|P256 (0x90), BaseHash SHA_384|SHA_256 (0x03), Reserved(12),
    # ExtAsymCount 0, ExtHashCount 0, Reserved, MELspec 0; AlgStructs: type, count 0x20, bits
    "11 e3 04 00 3000 01 00 90000000 03000000 000000000000000000000000 00 00 00 00"
    " 02 20 1800  03 20 0300  04 20 8000  05 20 0100"
)


def test_negotiate_algorithms_11_layout() -> None:
    msg = NegotiateAlgorithmsMsg(
        0x11,
        measurement_spec=1,
        base_asym=0x90,
        base_hash=0x03,
        alg_structs=[AlgStruct(2, 0x18), AlgStruct(3, 0x03), AlgStruct(4, 0x80), AlgStruct(5, 1)],
    )
    assert msg.encode() == h(NEG_11)
    parsed, size = NegotiateAlgorithmsMsg.decode(h(NEG_11) + b"\x00\x00")  # DOE padding
    assert size == 0x30 and parsed.length == 0x30
    assert [s.supported for s in parsed.alg_structs] == [0x18, 0x03, 0x80, 0x01]


def test_negotiate_algorithms_10_has_no_structs_and_ext_entries() -> None:
    wire = h(
        "10 e3 00 00 2800 01 00 10000000 01000000 000000000000000000000000 01 01 00 00"
        " 00010203 04050607"
    )
    parsed, size = NegotiateAlgorithmsMsg.decode(wire)
    assert size == 40
    assert parsed.ext_asym == [h("00010203")] and parsed.ext_hash == [h("04050607")]
    assert parsed.encode() == wire


def test_negotiate_algorithms_bad_structs() -> None:
    bad_fixed = NEG_11.replace("02 20 1800", "02 30 1800")
    with pytest.raises(CodecError, match="FixedAlgCount"):
        NegotiateAlgorithmsMsg.decode(h(bad_fixed))
    with pytest.raises(CodecError, match="truncated"):
        NegotiateAlgorithmsMsg.decode(h(NEG_11)[:-2])


def test_algorithms_12_layout() -> None:
    # ALGORITHMS 1.2: Length 0x34, MeasSpecSel 01, OtherParamsSel 02 (OpaqueDataFmt1),
    # MeasurementHashAlgo SHA_384 (0x04), BaseAsymSel P384 (0x80), BaseHashSel SHA_384 (0x02),
    # Reserved(11), MELspecSel 0, ExtAsymSelCount 0, ExtHashSelCount 0, Reserved(2), structs.
    wire = h(
        "12 63 04 00 3400 01 02 04000000 80000000 02000000 0000000000000000000000 00 00 00 0000"
        " 02 20 1000  03 20 0200  04 20 8000  05 20 0100"
    )
    msg = AlgorithmsMsg(
        0x12,
        measurement_spec_sel=1,
        other_params_sel=2,
        measurement_hash_algo=4,
        base_asym_sel=0x80,
        base_hash_sel=2,
        alg_structs=[AlgStruct(2, 0x10), AlgStruct(3, 2), AlgStruct(4, 0x80), AlgStruct(5, 1)],
    )
    assert msg.encode() == wire
    parsed, size = AlgorithmsMsg.decode(wire)
    assert size == 0x34 and parsed.struct_value(3) == 2 and parsed.struct_value(9) == 0


@given(
    version=st.sampled_from([0x10, 0x11, 0x12, 0x13]),
    ct=st.integers(0, 255),
    flags=st.integers(0, 2**32 - 1),
    dts=st.integers(0, 2**32 - 1),
    mx=st.integers(0, 2**32 - 1),
)
def test_capabilities_round_trip(version: int, ct: int, flags: int, dts: int, mx: int) -> None:
    msg = CapabilitiesMsg(version, ResponseCode.CAPABILITIES, ct, flags)
    if version >= 0x12:
        msg.data_transfer_size, msg.max_spdm_msg_size = dts, mx
    assert CapabilitiesMsg.decode(msg.encode()) == msg


@given(
    version=st.sampled_from([0x11, 0x12, 0x13]),
    asym=st.integers(0, 2**32 - 1),
    hash_=st.integers(0, 2**32 - 1),
    structs=st.lists(
        st.tuples(st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(0, 3)), max_size=6
    ),
)
def test_negotiate_round_trip(
    version: int, asym: int, hash_: int, structs: list[tuple[int, int, int]]
) -> None:
    msg = NegotiateAlgorithmsMsg(
        version,
        base_asym=asym,
        base_hash=hash_,
        alg_structs=[AlgStruct(t, s, 2, [bytes(4)] * n) for t, s, n in structs],
    )
    wire = msg.encode()
    parsed, size = NegotiateAlgorithmsMsg.decode(wire)
    assert size == len(wire) == parsed.length
    assert parsed.encode() == wire
