"""Certificate chains (emulator/x509/) and the committed test chains under certs/.

Expected DER fragments below are written out by hand from X.509 (RFC 5280), DSP0274 1.3
(SPDM OIDs under 1.3.6.1.4.1.412.274) and PCIe r6.1 sec 6.31.3 (otherName 2.23.147), and
checked with independent code paths: ``openssl verify`` and the ``cryptography`` objects
directly, never with the module's own verify helper.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import struct
import subprocess
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa

from emulator.cli import add_certs_subparser, run_certs
from emulator.errors import EmulatorError
from emulator.x509.chain import CertError, parse_spdm_cert_chain, spdm_cert_chain, split_der_chain
from emulator.x509.files import load_chain, write_chain
from emulator.x509.generate import generate_chain
from emulator.x509.model import ASYM_NAMES, QEMU_NVME_PCI_IDS, PciIds, base_asym_algo

REPO = Path(__file__).resolve().parent.parent
CERTS = REPO / "certs"
OPENSSL = shutil.which("openssl")

# --- hand-written DER ----------------------------------------------------------------

DMTF_SPDM = bytes.fromhex("2b0601040183 1c 8212")  # 1.3.6.1.4.1.412.274 (OID content)
# Extension { extnID 2.5.29.19, critical TRUE, OCTET STRING { SEQUENCE {} } }
LEAF_BASIC_CONSTRAINTS = bytes.fromhex("300c 0603551d13 0101ff 0402 3000")
# Extension { 2.5.29.15, critical, BIT STRING 7 unused bits, 0x80 = digitalSignature }
LEAF_KEY_USAGE = bytes.fromhex("300e 0603551d0f 0101ff 0404 03020780")
# keyCertSign (bit 5) | cRLSign (bit 6) = 0x06, one unused bit
CA_KEY_USAGE = bytes.fromhex("300e 0603551d0f 0101ff 0404 03020106")
# same plus digitalSignature (bit 0): 0x86
DEVICE_CA_KEY_USAGE = bytes.fromhex("300e 0603551d0f 0101ff 0404 03020186")


def eku_ext(last_arc: int) -> bytes:
    """extendedKeyUsage, non-critical, SEQUENCE { OID 1.3.6.1.4.1.412.274.<last_arc> }."""
    return bytes.fromhex("3015 0603551d25 040e 300c 060a") + DMTF_SPDM + bytes([last_arc])


def spdm_ext(last_arc: int) -> bytes:
    """SPDM extension 1.3.6.1.4.1.412.274.6, non-critical, value
    SEQUENCE { SEQUENCE { OID 1.3.6.1.4.1.412.274.<last_arc> } }."""
    return (
        bytes.fromhex("301e 060a")
        + DMTF_SPDM
        + b"\x06"
        + bytes.fromhex("0410 300e 300c 060a")
        + DMTF_SPDM
        + bytes([last_arc])
    )


QEMU_SAN_TEXT = b"Vendor=1b36:Device=0010:CC=010802:REV=02:SSVID=1af4:SSID=1100"
# subjectAltName { otherName [0] { type-id 2.23.147, [0] EXPLICIT UTF8String (61 bytes) } }
QEMU_SAN_EXT = bytes.fromhex("3051 0603551d11 044a 3048 a046 0603678113 a03f 0c3d") + QEMU_SAN_TEXT

SLOT_DIRS = sorted(p for p in CERTS.glob("*/slot*") if p.is_dir()) + sorted(
    p for p in CERTS.glob("requester/*/slot*") if p.is_dir()
)
SLOT_IDS = [str(p.relative_to(CERTS)) for p in SLOT_DIRS]


def load(path: Path) -> x509.Certificate:
    return x509.load_der_x509_certificate(path.read_bytes())


def slot_cert_files(slot_dir: Path) -> list[Path]:
    names = ["root", "intermediate"]
    if (slot_dir / "device_ca.der").exists():
        names.append("device_ca")
    return [slot_dir / f"{n}.der" for n in [*names, "leaf"]]


def openssl_verify(slot_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    untrusted = tmp_path / "untrusted.pem"
    parts = [slot_dir / "intermediate.pem"]
    if (slot_dir / "device_ca.pem").exists():
        parts.append(slot_dir / "device_ca.pem")
    untrusted.write_bytes(b"".join(p.read_bytes() for p in parts))
    return subprocess.run(
        [
            OPENSSL,
            "verify",
            "-x509_strict",
            "-CAfile",
            str(slot_dir / "root.pem"),
            "-untrusted",
            str(untrusted),
            str(slot_dir / "leaf.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def sign_and_verify(key: object, pub: object) -> None:
    """Sign with the private key and verify with the certificate's public key."""
    msg = b"spdm-emulator test message"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        assert isinstance(pub, ec.EllipticCurvePublicKey)
        pub.verify(key.sign(msg, ec.ECDSA(hashes.SHA256())), msg, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, rsa.RSAPrivateKey):
        assert isinstance(pub, rsa.RSAPublicKey)
        pss = padding.PSS(padding.MGF1(hashes.SHA256()), 32)
        pub.verify(key.sign(msg, pss, hashes.SHA256()), msg, pss, hashes.SHA256())
        pub.verify(
            key.sign(msg, padding.PKCS1v15(), hashes.SHA256()),
            msg,
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        assert isinstance(pub, ed25519.Ed25519PublicKey)
        pub.verify(key.sign(msg), msg)
    elif isinstance(key, ed448.Ed448PrivateKey):
        assert isinstance(pub, ed448.Ed448PublicKey)
        pub.verify(key.sign(msg), msg)
    else:
        pytest.fail(f"unexpected key type {type(key).__name__}")


# --- committed chains ----------------------------------------------------------------


def test_committed_set_is_complete() -> None:
    expected = {f"{a}/slot0" for a in ASYM_NAMES} | {
        "ecdsa-p384/slot1",
        "ecdsa-p384/slot2",
        "ecdsa-p384/slot3",
        "ecdsa-p384-alias/slot0",
        "requester/ecdsa-p384/slot0",
    }
    assert set(SLOT_IDS) == expected
    readme = (CERTS / "README.md").read_text()
    assert "TEST KEYS" in readme
    assert 'keyctl padd asymmetric "" %:.cma < certs/ecdsa-p384/slot0/root.der' in readme


@pytest.mark.skipif(OPENSSL is None, reason="openssl command not installed")
@pytest.mark.parametrize("slot_dir", SLOT_DIRS, ids=SLOT_IDS)
def test_committed_chain_openssl_verify(slot_dir: Path, tmp_path: Path) -> None:
    result = openssl_verify(slot_dir, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": OK")


@pytest.mark.parametrize("slot_dir", SLOT_DIRS, ids=SLOT_IDS)
def test_committed_chain_structure(slot_dir: Path) -> None:
    info = json.loads((slot_dir / "info.json").read_text())
    files = slot_cert_files(slot_dir)
    ders = [f.read_bytes() for f in files]
    certs = [x509.load_der_x509_certificate(d) for d in ders]
    assert (slot_dir / "chain.der").read_bytes() == b"".join(ders)
    pem_chain = x509.load_pem_x509_certificates((slot_dir / "chain.pem").read_bytes())
    assert [c.public_bytes(serialization.Encoding.DER) for c in pem_chain] == ders
    assert len(certs) == (4 if info["model"] == "alias" else 3)

    # links: root self-issued and self-signed, each cert issued by its predecessor
    root = certs[0]
    assert root.issuer == root.subject
    root.verify_directly_issued_by(root)
    for parent, child in pairwise(certs):
        assert child.issuer == parent.subject
        child.verify_directly_issued_by(parent)
    # libspdm LIBSPDM_MAX_NAME_SIZE: the root DN must fit in 100 bytes
    assert len(root.subject.public_bytes()) <= 100

    # CA:TRUE critical on all but the leaf; SKI everywhere; AKI keyid == issuer SKI
    # (the Linux keyring finds the root by it)
    for i, cert in enumerate(certs):
        assert cert.version == x509.Version.v3
        assert cert.serial_number > 0
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical
        assert bc.value.ca is (i < len(certs) - 1)
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        issuer = certs[i - 1] if i else cert
        issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert aki.key_identifier == issuer_ski.digest
        assert ski.digest == x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest

    # validity: 2025-01-01 .. 2049-12-31 23:59:59, both as UTCTime (tag 0x17)
    for cert, der in zip(certs, ders, strict=True):
        assert cert.not_valid_before_utc == datetime(2025, 1, 1, tzinfo=UTC)
        assert cert.not_valid_after_utc == datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC)
        assert b"\x17\x0d250101000000Z\x17\x0d491231235959Z" in der

    # the leaf key matches the leaf certificate
    key = serialization.load_pem_private_key((slot_dir / "leaf.key.pem").read_bytes(), None)
    sign_and_verify(key, certs[-1].public_key())
    assert info["asym"] == slot_dir.parent.name.removesuffix("-alias")


