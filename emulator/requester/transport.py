"""asyncio clients: the requester side of every binding's wire.

Used by the tests, the pytest plugin and the ``probe`` command; :func:`open_client` picks
the one a binding needs:

* :class:`SocketClient`: spdm-emu's platform socket, NORMAL frames (DOE, MCTP, none; TCP as
  spdm-emu's ``--trans TCP``).  It frames requests exactly as spdm-emu's requester does
  (12-byte big-endian header, TEST hello "Client Hello!" with its NUL) but writes each
  frame with one send and sets TCP_NODELAY.
* :class:`StorageClient`: the platform socket as QEMU's NVMe Security Send/Receive
  forwarding speaks it (DSP0286, ``spdm_trans=nvme``): IF_SEND, its status, IF_RECV, its
  status and the data.
* :class:`TcpStreamClient`: DSP0287 messages on the TCP stream itself.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
from types import TracebackType

from emulator.errors import FrameError, RequesterError, TransportError
from emulator.server.platform import (
    Frame,
    FrameDecoder,
    PlatformCommand,
    command_name,
    encode_frame,
)
from emulator.server.server import rearm_quickack
from emulator.transport.base import TransportBinding, TransportMessage
from emulator.transport.storage import (
    OP_DISCOVERY,
    OP_MESSAGE,
    OP_PENDING_INFO,
    OP_SECURED_MESSAGE,
    STATUS_SUCCESS,
    StorageBinding,
    encode_header,
)
from emulator.transport.tcp import (
    HEADER_SIZE as TCP_HEADER_SIZE,
)
from emulator.transport.tcp import (
    TYPE_ROLE_INQUIRY,
    TcpBinding,
    header_only,
    message_size,
)

#: spdm-emu's requester sends ``sizeof("Client Hello!")`` bytes: the NUL is included.
CLIENT_HELLO = b"Client Hello!\x00"
#: The largest reply accepted: a whole 1 MiB DOE object.
DEFAULT_CLIENT_MAX_PAYLOAD = 1 << 20
_READ_CHUNK = 64 * 1024


class SocketClient:
    """One platform-socket connection to a responder.

    ``timeout`` (seconds) bounds connecting and every wait for a frame.
    """

    def __init__(
        self,
        host: str,
        port: int,
        binding: TransportBinding,
        *,
        timeout: float = 10.0,
        max_payload: int = DEFAULT_CLIENT_MAX_PAYLOAD,
    ) -> None:
        self.host = host
        self.port = port
        self.binding = binding
        self.timeout = timeout
        self._decoder = FrameDecoder(max_payload)
        self._frames: collections.deque[Frame] = collections.deque()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        """Open the TCP connection (TCP_NODELAY set)."""
        if self._writer is not None:
            return
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(self.host, self.port)
        except TimeoutError:
            raise RequesterError(
                f"cannot connect to {self.host}:{self.port}: no answer within {self.timeout} s"
            ) from None
        except OSError as exc:
            raise RequesterError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader, self._writer = reader, writer

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is None:
            return
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()

    async def __aenter__(self) -> SocketClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _require_writer(self) -> asyncio.StreamWriter:
        if self._writer is None:
            raise RequesterError("not connected: call connect() first")
        return self._writer

    async def send_frame(self, command: int, payload: bytes = b"") -> None:
        """Send one frame with the binding's transport type, in a single write."""
        writer = self._require_writer()
        frame = Frame(int(command), int(self.binding.socket_transport), payload)
        try:
            writer.write(encode_frame(frame))
            await writer.drain()
        except (ConnectionError, OSError) as exc:
            raise RequesterError(f"sending {command_name(command)} failed: {exc}") from exc
        # a responder that writes its reply in pieces without TCP_NODELAY (libspdm's) would
        # otherwise wait for our delayed ACK: 44 ms instead of 0.3 ms per round trip
        rearm_quickack(writer.get_extra_info("socket"))

    async def recv_frame(self) -> Frame:
        """Wait for the next frame; :class:`RequesterError` on timeout, EOF or bad framing."""
        if self._frames:
            return self._frames.popleft()
        if self._reader is None:
            raise RequesterError("not connected: call connect() first")
        reader = self._reader
        try:
            async with asyncio.timeout(self.timeout):
                while not self._frames:
                    data = await reader.read(_READ_CHUNK)
                    rearm_quickack(self._writer.get_extra_info("socket") if self._writer else None)
                    if not data:
                        if self._decoder.pending:
                            raise RequesterError(
                                f"responder closed the connection mid-frame "
                                f"({self._decoder.pending} bytes received)"
                            )
                        raise RequesterError("responder closed the connection")
                    self._frames.extend(self._decoder.feed(data))
        except TimeoutError:
            raise RequesterError(f"no frame from the responder within {self.timeout} s") from None
        except FrameError as exc:
            raise RequesterError(f"bad frame from the responder: {exc}") from exc
        except (ConnectionError, OSError) as exc:
            raise RequesterError(f"receiving failed: {exc}") from exc
        return self._frames.popleft()

    async def exchange(self, message: bytes, secured: bool = False) -> TransportMessage:
        """Send ``message`` in a NORMAL frame (binding-encoded), decode the NORMAL reply."""
        try:
            payload = self.binding.encode(message, secured=secured)
        except TransportError as exc:
            raise RequesterError(f"cannot encode the request: {exc}") from exc
        await self.send_frame(PlatformCommand.NORMAL, payload)
        frame = await self.recv_frame()
        if frame.command != PlatformCommand.NORMAL:
            raise RequesterError(
                f"expected a NORMAL frame in reply, got {command_name(frame.command)} "
                f"({len(frame.payload)} bytes)"
            )
        try:
            return self.binding.decode(frame.payload)
        except TransportError as exc:
            raise RequesterError(f"bad {self.binding.name} reply: {exc}") from exc

    async def hello(self) -> bytes:
        """TEST handshake as spdm-emu's requester does it; return the responder's payload."""
        await self.send_frame(PlatformCommand.TEST, CLIENT_HELLO)
        frame = await self.recv_frame()
        if frame.command != PlatformCommand.TEST:
            raise RequesterError(
                f"expected a TEST frame in reply to the hello, got {command_name(frame.command)}"
            )
        return frame.payload

    async def shutdown(self) -> None:
        """Send SHUTDOWN, wait for its echo, then close the connection."""
        try:
            await self.send_frame(PlatformCommand.SHUTDOWN)
            frame = await self.recv_frame()
            if frame.command != PlatformCommand.SHUTDOWN:
                raise RequesterError(
                    f"expected a SHUTDOWN frame in reply, got {command_name(frame.command)}"
                )
        finally:
            await self.close()


