"""DHE groups of DSP0274 (DHE AlgStruct, AlgType 2): SECP256R1/384R1/521R1 and FFDHE2048/3072/4096.

Wire formats (DSP0274 table "DHE structure", same as libspdm's crypt lib):

* SECP: ``ExchangeData`` = X || Y, each coordinate big-endian and left-padded to
  the field size (32/48/66 bytes, so 64/96/132 bytes in all).  The shared secret
  is the X coordinate of the ECDH product, padded to the field size.
* FFDHE (RFC 7919 groups, g = 2): ``ExchangeData`` = the public value
  ``g^x mod p`` big-endian, left-padded to the prime size (256/384/512 bytes).
  The shared secret is ``peer^x mod p`` left-padded to the same size (libspdm's
  ``libspdm_dh_compute_key`` pads the OpenSSL result with leading zeros).

Key generation never calls the OS RNG: it takes an injected ``rng(n) -> n bytes``
so a fixed seed gives a fixed key pair.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import dh, ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from emulator.codec.constants import DheGroup
from emulator.crypto.hashes import single_bit
from emulator.errors import CryptoError

__all__ = [
    "FFDHE_PRIMES",
    "DheKeyPair",
    "Rng",
    "dhe_exchange_size",
    "dhe_shared_secret_size",
    "generate_dhe_key",
]

#: A random source: ``rng(n)`` returns ``n`` bytes.
Rng = Callable[[int], bytes]

# RFC 7919 appendix A primes: p = 2^b - 2^(b-64) + {[2^(b-130) e] + X} * 2^64 - 1.
_FFDHE2048 = int(
    "ffffffffffffffffadf85458a2bb4a9aafdc5620273d3cf1d8b9c583ce2d3695"
    "a9e13641146433fbcc939dce249b3ef97d2fe363630c75d8f681b202aec4617a"
    "d3df1ed5d5fd65612433f51f5f066ed0856365553ded1af3b557135e7f57c935"
    "984f0c70e0e68b77e2a689daf3efe8721df158a136ade73530acca4f483a797a"
    "bc0ab182b324fb61d108a94bb2c8e3fbb96adab760d7f4681d4f42a3de394df4"
    "ae56ede76372bb190b07a7c8ee0a6d709e02fce1cdf7e2ecc03404cd28342f61"
    "9172fe9ce98583ff8e4f1232eef28183c3fe3b1b4c6fad733bb5fcbc2ec22005"
    "c58ef1837d1683b2c6f34a26c1b2effa886b423861285c97ffffffffffffffff",
    16,
)
_FFDHE3072 = int(
    "ffffffffffffffffadf85458a2bb4a9aafdc5620273d3cf1d8b9c583ce2d3695"
    "a9e13641146433fbcc939dce249b3ef97d2fe363630c75d8f681b202aec4617a"
    "d3df1ed5d5fd65612433f51f5f066ed0856365553ded1af3b557135e7f57c935"
    "984f0c70e0e68b77e2a689daf3efe8721df158a136ade73530acca4f483a797a"
    "bc0ab182b324fb61d108a94bb2c8e3fbb96adab760d7f4681d4f42a3de394df4"
    "ae56ede76372bb190b07a7c8ee0a6d709e02fce1cdf7e2ecc03404cd28342f61"
    "9172fe9ce98583ff8e4f1232eef28183c3fe3b1b4c6fad733bb5fcbc2ec22005"
    "c58ef1837d1683b2c6f34a26c1b2effa886b4238611fcfdcde355b3b6519035b"
    "bc34f4def99c023861b46fc9d6e6c9077ad91d2691f7f7ee598cb0fac186d91c"
    "aefe130985139270b4130c93bc437944f4fd4452e2d74dd364f2e21e71f54bff"
    "5cae82ab9c9df69ee86d2bc522363a0dabc521979b0deada1dbf9a42d5c4484e"
    "0abcd06bfa53ddef3c1b20ee3fd59d7c25e41d2b66c62e37ffffffffffffffff",
    16,
)
_FFDHE4096 = int(
    "ffffffffffffffffadf85458a2bb4a9aafdc5620273d3cf1d8b9c583ce2d3695"
    "a9e13641146433fbcc939dce249b3ef97d2fe363630c75d8f681b202aec4617a"
    "d3df1ed5d5fd65612433f51f5f066ed0856365553ded1af3b557135e7f57c935"
    "984f0c70e0e68b77e2a689daf3efe8721df158a136ade73530acca4f483a797a"
    "bc0ab182b324fb61d108a94bb2c8e3fbb96adab760d7f4681d4f42a3de394df4"
    "ae56ede76372bb190b07a7c8ee0a6d709e02fce1cdf7e2ecc03404cd28342f61"
    "9172fe9ce98583ff8e4f1232eef28183c3fe3b1b4c6fad733bb5fcbc2ec22005"
    "c58ef1837d1683b2c6f34a26c1b2effa886b4238611fcfdcde355b3b6519035b"
    "bc34f4def99c023861b46fc9d6e6c9077ad91d2691f7f7ee598cb0fac186d91c"
    "aefe130985139270b4130c93bc437944f4fd4452e2d74dd364f2e21e71f54bff"
    "5cae82ab9c9df69ee86d2bc522363a0dabc521979b0deada1dbf9a42d5c4484e"
    "0abcd06bfa53ddef3c1b20ee3fd59d7c25e41d2b669e1ef16e6f52c3164df4fb"
    "7930e9e4e58857b6ac7d5f42d69f6d187763cf1d5503400487f55ba57e31cc7a"
    "7135c886efb4318aed6a1e012d9e6832a907600a918130c46dc778f971ad0038"
    "092999a333cb8b7a1a1db93d7140003c2a4ecea9f98d0acc0a8291cdcec97dcf"
    "8ec9b55a7f88a46b4db5a851f44182e1c68a007e5e655f6affffffffffffffff",
    16,
)

#: The RFC 7919 prime of each FFDHE group (generator 2).
FFDHE_PRIMES: dict[DheGroup, int] = {
    DheGroup.FFDHE_2048: _FFDHE2048,
    DheGroup.FFDHE_3072: _FFDHE3072,
    DheGroup.FFDHE_4096: _FFDHE4096,
}

# Private exponent sizes for FFDHE: RFC 7919 section 5.2 asks for at least
# 225 / 275 / 325 bits; we draw 256 / 320 / 384 bits from the rng.
_FFDHE_EXPONENT_BYTES: dict[DheGroup, int] = {
    DheGroup.FFDHE_2048: 32,
    DheGroup.FFDHE_3072: 40,
    DheGroup.FFDHE_4096: 48,
}


@dataclass(frozen=True)
class _Curve:
    curve: type[ec.EllipticCurve]
    coord_size: int
    order: int


_CURVES: dict[DheGroup, _Curve] = {
    DheGroup.SECP_256_R1: _Curve(
        ec.SECP256R1,
        32,
        0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    ),
    DheGroup.SECP_384_R1: _Curve(
        ec.SECP384R1,
        48,
        int(
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
            "C7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
            16,
        ),
    ),
    DheGroup.SECP_521_R1: _Curve(
        ec.SECP521R1,
        66,
        int(
            "01FF" + "FFFFFFFF" * 7 + "FFFFFFFA"
            "51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
            16,
        ),
    ),
}

_EXCHANGE_SIZES: dict[DheGroup, int] = {
    DheGroup.FFDHE_2048: 256,
    DheGroup.FFDHE_3072: 384,
    DheGroup.FFDHE_4096: 512,
    DheGroup.SECP_256_R1: 64,
    DheGroup.SECP_384_R1: 96,
    DheGroup.SECP_521_R1: 132,
    DheGroup.SM2_P256: 64,
}


_GROUP_BY_VALUE: dict[int, DheGroup] = {int(g): g for g in _EXCHANGE_SIZES}


def _group(group: int) -> DheGroup:
    bit = _GROUP_BY_VALUE.get(group)
    return bit if bit is not None else single_bit(DheGroup, group, "DheGroup")


def _ec_public_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    """X || Y of an EC key's public point, each coordinate padded to the field size (the
    X9.62 uncompressed point without its 0x04 byte)."""
    return key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)[1:]


def dhe_exchange_size(group: int) -> int:
    """Size of ``ExchangeData`` in KEY_EXCHANGE / KEY_EXCHANGE_RSP for a DHE group bit."""
    return _EXCHANGE_SIZES[_group(group)]


def dhe_shared_secret_size(group: int) -> int:
    """Size of the DHE shared secret: the prime size (FFDHE) or the coordinate size (SECP)."""
    bit = _group(group)
    if bit in _CURVES:
        return _CURVES[bit].coord_size
    return _EXCHANGE_SIZES[bit]


def _draw(rng: Rng, n: int) -> int:
    data = rng(n)
    if not isinstance(data, bytes | bytearray) or len(data) != n:
        raise CryptoError(f"rng: asked for {n} bytes, got {len(data)}")
    return int.from_bytes(data, "big")


def derive_ec_private_key(curve: ec.EllipticCurve, rng: Rng) -> ec.EllipticCurvePrivateKey:
    """An EC private key of a NIST curve from ``rng`` bytes only (as DHE keys are made):
    ``d = (v mod (n - 1)) + 1``, so a seeded ``rng`` gives a reproducible key."""
    for info in _CURVES.values():
        if info.curve().name == curve.name:
            d = _draw(rng, info.coord_size + 8) % (info.order - 1) + 1
            return ec.derive_private_key(d, info.curve())
    raise CryptoError(f"curve {curve.name} is not one of P-256, P-384, P-521")


class DheKeyPair:
    """An ephemeral DHE key pair of one group; create it with :meth:`generate`."""

    def __init__(
        self,
        group: DheGroup,
        private: ec.EllipticCurvePrivateKey | dh.DHPrivateKey,
        public_bytes: bytes,
    ) -> None:
        self.group = group
        self._private = private
        self._public_bytes = public_bytes

    @classmethod
    def generate(cls, group: int, rng: Rng) -> DheKeyPair:
        """A key pair whose private value is derived from ``rng`` bytes only.

        SECP: ``d = (v mod (n - 1)) + 1`` with ``v`` from ``coord_size + 8`` bytes.
        FFDHE: ``x = v + 2`` with ``v`` from 32/40/48 bytes (far below ``(p-1)/2``).
        """
        bit = _group(group)
        curve = _CURVES.get(bit)
        if curve is not None:
            d = _draw(rng, curve.coord_size + 8) % (curve.order - 1) + 1
            ec_key = ec.derive_private_key(d, curve.curve())
            return cls(bit, ec_key, _ec_public_bytes(ec_key))
        return cls._ffdhe(bit, rng)

    @classmethod
    def fresh(cls, group: int) -> DheKeyPair:
        """A key pair from the operating system's randomness: an EC key straight from
        OpenSSL's key generation (no scalar from bytes, no coordinate conversion); FFDHE
        as :meth:`generate` with ``os.urandom``."""
        bit = _group(group)
        curve = _CURVES.get(bit)
        if curve is not None:
            ec_key = ec.generate_private_key(curve.curve())
            return cls(bit, ec_key, _ec_public_bytes(ec_key))
        return cls._ffdhe(bit, os.urandom)

    @classmethod
    def _ffdhe(cls, bit: DheGroup, rng: Rng) -> DheKeyPair:
        prime = FFDHE_PRIMES.get(bit)
        if prime is None:
            raise CryptoError(f"DheGroup {bit.name}: not supported")
        x = _draw(rng, _FFDHE_EXPONENT_BYTES[bit]) + 2
        y = pow(2, x, prime)
        params = dh.DHParameterNumbers(prime, 2)
        dh_key = dh.DHPrivateNumbers(x, dh.DHPublicNumbers(y, params)).private_key()
        return cls(bit, dh_key, y.to_bytes(_EXCHANGE_SIZES[bit], "big"))

    @property
    def public_bytes(self) -> bytes:
        """This side's ``ExchangeData`` (X || Y for SECP, padded ``g^x`` for FFDHE)."""
        return self._public_bytes

    def shared_secret(self, peer_public: bytes) -> bytes:
        """The DHE secret with the peer's ``ExchangeData``; CryptoError if that is invalid.

        Rejected: a wrong length, a SECP point not on the curve, an FFDHE value
        ``<= 1`` or ``>= p - 1``.
        """
        peer_public = bytes(peer_public)
        expected = _EXCHANGE_SIZES[self.group]
        if len(peer_public) != expected:
            raise CryptoError(
                f"DHE ExchangeData: {len(peer_public)} bytes, {self.group.name} needs {expected}"
            )
        if isinstance(self._private, ec.EllipticCurvePrivateKey):
            curve = _CURVES[self.group]
            try:
                peer = ec.EllipticCurvePublicKey.from_encoded_point(
                    curve.curve(), b"\x04" + peer_public
                )
                secret = self._private.exchange(ec.ECDH(), peer)
            except ValueError:
                raise CryptoError(f"DHE ExchangeData: not a point on {self.group.name}") from None
            return secret.rjust(curve.coord_size, b"\x00")
        prime = FFDHE_PRIMES[self.group]
        y = int.from_bytes(peer_public, "big")
        if y <= 1 or y >= prime - 1:
            raise CryptoError(f"DHE ExchangeData: {self.group.name} public value out of range")
        try:
            peer_key = dh.DHPublicNumbers(y, dh.DHParameterNumbers(prime, 2)).public_key()
            secret = self._private.exchange(peer_key)
        except ValueError:
            raise CryptoError(
                f"DHE ExchangeData: {self.group.name} public value rejected"
            ) from None
        return secret.rjust(expected, b"\x00")


def generate_dhe_key(group: int, rng: Rng) -> DheKeyPair:
    """Shorthand for :meth:`DheKeyPair.generate`."""
    return DheKeyPair.generate(group, rng)
