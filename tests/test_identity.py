"""GET_DIGESTS / GET_CERTIFICATE / CHALLENGE: responder behaviour checked from the outside.

Digests are recomputed here from the committed chain files, signatures are verified
with ``cryptography`` public keys directly (and by the project's requester, whose
verification code is independent of the responder), and transcripts are rebuilt
from the messages exactly as exchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from emulator.codec.constants import (
    BaseAsymAlgo,
    BaseHashAlgo,
    ErrorCode,
    OtherParams,
    RequesterCap,
    ResponseCode,
)
from emulator.device.model import Device
from emulator.errors import ProfileError, RequesterError
from emulator.profiles import load_profile
from emulator.requester import LoopbackChannel, Requester, RequesterConfig, SpdmErrorReply
from emulator.requester.identity import flow_for, verify_challenge_signature
from emulator.responder import ConnectionState, Responder
from emulator.responder.certificates import message_d
from tests import helpers

ROOT = Path(__file__).resolve().parent.parent
CERTS = ROOT / "certs"
A = BaseAsymAlgo
H = BaseHashAlgo
HASHLIB = {H.SHA_256: "sha256", H.SHA_384: "sha384", H.SHA_512: "sha512"}


def hx(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def fixed_rng(start: int = 0xA0) -> Callable[[int], bytes]:
    state = [start]

    def rng(n: int) -> bytes:
        out = bytes((state[0] + i) & 0xFF for i in range(n))
        state[0] += n
        return out

    return rng


def first_der(data: bytes) -> bytes:
    """The first DER element of ``data`` (test-side parser)."""
    if data[1] & 0x80:
        n = data[1] & 0x7F
        return data[: 2 + n + int.from_bytes(data[2 : 2 + n], "big")]
    return data[: 2 + data[1]]


def spdm_chain(slot_dir: Path, hash_name: str) -> bytes:
    """DSP0274 certificate chain format, built here from chain.der."""
    ders = (slot_dir / "chain.der").read_bytes()
    root_hash = hashlib.new(hash_name, first_der(ders)).digest()
    total = 4 + len(root_hash) + len(ders)
    return total.to_bytes(2, "little") + b"\x00\x00" + root_hash + ders


@pytest.fixture(scope="module")
def default_device() -> Device:
    return helpers.make_device()


@pytest.fixture(scope="module")
def multi_device() -> Device:
    return helpers.make_device("multi-slot")


def make_device(tmp_path: Path, body: str, name: str = "t") -> Device:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'[device]\nname = "{name}"\n' + body)
    return helpers.make_device(path)


async def connect(
    dev: Device,
    version: int,
    asym: int = A.ECDSA_P384,
    hash_algo: int = H.SHA_384,
    rng: Callable[[int], bytes] | None = None,
    **config: int,
) -> tuple[Responder, Requester]:
    r = Responder(dev, rng=rng) if rng else Responder(dev)
    req = Requester(
        LoopbackChannel(r),
        RequesterConfig(version=version, base_asym=asym, base_hash=hash_algo, **config),
    )
    await req.vca()
    return r, req


def error_code(response: bytes) -> int:
    assert response[1] == ResponseCode.ERROR, response.hex()
    return response[2]


# --- byte-exact responses ----------------------------------------------------------------------


async def test_digests_certificate_challenge_bytes(default_device: Device) -> None:
    """SPDM 1.2, P-256 / SHA-256: every byte of DIGESTS, CERTIFICATE and CHALLENGE_AUTH."""
    r, req = await connect(default_device, 0x12, A.ECDSA_P256, H.SHA_256, rng=fixed_rng())
    chain = spdm_chain(CERTS / "ecdsa-p256" / "slot0", "sha256")
    digest = hashlib.sha256(chain).digest()
    m1 = bytearray(req.message_a)

    get_digests = hx("12 81 00 00")
    rsp = await req.send(get_digests)
    assert rsp == hx("12 01 00 01") + digest  # only slot 0 has a P-256 key
    m1 += get_digests + rsp

    get_cert = hx("12 82 00 00 0000 0002")  # 0x200 bytes from offset 0
    rsp = await req.send(get_cert)
    rest = len(chain) - 0x200
    assert rsp == hx("12 02 00 00 0002") + rest.to_bytes(2, "little") + chain[:0x200]
    m1 += get_cert + rsp
    get_cert2 = hx("12 82 00 00 0002 ffff")
    rsp = await req.send(get_cert2)
    assert rsp == hx("12 02 00 00") + rest.to_bytes(2, "little") + hx("0000") + chain[0x200:]
    m1 += get_cert2 + rsp

    nonce = bytes(range(32))
    challenge = hx("12 83 00 00") + nonce
    rsp = await req.send(challenge)
    # nonce from the injected rng: it has produced nothing before CHALLENGE_AUTH
    rsp_nonce = bytes(range(0xA0, 0xC0))
    # no summary (type 0), OpaqueDataLength 0 (no opaque data configured)
    unsigned = hx("12 03 00 01") + digest + rsp_nonce + hx("0000")
    assert rsp[: len(unsigned)] == unsigned and len(rsp) == len(unsigned) + 64
    m1 += challenge + unsigned
    # 1.2 signing: prefix("dmtf-spdm-v1.2.*" x4, zeros, context) || SHA-256(M1), ECDSA
    # deterministic (RFC 6979): the exact signature is known
    context = b"responder-challenge_auth signing"
    signed = b"dmtf-spdm-v1.2.*" * 4 + bytes(36 - len(context)) + context
    signed += hashlib.sha256(bytes(m1)).digest()
    key = serialization.load_pem_private_key(
        (CERTS / "ecdsa-p256" / "slot0" / "leaf.key.pem").read_bytes(), None
    )
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    der = key.sign(signed, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    rr, ss = utils.decode_dss_signature(der)
    assert rsp[len(unsigned) :] == rr.to_bytes(32, "big") + ss.to_bytes(32, "big")
    assert r.state == ConnectionState.AUTHENTICATED
    assert not r.transcripts.b and not r.transcripts.c


async def test_challenge_auth_1_3_and_1_0_layout(default_device: Device) -> None:
    chain = spdm_chain(CERTS / "ecdsa-p384" / "slot0", "sha384")
    for version in (0x10, 0x13):
        _r, req = await connect(default_device, version, rng=fixed_rng(0))
        flow = flow_for(req)
        await flow.get_certificate(0)
        nonce = bytes([0x5A] * 32)
        ctx = hx("0102030405060708") if version == 0x13 else b""
        res = await flow.challenge(0, 0, nonce=nonce, requester_context=ctx)
        rsp = req.log[-1][1]
        expect = bytes((version, 0x03, 0x00, 0x0F)) + hashlib.sha384(chain).digest()
        expect += bytes(range(32)) + hx("0000") + ctx
        assert rsp[: len(expect)] == expect
        assert len(rsp) == len(expect) + 96
        assert res.requester_context == ctx


async def test_seeded_device_is_reproducible(tmp_path: Path) -> None:
    body = f"""
