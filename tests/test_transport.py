"""Transport bindings: byte-exact vectors written by hand from PCIe sec 6.30 / DSP0275."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.errors import TransportError
from emulator.events import Reply
from emulator.transport import (
    BINDINGS,
    REGISTRY,
    binding_description,
    binding_names,
    bindings_with_pcap,
    get_binding,
)
from emulator.transport.base import RecordFormat, SocketTransport, TransportMessage
from emulator.transport.doe import PciDoeBinding
from emulator.transport.mctp import MctpBinding
from emulator.transport.none import NoneBinding
from emulator.transport.platform import PlatformCommand
from emulator.transport.storage import StorageBinding
from emulator.transport.tcp import TcpBinding

GET_VERSION = bytes.fromhex("10840000")
# GET_CAPABILITIES 1.0: 4 bytes; a 5-byte message exercises padding.
FIVE = bytes.fromhex("11e1000001")

doe = PciDoeBinding()
mctp = MctpBinding()
none = NoneBinding()


# --------------------------------------------------------------------------- DOE


def test_doe_get_version_vector() -> None:
    wire = bytes.fromhex("01000100 03000000 10840000")
    assert doe.encode(GET_VERSION) == wire
    assert doe.decode(wire) == TransportMessage(GET_VERSION, secured=False)


def test_doe_padding_to_dword() -> None:
    wire = doe.encode(FIVE)
    # header + 5 bytes + 3 zero bytes = 16 bytes = 4 DWORDs
    assert wire == bytes.fromhex("01000100 04000000 11e10000 01000000")
    # decode keeps the padding: the SPDM layer trims with its own lengths
    assert doe.decode(wire).message == FIVE + b"\x00\x00\x00"


def test_doe_secured_vector() -> None:
    record = bytes.fromhex("78563412 0500 aabbccddee")  # session ID + length + 5 bytes
    wire = doe.encode(record, secured=True)
    assert wire == bytes.fromhex("01000200 05000000 78563412 0500aabb ccddee00")
    assert doe.decode(wire) == TransportMessage(record + b"\x00", secured=True)


def test_doe_max_size_length_zero() -> None:
    message = bytes([0x12]) + bytes((1 << 20) - 8 - 1)
    wire = doe.encode(message)
    assert len(wire) == 1 << 20
    assert wire[4:8] == b"\x00\x00\x00\x00"  # 2^18 DWORDs is encoded as 0
    assert doe.decode(wire).message == message


def test_doe_encode_too_large() -> None:
    with pytest.raises(TransportError, match="does not fit"):
        doe.encode(bytes((1 << 20) - 8 + 1))


def test_doe_encode_empty() -> None:
    with pytest.raises(TransportError, match="empty"):
        doe.encode(b"")


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"", "shorter than the 8-byte header"),
        (bytes.fromhex("01000100 030000"), "shorter than the 8-byte header"),
        (bytes.fromhex("02000100 03000000 10840000"), r"vendor ID is 0x0002"),
        (bytes.fromhex("00000100 03000000 10840000"), r"vendor ID is 0x0000"),
        (
            bytes.fromhex("01000000 03000000 00000000"),
            "DOE discovery is handled by the DOE mailbox, not the SPDM responder",
        ),
        (bytes.fromhex("01000300 03000000 10840000"), r"type 0x03 is not SPDM"),
        (bytes.fromhex("0100ff00 03000000 10840000"), r"type 0xff is not SPDM"),
        (bytes.fromhex("01000101 03000000 10840000"), "reserved byte is 0x01"),
        (bytes.fromhex("01000100 03000400 10840000"), "reserved bits 31:18"),
        (bytes.fromhex("01000100 03000080 10840000"), "reserved bits 31:18"),
        (bytes.fromhex("01000100 04000000 10840000"), "says 4 DWORDs"),
        (bytes.fromhex("01000100 02000000 10840000"), "says 2 DWORDs"),
        (bytes.fromhex("01000100 00000000 10840000"), "says 262144 DWORDs"),
        (bytes.fromhex("01000100 03000000 108400"), "not a whole number of DWORDs"),
        (bytes.fromhex("01000100 03000000 1084000000"), "not a whole number of DWORDs"),
        (bytes.fromhex("01000100 02000000"), "empty SPDM message"),
        (bytes.fromhex("01000200 03000000 78563412"), "too short for a session ID"),
    ],
)
def test_doe_decode_rejects(wire: bytes, reason: str) -> None:
    with pytest.raises(TransportError, match=reason):
        doe.decode(wire)


@given(st.binary(min_size=1, max_size=600), st.booleans())
def test_doe_roundtrip(message: bytes, secured: bool) -> None:
    if secured and len(message) <= 4:
        message += b"\x01" * 4
    wire = doe.encode(message, secured=secured)
    assert len(wire) % 4 == 0
    assert int.from_bytes(wire[4:8], "little") * 4 == len(wire)
    decoded = doe.decode(wire)
    assert decoded.secured is secured
    assert decoded.message[: len(message)] == message
    assert decoded.message[len(message) :] == bytes(len(decoded.message) - len(message))
    assert len(decoded.message) - len(message) < 4


@given(st.binary(max_size=64))
def test_doe_decode_only_transport_errors(data: bytes) -> None:
    """Arbitrary bytes either decode to a non-empty message or raise TransportError."""
    try:
        decoded = doe.decode(data)
    except TransportError:
        return
    assert decoded.message and len(data) % 4 == 0


# --------------------------------------------------------------------------- MCTP


def test_mctp_vectors() -> None:
    assert mctp.encode(GET_VERSION) == bytes.fromhex("05 10840000")
    assert mctp.decode(bytes.fromhex("05 10840000")) == TransportMessage(GET_VERSION)
    record = bytes.fromhex("78563412 0100 0700 aa")
    assert mctp.encode(record, secured=True) == b"\x06" + record
    assert mctp.decode(b"\x06" + record) == TransportMessage(record, secured=True)
    # no padding on MCTP
    assert mctp.encode(FIVE) == b"\x05" + FIVE


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"", "no message type byte"),
        (b"\x05", "empty SPDM message"),
        (b"\x06", "empty SPDM message"),
        (bytes.fromhex("00 10840000"), r"type 0x00 is not SPDM"),
        (bytes.fromhex("01 10840000"), r"type 0x01 is not SPDM"),
        (bytes.fromhex("85 10840000"), r"type 0x85 is not SPDM"),
        (bytes.fromhex("7e 10840000"), r"type 0x7e is not SPDM"),
        (bytes.fromhex("06 78563412"), "too short for a session ID"),
    ],
)
def test_mctp_decode_rejects(wire: bytes, reason: str) -> None:
    with pytest.raises(TransportError, match=reason):
        mctp.decode(wire)


def test_mctp_encode_empty() -> None:
    with pytest.raises(TransportError, match="empty"):
        mctp.encode(b"")


# --------------------------------------------------------------------------- none


def test_none_vectors() -> None:
    assert none.encode(GET_VERSION) == GET_VERSION
    assert none.decode(GET_VERSION) == TransportMessage(GET_VERSION, secured=False)
    assert none.decode(FIVE).message == FIVE


def test_none_rejects() -> None:
    with pytest.raises(TransportError, match="cannot carry secured"):
        none.encode(GET_VERSION, secured=True)
    with pytest.raises(TransportError, match="empty"):
        none.decode(b"")
    with pytest.raises(TransportError, match="empty"):
        none.encode(b"")


# --------------------------------------------------------------------------- registry


def test_secured_header_info() -> None:
    assert doe.record_format == RecordFormat(0, 0)
    assert mctp.record_format == RecordFormat(2, 32, b"\x05", app_protocols=((1, "pldm"),))
    assert none.record_format == RecordFormat(0, 0)


def test_socket_transport_and_names() -> None:
    assert (doe.name, doe.socket_transport) == ("doe", SocketTransport.PCI_DOE)
    assert (mctp.name, mctp.socket_transport) == ("mctp", SocketTransport.MCTP)
    assert (none.name, none.socket_transport) == ("none", SocketTransport.NONE)
    assert int(SocketTransport.PCI_DOE) == 2 and int(SocketTransport.MCTP) == 1


def test_registry() -> None:
    assert set(BINDINGS) == {"doe", "mctp", "none", "storage", "tcp"}
    assert isinstance(get_binding("doe"), PciDoeBinding)
    assert isinstance(get_binding("storage"), StorageBinding)
    assert isinstance(get_binding("TCP"), TcpBinding)
    assert isinstance(get_binding("MCTP"), MctpBinding)
    assert isinstance(get_binding("none"), NoneBinding)
    for name, binding in BINDINGS.items():
        assert binding.name == name


def test_registry_unknown_lists_choices() -> None:
    with pytest.raises(TransportError, match=r"'pcie'.*doe, mctp, none"):
        get_binding("pcie")


def test_registry_names_descriptions_and_order() -> None:
    assert binding_names() == ("doe", "mctp", "none", "storage", "tcp")
    assert [entry.name for entry in REGISTRY] == list(binding_names())
    for entry in REGISTRY:
        assert BINDINGS[entry.name] is entry.binding
        assert binding_description(entry.name) == entry.description
        assert entry.description and "\n" not in entry.description
    assert "DOE" in binding_description("DOE") and "MCTP" in binding_description(" mctp ")
    with pytest.raises(TransportError, match=r"unknown transport 'scsi': choose one of doe, mctp"):
        binding_description("scsi")


def test_registry_is_what_the_package_exports() -> None:
    from emulator.transport import registry

    assert BINDINGS is registry.BINDINGS and get_binding is registry.get_binding


def test_bindings_declare_their_wire() -> None:
    """pcap link types (libspdm link_type_ex.h), secured messages, platform commands."""
    assert (doe.pcap_link_type, mctp.pcap_link_type, none.pcap_link_type) == (292, 291, None)
    assert bindings_with_pcap() == ("doe", "mctp", "storage", "tcp")
    assert (doe.carries_secured, mctp.carries_secured, none.carries_secured) == (
        True,
        True,
        False,
    )
    for binding in (doe, mctp, none, get_binding("tcp")):
        assert binding.platform_commands == {PlatformCommand.NORMAL}
    assert get_binding("storage").platform_commands == {
        PlatformCommand.STORAGE_IF_SEND,
        PlatformCommand.STORAGE_IF_RECV,
    }
    assert doe.pcap_packet(b"\x01\x00\x01\x00", True) == b"\x01\x00\x01\x00"
    assert mctp.pcap_packet(b"\x05\x10", False) == bytes.fromhex("010000c0 0510")
    with pytest.raises(TransportError, match="no pcap link type"):
        none.pcap_packet(b"\x10\x84\x00\x00", True)


class _PushOnly:
    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def receive(self, payload: bytes) -> Reply:
        self.payloads.append(payload)
        return Reply([b"answer"], delay=0.5)


def test_push_bindings_hand_normal_to_receive() -> None:
    for binding in (doe, mctp, none):
        endpoint = _PushOnly()
        answer = binding.handle_command(PlatformCommand.NORMAL, b"req", endpoint)  # type: ignore[arg-type]
        assert endpoint.payloads == [b"req"]
        assert answer.frames == [] and answer.reply == Reply([b"answer"], delay=0.5)
        assert answer.reply_command == PlatformCommand.NORMAL
