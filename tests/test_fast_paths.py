"""The caches and shortcuts of the request path give exactly what the slow path gave.

Each shortcut (issue 17) is checked against the work it saves: the pristine-context
GET_VERSION against a full reset, the cached VERSION / CAPABILITIES against building them,
the OS-random DHE key against an independent ECDH, the per-direction AEAD object, the
measurement blocks rendered once per change, no exchange event when nobody observes, and
the repeated GET_VERSION a connection answers without the pipeline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.codec.constants import AeadSuite, DheGroup, RequestCode, ResponderCap, ResponseCode
from emulator.codec.messages import CapabilitiesMsg, build_version_response
from emulator.connection import ObserverFanout, SpdmConnection
from emulator.crypto import DheKeyPair
from emulator.device.identity import Identity
from emulator.device.model import Device
from emulator.device.random import SeededRandom, SystemRandom
from emulator.events import ExchangeEvent
from emulator.requester import Requester, RequesterConfig, identity
from emulator.requester.session import ConnectionChannel, open_session
from emulator.responder import ConnectionState, Responder
from emulator.responder import algorithms as algorithms_mod
from emulator.responder import key_exchange as key_exchange_mod
from emulator.responder.capabilities import capabilities_response
from emulator.responder.context import ConnectionContext
from emulator.responder.version import version_response
from emulator.session.record import RecordError, open_record, seal_record
from emulator.transport import get_binding
from fuzz.harness import vca_requests
from tests.helpers import make_device

GET_VERSION = bytes.fromhex("10840000")
DOE = get_binding("doe")


@pytest.fixture(scope="module")
def device() -> Device:
    return make_device()


# ---- GET_VERSION on a pristine context --------------------------------------------------------


def _changed(value: Any) -> Any:
    """A value unlike ``value`` (the default of a context field)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, bytes | bytearray):
        return type(value)(b"x")
    if isinstance(value, dict):
        return {None: object()}
    return object()  # None, or anything else: some other object


