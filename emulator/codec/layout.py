"""A thin, typed wrapper around compiled construct structs.

construct interprets its structs slowly; every layout here is compiled once at
import time (``Struct.compile()``) and the compiled parser/builder is what the
request path uses.  Parse errors become :class:`~emulator.errors.CodecError`.
"""

from __future__ import annotations

import struct
from typing import Any

import construct as cs

from emulator.errors import CodecError


class Layout:
    """One message layout: a name, a construct ``Struct`` and its compiled form."""

    __slots__ = ("_compiled", "fixed_size", "name", "struct")

    def __init__(self, name: str, struct: cs.Construct) -> None:
        self.name = name
        self.struct = struct
        self._compiled = struct.compile()
        try:
            size: int | None = struct.sizeof()
        except cs.SizeofError:
            size = None
        self.fixed_size = size

    def parse(self, data: bytes) -> Any:
        """Parse ``data`` (trailing bytes are ignored, as for DOE padding)."""
        if self.fixed_size is not None and len(data) < self.fixed_size:
            raise CodecError(f"{self.name}: {len(data)} bytes, the layout needs {self.fixed_size}")
        try:
            return self._compiled.parse(data)
        except (cs.ConstructError, struct.error, ValueError, IndexError, OverflowError) as exc:
            # the compiled parser raises struct.error where the interpreter raises StreamError
            raise CodecError(f"{self.name}: truncated or malformed ({exc})") from exc

    def build(self, **fields: Any) -> bytes:
        """Build the message from named fields (all fields must be given)."""
        try:
            out: bytes = self._compiled.build(fields)
        except (cs.ConstructError, ValueError, KeyError, TypeError, OverflowError) as exc:
            raise CodecError(f"{self.name}: cannot build: {exc}") from exc
        return out

    def sizeof(self, **context: Any) -> int:
        return int(self.struct.sizeof(**context))
