"""asyncio platform-socket server: one :class:`asyncio.Protocol` per TCP connection,
frames handled in order.

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
partial frame, close).  TEST, SHUTDOWN, CONTINUE, OOB_ENCAP_KEY_UPDATE and
OOB_ENCAP_ENDPOINT_INFO are answered by the server itself; any other command is answered
with UNKNOWN.

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

How bytes move (issue 17): the event loop hands each connection what one ``recv`` got
(``data_received``); the frames in it are decoded and handled at once, and each reply
frame is written with one ``transport.write`` (header and payload together, TCP_NODELAY
on every accepted socket).  A read that is exactly one whole NORMAL frame of a push
binding, with nothing waiting, takes an express lane: its header is checked in place and
the payload goes straight to the endpoint (no decoder, no Frame).  TCP_QUICKACK is
re-armed only when a read ends inside a frame: that is when a peer that writes a frame
in several ``send`` calls without TCP_NODELAY (libspdm's socket code) waits for our ACK
before it sends the rest; a reply carries the ACK of a whole request anyway (PROTOCOL.md
"Socket performance on loopback").

Fairness and back-pressure (issue 12): one connection's frames are handled for at most
``TURN_BUDGET`` seconds of one event-loop turn (at least one frame); the rest waits for
the next turn, after every other connection had its turn, and the connection is not read
meanwhile.  A peer that does not read its replies fills the transport's write buffer:
above its high-water mark the connection stops handling frames and reading, so the TCP
window closes on the peer; a reply not taken within ``frame_timeout`` resets the
connection.  Per connection the server holds at most one read (``data_received``, at
most 256 KiB) not yet handled, one incomplete frame, and a write buffer bounded by the
high-water mark plus one reply.

Limits (fields of :class:`~emulator.options.RunOptions`, their defaults there):
``max_payload`` (a larger frame closes the connection before any payload byte is stored;
the codecs that can skip one stay in step instead: a DSP0287 message gets ERROR_TOO_LARGE,
a storage IF_SEND status 0x4002),
``max_connections`` (more are accepted and closed at once), ``idle_timeout`` (nothing
received), ``frame_timeout`` (a frame trickled in, or a reply the peer does not read,
closes the connection), ``backlog`` (queued connection attempts).  Deadlines are checked
lazily: a connection has one timer while a deadline applies to it (none at rest without
``idle_timeout``), set for the earliest deadline when one starts and moved only when it
fires (a read only records the time).  Per connection the server holds the stream
codec's one incomplete frame, decoded frames of at most one read slice, and unsent reply
bounded by back-pressure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, cast

from emulator.errors import FrameError
from emulator.options import DEFAULT_FRAME_TIMEOUT, RunOptions
from emulator.server.platform import (
    HEADER_SIZE,
    Frame,
    PlatformCommand,
    PlatformStreamCodec,
    command_name,
)
from emulator.transport.base import (
    CommandAnswer,
    Endpoint,
    PushFraming,
    SocketTransport,
    StreamCodec,
    TransportBinding,
)

if TYPE_CHECKING:  # the server only reads a Reply; keep the responder out of its imports
    from emulator.events import Reply

logger = logging.getLogger("emulator.server")

#: spdm-emu's responder answers TEST with ``sizeof("Server Hello!")``: the NUL is sent.
SERVER_HELLO = b"Server Hello!\x00"
_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
#: seconds of frame handling one connection gets per event-loop turn (then it yields)
TURN_BUDGET = 0.0002
#: bytes of a read given to the frame decoder at a time (bounds the frames decoded ahead)
FEED_SLICE = 4096
_HEADER = struct.Struct(">III")
_U32_MAX = 0xFFFF_FFFF
_NORMAL = int(PlatformCommand.NORMAL)
_DEBUG = logging.DEBUG
#: the deadlines of a connection (``_Connection._deadline``)
_WRITE, _FRAME, _IDLE = 1, 2, 3
#: encodes platform frames for every connection (the codec's encoding has no state)
_PLATFORM_CODEC = PlatformStreamCodec()


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
    with contextlib.suppress(OSError, AttributeError):
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
        self._connections: set[_Connection] = set()
        self._next_number = 0
        self._stopping = False
        self._stopped: asyncio.Event | None = None
        #: the binding's NORMAL handling is PushFraming's (``endpoint.receive``): the
        #: server calls ``receive`` itself, without building a CommandAnswer per frame
        self.push = getattr(type(binding), "handle_command", None) is PushFraming.handle_command

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
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self),
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
        return len(self._connections)

    async def serve_forever(self) -> None:
        """Start if needed and serve until :meth:`stop` is called."""
        await self.start()
        assert self._stopped is not None
        await self._stopped.wait()

    async def stop(self) -> None:
        """Stop accepting, close every connection, wait until each is closed."""
        if self._server is None:
            return
        server, self._server = self._server, None
        self._stopping = True
        server.close()
        connections = list(self._connections)
        for connection in connections:
            connection.finish("server stopping")
        waits = [c.closed_future() for c in connections]
        waits = [w for w in waits if not w.done()]
        if waits:
            await asyncio.wait(waits)
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

    def _admit(self, connection: _Connection, peer: str) -> int | None:
        """A connection number for a new connection, or None when it must be refused."""
        if self._stopping:
            return None
        if len(self._connections) >= self.config.max_connections:
            logger.warning(
                "refusing connection from %s: %d connections already (max_connections)",
                peer,
                len(self._connections),
            )
            return None
        self._connections.add(connection)
        self._next_number += 1
        return self._next_number

    def _frame(self, command: int, payload: bytes = b"") -> Frame:
        return Frame(int(command), int(self.binding.socket_transport), payload)


class _Connection(asyncio.Protocol):
    """One TCP connection: bytes in, frames handled in order within a turn budget,
    replies out (see the module docstring).  Everything runs in event-loop callbacks;
    a frame is handled synchronously, a reply delay by a loop timer."""

    # a server holds one of these per connection: slots, not a dict (about 1.5 KiB less)
    __slots__ = (
        "admitted",
        "close_timer",
        "closed",
        "closing",
        "codec",
        "conn",
        "decoder",
        "delaying",
        "eof",
        "express",
        "frame_at",
        "frame_started",
        "frames",
        "idle_since",
        "last_size",
        "level",
        "loop",
        "lost",
        "max_payload",
        "number",
        "peer",
        "platform",
        "reading",
        "reason",
        "scheduled",
        "server",
        "timer",
        "track_idle",
        "transport",
        "transport_type",
        "unfed",
        "unfed_at",
        "write_paused_at",
    )

    def __init__(self, server: SpdmServer) -> None:
        # (what is the same for every connection is read from the server: binding,
        # config, push; only what the express lane reads is copied here)
        self.server = server
        self.transport_type = int(server.binding.socket_transport)
        self.track_idle = server.config.idle_timeout is not None
        self.loop = asyncio.get_running_loop()
        #: connection_lost ran; ``closed`` is made only when someone waits for it (stop)
        self.lost = False
        self.closed: asyncio.Future[None] | None = None
        self.number = 0
        self.peer = ""
        #: every frame is one ``transport.write`` (header and payload together)
        self.transport: asyncio.Transport | None = None
        self.conn: ConnectionLike | None = None
        #: the binding's codec of this connection's stream; a platform-frame stream is fed
        #: to its FrameDecoder directly and written with the fast header path
        codec = server._new_codec()
        self.platform = type(codec) is PlatformStreamCodec
        self.max_payload = server.config.max_payload
        #: the express lane of :meth:`data_received` applies (platform frames, push binding)
        self.express = self.platform and server.push
        #: platform frames: the codec's decoder, and one shared codec to encode (it has
        #: no state)
        self.decoder: Any = cast(PlatformStreamCodec, codec).decoder if self.platform else codec
        self.codec: StreamCodec = _PLATFORM_CODEC if self.platform else codec
        #: decoded frames not handled yet (a list read from ``frame_at``, dropped once read
        #: to its end: None, not an empty list or deque, for the many connections with
        #: nothing pending), and read bytes not decoded yet
        self.frames: list[Frame | bytes] | None = None
        self.frame_at = 0
        self.unfed: memoryview | None = None
        self.unfed_at = 0
        #: a decision to close was taken (reason and log level), or the peer sent EOF
        self.reason = ""
        self.level = logging.INFO
        self.closing = False
        self.eof = False
        #: handling is suspended: a reply delay runs / the peer does not take replies /
        #: a turn continues later
        self.delaying = False
        self.write_paused_at: float | None = None
        self.scheduled = False
        self.reading = True
        self.last_size = 0
        #: when the server last went back to waiting for bytes (idle_timeout), and when
        #: the incomplete frame it holds started (frame_timeout)
        self.idle_since = self.loop.time() if self.track_idle else 0.0
        self.frame_started: float | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.close_timer: asyncio.TimerHandle | None = None
        self.admitted = False

    # ---- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (asyncio's, or uvloop's, which does not subclass it)
        self.transport = transport = cast(asyncio.Transport, transport)
        self.peer = _format_peer(transport.get_extra_info("peername"))
        number = self.server._admit(self, self.peer)
        if number is None:
            transport.close()
            return
        self.admitted = True
        self.number = number
        configure_socket(transport.get_extra_info("socket"))
        logger.info("conn %d: connected from %s", number, self.peer)
        try:
            self.conn = self.server._factory(number, self.peer)
        except Exception:
            logger.exception("conn %d: internal error, closing the connection", number)
            self.finish("internal error", logging.ERROR)
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.track_idle:
            self.idle_since = self.loop.time()
        if (
            self.express
            and self.frame_started is None  # the decoder holds no incomplete frame
            and not self.frames
            and self.unfed is None
            and not self.scheduled
            and not self.delaying
            and self.write_paused_at is None
            and len(data) >= HEADER_SIZE
        ):
            # the express lane: the read is exactly one whole NORMAL frame of the binding's
            # transport type and nothing waits (the usual round trip): what _feed,
            # _handle_frame and _execute would do, without their calls and objects
            command, transport_type, size = _HEADER.unpack_from(data)
            if (
                command == _NORMAL
                and transport_type == self.transport_type
                and size == len(data) - HEADER_SIZE
                and size <= self.max_payload
                and self.decoder.error is None
                and not logger.isEnabledFor(_DEBUG)
            ):
                self._express(data[HEADER_SIZE:])
                return
        if self.frames or self.unfed is not None:
            # not while reading is paused (a transport may deliver what it already read)
            left = self.unfed[self.unfed_at :] if self.unfed is not None else b""
            self.unfed = memoryview(bytes(left) + data)
            self.unfed_at = 0
        elif len(data) > FEED_SLICE:
            self.unfed = memoryview(data)
            self.unfed_at = 0
        else:
            frames = self._feed(data)
            if not frames:
                return  # an incomplete frame (or a malformed one: closing)
            if (
                len(frames) == 1
                and not self.scheduled
                and not self.delaying
                and self.write_paused_at is None
                and self.decoder.error is None
            ):
                # one whole request and nothing waiting: the usual round trip, answered now
                self._handle(frames[0])
                if self.delaying or self.write_paused_at is not None:
                    self._settle()  # stop reading until the delay ends / the peer reads
                return
            self._queue(frames)
        self._pump()

    def _express(self, payload: bytes) -> None:
        """One push request answered by the endpoint, its reply written with one write
        (as :meth:`_handle_frame` and :meth:`_execute` would; the same errors close the
        connection the same way); a reply with a delay, a fault's socket action, no or
        several payloads or an oversized one goes the usual way."""
        try:
            reply = self.conn.receive(payload)  # type: ignore[union-attr]
        except Exception:
            logger.exception("conn %d: the responder raised; closing the connection", self.number)
            self.finish("responder error", logging.ERROR)
            return
        try:
            payloads = reply.payloads
            if (
                len(payloads) == 1
                and not self.closing
                and reply.delay <= 0
                and reply.partial is None
                and not reply.close
                and len(payloads[0]) <= self.max_payload
            ):
                out = payloads[0]
                self.last_size = size = len(out)
                self.transport.write(  # type: ignore[union-attr]
                    _HEADER.pack(_NORMAL, self.transport_type, size) + out
                )
            else:
                self._reply(reply, _NORMAL)
        except (ConnectionError, OSError) as exc:
            self.finish(f"connection lost: {exc!r}")
            return
        except Exception:
            logger.exception("conn %d: internal error, closing the connection", self.number)
            self.finish("internal error", logging.ERROR)
            return
        if self.delaying or self.write_paused_at is not None:
            self._settle()  # stop reading until the delay ends / the peer reads

    def eof_received(self) -> bool:
        self.eof = True
        if not self.closing and not self._busy():
            self._end_of_stream()
        return True  # keep the transport: replies to frames already read still go out

    def pause_writing(self) -> None:
        self.write_paused_at = self.loop.time()
        self._arm()

    def resume_writing(self) -> None:
        self.write_paused_at = None
        if not self.closing:
            self._pump()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.admitted and not self.closing:
            self.closing = True
            self.reason = f"connection lost: {exc!r}" if exc is not None else "connection closed"
            self._close_endpoint()
        self._cancel_timers()
        self._drop_frames()
        if self.admitted:
            self.admitted = False
            self.server._connections.discard(self)
            logger.log(
                self.level, "conn %d: disconnected from %s: %s", self.number, self.peer, self.reason
            )
        self.lost = True
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)

    def closed_future(self) -> asyncio.Future[None]:
        """A future done once the connection is closed (for :meth:`SpdmServer.stop`)."""
        if self.closed is None:
            self.closed = self.loop.create_future()
            if self.lost:
                self.closed.set_result(None)
        return self.closed

    def _drop_frames(self) -> None:
        self.frames = None
        self.frame_at = 0
        self.unfed = None

    def _queue(self, frames: list[Frame | bytes]) -> None:
        """Frames decoded, to handle after those pending."""
        if not frames:
            return
        if self.frames is None:
            self.frames = list(frames)  # a codec's own list is not kept
        else:
            self.frames.extend(frames)

    # ---- the read side -----------------------------------------------------------------

    def _feed(self, data: bytes | memoryview) -> list[Frame | bytes]:
        """Decode ``data``: the frames it completed (none when the stream is malformed:
        the connection is closing then)."""
        decoder = self.decoder
        try:
            frames: list[Frame | bytes] = decoder.feed(data if self.platform else bytes(data))
        except FrameError as exc:
            self.finish(f"malformed frame: {exc}", logging.WARNING)
            return []
        if decoder.pending:
            if self.frame_started is None or frames:
                self.frame_started = self.loop.time()
                if self.server.config.frame_timeout is not None:
                    self._arm()  # the frame deadline starts
            # the peer may be holding the rest of this frame until we ACK (Nagle)
            rearm_quickack(self.transport.get_extra_info("socket") if self.transport else None)
        else:
            self.frame_started = None
        return frames

    def _feed_more(self) -> bool:
        """Decode the next slice of the unhandled read into :attr:`frames`; False when
        there is none left (or the stream is malformed)."""
        unfed = self.unfed
        if unfed is None:
            return False
        at = self.unfed_at
        end = at + FEED_SLICE
        if end >= len(unfed):
            self.unfed = None
            self.unfed_at = 0
            chunk = unfed[at:]
        else:
            self.unfed_at = end
            chunk = unfed[at:end]
        self._queue(self._feed(chunk))
        return not self.closing

    def _busy(self) -> bool:
        return bool(
            self.frames
            or self.unfed is not None
            or self.delaying
            or self.write_paused_at is not None
            or self.scheduled
        )

    def _end_of_stream(self) -> None:
        pending = self.decoder.pending
        if pending:
            self.finish(f"peer closed mid-frame ({pending} bytes of an incomplete frame received)")
        else:
            self.finish("peer closed the connection")

    # ---- the turn ------------------------------------------------------------------------

    def _pump(self) -> None:
        """Handle frames until none is left, the turn budget is spent, or handling must
        wait (a reply delay, a peer that does not read); then read again or not."""
        self.scheduled = False
        transport = self.transport
        loop = self.loop
        started = loop.time()
        while not self.closing and not self.delaying and self.write_paused_at is None:
            if not self.frames:
                if self.unfed is None or not self._feed_more():
                    break
                continue
            frames = self.frames
            frame = frames[self.frame_at]
            self.frame_at += 1
            if self.frame_at == len(frames):
                self.frames = None
                self.frame_at = 0
            self._handle(frame)
            if transport is None or transport.is_closing():
                break
            if (self.frames or self.unfed is not None) and loop.time() - started >= TURN_BUDGET:
                # yield: every other connection gets its turn before this one goes on.
                # asyncio runs a due timer after the I/O its next iteration polls (a
                # call_soon callback before it), so a request that arrived meanwhile goes
                # first; uvloop polls I/O after its call_soon callbacks anyway, and its
                # timers have millisecond resolution.
                self.scheduled = True
                if isinstance(loop, asyncio.BaseEventLoop):
                    loop.call_at(started, self._pump)
                else:
                    loop.call_soon(self._pump)
                break
        self._settle()

    def _settle(self) -> None:
        """After a turn: close on a decoder error or EOF once everything is handled; read
        only while nothing waits."""
        if self.closing:
            return
        if self.decoder.error is not None and not self.frames and self.unfed is None:
            self.finish(f"malformed frame: {self.decoder.error}", logging.WARNING)
            return
        busy = self._busy()
        if self.eof and not busy:
            self._end_of_stream()
            return
        transport = self.transport
        if transport is None:
            return
        if busy:
            if self.reading:
                self.reading = False
                transport.pause_reading()
        elif not self.reading:
            self.reading = True
            self.idle_since = self.loop.time()
            transport.resume_reading()
            self._arm()  # the idle and frame deadlines apply again
        elif self.frame_started is not None:
            self._arm()  # an incomplete frame read while busy: its deadline applies now

    # ---- frames --------------------------------------------------------------------------

    def _handle(self, frame: Frame | bytes) -> None:
        """Handle one frame (or write the codec's own answer); a failure closes this
        connection only."""
        try:
            if isinstance(frame, bytes):  # the codec's own answer (DSP0287, storage)
                self._write(frame)
            else:
                self._handle_frame(frame)
        except (ConnectionError, OSError) as exc:
            self.finish(f"connection lost: {exc!r}")
        except Exception:
            logger.exception("conn %d: internal error, closing the connection", self.number)
            self.finish("internal error", logging.ERROR)

    def _handle_frame(self, frame: Frame) -> None:
        number = self.number
        command, transport, payload = frame
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "conn %d: <- %s transport=%s size=%d",
                number,
                command_name(command),
                _transport_name(transport),
                len(payload),
            )
        if command == _NORMAL and self.server.push and transport == self.transport_type:
            # a push binding's request (PushFraming.handle_command is endpoint.receive)
            try:
                reply = self.conn.receive(payload)  # type: ignore[union-attr]
            except Exception:
                logger.exception("conn %d: the responder raised; closing the connection", number)
                self.finish("responder error", logging.ERROR)
                return
            self._reply(reply, _NORMAL)
            return
        server = self.server
        if command in self.server.binding.platform_commands:
            self._binding_command(frame)
        elif command == PlatformCommand.TEST:
            self._send(server._frame(PlatformCommand.TEST, SERVER_HELLO))
        elif command == PlatformCommand.SHUTDOWN:
            self._send(server._frame(PlatformCommand.SHUTDOWN))
            self.finish("peer sent SHUTDOWN")
        elif command == PlatformCommand.CONTINUE:
            self._send(server._frame(PlatformCommand.CONTINUE))
        elif command == PlatformCommand.OOB_ENCAP_KEY_UPDATE and hasattr(
            self.conn, "oob_encap_key_update"
        ):
            # spdm-emu: arm a responder-initiated KEY_UPDATE for the session, echo the command
            self.conn.oob_encap_key_update(frame.payload)  # type: ignore[union-attr]
            self._send(server._frame(PlatformCommand.OOB_ENCAP_KEY_UPDATE))
        elif command == PlatformCommand.OOB_ENCAP_ENDPOINT_INFO and hasattr(
            self.conn, "oob_encap_endpoint_info"
        ):
            # spdm-emu: the next GET_ENCAPSULATED_REQUEST gets GET_ENDPOINT_INFO; echo
            self.conn.oob_encap_endpoint_info(frame.payload)  # type: ignore[union-attr]
            self._send(server._frame(PlatformCommand.OOB_ENCAP_ENDPOINT_INFO))
        else:
            logger.warning(
                "conn %d: unsupported platform command %s (transport %s, %d bytes); "
                "answering UNKNOWN",
                number,
                command_name(command),
                _transport_name(frame.transport),
                len(frame.payload),
            )
            self._send(server._frame(PlatformCommand.UNKNOWN))

    def _binding_command(self, frame: Frame) -> None:
        """A command the binding handles: check the transport type, let the binding drive
        the endpoint, carry out its :class:`CommandAnswer`."""
        binding = self.server.binding
        expected = int(binding.socket_transport)
        if frame.transport != expected:
            logger.warning(
                "conn %d: %s frame with transport type %s, but this server speaks %s "
                "(%s); not passed to the responder, answering UNKNOWN",
                self.number,
                command_name(frame.command),
                _transport_name(frame.transport),
                _transport_name(expected),
                binding.name,
            )
            self._send(self.server._frame(PlatformCommand.UNKNOWN))
            return
        conn = self.conn
        assert conn is not None
        try:
            answer: CommandAnswer = binding.handle_command(frame.command, frame.payload, conn)
        except Exception:
            logger.exception("conn %d: the responder raised; closing the connection", self.number)
            self.finish("responder error", logging.ERROR)
            return
        for out in answer.frames:
            self._send(out)
        if answer.reply is not None:
            self._reply(answer.reply, answer.reply_command)

    def _reply(self, reply: Reply, command: int) -> None:
        """Carry out a Reply now, or after its delay (handling waits meanwhile)."""
        if reply.delay > 0:
            logger.debug("conn %d: delaying the reply by %.3f s", self.number, reply.delay)
            self.delaying = True
            self.loop.call_later(reply.delay, self._delayed, reply, command)
            return
        self._execute(reply, command)

    def _delayed(self, reply: Reply, command: int) -> None:
        self.delaying = False
        if self.closing:
            return
        try:
            self._execute(reply, command)
        except (ConnectionError, OSError) as exc:
            self.finish(f"connection lost: {exc!r}")
        self._pump()

    def _execute(self, reply: Reply, command: int = PlatformCommand.NORMAL) -> None:
        """Carry out a :class:`Reply` (after its delay): send each payload as one
        ``command`` frame, truncate or close."""
        payloads = reply.payloads
        max_payload = self.server.config.max_payload
        for payload in payloads:
            if len(payload) > max_payload:
                logger.warning(
                    "conn %d: reply payload of %d bytes is over max_payload 0x%x; "
                    "QEMU would reject it",
                    self.number,
                    len(payload),
                    max_payload,
                )
        if reply.partial is not None:
            frame = self.server._frame(command, payloads[0]) if payloads else None
            data = self.codec.encode(frame)[: max(reply.partial, 0)] if frame is not None else b""
            logger.info(
                "conn %d: sending %d bytes of a frame, then closing", self.number, len(data)
            )
            if data and self.transport is not None:
                self.transport.write(data)
            self.finish("partial frame sent (fault injection)")
            return
        if not payloads:
            logger.debug("conn %d: no reply sent (dropped)", self.number)
        for payload in payloads:
            self._send_payload(command, payload)
        if reply.close:
            self.finish("closed after the reply (fault injection)")

    def _send_payload(self, command: int, payload: bytes) -> None:
        """Write one frame of ``command`` and the binding's transport type around
        ``payload`` (header and payload in one write)."""
        transport = self.transport
        if transport is None or self.closing:
            return
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "conn %d: -> %s transport=%s size=%d",
                self.number,
                command_name(command),
                _transport_name(self.transport_type),
                len(payload),
            )
        self.last_size = len(payload)
        if not self.platform:
            data = self.codec.encode(Frame(command, self.transport_type, payload))
            if data:
                transport.write(data)
            return
        if len(payload) > _U32_MAX:
            raise FrameError(f"frame payload of {len(payload)} bytes does not fit in a u32")
        transport.write(_HEADER.pack(command, self.transport_type, len(payload)) + payload)

    def _send(self, frame: Frame) -> None:
        """Write one frame (header and payload in one write)."""
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "conn %d: -> %s transport=%s size=%d",
                self.number,
                command_name(frame.command),
                _transport_name(frame.transport),
                len(frame.payload),
            )
        transport = self.transport
        if transport is None or self.closing:
            return
        self.last_size = len(frame.payload)
        data = self.codec.encode(frame)
        if data:
            transport.write(data)

    def _write(self, data: bytes) -> None:
        """Write bytes the codec produced by itself (one write)."""
        transport = self.transport
        if transport is None or self.closing or not data:
            return
        self.last_size = len(data)
        transport.write(data)

    # ---- deadlines -------------------------------------------------------------------------

    def _deadline(self) -> tuple[float, int] | None:
        """The earliest deadline that applies now: (when, which: ``_WRITE``, ``_FRAME`` or
        ``_IDLE``)."""
        config = self.server.config
        found: tuple[float, int] | None = None
        frame_timeout = config.frame_timeout
        if frame_timeout is not None and self.write_paused_at is not None:
            # what is unsent will never be read: reset at once
            found = (self.write_paused_at + frame_timeout, _WRITE)
        reading = self.reading and not self._busy()
        if frame_timeout is not None and self.frame_started is not None and reading:
            when = self.frame_started + frame_timeout
            if found is None or when < found[0]:
                found = (when, _FRAME)
        idle_timeout = config.idle_timeout
        if idle_timeout is not None and reading:
            when = self.idle_since + idle_timeout
            if found is None or when < found[0]:
                found = (when, _IDLE)
        return found

    def _expired(self, which: int) -> None:
        """Close for the deadline ``which`` (:meth:`_deadline`)."""
        config = self.server.config
        if which == _WRITE:
            self.finish(
                f"the peer has not taken a {self.last_size}-byte reply within "
                f"{config.frame_timeout} s (frame_timeout)",
                logging.WARNING,
                abort=True,
            )
        elif which == _FRAME:
            self.finish(
                f"frame incomplete {config.frame_timeout} s after it started "
                f"({self.decoder.pending} bytes received; frame_timeout)",
                logging.WARNING,
            )
        else:
            self.finish(f"idle for {config.idle_timeout} s (idle_timeout)", logging.INFO)

    def _arm(self) -> None:
        """Make sure the timer fires no later than the earliest deadline that applies; no
        timer while none does (an idle connection without idle_timeout has none, so
        holds no timer).  Called where a deadline starts (the connection is made, a
        frame arrives in pieces, the peer stops taking replies, reading resumes); a
        deadline that moves later is found when the timer fires, which arms it again."""
        if self.closing:
            return
        deadline = self._deadline()
        if deadline is None:
            return
        when = deadline[0]
        timer = self.timer
        if timer is not None:
            if timer.when() <= when:
                return
            timer.cancel()
        self.timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.closing:
            return
        deadline = self._deadline()
        if deadline is not None and deadline[0] <= self.loop.time():
            self._expired(deadline[1])
            return
        self._arm()

    def _cancel_timers(self) -> None:
        for timer in (self.timer, self.close_timer):
            if timer is not None:
                timer.cancel()
        self.timer = self.close_timer = None

    # ---- closing ---------------------------------------------------------------------------

    def finish(self, reason: str, level: int = logging.INFO, *, abort: bool = False) -> None:
        """Stop serving this connection: the endpoint is closed, what is written is sent
        (within frame_timeout, else the connection is reset), then the socket closes."""
        if self.closing:
            return
        self.closing = True
        self.reason, self.level = reason, level
        self._drop_frames()
        self._close_endpoint()
        transport = self.transport
        if transport is None:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if abort:
            transport.abort()
            return
        transport.close()
        limit = self.server.config.frame_timeout
        self.close_timer = self.loop.call_later(
            limit if limit is not None else DEFAULT_FRAME_TIMEOUT, self._close_stalled
        )

    def _close_stalled(self) -> None:
        """Unsent data could not be flushed within frame_timeout: reset the connection (a
        peer that stopped reading would otherwise hold it forever)."""
        self.close_timer = None
        logger.debug("close did not complete (unsent data); resetting the connection")
        if self.transport is not None:
            self.transport.abort()

    def _close_endpoint(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            conn.close()
        except Exception:
            logger.exception("conn %d: error while closing the endpoint", self.number)