EXPECTED_KEYS = {
    "ecdsa-p256": ("secp256r1", hashes.SHA256),
    "ecdsa-p384": ("secp384r1", hashes.SHA384),
    "ecdsa-p521": ("secp521r1", hashes.SHA512),
    "rsa-2048": (2048, hashes.SHA256),
    "rsa-3072": (3072, hashes.SHA384),
    "rsa-4096": (4096, hashes.SHA512),
    "ed25519": ("ed25519", None),
    "ed448": ("ed448", None),
}


@pytest.mark.parametrize("asym", ASYM_NAMES)
def test_committed_key_types_and_signature_hashes(asym: str) -> None:
    want_key, want_hash = EXPECTED_KEYS[asym]
    for f in slot_cert_files(CERTS / asym / "slot0"):
        cert = load(f)
        pub = cert.public_key()
        if isinstance(want_key, int):
            assert isinstance(pub, rsa.RSAPublicKey) and pub.key_size == want_key
            assert isinstance(cert.signature_algorithm_parameters, padding.PKCS1v15)
        elif want_key == "ed25519":
            assert isinstance(pub, ed25519.Ed25519PublicKey)
        elif want_key == "ed448":
            assert isinstance(pub, ed448.Ed448PublicKey)
        else:
            assert isinstance(pub, ec.EllipticCurvePublicKey) and pub.curve.name == want_key
        if want_hash is None:
            assert cert.signature_hash_algorithm is None
        else:
            assert isinstance(cert.signature_hash_algorithm, want_hash)


