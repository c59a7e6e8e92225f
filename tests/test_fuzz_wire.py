"""The session harness's own wire code (fuzz/wire.py) against the emulator's: the same
records and DOE objects byte for byte, and a malformed DOE reply is a finding."""

from __future__ import annotations

import pytest

from emulator.session.record import open_record, seal_record
from emulator.transport import get_binding
from fuzz import wire

KEY32 = bytes(range(32))
KEY16 = bytes(range(16))
IV = bytes(range(100, 112))


@pytest.mark.parametrize(("aead", "key"), [(0x01, KEY16), (0x02, KEY32), (0x04, KEY32)])
@pytest.mark.parametrize("mac_only", [False, True])
@pytest.mark.parametrize("seq", [0, 1, 0x1234_5678_9ABC])
def test_seal_is_the_record_dsp0277_defines(
    aead: int, key: bytes, mac_only: bool, seq: int
) -> None:
    data = b"\x12\xe8\x00\x00" + bytes(range(37))
    ours = wire.seal(
        aead=aead,
        key=key,
        iv=IV,
        sequence_number=seq,
        session_id=0xFFFE5EED,
        app_data=data,
        mac_only=mac_only,
    )
    theirs = seal_record(
        aead=aead,
        key=key,
        salt=IV,
        sequence_number=seq,
        session_id=0xFFFE5EED,
        sequence_number_size=0,
        app_data=data,
        mac_only=mac_only,
    )
    assert ours == theirs
    assert ours[:4] == (0xFFFE5EED).to_bytes(4, "little")
    opened = open_record(
        aead=aead,
        key=key,
        salt=IV,
        sequence_number=seq,
        session_id=0xFFFE5EED,
        sequence_number_size=0,
        record=ours,
        mac_only=mac_only,
    )
    assert opened == data


@pytest.mark.parametrize("size", [1, 4, 5, 7, 8, 300])
@pytest.mark.parametrize("secured", [False, True])
def test_doe_object_is_the_binding_encoding(size: int, secured: bool) -> None:
    message = bytes(range(size % 256)) * (size // 256) + bytes(size % 256)
    ours = wire.doe_object(message, secured)
    assert ours == get_binding("doe").encode(message, secured=secured)
    assert len(ours) % 4 == 0 and ours[:2] == b"\x01\x00" and ours[2] == (2 if secured else 1)
    got, got_secured = wire.doe_message(ours)
    assert got_secured is secured
    assert got[:size] == message and not any(got[size:])


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"\x01\x00\x01\x00\x02\x00", "6 bytes"),
        (b"\x01\x00\x01\x00\x02\x00\x00\x00\x10\x84\x00", "11 bytes"),
        (b"\x02\x00\x01\x00\x03\x00\x00\x00\x10\x84\x00\x00", "not a PCI-SIG SPDM"),
        (b"\x01\x00\x00\x00\x03\x00\x00\x00\x10\x84\x00\x00", "not a PCI-SIG SPDM"),
        (b"\x01\x00\x01\x01\x03\x00\x00\x00\x10\x84\x00\x00", "not a PCI-SIG SPDM"),
        (b"\x01\x00\x01\x00\x04\x00\x00\x00\x10\x84\x00\x00", "Length 4 DWORDs"),
    ],
)
def test_a_malformed_doe_reply_is_a_finding(payload: bytes, problem: str) -> None:
    with pytest.raises(wire.WireError, match=problem):
        wire.doe_message(payload)
