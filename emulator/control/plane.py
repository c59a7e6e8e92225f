"""The MQTT control plane: telemetry out, commands in (aiomqtt), never in the responder's way.

Wiring (what :class:`emulator.app.Emulator` does for ``serve --mqtt``)::

    plane = ControlPlane(emulator.device, emulator.faults, config,
                         connections=emulator.connections)
    emulator.observers.append(plane.observer)     # or SpdmConnection(observers=[...])
    await plane.start()
    ...
    await plane.stop()

The observer is synchronous and O(1): it appends the event to a bounded queue and
wakes the publisher task; when the queue is full the oldest event is dropped and
counted (``telemetry.dropped`` in the state).  The publisher connects to the broker,
subscribes to the command topics, publishes the retained state and then the queued
events; when the broker is absent or goes away it reconnects with exponential
backoff while the responder keeps answering.  An event whose publish failed goes
back to the head of the queue and is published after the reconnection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import aiomqtt

from emulator.control.commands import CommandProcessor
from emulator.control.config import ControlConfig, Topics
from emulator.control.telemetry import StateTracker, connections_state, event_json
from emulator.events import ExchangeEvent
from emulator.faults.engine import FaultEngine
from emulator.faults.spec import rule_to_dict

log = logging.getLogger("emulator.control")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=False)


def _jsonable(obj: object) -> object:
    """JSON for what device notifications may carry (bytes as hex, enums by name)."""
    if isinstance(obj, bytes | bytearray):
        return obj.hex()
    name = getattr(obj, "name", None)
    return name if isinstance(name, str) else str(obj)


class ControlPlane:
    """Telemetry and runtime control of one device over MQTT."""

    def __init__(
        self,
        device: Any,
        fault_engine: FaultEngine | None,
        config: ControlConfig,
        *,
        connections: Mapping[int, Any] | None = None,
    ) -> None:
        self.device = device
        self.faults = fault_engine
        self.config = config
        self.connections = connections
        self.topics = Topics(config.topic_prefix, device.name)
        self.tracker = StateTracker()
        self.commands = CommandProcessor(device, fault_engine, connections, self._changed)
        #: telemetry counters (published in the state)
        self.published = 0
        self.dropped = 0
        self.reconnects = 0
        self.connected = False
        self._queue: collections.deque[ExchangeEvent] = collections.deque()
        self._seq = 0
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._state_dirty = True
        self._counters_changed = False
        self._last_state = ""
        self._last_state_time = 0.0
        self._connected_event: asyncio.Event | None = None
        if fault_engine is not None:
            fault_engine.listeners.append(self._on_rules)
        #: device-model changes (device.notify: measurement updates, IDE key events...)
        self._notes: collections.deque[tuple[str, object, float]] = collections.deque()
        device.listeners.append(self._on_device)

    # ---- the observer (sync, called by the connection for each exchange) ----------

    def observer(self, event: ExchangeEvent) -> None:
        """Queue one exchange for publishing (never blocks, never raises)."""
        try:
            if self.tracker.update(event):
                self._state_dirty = True
            if len(self._queue) >= self.config.queue_size:
                self._queue.popleft()
                self.dropped += 1
            self._counters_changed = True
            self._queue.append(event)
            self._poke()
        except Exception:  # telemetry must never break the responder
            log.exception("control: observer failed")

    def _poke(self) -> None:
        wake, loop = self._wake, self._loop
        if wake is None or loop is None:
            return
        if threading.get_ident() == self._thread:
            wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(wake.set)

    def _on_rules(self, what: str, detail: object) -> None:
        self._state_dirty = True
        self._poke()

    def _on_device(self, what: str, detail: object) -> None:
        """Queue a device-model change for ``<base>/device`` (bounded like the events)."""
        try:
            if len(self._notes) >= self.config.queue_size:
                self._notes.popleft()
                self.dropped += 1
            self._notes.append((what, detail, time.time()))
            self._state_dirty = True
            self._poke()
        except Exception:
            log.exception("control: device listener failed")

    def _changed(self, command: str) -> None:
        self._state_dirty = True
        self._poke()

    @property
    def queued(self) -> int:
        return len(self._queue)

    # ---- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Start the publisher task (returns at once; the broker may be absent)."""
        self.start_nowait()

    def start_nowait(self) -> None:
        """:meth:`start` from synchronous code running in the event loop."""
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._connected_event = asyncio.Event()
        self.config.ssl_context()  # fail now, not in the background, on bad TLS files
        self._task = asyncio.create_task(self._run(), name=f"mqtt-{self.device.name}")

    def detach(self) -> None:
        """Stop listening to the device (the plane is being discarded)."""
        with contextlib.suppress(ValueError):
            self.device.listeners.remove(self._on_device)

    async def stop(self) -> None:
        """Publish the offline state if connected, disconnect, stop the task."""
        self.detach()
        task, self._task = self._task, None
        if task is None:
            return
        assert self._stop is not None
        self._stop.set()
        if self._wake is not None:
            self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=5.0)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Wait until the broker accepted the connection (tests, tools)."""
        assert self._connected_event is not None, "start() first"
        await asyncio.wait_for(self._connected_event.wait(), timeout)

    async def __aenter__(self) -> ControlPlane:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- state ----------------------------------------------------------------------

    def state(self, online: bool = True) -> dict[str, Any]:
        """The retained state object."""
        engine = self.faults
        return {
            "device": self.device.name,
            "online": online,
            "connections": connections_state(self.connections, self.tracker),
            "faults": {
                "rules": [rule_to_dict(r) for r in engine.rules] if engine else [],
                "applied": engine.applied_total if engine else 0,
            },
            **self._tee_io_state(),
            "telemetry": {
                "exchanges": self.tracker.exchanges,
                "published": self.published,
                "dropped": self.dropped,
                "queued": len(self._queue),
                "reconnects": self.reconnects,
            },
        }

    def _tee_io_state(self) -> dict[str, Any]:
        """TDISP interfaces and the CXL TSP target, when the device has them."""
        out: dict[str, Any] = {}
        tdisp = getattr(self.device, "tdisp", None)
        if tdisp is not None:
            out["tdisp"] = tdisp.snapshot()
        tsp = getattr(self.device, "cxl_tsp", None)
        if tsp is not None:
            out["cxl_tsp"] = tsp.snapshot()
        return out

    def _state_wait(self) -> float | None:
        """Seconds until the state is due (None: nothing to publish)."""
        if self._state_dirty:
            return 0.0
        if not self._counters_changed:
            return None
        elapsed = time.monotonic() - self._last_state_time
        return max(0.0, self.config.state_interval - elapsed)

    async def _publish_state(self, client: aiomqtt.Client, force: bool = False) -> None:
        """Publish the retained state: at once when it changed, at most every
        ``state_interval`` seconds when only counters moved."""
        if not force:
            wait = self._state_wait()
            if wait is None or wait > 0:
                return
        text = _dumps(self.state())
        self._state_dirty = self._counters_changed = False
        if text == self._last_state and not force:
            return
        await client.publish(self.topics.state, text, qos=1, retain=True)
        self._last_state, self._last_state_time = text, time.monotonic()

    # ---- the publisher task ----------------------------------------------------------

    def _client(self) -> aiomqtt.Client:
        cfg = self.config
        offline = _dumps({"device": self.device.name, "online": False})
        return aiomqtt.Client(
            cfg.host,
            cfg.port,
            username=cfg.username,
            password=cfg.password,
            identifier=cfg.client_id,
            keepalive=cfg.keepalive,
            tls_context=cfg.ssl_context(),
            timeout=10.0,
            will=aiomqtt.Will(self.topics.state, offline, qos=1, retain=True),
        )

    async def _run(self) -> None:
        assert self._stop is not None
        backoff = self.config.reconnect_min
        first = True
        while not self._stop.is_set():
            client = self._client()
            try:
                async with client:
                    if not first:
                        self.reconnects += 1
                    first = False
                    self.connected = True
                    backoff = self.config.reconnect_min
                    log.info(
                        "control: connected to mqtt://%s:%d, topics %s/#",
                        self.config.host,
                        self.config.port,
                        self.topics.base,
                    )
                    await client.subscribe(self.topics.commands, qos=1)
                    self._state_dirty = True
                    await self._publish_state(client, force=True)
                    assert self._connected_event is not None
                    self._connected_event.set()
                    await self._serve(client)
                    if self._stop.is_set():
                        with contextlib.suppress(aiomqtt.MqttError):
                            await client.publish(
                                self.topics.state,
                                _dumps(self.state(online=False)),
                                qos=1,
                                retain=True,
                                timeout=2.0,
                            )
                        return
            except aiomqtt.MqttError as exc:
                if self.connected:
                    log.warning("control: lost the broker: %s; reconnecting", exc)
                else:
                    log.info("control: broker %s:%d: %s", self.config.host, self.config.port, exc)
            finally:
                self.connected = False
                if self._connected_event is not None:
                    self._connected_event.clear()
                self._release(client)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=backoff)
            backoff = min(backoff * 2, self.config.reconnect_max)

    def _release(self, client: aiomqtt.Client) -> None:
        """Unregister and close the socket of a client whose broker went away.

        When the broker dies, aiomqtt leaves paho's socket open and registered with the
        event loop; if it is closed later (garbage collection), its file descriptor
        number can be reused by the next connection while the loop still holds the old
        registration, and the new connection's reads and writes stall.  Closing it here,
        before reconnecting, avoids that.
        """
        paho = getattr(client, "_client", None)
        sock = paho.socket() if paho is not None else None
        if sock is None or self._loop is None:
            return
        with contextlib.suppress(Exception):
            fd = sock.fileno()
            if fd >= 0:
                self._loop.remove_reader(fd)
                self._loop.remove_writer(fd)
        with contextlib.suppress(Exception):
            sock.close()

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Publish events and answer commands until the broker goes or stop() is called."""
        assert self._stop is not None and self._wake is not None
        self._wake.set()  # events queued while the broker was away
        pump = asyncio.create_task(self._pump(client))
        commands = asyncio.create_task(self._commands(client))
        stop = asyncio.create_task(self._stop.wait())
        tasks = {pump, commands, stop}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for t in done:
            if t is not stop and not t.cancelled():
                exc = t.exception()
                if exc is not None:
                    raise exc

    async def _pump(self, client: aiomqtt.Client) -> None:
        assert self._wake is not None and self._stop is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._state_wait())
            self._wake.clear()
            while self._queue:
                # leave the event at the head until it is out: if the broker goes away
                # meanwhile, it is published after the reconnection
                event = self._queue[0]
                payload = _dumps(event_json(event, self._seq + 1, time.time()))
                await client.publish(self.topics.event, payload, qos=0)
                self._seq += 1
                self.published += 1
                self._counters_changed = True
                if self._queue and self._queue[0] is event:
                    self._queue.popleft()
            while self._notes:
                what, detail, stamp = self._notes[0]
                note = {"what": what, "detail": detail, "time": stamp}
                text = json.dumps(note, separators=(",", ":"), default=_jsonable)
                await client.publish(self.topics.device_events, text, qos=0)
                self.published += 1
                if self._notes and self._notes[0][2] == stamp:
                    self._notes.popleft()
            await self._publish_state(client)
            if self._stop.is_set():
                return

    async def _commands(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            name = self.topics.command_name(message.topic.value)
            if name is None:
                continue
            payload = message.payload
            raw = payload if isinstance(payload, bytes | str) else b""
            reply = self.commands.handle(name, raw)
            await client.publish(self.topics.reply, _dumps(reply), qos=1)
            await self._publish_state(client)