@pytest.mark.parametrize("slot_dir", SLOT_DIRS, ids=SLOT_IDS)
def test_committed_extension_bytes(slot_dir: Path) -> None:
    info = json.loads((slot_dir / "info.json").read_text())
    files = slot_cert_files(slot_dir)
    ders = [f.read_bytes() for f in files]
    leaf = ders[-1]
    requester = info["role"] == "requester"
    alias = info["model"] == "alias"

    # leaf: basicConstraints exactly 30 00, once; keyUsage digitalSignature only
    assert LEAF_BASIC_CONSTRAINTS in leaf
    assert leaf.count(bytes.fromhex("0603551d13")) == 1
    assert LEAF_KEY_USAGE in leaf
    ku = load(files[-1]).extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign and not ku.crl_sign
    # EKU: responder-auth (.3) or requester-auth (.4), never both
    assert eku_ext(4 if requester else 3) in leaf
    assert eku_ext(3 if requester else 4) not in leaf
    # SPDM extension: hardware identity in a DeviceCert leaf; an alias leaf is mutable
    if alias:
        assert spdm_ext(5) in leaf and spdm_ext(2) not in leaf
        assert spdm_ext(2) in ders[2]
        assert DEVICE_CA_KEY_USAGE in ders[2]
    else:
        assert spdm_ext(2) in leaf
    spdm = load(files[-1]).extensions.get_extension_for_oid(
        x509.ObjectIdentifier("1.3.6.1.4.1.412.274.6")
    )
    assert not spdm.critical
    # CAs: keyCertSign|cRLSign, critical
    for der in ders[:2]:
        assert CA_KEY_USAGE in der
        assert eku_ext(3) not in der
    # SAN: the QEMU NVMe identity on responder leaves, nothing on requester leaves
    if requester:
        assert bytes.fromhex("0603551d11") not in leaf
        assert info["pci_ids"] is None
    else:
        assert QEMU_SAN_EXT in leaf
        assert info["subject_alt_name"] == QEMU_SAN_TEXT.decode()
    for der in ders[:-1]:
        assert bytes.fromhex("0603551d11") not in der


