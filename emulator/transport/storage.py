"""DSP0286 binding (SPDM over storage) as QEMU 10.2 speaks it on the platform socket:
``-device nvme,...,spdm_port=P,spdm_trans=nvme`` (``hw/nvme/ctrl.c`` Security Send /
Security Receive, ``backends/spdm-socket.c``, ``include/system/spdm-socket.h``).

Platform frames carry transport type 4 (QEMU's SPDM_SOCKET_TRANSPORT_TYPE_NVME).  QEMU
puts its packed 7-byte storage header, little-endian, in front of every payload:
SECP (u8, 0xE8 = DMTF SPDM), SPSP (u16: SPSP0 = CDW10[15:8] in the low byte, SPSP1 =
CDW10[23:16]), Length (u32: CDW11, the Transfer Length of a Security Send, the Allocation
Length of a Security Receive).  SPSP0 is ``(operation << 2) | connection ID`` (DSP0286 /
libspdm ``spdm_storage_binding.h``): DISCOVERY 1, PENDING_INFO 2, MESSAGE 5,
SECURED_MESSAGE 6.

* Security Send -> ``IF_SEND`` (0x0002), payload = header + the Transfer Length bytes of
  data.  QEMU then reads exactly one frame whose payload is the 2-byte **big-endian** NVMe
  status it completes the command with (this binding sends it as ``ACK_STATUS`` 0x0004,
  as WDC spdm-utils does).
* Security Receive -> ``IF_RECV`` (0x0003), payload = the header alone.  QEMU reads the
  status frame; when it is 0 it reads one more frame, of 1..Allocation Length bytes, the
  data it copies to the guest (sent as ``IF_RECV``, as spdm-utils; QEMU takes any known
  command and ignores the reply's transport type).  Zero bytes, or more than the
  Allocation Length, fail the command with 0x4004, and the unread bytes desync the stream:
  this binding never sends them.

Data buffers (libspdm ``spdm_transport_storage_lib``, spdm-utils): an SPDM message travels
bare; a secured message (operation 6) is 4 reserved zero bytes + the DSP0277 record
(SessionID, 2-byte sequence number, Length, ciphertext, MAC; up to 32 random padding
bytes), and the application data inside starts with a 20-byte secured-message descriptor
block (:class:`StorageAppData`).  Responses carry no storage header: the host knows from
its own request whether the answer is secured.

The pending-response model: a request arrives with IF_SEND and is handled at once
(``endpoint.deliver``); its response leaves with the next IF_RECV of operation MESSAGE or
SECURED_MESSAGE (``endpoint.collect``).  A new request replaces a response not collected.
Statuses (what spdm-utils' responder and QEMU's own checks return): 0x0000 success;
0x4002 (Invalid Field in Command | Do Not Retry) for a wrong SECP, SPSP1 or connection ID,
an unknown operation, a Length that does not match the data (IF_SEND) or is 0 (IF_RECV),
an IF_SEND over the frame limit (its bytes are skipped), data for DISCOVERY/PENDING_INFO,
an IF_RECV with no response pending, and an Allocation Length too small for the answer
(the response stays pending; PENDING_INFO tells its size).  DISCOVERY and PENDING_INFO
(IF_RECV) are answered by the binding.

Faults act on the kept response when it is collected: its delay and partial/close effects
on the data frame after the status; a dropped response is "no response pending".
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

from emulator.errors import FrameError, TransportError
from emulator.events import Reply
from emulator.transport.base import (
    CommandAnswer,
    Endpoint,
    RecordFormat,
    SocketTransport,
    StreamCodec,
    TransportMessage,
)
from emulator.transport.platform import (
    HEADER_SIZE as FRAME_HEADER_SIZE,
)
from emulator.transport.platform import (
    Frame,
    PlatformCommand,
    command_name,
    encode_frame,
)

log = logging.getLogger("emulator.transport.storage")

#: QEMU's StorageSpdmTransportHeader: SECP u8, SPSP u16, Length u32, packed, little-endian
STORAGE_HEADER = struct.Struct("<BHI")
HEADER_SIZE = STORAGE_HEADER.size
#: SPC-5 / NVMe Security Protocol "DMTF SPDM"
SECP_SPDM = 0xE8
#: SPDM storage operations (SPSP0 bits 7:2; DSP0286, libspdm SPDM_STORAGE_OPERATION_CODE_*)
OP_DISCOVERY = 0x01
OP_PENDING_INFO = 0x02
OP_MESSAGE = 0x05
OP_SECURED_MESSAGE = 0x06
OPERATION_NAMES = {
    OP_DISCOVERY: "DISCOVERY",
    OP_PENDING_INFO: "PENDING_INFO",
    OP_MESSAGE: "MESSAGE",
    OP_SECURED_MESSAGE: "SECURED_MESSAGE",
}
#: SPSP0 bits 1:0; this device supports one connection (discovery: 0, zero-based)
CONNECTION_ID_MASK = 0x03
#: NVMe completion statuses (status code type 0, generic; bit 14 Do Not Retry), as QEMU
#: puts them in the completion queue entry
STATUS_SUCCESS = 0x0000
STATUS_INVALID_FIELD = 0x4002
STATUS_DATA_TRANSFER_ERROR = 0x4004
STATUS_SIZE = 2
#: DSP0286 binding version in DISCOVERY / PENDING_INFO responses (libspdm 0x1000)
STORAGE_BINDING_VERSION = 0x1000
DISCOVERY_RESPONSE_SIZE = 32
PENDING_INFO_RESPONSE_SIZE = 12
#: the 4 reserved bytes in front of a secured message's record (DSP0286)
SECURED_RESERVED_SIZE = 4
SESSION_ID_SIZE = 4
#: libspdm LIBSPDM_STORAGE_SEQUENCE_NUMBER_COUNT / LIBSPDM_STORAGE_MAX_RANDOM_NUMBER_COUNT
STORAGE_SEQUENCE_NUMBER_SIZE = 2
STORAGE_MAX_RANDOM_PADDING = 32
#: secured-message descriptor block: NumDescriptors (u8), 3 reserved bytes, one 16-byte
#: descriptor (libspdm LIBSPDM_STORAGE_SECURED_MESSAGE_DESCRIPTOR_MIN_SIZE = 20)
DESCRIPTOR_BLOCK_SIZE = 20
DESCRIPTOR_TYPE_SPDM = 0x04
#: a descriptor's Offset counts from the start of the secured message: 4 reserved, SessionID
#: (4), sequence number (2), Length (2), ApplicationDataLength (2) and 2 more (libspdm's
#: LIBSPDM_STORAGE_SECURED_MESSAGE_NUM_DESCRIPTORS_OFFSET = 16)
DESCRIPTOR_OFFSET_BASE = 16
DESCRIPTOR_OFFSET = DESCRIPTOR_OFFSET_BASE + DESCRIPTOR_BLOCK_SIZE
#: pcap link type of storage captures: LINKTYPE_USER0 (tcpdump.org's range for private
#: use; spdm_dump knows no storage type); packet layout in :meth:`StorageBinding.pcap_packet`
LINKTYPE_SPDM_STORAGE = 147
PCAP_SEND = 0x00
PCAP_RECEIVE = 0x01

_FRAME_HEADER = struct.Struct(">III")


def operation_name(operation: int) -> str:
    """``MESSAGE`` for a known operation, ``0x12`` otherwise."""
    return OPERATION_NAMES.get(operation, f"0x{operation:02x}")


@dataclass(frozen=True, slots=True)
class StorageHeader:
    """QEMU's 7-byte storage header, decoded."""

    secp: int
    spsp0: int
    spsp1: int
    length: int

    @property
    def operation(self) -> int:
        """SPSP0 bits 7:2."""
        return self.spsp0 >> 2

    @property
    def connection_id(self) -> int:
        """SPSP0 bits 1:0."""
        return self.spsp0 & CONNECTION_ID_MASK

    def describe(self) -> str:
        return (
            f"SECP 0x{self.secp:02x} SPSP0 0x{self.spsp0:02x} ({operation_name(self.operation)}, "
            f"connection {self.connection_id}) SPSP1 0x{self.spsp1:02x} length {self.length}"
        )


