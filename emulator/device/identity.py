"""Device identity: certificate slots, their keys, and signing (DSP0274 "Certificate slots").

A profile's ``[[slots]]`` entries become :class:`SlotKey` objects held by one
:class:`Identity` per device.  One entry is one private key and its chain (root
first).  Several entries may share a slot ID when their keys are of different
algorithm families: for a connection, slot N holds the entry whose key can sign
with the negotiated BaseAsymAlgo (DMTF spdm-emu does the same: it loads the
chain of the negotiated algorithm after ALGORITHMS).  So one default device
authenticates whatever signature algorithm a requester offers, and ALGORITHMS
only selects an algorithm some provisioned slot can sign with
(:meth:`Identity.servable_asym`).

A key serves a set of BaseAsymAlgo bits: an RSA-3072 key serves RSASSA_3072 and
RSAPSS_3072, a P-384 key ECDSA_P384.  SlotID 0xFF is the raw public key of
PUB_KEY_ID_CAP (no chain; CHALLENGE hashes its SubjectPublicKeyInfo DER).

The SPDM certificate chain (Length, Reserved, RootHash, certificates) depends on
the negotiated hash, so it and its digest are built on demand and cached per
hash algorithm.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from emulator.codec.constants import PQC_ASYM_SHIFT, BaseAsymAlgo, PqcAsymAlgo
from emulator.codec.identity import PUBLIC_KEY_SLOT, SLOT_COUNT, CertificateInfo, KeyUsage
from emulator.crypto import PrivateKey, asym_algo_for_key, digest, hash_name, spdm_sign
from emulator.device.random import SeededRandom
from emulator.errors import CryptoError, ProfileError
from emulator.x509.chain import CertError, spdm_cert_chain, split_der_chain
from emulator.x509.files import load_chain
from emulator.x509.generate import generate_chain
from emulator.x509.model import PciIds

if TYPE_CHECKING:
    from emulator.device.keypairs import KeyPairPlan
    from emulator.profiles import Profile, SlotSection

__all__ = [
    "CERT_MODELS",
    "DEFAULT_KEY_USAGE",
    "Identity",
    "SlotKey",
    "asym_names",
    "build_identity",
]

#: Profile ``cert_model`` names -> CertificateInfo CertModel.
CERT_MODELS: dict[str, CertificateInfo] = {
    "device": CertificateInfo.DEVICE_CERT,
    "alias": CertificateInfo.ALIAS_CERT,
    "generic": CertificateInfo.GENERIC_CERT,
}
#: KeyUsageMask of a slot when the profile does not say (every SPDM use of the key).
DEFAULT_KEY_USAGE = int(
    KeyUsage.KEY_EX | KeyUsage.CHALLENGE | KeyUsage.MEASUREMENT | KeyUsage.ENDPOINT_INFO
)


def asym_names(mask: int) -> str:
    """``"RSASSA_3072, RSAPSS_3072"`` for a mask of signature ids (BaseAsymAlgo bits and
    PqcAsymAlgo bits << 32, e.g. ``"ML_DSA_65"``)."""
    names = [m.name or "?" for m in BaseAsymAlgo if m & mask]
    names += [m.name or "?" for m in PqcAsymAlgo if (m << PQC_ASYM_SHIFT) & mask]
    return ", ".join(names) or "none"


@dataclass
class SlotKey:
    """One private key and its certificate chain, provisioned in slot ``slot_id``.

    ``certs_der`` is root first; it is empty for the raw public key (slot 0xFF).
    ``asym_mask`` is every BaseAsymAlgo bit the key can sign with.
    """

    slot_id: int
    key: PrivateKey
    certs_der: tuple[bytes, ...]
    asym_mask: int
    key_pair_id: int = 0
    certificate_info: int = int(CertificateInfo.DEVICE_CERT)
    key_usage: int = DEFAULT_KEY_USAGE
    #: where it came from (a path or "generated ecdsa-p384"), for logs and errors
    origin: str = ""
    _cache: dict[tuple[str, int], bytes] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def serves(self, asym: int) -> bool:
        """True if the key can sign with the BaseAsymAlgo bit ``asym``."""
        return bool(asym and self.asym_mask & asym)

    @property
    def public_key_der(self) -> bytes:
        """The key's SubjectPublicKeyInfo DER (what PUB_KEY_ID_CAP provisions)."""
        return self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def provisioned_data(self, hash_algo: int) -> bytes:
        """What the slot's digest covers: the SPDM certificate chain for ``hash_algo``
        (DSP0274 "Certificate chain format"), or the public key DER for slot 0xFF."""
        if self.slot_id == PUBLIC_KEY_SLOT:
            return self.public_key_der
        key = ("chain", int(hash_algo))
        with self._lock:
            chain = self._cache.get(key)
        if chain is None:
            try:
                chain = spdm_cert_chain(hash_name(hash_algo), list(self.certs_der))
            except CertError as exc:
                raise CryptoError(f"slot {self.slot_id}: {exc}") from None
            with self._lock:
                self._cache[key] = chain
        return chain

    def spdm_chain(self, hash_algo: int) -> bytes:
        """The SPDM certificate chain in the negotiated hash (cached per hash)."""
        return self.provisioned_data(hash_algo)

    def digest(self, hash_algo: int) -> bytes:
        """Hash(SPDM certificate chain): the DIGESTS entry and CHALLENGE_AUTH CertChainHash."""
        key = ("digest", int(hash_algo))
        with self._lock:
            value = self._cache.get(key)
        if value is None:
            value = digest(hash_algo, self.provisioned_data(hash_algo))
            with self._lock:
                self._cache[key] = value
        return value

    def sign(self, version: int, asym: int, hash_algo: int, context: str, message: bytes) -> bytes:
        """Sign transcript ``message`` as DSP0274 defines it for ``version``
        (1.0/1.1: the message; 1.2+: combined prefix + Hash(message))."""
        return spdm_sign(version, asym, hash_algo, self.key, context, message)