def test_committed_chains_load() -> None:
    for slot_dir in SLOT_DIRS:
        chain = load_chain(slot_dir)
        assert chain.der_chain() == (slot_dir / "chain.der").read_bytes()
        assert chain.root_der() == (slot_dir / "root.der").read_bytes()
    alias = load_chain(CERTS / "ecdsa-p384-alias" / "slot0")
    assert alias.model == "alias" and len(alias.certs) == 4
    req = load_chain(CERTS / "requester" / "ecdsa-p384" / "slot0")
    assert req.role == "requester" and req.pci_ids is None
    p384 = load_chain(CERTS / "ecdsa-p384" / "slot0")
    assert p384.pci_ids == QEMU_NVME_PCI_IDS
    assert p384.base_asym_algo() == base_asym_algo("ecdsa-p384")


def test_committed_slots_are_independent() -> None:
    roots = [(CERTS / "ecdsa-p384" / f"slot{n}" / "root.der").read_bytes() for n in range(4)]
    assert len(set(roots)) == 4
    subjects = {load(CERTS / "ecdsa-p384" / f"slot{n}" / "root.der").subject for n in range(4)}
    assert len(subjects) == 4


# --- SPDM certificate chain format (DSP0274 "Certificate chain format") --------------


@pytest.mark.parametrize(
    ("hash_name", "hash_fn"),
    [("sha256", hashlib.sha256), ("sha384", hashlib.sha384), ("sha512", hashlib.sha512)],
)
def test_spdm_cert_chain_layout(hash_name: str, hash_fn: type) -> None:
    slot = CERTS / "ecdsa-p384" / "slot0"
    ders = [f.read_bytes() for f in slot_cert_files(slot)]
    body = b"".join(ders)
    digest = hash_fn(ders[0]).digest()
    expected = struct.pack("<HH", 4 + len(digest) + len(body), 0) + digest + body
    got = spdm_cert_chain(hash_name, ders)
    assert got == expected
    assert int.from_bytes(got[:2], "little") == len(got)
    parsed = parse_spdm_cert_chain(hash_name, got)
    assert parsed.certs == ders and parsed.root_hash == digest and parsed.root_hash_ok
    assert load_chain(slot).spdm_cert_chain(hash_name) == expected


def test_spdm_cert_chain_errors() -> None:
    root = (CERTS / "ecdsa-p256" / "slot0" / "root.der").read_bytes()
    with pytest.raises(CertError, match="16-bit Length"):
        spdm_cert_chain("sha256", [root] * 200)
    with pytest.raises(CertError, match="at least one"):
        spdm_cert_chain("sha256", [])
    with pytest.raises(CertError, match="hash"):
        spdm_cert_chain("md5", [root])
    good = spdm_cert_chain("sha256", [root])
    with pytest.raises(CertError, match="Length field"):
        parse_spdm_cert_chain("sha256", good + b"\x00")
    bad_hash = good[:4] + bytes(32) + good[36:]
    assert not parse_spdm_cert_chain("sha256", bad_hash).root_hash_ok


def test_split_der_chain() -> None:
    slot = CERTS / "rsa-4096" / "slot0"
    ders = [f.read_bytes() for f in slot_cert_files(slot)]
    assert split_der_chain(b"".join(ders)) == ders
    assert ders[0][:2] == b"\x30\x82"  # long-form lengths are exercised
    with pytest.raises(CertError, match="offset 0"):
        split_der_chain(b"\x04\x00")
    with pytest.raises(CertError, match="claims"):
        split_der_chain(ders[0][:-1])
    with pytest.raises(CertError, match="0x80"):
        split_der_chain(b"\x30\x80\x00\x00")
    with pytest.raises(CertError, match="empty"):
        split_der_chain(b"")


# --- PCI IDs ----------------------------------------------------------------------------


