"""GET_CSR, SET_CERTIFICATE, GET_KEY_PAIR_INFO, SET_KEY_PAIR_INFO (DSP0274 1.2/1.3) end to
end through the project's requester: the CSR parses with ``cryptography`` and verifies, a
test CA (built here with ``cryptography``) certifies it, SET_CERTIFICATE provisions the
chain, GET_CERTIFICATE returns it and CHALLENGE verifies with it; every error path answers
the ERROR of DSP0274 1.3 / libspdm byte for byte; the state persists in a store."""

from __future__ import annotations

import datetime
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from emulator.codec.constants import (
    BaseAsymAlgo,
    BaseHashAlgo,
    ErrorCode,
    RequesterCap,
    ResponseCode,
)
from emulator.connection import SpdmConnection
from emulator.device.model import Device
from emulator.device.store import DirectoryStore, MemoryStore
from emulator.profiles import load_profile_text
from emulator.requester import Requester, RequesterConfig, SpdmErrorReply
from emulator.requester.identity import flow_for
from emulator.requester.provisioning import (
    erase_certificate,
    get_csr,
    get_key_pair_info,
    set_certificate,
    set_key_pair_info,
    spdm_cert_chain,
)
from emulator.requester.requester import LoopbackChannel
from emulator.requester.session import ConnectionChannel, open_session
from emulator.responder import Responder
from emulator.transport import get_binding
from tests.helpers import make_device, profile_data

P384 = int(BaseAsymAlgo.ECDSA_P384)
SHA384 = int(BaseHashAlgo.SHA_384)
FLAGS = int(
    RequesterCap.CERT_CAP
    | RequesterCap.CHAL_CAP
    | RequesterCap.ENCRYPT_CAP
    | RequesterCap.MAC_CAP
    | RequesterCap.KEY_EX_CAP
)


def hx(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# --- a test CA (independent of the emulator's x509 code) ---------------------------------


class TestCa:
    """root -> leaf issuer, P-384, valid for a year around now."""

    __test__ = False

    def __init__(self, name: str = "test provisioning CA") -> None:
        self.key = ec.generate_private_key(ec.SECP384R1())
        now = datetime.datetime.now(datetime.UTC)
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(self.key, hashes.SHA384())
        )

    def issue(
        self,
        public_key: Any,
        subject: x509.Name | None = None,
        *,
        days: int = 30,
        start: datetime.datetime | None = None,
        key_usage: bool = True,
    ) -> list[bytes]:
        """root first: [root DER, leaf DER] for ``public_key``."""
        now = start or datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev")]))
            .issuer_name(self.name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if key_usage:
            builder = builder.add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                critical=True,
            )
        leaf = builder.sign(self.key, hashes.SHA384())
        return [
            self.cert.public_bytes(serialization.Encoding.DER),
            leaf.public_bytes(serialization.Encoding.DER),
        ]


@pytest.fixture(scope="module")
def ca() -> TestCa:
    return TestCa()


async def connect(
    dev: Device, version: int = 0x13, flags: int = FLAGS, **config: Any
) -> tuple[Responder, Requester]:
    r = Responder(dev)
    req = Requester(
        LoopbackChannel(r),
        RequesterConfig(version=version, flags=flags, base_asym=P384, base_hash=SHA384, **config),
    )
    await req.vca()
    return r, req


def error_of(rsp: bytes) -> tuple[int, int]:
    assert rsp[1] == ResponseCode.ERROR, rsp.hex()
    return rsp[2], rsp[3]


def ders(chain: Any) -> list[bytes]:
    return [c.public_bytes(serialization.Encoding.DER) for c in chain.certs]


def slot0_spki(dev: Device) -> bytes:
    key = dev.identity.key_for(0, P384)
    assert key is not None
    return key.public_key_der


# --- GET_CSR ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0x12, 0x13])
async def test_csr_is_a_signed_pkcs10_of_the_slot0_key(version: int) -> None:
    dev = make_device()
    _r, req = await connect(dev, version)
    res = await get_csr(req)
    assert res.csr.is_signature_valid
    assert res.public_key_der == slot0_spki(dev)
    assert res.csr.signature_hash_algorithm is not None
    assert res.csr.signature_hash_algorithm.name == "sha384"
    # no RequesterInfo: the device's own subject and keyUsage digitalSignature
    assert "key pair 2" in res.csr.subject.rfc4514_string()
    ku = res.csr.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign


