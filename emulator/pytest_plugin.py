"""pytest plugin: an emulated SPDM device for your requester's tests.

Installed with the package (entry point ``pytest11: spdm_emulator``), so a CI job
that runs ``pip install spdm-emulator`` gets these fixtures without any conftest:

``spdm_responder``
    One emulated device, started on a free loopback port for the test and
    stopped after it.  It yields a :class:`SpdmResponder` handle:
    ``host``, ``port``, ``address`` (``"host:port"``), ``transport``, ``device``
    (the live device model, e.g. ``device.measurements`` to change values),
    ``faults`` (the emulator's fault engine: add/clear rules while the test runs),
    ``events`` (every
    :class:`~emulator.connection.ExchangeEvent` the device answered, in order),
    ``requests`` (their request names), ``state()``, ``call(fn)`` and
    ``client()`` (a connected-on-enter client of the device's wire:
    :func:`~emulator.requester.transport.open_client`'s).

``spdm_responder_factory``
    ``make(profile=None, *, transport=None, seed=None, **options)`` starts one more
    device per call (several devices in one test); all are stopped afterwards.

Choosing the device, most specific first::

    @pytest.mark.parametrize("spdm_responder", ["default", {"transport": "mctp"}],
                             indirect=True)        # a profile name, a dict, a RunOptions
    @pytest.mark.spdm_profile("nvme-ssd", transport="mctp", seed=1)   # marker
    pytest --spdm-profile my-device.toml --spdm-transport doe        # command line

and otherwise :class:`~emulator.options.RunOptions`' defaults (the shipped ``default``
profile over PCI DOE) on a free loopback port.  Marker keywords: ``transport`` (a
name of ``emulator.transport.BINDINGS``: doe, mctp, none, storage, tcp), ``seed`` (deterministic
nonces and keys), ``host``, ``port`` (0 = a free one), ``faults`` (fault specs, as
``--fault`` takes them) and any other :class:`~emulator.options.RunOptions` field
(``max_payload``, ``idle_timeout``, ``max_connections``, ``trace``...).  A
``RunOptions`` parameter is used as given (set ``port=0`` for a free port).

Design: every device runs on an event loop of its own, in a dedicated daemon
thread started by the fixture.  The test never shares a loop with the emulator,
so the same fixture serves plain ``def`` tests (e.g. one that runs an external
requester binary with :mod:`subprocess` and blocks until it exits) and
``async def`` tests under pytest-asyncio (whatever their loop scope), and a
blocking call in the test cannot stall the device.  The handle's methods hand
work to that loop and wait for it: ``state()`` and ``call(fn, ...)`` run in the
emulator's thread, so use ``call`` to change the device while connections are
being served (changing it between exchanges directly is fine too).  ``events``
is filled by the emulator before each response is sent, so once a requester has
its answer, the event is in the list.  Teardown stops the server (closing every
connection and awaiting its tasks), then the loop and the thread; an error the
emulator's loop reported during the test (an exception nobody handled) fails
the test at teardown, with the loop's message.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import fields, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from emulator.errors import EmulatorError
from emulator.options import RunOptions

# The emulator itself is imported when a fixture first runs, not when pytest loads
# the plugin: a project that merely has the package installed pays nothing for it.
if TYPE_CHECKING:
    from emulator.app import Emulator
    from emulator.connection import ExchangeEvent, SpdmConnection
    from emulator.device.model import Device
    from emulator.faults.engine import FaultEngine
    from emulator.profiles import Profile
    from emulator.requester.transport import Client

__all__ = [
    "EmulatorThread",
    "PluginError",
    "SpdmResponder",
    "SpdmResponderFactory",
    "build_options",
    "fixture_options",
    "spdm_responder",
    "spdm_responder_factory",
]

log = logging.getLogger("emulator.pytest_plugin")

T = TypeVar("T")

MARKER = "spdm_profile"
MARKER_LINE = (
    f"{MARKER}(profile=None, *, transport=None, seed=None, faults=(), **options): "
    "the device the spdm_responder fixture starts (profile name or TOML file, transport "
    "doe/mctp/none, deterministic seed, fault specs, other RunOptions fields)"
)
#: How long starting or stopping one emulator may take before the fixture gives up.
LIFECYCLE_TIMEOUT = 30.0
#: How long tasks left after the last emulator stopped may run before being cancelled.
_DRAIN_TIMEOUT = 5.0
#: The fixtures' one setting that is not RunOptions' default: a free port, so tests
#: (and parallel test runs) never collide.
FREE_PORT = 0
#: Keywords with their own type check; ``options`` is a dict of more fields.
_SPEC_KEYS = frozenset({"profile", "transport", "seed", "host", "port", "faults", "options"})
#: RunOptions fields set through ``options`` or as other keywords.
_OPTION_FIELDS = frozenset(f.name for f in fields(RunOptions)) - _SPEC_KEYS


class PluginError(EmulatorError):
    """The fixture was asked for something it cannot do (bad marker, bad parameter...)."""


# ---------------------------------------------------------------------- the emulator thread


class EmulatorThread:
    """A daemon thread running its own asyncio event loop, for emulators.

    :meth:`run` submits a coroutine to the loop and blocks the calling thread
    until it finishes; :meth:`call` does the same for a plain function.  Errors
    the loop's exception handler receives are kept in :attr:`loop_errors`.
    """

    def __init__(self, name: str = "spdm-emulator") -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._on_loop_error)
        #: messages of errors the loop reported (exceptions no task handled)
        self.loop_errors: list[str] = []
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            try:
                # Let short tasks that were already scheduled finish first (e.g. a
                # connection accepted just before stop(), which closes itself), so no
                # socket is left open; then cancel whatever is still running.
                pending = asyncio.all_tasks(self.loop)
                if pending:
                    self.loop.run_until_complete(asyncio.wait(pending, timeout=_DRAIN_TIMEOUT))
                pending = asyncio.all_tasks(self.loop)
                for task in pending:
                    task.cancel()
                if pending:
                    self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                self.loop.run_until_complete(self.loop.shutdown_default_executor())
            finally:
                self.loop.close()

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", "error"))
        exc = context.get("exception")
        if exc is not None:
            message += f": {exc!r}"
        self.loop_errors.append(message)
        loop.default_exception_handler(context)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self.loop.is_closed()

    def in_thread(self) -> bool:
        """True when called from the emulator's own thread."""
        return threading.current_thread() is self._thread

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = LIFECYCLE_TIMEOUT) -> T:
        """Run ``coro`` on the emulator loop and return its result (from another thread)."""
        if self.in_thread():
            coro.close()
            raise PluginError(
                "EmulatorThread.run called from the emulator's own thread (it would deadlock)"
            )
        if not self.alive:
            coro.close()
            raise PluginError("the emulator thread has stopped")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise PluginError(f"the emulator did not finish within {timeout} s") from None

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn(*args, **kwargs)`` in the emulator's thread, between two exchanges."""
        if self.in_thread():
            return fn(*args, **kwargs)

        async def invoke() -> T:
            return fn(*args, **kwargs)

        return self.run(invoke())

    def close(self, timeout: float = LIFECYCLE_TIMEOUT) -> None:
        """Stop the loop (pending tasks are cancelled and awaited) and join the thread."""
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # loop already closed
                self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise PluginError(f"the emulator thread did not stop within {timeout} s")


