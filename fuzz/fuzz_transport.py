#!/usr/bin/env python3
"""Fuzz the DOE / MCTP / none bindings and the connection glue behind them (atheris).

Input: byte 0 picks the binding (``% 3``: doe, mctp, none); the rest is a list of
transport payloads in :func:`fuzz.harness.split_messages` form, fed in order to one
:class:`~emulator.connection.SpdmConnection` (as the server does for NORMAL frames).
Checked for each payload:

* ``binding.decode`` raises only :class:`~emulator.errors.TransportError`; what it
  accepts re-encodes to exactly the same payload;
* ``SpdmConnection.receive`` never raises, and every payload of its reply decodes with
  the binding to a well-formed SPDM message (the contract of :mod:`fuzz.harness`).

    python3 fuzz/fuzz_transport.py -runs=20000 fuzz/corpus/transport
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if __name__ == "__main__":
    import atheris

    _instrumented: contextlib.AbstractContextManager[object] = atheris.instrument_imports(
        include=["emulator", "fuzz"]
    )
else:
    _instrumented = contextlib.nullcontext()

with _instrumented:
    from emulator.connection import SpdmConnection
    from emulator.device.random import SeededRandom
    from emulator.errors import TransportError
    from emulator.transport import get_binding
    from fuzz.harness import (
        FUZZ_SEED,
        ContractViolation,
        FakeClock,
        check_spdm_message,
        fuzz_device,
        split_messages,
    )

BINDING_NAMES = ("doe", "mctp", "none")


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    binding = get_binding(BINDING_NAMES[data[0] % len(BINDING_NAMES)])
    device = fuzz_device()
    versions = [int(v) for v in device.versions]
    conn = SpdmConnection(
        device, binding, rng=SeededRandom(FUZZ_SEED, "fuzz-transport"), clock=FakeClock()
    )
    for payload, _ in split_messages(data[1:]):
        try:
            decoded = binding.decode(payload)
        except TransportError:
            decoded = None
        if decoded is not None:
            again = binding.encode(decoded.message, decoded.secured)
            if again != payload:
                raise ContractViolation(
                    f"{binding.name}: re-encoding changed the payload\n"
                    f"  in  {payload.hex()}\n  out {again.hex()}"
                )
        reply = conn.receive(payload)
        for out in reply.payloads:
            message = binding.decode(out)
            if not message.secured:  # (DOE padding included: the header is what is checked)
                check_spdm_message(message.message, versions, payload)
    conn.close()


def main() -> None:
    import atheris

    fuzz_device()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
