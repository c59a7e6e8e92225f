"""SPDM 1.4 with post-quantum crypto (issue 15): ML-DSA signatures, ML-KEM key exchange,
large chains through chunking.

Messages are checked byte for byte against the layouts of libspdm's ``spdm.h`` (built here
with ``struct``); signatures are verified with ``cryptography``'s ML-DSA classes and a
combined prefix written here; the ML-KEM key exchange is checked by decapsulating the
responder's ciphertext with a key made here and recomputing ResponderVerifyData with
``hmac``/``hashlib`` (DSP0274 key schedule), none of it through ``emulator.crypto``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem

from emulator.codec.constants import (
    PQC_ASYM_SHIFT,
    AeadSuite,
    AlgType,
    BaseAsymAlgo,
    BaseHashAlgo,
    DheGroup,
    ErrorCode,
    KemAlgo,
    PqcAsymAlgo,
    RequestCode,
    RequesterCap,
    ResponseCode,
)
from emulator.connection import SpdmConnection
from emulator.device.model import Device
from emulator.errors import CryptoError, ProfileError
from emulator.requester import Requester, RequesterConfig
from emulator.requester.identity import IdentityFlow
from emulator.requester.measurements import get_measurements
from emulator.requester.requester import DEFAULT_REQUESTER_CAPS
from emulator.requester.session import (
    ConnectionChannel,
    load_identity,
    opaque_supported_versions,
    open_session,
)
from emulator.responder import Responder
from emulator.transport import get_binding
from emulator.x509.chain import split_der_chain
from tests import helpers

ROOT = Path(__file__).resolve().parent.parent
PQC_CERTS = ROOT / "certs" / "pqc"
FLAGS = DEFAULT_REQUESTER_CAPS | int(RequesterCap.CHUNK_CAP)
#: libspdm's combined-prefix context strings
KE_CONTEXT = b"responder-key_exchange_rsp signing"
CHAL_CONTEXT = b"responder-challenge_auth signing"
MEAS_CONTEXT = b"responder-measurements signing"
ML_DSA_PUB = {
    PqcAsymAlgo.ML_DSA_44: mldsa.MLDSA44PublicKey,
    PqcAsymAlgo.ML_DSA_65: mldsa.MLDSA65PublicKey,
    PqcAsymAlgo.ML_DSA_87: mldsa.MLDSA87PublicKey,
}
ML_DSA_SIG = {PqcAsymAlgo.ML_DSA_44: 2420, PqcAsymAlgo.ML_DSA_65: 3309, PqcAsymAlgo.ML_DSA_87: 4627}


@pytest.fixture(scope="module")
def device() -> Device:
    return helpers.make_device("pqc")


def pqc_device(**sections: dict[str, Any]) -> Device:
    """The pqc profile with some keys of some sections changed."""
    data = helpers.profile_data("pqc")
    return helpers.make_device("pqc", **{k: {**data.get(k, {}), **v} for k, v in sections.items()})


def spdm_chain(slot_dir: str) -> bytes:
    """The DSP0274 certificate chain (SHA-384 RootHash) of a shipped slot, built here."""
    certs = split_der_chain((PQC_CERTS / slot_dir / "slot0" / "chain.der").read_bytes())
    root_hash = hashlib.sha384(certs[0]).digest()
    body = b"".join(certs)
    return struct.pack("<HH", 4 + len(root_hash) + len(body), 0) + root_hash + body


def prefix14(context: bytes) -> bytes:
    """DSP0274 1.2+ combined SPDM prefix for version 1.4 (100 bytes)."""
    head = b"dmtf-spdm-v1.4.*" * 4
    return head + bytes(100 - len(head) - len(context)) + context


def leaf_key(slot_dir: str) -> Any:
    certs = split_der_chain((PQC_CERTS / slot_dir / "slot0" / "chain.der").read_bytes())
    return x509.load_der_x509_certificate(certs[-1]).public_key()


def config(**kw: Any) -> RequesterConfig:
    base: dict[str, Any] = dict(
        flags=FLAGS,
        data_transfer_size=0x11C0,
        max_spdm_msg_size=0x10000,
        base_asym=int(BaseAsymAlgo.ECDSA_P384),
        base_hash=int(BaseHashAlgo.SHA_384),
        dhe=int(DheGroup.SECP_384_R1),
        aead=int(AeadSuite.AES_256_GCM),
        req_base_asym=int(BaseAsymAlgo.ECDSA_P384),
        pqc_asym=int(PqcAsymAlgo.ML_DSA_65),
        req_pqc_asym=int(PqcAsymAlgo.ML_DSA_65),
        kem=int(KemAlgo.ML_KEM_768),
    )
    base.update(kw)
    return RequesterConfig(**base)


class RecordingChannel(ConnectionChannel):
    """A ConnectionChannel that keeps every plain (not secured) message pair."""

    def __init__(self, connection: Any) -> None:
        super().__init__(connection)
        self.plain: list[tuple[bytes, bytes]] = []

    async def exchange(self, message: bytes, secured: bool = False) -> Any:
        reply = await super().exchange(message, secured)
        if not secured:
            self.plain.append((message, reply.message))
        return reply


async def connect(
    dev: Device, binding: str = "doe", **kw: Any
) -> tuple[Requester, SpdmConnection, RecordingChannel]:
    conn = SpdmConnection(dev, get_binding(binding))
    channel = RecordingChannel(conn)
    req = Requester(channel, config(**kw))
    await req.vca()
    return req, conn, channel


# --- VCA: byte-exact 1.4 messages --------------------------------------------------------------


def caps_request(version: int, ext_flags: int = 0) -> bytes:
    return struct.pack("<BBBBBBHIII", version, 0xE1, 0, 0, 0, 0, ext_flags, FLAGS, 0x11C0, 0x10000)


def vca_to_caps(r: Responder, version: int = 0x14) -> bytes:
    assert r.handle(bytes((0x10, 0x84, 0, 0)))[1] == ResponseCode.VERSION
    return r.handle(caps_request(version))


def test_version_offers_14(device: Device) -> None:
    r = Responder(device)
    # VERSION (SPDMVersion 1.0): 3 entries 1.2, 1.3, 1.4 as Major.Minor << 8
    assert r.handle(bytes((0x10, 0x84, 0, 0))) == bytes.fromhex("100400000003") + struct.pack(
        "<HHH", 0x1200, 0x1300, 0x1400
    )


def test_default_profile_never_offers_14() -> None:
    r = Responder(helpers.make_device())
    rsp = r.handle(bytes((0x10, 0x84, 0, 0)))
    assert 0x1400 not in struct.unpack_from(f"<{rsp[5]}H", rsp, 6)
    assert r.handle(caps_request(0x14))[2] == ErrorCode.VersionMismatch


def test_capabilities_14_layout(device: Device) -> None:
    r = Responder(device)
    rsp = vca_to_caps(r)
    flags = int(device.capabilities)
    # header, Reserved, CTExponent, ExtFlags (1.4: no SLOT_MGMT_CAP), Flags, DTS, MaxSize
    assert rsp == struct.pack("<BBBBBBHIII", 0x14, 0x61, 0, 0, 0, 12, 0, flags, 4544, 65536)


def neg14(pqc: int = 0x02, kem: int | None = 0x02, req_pqc: int | None = 0x02) -> bytes:
    """NEGOTIATE_ALGORITHMS 1.4 (libspdm spdm_negotiate_algorithms_request_t)."""
    structs = [(2, 0x10), (3, 0x02), (4, 0x80), (5, 0x01)]
    if req_pqc is not None:
        structs.append((6, req_pqc))
    if kem is not None:
        structs.append((7, kem))
    tail = b"".join(struct.pack("<BBH", t, 0x20, v) for t, v in structs)
    fixed = struct.pack(
        "<BBBBHBBIII8sBBBB",
        0x14,
        0xE3,
        len(structs),
        0,
        32 + len(tail),
        0x01,  # MeasurementSpecification DMTF
        0x02,  # OtherParamsSupport OPAQUE_DATA_FMT_1
        0x80,  # BaseAsymAlgo ECDSA_P384
        0x02,  # BaseHashAlgo SHA_384
        pqc,  # PqcAsymAlgo (offset 16, 1.4)
        bytes(8),
        0,
        0,
        0,
        0,
    )
    return fixed + tail


def algorithms14(base_asym: int, pqc: int, structs: list[tuple[int, int]]) -> bytes:
    """ALGORITHMS 1.4 (libspdm spdm_algorithms_response_t)."""
    tail = b"".join(struct.pack("<BBH", t, 0x20, v) for t, v in structs)
    return (
        struct.pack(
            "<BBBBHBBIIII7sBBBH",
            0x14,
            0x63,
            len(structs),
            0,
            36 + len(tail),
            0x01,
            0x02,
            0x04,  # MeasurementHashAlgo SHA_384
            base_asym,
            0x02,
            pqc,  # PqcAsymSel (offset 20, 1.4)
            bytes(7),
            0,
            0,
            0,
            0,
        )
        + tail
    )


def test_algorithms_14_selects_ml_dsa_and_ml_kem(device: Device) -> None:
    r = Responder(device)
    vca_to_caps(r)
    rsp = r.handle(neg14())
    # pqc_first: PqcAsymSel clears BaseAsymSel, ReqPqcAsym clears ReqBaseAsym, KEM clears DHE;
    # every AlgStruct of the request is answered (the cleared ones with 0)
    assert rsp == algorithms14(
        0, 0x02, [(2, 0), (3, 0x02), (4, 0), (5, 0x01), (6, 0x02), (7, 0x02)]
    )
    assert r.algorithms.asym == int(PqcAsymAlgo.ML_DSA_65) << PQC_ASYM_SHIFT
    assert r.algorithms.kem == KemAlgo.ML_KEM_768 and r.algorithms.dhe == 0


def test_algorithms_14_classic_when_no_pqc_offered(device: Device) -> None:
    r = Responder(device)
    vca_to_caps(r)
    rsp = r.handle(neg14(pqc=0, kem=None, req_pqc=None))
    assert rsp == algorithms14(0x80, 0, [(2, 0x10), (3, 0x02), (4, 0x80), (5, 0x01)])


def test_algorithms_14_pqc_first_false_prefers_classic() -> None:
    dev = pqc_device(algorithms={"pqc_first": False})
    r = Responder(dev)
    vca_to_caps(r)
    rsp = r.handle(neg14())
    assert rsp == algorithms14(
        0x80, 0, [(2, 0x10), (3, 0x02), (4, 0x80), (5, 0x01), (6, 0), (7, 0)]
    )


def test_algorithms_14_ml_kem_512_only_falls_back_to_dhe(device: Device) -> None:
    r = Responder(device)
    vca_to_caps(r)
    rsp = r.handle(neg14(kem=0x01))  # ML-KEM-512: not implemented by cryptography
    assert rsp[-8:] == struct.pack("<BBHBBH", 6, 0x20, 0x02, 7, 0x20, 0)
    assert r.algorithms.dhe == DheGroup.SECP_384_R1 and r.algorithms.kem == 0


def test_13_treats_14_fields_as_reserved(device: Device) -> None:
    """Below 1.4 the PqcAsymAlgo bytes are reserved: ignored, and zero in ALGORITHMS;
    AlgTypes 6 and 7 do not exist (InvalidRequest, as libspdm)."""
    r = Responder(device)
    vca_to_caps(r, 0x13)
    req = bytearray(neg14(kem=None, req_pqc=None))
    req[0] = 0x13
    rsp = r.handle(bytes(req))
    assert rsp[:2] == bytes((0x13, 0x63)) and rsp[20:31] == bytes(11)
    assert rsp[12:16] == struct.pack("<I", 0x80) and r.algorithms.pqc_asym == 0
    r2 = Responder(device)
    vca_to_caps(r2, 0x13)
    req = bytearray(neg14())
    req[0] = 0x13
    rsp = r2.handle(bytes(req))
    assert rsp[1] == ResponseCode.ERROR and rsp[2] == ErrorCode.InvalidRequest
    assert "AlgType 6 is not 2..5" in r2.last_error


# --- profiles ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithms", "field", "words"),
    [
        ({"pqc_asym": ["SLH_DSA_SHA2_128S"]}, "algorithms.pqc_asym", "no SLH-DSA"),
        ({"kem": ["ML_KEM_512"]}, "algorithms.kem", "no ML-KEM-512"),
        ({"req_pqc_asym": ["SLH_DSA_SHAKE_256F"]}, "algorithms.req_pqc_asym", "no SLH-DSA"),
        ({"pqc_asym": ["ML_DSA_99"]}, "algorithms.pqc_asym", "unknown"),
    ],
)
def test_profile_refuses_what_cryptography_lacks(
    algorithms: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(ProfileError) as err:
        pqc_device(algorithms=algorithms)
    assert field in str(err.value) and words in str(err.value)


def test_profile_pqc_needs_version_14() -> None:
    with pytest.raises(ProfileError) as err:
        pqc_device(spdm={"versions": ["1.2", "1.3"]})
    assert "algorithms.pqc_asym" in str(err.value) and '"1.4"' in str(err.value)


def test_pqc_slots_serve_only_their_algorithm(device: Device) -> None:
    ml65 = int(PqcAsymAlgo.ML_DSA_65) << PQC_ASYM_SHIFT
    ml87 = int(PqcAsymAlgo.ML_DSA_87) << PQC_ASYM_SHIFT
    assert device.identity.provisioned_mask(ml65) == 0x01
    assert device.identity.provisioned_mask(ml87) == 0x03  # slot 1: the 30 KiB alias chain
    assert device.identity.provisioned_mask(BaseAsymAlgo.ECDSA_P384) == 0x01


# --- the full 1.4 handshake ---------------------------------------------------------------------


@pytest.mark.parametrize("binding", ["doe", "mctp"])
async def test_full_14_handshake_ml_dsa_65_ml_kem_768(device: Device, binding: str) -> None:
    """VCA, DIGESTS, CERTIFICATE, CHALLENGE, signed MEASUREMENTS, KEY_EXCHANGE (ML-KEM-768),
    FINISH, in-session traffic, END_SESSION; every ML-DSA-65 signature checked here too."""
    req, conn, _channel = await connect(device, binding)
    assert req.version == 0x14
    assert req.neg.pqc_asym == PqcAsymAlgo.ML_DSA_65 and req.neg.base_asym == 0
    assert req.neg.kem == KemAlgo.ML_KEM_768 and req.neg.struct(AlgType.DHE) == 0
    roots = [(PQC_CERTS / "ml-dsa-65" / "slot0" / "root.der").read_bytes()]
    flow = IdentityFlow(req, trusted_roots=roots)
    digests = await flow.get_digests()
    assert digests.digests[0] == hashlib.sha384(spdm_chain("ml-dsa-65")).digest()
    held = await flow.get_certificate(0, portion=0x400)
    assert held.chain == spdm_chain("ml-dsa-65")
    result = await flow.challenge(0)
    key = leaf_key("ml-dsa-65")
    assert isinstance(key, mldsa.MLDSA65PublicKey) and len(result.signature) == 3309
    key.verify(
        result.signature,
        prefix14(CHAL_CONTEXT) + hashlib.sha384(result.transcript).digest(),
        CHAL_CONTEXT,
    )
    meas = await get_measurements(req, signed=True, public_key=key)
    assert meas.signed and len(meas.response.signature) == 3309
    key.verify(
        meas.response.signature,
        prefix14(MEAS_CONTEXT) + hashlib.sha384(meas.l1l2).digest(),
        MEAS_CONTEXT,
    )
    s = await open_session(req, peer_chain=spdm_chain("ml-dsa-65"), binding=binding)
    assert s.established
    # KEY_EXCHANGE: ExchangeData = the 1184-byte ML-KEM-768 encapsulation key; the answer
    # carries the 1088-byte ciphertext and a 3309-byte ML-DSA-65 signature over TH
    ke_req, ke_rsp = next((q, a) for q, a in req.log if q[1] == RequestCode.KEY_EXCHANGE)
    opaque_len = struct.unpack_from("<H", ke_req, 40 + 1184)[0]
    assert len(ke_req) == 40 + 1184 + 2 + opaque_len
    rsp_opaque = struct.unpack_from("<H", ke_rsp, 40 + 1088)[0]
    sig_at = 40 + 1088 + 2 + rsp_opaque
    end = sig_at + 3309 + 48
    assert 0 <= len(ke_rsp) - end < 4  # (DOE pads a message to whole DWORDs)
    signature = ke_rsp[sig_at : sig_at + 3309]
    th = bytes(req.message_a) + hashlib.sha384(spdm_chain("ml-dsa-65")).digest()
    th += ke_req + ke_rsp[:sig_at]
    key.verify(signature, prefix14(KE_CONTEXT) + hashlib.sha384(th).digest(), KE_CONTEXT)
    rsp = await s.send(bytes((0x14, RequestCode.GET_MEASUREMENTS, 0, 0)) + bytes(33))
    assert rsp[:2] == bytes((0x14, ResponseCode.MEASUREMENTS))
    await s.key_update(2)
    await s.heartbeat()
    finish_rsp = next(a for q, a in s.log if q[1] == RequestCode.FINISH)
    assert finish_rsp == bytes((0x14, 0x65, 0, 0, 0, 0))  # 1.4 OpaqueDataLength 0
    finish_req = next(q for q, a in s.log if q[1] == RequestCode.FINISH)
    assert finish_req[:6] == bytes((0x14, 0xE5, 0, 0, 0, 0)) and len(finish_req) == 6 + 48
    await s.end_session()
    assert conn.responder.ctx.sessions is not None and not conn.responder.ctx.sessions.sessions


def hkdf_expand(prk: bytes, info: bytes, n: int) -> bytes:
    out, block, i = b"", b"", 1
    while len(out) < n:
        block = hmac.new(prk, block + info + bytes([i]), "sha384").digest()
        out += block
        i += 1
    return out[:n]


def bin14(label: bytes, n: int, context: bytes = b"") -> bytes:
    return struct.pack("<H", n) + b"spdm1.4 " + label + context


@pytest.mark.parametrize(
    ("kem", "cls", "ek_size", "ct_size"),
    [
        (KemAlgo.ML_KEM_768, mlkem.MLKEM768PrivateKey, 1184, 1088),
        (KemAlgo.ML_KEM_1024, mlkem.MLKEM1024PrivateKey, 1568, 1568),
    ],
)
async def test_ml_kem_key_exchange_checked_independently(
    device: Device, kem: KemAlgo, cls: Any, ek_size: int, ct_size: int
) -> None:
    """KEY_EXCHANGE built here with an ML-KEM key made here: the shared secret from our own
    decapsulation of the responder's ciphertext gives ResponderVerifyData (DSP0274 1.4 key
    schedule: HKDF-Extract(0, secret), "rsp hs data", "finished", HMAC over TH1)."""
    req, conn, _channel = await connect(device, "doe", kem=int(kem))
    assert req.neg.kem == kem
    private = cls.generate()
    ek = private.public_key().public_bytes_raw()
    assert len(ek) == ek_size
    opaque = opaque_supported_versions(0x14, (0x1000, 0x1100, 0x1200))
    request = (
        bytes((0x14, RequestCode.KEY_EXCHANGE, 0, 0))
        + struct.pack("<HBB", 0x4242, 0, 0)
        + os.urandom(32)
        + ek
        + struct.pack("<H", len(opaque))
        + opaque
    )
    rsp = await req.send(request)
    assert rsp[:2] == bytes((0x14, ResponseCode.KEY_EXCHANGE_RSP))
    ct = rsp[40 : 40 + ct_size]
    olen = struct.unpack_from("<H", rsp, 40 + ct_size)[0]
    sig_at = 40 + ct_size + 2 + olen
    assert 0 <= len(rsp) - (sig_at + 3309 + 48) < 4  # DOE padding
    rsp = rsp[: sig_at + 3309 + 48]
    th1 = hashlib.sha384(
        bytes(req.message_a)
        + hashlib.sha384(spdm_chain("ml-dsa-65")).digest()
        + request
        + rsp[: sig_at + 3309]
    ).digest()
    shared = private.decapsulate(ct)
    handshake = hmac.new(bytes(48), shared, "sha384").digest()
    rsp_hs = hkdf_expand(handshake, bin14(b"rsp hs data", 48, th1), 48)
    finished = hkdf_expand(rsp_hs, bin14(b"finished", 48), 48)
    assert rsp[sig_at + 3309 :] == hmac.new(finished, th1, "sha384").digest()
    # a wrong-size or unreduced encapsulation key: ERROR, and no session
    bad = bytearray(request)
    bad[40 : 40 + ek_size] = b"\xff" * ek_size
    rsp = conn.responder.handle(bytes(bad))
    assert rsp[1] == ResponseCode.ERROR and rsp[2] == ErrorCode.Unspecified
    assert "encapsulation key" in conn.responder.last_error


async def test_tampered_ciphertext_fails_the_handshake(device: Device) -> None:
    """A host that flips a ciphertext bit on the way: the ML-DSA signature covers the
    ciphertext (message K), so authentication fails; and ML-KEM's implicit rejection would
    have given the requester another secret anyway (checked on the KEM itself)."""
    from emulator.errors import RequesterError

    req, _conn, channel = await connect(device, "doe")
    real = channel.exchange

    async def tamper(message: bytes, secured: bool = False) -> Any:
        reply = await real(message, secured)
        body = bytearray(reply.message)
        if not secured and body[1] == ResponseCode.KEY_EXCHANGE_RSP:
            body[40 + 5] ^= 0x01  # a bit of the ML-KEM ciphertext
        elif not secured and body[1] == ResponseCode.CHUNK_RESPONSE and body[4:8] == bytes(4):
            body[16 + 40 + 5] ^= 0x01  # chunk 0: header, LargeMessageSize, KEY_EXCHANGE_RSP
        return type(reply)(bytes(body))

    channel.exchange = tamper  # type: ignore[method-assign]
    with pytest.raises(RequesterError, match="signature does not verify over TH"):
        await open_session(
            req, peer_chain=spdm_chain("ml-dsa-65"), binding="doe", measurement_summary=0xFF
        )
    from emulator.crypto import KemKeyPair, kem_encapsulate

    pair = KemKeyPair.generate(KemAlgo.ML_KEM_768, os.urandom)
    shared, ct = kem_encapsulate(KemAlgo.ML_KEM_768, pair.public_bytes)
    assert pair.decapsulate(ct) == shared
    flipped = bytes([ct[0] ^ 1]) + ct[1:]
    assert pair.decapsulate(flipped) != shared  # implicit rejection: no error, another secret


# --- large messages: chunking with DataTransferSize 0x11C0 -------------------------------------


async def test_30k_ml_dsa_87_chain_and_key_exchange_through_chunking(device: Device) -> None:
    """ML-DSA-87: the 30 KiB AliasCert chain of slot 1 in one CERTIFICATE and a 6.4 KiB
    KEY_EXCHANGE_RSP (ML-KEM-1024), both over DataTransferSize 0x11C0 by 1.4 CHUNK_GET
    (ChunkSeqNo 4 bytes)."""
    req, conn, channel = await connect(
        device, "doe", pqc_asym=int(PqcAsymAlgo.ML_DSA_87), kem=int(KemAlgo.ML_KEM_1024)
    )
    assert req.neg.pqc_asym == PqcAsymAlgo.ML_DSA_87
    roots = [(PQC_CERTS / "ml-dsa-87-alias" / "slot0" / "root.der").read_bytes()]
    flow = IdentityFlow(req, trusted_roots=roots)
    held = await flow.get_certificate(1, portion=0xFFFF)
    assert held.portions == 1 and len(held.chain) == 30469 + 4 + 48
    assert len(held.certs) == 4 and isinstance(held.leaf_key, mldsa.MLDSA87PublicKey)
    gets = [(q, a) for q, a in channel.plain if q[1] == RequestCode.CHUNK_GET]
    assert len(gets) == 7  # 30521 + 8-byte header: 7 chunks of at most 4544 bytes
    for seq, (q, a) in enumerate(gets):
        assert q == bytes((0x14, 0x86, 0, q[3])) + struct.pack("<I", seq)
        assert a[:2] == bytes((0x14, 0x06)) and struct.unpack_from("<I", a, 4)[0] == seq
        assert len(a) <= 0x11C0
    assert gets[-1][1][2] & 1 and not any(a[2] & 1 for _, a in gets[:-1])  # LastChunk
    result = await flow.challenge(1)
    held.leaf_key.verify(
        result.signature,
        prefix14(CHAL_CONTEXT) + hashlib.sha384(result.transcript).digest(),
        CHAL_CONTEXT,
    )
    before = conn.responder.ctx.chunking.responses_stored  # type: ignore[union-attr]
    chain = spdm_chain("ml-dsa-87")
    s = await open_session(req, peer_chain=chain, binding="doe")
    assert s.established
    assert conn.responder.ctx.chunking.responses_stored == before + 1  # type: ignore[union-attr]
    ke_rsp = next(a for q, a in req.log if q[1] == RequestCode.KEY_EXCHANGE)
    assert len(ke_rsp) > 0x11C0 and ke_rsp[:2] == bytes((0x14, 0x64))
    await s.end_session()


async def test_mutual_auth_with_an_ml_dsa_65_requester() -> None:
    """MutAuthRequested with the encapsulated flow: the responder checks the requester's
    ML-DSA-65 chain and its FINISH signature (context "requester-finish signing")."""
    dev = pqc_device(sessions={"mut_auth": "encap"})
    req, _conn, _ = await connect(dev, "mctp", flags=FLAGS | int(RequesterCap.MUT_AUTH_CAP))
    assert req.neg.req_asym == int(PqcAsymAlgo.ML_DSA_65) << PQC_ASYM_SHIFT
    identity = load_identity(str(PQC_CERTS / "requester" / "ml-dsa-65" / "slot0"))
    s = await open_session(
        req, peer_chain=spdm_chain("ml-dsa-65"), binding="mctp", identity=identity
    )
    assert s.established and s.mut_auth_requested == 0x02
    finish_req = next(q for q, a in s.log if q[1] == RequestCode.FINISH)
    assert finish_req[2] == 1 and len(finish_req) == 6 + 3309 + 48
    await s.end_session()


# --- crypto and certificates -------------------------------------------------------------------


def test_emulator_ml_dsa_signature_verifies_independently() -> None:
    from emulator.crypto import KEY_EXCHANGE_RSP_SIGN_CONTEXT, signature_size, spdm_sign

    for bit, size in ML_DSA_SIG.items():
        asym = int(bit) << PQC_ASYM_SHIFT
        assert signature_size(asym) == size
        cls: dict[int, Any] = {
            1: mldsa.MLDSA44PrivateKey,
            2: mldsa.MLDSA65PrivateKey,
            4: mldsa.MLDSA87PrivateKey,
        }
        key = cls[int(bit)].generate()
        sig = spdm_sign(0x14, asym, BaseHashAlgo.SHA_384, key, KEY_EXCHANGE_RSP_SIGN_CONTEXT, b"M")
        assert len(sig) == size
        key.public_key().verify(
            sig, prefix14(KE_CONTEXT) + hashlib.sha384(b"M").digest(), KE_CONTEXT
        )


def test_crypto_refuses_slh_dsa_and_ml_kem_512_by_name() -> None:
    from emulator.crypto import KemKeyPair, check_key_matches, kem_encapsulate

    key = mldsa.MLDSA65PrivateKey.generate()
    with pytest.raises(CryptoError, match="SLH_DSA_SHA2_128S: not supported"):
        check_key_matches(int(PqcAsymAlgo.SLH_DSA_SHA2_128S) << PQC_ASYM_SHIFT, key)
    with pytest.raises(CryptoError, match="ML_KEM_512: not supported"):
        KemKeyPair.generate(KemAlgo.ML_KEM_512, os.urandom)
    with pytest.raises(CryptoError, match="1183 bytes, ML_KEM_768 needs 1184"):
        kem_encapsulate(KemAlgo.ML_KEM_768, bytes(1183))


@pytest.mark.parametrize(
    "slot_dir", ["ml-dsa-44", "ml-dsa-65", "ml-dsa-87", "ml-dsa-87-alias", "requester/ml-dsa-65"]
)
def test_shipped_ml_dsa_chains(slot_dir: str) -> None:
    """Each certificate is signed by its issuer's ML-DSA key (checked with the public key
    over the TBSCertificate, RFC 9881) and carries the ML-DSA OIDs."""
    ders = split_der_chain((PQC_CERTS / slot_dir / "slot0" / "chain.der").read_bytes())
    certs = [x509.load_der_x509_certificate(d) for d in ders]
    expected_oid = {
        "44": "2.16.840.1.101.3.4.3.17",
        "65": "2.16.840.1.101.3.4.3.18",
        "87": "2.16.840.1.101.3.4.3.19",
    }[slot_dir.split("-")[2][:2]]
    for i, cert in enumerate(certs):
        issuer = certs[i - 1] if i else cert
        assert cert.issuer == issuer.subject
        assert cert.signature_algorithm_oid.dotted_string == expected_oid
        assert cert.public_key_algorithm_oid.dotted_string == expected_oid
        issuer.public_key().verify(cert.signature, cert.tbs_certificate_bytes)  # type: ignore[call-arg,union-attr]
    tampered = bytearray(certs[-1].tbs_certificate_bytes)
    tampered[-1] ^= 1
    with pytest.raises(InvalidSignature):
        certs[-2].public_key().verify(certs[-1].signature, bytes(tampered))  # type: ignore[call-arg,union-attr]


def test_openssl_35_verifies_the_shipped_chains(tmp_path: Path) -> None:
    """An independent X.509 implementation, when one is installed (OpenSSL >= 3.5)."""
    import shutil
    import subprocess

    openssl = os.environ.get("SPDM_OPENSSL") or shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command")
    version = subprocess.run([openssl, "version"], capture_output=True, text=True).stdout
    parts = version.split()[1].split(".") if version.startswith("OpenSSL") else ["0", "0"]
    if (int(parts[0]), int(parts[1])) < (3, 5):
        pytest.skip(f"{version.strip()} has no ML-DSA (needs 3.5; set SPDM_OPENSSL)")
    for name in ("ml-dsa-44", "ml-dsa-65", "ml-dsa-87", "ml-dsa-87-alias"):
        d = PQC_CERTS / name / "slot0"
        middle = tmp_path / f"{name}-untrusted.pem"
        middle.write_bytes(
            b"".join(
                p.read_bytes() for p in (d / "intermediate.pem", d / "device_ca.pem") if p.exists()
            )
        )
        run = subprocess.run(
            [
                openssl,
                "verify",
                "-CAfile",
                str(d / "root.pem"),
                "-untrusted",
                str(middle),
                str(d / "leaf.pem"),
            ],
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stdout + run.stderr


def test_certs_generate_ml_dsa_cli(tmp_path: Path) -> None:
    from emulator.cli import main

    assert main(["certs", "generate", "--asym", "ml-dsa-65", "--out", str(tmp_path)]) == 0
    assert main(["certs", "verify", str(tmp_path / "slot0")]) == 0
    ders = split_der_chain((tmp_path / "slot0" / "chain.der").read_bytes())
    leaf = x509.load_der_x509_certificate(ders[-1])
    assert leaf.signature_algorithm_oid.dotted_string == "2.16.840.1.101.3.4.3.18"
    assert isinstance(leaf.public_key(), mldsa.MLDSA65PublicKey)


# --- trace and hostile mutations ---------------------------------------------------------------


def test_trace_names_14_fields() -> None:
    from emulator.trace import describe_message

    text = describe_message(neg14())
    assert "PqcAsym=ML_DSA_65" in text and "ReqPqcAsym=ML_DSA_65" in text
    assert "KEM=ML_KEM_768" in text
    rsp = algorithms14(0, 0x02, [(2, 0), (7, 0x04)])
    assert "PqcAsym=ML_DSA_65" in describe_message(rsp) and "KEM=ML_KEM_1024" in describe_message(
        rsp
    )


async def test_hostile_knows_ml_dsa_and_ml_kem_sizes(device: Device) -> None:
    from emulator.faults.hostile import MutationContext, response_fields

    req, conn, _ = await connect(device, "doe")
    r = conn.responder
    ke = next(q for q, a in req.log if q[1] == RequestCode.NEGOTIATE_ALGORITHMS)
    ctx = MutationContext.from_responder(r, ke)
    assert ctx.signature_size == 3309 and ctx.dhe_size == 1088
    alg = next(a for q, a in req.log if q[1] == RequestCode.NEGOTIATE_ALGORITHMS)
    names = {f.name for f in response_fields(alg, ctx)}
    assert "PqcAsymSel" in names
    s = await open_session(req, peer_chain=spdm_chain("ml-dsa-65"), binding="doe")
    ke_req, ke_rsp = next((q, a) for q, a in req.log if q[1] == RequestCode.KEY_EXCHANGE)
    fields = {f.name: f for f in response_fields(ke_rsp, MutationContext.from_responder(r, ke_req))}
    assert fields["ExchangeData"].size == 1088
    assert fields["Signature"].size == 3309
    assert fields["Signature"].offset == len(ke_rsp) - 48 - 3309
    await s.end_session()


# --- the other 1.4 layouts: PSK_FINISH, CHUNK_SEND -----------------------------------------


async def test_psk_session_14_opaque_fields(device: Device) -> None:
    """PSK_EXCHANGE + PSK_FINISH at 1.4: both finish messages carry OpaqueDataLength."""
    from emulator.requester.session import psk_exchange

    req, _conn, _ = await connect(device, "mctp")
    s = await psk_exchange(req, psk=b"TestPskData\x00", hint=b"TestPskHint\x00", binding="mctp")
    assert s.established
    q, a = next((q, a) for q, a in s.log if q[1] == RequestCode.PSK_FINISH)
    assert q[:6] == bytes((0x14, 0xE7, 0, 0, 0, 0)) and len(q) == 6 + 48
    assert a == bytes((0x14, 0x67, 0, 0, 0, 0))
    await s.end_session()


def test_finish_opaque_field_codec() -> None:
    """1.4 FINISH-family OpaqueDataLength: read after the header, at most 1024 bytes;
    nothing of it below 1.4."""
    from emulator.codec.session import build_finish_rsp, read_opaque_field
    from emulator.errors import CodecError

    assert read_opaque_field(bytes((0x14, 0xE5, 0, 0, 3, 0)) + b"abc" + bytes(48), "FINISH") == (
        9,
        b"abc",
    )
    assert read_opaque_field(bytes((0x13, 0xE5, 0, 0)) + bytes(48), "FINISH") == (4, b"")
    with pytest.raises(CodecError, match="OpaqueDataLength 1025 is over 1024"):
        read_opaque_field(bytes((0x14, 0xE5, 0, 0, 0x01, 0x04)) + bytes(1100), "FINISH")
    with pytest.raises(CodecError, match="FINISH OpaqueDataLength"):
        read_opaque_field(bytes((0x14, 0xE5, 0, 0, 0x01)), "FINISH")
    assert build_finish_rsp(0x14, b"V") == bytes((0x14, 0x65, 0, 0, 0, 0)) + b"V"
    assert build_finish_rsp(0x13, b"V") == bytes((0x13, 0x65, 0, 0)) + b"V"


def test_slot_management_is_unsupported(device: Device) -> None:
    """SLOT_MANAGEMENT (1.4, 0x88) is not implemented (libspdm has no responder for it
    either): ERROR(UnsupportedRequest) naming the request code, the connection intact."""
    r = Responder(device)
    vca_to_caps(r)
    r.handle(neg14())
    rsp = r.handle(bytes((0x14, 0x88, 0, 0)))
    assert rsp == bytes((0x14, 0x7F, ErrorCode.UnsupportedRequest, 0x88))
    assert r.handle(bytes((0x14, 0x81, 0, 0)))[1] == ResponseCode.DIGESTS


async def test_chunk_send_14_layout(device: Device) -> None:
    """A large request by CHUNK_SEND at 1.4: ChunkSeqNo u32 (no Reserved), CHUNK_SEND_ACK
    header of 8 bytes; the KEY_EXCHANGE it carries is answered as if sent whole."""
    req, _conn, channel = await connect(device, "doe")
    private = mlkem.MLKEM768PrivateKey.generate()
    opaque = opaque_supported_versions(0x14, (0x1000, 0x1100, 0x1200))
    request = (
        bytes((0x14, RequestCode.KEY_EXCHANGE, 0, 0))
        + struct.pack("<HBB", 0x5151, 0, 0)
        + os.urandom(32)
        + private.public_key().public_bytes_raw()
        + struct.pack("<H", len(opaque))
        + opaque
    )
    rsp = await req.send_large(request)
    assert rsp[:2] == bytes((0x14, ResponseCode.KEY_EXCHANGE_RSP))
    sends = [(q, a) for q, a in channel.plain if q[1] == RequestCode.CHUNK_SEND]
    assert len(sends) == 2
    (q0, a0), (q1, a1) = sends
    # chunk 0: header, ChunkSeqNo 0 (u32), ChunkSize, LargeMessageSize, chunk
    assert q0[:4] == bytes((0x14, 0x85, 0, q0[3])) and q0[4:8] == bytes(4)
    size0 = struct.unpack_from("<I", q0, 8)[0]
    assert struct.unpack_from("<I", q0, 12)[0] == len(request)
    assert q0[16 : 16 + size0] == request[:size0]
    assert a0[:8] == bytes((0x14, 0x05, 0, q0[3])) + struct.pack("<I", 0)
    assert q1[:8] == bytes((0x14, 0x85, 1, q0[3])) + struct.pack("<I", 1)  # LastChunk
    assert a1[:8] == bytes((0x14, 0x05, 0, q0[3])) + struct.pack("<I", 1)
    # ResponseToLargeRequest follows the 8-byte ACK header (here ERROR(LargeResponse):
    # the KEY_EXCHANGE_RSP itself is over DataTransferSize and went by CHUNK_GET)
    assert a1[8:10] in (bytes((0x14, 0x7F)), bytes((0x14, 0x64)))


# --- faults: lies with ML-DSA keys and chains -------------------------------------------------


async def test_lies_with_ml_dsa_keys_and_chains() -> None:
    """lie:other_key signs with another ML-DSA-65 key (the requester rejects the signature);
    lie:untrusted_chain re-issues the ML-DSA chain under other ML-DSA CAs (the requester
    rejects the root), both with seeded, reproducible substitutes."""
    from emulator.app import build_fault_engine
    from emulator.errors import RequesterError

    for spec, words in (
        ("on=CHALLENGE,do=lie:other_key", "signature"),
        ("on=GET_CERTIFICATE,do=lie:untrusted_chain", "does not chain to a trusted root"),
    ):
        dev = helpers.make_device("pqc")
        engine = build_fault_engine(dev.profile)
        engine.add(spec)
        conn = SpdmConnection(dev, get_binding("doe"), faults=engine)
        req = Requester(ConnectionChannel(conn), config())
        await req.vca()
        roots = [(PQC_CERTS / "ml-dsa-65" / "slot0" / "root.der").read_bytes()]
        flow = IdentityFlow(req, trusted_roots=roots)
        with pytest.raises(RequesterError, match=words):
            await flow.get_certificate(0)
            await flow.challenge(0)
    # the lying chain is itself well formed: every ML-DSA signature verifies, only its
    # root is another one
    held = await IdentityFlow(req).get_certificate(0)
    assert held.certs[0].public_bytes(serialization.Encoding.DER) != roots[0]
    assert isinstance(held.leaf_key, mldsa.MLDSA65PublicKey)
    material = engine.material
    key = mldsa.MLDSA65PrivateKey.generate()
    other = material.other_key(key)
    assert isinstance(other, mldsa.MLDSA65PrivateKey)
    assert other.public_key() != key.public_key() and material.other_key(key) is other


async def test_telemetry_names_pqc_selections(device: Device) -> None:
    from emulator.control.telemetry import connection_state

    _req, conn, _ = await connect(device, "doe")
    algorithms = connection_state(1, conn)["algorithms"]
    assert algorithms["pqc_asym"] == "ML_DSA_65" and algorithms["kem"] == "ML_KEM_768"
    assert algorithms["base_asym"] is None and algorithms["dhe"] is None
    classic = await connect(helpers.make_device(), "doe", pqc_asym=0, kem=0)
    assert "pqc_asym" not in connection_state(2, classic[1])["algorithms"]


async def test_large_cert_chain_get_certificate(device: Device) -> None:
    """SPDM 1.4 LargeCertChain: GET_CERTIFICATE Param1 bit 7 + u32 LargeOffset/LargeLength;
    CERTIFICATE Param1 bit 7, u16 lengths 0, u32 LargePortionLength/LargeRemainderLength."""
    req, _conn, _channel = await connect(device, "doe", pqc_asym=int(PqcAsymAlgo.ML_DSA_87))
    roots = [(PQC_CERTS / "ml-dsa-87-alias" / "slot0" / "root.der").read_bytes()]
    flow = IdentityFlow(req, trusted_roots=roots)
    held = await flow.get_certificate(1, portion=20000, large=True)
    total = 30469 + 4 + 48
    assert held.portions == 2 and len(held.chain) == total
    asked = [q for q, a in req.log if q[1] == RequestCode.GET_CERTIFICATE]
    assert asked[0] == bytes((0x14, 0x82, 0x81, 0, 0, 0, 0, 0)) + struct.pack("<II", 0, 20000)
    assert asked[1] == bytes((0x14, 0x82, 0x81, 0, 0, 0, 0, 0)) + struct.pack(
        "<II", 20000, total - 20000
    )
    answers = [a for q, a in req.log if q[1] == RequestCode.GET_CERTIFICATE]
    assert answers[0][:16] == bytes((0x14, 0x02, 0x81, 0, 0, 0, 0, 0)) + struct.pack(
        "<II", 20000, total - 20000
    )
    assert answers[1][:16] == bytes((0x14, 0x02, 0x81, 0, 0, 0, 0, 0)) + struct.pack(
        "<II", total - 20000, 0
    )
    # transcript B holds the 16-byte requests: CHALLENGE's M1 signature still verifies
    result = await flow.challenge(1)
    assert len(result.signature) == 4627
    # without LARGE_RESP_CAP the request is not supported
    data = helpers.profile_data("pqc")
    caps = [c for c in data["spdm"]["capabilities"] if c != "LARGE_RESP_CAP"]
    plain = helpers.make_device("pqc", spdm={**data["spdm"], "capabilities": caps})
    r = Responder(plain)
    vca_to_caps(r)
    r.handle(neg14())
    rsp = r.handle(bytes((0x14, 0x82, 0x80, 0, 0, 0, 0, 0)) + struct.pack("<II", 0, 100))
    assert rsp == bytes((0x14, 0x7F, ErrorCode.UnsupportedRequest, 0x82))
    # below 1.4 bit 7 is reserved: the slot is bits 3:0, the request the 8-byte form
    r13 = Responder(device)
    vca_to_caps(r13, 0x13)
    req13 = bytearray(neg14(kem=None, req_pqc=None))
    req13[0] = 0x13
    r13.handle(bytes(req13))
    rsp = r13.handle(bytes((0x13, 0x82, 0x80, 0)) + struct.pack("<HH", 0, 100))
    certs = split_der_chain((ROOT / "certs" / "ecdsa-p384" / "slot0" / "chain.der").read_bytes())
    ecdsa_chain = 4 + 48 + sum(len(c) for c in certs)
    assert rsp[:8] == bytes((0x13, 0x02, 0x00, 0)) + struct.pack("<HH", 100, ecdsa_chain - 100)


@pytest.mark.parametrize("binding", ["doe", "mctp"])
async def test_14_pqc_session_over_real_sockets(device: Device, binding: str) -> None:
    """The same 1.4 ML-DSA-65 + ML-KEM-768 handshake through SpdmServer on a loopback socket
    (platform-socket frames, DOE / MCTP framing, chunked KEY_EXCHANGE_RSP) to END_SESSION."""
    from emulator.options import RunOptions
    from emulator.requester.transport import SocketClient
    from emulator.server.server import SpdmServer

    b = get_binding(binding)
    srv = SpdmServer(
        RunOptions(host="127.0.0.1", port=0),
        b,
        lambda number, peer: SpdmConnection(device, b, number=number, peer=peer),
    )
    await srv.start()
    try:
        async with SocketClient("127.0.0.1", srv.port, b, timeout=20) as client:
            req = Requester(client, config())
            await req.vca()
            assert req.version == 0x14 and req.neg.kem == KemAlgo.ML_KEM_768
            flow = IdentityFlow(
                req, trusted_roots=[(PQC_CERTS / "ml-dsa-65" / "slot0" / "root.der").read_bytes()]
            )
            held = await flow.get_certificate(0, portion=0xFFFF)  # 17 KiB: one CERTIFICATE
            s = await open_session(
                req, peer_chain=held.chain, binding=binding, measurement_summary=0xFF
            )
            assert s.established and len(s.measurement_summary_hash) == 48
            ke_rsp = next(a for q, a in req.log if q[1] == RequestCode.KEY_EXCHANGE)
            assert len(ke_rsp) > 0x11C0  # ML-DSA-65 + ML-KEM-768 + summary: chunked
            await s.heartbeat()
            await s.end_session()
    finally:
        await srv.stop()


async def test_vendor_defined_large_payload_14() -> None:
    """SPDM 1.4 VENDOR_DEFINED LargeReq/LargeResp (Param1 bit 7): PayloadLength 0, then a
    u32 LargePayloadLength; needs LARGE_RESP_CAP on both sides."""
    entry = {"standard_id": 3, "vendor_id": "0100", "request_prefix": "aa", "response": "bbcc"}
    dev = helpers.make_device("pqc", vendor_defined=[entry])
    request = bytes.fromhex("14fe8000 030002 0100 0000") + struct.pack("<I", 2) + b"\xaa\x01"
    req, _conn, _ = await connect(dev, "doe", flags=FLAGS | int(RequesterCap.LARGE_RESP_CAP))
    rsp = await req.send(request)
    assert (
        rsp[:17] == bytes.fromhex("147e8000 030002 0100 0000") + struct.pack("<I", 2) + b"\xbb\xcc"
    )
    # the same request from a requester without LARGE_RESP_CAP: InvalidRequest
    req2, conn2, _ = await connect(dev, "doe")
    rsp = conn2.responder.handle(request)
    assert rsp == bytes((0x14, 0x7F, ErrorCode.InvalidRequest, 0))
    assert "LARGE_RESP_CAP" in conn2.responder.last_error
    # the normal form still works at 1.4
    rsp = await req2.send(bytes.fromhex("14fe0000 030002 0100 0200 aa01"))
    assert rsp[:13] == bytes.fromhex("147e0000 030002 0100 0200 bbcc")


def test_trace_decodes_14_large_vendor_payloads() -> None:
    from emulator.trace import describe_message

    large = bytes.fromhex("147e8000 030002 0100 0000") + struct.pack("<I", 2) + b"\xbb\xcc"
    assert "LargePayloadLength=2 Payload=bb cc" in describe_message(large)
    # below 1.4 bit 7 is reserved: the 16-bit PayloadLength counts
    assert "Payload=bb cc" in describe_message(bytes.fromhex("137e8000 030002 0100 0200 bbcc"))