def _leaves(ctx: ConnectionContext) -> list[tuple[Any, str]]:
    """(object, field name) of every field of the context and of its nested dataclasses."""
    out: list[tuple[Any, str]] = []
    for f in dataclasses.fields(ctx):
        value = getattr(ctx, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out += [(value, g.name) for g in dataclasses.fields(value)]
        else:
            out.append((ctx, f.name))
    return out


def test_pristine_checks_every_field_of_the_context() -> None:
    assert ConnectionContext().pristine()
    after_version = ConnectionContext(state=ConnectionState.AFTER_VERSION)
    after_version.transcripts.a += b"GET_VERSION + VERSION"
    assert after_version.pristine()  # transcript A and the state are what GET_VERSION sets
    allowed = {("Transcripts", "a")}
    checked = 0
    for index in range(len(_leaves(ConnectionContext()))):
        ctx = ConnectionContext()
        owner, name = _leaves(ctx)[index]
        if (type(owner).__name__, name) in allowed:
            continue
        if owner is ctx and name == "state":
            ctx.state = ConnectionState.AFTER_CAPABILITIES
        else:
            setattr(owner, name, _changed(getattr(owner, name)))
        assert not ctx.pristine(), f"{type(owner).__name__}.{name} is not checked by pristine()"
        checked += 1
    assert checked >= 20


def test_get_version_again_is_the_same_as_on_a_new_responder(device: Device) -> None:
    fresh = Responder(device)
    first = fresh.handle(GET_VERSION)
    again = Responder(device)
    for _ in range(3):
        assert again.handle(GET_VERSION) == first
    assert again.state == ConnectionState.AFTER_VERSION
    assert bytes(again.transcripts.a) == bytes(fresh.transcripts.a) == GET_VERSION + first


def test_get_version_after_vca_still_resets_everything(device: Device) -> None:
    r = Responder(device)
    for request in vca_requests(0x12):
        assert r.handle(request)[1] != ResponseCode.ERROR
    before = r.ctx
    assert not before.pristine() and r.algorithms.base_hash
    r.handle(GET_VERSION)
    assert r.ctx is not before and r.ctx.pristine()
    assert r.algorithms.base_hash == 0 and r.peer is None and r.version == 0


def test_a_failed_get_capabilities_is_reset_by_get_version(device: Device) -> None:
    """GET_CAPABILITIES records the version even when it fails: not pristine any more."""
    r = Responder(device)
    r.handle(GET_VERSION)
    bad = bytes((0x12, RequestCode.GET_CAPABILITIES, 0, 0))  # too short for 1.2
    assert r.handle(bad)[1] == ResponseCode.ERROR
    assert r.version == 0x12 and not r.ctx.pristine()
    r.handle(GET_VERSION)
    assert r.version == 0 and r.ctx.pristine()


# ---- profile-determined responses ---------------------------------------------------------


def test_cached_version_and_capabilities_are_the_built_messages(device: Device) -> None:
    assert version_response(tuple(device.versions)) == build_version_response(
        [v.entry for v in device.versions]
    )
    assert version_response(tuple(device.versions[:2])) == build_version_response(
        [v.entry for v in device.versions[:2]]
    )
    flags = int(device.capabilities) & 0x3FFFFF
    for version in (0x11, 0x12, 0x13):
        built = CapabilitiesMsg(version, ResponseCode.CAPABILITIES, 12, flags, 4544, 65536).encode()
        assert capabilities_response(version, 12, flags, 4544, 65536) == built


def test_capabilities_follow_a_changed_device(device: Device) -> None:
    """A device whose capabilities change answers with the new ones (no stale cache)."""
    other = dataclasses.replace(device, capabilities=device.capabilities & ~ResponderCap.CHUNK_CAP)
    answers = []
    for dev in (device, other):
        r = Responder(dev)
        r.handle(GET_VERSION)
        answers.append(r.handle(vca_requests(0x12)[1]))
    flags = [int.from_bytes(a[8:12], "little") for a in answers]
    assert flags[0] & ResponderCap.CHUNK_CAP and not flags[1] & ResponderCap.CHUNK_CAP


# ---- DHE keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("group", "curve"),
    [
        (DheGroup.SECP_256_R1, ec.SECP256R1()),
        (DheGroup.SECP_384_R1, ec.SECP384R1()),
        (DheGroup.SECP_521_R1, ec.SECP521R1()),
    ],
)
def test_fresh_dhe_key_agrees_with_an_independent_key(
    group: DheGroup, curve: ec.EllipticCurve
) -> None:
    ours = DheKeyPair.fresh(group)
    theirs = ec.generate_private_key(curve)
    point = ours.public_bytes
    size = len(point) // 2
    peer = ec.EllipticCurvePublicNumbers(
        int.from_bytes(point[:size], "big"), int.from_bytes(point[size:], "big"), curve
    ).public_key()
    expected = theirs.exchange(ec.ECDH(), peer).rjust(size, b"\x00")
    nums = theirs.public_key().public_numbers()
    theirs_bytes = nums.x.to_bytes(size, "big") + nums.y.to_bytes(size, "big")
    assert ours.shared_secret(theirs_bytes) == expected
    assert DheKeyPair.fresh(group).public_bytes != point


