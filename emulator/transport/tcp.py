"""DSP0287 binding: SPDM over TCP, as libspdm's ``spdm_transport_tcp_lib`` (1e16c60) and
``industry_standard/spdm_tcp_binding.h`` define it.

Every message starts with a 4-byte binding header, little-endian:

* PayloadLength (u16): for an SPDM or secured message, the bytes after this field
  (binding version, message type and the message: ``total size - 2``, as
  ``libspdm_tcp_encode_message``); for the header-only messages (Role-Inquiry and the
  binding errors) 0, as ``libspdm_tcp_encode_discovery_message``;
* BindingVersion (u8): 0x01;
* MessageType (u8): 0x05 SPDM (out of session), 0x06 secured SPDM (in session),
  0xBF Role-Inquiry, 0xC0 ERROR_TOO_LARGE, 0xC1 ERROR_NOT_SUPPORTED,
  0xC2 ERROR_CANNOT_OPERATE_AS_REQUESTER, 0xC3 ERROR_CANNOT_OPERATE_AS_RESPONDER
  (0xC4-0xFF reserved errors).

Secured messages (DSP0277): the record follows the header (SessionID, no sequence number
on the wire, Length, ciphertext, MAC; no random padding), and the application data inside
carries a second binding header (type 0x05) in front of the SPDM message.

Two framings reach this binding, told apart by each connection's first bytes
(:class:`TcpStreamCodec`):

* DSP0287 proper: the messages back to back on the TCP stream, on port 4194 (IANA), as
  WDC spdm-utils' ``--tcp-server``/``--tcp-client`` speak it;
* DMTF spdm-emu's ``--trans TCP`` (spdm_requester_emu/spdm_responder_emu): each message in a
  platform-socket frame of transport type 3 (NORMAL; TEST hello first), also on port 4194.

A platform frame's third byte is the high byte of a command's low half (0x00 NORMAL, 0xDE
TEST, 0xFF SHUTDOWN/CONTINUE, 0x80 OOB), never 0x01; a DSP0287 message's third byte is its
binding version, 0x01.

Transport-level answers: a Role-Inquiry asks this endpoint to act as the requester,
which an emulated device cannot: ERROR_CANNOT_OPERATE_AS_REQUESTER; an unknown message type
or binding version: ERROR_NOT_SUPPORTED; a message over the size limit: ERROR_TOO_LARGE
(its bytes are skipped, the stream stays in step); a binding error from the peer is logged
and not answered.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

from emulator.errors import FrameError, TransportError
from emulator.transport.base import (
    PushFraming,
    RecordFormat,
    SocketTransport,
    StreamCodec,
    TransportMessage,
)
from emulator.transport.platform import Frame, PlatformCommand, PlatformStreamCodec, encode_frame

log = logging.getLogger("emulator.transport.tcp")

#: IANA's port for SPDM over TCP (spdm-emu TCP_SPDM_PLATFORM_PORT)
TCP_SPDM_PORT = 4194
HEADER_SIZE = 4
BINDING_VERSION = 0x01
TYPE_SPDM = 0x05
TYPE_SECURED_SPDM = 0x06
TYPE_ROLE_INQUIRY = 0xBF
TYPE_ERROR_TOO_LARGE = 0xC0
TYPE_ERROR_NOT_SUPPORTED = 0xC1
TYPE_ERROR_CANNOT_OPERATE_AS_REQUESTER = 0xC2
TYPE_ERROR_CANNOT_OPERATE_AS_RESPONDER = 0xC3
#: 0xC0-0xFF are binding errors (0xC4-0xFF reserved)
FIRST_ERROR_TYPE = 0xC0
TYPE_NAMES = {
    TYPE_SPDM: "SPDM",
    TYPE_SECURED_SPDM: "secured SPDM",
    TYPE_ROLE_INQUIRY: "Role-Inquiry",
    TYPE_ERROR_TOO_LARGE: "ERROR_TOO_LARGE",
    TYPE_ERROR_NOT_SUPPORTED: "ERROR_NOT_SUPPORTED",
    TYPE_ERROR_CANNOT_OPERATE_AS_REQUESTER: "ERROR_CANNOT_OPERATE_AS_REQUESTER",
    TYPE_ERROR_CANNOT_OPERATE_AS_RESPONDER: "ERROR_CANNOT_OPERATE_AS_RESPONDER",
}
#: DSP0277 records start with a 4-byte session ID
SESSION_ID_SIZE = 4
#: pcap link type of TCP captures: LINKTYPE_USER1 (tcpdump.org's range for private use;
#: spdm_dump knows no DSP0287 type); each packet is one DSP0287 message as on the wire
LINKTYPE_SPDM_TCP = 148
#: The largest message PayloadLength can describe
MAX_MESSAGE_SIZE = 2 + 0xFFFF

_HEADER = struct.Struct("<HBB")


def type_name(message_type: int) -> str:
    """``Role-Inquiry`` for a known message type, ``0x12`` otherwise."""
    known = TYPE_NAMES.get(message_type)
    if known is not None:
        return known
    if message_type >= FIRST_ERROR_TYPE:
        return f"reserved error 0x{message_type:02x}"
    return f"0x{message_type:02x}"


def encode_message(message_type: int, message: bytes) -> bytes:
    """One DSP0287 message: the binding header (PayloadLength = 2 + len(message)), then
    ``message``."""
    size = 2 + len(message)
    if size > 0xFFFF:
        raise TransportError(
            f"a DSP0287 message carries at most {0xFFFF - 2} bytes; this one has {len(message)}"
        )
    return _HEADER.pack(size, BINDING_VERSION, message_type) + message


def header_only(message_type: int) -> bytes:
    """A Role-Inquiry or binding error: the header alone, PayloadLength 0 (libspdm)."""
    return _HEADER.pack(0, BINDING_VERSION, message_type)


def message_size(header: bytes) -> int:
    """The whole size of the message whose first 4 bytes are ``header`` (PayloadLength 0:
    a header-only message); FrameError for a PayloadLength of 1, shorter than the header."""
    (length,) = struct.unpack_from("<H", header)
    if length == 1:
        raise FrameError(
            "DSP0287 PayloadLength is 1: shorter than the binding version and message type "
            "it must count"
        )
    return HEADER_SIZE if length == 0 else 2 + length


def parse_header(payload: bytes) -> tuple[int, int, int]:
    """(PayloadLength, BindingVersion, MessageType); TransportError when shorter."""
    if len(payload) < HEADER_SIZE:
        raise TransportError(
            f"DSP0287 message is {len(payload)} bytes, shorter than the 4-byte binding header"
        )
    length, version, message_type = _HEADER.unpack_from(payload)
    return length, version, message_type


@dataclass(frozen=True, slots=True)
class TcpAppData:
    """Inside a secured record: a binding header of type SPDM, then the SPDM message
    (``libspdm_transport_tcp_encode_message``, ``is_app_message`` false)."""

    def wrap(self, message: bytes) -> bytes:
        return encode_message(TYPE_SPDM, message)

    def unwrap(self, app_data: bytes) -> bytes:
        length, version, message_type = parse_header(app_data)
        if version != BINDING_VERSION:
            raise TransportError(
                f"DSP0287 header inside the record: binding version 0x{version:02x}, "
                f"expected 0x{BINDING_VERSION:02x}"
            )
        if message_type != TYPE_SPDM:
            raise TransportError(
                f"DSP0287 header inside the record: message type {type_name(message_type)}, "
                f"expected SPDM (0x05)"
            )
        if length != len(app_data) - 2:
            raise TransportError(
                f"DSP0287 header inside the record: PayloadLength {length}, but "
                f"{len(app_data) - 2} bytes follow it"
            )
        message = app_data[HEADER_SIZE:]
        if not message:
            raise TransportError("DSP0287 header inside the record carries no SPDM message")
        return message


class TcpBinding(PushFraming):
    """DSP0287 messages, on their own stream or in spdm-emu's platform frames (type 3)."""

    name: str = "tcp"
    socket_transport: SocketTransport = SocketTransport.TCP
    pcap_link_type: int | None = LINKTYPE_SPDM_TCP
    carries_secured: bool = True
    default_port: int = TCP_SPDM_PORT
    client_hint: str = (
        "DSP0287 on the stream, or libspdm: spdm_requester_emu --trans TCP --port {port}"
    )

    def stream_codec(self, max_payload: int) -> StreamCodec:
        """DSP0287 on the stream, or platform frames: decided by the first bytes."""
        return TcpStreamCodec(max_payload)

    def decode(self, payload: bytes) -> TransportMessage:
        """Check the binding header of an SPDM or secured SPDM message; return the message."""
        length, version, message_type = parse_header(payload)
        if version != BINDING_VERSION:
            raise TransportError(
                f"DSP0287 binding version is 0x{version:02x}, expected 0x{BINDING_VERSION:02x}"
            )
        if message_type not in (TYPE_SPDM, TYPE_SECURED_SPDM):
            raise TransportError(
                f"DSP0287 message type {type_name(message_type)} is not SPDM (0x05) or "
                f"secured SPDM (0x06)"
            )
        if length != len(payload) - 2:
            raise TransportError(
                f"DSP0287 PayloadLength is {length}, but {len(payload) - 2} bytes follow it "
                f"(the message is {len(payload)} bytes)"
            )
        message = payload[HEADER_SIZE:]
        if not message:
            raise TransportError("DSP0287 message carries an empty SPDM message")
        secured = message_type == TYPE_SECURED_SPDM
        if secured and len(message) <= SESSION_ID_SIZE:
            raise TransportError(
                f"secured DSP0287 message carries {len(message)} bytes, "
                f"too short for a session ID and a record"
            )
        return TransportMessage(message=bytes(message), secured=secured)

    def encode(self, message: bytes, secured: bool = False) -> bytes:
        """The binding header (type 0x05, or 0x06 for a record), then the message."""
        if not message:
            raise TransportError("cannot encode an empty SPDM message in a DSP0287 message")
        return encode_message(TYPE_SECURED_SPDM if secured else TYPE_SPDM, message)

    def answer_discovery(self, payload: bytes) -> bytes | None:
        """The binding's answer to a message that is not SPDM (module docstring); None for
        SPDM and secured SPDM messages (and anything too short to have a header)."""
        if len(payload) < HEADER_SIZE:
            return None
        _length, version, message_type = _HEADER.unpack_from(payload)
        if version != BINDING_VERSION:
            log.warning(
                "DSP0287 message with binding version 0x%02x (not 0x01): ERROR_NOT_SUPPORTED",
                version,
            )
            return header_only(TYPE_ERROR_NOT_SUPPORTED)
        if message_type in (TYPE_SPDM, TYPE_SECURED_SPDM):
            return None
        if message_type == TYPE_ROLE_INQUIRY:
            log.info(
                "DSP0287 Role-Inquiry: an emulated device only responds: "
                "ERROR_CANNOT_OPERATE_AS_REQUESTER"
            )
            return header_only(TYPE_ERROR_CANNOT_OPERATE_AS_REQUESTER)
        if message_type >= FIRST_ERROR_TYPE:
            log.warning("the peer sent DSP0287 %s; not answered", type_name(message_type))
            return b""
        log.warning(
            "DSP0287 message type %s is not supported: ERROR_NOT_SUPPORTED",
            type_name(message_type),
        )
        return header_only(TYPE_ERROR_NOT_SUPPORTED)

    @property
    def record_format(self) -> RecordFormat:
        """No sequence number on the wire, no random padding, a binding header inside the
        record (libspdm tcp: SPDM_TCP_SEQUENCE_NUMBER_COUNT 0, MAX_RANDOM_NUMBER_COUNT 0)."""
        return RecordFormat(sequence_number_size=0, max_random_padding=0, app_data=TcpAppData())

    def pcap_packet(self, payload: bytes, from_requester: bool) -> bytes:
        """The DSP0287 message as is (link type 148, LINKTYPE_USER1)."""
        return payload


