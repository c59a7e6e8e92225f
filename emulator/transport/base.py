"""The transport-binding interface shared by DOE, MCTP and "none".

A binding turns the payload of a platform-socket NORMAL frame into an SPDM (or
DSP0277 secured) message and back.  Bindings are pure: no I/O, no state.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol


class SocketTransport(IntEnum):
    """Transport type field of a platform-socket frame (spdm-emu ``command.h``)."""

    NONE = 0
    MCTP = 1
    PCI_DOE = 2
    TCP = 3
    LINUX_MCTP = 4


@dataclass(frozen=True, slots=True)
class TransportMessage:
    """A decoded transport message: the SPDM bytes and whether they are a secured record."""

    message: bytes
    secured: bool = False


@dataclass(frozen=True, slots=True)
class RecordFormat:
    """How DSP0277 secured records look on one binding (DSP0276 MCTP, PCIe DOE, DSP0277 1.2).

    ``sequence_number_size``: bytes of the implicit sequence number sent in the record
    header (MCTP 2, PCI DOE 0, as libspdm binds them); ``max_random_padding``: at most
    this many random bytes after the application data (the encoder adds 1..max when max
    > 0, as libspdm does); ``app_header``: bytes in front of the SPDM message inside the
    application data (MCTP: the message type 0x05).
    """

    sequence_number_size: int = 0
    max_random_padding: int = 0
    app_header: bytes = b""


class TransportBinding(Protocol):
    """Encode/decode one transport binding (PCI DOE, MCTP, none)."""

    #: short name used on the command line and in profiles ("doe", "mctp", "none")
    name: str
    #: the platform-socket transport type this binding uses
    socket_transport: SocketTransport

    def decode(self, payload: bytes) -> TransportMessage:
        """Decode a frame payload; raise :class:`~emulator.errors.TransportError` if malformed."""
        ...

    def encode(self, message: bytes, secured: bool = False) -> bytes:
        """Wrap an SPDM message (or secured record) for the wire."""
        ...

    @property
    def record_format(self) -> RecordFormat:
        """How DSP0277 records look on this binding (sequence number size, padding)."""
        ...

    def answer_discovery(self, payload: bytes) -> bytes | None:
        """The binding's own answer to a transport-level discovery object, or None when
        ``payload`` is not one (PCI DOE discovery; other bindings have none)."""
        ...