async def test_csr_honours_requester_info() -> None:
    dev = make_device()
    _r, req = await connect(dev)
    other = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Provisioner"),
            x509.NameAttribute(NameOID.COMMON_NAME, "nvme0 attestation key"),
        ]
    )
    info = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_attribute(x509.oid.AttributeOID.CHALLENGE_PASSWORD, b"otp-1234")
        .sign(other, hashes.SHA256())
        .tbs_certrequest_bytes
    )
    res = await get_csr(req, requester_info=info)
    # subject and attributes come from RequesterInfo; the key is the device's, not the one
    # inside RequesterInfo
    assert res.csr.subject == subject
    attr = res.csr.attributes.get_attribute_for_oid(x509.oid.AttributeOID.CHALLENGE_PASSWORD)
    assert attr.value == b"otp-1234"
    assert res.public_key_der == slot0_spki(dev)
    assert res.csr.is_signature_valid


async def test_csr_errors() -> None:
    dev = make_device()
    r, req = await connect(dev)
    ch = req.channel
    # RequesterInfo that is not a CertificationRequestInfo
    rsp = (await ch.exchange(hx("13 ED 00 00 0400 0000 30020101"))).message
    assert rsp == hx("13 7F 01 00")
    assert "RequesterInfo" in r.last_error
    # lengths past the end of the request
    rsp = (await ch.exchange(hx("13 ED 00 00 0800 0000 3000"))).message
    assert rsp == hx("13 7F 01 00")
    # 1.3 without a multi-key connection: KeyPairID and CSRCertModel must be 0
    assert (await ch.exchange(hx("13 ED 01 00 0000 0000"))).message == hx("13 7F 01 00")
    assert (await ch.exchange(hx("13 ED 00 01 0000 0000"))).message == hx("13 7F 01 00")
    # a CSRTrackingTag on a device that needs no reset for a CSR
    assert (await ch.exchange(hx("13 ED 00 08 0000 0000"))).message == hx("13 7F 01 00")
    # OpaqueData not in the general opaque data format (OPAQUE_DATA_FMT_1 negotiated)
    rsp = (await ch.exchange(hx("13 ED 00 00 0000 0300 010203"))).message
    assert rsp == hx("13 7F 01 00")


async def test_csr_unsupported_and_version() -> None:
    data = profile_data()
    data["spdm"]["capabilities"].remove("CSR_CAP")
    dev = make_device(spdm=data["spdm"])
    _r, req = await connect(dev)
    # CSR_CAP absent: UnsupportedRequest with the request code as data
    assert (await req.channel.exchange(hx("13 ED 00 00 0000 0000"))).message == hx("13 7F 07 ED")
    _r, req11 = await connect(make_device(), 0x11)
    rsp = (await req11.channel.exchange(hx("11 ED 00 00 0000 0000"))).message
    assert rsp == hx("11 7F 07 ED")  # GET_CSR does not exist in 1.1


# --- SET_CERTIFICATE -------------------------------------------------------------------


async def test_csr_to_ca_to_set_certificate_in_a_session(ca: TestCa) -> None:
    """The provisioning flow: CSR -> CA -> SET_CERTIFICATE (slot 3 in a session), then the
    new chain is served and CHALLENGE on it verifies with the requester's own code."""
    dev = make_device()
    r, req = await connect(dev)
    csr = await get_csr(req)
    certs = ca.issue(csr.csr.public_key(), csr.csr.subject)
    conn = SpdmConnection(dev, get_binding("doe"))
    sreq = Requester(
        ConnectionChannel(conn),
        RequesterConfig(version=0x13, flags=FLAGS, base_asym=P384, base_hash=SHA384),
    )
    await sreq.vca()
    flow = flow_for(sreq)
    await flow.get_digests()
    slot0 = await flow.get_certificate(0)
    s = await open_session(sreq, peer_chain=slot0.chain)
    # slot 3 holds key pair 12: the CSR's key is slot 0's (key pair 2), which may back
    # another slot only with SHAREABLE_CAP -> refused
    with pytest.raises(SpdmErrorReply) as err:
        await set_certificate(sreq, 3, certs, session_id=s.session_id)
    assert err.value.code == ErrorCode.InvalidRequest
    # slot 0 itself: outside the session (slot 0 may be provisioned there, DSP0274 1.2)
    await set_certificate(sreq, 0, certs)
    fresh = flow_for(sreq, trusted_roots=[certs[0]])
    digests = await fresh.get_digests()
    got = await fresh.get_certificate(0)
    assert ders(got) == certs
    assert digests.digests[0] == __import__("hashlib").sha384(spdm_cert_chain(sreq, certs)).digest()
    res = await fresh.challenge(0)
    assert res.slot == 0
    assert dev.identity.key_for(0, P384).origin == "SET_CERTIFICATE"  # type: ignore[union-attr]
    _ = r


