"""Secure sessions end to end, in process: requester -> transport binding -> session layer
-> responder (:class:`emulator.connection.SpdmConnection`), no socket.

The requester side (:mod:`emulator.requester.session`) derives every key, HMAC and
transcript on its own (hashlib/hmac/cryptography) and decrypts every record; tests
that look at records build or check them here with ``cryptography`` directly.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from emulator.codec.constants import (
    AeadSuite,
    BaseAsymAlgo,
    BaseHashAlgo,
    DheGroup,
    ErrorCode,
    RequestCode,
    RequesterCap,
    ResponseCode,
)
from emulator.codec.measurements import request_size
from emulator.connection import SpdmConnection
from emulator.device.model import Device
from emulator.errors import RequesterError
from emulator.requester import Requester, RequesterConfig, SpdmErrorReply
from emulator.requester.session import (
    ConnectionChannel,
    finish,
    key_exchange,
    opaque_supported_versions,
    open_session,
    psk_exchange,
)
from emulator.session.table import SessionTable
from emulator.transport import get_binding
from emulator.x509.chain import split_der_chain
from tests import helpers

ROOT = Path(__file__).resolve().parent.parent
FULL_FLAGS = int(
    RequesterCap.CERT_CAP
    | RequesterCap.CHAL_CAP
    | RequesterCap.ENCRYPT_CAP
    | RequesterCap.MAC_CAP
    | RequesterCap.KEY_EX_CAP
    | RequesterCap.PSK_CAP
    | RequesterCap.ENCAP_CAP
    | RequesterCap.HBEAT_CAP
    | RequesterCap.KEY_UPD_CAP
)
PSK = b"TestPskData\x00"
HINT = b"TestPskHint\x00"


def chain_for(asym_dir: str, hash_name: str) -> bytes:
    """The SPDM certificate chain of a committed slot, built here with hashlib."""
    certs = split_der_chain((ROOT / "certs" / asym_dir / "slot0" / "chain.der").read_bytes())
    root_hash = hashlib.new(hash_name, certs[0]).digest()
    body = b"".join(certs)
    return struct.pack("<HH", 4 + len(root_hash) + len(body), 0) + root_hash + body


CHAIN384 = chain_for("ecdsa-p384", "sha384")


_DEVICES: dict[tuple[Any, ...], Device] = {}


def make_device(add: tuple[str, ...] = (), remove: tuple[str, ...] = (), **sessions: Any) -> Device:
    """The default device with capability and [sessions] changes (cached: loading the
    default profile's slots takes a while)."""
    key = (add, remove, tuple(sorted(sessions.items())))
    if key not in _DEVICES:
        _DEVICES[key] = _load_device(add, remove, sessions)
    return _DEVICES[key]


def _load_device(add: tuple[str, ...], remove: tuple[str, ...], sessions: dict[str, Any]) -> Device:
    data = helpers.profile_data()
    caps = [c for c in data["spdm"]["capabilities"] if c not in remove]
    spdm = {**data["spdm"], "capabilities": caps + [c for c in add if c not in caps]}
    return helpers.make_device(spdm=spdm, sessions={**data.get("sessions", {}), **sessions})


@pytest.fixture(scope="module")
def device() -> Device:
    return make_device()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def connect(
    dev: Device,
    *,
    binding: str = "doe",
    version: int = 0x12,
    dhe: int = DheGroup.SECP_384_R1,
    aead: int = AeadSuite.AES_256_GCM,
    flags: int = FULL_FLAGS,
    clock: Clock | None = None,
) -> tuple[Requester, SpdmConnection]:
    conn = SpdmConnection(dev, get_binding(binding), clock=clock)
    cfg = RequesterConfig(
        version=version,
        flags=flags,
        base_asym=int(BaseAsymAlgo.ECDSA_P384),
        base_hash=int(BaseHashAlgo.SHA_384),
        dhe=int(dhe),
        aead=int(aead),
    )
    req = Requester(ConnectionChannel(conn), cfg)
    await req.vca()
    return req, conn


def measurements_request(version: int, op: int = 0) -> bytes:
    size = request_size(version, 0)
    return bytes((version, RequestCode.GET_MEASUREMENTS, 0, op)) + bytes(size - 4)


def send_raw(conn: SpdmConnection, record: bytes) -> list[bytes]:
    """Send a secured record as is; the transport payloads of the reply (empty: dropped)."""
    return conn.receive(conn.binding.encode(record, secured=True)).payloads


def session_ids(conn: SpdmConnection) -> set[int]:
    table = conn.responder.ctx.sessions
    return set(table.sessions) if table is not None else set()


# --- the cross product: every DHE group x AEAD x version -------------------------------------

DHES = [
    DheGroup.SECP_256_R1,
    DheGroup.SECP_384_R1,
    DheGroup.SECP_521_R1,
    DheGroup.FFDHE_2048,
    DheGroup.FFDHE_3072,
    DheGroup.FFDHE_4096,
]
AEADS = [AeadSuite.AES_128_GCM, AeadSuite.AES_256_GCM, AeadSuite.CHACHA20_POLY1305]
VERSIONS = [0x11, 0x12, 0x13]
CROSS = [
    (dhe, aead, version, "mctp" if (i + j + k) % 2 else "doe")
    for i, dhe in enumerate(DHES)
    for j, aead in enumerate(AEADS)
    for k, version in enumerate(VERSIONS)
]


@pytest.mark.parametrize(
    ("dhe", "aead", "version", "binding"),
    CROSS,
    ids=[f"{d.name}-{a.name}-{v:x}-{b}" for d, a, v, b in CROSS],
)
async def test_session_lifecycle(
    device: Device, dhe: DheGroup, aead: AeadSuite, version: int, binding: str
) -> None:
    req, conn = await connect(device, binding=binding, version=version, dhe=dhe, aead=aead)
    assert req.neg.struct(2) == dhe and req.neg.struct(3) == aead  # AlgType DHE, AEAD
    s = await open_session(req, peer_chain=CHAIN384, binding=binding)
    assert s.established and not s.mac_only
    assert s.secured_version == 0x1200  # highest of the requester's 1.0/1.1/1.2
    assert s.session_id & 0xFFFF == s.req_session_id and s.session_id >> 16
    assert s.heartbeat_period == 60
    assert session_ids(conn) == {s.session_id}
    # an in-session request of another family
    rsp = await s.send(measurements_request(version, 0))
    assert rsp[:2] == bytes((version, ResponseCode.MEASUREMENTS)) and rsp[2] > 0
    for op in (1, 2):  # UpdateKey, UpdateAllKeys, each followed by VerifyNewKey
        await s.key_update(op)
        await s.heartbeat()
    rsp = await s.send(measurements_request(version, 0xFF))
    assert rsp[1] == ResponseCode.MEASUREMENTS
    await s.end_session()
    assert session_ids(conn) == set()
    # a record for the ended session is dropped (libspdm: InvalidSession, no answer)
    assert send_raw(conn, s.encrypt(s.record.app_header + bytes((version, 0xE8, 0, 0)))) == []


# --- handshake variants ---------------------------------------------------------------------


@pytest.mark.parametrize("binding", ["doe", "mctp"])
async def test_handshake_in_the_clear(device: Device, binding: str) -> None:
    flags = FULL_FLAGS | RequesterCap.HANDSHAKE_IN_THE_CLEAR_CAP
    req, _conn = await connect(device, binding=binding, version=0x13, flags=flags)
    s = await key_exchange(req, peer_chain=CHAIN384, binding=binding)
    assert s.in_clear
    # KEY_EXCHANGE_RSP ends with the signature: no ResponderVerifyData
    kx_rsp = req.log[-1][1]
    size = 40 + 96 + 2 + struct.unpack_from("<H", kx_rsp, 136)[0] + 96
    assert len(kx_rsp) - size == (-size % 4 if binding == "doe" else 0)  # only DOE padding
    await finish(s)
    finish_rsp = req.log[-1][1]  # sent in the clear, with ResponderVerifyData
    assert finish_rsp[:2] == b"\x13\x65" and len(finish_rsp) >= 4 + 48
    await s.heartbeat()
    await s.end_session()


async def test_finish_in_the_clear_refused_when_not_negotiated(device: Device) -> None:
    req, _conn = await connect(device)
    s = await key_exchange(req, peer_chain=CHAIN384)
    with pytest.raises(SpdmErrorReply) as err:
        await req.send(bytes((0x12, RequestCode.FINISH, 0, 0)) + bytes(48))
    assert err.value.code == ErrorCode.SessionRequired
    await finish(s)  # the session is still usable
    await s.heartbeat()


async def test_mac_only_session(device: Device) -> None:
    flags = FULL_FLAGS & ~RequesterCap.ENCRYPT_CAP
    req, conn = await connect(device, binding="mctp", flags=flags)
    s = await open_session(req, peer_chain=CHAIN384, binding="mctp")
    assert s.mac_only
    # the request record carries the application data in the clear, then a MAC
    record = s.encrypt(b"\x05" + bytes((0x12, 0xE8, 0, 0)))
    assert record[8:13] == b"\x05\x12\xe8\x00\x00" and len(record) == 8 + 5 + 16
    payloads = send_raw(conn, record)
    reply = conn.binding.decode(payloads[0])
    assert reply.secured and reply.message[8:13] == b"\x05\x12\x68\x00\x00"
    assert s.decrypt(reply.message) == b"\x05\x12\x68\x00\x00"
    # a changed byte of the visible application data does not verify
    bad = bytearray(s.encrypt(b"\x05" + bytes((0x12, 0xE8, 0, 0))))
    bad[10] ^= 0x01
    payloads = send_raw(conn, bytes(bad))
    err = s.decrypt(conn.binding.decode(payloads[0]).message)
    assert err == b"\x05\x12\x7f" + bytes((ErrorCode.DecryptError, 0))
    assert session_ids(conn) == set()


async def test_response_record_decrypted_by_hand(device: Device) -> None:
    """Check nonce, AAD and plaintext framing of a response with AES-GCM directly."""
    req, conn = await connect(device, aead=AeadSuite.AES_128_GCM)
    s = await open_session(req, peer_chain=CHAIN384)
    rsp_keys = s.keys["rsp"]
    seq = rsp_keys.seq
    payloads = send_raw(conn, s.encrypt(bytes((0x12, 0xE8, 0, 0))))
    record = conn.binding.decode(payloads[0]).message
    sid, length = struct.unpack_from("<IH", record, 0)
    assert sid == s.session_id
    nonce = bytes(a ^ b for a, b in zip(rsp_keys.iv[:8], struct.pack("<Q", seq), strict=True))
    plain = AESGCM(rsp_keys.key).decrypt(
        nonce + rsp_keys.iv[8:], record[6 : 6 + length], record[:6]
    )
    assert plain == b"\x04\x00" + bytes((0x12, 0x68, 0, 0))  # DOE: no random padding


# --- tampering and replays ---------------------------------------------------------------------


@pytest.mark.parametrize("binding", ["doe", "mctp"])
@pytest.mark.parametrize("where", ["length", "ciphertext", "mac", "replay", "sequence"])
async def test_tampered_record_ends_session(device: Device, binding: str, where: str) -> None:
    req, conn = await connect(device, binding=binding)
    s = await open_session(req, peer_chain=CHAIN384, binding=binding)
    hdr = s.record.app_header
    request = hdr + bytes((0x12, 0xE8, 0, 0))
    previous = s.encrypt(request)
    ack = s.decrypt(conn.binding.decode(send_raw(conn, previous)[0]).message)
    assert ack == hdr + bytes((0x12, ResponseCode.HEARTBEAT_ACK, 0, 0))
    hsize = 4 + s.record.sequence_number_size
    if where == "replay":
        record = bytearray(previous)
    elif where == "sequence":
        if binding == "doe":
            pytest.skip("no sequence number on the wire with DOE")
        record = bytearray(s.encrypt(request))
        record[4] ^= 0x01
    else:
        record = bytearray(s.encrypt(request))
        index = {"length": hsize, "ciphertext": hsize + 3, "mac": len(record) - 1}[where]
        record[index] ^= 0x10
    payloads = send_raw(conn, bytes(record))
    assert len(payloads) == 1
    reply = conn.binding.decode(payloads[0])
    assert reply.secured  # DecryptError travels in the session, under its response key
    assert s.decrypt(reply.message) == hdr + bytes((0x12, 0x7F, ErrorCode.DecryptError, 0))
    assert session_ids(conn) == set()  # the session is gone, its keys wiped
    assert send_raw(conn, s.encrypt(request)) == []
    # the connection itself still works
    assert (await req.send(bytes((0x12, RequestCode.GET_DIGESTS, 0, 0))))[1] == 0x01


async def test_unknown_session_id_dropped_or_answered(device: Device) -> None:
    req, conn = await connect(device)
    s = await open_session(req, peer_chain=CHAIN384)
    record = bytearray(s.encrypt(bytes((0x12, 0xE8, 0, 0))))
    record[0] ^= 0x01  # another SessionID
    assert send_raw(conn, bytes(record)) == []
    assert session_ids(conn) == {s.session_id}  # a forged ID cannot end a session
    strict = make_device(unknown_session="error")
    _req2, conn2 = await connect(strict)
    payloads = send_raw(conn2, bytes(record))
    reply = conn2.binding.decode(payloads[0])
    assert not reply.secured and reply.message[:4] == bytes((0x12, 0x7F, 0x02, 0))


# --- session rules --------------------------------------------------------------------------


async def test_get_version_inside_and_outside_a_session(device: Device) -> None:
    req, conn = await connect(device)
    s = await open_session(req, peer_chain=CHAIN384)
    other = await open_session(req, peer_chain=CHAIN384)
    with pytest.raises(SpdmErrorReply) as err:
        await s.send(bytes((0x10, RequestCode.GET_VERSION, 0, 0)))
    assert err.value.code == ErrorCode.UnexpectedRequest
    await s.heartbeat()  # nothing was reset
    assert session_ids(conn) == {s.session_id, other.session_id}
    await req.get_version()  # outside the session: every session ends
    assert session_ids(conn) == set()
    assert send_raw(conn, s.encrypt(bytes((0x12, 0xE8, 0, 0)))) == []


@pytest.mark.parametrize("version", [0x11, 0x12])
async def test_requests_outside_their_session_rule(device: Device, version: int) -> None:
    req, _conn = await connect(device, version=version)
    no_session = ErrorCode.SessionRequired if version >= 0x12 else ErrorCode.Unspecified
    for code in (RequestCode.HEARTBEAT, RequestCode.KEY_UPDATE, RequestCode.END_SESSION):
        with pytest.raises(SpdmErrorReply) as err:
            await req.send(bytes((version, code, 1, 0)))
        assert err.value.code == no_session, code.name
    s = await open_session(req, peer_chain=CHAIN384)
    for request in (
        bytes((version, RequestCode.GET_CAPABILITIES, 0, 0)) + bytes(8),
        bytes((version, RequestCode.KEY_EXCHANGE, 0, 0)) + bytes(140),
        bytes((version, RequestCode.PSK_EXCHANGE, 0, 0)) + bytes(8),
        bytes((version, RequestCode.CHALLENGE, 0, 0)) + bytes(32),
    ):
        with pytest.raises(SpdmErrorReply) as err:
            await s.send(request)
        assert err.value.code == ErrorCode.UnexpectedRequest, request[1]
    with pytest.raises(SpdmErrorReply) as err:  # FINISH again in an established session
        await s.send(bytes((version, RequestCode.FINISH, 0, 0)) + bytes(48))
    assert err.value.code == ErrorCode.UnexpectedRequest
    await s.heartbeat()


async def test_handshake_phase_allows_only_finish(device: Device) -> None:
    req, _conn = await connect(device)
    s = await key_exchange(req, peer_chain=CHAIN384)
    for request in (measurements_request(0x12), bytes((0x12, RequestCode.HEARTBEAT, 0, 0))):
        with pytest.raises(SpdmErrorReply) as err:
            await s.send(request)
        assert err.value.code == ErrorCode.UnexpectedRequest
    await finish(s)
    assert (await s.send(measurements_request(0x12)))[1] == ResponseCode.MEASUREMENTS


async def test_session_limit(device: Device) -> None:
    req, _conn = await connect(device)
    sessions = [await open_session(req, peer_chain=CHAIN384) for _ in range(4)]
    with pytest.raises(SpdmErrorReply) as err:
        await open_session(req, peer_chain=CHAIN384)
    assert err.value.code == ErrorCode.SessionLimitExceeded
    assert len({s.session_id for s in sessions}) == 4
    await sessions[1].end_session()
    s5 = await open_session(req, peer_chain=CHAIN384)
    await s5.heartbeat()
    await sessions[0].heartbeat()  # the others are untouched


async def test_finish_with_wrong_verify_data(device: Device) -> None:
    req, conn = await connect(device)
    s = await key_exchange(req, peer_chain=CHAIN384)
    bad = bytes((0x12, RequestCode.FINISH, 0, 0)) + bytes(48)
    rsp = await s.send(bad, allow_error=True)
    assert rsp == bytes((0x12, 0x7F, ErrorCode.DecryptError, 0))
    assert session_ids(conn) == set()


async def test_key_update_rules(device: Device) -> None:
    req, _conn = await connect(device)
    s = await open_session(req, peer_chain=CHAIN384)
    with pytest.raises(SpdmErrorReply) as err:  # VerifyNewKey with nothing to verify
        await s.send(bytes((0x12, RequestCode.KEY_UPDATE, 3, 1)))
    assert err.value.code == ErrorCode.InvalidRequest
    with pytest.raises(SpdmErrorReply) as err:
        await s.send(bytes((0x12, RequestCode.KEY_UPDATE, 9, 1)))
    assert err.value.code == ErrorCode.InvalidRequest
    rsp = await s.send(bytes((0x12, RequestCode.KEY_UPDATE, 1, 0x42)))
    assert rsp == bytes((0x12, ResponseCode.KEY_UPDATE_ACK, 1, 0x42))
    # the ACK "was lost": the requester keeps the old key; the responder falls back to it
    rsp = await s.send(bytes((0x12, RequestCode.KEY_UPDATE, 1, 0x43)), allow_error=True)
    assert rsp[:3] == bytes((0x12, 0x7F, ErrorCode.InvalidRequest))  # update still pending
    s.update_key("req")
    rsp = await s.send(bytes((0x12, RequestCode.KEY_UPDATE, 3, 0x44)))
    assert rsp == bytes((0x12, ResponseCode.KEY_UPDATE_ACK, 3, 0x44))
    await s.heartbeat()
    await s.key_update(2)
    await s.heartbeat()


async def test_heartbeat_watchdog() -> None:
    dev = make_device(heartbeat_period=5)
    clock = Clock()
    req, conn = await connect(dev, clock=clock)
    s = await open_session(req, peer_chain=CHAIN384)
    assert s.heartbeat_period == 5
    for _ in range(3):
        clock.now += 9  # within 2 * HeartbeatPeriod of the last message
        await s.heartbeat()
    clock.now += 10.5
    assert send_raw(conn, s.encrypt(bytes((0x12, 0xE8, 0, 0)))) == []
    assert session_ids(conn) == set()


async def test_no_heartbeat_without_hbeat_cap(device: Device) -> None:
    req, _conn = await connect(device, flags=FULL_FLAGS & ~RequesterCap.HBEAT_CAP)
    s = await open_session(req, peer_chain=CHAIN384)
    assert s.heartbeat_period == 0
    with pytest.raises(SpdmErrorReply) as err:
        await s.heartbeat()
    assert err.value.code == ErrorCode.UnsupportedRequest


@pytest.mark.parametrize("cache_cap", [True, False])
async def test_end_session_negotiated_state(cache_cap: bool) -> None:
    dev = make_device(add=("CACHE_CAP",)) if cache_cap else make_device()
    req, _conn = await connect(dev)
    s = await open_session(req, peer_chain=CHAIN384)
    await s.end_session(attributes=1)  # clear the negotiated state
    digests = bytes((0x12, RequestCode.GET_DIGESTS, 0, 0))
    if cache_cap:
        with pytest.raises(SpdmErrorReply) as err:
            await req.send(digests)
        assert err.value.code == ErrorCode.UnexpectedRequest
        await req.vca()
    assert (await req.send(digests))[1] == ResponseCode.DIGESTS
    s2 = await open_session(req, peer_chain=CHAIN384)
    await s2.end_session(attributes=0)
    assert (await req.send(digests))[1] == ResponseCode.DIGESTS


# --- opaque data / DSP0277 version ------------------------------------------------------------


async def test_secured_version_selection(device: Device) -> None:
    req, _conn = await connect(device, version=0x13)
    s = await open_session(
        req, peer_chain=CHAIN384, secured_versions=(0x1000, 0x1100, 0x1200, 0x1300)
    )
    assert s.secured_version == 0x1300
    kx_rsp = next(r for q, r in req.log if q[1] == RequestCode.KEY_EXCHANGE)
    opaque_at = 40 + 96  # fixed part + SECP384R1 ExchangeData, no summary hash
    olen = struct.unpack_from("<H", kx_rsp, opaque_at)[0]
    # version selection 1.3, then the DSP0277 1.3 AEAD limit element (exponent 64)
    assert kx_rsp[opaque_at + 2 : opaque_at + 2 + olen] == bytes.fromhex(
        "0200000000000400 0100001300000300 010240 00"
    )
    await s.heartbeat()
    with pytest.raises(SpdmErrorReply) as err:
        await open_session(req, peer_chain=CHAIN384, secured_versions=(0x2000,))
    assert err.value.code == ErrorCode.InvalidRequest
    bad = opaque_supported_versions(0x13, (0x1200,))[:-1]
    with pytest.raises(SpdmErrorReply) as err:
        await open_session(req, peer_chain=CHAIN384, opaque=bad)
    assert err.value.code == ErrorCode.InvalidRequest


async def test_measurement_summary_hash(device: Device) -> None:
    req, conn = await connect(device)
    s = await open_session(req, peer_chain=CHAIN384, measurement_summary=0xFF)
    alg = conn.responder.algorithms
    assert s.measurement_summary_hash == device.measurement_summary_hash(
        0xFF, alg.measurement_hash, alg.base_hash
    )
    assert len(s.measurement_summary_hash) == 48
    with pytest.raises(SpdmErrorReply) as err:
        await open_session(req, peer_chain=CHAIN384, measurement_summary=2)
    assert err.value.code == ErrorCode.InvalidRequest


async def test_key_exchange_bad_slot_and_dhe(device: Device) -> None:
    req, conn = await connect(device)
    with pytest.raises(SpdmErrorReply) as err:
        await open_session(req, peer_chain=CHAIN384, slot_id=5)
    assert err.value.code == ErrorCode.InvalidRequest
    ex = bytes((0x12, RequestCode.KEY_EXCHANGE, 0, 0)) + struct.pack("<HBB", 1, 0, 0) + bytes(32)
    opaque = opaque_supported_versions(0x12, (0x1200,))
    bad_point = ex + bytes([1]) * 96 + struct.pack("<H", len(opaque)) + opaque
    with pytest.raises(SpdmErrorReply) as err:
        await req.send(bad_point)
    assert err.value.code == ErrorCode.Unspecified
    assert session_ids(conn) == set()


# --- PSK --------------------------------------------------------------------------------------


@pytest.mark.parametrize("binding", ["doe", "mctp"])
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("hint", [HINT, b""])
async def test_psk_session(device: Device, binding: str, version: int, hint: bytes) -> None:
    req, conn = await connect(device, binding=binding, version=version)
    s = await psk_exchange(req, psk=PSK, hint=hint, binding=binding)
    assert s.established
    assert len(s.message_f) == 4 + 48 + 4  # PSK_FINISH ran (PSK_CAP_WITH_CONTEXT)
    assert (await s.send(measurements_request(version)))[1] == ResponseCode.MEASUREMENTS
    await s.key_update(2)
    await s.heartbeat()
    await s.end_session()
    assert session_ids(conn) == set()


async def test_psk_without_context_needs_no_psk_finish() -> None:
    dev = make_device(add=("PSK_CAP",), remove=("PSK_CAP_WITH_CONTEXT",))
    req, _conn = await connect(dev, version=0x13)
    s = await psk_exchange(req, psk=PSK, hint=HINT)
    assert s.established and not s.message_f
    await s.heartbeat()
    with pytest.raises(SpdmErrorReply) as err:
        await s.send(bytes((0x13, RequestCode.PSK_FINISH, 0, 0)) + bytes(48))
    assert err.value.code == ErrorCode.UnsupportedRequest


async def test_psk_errors(device: Device) -> None:
    req, conn = await connect(device)
    with pytest.raises(SpdmErrorReply) as err:
        await psk_exchange(req, psk=PSK, hint=b"unknown")
    assert err.value.code == ErrorCode.Unspecified
    with pytest.raises(SpdmErrorReply) as err:
        await psk_exchange(req, psk=PSK, hint=b"x" * 33)
    assert err.value.code == ErrorCode.InvalidRequest
    with pytest.raises(RequesterError, match="ResponderVerifyData"):
        await psk_exchange(req, psk=b"wrong key", hint=HINT)
    assert session_ids(conn) != set()  # the responder's half stays in its handshake phase


async def test_psk_finish_bad_verify_data(device: Device) -> None:
    req, conn = await connect(device)
    s = await psk_exchange(req, psk=PSK, hint=HINT, finish=False)
    assert not s.established
    rsp = await s.send(bytes((0x12, RequestCode.PSK_FINISH, 0, 0)) + bytes(48), allow_error=True)
    assert rsp == bytes((0x12, 0x7F, ErrorCode.DecryptError, 0))
    assert session_ids(conn) == set()
    # a PSK_FINISH in a KEY_EXCHANGE session is refused
    k = await key_exchange(req, peer_chain=CHAIN384)
    with pytest.raises(SpdmErrorReply) as err:
        await k.send(bytes((0x12, RequestCode.PSK_FINISH, 0, 0)) + bytes(48))
    assert err.value.code == ErrorCode.UnexpectedRequest


async def test_termination_policy_on_runtime_update() -> None:
    """SessionPolicy bit 0 clear: the session ends when the device's measurements change."""
    dev = make_device(heartbeat_period=0)
    req, conn = await connect(dev, version=0x12)
    ends = await open_session(req, peer_chain=CHAIN384, session_policy=0)
    stays = await open_session(req, peer_chain=CHAIN384, session_policy=1)
    psk = await psk_exchange(req, psk=PSK, hint=HINT, session_policy=1)
    index = dev.measurements.snapshot()[0].index
    dev.measurements.set_value(index, b"new firmware image")
    assert send_raw(conn, ends.encrypt(bytes((0x12, 0xE8, 0, 0)))) == []
    assert session_ids(conn) == {stays.session_id, psk.session_id}
    rsp = await stays.send(measurements_request(0x12, 0))
    assert rsp[1] == ResponseCode.MEASUREMENTS
    await req.get_version()  # the connection's listener goes away with its sessions
    tables = [cb for cb in dev.listeners if isinstance(getattr(cb, "__self__", None), SessionTable)]
    assert tables == []


async def test_identity_requests_inside_a_session(device: Device) -> None:
    req, _conn = await connect(device, binding="mctp", version=0x13)
    s = await open_session(req, peer_chain=CHAIN384, binding="mctp")
    digests = await s.send(bytes((0x13, RequestCode.GET_DIGESTS, 0, 0)))
    assert digests[1] == ResponseCode.DIGESTS
    assert digests[4:52] == hashlib.sha384(CHAIN384).digest()  # slot 0 first
    cert = await s.send(
        bytes((0x13, RequestCode.GET_CERTIFICATE, 0, 0)) + struct.pack("<HH", 0, 64)
    )
    assert cert[1] == ResponseCode.CERTIFICATE and cert[8:] == CHAIN384[:64]


async def test_mctp_record_without_spdm_message(device: Device) -> None:
    req, conn = await connect(device, binding="mctp")
    s = await open_session(req, peer_chain=CHAIN384, binding="mctp")
    payloads = send_raw(conn, s.encrypt(b"\x7e" + bytes((0x12, 0xE8, 0, 0))))  # vendor type
    reply = s.decrypt(conn.binding.decode(payloads[0]).message)
    assert reply == b"\x05" + bytes((0x12, 0x7F, ErrorCode.UnsupportedRequest, 0x7E))
    await s.heartbeat()  # the session is fine


@pytest.mark.parametrize("binding", ["doe", "mctp"])
@pytest.mark.parametrize("version", VERSIONS)
async def test_responder_initiated_key_update(device: Device, binding: str, version: int) -> None:
    """spdm-emu's OOB_ENCAP_KEY_UPDATE: the responder updates its own key through the
    encapsulated flow (UpdateKey, then VerifyNewKey under the new response key)."""
    req, conn = await connect(device, binding=binding, version=version)
    s = await open_session(req, peer_chain=CHAIN384, binding=binding)
    with pytest.raises(SpdmErrorReply):  # nothing pending yet
        await s.send(bytes((version, RequestCode.GET_ENCAPSULATED_REQUEST, 0, 0)))
    assert conn.oob_encap_key_update(struct.pack("<I", s.session_id))
    old_rsp_key = s.keys["rsp"].key
    await s.responder_key_update()
    assert s.keys["rsp"].key != old_rsp_key
    await s.heartbeat()  # traffic under the responder's new key
    await s.key_update(2)
    await s.end_session()
    assert not conn.oob_encap_key_update(struct.pack("<I", s.session_id))


async def test_measurement_requester_inside_a_session(device: Device) -> None:
    """Requester.send(session_id=) routes the measurement flow through the secured session:
    the signed MEASUREMENTS is verified over the session's own L1/L2, and the request never
    crosses the transport in the clear."""
    from emulator.requester.identity import flow_for
    from emulator.requester.measurements import get_measurements

    req, _conn = await connect(device, binding="doe", version=0x13)
    flow = flow_for(req)
    await flow.get_digests()
    await flow.get_certificate(0)
    s = await open_session(req, peer_chain=CHAIN384, binding="doe")
    plain_before = len(req.log)
    result = await get_measurements(req, 0xFF, signed=True, session_id=s.session_id)
    assert result.signed and result.blocks
    assert req.log[plain_before][1][1] == ResponseCode.MEASUREMENTS
    assert s.log[-1][0][1] == 0xE0  # GET_MEASUREMENTS went inside the session
    with pytest.raises(RequesterError, match="no open session"):
        await get_measurements(req, 0, session_id=0x12345678)
    await s.end_session()
    assert s.session_id not in req.sessions
