#!/usr/bin/env python3
"""Fuzz the DOE / MCTP / none bindings and the connection glue behind them (atheris).

Input: byte 0 picks the binding (``% 3``: doe, mctp, none); the rest is a list of
transport payloads in :func:`fuzz.harness.split_messages` form, fed in order to one
:class:`~emulator.connection.SpdmConnection` (as the server does for NORMAL frames).
Checked for each payload:

* ``binding.decode`` raises only :class:`~emulator.errors.TransportError`; what it
  accepts re-encodes to exactly the same payload;
* ``SpdmConnection.receive`` never raises, and every payload of its reply decodes with
  the binding to a well-formed SPDM message (the contract of :mod:`fuzz.harness`), or,
  for a payload the binding takes for a discovery request (``answer_discovery``), is the
  DOE discovery response it asked for (checked independently of the binding).

    python3 fuzz/fuzz_transport.py -runs=20000 fuzz/corpus/transport
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzz.instrument import instrumented, warn_uninstrumented

with instrumented(__name__ == "__main__"):
    from emulator.connection import SpdmConnection
    from emulator.device.random import SeededRandom
    from emulator.errors import TransportError
    from emulator.transport import get_binding
    from fuzz.harness import (
        FUZZ_SEED,
        ContractViolation,
        FakeClock,
        check_device_clean,
        check_spdm_message,
        fuzz_device,
        log_to_sink,
        split_messages,
    )

BINDING_NAMES = ("doe", "mctp", "none")


#: DOE discovery (PCIe r6 6.30.1.1): index -> (vendor ID, data object protocol, next index)
DOE_PROTOCOLS = {0: (0x0001, 0x00, 1), 1: (0x0001, 0x01, 2), 2: (0x0001, 0x02, 0)}


def check_doe_discovery(request: bytes, reply: bytes) -> None:
    """A DOE discovery response: only for a discovery request, listing discovery, CMA/SPDM
    and secured CMA/SPDM (vendor 0xFFFF / type 0xFF past the end, as QEMU answers)."""
    if not (len(request) >= 12 and request[:4] == b"\x01\x00\x00\x00"):
        raise ContractViolation(
            f"DOE discovery reply to a request that is not a discovery request\n"
            f"  request {request.hex()}\n  reply   {reply.hex()}"
        )
    index = request[8]
    vendor, protocol, following = DOE_PROTOCOLS.get(index, (0xFFFF, 0xFF, 0))
    want = struct.pack("<HBBIHBB", 0x0001, 0x00, 0, 3, vendor, protocol, following)
    if reply != want:
        raise ContractViolation(
            f"DOE discovery index {index}: reply {reply.hex()}, expected {want.hex()}"
        )


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    binding = get_binding(BINDING_NAMES[data[0] % len(BINDING_NAMES)])
    device = fuzz_device()
    versions = [int(v) for v in device.versions]
    listeners = len(device.listeners)
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
            if binding.answer_discovery(payload) is not None:  # a discovery request
                check_doe_discovery(payload, out)
                continue
            message = binding.decode(out)
            if not message.secured:  # (DOE padding included: the header is what is checked)
                check_spdm_message(message.message, versions, payload)
    conn.close()
    check_device_clean(device, listeners)


def main() -> None:
    import atheris

    log_to_sink()

    fuzz_device()
    warn_uninstrumented()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