def test_pci_ids_parse_and_strings() -> None:
    ids = PciIds.parse("1b36:0010:010802:02:1af4:1100")
    assert ids == QEMU_NVME_PCI_IDS
    assert ids.san_string().encode() == QEMU_SAN_TEXT
    assert ids.spec() == "1b36:0010:010802:02:1af4:1100"
    no_ss = PciIds.parse("8086:0B60:10802:0")
    assert no_ss.san_string() == "Vendor=8086:Device=0b60:CC=010802:REV=00"
    dsn = PciIds.parse("1b36:0010:010802:02:1af4:1100:123456789abcdef")
    assert dsn.san_string() == QEMU_SAN_TEXT.decode() + ":0123456789abcdef"
    assert PciIds.parse(dsn.spec()) == dsn


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("1b36:zz10:010802:02", "DEVICE 'zz10'"),
        ("1b36:0010:0108020:02", "CC '0108020'"),
        ("1b36:0010:010802:102", "REV '102'"),
        ("g:0010:010802:02", "VENDOR 'g'"),
        ("1b36:0010:010802:02:1af4:", "SSID ''"),
        ("1b36:0010:010802", "got 3 field"),
        ("1b36:0010:010802:02:1af4", "got 5 field"),
    ],
)
def test_pci_ids_parse_errors(text: str, needle: str) -> None:
    with pytest.raises(CertError) as exc:
        PciIds.parse(text)
    assert needle in str(exc.value)
    assert isinstance(exc.value, EmulatorError)


def test_san_without_subsystem_ids_bytes() -> None:
    chain = generate_chain("ecdsa-p256", pci_ids=PciIds.parse("8086:0b60:010802:00"))
    text = b"Vendor=8086:Device=0b60:CC=010802:REV=00"  # 40 = 0x28 bytes
    expected = bytes.fromhex("303c 0603551d11 0435 3033 a031 0603678113 a02a 0c28") + text
    assert expected in chain.leaf_der()
    san = chain.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert not san.critical
    (other,) = san.value.get_values_for_type(x509.OtherName)
    assert other.type_id.dotted_string == "2.23.147"
    assert other.value == b"\x0c\x28" + text


# --- generation ------------------------------------------------------------------------


def test_generate_device_chain_deterministic_fields() -> None:
    nb = datetime(2025, 1, 1, tzinfo=UTC)
    na = datetime(2060, 12, 31, 23, 59, 59, tzinfo=UTC)
    chain = generate_chain("ecdsa-p256", not_before=nb, not_after=na, serial_start=1, label="slot5")
    assert [c.serial_number for c in chain.certs] == [1, 2, 3]
    assert len(chain.certs) == 3 and len(chain.ca_keys) == 2
    for c in chain.certs:
        assert isinstance(c.signature_hash_algorithm, hashes.SHA256)
        assert c.not_valid_before_utc == nb and c.not_valid_after_utc == na
    # 2060 is past 2049: GeneralizedTime (tag 0x18), before it UTCTime (tag 0x17)
    assert b"\x17\x0d250101000000Z\x18\x0f20601231235959Z" in chain.leaf_der()
    assert chain.leaf.subject.rfc4514_string() == "CN=ecdsa-p256 slot5 Responder,O=spdm-emulator"
    assert chain.root.subject.rfc4514_string() == "CN=ecdsa-p256 slot5 Root CA,O=spdm-emulator"
    for parent, child in pairwise(chain.certs):
        child.verify_directly_issued_by(parent)
    sign_and_verify(chain.leaf_key, chain.leaf.public_key())
    assert chain.der_chain() == b"".join(
        c.public_bytes(serialization.Encoding.DER) for c in chain.certs
    )
    assert chain.root_der() == chain.certs[0].public_bytes(serialization.Encoding.DER)
    # no pci_ids: no subjectAltName
    assert bytes.fromhex("0603551d11") not in chain.leaf_der()


def test_generate_serials_from_injected_rng() -> None:
    chain = generate_chain("ecdsa-p256", rng=lambda n: b"\xff" * n)
    assert [c.serial_number for c in chain.certs] == [(1 << 127) - 1] * 3
    zero = generate_chain("ed25519", rng=lambda n: bytes(n))
    assert [c.serial_number for c in zero.certs] == [1, 1, 1]
    assert all(c.signature_hash_algorithm is None for c in zero.certs)


