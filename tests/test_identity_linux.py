"""The Linux PCI CMA requester mode: accepts the default device, rejects what the kernel
rejects with the kernel's own log text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from emulator.codec.constants import ResponseCode
from emulator.device.model import Device
from emulator.errors import RequesterError
from emulator.requester import LoopbackChannel
from emulator.requester.linux_cma import authenticate_linux_cma
from emulator.responder import Responder
from emulator.transport.base import TransportMessage
from emulator.x509.files import write_chain
from emulator.x509.generate import generate_chain
from emulator.x509.model import OID_PCI_SIG_CMA
from tests.helpers import make_device

ROOT = Path(__file__).resolve().parent.parent
CERTS = ROOT / "certs"
SAN = "Vendor=1b36:Device=0010:CC=010802:REV=02:SSVID=1af4:SSID=1100"


@pytest.fixture(scope="module")
def device() -> Device:
    return make_device()


def root_of(asym_dir: str) -> bytes:
    return (CERTS / asym_dir / "slot0" / "root.der").read_bytes()


@pytest.mark.parametrize("version", [0x10, 0x11, 0x12, 0x13])
async def test_accepts_default_device(device: Device, version: int) -> None:
    report = await authenticate_linux_cma(
        LoopbackChannel(Responder(device)), [root_of("ecdsa-p384")], SAN, max_version=version
    )
    assert report.ok and report.slot == 0 and report.version == version
    assert report.base_asym == 0x80  # ECDSA_P384: the kernel offers no RSAPSS/EdDSA
    assert report.provisioned_slots == 0x0F
    assert report.log[-1] == "Authenticated with certificate slot 0"


async def test_walks_slots_to_a_trusted_root(device: Device) -> None:
    """Only slot 2's root is trusted: slots 0 and 1 fail, slot 2 authenticates."""
    root2 = (CERTS / "ecdsa-p384" / "slot2" / "root.der").read_bytes()
    report = await authenticate_linux_cma(LoopbackChannel(Responder(device)), [root2], SAN)
    assert report.slot == 2
    assert report.log[0].startswith("Root certificate of slot 0 not found in .cma keyring")


async def test_untrusted_root(device: Device) -> None:
    with pytest.raises(RequesterError, match=r"Root certificate of slot 0 not found in \.cma"):
        await authenticate_linux_cma(
            LoopbackChannel(Responder(device)), [root_of("ecdsa-p256")], SAN
        )


async def test_wrong_san(device: Device) -> None:
    with pytest.raises(RequesterError, match="slot 0 has invalid Subject Alternative Name"):
        await authenticate_linux_cma(
            LoopbackChannel(Responder(device)), [root_of("ecdsa-p384")], SAN.replace("10", "11")
        )


def profile_for(tmp_path: Path, slot_dir: Path) -> Device:
    path = tmp_path / "cma.toml"
    path.write_text(
        f"""
[device]
name = "cma"
[spdm]
versions = ["1.0", "1.1", "1.2", "1.3"]
capabilities = ["CERT_CAP", "CHAL_CAP"]
[algorithms]
base_asym = ["ECDSA_P256"]
base_hash = ["SHA_256"]
[[slots]]
id = 0
chain = "{slot_dir}"
"""
    )
    return make_device(path)


async def test_rejects_chain_without_san(tmp_path: Path) -> None:
    chain = generate_chain("ecdsa-p256", pci_ids=None)
    slot_dir = write_chain(chain, tmp_path / "chains", 0)
    dev = profile_for(tmp_path, slot_dir)
    with pytest.raises(RequesterError) as err:
        await authenticate_linux_cma(LoopbackChannel(Responder(dev)), [chain.root_der()], SAN)
    assert str(err.value) == "Leaf certificate of slot 0 has no Subject Alternative Name"


def _leaf_with_key_cert_sign(out: Path) -> bytes:
    """root CA -> leaf whose keyUsage has keyCertSign (and digitalSignature, CA false)."""
    now = datetime.now(UTC) - timedelta(days=1)
    later = now + timedelta(days=365)
    root_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test root")])
    leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test leaf")])
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(later)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
        )
        .sign(root_key, hashes.SHA256())
    )
    usage = x509.KeyUsage(True, False, False, False, False, True, False, False, False)
    san = x509.SubjectAlternativeName(
        [x509.OtherName(OID_PCI_SIG_CMA, bytes([0x0C, len(SAN)]) + SAN.encode())]
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(leaf_name)
        .issuer_name(root_name)
        .public_key(leaf_key.public_key())
        .serial_number(2)
        .not_valid_before(now)
        .not_valid_after(later)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(san, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
        )
        .sign(root_key, hashes.SHA256())
    )
    out.mkdir()
    der = serialization.Encoding.DER
    (out / "chain.der").write_bytes(root.public_bytes(der) + leaf.public_bytes(der))
    (out / "leaf.key.pem").write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return root.public_bytes(der)


async def test_rejects_leaf_with_key_cert_sign(tmp_path: Path) -> None:
    root = _leaf_with_key_cert_sign(tmp_path / "slot0")
    dev = profile_for(tmp_path, tmp_path / "slot0")
    with pytest.raises(RequesterError) as err:
        await authenticate_linux_cma(LoopbackChannel(Responder(dev)), [root], SAN)
    offset = len(x509.load_der_x509_certificate(root).public_bytes(serialization.Encoding.DER))
    assert str(err.value) == f"Malformed certificate at slot 0 offset {offset}"


class Truncating:
    """Passes messages through, but drops the last byte of every ``code`` response."""

    def __init__(self, inner: Any, code: int) -> None:
        self.inner = inner
        self.code = code

    async def exchange(self, message: bytes, secured: bool = False) -> TransportMessage:
        reply: TransportMessage = await self.inner.exchange(message, secured)
        if len(reply.message) > 1 and reply.message[1] == self.code:
            return TransportMessage(reply.message[:-1], reply.secured)
        return reply


@pytest.mark.parametrize("version", [0x12, 0x13])
async def test_rejects_short_challenge_auth(device: Device, version: int) -> None:
    channel = Truncating(LoopbackChannel(Responder(device)), ResponseCode.CHALLENGE_AUTH)
    with pytest.raises(RequesterError, match=r"^Truncated challenge_auth response$"):
        await authenticate_linux_cma(channel, [root_of("ecdsa-p384")], SAN, max_version=version)


async def test_rejects_short_certificate(device: Device) -> None:
    channel = Truncating(LoopbackChannel(Responder(device)), ResponseCode.CERTIFICATE)
    with pytest.raises(RequesterError, match=r"^Truncated certificate response$"):
        await authenticate_linux_cma(channel, [root_of("ecdsa-p384")], SAN)


async def test_rejects_device_without_chal_cap(tmp_path: Path) -> None:
    path = tmp_path / "nochal.toml"
    path.write_text(
        f"""
[device]
name = "nochal"
[spdm]
versions = ["1.2"]
capabilities = ["CERT_CAP"]
[algorithms]
base_asym = ["ECDSA_P384"]
base_hash = ["SHA_384"]
[[slots]]
id = 0
chain = "{CERTS / "ecdsa-p384" / "slot0"}"
"""
    )
    dev = make_device(path)
    with pytest.raises(RequesterError, match="CERT_CAP/CHAL_CAP"):
        await authenticate_linux_cma(LoopbackChannel(Responder(dev)), [root_of("ecdsa-p384")], SAN)
