"""GET_MEASUREMENTS / MEASUREMENTS: byte-exact messages, L1/L2 signatures, sizes, runtime changes.

Expected bytes are written out from the DSP0274 tables (header, NumberOfBlocks,
3-byte MeasurementRecordLength, blocks ``Index, Spec, MeasurementSize,
ValueType, ValueSize, Value``, Nonce, OpaqueDataLength, [RequesterContext],
[Signature]); digests come from ``hashlib`` and signatures are checked with
``cryptography`` public keys over an L1/L2 the test concatenates itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from emulator.codec.constants import BaseAsymAlgo, BaseHashAlgo, RequesterCap
from emulator.codec.measurements import (
    GetMeasurementsRequest,
    MeasurementBlock,
    MeasurementsResponse,
    parse_record,
)
from emulator.device.model import Device
from emulator.errors import CodecError, RequesterError
from emulator.profiles import load_profile_text
from emulator.requester.measurements import get_measurements
from emulator.requester.requester import (
    LoopbackChannel,
    Requester,
    RequesterConfig,
    SpdmErrorReply,
)
from emulator.responder import Responder
from emulator.responder.measurements import current_log
from emulator.transport.base import TransportMessage
from tests.helpers import make_device

ROOT = Path(__file__).resolve().parent.parent
P256_SLOT0 = ROOT / "certs" / "ecdsa-p256" / "slot0"
MEAS_PREFIX_CONTEXT = b"responder-measurements signing"

# --- helpers -------------------------------------------------------------------------------


def profile_text(
    *,
    caps: str = '"CERT_CAP", "CHAL_CAP", "MEAS_CAP_SIG", "MEAS_FRESH_CAP"',
    versions: str = '"1.0", "1.1", "1.2", "1.3"',
    meas_hash: str = '"SHA_256"',
    blocks: str | None = None,
    extra: str = "",
    dts: int = 4608,
) -> str:
    if blocks is None:
        blocks = BASIC_BLOCKS
    return f"""
[device]
name = "meas-test"
[spdm]
versions = [{versions}]
capabilities = [{caps}]
data_transfer_size = {dts}
max_spdm_msg_size = {dts}
[algorithms]
base_asym = ["ECDSA_P256"]
base_hash = ["SHA_256"]
measurement_hash = [{meas_hash}]
[[slots]]
id = 0
chain = "{P256_SLOT0}"
{blocks}
{extra}
"""


BASIC_BLOCKS = """
[[measurements]]
index = 1
type = "immutable_rom"
text = "rom"
[[measurements]]
index = 2
type = "mutable_firmware"
value = "0102030405"
tcb = true
[[measurements]]
index = 3
type = "version"
text = "1.0.9"
"""


def device(text: str | None = None) -> Device:
    return make_device(load_profile_text(text or profile_text(), "test.toml", ROOT))


class CountingRng:
    """Nonce source for exact vectors: 32 bytes of (n, n+1, ...) per call."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, n: int) -> bytes:
        self.calls += 1
        return bytes((self.calls * 0x10 + i) & 0xFF for i in range(n))


def nonce_of(call: int) -> bytes:
    return bytes((call * 0x10 + i) & 0xFF for i in range(32))


def blk(index: int, vtype: int, value: bytes) -> bytes:
    """A DMTF measurement block, written out field by field."""
    return (
        bytes([index, 0x01])
        + (3 + len(value)).to_bytes(2, "little")
        + bytes([vtype])
        + len(value).to_bytes(2, "little")
        + value
    )


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


async def connect(
    dev: Device, version: int, rng: CountingRng | None = None, **cfg: object
) -> tuple[Responder, Requester]:
    r = Responder(dev, rng=rng or CountingRng())
    conf = RequesterConfig(
        version=version,
        base_asym=int(BaseAsymAlgo.ECDSA_P256),
        base_hash=int(BaseHashAlgo.SHA_256),
    )
    for k, v in cfg.items():
        setattr(conf, k, v)
    q = Requester(LoopbackChannel(r), conf)
    await q.vca()
    return r, q


