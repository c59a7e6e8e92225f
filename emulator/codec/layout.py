"""A thin, typed wrapper around construct structs, with a ``struct`` fast path.

Every message layout is written once, as a construct ``Struct`` (the readable reference,
one line per field as the DSP0274 tables list them).  When a layout is made only of
fixed-size little-endian integers (``Int8ul`` .. ``Int64ul``, ``Int24ul``), ``Bytes(n)``
and at most one trailing ``Array(this.<count field>, <integer>)``, :class:`Layout`
derives a :class:`struct.Struct` from it at import time and parses and builds with that
(construct interprets even compiled structs slowly: ~55% of GET_VERSION's cost was
``Struct.build``).  Other layouts use construct's compiled struct.  ``LAYOUTS`` lists every
layout, so tests check that both paths agree byte for byte on each of them.

Parse errors and build errors become :class:`~emulator.errors.CodecError`.
"""

from __future__ import annotations

import operator
import struct
from collections import namedtuple
from collections.abc import Callable
from typing import Any

import construct as cs

from emulator.errors import CodecError

#: every Layout made so far (tests check the struct path against construct on each)
LAYOUTS: list[Layout] = []

# struct codes of the construct integer fields the fast path knows
_INT_CODES = {
    "<B": "B",
    "<H": "H",
    "<L": "I",
    "<I": "I",
    "<Q": "Q",
    "<b": "b",
    "<h": "h",
    "<l": "i",
    "<i": "i",
    "<q": "q",
}


class _Field:
    """One fixed-size field of the fast path: its struct code and, for the ones struct
    has no code for (24-bit integers), the conversion to and from ``Ns`` bytes."""

    __slots__ = ("code", "from_raw", "name", "size", "to_raw")

    def __init__(
        self,
        name: str,
        code: str,
        size: int,
        from_raw: Callable[[bytes], Any] | None = None,
        to_raw: Callable[[Any], bytes] | None = None,
    ) -> None:
        self.name = name
        self.code = code
        self.size = size
        self.from_raw = from_raw
        self.to_raw = to_raw


def _fast_field(name: str, sub: cs.Construct) -> _Field | None:
    if isinstance(sub, cs.FormatField) and sub.fmtstr in _INT_CODES:
        return _Field(name, _INT_CODES[sub.fmtstr], sub.length)
    if type(sub) is cs.Bytes and isinstance(sub.length, int):
        return _Field(name, f"{sub.length}s", sub.length)
    if type(sub) is cs.BytesInteger and isinstance(sub.length, int) and sub.swapped:
        size, signed = sub.length, sub.signed

        def from_raw(raw: bytes) -> int:
            return int.from_bytes(raw, "little", signed=signed)

        def to_raw(value: Any) -> bytes:
            return int(value).to_bytes(size, "little", signed=signed)

        return _Field(name, f"{size}s", size, from_raw, to_raw)
    return None


class _Plan:
    """The ``struct`` form of a layout: fixed fields, then an optional counted array."""

    __slots__ = (
        "array_count",
        "array_item",
        "array_name",
        "bytes_fields",
        "converted",
        "count_index",
        "fields",
        "getter",
        "names",
        "record",
        "struct",
        "to_raw",
    )

    def __init__(
        self,
        name: str,
        fields: list[_Field],
        array: tuple[str, str, struct.Struct] | None,
    ) -> None:
        self.fields = fields
        self.struct = struct.Struct("<" + "".join(f.code for f in fields))
        self.converted = [(i, f.from_raw) for i, f in enumerate(fields) if f.from_raw is not None]
        self.to_raw = [(i, f.to_raw) for i, f in enumerate(fields) if f.to_raw is not None]
        self.getter = _values_getter([f.name for f in fields])
        self.bytes_fields = [
            (f.name, f.size) for f in fields if f.code.endswith("s") and f.from_raw is None
        ]
        self.array_item: struct.Struct | None = None
        self.array_name = self.array_count = ""
        if array is not None:
            self.array_name, self.array_count, self.array_item = array
        self.names = tuple(f.name for f in fields) + ((self.array_name,) if array else ())
        self.count_index = self.names.index(self.array_count) if array else -1
        self.record: Any = _record_class(name, self.names)


