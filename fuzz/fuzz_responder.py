#!/usr/bin/env python3
"""Fuzz the responder core with SEQUENCES of requests (atheris).

Input: byte 0 picks a prefix (a real exchange recorded from the project's requester:
nothing, GET_VERSION, VCA at each version, and deeper flows as the request families
provide them); the rest is a list of messages, each a u16 LE header (bit 15: inside the
prefix's session; bits 14..0: length) and the message bytes.  Every response is checked
against the contract in :mod:`fuzz.harness`.

    python3 fuzz/fuzz_responder.py -runs=20000 fuzz/corpus/responder
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzz.instrument import instrumented, warn_uninstrumented

with instrumented(__name__ == "__main__"):
    from fuzz.harness import log_to_sink, prefixes, run_sequence, settle_heap
    from fuzz.snapshot import memoize_signatures


def TestOneInput(data: bytes) -> None:
    """One execution: a prefix, then up to MAX_MESSAGES requests, all checked."""
    run_sequence(data)


def main() -> None:
    import atheris

    log_to_sink()

    memoize_signatures()
    prefixes()  # record the prefixes once, before the fuzzer starts timing
    settle_heap()
    warn_uninstrumented()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