def parse_header(payload: bytes) -> StorageHeader:
    """The storage header in front of ``payload``; TransportError when it is shorter."""
    if len(payload) < HEADER_SIZE:
        raise TransportError(
            f"storage payload is {len(payload)} bytes, shorter than QEMU's 7-byte storage "
            f"header (SECP, SPSP, length)"
        )
    secp, spsp, length = STORAGE_HEADER.unpack_from(payload)
    return StorageHeader(secp, spsp & 0xFF, spsp >> 8, length)


def encode_header(
    operation: int, length: int, *, connection_id: int = 0, secp: int = SECP_SPDM, spsp1: int = 0
) -> bytes:
    """QEMU's storage header for ``operation`` (``length``: Transfer or Allocation Length)."""
    spsp0 = ((operation << 2) | (connection_id & CONNECTION_ID_MASK)) & 0xFF
    return STORAGE_HEADER.pack(secp, spsp0 | (spsp1 << 8), length)


def status_payload(status: int) -> bytes:
    """The 2-byte big-endian NVMe status QEMU completes the command with."""
    return status.to_bytes(STATUS_SIZE, "big")


def status_frame(status: int) -> Frame:
    """The ``ACK_STATUS`` frame carrying ``status``."""
    return Frame(PlatformCommand.STORAGE_ACK_STATUS, SocketTransport.NVME, status_payload(status))