class Identity:
    """The certificate slots of one device (shared by its connections).

    ``supported_mask`` (the 1.3 SupportedSlotMask) has a bit for every slot the
    profile declares, provisioned or not.
    """

    def __init__(self, keys: Iterable[SlotKey] = (), supported_mask: int = 0) -> None:
        self.keys: list[SlotKey] = sorted(keys, key=lambda k: k.slot_id)
        self.supported_mask = supported_mask & 0xFF
        for k in self.keys:
            if k.slot_id < SLOT_COUNT:
                self.supported_mask |= 1 << k.slot_id
        #: OpaqueData of CHALLENGE_AUTH (sent when the version/opaque format allows)
        self.challenge_opaque_data = b""
        #: how the profile numbered its key pairs (emulator.device.keypairs), when built
        #: from a profile
        self.key_pair_plan: KeyPairPlan | None = None

    def copy(self) -> Identity:
        """An independent identity with the same keys (each device owns its slots)."""
        out = Identity(list(self.keys), self.supported_mask)
        out.challenge_opaque_data = self.challenge_opaque_data
        out.key_pair_plan = self.key_pair_plan
        return out

    @property
    def empty(self) -> bool:
        return not self.keys

    def servable_asym(self) -> int:
        """Every BaseAsymAlgo bit some provisioned key can sign with."""
        mask = 0
        for k in self.keys:
            mask |= k.asym_mask
        return mask

    def key_for(self, slot_id: int, asym: int) -> SlotKey | None:
        """The key of ``slot_id`` that signs with ``asym`` (None: empty for this algorithm)."""
        if not asym:
            return None
        for k in self.keys:  # SlotKey.serves, inline: this runs for every identity request
            if k.slot_id == slot_id and k.asym_mask & asym:
                return k
        return None

    def provisioned(self, asym: int) -> list[SlotKey]:
        """The certificate slots (0..7) provisioned for ``asym``, by slot ID."""
        if not asym:
            return []
        return [k for k in self.keys if k.slot_id < SLOT_COUNT and k.asym_mask & asym]

    def provisioned_mask(self, asym: int) -> int:
        """ProvisionedSlotMask / slot mask for connections that negotiated ``asym``."""
        mask = 0
        for k in self.provisioned(asym):
            mask |= 1 << k.slot_id
        return mask


# --- building from a profile ------------------------------------------------------------------


def _key_usage(names: list[str] | None) -> int:
    if names is None:
        return DEFAULT_KEY_USAGE
    out = 0
    for n in names:
        out |= KeyUsage[n.strip().upper().replace("-", "_").removesuffix("_USE")]
    return out


def _pci_ids(profile: Profile) -> PciIds:
    p = profile.device.pci
    return PciIds(
        p.vendor_id,
        p.device_id,
        p.class_code,
        p.revision,
        p.subsystem_vendor_id,
        p.subsystem_id,
    )


def _load_certs(path: Path) -> list[bytes]:
    data = path.read_bytes()
    if b"-----BEGIN" in data:
        return [
            c.public_bytes(serialization.Encoding.DER)
            for c in x509.load_pem_x509_certificates(data)
        ]
    return split_der_chain(data)


#: validity of chains generated under a seed (so that they are reproducible)
GENERATED_NOT_BEFORE = datetime(2025, 1, 1, tzinfo=UTC)
GENERATED_NOT_AFTER = datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC)


