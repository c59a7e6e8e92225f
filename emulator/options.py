"""Run options: every setting of one emulator run, with its default, in one place.

:class:`RunOptions` is what ``spdm-emulator serve`` builds from its flags (their
defaults are these fields' defaults), what the pytest plugin builds from a marker or a
parameter, and what :class:`emulator.app.Emulator` and
:class:`emulator.server.server.SpdmServer` read.  Nothing else restates a default.

It imports only the platform-socket codec's constant at run time, so any layer
above the transport may read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# QEMU's SPDM_SOCKET_MAX_MESSAGE_BUFFER_SIZE, a property of the platform-socket frame
# (so defined with its codec): the default frame payload limit.
from emulator.transport.platform import DEFAULT_MAX_PAYLOAD

if TYPE_CHECKING:
    from emulator.faults.model import FaultRule
    from emulator.profiles import Profile

#: the TCP port QEMU's examples use (``spdm_port=2323``), as spdm-emu's responder
DEFAULT_PORT = 2323
#: seconds allowed to receive one whole frame once it started (and to send one reply)
DEFAULT_FRAME_TIMEOUT = 30.0
#: connections served at once
DEFAULT_MAX_CONNECTIONS = 1024
#: listen backlog: a burst of this many simultaneous connection attempts is queued
DEFAULT_BACKLOG = 1024


@dataclass
class RunOptions:
    """Every setting of one emulated device served on one TCP port.

    Defaults are the README quick start: the shipped ``default`` profile on
    127.0.0.1:2323 over PCI DOE, limits safe for QEMU, no trace, no faults, no MQTT.
    """

    # ---- the device and where it listens ------------------------------------------------
    #: device profile: a shipped profile name, a TOML file, or a loaded Profile
    profile: str | Path | Profile = "default"
    #: address to listen on
    host: str = "127.0.0.1"
    #: TCP port (0: a free one, see ``Emulator.port``)
    port: int = DEFAULT_PORT
    #: transport binding inside the socket frames: a name of ``emulator.transport.BINDINGS``
    transport: str = "doe"

    # ---- limits and timeouts (emulator.server) ------------------------------------------
    #: largest accepted frame payload (a larger frame closes the connection)
    max_payload: int = DEFAULT_MAX_PAYLOAD
    #: connections served at once; more are accepted and closed at once
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    #: listen() backlog: connection attempts queued before the server accepts them
    backlog: int = DEFAULT_BACKLOG
    #: close a connection that sends nothing for this many seconds (None: never)
    idle_timeout: float | None = None
    #: a frame must be complete this many seconds after its first byte arrived, and a reply
    #: must be taken by the peer within it (slow senders / readers); None: no limit
    frame_timeout: float | None = DEFAULT_FRAME_TIMEOUT

    # ---- determinism ----------------------------------------------------------------------
    #: fixed nonces, DHE keys and padding from this seed; overrides the profile's
    #: ``[determinism] seed`` when set
    seed: int | None = None

    # ---- observers (emulator.trace) -------------------------------------------------------
    #: write a decoded line per SPDM message to this file (appended), or ``-`` for stderr
    trace: str | None = None
    #: capture the transport messages to this pcap file (``{conn}``: one file per connection)
    pcap: str | None = None
    #: append each secure session's DHE secret / PSK to this file, in the hex form of DMTF
    #: spdm_dump's --dhe_secret / --psk (emulator.keylog); off by default
    keylog: str | None = None

    # ---- fault injection (emulator.faults) ------------------------------------------------
    #: fault rules (``--fault`` SPEC strings or parsed rules), added after the profile's
    #: ``[[faults]]``
    faults: Sequence[str | FaultRule] = ()
    #: seed of the probabilistic faults (default: the profile's [determinism] seed, or 0)
    fault_seed: int | None = None
    #: hostile device, ``SEED[:RATE]``: the fault rule id=mutate,do=mutate,seed=SEED,prob=RATE
    mutate: str | None = None

    # ---- MQTT control plane (emulator.control); each overrides the profile's [mqtt] --------
    #: broker ``HOST[:PORT]``; MQTT is off unless this is set or the profile enables it
    mqtt: str | None = None
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    #: connect with TLS (implied by a CA or client certificate)
    mqtt_tls: bool = False
    #: CA certificates (PEM) for TLS
    mqtt_ca: str | None = None
    #: client certificate and key (PEM) for TLS
    mqtt_cert: str | None = None
    mqtt_key: str | None = None
    #: TLS without checking the broker's certificate
    mqtt_insecure: bool = False
    #: topic prefix (default: the control plane's ``spdm-emulator``)
    mqtt_topic_prefix: str | None = None

    # ---- provisioned state (emulator.device.store) ---------------------------------------
    #: where what requesters provision (SET_CERTIFICATE, SET_KEY_PAIR_INFO, CSRs waiting
    #: for a reset) is kept between runs; None: ``$XDG_DATA_HOME/spdm-emulator/state/
    #: <device>-<port>`` (``~/.local/share/...``) when ``port`` is fixed, memory only on a
    #: free port (0)
    state_dir: str | None = None
    #: keep the provisioned state in memory only: the profile's state at every start
    ephemeral: bool = False


__all__ = [
    "DEFAULT_BACKLOG",
    "DEFAULT_FRAME_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_PAYLOAD",
    "DEFAULT_PORT",
    "RunOptions",
]