class _RawStream:
    """DSP0287 messages back to back on the stream (sans-I/O)."""

    def __init__(self, max_payload: int) -> None:
        self.max_payload = max_payload
        self._buffer = bytearray()
        self._size: int | None = None
        #: bytes of an oversized message still to skip
        self._skip = 0
        #: the error that ended the stream (raised again by every later feed)
        self.error: FrameError | None = None

    @property
    def pending(self) -> int:
        return len(self._buffer) + (1 if self._skip else 0)

    @property
    def needed(self) -> int:
        if self._skip:
            return self._skip
        if self._size is None:
            return HEADER_SIZE - len(self._buffer)
        return self._size - len(self._buffer)

    def feed(self, data: bytes) -> list[Frame | bytes]:
        """The messages ``data`` completed; as FrameDecoder, an error after some of them
        returns those first, and the next call raises it."""
        if self.error is not None:
            raise self.error
        out: list[Frame | bytes] = []
        view = memoryview(data)
        offset, end = 0, len(view)
        while offset < end:
            if self._skip:
                take = min(self._skip, end - offset)
                self._skip -= take
                offset += take
                continue
            if self._size is None:
                take = min(HEADER_SIZE - len(self._buffer), end - offset)
                self._buffer += view[offset : offset + take]
                offset += take
                if len(self._buffer) < HEADER_SIZE:
                    break
                try:
                    size = message_size(bytes(self._buffer))
                except FrameError as exc:
                    self.error = exc
                    self._buffer.clear()
                    if out:
                        return out
                    raise
                if size > self.max_payload:
                    log.warning(
                        "DSP0287 message of %d bytes is over the limit of %d: skipped, "
                        "answered ERROR_TOO_LARGE",
                        size,
                        self.max_payload,
                    )
                    self._skip = size - HEADER_SIZE
                    self._buffer.clear()
                    out.append(header_only(TYPE_ERROR_TOO_LARGE))
                    continue
                self._size = size
            take = min(self._size - len(self._buffer), end - offset)
            self._buffer += view[offset : offset + take]
            offset += take
            if len(self._buffer) == self._size:
                out.append(Frame(PlatformCommand.NORMAL, SocketTransport.TCP, bytes(self._buffer)))
                self._buffer.clear()
                self._size = None
        return out