async def test_set_certificate_checks(ca: TestCa) -> None:
    dev = make_device()
    r, req = await connect(dev)
    key = dev.identity.key_for(0, P384)
    assert key is not None
    good = ca.issue(key.key.public_key())
    ch = req.channel

    async def send(slot_p1: int, chain: bytes, p2: int = 0) -> bytes:
        return (await ch.exchange(bytes((0x13, 0xEE, slot_p1, p2)) + chain)).message

    # a leaf whose key is none of the device's key pairs: InvalidRequest
    stranger = ca.issue(ec.generate_private_key(ec.SECP384R1()).public_key())
    assert await send(0, spdm_cert_chain(req, stranger)) == hx("13 7F 01 00")
    assert "none of this device's key pairs" in r.last_error
    # RootHash that is not Hash(first certificate)
    chain = bytearray(spdm_cert_chain(req, good))
    chain[4] ^= 1
    assert await send(0, bytes(chain)) == hx("13 7F 01 00")
    # Length past the request
    chain = bytearray(spdm_cert_chain(req, good))
    chain[0:2] = (len(chain) + 1).to_bytes(2, "little")
    assert await send(0, bytes(chain)) == hx("13 7F 01 00")
    # X.509 rules (Unspecified, as libspdm): an expired leaf, a leaf without keyUsage
    old = ca.issue(
        key.key.public_key(),
        start=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=10),
        days=2,
    )
    assert await send(0, spdm_cert_chain(req, old)) == hx("13 7F 05 00")
    assert "not valid now" in r.last_error
    no_ku = ca.issue(key.key.public_key(), key_usage=False)
    assert await send(0, spdm_cert_chain(req, no_ku)) == hx("13 7F 05 00")
    # slot 1 outside a session: UnexpectedRequest (no trusted environment)
    assert await send(1, spdm_cert_chain(req, good)) == hx("13 7F 04 00")
    # SlotID 8
    assert await send(8, spdm_cert_chain(req, good)) == hx("13 7F 01 00")
    # 1.3 without multi-key: SetCertModel / KeyPairID must be 0
    assert await send(0x10, spdm_cert_chain(req, good)) == hx("13 7F 01 00")
    assert await send(0, spdm_cert_chain(req, good), 2) == hx("13 7F 01 00")
    # Erase with a SetCertModel
    assert await send(0x90, b"") == hx("13 7F 01 00")
    # nothing of that changed the slot
    assert dev.identity.key_for(0, P384) is key
    assert (await send(0, spdm_cert_chain(req, good))) == hx("13 6E 00 00")


async def test_erase_and_reprovision(ca: TestCa) -> None:
    dev = make_device()
    _r, req = await connect(dev)
    key = dev.identity.key_for(0, P384)
    assert key is not None
    await erase_certificate(req, 0)
    assert dev.identity.key_for(0, P384) is None
    flow = flow_for(req)
    digests = await flow.get_digests()
    assert not digests.provisioned_mask & 1  # slot 0 is empty for P-384 now
    await set_certificate(req, 0, ca.issue(key.key.public_key()))
    assert (await flow_for(req).get_digests()).provisioned_mask & 1


async def test_set_certificate_needs_set_cert_cap() -> None:
    data = profile_data()
    data["spdm"]["capabilities"].remove("SET_CERT_CAP")
    _r, req = await connect(make_device(spdm=data["spdm"]))
    assert (await req.channel.exchange(hx("13 EE 00 00"))).message == hx("13 7F 07 EE")


# --- key pairs ----------------------------------------------------------------------------


