"""Optional MQTT control plane: telemetry of every exchange, retained device state, and
commands (fault rules, measurement values, resets) while the emulator runs."""

from emulator.control.config import (
    ControlConfig,
    ControlConfigError,
    Topics,
    control_config,
    parse_mqtt_address,
)
from emulator.control.plane import ControlPlane

__all__ = [
    "ControlConfig",
    "ControlConfigError",
    "ControlPlane",
    "Topics",
    "control_config",
    "parse_mqtt_address",
]