def leaf_public_key() -> ec.EllipticCurvePublicKey:
    cert = x509.load_der_x509_certificate((P256_SLOT0 / "leaf.der").read_bytes())
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def verify_p256(version: int, l1l2: bytes, signature: bytes) -> bool:
    """Independent check: 1.0/1.1 sign L1 itself, 1.2+ prefix || SHA-256(L1/L2)."""
    if version >= 0x12:
        major, minor = version >> 4, version & 0xF
        prefix = f"dmtf-spdm-v{major}.{minor}.*".encode() * 4
        prefix += bytes(36 - len(MEAS_PREFIX_CONTEXT)) + MEAS_PREFIX_CONTEXT
        assert len(prefix) == 100
        data = prefix + sha256(l1l2)
    else:
        data = l1l2
    assert len(signature) == 64
    der = utils.encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    try:
        leaf_public_key().verify(der, data, ec.ECDSA(hashes.SHA256()))
    except Exception:
        return False
    return True


def get_meas(version: int, attrs: int, op: int, nonce: bytes = b"", slot: int = 0) -> bytes:
    """A GET_MEASUREMENTS written out by hand (context 8 x 0xC7 in 1.3)."""
    out = bytes([version, 0xE0, attrs, op])
    if attrs & 1:
        out += nonce + (bytes([slot]) if version >= 0x11 else b"")
    if version >= 0x13:
        out += b"\xc7" * 8
    return out


# --- codec vectors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "attrs", "size"),
    [
        (0x10, 0, 4),
        (0x10, 1, 36),
        (0x11, 0, 4),
        (0x11, 1, 37),
        (0x12, 3, 37),
        (0x13, 0, 12),
        (0x13, 1, 45),
    ],
)
def test_request_sizes_and_round_trip(version: int, attrs: int, size: int) -> None:
    raw = get_meas(version, attrs, 0xFF, bytes(range(32)), slot=2)
    assert len(raw) == size
    req = GetMeasurementsRequest.decode(raw + b"\x00\x00\x00")  # DOE padding ignored
    assert req.size == size
    assert req.encode() == raw
    assert req.signature_requested == bool(attrs & 1)
    if attrs & 1:
        assert req.nonce == bytes(range(32))
        assert req.slot_id == (2 if version >= 0x11 else 0)
    assert req.raw_requested == (version >= 0x12 and bool(attrs & 2))
    with pytest.raises(CodecError, match="need"):
        GetMeasurementsRequest.decode(raw[:-1])


def test_response_codec_and_record_checks() -> None:
    rec = blk(1, 0x00, b"\x11" * 32) + blk(0xFE, 0x85, bytes(16))
    msg = MeasurementsResponse(
        version=0x13,
        number_of_blocks=2,
        record=rec,
        nonce=b"\x22" * 32,
        opaque=b"\x01\x02",
        requester_context=b"\x33" * 8,
        signature=b"\x44" * 64,
    )
    raw = msg.encode()
    assert raw[:8] == bytes([0x13, 0x60, 0, 0, 2]) + len(rec).to_bytes(3, "little")
    assert raw[8 + len(rec) :] == b"\x22" * 32 + b"\x02\x00\x01\x02" + b"\x33" * 8 + b"\x44" * 64
    back, size = MeasurementsResponse.decode(raw, 64)
    assert size == len(raw)
    assert back.blocks == [
        MeasurementBlock(1, 0x00, b"\x11" * 32),
        MeasurementBlock(0xFE, 0x85, bytes(16)),
    ]
    assert back.signature == b"\x44" * 64
    with pytest.raises(CodecError, match="need"):
        MeasurementsResponse.decode(raw[:-1], 64)
    # MeasurementSize != 3 + value size
    bad = bytearray(blk(1, 0, b"\x00" * 4))
    bad[2] += 1
    with pytest.raises(CodecError, match="MeasurementSize"):
        parse_record(bytes(bad) + b"\x00")
    with pytest.raises(CodecError, match="overruns"):
        parse_record(blk(1, 0, b"\x00" * 4)[:-1])
    with pytest.raises(CodecError, match="not DMTF"):
        parse_record(b"\x01\x02" + blk(1, 0, b"")[2:])
    with pytest.raises(CodecError, match="trailing"):
        parse_record(blk(1, 0, b"") + b"\x00\x00")


# --- byte-exact responses ---------------------------------------------------------------------


@pytest.mark.parametrize("version", [0x10, 0x11, 0x12, 0x13])
def test_count_operation_exact(version: int) -> None:
    async def go() -> None:
        r, _q = await connect(device(), version)
        req = get_meas(version, 0, 0)
        rsp = r.handle(req)
        want = bytes([version, 0x60, 3, 0, 0, 0, 0, 0]) + nonce_of(1) + b"\x00\x00"
        if version >= 0x13:
            want += b"\xc7" * 8
        assert rsp == want

    run(go())


