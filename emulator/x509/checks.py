"""The X.509 rules a slot's chain must pass (``spdm-emulator certs verify``, loading a slot).

Links (issuer == parent subject), signatures, CA flags on every certificate but the leaf,
the leaf's basicConstraints encoded exactly ``30 00`` (libspdm) and the leaf key matching
the leaf certificate.
"""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID

from emulator.x509.chain import CertError
from emulator.x509.model import Chain, asym_of_public_key
from emulator.x509.pqc import verify_issued_by

__all__ = ["check_provisioned_chain", "verify_chain"]


def verify_chain(chain: Chain) -> None:
    """Check links, signatures, CA flags, the leaf's basicConstraints and its key.

    Raises CertError naming the certificate and the problem.
    """
    certs = chain.certs
    if not certs:
        raise CertError("chain: no certificates")
    for i, cert in enumerate(certs):
        parent = certs[i - 1] if i else cert
        where = f"certificate {i} ({cert.subject.rfc4514_string()})"
        if cert.issuer != parent.subject:
            raise CertError(
                f"{where}: issuer does not match the subject of certificate {max(i - 1, 0)}"
            )
        try:
            verify_issued_by(cert, parent)
        except (ValueError, TypeError, InvalidSignature, CertError) as exc:
            raise CertError(f"{where}: signature does not verify with its issuer ({exc})") from None
        is_leaf = i == len(certs) - 1
        try:
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            raise CertError(f"{where}: basicConstraints missing") from None
        if bc.value.ca == is_leaf:
            raise CertError(f"{where}: basicConstraints CA must be {not is_leaf}")
        if is_leaf and bc.value.public_bytes() != b"\x30\x00":
            raise CertError(f"{where}: leaf basicConstraints is not encoded exactly 30 00")
    leaf_pub = chain.leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_pub = chain.leaf_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if leaf_pub != key_pub:
        raise CertError("leaf key: does not match the leaf certificate's public key")
    if asym_of_public_key(chain.leaf_key) != chain.asym:
        raise CertError(f"leaf key: is not {chain.asym}")


# --- chains a requester provisions (SET_CERTIFICATE) ---------------------------------

#: Extensions a verifier must understand when they are critical (libspdm's X.509 parser
#: fails on any other critical extension).
_KNOWN_CRITICAL = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.NAME_CONSTRAINTS,
        ExtensionOID.CERTIFICATE_POLICIES,
        ExtensionOID.POLICY_CONSTRAINTS,
        x509.ObjectIdentifier("1.3.6.1.4.1.412.274.6"),  # id-DMTF-SPDM-extension
    }
)
_SIGNATURE_HASHES = ("sha256", "sha384", "sha512", "sha3-256", "sha3-384", "sha3-512")
_EKU_RESPONDER = x509.ObjectIdentifier("1.3.6.1.4.1.412.274.3")
_EKU_REQUESTER = x509.ObjectIdentifier("1.3.6.1.4.1.412.274.4")


def _ext(cert: x509.Certificate, cls: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def check_provisioned_chain(
    certs_der: list[bytes],
    *,
    now: datetime.datetime,
    spdm_version: int,
    leaf_is_ca: bool = False,
    generic: bool = False,
) -> list[x509.Certificate]:
    """Check a chain given to the device (SET_CERTIFICATE, DSP0274 1.2 10.14) with the
    X.509 rules a requester applies to the chain it reads back (PROTOCOL.md "What real
    requesters check"): every certificate parses, is valid at ``now``, has no critical
    extension a verifier does not know and is signed with SHA-2/SHA-3 (or EdDSA) by the
    one before it, whose subject is its issuer and which is a CA (keyCertSign when
    keyUsage is present); the first is self-signed or issued by a root outside the chain;
    the leaf is X.509 v3 with keyUsage digitalSignature, an extendedKeyUsage with
    requester-auth also has responder-auth, and (DeviceCert model) basicConstraints is
    present from SPDM 1.3 and CA false without pathLen (``30 00``).  ``leaf_is_ca``: the
    chain ends at the DeviceCert CA (AliasCert model).  ``generic``: the GenericCert model (no leaf
    basicConstraints rule).  Returns the parsed certificates; CertError names the
    certificate and the rule."""
    if not certs_der:
        raise CertError("certificate chain: no certificate")
    certs: list[x509.Certificate] = []
    for i, data in enumerate(certs_der):
        try:
            certs.append(x509.load_der_x509_certificate(data))
        except ValueError as exc:
            raise CertError(f"certificate {i}: does not parse ({exc})") from None
    for i, cert in enumerate(certs):
        where = f"certificate {i} ({cert.subject.rfc4514_string() or 'empty subject'})"
        if cert.version is not x509.Version.v3:
            raise CertError(f"{where}: not an X.509 v3 certificate")
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise CertError(
                f"{where}: not valid now ({cert.not_valid_before_utc:%Y-%m-%d} .. "
                f"{cert.not_valid_after_utc:%Y-%m-%d})"
            )
        for ext in cert.extensions:
            if ext.critical and ext.oid not in _KNOWN_CRITICAL:
                raise CertError(f"{where}: unsupported critical extension {ext.oid.dotted_string}")
        hash_alg = cert.signature_hash_algorithm
        if hash_alg is not None and hash_alg.name not in _SIGNATURE_HASHES:
            raise CertError(f"{where}: signed with {hash_alg.name}, not SHA-2/SHA-3")
        key = cert.public_key()
        try:
            asym_of_public_key(key)
        except CertError as exc:
            raise CertError(f"{where}: {exc}") from None
        is_leaf = i == len(certs) - 1
        if i == 0:
            if cert.issuer == cert.subject:
                try:
                    cert.verify_directly_issued_by(cert)
                except (ValueError, TypeError, InvalidSignature) as exc:
                    raise CertError(f"{where}: self-signature does not verify ({exc})") from None
        else:
            parent = certs[i - 1]
            if cert.issuer != parent.subject:
                raise CertError(f"{where}: issuer is not the subject of certificate {i - 1}")
            try:
                cert.verify_directly_issued_by(parent)
            except (ValueError, TypeError, InvalidSignature) as exc:
                raise CertError(
                    f"{where}: signature does not verify with certificate {i - 1} ({exc})"
                ) from None
        bc = _ext(cert, x509.BasicConstraints)
        ku = _ext(cert, x509.KeyUsage)
        if not is_leaf or leaf_is_ca:
            if not isinstance(bc, x509.BasicConstraints) or not bc.ca:
                raise CertError(f"{where}: issues certificates but basicConstraints CA is not set")
            if isinstance(ku, x509.KeyUsage) and not ku.key_cert_sign:
                raise CertError(f"{where}: issues certificates but keyUsage lacks keyCertSign")
            continue
        if not isinstance(ku, x509.KeyUsage) or not ku.digital_signature:
            raise CertError(f"{where}: the leaf needs keyUsage digitalSignature")
        eku = _ext(cert, x509.ExtendedKeyUsage)
        if (
            isinstance(eku, x509.ExtendedKeyUsage)
            and _EKU_REQUESTER in eku
            and _EKU_RESPONDER not in eku
        ):
            raise CertError(f"{where}: extendedKeyUsage has requester-auth without responder-auth")
        if generic:
            continue
        if bc is None:
            if spdm_version >= 0x13:
                raise CertError(f"{where}: SPDM 1.3 needs basicConstraints on the leaf")
        elif not isinstance(bc, x509.BasicConstraints) or bc.ca or bc.path_length is not None:
            raise CertError(f"{where}: the leaf basicConstraints must be CA false (30 00)")
    return certs