# ---------------------------------------------------------------------- what to start


def _is_profile_ref(value: object) -> bool:
    """A profile name, a path to a TOML file, or a loaded Profile."""
    from emulator.profiles import Profile

    return isinstance(value, str | Path | Profile)


def fixture_options() -> RunOptions:
    """RunOptions' defaults on a free port: where the fixtures start from."""
    return RunOptions(port=FREE_PORT)


def build_options(
    profile: str | Path | Profile | None = None,
    *,
    base: RunOptions | None = None,
    where: str = "spdm_responder",
    **kwargs: Any,
) -> RunOptions:
    """``base`` (or :func:`fixture_options`) with the given values replacing its own.

    ``faults`` (one SPEC or several) are added to the base's; ``options`` is a dict of
    more fields; any other keyword is a :class:`RunOptions` field.  PluginError names
    a bad value, TransportError an unknown transport.
    """
    from emulator.transport import get_binding

    options = fixture_options() if base is None else replace(base)
    if profile is not None:
        if not _is_profile_ref(profile):
            raise PluginError(
                f"{where}: profile must be a name, a path or a Profile, "
                f"not {type(profile).__name__}"
            )
        options.profile = profile
    for key, value in kwargs.items():
        if key == "profile":
            if value is not None:
                options.profile = value
        elif key in ("transport", "host"):
            if value is not None:
                if not isinstance(value, str):
                    raise PluginError(f"{where}: {key} must be a string, not {value!r}")
                setattr(options, key, value)
        elif key in ("seed", "port"):
            if value is not None:
                if not isinstance(value, int) or isinstance(value, bool):
                    raise PluginError(f"{where}: {key} must be an integer, not {value!r}")
                setattr(options, key, value)
        elif key == "faults":
            if isinstance(value, str):
                value = (value,)
            options.faults = (*options.faults, *(value or ()))
        elif key == "options":
            for name, option in dict(value or {}).items():
                _set_option(options, name, option, where)
        else:
            _set_option(options, key, value, where)
    get_binding(options.transport)  # TransportError naming the choices
    return options


