"""What a requester provisions into the device (DSP0274 1.2 10.13-10.14, 1.3 10.13-10.15):
certificate chains (SET_CERTIFICATE), key pair settings (SET_KEY_PAIR_INFO), and the
certification requests (GET_CSR) that need a device reset.

One :class:`Provisioning` per device, shared by all its connections.  It holds the key
pairs and the certificate of every (slot, key pair) and derives the device's
:class:`~emulator.device.identity.Identity` from them: a slot serves the certificate of
a key pair that is associated with it and has a key.  Every change happens under one
lock, replaces the identity as a whole (a connection reads either the old or the new
one, never a mix) and is written to the injected :class:`~emulator.device.store.StateStore`
before it is visible, so it survives a restart of the emulator.  The store holds only
what differs from the profile; ``spdm-emulator state reset`` goes back to the profile.

Device reset (:meth:`Provisioning.device_reset`, also at every start, which is one):
installs waiting for it (SET_CERTIFICATE answered ResetRequired, with
CERT_INSTALL_RESET_CAP) take effect, and waiting CSRs are generated.

Errors are :class:`ProvisioningError` with the ERROR code the responder sends and a
reason naming the field; every check runs before anything changes.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.hazmat.primitives import serialization

from emulator.codec.constants import ErrorCode
from emulator.codec.identity import SLOT_COUNT, CertificateInfo
from emulator.codec.provisioning import (
    KEY_PAIR_ASYM_MASK,
    MAX_CSR_TRACKING_TAG,
    KeyPairCap,
    KeyPairOperation,
    base_asym_of,
)
from emulator.crypto import PrivateKey, load_private_key
from emulator.device.identity import Identity, SlotKey
from emulator.device.keypairs import KEY_PAIR_ASYM_NAMES, KeyPair
from emulator.device.store import MemoryStore, StateStore
from emulator.errors import CryptoError, EmulatorError, StateError
from emulator.x509.chain import CertError
from emulator.x509.checks import check_provisioned_chain
from emulator.x509.csr import (
    build_csr,
    csr_hash_for,
    default_attributes,
    device_subject,
    parse_requester_info,
)
from emulator.x509.generate import generate_private_key

log = logging.getLogger("emulator.device.provisioning")

__all__ = [
    "CsrOutcome",
    "Provisioning",
    "ProvisioningError",
    "ProvisioningSettings",
    "SlotCert",
]

#: version of the persisted state document
STATE_FORMAT = 1

Notify = Callable[[str, object], None]


class ProvisioningError(EmulatorError):
    """A provisioning request the device refuses: the ERROR code, its data and why."""

    def __init__(self, code: ErrorCode, reason: str, data: int = 0) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.data = data


def _invalid(reason: str) -> ProvisioningError:
    return ProvisioningError(ErrorCode.InvalidRequest, reason)


def _failed(reason: str) -> ProvisioningError:
    return ProvisioningError(ErrorCode.OperationFailed, reason)


@dataclass(frozen=True)
class ProvisioningSettings:
    """The profile's ``[provisioning]`` section."""

    #: SET_CERTIFICATE on any slot outside a session (else only slot 0, as libspdm)
    trusted_environment: bool = False
    #: GET_CSR answers ResetRequired and the CSR is ready after a device reset
    csr_needs_reset: bool = False
    #: SET_CERTIFICATE answers ResetRequired and the chain is served after a reset
    set_certificate_needs_reset: bool = False
    #: the organisation of the subject the device puts in a CSR without RequesterInfo
    csr_organization: str = "spdm-emulator"


@dataclass(frozen=True)
class SlotCert:
    """The certificate chain (root first) a slot holds for one key pair."""

    slot_id: int
    key_pair_id: int
    certs_der: tuple[bytes, ...]
    cert_model: int = int(CertificateInfo.DEVICE_CERT)
    origin: str = ""


@dataclass
class PendingCsr:
    """A GET_CSR that waits for a device reset (CERT_INSTALL_RESET_CAP)."""

    #: CSRTrackingTag (1..7); 0 for the single pre-1.3 request
    tag: int
    key_pair_id: int
    cert_model: int
    requester_info: bytes
    hash_name: str
    #: the CSR, made at the device reset (None: not reset yet)
    csr: bytes | None = None


@dataclass(frozen=True)
class CsrOutcome:
    """A CSR, or ``csr`` None: answer ERROR(ResetRequired) with ``tag`` as its data."""

    csr: bytes | None
    tag: int = 0


