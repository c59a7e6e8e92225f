"""Ed448 with a context string (RFC 8032 section 5.2), which ``cryptography`` does not expose.

DSP0274 1.2+ signs with Ed448 using the SPDM context string (e.g.
``"responder-challenge_auth signing"``) as the RFC 8032 context ``C``; the
``cryptography`` API only signs with an empty context.  This module implements
PureEdDSA Ed448 (``dom4(0, C)``) over integers, from the RFC's definitions.  It
is not constant-time: it is meant for an emulator and its test requester, never
for protecting real secrets.
"""

from __future__ import annotations

import hashlib

__all__ = [
    "ED448_KEY_SIZE",
    "ED448_SIGNATURE_SIZE",
    "ed448_public_key",
    "ed448_sign",
    "ed448_verify",
]

ED448_KEY_SIZE = 57
ED448_SIGNATURE_SIZE = 114

_P = (1 << 448) - (1 << 224) - 1
_D = -39081 % _P
_L = (1 << 446) - 13818066809895115352007386748515426880336692474882178609894547503885
_BASE_X = int(
    "224580040295924300187604334099896036246789641632564134246125461686950415467406032909"
    "029192869357953282578032075146446173674602635247710"
)
_BASE_Y = int(
    "298819210078481492676017930443930673437544040154080242095928241372331506189835876003"
    "536878655418784733982303233503462500531545062832660"
)

# Projective point (X : Y : Z) on x^2 + y^2 = 1 + d x^2 y^2, x = X/Z, y = Y/Z.
_Point = tuple[int, int, int]
_IDENTITY: _Point = (0, 1, 1)
_BASE: _Point = (_BASE_X, _BASE_Y, 1)


def _add(p1: _Point, p2: _Point) -> _Point:
    """Complete addition law for a = 1 untwisted Edwards curves (RFC 8032 section 5.2.4)."""
    x1, y1, z1 = p1
    x2, y2, z2 = p2
    a = z1 * z2 % _P
    b = a * a % _P
    c = x1 * x2 % _P
    d = y1 * y2 % _P
    e = _D * c % _P * d % _P
    f = (b - e) % _P
    g = (b + e) % _P
    h = (x1 + y1) * (x2 + y2) % _P
    return (a * f % _P * (h - c - d) % _P, a * g % _P * (d - c) % _P, f * g % _P)


def _double(p: _Point) -> _Point:
    """Doubling (RFC 8032 section 5.2.4)."""
    x1, y1, z1 = p
    b = (x1 + y1) * (x1 + y1) % _P
    c = x1 * x1 % _P
    d = y1 * y1 % _P
    e = (c + d) % _P
    h = z1 * z1 % _P
    j = (e - 2 * h) % _P
    return ((b - e) * j % _P, e * (c - d) % _P, e * j % _P)


def _multiply(scalar: int, point: _Point) -> _Point:
    result = _IDENTITY
    for bit in bin(scalar)[2:]:
        result = _double(result)
        if bit == "1":
            result = _add(result, point)
    return result


def _equal(p1: _Point, p2: _Point) -> bool:
    x1, y1, z1 = p1
    x2, y2, z2 = p2
    return (x1 * z2 - x2 * z1) % _P == 0 and (y1 * z2 - y2 * z1) % _P == 0


def _encode(point: _Point) -> bytes:
    x, y, z = point
    inverse = pow(z, _P - 2, _P)
    x = x * inverse % _P
    y = y * inverse % _P
    return (y | ((x & 1) << 455)).to_bytes(ED448_KEY_SIZE, "little")


def _decode(data: bytes) -> _Point | None:
    if len(data) != ED448_KEY_SIZE:
        return None
    value = int.from_bytes(data, "little")
    sign = value >> 455
    if value & (0x7F << 448):
        return None  # bits 448..454 must be zero
    y = value & ((1 << 448) - 1)
    if y >= _P:
        return None
    u = (y * y - 1) % _P
    v = (_D * y * y - 1) % _P
    # x = sqrt(u / v) = u^3 v (u^5 v^3)^((p - 3) / 4)  (RFC 8032 section 5.2.3)
    x = pow(u, 3, _P) * v % _P * pow(pow(u, 5, _P) * pow(v, 3, _P) % _P, (_P - 3) // 4, _P) % _P
    if v * x * x % _P != u:
        return None
    if x == 0 and sign:
        return None
    if (x & 1) != sign:
        x = _P - x
    return (x, y, 1)


def _shake(*parts: bytes) -> bytes:
    return hashlib.shake_256(b"".join(parts)).digest(114)


def _dom4(context: bytes) -> bytes:
    if len(context) > 255:
        raise ValueError("Ed448 context longer than 255 bytes")
    return b"SigEd448" + bytes([0, len(context)]) + context


def _expand_secret(secret: bytes) -> tuple[int, bytes]:
    if len(secret) != ED448_KEY_SIZE:
        raise ValueError(f"Ed448 private key must be {ED448_KEY_SIZE} bytes")
    h = _shake(secret)
    scalar_bytes = bytearray(h[:ED448_KEY_SIZE])
    scalar_bytes[0] &= 0xFC
    scalar_bytes[56] = 0
    scalar_bytes[55] |= 0x80
    return int.from_bytes(scalar_bytes, "little"), h[ED448_KEY_SIZE:]


def ed448_public_key(secret: bytes) -> bytes:
    """The 57-byte public key of a 57-byte Ed448 private key."""
    scalar, _ = _expand_secret(secret)
    return _encode(_multiply(scalar, _BASE))


def ed448_sign(secret: bytes, message: bytes, context: bytes = b"") -> bytes:
    """Ed448 signature ``R || S`` (114 bytes) of ``message`` with context ``context``."""
    scalar, prefix = _expand_secret(secret)
    public = _encode(_multiply(scalar, _BASE))
    dom = _dom4(context)
    r = int.from_bytes(_shake(dom, prefix, message), "little") % _L
    r_bytes = _encode(_multiply(r, _BASE))
    k = int.from_bytes(_shake(dom, r_bytes, public, message), "little") % _L
    s = (r + k * scalar) % _L
    return r_bytes + s.to_bytes(ED448_KEY_SIZE, "little")


def ed448_verify(public: bytes, message: bytes, signature: bytes, context: bytes = b"") -> bool:
    """Check an Ed448 signature with context ``context`` (cofactored check, RFC 8032 5.2.7)."""
    if len(signature) != ED448_SIGNATURE_SIZE or len(context) > 255:
        return False
    point_a = _decode(public)
    point_r = _decode(signature[:ED448_KEY_SIZE])
    if point_a is None or point_r is None:
        return False
    s = int.from_bytes(signature[ED448_KEY_SIZE:], "little")
    if s >= _L:
        return False
    k = int.from_bytes(
        _shake(_dom4(context), signature[:ED448_KEY_SIZE], public, message), "little"
    )
    k %= _L
    left = _multiply(4 * s, _BASE)
    right = _multiply(4, _add(point_r, _multiply(k, point_a)))
    return _equal(left, right)
