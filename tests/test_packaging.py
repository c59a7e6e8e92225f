"""Packaging: the wheel carries the shipped profiles and certificate chains, and
``profiles list`` says so when a shipped profile does not load.

The full check of an installed wheel (fresh venv, serve, probe, the pytest fixture in a
scratch project) is ``scripts/check-wheel.sh``, run by ``.ci/run``; here the wheel is built
from a copy of the sources (pip fetches the build backend from PyPI or its cache) and its
contents compared with the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from emulator.data import shipped_dir

ROOT = Path(__file__).resolve().parent.parent


def tracked(directory: str) -> list[str]:
    """The files git tracks under a top-level directory (what a clone has)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", directory], cwd=ROOT, capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        pytest.skip("git is not installed")
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return [line for line in out.stdout.splitlines() if line]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("emulator", "profiles", "certs"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--wheel-dir",
            str(dist),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (path,) = dist.glob("spdm_emulator-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_carries_every_profile_and_chain(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for directory in ("profiles", "certs"):
        files = tracked(directory)
        assert files
        for f in files:
            assert f"emulator/data/{f}" in names, f
    assert "emulator/data/__init__.py" in names and "emulator/py.typed" in names
    # nothing outside the package (no data-files, no top-level directories)
    assert {n.split("/")[0] for n in names} == {"emulator", "spdm_emulator-0.1.0.dist-info"}


def test_installed_wheel_finds_its_data(wheel: zipfile.ZipFile, tmp_path: Path) -> None:
    """The wheel unpacked somewhere else (as pip installs it): profiles load from the
    package data, chains included, with the checkout nowhere on sys.path."""
    site = tmp_path / "site"
    wheel.extractall(site)
    code = (
        "from emulator.data import shipped_dir; from emulator.profiles import list_profiles;"
        "print(shipped_dir('profiles')); print(shipped_dir('certs'));"
        "[print(n, ok) for n, _d, ok in list_profiles()]"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["PYTHONPATH"] = str(site)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == str(site / "emulator" / "data" / "profiles")
    assert lines[1] == str(site / "emulator" / "data" / "certs")
    assert sorted(lines[2:]) == sorted(f"{Path(p).stem} True" for p in tracked("profiles"))


def test_a_checkout_uses_the_top_level_directories() -> None:
    assert shipped_dir("profiles") == ROOT / "profiles"
    assert shipped_dir("certs") == ROOT / "certs"


def test_profiles_list_fails_on_an_invalid_profile(tmp_path: Path) -> None:
    good = (ROOT / "profiles" / "nvme-ssd.toml").read_text()
    (tmp_path / "good.toml").write_text(good.replace("../certs/", f"{ROOT / 'certs'}/"))
    (tmp_path / "bad.toml").write_text(good)  # ../certs/... does not exist beside it
    env = dict(os.environ, PYTHONPATH=str(ROOT), SPDM_EMULATOR_PROFILES=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-m", "emulator", "profiles", "list"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("bad ") and "INVALID: " in lines[0] and "slots[0].chain" in lines[0]
    assert lines[1].startswith("good ") and "INVALID" not in lines[1]
    (tmp_path / "bad.toml").unlink()
    again = subprocess.run(
        [sys.executable, "-m", "emulator", "profiles", "list"], env=env, capture_output=True
    )
    assert again.returncode == 0


def readme_command(title: str) -> str:
    """The one-line command of the README's Quick start block under ``**title**``."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index(f"**{title}**") :]
    start = block.index("```sh\n") + len("```sh\n")
    return block[start : block.index("\n```", start)]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    command = readme_command("Install and run the tests")
    assert "\n" not in command
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert command in lines
    # the venv the set-up script makes, not the system Python (PEP 668 on Debian 12/13)
    assert command.startswith("bash scripts/install-system-deps.sh && bash scripts/install.sh")
    assert readme_command("Install and run the emulator") == (
        "bash scripts/install.sh && .venv/bin/spdm-emulator"
    )


def test_install_script_installs_python_venv_and_uses_a_venv() -> None:
    script = (ROOT / "scripts" / "install.sh").read_text()
    assert "apt-get install -y -qq --no-install-recommends python3 python3-venv" in script
    assert "python3 -m venv .venv" in script
    deps = (ROOT / "scripts" / "install-system-deps.sh").read_text()
    assert "need+=(qemu-utils)" in deps and "need+=(mosquitto-clients)" in deps