def _load_entry(
    profile: Profile, index: int, entry: SlotSection, source: str
) -> tuple[PrivateKey, tuple[bytes, ...], int, str]:
    """(key, certs, default CertificateInfo, origin) of one provisioned entry."""
    where = f"slots[{index}]"
    base = profile.base_dir
    if entry.generate is not None:
        model: Literal["device", "alias"] = "alias" if entry.cert_model == "alias" else "device"
        seed = profile.determinism.seed
        seeded: dict[str, Any] = {}
        if seed is not None:
            # [determinism] seed: the same profile generates the same chain (EC/EdDSA keys
            # derived from the seed, fixed serials and dates; RSA keys stay random)
            stream = SeededRandom(seed, f"slot{entry.id}/{index}/{entry.generate}")
            seeded = dict(
                key_rng=stream,
                serial_start=0x1000 + 0x10 * index,
                not_before=GENERATED_NOT_BEFORE,
                not_after=GENERATED_NOT_AFTER,
            )
        try:
            chain = generate_chain(
                entry.generate,
                pci_ids=_pci_ids(profile) if entry.id != PUBLIC_KEY_SLOT else None,
                model=model,
                label=f"slot{entry.id}" if entry.id != PUBLIC_KEY_SLOT else "pubkey",
                **seeded,
            )
        except CertError as exc:
            raise ProfileError(source, f"{where}.generate", str(exc)) from None
        certs = tuple(chain.cert_ders()) if entry.id != PUBLIC_KEY_SLOT else ()
        info = CERT_MODELS[model]
        return chain.leaf_key, certs, int(info), f"generated {entry.generate}"
    if entry.chain is None:  # raw public key (slot 0xFF) given by its private key
        assert entry.key is not None
        key_path = (base / entry.key).resolve()
        key = _read_key(key_path, source, f"{where}.key")
        return key, (), int(CertificateInfo.NONE), str(key_path)
    path = (base / entry.chain).resolve()
    if not path.exists():
        raise ProfileError(source, f"{where}.chain", f"{path}: no such file or directory")
    if path.is_dir():
        if entry.key is None:
            for name in ("chain.der", "leaf.key.pem"):
                if not (path / name).is_file():
                    raise ProfileError(
                        source,
                        f"{where}.chain",
                        f"{path}: missing {name} (a slot directory "
                        "holds chain.der and leaf.key.pem)",
                    )
            try:
                loaded = load_chain(path, verify=False)
            except CertError as exc:
                raise ProfileError(source, f"{where}.chain", str(exc)) from None
            info = CERT_MODELS.get(loaded.model, CertificateInfo.DEVICE_CERT)
            certs = tuple(loaded.cert_ders())
            key = loaded.leaf_key
            _check_match(key, certs, source, f"{where}.chain", path / "leaf.key.pem")
            return key, certs, int(info), str(path)
        chain_path = path / "chain.der"
    else:
        chain_path = path
    if entry.key is None:
        raise ProfileError(
            source, f"{where}.key", "a chain file needs the leaf's private key in 'key'"
        )
    key_path = (base / entry.key).resolve()
    key = _read_key(key_path, source, f"{where}.key")
    try:
        certs = tuple(_load_certs(chain_path))
    except OSError as exc:
        raise ProfileError(
            source, f"{where}.chain", f"{chain_path}: cannot read ({exc.strerror})"
        ) from None
    except (ValueError, CertError) as exc:
        raise ProfileError(
            source, f"{where}.chain", f"{chain_path}: not a certificate chain ({exc})"
        ) from None
    _check_match(key, certs, source, f"{where}.key", key_path)
    return key, certs, int(CertificateInfo.DEVICE_CERT), str(chain_path)


def _read_key(path: Path, source: str, field_name: str) -> PrivateKey:
    from emulator.crypto import load_private_key

    if not path.is_file():
        raise ProfileError(source, field_name, f"{path}: no such file")
    try:
        return load_private_key(path)
    except CryptoError as exc:
        raise ProfileError(source, field_name, str(exc)) from None


def _check_match(
    key: PrivateKey, certs: tuple[bytes, ...], source: str, field_name: str, key_path: Path
) -> None:
    try:
        leaf = x509.load_der_x509_certificate(certs[-1])
        leaf_pub = leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except ValueError as exc:
        raise ProfileError(
            source, field_name, f"the leaf certificate does not parse ({exc})"
        ) from None
    key_pub = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if leaf_pub != key_pub:
        raise ProfileError(
            source,
            field_name,
            f"{key_path}: the private key does not match the leaf certificate's public key "
            f"({leaf.subject.rfc4514_string()})",
        )