def discovery_response() -> bytes:
    """DSP0286 DISCOVERY data (libspdm ``spdm_storage_discovery_response_t``): DataLength
    32, binding version 0x1000, ConnParams 0 (one connection, zero-based), the supported
    operations DISCOVERY, PENDING_INFO, MESSAGE and SECURED_MESSAGE."""
    supported = (
        (1 << OP_DISCOVERY) | (1 << OP_PENDING_INFO) | (1 << OP_MESSAGE) | (1 << OP_SECURED_MESSAGE)
    )
    return struct.pack(
        "<HHB3xB7x16x", DISCOVERY_RESPONSE_SIZE, STORAGE_BINDING_VERSION, 0, supported
    )


def pending_info_response(pending_length: int | None) -> bytes:
    """DSP0286 PENDING_INFO data (libspdm ``spdm_storage_pending_info_response_t``):
    DataLength 12, binding version, PendingInfoFlag (bit 0: a response waits) and its
    length; ``pending_length`` None: nothing waits (flag and length 0)."""
    flag, size = (0, 0) if pending_length is None else (1, pending_length)
    return struct.pack("<HHII", PENDING_INFO_RESPONSE_SIZE, STORAGE_BINDING_VERSION, flag, size)


@dataclass(frozen=True, slots=True)
class StorageAppData:
    """Secured-message application data over storage: a descriptor block, then the SPDM
    message (DSP0286; libspdm ``libspdm_storage_secured_message_encode``).

    Written as libspdm does (the only storage requester and responder there are):
    NumDescriptors 1 at byte 0 and the 16-byte descriptor starting at byte 3 (reserved,
    DescriptorType 0x04 SPDM at byte 4, Status at 5, reserved, Length u32 at 7, Offset
    u32 = 36 at 11, reserved u32), a zero byte, the message at byte 20.  Read: that
    layout, or the descriptor at byte 4 (Type at 5, Length at 8, Offset at 12), DSP0286's
    own; the message starts ``Offset - 16`` bytes in and is ``Length`` bytes long.
    """

    def wrap(self, message: bytes) -> bytes:
        block = bytearray(DESCRIPTOR_BLOCK_SIZE)
        block[0] = 1
        struct.pack_into(
            "<BBBBII", block, 3, 0, DESCRIPTOR_TYPE_SPDM, 0, 0, len(message), DESCRIPTOR_OFFSET
        )
        return bytes(block) + message

    def unwrap(self, app_data: bytes) -> bytes:
        if len(app_data) < DESCRIPTOR_BLOCK_SIZE:
            raise TransportError(
                f"storage secured message: {len(app_data)} bytes of application data, "
                f"shorter than the {DESCRIPTOR_BLOCK_SIZE}-byte descriptor block"
            )
        count = app_data[0]
        if count != 1:
            raise TransportError(
                f"storage secured message: NumDescriptors is {count}; one SPDM descriptor "
                f"is supported"
            )
        if app_data[4] == DESCRIPTOR_TYPE_SPDM:
            start = 3  # libspdm's layout
        elif app_data[4] == 0 and app_data[5] == DESCRIPTOR_TYPE_SPDM:
            start = 4  # DSP0286's
        else:
            raise TransportError(
                f"storage secured message: descriptor type 0x{app_data[4]:02x} is not SPDM "
                f"(0x{DESCRIPTOR_TYPE_SPDM:02x})"
            )
        length, offset = struct.unpack_from("<II", app_data, start + 4)
        if offset < DESCRIPTOR_OFFSET:
            raise TransportError(
                f"storage secured message: descriptor Offset {offset} points into the "
                f"descriptor block (the message starts at {DESCRIPTOR_OFFSET} or later)"
            )
        first = offset - DESCRIPTOR_OFFSET_BASE
        if length == 0 or first + length > len(app_data):
            raise TransportError(
                f"storage secured message: descriptor Length {length} at Offset {offset} "
                f"does not fit the {len(app_data)} bytes of application data"
            )
        return app_data[first : first + length]