async def test_key_pair_info_byte_exact() -> None:
    dev = make_device()
    _r, req = await connect(dev)
    spare = await get_key_pair_info(req, 1)
    assert spare.total_key_pairs == 12
    # capabilities 0x3F, usages 0x000F, every asym but SM2 (0x1BF), current ECC384,
    # AlgorithmIdentifier of P-384, no slot
    assert spare.raw == hx(
        "13 7C 00 00 0C 01 3F00 0F00 0F00 BF010000 10000000 1200 00"
        "3010 0607 2A8648CE3D0201 0605 2B81040022"
    )
    slot0 = await get_key_pair_info(req, 2)
    assert (slot0.capabilities, slot0.assoc_cert_slot_mask) == (0, 0x01)
    assert slot0.current_asym_algo == 0x10
    ch = req.channel
    assert (await ch.exchange(hx("13 FC 00 00 00"))).message == hx("13 7F 01 00")  # ID 0
    assert (await ch.exchange(hx("13 FC 00 00 0D"))).message == hx("13 7F 01 00")  # > total
    assert (await ch.exchange(hx("13 FC 00 00"))).message == hx("13 7F 01 00")  # short
    _r, req12 = await connect(make_device(), 0x12)
    assert (await req12.channel.exchange(hx("12 FC 00 00 01"))).message == hx("12 7F 07 FC")


async def test_set_key_pair_info_flows_and_errors(ca: TestCa) -> None:
    dev = make_device()
    r, req = await connect(dev)
    ch = req.channel
    # libspdm's requester flow: change (no association), erase
    await set_key_pair_info(req, 0, 1)
    await set_key_pair_info(req, 1, 1)
    info = await get_key_pair_info(req, 1)
    assert (info.current_asym_algo, info.current_key_usage, info.public_key_info) == (0, 0, b"")
    # GET_CSR needs a key: none after the erase (multi-key would name it; here we test the
    # device directly)
    # generate a P-256 key for KEY_EX + CHALLENGE, associate slot 4 (supported? no: 0..3)
    assert (await ch.exchange(hx("13 FD 02 00 01 00 0300 08000000 10"))).message == hx(
        "13 7F 01 00"
    )  # slot 4 does not exist on this device
    await set_key_pair_info(req, 2, 1, key_usage=0x3, asym_algo=0x08)
    info = await get_key_pair_info(req, 1)
    assert (info.current_asym_algo, info.current_key_usage) == (0x08, 0x03)
    assert info.public_key_info == hx("3013 0607 2A8648CE3D0201 0608 2A8648CE3D030107")
    # errors, libspdm order
    assert (await ch.exchange(hx("13 FD 00 00 00 00 0000 00000000 00"))).message == hx(
        "13 7F 01 00"
    )  # KeyPairID 0
    assert (await ch.exchange(hx("13 FD 02 00 02 00 0000 00000000 00"))).message == hx(
        "13 7F 01 00"
    )  # generate a fixed key pair: no GEN_KEY_CAP
    assert (await ch.exchange(hx("13 FD 00 00 02 00 0100 00000000 00"))).message == hx(
        "13 7F 01 00"
    )  # a key usage on a key pair without KEY_USAGE_CAP
    assert (await ch.exchange(hx("13 FD 00 00 01 00 0000 18000000 00"))).message == hx(
        "13 7F 01 00"
    )  # two algorithms
    assert (await ch.exchange(hx("13 FD 00 00 01 00 0040 00000000 00"))).message == hx(
        "13 7F 01 00"
    )  # a usage outside KeyUsageCapabilities
    assert (await ch.exchange(hx("13 FD 03 00 01 00 0000 00000000 00"))).message == hx(
        "13 7F 01 00"
    )  # operation 3
    # erase a key pair that backs a slot: OperationFailed
    await set_key_pair_info(req, 0, 1, assoc_slots=0x02)
    assert (await ch.exchange(hx("13 FD 01 00 01"))).message == hx("13 7F 44 00")
    assert (await ch.exchange(hx("13 FD 00 00 01 00 0000"))).message == hx(
        "13 7F 01 00"
    )  # a change needs every field
    _ = r


