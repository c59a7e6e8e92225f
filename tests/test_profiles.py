"""Profile loading and validation: every error names the file, the field and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulator.codec.constants import BaseAsymAlgo, ResponderCap, SpdmVersion
from emulator.device.model import Device
from emulator.errors import ProfileError
from emulator.profiles import PROFILES_DIR, load_profile, load_profile_text

BASE = """
[device]
name = "t"
[spdm]
versions = ["1.1", "1.2"]
{caps}
[algorithms]
base_asym = ["ECDSA_P256"]
base_hash = ["SHA_256"]
{algs}
"""


def profile(caps: str = "", algs: str = "", text: str | None = None) -> object:
    return load_profile_text(text or BASE.format(caps=caps, algs=algs), "t.toml")


def err(**kw: str) -> ProfileError:
    with pytest.raises(ProfileError) as info:
        profile(**kw)
    return info.value


def test_every_shipped_profile_loads() -> None:
    paths = sorted(PROFILES_DIR.glob("*.toml"))
    assert any(p.stem == "default" for p in paths)
    for path in paths:
        Device.from_profile(load_profile(path))


def test_default_profile_advertises_everything() -> None:
    dev = Device.load("default")
    assert dev.versions == [SpdmVersion.V10, SpdmVersion.V11, SpdmVersion.V12, SpdmVersion.V13]
    # every implemented signature algorithm is offered
    offered = BaseAsymAlgo(dev.mask("base_asym"))
    assert offered == BaseAsymAlgo(0xDFF)


def test_priority_order_is_kept() -> None:
    p = load_profile_text(
        BASE.format(caps="", algs="").replace('["ECDSA_P256"]', '["ecdsa-p384", "ECDSA_P256"]')
    )
    assert Device.from_profile(p).priorities["base_asym"] == [0x80, 0x10]


@pytest.mark.parametrize(
    ("kw", "field", "problem"),
    [
        (
            dict(
                caps='capabilities = ["MEAS_CAP_NO_SIG", "MEAS_CAP_SIG"]',
                algs='measurement_hash = ["SHA_256"]',
            ),
            "spdm.capabilities",
            "MEAS_CAP=11b",
        ),
        (
            dict(caps='capabilities = ["KEY_EX_CAP", "MAC_CAP"]', algs='aead = ["AES_128_GCM"]'),
            "algorithms.dhe",
            "KEY_EX_CAP needs at least one DHE group",
        ),
        (
            dict(
                caps='capabilities = ["KEY_EX_CAP"]',
                algs='dhe = ["SECP_256_R1"]\naead = ["AES_128_GCM"]',
            ),
            "spdm.capabilities",
            "need ENCRYPT_CAP or MAC_CAP",
        ),
        (dict(caps='capabilities = ["MAC_CAP"]'), "spdm.capabilities", "MAC_CAP needs KEY_EX_CAP"),
        (
            dict(caps='capabilities = ["CERT_CAP", "PUB_KEY_ID_CAP", "CHAL_CAP"]'),
            "spdm.capabilities",
            "mutually exclusive",
        ),
        (dict(caps='capabilities = ["CHAL_CAP"]'), "spdm.capabilities", "need CERT_CAP"),
        (
            dict(caps='capabilities = ["MEAS_CAP_SIG"]'),
            "algorithms.measurement_hash",
            "MEAS_CAP needs a measurement hash",
        ),
        (
            dict(caps='capabilities = ["MEAS_FRESH_CAP"]'),
            "spdm.capabilities",
            "MEAS_FRESH_CAP needs MEAS_CAP",
        ),
        (
            dict(caps='capabilities = ["MEL_CAP"]', algs='mel_spec = ["DMTF"]'),
            "spdm.capabilities",
            "MEL_CAP does not exist in SPDM 1.2",
        ),
        (
            dict(caps='capabilities = ["TELEPORT_CAP"]'),
            "spdm.capabilities",
            "unknown capability 'TELEPORT_CAP'",
        ),
        (dict(caps="ct_exponent = 40"), "spdm.ct_exponent", "less than or equal to 31"),
        (
            dict(caps="data_transfer_size = 41"),
            "spdm.data_transfer_size",
            "greater than or equal to 42",
        ),
        (
            dict(caps="data_transfer_size = 4096\nmax_spdm_msg_size = 8192"),
            "spdm.max_spdm_msg_size",
            "needs CHUNK_CAP",
        ),
        (dict(algs='dhe = ["SECP_256_R2"]'), "algorithms.dhe", "unknown dhe 'SECP_256_R2'"),
        (dict(algs='aead = ["AEAD_SM4_GCM"]'), "algorithms.aead", "not implemented"),
        (dict(algs='colour = "blue"'), "algorithms.colour", "Extra inputs are not permitted"),
    ],
)
def test_validation_errors(kw: dict[str, str], field: str, problem: str) -> None:
    e = err(**kw)
    assert e.source == "t.toml"
    assert e.field == field
    assert problem in e.problem
    assert str(e).startswith(f"t.toml: {field}: ")


def test_bad_version_and_duplicates() -> None:
    text = BASE.format(caps="", algs="").replace('["1.1", "1.2"]', '["1.1", "2.0"]')
    with pytest.raises(ProfileError, match=r"spdm.versions: unknown SPDM version '2.0'"):
        load_profile_text(text, "t.toml")
    text = BASE.format(caps="", algs="").replace('["ECDSA_P256"]', '["ECDSA_P256", "ecdsa_p256"]')
    with pytest.raises(ProfileError, match="listed twice"):
        load_profile_text(text, "t.toml")


def test_toml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile_text("[device\nname=", "x.toml")
    with pytest.raises(ProfileError, match="no such file"):
        load_profile(tmp_path / "absent.toml")
    with pytest.raises(ProfileError, match=r"device: Field required"):
        load_profile_text('[spdm]\nversions = ["1.2"]\n', "x.toml")


def test_capabilities_are_enum_members() -> None:
    p = load_profile_text(BASE.format(caps='capabilities = ["cache-cap", "CHUNK_CAP"]', algs=""))
    assert p.capabilities == ResponderCap.CACHE_CAP | ResponderCap.CHUNK_CAP


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ('[sessions]\nrequester_roots = ["root\\u0000.der"]\n', "sessions.requester_roots[0]"),
        ('[[slots]]\nid = 0\nchain = "slot\\u0000"\n', "slots[0].chain"),
        (
            '[[measurements]]\nindex = 1\ntype = "immutable_rom"\nfile = "rom\\u0000.bin"\n',
            "measurements[0].file",
        ),
        ('[[slots]]\nid = 0\nchain = " "\n', "slots[0].chain"),
    ],
)
def test_file_names_with_nul_bytes_or_empty_are_profile_errors(section: str, field: str) -> None:
    """Found by fuzz/fuzz_profile.py: a NUL byte in a file name reached open() and raised
    ValueError out of Device.from_profile (tests/fuzz_regressions/profile/)."""
    text = BASE.format(caps="", algs="") + section
    with pytest.raises(ProfileError) as info:
        Device.from_profile(load_profile_text(text, "t.toml"))
    assert info.value.field == field
    assert "NUL byte" in info.value.problem or "empty file name" in info.value.problem
