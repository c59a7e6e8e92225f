"""Hash algorithms of DSP0274 (BaseHashAlgo and MeasurementHashAlgo of ALGORITHMS).

Every function takes exactly one algorithm bit (a ``BaseHashAlgo`` /
``MeasurementHashAlgo`` member or its integer value).  SM3_256 is defined by the
spec but not offered by the ``cryptography`` library: asking for it raises
:class:`~emulator.errors.CryptoError` ("not supported").
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntFlag
from typing import Protocol, TypeVar

from cryptography.hazmat.primitives import hashes as _c_hashes

from emulator.codec.constants import BaseHashAlgo, MeasurementHashAlgo
from emulator.errors import CryptoError

__all__ = [
    "HashObject",
    "cryptography_hash",
    "digest",
    "hash_name",
    "hash_size",
    "measurement_digest",
    "measurement_hash_size",
    "measurement_to_base_hash",
    "new_hash",
]


class HashObject(Protocol):
    """An incremental hash (what ``hashlib.new`` returns)."""

    @property
    def digest_size(self) -> int: ...

    def update(self, data: bytes, /) -> None: ...

    def copy(self) -> HashObject: ...

    def digest(self) -> bytes: ...


@dataclass(frozen=True)
class _HashInfo:
    hashlib_name: str
    size: int
    #: hashlib's own constructor (``hashlib.sha384``): no name lookup per call
    new: Callable[..., HashObject] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "new", getattr(hashlib, self.hashlib_name))


_BASE: dict[BaseHashAlgo, _HashInfo] = {
    BaseHashAlgo.SHA_256: _HashInfo("sha256", 32),
    BaseHashAlgo.SHA_384: _HashInfo("sha384", 48),
    BaseHashAlgo.SHA_512: _HashInfo("sha512", 64),
    BaseHashAlgo.SHA3_256: _HashInfo("sha3_256", 32),
    BaseHashAlgo.SHA3_384: _HashInfo("sha3_384", 48),
    BaseHashAlgo.SHA3_512: _HashInfo("sha3_512", 64),
}

_MEAS_TO_BASE: dict[MeasurementHashAlgo, BaseHashAlgo] = {
    MeasurementHashAlgo.SHA_256: BaseHashAlgo.SHA_256,
    MeasurementHashAlgo.SHA_384: BaseHashAlgo.SHA_384,
    MeasurementHashAlgo.SHA_512: BaseHashAlgo.SHA_512,
    MeasurementHashAlgo.SHA3_256: BaseHashAlgo.SHA3_256,
    MeasurementHashAlgo.SHA3_384: BaseHashAlgo.SHA3_384,
    MeasurementHashAlgo.SHA3_512: BaseHashAlgo.SHA3_512,
    MeasurementHashAlgo.SM3_256: BaseHashAlgo.SM3_256,
}

_CRYPTOGRAPHY: dict[BaseHashAlgo, type[_c_hashes.HashAlgorithm]] = {
    BaseHashAlgo.SHA_256: _c_hashes.SHA256,
    BaseHashAlgo.SHA_384: _c_hashes.SHA384,
    BaseHashAlgo.SHA_512: _c_hashes.SHA512,
    BaseHashAlgo.SHA3_256: _c_hashes.SHA3_256,
    BaseHashAlgo.SHA3_384: _c_hashes.SHA3_384,
    BaseHashAlgo.SHA3_512: _c_hashes.SHA3_512,
}

_F = TypeVar("_F", bound=IntFlag)

# The same tables keyed by plain ints: a lookup per hash, HMAC or signature must not
# build IntFlag members (enum arithmetic costs ~1 us per operation).
_BASE_BY_VALUE: dict[int, _HashInfo] = {int(k): v for k, v in _BASE.items()}
_HASH_BY_VALUE: dict[int, _c_hashes.HashAlgorithm] = {int(k): c() for k, c in _CRYPTOGRAPHY.items()}
_MEAS_BY_VALUE: dict[int, BaseHashAlgo | None] = {
    **{int(k): v for k, v in _MEAS_TO_BASE.items()},
    int(MeasurementHashAlgo.RAW_BIT_STREAM_ONLY): None,
}


def single_bit(enum: type[_F], value: int, what: str) -> _F:
    """``value`` as one member of ``enum``; CryptoError unless exactly one known bit is set."""
    if value <= 0 or value & (value - 1):
        raise CryptoError(f"{what}: expected exactly one algorithm bit, got 0x{value:X}")
    try:
        member = enum(value)
    except ValueError:
        raise CryptoError(f"{what}: unknown algorithm bit 0x{value:X}") from None
    if member.name is None:
        raise CryptoError(f"{what}: unknown algorithm bit 0x{value:X}")
    return member


def _info(algo: int) -> _HashInfo:
    info = _BASE_BY_VALUE.get(algo)
    if info is not None:
        return info
    bit = single_bit(BaseHashAlgo, algo, "BaseHashAlgo")
    info = _BASE.get(bit)
    if info is None:
        raise CryptoError(f"BaseHashAlgo {bit.name}: not supported")
    return info


def hash_size(algo: int) -> int:
    """Digest size in bytes of a BaseHashAlgo bit (DSP0274 table "BaseHashAlgo")."""
    return _info(algo).size


def hash_name(algo: int) -> str:
    """The ``hashlib`` name of a BaseHashAlgo bit (``"sha256"``, ``"sha3_384"``...)."""
    return _info(algo).hashlib_name


def digest(algo: int, data: bytes) -> bytes:
    """``Hash(data)`` with a BaseHashAlgo bit."""
    return _info(algo).new(data).digest()


def new_hash(algo: int) -> HashObject:
    """A fresh incremental hash object (``update`` / ``copy`` / ``digest``)."""
    return _info(algo).new()


def cryptography_hash(algo: int) -> _c_hashes.HashAlgorithm:
    """The ``cryptography`` hash object of a BaseHashAlgo bit (for signatures, HMAC, HKDF).

    One shared instance per algorithm: hash algorithm objects are immutable descriptions.
    """
    shared = _HASH_BY_VALUE.get(algo)
    if shared is not None:
        return shared
    bit = single_bit(BaseHashAlgo, algo, "BaseHashAlgo")
    cls = _CRYPTOGRAPHY.get(bit)
    if cls is None:
        raise CryptoError(f"BaseHashAlgo {bit.name}: not supported")
    return cls()


def measurement_to_base_hash(algo: int) -> BaseHashAlgo | None:
    """The BaseHashAlgo bit equivalent to a MeasurementHashAlgo bit (None for raw bit stream)."""
    if algo in _MEAS_BY_VALUE:
        return _MEAS_BY_VALUE[algo]
    bit = single_bit(MeasurementHashAlgo, algo, "MeasurementHashAlgo")
    if bit is MeasurementHashAlgo.RAW_BIT_STREAM_ONLY:
        return None
    return _MEAS_TO_BASE[bit]


def measurement_hash_size(algo: int) -> int:
    """Size of a measurement digest for a MeasurementHashAlgo bit; 0 for RAW_BIT_STREAM_ONLY."""
    base = measurement_to_base_hash(algo)
    return 0 if base is None else hash_size(base)


def measurement_digest(algo: int, data: bytes) -> bytes:
    """The measurement value for ``data``: its digest, or ``data`` itself for a raw bit stream.

    DSP0274 "Measurement block": with RAW_BIT_STREAM_ONLY the DMTF measurement
    value is the raw bit stream, so it is returned unchanged.
    """
    base = measurement_to_base_hash(algo)
    return bytes(data) if base is None else digest(base, data)