@pytest.mark.parametrize("version", [0x10, 0x11, 0x12, 0x13])
def test_all_and_single_exact(version: int) -> None:
    async def go() -> None:
        r, _q = await connect(device(), version)
        rec = (
            blk(1, 0x00, sha256(b"rom"))
            + blk(2, 0x01, sha256(bytes.fromhex("0102030405")))
            + blk(3, 0x86, b"1.0.9")
        )
        tail = b"\xc7" * 8 if version >= 0x13 else b""
        rsp = r.handle(get_meas(version, 0, 0xFF))
        assert rsp == (
            bytes([version, 0x60, 0, 0, 3])
            + len(rec).to_bytes(3, "little")
            + rec
            + nonce_of(1)
            + b"\x00\x00"
            + tail
        )
        one = blk(2, 0x01, sha256(bytes.fromhex("0102030405")))
        rsp = r.handle(get_meas(version, 0, 2))
        assert rsp == (
            bytes([version, 0x60, 0, 0, 1, len(one), 0, 0]) + one + nonce_of(2) + b"\x00\x00" + tail
        )

    run(go())


ALL_TYPES = """
[[measurements]]
index = 1
type = "immutable_rom"
value = "00"
[[measurements]]
index = 2
type = "mutable_firmware"
value = "01"
[[measurements]]
index = 3
type = "hardware_config"
value = "02"
[[measurements]]
index = 4
type = "firmware_config"
value = "03"
[[measurements]]
index = 5
type = 4
value = "04"
[[measurements]]
index = 6
type = "version"
representation = "digest"
text = "6.0"
[[measurements]]
index = 7
type = "svn"
representation = "digest"
svn = 7
[[measurements]]
index = 8
type = "hash_extended"
value = "08"
[[measurements]]
index = 9
type = "informational"
representation = "digest"
text = "nine"
[[measurements]]
index = 10
type = "structured_manifest"
value = "0a"
[[measurements]]
index = 0x11
type = "immutable_rom"
representation = "raw"
value = "10"
[[measurements]]
index = 0x12
type = "mutable_firmware"
representation = "raw"
value = "11"
[[measurements]]
index = 0x13
type = "hardware_config"
representation = "raw"
value = "12"
[[measurements]]
index = 0x14
type = "firmware_config"
representation = "raw"
value = "13"
[[measurements]]
index = 0x15
type = "measurement_manifest"
representation = "raw"
value = "14"
[[measurements]]
index = 0x16
type = "version"
text = "1.2.3"
[[measurements]]
index = 0x17
type = "secure_version_number"
svn = 0x0102
[[measurements]]
index = 0x18
type = "hash_extended"
representation = "raw"
value = "18"
[[measurements]]
index = 0x19
type = "informational"
text = "info"
[[measurements]]
index = 0x1A
type = "structured_manifest"
representation = "raw"
value = "1a"
[[measurements]]
index = 0x20
type = "firmware"
value = "2020"
raw_on_request = false
[[measurements]]
index = 0xFD
type = "manifest"
text = "manifest"
[[measurements]]
index = 0xFE
type = "device_mode"
operational_mode_capabilities = ["NORMAL", "RECOVERY"]
operational_mode_state = 4
device_mode_capabilities = 0x1f
device_mode_state = ["INVASIVE_DEBUG_HAS_BEEN_ACTIVE_AFTER_MFG"]
"""


def expected_all_types(raw_requested: bool) -> bytes:
    digests = [
        (1, 0, b"\x00"),
        (2, 1, b"\x01"),
        (3, 2, b"\x02"),
        (4, 3, b"\x03"),
        (5, 4, b"\x04"),
        (6, 6, b"6.0"),
        (7, 7, (7).to_bytes(8, "little")),
        (8, 8, b"\x08"),
        (9, 9, b"nine"),
        (10, 10, b"\x0a"),
    ]
    out = b""
    for index, vtype, value in digests:
        if raw_requested:
            out += blk(index, vtype | 0x80, value)
        else:
            out += blk(index, vtype, sha256(value))
    raws = [
        (0x11, 0, b"\x10"),
        (0x12, 1, b"\x11"),
        (0x13, 2, b"\x12"),
        (0x14, 3, b"\x13"),
        (0x15, 4, b"\x14"),
        (0x16, 6, b"1.2.3"),
        (0x17, 7, bytes.fromhex("0201000000000000")),
        (0x18, 8, b"\x18"),
        (0x19, 9, b"info"),
        (0x1A, 10, b"\x1a"),
    ]
    for index, vtype, value in raws:
        out += blk(index, vtype | 0x80, value)
    out += blk(0x20, 0x01, sha256(b"\x20\x20"))  # raw_on_request = false: always a digest
    out += blk(0xFD, 0x84, b"manifest") if raw_requested else blk(0xFD, 0x04, sha256(b"manifest"))
    mode = (
        (0x0C).to_bytes(4, "little")
        + (4).to_bytes(4, "little")
        + (0x1F).to_bytes(4, "little")
        + (0x10).to_bytes(4, "little")
    )
    out += blk(0xFE, 0x85, mode)
    return out


@pytest.mark.parametrize(("version", "attrs"), [(0x11, 0), (0x11, 2), (0x12, 0), (0x12, 2)])
def test_every_type_both_representations(version: int, attrs: int) -> None:
    """Types 0..10, digest and raw; RawBitStreamRequested only counts from 1.2 (reserved in 1.1)."""

    async def go() -> None:
        r, _q = await connect(device(profile_text(blocks=ALL_TYPES)), version)
        rsp = r.handle(get_meas(version, attrs, 0xFF))
        rec = expected_all_types(raw_requested=bool(attrs & 2) and version >= 0x12)
        assert rsp == (
            bytes([version, 0x60, 0, 0, 23])
            + len(rec).to_bytes(3, "little")
            + rec
            + nonce_of(1)
            + b"\x00\x00"
        )

    run(go())


def test_raw_bit_stream_only_algorithm() -> None:
    """MeasurementHashAlgo RAW_BIT_STREAM_ONLY: every block is its raw value."""

    async def go() -> None:
        dev = device(profile_text(meas_hash='"RAW_BIT_STREAM_ONLY"'))
        r, q = await connect(dev, 0x12)
        assert q.neg.measurement_hash == 1
        rsp = r.handle(get_meas(0x12, 0, 0xFF))
        rec = (
            blk(1, 0x80, b"rom")
            + blk(2, 0x81, bytes.fromhex("0102030405"))
            + blk(3, 0x86, b"1.0.9")
        )
        assert rsp[8 : 8 + len(rec)] == rec
        # and the requester accepts it
        res = await get_measurements(q, 0xFF)
        assert [b.value for b in res.blocks] == [b"rom", bytes.fromhex("0102030405"), b"1.0.9"]

    run(go())


def test_sha512_digest_and_device_mode_block() -> None:
    async def go() -> None:
        dev = device(profile_text(meas_hash='"SHA_512"', blocks=ALL_TYPES))
        r, _q = await connect(dev, 0x13)
        rsp = r.handle(get_meas(0x13, 0, 1))
        one = blk(1, 0x00, hashlib.sha512(b"\x00").digest())
        assert rsp[8 : 8 + len(one)] == one
        rsp = r.handle(get_meas(0x13, 0, 0xFE))
        assert rsp[4] == 1 and rsp[8] == 0xFE and rsp[12] == 0x85

    run(go())


# --- errors ------------------------------------------------------------------------------------


def error_of(rsp: bytes) -> tuple[int, int]:
    assert rsp[1] == 0x7F, rsp.hex()
    return rsp[2], rsp[3]


@pytest.mark.parametrize("version", [0x10, 0x11, 0x12, 0x13])
def test_errors(version: int) -> None:
    async def go() -> None:
        r, _q = await connect(device(), version)
        assert error_of(r.handle(get_meas(version, 0, 9))) == (0x01, 0)  # no such index
        assert error_of(r.handle(get_meas(version, 1, 0xFF, b"\x00" * 32)[:-1])) == (0x01, 0)
        if version >= 0x11:
            sig = get_meas(version, 1, 0xFF, b"\x00" * 32, slot=8)
            assert error_of(r.handle(sig)) == (0x01, 0)  # slot 8 does not exist
            sig = get_meas(version, 1, 0xFF, b"\x00" * 32, slot=5)
            assert error_of(r.handle(sig)) == (0x01, 0)  # slot 5 is empty
            sig = get_meas(version, 1, 0xFF, b"\x00" * 32, slot=0xF)
            assert error_of(r.handle(sig)) == (0x01, 0)  # no provisioned public key
        other = 0x11 if version != 0x11 else 0x12
        assert error_of(r.handle(get_meas(other, 0, 0xFF))) == (0x41, 0)  # VersionMismatch

    run(go())