class StorageClient(SocketClient):
    """The host side of DSP0286 over QEMU's NVMe forwarding, on the platform socket
    (what QEMU sends for the guest's Security Send / Security Receive).

    ``allocation_length``: the Security Receive Allocation Length of :meth:`exchange`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        binding: TransportBinding,
        *,
        timeout: float = 10.0,
        max_payload: int = DEFAULT_CLIENT_MAX_PAYLOAD,
        allocation_length: int = 0x10000,
    ) -> None:
        if not isinstance(binding, StorageBinding):
            raise RequesterError(f"StorageClient speaks the storage binding, not {binding.name!r}")
        super().__init__(host, port, binding, timeout=timeout, max_payload=max_payload)
        self.storage = binding
        self.allocation_length = allocation_length

    async def status(self) -> int:
        """The next frame as a storage status: its 2-byte big-endian payload."""
        frame = await self.recv_frame()
        if len(frame.payload) != 2:
            raise RequesterError(
                f"expected a 2-byte storage status, got {command_name(frame.command)} with "
                f"{len(frame.payload)} bytes"
            )
        return int.from_bytes(frame.payload, "big")

    async def security_send(self, payload: bytes) -> int:
        """IF_SEND ``payload`` (storage header + data) and return the status."""
        await self.send_frame(PlatformCommand.STORAGE_IF_SEND, payload)
        return await self.status()

    async def security_receive(self, operation: int, allocation_length: int) -> tuple[int, bytes]:
        """IF_RECV for ``operation``: (status, data; empty when the status is not 0)."""
        await self.send_frame(
            PlatformCommand.STORAGE_IF_RECV, encode_header(operation, allocation_length)
        )
        status = await self.status()
        if status != STATUS_SUCCESS:
            return status, b""
        frame = await self.recv_frame()
        if not 0 < len(frame.payload) <= allocation_length:
            raise RequesterError(
                f"Security Receive data of {len(frame.payload)} bytes; QEMU takes 1 to "
                f"{allocation_length} (the allocation length)"
            )
        return status, frame.payload

    async def discovery(self) -> bytes:
        """DSP0286 DISCOVERY (IF_RECV, SPSP0 0x04)."""
        status, data = await self.security_receive(OP_DISCOVERY, 32)
        if status != STATUS_SUCCESS:
            raise RequesterError(f"DISCOVERY: status 0x{status:04x}")
        return data

    async def pending_info(self) -> tuple[bool, int]:
        """DSP0286 PENDING_INFO (IF_RECV, SPSP0 0x08): (pending, response length)."""
        status, data = await self.security_receive(OP_PENDING_INFO, 12)
        if status != STATUS_SUCCESS or len(data) < 12:
            raise RequesterError(f"PENDING_INFO: status 0x{status:04x}, {len(data)} bytes")
        flag = int.from_bytes(data[4:8], "little")
        return bool(flag & 1), int.from_bytes(data[8:12], "little")

    async def exchange(self, message: bytes, secured: bool = False) -> TransportMessage:
        """Security Send the request (MESSAGE, or SECURED_MESSAGE), then Security Receive
        its response; RequesterError naming any non-zero status."""
        try:
            payload = self.storage.encode_request(message, secured)
        except TransportError as exc:
            raise RequesterError(f"cannot encode the request: {exc}") from exc
        status = await self.security_send(payload)
        if status != STATUS_SUCCESS:
            raise RequesterError(f"Security Send completed with NVMe status 0x{status:04x}")
        operation = OP_SECURED_MESSAGE if secured else OP_MESSAGE
        status, data = await self.security_receive(operation, self.allocation_length)
        if status != STATUS_SUCCESS:
            raise RequesterError(f"Security Receive completed with NVMe status 0x{status:04x}")
        try:
            return self.storage.decode_response(data, secured)
        except TransportError as exc:
            raise RequesterError(f"bad storage reply: {exc}") from exc


class TcpStreamClient:
    """DSP0287 messages on the TCP stream itself (no platform frames), as WDC spdm-utils'
    TCP client sends them; the same interface as :class:`SocketClient` (``hello`` and
    ``shutdown`` have no DSP0287 form: there is no hello, and shutdown just closes)."""

    def __init__(
        self,
        host: str,
        port: int,
        binding: TransportBinding,
        *,
        timeout: float = 10.0,
        max_payload: int = DEFAULT_CLIENT_MAX_PAYLOAD,
    ) -> None:
        if not isinstance(binding, TcpBinding):
            raise RequesterError(f"TcpStreamClient speaks the tcp binding, not {binding.name!r}")
        self.host = host
        self.port = port
        self.binding = binding
        self.timeout = timeout
        self.max_payload = max_payload
        self._socket = SocketClient(host, port, binding, timeout=timeout)

    async def connect(self) -> None:
        await self._socket.connect()

    async def close(self) -> None:
        await self._socket.close()

    async def __aenter__(self) -> TcpStreamClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (one write)."""
        writer = self._socket._require_writer()
        try:
            writer.write(data)
            await writer.drain()
        except (ConnectionError, OSError) as exc:
            raise RequesterError(f"sending failed: {exc}") from exc
        rearm_quickack(writer.get_extra_info("socket"))

    async def recv_message(self) -> bytes:
        """The next whole DSP0287 message (binding header included)."""
        reader = self._socket._reader
        if reader is None:
            raise RequesterError("not connected: call connect() first")
        try:
            async with asyncio.timeout(self.timeout):
                header = await reader.readexactly(TCP_HEADER_SIZE)
                size = message_size(header)
                if size > self.max_payload:
                    raise RequesterError(f"DSP0287 message of {size} bytes is over the limit")
                rest = await reader.readexactly(size - TCP_HEADER_SIZE)
        except TimeoutError:
            raise RequesterError(f"no message from the responder within {self.timeout} s") from None
        except asyncio.IncompleteReadError as exc:
            raise RequesterError(
                f"responder closed the connection ({len(exc.partial)} bytes of a message)"
            ) from None
        except FrameError as exc:
            raise RequesterError(f"bad DSP0287 message from the responder: {exc}") from exc
        except (ConnectionError, OSError) as exc:
            raise RequesterError(f"receiving failed: {exc}") from exc
        return header + rest

    async def exchange(self, message: bytes, secured: bool = False) -> TransportMessage:
        """Send ``message`` as one DSP0287 message, decode the one that answers it."""
        try:
            payload = self.binding.encode(message, secured=secured)
        except TransportError as exc:
            raise RequesterError(f"cannot encode the request: {exc}") from exc
        await self.send_raw(payload)
        reply = await self.recv_message()
        try:
            return self.binding.decode(reply)
        except TransportError as exc:
            raise RequesterError(f"bad DSP0287 reply: {exc}") from exc

    async def role_inquiry(self) -> int:
        """Send a Role-Inquiry; the message type of the answer (an emulated device:
        ERROR_CANNOT_OPERATE_AS_REQUESTER, 0xC2)."""
        await self.send_raw(header_only(TYPE_ROLE_INQUIRY))
        return (await self.recv_message())[3]

    async def hello(self) -> bytes:
        """DSP0287 has no hello: nothing is sent, nothing comes back."""
        return b""

    async def shutdown(self) -> None:
        """DSP0287 has no SHUTDOWN: close the connection."""
        await self.close()


#: what :func:`open_client` returns
Client = SocketClient | TcpStreamClient


def open_client(
    host: str,
    port: int,
    binding: TransportBinding,
    *,
    timeout: float = 10.0,
    platform_frames: bool = False,
) -> Client:
    """The client a binding's wire needs (not connected yet; ``async with`` it).

    Storage: :class:`StorageClient`; TCP: :class:`TcpStreamClient` (DSP0287 on the
    stream), or with ``platform_frames`` a :class:`SocketClient`, as spdm-emu's
    ``--trans TCP``; the others: :class:`SocketClient`.
    """
    if isinstance(binding, StorageBinding):
        return StorageClient(host, port, binding, timeout=timeout)
    if isinstance(binding, TcpBinding) and not platform_frames:
        return TcpStreamClient(host, port, binding, timeout=timeout)
    return SocketClient(host, port, binding, timeout=timeout)
