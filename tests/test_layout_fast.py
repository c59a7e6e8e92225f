"""The ``struct`` fast path of every codec layout against its construct definition.

:class:`emulator.codec.layout.Layout` parses and builds with a :class:`struct.Struct`
derived from the construct ``Struct`` (the readable reference).  For every layout the
codec defines, hypothesis draws field values and byte strings: both paths must build the
same bytes, parse the same values, and refuse the same inputs.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import construct as cs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import emulator.codec
from emulator.codec.layout import LAYOUTS, Layout
from emulator.errors import CodecError

for _module in pkgutil.iter_modules(emulator.codec.__path__):
    importlib.import_module(f"emulator.codec.{_module.name}")

#: (bits, signed) of the construct integer fields the layouts use
_INT_RANGES = {"B": (8, False), "H": (16, False), "L": (32, False), "I": (32, False)}
_INT_RANGES |= {"Q": (64, False), "b": (8, True), "h": (16, True), "l": (32, True)}
_INT_RANGES |= {"i": (32, True), "q": (64, True)}

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _int_bounds(sub: cs.Construct) -> tuple[int, int]:
    if isinstance(sub, cs.FormatField):
        bits, signed = _INT_RANGES[sub.fmtstr[-1]]
    else:
        assert isinstance(sub, cs.BytesInteger)
        bits, signed = 8 * sub.length, sub.signed
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _subcons(layout: Layout) -> list[tuple[str, cs.Construct]]:
    return [(sc.name, sc.subcon) for sc in layout.struct.subcons]


@st.composite
def field_values(draw: st.DrawFn, layout: Layout) -> dict[str, Any]:
    """Valid values for every field of ``layout`` (an array's count matches its items)."""
    values: dict[str, Any] = {}
    for name, sub in _subcons(layout):
        if isinstance(sub, cs.Array):
            count_name = repr(sub.count)[6:-2]
            items = draw(st.lists(st.integers(*_int_bounds(sub.subcon)), max_size=12))
            values[name] = items
            values[count_name] = len(items)
        elif isinstance(sub, cs.Bytes):
            values[name] = draw(st.binary(min_size=sub.length, max_size=sub.length))
        else:
            values[name] = draw(st.integers(*_int_bounds(sub)))
    return values


def _plain(parsed: Any, names: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        value = getattr(parsed, name)
        out[name] = list(value) if isinstance(value, list) else value
    return out


def test_every_layout_has_the_fast_path() -> None:
    assert len(LAYOUTS) >= 14
    slow = [layout.name for layout in LAYOUTS if not layout.fast]
    assert slow == [], f"layouts without a struct form: {slow}"


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.name)
@SETTINGS
@given(data=st.data())
def test_build_agrees_with_construct(layout: Layout, data: st.DataObject) -> None:
    values = data.draw(field_values(layout))
    reference = layout.struct.build(values)
    assert layout.build(**values) == reference
    # and the bytes parse back to the same values on both paths
    names = layout.field_names
    assert _plain(layout.parse(reference), names) == _plain(layout.struct.parse(reference), names)


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.name)
@SETTINGS
@given(data=st.data())
def test_parse_agrees_with_construct(layout: Layout, data: st.DataObject) -> None:
    size = layout.fixed_size if layout.fixed_size is not None else 8
    raw = data.draw(st.binary(max_size=size + 40))
    try:
        expected = layout.struct.parse(raw)
    except cs.ConstructError:
        with pytest.raises(CodecError):
            layout.parse(raw)
        return
    if layout.fixed_size is not None and len(raw) < layout.fixed_size:  # pragma: no cover
        pytest.fail("construct parsed a short input")
    names = layout.field_names
    assert _plain(layout.parse(raw), names) == _plain(expected, names)


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.name)
@SETTINGS
@given(data=st.data())
def test_bad_values_are_refused_on_both_paths(layout: Layout, data: st.DataObject) -> None:
    values = data.draw(field_values(layout))
    name, sub = data.draw(st.sampled_from(_subcons(layout)))
    if isinstance(sub, cs.Array):
        values[name] = [*values[name], 0]  # one item more than the count says
    elif isinstance(sub, cs.Bytes):
        values[name] = bytes(sub.length + data.draw(st.sampled_from([-1, 1])))
    else:
        low, high = _int_bounds(sub)
        values[name] = data.draw(st.sampled_from([low - 1, high + 1]))
    if isinstance(sub, cs.Bytes) and sub.length == 0:
        values[name] = b"\x00"
    with pytest.raises(cs.ConstructError):
        layout.struct.build(values)
    with pytest.raises(CodecError):
        layout.build(**values)
    missing = dict(values)
    del missing[name]
    with pytest.raises(CodecError):
        layout.build(**missing)
