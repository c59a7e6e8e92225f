"""Injected randomness (ARCHITECTURE "Rules of the core": no ``os.urandom`` in the core).

A :class:`RandomSource` is any callable ``(n) -> n bytes``.  Production uses
:class:`SystemRandom`; deterministic runs (CI, fuzz replay) use
:class:`SeededRandom`, a SHA-256 counter-mode stream keyed by a seed and a label,
so that the same seed and the same requests give the same bytes.
"""

from __future__ import annotations

import hashlib
import os
from typing import Protocol


class RandomSource(Protocol):
    """A source of random bytes."""

    def __call__(self, n: int) -> bytes: ...


class SystemRandom:
    """Random bytes from the operating system."""

    def __call__(self, n: int) -> bytes:
        return os.urandom(n)


class SeededRandom:
    """Deterministic byte stream: SHA-256(seed || label || counter) blocks.

    Not for production secrets; it exists so that fixed-nonce, fixed-key runs are
    reproducible; streams with different labels are independent.
    """

    def __init__(self, seed: int | bytes, label: str = "") -> None:
        self._seed = seed if isinstance(seed, bytes) else str(seed).encode()
        self._label = label.encode()
        self._counter = 0
        self._buffer = b""

    def __call__(self, n: int) -> bytes:
        while len(self._buffer) < n:
            block = hashlib.sha256(
                self._seed + b"\x00" + self._label + b"\x00" + self._counter.to_bytes(8, "big")
            ).digest()
            self._counter += 1
            self._buffer += block
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out