def _section_keys(profile: Profile, source: str) -> list[PrivateKey | None]:
    """The key of each [[key_pairs]] entry: read, generated (seeded with [determinism]
    seed), or None (made later by SET_KEY_PAIR_INFO Generate)."""
    from emulator.x509.generate import generate_private_key

    out: list[PrivateKey | None] = []
    for i, sec in enumerate(profile.key_pairs):
        if sec.key is not None:
            out.append(
                _read_key((profile.base_dir / sec.key).resolve(), source, f"key_pairs[{i}].key")
            )
        elif sec.generate is not None:
            seed = profile.determinism.seed
            rng = SeededRandom(seed, f"key_pair/{i}/{sec.generate}") if seed is not None else None
            try:
                out.append(generate_private_key(sec.generate, rng))
            except CertError as exc:
                raise ProfileError(source, f"key_pairs[{i}].generate", str(exc)) from None
        else:
            out.append(None)
    return out


@dataclass
class _Loaded:
    index: int
    entry: SlotSection
    key: PrivateKey
    certs: tuple[bytes, ...]
    info: int
    origin: str
    mask: int


def build_identity(profile: Profile, source: str = "<profile>") -> Identity:
    """Load (or generate) every ``[[slots]]`` entry; ProfileError names the bad entry.

    Checks: files exist, the key matches the leaf, the key's algorithms are in
    ``[algorithms] base_asym``, no two entries of one slot serve the same
    algorithm, and every advertised base_asym is served by some slot.  Each key is
    a key pair (:func:`emulator.device.keypairs.plan_key_pairs` numbers them with the
    [[key_pairs]] entries); the plan is kept on the identity (``key_pair_plan``).
    """
    from emulator.codec.identity import key_usage_bits
    from emulator.device.keypairs import plan_key_pairs

    offered = 0
    for bit in profile.algo_list("base_asym"):
        offered |= bit
    for bit in profile.algo_list("pqc_asym"):
        offered |= int(bit) << PQC_ASYM_SHIFT
    loaded: list[_Loaded] = []
    supported = 0
    for i, entry in enumerate(profile.slots):
        where = f"slots[{i}]"
        if entry.id < SLOT_COUNT:
            supported |= 1 << entry.id
        if not entry.provisioned:
            continue
        key, certs, info, origin = _load_entry(profile, i, entry, source)
        mask = int(asym_algo_for_key(key))
        if not mask:
            raise ProfileError(source, where, f"{origin}: the key's algorithm is not supported")
        if not mask & offered:
            raise ProfileError(
                source,
                where,
                f"the key of slot {entry.id} signs with {asym_names(mask)}, none of which is "
                "in [algorithms] base_asym or pqc_asym",
            )
        for other in loaded:
            if other.entry.id == entry.id and other.mask & mask:
                raise ProfileError(
                    source,
                    f"{where}.id",
                    f"slot {entry.id} already has a key for {asym_names(other.mask & mask)} "
                    f"({other.origin})",
                )
        if entry.cert_model is not None:
            info = int(CERT_MODELS[entry.cert_model])
        loaded.append(_Loaded(i, entry, key, certs, info, origin, mask))
    plan = plan_key_pairs(
        profile, {x.index: x.key for x in loaded}, _section_keys(profile, source), source
    )
    # the key usage of each key pair: its [[key_pairs]] key_usage, else its slots' (which
    # must agree), else every SPDM use
    usage: dict[int, int] = {}
    for x in loaded:
        kpid = plan.slot_ids[x.index]
        idx = plan.pairs[kpid][0]
        sec_usage = profile.key_pairs[idx].key_usage if idx is not None else None
        if sec_usage is not None:
            want = key_usage_bits(sec_usage)
            if x.entry.key_usage is not None and _key_usage(x.entry.key_usage) != want:
                raise ProfileError(
                    source,
                    f"slots[{x.index}].key_usage",
                    f"differs from the key_usage of key pair {kpid} ([[key_pairs]])",
                )
        else:
            want = _key_usage(x.entry.key_usage)
        if kpid in usage and usage[kpid] != want and x.entry.key_usage is not None:
            raise ProfileError(
                source,
                f"slots[{x.index}].key_usage",
                f"key pair {kpid} backs several slots with different key_usage",
            )
        usage.setdefault(kpid, want)
    keys = [
        SlotKey(
            slot_id=x.entry.id,
            key=x.key,
            certs_der=x.certs,
            asym_mask=x.mask,
            key_pair_id=plan.slot_ids[x.index],
            certificate_info=x.info,
            key_usage=usage[plan.slot_ids[x.index]],
            origin=x.origin,
        )
        for x in loaded
    ]
    identity = Identity(keys, supported)
    identity.key_pair_plan = plan
    if keys:
        missing = offered & ~identity.servable_asym()
        if missing:
            raise ProfileError(
                source,
                "algorithms.base_asym",
                f"no [[slots]] key can sign with {asym_names(missing)}; add a slot with such "
                "a key or remove the algorithm",
            )
    return identity
