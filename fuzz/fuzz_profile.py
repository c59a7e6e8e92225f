#!/usr/bin/env python3
"""Fuzz the profile loader: TOML text -> validated Profile or ProfileError (atheris).

Input: byte 0 picks the mode.

* even: the rest is TOML text (UTF-8) given to ``load_profile_text`` (relative file names
  resolve against the shipped ``profiles/`` directory);
* odd: structured: a shipped profile (byte 1 picks which) is parsed, then edited by the
  rest of the input (each edit: a path into the document, a value of a chosen type) and
  validated with ``profile_from_dict`` - this reaches the semantic checks that random
  text rarely does.

Checked: only :class:`~emulator.errors.ProfileError` escapes; a profile that validates
builds a :class:`~emulator.device.model.Device`, and that device completes VCA with a
permissive requester with every response inside the contract of :mod:`fuzz.harness`
(a validated profile must never give a device that breaks at run time).

    python3 fuzz/fuzz_profile.py -runs=20000 -dict=fuzz/profile.dict fuzz/corpus/profile
"""

from __future__ import annotations

import contextlib
import copy
import functools
import sys
import tomllib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzz.instrument import instrumented, warn_uninstrumented

with instrumented(__name__ == "__main__"):
    from emulator.codec.constants import (
        AeadSuite,
        BaseAsymAlgo,
        BaseHashAlgo,
        DheGroup,
        MeasurementHashAlgo,
        ResponderCap,
    )
    from emulator.device.model import Device
    from emulator.errors import ProfileError
    from emulator.profiles import PROFILES_DIR, Profile, load_profile_text, profile_from_dict
    from fuzz.harness import ResponderHarness, log_to_sink, vca_requests

#: file-reading keys are pointed only at files under profiles/ and certs/ (a profile may
#: name any file; reading /dev/zero is the operator's choice, not an input bug)
_FILE_KEYS = frozenset({"file", "chain", "key", "cert", "path"})


@functools.cache
def shipped() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(PROFILES_DIR.glob("*.toml")):
        with contextlib.suppress(OSError, tomllib.TOMLDecodeError):
            out.append((path.name, tomllib.loads(path.read_text(encoding="utf-8"))))
    return out


@functools.cache
def vocabulary() -> tuple[str, ...]:
    """Names a profile may use: capability and algorithm names, versions, keys."""
    words: list[str] = ["1.0", "1.1", "1.2", "1.3", "1.4", "DMTF", "SPDM", "", "x"]
    for enum in (
        ResponderCap,
        BaseAsymAlgo,
        BaseHashAlgo,
        MeasurementHashAlgo,
        DheGroup,
        AeadSuite,
    ):
        words += list(enum.__members__)
    for _, doc in shipped():
        words += list(_keys(doc))
    return tuple(dict.fromkeys(words))


def _keys(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = list(node)
        for v in node.values():
            out += _keys(v)
        return out
    if isinstance(node, list):
        return [k for item in node for k in _keys(item)]
    return []


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


class _Bytes:
    """A tiny consumer over the input (atheris's provider is not available under pytest)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def int(self, size: int) -> int:
        return int.from_bytes(bytes(self.byte() for _ in range(size)), "little", signed=True)

    def text(self) -> str:
        n = self.byte() % 24
        raw = bytes(self.byte() for _ in range(n))
        return raw.decode("utf-8", "replace")

    @property
    def left(self) -> bool:
        return self.pos < len(self.data)


def _value(src: _Bytes, depth: int = 0) -> Any:
    kind = src.byte() % 10
    words = vocabulary()
    if kind == 0:
        return src.int(1)
    if kind == 1:
        return src.int(4)
    if kind == 2:
        return src.int(8)
    if kind == 3:
        return bool(src.byte() & 1)
    if kind == 4:
        return src.text()
    if kind == 5:
        return words[src.byte() % len(words)]
    if kind == 6 and depth < 2:
        return [_value(src, depth + 1) for _ in range(src.byte() % 4)]
    if kind == 7:
        return [words[src.byte() % len(words)] for _ in range(src.byte() % 6)]
    if kind == 8 and depth < 2:
        return {words[src.byte() % len(words)]: _value(src, depth + 1)}
    return src.int(2) / 7.0


def _set(doc: dict[str, Any], path: tuple[Any, ...], value: Any, delete: bool) -> None:
    if not path:
        return
    node: Any = doc
    for part in path[:-1]:
        node = node[part]
    last = path[-1]
    if isinstance(node, dict) and isinstance(last, str):
        if last in _FILE_KEYS and not isinstance(value, bool):
            return
        if delete:
            node.pop(last, None)
        else:
            node[last] = value
    elif isinstance(node, list) and isinstance(last, int):
        if delete:
            del node[last]
        else:
            node[last] = value


def structured(data: bytes) -> dict[str, Any] | None:
    docs = shipped()
    if not docs:
        return None
    src = _Bytes(data)
    doc = copy.deepcopy(docs[src.byte() % len(docs)][1])
    for _ in range(8):
        if not src.left:
            break
        paths = _paths(doc)
        path = paths[src.byte() % len(paths)]
        op = src.byte() % 4
        if op == 3 and isinstance(doc_at(doc, path), dict):
            words = vocabulary()
            path = (*path, words[src.byte() % len(words)])
        _set(doc, path, _value(src), delete=op == 0)
    return doc


def doc_at(doc: dict[str, Any], path: tuple[Any, ...]) -> Any:
    node: Any = doc
    for part in path:
        node = node[part]
    return node


def cache_chain_loading() -> None:
    """Memoise certificate-chain loading by path (fuzzing only).

    Loading a slot's PEM key validates it (about 50 ms for an RSA key, 0.6 s for the
    default profile's 11 slots): the target would run at 2 exec/s.  The files do not change
    during a campaign, so reading each once is equivalent.
    """
    from emulator.device import identity

    original = getattr(identity, "load_chain", None)
    if original is None or hasattr(original, "cache_info"):
        return

    @functools.lru_cache(maxsize=256)
    def cached(path: str, verify: bool) -> Any:
        return original(path, verify=verify)

    def load_chain(slot_dir: Any, *, verify: bool = True) -> Any:
        return cached(str(Path(slot_dir).resolve()), verify)

    load_chain.cache_info = cached.cache_info  # type: ignore[attr-defined]
    setattr(identity, "load_chain", load_chain)  # noqa: B010 (a re-exported name)


def check_device(profile: Profile) -> None:
    """A validated profile builds a device that negotiates within the contract.

    Building the device may still reject the profile with a ProfileError (slots and keys are
    checked against the algorithms then); any other exception is a finding.
    """
    try:
        device = Device.from_profile(profile)
    except ProfileError:
        return
    for version in device.versions:
        harness = ResponderHarness(device=device)
        for request in vca_requests(int(version)):
            harness.send(request)
        harness.close()


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    cache_chain_loading()
    if data[0] % 2 == 0:
        try:
            text = data[1:].decode("utf-8")
        except UnicodeDecodeError:
            return
        try:
            profile = load_profile_text(text, "<fuzz>", base_dir=PROFILES_DIR)
        except ProfileError:
            return
    else:
        doc = structured(data[1:])
        if doc is None:
            return
        try:
            profile = profile_from_dict(doc, "<fuzz>")
        except ProfileError:
            return
        profile._base_dir = PROFILES_DIR
    check_device(profile)


def main() -> None:
    import atheris

    log_to_sink()

    vocabulary()
    warn_uninstrumented()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
