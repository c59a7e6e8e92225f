"""Faults that need identity, measurements and sessions: lies, man-in-the-middle tampering,
ResponseNotReady inside signed flows, secured-record faults, and byte-exact determinism.

Every fault is observed from the requester side (emulator.requester.identity,
.measurements, .session), whose checks and signature verification are its own code.
Where a test needs to know what the device *should* have sent, it computes it here
independently (hashlib / cryptography on the committed certificates and profile values).
"""

from __future__ import annotations

import contextlib
import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from emulator.app import build_fault_engine
from emulator.codec.constants import ErrorCode, RequestCode
from emulator.connection import ExchangeEvent, SpdmConnection
from emulator.device.model import Device
from emulator.device.random import SeededRandom
from emulator.errors import RequesterError
from emulator.faults.engine import FaultEngine
from emulator.profiles import load_profile
from emulator.requester import Requester, RequesterConfig, SpdmErrorReply
from emulator.requester.identity import IdentityFlow, verify_challenge_signature
from emulator.requester.measurements import get_measurements
from emulator.requester.not_ready import RespondIfReadyChannel
from emulator.requester.session import ConnectionChannel, open_session
from emulator.transport import get_binding
from tests.helpers import make_device


def device(*specs: str, seed: int = 3) -> tuple[Device, FaultEngine]:
    """A device and its fault engine (the profile's rules, then ``specs``)."""
    dev = make_device()
    dev.seed = seed
    engine = build_fault_engine(dev.profile)
    for spec in specs:
        engine.add(spec)
    return dev, engine


class Setup:
    """Device -> SpdmConnection (DOE) -> requester (+ identity flow with seeded nonces)."""

    def __init__(self, *specs: str, not_ready: bool = False, seed: int = 3) -> None:
        self.device, self.engine = device(*specs, seed=seed)
        self.events: list[ExchangeEvent] = []
        self.conn = SpdmConnection(
            self.device,
            get_binding("doe"),
            number=1,
            observers=[self.events.append],
            faults=self.engine,
        )
        channel: Any = ConnectionChannel(self.conn)
        self.rif: RespondIfReadyChannel | None = None
        if not_ready:
            self.rif = RespondIfReadyChannel(channel, sleep=_no_sleep)
            channel = self.rif
        self.req = Requester(channel, RequesterConfig())
        self.flow = IdentityFlow(self.req, rng=SeededRandom(99, "requester"))
        self.req.identity_flow = self.flow

    async def authenticate(self, challenge: bool = True) -> Any:
        await self.req.vca()
        await self.flow.get_digests()
        await self.flow.get_certificate(0)
        return await self.flow.challenge(0) if challenge else None

    def faults(self) -> list[str]:
        return [f for e in self.events for f in e.faults]


async def _no_sleep(_: float) -> None:
    return None


def original_chain_der() -> list[bytes]:
    """The slot-0 certificates the device really has for the negotiated ECDSA P-384."""
    data = (load_profile("default").base_dir / "../certs/ecdsa-p384/slot0/chain.der").read_bytes()
    from emulator.x509.chain import split_der_chain

    return split_der_chain(data)


# ---------------------------------------------------------------------------- sanity


async def test_fault_free_flow_verifies() -> None:
    s = Setup()
    result = await s.authenticate()
    assert len(result.signature) == 96  # ECDSA P-384 was negotiated (first in the profile)
    signed = await get_measurements(s.req, 0xFF, signed=True)
    assert signed.signed and s.faults() == []


# ---------------------------------------------------------------------------- lies


async def test_bad_signature_on_challenge_auth() -> None:
    s = Setup("on=CHALLENGE,do=lie:bad_signature")
    with pytest.raises(RequesterError, match="signature does not verify"):
        await s.authenticate()
    (fault,) = s.faults()
    assert fault.startswith("f1: lie:bad_signature (signature byte ")


