"""Shared test helpers: the one device factory.

``make_device()`` is a fresh :class:`~emulator.device.model.Device` of the default profile;
``make_device("multi-slot")`` of another shipped profile; ``make_device(path)`` of a profile
file; ``make_device(profile)`` of a loaded :class:`~emulator.profiles.Profile`; and
``make_device(spdm={...}, sessions=None)`` of the default profile with top-level TOML
sections replaced (``None`` removes one).  Shipped profiles are loaded once per test run:
loading their certificate chains takes a while, and each Device copies what it changes.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from emulator.device.model import Device
from emulator.profiles import PROFILES_DIR, Profile, load_profile, profile_from_dict

__all__ = ["make_device", "profile_data", "shipped_profile"]

_SHIPPED: dict[str, Profile] = {}


def shipped_profile(name: str = "default") -> Profile:
    """A shipped profile, loaded on first use and shared afterwards (do not change it)."""
    if name not in _SHIPPED:
        _SHIPPED[name] = load_profile(name)
    return _SHIPPED[name]


def profile_data(name: str = "default") -> dict[str, Any]:
    """A shipped profile's TOML as a new dict (for overrides built from its sections)."""
    return tomllib.loads((PROFILES_DIR / f"{name}.toml").read_text())


def _with_overrides(name: str, overrides: dict[str, Any]) -> Profile:
    data = profile_data(name)
    for key, value in overrides.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    profile = profile_from_dict(data, "test-profile")
    profile._base_dir = PROFILES_DIR
    for m in profile.measurements:
        m.load_file(PROFILES_DIR)
    return profile


def make_device(profile: str | Path | Profile = "default", **overrides: Any) -> Device:
    """A fresh Device: of a shipped profile's name, a profile file or a loaded Profile;
    with *overrides*, of the shipped profile with those top-level sections replaced."""
    if overrides:
        if not isinstance(profile, str):
            raise TypeError("overrides apply to a shipped profile's name only")
        return Device.from_profile(_with_overrides(profile, overrides))
    if isinstance(profile, Profile):
        return Device.from_profile(profile)
    if isinstance(profile, Path):
        return Device.from_profile(load_profile(profile))
    return Device.from_profile(shipped_profile(profile))


#: what the shipped default profile leaves out so that libspdm's default requester flow
#: passes (it installs its own sample chain): the provisioning tests add them back
PROVISIONING_CAPS = ("SET_CERT_CAP", "CSR_CAP", "SET_KEY_PAIR_INFO_CAP")


def provisioning_data() -> dict[str, Any]:
    """The default profile's TOML with the provisioning capabilities."""
    data = profile_data()
    caps = data["spdm"]["capabilities"]
    caps += [c for c in PROVISIONING_CAPS if c not in caps]
    return data


def provisioning_device(**overrides: Any) -> Device:
    """The default device with the provisioning capabilities (sections replaced as
    :func:`make_device` does)."""
    return make_device(**{"spdm": provisioning_data()["spdm"], **overrides})


def provisioning_profile_file(directory: Path) -> Path:
    """A profile file in ``directory``: the default profile with the provisioning
    capabilities, its chain paths made absolute (for a ``serve`` subprocess)."""
    text = (PROFILES_DIR / "default.toml").read_text()
    text = text.replace('"../certs/', f'"{PROFILES_DIR.parent / "certs"}/')
    caps = ", ".join(f'"{c}"' for c in PROVISIONING_CAPS)
    text = text.replace('"GET_KEY_PAIR_INFO_CAP"]', f'"GET_KEY_PAIR_INFO_CAP", {caps}]', 1)
    path = directory / "default-provisioning.toml"
    path.write_text(text)
    return path
