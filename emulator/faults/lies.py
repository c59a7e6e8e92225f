"""Material and per-exchange views for the lies that need the device's identity or
measurements (``lie:other_key``, ``lie:expired_chain``, ``lie:untrusted_chain``,
``lie:wrong_measurement``).

The request families read the device through ``r.device`` (``identity.key_for``,
``identity.provisioned``, ``measurements.snapshot`` / ``get``,
``measurement_summary_hash``).  For one exchange the engine swaps ``r.device`` (the
connection's reference, not the shared device) for a :class:`DeviceView` whose
identity or measurements lie consistently: DIGESTS, CERTIFICATE, CertChainHash and
the signature all agree with the lie, so the requester sees a well-formed answer
from a device that is not what it should be.  No family module needs a change.

* ``other_key``: the slot's chain is unchanged, signatures are made with another
  key of the same kind (valid signatures, wrong signer).
* ``untrusted_chain``: the chain is re-issued by new CA keys (same names, same
  extensions, the leaf keeps the device's public key): it verifies, but its root is
  not the one the requester trusts.
* ``expired_chain``: the same, with every certificate valid only from 2000-01-01 to
  2001-01-01 (the device's CA keys are not available to re-sign the real chain).
* ``wrong_measurement``: every measurement block's raw value has its last byte
  flipped; MEASUREMENTS (and the measurement summary hash) report it and sign it.

Keys are derived from the engine seed where the algorithm allows (EC, EdDSA), so
runs with the same seed give the same bytes; RSA keys are generated once per size.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, mldsa, rsa
from cryptography.x509.oid import ExtensionOID

from emulator.faults.model import LieKind
from emulator.x509.pqc import is_mldsa_certificate

#: lies told through a device view
VIEW_LIES = frozenset(
    {
        LieKind.OTHER_KEY,
        LieKind.EXPIRED_CHAIN,
        LieKind.UNTRUSTED_CHAIN,
        LieKind.WRONG_MEASUREMENT,
    }
)
EXPIRED_NOT_BEFORE = datetime(2000, 1, 1, tzinfo=UTC)
EXPIRED_NOT_AFTER = datetime(2001, 1, 1, tzinfo=UTC)


def _seed_int(seed: int, label: str, order: int) -> int:
    digest = hashlib.sha512(f"{seed}/{label}".encode()).digest()
    return int.from_bytes(digest, "big") % (order - 1) + 1


_CURVE_ORDERS = {
    "secp256r1": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "secp384r1": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
        "581A0DB248B0A77AECEC196ACCC52973",
        16,
    ),
    "secp521r1": int(
        "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFA51868783BF2F"
        "966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
        16,
    ),
}


class LieMaterial:
    """Substitute keys and chains, made once per engine and reused (thread-safe)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._cache: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()

    def _cached(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        value = make()
        with self._lock:
            return self._cache.setdefault(key, value)

    def other_key(self, like: Any) -> Any:
        """A private key of the same kind as ``like`` (curve / size), not ``like``."""
        if isinstance(like, ec.EllipticCurvePrivateKey):
            curve = like.curve
            order = _CURVE_ORDERS.get(curve.name)
            if order is None:
                return self._cached(("ec", curve.name), lambda: ec.generate_private_key(curve))
            return self._cached(
                ("ec", curve.name),
                lambda: ec.derive_private_key(
                    _seed_int(self.seed, f"other-key/{curve.name}", order), curve
                ),
            )
        if isinstance(like, rsa.RSAPrivateKey):
            size = like.key_size
            return self._cached(
                ("rsa", size),
                lambda: rsa.generate_private_key(public_exponent=65537, key_size=size),
            )
        if isinstance(like, ed25519.Ed25519PrivateKey):
            raw = hashlib.sha256(f"{self.seed}/other-key/ed25519".encode()).digest()
            return self._cached(
                ("ed25519",), lambda: ed25519.Ed25519PrivateKey.from_private_bytes(raw)
            )
        if isinstance(like, ed448.Ed448PrivateKey):
            raw = hashlib.shake_256(f"{self.seed}/other-key/ed448".encode()).digest(57)
            return self._cached(("ed448",), lambda: ed448.Ed448PrivateKey.from_private_bytes(raw))
        classes: tuple[Any, ...] = (
            mldsa.MLDSA44PrivateKey,
            mldsa.MLDSA65PrivateKey,
            mldsa.MLDSA87PrivateKey,
        )
        for cls in classes:
            if isinstance(like, cls):  # SPDM 1.4 ML-DSA: FIPS 204 KeyGen from a seeded xi
                xi = hashlib.sha256(f"{self.seed}/other-key/{cls.__name__}".encode()).digest()
                return self._cached((cls.__name__,), partial(cls.from_seed_bytes, xi))
        raise TypeError(f"no substitute for a {type(like).__name__}")

    def reissued_chain(self, certs_der: tuple[bytes, ...], expired: bool) -> tuple[bytes, ...]:
        """``certs_der`` (root first) re-issued by new CA keys; the leaf key is kept."""
        return self._cached(  # type: ignore[no-any-return]
            ("chain", expired, certs_der), lambda: _reissue(certs_der, expired, self.seed)
        )


def _reissue(certs_der: tuple[bytes, ...], expired: bool, seed: int) -> tuple[bytes, ...]:
    from cryptography.hazmat.primitives import serialization

    certs = [x509.load_der_x509_certificate(d) for d in certs_der]
    if is_mldsa_certificate(certs[-1]):
        return _reissue_mldsa(certs, expired, seed)
    order = _CURVE_ORDERS["secp256r1"]
    ca_keys = [
        ec.derive_private_key(
            _seed_int(seed, f"lie-ca/{expired}/{i}/{certs_der[i][:16].hex()}", order),
            ec.SECP256R1(),
        )
        for i in range(len(certs) - 1)
    ]
    out: list[bytes] = []
    for i, cert in enumerate(certs):
        is_leaf = i == len(certs) - 1
        public = cert.public_key() if is_leaf else ca_keys[i].public_key()
        signer = ca_keys[i - 1] if i else ca_keys[0]
        if expired:
            not_before, not_after = EXPIRED_NOT_BEFORE, EXPIRED_NOT_AFTER
        else:
            not_before = cert.not_valid_before_utc
            not_after = cert.not_valid_after_utc
            if not_after <= datetime.now(UTC):
                not_after = datetime.now(UTC) + timedelta(days=3650)
        builder = (
            x509.CertificateBuilder()
            .subject_name(cert.subject)
            .issuer_name(cert.issuer)
            .public_key(public)
            .serial_number(cert.serial_number)
            .not_valid_before(not_before)
            .not_valid_after(not_after)
        )
        for ext in cert.extensions:
            if ext.oid == ExtensionOID.SUBJECT_KEY_IDENTIFIER:
                value: Any = x509.SubjectKeyIdentifier.from_public_key(public)
            elif ext.oid == ExtensionOID.AUTHORITY_KEY_IDENTIFIER:
                value = x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key())
            else:
                value = ext.value
            builder = builder.add_extension(value, ext.critical)
        out.append(builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
    return tuple(out)


def _validity(cert: x509.Certificate, expired: bool) -> tuple[datetime, datetime]:
    if expired:
        return EXPIRED_NOT_BEFORE, EXPIRED_NOT_AFTER
    not_after = cert.not_valid_after_utc
    if not_after <= datetime.now(UTC):
        not_after = datetime.now(UTC) + timedelta(days=3650)
    return cert.not_valid_before_utc, not_after


def _reissue_mldsa(certs: list[x509.Certificate], expired: bool, seed: int) -> tuple[bytes, ...]:
    """:func:`_reissue` for an SPDM 1.4 ML-DSA chain: new ML-DSA-65 CA keys (from the seed),
    each certificate built with stand-in keys and re-signed (emulator.x509.pqc)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519 as _ed

    from emulator.x509.pqc import mldsa_sign_certificate, subject_key_id

    ca_keys = [
        mldsa.MLDSA65PrivateKey.from_seed_bytes(
            hashlib.sha256(f"{seed}/lie-ca/{expired}/{i}/mldsa".encode()).digest()
        )
        for i in range(len(certs) - 1)
    ]
    stand_in = _ed.Ed25519PrivateKey.from_private_bytes(bytes(32))
    out: list[bytes] = []
    for i, cert in enumerate(certs):
        is_leaf = i == len(certs) - 1
        public: Any = cert.public_key() if is_leaf else ca_keys[i].public_key()
        signer = ca_keys[i - 1] if i else ca_keys[0]
        not_before, not_after = _validity(cert, expired)
        builder = (
            x509.CertificateBuilder()
            .subject_name(cert.subject)
            .issuer_name(cert.issuer)
            .public_key(stand_in.public_key())
            .serial_number(cert.serial_number)
            .not_valid_before(not_before)
            .not_valid_after(not_after)
        )
        for ext in cert.extensions:
            if ext.oid == ExtensionOID.SUBJECT_KEY_IDENTIFIER:
                value: Any = x509.SubjectKeyIdentifier(subject_key_id(public))
            elif ext.oid == ExtensionOID.AUTHORITY_KEY_IDENTIFIER:
                value = x509.AuthorityKeyIdentifier(subject_key_id(signer.public_key()), None, None)
            else:
                value = ext.value
            builder = builder.add_extension(value, ext.critical)
        signed = mldsa_sign_certificate(builder.sign(stand_in, None), public, signer)
        out.append(signed.public_bytes(serialization.Encoding.DER))
    return tuple(out)


class _LyingIdentity:
    """The device identity, with some slot keys replaced for this exchange."""

    def __init__(self, real: Any, lies: set[LieKind], material: LieMaterial, told: set[LieKind]):
        self._real = real
        self._lies = lies
        self._material = material
        self._told = told

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def _swap(self, key: Any) -> Any:
        if key is None:
            return None
        changes: dict[str, Any] = {}
        if LieKind.OTHER_KEY in self._lies:
            changes["key"] = self._material.other_key(key.key)
            self._told.add(LieKind.OTHER_KEY)
        if key.certs_der:
            for kind in (LieKind.EXPIRED_CHAIN, LieKind.UNTRUSTED_CHAIN):
                if kind in self._lies:
                    changes["certs_der"] = self._material.reissued_chain(
                        tuple(key.certs_der), kind is LieKind.EXPIRED_CHAIN
                    )
                    self._told.add(kind)
                    break
        if not changes:
            return key
        return replace(key, _cache={}, _lock=threading.Lock(), **changes)

    def key_for(self, slot_id: int, asym: int) -> Any:
        return self._swap(self._real.key_for(slot_id, asym))

    def provisioned(self, asym: int) -> list[Any]:
        return [self._swap(k) for k in self._real.provisioned(asym)]


class _LyingMeasurements:
    """The measurement store, every block's value altered (last byte ^ 0x01)."""

    def __init__(self, real: Any, told: set[LieKind]) -> None:
        from emulator.device.measurements import MeasurementStore

        self._real = real
        self._told = told
        blocks = [replace(b, value=_alter(b.value)) for b in real.snapshot()]
        self._store = MeasurementStore(blocks, fresh=getattr(real, "fresh", True))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def snapshot(self) -> Any:
        self._told.add(LieKind.WRONG_MEASUREMENT)
        return self._store.snapshot()

    def get(self, index: int) -> Any:
        self._told.add(LieKind.WRONG_MEASUREMENT)
        return self._store.get(index)

    def summary_hash(self, kind: int, meas_hash_algo: int, base_hash_algo: int) -> bytes:
        if kind:
            self._told.add(LieKind.WRONG_MEASUREMENT)
        return self._store.summary_hash(kind, meas_hash_algo, base_hash_algo)


def _alter(value: bytes) -> bytes:
    return value[:-1] + bytes([value[-1] ^ 0x01]) if value else b"\x01"


class DeviceView:
    """The shared device as one exchange sees it while a lie is told."""

    def __init__(
        self, device: Any, lies: set[LieKind], material: LieMaterial, told: set[LieKind]
    ) -> None:
        self._device = device
        if lies & {LieKind.OTHER_KEY, LieKind.EXPIRED_CHAIN, LieKind.UNTRUSTED_CHAIN}:
            self.identity = _LyingIdentity(device.identity, lies, material, told)
        if LieKind.WRONG_MEASUREMENT in lies and getattr(device, "measurements", None) is not None:
            self.measurements = _LyingMeasurements(device.measurements, told)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._device, name)

    def measurement_summary_hash(
        self, kind: int, meas_hash_algo: int, base_hash_algo: int
    ) -> bytes:
        store = self.__dict__.get("measurements")
        if store is None:
            result: bytes = self._device.measurement_summary_hash(
                kind, meas_hash_algo, base_hash_algo
            )
            return result
        value: bytes = store.summary_hash(kind, meas_hash_algo, base_hash_algo)
        return value
