"""The emulated device: what a profile describes, as the responder core uses it.

One :class:`Device` is shared by every connection to it (so a runtime change,
e.g. a new measurement value, is seen by all); each connection has its own
:class:`~emulator.responder.Responder` with its own negotiated state.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emulator.codec.constants import ResponderCap, SpdmVersion
from emulator.codec.endpoint_info import ClassIdentifier, encode_device_class_identifier
from emulator.codec.identity import PUBLIC_KEY_SLOT, SLOT_COUNT
from emulator.codec.vendor import StandardId
from emulator.device.events import EventSettings
from emulator.device.identity import Identity
from emulator.device.keypairs import build_key_pairs
from emulator.device.measurements import MeasurementStore, measurement_store
from emulator.device.mel import MeasurementExtensionLog
from emulator.device.provisioning import Provisioning, ProvisioningSettings, SlotCert
from emulator.device.random import RandomSource, SeededRandom, SystemRandom
from emulator.device.store import StateStore
from emulator.profiles import Profile, load_profile
from emulator.session.settings import SessionSettings

if TYPE_CHECKING:
    from emulator.responder.vendor_defined.cxl_ide_km import CxlIdeKmState
    from emulator.responder.vendor_defined.cxl_tsp import CxlTspState
    from emulator.responder.vendor_defined.ide_km import IdeKmState
    from emulator.responder.vendor_defined.tdisp import TdispState

log = logging.getLogger("emulator.device")

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
    "pqc_asym",
    "req_pqc_asym",
    "kem",
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
    #: key pairs and provisioned certificates (GET_CSR, SET_CERTIFICATE, *_KEY_PAIR_INFO);
    #: it keeps ``identity`` up to date (None: a fixed identity)
    provisioning: Provisioning | None = None
    #: the measurement extension log (MEL_CAP); None without MEL-extended blocks
    mel: MeasurementExtensionLog | None = None
    #: EPInfo of ENDPOINT_INFO (the device class identifier, SubCode 1)
    endpoint_info: bytes = b""
    #: supported DMTF event types (EVENT_CAP) and the per-session queue limit
    events: EventSettings = field(default_factory=EventSettings)
    #: TDISP interfaces (TDIs) and their state machines (emulator.responder.vendor_defined.
    #: tdisp), from the profile's [tdisp]: device state that outlives connections
    tdisp: TdispState | None = None
    #: CXL IDE_KM keys and CXL TSP target state (emulator.responder.vendor_defined.cxl_ide_km,
    #: cxl_tsp), from the profile's [cxl_ide_km] and [cxl_tsp]
    cxl_ide_km: CxlIdeKmState | None = None
    cxl_tsp: CxlTspState | None = None
    #: ``hook(connection, session_id)`` for every secure session of the device that ends
    #: (the TDIs it locked go to ERROR)
    session_hooks: list[Callable[[int, int], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.measurements.bind(self.notify)
        if self.mel is not None:
            self.mel.bind(self.notify)
        if self.provisioning is not None:
            self.provisioning.bind(self.notify, self._set_identity)
        if self.tdisp is not None:
            self.tdisp.bind(self.notify)
            self.session_hooks.append(self.tdisp.session_ended)
        if self.cxl_tsp is not None:
            self.cxl_tsp.bind(self.notify)
            self.session_hooks.append(self.cxl_tsp.session_ended)

    def _set_identity(self, identity: Identity) -> None:
        self.identity = identity

    @classmethod
    def from_profile(
        cls,
        profile: Profile,
        *,
        store: StateStore | None = None,
        wall_clock: Callable[[], datetime.datetime] | None = None,
    ) -> Device:
        """The device of a profile; ``store`` keeps what requesters provision (default:
        memory only), ``wall_clock`` is the time certificates are checked against."""
        measurements = measurement_store(profile)
        identity = _identity_of(profile)
        provisioning = _provisioning_of(profile, identity, store, wall_clock)
        tdisp, cxl_ide_km, cxl_tsp = _tee_io_of(profile)
        device = cls(
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
            measurements=measurements,
            identity=identity,
            sessions=SessionSettings.from_profile(profile),
            ide_km=_ide_km_of(profile),
            provisioning=provisioning,
            mel=_mel_of(profile, measurements),
            endpoint_info=_endpoint_info_of(profile),
            events=EventSettings(tuple(profile.events.type_ids), profile.events.queue_limit),
            tdisp=tdisp,
            cxl_ide_km=cxl_ide_km,
            cxl_tsp=cxl_tsp,
        )
        if provisioning is not None:
            problems = provisioning.load()
            for p in problems:
                log.warning("device %s: %s", device.name, p)
            provisioning.device_reset()  # a start is a device reset
        return device

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

    def reset(self) -> dict[str, Any]:
        """A device reset (power cycle): measurement changes held back without
        MEAS_FRESH_CAP become visible, certificate installs and CSRs waiting for a reset
        complete (DSP0274 ResetRequired).  Connections keep their state: a real reset
        drops them, which the caller (control plane, app) does separately.  TDIs go back
        to CONFIG_UNLOCKED, the CXL TSP target state is cleared."""
        applied = self.measurements.device_reset()
        done: dict[str, Any] = {"measurements_applied": applied}
        if self.provisioning is not None:
            done.update(self.provisioning.device_reset())
        if self.tdisp is not None:  # TDIs back to CONFIG_UNLOCKED (PCIe 6.1 11.4.8)
            done["tdisp_unlocked"] = [f"0x{f:04X}" for f in self.tdisp.conventional_reset()]
        if self.cxl_tsp is not None:
            self.cxl_tsp.reset()
        return done

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


def _tee_io_of(
    profile: Profile,
) -> tuple[TdispState | None, CxlIdeKmState | None, CxlTspState | None]:
    """The TDISP and CXL (IDE_KM, TSP) state of a profile's enabled sections."""
    from emulator.responder.vendor_defined.cxl_ide_km import CxlIdeKmState
    from emulator.responder.vendor_defined.cxl_tsp import CxlTspState
    from emulator.responder.vendor_defined.tdisp import TdispState

    return (
        TdispState.from_profile(profile),
        CxlIdeKmState.from_profile(profile),
        CxlTspState.from_profile(profile),
    )


