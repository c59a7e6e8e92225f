"""HMAC (RFC 2104) and HKDF (RFC 5869) over the negotiated BaseHashAlgo.

These are the building blocks of the DSP0274 key schedule ("Key schedule"
clause) and of the FINISH / PSK_FINISH ``RequesterVerifyData`` /
``ResponderVerifyData`` HMACs.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hmac as _c_hmac

from emulator.crypto.hashes import cryptography_hash, hash_size
from emulator.errors import CryptoError

__all__ = ["hkdf_expand", "hkdf_extract", "hmac_digest"]


def hmac_digest(hash_algo: int, key: bytes, data: bytes) -> bytes:
    """``HMAC-Hash(key, data)`` with a BaseHashAlgo bit."""
    mac = _c_hmac.HMAC(key, cryptography_hash(hash_algo))
    mac.update(data)
    return mac.finalize()


def hkdf_extract(hash_algo: int, salt: bytes, ikm: bytes) -> bytes:
    """RFC 5869 HKDF-Extract: ``PRK = HMAC-Hash(salt, IKM)``.

    An empty salt means ``HashLen`` zero bytes (RFC 5869 section 2.2); HMAC pads
    its key with zeros, so both give the same PRK.
    """
    if not salt:
        salt = bytes(hash_size(hash_algo))
    return hmac_digest(hash_algo, salt, ikm)


def hkdf_expand(hash_algo: int, prk: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF-Expand: ``T(1) || T(2) || ...`` truncated to ``length`` bytes.

    ``T(i) = HMAC-Hash(PRK, T(i-1) || info || i)``; ``length`` may be at most
    ``255 * HashLen``.  The PRK must be at least ``HashLen`` bytes.
    """
    size = hash_size(hash_algo)
    if length < 0 or length > 255 * size:
        raise CryptoError(f"HKDF-Expand length: {length} is outside 0..{255 * size}")
    if len(prk) < size:
        raise CryptoError(f"HKDF-Expand PRK: {len(prk)} bytes, shorter than the {size}-byte hash")
    if length <= size:  # one block: every length the DSP0274 key schedule asks for
        return hmac_digest(hash_algo, prk, bytes(info) + b"\x01")[:length]
    output = bytearray()
    block = b""
    counter = 1
    while len(output) < length:
        block = hmac_digest(hash_algo, prk, block + bytes(info) + bytes([counter]))
        output += block
        counter += 1
    return bytes(output[:length])
