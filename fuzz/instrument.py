"""What atheris instruments in a fuzz target's process: the code under test, and only it.

atheris adds a coverage call to every basic block and comparison of each module imported
inside ``atheris.instrument_imports``, and every execution pays for the calls its code
runs through.  The code under test is the emulator package: all of it is instrumented,
including the modules the harness imports only when it first needs them (the connection
glue and the session layer, for the session prefixes), which :func:`instrumented`
imports inside the block.  The fuzz package (input splitting, the contract checks, the
snapshot copies) is the test, not the code under test: its branches would add coverage
noise (a new path through a check is no new behaviour of the emulator) and cost time in
every execution, so it stays plain, as the standard library and third-party code do.

    with instrumented(__name__ == "__main__"):
        from fuzz.harness import ...
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator

#: the instrumented package
UNDER_TEST = "emulator"
#: emulator modules the harness imports lazily (imported inside the block, so instrumented)
LATE_IMPORTS = (
    "emulator.connection",
    "emulator.session.layer",
    "emulator.transport",
    "emulator.requester.identity",
    "emulator.requester.measurements",
    "emulator.requester.session",
)

_INSTRUMENTED: set[str] = set()


@contextlib.contextmanager
def instrumented(active: bool = True) -> Iterator[None]:
    """Instrument the emulator modules imported inside (``active`` False: a no-op, for
    pytest replaying saved inputs), then the lazily imported ones."""
    if not active:
        yield
        return
    import atheris

    with atheris.instrument_imports(include=[UNDER_TEST]):
        yield
        for name in LATE_IMPORTS:
            importlib.import_module(name)
    _INSTRUMENTED.update(_emulator_modules())


def _emulator_modules() -> set[str]:
    return {n for n in sys.modules if n == UNDER_TEST or n.startswith(UNDER_TEST + ".")}


def uninstrumented() -> list[str]:
    """Emulator modules imported after :func:`instrumented` ended (not instrumented)."""
    if not _INSTRUMENTED:
        return []
    return sorted(_emulator_modules() - _INSTRUMENTED)


def warn_uninstrumented() -> None:
    """Say on stderr which emulator modules escaped instrumentation (call once the target
    is set up: a module listed here should join :data:`LATE_IMPORTS`)."""
    missing = uninstrumented()
    if missing:
        print(f"fuzz: not instrumented (imported late): {', '.join(missing)}", file=sys.stderr)