async def test_bad_signature_on_measurements_and_key_exchange() -> None:
    s = Setup("on=GET_MEASUREMENTS,do=lie:bad_signature")
    await s.authenticate()
    await get_measurements(s.req, 1)  # unsigned: nothing to spoil (logged, not applied)
    with pytest.raises(RequesterError, match="signature"):
        await get_measurements(s.req, 0xFF, signed=True)
    assert s.faults() == [s.faults()[0]] and "lie:bad_signature" in s.faults()[0]
    k = Setup("on=KEY_EXCHANGE,do=lie:bad_signature")
    chain = (await k.authenticate(challenge=False), k.flow.chains[0].chain)[1]
    with pytest.raises(RequesterError, match="signature"):
        await open_session(k.req, peer_chain=chain)


async def test_signature_by_another_key() -> None:
    s = Setup("on=CHALLENGE,do=lie:other_key")
    with pytest.raises(RequesterError, match="signature does not verify"):
        await s.authenticate()
    # the signature is a valid one, by another P-384 key: verify it independently over
    # the M1 the requester built (A + B + CHALLENGE + CHALLENGE_AUTH without signature)
    request, response = s.req.log[-1]
    # CHALLENGE_AUTH 1.3: header, CertChainHash (48), Nonce (32), OpaqueDataLength,
    # OpaqueData, RequesterContext (8), Signature (96); DOE may pad after it
    off = 4 + 48 + 32
    off += 2 + int.from_bytes(response[off : off + 2], "little") + 8
    signature = response[off : off + 96]
    m1 = bytes(s.req.message_a) + bytes(s.flow.message_b) + request + response[:off]
    slot_key = s.device.identity.key_for(0, 0x80)
    assert slot_key is not None
    other = s.engine.material.other_key(slot_key.key)
    neg = s.req.neg
    assert verify_challenge_signature(
        neg.version, neg.base_asym, neg.base_hash, other.public_key(), m1, signature
    )
    leaf = s.flow.chains[0].leaf_key
    assert not verify_challenge_signature(
        neg.version, neg.base_asym, neg.base_hash, leaf, m1, signature
    )
    assert s.faults() == ["f1: lie:other_key"]


async def test_chain_does_not_match_the_digest() -> None:
    s = Setup("on=GET_DIGESTS,do=lie:chain_digest_mismatch")
    await s.req.vca()
    digests = await s.flow.get_digests()
    with pytest.raises(RequesterError, match=r"Hash\(chain\) != the DIGESTS entry of slot 0"):
        await s.flow.get_certificate(0)
    # what the device should have said: Hash(SPDM chain of slot 0), computed here
    chain = s.device.identity.key_for(0, s.req.neg.base_asym)
    assert chain is not None
    true_digest = hashlib.sha384(chain.spdm_chain(s.req.neg.base_hash)).digest()
    assert digests.digests[0] != true_digest
    assert bytes(a ^ b for a, b in zip(digests.digests[0], true_digest, strict=True)) == (
        b"\x01" + bytes(47)
    )