class TcpStreamCodec:
    """One connection's stream for :class:`TcpBinding`: its first 3 bytes decide between
    DSP0287 on the stream and spdm-emu's platform frames (module docstring).

    In DSP0287 mode each message is handed on as a NORMAL frame of transport type 3 (what
    spdm-emu's platform mode carries), and a NORMAL frame going out is its payload, as is;
    other frames have no form on a DSP0287 stream and are not sent.
    """

    #: the bytes needed to tell the framings apart
    SNIFF = 3

    def __init__(self, max_payload: int) -> None:
        self.max_payload = max_payload
        self._sniffed = bytearray()
        self._platform: PlatformStreamCodec | None = None
        self._raw: _RawStream | None = None

    @property
    def mode(self) -> str | None:
        """``"dsp0287"``, ``"platform"``, or None before the first 3 bytes arrived."""
        if self._raw is not None:
            return "dsp0287"
        if self._platform is not None:
            return "platform"
        return None

    @property
    def error(self) -> FrameError | None:
        if self._platform is not None:
            return self._platform.error
        if self._raw is not None:
            return self._raw.error
        return None

    @property
    def pending(self) -> int:
        if self._platform is not None:
            return self._platform.pending
        if self._raw is not None:
            return self._raw.pending
        return len(self._sniffed)

    @property
    def needed(self) -> int:
        if self._platform is not None:
            return self._platform.needed
        if self._raw is not None:
            return self._raw.needed
        return self.SNIFF - len(self._sniffed)

    def feed(self, data: bytes) -> list[Frame | bytes]:
        if self._platform is not None:
            return self._platform.feed(data)
        if self._raw is not None:
            return self._raw.feed(data)
        self._sniffed += data
        if len(self._sniffed) < self.SNIFF:
            return []
        start, self._sniffed = bytes(self._sniffed), bytearray()
        if start[2] == BINDING_VERSION:
            log.debug("DSP0287 stream (binding header first)")
            self._raw = _RawStream(self.max_payload)
            return self._raw.feed(start)
        log.debug("platform-socket frames (spdm-emu --trans TCP)")
        self._platform = PlatformStreamCodec(self.max_payload)
        return self._platform.feed(start)

    def encode(self, frame: Frame) -> bytes:
        if self._raw is None:
            return encode_frame(frame)
        if frame.command == PlatformCommand.NORMAL:
            return frame.payload
        log.debug("platform command 0x%04x has no DSP0287 form: not sent", frame.command)
        return b""


__all__ = [
    "BINDING_VERSION",
    "LINKTYPE_SPDM_TCP",
    "TCP_SPDM_PORT",
    "TYPE_ERROR_CANNOT_OPERATE_AS_REQUESTER",
    "TYPE_ERROR_CANNOT_OPERATE_AS_RESPONDER",
    "TYPE_ERROR_NOT_SUPPORTED",
    "TYPE_ERROR_TOO_LARGE",
    "TYPE_ROLE_INQUIRY",
    "TYPE_SECURED_SPDM",
    "TYPE_SPDM",
    "TcpAppData",
    "TcpBinding",
    "TcpStreamCodec",
    "encode_message",
    "header_only",
    "message_size",
    "type_name",
]
