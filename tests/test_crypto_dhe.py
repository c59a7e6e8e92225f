"""DHE of emulator.crypto against key pairs made directly with ``cryptography``."""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives.asymmetric import dh, ec

from emulator.codec.constants import DheGroup
from emulator.crypto import FFDHE_PRIMES, DheKeyPair, dhe_exchange_size, dhe_shared_secret_size
from emulator.errors import CryptoError

CURVES: dict[DheGroup, tuple[ec.EllipticCurve, int]] = {
    DheGroup.SECP_256_R1: (ec.SECP256R1(), 32),
    DheGroup.SECP_384_R1: (ec.SECP384R1(), 48),
    DheGroup.SECP_521_R1: (ec.SECP521R1(), 66),
}
FFDHE_BITS = {DheGroup.FFDHE_2048: 2048, DheGroup.FFDHE_3072: 3072, DheGroup.FFDHE_4096: 4096}
# RFC 7919 appendix A: the group constant X of p = 2^b - 2^(b-64) + {[2^(b-130) e] + X} 2^64 - 1
RFC7919_X = {2048: 560316, 3072: 2625351, 4096: 5736041}
# Last line of each prime as printed in RFC 7919 appendix A.
RFC7919_TAIL = {
    2048: "886B423861285C97FFFFFFFFFFFFFFFF",
    3072: "25E41D2B66C62E37FFFFFFFFFFFFFFFF",
    4096: "C68A007E5E655F6AFFFFFFFFFFFFFFFF",
}


def seeded(seed: int) -> random.Random:
    return random.Random(seed)


def rfc7919_prime(bits: int) -> int:
    """Compute the prime from its RFC 7919 definition (e from its series, in integers)."""
    scale = bits - 130
    guard = 64
    one = 1 << (scale + guard)
    total, term, k = 0, one, 0
    while term:
        total += term
        k += 1
        term //= k
    e_scaled = total >> guard  # floor(2^(b-130) * e)
    return (1 << bits) - (1 << (bits - 64)) + ((e_scaled + RFC7919_X[bits]) << 64) - 1


@pytest.mark.parametrize("group", list(FFDHE_BITS), ids=lambda g: g.name)
def test_ffdhe_primes_are_rfc7919(group: DheGroup) -> None:
    bits = FFDHE_BITS[group]
    p = rfc7919_prime(bits)
    assert FFDHE_PRIMES[group] == p
    assert p.bit_length() == bits
    assert format(p, "X").endswith(RFC7919_TAIL[bits])
    assert int(pow(2, p - 1, p)) == 1  # Fermat check of p


def test_sizes() -> None:
    expected = {
        DheGroup.FFDHE_2048: (256, 256),
        DheGroup.FFDHE_3072: (384, 384),
        DheGroup.FFDHE_4096: (512, 512),
        DheGroup.SECP_256_R1: (64, 32),
        DheGroup.SECP_384_R1: (96, 48),
        DheGroup.SECP_521_R1: (132, 66),
    }
    for group, (exchange, secret) in expected.items():
        assert dhe_exchange_size(group) == exchange
        assert dhe_shared_secret_size(group) == secret
    with pytest.raises(CryptoError, match="not supported"):
        DheKeyPair.generate(DheGroup.SM2_P256, seeded(1).randbytes)


@pytest.mark.parametrize("group", list(CURVES), ids=lambda g: g.name)
def test_secp_agreement_with_independent_key(group: DheGroup) -> None:
    curve, size = CURVES[group]
    ours = DheKeyPair.generate(group, seeded(7).randbytes)
    theirs = ec.generate_private_key(curve)
    numbers = theirs.public_key().public_numbers()
    their_bytes = numbers.x.to_bytes(size, "big") + numbers.y.to_bytes(size, "big")

    assert len(ours.public_bytes) == 2 * size
    our_public = ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + ours.public_bytes)
    expected = theirs.exchange(ec.ECDH(), our_public)
    secret = ours.shared_secret(their_bytes)
    assert secret == expected
    assert len(secret) == size