def _identity_of(profile: Profile) -> Identity:
    """The profile's certificate slots, as this device's own copy."""
    if not profile.slots:
        return Identity()
    identity: Identity = profile.identity()
    return identity.copy()


def _provisioning_of(
    profile: Profile,
    identity: Identity,
    store: StateStore | None,
    wall_clock: Callable[[], datetime.datetime] | None,
) -> Provisioning | None:
    """The key pairs and slot certificates of a profile built with its slots."""
    plan = identity.key_pair_plan
    if plan is None:
        return None
    usage: dict[int, int] = {}
    masks: dict[int, int] = {}
    certs: list[SlotCert] = []
    extra = []
    for key in identity.keys:
        usage.setdefault(key.key_pair_id, key.key_usage)
        if key.slot_id < SLOT_COUNT:
            masks[key.key_pair_id] = masks.get(key.key_pair_id, 0) | 1 << key.slot_id
            certs.append(
                SlotCert(
                    key.slot_id, key.key_pair_id, key.certs_der, key.certificate_info, key.origin
                )
            )
        elif key.slot_id == PUBLIC_KEY_SLOT:
            extra.append(key)
    caps = profile.capabilities
    reset = ResponderCap.CERT_INSTALL_RESET_CAP in caps
    prov = profile.provisioning
    settings = ProvisioningSettings(
        trusted_environment=prov.trusted_environment,
        csr_needs_reset=reset if prov.csr_needs_reset is None else prov.csr_needs_reset,
        set_certificate_needs_reset=reset
        if prov.set_certificate_needs_reset is None
        else prov.set_certificate_needs_reset,
        csr_organization=prov.csr_organization,
    )
    kwargs: dict[str, Any] = {}
    if wall_clock is not None:
        kwargs["wall_clock"] = wall_clock
    return Provisioning(
        build_key_pairs(profile, plan, usage, masks),
        certs,
        supported_mask=identity.supported_mask,
        extra_keys=extra,
        challenge_opaque_data=identity.challenge_opaque_data,
        settings=settings,
        store=store,
        device_name=profile.device.name,
        **kwargs,
    )


def _mel_of(profile: Profile, measurements: MeasurementStore) -> MeasurementExtensionLog | None:
    """The profile's [[mel]] entries over its MEL-extended blocks (None: no such block)."""
    if not any(m.mel for m in profile.measurements):
        return None
    return MeasurementExtensionLog(
        measurements,
        [(e.index, e.kind, e.value_bytes()) for e in profile.mel],  # type: ignore[misc]
    )


def _endpoint_info_of(profile: Profile) -> bytes:
    """EPInfo (device class identifier) of the profile's [endpoint_info], or one PCI-SIG
    element from [device.pci]: VendorID, then as sub-identifiers the configuration-space
    registers as they read (little-endian): Device ID, Revision ID + Class Code (the DWORD
    at 0x08), Subsystem Vendor ID, Subsystem ID.  (24 bytes with a subsystem: a signed
    ENDPOINT_INFO stays DWORD-sized for 4-byte-multiple signatures, which libspdm's
    requester needs over PCI DOE: it takes the DOE padding for part of the message.)"""
    ep = profile.endpoint_info
    if ep.identifiers is not None:
        elements = [
            ClassIdentifier(int(i.registry), i.vendor_bytes, tuple(i.sub_id_bytes()))
            for i in ep.identifiers
        ]
    else:
        pci = profile.device.pci
        subs = [
            pci.device_id.to_bytes(2, "little"),
            (pci.class_code << 8 | pci.revision).to_bytes(4, "little"),
        ]
        if pci.subsystem_vendor_id is not None and pci.subsystem_id is not None:
            subs.append(pci.subsystem_vendor_id.to_bytes(2, "little"))
            subs.append(pci.subsystem_id.to_bytes(2, "little"))
        elements = [
            ClassIdentifier(
                int(StandardId.PCISIG), pci.vendor_id.to_bytes(2, "little"), tuple(subs)
            )
        ]
    return encode_device_class_identifier(elements)
