"""Assemble a running emulator: run options -> profile -> device + faults + observers -> server.

:class:`Emulator` is what the CLI ``serve`` command, the pytest fixture and the
container run.  From one :class:`~emulator.options.RunOptions` it builds one
:class:`~emulator.device.model.Device` (shared by all connections), one
:class:`~emulator.faults.engine.FaultEngine` (shared by all connections, so a rule from
the profile, the command line or MQTT applies to every one), one
:class:`~emulator.server.server.SpdmServer`, and, while it runs, the trace / pcap
observers and the MQTT control plane the options ask for.  It keeps the live
:class:`~emulator.connection.SpdmConnection` objects (for state reports).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from emulator.connection import Observer, ObserverFanout, SpdmConnection
from emulator.control.config import run_control_config
from emulator.device.model import Device
from emulator.device.store import DirectoryStore, MemoryStore, StateStore, default_state_dir
from emulator.faults.engine import FaultEngine
from emulator.faults.hostile import mutate_spec
from emulator.faults.model import FaultRule
from emulator.options import RunOptions
from emulator.profiles import Profile, load_profile
from emulator.server.server import SpdmServer
from emulator.transport import get_binding

if TYPE_CHECKING:
    from emulator.control.plane import ControlPlane

log = logging.getLogger("emulator")

#: called with each new SpdmConnection (a pcap recorder attaches here)
ConnectionHook = Callable[[SpdmConnection], None]


def add_fault_options(engine: FaultEngine, options: RunOptions) -> None:
    """Apply a run's fault settings to ``engine``: ``fault_seed`` (reseeds), then the
    ``faults`` rules, then the ``mutate`` rule (origin ``cli``), in that order."""
    if options.fault_seed is not None:
        engine.reseed(options.fault_seed)
    for rule in options.faults:
        # a parsed rule keeps its counters: each engine gets its own copy
        engine.add(dataclasses.replace(rule) if isinstance(rule, FaultRule) else rule)
    if options.mutate:
        engine.add(mutate_spec(options.mutate), origin="cli")


def open_state_store(options: RunOptions, device_name: str) -> StateStore:
    """The store of a run's provisioned state (RunOptions ``state_dir`` / ``ephemeral``):
    a :class:`DirectoryStore` (it takes the directory's lock with its first write), or
    memory for ``ephemeral`` and for a free port without a ``state_dir``."""
    if options.ephemeral:
        return MemoryStore()
    if options.state_dir is not None:
        path = options.state_dir
    elif options.port:
        path = str(default_state_dir(device_name, options.port))
    else:
        return MemoryStore()
    return DirectoryStore(path)


def build_fault_engine(profile: Profile, options: RunOptions | None = None) -> FaultEngine:
    """The fault engine of one device: the profile's ``[[faults]]`` rules, seeded with its
    ``[determinism]`` seed (or 0), then the run's fault settings (:func:`add_fault_options`)."""
    engine = FaultEngine(profile.fault_rules(), seed=profile.determinism.seed or 0)
    if options is not None:
        add_fault_options(engine, options)
    return engine


class Emulator:
    """One emulated device served on one TCP port.

    ``observers`` see every exchange (:class:`~emulator.events.ExchangeEvent`);
    ``on_connection`` hooks get each new connection.  Both lists may change while the
    emulator runs (:func:`emulator.trace.attach_tracing` adds to them).
    """

    def __init__(
        self,
        options: RunOptions | None = None,
        *,
        observers: Iterable[Observer] = (),
        on_connection: Iterable[ConnectionHook] = (),
    ) -> None:
        self.options = options or RunOptions()
        opts = self.options
        profile = opts.profile if isinstance(opts.profile, Profile) else load_profile(opts.profile)
        if opts.seed is not None:
            profile.determinism.seed = opts.seed
        self.profile = profile
        #: where provisioned certificates and key pairs persist (RunOptions state_dir)
        self.state_store = open_state_store(opts, profile.device.name)
        try:
            self.device = Device.from_profile(profile, store=self.state_store)
        except BaseException:
            self._release_state()
            raise
        #: the fault rules every connection of the device consults (MQTT changes them)
        self.faults = build_fault_engine(profile, opts)
        self.binding = get_binding(opts.transport)
        self.connections: dict[int, SpdmConnection] = {}
        self.observers: list[Observer] = list(observers)
        #: what each connection calls: every observer of the list above, as it is then
        self._fanout = ObserverFanout(self.observers)
        self.on_connection: list[ConnectionHook] = list(on_connection)
        #: the MQTT control plane's configuration (None: off), checked now
        self.control_config = run_control_config(profile, opts)
        #: the running control plane (between start() and stop())
        self.control: ControlPlane | None = None
        self._cleanups: list[Callable[[], Awaitable[None] | None]] = []
        self._attached = False
        self.server = SpdmServer(opts, self.binding, self._new_connection)

    def _new_connection(self, number: int, peer: str) -> _TrackedConnection:
        conn = _TrackedConnection(
            self,
            self.device,
            self.binding,
            number=number,
            peer=peer,
            observers=[self._fanout],
            faults=self.faults,
        )
        self.connections[number] = conn
        for hook in list(self.on_connection):
            hook(conn)
        return conn

    @property
    def host(self) -> str:
        return self.options.host

    @property
    def port(self) -> int:
        return self.server.port

    # ---- lifecycle ------------------------------------------------------------------

    def _attach(self) -> None:
        """Start what the options ask for beside the server: control plane, trace, pcap."""
        self._attached = True
        if self.control_config is not None:
            from emulator.control.plane import ControlPlane

            plane = ControlPlane(
                self.device, self.faults, self.control_config, connections=self.connections
            )
            self.observers.append(plane.observer)
            plane.start_nowait()
            self.control = plane
            self._cleanups.append(self._stop_control)
        opts = self.options
        if opts.trace is not None or opts.pcap is not None:
            from emulator.trace import attach_tracing

            self._cleanups.append(attach_tracing(self, opts.trace, opts.pcap))
        if opts.keylog is not None:
            from emulator.keylog import attach_keylog

            self._cleanups.append(attach_keylog(self, opts.keylog))

    async def _stop_control(self) -> None:
        plane, self.control = self.control, None
        if plane is not None:
            with contextlib.suppress(ValueError):
                self.observers.remove(plane.observer)
            await plane.stop()

    async def _detach(self) -> None:
        self._attached = False
        cleanups, self._cleanups = self._cleanups, []
        for cleanup in cleanups:
            try:
                result = cleanup()
                if result is not None:
                    await result
            except Exception:
                log.exception("stopping an observer failed")

    async def start(self) -> None:
        """Attach the observers and the control plane, then listen (idempotent)."""
        if not self._attached:
            self._attach()
        try:
            await self.server.start()
        except BaseException:
            await self._detach()
            self._release_state()
            raise

    async def stop(self) -> None:
        """Stop the control plane and the observers, then the server; release the state
        directory."""
        await self._detach()
        await self.server.stop()
        self._release_state()

    def _release_state(self) -> None:
        if isinstance(self.state_store, DirectoryStore):
            self.state_store.unlock()

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
                    "pqc_asym": r.algorithms.pqc_asym,
                    "kem": r.algorithms.kem,
                }
            )
        return {
            "device": self.device.name,
            "host": self.host,
            "port": self.port,
            "transport": self.binding.name,
            "state_dir": self.state_store.location,
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


__all__ = [
    "ConnectionHook",
    "Emulator",
    "RunOptions",
    "add_fault_options",
    "build_fault_engine",
]
