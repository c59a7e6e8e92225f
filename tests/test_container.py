"""The container image, built and run for real with rootful podman (issue 18).

``scripts/container-host.sh`` prepares the host (podman and friends, the engine settings the
host needs, stand-in base images when no registry is reachable); then ``docker/Dockerfile``
is built as it is (``--pull=never --format docker``: the Docker image format keeps the
HEALTHCHECK) and the image is checked from outside, with the project's own requester:

* metadata: non-root user, entry point, health check, shipped profiles; no private key
  outside the marked ``certs/`` (TEST KEYS ONLY);
* ``probe`` (SPDM and Linux CMA modes) and a secured session (KEY_EXCHANGE/FINISH, the
  session decrypted on the test side) against the published port;
* the HEALTHCHECK: healthy while serving, failing when the emulator is not on 2323;
* SIGTERM with a client connected: a clean stop, exit status 0;
* a profile passed in by a read-only mount, a named volume at the home directory keeping
  what the emulator writes there;
* ``docker/compose.yaml`` with podman-compose: the emulator's MQTT telemetry reaches the
  broker inside the compose network, and a command sent there gets its reply.

They run as root with podman (``scripts/install-system-deps.sh`` installs it). Elsewhere
they are skipped with the reason, except in CI (``CI`` set), where a skip would hide a broken
image and is an error. ``python3 -m pytest -m container`` runs only these;
``-m "not container"`` leaves them out.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import itertools
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from emulator.codec.constants import BaseAsymAlgo, BaseHashAlgo, ResponseCode
from emulator.requester import Requester, RequesterConfig
from emulator.requester.identity import flow_for
from emulator.requester.session import open_session
from emulator.requester.transport import SocketClient
from emulator.transport import get_binding
from emulator.x509.chain import split_der_chain
from tests.test_session import FULL_FLAGS, measurements_request

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "localhost/spdm-emulator:test"
CACHE = Path(os.environ.get("SPDM_EMULATOR_CACHE", "/var/cache/spdm-emulator")) / "container"
CERTS_IN_IMAGE = "/usr/local/share/spdm-emulator/certs"
COMPOSE_PROJECT = "spdm-emulator-test"  # not the compose file's name: leave a user's stack alone
PORT = 2323  # the image's and the compose file's platform-socket port
_names = itertools.count(1)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def unusable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"container tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def report(config: pytest.Config, line: str) -> None:
    """A line in the test log even when output is captured (image size, timings)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"[container] {line}")


def run(
    argv: Sequence[str], *, timeout: float = 120, check: bool = True, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )
    if check and proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-4000:]
        pytest.fail(f"{' '.join(argv)} exited {proc.returncode}:\n{tail}", pytrace=False)
    return proc