@pytest.mark.parametrize("group", list(FFDHE_BITS), ids=lambda g: g.name)
def test_ffdhe_agreement_with_independent_key(group: DheGroup) -> None:
    bits = FFDHE_BITS[group]
    size = bits // 8
    params = dh.DHParameterNumbers(rfc7919_prime(bits), 2).parameters()
    theirs = params.generate_private_key()
    their_bytes = theirs.public_key().public_numbers().y.to_bytes(size, "big")

    ours = DheKeyPair.generate(group, seeded(11).randbytes)
    assert len(ours.public_bytes) == size
    y = int.from_bytes(ours.public_bytes, "big")
    our_public = dh.DHPublicNumbers(y, params.parameter_numbers()).public_key()
    expected = theirs.exchange(our_public).rjust(size, b"\x00")
    assert ours.shared_secret(their_bytes) == expected


@pytest.mark.parametrize("group", list(CURVES) + list(FFDHE_BITS), ids=lambda g: g.name)
def test_seed_fixes_the_key(group: DheGroup) -> None:
    one = DheKeyPair.generate(group, seeded(42).randbytes)
    two = DheKeyPair.generate(group, seeded(42).randbytes)
    three = DheKeyPair.generate(group, seeded(43).randbytes)
    assert one.public_bytes == two.public_bytes
    assert one.public_bytes != three.public_bytes
    # Two module key pairs agree with each other too.
    assert one.shared_secret(three.public_bytes) == three.shared_secret(one.public_bytes)


def test_ffdhe_padding_of_small_values() -> None:
    """rng of zeros -> x = 2: public 2^2 = 4, secret with peer 2 = 4, both left-padded."""
    pair = DheKeyPair.generate(DheGroup.FFDHE_2048, lambda n: bytes(n))
    assert pair.public_bytes == (4).to_bytes(256, "big")
    assert pair.shared_secret((2).to_bytes(256, "big")) == (4).to_bytes(256, "big")


def test_secp_secret_with_leading_zero_is_padded() -> None:
    """Search seeds until the X coordinate starts with a zero byte; it must stay 32 bytes."""
    curve, size = CURVES[DheGroup.SECP_256_R1]
    theirs = ec.derive_private_key(0x1234567, curve)
    numbers = theirs.public_key().public_numbers()
    their_bytes = numbers.x.to_bytes(size, "big") + numbers.y.to_bytes(size, "big")
    for seed in range(5000):
        ours = DheKeyPair.generate(DheGroup.SECP_256_R1, seeded(seed).randbytes)
        our_public = ec.EllipticCurvePublicKey.from_encoded_point(
            curve, b"\x04" + ours.public_bytes
        )
        expected = theirs.exchange(ec.ECDH(), our_public)
        if expected[0] == 0:
            assert ours.shared_secret(their_bytes) == expected
            assert len(expected) == size
            return
    pytest.fail("no shared secret with a leading zero byte in 5000 seeds")


@pytest.mark.parametrize("group", list(CURVES), ids=lambda g: g.name)
def test_secp_rejects_invalid_peer(group: DheGroup) -> None:
    _, size = CURVES[group]
    ours = DheKeyPair.generate(group, seeded(3).randbytes)
    good = DheKeyPair.generate(group, seeded(4).randbytes).public_bytes
    with pytest.raises(CryptoError, match="bytes"):
        ours.shared_secret(good[:-1])
    with pytest.raises(CryptoError, match="bytes"):
        ours.shared_secret(good + b"\x00")
    off_curve = bytearray(good)
    off_curve[-1] ^= 0x01  # y changed: not on the curve
    with pytest.raises(CryptoError, match="not a point"):
        ours.shared_secret(bytes(off_curve))
    with pytest.raises(CryptoError, match="not a point"):
        ours.shared_secret(bytes(2 * size))
    with pytest.raises(CryptoError, match="not a point"):
        ours.shared_secret(b"\xff" * (2 * size))


@pytest.mark.parametrize("group", list(FFDHE_BITS), ids=lambda g: g.name)
def test_ffdhe_rejects_invalid_peer(group: DheGroup) -> None:
    size = FFDHE_BITS[group] // 8
    p = FFDHE_PRIMES[group]
    ours = DheKeyPair.generate(group, seeded(5).randbytes)
    for value in (0, 1, p - 1, p, 2 ** (8 * size) - 1):
        with pytest.raises(CryptoError, match="out of range"):
            ours.shared_secret(value.to_bytes(size, "big"))
    assert len(ours.shared_secret((p - 2).to_bytes(size, "big"))) == size
    with pytest.raises(CryptoError, match="bytes"):
        ours.shared_secret((5).to_bytes(size - 1, "big"))


def test_bad_rng() -> None:
    with pytest.raises(CryptoError, match="rng"):
        DheKeyPair.generate(DheGroup.SECP_256_R1, lambda n: b"\x01")
