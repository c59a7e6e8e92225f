"""Copies of a connection's state for the fuzz targets (fuzz/harness.py ``snapshot``).

Bringing a fresh connection to a deep state replays requests (KEY_EXCHANGE and FINISH for
an established session, CHALLENGE for an authenticated one); a copy of the state they
leave costs a few dozen object copies instead.  :func:`copy_state` is a deep copy
specialised for these graphs of small dataclasses, several times faster than
``copy.deepcopy``.  This module is excluded from atheris instrumentation: it is harness
plumbing, not code under test (fuzz/instrument.py instruments the emulator package only).
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import types
from typing import Any

from emulator.session.table import DirectionKeys, SessionTable

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


# ---- copiers compiled for one template ---------------------------------------------------


class Copier:
    """A copy function specialised for one template graph (:func:`compile_copier`)."""

    def __init__(self, fn: Any, sources: tuple[Any, ...], shared: dict[int, Any]) -> None:
        self._fn = fn
        self._sources = sources
        self._shared = shared

    def __call__(self) -> Any:
        return self._fn(self._sources, self._shared)


def compile_copier(root: Any, shared: dict[int, Any]) -> Copier:
    """A function that makes what :func:`copy_state` makes of ``root``, with the walk of
    the graph done once, here: the template must not change afterwards (its session
    tables must not listen to the device: a copy's table listens instead, as
    ``listen_to`` says).  Several times faster than :func:`copy_state` on a connection
    (no per-object type dispatch, no memo lookups at copy time)."""
    return _Compiler(shared).compile(root)


#: classes whose ``__deepcopy__`` is a copy of the fields, each shared (the copier does that
#: itself: the method is instrumented emulator code); tests/test_fuzz_snapshot.py checks it
SHALLOW: frozenset[type] = frozenset({DirectionKeys})

#: id(session table of a template) -> the device listener list its copies listen to
listen_to: dict[int, list[Any]] = {}


class _Compiler:
    def __init__(self, shared: dict[int, Any]) -> None:
        self.shared = shared
        self.sources: list[Any] = []
        self.names: dict[int, str] = {}
        self.create: list[str] = []  # objects made empty or from leaves
        self.build: list[str] = []  # immutable containers of copies (after create)
        self.fill: list[str] = []  # attributes and items that are copies
        self.after: list[str] = []  # session tables start listening

    def source(self, obj: Any) -> str:
        self.sources.append(obj)
        return f"S[{len(self.sources) - 1}]"

    def ref(self, obj: Any) -> str:
        """An expression for the copy of ``obj`` (shared and immutable values: obj)."""
        cls = type(obj)
        if cls in _ATOMIC or cls in _FROZEN or isinstance(obj, enum.Enum):
            return self.source(obj)
        if id(obj) in self.shared:
            return self.source(self.shared[id(obj)])
        name = self.names.get(id(obj))
        if name is not None:
            return name
        plain = cls not in (bytearray, list, dict, tuple, types.MethodType, SessionTable)
        if plain and not (isinstance(obj, tuple) or hasattr(cls, "__deepcopy__")):
            if _LAYOUT.get(cls, _UNKNOWN) is _UNKNOWN:
                _LAYOUT[cls] = _names_of(obj)
            if cls in _FROZEN:
                return self.source(obj)
        name = self.names[id(obj)] = f"o{len(self.names)}"
        self.sources.append(obj)  # keeps ids valid while the copier lives
        self._emit(obj, name)
        return name

    def _emit(self, obj: Any, name: str) -> None:
        cls = type(obj)
        src = self.source(obj)
        if cls is bytearray:
            self.create.append(f"{name} = bytearray({src})")
        elif cls is list and all(type(v) in _ATOMIC for v in obj):
            self.create.append(f"{name} = list({src})")
        elif cls is list:
            self.create.append(f"{name} = []")
            items = ", ".join(self.ref(v) for v in obj)
            self.fill.append(f"{name}.extend(({items}{',' if obj else ''}))")
        elif cls is dict:
            self.create.append(f"{name} = {src}.copy()")
            for k, v in obj.items():
                if type(k) not in _ATOMIC and not isinstance(k, enum.Enum):
                    raise TypeError(f"dict key {k!r} is not immutable")
                value = self.ref(v) if type(v) not in _ATOMIC else None
                if value is not None and not value.startswith("S["):  # a copy, not shared
                    self.fill.append(f"{name}[{self.source(k)}] = {value}")
        elif isinstance(obj, tuple):
            items = ", ".join(self.ref(v) for v in obj)
            made = f"({items}{',' if len(obj) == 1 else ''})"
            if cls is not tuple:
                made = f"{self.source(cls)}._make({made})"
            self.build.append(f"{name} = {made}")
        elif cls is types.MethodType:
            func, owner = self.source(obj.__func__), self.ref(obj.__self__)
            self.build.append(f"{name} = MethodType({func}, {owner})")
        elif cls is SessionTable:
            self._object(obj, name, src)
            listeners = listen_to.get(id(obj))
            if obj._listeners is not None:
                raise TypeError("a template's session table listens to the device")
            if listeners is not None:
                self.after.append(f"{name}.listen({self.source(listeners)})")
        elif cls in SHALLOW:
            self.create.append(f"{name} = new({self.source(cls)})")
            for attr in _names_of(obj) or ():
                self.fill.append(f"setattr_({name}, {attr!r}, {src}.{attr})")
        elif hasattr(cls, "__deepcopy__"):
            if obj.__deepcopy__({}) is obj:  # immutable
                self.create.append(f"{name} = {src}")
            else:
                self.create.append(f"{name} = {src}.__deepcopy__(dict(shared))")
        elif _LAYOUT[cls] is None:
            self.create.append(f"{name} = deepcopy({src}, dict(shared))")
        else:
            self._object(obj, name, src)

    def _object(self, obj: Any, name: str, src: str) -> None:
        cls = type(obj)
        self.create.append(f"{name} = new({self.source(cls)})")
        layout = _LAYOUT.get(cls) or ()
        if cls is SessionTable:
            layout = ()
        extra = getattr(obj, "__dict__", None)
        if extra is not None:
            self.create.append(f"{name}.__dict__.update({src}.__dict__)")
            for attr, value in extra.items():
                copied = self.ref(value) if type(value) not in _ATOMIC else None
                if copied is not None and not copied.startswith("S["):  # a copy, not shared
                    self.fill.append(f"{name}.__dict__[{attr!r}] = {copied}")
        for attr in layout:
            if extra is not None and attr in extra:
                continue
            try:
                value = getattr(obj, attr)
            except AttributeError:
                continue
            value_ref = f"{src}.{attr}" if type(value) in _ATOMIC else self.ref(value)
            self.fill.append(f"setattr_({name}, {attr!r}, {value_ref})")

    def compile(self, root: Any) -> Copier:
        top = self.ref(root)
        body = [*self.create, *self.build, *self.fill, *self.after, f"return {top}"]
        code = "def copier(S, shared):\n" + "".join(f"    {line}\n" for line in body)
        namespace: dict[str, Any] = {
            "new": object.__new__,
            "setattr_": object.__setattr__,
            "MethodType": types.MethodType,
            "deepcopy": copy.deepcopy,
        }
        exec(compile(code, f"<copier of {type(root).__name__}>", "exec"), namespace)
        return Copier(namespace["copier"], tuple(self.sources), self.shared)