def test_generate_alias_model() -> None:
    chain = generate_chain("ecdsa-p256", model="alias", pci_ids=QEMU_NVME_PCI_IDS)
    assert len(chain.certs) == 4
    ders = chain.cert_ders()
    cas = [
        c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca for c in chain.certs
    ]
    assert cas == [True, True, True, False]
    assert chain.certs[2].subject.rfc4514_string() == (
        "CN=ecdsa-p256 alias DeviceCert CA,O=spdm-emulator"
    )
    assert DEVICE_CA_KEY_USAGE in ders[2] and spdm_ext(2) in ders[2]
    assert LEAF_BASIC_CONSTRAINTS in ders[3] and LEAF_KEY_USAGE in ders[3]
    assert spdm_ext(5) in ders[3] and spdm_ext(2) not in ders[3]
    assert QEMU_SAN_EXT in ders[3]
    for parent, child in pairwise(chain.certs):
        assert child.issuer == parent.subject
        child.verify_directly_issued_by(parent)


def test_generate_requester_chain() -> None:
    chain = generate_chain("ecdsa-p256", role="requester")
    assert eku_ext(4) in chain.leaf_der() and eku_ext(3) not in chain.leaf_der()
    assert "requester" in chain.root.subject.rfc4514_string()


def test_generate_errors() -> None:
    with pytest.raises(CertError, match="unknown algorithm 'dsa-1024'"):
        generate_chain("dsa-1024")
    with pytest.raises(CertError, match="no separate hash"):
        generate_chain("ed25519", hash_name="sha256")
    with pytest.raises(CertError, match="unknown hash"):
        generate_chain("ecdsa-p256", hash_name="md5")
    with pytest.raises(CertError, match="not after"):
        generate_chain(
            "ecdsa-p256",
            not_before=datetime(2030, 1, 1, tzinfo=UTC),
            not_after=datetime(2029, 1, 1, tzinfo=UTC),
        )
    with pytest.raises(CertError, match="root DN"):
        generate_chain("ecdsa-p256", subject_prefix="x" * 80)


def test_generate_explicit_hash() -> None:
    chain = generate_chain("ecdsa-p256", hash_name="SHA-384")
    assert all(isinstance(c.signature_hash_algorithm, hashes.SHA384) for c in chain.certs)


def test_write_and_load_chain(tmp_path: Path) -> None:
    chain = generate_chain("ecdsa-p256", model="alias", pci_ids=QEMU_NVME_PCI_IDS)
    slot_dir = write_chain(chain, tmp_path, 2)
    assert slot_dir == tmp_path / "slot2"
    assert sorted(p.name for p in slot_dir.iterdir()) == sorted(
        [
            "root.der", "root.pem", "intermediate.der", "intermediate.pem",
            "device_ca.der", "device_ca.pem", "leaf.der", "leaf.pem", "leaf.key.pem",
            "chain.der", "chain.pem", "info.json",
        ]
    )  # fmt: skip
    assert b"BEGIN PRIVATE KEY" in (slot_dir / "leaf.key.pem").read_bytes()  # PKCS#8
    assert (slot_dir / "device_ca.der").read_bytes() == chain.cert_ders()[2]
    info = json.loads((slot_dir / "info.json").read_text())
    assert info["model"] == "alias" and info["slot"] == 2
    assert info["pci_ids"] == "1b36:0010:010802:02:1af4:1100"
    loaded = load_chain(slot_dir)
    assert loaded.der_chain() == chain.der_chain()
    assert loaded.model == "alias" and loaded.pci_ids == QEMU_NVME_PCI_IDS
    # a device-model chain written over it leaves no stale device_ca files behind
    write_chain(generate_chain("ecdsa-p256"), tmp_path, 2)
    assert not (slot_dir / "device_ca.der").exists()
    with pytest.raises(CertError, match="slot"):
        write_chain(chain, tmp_path, 8)


def test_load_chain_detects_mismatched_key(tmp_path: Path) -> None:
    slot = tmp_path / "slot0"
    shutil.copytree(CERTS / "ecdsa-p384" / "slot0", slot)
    shutil.copy(CERTS / "ecdsa-p384" / "slot1" / "leaf.key.pem", slot / "leaf.key.pem")
    with pytest.raises(CertError, match="does not match"):
        load_chain(slot)
    with pytest.raises(CertError, match="cannot read"):
        load_chain(tmp_path / "missing")


