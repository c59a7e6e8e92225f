"""The fuzz harness's snapshots: a copy of a connection brought to a prefix behaves exactly
as a connection that replayed the prefix, copies are independent, and the contract is
checked on every exchange of the connection glue (session stages) too."""

from __future__ import annotations

import copy
import enum
import types

import pytest

from emulator.codec.constants import RequestCode
from emulator.responder.core import Outcome
from fuzz.harness import (
    ConnectionHarness,
    ContractViolation,
    ResponderHarness,
    _memo,
    choose_prefix,
    record_session,
    run_sequence,
    selector_of,
    snapshot,
    template,
)
from fuzz.snapshot import SHALLOW, copy_state


def follow_up(version: int) -> list[tuple[bytes, bool]]:
    """Requests after a prefix, in the clear and in its session."""
    ctx = bytes(8) if version >= 0x13 else b""
    measure = bytes((version, RequestCode.GET_MEASUREMENTS, 0, 0xFF)) + ctx
    return [
        (bytes((version, RequestCode.GET_DIGESTS, 0, 0)), False),
        (measure, False),
        (measure, True),
        (bytes((version, RequestCode.HEARTBEAT, 0, 0)), True),
        (bytes((version, RequestCode.KEY_UPDATE, 1, 7)), True),
        (bytes((version, RequestCode.KEY_UPDATE, 3, 8)), True),
        (bytes((version, RequestCode.END_SESSION, 0, 0)), True),
        (bytes((version, RequestCode.HEARTBEAT, 0, 0)), True),
        (bytes((0x10, RequestCode.GET_VERSION, 0, 0)), False),
    ]


def answers(harness: ResponderHarness | ConnectionHarness, version: int) -> list[object]:
    out: list[object] = []
    for message, in_session in follow_up(version):
        out.append(harness.send(message, in_session))
    return out


@pytest.mark.parametrize("stage", ["vca", "digests", "certificate", "challenge", "measurements"])
@pytest.mark.parametrize("version", [0x11, 0x12, 0x13])
def test_snapshot_of_a_plain_prefix_is_the_replayed_state(stage: str, version: int) -> None:
    prefix = choose_prefix(selector_of(stage, version))
    replayed = ResponderHarness(prefix=prefix)
    copied = snapshot(prefix)
    assert isinstance(copied, ResponderHarness)
    assert copied.responder is not replayed.responder
    assert bytes(copied.responder.transcripts.b) == bytes(replayed.responder.transcripts.b)
    assert answers(copied, version) == answers(replayed, version)
    assert copied.exchanges == replayed.exchanges


@pytest.mark.parametrize("version", [0x11, 0x12, 0x13])
@pytest.mark.parametrize("measurements", [False, True])
def test_snapshot_of_a_session_is_the_replayed_state(version: int, measurements: bool) -> None:
    prefix = record_session(version, measurements)
    assert prefix is not None
    replayed = ConnectionHarness(prefix)
    first = snapshot(prefix)
    second = snapshot(prefix)
    assert isinstance(first, ConnectionHarness) and isinstance(second, ConnectionHarness)
    expected = answers(replayed, version)
    assert answers(first, version) == expected  # records sealed with the same keys
    # the first copy ended its session and reset: the second one is untouched
    assert answers(second, version) == expected
    assert first.checker.exchanges == second.checker.exchanges == replayed.checker.exchanges


def test_copies_share_the_device_and_nothing_else() -> None:
    prefix = record_session(0x12)
    assert prefix is not None
    a, b = snapshot(prefix), snapshot(prefix)
    assert isinstance(a, ConnectionHarness) and isinstance(b, ConnectionHarness)
    assert a.responder.device is b.responder.device
    ta, tb = a.responder.ctx.sessions, b.responder.ctx.sessions
    assert ta is not None and tb is not None and ta is not tb
    (sa,) = ta.sessions.values()
    (sb,) = tb.sessions.values()
    assert sa is not sb and sa.message_k is not sb.message_k
    assert sa.app_request is not None and sb.app_request is not None
    assert sa.app_request is not sb.app_request
    listeners = a.responder.device.listeners
    assert ta._on_device_change in listeners and tb._on_device_change in listeners
    a.close()
    assert ta._on_device_change not in listeners and tb._on_device_change in listeners
    b.close()


def test_copy_state_keeps_shared_objects_and_cycles() -> None:
    class Node:
        def __init__(self) -> None:
            self.peer: Node | None = None
            self.data = bytearray(b"x")
            self.items = [1, "a", (2, bytearray(b"y"))]

    shared = bytearray(b"shared")
    one, two = Node(), Node()
    one.peer, two.peer = two, one
    one.items.append(shared)
    copied = copy_state(one, {id(shared): shared})
    assert copied is not one and copied.peer is not two and copied.peer.peer is copied
    assert copied.data == one.data and copied.data is not one.data
    assert copied.items[2][1] is not one.items[2][1] and copied.items[3] is shared