class StorageStreamCodec:
    """Platform frames, as :class:`~emulator.transport.platform.FrameDecoder` reads them,
    except that an ``IF_SEND`` over ``max_payload`` is skipped and answered at once with
    status 0x4002 (a drive refuses a transfer over its buffer; the stream stays in step).
    Any other oversized frame ends the stream (FrameError)."""

    def __init__(self, max_payload: int) -> None:
        self.max_payload = max_payload
        self._header = bytearray()
        self._frame: tuple[int, int] | None = None
        self._size = 0
        self._payload = bytearray()
        self._skip = 0
        self._error: FrameError | None = None

    @property
    def error(self) -> FrameError | None:
        return self._error

    @property
    def pending(self) -> int:
        return len(self._header) + len(self._payload) + (1 if self._skip else 0)

    @property
    def needed(self) -> int:
        if self._skip:
            return self._skip
        if self._frame is None:
            return FRAME_HEADER_SIZE - len(self._header)
        return self._size - len(self._payload)

    def feed(self, data: bytes) -> list[Frame | bytes]:
        if self._error is not None:
            raise self._error
        out: list[Frame | bytes] = []
        view = memoryview(data)
        offset, end = 0, len(view)
        while offset < end or (self._frame is not None and self._size == 0):
            if self._skip:
                take = min(self._skip, end - offset)
                self._skip -= take
                offset += take
                continue
            if self._frame is None:
                take = min(FRAME_HEADER_SIZE - len(self._header), end - offset)
                self._header += view[offset : offset + take]
                offset += take
                if len(self._header) < FRAME_HEADER_SIZE:
                    break
                command, transport, size = _FRAME_HEADER.unpack(self._header)
                self._header.clear()
                if size > self.max_payload:
                    if command == PlatformCommand.STORAGE_IF_SEND:
                        log.warning(
                            "IF_SEND of %d bytes is over the %d-byte limit (max_payload): "
                            "skipped, status 0x%04x",
                            size,
                            self.max_payload,
                            STATUS_INVALID_FIELD,
                        )
                        self._skip = size
                        out.append(encode_frame(status_frame(STATUS_INVALID_FIELD)))
                        continue
                    self._error = FrameError(
                        f"platform frame payload size is {size} bytes (0x{size:x}), over the "
                        f"limit of {self.max_payload} bytes (0x{self.max_payload:x}); command "
                        f"{command_name(command)}, transport {transport}"
                    )
                    if out:
                        return out
                    raise self._error
                self._frame, self._size = (command, transport), size
                continue
            take = min(self._size - len(self._payload), end - offset)
            self._payload += view[offset : offset + take]
            offset += take
            if len(self._payload) < self._size:
                break
            command, transport = self._frame
            out.append(Frame(command, transport, bytes(self._payload)))
            self._frame = None
            self._payload.clear()
        return out

    def encode(self, frame: Frame) -> bytes:
        return encode_frame(frame)


