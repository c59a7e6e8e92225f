"""Transport bindings (PCI DOE, MCTP, none) and their registry."""

from __future__ import annotations

from emulator.errors import TransportError
from emulator.transport.base import (
    RecordFormat,
    SocketTransport,
    TransportBinding,
    TransportMessage,
)
from emulator.transport.doe import PciDoeBinding
from emulator.transport.mctp import MctpBinding
from emulator.transport.none import NoneBinding

#: Every binding by its command-line / profile name.
BINDINGS: dict[str, TransportBinding] = {
    "doe": PciDoeBinding(),
    "mctp": MctpBinding(),
    "none": NoneBinding(),
}


def get_binding(name: str) -> TransportBinding:
    """Return the binding called ``name`` (case-insensitive): "doe", "mctp" or "none"."""
    binding = BINDINGS.get(name.strip().lower())
    if binding is None:
        choices = ", ".join(sorted(BINDINGS))
        raise TransportError(f"unknown transport {name!r}: choose one of {choices}")
    return binding


__all__ = [
    "BINDINGS",
    "MctpBinding",
    "NoneBinding",
    "PciDoeBinding",
    "RecordFormat",
    "SocketTransport",
    "TransportBinding",
    "TransportMessage",
    "get_binding",
]