def test_signature_needs_meas_cap_sig_and_cap_needed() -> None:
    async def go() -> None:
        dev = device(profile_text(caps='"CERT_CAP", "CHAL_CAP", "MEAS_CAP_NO_SIG"'))
        r, _q = await connect(dev, 0x12)
        assert error_of(r.handle(get_meas(0x12, 1, 0xFF, b"\x01" * 32))) == (0x01, 0)
        assert r.handle(get_meas(0x12, 0, 0xFF))[1] == 0x60
        dev = device(profile_text(caps='"CERT_CAP", "CHAL_CAP"', blocks=""))
        r, _q = await connect(dev, 0x12)
        assert error_of(r.handle(get_meas(0x12, 0, 0xFF))) == (0x07, 0xE0)  # UnsupportedRequest

    run(go())


def test_state_and_negotiation_errors() -> None:
    async def go() -> None:
        r = Responder(device(), rng=CountingRng())
        q = Requester(LoopbackChannel(r), RequesterConfig(version=0x12))
        await q.get_version()
        await q.get_capabilities()
        assert error_of(r.handle(get_meas(0x12, 0, 0xFF))) == (0x04, 0)  # before ALGORITHMS
        # the requester did not offer the DMTF measurement specification
        r, q = await connect(device(), 0x12, measurement_spec=0)
        assert error_of(r.handle(get_meas(0x12, 0, 0xFF))) == (0x04, 0)

    run(go())


# --- signatures and L1/L2 -----------------------------------------------------------------------


@pytest.mark.parametrize("version", [0x10, 0x11, 0x12, 0x13])
def test_signature_over_l1l2_after_unsigned_requests(version: int) -> None:
    async def go() -> None:
        r, q = await connect(device(), version)
        l1 = bytearray(q.message_a if version >= 0x12 else b"")
        for req in (get_meas(version, 0, 0), get_meas(version, 0, 1), get_meas(version, 0, 0xFF)):
            rsp = r.handle(req)
            assert rsp[1] == 0x60
            l1 += req + rsp
        nonce = bytes(range(100, 132))
        req = get_meas(version, 1, 3, nonce, slot=0)
        rsp = r.handle(req)
        assert rsp[1] == 0x60
        sig = rsp[-64:]
        l1 += req + rsp[:-64]
        assert verify_p256(version, bytes(l1), sig)
        # the transcript ended with the signed response: the next signature covers only itself
        assert current_log(r, None) is None
        req2 = get_meas(version, 1, 0xFF, nonce, slot=0)
        rsp2 = r.handle(req2)
        fresh = (bytes(q.message_a) if version >= 0x12 else b"") + req2 + rsp2[:-64]
        assert verify_p256(version, fresh, rsp2[-64:])
        assert not verify_p256(version, bytes(l1) + req2 + rsp2[:-64], rsp2[-64:])
        if version >= 0x11:
            assert rsp2[3] & 0x0F == 0
        if version >= 0x12:
            assert rsp2[3] & 0x30 == 0x20  # no change detected
        else:
            assert rsp2[3] == 0

    run(go())


@pytest.mark.parametrize("version", [0x11, 0x12, 0x13])
def test_requester_flow_verifies(version: int) -> None:
    async def go() -> None:
        _r, q = await connect(device(), version)
        count = await get_measurements(q, 0)
        assert count.count == 3
        await get_measurements(q, 2)
        res = await get_measurements(q, 0xFF, signed=True, public_key=leaf_public_key())
        assert res.signed and len(res.blocks) == 3
        assert res.l1l2.startswith(bytes(q.message_a) if version >= 0x12 else count.request)
        assert verify_p256(version, res.l1l2, res.response.signature)
        # a wrong key fails
        other = ec.generate_private_key(ec.SECP256R1()).public_key()
        with pytest.raises(RequesterError, match="does not verify"):
            await get_measurements(q, 1, signed=True, public_key=other)

    run(go())


def test_requester_uses_the_fetched_certificate() -> None:
    """Without public_key, the leaf key comes from the identity flow's verified chain."""
    from emulator.requester.identity import get_certificate, get_digests

    async def go() -> None:
        _r, q = await connect(device(), 0x13)
        with pytest.raises(RequesterError, match="no public key for slot 0"):
            await get_measurements(q, 1, signed=True)
        await get_digests(q)
        await get_certificate(q, 0)
        res = await get_measurements(q, 0xFF, signed=True)
        assert verify_p256(0x13, res.l1l2, res.response.signature)

    run(go())