def _set_option(options: RunOptions, name: str, value: Any, where: str) -> None:
    if name not in _OPTION_FIELDS:
        known = ", ".join(sorted(_OPTION_FIELDS | _SPEC_KEYS - {"options"}))
        raise PluginError(f"{where}: unknown option {name!r} (known: {known})")
    setattr(options, name, value)


# ---------------------------------------------------------------------- the handle


class SpdmResponder:
    """A running emulated device, as the fixtures yield it.

    Everything a test needs: where it listens, the live device model, the fault
    engine and the exchanges it answered.  Created by :class:`SpdmResponderFactory`.
    """

    def __init__(self, emulator: Emulator, thread: EmulatorThread) -> None:
        self.emulator = emulator
        self._thread = thread
        #: every exchange the device answered, in order (filled by the emulator thread)
        self.events: list[ExchangeEvent] = []
        self._port = 0
        self._stopped = False
        emulator.observers.append(self.events.append)

    # ---- where it is ----------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.emulator.host

    @property
    def port(self) -> int:
        """The TCP port (the one picked for port 0; still known after stop())."""
        return self._port

    @property
    def address(self) -> str:
        """``"host:port"``, what ``spdm-emulator probe`` and most requesters take."""
        return f"{self.host}:{self.port}"

    @property
    def transport(self) -> str:
        """The transport binding: doe, mctp, none, storage or tcp."""
        return self.emulator.binding.name

    @property
    def device(self) -> Device:
        """The live device model shared by all connections (measurements, identity...)."""
        return self.emulator.device

    @property
    def faults(self) -> FaultEngine:
        """The fault engine every connection consults (add/clear rules while it runs)."""
        return self.emulator.faults

    @property
    def profile(self) -> Profile:
        return self.emulator.profile

    @property
    def connections(self) -> dict[int, SpdmConnection]:
        """Live connections by number (read it through :meth:`call` while they run)."""
        return self.emulator.connections

    @property
    def running(self) -> bool:
        return not self._stopped

    @property
    def loop_errors(self) -> list[str]:
        """Errors the emulator's event loop reported (the fixture fails the test on any)."""
        return self._thread.loop_errors

    # ---- what happened --------------------------------------------------------------

    @property
    def requests(self) -> list[str]:
        """The request names of :attr:`events`, e.g. ``["GET_VERSION", ...]``."""
        return [event.request_name for event in list(self.events)]

    def state(self) -> dict[str, Any]:
        """The emulator's JSON-able state: device, address, connections and what they chose."""
        return self.call(self.emulator.state)

    # ---- acting on it ---------------------------------------------------------------

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` in the emulator's thread and return its result."""
        return self._thread.call(fn, *args, **kwargs)

    def client(self, timeout: float = 10.0, *, platform_frames: bool = False) -> Client:
        """A client of this device's wire (``async with handle.client() as c``): platform
        frames, storage IF_SEND/IF_RECV, or DSP0287 on the stream (``platform_frames``:
        tcp as spdm-emu's ``--trans TCP``)."""
        from emulator.requester.transport import open_client

        return open_client(
            self.host,
            self.port,
            self.emulator.binding,
            timeout=timeout,
            platform_frames=platform_frames,
        )

    # ---- lifecycle ------------------------------------------------------------------

    def _start(self) -> None:
        self._thread.run(self.emulator.start())
        self._port = self.emulator.port

    def stop(self) -> None:
        """Stop serving: close every connection and wait for their tasks (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread.alive:
            self._thread.run(self.emulator.stop())

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return (
            f"<SpdmResponder {self.emulator.device.name!r} at {self.address} "
            f"({self.transport}, {state})>"
        )


class SpdmResponderFactory:
    """Starts emulated devices on one emulator thread; :meth:`close` stops them all.

    Also usable outside the fixtures, e.g. for a module-scoped device::

        @pytest.fixture(scope="module")
        def shared_device():
            with SpdmResponderFactory() as make:
                yield make("default", seed=1)
    """

    def __init__(self, default: RunOptions | None = None) -> None:
        self.default = default or fixture_options()
        self.responders: list[SpdmResponder] = []
        self._thread: EmulatorThread | None = None
        self._closed = False

    def __call__(
        self,
        profile: str | Path | Profile | None = None,
        *,
        transport: str | None = None,
        seed: int | None = None,
        **options: Any,
    ) -> SpdmResponder:
        """Start one device (unset arguments come from the factory's default spec)."""
        spec = build_options(
            profile,
            base=self.default,
            where="spdm_responder_factory",
            transport=transport,
            seed=seed,
            **options,
        )
        return self.start(spec)

    def start(self, spec: RunOptions) -> SpdmResponder:
        """Start the device ``spec`` describes and return its handle."""
        from emulator.app import Emulator

        if self._closed:
            raise PluginError("this SpdmResponderFactory is closed")
        emulator = Emulator(spec)
        if self._thread is None:
            self._thread = EmulatorThread()
        handle = SpdmResponder(emulator, self._thread)
        handle._start()
        self.responders.append(handle)
        log.info("started %r", handle)
        return handle

    @property
    def loop_errors(self) -> list[str]:
        return [] if self._thread is None else list(self._thread.loop_errors)

    def close(self) -> None:
        """Stop every device, then the emulator thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        problems: list[str] = []
        for handle in reversed(self.responders):
            try:
                handle.stop()
            except Exception as exc:
                problems.append(f"stopping {handle!r}: {exc!r}")
        if self._thread is not None:
            try:
                self._thread.close()
            except PluginError as exc:
                problems.append(str(exc))
        if problems:
            raise PluginError("; ".join(problems))

    def __enter__(self) -> SpdmResponderFactory:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# ---------------------------------------------------------------------- pytest hooks


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("spdm-emulator", "SPDM device emulator (spdm_responder fixture)")
    group.addoption(
        "--spdm-profile",
        default=None,
        metavar="NAME|FILE",
        help="device profile the spdm_responder fixture starts when a test does not choose "
        "one (default: the shipped 'default' profile)",
    )
    group.addoption(
        "--spdm-transport",
        default=None,
        choices=_transports(),
        help="transport binding of the spdm_responder fixture when a test does not choose "
        "one (default: doe)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_LINE)


def _transports() -> tuple[str, ...]:
    """``--spdm-transport`` choices: the names of the binding registry."""
    from emulator.transport import BINDINGS

    return tuple(BINDINGS)


def _default_spec(config: pytest.Config) -> RunOptions:
    return build_options(
        config.getoption("spdm_profile", default=None),
        where="--spdm-profile/--spdm-transport",
        transport=config.getoption("spdm_transport", default=None),
    )


def _spec_for(request: pytest.FixtureRequest) -> RunOptions:
    """Command line, then the closest marker, then an indirect parameter."""
    spec = _default_spec(request.config)
    marker = request.node.get_closest_marker(MARKER)
    if marker is not None:
        if len(marker.args) > 1:
            raise PluginError(
                f"@pytest.mark.{MARKER}: one positional argument (the profile), "
                f"got {len(marker.args)}"
            )
        spec = build_options(
            *marker.args, base=spec, where=f"@pytest.mark.{MARKER}", **marker.kwargs
        )
    param = getattr(request, "param", None)
    if param is not None:
        where = "spdm_responder parameter"
        if isinstance(param, RunOptions):
            spec = replace(param)
        elif _is_profile_ref(param):
            spec = build_options(param, base=spec, where=where)
        elif isinstance(param, Mapping):
            spec = build_options(base=spec, where=where, **dict(param))
        else:
            raise PluginError(
                f"{where}: expected a profile name, a dict of options or a RunOptions, "
                f"got {type(param).__name__}"
            )
    return spec


def _finish(factory: SpdmResponderFactory) -> None:
    """Teardown: stop everything, then fail on errors the emulator's loop reported."""
    factory.close()
    errors = factory.loop_errors
    if errors:
        pytest.fail(
            "the emulator's event loop reported errors during the test:\n  " + "\n  ".join(errors),
            pytrace=False,
        )


@pytest.fixture
def spdm_responder_factory(request: pytest.FixtureRequest) -> Iterator[SpdmResponderFactory]:
    """Start several emulated devices: ``make(profile=None, *, transport=None, seed=None, ...)``.

    Defaults come from ``--spdm-profile``/``--spdm-transport`` (markers and parameters
    apply to ``spdm_responder`` only).  Every device is stopped after the test.
    """
    factory = SpdmResponderFactory(_default_spec(request.config))
    try:
        yield factory
    finally:
        _finish(factory)


@pytest.fixture
def spdm_responder(request: pytest.FixtureRequest) -> Iterator[SpdmResponder]:
    """One emulated device on a free loopback port, chosen by marker, parameter or option."""
    spec = _spec_for(request)
    factory = SpdmResponderFactory(spec)
    try:
        yield factory.start(spec)
    finally:
        _finish(factory)
