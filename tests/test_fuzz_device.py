"""The fuzz device is shared by every input of a fuzz target's process: what an input
changes on it device-wide (an IDE key programmed, a TDI locked, CXL keys and TSP state)
is put back after the input, so that the answers to an input do not depend on the inputs
before it and a finding reproduces from its input alone (fuzz/harness.py
``put_back_device_state``)."""

from __future__ import annotations

import dataclasses
import enum
import struct
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from emulator.codec.constants import ErrorCode, RequestCode, ResponseCode
from emulator.codec.tdisp import TdiState
from emulator.events import ExchangeEvent
from fuzz.harness import (
    ConnectionHarness,
    device_parts,
    fuzz_device,
    join_messages,
    put_back_device_state,
    record_session,
    run_sequence,
    selector_of,
    snapshot,
)

VERSION = 0x12
KEY_PROG, K_SET_GO = 2, 4
#: stream 3, KeySubStream 0x00 (key set 0, Rx, PR), port 0
STREAM, KSS, PORT = 3, 0x00, 0


def ide_km(message: bytes) -> bytes:
    """VENDOR_DEFINED_REQUEST (PCI-SIG, protocol 0: IDE_KM) carrying ``message``."""
    payload = b"\x00" + message
    return (
        bytes((VERSION, RequestCode.VENDOR_DEFINED_REQUEST, 0, 0))
        + struct.pack("<HB", 3, 2)
        + b"\x01\x00"
        + struct.pack("<H", len(payload))
        + payload
    )


KEY_PROG_REQUEST = ide_km(
    bytes((KEY_PROG, 0, 0, STREAM, 0, KSS, PORT)) + bytes(range(32)) + bytes(range(8))
)
K_SET_GO_REQUEST = ide_km(bytes((K_SET_GO, 0, 0, STREAM, 0, KSS, PORT)))


def session_input(*requests: bytes) -> bytes:
    """A responder-target input: the 1.2 session prefix, then ``requests`` in it."""
    return bytes((selector_of("session", VERSION),)) + join_messages((q, True) for q in requests)


def answers(*requests: bytes) -> list[bytes | None]:
    """The responder's plain answers to ``requests`` sent in a copy of the session prefix,
    as an input of the target sees it (no put-back in between)."""
    prefix = record_session(VERSION)
    assert prefix is not None
    harness = snapshot(prefix)
    assert isinstance(harness, ConnectionHarness)
    seen: list[ExchangeEvent] = []
    harness.connection.observers.append(seen.append)
    try:
        for request in requests:
            harness.send(request, in_session=True)
    finally:
        harness.close()
    return [event.response for event in seen]


@pytest.fixture(autouse=True)
def pristine_device() -> Iterator[None]:
    """Each test starts and ends with the shared fuzz device as it was made."""
    put_back_device_state(fuzz_device())
    yield
    put_back_device_state(fuzz_device())


def test_an_ide_key_one_input_programs_is_gone_for_the_next() -> None:
    device = fuzz_device()
    assert device.ide_km is not None and not device.ide_km.slots
    # without an input before it, K_SET_GO finds no key: ERROR(InvalidRequest)
    (alone,) = answers(K_SET_GO_REQUEST)
    assert alone is not None and alone[1] == ResponseCode.ERROR
    assert alone[2] == ErrorCode.InvalidRequest
    # one input programs the key (the KP_ACK says so) ...
    (ack,) = answers(KEY_PROG_REQUEST)
    assert ack is not None and ack[1] == ResponseCode.VENDOR_DEFINED_RESPONSE
    assert device.ide_km.slots  # the device-wide slot holds it now
    assert put_back_device_state(device) == 1
    assert not device.ide_km.slots
    # ... and as the target runs it, the next input does not see it
    run_sequence(session_input(KEY_PROG_REQUEST))
    assert not device.ide_km.slots
    assert answers(K_SET_GO_REQUEST) == [alone]


