"""Copies of a connection's state for the fuzz targets (fuzz/harness.py ``snapshot``).

Bringing a fresh connection to a deep state replays requests (KEY_EXCHANGE and FINISH for
an established session, CHALLENGE for an authenticated one); a copy of the state they
leave costs a few dozen object copies instead.  :func:`copy_state` is a deep copy
specialised for these graphs of small dataclasses, several times faster than
``copy.deepcopy``.  This module is excluded from atheris instrumentation: it is harness
plumbing, not code under test (its branches would only slow every execution down).
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import types
from typing import Any

from emulator.session.table import SessionTable

__all__ = ["copy_state"]


def copy_state(obj: Any, memo: dict[int, Any]) -> Any:
    """A deep copy of ``obj``; ``memo`` maps the ids of objects to share (the device...)."""
    return _copy(obj, memo)


#: values shared by a copy as they are (immutable)
_ATOMIC: set[type] = {int, float, str, bytes, bool, type(None), frozenset, type}
_ATOMIC |= {types.FunctionType, types.BuiltinFunctionType}
#: per class: the attribute names to copy (dataclass fields / __slots__), None: not a
#: plain object (copy.deepcopy does it), or a frozen dataclass (shared)
_LAYOUT: dict[type, tuple[str, ...] | None] = {}
_FROZEN: set[type] = set()


def _copy(obj: Any, memo: dict[int, Any]) -> Any:
    """A deep copy of a connection's state, several times faster than ``copy.deepcopy``
    on these graphs of small dataclasses: immutable values are shared (frozen
    dataclasses and enum members included), objects with ``__deepcopy__`` copy
    themselves, others are rebuilt attribute by attribute; ``memo`` maps what must be
    shared, or was copied already."""
    cls = type(obj)
    if cls in _ATOMIC or cls in _FROZEN:
        return obj
    found = memo.get(id(obj))
    if found is not None:
        return found
    atomic = _ATOMIC
    out: Any
    if cls is bytearray:
        out = bytearray(obj)
    elif cls is list:
        out = []
        memo[id(obj)] = out
        out.extend(v if type(v) in atomic else _copy(v, memo) for v in obj)
        return out
    elif cls is dict:
        out = {}
        memo[id(obj)] = out
        for k, v in obj.items():
            out[k if type(k) in atomic else _copy(k, memo)] = (
                v if type(v) in atomic else _copy(v, memo)
            )
        return out
    elif cls is tuple:
        out = tuple(v if type(v) in atomic else _copy(v, memo) for v in obj)
    elif isinstance(obj, tuple):  # named tuples (immutable, their items may not be)
        values = [v if type(v) in atomic else _copy(v, memo) for v in obj]
        out = cls._make(values) if hasattr(cls, "_make") else cls(values)
    elif cls is types.MethodType:
        out = types.MethodType(obj.__func__, _copy(obj.__self__, memo))
    elif cls is SessionTable:
        out = _copy_table(obj, memo)
    elif isinstance(obj, enum.Enum):
        return obj
    elif hasattr(cls, "__deepcopy__"):
        out = obj.__deepcopy__(memo)
    else:
        names = _LAYOUT.get(cls, _UNKNOWN)
        if names is _UNKNOWN:
            names = _LAYOUT[cls] = _names_of(obj)
            if cls in _FROZEN:
                return obj
        if names is None:
            return copy.deepcopy(obj, memo)
        out = object.__new__(cls)
        memo[id(obj)] = out
        setattr_ = object.__setattr__
        for name in names:
            try:
                value = getattr(obj, name)
            except AttributeError:
                continue
            setattr_(out, name, value if type(value) in atomic else _copy(value, memo))
        extra = getattr(obj, "__dict__", None)
        if extra is not None:  # instance attributes set outside the class layout
            for name, value in extra.items():
                if name not in names:
                    setattr_(out, name, value if type(value) in atomic else _copy(value, memo))
        return out
    memo[id(obj)] = out
    return out


_UNKNOWN: tuple[str, ...] = ("<unknown>",)


def _copy_table(table: SessionTable, memo: dict[int, Any]) -> SessionTable:
    """A session table's copy listens to the device as the original does."""
    out = SessionTable(table.settings)
    memo[id(table)] = out
    out.sessions = {sid: _copy(session, memo) for sid, session in table.sessions.items()}
    out.latest_session_id = table.latest_session_id
    out.runtime_update_pending = table.runtime_update_pending
    if table._listeners is not None:
        out.listen(table._listeners)
    return out


def _names_of(obj: Any) -> tuple[str, ...] | None:
    """The attributes that make up an object of this class (None: not a plain object)."""
    cls = type(obj)
    if dataclasses.is_dataclass(cls):
        params = getattr(cls, "__dataclass_params__", None)
        if params is not None and params.frozen:
            _FROZEN.add(cls)
        return tuple(f.name for f in dataclasses.fields(cls))
    slots: list[str] = []
    for klass in cls.__mro__:
        names = getattr(klass, "__slots__", ())
        slots += [n for n in names if n not in ("__dict__", "__weakref__")]
    if hasattr(obj, "__dict__") or slots:
        return tuple(slots)
    return None


def memoize_signatures(limit: int = 4096) -> None:
    """Remember signatures of the deterministic algorithms (ECDSA with RFC 6979, RSASSA,
    EdDSA: the same key and data always give the same bytes) for the rest of the process,
    so that flows every input replays (CHALLENGE, signed MEASUREMENTS, KEY_EXCHANGE under
    the fuzz seed) do not sign again.  RSAPSS, randomised, is never remembered.  For the
    fuzz targets' processes only (``main``), not for tests."""
    import emulator.crypto.asym as asym
    from emulator.codec.constants import BaseAsymAlgo

    real = asym._sign
    if getattr(real, "memoized", False):
        return
    cache: dict[tuple[Any, ...], bytes] = {}
    randomised = {int(BaseAsymAlgo.RSAPSS_2048), int(BaseAsymAlgo.RSAPSS_3072)}
    randomised.add(int(BaseAsymAlgo.RSAPSS_4096))

    def sign(
        asym_algo: int,
        hash_algo: int,
        key: Any,
        data: bytes,
        prehashed: bool,
        ed448_context: bytes,
    ) -> bytes:
        if asym_algo in randomised:
            return real(asym_algo, hash_algo, key, data, prehashed, ed448_context)
        # the key object itself (hashable by identity, kept alive by the entry)
        entry = (asym_algo, hash_algo, key, bytes(data), prehashed, bytes(ed448_context))
        found = cache.get(entry)
        if found is None:
            found = real(asym_algo, hash_algo, key, data, prehashed, ed448_context)
            if len(cache) >= limit:
                cache.pop(next(iter(cache)))
            cache[entry] = found
        return found

    sign.memoized = True  # type: ignore[attr-defined]
    asym._sign = sign  # type: ignore[assignment]
