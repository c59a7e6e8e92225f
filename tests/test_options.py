"""RunOptions: one definition of every run setting, which the CLI, the pytest plugin, the
app and the server all use; the app composes device + fault engine + observers."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from emulator import cli
from emulator.app import Emulator, build_fault_engine
from emulator.control.config import ControlConfigError, run_control_config
from emulator.device.model import Device
from emulator.faults.engine import attach
from emulator.options import DEFAULT_MAX_PAYLOAD, RunOptions
from emulator.profiles import Profile, load_profile
from emulator.pytest_plugin import build_options, fixture_options
from emulator.server.platform import FrameDecoder
from emulator.transport import BINDINGS

PACKAGE = Path(__file__).resolve().parent.parent / "emulator"


@pytest.fixture(scope="module")
def profile() -> Profile:
    return load_profile("default")


def test_serve_defaults_are_the_run_options_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.PASSWORD_ENV, raising=False)
    assert cli.run_options(cli.build_parser().parse_args(["serve"])) == RunOptions()
    defaults = RunOptions()
    assert (defaults.host, defaults.port, defaults.transport) == ("127.0.0.1", 2323, "doe")
    assert defaults.max_payload == DEFAULT_MAX_PAYLOAD == 0x1200  # QEMU's buffer
    assert FrameDecoder().max_payload == DEFAULT_MAX_PAYLOAD


def test_every_serve_flag_reaches_its_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.PASSWORD_ENV, raising=False)
    flags = """serve --profile nvme-ssd --host ::1 --port 0 --transport mctp
        --max-payload 0x800 --idle-timeout 5 --max-connections 3 --frame-timeout 2 --seed 7
        --trace - --pcap x.pcap --keylog k --fault do=drop --fault-seed 9 --mutate 1:0.5
        --mqtt broker --mqtt-username u --mqtt-password p --mqtt-tls --mqtt-ca ca
        --mqtt-cert c --mqtt-key k --mqtt-insecure --mqtt-topic-prefix t
        --state-dir /tmp/x --ephemeral"""
    args = cli.build_parser().parse_args(flags.split())
    options = cli.run_options(args)
    unchanged = [
        f.name
        for f in dataclasses.fields(RunOptions)
        if getattr(options, f.name) == getattr(RunOptions(), f.name)
    ]
    assert unchanged == ["backlog"]  # the one setting without a flag
    (rule,) = options.faults
    assert not isinstance(rule, str) and (rule.spec, rule.origin) == ("do=drop", "cli")


def test_mqtt_password_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = cli.build_parser()
    monkeypatch.setenv(cli.PASSWORD_ENV, "secret")
    assert cli.run_options(parser.parse_args(["serve"])).mqtt_password == "secret"
    flagged = parser.parse_args(["serve", "--mqtt-password", "given"])
    assert cli.run_options(flagged).mqtt_password == "given"


def test_transport_choices_come_from_the_binding_registry() -> None:
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    assert isinstance(subparsers.choices, dict)
    for command in ("serve", "probe"):
        (action,) = [a for a in subparsers.choices[command]._actions if a.dest == "transport"]
        assert tuple(action.choices or ()) == tuple(BINDINGS)


def test_nothing_in_the_package_imports_the_cli() -> None:
    """The CLI owns every flag; the parts behind them never import it (no import circle)."""
    importers = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "__main__.py" or path == PACKAGE / "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            if "emulator.cli" in names:
                importers.append(str(path.relative_to(PACKAGE.parent)))
    assert importers == []


def test_the_device_does_not_own_the_fault_engine() -> None:
    assert "faults" not in {f.name for f in dataclasses.fields(Device)}


def test_the_emulator_shares_one_engine_between_connections(profile: Profile) -> None:
    options = RunOptions(
        profile=profile,
        port=0,
        faults=("on=GET_VERSION,do=error:Busy,id=busy",),
        fault_seed=4,
        mutate="3:0.5",
    )
    emu = Emulator(options)
    assert attach(emu) is emu.faults
    assert [(r.id, r.origin) for r in emu.faults.rules] == [("busy", "api"), ("mutate", "cli")]
    assert emu.faults.seed == 4
    first, second = emu._new_connection(1, "a"), emu._new_connection(2, "b")
    assert first.faults is emu.faults and second.faults is emu.faults
    # a rule added at run time (the MQTT command, the plugin's handle) reaches both
    emu.faults.add("on=GET_CAPABILITIES,do=drop,id=late")
    assert [r.id for r in first.faults.rules] == ["busy", "mutate", "late"]


def test_a_parsed_rule_is_copied_into_each_engine(profile: Profile) -> None:
    args = cli.build_parser().parse_args(["serve", "--fault", "do=drop"])
    options = cli.run_options(args)
    one, two = build_fault_engine(profile, options), build_fault_engine(profile, options)
    assert one.rules[0] is not two.rules[0]
    assert one.rules[0] is not options.faults[0]


def test_run_control_config(profile: Profile) -> None:
    assert run_control_config(profile, RunOptions()) is None  # off unless asked
    config = run_control_config(
        profile, RunOptions(mqtt="broker:1999", mqtt_username="u", mqtt_ca="ca.pem")
    )
    assert config is not None
    assert (config.host, config.port, config.username, config.tls) == ("broker", 1999, "u", True)
    insecure = run_control_config(profile, RunOptions(mqtt="b", mqtt_insecure=True))
    assert insecure is not None and insecure.tls and insecure.tls_insecure
    with pytest.raises(ControlConfigError, match=r"^mqtt: .*password"):
        run_control_config(profile, RunOptions(mqtt="b", mqtt_password="p"))


def test_the_plugin_builds_run_options() -> None:
    assert fixture_options() == dataclasses.replace(RunOptions(), port=0)
    built = build_options("default", transport="mctp", faults="do=drop", max_payload=0x2000)
    assert built == RunOptions(port=0, transport="mctp", faults=("do=drop",), max_payload=0x2000)
