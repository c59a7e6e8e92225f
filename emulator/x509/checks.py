"""The X.509 rules a slot's chain must pass (``spdm-emulator certs verify``, loading a slot).

Links (issuer == parent subject), signatures, CA flags on every certificate but the leaf,
the leaf's basicConstraints encoded exactly ``30 00`` (libspdm) and the leaf key matching
the leaf certificate.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from emulator.x509.chain import CertError
from emulator.x509.model import Chain, asym_of_public_key
from emulator.x509.pqc import verify_issued_by

__all__ = ["verify_chain"]


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