class StorageBinding:
    """DSP0286 over QEMU's NVMe Security Send/Receive forwarding (module docstring)."""

    name: str = "storage"
    socket_transport: SocketTransport = SocketTransport.NVME
    pcap_link_type: int | None = LINKTYPE_SPDM_STORAGE
    carries_secured: bool = True
    platform_commands: frozenset[int] = frozenset(
        {PlatformCommand.STORAGE_IF_SEND, PlatformCommand.STORAGE_IF_RECV}
    )
    default_port: int = 2323
    client_hint: str = (
        "QEMU >= 10.2: -device nvme,drive=...,serial=...,spdm_port={port},spdm_trans=nvme"
    )

    def stream_codec(self, max_payload: int) -> StreamCodec:
        return StorageStreamCodec(max_payload)

    # ---- the platform commands ----------------------------------------------------------

    def handle_command(self, command: int, payload: bytes, endpoint: Endpoint) -> CommandAnswer:
        """IF_SEND: check, deliver, status.  IF_RECV: status, then the answer's data."""
        if command == PlatformCommand.STORAGE_IF_SEND:
            return self._security_send(payload, endpoint)
        return self._security_receive(payload, endpoint)

    @staticmethod
    def _refuse(what: str, problem: str) -> CommandAnswer:
        log.warning("%s refused (status 0x%04x): %s", what, STATUS_INVALID_FIELD, problem)
        return CommandAnswer([status_frame(STATUS_INVALID_FIELD)])

    @staticmethod
    def _check_header(header: StorageHeader) -> str | None:
        if header.secp != SECP_SPDM:
            return f"SECP 0x{header.secp:02x} is not DMTF SPDM (0x{SECP_SPDM:02x})"
        if header.spsp1 != 0:
            return f"SPSP1 is 0x{header.spsp1:02x}, must be 0"
        if header.connection_id != 0:
            return f"connection ID {header.connection_id}: this device supports connection 0 only"
        if header.operation not in OPERATION_NAMES:
            return (
                f"SPSP0 0x{header.spsp0:02x}: operation 0x{header.operation:02x} is not one "
                f"of DSP0286's"
            )
        return None

    def _security_send(self, payload: bytes, endpoint: Endpoint) -> CommandAnswer:
        what = "Security Send (IF_SEND)"
        try:
            header = parse_header(payload)
        except TransportError as exc:
            return self._refuse(what, str(exc))
        problem = self._check_header(header)
        if problem is not None:
            return self._refuse(what, problem)
        data = len(payload) - HEADER_SIZE
        if header.length != data:
            return self._refuse(
                what, f"header length {header.length} but {data} data bytes follow the header"
            )
        operation = header.operation
        if operation in (OP_DISCOVERY, OP_PENDING_INFO):
            if data:
                return self._refuse(
                    what, f"{operation_name(operation)} carries no data, got {data} bytes"
                )
            log.debug("%s %s: nothing to do", what, operation_name(operation))
            return CommandAnswer([status_frame(STATUS_SUCCESS)])
        if operation == OP_MESSAGE and data == 0:
            return self._refuse(what, "MESSAGE with no SPDM message (transfer length 0)")
        if operation == OP_SECURED_MESSAGE and data <= SECURED_RESERVED_SIZE + SESSION_ID_SIZE:
            return self._refuse(
                what,
                f"SECURED_MESSAGE of {data} bytes: too short for the 4 reserved bytes, a "
                f"session ID and a record",
            )
        if endpoint.has_pending_reply:
            log.info("%s: a new request replaces the response not collected", what)
        endpoint.deliver(payload)
        return CommandAnswer([status_frame(STATUS_SUCCESS)])

    def _security_receive(self, payload: bytes, endpoint: Endpoint) -> CommandAnswer:
        what = "Security Receive (IF_RECV)"
        if len(payload) != HEADER_SIZE:
            return self._refuse(
                what, f"{len(payload)} bytes, expected the 7-byte storage header alone"
            )
        header = parse_header(payload)
        problem = self._check_header(header)
        if problem is not None:
            return self._refuse(what, problem)
        allocation = header.length
        if allocation == 0:
            return self._refuse(what, "allocation length 0")
        operation = header.operation
        if operation in (OP_DISCOVERY, OP_PENDING_INFO):
            if operation == OP_DISCOVERY:
                data = discovery_response()
            else:
                kept = endpoint.peek()
                size = len(kept.payloads[0]) if kept is not None and kept.payloads else None
                data = pending_info_response(size)
            if allocation < len(data):
                return self._refuse(
                    what,
                    f"allocation length {allocation} is smaller than the "
                    f"{len(data)}-byte {operation_name(operation)} response",
                )
            return CommandAnswer(
                [status_frame(STATUS_SUCCESS)],
                Reply([data]),
                PlatformCommand.STORAGE_IF_RECV,
            )
        kept = endpoint.peek()
        if kept is None:
            return self._refuse(what, f"{operation_name(operation)}: no response pending")
        if not kept.payloads:
            endpoint.collect()
            if kept.close or kept.partial is not None:
                return CommandAnswer([], kept, PlatformCommand.STORAGE_IF_RECV)
            return self._refuse(what, "the response was dropped (fault): none pending")
        size = len(kept.payloads[0])
        if size > allocation:
            return self._refuse(
                what,
                f"allocation length {allocation} is smaller than the {size}-byte response "
                f"(it stays pending; PENDING_INFO gives its size)",
            )
        endpoint.collect()
        return CommandAnswer([status_frame(STATUS_SUCCESS)], kept, PlatformCommand.STORAGE_IF_RECV)

    # ---- payloads -----------------------------------------------------------------------

    def decode(self, payload: bytes) -> TransportMessage:
        """An IF_SEND payload (storage header + data): the SPDM message, or the record of a
        SECURED_MESSAGE (after its 4 reserved bytes)."""
        header = parse_header(payload)
        problem = self._check_header(header)
        if problem is not None:
            raise TransportError(f"storage header: {problem}")
        data = payload[HEADER_SIZE:]
        if header.length != len(data):
            raise TransportError(
                f"storage header length {header.length}, but {len(data)} data bytes follow"
            )
        if header.operation == OP_MESSAGE:
            if not data:
                raise TransportError("storage MESSAGE carries an empty SPDM message")
            return TransportMessage(bytes(data))
        if header.operation == OP_SECURED_MESSAGE:
            record = data[SECURED_RESERVED_SIZE:]
            if len(record) <= SESSION_ID_SIZE:
                raise TransportError(
                    f"storage SECURED_MESSAGE carries {len(data)} bytes, too short for the "
                    f"4 reserved bytes, a session ID and a record"
                )
            return TransportMessage(bytes(record), secured=True)
        raise TransportError(
            f"storage operation {operation_name(header.operation)} carries no SPDM message"
        )

    def encode(self, message: bytes, secured: bool = False) -> bytes:
        """IF_RECV data: the SPDM message bare, or 4 reserved zero bytes + the record."""
        if not message:
            raise TransportError("cannot send an empty SPDM message over storage")
        if secured:
            return bytes(SECURED_RESERVED_SIZE) + message
        return message

    def encode_request(
        self, message: bytes, secured: bool = False, connection_id: int = 0
    ) -> bytes:
        """The requester's side: the IF_SEND payload of a request (header + data)."""
        data = self.encode(message, secured)
        operation = OP_SECURED_MESSAGE if secured else OP_MESSAGE
        return encode_header(operation, len(data), connection_id=connection_id) + data

    def decode_response(self, data: bytes, secured: bool) -> TransportMessage:
        """The requester's side: IF_RECV data as the response to a plain or secured request
        (the data does not say which)."""
        if not data:
            raise TransportError("storage response is empty")
        if not secured:
            return TransportMessage(bytes(data))
        record = data[SECURED_RESERVED_SIZE:]
        if len(record) <= SESSION_ID_SIZE:
            raise TransportError(
                f"storage secured response is {len(data)} bytes, too short for the 4 "
                f"reserved bytes, a session ID and a record"
            )
        return TransportMessage(bytes(record), secured=True)

    @property
    def record_format(self) -> RecordFormat:
        """2-byte sequence number, up to 32 random padding bytes, a descriptor block in
        front of the message (libspdm storage)."""
        return RecordFormat(
            sequence_number_size=STORAGE_SEQUENCE_NUMBER_SIZE,
            max_random_padding=STORAGE_MAX_RANDOM_PADDING,
            app_data=StorageAppData(),
        )

    def answer_discovery(self, payload: bytes) -> bytes | None:
        """DSP0286 DISCOVERY is a Security Receive: :meth:`handle_command` answers it."""
        return None

    def pcap_packet(self, payload: bytes, from_requester: bool) -> bytes:
        """One packet of link type 147: a direction byte (0x00 Security Send, host to
        device; 0x01 Security Receive data, device to host), QEMU's 7-byte storage header
        (for a response: operation MESSAGE, or SECURED_MESSAGE when the data starts with
        the 4 reserved zero bytes; Length = the data's), then the data."""
        if from_requester:
            return bytes((PCAP_SEND,)) + payload
        operation = OP_SECURED_MESSAGE if payload[:1] == b"\x00" else OP_MESSAGE
        return bytes((PCAP_RECEIVE,)) + encode_header(operation, len(payload)) + payload


__all__ = [
    "LINKTYPE_SPDM_STORAGE",
    "OP_DISCOVERY",
    "OP_MESSAGE",
    "OP_PENDING_INFO",
    "OP_SECURED_MESSAGE",
    "SECP_SPDM",
    "STATUS_INVALID_FIELD",
    "STATUS_SUCCESS",
    "StorageAppData",
    "StorageBinding",
    "StorageHeader",
    "StorageStreamCodec",
    "discovery_response",
    "encode_header",
    "parse_header",
    "pending_info_response",
    "status_frame",
]