async def test_spare_key_pair_provisioned_in_a_multi_key_connection(ca: TestCa) -> None:
    """Multi-key: GET_CSR names key pair 1, SET_CERTIFICATE puts its chain in slot 1 with
    KeyPairID 1, DIGESTS then reports KeyPairID 1 for slot 1 with its key usage."""
    data = profile_data()
    data["spdm"]["capabilities"].append("MULTI_KEY_CAP_NEG")
    dev = make_device(spdm=data["spdm"])
    flags = FLAGS | int(RequesterCap.MULTI_KEY_CAP_NEG)
    _r, req = await connect(dev, flags=flags, multi_key_conn=True)
    assert req.neg.multi_key_rsp
    # KeyPairID 0 in a multi-key connection
    assert (await req.channel.exchange(hx("13 ED 00 01 0000 0000"))).message == hx("13 7F 01 00")
    csr = await get_csr(req, key_pair_id=1, cert_model=1)
    spare = dev.provisioning.key_pair(1)  # type: ignore[union-attr]
    assert spare is not None and csr.public_key_der == spare.public_key_der()
    certs = ca.issue(csr.csr.public_key())
    # a key pair backs slot 1 (key pair 10): the spare is unassociated, so it takes slot 1
    # over for P-384 (the old chain's key pair loses the slot); slot 1 needs a session or
    # a trusted environment: slot 0 here
    await set_certificate(req, 0, certs, key_pair_id=1, cert_model=1)
    digests = await flow_for(req).get_digests()
    assert digests.key_pair_ids[0] == 1 and digests.key_usages[0] == 0x0F
    info = await get_key_pair_info(req, 1)
    assert info.assoc_cert_slot_mask == 0x01
    old = await get_key_pair_info(req, 2)
    assert old.assoc_cert_slot_mask == 0  # slot 0's former P-384 key pair
    # the wrong key pair for this leaf
    chain = spdm_cert_chain(req, certs)
    rsp = (await req.channel.exchange(hx("13 EE 10 03") + chain)).message
    assert rsp == hx("13 7F 01 00")


# --- ResetRequired (CERT_INSTALL_RESET_CAP) -----------------------------------------------


def reset_device(store: Any = None) -> Device:
    data = profile_data()
    data["spdm"]["capabilities"].append("CERT_INSTALL_RESET_CAP")
    return (
        make_device(spdm=data["spdm"])
        if store is None
        else Device.from_profile(make_device(spdm=data["spdm"]).profile, store=store)
    )


async def test_csr_tracking_tags_after_reset() -> None:
    dev = reset_device()
    _r, req = await connect(dev)
    ch = req.channel
    # tag 0: the device needs a reset, hands out tag 1 (ErrorData), then tag 2
    assert (await ch.exchange(hx("13 ED 00 00 0000 0000"))).message == hx("13 7F 0C 01")
    assert (await ch.exchange(hx("13 ED 00 00 0000 0000"))).message == hx("13 7F 0C 02")
    # before the reset, asking with tag 1: still ResetRequired
    assert (await ch.exchange(hx("13 ED 00 08 0000 0000"))).message == hx("13 7F 0C 01")
    # a tag nothing waits under; Overwrite with a tag
    assert (await ch.exchange(hx("13 ED 00 18 0000 0000"))).message == hx("13 7F 01 00")
    assert (await ch.exchange(hx("13 ED 00 88 0000 0000"))).message == hx("13 7F 01 00")
    dev.reset()
    csr = await get_csr(req, tracking_tag=1)
    assert csr.public_key_der == slot0_spki(dev)
    # the tag is free again: asking for it now is an unknown tag
    assert (await ch.exchange(hx("13 ED 00 08 0000 0000"))).message == hx("13 7F 01 00")
    # a different request under a waiting tag (2 waits for an empty RequesterInfo)
    info = hx("3010 020100 3000 3003 0601 00 a000")
    rsp = (await ch.exchange(hx("13 ED 00 10 1000 0000") + info[:16])).message
    assert rsp[1] == ResponseCode.ERROR and rsp[2] == ErrorCode.InvalidRequest
    # fill every tag: Busy
    for _ in range(6):
        await ch.exchange(hx("13 ED 00 00 0000 0000"))
    assert (await ch.exchange(hx("13 ED 00 00 0000 0000"))).message == hx("13 7F 03 00")
    # Overwrite drops them all and starts over at tag 1
    assert (await ch.exchange(hx("13 ED 00 80 0000 0000"))).message == hx("13 7F 0C 01")


async def test_set_certificate_after_reset(ca: TestCa) -> None:
    dev = reset_device()
    _r, req = await connect(dev)
    key = dev.identity.key_for(0, P384)
    assert key is not None
    certs = ca.issue(key.key.public_key())
    rsp = (await req.channel.exchange(hx("13 EE 00 00") + spdm_cert_chain(req, certs))).message
    assert rsp == hx("13 7F 0C 00")
    # until the reset, GET_DIGESTS and GET_CERTIFICATE of slot 0 answer ResetRequired
    assert (await req.channel.exchange(hx("13 81 00 00"))).message == hx("13 7F 0C 00")
    assert (await req.channel.exchange(hx("13 82 00 00 0000 0004"))).message == hx("13 7F 0C 00")
    assert dev.reset()["slots_installed"] == [0]
    got = await flow_for(req).get_certificate(0)
    assert ders(got) == certs


