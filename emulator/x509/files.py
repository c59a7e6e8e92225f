"""Slot directories on disk: :func:`write_chain` and :func:`load_chain`.

A slot directory holds root/intermediate[/device_ca]/leaf ``.der`` + ``.pem``,
``leaf.key.pem`` (PKCS#8, unencrypted: test keys only), ``chain.der``/``chain.pem``
(root first) and ``info.json``.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from emulator.x509.chain import CertError, split_der_chain
from emulator.x509.checks import verify_chain
from emulator.x509.model import Chain, PciIds, asym_of_public_key
from emulator.x509.pqc import MLDSA_OIDS, MlDsaPrivate, is_mldsa_certificate

__all__ = ["load_chain", "parse_private_key", "write_chain"]

# --- files -------------------------------------------------------------------------

_SLOT_FILES: Final = (
    "root.der",
    "root.pem",
    "intermediate.der",
    "intermediate.pem",
    "device_ca.der",
    "device_ca.pem",
    "leaf.der",
    "leaf.pem",
    "leaf.key.pem",
    "chain.der",
    "chain.pem",
    "info.json",
)

_INFO_WARNING: Final = "TEST KEY MATERIAL: the private key is public; never use in production"


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _signature_hash(cert: x509.Certificate) -> str | None:
    """The certificate signature's hash name; None for EdDSA and ML-DSA (no separate hash)."""
    if (
        is_mldsa_certificate(cert)
        or cert.signature_algorithm_oid.dotted_string in MLDSA_OIDS.values()
    ):
        return None
    algorithm = cert.signature_hash_algorithm
    return algorithm.name if algorithm else None


def write_chain(chain: Chain, out_dir: Path | str, slot: int) -> Path:
    """Write *chain* into ``out_dir/slot<slot>/`` and return that directory.

    Files: root/intermediate[/device_ca]/leaf ``.der`` + ``.pem``, ``leaf.key.pem``
    (PKCS#8, unencrypted), ``chain.der``/``chain.pem`` (root first) and ``info.json``.
    ``root.der`` is ready for ``keyctl padd asymmetric "" %:.cma``.
    """
    if not 0 <= slot <= 7:
        raise CertError(f"slot: {slot} is not in 0..7")
    expected = 4 if chain.model == "alias" else 3
    if len(chain.certs) != expected:
        raise CertError(
            f"chain: {chain.model} model needs {expected} certificates, got {len(chain.certs)}"
        )
    slot_dir = Path(out_dir) / f"slot{slot}"
    slot_dir.mkdir(parents=True, exist_ok=True)
    for stale in _SLOT_FILES:  # never leave files of an earlier model behind
        (slot_dir / stale).unlink(missing_ok=True)
    names = ["root", "intermediate"] + (["device_ca"] if chain.model == "alias" else []) + ["leaf"]
    pem = serialization.Encoding.PEM
    der = serialization.Encoding.DER
    for name, cert in zip(names, chain.certs, strict=True):
        _write(slot_dir / f"{name}.der", cert.public_bytes(der))
        _write(slot_dir / f"{name}.pem", cert.public_bytes(pem))
    _write(
        slot_dir / "leaf.key.pem",
        chain.leaf_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        0o600,
    )
    _write(slot_dir / "chain.der", chain.der_chain())
    _write(slot_dir / "chain.pem", b"".join(c.public_bytes(pem) for c in chain.certs))
    leaf = chain.leaf
    info = {
        "warning": _INFO_WARNING,
        "asym": chain.asym,
        "model": chain.model,
        "role": chain.role,
        "slot": slot,
        "signature_hash": _signature_hash(leaf),
        "pci_ids": chain.pci_ids.spec() if chain.pci_ids else None,
        "subject_alt_name": chain.pci_ids.san_string() if chain.pci_ids else None,
        "not_before": leaf.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "not_after": leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "files": [f"{n}.der" for n in names],
        "subjects": [c.subject.rfc4514_string() for c in chain.certs],
    }
    _write(slot_dir / "info.json", (json.dumps(info, indent=2) + "\n").encode())
    return slot_dir


#: Parsed private keys by PEM bytes: parsing an RSA key validates it (~0.1 s for RSA-4096),


@functools.lru_cache(maxsize=64)
def parse_private_key(key_pem: bytes) -> object:
    """An unencrypted PEM private key, parsed once per distinct PEM (a pure function,
    memoised): parsing an RSA key validates it (~0.1 s for RSA-4096), and every Device
    built from a profile loads the same committed keys again."""
    return serialization.load_pem_private_key(key_pem, password=None)


def load_chain(slot_dir: Path | str, *, verify: bool = True) -> Chain:
    """Load a slot directory written by :func:`write_chain` (``chain.der``,
    ``leaf.key.pem``, optional ``info.json``); with *verify*, run :func:`verify_chain`."""
    slot_dir = Path(slot_dir)
    try:
        chain_der = (slot_dir / "chain.der").read_bytes()
        key_pem = (slot_dir / "leaf.key.pem").read_bytes()
    except OSError as exc:
        raise CertError(
            f"{slot_dir}: cannot read slot files ({exc.strerror}: {exc.filename})"
        ) from None
    info: dict[str, object] = {}
    info_path = slot_dir / "info.json"
    if info_path.exists():
        try:
            loaded = json.loads(info_path.read_text())
        except (OSError, ValueError) as exc:
            raise CertError(f"{info_path}: not valid JSON ({exc})") from None
        if not isinstance(loaded, dict):
            raise CertError(f"{info_path}: expected a JSON object")
        info = loaded
    try:
        certs = [x509.load_der_x509_certificate(d) for d in split_der_chain(chain_der)]
    except ValueError as exc:
        raise CertError(f"{slot_dir / 'chain.der'}: not a DER certificate chain ({exc})") from None
    except CertError as exc:
        raise CertError(f"{slot_dir / 'chain.der'}: {exc}") from None
    try:
        key = parse_private_key(key_pem)
    except (ValueError, TypeError) as exc:
        raise CertError(
            f"{slot_dir / 'leaf.key.pem'}: not an unencrypted PEM key ({exc})"
        ) from None
    if not isinstance(
        key,
        ec.EllipticCurvePrivateKey
        | rsa.RSAPrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey
        | MlDsaPrivate,
    ):
        raise CertError(f"{slot_dir / 'leaf.key.pem'}: unsupported key type {type(key).__name__}")
    model = info.get("model", "alias" if len(certs) >= 4 else "device")
    role = info.get("role", "responder")
    if model not in ("device", "alias"):
        raise CertError(f"{info_path}: model {model!r} is not 'device' or 'alias'")
    if role not in ("responder", "requester"):
        raise CertError(f"{info_path}: role {role!r} is not 'responder' or 'requester'")
    pci_spec = info.get("pci_ids")
    pci_ids = PciIds.parse(pci_spec) if isinstance(pci_spec, str) else None
    try:
        asym = asym_of_public_key(key)
    except CertError as exc:
        raise CertError(f"{slot_dir / 'leaf.key.pem'}: {exc}") from None
    chain = Chain(
        certs=certs,
        leaf_key=key,
        asym=asym,
        model=model,
        role=role,
        pci_ids=pci_ids,
    )
    if verify:
        try:
            verify_chain(chain)
        except CertError as exc:
            raise CertError(f"{slot_dir}: {exc}") from None
    return chain
