"""asyncio platform-socket server: one task per TCP connection, frames handled in order.

The server speaks spdm-emu's platform socket protocol (see :mod:`emulator.transport.platform`),
or the binding's own stream framing: each connection's bytes go through the codec the
binding makes for it (``binding.stream_codec``: platform frames for DOE, MCTP, none and
storage; DSP0287 messages or platform frames for TCP), which hands the server frames and
encodes what it sends.
The commands the binding declares (``binding.platform_commands``: NORMAL for DOE, MCTP and
none) go to the binding with the per-connection :class:`ConnectionLike` (normally
:class:`emulator.connection.SpdmConnection`); the binding drives it (push ``receive``, or
pull ``deliver``/``collect``) and returns a :class:`~emulator.transport.base.CommandAnswer`
that is executed here: its frames, then the :class:`~emulator.events.Reply` (delay, send,
partial frame, close).  TEST, SHUTDOWN, CONTINUE and OOB_ENCAP_KEY_UPDATE are answered by
the server itself; any other command is answered with UNKNOWN.

Differences from spdm-emu's ``spdm_responder_emu`` (deliberate):

* SHUTDOWN closes only the connection that sent it; the server keeps serving (spdm-emu
  exits).  A peer closing its socket is treated the same way (QEMU never sends SHUTDOWN
  when it exits).
* CONTINUE is answered and the connection stays open (spdm-emu answers and closes it;
  its requester closes the socket right after anyway).
* A NORMAL frame (any command of the binding's) whose transport type is not the
  binding's is answered with UNKNOWN and never reaches the responder (spdm-emu stops
  reading at the bad header, leaving the stream out of step).
* Many connections are served at once, each with its own responder state.

Socket tuning (PROTOCOL.md "Socket performance on loopback"): TCP_NODELAY on every
accepted socket, one write per frame, TCP_QUICKACK re-armed after each read (Linux).

Limits (fields of :class:`~emulator.options.RunOptions`, their defaults there):
``max_payload`` (a larger frame closes the connection before any payload byte is stored;
the codecs that can skip one stay in step instead: a DSP0287 message gets ERROR_TOO_LARGE,
a storage IF_SEND status 0x4002),
``max_connections`` (more are accepted and closed at once), ``idle_timeout`` (nothing
received), ``frame_timeout`` (a frame trickled in, or a reply the peer does not read,
closes the connection), ``backlog`` (queued connection attempts).  Per connection the
server holds at most one frame (the stream codec) and, through ``drain()``, a bounded
amount of unsent reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from emulator.errors import FrameError
from emulator.options import DEFAULT_FRAME_TIMEOUT, RunOptions
from emulator.server.platform import (
    Frame,
    PlatformCommand,
    PlatformStreamCodec,
    command_name,
    encode_frame,
)
from emulator.transport.base import (
    CommandAnswer,
    Endpoint,
    SocketTransport,
    StreamCodec,
    TransportBinding,
)

if TYPE_CHECKING:  # the server only reads a Reply; keep the responder out of its imports
    from emulator.events import Reply

logger = logging.getLogger("emulator.server")

#: spdm-emu's responder answers TEST with ``sizeof("Server Hello!")``: the NUL is sent.
SERVER_HELLO = b"Server Hello!\x00"
_READ_CHUNK = 64 * 1024
_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class ConnectionLike(Endpoint, Protocol):
    """What the server needs from a per-connection SPDM endpoint: what the binding drives
    (:class:`~emulator.transport.base.Endpoint`: push ``receive``, pull ``deliver`` /
    ``collect``) and ``close``.  A push-only endpoint (``receive`` alone) serves the push
    bindings (DOE, MCTP, none)."""

    def close(self) -> None:
        """The connection is gone; called exactly once."""
        ...


#: ``factory(conn_number, peer)`` -> a fresh endpoint for one TCP connection.
ConnectionFactory = Callable[[int, str], ConnectionLike]


def configure_socket(sock: Any) -> None:
    """Set TCP_NODELAY on a TCP socket (a ``socket.socket`` or asyncio's wrapper)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError) as exc:  # not TCP (e.g. a Unix socket in tests)
        logger.debug("cannot set TCP_NODELAY: %s", exc)


def rearm_quickack(sock: Any) -> None:
    """Re-arm TCP_QUICKACK (Linux): ACK the data just read at once, not after ~40 ms."""
    if _TCP_QUICKACK is None or sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)


