"""Configuration of the MQTT control plane: broker address, credentials, TLS, topics.

It comes from the profile's ``[mqtt]`` section and/or ``--mqtt HOST[:PORT]``.  Topic
tree, for a device named ``<device>`` and the default prefix::

    spdm-emulator/<device>/event          every exchange (JSON), not retained
    spdm-emulator/<device>/state          retained JSON: connections, sessions, faults,
                                          telemetry counters; {"online": false} as will
    spdm-emulator/<device>/cmd/faults     commands (JSON): add / clear / list
    spdm-emulator/<device>/cmd/measurements   set / bump_version / device_reset / list
    spdm-emulator/<device>/cmd/reset      forget negotiated state (one or all connections)
    spdm-emulator/<device>/reply          a JSON reply per command, with its "id"
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emulator.errors import EmulatorError

if TYPE_CHECKING:
    from emulator.options import RunOptions

DEFAULT_MQTT_PORT = 1883
DEFAULT_MQTTS_PORT = 8883
DEFAULT_TOPIC_PREFIX = "spdm-emulator"


class ControlConfigError(EmulatorError):
    """The control plane's configuration is invalid (the message names the setting)."""


def parse_mqtt_address(text: str, default_port: int = DEFAULT_MQTT_PORT) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``[IPv6]`` or ``[IPv6]:PORT`` -> (host, port)."""
    t = text.strip()
    if not t:
        raise ControlConfigError("--mqtt: empty address; write HOST or HOST:PORT")
    port_text = ""
    if t.startswith("["):
        end = t.find("]")
        if end < 0:
            raise ControlConfigError(f"--mqtt {text!r}: missing ']' after the IPv6 address")
        host, rest = t[1:end], t[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ControlConfigError(f"--mqtt {text!r}: expected ':PORT' after ']'")
            port_text = rest[1:]
    elif t.count(":") == 1:
        host, port_text = t.split(":")
    elif ":" in t:
        raise ControlConfigError(f"--mqtt {text!r}: write an IPv6 address as [ADDR]:PORT")
    else:
        host = t
    if not host:
        raise ControlConfigError(f"--mqtt {text!r}: no host")
    port = default_port
    if port_text:
        try:
            port = int(port_text)
        except ValueError:
            raise ControlConfigError(
                f"--mqtt {text!r}: port {port_text!r} is not a number"
            ) from None
        if not 1 <= port <= 65535:
            raise ControlConfigError(f"--mqtt {text!r}: port {port} is not within 1..65535")
    return host, port


@dataclass(frozen=True)
class ControlConfig:
    """Where the broker is and how the control plane behaves."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_MQTT_PORT
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_insecure: bool = False
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    client_id: str | None = None
    #: events kept while the broker is away; the oldest are dropped (and counted) beyond
    queue_size: int = 1000
    keepalive: int = 30
    #: reconnect backoff: first wait, doubling up to the maximum
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    #: the retained state is republished at most this often when only counters change
    state_interval: float = 1.0

    def __post_init__(self) -> None:
        if not self.host:
            raise ControlConfigError("mqtt.host: empty")
        if not 1 <= self.port <= 65535:
            raise ControlConfigError(f"mqtt.port: {self.port} is not within 1..65535")
        if not self.topic_prefix or any(c in self.topic_prefix for c in "#+"):
            raise ControlConfigError(f"mqtt.topic_prefix: {self.topic_prefix!r} is not a topic")
        if self.queue_size < 1:
            raise ControlConfigError(f"mqtt.queue_size: {self.queue_size} is not positive")
        if self.password is not None and self.username is None:
            raise ControlConfigError("mqtt.password: needs mqtt.username")
        if (self.cert_file is None) != (self.key_file is None):
            raise ControlConfigError("mqtt.cert_file and mqtt.key_file go together")
        if not 0 < self.reconnect_min <= self.reconnect_max:
            raise ControlConfigError("mqtt reconnect backoff: need 0 < min <= max")

    @classmethod
    def from_profile(cls, section: Any, base_dir: Path | None = None) -> ControlConfig:
        """From a profile's ``[mqtt]`` section (files relative to the profile)."""

        def path(value: str | None) -> str | None:
            if value is None or base_dir is None:
                return value
            return str((base_dir / value).resolve())

        return cls(
            host=section.host,
            port=section.port,
            username=section.username,
            password=section.password,
            tls=section.tls,
            ca_file=path(section.ca_file),
            cert_file=path(section.cert_file),
            key_file=path(section.key_file),
            tls_insecure=section.tls_insecure,
            topic_prefix=section.topic_prefix,
            client_id=section.client_id,
            queue_size=section.queue_size,
            keepalive=section.keepalive,
        )

    def with_address(self, text: str) -> ControlConfig:
        """This configuration with the broker of ``--mqtt HOST[:PORT]``."""
        default = DEFAULT_MQTTS_PORT if self.tls else DEFAULT_MQTT_PORT
        host, port = parse_mqtt_address(text, default)
        return replace(self, host=host, port=port)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context (None without TLS); ControlConfigError for unreadable files."""
        if not self.tls:
            return None
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file is not None:
                ctx.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ControlConfigError(f"mqtt TLS files: {exc}") from None
        if self.tls_insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


def control_config(
    profile: Any = None, mqtt: str | None = None, **overrides: Any
) -> ControlConfig | None:
    """The control plane configuration for ``serve``: None when MQTT is off.

    MQTT is on when ``--mqtt HOST[:PORT]`` is given (it overrides the profile's broker)
    or the profile's ``[mqtt] enabled = true``.
    """
    section = getattr(profile, "mqtt", None) if profile is not None else None
    enabled = bool(section is not None and section.enabled)
    if mqtt is None and not enabled:
        return None
    if section is not None:
        config = ControlConfig.from_profile(section, getattr(profile, "base_dir", None))
    else:
        config = ControlConfig()
    if mqtt is not None:
        config = config.with_address(mqtt)
    return replace(config, **overrides) if overrides else config


def run_control_config(profile: Any, options: RunOptions) -> ControlConfig | None:
    """:func:`control_config` for a run: the profile's ``[mqtt]`` with the options'
    ``mqtt*`` values (``serve --mqtt-*``) over it; None when MQTT is off.

    Values left None keep the profile's; a CA or client certificate implies TLS, and
    ``mqtt_insecure`` is TLS without checking the broker.  ControlConfigError
    (``mqtt: ...``) names a bad value.
    """
    values = {
        "username": options.mqtt_username,
        "password": options.mqtt_password,
        "ca_file": options.mqtt_ca,
        "cert_file": options.mqtt_cert,
        "key_file": options.mqtt_key,
        "topic_prefix": options.mqtt_topic_prefix,
    }
    overrides: dict[str, Any] = {k: v for k, v in values.items() if v is not None}
    if options.mqtt_tls or "ca_file" in overrides or "cert_file" in overrides:
        overrides["tls"] = True
    if options.mqtt_insecure:
        overrides["tls"] = overrides["tls_insecure"] = True
    try:
        return control_config(profile, options.mqtt, **overrides)
    except (ControlConfigError, ValueError, TypeError) as exc:
        raise ControlConfigError(f"mqtt: {exc}") from None


@dataclass(frozen=True)
class Topics:
    """The topic names of one device."""

    prefix: str
    device: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.device}"

    @property
    def event(self) -> str:
        return f"{self.base}/event"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def reply(self) -> str:
        return f"{self.base}/reply"

    @property
    def device_events(self) -> str:
        """Runtime changes of the device model (measurements, IDE keys programmed, ...)."""
        return f"{self.base}/device"

    @property
    def commands(self) -> str:
        """Subscription filter of every command topic."""
        return f"{self.base}/cmd/+"

    def command(self, name: str) -> str:
        return f"{self.base}/cmd/{name}"

    def command_name(self, topic: str) -> str | None:
        """``.../cmd/faults`` -> ``faults`` (None for a topic outside cmd/)."""
        head = f"{self.base}/cmd/"
        return topic[len(head) :] if topic.startswith(head) else None