def test_the_contract_is_checked_on_the_connection_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Session stages go through SpdmConnection, which answers with Responder.respond:
    the harness checks those exchanges (a responder answering the wrong code fails)."""
    prefix = record_session(0x12)
    assert prefix is not None
    harness = snapshot(prefix)
    assert isinstance(harness, ConnectionHarness)
    before = harness.checker.exchanges
    harness.send(bytes((0x12, RequestCode.GET_DIGESTS, 0, 0)))
    harness.send(bytes((0x12, RequestCode.HEARTBEAT, 0, 0)), in_session=True)
    assert harness.checker.exchanges == before + 2
    check = harness.responder.respond
    real = check.respond  # type: ignore[attr-defined]

    def lying(request: bytes, session_id: int | None = None, fault: object = None) -> Outcome:
        outcome = real(request, session_id, fault)
        wrong = outcome.response[:1] + b"\x61" + outcome.response[2:]  # CAPABILITIES
        return outcome._replace(response=wrong)

    monkeypatch.setattr(check, "respond", lying)
    with pytest.raises(ContractViolation, match="does not answer"):
        harness.send(bytes((0x12, RequestCode.GET_DIGESTS, 0, 0)))


def test_run_sequence_leaves_the_device_clean() -> None:
    data = bytes((selector_of("session", 0x12),)) + b"\x04\x80\x12\xe8\x00\x00"
    for _ in range(3):
        run_sequence(data)


def _same_graph(a: object, b: object, shared: dict[int, object], seen: set[int]) -> None:
    """``b`` is a copy of ``a``: equal leaves, new mutable objects, shared ones shared."""
    if id(a) in seen:
        return
    seen.add(id(a))
    atomic = (int, str, bytes, bool, type(None), frozenset, type)
    if id(a) in shared or type(a) in atomic or isinstance(a, enum.Enum):
        assert b is a
        return
    assert type(b) is type(a)
    if isinstance(a, bytearray):
        assert b == a and b is not a
    elif isinstance(a, (list, tuple)):
        assert len(b) == len(a)  # type: ignore[arg-type]
        for x, y in zip(a, b, strict=True):  # type: ignore[call-overload]
            _same_graph(x, y, shared, seen)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(b) == list(a)
        for k in a:
            _same_graph(a[k], b[k], shared, seen)
    elif isinstance(a, types.MethodType):
        assert isinstance(b, types.MethodType) and b.__func__ is a.__func__
        _same_graph(a.__self__, b.__self__, shared, seen)
    elif not callable(a):
        slots = {n for k in type(a).__mro__ for n in getattr(k, "__slots__", ())}
        names = set(getattr(a, "__dict__", ())) | set(getattr(b, "__dict__", ())) | slots
        names -= {"__dict__", "__weakref__"}
        if not names:
            return  # not a plain object (a keyed cipher, a hash): shared or copied by itself
        frozen = getattr(type(a), "__dataclass_params__", None)
        assert b is not a or (frozen is not None and frozen.frozen)
        for k in names:  # a class default may be set in the copy
            _same_graph(getattr(a, k, None), getattr(b, k, None), shared, seen)


@pytest.mark.parametrize("stage", ["none", "vca", "challenge", "session", "session_measurements"])
def test_the_compiled_copier_copies_what_copy_state_copies(stage: str) -> None:
    prefix = choose_prefix(selector_of(stage, 0x12))
    source = prefix.session if prefix.session is not None else prefix
    original = template(source)
    memo = _memo(source, original)
    generic = copy_state(original, dict(memo))
    compiled = snapshot(source)
    _same_graph(generic, compiled, memo, set())
    _same_graph(original, compiled, memo, set())
    generic.close()
    compiled.close()


def test_a_copied_session_table_ends_sessions_for_its_own_responder() -> None:
    prefix = record_session(0x12)
    assert prefix is not None
    copy = snapshot(prefix)
    table = copy.responder.ctx.sessions
    assert table is not None and table.on_end is not None
    assert table.on_end.__self__ is copy.responder  # type: ignore[attr-defined]
    ended: list[tuple[int, int]] = []
    hooks = copy.responder.device.session_hooks
    hooks.append(lambda conn, sid: ended.append((conn, sid)))
    try:
        copy.send(bytes((0x12, RequestCode.END_SESSION, 0, 0)), in_session=True)
    finally:
        hooks.pop()
        copy.close()
    assert ended == [(0, prefix.keys.session_id)]


def test_templates_do_not_listen_to_the_device_their_copies_do() -> None:
    prefix = record_session(0x13)
    assert prefix is not None
    original = template(prefix)
    table = original.responder.ctx.sessions
    assert table is not None and table._listeners is None
    listeners = original.responder.device.listeners
    before = len(listeners)
    copy = snapshot(prefix)
    copied = copy.responder.ctx.sessions
    assert copied is not None and copied._on_device_change in listeners
    copy.close()
    assert len(listeners) == before


def test_shallow_classes_deep_copy_to_their_fields() -> None:
    prefix = record_session(0x12)
    assert prefix is not None
    table = template(prefix).responder.ctx.sessions
    assert table is not None
    (session,) = table.sessions.values()
    keys = [session.hs_request, session.hs_response, session.app_request, session.app_response]
    for k in keys:
        assert type(k) in SHALLOW
        made = copy.deepcopy(k)
        assert made is not k
        for name in k.__slots__:  # type: ignore[union-attr]
            assert getattr(made, name) is getattr(k, name)