@dataclass
class _Pending:
    """Installs waiting for a device reset: (slot, key pair) -> chain (None: an erase)."""

    certs: dict[tuple[int, int], SlotCert | None] = field(default_factory=dict)
    csrs: dict[int, PendingCsr] = field(default_factory=dict)


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Provisioning:
    """The key pairs and slot certificates of one device, persisted (module docstring)."""

    def __init__(
        self,
        key_pairs: Iterable[KeyPair],
        slot_certs: Iterable[SlotCert],
        *,
        supported_mask: int,
        extra_keys: Iterable[SlotKey] = (),
        challenge_opaque_data: bytes = b"",
        settings: ProvisioningSettings | None = None,
        store: StateStore | None = None,
        device_name: str = "",
        wall_clock: Callable[[], datetime.datetime] = _utc_now,
    ) -> None:
        self._lock = threading.RLock()
        self.settings = settings or ProvisioningSettings()
        self.store: StateStore = store if store is not None else MemoryStore()
        self.device_name = device_name
        self.wall_clock = wall_clock
        self.supported_mask = supported_mask & 0xFF
        self._profile_pairs = {kp.key_pair_id: kp for kp in key_pairs}
        ids = sorted(self._profile_pairs)
        if ids != list(range(1, len(ids) + 1)):
            raise StateError(f"key pair IDs must be 1..{len(ids)}, got {ids}")
        self._profile_certs = {(c.slot_id, c.key_pair_id): c for c in slot_certs}
        self._extra_keys = list(extra_keys)
        self._opaque = challenge_opaque_data
        self._pairs = dict(self._profile_pairs)
        self._certs = dict(self._profile_certs)
        #: generated-at-start keys to keep in the store (a CSR was made for them)
        self._keep_ephemeral: set[int] = set()
        self._pending = _Pending()
        self._notify: Notify | None = None
        self._on_identity: Callable[[Identity], None] | None = None
        self.identity = self._build_identity()

    # ---- wiring ----------------------------------------------------------------------

    def bind(self, notify: Notify | None, on_identity: Callable[[Identity], None]) -> None:
        """Where changes are announced (``Device.notify``) and where the identity goes."""
        self._notify = notify
        self._on_identity = on_identity
        on_identity(self.identity)

    def _announce(self, what: str, detail: dict[str, Any]) -> None:
        if self._notify is not None:
            self._notify(what, detail)

    # ---- reading ---------------------------------------------------------------------

    @property
    def total_key_pairs(self) -> int:
        return len(self._profile_pairs)

    def key_pair(self, key_pair_id: int) -> KeyPair | None:
        with self._lock:
            return self._pairs.get(key_pair_id)

    def key_pairs(self) -> list[KeyPair]:
        with self._lock:
            return [self._pairs[i] for i in sorted(self._pairs)]

    def slot_certs(self) -> list[SlotCert]:
        with self._lock:
            return [self._certs[k] for k in sorted(self._certs)]

    @property
    def reset_pending_slots(self) -> int:
        """Slots with an install waiting for a device reset (GET_DIGESTS and their
        GET_CERTIFICATE answer ResetRequired until then)."""
        with self._lock:
            mask = 0
            for slot, _kp in self._pending.certs:
                mask |= 1 << slot
            return mask

    def pending_csr_tags(self) -> list[int]:
        with self._lock:
            return sorted(self._pending.csrs)

    def key_pair_for_slot(self, slot_id: int, base_asym: int) -> KeyPair | None:
        """The key pair whose certificate slot ``slot_id`` serves for ``base_asym``."""
        key = self.identity.key_for(slot_id, base_asym)
        if key is None:
            return None
        return self.key_pair(key.key_pair_id)

    # ---- identity ----------------------------------------------------------------------

    def _build_identity(self) -> Identity:
        keys: list[SlotKey] = []
        for (slot, kpid), cert in sorted(self._certs.items()):
            kp = self._pairs.get(kpid)
            if kp is None or kp.key is None or not kp.assoc_slots >> slot & 1:
                continue
            keys.append(
                SlotKey(
                    slot_id=slot,
                    key=kp.key,
                    certs_der=cert.certs_der,
                    asym_mask=kp.base_asym_mask,
                    key_pair_id=kpid,
                    certificate_info=cert.cert_model,
                    key_usage=kp.key_usage,
                    origin=cert.origin,
                )
            )
        for extra in self._extra_keys:
            kp = self._pairs.get(extra.key_pair_id)
            if kp is not None and kp.key is None:
                continue
            usage = kp.key_usage if kp is not None else extra.key_usage
            keys.append(replace(extra, key_usage=usage, _cache={}))
        identity = Identity(keys, self.supported_mask)
        identity.challenge_opaque_data = self._opaque
        return identity

    def _commit(self, reason: str) -> None:
        """Persist, then publish the new identity (caller holds the lock)."""
        self._save()
        self.identity = self._build_identity()
        if self._on_identity is not None:
            self._on_identity(self.identity)
        log.info("%s: %s", self.device_name or "device", reason)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """Changes under it are undone if anything fails (the store could not write):
        memory and store never disagree.  The caller holds the lock."""
        saved = (
            dict(self._pairs),
            dict(self._certs),
            dict(self._pending.certs),
            {t: replace(p) for t, p in self._pending.csrs.items()},
        )
        try:
            yield
        except BaseException:
            self._pairs, self._certs = saved[0], saved[1]
            self._pending.certs, self._pending.csrs = saved[2], saved[3]
            raise

    # ---- SET_CERTIFICATE ----------------------------------------------------------------

    def _require_slot(self, slot_id: int) -> None:
        if slot_id >= SLOT_COUNT:
            raise _invalid(f"SlotID {slot_id} is not 0..7")
        if not self.supported_mask >> slot_id & 1:
            have = ", ".join(str(s) for s in range(8) if self.supported_mask >> s & 1)
            raise _invalid(f"slot {slot_id} does not exist on this device (slots {have})")

    def _pair_by_public_key(self, spki: bytes) -> KeyPair | None:
        for kp in self._pairs.values():
            if kp.key is not None and kp.public_key_der() == spki:
                return kp
        return None

    def set_certificate(
        self,
        *,
        slot_id: int,
        certs_der: list[bytes],
        spdm_version: int,
        base_asym: int,
        key_pair_id: int = 0,
        cert_model: int = int(CertificateInfo.DEVICE_CERT),
        reset_capable: bool = False,
    ) -> bool:
        """Provision ``certs_der`` (root first) into ``slot_id``; True when the install
        waits for a device reset (ERROR ResetRequired).

        ``key_pair_id`` 0 (no multi-key connection): the key pair is the one whose key is
        the leaf's.  Checks: the slot exists; the chain passes
        :func:`emulator.x509.checks.check_provisioned_chain` (Unspecified, as libspdm);
        the leaf key is the key pair's and signs with the negotiated ``base_asym``; the
        key pair is associated with the slot, or with none yet (it then is, unless it is
        not SHAREABLE and already backs another slot).
        """
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        self._require_slot(slot_id)
        if cert_model == CertificateInfo.ALIAS_CERT:
            raise _invalid(
                "SetCertModel AliasCert: this device does not derive alias certificates "
                "(provision the DeviceCert or GenericCert model)"
            )
        if cert_model not in (CertificateInfo.DEVICE_CERT, CertificateInfo.GENERIC_CERT):
            raise _invalid(f"SetCertModel {cert_model} is not 1 (DeviceCert) or 3 (GenericCert)")
        try:
            certs = check_provisioned_chain(
                certs_der,
                now=self.wall_clock(),
                spdm_version=spdm_version,
                generic=cert_model == CertificateInfo.GENERIC_CERT,
            )
        except CertError as exc:
            raise ProvisioningError(ErrorCode.Unspecified, f"certificate chain: {exc}") from None
        leaf_spki = (
            certs[-1].public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        )
        with self._lock, self._transaction():
            if key_pair_id:
                kp = self._pairs.get(key_pair_id)
                if kp is None:
                    raise _invalid(f"KeyPairID {key_pair_id} is not 1..{self.total_key_pairs}")
                if kp.key is None:
                    raise _invalid(f"key pair {key_pair_id} has no key (erased or not generated)")
                if kp.public_key_der() != leaf_spki:
                    raise _invalid(
                        f"the leaf certificate's public key is not the key of key pair "
                        f"{key_pair_id}"
                    )
            else:
                found = self._pair_by_public_key(leaf_spki)
                if found is None:
                    raise _invalid(
                        "the leaf certificate's public key is none of this device's key pairs "
                        "(certify a key from GET_CSR)"
                    )
                kp = found
            if not kp.serves(base_asym):
                raise _invalid(
                    f"key pair {kp.key_pair_id} does not sign with the negotiated BaseAsymAlgo "
                    f"0x{base_asym:X}"
                )
            self._check_association(kp, slot_id)
            cert = SlotCert(
                slot_id, kp.key_pair_id, tuple(certs_der), int(cert_model), "SET_CERTIFICATE"
            )
            if reset_capable and self.settings.set_certificate_needs_reset:
                self._pending.certs[(slot_id, kp.key_pair_id)] = cert
                self._save()
                log.info("slot %d: certificate chain stored, installed at the next reset", slot_id)
                return True
            self._install(cert)
            self._commit(f"slot {slot_id}: certificate chain of key pair {kp.key_pair_id} set")
        self._announce_certificate(1 << slot_id, "set")
        return False

    def _check_association(self, kp: KeyPair, slot_id: int) -> None:
        bit = 1 << slot_id
        if kp.assoc_slots & bit or kp.assoc_slots == 0:
            return
        if not kp.capabilities & KeyPairCap.SHAREABLE:
            slots = ", ".join(str(s) for s in range(8) if kp.assoc_slots >> s & 1)
            raise _invalid(
                f"key pair {kp.key_pair_id} backs slot(s) {slots} and is not shareable "
                f"(no SHAREABLE_CAP): it cannot back slot {slot_id} too"
            )

    def _install(self, cert: SlotCert) -> None:
        """Put a chain in place (caller holds the lock): the key pair is associated with
        the slot, and another key pair's chain of the same algorithm leaves the slot."""
        kp = self._pairs[cert.key_pair_id]
        bit = 1 << cert.slot_id
        for (slot, other_id), _old in list(self._certs.items()):
            if slot != cert.slot_id or other_id == kp.key_pair_id:
                continue
            other = self._pairs.get(other_id)
            if other is not None and other.base_asym_mask & kp.base_asym_mask:
                del self._certs[(slot, other_id)]
                self._pairs[other_id] = replace(other, assoc_slots=other.assoc_slots & ~bit)
        self._certs[(cert.slot_id, kp.key_pair_id)] = cert
        self._pairs[kp.key_pair_id] = replace(kp, assoc_slots=kp.assoc_slots | bit)

    def erase_certificate(
        self, *, slot_id: int, base_asym: int, key_pair_id: int = 0, reset_capable: bool = False
    ) -> bool:
        """SET_CERTIFICATE Erase (1.3): the slot's chain of ``key_pair_id`` (0: of the key
        pair serving ``base_asym`` there) is removed; the key pair stays associated.
        True when the erase waits for a device reset."""
        self._require_slot(slot_id)
        with self._lock, self._transaction():
            if key_pair_id:
                if key_pair_id not in self._pairs:
                    raise _invalid(f"KeyPairID {key_pair_id} is not 1..{self.total_key_pairs}")
                target = key_pair_id
            else:
                key = self.identity.key_for(slot_id, base_asym)
                target = key.key_pair_id if key is not None else 0
            if reset_capable and self.settings.set_certificate_needs_reset and target:
                self._pending.certs[(slot_id, target)] = None
                self._save()
                return True
            if target and (slot_id, target) in self._certs:
                del self._certs[(slot_id, target)]
                self._commit(f"slot {slot_id}: certificate chain of key pair {target} erased")
            else:
                return False
        self._announce_certificate(1 << slot_id, "erase")
        return False

    def _announce_certificate(self, slot_mask: int, change: str) -> None:
        self._announce(
            "certificate",
            {
                "change": change,
                "slots": [s for s in range(8) if slot_mask >> s & 1],
                "slot_mask": slot_mask,
            },
        )

    # ---- SET_KEY_PAIR_INFO ----------------------------------------------------------------

    def set_key_pair_info(
        self,
        *,
        operation: int,
        key_pair_id: int,
        desired_key_usage: int = 0,
        desired_asym: int = 0,
        desired_assoc: int = 0,
        key_rng: Callable[[int], bytes] | None = None,
    ) -> KeyPair:
        """SET_KEY_PAIR_INFO (DSP0274 1.3 10.15), with libspdm's checks in its order:
        unknown KeyPairID, Generate without GEN_KEY_CAP, Erase without ERASABLE_CAP, a new
        slot association without CERT_ASSOC_CAP, a key usage without KEY_USAGE_CAP or
        outside KeyUsageCapabilities, an algorithm without ASYM_ALGO_CAP, not one bit or
        outside AsymAlgoCapabilities, several slots without SHAREABLE_CAP: InvalidRequest;
        Erase or Generate of a key pair still backing a slot: OperationFailed.

        Change: a non-zero DesiredKeyUsage replaces the key usage; a new DesiredAsymAlgo
        discards the key (Generate makes one); with CERT_ASSOC_CAP the association becomes
        DesiredAssocCertSlotMask (slots left lose the key pair's certificate).  Erase:
        no key, usage or algorithm.  Generate: a new key of DesiredAsymAlgo (else the
        current or first capable algorithm) with DesiredKeyUsage (else the current one).
        """
        with self._lock, self._transaction():
            kp = self._pairs.get(key_pair_id)
            if kp is None or key_pair_id == 0:
                raise _invalid(f"KeyPairID {key_pair_id} is not 1..{self.total_key_pairs}")
            caps = kp.capabilities
            op = operation
            if op > KeyPairOperation.GENERATE:
                raise _invalid(f"Operation {op} is not 0 (change), 1 (erase) or 2 (generate)")
            if op == KeyPairOperation.ERASE:
                desired_key_usage = desired_asym = desired_assoc = 0
            if op == KeyPairOperation.GENERATE and not caps & KeyPairCap.GEN_KEY:
                raise _invalid(f"key pair {key_pair_id} cannot be generated (no GEN_KEY_CAP)")
            if op == KeyPairOperation.ERASE and not caps & KeyPairCap.ERASABLE:
                raise _invalid(f"key pair {key_pair_id} cannot be erased (no ERASABLE_CAP)")
            if (
                not caps & KeyPairCap.CERT_ASSOC
                and desired_assoc != 0
                and desired_assoc != kp.assoc_slots
            ):
                raise _invalid(
                    f"key pair {key_pair_id}: its slot association cannot change "
                    "(no CERT_ASSOC_CAP)"
                )
            if not caps & KeyPairCap.KEY_USAGE and desired_key_usage != 0:
                raise _invalid(f"key pair {key_pair_id}: its key usage cannot change")
            if desired_key_usage & ~kp.key_usage_capabilities:
                raise _invalid(
                    f"DesiredKeyUsage 0x{desired_key_usage:04X} is outside "
                    f"KeyUsageCapabilities 0x{kp.key_usage_capabilities:04X}"
                )
            if not caps & KeyPairCap.ASYM_ALGO and desired_asym != 0:
                raise _invalid(f"key pair {key_pair_id}: its algorithm cannot change")
            if desired_asym & (desired_asym - 1):
                raise _invalid(f"DesiredAsymAlgo 0x{desired_asym:X} has more than one bit")
            if desired_asym & ~kp.asym_capabilities or desired_asym & ~KEY_PAIR_ASYM_MASK:
                raise _invalid(
                    f"DesiredAsymAlgo 0x{desired_asym:X} is outside AsymAlgoCapabilities "
                    f"0x{kp.asym_capabilities:X}"
                )
            if not caps & KeyPairCap.SHAREABLE and desired_assoc & (desired_assoc - 1):
                raise _invalid(
                    f"key pair {key_pair_id} backs one slot at most (no SHAREABLE_CAP), "
                    f"DesiredAssocCertSlotMask 0x{desired_assoc:02X}"
                )
            if desired_assoc & ~self.supported_mask:
                raise _invalid(
                    f"DesiredAssocCertSlotMask 0x{desired_assoc:02X} names slots this device "
                    f"does not have (0x{self.supported_mask:02X})"
                )
            if op in (KeyPairOperation.ERASE, KeyPairOperation.GENERATE) and kp.assoc_slots:
                raise _failed(
                    f"key pair {key_pair_id} still backs slot mask 0x{kp.assoc_slots:02X}: "
                    "disassociate it first"
                )
            new = self._apply_key_pair(
                kp, op, desired_key_usage, desired_asym, desired_assoc, key_rng
            )
            self._commit(f"key pair {key_pair_id}: {KeyPairOperation(op).name.lower()}")
        self._announce("key_pair", {"change": KeyPairOperation(op).name.lower(), **new.describe()})
        return new

    def _apply_key_pair(
        self,
        kp: KeyPair,
        op: int,
        usage: int,
        asym: int,
        assoc: int,
        key_rng: Callable[[int], bytes] | None,
    ) -> KeyPair:
        kpid = kp.key_pair_id
        if op == KeyPairOperation.ERASE:
            new = replace(kp, key=None, key_usage=0, asym=0, origin="erased by SET_KEY_PAIR_INFO")
        elif op == KeyPairOperation.GENERATE:
            bit = asym or kp.asym or (kp.asym_capabilities & -kp.asym_capabilities)
            name = next((n for n, b in KEY_PAIR_ASYM_NAMES.items() if b == bit), None)
            if name is None:
                raise _failed(f"key pair {kpid}: no algorithm to generate a key with")
            try:
                key = generate_private_key(name, key_rng)
            except (CertError, CryptoError, ValueError) as exc:
                raise _failed(f"key pair {kpid}: generating a {name} key failed ({exc})") from None
            new = replace(
                kp,
                key=key,
                asym=bit,
                key_usage=usage or kp.key_usage,
                origin=f"generated {name} by SET_KEY_PAIR_INFO",
            )
        else:
            new = kp
            if usage:
                new = replace(new, key_usage=usage)
            if asym and asym != kp.asym:
                if kp.assoc_slots and (not kp.capabilities & KeyPairCap.CERT_ASSOC or assoc):
                    raise _failed(
                        f"key pair {kpid}: changing its algorithm discards its key, which "
                        "still backs a slot"
                    )
                new = replace(new, key=None, asym=asym, origin="algorithm changed")
        if kp.capabilities & KeyPairCap.CERT_ASSOC and op != KeyPairOperation.ERASE:
            for slot in range(SLOT_COUNT):
                if kp.assoc_slots >> slot & 1 and not assoc >> slot & 1:
                    self._certs.pop((slot, kpid), None)
            new = replace(new, assoc_slots=assoc)
        self._pairs[kpid] = new
        return new

    # ---- GET_CSR --------------------------------------------------------------------------

    def csr(
        self,
        *,
        key_pair_id: int,
        cert_model: int,
        requester_info: bytes,
        hash_name: str,
        spdm_version: int,
        tracking_tag: int = 0,
        overwrite: bool = False,
        reset_capable: bool = False,
    ) -> CsrOutcome:
        """A CSR for key pair ``key_pair_id`` (the caller resolved it) signed with its key;
        with ``csr_needs_reset`` (and CERT_INSTALL_RESET_CAP) the CSRTrackingTag flow
        of DSP0274 1.3 10.13: tag 0 -> ERROR(ResetRequired, a free tag) and the request
        waits (Overwrite: every waiting one is dropped first; no free tag: Busy); after a
        device reset the same request with that tag gets the CSR and frees the tag; a tag
        with no waiting request, or a different request under a waiting tag:
        InvalidRequest; before the reset: ResetRequired again.  Pre-1.3 there is one
        waiting request, matched by its content."""
        try:
            info = parse_requester_info(requester_info)
        except CertError as exc:
            raise _invalid(str(exc)) from None
        with self._lock, self._transaction():
            kp = self._pairs.get(key_pair_id)
            if kp is None:
                raise _invalid(f"KeyPairID {key_pair_id} is not 1..{self.total_key_pairs}")
            if kp.key is None:
                raise _invalid(
                    f"key pair {key_pair_id} has no key (erased or not generated): "
                    "SET_KEY_PAIR_INFO Generate makes one"
                )
            if kp.ephemeral and self._profile_pairs[kp.key_pair_id].key is kp.key:
                # a key generated at this start: keep it, or a certificate made from this
                # CSR would not fit after a restart
                self._keep_ephemeral.add(kp.key_pair_id)
                self._save()
            if not (reset_capable and self.settings.csr_needs_reset):
                if tracking_tag:
                    raise _invalid(
                        f"CSRTrackingTag {tracking_tag}: the device needs no reset for a CSR"
                    )
                return CsrOutcome(self._make_csr(kp, cert_model, info, hash_name))
            return self._csr_after_reset(
                kp, cert_model, requester_info, hash_name, spdm_version, tracking_tag, overwrite
            )

    def _make_csr(self, kp: KeyPair, cert_model: int, info: Any, hash_name: str) -> bytes:
        assert kp.key is not None
        subject = (
            info.subject
            if info is not None and info.has_subject
            else device_subject(
                f"{self.device_name or 'spdm-emulator'} key pair {kp.key_pair_id}",
                self.settings.csr_organization,
            )
        )
        attributes = (
            info.attributes
            if info is not None and info.attributes
            else default_attributes(cert_model == CertificateInfo.ALIAS_CERT)
        )
        try:
            return build_csr(kp.key, csr_hash_for(hash_name), subject, attributes)
        except (CertError, ValueError) as exc:
            raise ProvisioningError(ErrorCode.Unspecified, f"CSR: {exc}") from None

    def _csr_after_reset(
        self,
        kp: KeyPair,
        cert_model: int,
        requester_info: bytes,
        hash_name: str,
        spdm_version: int,
        tag: int,
        overwrite: bool,
    ) -> CsrOutcome:
        waiting = self._pending.csrs

        def matches(p: PendingCsr) -> bool:
            return (
                p.key_pair_id == kp.key_pair_id
                and p.cert_model == cert_model
                and p.requester_info == requester_info
                and p.hash_name == hash_name
            )

        if spdm_version < 0x13:
            cur = waiting.get(0)
            if cur is not None and matches(cur) and cur.csr is not None:
                del waiting[0]
                self._save()
                return CsrOutcome(cur.csr)
            waiting[0] = PendingCsr(0, kp.key_pair_id, cert_model, requester_info, hash_name)
            self._save()
            return CsrOutcome(None, 0)
        if overwrite and tag:
            raise _invalid("GET_CSR Overwrite with a non-zero CSRTrackingTag")
        if tag == 0:
            if overwrite:
                waiting.clear()
            free = [t for t in range(1, MAX_CSR_TRACKING_TAG + 1) if t not in waiting]
            if not free:
                raise ProvisioningError(
                    ErrorCode.Busy, "every CSRTrackingTag (1..7) has a CSR waiting for a reset"
                )
            new = PendingCsr(free[0], kp.key_pair_id, cert_model, requester_info, hash_name)
            waiting[new.tag] = new
            self._save()
            return CsrOutcome(None, new.tag)
        cur = waiting.get(tag)
        if cur is None:
            raise _invalid(f"CSRTrackingTag {tag}: no CSR request is waiting under it")
        if not matches(cur):
            raise _invalid(f"CSRTrackingTag {tag}: the request differs from the one it tracks")
        if cur.csr is None:
            return CsrOutcome(None, tag)
        del waiting[tag]
        self._save()
        return CsrOutcome(cur.csr, tag)

    # ---- device reset -----------------------------------------------------------------------

    def device_reset(self) -> dict[str, Any]:
        """A device reset: waiting installs take effect, waiting CSRs are generated."""
        slot_mask = 0
        with self._lock, self._transaction():
            installed = []
            for (slot, kpid), cert in sorted(self._pending.certs.items()):
                if kpid not in self._pairs:
                    continue
                if cert is None:
                    self._certs.pop((slot, kpid), None)
                else:
                    self._install(cert)
                installed.append(slot)
                slot_mask |= 1 << slot
            self._pending.certs.clear()
            generated = []
            for tag, p in sorted(self._pending.csrs.items()):
                kp = self._pairs.get(p.key_pair_id)
                if p.csr is None and kp is not None and kp.key is not None:
                    try:
                        info = parse_requester_info(p.requester_info)
                        p.csr = self._make_csr(kp, p.cert_model, info, p.hash_name)
                        generated.append(tag)
                    except (CertError, ProvisioningError) as exc:
                        log.warning("CSR tag %d cannot be generated: %s", tag, exc)
            if installed or generated:
                self._commit(f"device reset: slots {installed}, CSRs {generated}")
        if slot_mask:
            self._announce_certificate(slot_mask, "reset")
        return {"slots_installed": installed, "csrs_ready": generated}

    # ---- persistence -------------------------------------------------------------------

    def _document(self) -> dict[str, Any]:
        """What differs from the profile, as a JSON document (caller holds the lock)."""
        pairs: dict[str, Any] = {}
        for kpid, kp in sorted(self._pairs.items()):
            base = self._profile_pairs[kpid]
            keep = base.ephemeral and kpid in self._keep_ephemeral
            if kp == base and not keep:
                continue
            entry: dict[str, Any] = {
                "key_usage": kp.key_usage,
                "asym": kp.asym,
                "assoc_slots": kp.assoc_slots,
                "origin": kp.origin,
            }
            if kp.key is None:
                entry["key"] = None
            elif kp.key is not base.key or keep:
                entry["key"] = _pem(kp.key)
            pairs[str(kpid)] = entry
        slots: list[dict[str, Any]] = []
        for key in sorted(set(self._certs) | set(self._profile_certs)):
            cur = self._certs.get(key)
            if cur == self._profile_certs.get(key):
                continue
            slots.append(_cert_entry(key, cur))
        pending = [_cert_entry(k, c) for k, c in sorted(self._pending.certs.items())]
        csrs = [
            {
                "tag": p.tag,
                "key_pair_id": p.key_pair_id,
                "cert_model": p.cert_model,
                "requester_info": _b64(p.requester_info),
                "hash": p.hash_name,
                "csr": _b64(p.csr) if p.csr is not None else None,
            }
            for p in sorted(self._pending.csrs.values(), key=lambda p: p.tag)
        ]
        return {
            "format": STATE_FORMAT,
            "device": self.device_name,
            "key_pairs": pairs,
            "slots": slots,
            "pending_slots": pending,
            "pending_csrs": csrs,
        }

    def _save(self) -> None:
        self.store.save(self._document())

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary of the live state (``state show``, MQTT, logs)."""
        with self._lock:
            doc = self._document()
            return {
                "store": self.store.location,
                "key_pairs": [kp.describe() for kp in self.key_pairs()],
                "slots": [_describe_cert(c) for c in self.slot_certs()],
                "changed_key_pairs": sorted(int(k) for k in doc["key_pairs"]),
                "changed_slots": [(s["slot"], s["key_pair_id"]) for s in doc["slots"]],
                "pending_slots": [(s["slot"], s["key_pair_id"]) for s in doc["pending_slots"]],
                "pending_csr_tags": [c["tag"] for c in doc["pending_csrs"]],
            }

    def load(self) -> list[str]:
        """Apply the stored state over the profile (at start: a device reset follows).
        Entries that no longer fit the profile are skipped; returns why, one line each.
        StateError when the document is unreadable."""
        doc = self.store.load()
        if doc is None:
            return []
        problems: list[str] = []
        with self._lock:
            if doc.get("format") != STATE_FORMAT:
                raise StateError(
                    f"{self.store.location}: state format {doc.get('format')!r}, this emulator "
                    f"writes {STATE_FORMAT}; 'spdm-emulator state reset' starts anew"
                )
            for kpid_text, entry in dict(doc.get("key_pairs") or {}).items():
                try:
                    self._load_pair(int(kpid_text), entry)
                except (ValueError, TypeError, KeyError, EmulatorError) as exc:
                    problems.append(f"key pair {kpid_text}: {exc}")
            for entry in list(doc.get("slots") or []):
                try:
                    key, cert = _parse_cert_entry(entry)
                    self._accept_cert(key, cert)
                except (ValueError, TypeError, KeyError, EmulatorError) as exc:
                    problems.append(f"slot entry {entry!r:.60}: {exc}")
            for entry in list(doc.get("pending_slots") or []):
                try:
                    key, cert = _parse_cert_entry(entry)
                    if key[1] in self._pairs:
                        self._pending.certs[key] = cert
                except (ValueError, TypeError, KeyError, EmulatorError) as exc:
                    problems.append(f"pending slot entry: {exc}")
            for entry in list(doc.get("pending_csrs") or []):
                try:
                    p = PendingCsr(
                        tag=int(entry["tag"]),
                        key_pair_id=int(entry["key_pair_id"]),
                        cert_model=int(entry["cert_model"]),
                        requester_info=base64.b64decode(entry["requester_info"]),
                        hash_name=str(entry["hash"]),
                        csr=base64.b64decode(entry["csr"]) if entry.get("csr") else None,
                    )
                    if not 0 <= p.tag <= MAX_CSR_TRACKING_TAG:
                        raise ValueError(f"tag {p.tag} is not 0..7")
                    self._pending.csrs[p.tag] = p
                except (ValueError, TypeError, KeyError) as exc:
                    problems.append(f"pending CSR: {exc}")
            self.identity = self._build_identity()
            if self._on_identity is not None:
                self._on_identity(self.identity)
        for problem in problems:
            log.warning("%s: stored state ignored: %s", self.store.location, problem)
        return problems

    def _load_pair(self, kpid: int, entry: dict[str, Any]) -> None:
        base = self._profile_pairs.get(kpid)
        if base is None:
            raise ValueError(f"the profile has no key pair {kpid}")
        key: PrivateKey | None = base.key
        if "key" in entry:
            pem = entry["key"]
            key = None if pem is None else load_private_key(str(pem).encode("ascii"))
            if base.ephemeral and key is not None:
                # the generated key of an earlier start: it is the profile's from now on
                base = replace(base, key=key)
                self._profile_pairs[kpid] = base
                self._keep_ephemeral.add(kpid)
        asym = int(entry["asym"])
        if asym & ~KEY_PAIR_ASYM_MASK or asym & (asym - 1):
            raise ValueError(f"asym 0x{asym:X} is not one key pair algorithm")
        if key is not None and not base_asym_of(asym) & KeyPair(kpid, key).base_asym_mask:
            raise ValueError("the stored key does not match the stored algorithm")
        self._pairs[kpid] = replace(
            base,
            key=key,
            key_usage=int(entry["key_usage"]) & base.key_usage_capabilities,
            asym=asym,
            assoc_slots=int(entry["assoc_slots"]) & self.supported_mask,
            origin=str(entry.get("origin", "stored")),
        )

    def _accept_cert(self, key: tuple[int, int], cert: SlotCert | None) -> None:
        slot, kpid = key
        if kpid not in self._pairs or not self.supported_mask >> slot & 1:
            raise ValueError(f"slot {slot} / key pair {kpid} do not exist in the profile")
        if cert is None:
            self._certs.pop(key, None)
            return
        kp = self._pairs[kpid]
        if kp.key is not None:
            from cryptography import x509
            from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

            leaf = x509.load_der_x509_certificate(cert.certs_der[-1])
            spki = leaf.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
            if spki != kp.public_key_der():
                raise ValueError(f"the stored leaf is not the key of key pair {kpid}")
        self._certs[key] = cert


def _cert_entry(key: tuple[int, int], cert: SlotCert | None) -> dict[str, Any]:
    slot, kpid = key
    if cert is None:
        return {"slot": slot, "key_pair_id": kpid, "erased": True}
    return {
        "slot": slot,
        "key_pair_id": kpid,
        "cert_model": cert.cert_model,
        "certs": [_b64(c) for c in cert.certs_der],
        "origin": cert.origin,
    }


def _parse_cert_entry(entry: dict[str, Any]) -> tuple[tuple[int, int], SlotCert | None]:
    slot, kpid = int(entry["slot"]), int(entry["key_pair_id"])
    if not 0 <= slot < SLOT_COUNT:
        raise ValueError(f"slot {slot} is not 0..7")
    if entry.get("erased"):
        return (slot, kpid), None
    certs = tuple(base64.b64decode(c) for c in entry["certs"])
    if not certs:
        raise ValueError("no certificate")
    return (slot, kpid), SlotCert(
        slot, kpid, certs, int(entry["cert_model"]), str(entry.get("origin", "stored"))
    )


def _describe_cert(cert: SlotCert) -> dict[str, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    out: dict[str, Any] = {
        "slot": cert.slot_id,
        "key_pair_id": cert.key_pair_id,
        "cert_model": CertificateInfo(cert.cert_model).name.lower()
        if cert.cert_model in {int(m) for m in CertificateInfo}
        else cert.cert_model,
        "certificates": len(cert.certs_der),
        "origin": cert.origin,
    }
    try:
        leaf = x509.load_der_x509_certificate(cert.certs_der[-1])
        out["leaf_subject"] = leaf.subject.rfc4514_string()
        out["leaf_issuer"] = leaf.issuer.rfc4514_string()
        out["leaf_sha256"] = leaf.fingerprint(hashes.SHA256()).hex()
        out["not_after"] = f"{leaf.not_valid_after_utc:%Y-%m-%d}"
    except ValueError as exc:
        out["error"] = str(exc)
    return out
