"""``serve --fault SPEC`` (repeatable) and ``--fault-seed N``: a serve extension.

Registered in :data:`emulator.cli.SERVE_EXTENSIONS` on import (``emulator.cli`` imports
this module).  A bad SPEC is an argparse error naming the key, e.g.::

    spdm-emulator: error: argument --fault: fault 'nth=0,do=drop': nth: 0 is below the minimum 1
"""

from __future__ import annotations

import argparse
from typing import Any

from emulator.faults.model import FaultRule, FaultSpecError
from emulator.faults.spec import FAULT_HELP, parse_fault_spec


def fault_spec(text: str) -> FaultRule:
    """argparse ``type=`` for ``--fault``: the parsed rule, or an ArgumentTypeError."""
    try:
        return parse_fault_spec(text, origin="cli")
    except FaultSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fault", action="append", type=fault_spec, metavar="SPEC", default=[], help=FAULT_HELP
    )
    parser.add_argument(
        "--fault-seed",
        type=int,
        metavar="N",
        help="seed of the probabilistic faults (default: the profile's [determinism] seed, or 0)",
    )


def apply(args: argparse.Namespace, emulator: Any) -> None:
    """Add the ``--fault`` rules to the device's engine (after the profile's ``[[faults]]``)."""
    engine = emulator.device.faults
    seed = getattr(args, "fault_seed", None)
    if seed is not None:
        engine.reseed(seed)
    for rule in getattr(args, "fault", None) or []:
        engine.add(rule)
    return None


CLI_EXTENSION = (add_arguments, apply)


def _register_cli() -> None:
    from emulator import cli

    if CLI_EXTENSION not in cli.SERVE_EXTENSIONS:
        cli.SERVE_EXTENSIONS.append(CLI_EXTENSION)


_register_cli()
