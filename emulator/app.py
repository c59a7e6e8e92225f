"""Assemble a running emulator: profile -> device -> server, with observers.

:class:`Emulator` is what the CLI ``serve`` command, the pytest fixture and the
container run.  It owns one :class:`~emulator.device.model.Device` (shared by all
connections), one :class:`~emulator.server.server.SpdmServer`, and the live
:class:`~emulator.connection.SpdmConnection` objects (for state reports).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from emulator.connection import ExchangeEvent, Observer, SpdmConnection
from emulator.device.model import Device
from emulator.profiles import Profile, load_profile
from emulator.server.server import DEFAULT_FRAME_TIMEOUT, ServerConfig, SpdmServer
from emulator.transport import get_binding

log = logging.getLogger("emulator")


@dataclass
class EmulatorOptions:
    """Everything ``spdm-emulator serve`` can set (defaults = the README quick start)."""

    profile: str | Path | Profile = "default"
    host: str = "127.0.0.1"
    port: int = 2323
    transport: str = "doe"
    max_payload: int = 0x1200
    idle_timeout: float | None = None
    max_connections: int = 1024
    #: seconds to receive a whole frame once it started / to have a reply taken (None: never)
    frame_timeout: float | None = DEFAULT_FRAME_TIMEOUT
    #: overrides the profile's [determinism] seed when set
    seed: int | None = None
    observers: list[Observer] = field(default_factory=list)
    #: called with each new SpdmConnection (fault engines, tracers attach here)
    on_connection: list[Callable[[SpdmConnection], None]] = field(default_factory=list)


class Emulator:
    """One emulated device served on one TCP port."""

    def __init__(self, options: EmulatorOptions | None = None) -> None:
        self.options = options or EmulatorOptions()
        opts = self.options
        profile = opts.profile if isinstance(opts.profile, Profile) else load_profile(opts.profile)
        if opts.seed is not None:
            profile.determinism.seed = opts.seed
        self.profile = profile
        self.device = Device.from_profile(profile)
        self.binding = get_binding(opts.transport)
        self.connections: dict[int, SpdmConnection] = {}
        self.observers: list[Observer] = list(opts.observers)
        self.server = SpdmServer(
            ServerConfig(
                host=opts.host,
                port=opts.port,
                max_payload=opts.max_payload,
                idle_timeout=opts.idle_timeout,
                max_connections=opts.max_connections,
                frame_timeout=opts.frame_timeout,
            ),
            self.binding,
            self._new_connection,
        )

    def _new_connection(self, number: int, peer: str) -> _TrackedConnection:
        conn = _TrackedConnection(
            self,
            self.device,
            self.binding,
            number=number,
            peer=peer,
            observers=[self._observe],
            faults=self.device.faults,
        )
        self.connections[number] = conn
        for hook in self.options.on_connection:
            hook(conn)
        return conn

    def _observe(self, event: ExchangeEvent) -> None:
        for obs in list(self.observers):
            try:
                obs(event)
            except Exception:
                log.exception("observer failed")

    @property
    def host(self) -> str:
        return self.options.host

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    async def serve_forever(self) -> None:
        await self.server.serve_forever()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def state(self) -> dict[str, Any]:
        """A JSON-able summary: device, address, live connections and what they negotiated."""
        conns = []
        for number, conn in sorted(self.connections.items()):
            r = conn.responder
            conns.append(
                {
                    "connection": number,
                    "peer": conn.peer,
                    "state": r.state.name,
                    "version": f"{r.version >> 4}.{r.version & 0xF}" if r.version else None,
                    "base_asym": r.algorithms.base_asym,
                    "base_hash": r.algorithms.base_hash,
                    "dhe": r.algorithms.dhe,
                    "aead": r.algorithms.aead,
                }
            )
        return {
            "device": self.device.name,
            "host": self.host,
            "port": self.port,
            "transport": self.binding.name,
            "connections": conns,
        }


class _TrackedConnection(SpdmConnection):
    """An SpdmConnection that removes itself from the emulator's table when closed."""

    def __init__(self, emulator: Emulator, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._emulator = emulator

    def close(self) -> None:
        super().close()
        self._emulator.connections.pop(self.number, None)
