"""Platform-socket frame codec (spdm-emu command.h): vectors, chunking, size limit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.errors import FrameError
from emulator.server.platform import (
    DEFAULT_MAX_PAYLOAD,
    HEADER_SIZE,
    Frame,
    FrameDecoder,
    PlatformCommand,
    command_name,
    encode_frame,
)


def test_command_values() -> None:
    assert {c.name: int(c) for c in PlatformCommand} == {
        "NORMAL": 0x0001,
        "STORAGE_IF_SEND": 0x0002,
        "STORAGE_IF_RECV": 0x0003,
        "STORAGE_ACK_STATUS": 0x0004,
        "OOB_ENCAP_KEY_UPDATE": 0x8001,
        "OOB_ENCAP_ENDPOINT_INFO": 0x8002,
        "CONTINUE": 0xFFFD,
        "SHUTDOWN": 0xFFFE,
        "UNKNOWN": 0xFFFF,
        "TEST": 0xDEAD,
    }
    assert command_name(0xDEAD) == "TEST"
    assert command_name(0x1234) == "0x1234"
    assert DEFAULT_MAX_PAYLOAD == 0x1200


def test_encode_vectors() -> None:
    # NORMAL, transport 2 (PCI DOE), a DOE GET_VERSION object
    doe_get_version = bytes.fromhex("0100010003000000 10840000")
    assert encode_frame(Frame(0x0001, 2, doe_get_version)) == (
        bytes.fromhex("00000001 00000002 0000000c") + doe_get_version
    )
    # TEST "Client Hello!" with its NUL, as spdm-emu's requester sends it (sizeof = 14)
    assert encode_frame(Frame(0xDEAD, 1, b"Client Hello!\x00")) == (
        bytes.fromhex("0000dead 00000001 0000000e") + b"Client Hello!\x00"
    )
    assert encode_frame(Frame(0xFFFE, 2, b"")) == bytes.fromhex("0000fffe 00000002 00000000")


def test_encode_rejects_out_of_range() -> None:
    with pytest.raises(FrameError, match="command"):
        encode_frame(Frame(1 << 32, 0))
    with pytest.raises(FrameError, match="transport"):
        encode_frame(Frame(1, -1))


def test_decode_one_and_empty_payloads() -> None:
    dec = FrameDecoder()
    data = encode_frame(Frame(0xFFFE, 2)) + encode_frame(Frame(1, 2, b"abcd"))
    assert dec.feed(data) == [Frame(0xFFFE, 2, b""), Frame(1, 2, b"abcd")]
    assert dec.pending == 0 and dec.needed == HEADER_SIZE
    assert dec.feed(b"") == []


def test_decode_byte_by_byte() -> None:
    dec = FrameDecoder()
    wire = encode_frame(Frame(0xDEAD, 1, b"Server Hello!\x00"))
    out: list[Frame] = []
    for i, b in enumerate(wire):
        out += dec.feed(bytes([b]))
        if i < len(wire) - 1:
            assert out == []
            assert dec.pending == i + 1
    assert out == [Frame(0xDEAD, 1, b"Server Hello!\x00")]
    assert dec.pending == 0


def test_needed_tracks_header_then_payload() -> None:
    dec = FrameDecoder()
    wire = encode_frame(Frame(1, 2, bytes(20)))
    dec.feed(wire[:5])
    assert dec.needed == 7
    dec.feed(wire[5:12])
    assert dec.needed == 20
    dec.feed(wire[12:30])
    assert dec.needed == 2


frames_st = st.lists(
    st.builds(
        Frame,
        st.integers(0, 0xFFFF_FFFF),
        st.integers(0, 0xFFFF_FFFF),
        st.binary(max_size=300),
    ),
    max_size=8,
)


@given(frames_st, st.lists(st.integers(1, 64), min_size=1, max_size=50))
def test_decode_arbitrary_chunking(frames: list[Frame], cuts: list[int]) -> None:
    wire = b"".join(encode_frame(f) for f in frames)
    dec = FrameDecoder(max_payload=300)
    out: list[Frame] = []
    pos = 0
    i = 0
    while pos < len(wire):
        step = cuts[i % len(cuts)]
        out += dec.feed(wire[pos : pos + step])
        assert dec.pending <= HEADER_SIZE + 300
        pos += step
        i += 1
    assert out == frames
    assert dec.pending == 0


def test_oversize_rejected_before_payload() -> None:
    dec = FrameDecoder(max_payload=0x1200)
    header = bytes.fromhex("00000001 00000002 00001201")
    with pytest.raises(FrameError, match=r"4609 bytes \(0x1201\).*0x1200.*NORMAL"):
        dec.feed(header)
    assert dec.error is not None
    # dead afterwards, and nothing was buffered
    assert dec.pending == 0
    with pytest.raises(FrameError):
        dec.feed(b"\x00" * 16)


def test_oversize_with_payload_in_same_chunk_not_buffered() -> None:
    dec = FrameDecoder(max_payload=16)
    wire = bytes.fromhex("00000001 00000002 00100000") + bytes(4096)
    with pytest.raises(FrameError):
        dec.feed(wire)
    assert dec.pending == 0


def test_limit_is_inclusive() -> None:
    dec = FrameDecoder(max_payload=8)
    assert dec.feed(encode_frame(Frame(1, 2, bytes(8)))) == [Frame(1, 2, bytes(8))]


def test_error_after_good_frame_is_deferred() -> None:
    dec = FrameDecoder(max_payload=8)
    good = encode_frame(Frame(1, 2, b"ok"))
    bad = bytes.fromhex("00000001 00000002 00000009")
    assert dec.feed(good + bad) == [Frame(1, 2, b"ok")]
    assert isinstance(dec.error, FrameError)
    with pytest.raises(FrameError, match="over the limit"):
        dec.feed(b"")


def test_huge_size_field() -> None:
    dec = FrameDecoder()
    with pytest.raises(FrameError, match="4294967295 bytes"):
        dec.feed(bytes.fromhex("0000dead 00000000 ffffffff"))