# --- persistence ----------------------------------------------------------------------------


async def test_state_survives_a_new_device(tmp_path: Path, ca: TestCa) -> None:
    store = DirectoryStore(tmp_path / "dev")
    dev = Device.from_profile(make_device().profile, store=store)
    _r, req = await connect(dev)
    key = dev.identity.key_for(0, P384)
    assert key is not None
    certs = ca.issue(key.key.public_key())
    await set_certificate(req, 0, certs)
    await set_key_pair_info(req, 2, 1, asym_algo=0x08, key_usage=0x1)
    spare_pub = dev.provisioning.key_pair(1).public_key_der()  # type: ignore[union-attr]
    doc = json.loads((tmp_path / "dev" / "state.json").read_text())
    assert doc["format"] == 1 and doc["slots"][0]["slot"] == 0
    # a new device of the same profile on the same store: the chain and the new key pair
    again = Device.from_profile(make_device().profile, store=DirectoryStore(tmp_path / "dev"))
    assert again.identity.key_for(0, P384).certs_der == tuple(certs)  # type: ignore[union-attr]
    assert again.provisioning.key_pair(1).public_key_der() == spare_pub  # type: ignore[union-attr]
    # a stored entry that no longer fits (a chain for another key) is skipped, not fatal
    doc["slots"][0]["certs"] = [c.hex() for c in certs]  # not base64: undecodable
    (tmp_path / "dev" / "state.json").write_text(json.dumps(doc))
    third = Device.from_profile(make_device().profile, store=DirectoryStore(tmp_path / "dev"))
    assert third.identity.key_for(0, P384).origin != "SET_CERTIFICATE"  # type: ignore[union-attr]


def test_store_writes_are_atomic_for_readers(tmp_path: Path) -> None:
    """A reader polling state.json while the store rewrites it never sees half a file."""
    store = DirectoryStore(tmp_path)
    big = {"blob": "x" * 200_000}
    store.save({"n": 0, **big})
    stop = threading.Event()
    bad: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                doc = json.loads((tmp_path / "state.json").read_text())
                if len(doc["blob"]) != 200_000:
                    bad.append("short blob")
            except (json.JSONDecodeError, KeyError) as exc:
                bad.append(repr(exc))

    thread = threading.Thread(target=reader)
    thread.start()
    for n in range(60):
        store.save({"n": n, **big})
    stop.set()
    thread.join()
    assert not bad
    assert json.loads((tmp_path / "state.json").read_text())["n"] == 59


def test_store_lock_is_exclusive(tmp_path: Path) -> None:
    a, b = DirectoryStore(tmp_path), DirectoryStore(tmp_path)
    a.lock()
    with pytest.raises(Exception, match="in use by another emulator"):
        b.lock()
    # flock is per open file description: a second open in this process is refused too
    a.unlock()
    b.lock()
    b.unlock()


@pytest.mark.parametrize(("version", "code"), [(0x12, 0x05), (0x13, 0x44)])
async def test_set_certificate_on_a_store_in_use(
    tmp_path: Path, ca: TestCa, version: int, code: int
) -> None:
    """Another emulator holds the state directory: SET_CERTIFICATE fails, nothing changes
    (1.3 OperationFailed; 1.2 has no such code: Unspecified, as libspdm's NVM failure)."""
    holder = DirectoryStore(tmp_path)
    holder.lock()
    try:
        dev = Device.from_profile(make_device().profile, store=DirectoryStore(tmp_path))
        r, req = await connect(dev, version)
        key = dev.identity.key_for(0, P384)
        assert key is not None
        chain = spdm_cert_chain(req, ca.issue(key.key.public_key()))
        rsp = (await req.channel.exchange(bytes((version, 0xEE, 0, 0)) + chain)).message
        assert rsp == bytes((version, 0x7F, code, 0))
        assert "in use by another emulator" in r.last_error
        assert dev.identity.key_for(0, P384) is key  # the old chain and key stay
    finally:
        holder.unlock()