def _values_getter(names: list[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """``fields -> (fields[n] for n in names)`` as a tuple, at C speed (KeyError if one
    is missing)."""
    if not names:
        return lambda _fields: ()
    getter = operator.itemgetter(*names)
    if len(names) > 1:
        return getter
    return lambda fields: (getter(fields),)


def _record_class(layout_name: str, names: tuple[str, ...]) -> type:
    """A named tuple type for parsed values, with ``Container``'s ``get``."""
    base = namedtuple("Record", names)  # type: ignore[misc]

    def get(self: Any, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    return type(f"{layout_name} record", (base,), {"__slots__": (), "get": get})


def _plan_of(name: str, layout: cs.Construct) -> _Plan | None:
    """The struct plan of a construct Struct, or None when it has a field the fast path
    does not know (then construct does the work)."""
    if not isinstance(layout, cs.Struct):
        return None
    fields: list[_Field] = []
    array: tuple[str, str, struct.Struct] | None = None
    subcons = list(layout.subcons)
    for index, sub in enumerate(subcons):
        if not isinstance(sub, cs.Renamed) or not sub.name or sub.name.startswith("_"):
            return None
        inner = sub.subcon
        if isinstance(inner, cs.Array) and index == len(subcons) - 1:
            item = _fast_field("item", inner.subcon)
            count = inner.count
            count_name = _path_name(count)
            if (
                item is None
                or item.from_raw is not None
                or count_name not in {f.name for f in fields}
            ):
                return None
            array = (sub.name, count_name, struct.Struct("<" + item.code))
            continue
        field = _fast_field(sub.name, inner)
        if field is None:
            return None
        fields.append(field)
    return _Plan(name, fields, array)


def _path_name(count: object) -> str:
    """``this.entry_count`` -> ``"entry_count"`` (construct ``Path`` expressions only)."""
    if type(count).__name__ != "Path":
        return ""
    text = repr(count)  # this['entry_count']
    if text.startswith("this['") and text.endswith("']") and text.count("'") == 2:
        return text[6:-2]
    return ""


class Layout:
    """One message layout: a name, a construct ``Struct`` and its fast form."""

    __slots__ = ("_compiled", "_plan", "fixed_size", "name", "struct")

    def __init__(self, name: str, struct: cs.Construct) -> None:
        self.name = name
        self.struct = struct
        self._compiled = struct.compile()
        try:
            size: int | None = struct.sizeof()
        except cs.SizeofError:
            size = None
        self.fixed_size = size
        self._plan = _plan_of(name, struct)
        LAYOUTS.append(self)

    @property
    def fast(self) -> bool:
        """Parsed and built with :mod:`struct` (else with construct's compiled struct)."""
        return self._plan is not None

    @property
    def field_names(self) -> tuple[str, ...]:
        """The field names, in wire order (the fast path's record fields)."""
        if self._plan is not None:
            return self._plan.names
        return tuple(sc.name for sc in self.struct.subcons if sc.name)

    def parse(self, data: bytes) -> Any:
        """Parse ``data`` (trailing bytes are ignored, as for DOE padding)."""
        plan = self._plan
        if plan is None:
            return self._parse_construct(data)
        head = plan.struct.size
        if len(data) < head:
            raise CodecError(f"{self.name}: {len(data)} bytes, the layout needs {head}")
        values: tuple[Any, ...] | list[Any] = plan.struct.unpack_from(data)
        if plan.converted:
            converted = list(values)
            for i, from_raw in plan.converted:
                converted[i] = from_raw(converted[i])
            values = converted
        item = plan.array_item
        if item is None:
            return plan.record._make(values)
        count = values[plan.count_index]
        end = head + count * item.size
        if len(data) < end:
            raise CodecError(
                f"{self.name}: truncated or malformed ({count} {plan.array_name} need "
                f"{end} bytes, got {len(data)})"
            )
        items = [v for (v,) in item.iter_unpack(data[head:end])]
        return plan.record._make((*values, items))

    def _parse_construct(self, data: bytes) -> Any:
        if self.fixed_size is not None and len(data) < self.fixed_size:
            raise CodecError(f"{self.name}: {len(data)} bytes, the layout needs {self.fixed_size}")
        try:
            return self._compiled.parse(data)
        except (cs.ConstructError, struct.error, ValueError, IndexError, OverflowError) as exc:
            # the compiled parser raises struct.error where the interpreter raises StreamError
            raise CodecError(f"{self.name}: truncated or malformed ({exc})") from exc

    def build(self, **fields: Any) -> bytes:
        """Build the message from named fields (all fields must be given)."""
        plan = self._plan
        if plan is None:
            return self._build_construct(fields)
        try:
            values: tuple[Any, ...] | list[Any] = plan.getter(fields)
        except KeyError as exc:
            raise CodecError(f"{self.name}: cannot build: no value for {exc}") from None
        for name, size in plan.bytes_fields:
            value = fields[name]
            if not isinstance(value, bytes | bytearray) or len(value) != size:
                raise CodecError(
                    f"{self.name}: cannot build: {name} must be {size} bytes, got {value!r:.40}"
                )
        try:
            if plan.to_raw:
                converted = list(values)
                for i, to_raw in plan.to_raw:
                    converted[i] = to_raw(converted[i])
                values = converted
            out = plan.struct.pack(*values)
            item = plan.array_item
            if item is not None:
                items = fields.get(plan.array_name)
                if items is None:
                    raise CodecError(f"{self.name}: cannot build: no value for {plan.array_name}")
                count = fields[plan.array_count]
                if len(items) != count:
                    raise CodecError(
                        f"{self.name}: cannot build: {plan.array_count} is {count}, "
                        f"{len(items)} {plan.array_name} given"
                    )
                out += struct.pack(f"<{count}{item.format[1:]}", *items)
        except (struct.error, ValueError, TypeError, OverflowError) as exc:
            raise CodecError(f"{self.name}: cannot build: {exc}") from None
        return out

    def _build_construct(self, fields: dict[str, Any]) -> bytes:
        try:
            out: bytes = self._compiled.build(fields)
        except (
            cs.ConstructError,
            struct.error,
            ValueError,
            KeyError,
            TypeError,
            IndexError,
            OverflowError,
        ) as exc:
            raise CodecError(f"{self.name}: cannot build: {exc}") from exc
        return out

    def sizeof(self, **context: Any) -> int:
        return int(self.struct.sizeof(**context))