def test_other_request_and_error_reset_l1l2() -> None:
    async def go() -> None:
        r, q = await connect(device(), 0x12)
        r.handle(get_meas(0x12, 0, 1))
        assert current_log(r, None) is not None
        assert r.handle(bytes([0x12, 0x81, 0, 0]))[1] == 0x01  # GET_DIGESTS -> DIGESTS
        assert current_log(r, None) is None
        r.handle(get_meas(0x12, 0, 1))
        assert error_of(r.handle(get_meas(0x12, 0, 0x42)))[0] == 0x01
        assert current_log(r, None) is None  # an ERROR to GET_MEASUREMENTS resets it too
        # a request that fails elsewhere does not reset it (libspdm resets only when processed)
        r.handle(get_meas(0x12, 0, 1))
        assert error_of(r.handle(bytes([0x12, 0x82, 0, 0])))[0] == 0x01  # short GET_CERTIFICATE
        assert current_log(r, None) is not None
        # the requester's own L1/L2 follows the same rules and still verifies
        assert r.handle(bytes([0x12, 0x81, 0, 0]))[1] == 0x01
        q.log.append((bytes([0x12, 0x81, 0, 0]), bytes([0x12, 0x01, 0, 1])))
        await get_measurements(q, 1)
        res = await get_measurements(q, 2, signed=True, public_key=leaf_public_key())
        assert res.l1l2.count(bytes([0x12, 0xE0])) == 2

    run(go())


def test_sessions_have_their_own_log() -> None:
    async def go() -> None:
        r, q = await connect(device(), 0x12)
        a = get_meas(0x12, 0, 1)
        ra = r.handle(a)
        b = get_meas(0x12, 0, 2)
        rb = r.handle(b, session_id=0xAABBCCDD)
        s = get_meas(0x12, 1, 0xFF, b"\x05" * 32)
        rs = r.handle(s, session_id=0xAABBCCDD)
        assert verify_p256(0x12, bytes(q.message_a) + b + rb + s + rs[:-64], rs[-64:])
        assert current_log(r, None) is not None  # the session did not touch the outside log
        rs2 = r.handle(s)
        assert verify_p256(0x12, bytes(q.message_a) + a + ra + s + rs2[:-64], rs2[-64:])

    run(go())


def test_unsigned_forever_keeps_constant_state() -> None:
    """A running hash, not a buffer: many unsigned requests, then one signature over all."""

    async def go() -> None:
        r, q = await connect(device(), 0x12)
        running = hashlib.sha256(bytes(q.message_a))
        req = get_meas(0x12, 0, 0xFF)
        for _ in range(300):
            rsp = r.handle(req)
            running.update(req + rsp)
        log = current_log(r, None)
        assert log is not None and not any(
            isinstance(v, bytes | bytearray) for v in (log.hash, log.seen, log.length)
        )
        assert log.length > 300 * len(req)
        s = get_meas(0x12, 1, 1, b"\x09" * 32)
        rs = r.handle(s)
        running.update(s + rs[:-64])
        prefix = b"dmtf-spdm-v1.2.*" * 4 + bytes(6) + MEAS_PREFIX_CONTEXT
        der = utils.encode_dss_signature(
            int.from_bytes(rs[-64:-32], "big"), int.from_bytes(rs[-32:], "big")
        )
        leaf_public_key().verify(der, prefix + running.digest(), ec.ECDSA(hashes.SHA256()))

    run(go())


# --- content changed, runtime changes, summary hash ------------------------------------------


def test_content_changed_and_runtime_change() -> None:
    async def go() -> None:
        dev = device()
        _r, q = await connect(dev, 0x12)
        first = await get_measurements(q, 2)
        assert first.blocks[0].value == sha256(bytes.fromhex("0102030405"))
        events: list[tuple[str, object]] = []
        dev.listeners.append(lambda what, detail: events.append((what, detail)))
        dev.measurements.set_value(2, b"new firmware")
        assert events and events[0][0] == "measurement"
        res = await get_measurements(q, 0xFF, signed=True, public_key=leaf_public_key())
        assert res.content_changed == 0x10  # a block reported earlier in this log changed
        assert res.blocks[1].value == sha256(b"new firmware")
        res = await get_measurements(q, 0xFF, signed=True, public_key=leaf_public_key())
        assert res.content_changed == 0x20
        # 1.1 has no content-changed field
        _r11, q11 = await connect(dev, 0x11)
        await get_measurements(q11, 2)
        dev.measurements.set_value(2, b"newer")
        res = await get_measurements(q11, 2, signed=True, public_key=leaf_public_key())
        assert res.response.param2 == 0

    run(go())


def summary(blocks: list[bytes]) -> bytes:
    return sha256(b"".join(blocks))