def _transport_name(value: int) -> str:
    try:
        return f"{value} ({SocketTransport(value).name})"
    except ValueError:
        return str(value)


def _format_peer(peername: Any) -> str:
    if isinstance(peername, tuple) and len(peername) >= 2:
        host, port = peername[0], peername[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peername)


class _Closing(Exception):
    """Internal: stop serving this connection, with a reason for the log."""

    def __init__(self, reason: str, level: int = logging.INFO) -> None:
        super().__init__(reason)
        self.reason = reason
        self.level = level


class SpdmServer:
    """Serve the platform socket protocol on one TCP port.

    Usage::

        async with SpdmServer(RunOptions(port=0), get_binding("doe"), factory) as srv:
            print(srv.port)
            await srv.serve_forever()
    """

    def __init__(
        self,
        config: RunOptions,
        binding: TransportBinding,
        connection_factory: ConnectionFactory,
    ) -> None:
        self.config = config
        self.binding = binding
        self._factory = connection_factory
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._active = 0
        self._next_number = 0
        self._stopping = False
        self._stopped: asyncio.Event | None = None
        #: the stream codec of each connection being served, by connection number
        self._codecs: dict[int, StreamCodec] = {}

    def _new_codec(self) -> StreamCodec:
        """The binding's codec for a new connection's stream (platform frames when the
        binding does not frame its stream itself)."""
        make = getattr(self.binding, "stream_codec", None)
        if make is None:
            return PlatformStreamCodec(self.config.max_payload)
        codec: StreamCodec = make(self.config.max_payload)
        return codec

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind and start accepting connections (idempotent)."""
        if self._server is not None:
            return
        self._stopping = False
        self._stopped = asyncio.Event()
        self._server = await asyncio.start_server(
            self._on_connect,
            self.config.host,
            self.config.port,
            reuse_address=True,
            backlog=self.config.backlog,
        )
        logger.info(
            "listening on %s:%d (transport %s, max payload 0x%x)",
            self.config.host,
            self.port,
            self.binding.name,
            self.config.max_payload,
        )

    @property
    def port(self) -> int:
        """The bound TCP port (the real one when ``config.port`` is 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connection_count(self) -> int:
        """Connections being served now."""
        return self._active

    async def serve_forever(self) -> None:
        """Start if needed and serve until :meth:`stop` is called."""
        await self.start()
        assert self._stopped is not None
        await self._stopped.wait()

    async def stop(self) -> None:
        """Stop accepting, close every connection, wait for their handlers to finish."""
        if self._server is None:
            return
        server, self._server = self._server, None
        self._stopping = True
        server.close()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        if handlers:
            await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()
        logger.info("stopped")
        if self._stopped is not None:
            self._stopped.set()

    async def __aenter__(self) -> SpdmServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ connections

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _format_peer(writer.get_extra_info("peername"))
        if self._stopping:
            await self._close_writer(writer)
            return
        if self._active >= self.config.max_connections:
            logger.warning(
                "refusing connection from %s: %d connections already (max_connections)",
                peer,
                self._active,
            )
            await self._close_writer(writer)
            return
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self._active += 1
        self._next_number += 1
        number = self._next_number
        sock = writer.get_extra_info("socket")
        configure_socket(sock)
        logger.info("conn %d: connected from %s", number, peer)
        reason = "closed"
        level = logging.INFO
        conn: ConnectionLike | None = None
        try:
            conn = self._factory(number, peer)
            await self._serve(number, conn, reader, writer, sock)
        except _Closing as closing:
            reason, level = closing.reason, closing.level
        except asyncio.CancelledError:
            # stop() cancels handlers; end normally, because asyncio's start_server
            # callback (3.11) treats a cancelled handler task as an unhandled error.
            reason = "server stopping"
        except (ConnectionError, OSError) as exc:
            reason = f"connection lost: {exc!r}"
        except Exception:
            logger.exception("conn %d: internal error, closing the connection", number)
            reason, level = "internal error", logging.ERROR
        finally:
            if conn is not None:
                try:
                    conn.close()
                except Exception:
                    logger.exception("conn %d: error while closing the endpoint", number)
            await self._close_writer(writer)
            self._active -= 1
            if task is not None:
                self._handlers.discard(task)
            logger.log(level, "conn %d: disconnected from %s: %s", number, peer, reason)

    async def _close_writer(self, writer: asyncio.StreamWriter) -> None:
        """Close the socket; reset it if unsent data cannot be flushed within frame_timeout
        (a peer that stopped reading would otherwise hold the connection forever)."""
        writer.close()
        limit = self.config.frame_timeout
        try:
            async with asyncio.timeout(limit if limit is not None else DEFAULT_FRAME_TIMEOUT):
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.wait_closed()
        except TimeoutError:
            logger.debug("close did not complete (unsent data); resetting the connection")
            writer.transport.abort()
        except asyncio.CancelledError:
            writer.transport.abort()

    async def _serve(
        self,
        number: int,
        conn: ConnectionLike,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        sock: Any,
    ) -> None:
        decoder = self._new_codec()
        self._codecs[number] = decoder
        try:
            await self._serve_stream(number, conn, reader, writer, sock, decoder)
        finally:
            self._codecs.pop(number, None)

    async def _serve_stream(
        self,
        number: int,
        conn: ConnectionLike,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        sock: Any,
        decoder: StreamCodec,
    ) -> None:
        idle_timeout = self.config.idle_timeout
        frame_timeout = self.config.frame_timeout
        loop = asyncio.get_running_loop()
        #: when the frame being received must be complete (None: between frames)
        frame_deadline: float | None = None
        while True:
            deadline: float | None = None
            if idle_timeout is not None:
                deadline = loop.time() + idle_timeout
            if frame_deadline is not None and (deadline is None or frame_deadline < deadline):
                deadline = frame_deadline
            try:
                async with asyncio.timeout_at(deadline):
                    data = await reader.read(min(decoder.needed, _READ_CHUNK))
            except TimeoutError:
                if frame_deadline is not None and deadline == frame_deadline:
                    raise _Closing(
                        f"frame incomplete {frame_timeout} s after it started "
                        f"({decoder.pending} bytes received; frame_timeout)",
                        logging.WARNING,
                    ) from None
                raise _Closing(f"idle for {idle_timeout} s (idle_timeout)") from None
            rearm_quickack(sock)
            if not data:
                if decoder.pending:
                    raise _Closing(
                        f"peer closed mid-frame ({decoder.pending} bytes of an incomplete "
                        f"frame received)"
                    )
                raise _Closing("peer closed the connection")
            try:
                frames = decoder.feed(data)
            except FrameError as exc:
                raise _Closing(f"malformed frame: {exc}", logging.WARNING) from None
            for frame in frames:
                if isinstance(frame, bytes):  # the codec's own answer (DSP0287, storage)
                    await self._write(number, writer, frame)
                else:
                    await self._handle_frame(number, conn, writer, frame)
            if decoder.error is not None:
                raise _Closing(f"malformed frame: {decoder.error}", logging.WARNING)
            if not decoder.pending:
                frame_deadline = None
            elif frame_timeout is not None and (frame_deadline is None or frames):
                # a frame started in this read (the first one, or one after those completed,
                # counted from when the server is back to reading)
                frame_deadline = loop.time() + frame_timeout

    async def _send(self, number: int, writer: asyncio.StreamWriter, frame: Frame) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "conn %d: -> %s transport=%s size=%d",
                number,
                command_name(frame.command),
                _transport_name(frame.transport),
                len(frame.payload),
            )
        await self._write(number, writer, self._encode(number, frame))

    def _encode(self, number: int, frame: Frame) -> bytes:
        codec = self._codecs.get(number)
        return codec.encode(frame) if codec is not None else encode_frame(frame)

    async def _write(self, number: int, writer: asyncio.StreamWriter, data: bytes) -> None:
        """Write ``data`` at once (one write per frame: header and payload together) and
        wait for the peer to take it, within frame_timeout."""
        if not data:
            return
        writer.write(data)
        try:
            async with asyncio.timeout(self.config.frame_timeout):
                await writer.drain()
        except TimeoutError:
            writer.transport.abort()  # what is unsent will never be read: reset at once
            raise _Closing(
                f"the peer has not taken a {len(data)}-byte reply within "
                f"{self.config.frame_timeout} s (frame_timeout)",
                logging.WARNING,
            ) from None

    def _frame(self, command: int, payload: bytes = b"") -> Frame:
        return Frame(int(command), int(self.binding.socket_transport), payload)

    async def _handle_frame(
        self, number: int, conn: ConnectionLike, writer: asyncio.StreamWriter, frame: Frame
    ) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "conn %d: <- %s transport=%s size=%d",
                number,
                command_name(frame.command),
                _transport_name(frame.transport),
                len(frame.payload),
            )
        command = frame.command
        if command in self.binding.platform_commands:
            await self._binding_command(number, conn, writer, frame)
        elif command == PlatformCommand.TEST:
            await self._send(number, writer, self._frame(PlatformCommand.TEST, SERVER_HELLO))
        elif command == PlatformCommand.SHUTDOWN:
            await self._send(number, writer, self._frame(PlatformCommand.SHUTDOWN))
            raise _Closing("peer sent SHUTDOWN")
        elif command == PlatformCommand.CONTINUE:
            await self._send(number, writer, self._frame(PlatformCommand.CONTINUE))
        elif command == PlatformCommand.OOB_ENCAP_KEY_UPDATE and hasattr(
            conn, "oob_encap_key_update"
        ):
            # spdm-emu: arm a responder-initiated KEY_UPDATE for the session, echo the command
            conn.oob_encap_key_update(frame.payload)
            await self._send(number, writer, self._frame(PlatformCommand.OOB_ENCAP_KEY_UPDATE))
        else:
            logger.warning(
                "conn %d: unsupported platform command %s (transport %s, %d bytes); "
                "answering UNKNOWN",
                number,
                command_name(command),
                _transport_name(frame.transport),
                len(frame.payload),
            )
            await self._send(number, writer, self._frame(PlatformCommand.UNKNOWN))

    async def _binding_command(
        self, number: int, conn: ConnectionLike, writer: asyncio.StreamWriter, frame: Frame
    ) -> None:
        """A command the binding handles: check the transport type, let the binding drive
        the endpoint, carry out its :class:`CommandAnswer`."""
        expected = int(self.binding.socket_transport)
        if frame.transport != expected:
            logger.warning(
                "conn %d: %s frame with transport type %s, but this server speaks %s "
                "(%s); not passed to the responder, answering UNKNOWN",
                number,
                command_name(frame.command),
                _transport_name(frame.transport),
                _transport_name(expected),
                self.binding.name,
            )
            await self._send(number, writer, self._frame(PlatformCommand.UNKNOWN))
            return
        try:
            answer: CommandAnswer = self.binding.handle_command(frame.command, frame.payload, conn)
        except Exception:
            logger.exception("conn %d: the responder raised; closing the connection", number)
            raise _Closing("responder error", logging.ERROR) from None
        for out in answer.frames:
            await self._send(number, writer, out)
        if answer.reply is not None:
            await self._execute(number, writer, answer.reply, answer.reply_command)

    async def _execute(
        self,
        number: int,
        writer: asyncio.StreamWriter,
        reply: Reply,
        command: int = PlatformCommand.NORMAL,
    ) -> None:
        """Carry out a :class:`Reply`: delay, then send (each payload one ``command``
        frame), truncate or close."""
        if reply.delay > 0:
            logger.debug("conn %d: delaying the reply by %.3f s", number, reply.delay)
            await asyncio.sleep(reply.delay)
        frames = [self._frame(command, payload) for payload in reply.payloads]
        for frame in frames:
            if len(frame.payload) > self.config.max_payload:
                logger.warning(
                    "conn %d: reply payload of %d bytes is over max_payload 0x%x; "
                    "QEMU would reject it",
                    number,
                    len(frame.payload),
                    self.config.max_payload,
                )
        if reply.partial is not None:
            data = self._encode(number, frames[0])[: max(reply.partial, 0)] if frames else b""
            logger.info("conn %d: sending %d bytes of a frame, then closing", number, len(data))
            if data:
                writer.write(data)
                await writer.drain()
            raise _Closing("partial frame sent (fault injection)")
        if not frames:
            logger.debug("conn %d: no reply sent (dropped)", number)
        for frame in frames:
            await self._send(number, writer, frame)
        if reply.close:
            raise _Closing("closed after the reply (fault injection)")
