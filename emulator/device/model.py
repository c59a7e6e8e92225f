"""The emulated device: what a profile describes, as the responder core uses it.

One :class:`Device` is shared by every connection to it (so a runtime change,
e.g. a new measurement value, is seen by all); each connection has its own
:class:`~emulator.responder.Responder` with its own negotiated state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from emulator.codec.constants import ResponderCap, SpdmVersion
from emulator.device.identity import Identity
from emulator.device.measurements import MeasurementStore, measurement_store
from emulator.device.random import RandomSource, SeededRandom, SystemRandom
from emulator.profiles import Profile, load_profile
from emulator.session.settings import SessionSettings

if TYPE_CHECKING:
    from emulator.responder.vendor_defined.ide_km import IdeKmState

#: Algorithm-list names of a profile's [algorithms] section.
ALGORITHM_FIELDS = (
    "base_asym",
    "req_base_asym",
    "base_hash",
    "measurement_hash",
    "measurement_spec",
    "dhe",
    "aead",
    "key_schedule",
    "opaque_data_format",
    "mel_spec",
)


@dataclass
class Device:
    """A device model built from a validated :class:`~emulator.profiles.Profile`."""

    profile: Profile
    name: str
    versions: list[SpdmVersion]
    capabilities: ResponderCap
    ct_exponent: int
    data_transfer_size: int
    max_spdm_msg_size: int
    #: priority-ordered algorithm bits per [algorithms] field
    priorities: dict[str, list[int]] = field(default_factory=dict)
    seed: int | None = None
    #: callbacks run when a runtime change happens (measurements, identity...)
    listeners: list[Callable[[str, object], None]] = field(default_factory=list)
    #: measurement blocks (emulator.device.measurements), shared by all connections
    measurements: MeasurementStore = field(default_factory=MeasurementStore)
    #: certificate slots and keys (emulator.device.identity.Identity)
    identity: Identity = field(default_factory=Identity)
    #: secure-session settings (emulator.session.settings), from the profile's [sessions]
    sessions: SessionSettings = field(default_factory=SessionSettings)
    #: PCIe IDE key state (IDE_KM, emulator.responder.vendor_defined.ide_km), from the profile's
    #: [ide_km]; on the device because IDE keys live in the port hardware that every
    #: connection shares (None: the device does not do IDE_KM)
    ide_km: IdeKmState | None = None

    def __post_init__(self) -> None:
        self.measurements.bind(self.notify)

    @classmethod
    def from_profile(cls, profile: Profile) -> Device:
        return cls(
            profile=profile,
            name=profile.device.name,
            versions=profile.versions,
            capabilities=profile.capabilities,
            ct_exponent=profile.spdm.ct_exponent,
            data_transfer_size=profile.spdm.data_transfer_size,
            max_spdm_msg_size=profile.spdm.max_spdm_msg_size,
            # plain ints: selections are tested against request masks on every
            # NEGOTIATE_ALGORITHMS, and IntFlag arithmetic costs ~1 us per operation
            priorities={f: [int(b) for b in profile.algo_list(f)] for f in ALGORITHM_FIELDS},
            seed=profile.determinism.seed,
            measurements=measurement_store(profile),
            identity=_identity_of(profile),
            sessions=SessionSettings.from_profile(profile),
            ide_km=_ide_km_of(profile),
        )

    @classmethod
    def load(cls, name_or_path: str = "default") -> Device:
        return cls.from_profile(load_profile(name_or_path))

    def supports(self, cap: ResponderCap | int) -> bool:
        return bool(int(self.capabilities) & int(cap))

    def mask(self, field_name: str) -> int:
        """All supported bits of one algorithm field, OR-ed."""
        out = 0
        for bit in self.priorities[field_name]:
            out |= bit
        return out

    def random_source(self, label: str) -> RandomSource:
        """Randomness for one connection: seeded (reproducible) or the OS."""
        if self.seed is None:
            return SystemRandom()
        return SeededRandom(self.seed, f"{self.name}/{label}")

    def measurement_summary_hash(
        self, kind: int, meas_hash_algo: int, base_hash_algo: int
    ) -> bytes:
        """MeasurementSummaryHash of CHALLENGE_AUTH / KEY_EXCHANGE_RSP / PSK_EXCHANGE_RSP.

        ``kind`` 0: none (``b""``); 1: the TCB blocks; 0xFF: all blocks.  Hash with
        ``base_hash_algo`` over the concatenated blocks as libspdm computes it (see
        :meth:`emulator.device.measurements.MeasurementStore.summary_hash`);
        MeasurementError for a reserved kind.
        """
        return self.measurements.summary_hash(kind, meas_hash_algo, base_hash_algo)

    def notify(self, what: str, detail: object) -> None:
        """Tell listeners (control plane, telemetry) about a runtime change."""
        for cb in list(self.listeners):
            cb(what, detail)


def _ide_km_of(profile: Profile) -> IdeKmState | None:
    """The IDE_KM key state of a profile with an enabled [ide_km] section."""
    if profile.ide_km is None or not profile.ide_km.enabled:
        return None
    from emulator.responder.vendor_defined.ide_km import IdeKmState

    return IdeKmState.from_section(profile.ide_km)


def _identity_of(profile: Profile) -> Identity:
    """The profile's certificate slots, as this device's own copy."""
    if not profile.slots:
        return Identity()
    identity: Identity = profile.identity()
    return identity.copy()
