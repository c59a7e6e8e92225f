"""The device's asymmetric key pairs (DSP0274 1.3 "Key pair", GET_KEY_PAIR_INFO /
SET_KEY_PAIR_INFO).

A key pair has a KeyPairID (1..TotalKeyPairs), a private key (none once erased, or
before a Generate), what can be changed about it (Capabilities), the key usages it may
have and has, the asymmetric algorithms it may use and uses, and the certificate slots
it is associated with (AssocCertSlotMask).  The profile declares them in
``[[key_pairs]]``; every ``[[slots]]`` key that no ``[[key_pairs]]`` entry names is a
key pair of its own (fixed: no capability), numbered after the declared ones.

Key pairs are immutable values: a change makes a new :class:`KeyPair`
(:mod:`emulator.device.provisioning` swaps them under its lock).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization

from emulator.codec.identity import KEY_USAGE_MASK
from emulator.codec.provisioning import (
    KEY_PAIR_ASYM_MASK,
    KeyPairAsymAlgo,
    base_asym_of,
    key_pair_asym_of,
)
from emulator.crypto import PrivateKey, asym_algo_for_key
from emulator.errors import ProfileError
from emulator.x509 import der

if TYPE_CHECKING:
    from emulator.profiles import KeyPairSection, Profile

__all__ = [
    "KEY_PAIR_ASYM_NAMES",
    "KeyPair",
    "KeyPairPlan",
    "algorithm_identifier",
    "plan_key_pairs",
]

#: profile names of the key pair asym bits (``generate`` algorithm names)
KEY_PAIR_ASYM_NAMES: dict[str, KeyPairAsymAlgo] = {
    "rsa-2048": KeyPairAsymAlgo.RSA2048,
    "rsa-3072": KeyPairAsymAlgo.RSA3072,
    "rsa-4096": KeyPairAsymAlgo.RSA4096,
    "ecdsa-p256": KeyPairAsymAlgo.ECC256,
    "ecdsa-p384": KeyPairAsymAlgo.ECC384,
    "ecdsa-p521": KeyPairAsymAlgo.ECC521,
    "ed25519": KeyPairAsymAlgo.ED25519,
    "ed448": KeyPairAsymAlgo.ED448,
}


def algorithm_identifier(key: PrivateKey) -> bytes:
    """PublicKeyInfo of KEY_PAIR_INFO: the DER AlgorithmIdentifier of the key's
    SubjectPublicKeyInfo (what libspdm's sample device reports, e.g. ``30 10 06 07
    2A8648CE3D0201 06 05 2B81040022`` for P-384)."""
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    top = der.expect(spki, 0, der.SEQUENCE, None, "SubjectPublicKeyInfo")
    first = der.read(spki, top.start, top.end, "SubjectPublicKeyInfo")
    return first.raw(spki)


@dataclass(frozen=True)
class KeyPair:
    """One key pair of the device."""

    key_pair_id: int
    key: PrivateKey | None
    #: KeyPairCap bits: what SET_KEY_PAIR_INFO may do with it
    capabilities: int = 0
    key_usage_capabilities: int = KEY_USAGE_MASK
    key_usage: int = 0
    #: KeyPairAsymAlgo bits it may use (a Generate or a Change may pick one of them)
    asym_capabilities: int = 0
    #: the KeyPairAsymAlgo bit it uses (0: none, after an erase)
    asym: int = 0
    assoc_slots: int = 0
    #: where it came from, for logs ("profile slots[0]", "generated ecdsa-p384", ...)
    origin: str = ""
    #: the key was generated at load without a seed: it is kept in the state store so
    #: that a CSR or certificate made for it still fits after a restart
    ephemeral: bool = False

    @property
    def base_asym_mask(self) -> int:
        """The BaseAsymAlgo bits the key can sign with (0 without a key)."""
        return int(asym_algo_for_key(self.key)) if self.key is not None else 0

    @property
    def public_key_info(self) -> bytes:
        return algorithm_identifier(self.key) if self.key is not None else b""

    @property
    def erased(self) -> bool:
        return self.key is None

    def serves(self, base_asym: int) -> bool:
        return bool(base_asym and self.base_asym_mask & base_asym)

    def public_key_der(self) -> bytes:
        if self.key is None:
            return b""
        return self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def with_changes(self, **fields: object) -> KeyPair:
        return replace(self, **fields)  # type: ignore[arg-type]

    def describe(self) -> dict[str, object]:
        """A JSON-able summary (``state show``, MQTT, logs)."""
        return {
            "key_pair_id": self.key_pair_id,
            "asym": _asym_name(self.asym),
            "asym_capabilities": [
                n for n, b in KEY_PAIR_ASYM_NAMES.items() if self.asym_capabilities & b
            ],
            "capabilities": self.capabilities,
            "key_usage": self.key_usage,
            "key_usage_capabilities": self.key_usage_capabilities,
            "assoc_slots": [s for s in range(8) if self.assoc_slots >> s & 1],
            "erased": self.erased,
            "origin": self.origin,
        }


def _asym_name(bit: int) -> str | None:
    for name, b in KEY_PAIR_ASYM_NAMES.items():
        if bit == b:
            return name
    return None


def base_asym_for(key_pair_asym: int) -> int:
    """BaseAsymAlgo bits of a key pair asym bit (for generating a key)."""
    return base_asym_of(key_pair_asym & KEY_PAIR_ASYM_MASK)


# --- from a profile ------------------------------------------------------------------------


def _spki(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass
class KeyPairPlan:
    """The key pairs of a profile before the slots are built: the KeyPairID of every
    provisioned [[slots]] entry and the [[key_pairs]] keys."""

    #: KeyPairID of each [[slots]] entry index (provisioned ones only)
    slot_ids: dict[int, int]
    #: KeyPairID -> (its [[key_pairs]] index or None, its key or None)
    pairs: dict[int, tuple[int | None, PrivateKey | None]]


def plan_key_pairs(
    profile: Profile,
    slot_keys: dict[int, PrivateKey],
    section_keys: Sequence[PrivateKey | None],
    source: str,
) -> KeyPairPlan:
    """Number the key pairs: a [[key_pairs]] entry keeps its ``id`` (else the next free
    one); a [[slots]] entry takes its ``key_pair_id``, else the key pair of an entry with
    the same key, else a new one after the declared ones.  KeyPairIDs are 1..N
    (TotalKeyPairs); ProfileError names the entry that breaks a rule."""
    pairs: dict[int, tuple[int | None, PrivateKey | None]] = {}
    sections = profile.key_pairs
    for i, sec in enumerate(sections):
        if sec.id is not None:
            pairs[sec.id] = (i, section_keys[i])

    def next_free() -> int:
        n = 1
        while n in pairs:
            n += 1
        return n

    for i, sec in enumerate(sections):
        if sec.id is None:
            pairs[next_free()] = (i, section_keys[i])
    slot_ids: dict[int, int] = {}
    by_spki: dict[bytes, int] = {}
    for kpid, (_idx, key) in pairs.items():
        if key is not None:
            spki = _spki(key)
            if spki in by_spki:
                raise ProfileError(
                    source, "key_pairs", f"key pairs {by_spki[spki]} and {kpid} hold the same key"
                )
            by_spki[spki] = kpid
    for i, entry in sorted(slot_keys.items()):
        where = f"slots[{i}].key_pair_id"
        spki = _spki(entry)
        wanted = profile.slots[i].key_pair_id
        if wanted is not None:
            have = pairs.get(wanted)
            if have is not None:
                if have[1] is None:
                    raise ProfileError(
                        source, where, f"key pair {wanted} has no key (it is generated later)"
                    )
                if _spki(have[1]) != spki:
                    raise ProfileError(
                        source, where, f"the slot's key is not the key of key pair {wanted}"
                    )
            elif spki in by_spki and by_spki[spki] != wanted:
                raise ProfileError(
                    source, where, f"the slot's key is key pair {by_spki[spki]}'s, not {wanted}"
                )
            else:
                pairs[wanted] = (None, entry)
                by_spki[spki] = wanted
            slot_ids[i] = wanted
    for i, entry in sorted(slot_keys.items()):
        if i in slot_ids:
            continue
        spki = _spki(entry)
        found = by_spki.get(spki)
        if found is None:
            found = next_free()
            pairs[found] = (None, entry)
            by_spki[spki] = found
        slot_ids[i] = found
    ids = sorted(pairs)
    if ids != list(range(1, len(ids) + 1)):
        missing = sorted(set(range(1, max(ids) + 1)) - set(ids))
        raise ProfileError(
            source,
            "key_pairs",
            f"KeyPairIDs must be 1..{len(ids)} (TotalKeyPairs); {missing[0]} is missing "
            f"(IDs in use: {', '.join(str(i) for i in ids)})",
        )
    return KeyPairPlan(slot_ids, pairs)


def build_key_pairs(
    profile: Profile,
    plan: KeyPairPlan,
    slot_usage: dict[int, int],
    slot_masks: dict[int, int],
) -> list[KeyPair]:
    """The :class:`KeyPair` of every KeyPairID of ``plan``: a [[key_pairs]] entry with
    its capabilities and usages; an implicit one (a slot key) fixed, with the slot's key
    usage.  ``slot_usage`` / ``slot_masks``: KeyPairID -> key usage of its slots / the
    slots it backs (0..7)."""
    from emulator.codec.identity import KEY_USAGE_MASK, key_usage_bits

    out: list[KeyPair] = []
    for kpid in sorted(plan.pairs):
        idx, key = plan.pairs[kpid]
        asym = key_pair_asym_of(int(asym_algo_for_key(key))) if key is not None else 0
        if idx is None:
            usage = slot_usage.get(kpid, 0)
            out.append(
                KeyPair(
                    key_pair_id=kpid,
                    key=key,
                    capabilities=0,
                    key_usage_capabilities=usage,
                    key_usage=usage,
                    asym_capabilities=asym,
                    asym=asym,
                    assoc_slots=slot_masks.get(kpid, 0),
                    origin="[[slots]] key",
                )
            )
            continue
        sec: KeyPairSection = profile.key_pairs[idx]
        caps = sec.capability_bits
        if sec.key_usage is not None:
            usage = key_usage_bits(sec.key_usage)
        else:
            usage = slot_usage.get(kpid, 0)
        usage_caps = (
            key_usage_bits(sec.key_usage_capabilities)
            if sec.key_usage_capabilities is not None
            else (KEY_USAGE_MASK if caps & 0x08 else usage)
        )
        if sec.asym_capabilities is not None:
            asym_caps = 0
            for name in sec.asym_capabilities:
                asym_caps |= KEY_PAIR_ASYM_NAMES[name]
        elif sec.generate is not None:
            asym_caps = KEY_PAIR_ASYM_NAMES[sec.generate]
        else:
            asym_caps = asym
        if asym and not asym & asym_caps:
            raise ProfileError(
                profile.source,
                f"key_pairs[{idx}].asym_capabilities",
                "does not include the algorithm of the key pair's key",
            )
        out.append(
            KeyPair(
                key_pair_id=kpid,
                key=key,
                capabilities=caps,
                key_usage_capabilities=usage_caps | usage,
                key_usage=usage,
                asym_capabilities=asym_caps,
                asym=asym,
                assoc_slots=slot_masks.get(kpid, 0),
                origin=sec.description or f"[[key_pairs]] {idx}",
                ephemeral=sec.generate is not None and profile.determinism.seed is None,
            )
        )
    return out
