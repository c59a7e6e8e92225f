"""``serve --mqtt HOST[:PORT]`` and the broker options: a serve extension.

Registered in :data:`emulator.cli.SERVE_EXTENSIONS` on import.  MQTT is off unless
``--mqtt`` is given or the profile says ``[mqtt] enabled = true``; the flags override the
profile's ``[mqtt]`` values.  The password may also come from the environment variable
``SPDM_EMULATOR_MQTT_PASSWORD`` (a command line is visible to other users).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Coroutine
from typing import Any

from emulator.control.config import ControlConfigError, control_config
from emulator.control.plane import ControlPlane

PASSWORD_ENV = "SPDM_EMULATOR_MQTT_PASSWORD"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("MQTT control plane (off unless --mqtt or [mqtt] enabled)")
    group.add_argument(
        "--mqtt",
        metavar="HOST[:PORT]",
        help="publish telemetry to this MQTT broker and take commands from it "
        "(topics spdm-emulator/<device>/...; see 'Fault injection' in README.md)",
    )
    group.add_argument("--mqtt-username", metavar="NAME")
    group.add_argument("--mqtt-password", metavar="PASSWORD", help=f"(or set {PASSWORD_ENV})")
    group.add_argument("--mqtt-tls", action="store_true", help="connect with TLS")
    group.add_argument("--mqtt-ca", metavar="FILE", help="CA certificates (PEM) for TLS")
    group.add_argument("--mqtt-cert", metavar="FILE", help="client certificate (PEM) for TLS")
    group.add_argument("--mqtt-key", metavar="FILE", help="client key (PEM) for TLS")
    group.add_argument(
        "--mqtt-insecure", action="store_true", help="TLS without checking the broker"
    )
    group.add_argument("--mqtt-topic-prefix", metavar="PREFIX")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    password = getattr(args, "mqtt_password", None) or os.environ.get(PASSWORD_ENV)
    pairs = {
        "username": getattr(args, "mqtt_username", None),
        "password": password,
        "ca_file": getattr(args, "mqtt_ca", None),
        "cert_file": getattr(args, "mqtt_cert", None),
        "key_file": getattr(args, "mqtt_key", None),
        "topic_prefix": getattr(args, "mqtt_topic_prefix", None),
    }
    out.update({k: v for k, v in pairs.items() if v is not None})
    if getattr(args, "mqtt_tls", False) or "ca_file" in out or "cert_file" in out:
        out["tls"] = True
    if getattr(args, "mqtt_insecure", False):
        out["tls"] = out["tls_insecure"] = True
    return out


def apply(
    args: argparse.Namespace, emulator: Any
) -> Callable[[], Coroutine[Any, Any, None]] | None:
    """Start a :class:`ControlPlane` for the emulator when MQTT is asked for."""
    try:
        config = control_config(emulator.profile, getattr(args, "mqtt", None), **_overrides(args))
    except (ControlConfigError, ValueError, TypeError) as exc:
        raise ControlConfigError(f"mqtt: {exc}") from None
    if config is None:
        return None
    plane = ControlPlane(
        emulator.device, emulator.device.faults, config, connections=emulator.connections
    )
    emulator.observers.append(plane.observer)
    plane.start_nowait()
    return plane.stop


CLI_EXTENSION = (add_arguments, apply)


def _register_cli() -> None:
    from emulator import cli

    if CLI_EXTENSION not in cli.SERVE_EXTENSIONS:
        cli.SERVE_EXTENSIONS.append(CLI_EXTENSION)


_register_cli()
