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

__all__ = [
    "AEAD_IV_SIZE",
    "AEAD_TAG_SIZE",
    "AeadCipher",
    "aead_cipher",
    "aead_key_size",
    "aead_open",
    "aead_seal",
]

AEAD_IV_SIZE = 12
AEAD_TAG_SIZE = 16

_KEY_SIZES: dict[AeadSuite, int] = {
    AeadSuite.AES_128_GCM: 16,
    AeadSuite.AES_256_GCM: 32,
    AeadSuite.CHACHA20_POLY1305: 32,
}

_KEY_SIZE_BY_VALUE: dict[int, int] = {int(k): v for k, v in _KEY_SIZES.items()}
_CHACHA = int(AeadSuite.CHACHA20_POLY1305)

#: a keyed AEAD object (``cryptography``), reusable for every record under its key
AeadCipher = AESGCM | ChaCha20Poly1305


def _suite(suite: int) -> AeadSuite:
    bit = single_bit(AeadSuite, suite, "AeadSuite")
    if bit not in _KEY_SIZES:
        raise CryptoError(f"AeadSuite {bit.name}: not supported")
    return bit


def aead_key_size(suite: int) -> int:
    """Key size in bytes: AES-128-GCM 16, AES-256-GCM 32, ChaCha20-Poly1305 32."""
    size = _KEY_SIZE_BY_VALUE.get(suite)
    return size if size is not None else _KEY_SIZES[_suite(suite)]


def aead_cipher(suite: int, key: bytes) -> AeadCipher:
    """The keyed AEAD object of ``suite`` (make it once per key: building one costs as much
    as sealing a short record)."""
    size = _KEY_SIZE_BY_VALUE.get(suite)
    if size is None:
        size = _KEY_SIZES[_suite(suite)]
    if len(key) != size:
        bit = _suite(suite)
        raise CryptoError(f"AEAD key: {len(key)} bytes, {bit.name} needs {size}")
    if suite == _CHACHA:
        return ChaCha20Poly1305(bytes(key))
    return AESGCM(bytes(key))


def _cipher(suite: int, key: bytes, iv: bytes, cipher: AeadCipher | None) -> AeadCipher:
    if cipher is None:
        cipher = aead_cipher(suite, key)
    if len(iv) != AEAD_IV_SIZE:
        raise CryptoError(f"AEAD IV: {len(iv)} bytes, expected {AEAD_IV_SIZE}")
    return cipher


def aead_seal(
    suite: int,
    key: bytes,
    iv: bytes,
    aad: bytes,
    plaintext: bytes,
    *,
    cipher: AeadCipher | None = None,
) -> bytes:
    """Encrypt and authenticate: returns ``ciphertext || tag``.  ``cipher``: the keyed
    object of ``key`` (:func:`aead_cipher`), when the caller keeps one."""
    return _cipher(suite, key, iv, cipher).encrypt(bytes(iv), bytes(plaintext), bytes(aad))


def aead_open(
    suite: int,
    key: bytes,
    iv: bytes,
    aad: bytes,
    sealed: bytes,
    *,
    cipher: AeadCipher | None = None,
) -> bytes:
    """Check the tag and decrypt ``ciphertext || tag``; CryptoError if authentication fails."""
    cipher = _cipher(suite, key, iv, cipher)
    if len(sealed) < AEAD_TAG_SIZE:
        raise CryptoError(
            f"AEAD ciphertext: {len(sealed)} bytes, shorter than the {AEAD_TAG_SIZE}-byte tag"
        )
    try:
        return cipher.decrypt(bytes(iv), bytes(sealed), bytes(aad))
    except InvalidTag:
        raise CryptoError("AEAD tag: authentication failed") from None