async def test_untrusted_chain() -> None:
    real = original_chain_der()
    s = Setup("do=lie:untrusted_chain")
    result = await s.authenticate()  # integrity holds and the device key signs
    held = s.flow.chains[0]
    assert held.root_der != real[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    real_leaf = x509.load_der_x509_certificate(real[-1])
    assert held.leaf_key.public_bytes(der, spki) == real_leaf.public_key().public_bytes(der, spki)
    assert held.certs[-1].subject == real_leaf.subject
    assert result.signature
    # a requester that trusts the device's real root refuses it
    strict = Setup("do=lie:untrusted_chain")
    strict.flow.trusted_roots = [real[0]]
    await strict.req.vca()
    await strict.flow.get_digests()
    with pytest.raises(RequesterError, match="does not chain to a trusted root"):
        await strict.flow.get_certificate(0)
    assert "f1: lie:untrusted_chain" in s.faults()


async def test_expired_chain() -> None:
    # the project's requester checks validity periods: it rejects the chain
    strict = Setup("do=lie:expired_chain")
    await strict.req.vca()
    await strict.flow.get_digests()
    with pytest.raises(RequesterError, match="certificate 0 is not valid now"):
        await strict.flow.get_certificate(0)
    # a requester that skips the time check (libspdm's default build) is fooled
    s = Setup("do=lie:expired_chain")
    s.flow.check_validity = False
    await s.authenticate()
    now = datetime.now(UTC)
    certs = s.flow.chains[0].certs
    assert all(c.not_valid_after_utc < now for c in certs)
    assert certs[-1].not_valid_after_utc == datetime(2001, 1, 1, tzinfo=UTC)
    assert "f1: lie:expired_chain" in s.faults()


async def test_wrong_measurement_signed_consistently() -> None:
    s = Setup("on=GET_MEASUREMENTS,do=lie:wrong_measurement")
    await s.authenticate()
    result = await get_measurements(s.req, 0xFF, signed=True, raw=True)
    assert result.signed  # the requester verified the signature: a consistent lie
    truth = {b.index: b.value for b in s.device.measurements.snapshot()}
    raw_seen = 0
    for block in result.blocks:
        value = block.value
        real = truth[block.index]
        if block.value_type & 0x80:  # raw bit stream: compare directly
            raw_seen += 1
            assert value != real and value[:-1] == real[:-1] and value[-1] == real[-1] ^ 1
        else:  # a digest: not the digest of the real value
            assert value != hashlib.sha384(real).digest()
    assert raw_seen > 0
    assert s.faults() == ["f1: lie:wrong_measurement"]


async def test_reused_nonce() -> None:
    plain = Setup()
    a = await plain.authenticate()
    b = await plain.flow.challenge(0)
    assert a.responder_nonce != b.responder_nonce
    s = Setup("on=CHALLENGE,nth=2,do=lie:reused_nonce")
    first = await s.authenticate()
    second = await s.flow.challenge(0)  # signature verified: the device signed the reuse
    assert second.responder_nonce == first.responder_nonce
    assert s.faults() == ["f1: lie:reused_nonce (32 random bytes replayed)"]


# ---------------------------------------------------------------------------- MITM


async def test_tamper_challenge_request_is_detected_by_the_requester() -> None:
    s = Setup("on=CHALLENGE,do=tamper")
    with pytest.raises(RequesterError, match="signature does not verify over M1"):
        await s.authenticate()
    # the responder answered normally: only the requester can notice
    assert s.events[-1].response_name == "CHALLENGE_AUTH" and s.events[-1].error is None
    assert s.faults() == ["f1: tamper:request (request byte 4 ^ 0x01)"]


async def test_tamper_signed_response_after_signing() -> None:
    s = Setup("on=GET_MEASUREMENTS,do=tamper:response")
    await s.authenticate()
    with pytest.raises(RequesterError, match="signature"):
        await get_measurements(s.req, 0xFF, signed=True)
    assert "tamper:response" in s.faults()[0] and "after signing" in s.faults()[0]


async def test_tamper_vca_breaks_the_later_signature() -> None:
    """A byte of NEGOTIATE_ALGORITHMS altered on the way: both sides carry on, but their
    message A differ, so the CHALLENGE_AUTH signature fails at the requester."""
    s = Setup("on=NEGOTIATE_ALGORITHMS,do=tamper,at=30,mask=0x01")
    await s.req.vca()
    await s.flow.get_digests()
    await s.flow.get_certificate(0)
    with pytest.raises(RequesterError, match="signature does not verify over M1"):
        await s.flow.challenge(0)


# ---------------------------------------------------------------------------- not ready


async def test_not_ready_inside_signed_flows() -> None:
    s = Setup(
        "on=CHALLENGE,do=not_ready,rdt=2",
        "on=GET_MEASUREMENTS,nth=2,do=not_ready",
        not_ready=True,
    )
    await s.authenticate()  # CHALLENGE_AUTH's signature covers CHALLENGE, not RESPOND_IF_READY
    await get_measurements(s.req, 1)
    await get_measurements(s.req, 2)  # deferred in the middle of L1/L2
    await get_measurements(s.req, 0xFF, signed=True)  # L1/L2 still agrees
    assert s.rif is not None and [n.request_code for n in s.rif.seen] == [0x83, 0xE0]
    rifs = [req for req, _ in s.rif.exchanges if req[1] == RequestCode.RESPOND_IF_READY]
    assert [r[2] for r in rifs] == [0x83, 0xE0]


async def test_respond_if_ready_from_another_session_context_is_unexpected() -> None:
    s = Setup("on=GET_MEASUREMENTS,session=out,nth=1,do=not_ready,token=5")
    await s.authenticate(challenge=False)
    session = await open_session(s.req, peer_chain=s.flow.chains[0].chain)
    with pytest.raises(SpdmErrorReply) as info:
        await s.req.send(bytes([s.req.version, 0xE0, 0, 1]))
    assert info.value.code == ErrorCode.ResponseNotReady
    # the same RESPOND_IF_READY inside the session: wrong context (libspdm's rule)
    rsp = await session.send(bytes([s.req.version, 0xFF, 0xE0, 5]), allow_error=True)
    assert rsp == bytes([s.req.version, 0x7F, ErrorCode.UnexpectedRequest, 0])


# ---------------------------------------------------------------------------- secured records


@pytest.mark.parametrize(
    ("record", "detail"),
    [
        ("bad_mac", "last MAC byte ^ 0x01"),
        ("bad_seq", "encrypted with the next sequence number"),
        ("bad_session_id", "SessionID altered"),
    ],
)
async def test_record_faults(record: str, detail: str) -> None:
    s = Setup(f"on=HEARTBEAT,session=in,do=record:{record}")
    await s.authenticate(challenge=False)
    session = await open_session(s.req, peer_chain=s.flow.chains[0].chain)
    with pytest.raises(RequesterError):
        await session.heartbeat()
    assert s.faults() == [f"f1: record:{record} ({detail})"]


async def test_record_fault_only_inside_sessions() -> None:
    s = Setup("do=record:bad_mac")
    await s.authenticate()  # outside a session the rule fires but has nothing to alter
    assert s.faults() == []


# ---------------------------------------------------------------------------- determinism


async def _scripted_run(seed: int, fault_seed: int) -> list[bytes]:
    s = Setup(
        f"prob=0.3,seed={fault_seed},on=GET_MEASUREMENTS,do=flip:-1,mask=0x80",
        f"prob=0.2,seed={fault_seed},on=GET_CERTIFICATE,do=error:Busy",
        seed=seed,
    )
    await s.req.vca()
    await s.flow.get_digests()
    for _ in range(6):
        try:
            await s.flow.get_certificate(0)
            break
        except SpdmErrorReply:
            continue
    await s.flow.challenge(0)
    rng = SeededRandom(7, "requester nonces")
    for i in range(12):
        with contextlib.suppress(RequesterError):
            await get_measurements(
                s.req, 1 + i % 3, signed=i % 4 == 3, nonce=rng(32), requester_context=rng(8)
            )
    return [e.response or b"" for e in s.events]


async def test_same_seed_same_requests_same_bytes() -> None:
    a = await _scripted_run(seed=11, fault_seed=5)
    b = await _scripted_run(seed=11, fault_seed=5)
    assert a == b
    c = await _scripted_run(seed=11, fault_seed=6)
    assert a != c


async def test_heartbeat_without_record_fault_works() -> None:
    s = Setup("on=HEARTBEAT,session=out,do=record:bad_mac")  # never matches: in a session
    await s.authenticate(challenge=False)
    session = await open_session(s.req, peer_chain=s.flow.chains[0].chain)
    await session.heartbeat()
    await session.heartbeat()
    assert s.faults() == []
