"""The transport-binding interface shared by DOE, MCTP and "none".

A binding owns everything about its wire (ARCHITECTURE.md): the platform-socket commands
it handles and what it does with them (:meth:`TransportBinding.handle_command`, driving a
connection through the push or the pull :class:`Endpoint` API), the payload framing
(``decode``/``encode``), the DSP0277 record format, transport-level discovery and its
pcap link type.  Bindings are pure: no I/O, no state of their own (a connection's state is
the endpoint's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, NamedTuple, Protocol

from emulator.transport.platform import Frame, PlatformCommand

if TYPE_CHECKING:  # a binding drives an endpoint; it never builds one
    from emulator.events import Reply


class SocketTransport(IntEnum):
    """Transport type field of a platform-socket frame (spdm-emu ``command.h``)."""

    NONE = 0
    MCTP = 1
    PCI_DOE = 2
    TCP = 3
    LINUX_MCTP = 4


class TransportMessage(NamedTuple):
    """A decoded transport message: the SPDM bytes and whether they are a secured record
    (immutable; a named tuple: one is made per message)."""

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


class Endpoint(Protocol):
    """One requester's connection as a binding drives it (normally
    :class:`emulator.connection.SpdmConnection`).

    Push (request/response bindings, platform NORMAL): ``receive`` handles one transport
    payload and returns its reply.  Pull (the storage binding, DSP0286 IF_SEND/IF_RECV):
    ``deliver`` handles a request and keeps its reply, a later ``collect`` takes it (None
    when nothing waits); ``has_pending_reply`` tells whether one waits.
    """

    def receive(self, payload: bytes) -> Reply:
        """Push: one transport payload in, its reply out."""
        ...

    def deliver(self, payload: bytes) -> None:
        """Pull, request half: handle ``payload`` now, keep its reply for :meth:`collect`."""
        ...

    def collect(self) -> Reply | None:
        """Pull, response half: the kept reply, once; None when no request waits."""
        ...

    @property
    def has_pending_reply(self) -> bool:
        """A delivered request's reply waits for :meth:`collect`."""
        ...


@dataclass(slots=True)
class CommandAnswer:
    """What the server sends for one platform command a binding handled.

    ``frames`` are sent first, as they are (e.g. a storage status).  ``reply``, the
    endpoint's :class:`~emulator.events.Reply`, is carried out after them: its delay, then
    each payload as one ``reply_command`` frame, then its partial frame or close.  No
    frames and no reply: nothing is sent.
    """

    frames: list[Frame] = field(default_factory=list)
    reply: Reply | None = None
    reply_command: int = PlatformCommand.NORMAL


class PushFraming:
    """The platform framing of the request/response bindings (spdm-emu, QEMU's DOE): a
    NORMAL frame carries one request, its reply leaves as NORMAL frames."""

    #: the platform-socket commands this binding handles
    platform_commands: frozenset[int] = frozenset({PlatformCommand.NORMAL})

    def handle_command(self, command: int, payload: bytes, endpoint: Endpoint) -> CommandAnswer:
        """NORMAL: hand the payload to the endpoint, send back what it replies."""
        return CommandAnswer(reply=endpoint.receive(payload))


class TransportBinding(Protocol):
    """One transport binding (PCI DOE, MCTP, none): its wire, from frame to record."""

    #: short name used on the command line and in profiles ("doe", "mctp", "none")
    name: str
    #: the platform-socket transport type this binding uses
    socket_transport: SocketTransport
    #: pcap link type of its captures (libspdm ``link_type_ex.h``); None: spdm_dump reads none
    pcap_link_type: int | None
    #: whether the binding can carry DSP0277 secured messages (it tells them from plain ones)
    carries_secured: bool
    #: the platform-socket commands :meth:`handle_command` handles; the server answers the
    #: generic ones (TEST, SHUTDOWN, CONTINUE, OOB_ENCAP_KEY_UPDATE) and UNKNOWN to the rest
    platform_commands: frozenset[int]

    def handle_command(self, command: int, payload: bytes, endpoint: Endpoint) -> CommandAnswer:
        """Handle one of :attr:`platform_commands` for ``endpoint``: what to send back.

        Exceptions are the endpoint's (a responder bug): the server closes the connection.
        """
        ...

    def pcap_packet(self, payload: bytes, from_requester: bool) -> bytes:
        """A transport payload as one packet of :attr:`pcap_link_type` (the binding has one)."""
        ...

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
