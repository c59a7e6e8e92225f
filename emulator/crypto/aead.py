"""AEAD suites of DSP0274 (AEAD AlgStruct, AlgType 3), as DSP0277 secured messages use them.

``aead_seal`` returns ``ciphertext || tag`` (16-byte tag); ``aead_open`` takes the
same layout.  The 12-byte IV given here is the per-record nonce: deriving it from
the session IV and the sequence number is the session layer's job.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from emulator.codec.constants import AeadSuite
from emulator.crypto.hashes import single_bit
from emulator.errors import CryptoError

__all__ = ["AEAD_IV_SIZE", "AEAD_TAG_SIZE", "aead_key_size", "aead_open", "aead_seal"]

AEAD_IV_SIZE = 12
AEAD_TAG_SIZE = 16

_KEY_SIZES: dict[AeadSuite, int] = {
    AeadSuite.AES_128_GCM: 16,
    AeadSuite.AES_256_GCM: 32,
    AeadSuite.CHACHA20_POLY1305: 32,
}


def _suite(suite: int) -> AeadSuite:
    bit = single_bit(AeadSuite, suite, "AeadSuite")
    if bit not in _KEY_SIZES:
        raise CryptoError(f"AeadSuite {bit.name}: not supported")
    return bit


def aead_key_size(suite: int) -> int:
    """Key size in bytes: AES-128-GCM 16, AES-256-GCM 32, ChaCha20-Poly1305 32."""
    return _KEY_SIZES[_suite(suite)]


def _cipher(suite: int, key: bytes, iv: bytes) -> AESGCM | ChaCha20Poly1305:
    bit = _suite(suite)
    if len(key) != _KEY_SIZES[bit]:
        raise CryptoError(f"AEAD key: {len(key)} bytes, {bit.name} needs {_KEY_SIZES[bit]}")
    if len(iv) != AEAD_IV_SIZE:
        raise CryptoError(f"AEAD IV: {len(iv)} bytes, expected {AEAD_IV_SIZE}")
    if bit is AeadSuite.CHACHA20_POLY1305:
        return ChaCha20Poly1305(bytes(key))
    return AESGCM(bytes(key))


def aead_seal(suite: int, key: bytes, iv: bytes, aad: bytes, plaintext: bytes) -> bytes:
    """Encrypt and authenticate: returns ``ciphertext || tag``."""
    return _cipher(suite, key, iv).encrypt(bytes(iv), bytes(plaintext), bytes(aad))


def aead_open(suite: int, key: bytes, iv: bytes, aad: bytes, sealed: bytes) -> bytes:
    """Check the tag and decrypt ``ciphertext || tag``; CryptoError if authentication fails."""
    cipher = _cipher(suite, key, iv)
    if len(sealed) < AEAD_TAG_SIZE:
        raise CryptoError(
            f"AEAD ciphertext: {len(sealed)} bytes, shorter than the {AEAD_TAG_SIZE}-byte tag"
        )
    try:
        return cipher.decrypt(bytes(iv), bytes(sealed), bytes(aad))
    except InvalidTag:
        raise CryptoError("AEAD tag: authentication failed") from None