[spdm]
versions = ["1.2"]
capabilities = ["CERT_CAP", "CHAL_CAP"]
[algorithms]
base_asym = ["ECDSA_P384"]
base_hash = ["SHA_384"]
[determinism]
seed = 7
[[slots]]
id = 0
chain = "{CERTS / "ecdsa-p384" / "slot0"}"
"""
    dev = make_device(tmp_path, body)
    outs = []
    for _ in range(2):
        _r, req = await connect(dev, 0x12)
        flow = flow_for(req)
        await flow.get_digests()
        await flow.get_certificate(0)
        await flow.challenge(0, 0, nonce=bytes(32))
        outs.append(req.log[-1][1])
    assert outs[0] == outs[1]  # fixed nonce (seeded) and RFC 6979 ECDSA


# --- full flows across algorithms and versions ------------------------------------------------

ECDSA = [A.ECDSA_P256, A.ECDSA_P384, A.ECDSA_P521]
CASES = [
    (a, hh, v)
    for a in ECDSA
    for hh in (H.SHA_256, H.SHA_384, H.SHA_512)
    for v in (0x11, 0x12, 0x13)
]
CASES += [
    (A.RSASSA_2048, H.SHA_256, 0x11),
    (A.RSAPSS_2048, H.SHA_256, 0x12),
    (A.RSASSA_3072, H.SHA_384, 0x13),
    (A.RSAPSS_3072, H.SHA_512, 0x12),
    (A.RSASSA_4096, H.SHA_512, 0x12),
    (A.RSAPSS_4096, H.SHA_384, 0x13),
    (A.EDDSA_ED25519, H.SHA_256, 0x12),
    (A.EDDSA_ED448, H.SHA_512, 0x13),
]


@pytest.mark.parametrize(("asym", "hash_algo", "version"), CASES)
async def test_flow_every_algorithm(
    default_device: Device, asym: int, hash_algo: int, version: int
) -> None:
    r, req = await connect(default_device, version, asym, hash_algo)
    assert req.neg.base_asym == asym and req.neg.base_hash == hash_algo
    flow = flow_for(req)
    digests = await flow.get_digests()
    assert digests.provisioned_mask == (0x0F if asym == A.ECDSA_P384 else 0x01)
    if version >= 0x13:
        assert digests.supported_mask == 0x0F
    slot = await flow.get_certificate(0, portion=0x400)
    assert slot.portions == -(-len(slot.chain) // 0x400)
    res = await flow.challenge(0, 0)
    # independent check with the leaf's public key straight from the certificate
    assert verify_challenge_signature(
        version, asym, hash_algo, slot.leaf_key, res.transcript, res.signature
    )
    assert res.transcript.startswith(bytes(req.message_a))
    assert r.state == ConnectionState.AUTHENTICATED


async def test_ecdsa_p384_signature_verified_directly(default_device: Device) -> None:
    """1.1: the signature is over M1 itself (the primitive hashes it)."""
    _r, req = await connect(default_device, 0x11)
    flow = flow_for(req)
    await flow.get_digests()
    slot = await flow.get_certificate(0)
    res = await flow.challenge(0)
    key = slot.certs[-1].public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    sig = res.signature
    der = utils.encode_dss_signature(
        int.from_bytes(sig[:48], "big"), int.from_bytes(sig[48:], "big")
    )
    key.verify(der, res.transcript, ec.ECDSA(hashes.SHA384()))


MEAS_PROFILE = f"""
[spdm]
versions = ["1.1", "1.2"]
capabilities = ["CERT_CAP", "CHAL_CAP", "MEAS_CAP_SIG"]
[algorithms]
base_asym = ["ECDSA_P384"]
base_hash = ["SHA_384"]
measurement_hash = ["SHA_256"]
[[slots]]
id = 0
chain = "{CERTS / "ecdsa-p384" / "slot0"}"
[[measurements]]
index = 1
type = "immutable_rom"
text = "boot ROM"
[[measurements]]
index = 2
type = "mutable_firmware"
value = "00112233"
"""


@pytest.fixture(scope="module")
def meas_device(tmp_path_factory: pytest.TempPathFactory) -> Device:
    return make_device(tmp_path_factory.mktemp("meas"), MEAS_PROFILE, "meas")


@pytest.mark.parametrize("kind", [0x01, 0xFF])
async def test_measurement_summary_hash(meas_device: Device, kind: int) -> None:
    _r, req = await connect(meas_device, 0x12)
    flow = flow_for(req)
    await flow.get_certificate(0)
    res = await flow.challenge(0, kind)
    assert len(res.measurement_summary_hash) == 48  # the base hash, not the measurement hash
    expect = meas_device.measurement_summary_hash(kind, req.neg.measurement_hash, H.SHA_384)
    assert res.measurement_summary_hash == expect
    other = meas_device.measurement_summary_hash(kind ^ 0xFE, req.neg.measurement_hash, H.SHA_384)
    assert res.measurement_summary_hash != other  # TCB (ROM only) != all blocks


async def test_summary_hash_needs_measurements(tmp_path: Path) -> None:
    """No MEAS_CAP: a CHALLENGE asking for a summary hash is InvalidRequest (libspdm)."""
    text = MEAS_PROFILE.replace(', "MEAS_CAP_SIG"', "").split("[[measurements]]")[0]
    dev = make_device(tmp_path, text, "nomeas")
    r, _req = await connect(dev, 0x12)
    for kind in (0x01, 0xFF):
        rsp = r.handle(bytes((0x12, 0x83, 0, kind)) + bytes(32))
        assert error_code(rsp) == ErrorCode.InvalidRequest
    assert r.handle(hx("12 83 00 00") + bytes(32))[1] == ResponseCode.CHALLENGE_AUTH


# --- slots -------------------------------------------------------------------------------------


async def test_every_slot(multi_device: Device) -> None:
    _r, req = await connect(multi_device, 0x13)
    flow = flow_for(req)
    digests = await flow.get_digests()
    assert (digests.supported_mask, digests.provisioned_mask) == (0xBF, 0x9F)
    for slot in (0, 1, 2, 3, 4, 7):
        chain = await flow.get_certificate(slot, portion=0x300)
        assert hashlib.sha384(chain.chain).digest() == digests.digests[slot]
        res = await flow.challenge(slot)
        assert res.slot == slot and res.slot_mask == 0x9F
    # the committed slot-N chains are what slots 0-3 serve
    held = flow.chains[2].root_der
    assert held == first_der((CERTS / "ecdsa-p384" / "slot2" / "chain.der").read_bytes())
    assert len(flow.chains[4].certs) == 4  # alias model chain


async def test_empty_and_absent_slots(multi_device: Device) -> None:
    r, req = await connect(multi_device, 0x13)
    for slot in (5, 6):
        rsp = await req.channel.exchange(hx(f"13 82 0{slot} 00 0000 0004"))
        assert error_code(rsp.message) == ErrorCode.InvalidRequest
        nonce = bytes(32) + bytes(8)
        rsp = await req.channel.exchange(hx(f"13 83 0{slot} 00") + nonce)
        assert error_code(rsp.message) == ErrorCode.InvalidRequest
    # 1.3 SlotSizeRequested on an empty slot: size 0, no data; on slot 0: the chain size
    rsp = (await req.channel.exchange(hx("13 82 05 01 0000 0000"))).message
    assert rsp == hx("13 02 05 00 0000 0000")
    size = len(spdm_chain(CERTS / "ecdsa-p384" / "slot0", "sha384"))
    rsp = (await req.channel.exchange(hx("13 82 00 01 0010 0010"))).message
    assert rsp == hx("13 02 00 00 0000") + size.to_bytes(2, "little")
    # in 1.2 the bit is reserved: an empty slot is InvalidRequest
    _r2, req12 = await connect(multi_device, 0x12)
    rsp = (await req12.channel.exchange(hx("12 82 05 01 0000 0000"))).message
    assert error_code(rsp) == ErrorCode.InvalidRequest
    assert r.state >= ConnectionState.NEGOTIATED


async def test_multi_key_connection(multi_device: Device) -> None:
    flags = int(RequesterCap.CERT_CAP | RequesterCap.CHAL_CAP | RequesterCap.MULTI_KEY_CAP_NEG)
    r, req = await connect(multi_device, 0x13, flags=flags, multi_key_conn=True)
    assert req.neg.algorithms is not None
    # NEGOTIATE_ALGORITHMS asked for the responder's keys; ALGORITHMS chose for ours
    # (multi_key_conn = true in the profile)
    assert req.neg.multi_key_rsp and r.algorithms.multi_key_rsp
    assert req.neg.algorithms.other_params_sel & OtherParams.MULTI_KEY_CONN
    flow = flow_for(req)
    digests = await flow.get_digests()
    order = [0, 1, 2, 3, 4, 7]
    # KeyPairIDs 1..TotalKeyPairs: slot 1 names key pair 2 in the profile, the others are
    # numbered in [[slots]] order
    assert [digests.key_pair_ids[s] for s in order] == [1, 2, 3, 4, 5, 6]
    # CertificateInfo: device, device, generic, device, alias, device (generated)
    assert [digests.certificate_infos[s] for s in order] == [1, 1, 3, 1, 2, 1]
    assert [digests.key_usages[s] for s in order] == [0xF, 0x1, 0xF, 0xF, 0xF, 0x6]
    assert message_d(r) == digests.response  # first DIGESTS after VCA is message D
    cert = await flow.get_certificate(2)
    assert cert.certificate_info == 3  # CERTIFICATE Param2 = CertificateInfo
    await flow.get_certificate(1)
    # slot 1's key has no CHALLENGE usage: refused in a multi-key connection
    with pytest.raises(SpdmErrorReply) as err:
        await flow.challenge(1)
    assert err.value.code == ErrorCode.InvalidRequest
    await flow.challenge(2)
    # a second GET_DIGESTS does not replace message D
    await flow.get_digests()
    assert message_d(r) == digests.response


async def test_multi_key_window_closed(multi_device: Device) -> None:
    flags = int(RequesterCap.CERT_CAP | RequesterCap.CHAL_CAP | RequesterCap.MULTI_KEY_CAP_NEG)
    r, req = await connect(multi_device, 0x13, flags=flags, multi_key_conn=True)
    flow = flow_for(req)
    await flow.get_certificate(0)  # not GET_DIGESTS first: no message D
    await flow.get_digests()
    assert message_d(r) == b""


async def test_slot1_challenge_allowed_without_multi_key(multi_device: Device) -> None:
    _r, req = await connect(multi_device, 0x13)
    flow = flow_for(req)
    await flow.get_certificate(1)
    await flow.challenge(1)


# --- errors ------------------------------------------------------------------------------------


async def test_error_paths(default_device: Device) -> None:
    r, req = await connect(default_device, 0x12)
    flow = flow_for(req)
    await flow.get_digests()
    b_before = bytes(r.transcripts.b)
    size = len(spdm_chain(CERTS / "ecdsa-p384" / "slot0", "sha384"))
    bad = [
        hx("12 82 08 00 0000 0004"),  # SlotID 8
        hx("12 82 0f 00 0000 0004"),  # SlotID 15
        hx("12 82 05 00 0000 0004"),  # empty slot
        hx("12 82 00 00") + size.to_bytes(2, "little") + hx("0001"),  # Offset == size
        hx("12 82 00 00 ffff 0001"),  # far past the end
        hx("12 82 00 00 0000"),  # too short
        hx("12 83 09 00") + bytes(32),  # CHALLENGE SlotID 9
        hx("12 83 06 00") + bytes(32),  # CHALLENGE empty slot
        hx("12 83 00 00") + bytes(31),  # CHALLENGE too short
        hx("12 83 00 05") + bytes(32),  # summary type 5
        hx("12 83 ff 00") + bytes(32),  # no public key provisioned
    ]
    for request in bad:
        rsp = (await req.channel.exchange(request)).message
        assert error_code(rsp) == ErrorCode.InvalidRequest, request.hex()
        assert bytes(r.transcripts.b) == b_before  # an ERROR leaves B alone
    # version byte != negotiated version
    rsp = (await req.channel.exchange(hx("11 81 00 00"))).message
    assert error_code(rsp) == ErrorCode.VersionMismatch
    # the flow still verifies: both sides kept the same B
    await flow.get_certificate(0)
    await flow.challenge(0)


async def test_before_algorithms_and_unsupported(tmp_path: Path) -> None:
    dev = Device.load("default")
    r = Responder(dev)
    req = Requester(LoopbackChannel(r), RequesterConfig(version=0x12))
    await req.get_version()
    await req.get_capabilities()
    for request in (hx("12 81 00 00"), hx("12 82 00 00 0000 0010"), hx("12 83 00 00") + bytes(32)):
        assert error_code(r.handle(request)) == ErrorCode.UnexpectedRequest
    # CHAL_CAP without CERT_CAP is not allowed; a device with only PUB_KEY_ID_CAP has no
    # GET_DIGESTS/GET_CERTIFICATE
    body = f"""