# --- CLI --------------------------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="spdm-emulator")
    sub = parser.add_subparsers(dest="command")
    add_certs_subparser(sub)
    return run_certs(parser.parse_args(argv))


DATES = ["--not-before", "2025-01-01", "--not-after", "2030-06-30"]


def test_cli_generate_happy_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert (
        run_cli(
            ["certs", "generate", "--out", str(out), "--asym", "ecdsa-p256", "--slots", "2", *DATES]
        )
        == 0
    )
    for n in (0, 1):
        slot = out / f"slot{n}"
        info = json.loads((slot / "info.json").read_text())
        assert info["asym"] == "ecdsa-p256" and info["slot"] == n
        assert info["subject_alt_name"] == QEMU_SAN_TEXT.decode()  # QEMU NVMe by default
        leaf = load(slot / "leaf.der")
        assert leaf.not_valid_after_utc == datetime(2030, 6, 30, 23, 59, 59, tzinfo=UTC)
        assert QEMU_SAN_EXT in (slot / "leaf.der").read_bytes()
        if OPENSSL is not None:
            result = openssl_verify(slot, tmp_path)
            assert result.returncode == 0, result.stdout + result.stderr
    assert load(out / "slot0" / "root.der").subject != load(out / "slot1" / "root.der").subject
    capsys.readouterr()

    # existing non-empty slot directories are refused without --force
    assert run_cli(["certs", "generate", "--out", str(out), "--asym", "ecdsa-p256"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not empty" in err and "--force" in err
    assert (
        run_cli(
            [
                "certs",
                "generate",
                "--out",
                str(out),
                "--asym",
                "ecdsa-p256",
                "--force",
                "--pci-ids",
                "none",
            ]
        )
        == 0
    )
    assert bytes.fromhex("0603551d11") not in (out / "slot0" / "leaf.der").read_bytes()

    # several algorithms: DIR/<asym>/slot<N>; requester chains; first slot
    multi = tmp_path / "multi"
    argv = ["certs", "generate", "--out", str(multi), "--asym", "ecdsa-p256",
            "--asym", "ed25519", "--requester", "--first-slot", "3"]  # fmt: skip
    assert run_cli(argv) == 0
    assert sorted(p.relative_to(multi).as_posix() for p in multi.glob("*/slot*")) == [
        "ecdsa-p256/slot3",
        "ed25519/slot3",
    ]
    req_leaf = (multi / "ed25519" / "slot3" / "leaf.der").read_bytes()
    assert eku_ext(4) in req_leaf and bytes.fromhex("0603551d11") not in req_leaf

    assert run_cli(["certs", "verify", str(out / "slot0"), str(multi / "ed25519" / "slot3")]) == 0
    assert capsys.readouterr().out.count(": OK") == 2


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--asym", "ecdsa-p999"], "unknown algorithm 'ecdsa-p999'"),
        (["--asym", "ecdsa-p256,rsa-1024"], "unknown algorithm 'rsa-1024'"),
        (["--pci-ids", "1b36:00x0:010802:02"], "DEVICE '00x0'"),
        (["--pci-ids", "1b36:0010"], "got 2 field"),
        (["--slots", "9"], "slots 0..7"),
        (["--not-before", "2025-13-01"], "--not-before: '2025-13-01' is not a date"),
        (["--hash", "md5"], "unknown hash algorithm 'md5'"),
    ],
)
def test_cli_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], needle: str
) -> None:
    out = tmp_path / "out"
    assert run_cli(["certs", "generate", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spdm-emulator certs: error: ")
    assert needle in err
    assert err.count("\n") == 1
    assert not out.exists()


def test_cli_verify_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    slot = tmp_path / "slot0"
    shutil.copytree(CERTS / "ecdsa-p256" / "slot0", slot)
    (slot / "chain.der").write_bytes((slot / "chain.der").read_bytes()[:-5])
    assert run_cli(["certs", "verify", str(slot)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "chain.der" in err