def test_key_exchange_derives_the_key_only_when_randomness_is_not_the_os(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fresh: list[int] = []
    real = DheKeyPair.fresh

    def spy(group: int) -> DheKeyPair:
        fresh.append(group)
        return real(group)

    monkeypatch.setattr(DheKeyPair, "fresh", staticmethod(spy))
    key_exchange_mod._dhe_key(DheGroup.SECP_384_R1, SystemRandom())
    assert fresh == [DheGroup.SECP_384_R1]
    one = key_exchange_mod._dhe_key(DheGroup.SECP_384_R1, SeededRandom(7, "x"))
    two = DheKeyPair.generate(DheGroup.SECP_384_R1, SeededRandom(7, "x"))
    assert one.public_bytes == two.public_bytes and len(fresh) == 1


# ---- secured records: one AEAD object per key -----------------------------------------------


def test_one_aead_object_per_direction_and_key(
    device: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    import emulator.crypto.aead as aead_mod

    made: list[bytes] = []
    real = aead_mod.AESGCM

    def counting(key: bytes) -> Any:
        made.append(bytes(key))
        return real(key)

    conn = SpdmConnection(device, DOE)

    async def run() -> None:
        req = Requester(ConnectionChannel(conn), RequesterConfig(version=0x12))
        await req.vca()
        chain_bytes = (await identity.get_certificate(req)).chain
        monkeypatch.setattr(aead_mod, "AESGCM", counting)
        s = await open_session(req, peer_chain=chain_bytes)
        for _ in range(10):
            await s.heartbeat()
        await s.key_update(1)
        for _ in range(5):
            await s.heartbeat()

    asyncio.run(run())
    # FINISH in, FINISH_RSP out (handshake keys), then one per application key: the
    # request key, the response key, the updated request key; 17 records each way
    assert len(made) == 5 and len(set(made)) == 5


# ---- measurement blocks rendered once per change --------------------------------------------


def test_blocks_are_hashed_once_per_change(device: Device, monkeypatch: pytest.MonkeyPatch) -> None:
    import emulator.device.measurements as store_mod

    dev = make_device()
    hashed: list[bytes] = []
    real = store_mod.measurement_digest

    def spy(algo: int, data: bytes) -> bytes:
        hashed.append(bytes(data))
        return real(algo, data)

    monkeypatch.setattr(store_mod, "measurement_digest", spy)
    r = Responder(dev)
    for request in vca_requests(0x12):
        r.handle(request)
    all_blocks = bytes((0x12, RequestCode.GET_MEASUREMENTS, 0, 0xFF))
    first = r.handle(all_blocks)
    digests = len(hashed)
    assert first[1] == ResponseCode.MEASUREMENTS and digests > 0
    for _ in range(3):
        assert r.handle(all_blocks)[8:] != b""  # nonce differs, blocks do not
    assert len(hashed) == digests
    block2 = dev.measurements.get(2)
    assert block2 is not None
    dev.measurements.set_value(2, b"new firmware")
    after = r.handle(all_blocks)
    assert hashed[digests:] == [b"new firmware"]
    expected = hashlib.sha384(b"new firmware").digest()
    assert expected in after and expected not in first


def test_summary_hash_follows_a_change() -> None:
    dev = make_device()
    store = dev.measurements
    one = store.summary_hash(0xFF, 0x02, 0x02)
    assert store.summary_hash(0xFF, 0x02, 0x02) == one
    store.set_value(1, b"another boot ROM")
    two = store.summary_hash(0xFF, 0x02, 0x02)
    assert two != one
    data = b"".join(b.render(0x02).encode() for b in store.snapshot())
    assert two == hashlib.sha384(data).digest()


# ---- exchange events only when observed -----------------------------------------------------


def test_no_exchange_event_is_built_when_nobody_observes(
    device: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    import emulator.connection as connection_mod

    built: list[ExchangeEvent] = []

    class Counting(ExchangeEvent):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            built.append(self)

    monkeypatch.setattr(connection_mod, "ExchangeEvent", Counting)
    targets: list[Any] = []
    fanout = ObserverFanout(targets)
    conn = SpdmConnection(device, DOE, observers=[fanout])
    conn.receive(DOE.encode(GET_VERSION))
    assert built == [] and not fanout
    seen: list[ExchangeEvent] = []
    targets.append(seen.append)
    conn.receive(DOE.encode(GET_VERSION))
    assert len(built) == 1 and seen == built and seen[0].response_name == "VERSION"
    # an observer that raises is logged and does not stop the others
    targets.insert(0, lambda event: 1 / 0)
    conn.receive(DOE.encode(GET_VERSION))
    assert len(seen) == 2


# ---- secured records: the one-pass seal and open ----------------------------------------------

_SEQ_SIZES = st.sampled_from([0, 2, 8])


@settings(max_examples=200, deadline=None)
@given(
    app=st.binary(max_size=300),
    padding=st.binary(max_size=4),
    sequence=st.integers(0, 2**40),
    session_id=st.integers(0, 2**32 - 1),
    seq_size=_SEQ_SIZES,
    key=st.binary(min_size=32, max_size=32),
    salt=st.binary(min_size=12, max_size=12),
)
def test_one_pass_seal_gives_the_bytes_of_the_general_path(
    app: bytes,
    padding: bytes,
    sequence: int,
    session_id: int,
    seq_size: int,
    key: bytes,
    salt: bytes,
) -> None:
    common = dict(
        aead=int(AeadSuite.AES_256_GCM),
        key=key,
        salt=salt,
        sequence_number=sequence,
        session_id=session_id,
        sequence_number_size=seq_size,
        app_data=app,
        padding=padding,
    )
    fast = seal_record(**common, cipher=AESGCM(key))  # type: ignore[arg-type]
    slow = seal_record(**common)  # type: ignore[arg-type]
    assert fast == slow
    # and an independent reading of it: header, then AES-GCM over it with the XORed IV
    head = 6 + seq_size
    assert fast[:4] == session_id.to_bytes(4, "little")
    assert fast[4 : 4 + seq_size] == (sequence & ((1 << (8 * seq_size)) - 1)).to_bytes(
        seq_size, "little"
    )
    iv = (int.from_bytes(salt[:8], "little") ^ sequence).to_bytes(8, "little") + salt[8:]
    plain = AESGCM(key).decrypt(iv, fast[head:], fast[:head])
    assert plain == len(app).to_bytes(2, "little") + app + padding


@settings(max_examples=300, deadline=None)
@given(
    app=st.binary(max_size=100),
    sequence=st.integers(0, 2**20),
    seq_size=_SEQ_SIZES,
    flip=st.one_of(st.none(), st.integers(0, 200)),
    cut=st.one_of(st.none(), st.integers(0, 140)),
    wrong_sequence=st.booleans(),
)
def test_one_pass_open_agrees_with_the_general_path(
    app: bytes,
    sequence: int,
    seq_size: int,
    flip: int | None,
    cut: int | None,
    wrong_sequence: bool,
) -> None:
    key, salt, sid = bytes(range(32)), bytes(range(12)), 0xABCD1234
    aead = int(AeadSuite.AES_256_GCM)
    record = seal_record(
        aead=aead,
        key=key,
        salt=salt,
        sequence_number=sequence,
        session_id=sid,
        sequence_number_size=seq_size,
        app_data=app,
    )
    data = bytearray(record)
    if flip is not None and flip < len(data):
        data[flip] ^= 0x01
    if cut is not None:
        data = data[:cut]
    expect = sequence + 1 if wrong_sequence else sequence

    def outcome(cipher: Any) -> tuple[str, bytes | str]:
        try:
            return "ok", open_record(
                aead=aead,
                key=key,
                salt=salt,
                sequence_number=expect,
                session_id=sid,
                sequence_number_size=seq_size,
                record=bytes(data),
                cipher=cipher,
            )
        except RecordError as exc:
            return "error", str(exc)

    assert outcome(AESGCM(key)) == outcome(None)
    if flip is None and cut is None and not wrong_sequence:
        assert outcome(AESGCM(key)) == ("ok", app)


# ---- table lines with a response bound: no checkpoint is needed -------------------------------


def test_response_bounds_cover_the_largest_responses_the_codecs_build() -> None:
    """Every ``max_response`` of the table is at least the largest response of its
    request the codecs can build (and the largest ERROR): a requester whose limit is at
    least the bound can never get ERROR(ResponseTooLarge) for it."""
    from emulator.codec.identity import DigestsMsg
    from emulator.codec.messages import AlgorithmsMsg, AlgStruct, build_error
    from emulator.codec.session import (
        build_end_session_ack,
        build_heartbeat_ack,
        build_key_update_ack,
    )
    from emulator.responder.table import DEFAULT_TABLE

    largest_error = len(build_error(0x14, 0xFF, 0xFF, bytes(32)))
    largest = {
        RequestCode.HEARTBEAT: len(build_heartbeat_ack(0x14)),
        RequestCode.KEY_UPDATE: len(build_key_update_ack(0x14, 3, 0xFF)),
        RequestCode.END_SESSION: len(build_end_session_ack(0x14)),
        RequestCode.NEGOTIATE_ALGORITHMS: len(
            AlgorithmsMsg(0x14, alg_structs=[AlgStruct(t, 1) for t in range(2, 8)]).encode()
        ),
        RequestCode.GET_DIGESTS: len(
            DigestsMsg(
                0x13, 0xFF, 0xFF, [bytes(64)] * 8, True, [1] * 8, [1] * 8, [0xFFFF] * 8
            ).encode()
        ),
    }
    bounded = {code: spec.max_response for code, spec in DEFAULT_TABLE.items() if spec.max_response}
    assert set(bounded) == set(largest)
    for code, size in largest.items():
        assert max(size, largest_error) <= bounded[code], code


def test_a_bounded_request_takes_no_checkpoint_and_others_do(
    device: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken: list[int] = []
    original = ConnectionContext.checkpoint

    def counting(self: ConnectionContext) -> Any:
        taken.append(1)
        return original(self)

    monkeypatch.setattr(ConnectionContext, "checkpoint", counting)
    r = Responder(device)
    r.handle(bytes([0x10, RequestCode.GET_VERSION, 0, 0]))
    caps = CapabilitiesMsg(0x12, RequestCode.GET_CAPABILITIES, 0, 0, 4096, 4096).encode()
    assert r.handle(caps)[1] == ResponseCode.CAPABILITIES
    taken.clear()
    r.handle(bytes([0x12, RequestCode.GET_DIGESTS, 0, 0]))  # (before ALGORITHMS: an ERROR)
    assert taken == []
    r.handle(bytes([0x12, RequestCode.GET_CERTIFICATE, 0, 0, 0, 0, 0, 1]))
    assert taken == [1]


# ---- a remembered NEGOTIATE_ALGORITHMS selection --------------------------------------------


def _negotiated(dev: Device, requests: list[bytes]) -> tuple[bytes, Any, bytes, Responder]:
    r = Responder(dev)
    for request in requests[:-1]:
        r.handle(request)
    response = r.handle(requests[-1])
    return response, r.algorithms, bytes(r.transcripts.a), r


@pytest.mark.parametrize("version", [0x10, 0x11, 0x12, 0x13])
def test_a_remembered_selection_is_the_selection(device: Device, version: int) -> None:
    """The second connection that negotiates the same way gets what working it out gave:
    the same ALGORITHMS bytes, selection and transcript, in a selection of its own."""
    requests = vca_requests(version)
    algorithms_mod._SELECTED.clear()
    first = _negotiated(device, requests)
    assert first[0][1] == ResponseCode.ALGORITHMS
    assert len(algorithms_mod._SELECTED) == 1
    again = _negotiated(device, requests)
    assert again[:3] == first[:3]
    assert again[1] is not first[1]  # each connection owns its selection
    algorithms_mod._SELECTED.clear()
    assert _negotiated(device, requests)[:3] == first[:3]


def test_a_refused_negotiation_is_not_remembered(device: Device) -> None:
    requests = vca_requests(0x12)
    broken = bytearray(requests[2])
    broken[4] ^= 0x01  # Length no longer the message's size
    algorithms_mod._SELECTED.clear()
    for _ in range(2):
        response, _alg, _a, r = _negotiated(device, [*requests[:2], bytes(broken)])
        assert response[1] == ResponseCode.ERROR
        assert r.state == ConnectionState.AFTER_CAPABILITIES
    assert algorithms_mod._SELECTED == {}


def test_the_selection_follows_the_device(device: Device) -> None:
    """Another priority order, other capabilities or other keys select anew."""
    requests = vca_requests(0x13)
    _, base, _, _ = _negotiated(device, requests)
    reordered = dict(device.priorities)
    reordered["base_hash"] = list(reversed(reordered["base_hash"]))
    assert reordered["base_hash"][0] != device.priorities["base_hash"][0]
    other = dataclasses.replace(device, priorities=reordered)
    assert _negotiated(other, requests)[1].base_hash == reordered["base_hash"][0]
    no_meas = dataclasses.replace(
        device,
        capabilities=device.capabilities
        & ~(ResponderCap.MEAS_CAP_SIG | ResponderCap.MEAS_CAP_NO_SIG | ResponderCap.MEL_CAP),
    )
    assert base.measurement_hash and not _negotiated(no_meas, requests)[1].measurement_hash
    assert base.base_asym == device.priorities["base_asym"][0]
    others = [k for k in device.identity.keys if not k.asym_mask & base.base_asym]
    fewer_keys = dataclasses.replace(device, identity=Identity(others), provisioning=None)
    assert _negotiated(fewer_keys, requests)[1].base_asym not in (0, base.base_asym)
    assert _negotiated(device, requests)[1] == base


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_a_changed_request_is_selected_anew(data: st.DataObject) -> None:
    """Any change of the request bytes is a new key: the answer is what a responder with
    nothing remembered gives."""
    dev = make_device()
    requests = vca_requests(data.draw(st.sampled_from([0x11, 0x12, 0x13])))
    request = bytearray(requests[2])
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(4, len(request) - 1))
        request[at] = data.draw(st.integers(0, 255))
    changed = [*requests[:2], bytes(request)]
    _negotiated(dev, requests)  # the unchanged request remembered
    remembered = _negotiated(dev, changed)[:3]
    algorithms_mod._SELECTED.clear()
    assert _negotiated(dev, changed)[:3] == remembered


# ---- a repeated GET_VERSION answered by the connection --------------------------------------


def _counted(conn: SpdmConnection) -> list[bytes]:
    """The requests ``conn``'s responder pipeline runs (the fast path runs none)."""
    calls: list[bytes] = []
    real = conn.responder.respond

    def respond(request: bytes, *args: Any, **kwargs: Any) -> Any:
        calls.append(request)
        return real(request, *args, **kwargs)

    conn.responder.respond = respond  # type: ignore[method-assign]
    return calls


def _slow(conn: SpdmConnection) -> SpdmConnection:
    """``conn`` without the GET_VERSION shortcut: every request goes the usual way."""
    conn._keep_version = lambda *args: None  # type: ignore[method-assign]
    return conn


def _state(conn: SpdmConnection) -> tuple[Any, ...]:
    r = conn.responder
    ctx = r.ctx
    return (
        ctx.state,
        ctx.version,
        bytes(ctx.transcripts.a),
        ctx.pristine(),
        ctx.sessions,
        r.last_error,
        list(r._commits),
    )


def test_repeated_get_version_is_what_the_pipeline_gives(device: Device) -> None:
    """The second and later identical GET_VERSION skip the pipeline and give the same
    bytes and the same responder state (after VCA too, when the context is replaced)."""
    fast, slow = SpdmConnection(device, DOE), _slow(SpdmConnection(device, DOE))
    ran = _counted(fast)
    get_version = DOE.encode(GET_VERSION)
    for step in range(3):
        for request in [get_version, *(DOE.encode(m) for m in vca_requests(0x12)[1:])]:
            a, b = fast.receive(request), slow.receive(request)
            assert a == b and a.payloads[0][8:10] != b"\x12\x7f"
            assert _state(fast) == _state(slow)
        assert fast.responder.state == ConnectionState.NEGOTIATED
        assert ran.count(GET_VERSION) == (1 if step == 0 else 0)  # the fast path, after one
        ran.clear()
    again = fast.receive(get_version), slow.receive(get_version)
    assert again[0] == again[1] and _state(fast) == _state(slow)
    assert bytes(fast.responder.ctx.transcripts.a) == GET_VERSION + version_response(
        tuple(device.versions)
    )
    assert fast.responder.state == ConnectionState.AFTER_VERSION and ran == []
    # the responder driven directly, not through the connection (a failed GET_CAPABILITIES
    # records the version; an ERROR sets last_error): the next GET_VERSION resets it all
    pokes = [bytes((0x12, RequestCode.GET_CAPABILITIES, 0, 0)), bytes((0x12, 0x81, 0, 0))]
    for poke in pokes:
        for conn in (fast, slow):
            conn.responder.handle(poke)
        assert fast.receive(get_version) == slow.receive(get_version)
        assert _state(fast) == _state(slow) and fast.responder.ctx.pristine()
    assert ran == pokes  # the GET_VERSIONs took the fast path
    ran.clear()
    # another GET_VERSION (a different version byte) goes the usual way: ERROR
    bad = DOE.encode(bytes.fromhex("11840000"))
    assert fast.receive(bad) == slow.receive(bad) and ran == [bytes.fromhex("11840000")]
    assert _state(fast) == _state(slow)


def test_repeated_get_version_ends_the_sessions(device: Device) -> None:
    """GET_VERSION in the clear ends every session (DSP0274 1.3 10.3), on the fast path
    as on the usual one: the table is emptied and the session-end hooks run."""
    ended: list[tuple[int, int]] = []
    hook = lambda number, sid: ended.append((number, sid))  # noqa: E731
    device.session_hooks.append(hook)
    try:
        results = []
        for number, conn in (
            (1, SpdmConnection(device, DOE, number=1)),
            (2, _slow(SpdmConnection(device, DOE, number=2))),
        ):
            ran = _counted(conn)

            async def run(conn: SpdmConnection = conn) -> int:
                req = Requester(ConnectionChannel(conn), RequesterConfig(version=0x12))
                await req.vca()
                chain = (await identity.get_certificate(req)).chain
                s = await open_session(req, peer_chain=chain)
                await s.heartbeat()
                return s.session_id

            sid = asyncio.run(run())
            table = conn.responder.ctx.sessions
            assert table is not None and sid in table
            ran.clear()
            reply = conn.receive(DOE.encode(GET_VERSION))
            assert (ran == []) == (number == 1)  # conn 1 took the fast path
            assert sid not in table and len(table) == 0
            assert (number, sid) in ended
            results.append((reply, _state(conn)))
        assert results[0] == results[1]
        assert results[0][1][4] is None  # the new context has no session table
    finally:
        device.session_hooks.remove(hook)


def test_repeated_get_version_with_fault_rules_goes_the_usual_way(device: Device) -> None:
    """With any fault rule the pipeline runs (a rule may fire on GET_VERSION; one added
    after the answer was kept does)."""
    from emulator.faults.engine import FaultEngine

    engine = FaultEngine()
    conn = SpdmConnection(device, DOE, faults=engine)
    ran = _counted(conn)
    get_version = DOE.encode(GET_VERSION)
    conn.receive(get_version)
    assert len(conn.receive(get_version).payloads) == 1 and len(ran) == 1  # kept, then fast
    engine.add("on=GET_VERSION,do=drop")
    assert conn.receive(get_version).payloads == []  # the rule fired: dropped
    engine.add("on=GET_DIGESTS,do=drop")
    ran.clear()
    for _ in range(2):
        conn.receive(get_version)
    assert len(ran) == 2  # every GET_VERSION went through the pipeline (and the faults)


def test_a_copied_connection_tells_its_own_responder_when_a_session_ends(device: Device) -> None:
    """SessionTable.__deepcopy__ keeps the end hook, pointing at the copied responder."""
    import copy

    async def run() -> SpdmConnection:
        conn = SpdmConnection(device, get_binding("doe"), number=7)
        req = Requester(ConnectionChannel(conn), RequesterConfig())
        await req.vca()
        chain = (await identity.get_certificate(req, 0)).chain
        await open_session(req, peer_chain=chain)
        return conn

    conn = asyncio.run(run())
    from emulator.responder.table import DEFAULT_TABLE

    shared = [device, device.listeners, DEFAULT_TABLE]  # what a snapshot shares (fuzz)
    copied = copy.deepcopy(conn.responder, {id(o): o for o in shared})
    table = copied.ctx.sessions
    assert table is not None and table.on_end is not None
    assert table.on_end.__self__ is copied  # type: ignore[attr-defined]
    ended: list[tuple[int, int]] = []
    device.session_hooks.append(lambda c, s: ended.append((c, s)))
    try:
        sid = next(iter(table.sessions))
        table.terminate(sid)
    finally:
        device.session_hooks.pop()
    assert ended == [(7, sid)]
