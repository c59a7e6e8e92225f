"""Transport bindings (PCI DOE, MCTP, none, DSP0286 storage, DSP0287 TCP), the platform-socket
frame and the registry."""

from __future__ import annotations

from emulator.transport.base import (
    CommandAnswer,
    Endpoint,
    PushFraming,
    RecordFormat,
    SocketTransport,
    StreamCodec,
    TransportBinding,
    TransportMessage,
)
from emulator.transport.doe import PciDoeBinding
from emulator.transport.mctp import MctpBinding
from emulator.transport.none import NoneBinding
from emulator.transport.registry import (
    BINDINGS,
    REGISTRY,
    BindingEntry,
    binding_description,
    binding_names,
    bindings_with_pcap,
    get_binding,
)
from emulator.transport.storage import StorageBinding
from emulator.transport.tcp import TcpBinding

__all__ = [
    "BINDINGS",
    "REGISTRY",
    "BindingEntry",
    "CommandAnswer",
    "Endpoint",
    "MctpBinding",
    "NoneBinding",
    "PciDoeBinding",
    "PushFraming",
    "RecordFormat",
    "SocketTransport",
    "StorageBinding",
    "StreamCodec",
    "TcpBinding",
    "TransportBinding",
    "TransportMessage",
    "binding_description",
    "binding_names",
    "bindings_with_pcap",
    "get_binding",
]
