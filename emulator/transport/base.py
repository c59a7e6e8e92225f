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
class SecuredRecordFormat:
    """Per-binding DSP0277 parameters (DSP0276 MCTP binding, PCIe DOE binding).

    ``sequence_number_size`` is the number of bytes of the implicit sequence
    number sent in the record header (2 for MCTP, 0 for PCI DOE, as libspdm binds
    them), ``max_random_padding`` the most random bytes the encoder may add after
    the application data.
    """

    sequence_number_size: int = 0
    max_random_padding: int = 0


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

    def secured_header_info(self) -> SecuredRecordFormat:
        """How DSP0277 records look on this binding (sequence number size, padding)."""
        ...
