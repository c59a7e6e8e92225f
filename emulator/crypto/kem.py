"""ML-KEM key encapsulation of SPDM 1.4 (KEM AlgStruct, AlgType 7; FIPS 203).

DSP0274 1.4 KEY_EXCHANGE with a KEM selected (libspdm ``libspdm_rsp_key_exchange_rsp.c``,
``libspdm_secmes_key_exchange_pqc.c``):

* the Requester generates a key pair and sends its *encapsulation key* ``ek`` as the
  KEY_EXCHANGE ``ExchangeData`` (800 / 1184 / 1568 bytes for ML-KEM-512/768/1024);
* the Responder runs ``ML-KEM.Encaps(ek)`` and sends the *ciphertext* as the
  KEY_EXCHANGE_RSP ``ExchangeData`` (768 / 1088 / 1568 bytes);
* both sides use the 32-byte ML-KEM shared secret where the DHE secret would go: the key
  schedule is unchanged.

``cryptography`` 48 implements ML-KEM-768 and ML-KEM-1024 only: ML-KEM-512 is defined here
(sizes, names) but refused with a CryptoError naming it.  Key generation is deterministic
from the injected ``rng`` (a 64-byte FIPS 203 seed ``d || z``); encapsulation draws its
32-byte message from OpenSSL's RNG (``cryptography`` has no seeded ``Encaps``), so the
ciphertext differs on every run even with a fixed seed.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import mlkem

from emulator.codec.constants import KemAlgo
from emulator.crypto.dhe import Rng
from emulator.crypto.hashes import single_bit
from emulator.errors import CryptoError

__all__ = [
    "KEM_SEED_SIZE",
    "KEM_SHARED_SECRET_SIZE",
    "KemKeyPair",
    "exchange_sizes",
    "kem_ciphertext_size",
    "kem_encap_key_size",
    "kem_encapsulate",
    "kem_supported",
]

#: FIPS 203 ``d || z`` seed of ML-KEM.KeyGen_internal
KEM_SEED_SIZE = 64
#: ML-KEM shared secret size (all parameter sets)
KEM_SHARED_SECRET_SIZE = 32


@dataclass(frozen=True)
class _KemInfo:
    encap_key_size: int
    ciphertext_size: int
    private: type[mlkem.MLKEM768PrivateKey] | type[mlkem.MLKEM1024PrivateKey] | None
    public: type[mlkem.MLKEM768PublicKey] | type[mlkem.MLKEM1024PublicKey] | None


_KEM: dict[KemAlgo, _KemInfo] = {
    KemAlgo.ML_KEM_512: _KemInfo(800, 768, None, None),
    KemAlgo.ML_KEM_768: _KemInfo(1184, 1088, mlkem.MLKEM768PrivateKey, mlkem.MLKEM768PublicKey),
    KemAlgo.ML_KEM_1024: _KemInfo(1568, 1568, mlkem.MLKEM1024PrivateKey, mlkem.MLKEM1024PublicKey),
}


def _kem(kem: int) -> tuple[KemAlgo, _KemInfo]:
    bit = single_bit(KemAlgo, kem, "KemAlgo")
    return bit, _KEM[bit]


def kem_supported(kem: int) -> bool:
    """True if ``cryptography`` can run this KEM (ML-KEM-768/1024; not ML-KEM-512)."""
    try:
        return _kem(kem)[1].private is not None
    except CryptoError:
        return False


def _usable(kem: int) -> tuple[KemAlgo, _KemInfo]:
    bit, info = _kem(kem)
    if info.private is None:
        raise CryptoError(
            f"KemAlgo {bit.name}: not supported (cryptography implements ML-KEM-768/1024 only)"
        )
    return bit, info


def kem_encap_key_size(kem: int) -> int:
    """KEY_EXCHANGE ``ExchangeData`` size: the FIPS 203 encapsulation key."""
    return _kem(kem)[1].encap_key_size


def kem_ciphertext_size(kem: int) -> int:
    """KEY_EXCHANGE_RSP ``ExchangeData`` size: the FIPS 203 ciphertext."""
    return _kem(kem)[1].ciphertext_size


def kem_encapsulate(kem: int, encap_key: bytes) -> tuple[bytes, bytes]:
    """Responder side: ``(shared_secret, ciphertext)`` for the requester's ``ek``.

    CryptoError when ``ek`` has the wrong size or fails the FIPS 203 input check
    (coefficients not reduced modulo q).
    """
    bit, info = _usable(kem)
    encap_key = bytes(encap_key)
    if len(encap_key) != info.encap_key_size:
        raise CryptoError(
            f"KEM ExchangeData: {len(encap_key)} bytes, {bit.name} needs {info.encap_key_size}"
        )
    assert info.public is not None
    try:
        public = info.public.from_public_bytes(encap_key)
    except ValueError:
        raise CryptoError(f"KEM ExchangeData: not a valid {bit.name} encapsulation key") from None
    shared, ciphertext = public.encapsulate()
    return shared, ciphertext


class KemKeyPair:
    """Requester side: an ML-KEM key pair from ``rng`` (create with :meth:`generate`)."""

    def __init__(
        self, kem: KemAlgo, private: mlkem.MLKEM768PrivateKey | mlkem.MLKEM1024PrivateKey
    ) -> None:
        self.kem = kem
        self._private = private
        self._public_bytes = private.public_key().public_bytes_raw()

    @classmethod
    def generate(cls, kem: int, rng: Rng) -> KemKeyPair:
        """``ML-KEM.KeyGen_internal(d, z)`` with the 64 seed bytes drawn from ``rng``."""
        bit, info = _usable(kem)
        seed = rng(KEM_SEED_SIZE)
        if len(seed) != KEM_SEED_SIZE:
            raise CryptoError(f"rng: asked for {KEM_SEED_SIZE} bytes, got {len(seed)}")
        assert info.private is not None
        return cls(bit, info.private.from_seed_bytes(bytes(seed)))

    @property
    def public_bytes(self) -> bytes:
        """The encapsulation key ``ek`` (KEY_EXCHANGE ``ExchangeData``)."""
        return self._public_bytes

    def decapsulate(self, ciphertext: bytes) -> bytes:
        """The shared secret of the responder's ciphertext; CryptoError on a wrong size.

        (ML-KEM decapsulation never fails on a wrong ciphertext of the right size: it
        returns an implicit-rejection secret, so a tampered ciphertext shows up as a
        ResponderVerifyData mismatch.)
        """
        ciphertext = bytes(ciphertext)
        expected = _KEM[self.kem].ciphertext_size
        if len(ciphertext) != expected:
            raise CryptoError(
                f"KEM ExchangeData: {len(ciphertext)} bytes, {self.kem.name} needs {expected}"
            )
        try:
            return self._private.decapsulate(ciphertext)
        except ValueError as exc:
            raise CryptoError(f"KEM ExchangeData: {exc}") from None


def exchange_sizes(dhe: int, kem: int) -> tuple[int, int]:
    """``(KEY_EXCHANGE ExchangeData size, KEY_EXCHANGE_RSP ExchangeData size)`` for the
    negotiated DHE group or (SPDM 1.4) KEM: DHE sends public values of one size both ways,
    ML-KEM the encapsulation key one way and the ciphertext back."""
    if kem:
        return kem_encap_key_size(kem), kem_ciphertext_size(kem)
    from emulator.crypto.dhe import dhe_exchange_size

    size = dhe_exchange_size(dhe)
    return size, size
