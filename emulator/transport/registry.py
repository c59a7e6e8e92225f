"""The binding registry: every transport binding by name, with a one-line description.

One explicit table, read top to bottom (no registration at import time): the CLI's
``--transport`` choices, the pytest plugin, the trace and the requester find bindings here,
never by comparing names elsewhere.  Adding a binding = one module + one line below.
"""

from __future__ import annotations

from dataclasses import dataclass

from emulator.errors import TransportError
from emulator.transport.base import TransportBinding
from emulator.transport.doe import PciDoeBinding
from emulator.transport.mctp import MctpBinding
from emulator.transport.none import NoneBinding
from emulator.transport.storage import StorageBinding
from emulator.transport.tcp import TcpBinding


@dataclass(frozen=True, slots=True)
class BindingEntry:
    """One line of the registry: a binding and what it is, in a few words."""

    binding: TransportBinding
    description: str

    @property
    def name(self) -> str:
        return self.binding.name


#: Every binding, in the order ``--transport`` lists them.
REGISTRY: tuple[BindingEntry, ...] = (
    BindingEntry(PciDoeBinding(), "PCI DOE data objects (PCIe 6.30 CMA/SPDM), as QEMU's NVMe DOE"),
    BindingEntry(MctpBinding(), "MCTP messages (DSP0275), as spdm-emu frames them"),
    BindingEntry(NoneBinding(), "bare SPDM messages, no transport header, no secured messages"),
    BindingEntry(
        StorageBinding(), "DSP0286 storage: NVMe Security Send/Receive, as QEMU's spdm_trans=nvme"
    ),
    BindingEntry(TcpBinding(), "DSP0287 SPDM over TCP (port 4194), or spdm-emu's --trans TCP"),
)

#: Every binding by its command-line / profile name.
BINDINGS: dict[str, TransportBinding] = {entry.name: entry.binding for entry in REGISTRY}
_DESCRIPTIONS: dict[str, str] = {entry.name: entry.description for entry in REGISTRY}


def binding_names() -> tuple[str, ...]:
    """The names of every binding, in registry order (``--transport`` choices)."""
    return tuple(BINDINGS)


def _lookup(name: str) -> str:
    key = name.strip().lower()
    if key not in BINDINGS:
        choices = ", ".join(sorted(BINDINGS))
        raise TransportError(f"unknown transport {name!r}: choose one of {choices}")
    return key


def get_binding(name: str) -> TransportBinding:
    """Return the binding called ``name`` (case-insensitive), e.g. "doe", "mctp" or "none";
    :class:`~emulator.errors.TransportError` naming the choices for any other name."""
    return BINDINGS[_lookup(name)]


def binding_description(name: str) -> str:
    """The one-line description of the binding called ``name`` (as :func:`get_binding`)."""
    return _DESCRIPTIONS[_lookup(name)]


def bindings_with_pcap() -> tuple[str, ...]:
    """Names of the bindings that have a pcap link type, in registry order."""
    return tuple(name for name, binding in BINDINGS.items() if binding.pcap_link_type is not None)


__all__ = [
    "BINDINGS",
    "REGISTRY",
    "BindingEntry",
    "binding_description",
    "binding_names",
    "bindings_with_pcap",
    "get_binding",
]
