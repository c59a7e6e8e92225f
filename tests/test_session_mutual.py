"""Mutual authentication in a session: MutAuthRequested, the encapsulated GET_DIGESTS /
GET_CERTIFICATE flow, the requester's chain checked against the profile's trusted root,
and the FINISH signature ("requester-finish signing")."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from emulator.codec.constants import ErrorCode, RequestCode, RequesterCap, ResponseCode
from emulator.device.model import Device
from emulator.errors import RequesterError
from emulator.requester import SpdmErrorReply
from emulator.requester.session import (
    RequesterIdentity,
    finish,
    key_exchange,
    load_identity,
    open_session,
    run_encapsulated,
)
from emulator.x509.generate import generate_chain
from tests.test_session import CHAIN384, FULL_FLAGS, connect, make_device, session_ids

ROOT = Path(__file__).resolve().parent.parent
REQ_SLOT = ROOT / "certs" / "requester" / "ecdsa-p384" / "slot0"
MUT_FLAGS = FULL_FLAGS | RequesterCap.MUT_AUTH_CAP


@pytest.fixture(scope="module")
def identity() -> RequesterIdentity:
    return load_identity(str(REQ_SLOT))


@pytest.fixture(scope="module")
def untrusted() -> RequesterIdentity:
    chain = generate_chain("ecdsa-p384", role="requester", label="untrusted")
    return RequesterIdentity(chain.cert_ders(), chain.leaf_key)


MODES = {"encap": 0x02, "get_digests": 0x04, "requested": 0x01}


def mut_device(mode: str, **extra: object) -> Device:
    sessions: dict[str, object] = {"mut_auth": mode}
    if mode == "requested":
        sessions["requester_chain"] = "../certs/requester/ecdsa-p384/slot0/chain.der"
    sessions.update(extra)
    return make_device(**sessions)


@pytest.mark.parametrize("binding", ["doe", "mctp"])
@pytest.mark.parametrize("version", [0x11, 0x12, 0x13])
@pytest.mark.parametrize("mode", list(MODES))
async def test_mutual_auth_succeeds(
    identity: RequesterIdentity, mode: str, version: int, binding: str
) -> None:
    dev = mut_device(mode)
    req, conn = await connect(dev, binding=binding, version=version, flags=MUT_FLAGS)
    s = await key_exchange(req, peer_chain=CHAIN384, binding=binding)
    assert s.mut_auth_requested == MODES[mode]
    if mode != "requested":
        await run_encapsulated(s, identity)
        # the responder now holds the requester's chain (CM) for TH2
        table_session = next(iter(conn.responder.ctx.sessions.sessions.values()))
        assert table_session.peer_chain == s.mut_chain
    await finish(s, identity)
    finish_req = s.log[-1][0]
    assert finish_req[2] == 1 and len(finish_req) == 4 + 96 + 48  # signature included
    assert s.established
    await s.heartbeat()
    await s.key_update(2)
    await s.end_session()


async def test_no_mutual_auth_without_requester_cap(identity: RequesterIdentity) -> None:
    """DMTF's conformance suite fails a responder that asks a requester without MUT_AUTH_CAP."""
    dev = mut_device("encap")
    req, _conn = await connect(dev, flags=FULL_FLAGS)
    s = await open_session(req, peer_chain=CHAIN384)
    assert s.mut_auth_requested == 0
    kx_rsp = next(r for q, r in req.log if q[1] == RequestCode.KEY_EXCHANGE)
    assert kx_rsp[6:8] == b"\x00\x00"  # MutAuthRequested, ReqSlotIDParam
    await s.heartbeat()


async def test_mandatory_mutual_auth_refused() -> None:
    dev = mut_device("encap", mut_auth_mandatory=True)
    req, _ = await connect(dev, version=0x13, flags=FULL_FLAGS)
    with pytest.raises(SpdmErrorReply) as err:
        await key_exchange(req, peer_chain=CHAIN384)
    assert err.value.code == ErrorCode.InvalidPolicy
    req, _ = await connect(dev, version=0x12, flags=MUT_FLAGS & ~RequesterCap.ENCAP_CAP)
    with pytest.raises(SpdmErrorReply) as err:
        await key_exchange(req, peer_chain=CHAIN384)
    assert err.value.code == ErrorCode.Unspecified


@pytest.mark.parametrize("mode", ["encap", "get_digests"])
async def test_untrusted_requester_chain(untrusted: RequesterIdentity, mode: str) -> None:
    dev = mut_device(mode)
    req, conn = await connect(dev, version=0x12, flags=MUT_FLAGS)
    s = await key_exchange(req, peer_chain=CHAIN384)
    with pytest.raises(SpdmErrorReply) as err:
        await run_encapsulated(s, untrusted)
    assert err.value.code == ErrorCode.InvalidResponseCode
    # without a trusted requester key FINISH cannot succeed
    rsp = await s.send(_finish_request(s, untrusted), allow_error=True)
    assert rsp[1:3] == bytes((0x7F, ErrorCode.DecryptError))
    assert session_ids(conn) == set()