def test_summary_hash_follows_runtime_changes() -> None:
    dev = device()
    b1 = blk(1, 0x00, sha256(b"rom"))
    b2 = blk(2, 0x01, sha256(bytes.fromhex("0102030405")))
    b3 = blk(3, 0x86, b"1.0.9")
    sha256_bit, meas_sha256 = 0x01, 0x02
    assert dev.measurement_summary_hash(0, meas_sha256, sha256_bit) == b""
    assert dev.measurement_summary_hash(0xFF, meas_sha256, sha256_bit) == summary([b1, b2, b3])
    assert dev.measurement_summary_hash(1, meas_sha256, sha256_bit) == summary([b1, b2])
    dev.measurements.bump_version(3)
    b3 = blk(3, 0x86, b"1.0.10")
    assert dev.measurement_summary_hash(0xFF, meas_sha256, sha256_bit) == summary([b1, b2, b3])
    assert dev.measurement_summary_hash(1, meas_sha256, sha256_bit) == summary([b1, b2])
    dev.measurements.set_value(1, b"ROM2")
    b1 = blk(1, 0x00, sha256(b"ROM2"))
    assert dev.measurement_summary_hash(1, meas_sha256, sha256_bit) == summary([b1, b2])


def test_challenge_auth_carries_the_summary_hash() -> None:
    """CHALLENGE_AUTH (identity family) uses Device.measurement_summary_hash."""

    async def go() -> None:
        dev = device()
        r, _q = await connect(dev, 0x12)
        dev.measurements.set_value(2, b"fw v2")
        want = summary(
            [
                blk(1, 0x00, sha256(b"rom")),
                blk(2, 0x01, sha256(b"fw v2")),
                blk(3, 0x86, b"1.0.9"),
            ]
        )
        rsp = r.handle(bytes([0x12, 0x83, 0, 0xFF]) + b"\x07" * 32)
        assert rsp[1] == 0x03, rsp.hex()
        # header, CertChainHash (32), Nonce (32), MeasurementSummaryHash (32)
        assert rsp[4 + 32 + 32 : 4 + 32 + 32 + 32] == want

    run(go())


def test_without_meas_fresh_cap_changes_wait_for_a_reset() -> None:
    async def go() -> None:
        dev = device(profile_text(caps='"CERT_CAP", "CHAL_CAP", "MEAS_CAP_SIG"'))
        _r, q = await connect(dev, 0x12)
        dev.measurements.set_value(1, b"patched rom")
        assert dev.measurements.pending() == [1]
        res = await get_measurements(q, 1)
        assert res.blocks[0].value == sha256(b"rom")
        assert dev.measurements.device_reset() == [1]
        res = await get_measurements(q, 1)
        assert res.blocks[0].value == sha256(b"patched rom")

    run(go())


def test_runtime_changes_from_another_thread() -> None:
    async def go() -> None:
        dev = device()
        _r, q = await connect(dev, 0x13)
        stop = threading.Event()

        def writer() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                dev.measurements.set_value(2, n.to_bytes(4, "little") * (n % 7 + 1))
                dev.measurements.bump_version(3)

        t = threading.Thread(target=writer)
        t.start()
        try:
            for _ in range(100):
                await get_measurements(q, 0xFF)
            await get_measurements(q, 0xFF, signed=True, public_key=leaf_public_key())
        finally:
            stop.set()
            t.join()

    run(go())


# --- sizes ---------------------------------------------------------------------------------


def test_response_larger_than_requester_transfer_size() -> None:
    big = "".join(
        f"""
[[measurements]]
index = {i}
type = "firmware_config"
value = "{i:02x}"
"""
        for i in range(1, 11)
    )

    async def go() -> None:
        dev = device(profile_text(blocks=big))
        # 10 SHA-256 blocks = 390 record bytes: fits 0x1200, not 256
        r, q = await connect(dev, 0x12, data_transfer_size=256, max_spdm_msg_size=256)
        assert r.peer is not None and r.peer.data_transfer_size == 256
        rsp = r.handle(get_meas(0x12, 0, 0xFF))
        size = 8 + 10 * 39 + 32 + 2
        assert rsp == bytes([0x12, 0x7F, 0x0D, 0x00]) + size.to_bytes(4, "little")
        with pytest.raises(SpdmErrorReply) as exc:
            await get_measurements(q, 0xFF)
        assert exc.value.error_name == "ResponseTooLarge"
        assert (await get_measurements(q, 3)).blocks[0].index == 3  # one block still fits
        # the signature makes it too large as well (max_spdm_msg_size check)
        r, q = await connect(
            dev,
            0x12,
            data_transfer_size=256,
            max_spdm_msg_size=4096,
            flags=int(RequesterCap.CERT_CAP | RequesterCap.CHAL_CAP | RequesterCap.CHUNK_CAP),
        )
        rsp = r.handle(get_meas(0x12, 1, 0xFF, b"\x00" * 32))
        assert rsp[:4] == bytes([0x12, 0x7F, 0x0D, 0x00])
        assert int.from_bytes(rsp[4:8], "little") == size + 64
        assert current_log(r, None) is None
        # 1.1 has no DataTransferSize: only the device's own limit applies
        small = device(profile_text(blocks=big, dts=256))
        r, q = await connect(small, 0x11)
        assert error_of(r.handle(get_meas(0x11, 0, 0xFF))) == (0x05, 0)  # Unspecified
        r, q = await connect(small, 0x13)
        assert error_of(r.handle(get_meas(0x13, 0, 0xFF)))[0] == 0x0D

    run(go())


