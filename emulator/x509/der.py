"""Minimal DER reading and writing (ITU-T X.690) for the structures ``cryptography`` does
not expose: a PKCS#10 CertificationRequestInfo given by a requester (GET_CSR
RequesterInfo) and the one the device signs.  Definite lengths only, as DER requires.
"""

from __future__ import annotations

from dataclasses import dataclass

from emulator.x509.chain import CertError

SEQUENCE = 0x30
SET = 0x31
INTEGER = 0x02
BIT_STRING = 0x03
NULL = 0x05
OID = 0x06
CONTEXT_0 = 0xA0  # [0] constructed


@dataclass(frozen=True, slots=True)
class Tlv:
    """One DER element of a buffer: its tag, where its value starts and where it ends."""

    tag: int
    start: int
    end: int
    #: where the element (its tag byte) starts
    head: int

    def value(self, data: bytes) -> bytes:
        return data[self.start : self.end]

    def raw(self, data: bytes) -> bytes:
        """The whole element (tag, length and value)."""
        return data[self.head : self.end]


def read(data: bytes, offset: int = 0, limit: int | None = None, what: str = "DER") -> Tlv:
    """The element at ``offset`` (it must end by ``limit``); CertError naming ``what``."""
    end_limit = len(data) if limit is None else limit
    if offset + 2 > end_limit:
        raise CertError(f"{what}: truncated at byte {offset}")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise CertError(f"{what}: multi-byte tags are not supported (byte {offset})")
    first = data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise CertError(f"{what}: indefinite length is not DER (byte {offset})")
    else:
        n = first & 0x7F
        if n > 4 or pos + n > end_limit:
            raise CertError(f"{what}: bad length encoding at byte {offset}")
        length = int.from_bytes(data[pos : pos + n], "big")
        if length < 0x80 or (n > 1 and length >> (8 * (n - 1)) == 0):
            raise CertError(f"{what}: length at byte {offset} is not minimally encoded")
        pos += n
    if pos + length > end_limit:
        raise CertError(
            f"{what}: element at byte {offset} claims {length} bytes, {end_limit - pos} are left"
        )
    return Tlv(tag, pos, pos + length, offset)


def expect(data: bytes, offset: int, tag: int, limit: int | None, what: str) -> Tlv:
    """Like :func:`read`, and the element must carry ``tag``."""
    el = read(data, offset, limit, what)
    if el.tag != tag:
        raise CertError(f"{what}: tag 0x{el.tag:02X} at byte {offset}, expected 0x{tag:02X}")
    return el


def children(data: bytes, parent: Tlv, what: str) -> list[Tlv]:
    """The elements inside a constructed element, which they must fill exactly."""
    out: list[Tlv] = []
    off = parent.start
    while off < parent.end:
        el = read(data, off, parent.end, what)
        out.append(el)
        off = el.end
    return out


def length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def tlv(tag: int, body: bytes) -> bytes:
    return bytes((tag,)) + length(len(body)) + body


def oid(dotted: str) -> bytes:
    """The DER OBJECT IDENTIFIER of a dotted string."""
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return tlv(OID, bytes(body))


def integer(value: int) -> bytes:
    body = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True)
    return tlv(INTEGER, body)