def podman(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return run(["podman", *args], timeout=timeout, check=check)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def host_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The project's own command line, on the host (this tree's code)."""
    return run([sys.executable, "-m", "emulator", *args], timeout=timeout, check=False, cwd=ROOT)


# --------------------------------------------------------------------- host and image


@pytest.fixture(scope="module")
def engine(request: pytest.FixtureRequest) -> Iterator[None]:
    """Rootful podman ready, the base images there; one container test run at a time."""
    if os.geteuid() != 0:
        unusable("the container tests use rootful podman: run them as root")
    if shutil.which("apt-get") is None and shutil.which("podman") is None:
        unusable("podman is not installed and there is no apt-get to install it")
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".tests.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report(request.config, "waiting for another container test run on this machine")
            fcntl.flock(lock, fcntl.LOCK_EX)
        started = time.monotonic()
        proc = run(["bash", str(ROOT / "scripts" / "container-host.sh")], timeout=1800)
        for line in proc.stdout.splitlines():
            report(request.config, line)
        report(request.config, f"host ready in {time.monotonic() - started:.1f} s")
        info = podman("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False)
        if info.returncode != 0:
            pytest.fail(f"podman info fails after container-host.sh:\n{info.stderr}")
        yield
        # Each build leaves the previous image untagged: drop those, keep the layer cache.
        podman("image", "prune", "--force", check=False)


@pytest.fixture(scope="module")
def image(engine: None, request: pytest.FixtureRequest) -> str:
    """docker/Dockerfile built as it is, from the repository root."""
    started = time.monotonic()
    podman(
        "build",
        "--pull=never",
        "--format",
        "docker",
        "-f",
        str(ROOT / "docker" / "Dockerfile"),
        "-t",
        IMAGE,
        str(ROOT),
        timeout=1200,
    )
    built = time.monotonic() - started
    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip())
    report(request.config, f"image {IMAGE}: {size / 1e6:.0f} MB, built in {built:.1f} s")
    return IMAGE


def image_inspect(image: str) -> dict[str, Any]:
    data = json.loads(podman("image", "inspect", image).stdout)
    assert isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict)
    return data[0]


@dataclass
class Container:
    name: str
    port: int  # the host port published to the container's 2323

    def logs(self) -> str:
        proc = podman("logs", self.name, check=False)
        return proc.stdout + proc.stderr

    def state(self, field_: str) -> str:
        return podman("inspect", "--format", f"{{{{.State.{field_}}}}}", self.name).stdout.strip()

    def wait_serving(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "listening on" in self.logs():
                return
            if self.state("Status") not in ("created", "configured", "running"):
                pytest.fail(f"container {self.name} stopped:\n{self.logs()}", pytrace=False)
            time.sleep(0.2)
        pytest.fail(f"container {self.name} not serving after {timeout} s:\n{self.logs()}")

    def remove(self) -> None:
        podman("rm", "--force", "--time", "5", self.name, check=False)


@pytest.fixture
def start(image: str) -> Iterator[Callable[..., Container]]:
    """Start containers of the image (``podman run`` options, then the command)."""
    started: list[Container] = []

    def _start(*options: str, command: Sequence[str] = ()) -> Container:
        c = Container(f"spdm-test-{os.getpid()}-{next(_names)}", free_port())
        started.append(c)
        podman(
            "run",
            "-d",
            "--name",
            c.name,
            "-p",
            f"127.0.0.1:{c.port}:{PORT}",
            *options,
            image,
            *command,
        )
        c.wait_serving()
        return c

    yield _start
    for c in started:
        c.remove()


@pytest.fixture(scope="module")
def served(image: str) -> Iterator[Container]:
    """One container with the image's default command, shared by the read-only checks."""
    c = Container(f"spdm-test-{os.getpid()}-served", free_port())
    podman("run", "-d", "--name", c.name, "-p", f"127.0.0.1:{c.port}:{PORT}", image)
    try:
        c.wait_serving()
        yield c
    finally:
        c.remove()


# --------------------------------------------------------------------- the image