# --- opaque data and RequesterContext ---------------------------------------------------------

OPAQUE = "01000000 0100 0400 aabbccdd"  # 1 element: ID 1, VendorLen 0, 4 data bytes


def test_opaque_data_per_version_and_format() -> None:
    async def go() -> None:
        dev = device(profile_text(extra=f'[measurement_options]\nopaque_data = "{OPAQUE}"'))
        opaque = bytes.fromhex(OPAQUE.replace(" ", ""))
        for version, other, present in ((0x11, 0, True), (0x12, 2, True), (0x12, 0, False)):
            r, q = await connect(dev, version, other_params=other)
            rsp = r.handle(get_meas(version, 0, 0))
            want = opaque if present else b""
            assert rsp[8 + 32 :] == len(want).to_bytes(2, "little") + want
            res = await get_measurements(q, 0xFF)
            assert res.response.opaque == want

    run(go())


def test_requester_context_echo_1_3() -> None:
    async def go() -> None:
        _r, q = await connect(device(), 0x13)
        ctx = bytes(range(8))
        res = await get_measurements(
            q, 1, signed=True, requester_context=ctx, public_key=leaf_public_key()
        )
        assert res.response.requester_context == ctx
        assert res.request[-8:] == ctx

    run(go())


# --- the requester's strict checks ---------------------------------------------------------


class TamperChannel:
    """Loopback that lets a test rewrite each response."""

    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.tamper: Callable[[bytes], bytes] = lambda b: b

    async def exchange(self, message: bytes, secured: bool = False) -> TransportMessage:
        return TransportMessage(self.tamper(self.responder.handle(message)))


@pytest.mark.parametrize(
    ("op", "signed", "mutate", "match"),
    [
        (0xFF, False, lambda b: b[:3] + bytes([b[3] | 0x10]) + b[4:], "content-changed"),
        (2, False, lambda b: b[:8] + b"\x03" + b[9:], "asked for index 2"),
        (0xFF, False, lambda b: b[:4] + b"\x02" + b[5:], "NumberOfBlocks 2"),
        (0xFF, False, lambda b: b[:9] + b"\x02" + b[10:], "not DMTF"),
        (0, False, lambda b: b[:2] + b"\x00" + b[3:], "TotalNumberOfMeasurement 0"),
        (0, False, lambda b: b[:4] + b"\x01" + b[5:], "operation 0 returned"),
        (1, True, lambda b: b[:3] + bytes([b[3] | 1]) + b[4:], "slot"),
        (1, False, lambda b: b[:-1] + bytes([b[-1] ^ 1]), "RequesterContext"),
        (1, False, lambda b: b + b"\x01", "unexpected bytes"),
        (1, False, lambda b: b[:5] + b"\x1b\x00\x00" + blk(1, 0, bytes(20)) + b[47:], "digest of"),
    ],
)
def test_requester_rejects(
    op: int, signed: bool, mutate: Callable[[bytes], bytes], match: str
) -> None:
    async def go() -> None:
        r = Responder(device(), rng=CountingRng())
        ch = TamperChannel(r)
        q = Requester(
            ch,
            RequesterConfig(
                version=0x13,
                base_asym=int(BaseAsymAlgo.ECDSA_P256),
                base_hash=int(BaseHashAlgo.SHA_256),
            ),
        )
        await q.vca()
        ch.tamper = lambda b: mutate(b) if b[1] == 0x60 else b
        with pytest.raises(RequesterError, match=match):
            await get_measurements(q, op, signed=signed, public_key=leaf_public_key())

    run(go())