async def test_connections_share_one_store(ca: TestCa) -> None:
    dev = Device.from_profile(make_device().profile, store=MemoryStore())
    _r1, req1 = await connect(dev)
    _r2, req2 = await connect(dev)
    key = dev.identity.key_for(0, P384)
    assert key is not None
    certs = ca.issue(key.key.public_key())
    await set_certificate(req1, 0, certs)
    # the other connection sees the new chain at once
    assert ders(await flow_for(req2).get_certificate(0)) == certs


def test_profile_key_pair_rules() -> None:
    base = """
[device]
name = "kp"
[spdm]
versions = ["1.3"]
capabilities = ["CERT_CAP", "GET_KEY_PAIR_INFO_CAP"]
[algorithms]
base_asym = ["ECDSA_P384"]
base_hash = ["SHA_384"]
[[slots]]
id = 0
chain = "{root}/certs/ecdsa-p384/slot0"
"""
    root = Path(__file__).resolve().parent.parent
    text = base.format(root=root)
    from emulator.errors import ProfileError

    with pytest.raises(ProfileError, match=r"KeyPairIDs must be 1\.\.2"):
        load_profile_text(text + "[[key_pairs]]\nid = 3\ngenerate = 'ecdsa-p256'\n")
    with pytest.raises(ProfileError, match="GEN_KEY"):
        load_profile_text(text + "[[key_pairs]]\nid = 2\n")
    with pytest.raises(ProfileError, match="unknown key pair capability"):
        load_profile_text(text + "[[key_pairs]]\ngenerate = 'ecdsa-p256'\ncapabilities = ['X']\n")
    with pytest.raises(ProfileError, match="SET_KEY_PAIR_INFO_CAP needs GET_KEY_PAIR_INFO_CAP"):
        load_profile_text(text.replace('"GET_KEY_PAIR_INFO_CAP"', '"SET_KEY_PAIR_INFO_CAP"'))
    with pytest.raises(ProfileError, match="csr_needs_reset: needs CERT_INSTALL_RESET_CAP"):
        load_profile_text(
            text.replace('"GET_KEY_PAIR_INFO_CAP"', '"CSR_CAP"')
            + "[provisioning]\ncsr_needs_reset = true\n"
        )
    # SPDM 1.4 key pair info (PQC fields) and provisioning of PQC keys are not implemented
    with pytest.raises(ProfileError, match=r"GET_KEY_PAIR_INFO_CAP with SPDM 1\.4"):
        load_profile_text(text.replace('versions = ["1.3"]', 'versions = ["1.3", "1.4"]'))
    with pytest.raises(ProfileError, match=r"algorithms\.pqc_asym: GET_CSR, SET_CERTIFICATE"):
        load_profile_text(
            text.replace('versions = ["1.3"]', 'versions = ["1.4"]')
            .replace('"GET_KEY_PAIR_INFO_CAP"', '"CSR_CAP"')
            .replace('base_hash = ["SHA_384"]', 'base_hash = ["SHA_384"]\npqc_asym = ["ML_DSA_65"]')
        )
    ok = load_profile_text(text + "[[key_pairs]]\ngenerate = 'ecdsa-p256'\n")
    dev = Device.from_profile(ok)
    assert [kp.key_pair_id for kp in dev.provisioning.key_pairs()] == [1, 2]  # type: ignore[union-attr]


async def test_key_exchange_in_a_multi_key_connection() -> None:
    """1.3 MULTI_KEY_CONN_RSP: the KEY_EXCHANGE transcript carries message D (the DIGESTS
    right after VCA) on both sides; a session opens and the requester's TH verifies."""
    data = profile_data()
    data["spdm"]["capabilities"].append("MULTI_KEY_CAP_NEG")
    dev = make_device(spdm=data["spdm"])
    req = Requester(
        ConnectionChannel(SpdmConnection(dev, get_binding("doe"))),
        RequesterConfig(
            version=0x13,
            flags=FLAGS | int(RequesterCap.MULTI_KEY_CAP_NEG),
            base_asym=P384,
            base_hash=SHA384,
            multi_key_conn=True,
        ),
    )
    await req.vca()
    flow = flow_for(req)
    digests = await flow.get_digests()
    assert req.message_d == digests.response
    slot0 = await flow.get_certificate(0)
    s = await open_session(req, peer_chain=slot0.chain)
    assert s.session_id in req.sessions
    # a DIGESTS that does not directly follow VCA is not message D
    await req.vca()
    await flow_for(req).get_certificate(0)
    await flow_for(req).get_digests()
    assert req.message_d == b""