def test_image_runs_the_console_script_as_a_non_root_user(image: str) -> None:
    inspected = image_inspect(image)
    config = inspected["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["spdm-emulator"]
    assert config["Cmd"] == ["serve", "--host", "0.0.0.0", "--port", str(PORT)]
    assert f"{PORT}/tcp" in config["ExposedPorts"]
    # the Docker format keeps the health check (the OCI format would drop it)
    assert inspected["ManifestType"] == "application/vnd.docker.distribution.manifest.v2+json"
    health = inspected["Healthcheck"]
    assert health["Test"][0] == "CMD" and health["Test"][1:3] == ["spdm-emulator", "probe"]
    assert health["Interval"] == 30 * 10**9 and health["Retries"] == 3
    ids = podman("run", "--rm", "--entrypoint", "id", image).stdout.split()
    assert ids[:2] == ["uid=10001(spdm)", "gid=10001(spdm)"]
    # the shipped profiles came with the wheel and find their chains beside them
    listed = podman("run", "--rm", image, "profiles", "list").stdout
    shipped = sorted(p.stem for p in (ROOT / "profiles").glob("*.toml"))
    assert shipped and all(name in listed for name in shipped), listed
    checked = podman(
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        image,
        "-c",
        "spdm-emulator profiles check /usr/local/share/spdm-emulator/profiles/*.toml",
    )
    assert checked.stdout.count(": ok") == len(shipped), checked.stdout


PEM_PRIVATE_KEY = re.compile(
    rb"-----BEGIN [A-Z ]*PRIVATE KEY-----\r?\n"  # a whole PEM block, not the marker alone
    rb"[A-Za-z0-9+/=\r\n]{40,}-----END [A-Z ]*PRIVATE KEY-----"
)


def committed_key_needles() -> dict[str, list[bytes]]:
    """Per committed test key (certs/**/*.key.pem): byte strings found only in that key."""
    needles: dict[str, list[bytes]] = {}
    for path in sorted((ROOT / "certs").rglob("*.key.pem")):
        text = path.read_bytes()
        body = [ln for ln in text.splitlines() if ln and not ln.startswith(b"-----")]
        der = base64.b64decode(b"".join(body))
        # the middle line of the PEM body and the DER's last 24 bytes: key material
        needles[str(path.relative_to(ROOT))] = [body[len(body) // 2], der[-24:]]
    return needles


def test_image_holds_no_private_key_outside_the_marked_certs(image: str) -> None:
    needles = committed_key_needles()
    assert len(needles) >= 10
    mount = Path(podman("image", "mount", image).stdout.strip())
    try:
        key_files: list[str] = []  # PEM private keys as files (text, not inside a program)
        copies: dict[str, list[str]] = {}  # where the committed test keys are
        for path in mount.rglob("*"):
            if path.is_symlink() or not path.is_file():
                continue
            with path.open("rb") as f:
                if f.read(4) == b"\x7fELF" or path.stat().st_size > 4 << 20:
                    continue  # programs and libraries (gnutls embeds self-test keys)
            data = path.read_bytes()
            where = "/" + str(path.relative_to(mount))
            if PEM_PRIVATE_KEY.search(data):
                key_files.append(where)
            for key, strings in needles.items():
                if any(s in data for s in strings):
                    copies.setdefault(key, []).append(where)
        marked = CERTS_IN_IMAGE + "/"
        assert [p for p in key_files if not p.startswith(marked)] == []
        assert {k: [p for p in v if not p.startswith(marked)] for k, v in copies.items()} == {
            k: [] for k in copies
        }
        # every committed test key is there, under the marked directory only
        assert sorted(copies) == sorted(needles)
        readme = (mount / CERTS_IN_IMAGE.lstrip("/") / "README.md").read_text()
        assert "TEST KEYS ONLY" in readme
    finally:
        podman("image", "unmount", image, check=False)


# --------------------------------------------------------------------- serving


def test_probe_authenticates_the_container(served: Container) -> None:
    root = ROOT / "certs" / "ecdsa-p384" / "slot0" / "root.der"
    proc = host_cli("probe", "--json", "--root", str(root), f"127.0.0.1:{served.port}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is True
    assert result["version"] == "1.3"
    assert result["certificate"]["trusted_root"] is True
    assert result["challenge"] == "signature verified"
    assert result["measurements"]["signed"] is True
    cma = host_cli("probe", "--mode", "linux-cma", "--root", str(root), f"127.0.0.1:{served.port}")
    assert cma.returncode == 0, cma.stdout + cma.stderr
    assert "Authenticated with certificate slot 0" in cma.stdout
    logs = served.logs()
    assert "CHALLENGE -> CHALLENGE_AUTH" in logs and "ERROR" not in logs


async def test_secured_session_with_the_container(served: Container) -> None:
    binding = get_binding("doe")
    cfg = RequesterConfig(
        version=0x13,
        flags=FULL_FLAGS,
        base_asym=int(BaseAsymAlgo.ECDSA_P384),
        base_hash=int(BaseHashAlgo.SHA_384),
    )
    async with SocketClient("127.0.0.1", served.port, binding, timeout=20) as client:
        req = Requester(client, cfg)
        await req.vca()
        flow = flow_for(req)
        await flow.get_digests()
        await flow.get_certificate(0)
        chain = flow.chains[0]
        # the image serves the committed test chain (root first)
        committed = (ROOT / "certs" / "ecdsa-p384" / "slot0" / "chain.der").read_bytes()
        assert [c.public_bytes(Encoding.DER) for c in chain.certs] == split_der_chain(committed)
        s = await open_session(req, peer_chain=chain.chain, binding="doe")
        rsp = await s.send(measurements_request(0x13, 1))
        assert rsp[:2] == bytes((0x13, ResponseCode.MEASUREMENTS))
        await s.key_update(1)
        await s.heartbeat()
        rsp = await s.send(measurements_request(0x13, 0))
        assert rsp[:2] == bytes((0x13, ResponseCode.MEASUREMENTS))
        await s.end_session()
    assert "END_SESSION -> END_SESSION_ACK" in served.logs()


def test_health_check_follows_the_responder(
    served: Container, start: Callable[..., Container]
) -> None:
    ok = podman("healthcheck", "run", served.name, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert served.state("Health.Status") == "healthy"
    # served on another port, the image's health check (which probes 2323) fails
    other = start(command=["serve", "--host", "0.0.0.0", "--port", "2424"])
    bad = podman("healthcheck", "run", other.name, check=False)
    assert bad.returncode == 1 and "unhealthy" in bad.stdout, bad.stdout + bad.stderr
    log = json.loads(podman("inspect", "--format", "{{json .State.Health.Log}}", other.name).stdout)
    assert log and log[-1]["ExitCode"] == 1
    assert f"cannot connect to 127.0.0.1:{PORT}" in log[-1]["Output"]


async def test_sigterm_stops_the_container_cleanly(start: Callable[..., Container]) -> None:
    c = start()
    async with SocketClient("127.0.0.1", c.port, get_binding("doe"), timeout=20) as client:
        req = Requester(client, RequesterConfig())
        await req.vca()  # a client is connected while the container stops
        stopped = await asyncio.to_thread(podman, "stop", "--time", "30", c.name, timeout=60)
        assert stopped.returncode == 0
    assert c.state("ExitCode") == "0", c.logs()  # 137 would mean SIGKILL after the timeout
    logs = c.logs()
    assert "shutting down" in logs and "Traceback" not in logs


LAB_PROFILE = f"""\
[device]
name = "lab-device"
description = "a profile mounted into the container by tests/test_container.py"

[spdm]
versions = ["1.2"]
capabilities = ["CERT_CAP", "CHAL_CAP", "MEAS_CAP_SIG"]

[algorithms]
base_asym = ["ECDSA_P256"]
base_hash = ["SHA_256"]
measurement_hash = ["SHA_256"]
measurement_spec = ["DMTF"]

[[slots]]
id = 0
chain = "{CERTS_IN_IMAGE}/ecdsa-p256/slot0"

[[measurements]]
index = 1
type = "version"
text = "lab build 42"
"""


def test_profile_mount_and_state_volume(start: Callable[..., Container], tmp_path: Path) -> None:
    profile = tmp_path / "lab.toml"
    profile.write_text(LAB_PROFILE)
    profile.chmod(0o644)
    volume = f"spdm-test-{os.getpid()}-state"
    podman("volume", "create", volume)
    try:
        c = start(
            "-v", f"{profile}:/etc/spdm-emulator/lab.toml:ro",
            "-v", f"{volume}:/home/spdm",
            command=["serve", "--host", "0.0.0.0", "--port", str(PORT),
                     "--profile", "/etc/spdm-emulator/lab.toml",
                     "--pcap", "/home/spdm/capture-{conn}.pcap"],
        )  # fmt: skip
        root = ROOT / "certs" / "ecdsa-p256" / "slot0" / "root.der"
        proc = host_cli("probe", "--json", "--root", str(root), f"127.0.0.1:{c.port}")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        result = json.loads(proc.stdout)
        assert (result["versions"], result["base_asym"]) == (["1.2"], "ECDSA_P256")
        assert result["certificate"]["trusted_root"] is True
        assert [b["value"] for b in result["measurements"]["blocks"]] == [b"lab build 42".hex()]
        podman("stop", "--time", "30", c.name)
        assert c.state("ExitCode") == "0"
        c.remove()
        # what the emulator wrote in its home directory is in the volume, owned by its user
        where = Path(
            podman("volume", "inspect", "--format", "{{.Mountpoint}}", volume).stdout.strip()
        )
        capture = where / "capture-1.pcap"
        assert capture.stat().st_uid == 10001
        header = capture.read_bytes()[:24]
        magic, _major, _minor, _zone, _sig, _snap, link_type = struct.unpack("<IHHiIII", header)
        assert (magic, link_type) == (0xA1B2C3D4, 292)  # pcap, PCI DOE
    finally:
        podman("volume", "rm", "--force", volume, check=False)


# --------------------------------------------------------------------- compose


def compose_cli() -> list[str]:
    try:
        import podman_compose  # noqa: F401
    except ImportError:
        unusable("podman-compose is not installed (pip install -e '.[test]' installs it)")
    return [sys.executable, "-m", "podman_compose", "-p", COMPOSE_PROJECT,
            "-f", str(ROOT / "docker" / "compose.yaml")]  # fmt: skip


@dataclass
class Subscriber:
    """mosquitto_sub inside the compose network: every message as (topic, payload)."""

    argv: list[str]
    messages: list[tuple[str, str]] = field(default_factory=list)
    output: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.output.append(line)
                topic, sep, payload = line.rstrip("\n").partition(" ")
                if sep and topic.startswith("spdm-emulator/"):
                    self.messages.append((topic, payload))
                self._cond.notify_all()

    def wait_for(
        self, what: str, predicate: Callable[[str, str], bool], timeout: float = 30
    ) -> Any:
        """The JSON payload of the first message matching ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for topic, payload in self.messages:
                    if predicate(topic, payload):
                        return json.loads(payload)
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    pytest.fail(
                        f"no {what} on the broker; mosquitto_sub said:\n{''.join(self.output)}"
                    )
                self._cond.wait(min(left, 0.5))

    def events(self) -> list[dict[str, Any]]:
        with self._cond:
            return [json.loads(p) for t, p in self.messages if t.endswith("/event")]

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def compose_down(cli: list[str]) -> None:
    """Remove the test project: containers with their anonymous volumes (the broker's data
    and log), then the network."""
    label = f"label=io.podman.compose.project={COMPOSE_PROJECT}"
    ids = podman("ps", "--all", "--quiet", "--filter", label, check=False).stdout.split()
    if ids:
        podman("rm", "--force", "--volumes", "--time", "10", *ids, check=False)
    run([*cli, "down", "--volumes", "--timeout", "10"], timeout=300, check=False)


@dataclass
class Compose:
    cli: list[str]
    port: int  # the emulator's port on the host


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture
def compose_up(image: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Compose]:
    """docker/compose.yaml up (built by podman-compose), torn down after the test.

    The file is used as it is. Only when its host port 127.0.0.1:2323 is taken (someone's
    emulator on a shared machine) a second file moves that port, and the log says so."""
    cli = compose_cli()
    compose_down(cli)  # what an interrupted run may have left
    port = PORT
    if not port_is_free(PORT):
        port = free_port()
        override = tmp_path / "compose.port.yaml"
        override.write_text(
            f'services:\n  emulator:\n    ports: !override\n      - "127.0.0.1:{port}:{PORT}"\n'
        )
        cli = [*cli, "-f", str(override)]
        report(request.config, f"127.0.0.1:{PORT} is taken: compose publishes {port} instead")
    env = {**os.environ, "BUILDAH_FORMAT": "docker"}  # keep the HEALTHCHECK in the build
    started = time.monotonic()
    try:
        run([*cli, "up", "-d", "--build", "--pull", "never"], timeout=1200, env=env)
        report(request.config, f"compose up in {time.monotonic() - started:.1f} s")
        yield Compose(cli, port)
    finally:
        compose_down(cli)


def compose_container(service: str) -> str:
    return f"{COMPOSE_PROJECT}_{service}_1"


def test_compose_telemetry_reaches_the_broker(compose_up: Compose) -> None:
    cli = compose_up.cli
    emulator, broker = compose_container("emulator"), compose_container("mosquitto")
    # the emulator reaches the broker by its service name (it retries until mosquitto listens)
    deadline = time.monotonic() + 60
    while "connected to mqtt://mosquitto:1883" not in (logs := Container(emulator, PORT).logs()):
        assert time.monotonic() < deadline, f"the emulator did not reach the broker:\n{logs}"
        time.sleep(0.5)
    # the emulator on the host's loopback only; the broker not published at all: only the
    # compose network reaches it
    published = podman("port", emulator).stdout.split()
    assert published == [f"{PORT}/tcp", "->", f"127.0.0.1:{compose_up.port}"], published
    assert podman("port", broker).stdout.strip() == ""
    # compose built the image with its health check (BUILDAH_FORMAT=docker), and it passes
    assert image_inspect("localhost/spdm-emulator:latest")["Healthcheck"] is not None
    health = podman("healthcheck", "run", emulator, check=False)
    assert health.returncode == 0, health.stdout + health.stderr
    sub = Subscriber([*cli, "exec", "-T", "mosquitto", "mosquitto_sub", "-h", "localhost",
                      "-t", "spdm-emulator/#", "-v"])  # fmt: skip
    try:
        # the retained state: the emulator published it, and the subscription is active
        state = sub.wait_for("retained state", lambda t, _p: t == "spdm-emulator/default/state")
        assert state["online"] is True
        probe = host_cli("probe", f"127.0.0.1:{compose_up.port}")
        assert probe.returncode == 0, probe.stdout + probe.stderr
        last = sub.wait_for(
            "GET_MEASUREMENTS event",
            lambda t, p: t.endswith("/event") and '"GET_MEASUREMENTS"' in p,
        )
        events = [e for e in sub.events() if e["connection"] == last["connection"]]
        names = [e["request"]["name"] for e in events]
        assert names[:3] == ["GET_VERSION", "GET_CAPABILITIES", "NEGOTIATE_ALGORITHMS"], names
        assert "CHALLENGE" in names
        assert all(e["error"] is None for e in events), events
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        # and the control plane answers a command sent inside the network
        command = '{"id": "ci-1", "op": "list"}'
        topic = "spdm-emulator/default/cmd/faults"
        run([*cli, "exec", "-T", "mosquitto", "mosquitto_pub", "-h", "localhost",
             "-t", topic, "-m", command])  # fmt: skip
        reply = sub.wait_for("reply", lambda t, p: t.endswith("/reply") and '"ci-1"' in p)
        assert reply["ok"] is True and reply["command"] == "faults", reply
    finally:
        sub.close()
    run([*cli, "stop", "--timeout", "30"], timeout=120)
    for name in (emulator, broker):
        assert podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip() == "0"