def test_the_key_stays_within_its_own_input() -> None:
    """Inside one input the device keeps what its requests did (K_SET_GO after KEY_PROG
    succeeds): only the next input starts again."""
    ack, go = answers(KEY_PROG_REQUEST, K_SET_GO_REQUEST)
    assert ack is not None and go is not None
    assert go[1] == ResponseCode.VENDOR_DEFINED_RESPONSE
    assert put_back_device_state(fuzz_device()) == 1


def _changes(device: Any) -> None:
    """A change to every part put back, as requests make them."""
    assert device.ide_km is not None and device.tdisp is not None
    assert device.cxl_ide_km is not None and device.cxl_tsp is not None
    device.ide_km.slots[(0, 1, True, 0)] = object()
    tdi = next(iter(device.tdisp.interfaces.values()))
    tdi.state = TdiState.ERROR
    tdi.non_tee[0] = True
    tdi.p2p_streams.add(5)
    tdi.nonce = bytes(32)
    device.cxl_ide_km.keys[(0, 1)] = object()
    device.cxl_tsp.te_states[1] = 1
    device.cxl_tsp.primary_alive = True


def test_every_part_is_put_back_as_it_was_made() -> None:
    device = fuzz_device()
    before = fingerprint(device)
    parts = device_parts(device)
    _changes(device)
    assert fingerprint(device) != before
    assert put_back_device_state(device) == len(parts) == 4
    assert fingerprint(device) == before
    assert device_parts(device) == parts  # the same objects, changed back in place
    assert put_back_device_state(device) == 0
    # what was put back is a copy: changing it again leaves the saved state alone
    _changes(device)
    assert put_back_device_state(device) == 4
    assert fingerprint(device) == before


def _corpus() -> list[bytes]:
    import tempfile

    from fuzz.make_corpus import make

    with tempfile.TemporaryDirectory() as tmp:
        make(Path(tmp))
        return [p.read_bytes() for p in sorted((Path(tmp) / "responder").iterdir())]


def test_no_input_leaves_the_device_changed() -> None:
    """The seed corpus and inputs that change IDE keys: after each one, nothing on the
    whole device differs from before (not only the parts put back)."""
    device = fuzz_device()
    before = fingerprint(device)
    inputs = [*_corpus(), session_input(KEY_PROG_REQUEST, K_SET_GO_REQUEST)]
    inputs.append(session_input(KEY_PROG_REQUEST))
    for data in inputs:
        run_sequence(data)
        assert fingerprint(device) == before, data.hex()


def fingerprint(obj: Any) -> Any:
    """The whole state reachable from ``obj`` as nested tuples (configuration, keys and
    callbacks by identity), independent of the harness's own copy code."""
    return _print(obj, set())


#: attributes that memoize what is derived from the rest (filled on first use)
_CACHES = {"_cache", "_encoded"}


def _print(obj: Any, seen: set[int]) -> Any:
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, enum.Enum)):
        return obj
    if isinstance(obj, (bytearray, memoryview)):
        return ("bytes", bytes(obj))
    if isinstance(obj, types.MethodType):
        return ("method", id(obj.__func__), id(obj.__self__))
    if isinstance(obj, BaseModel) or (callable(obj) and not dataclasses.is_dataclass(obj)):
        return ("id", id(obj))
    if id(obj) in seen:
        return ("seen", id(obj))
    seen.add(id(obj))
    if isinstance(obj, dict):
        return ("dict", tuple(sorted((repr(k), _print(v, seen)) for k, v in obj.items())))
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, tuple(_print(v, seen) for v in obj))
    if isinstance(obj, (set, frozenset)):
        return ("set", tuple(sorted(repr(v) for v in obj)))
    fields = getattr(obj, "__dict__", None)
    if fields is None and hasattr(type(obj), "__slots__"):
        names = [n for k in type(obj).__mro__ for n in getattr(k, "__slots__", ())]
        fields = {n: getattr(obj, n) for n in names if hasattr(obj, n)}
    if fields is None:
        return ("id", id(obj))  # keys, locks, other native objects
    skip = {"listeners", "session_hooks", "lock", "_lock", *_CACHES}
    return (
        type(obj).__name__,
        tuple((k, _print(v, seen)) for k, v in sorted(fields.items()) if k not in skip),
    )
