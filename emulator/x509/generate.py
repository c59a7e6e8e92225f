"""Generation of SPDM test certificate chains (DSP0274 "Certificate chain format",
DSP0274 1.3 "Certificate models") with the X.509 v3 content that real requesters check:

* libspdm ``libspdm_x509_certificate_check`` (leaf: v3, serial, issuer, subject,
  validity, SPKI of the negotiated algorithm, keyUsage with digitalSignature,
  SPDM EKU consistent with the role, SPDM extension <= 30 bytes without the
  hardware-identity OID in the AliasCert model, basicConstraints exactly ``30 00``)
  and ``libspdm_is_root_certificate`` (self-issued, ``CA:TRUE``, self-signed, DN
  under 100 bytes) before it checks the RootHash;
* the Linux PCI CMA requester (``lib/spdm`` + ``drivers/pci/cma.c``): ``CA:TRUE`` on
  every certificate but the leaf, no keyCertSign on the leaf, digitalSignature on
  the slot-0 leaf, the first certificate's issuer found in the ``.cma`` keyring by
  its authorityKeyIdentifier, and a subjectAltName otherName (type-id 2.23.147,
  ``[0] EXPLICIT UTF8String``) equal byte for byte to
  ``Vendor=%04x:Device=%04x:CC=%06x:REV=%02x[:SSVID=%04x:SSID=%04x][:%016x DSN]``.

Everything here is test material: keys are generated in memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, mldsa, rsa
from cryptography.x509.oid import NameOID

from emulator.codec.constants import BaseAsymAlgo
from emulator.crypto.dhe import derive_ec_private_key
from emulator.x509.chain import CertError, normalise_hash_name
from emulator.x509.model import (
    MAX_ROOT_NAME_LEN,
    MAX_SPDM_EXTENSION_LEN,
    OID_DMTF_EKU_REQUESTER_AUTH,
    OID_DMTF_EKU_RESPONDER_AUTH,
    OID_DMTF_HARDWARE_IDENTITY,
    OID_DMTF_MUTABLE_CERTIFICATE,
    OID_DMTF_SPDM_EXTENSION,
    OID_PCI_SIG_CMA,
    AsymSpec,
    Chain,
    Model,
    PciIds,
    PrivateKey,
    Role,
    asym_spec,
)
from emulator.x509.pqc import MlDsaPrivate, mldsa_sign_certificate, subject_key_id

__all__ = ["CERT_HASH_NAMES", "generate_chain", "generate_private_key", "spdm_extension_value"]

_CertHash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512
_CERT_HASHES: Final[dict[str, Callable[[], _CertHash]]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

#: Certificate signature hashes generation accepts (``--hash``).
CERT_HASH_NAMES: Final[tuple[str, ...]] = tuple(_CERT_HASHES)


def _new_key(spec: AsymSpec, key_rng: Callable[[int], bytes] | None = None) -> PrivateKey:
    """A fresh key; with ``key_rng`` (a seeded stream) EC and EdDSA keys are derived from
    it, so the same seed gives the same key.  RSA keys cannot be derived from a seed with
    ``cryptography``: they are always random."""
    if spec.curve is not None:
        if key_rng is not None:
            return derive_ec_private_key(spec.curve, key_rng)
        return ec.generate_private_key(spec.curve)
    if spec.rsa_bits:
        return rsa.generate_private_key(public_exponent=65537, key_size=spec.rsa_bits)
    if spec.mldsa:
        cls: (
            type[mldsa.MLDSA44PrivateKey]
            | type[mldsa.MLDSA65PrivateKey]
            | type[mldsa.MLDSA87PrivateKey]
        ) = {
            "ML-DSA-44": mldsa.MLDSA44PrivateKey,
            "ML-DSA-65": mldsa.MLDSA65PrivateKey,
            "ML-DSA-87": mldsa.MLDSA87PrivateKey,
        }[spec.mldsa]  # type: ignore[assignment]
        if key_rng is not None:  # FIPS 204 KeyGen from a 32-byte seed xi
            return cls.from_seed_bytes(key_rng(32))
        return cls.generate()
    if spec.algo == BaseAsymAlgo.EDDSA_ED25519:
        if key_rng is not None:
            return ed25519.Ed25519PrivateKey.from_private_bytes(key_rng(32))
        return ed25519.Ed25519PrivateKey.generate()
    if key_rng is not None:
        return ed448.Ed448PrivateKey.from_private_bytes(key_rng(57))
    return ed448.Ed448PrivateKey.generate()


def generate_private_key(asym: str, key_rng: Callable[[int], bytes] | None = None) -> PrivateKey:
    """A fresh private key of *asym* (``"ecdsa-p384"``...); with *key_rng* EC and EdDSA keys
    are derived from that stream (RSA keys are always random)."""
    return _new_key(asym_spec(asym), key_rng)


# --- DER helpers ----------------------------------------------------------------------


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der_tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(body)) + body


def _der_oid(oid: x509.ObjectIdentifier) -> bytes:
    arcs = [int(a) for a in oid.dotted_string.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return _der_tlv(0x06, bytes(body))


def spdm_extension_value(oids: Sequence[x509.ObjectIdentifier]) -> bytes:
    """DER of the SPDM extension value: ``SEQUENCE SIZE (1..MAX) OF SEQUENCE { OID }``."""
    if not oids:
        raise CertError("spdm extension: needs at least one OID")
    value = _der_tlv(0x30, b"".join(_der_tlv(0x30, _der_oid(o)) for o in oids))
    if len(value) > MAX_SPDM_EXTENSION_LEN:
        raise CertError(
            f"spdm extension: value is {len(value)} bytes, libspdm reads at most "
            f"{MAX_SPDM_EXTENSION_LEN}"
        )
    return value


def _name(prefix: str, cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, prefix),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _serials(rng: Callable[[int], bytes] | None, serial_start: int | None) -> Callable[[], int]:
    counter = [serial_start if serial_start is not None else 0]
    source = rng if rng is not None else os.urandom

    def next_serial() -> int:
        if serial_start is not None:
            value = counter[0]
            counter[0] += 1
            if not 0 < value < (1 << 159):
                raise CertError(f"serial_start: serial {value} is not a positive 20-octet integer")
            return value
        raw = source(16)
        if len(raw) != 16:
            raise CertError(f"rng: returned {len(raw)} bytes, 16 requested")
        return (int.from_bytes(raw, "big") & ((1 << 127) - 1)) or 1

    return next_serial


def generate_chain(
    asym: str,
    *,
    hash_name: str | None = None,
    pci_ids: PciIds | None = None,
    model: Model = "device",
    validity_days: int = 10950,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    subject_prefix: str = "spdm-emulator",
    label: str = "",
    role: Role = "responder",
    rng: Callable[[int], bytes] | None = None,
    serial_start: int | None = None,
    key_rng: Callable[[int], bytes] | None = None,
) -> Chain:
    """Generate root -> intermediate -> leaf (DeviceCert model) or root -> intermediate ->
    DeviceCert CA -> alias leaf (AliasCert model, DSP0274 1.3), all keys of *asym*.

    *hash_name* is the certificate signature hash (default per key size; none for EdDSA).
    Serial numbers are positive 127-bit values from *rng* (default ``os.urandom``) or,
    with *serial_start*, consecutive integers.  *not_before* defaults to one day ago
    (UTC); *not_after* defaults to *not_before* + *validity_days*.  *label* (e.g.
    ``"slot1"``) goes into every common name so that chains of different slots have
    distinct DNs.  With *key_rng* (a seeded stream), EC and EdDSA keys are derived from
    it; with that, fixed serials and fixed dates the whole chain is reproducible (ECDSA
    certificate signatures are RFC 6979 deterministic).
    """
    spec = asym_spec(asym)
    if model not in ("device", "alias"):
        raise CertError(f"model: {model!r} is not 'device' or 'alias'")
    if role not in ("responder", "requester"):
        raise CertError(f"role: {role!r} is not 'responder' or 'requester'")
    hash_alg: _CertHash | None
    if spec.default_hash is None:
        if hash_name is not None:
            raise CertError(f"hash: {asym} signatures have no separate hash; omit hash_name")
        hash_alg = None
    else:
        hash_alg = _CERT_HASHES[normalise_hash_name(hash_name or spec.default_hash, _CERT_HASHES)]()

    if not_before is None:
        not_before = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    elif not_before.tzinfo is None:
        not_before = not_before.replace(tzinfo=UTC)
    if not_after is None:
        if validity_days <= 0:
            raise CertError(f"validity_days: {validity_days} is not positive")
        not_after = not_before + timedelta(days=validity_days)
    elif not_after.tzinfo is None:
        not_after = not_after.replace(tzinfo=UTC)
    if not_after <= not_before:
        raise CertError(f"validity: not_after {not_after} is not after not_before {not_before}")
    if not_after.year > 9999 or not_before.year < 1970:
        raise CertError("validity: libspdm accepts only 1970-01-01 .. 9999-12-31")

    next_serial = _serials(rng, serial_start)
    tags = ("alias" if model == "alias" else "", "requester" if role == "requester" else "")
    base = " ".join(p for p in (asym, *tags, label) if p)

    def cn(kind: str) -> x509.Name:
        return _name(subject_prefix, f"{base} {kind}")

    kinds = ["Root CA", "Intermediate CA"]
    if model == "alias":
        kinds.append("DeviceCert CA")
    kinds.append("Alias" if model == "alias" else role.capitalize())
    names = [cn(k) for k in kinds]
    root_len = len(names[0].public_bytes())
    if root_len > MAX_ROOT_NAME_LEN:
        raise CertError(
            f"subject_prefix/label: root DN is {root_len} bytes; libspdm recognises a root "
            f"only up to {MAX_ROOT_NAME_LEN}"
        )

    keys = [_new_key(spec, key_rng) for _ in kinds]
    # ML-DSA: cryptography cannot build these certificates; build each with stand-in
    # Ed25519 keys and re-sign it (emulator.x509.pqc)
    stand_ins = [ed25519.Ed25519PrivateKey.generate() for _ in kinds] if spec.mldsa else []
    eku = OID_DMTF_EKU_REQUESTER_AUTH if role == "requester" else OID_DMTF_EKU_RESPONDER_AUTH
    certs: list[x509.Certificate] = []
    for i, (name, key) in enumerate(zip(names, keys, strict=True)):
        is_leaf = i == len(kinds) - 1
        issuer_key = keys[i - 1] if i else key
        pub = key.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(names[i - 1] if i else name)
            .public_key(stand_ins[i].public_key() if spec.mldsa else pub)  # type: ignore[arg-type, unused-ignore]
            .serial_number(next_serial())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
        )
        if is_leaf:
            builder = builder.add_extension(
                x509.BasicConstraints(ca=False, path_length=None), critical=True
            ).add_extension(_key_usage(digital_signature=True), critical=True)
            builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        else:
            builder = builder.add_extension(
                x509.BasicConstraints(ca=True, path_length=None), critical=True
            ).add_extension(
                _key_usage(
                    digital_signature=(model == "alias" and i == 2),
                    key_cert_sign=True,
                    crl_sign=True,
                ),
                critical=True,
            )
        if spec.mldsa:
            ski = x509.SubjectKeyIdentifier(subject_key_id(pub))  # type: ignore[arg-type]
            aki = x509.AuthorityKeyIdentifier(
                subject_key_id(issuer_key.public_key()),  # type: ignore[arg-type]
                None,
                None,
            )
        else:
            ski = x509.SubjectKeyIdentifier.from_public_key(pub)  # type: ignore[arg-type, unused-ignore]
            aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer_key.public_key()  # type: ignore[arg-type, unused-ignore]
            )
        builder = builder.add_extension(ski, critical=False).add_extension(aki, critical=False)
        if is_leaf and pci_ids is not None:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.OtherName(
                            OID_PCI_SIG_CMA,
                            _der_tlv(0x0C, pci_ids.san_string().encode("utf-8")),
                        )
                    ]
                ),
                critical=False,
            )
        spdm_oids: list[x509.ObjectIdentifier] = []
        # DeviceCert model: the leaf is the hardware-bound DeviceCert.  AliasCert model:
        # the DeviceCert CA (index 2) is; the alias leaf is mutable and must not be.
        if (model == "device" and is_leaf) or (model == "alias" and i == 2):
            spdm_oids = [OID_DMTF_HARDWARE_IDENTITY]
        elif model == "alias" and is_leaf:  # alias leaves are mutable, never hardware-bound
            spdm_oids = [OID_DMTF_MUTABLE_CERTIFICATE]
        if spdm_oids:
            builder = builder.add_extension(
                x509.UnrecognizedExtension(
                    OID_DMTF_SPDM_EXTENSION, spdm_extension_value(spdm_oids)
                ),
                critical=False,
            )
        # RFC 6979 ECDSA: the same keys and content give the same certificate bytes
        deterministic = True if isinstance(issuer_key, ec.EllipticCurvePrivateKey) else None
        if spec.mldsa:
            stand_in = builder.sign(stand_ins[i - 1] if i else stand_ins[i], None)
            assert isinstance(issuer_key, MlDsaPrivate)
            certs.append(mldsa_sign_certificate(stand_in, pub, issuer_key))  # type: ignore[arg-type]
            continue
        certs.append(
            builder.sign(issuer_key, hash_alg, ecdsa_deterministic=deterministic)  # type: ignore[arg-type, unused-ignore]
        )

    return Chain(
        certs=certs,
        leaf_key=keys[-1],
        asym=asym,
        model=model,
        role=role,
        pci_ids=pci_ids,
        ca_keys=tuple(keys[:-1]),
    )


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )
