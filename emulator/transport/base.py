"""The transport-binding interface shared by DOE, MCTP, none, storage and TCP.

A binding owns everything about its wire (ARCHITECTURE.md): how messages are framed on the
TCP stream (:meth:`TransportBinding.stream_codec`: platform-socket frames for all but
DSP0287, which also has its own framing), the platform-socket commands it handles and what
it does with them (:meth:`TransportBinding.handle_command`, driving a connection through
the push or the pull :class:`Endpoint` API), the payload framing (``decode``/``encode``),
the DSP0277 record format, transport-level discovery and its pcap link type.  Bindings
are pure: no I/O, no state of their own (a connection's state is the endpoint's, a
stream's state its codec's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, NamedTuple, Protocol

from emulator.errors import FrameError, TransportError
from emulator.transport.platform import Frame, PlatformCommand, PlatformStreamCodec

if TYPE_CHECKING:  # a binding drives an endpoint; it never builds one
    from emulator.events import Reply


class SocketTransport(IntEnum):
    """Transport type field of a platform-socket frame (spdm-emu ``command.h``)."""

    NONE = 0
    MCTP = 1
    PCI_DOE = 2
    TCP = 3
    LINUX_MCTP = 4
    #: QEMU's ``SPDM_SOCKET_TRANSPORT_TYPE_NVME`` (``spdm_trans=nvme``): the same number as
    #: spdm-emu's LINUX_MCTP, so an alias of it (QEMU: UNSPEC 0, MCTP 1, PCI_DOE 2, SCSI 3)
    NVME = 4


class TransportMessage(NamedTuple):
    """A decoded transport message: the SPDM bytes and whether they are a secured record
    (immutable; a named tuple: one is made per message)."""

    message: bytes
    secured: bool = False


class AppData(Protocol):
    """How a binding carries an SPDM message inside a record's application data when a
    fixed prefix is not enough (DSP0287: a TCP binding header with the message's length;
    DSP0286: a secured-message descriptor naming the message's offset and length)."""

    def wrap(self, message: bytes) -> bytes:
        """The application data that carries ``message``."""
        ...

    def unwrap(self, app_data: bytes) -> bytes:
        """The SPDM message inside ``app_data``; :class:`~emulator.errors.TransportError`
        naming the field when it carries none."""
        ...


@dataclass(frozen=True, slots=True)
class RecordFormat:
    """How DSP0277 secured records look on one binding (DSP0276 MCTP, PCIe DOE, DSP0286
    storage, DSP0287 TCP; DSP0277 1.2).

    ``sequence_number_size``: bytes of the implicit sequence number sent in the record
    header (MCTP and storage 2, PCI DOE and TCP 0, as libspdm binds them);
    ``max_random_padding``: at most this many random bytes after the application data (the
    encoder adds 1..max when max > 0, as libspdm does); ``app_header``: bytes in front of
    the SPDM message inside the application data (MCTP: the message type 0x05);
    ``app_data``: instead of ``app_header``, a codec for bindings whose application data
    depends on the message (TCP, storage); ``app_protocols``: the other application
    messages a record may carry, by their header byte (MCTP: 0x01 PLDM, as DSP0275 binds
    secured PLDM), each handed to the responder's application handler.
    """

    sequence_number_size: int = 0
    max_random_padding: int = 0
    app_header: bytes = b""
    app_data: AppData | None = None
    app_protocols: tuple[tuple[int, str], ...] = ()

    def wrap(self, message: bytes) -> bytes:
        """The application data of a record that carries the SPDM ``message``."""
        if self.app_data is not None:
            return self.app_data.wrap(message)
        return self.app_header + message

    def unwrap(self, app_data: bytes) -> bytes:
        """The SPDM message inside a record's application data; TransportError when it
        carries none (another MCTP message type, a malformed TCP header or descriptor)."""
        if self.app_data is not None:
            return self.app_data.unwrap(app_data)
        header = self.app_header
        if header and not app_data.startswith(header):
            found = f"0x{app_data[0]:02x}" if app_data else "nothing"
            raise TransportError(
                f"the secured record's application data starts with {found}, not "
                f"{header.hex()} (an SPDM message)"
            )
        return app_data[len(header) :]

    def app_protocol(self, header: int) -> str | None:
        """The application protocol whose messages start with ``header`` (None: none)."""
        for value, name in self.app_protocols:
            if value == header:
                return name
        return None


class Endpoint(Protocol):
    """One requester's connection as a binding drives it (normally
    :class:`emulator.connection.SpdmConnection`).

    Push (request/response bindings, platform NORMAL): ``receive`` handles one transport
    payload and returns its reply.  Pull (the storage binding, DSP0286 IF_SEND/IF_RECV):
    ``deliver`` handles a request and keeps its reply, a later ``collect`` takes it (None
    when nothing waits); ``has_pending_reply`` tells whether one waits, ``peek`` shows it.
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

    def peek(self) -> Reply | None:
        """Pull: the kept reply, left in place (its size, before :meth:`collect`)."""
        ...

    @property
    def has_pending_reply(self) -> bool:
        """A delivered request's reply waits for :meth:`collect`."""
        ...


class StreamCodec(Protocol):
    """The sans-I/O codec of one connection's byte stream (one per TCP connection).

    ``feed`` turns received bytes into the frames to handle, in order, and (as ``bytes``)
    answers the codec gives by itself, to be written as they are, in their place (DSP0287
    ERROR_TOO_LARGE for a message it skipped).  ``encode`` is the wire form of one frame
    the server sends (empty: this framing cannot carry it, nothing is sent).  ``pending``,
    ``needed`` and ``error`` are :class:`~emulator.transport.platform.FrameDecoder`'s:
    bytes of an incomplete unit held, bytes still missing, the error that ended the stream.
    """

    @property
    def error(self) -> FrameError | None: ...

    @property
    def pending(self) -> int: ...

    @property
    def needed(self) -> int: ...

    def feed(self, data: bytes) -> list[Frame | bytes]:
        """Consume ``data``; FrameError when the stream cannot be decoded any further."""
        ...

    def encode(self, frame: Frame) -> bytes:
        """The bytes that carry ``frame`` on this stream."""
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
    #: spdm-emu's DEFAULT_SPDM_PLATFORM_PORT, the port QEMU's examples use
    default_port: int = 2323
    #: how a peer connects, for ``serve``'s banner (``{port}``: the port)
    client_hint: str = "QEMU: -device nvme,drive=...,serial=...,spdm_port={port}"

    def stream_codec(self, max_payload: int) -> StreamCodec:
        """Platform-socket frames (spdm-emu ``command.h``) of at most ``max_payload`` bytes."""
        return PlatformStreamCodec(max_payload)

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
    #: the TCP port ``serve`` listens on when none is given (2323; DSP0287: 4194)
    default_port: int
    #: how a peer connects, one line for ``serve``'s banner (``{port}``: the port)
    client_hint: str

    def stream_codec(self, max_payload: int) -> StreamCodec:
        """A new codec for one connection's byte stream (platform-socket frames, or the
        binding's own framing); ``max_payload``: the largest unit it accepts."""
        ...

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
        """The binding's own answer to a transport-level message that is not SPDM, or None
        when ``payload`` is not one (PCI DOE discovery; DSP0287 Role-Inquiry and binding
        errors).  An empty answer: handled, nothing is sent back."""
        ...