def _finish_request(s: object, ident: RequesterIdentity) -> bytes:
    """A FINISH with a (meaningless) signature of the right size and a zero HMAC."""
    version = s.version  # type: ignore[attr-defined]
    return bytes((version, RequestCode.FINISH, 1, 0)) + bytes(96) + bytes(48)


async def test_finish_signature_checked(identity: RequesterIdentity) -> None:
    dev = mut_device("encap")
    req, conn = await connect(dev, version=0x13, flags=MUT_FLAGS)
    s = await key_exchange(req, peer_chain=CHAIN384)
    await run_encapsulated(s, identity)
    other = generate_chain("ecdsa-p384", role="requester", label="other")
    impostor = RequesterIdentity(identity.certs_der, other.leaf_key)  # right chain, wrong key
    with pytest.raises(SpdmErrorReply) as err:
        await finish(s, impostor)
    assert err.value.code == ErrorCode.DecryptError
    assert session_ids(conn) == set()


async def test_finish_without_signature_refused(identity: RequesterIdentity) -> None:
    dev = mut_device("encap")
    req, _conn = await connect(dev, version=0x12, flags=MUT_FLAGS)
    s = await key_exchange(req, peer_chain=CHAIN384)
    await run_encapsulated(s, identity)
    with pytest.raises(SpdmErrorReply) as err:
        await s.send(bytes((0x12, RequestCode.FINISH, 0, 0)) + bytes(48))
    assert err.value.code == ErrorCode.InvalidRequest
    await finish(s, identity)  # the session survived the refused FINISH
    await s.heartbeat()


async def test_encapsulated_flow_rules(identity: RequesterIdentity) -> None:
    dev = mut_device("encap")
    req, _conn = await connect(dev, version=0x13, flags=MUT_FLAGS)
    s = await key_exchange(req, peer_chain=CHAIN384)
    # FINISH before the encapsulated flow: the responder still has a request in flight
    with pytest.raises(SpdmErrorReply) as err:
        await s.send(bytes((0x13, RequestCode.FINISH, 1, 0)) + bytes(96 + 48))
    assert err.value.code == ErrorCode.RequestInFlight
    rsp = await s.send(bytes((0x13, RequestCode.GET_ENCAPSULATED_REQUEST, 0, 0)))
    assert rsp[:4] == bytes((0x13, ResponseCode.ENCAPSULATED_REQUEST, 1, 0))
    assert rsp[4:] == bytes((0x13, RequestCode.GET_DIGESTS, 0, 0))
    # a DELIVER with another RequestID
    with pytest.raises(SpdmErrorReply) as err:
        await s.send(bytes((0x13, RequestCode.DELIVER_ENCAPSULATED_RESPONSE, 7, 0)) + bytes(4))
    assert err.value.code == ErrorCode.InvalidRequest
    # a wrong answer (CERTIFICATE instead of DIGESTS) ends the flow
    wrong = bytes((0x13, ResponseCode.CERTIFICATE, 0, 0)) + struct.pack("<HH", 1, 0) + b"\x30"
    with pytest.raises(SpdmErrorReply) as err:
        await s.send(bytes((0x13, RequestCode.DELIVER_ENCAPSULATED_RESPONSE, 1, 0)) + wrong)
    assert err.value.code == ErrorCode.InvalidResponseCode
    with pytest.raises(SpdmErrorReply) as err:
        await s.send(bytes((0x13, RequestCode.GET_ENCAPSULATED_REQUEST, 0, 0)))
    assert err.value.code == ErrorCode.NoPendingRequests


async def test_encapsulated_request_without_pending_flow(identity: RequesterIdentity) -> None:
    req, _conn = await connect(make_device(), version=0x12, flags=MUT_FLAGS)
    s = await open_session(req, peer_chain=CHAIN384)
    with pytest.raises(SpdmErrorReply) as err:
        await s.send(bytes((0x12, RequestCode.GET_ENCAPSULATED_REQUEST, 0, 0)))
    assert err.value.code == ErrorCode.UnexpectedRequest
    with pytest.raises(RequesterError):
        await run_encapsulated(s, identity)


@pytest.mark.parametrize("binding", ["doe", "mctp"])
@pytest.mark.parametrize("mode", ["encap", "get_digests"])
async def test_mutual_auth_handshake_in_the_clear(
    identity: RequesterIdentity, mode: str, binding: str
) -> None:
    """libspdm's requester sends the whole handshake phase in the clear (encapsulated
    messages too) once HANDSHAKE_IN_THE_CLEAR is negotiated."""
    dev = mut_device(mode)
    flags = MUT_FLAGS | RequesterCap.HANDSHAKE_IN_THE_CLEAR_CAP
    req, _conn = await connect(dev, binding=binding, version=0x13, flags=flags)
    s = await open_session(req, peer_chain=CHAIN384, binding=binding, identity=identity)
    assert s.in_clear and s.mut_auth_requested == MODES[mode]
    plain = [q[1] for q, _ in req.log[-4:]]
    assert RequestCode.DELIVER_ENCAPSULATED_RESPONSE in plain and RequestCode.FINISH in plain
    await s.heartbeat()
    await s.end_session()