[spdm]
versions = ["1.2"]
capabilities = ["PUB_KEY_ID_CAP", "CHAL_CAP"]
[algorithms]
base_asym = ["ECDSA_P384"]
base_hash = ["SHA_384"]
[[slots]]
id = 255
key = "{CERTS / "ecdsa-p384" / "slot1" / "leaf.key.pem"}"
"""
    pub = make_device(tmp_path, body, "pub")
    r2, req2 = await connect(pub, 0x12)
    assert error_code(r2.handle(hx("12 81 00 00"))) == ErrorCode.UnsupportedRequest
    assert error_code(r2.handle(hx("12 82 00 00 0000 0010"))) == ErrorCode.UnsupportedRequest
    # CHALLENGE on slot 0xFF: CertChainHash = Hash(SubjectPublicKeyInfo), Param1 SlotID 0xF
    key = serialization.load_pem_private_key(
        (CERTS / "ecdsa-p384" / "slot1" / "leaf.key.pem").read_bytes(), None
    )
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    res = await flow_for(req2).challenge(0xFF, public_key=key.public_key())
    assert res.attributes == 0x0F and res.slot_mask == 0


async def test_portion_limited_by_data_transfer_size(default_device: Device) -> None:
    _r, req = await connect(default_device, 0x12, data_transfer_size=0x100, max_spdm_msg_size=0x100)
    rsp = await req.send(hx("12 82 00 00 0000 ffff"))
    assert int.from_bytes(rsp[4:6], "little") == 0x100 - 8 and len(rsp) == 0x100
    flow = flow_for(req)
    await flow.get_digests()  # restarts B on both sides (the raw request above is in the old B)
    chain = await flow.get_certificate(0, portion=0xFFFF)
    assert chain.portions > 1
    await flow.challenge(0)


# --- transcripts -------------------------------------------------------------------------------


async def test_get_digests_restarts_b(default_device: Device) -> None:
    r, req = await connect(default_device, 0x13)
    flow = flow_for(req)
    await flow.get_digests()
    await flow.get_certificate(0)
    await flow.get_digests()  # both sides start B again here
    assert bytes(r.transcripts.b) == bytes(flow.message_b)
    await flow.get_certificate(1)
    await flow.challenge(1)


async def test_challenge_without_digests_or_certificate(default_device: Device) -> None:
    """B may be empty: a requester that cached the chain redoes VCA and challenges."""
    _r, req = await connect(default_device, 0x12)
    flow = flow_for(req)
    await flow.get_digests()
    await flow.get_certificate(0)
    await req.vca()  # GET_VERSION resets the responder: A is new, B and C are empty
    res = await flow.challenge(0)
    assert res.transcript == bytes(req.message_a) + res.transcript[len(req.message_a) :]
    assert not flow.message_b


async def test_get_version_resets(default_device: Device) -> None:
    r, req = await connect(default_device, 0x12)
    flow = flow_for(req)
    await flow.get_digests()
    await flow.get_certificate(0)
    assert r.transcripts.b
    await req.get_version()
    assert not r.transcripts.b and r.state == ConnectionState.AFTER_VERSION
    await req.get_capabilities()
    assert error_code(r.handle(hx("12 81 00 00"))) == ErrorCode.UnexpectedRequest


async def test_other_requests_reset_b(meas_device: Device) -> None:
    """libspdm: GET_MEASUREMENTS before authentication empties B and C."""
    r, req = await connect(meas_device, 0x12)
    flow = flow_for(req)
    await flow.get_digests()
    assert r.transcripts.b
    rsp = r.handle(hx("12 e0 00 00"))  # GET_MEASUREMENTS, number of blocks
    assert rsp[1] == 0x60
    assert not r.transcripts.b


async def test_tampered_transcript_fails(default_device: Device) -> None:
    """The requester's check can fail: B differing by one message breaks the signature."""
    _r, req = await connect(default_device, 0x12)
    flow = flow_for(req)
    await flow.get_digests()
    await flow.get_certificate(0)
    flow.message_b += b"\x00"
    with pytest.raises(RequesterError, match="signature"):
        await flow.challenge(0)


