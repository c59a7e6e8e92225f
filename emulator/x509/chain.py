"""The SPDM certificate-chain format (DSP0274 "Certificate chain format") and DER splitting.

A chain as SPDM carries it: ``Length`` (u16 LE, the whole chain), ``Reserved`` (u16),
``RootHash`` (H(first certificate) with the negotiated hash), then the DER certificates,
root first.  This is the part of :mod:`emulator.x509` the core imports.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final

from emulator.errors import EmulatorError

__all__ = [
    "CertError",
    "SpdmCertChain",
    "normalise_hash_name",
    "parse_spdm_cert_chain",
    "spdm_cert_chain",
    "split_der_chain",
]


class CertError(EmulatorError):
    """A certificate request or file is invalid; the message names the item and problem."""


_CHAIN_HASHES: Final[dict[str, str]] = {
    "sha256": "sha256",
    "sha384": "sha384",
    "sha512": "sha512",
    "sha3_256": "sha3_256",
    "sha3_384": "sha3_384",
    "sha3_512": "sha3_512",
}


def normalise_hash_name(name: str, table: Collection[str]) -> str:
    """``"SHA-384"`` -> ``"sha384"``, ``"sha3-256"`` -> ``"sha3_256"``; CertError unless the
    result is in *table*."""
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key.startswith("sha3") and len(key) == 7:
        key = "sha3_" + key[4:]
    if key not in table:
        raise CertError(
            f"hash: unknown hash algorithm {name!r} (expected one of {', '.join(table)})"
        )
    return key


def _hash_bytes(hash_name: str, data: bytes) -> bytes:
    return hashlib.new(_CHAIN_HASHES[normalise_hash_name(hash_name, _CHAIN_HASHES)], data).digest()


def split_der_chain(data: bytes) -> list[bytes]:
    """Split concatenated DER certificates (each a definite-length SEQUENCE)."""
    certs: list[bytes] = []
    pos = 0
    while pos < len(data):
        start = pos
        if data[pos] != 0x30:
            raise CertError(
                f"certificate chain: byte 0x{data[pos]:02x} at offset {pos} is not a SEQUENCE tag"
            )
        if pos + 2 > len(data):
            raise CertError(f"certificate chain: truncated length at offset {pos}")
        first = data[pos + 1]
        pos += 2
        if first < 0x80:
            length = first
        elif first == 0x80 or first > 0x84:
            raise CertError(
                f"certificate chain: unsupported DER length byte 0x{first:02x} at offset {start}"
            )
        else:
            n = first & 0x7F
            if pos + n > len(data):
                raise CertError(f"certificate chain: truncated length at offset {start}")
            length = int.from_bytes(data[pos : pos + n], "big")
            pos += n
        if pos + length > len(data):
            raise CertError(
                f"certificate chain: certificate at offset {start} claims {length} bytes, "
                f"only {len(data) - pos} remain"
            )
        pos += length
        certs.append(data[start:pos])
    if not certs:
        raise CertError("certificate chain: empty")
    return certs


def spdm_cert_chain(hash_name: str, certs_der: Sequence[bytes]) -> bytes:
    """Length (u16 LE, whole chain) + Reserved (u16) + RootHash(H(first cert)) + certs."""
    if not certs_der:
        raise CertError("certificate chain: needs at least one certificate")
    root_hash = _hash_bytes(hash_name, certs_der[0])
    body = b"".join(certs_der)
    total = 4 + len(root_hash) + len(body)
    if total > 0xFFFF:
        raise CertError(f"certificate chain: {total} bytes does not fit the 16-bit Length field")
    return total.to_bytes(2, "little") + b"\x00\x00" + root_hash + body


@dataclass(frozen=True)
class SpdmCertChain:
    """A parsed SPDM certificate chain; ``root_hash_ok`` compares RootHash with H(certs[0])."""

    length: int
    reserved: int
    root_hash: bytes
    certs: list[bytes]
    root_hash_ok: bool


def parse_spdm_cert_chain(hash_name: str, data: bytes) -> SpdmCertChain:
    """Parse the DSP0274 certificate chain format; CertError on a malformed header."""
    hash_len = hashlib.new(_CHAIN_HASHES[normalise_hash_name(hash_name, _CHAIN_HASHES)]).digest_size
    if len(data) < 4 + hash_len + 1:
        raise CertError(f"certificate chain: {len(data)} bytes is shorter than its header")
    length = int.from_bytes(data[0:2], "little")
    if length != len(data):
        raise CertError(f"certificate chain: Length field {length} != {len(data)} bytes")
    certs = split_der_chain(data[4 + hash_len :])
    root_hash = data[4 : 4 + hash_len]
    return SpdmCertChain(
        length=length,
        reserved=int.from_bytes(data[2:4], "little"),
        root_hash=root_hash,
        certs=certs,
        root_hash_ok=_hash_bytes(hash_name, certs[0]) == root_hash,
    )