async def test_selection_skips_unservable_asym(tmp_path: Path) -> None:
    dev = Device.load("default")
    dev.identity.keys = [k for k in dev.identity.keys if not k.serves(A.ECDSA_P384)]
    _r, req = await connect(dev, 0x12, asym=int(A.ECDSA_P384 | A.ECDSA_P256))
    assert req.neg.base_asym == A.ECDSA_P256  # P-384 has priority but no key any more


# --- profiles ----------------------------------------------------------------------------------

BASE = """
[spdm]
versions = ["1.2", "1.3"]
capabilities = ["CERT_CAP", "CHAL_CAP"]
[algorithms]
base_asym = {asym}
base_hash = ["SHA_384"]
"""


def slot(**fields: object) -> str:
    out = "\n[[slots]]\n"
    for k, v in fields.items():
        out += (
            f"{k} = {v!r}\n".replace("'", '"')
            if not isinstance(v, bool)
            else f"{k} = {str(v).lower()}\n"
        )
    return out


@pytest.mark.parametrize(
    ("asym", "slots", "field", "text"),
    [
        (
            '["ECDSA_P384"]',
            slot(
                id=0,
                chain=str(CERTS / "ecdsa-p384/slot0/chain.der"),
                key=str(CERTS / "ecdsa-p384/slot1/leaf.key.pem"),
            ),
            "slots[0].key",
            "does not match the leaf certificate",
        ),
        (
            '["ECDSA_P256"]',
            slot(id=0, chain=str(CERTS / "rsa-2048/slot0")),
            "slots[0]",
            "RSASSA_2048, RSAPSS_2048, none of which is in [algorithms] base_asym",
        ),
        (
            '["ECDSA_P384"]',
            slot(id=0, chain=str(CERTS / "no-such-dir/slot0")),
            "slots[0].chain",
            "no such file or directory",
        ),
        (
            '["ECDSA_P384"]',
            slot(id=0, chain=str(CERTS / "ecdsa-p384")),
            "slots[0].chain",
            "missing chain.der",
        ),
        (
            '["ECDSA_P384"]',
            slot(id=0, chain=str(CERTS / "ecdsa-p384/slot0"))
            + slot(id=0, chain=str(CERTS / "ecdsa-p384/slot1")),
            "slots[1].id",
            "slot 0 already has a key for ECDSA_P384",
        ),
        (
            '["ECDSA_P384"]',
            slot(id=0, generate="ecdsa-p384") + slot(id=0, generate="ecdsa-p384"),
            "slots[1].id",
            "already has a ecdsa-p384 key",
        ),
        (
            '["ECDSA_P384"]',
            slot(id=0, generate="ecdsa-p999"),
            "slots[0].generate",
            "unknown algorithm",
        ),
        (
            '["ECDSA_P384"]',
            slot(id=0, generate="rsa-2048"),
            "slots[0].generate",
            "not in [algorithms]",
        ),
        ('["ECDSA_P384"]', slot(id=8, generate="ecdsa-p384"), "slots[0].id", "slots are 0..7"),
        (
            '["ECDSA_P384"]',
            slot(id=1, provisioned=False, generate="ecdsa-p384"),
            "slots[0]",
            "unprovisioned slot takes no",
        ),
        ('["ECDSA_P384"]', "", "slots", "needs at least one provisioned"),
        (
            '["ECDSA_P384", "RSAPSS_2048"]',
            slot(id=0, chain=str(CERTS / "ecdsa-p384/slot0")),
            "algorithms.base_asym",
            "no [[slots]] key can sign with RSAPSS_2048",
        ),
    ],
)
def test_bad_profiles(tmp_path: Path, asym: str, slots: str, field: str, text: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[device]\nname = "bad"\n' + BASE.format(asym=asym) + slots)
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert err.value.source == str(path)
    assert err.value.field == field
    assert text in err.value.problem


async def test_generated_and_relative_slots(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    link = tmp_path / "sub" / "chains"
    link.symlink_to(CERTS)
    body = BASE.format(asym='["ECDSA_P256", "ECDSA_P384"]')
    body += slot(id=0, generate="ecdsa-p256") + slot(id=0, chain="chains/ecdsa-p384/slot0")
    (tmp_path / "sub" / "p.toml").write_text('[device]\nname = "gen"\n' + body)
    dev = helpers.make_device(tmp_path / "sub" / "p.toml")
    _r, req = await connect(dev, 0x13, A.ECDSA_P256)
    flow = flow_for(req)
    await flow.get_digests()
    chain = await flow.get_certificate(0)
    san = chain.certs[-1].extensions.get_extension_for_class(x509.SubjectAlternativeName)
    names = san.value.get_values_for_type(x509.OtherName)
    assert b"Vendor=1b36:Device=0010" in names[0].value  # from [device.pci]
    await flow.challenge(0)


def test_generated_slots_are_reproducible_with_a_seed() -> None:
    """[determinism] seed: `generate` slots give the same chains (EC and EdDSA keys)."""
    from emulator.profiles import load_profile_text

    text = """
[device]
name = "g"
[spdm]
versions = ["1.2"]
capabilities = ["CERT_CAP", "CHAL_CAP"]
[algorithms]
base_asym = ["ECDSA_P256", "EDDSA_ED25519"]
base_hash = ["SHA_256"]
[[slots]]
id = 0
generate = "ecdsa-p256"
[[slots]]
id = 0
generate = "ed25519"
[determinism]
seed = 7
"""
    one = load_profile_text(text).identity()
    two = load_profile_text(text).identity()
    other = load_profile_text(text.replace("seed = 7", "seed = 8")).identity()
    for asym in (0x10, 0x400):
        a, b, c = one.key_for(0, asym), two.key_for(0, asym), other.key_for(0, asym)
        assert a is not None and b is not None and c is not None
        assert a.spdm_chain(1) == b.spdm_chain(1)
        assert a.spdm_chain(1) != c.spdm_chain(1)
    unseeded = text.replace("seed = 7", "")
    x = load_profile_text(unseeded).identity().key_for(0, 0x10)
    y = load_profile_text(unseeded).identity().key_for(0, 0x10)
    assert x is not None and y is not None and x.spdm_chain(1) != y.spdm_chain(1)
