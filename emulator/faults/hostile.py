"""Hostile-device mode: seeded, structure-aware mutations of responses (plausible lies).

A hostile device answers every request, but some answers lie in ways a careless
requester might believe: a length or count field off by a little, a response code or
version byte that belongs to another message, an algorithm bit that was never offered
(or two of them), a message cut at a field boundary or with bytes appended, a flipped
bit in a signature, a hash, a nonce, or a DER field of a certificate.  Each operator knows
the DSP0274 layout of the response it mutates (field positions from libspdm ``spdm.h``).

Pure functions over bytes: ``mutate(response, rng, context) -> (bytes, description)``.
All randomness comes from the ``rng`` argument; :func:`exchange_rng` derives it from a
seed and the exchange's index, so the same seed and the same requests give byte-identical
mutated responses.  Every mutation is described with the seed, the exchange index, the
operator, the field and its byte position (the fault engine logs it and puts it in the
exchange event).

It is one fault kind of :mod:`emulator.faults`: ``do=mutate`` (``seed=S`` seeds the
mutations as well as the ``prob`` draws); ``spdm-emulator serve --mutate SEED[:RATE]``,
a profile's ``[[faults]] do = "mutate"`` and the MQTT fault commands all make that rule
(:func:`mutate_spec`).

A :class:`Mutation` says whether a correct requester *must* notice it (``strict``): a
wrong version byte, a truncated message or a bad signature must be rejected; trailing
bytes, a different CTExponent or a reserved byte set need not be.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from emulator.codec.constants import (
    ErrorCode,
    RequestCode,
    RequesterCap,
    ResponderCap,
    ResponseCode,
)
from emulator.errors import CryptoError

NONCE_SIZE = 32
#: the DSP0274 response codes (anything a device could plausibly answer with)
RESPONSE_CODES = tuple(int(c) for c in ResponseCode)
SPDM_VERSIONS = (0x10, 0x11, 0x12, 0x13)
#: default share of responses mutated by ``--mutate SEED`` without a rate
DEFAULT_RATE = 0.1


class NotApplicable(Exception):
    """The operator has nothing to mutate in this response (the reason says why)."""


@dataclass(frozen=True, slots=True)
class MutationContext:
    """What the operators need to know about the exchange (sizes come from the negotiation;
    0 means not negotiated / unknown)."""

    request: bytes = b""
    version: int = 0
    hash_size: int = 0
    signature_size: int = 0
    measurement_hash_size: int = 0
    dhe_size: int = 0
    handshake_in_clear: bool = False
    #: the seed and exchange index, for the description
    seed: int | None = None
    index: int = 0

    @classmethod
    def from_responder(cls, r: Any, request: bytes, **kw: Any) -> MutationContext:
        """Sizes from a :class:`~emulator.responder.Responder`'s negotiated algorithms."""
        from emulator.crypto import (
            exchange_sizes,
            hash_size,
            measurement_hash_size,
            signature_size,
        )

        alg = r.algorithms

        def size(fn: Callable[[int], int], value: int) -> int:
            if not value:
                return 0
            try:
                return fn(value)
            except CryptoError:
                return 0

        peer = r.peer.flags if r.peer is not None else 0
        clear = bool(
            r.device.capabilities & ResponderCap.HANDSHAKE_IN_THE_CLEAR_CAP
            and peer & RequesterCap.HANDSHAKE_IN_THE_CLEAR_CAP
        )
        return cls(
            request=bytes(request),
            version=r.version,
            hash_size=size(hash_size, alg.base_hash),
            signature_size=size(signature_size, alg.asym),
            measurement_hash_size=size(measurement_hash_size, alg.measurement_hash),
            dhe_size=size(lambda _: exchange_sizes(alg.dhe, alg.kem)[1], alg.dhe | alg.kem),
            handshake_in_clear=clear,
            **kw,
        )


@dataclass(frozen=True, slots=True)
class Field:
    """A field of a response: where it is, what it is, and whether lying in it must be
    noticed by a requester that checks what DSP0274 lets it check."""

    name: str
    offset: int
    size: int
    kind: str  # length, count, algo, flags, hash, nonce, signature, reserved, value, der
    strict: bool = True


@dataclass(frozen=True, slots=True)
class Mutation:
    """One applied mutation."""

    operator: str
    field: str
    offset: int
    before: bytes
    after: bytes
    strict: bool
    seed: int | None = None
    index: int = 0

    def describe(self) -> str:
        seed = f"seed={self.seed} " if self.seed is not None else ""
        old = self.before.hex() or "-"
        new = self.after.hex() or "-"
        if len(old) > 24:
            old = old[:24] + "..."
        if len(new) > 24:
            new = new[:24] + "..."
        return (
            f"mutate {seed}#{self.index} {self.operator}:{self.field} at byte {self.offset} "
            f"{old} -> {new}{'' if self.strict else ' (plausible)'}"
        )


# ---- where the fields are ---------------------------------------------------------------------


def _u(data: bytes, offset: int, size: int) -> int:
    return int.from_bytes(data[offset : offset + size], "little")


def _inside(fields: list[Field], total: int) -> list[Field]:
    return [f for f in fields if f.size > 0 and f.offset >= 0 and f.offset + f.size <= total]


def response_fields(response: bytes, ctx: MutationContext) -> list[Field]:
    """The known fields of ``response`` (DSP0274 layouts), those that fit in it."""
    if len(response) < 4:
        return []
    code = response[1]
    fields: list[Field] = []
    h, s = ctx.hash_size, ctx.signature_size
    req = ctx.request
    if code == ResponseCode.VERSION:
        fields.append(Field("VersionNumberEntryCount", 5, 1, "count"))
        fields.append(Field("Reserved", 4, 1, "reserved", strict=False))
        n = response[5] if len(response) > 5 else 0
        fields += [
            Field(f"VersionNumberEntry[{i}]", 6 + 2 * i, 2, "value", strict=False) for i in range(n)
        ]
    elif code == ResponseCode.CAPABILITIES:
        fields.append(Field("CTExponent", 5, 1, "value", strict=False))
        fields.append(Field("Flags", 8, 4, "flags"))
        if response[0] >= 0x12:
            fields.append(Field("DataTransferSize", 12, 4, "length"))
            fields.append(Field("MaxSPDMmsgSize", 16, 4, "length"))
    elif code == ResponseCode.ALGORITHMS:
        fields += [
            Field("Length", 4, 2, "length"),
            Field("MeasurementSpecificationSel", 6, 1, "algo"),
            Field("MeasurementHashAlgo", 8, 4, "algo"),
            Field("BaseAsymSel", 12, 4, "algo"),
            Field("BaseHashSel", 16, 4, "algo"),
            Field("ExtAsymSelCount", 32, 1, "count"),
            Field("ExtHashSelCount", 33, 1, "count"),
        ]
        if response[0] >= 0x14:  # DSP0274 1.4 PqcAsymSel, in formerly reserved bytes
            fields.append(Field("PqcAsymSel", 20, 4, "algo"))
        if response[0] >= 0x11:
            fields.append(Field("NumAlgStructs", 2, 1, "count"))
            for i in range(response[2]):
                fields.append(Field(f"AlgStruct[{i}].AlgSupported", 36 + 4 * i + 2, 2, "algo"))
    elif code == ResponseCode.DIGESTS and h:
        fields.append(Field("ProvisionedSlotMask", 3, 1, "count"))
        n = bin(response[3]).count("1")
        fields += [Field(f"Digest[{i}]", 4 + i * h, h, "hash") for i in range(n)]
    elif code == ResponseCode.CERTIFICATE and response[0] >= 0x14 and response[2] & 0x80:
        # SPDM 1.4 LargeCertChain: u32 LargePortionLength / LargeRemainderLength at 8 / 12
        fields.append(Field("LargePortionLength", 8, 4, "length"))
        fields.append(Field("LargeRemainderLength", 12, 4, "length", strict=False))
        portion = _u(response, 8, 4)
        offset = _u(req, 8, 4) if len(req) >= 16 else -1
        if offset == 0 and h:
            fields.append(Field("CertChain.Length", 16, 2, "length"))
            fields.append(Field("CertChain.RootHash", 20, h, "hash"))
        fields.append(Field("CertChain", 16, min(portion, len(response) - 16), "der"))
    elif code == ResponseCode.CERTIFICATE:
        fields.append(Field("PortionLength", 4, 2, "length"))
        fields.append(Field("RemainderLength", 6, 2, "length", strict=False))
        portion = _u(response, 4, 2)
        offset = _u(req, 4, 2) if len(req) >= 8 else -1
        if offset == 0 and h:
            fields.append(Field("CertChain.Length", 8, 2, "length"))
            fields.append(Field("CertChain.RootHash", 12, h, "hash"))
        fields.append(Field("CertChain", 8, min(portion, len(response) - 8), "der"))
    elif code == ResponseCode.CHALLENGE_AUTH and h:
        msh = h if len(req) > 3 and req[3] in (1, 0xFF) else 0
        off = 4 + h + NONCE_SIZE + msh
        fields += [
            Field("CertChainHash", 4, h, "hash"),
            Field("Nonce", 4 + h, NONCE_SIZE, "nonce"),
            Field("MeasurementSummaryHash", 4 + h + NONCE_SIZE, msh, "hash"),
            Field("OpaqueDataLength", off, 2, "length"),
        ]
        if s and len(response) >= off + 2 + s:
            fields.append(Field("Signature", len(response) - s, s, "signature"))
    elif code == ResponseCode.MEASUREMENTS:
        fields += [
            Field("NumberOfBlocks", 4, 1, "count"),
            Field("MeasurementRecordLength", 5, 3, "length"),
        ]
        record_len = _u(response, 5, 3)
        signed = len(req) > 2 and bool(req[2] & 0x01)
        off = 8
        i = 0
        while off + 7 <= min(len(response), 8 + record_len):
            size = _u(response, off + 2, 2)
            fields.append(Field(f"Block[{i}].MeasurementSize", off + 2, 2, "length"))
            fields.append(Field(f"Block[{i}].ValueSize", off + 5, 2, "length"))
            value = Field(f"Block[{i}].Value", off + 7, max(size - 3, 0), "value", strict=signed)
            fields.append(value)
            off += 4 + size
            i += 1
        nonce_at = 8 + record_len
        fields.append(Field("Nonce", nonce_at, NONCE_SIZE, "nonce", strict=signed))
        fields.append(Field("OpaqueDataLength", nonce_at + NONCE_SIZE, 2, "length"))
        if signed and s:
            fields.append(Field("Signature", len(response) - s, s, "signature"))
    elif code == ResponseCode.KEY_EXCHANGE_RSP and ctx.dhe_size:
        d = ctx.dhe_size
        msh = h if len(req) > 2 and req[2] in (1, 0xFF) else 0
        base = 40 + d + msh
        fields += [
            Field("RandomData", 8, NONCE_SIZE, "nonce"),
            Field("ExchangeData", 40, d, "value"),
            Field("OpaqueDataLength", base, 2, "length"),
        ]
        tail = 0 if ctx.handshake_in_clear else h
        if s and len(response) >= base + 2 + s + tail:
            fields.append(Field("Signature", len(response) - tail - s, s, "signature"))
            if tail:
                fields.append(Field("ResponderVerifyData", len(response) - tail, tail, "hash"))
    elif code == ResponseCode.ERROR:
        fields.append(Field("ErrorCode", 2, 1, "value", strict=False))
    return _inside(fields, len(response))


# ---- operators --------------------------------------------------------------------------------

Operator = Callable[[bytes, random.Random, MutationContext], tuple[bytes, Mutation]]


def _pick(rng: random.Random, fields: list[Field], kinds: tuple[str, ...], what: str) -> Field:
    choices = [f for f in fields if f.kind in kinds]
    if not choices:
        raise NotApplicable(f"no {what} field")
    return rng.choice(choices)


def _mutation(
    op: str, f: Field | None, offset: int, before: bytes, after: bytes, strict: bool
) -> Mutation:
    return Mutation(op, f.name if f else "message", offset, before, after, strict)


def _replace(response: bytes, offset: int, new: bytes) -> bytes:
    return response[:offset] + new + response[offset + len(new) :]


def op_length(response: bytes, rng: random.Random, ctx: MutationContext) -> tuple[bytes, Mutation]:
    """A length or count field off by a little, doubled, zero or all ones."""
    f = _pick(rng, response_fields(response, ctx), ("length", "count"), "length or count")
    old = _u(response, f.offset, f.size)
    limit = (1 << (8 * f.size)) - 1
    candidates = {old + 1, old - 1, old + rng.randint(2, 64), old * 2, 0, limit}
    candidates = {c for c in candidates if 0 <= c <= limit and c != old}
    if f.kind == "count" and f.name == "ProvisionedSlotMask":
        candidates = {old | (1 << rng.randrange(8)), old & (old - 1), old ^ 0xFF} - {old}
    if not candidates:
        raise NotApplicable(f"{f.name} has no other value")
    new = rng.choice(sorted(candidates)).to_bytes(f.size, "little")
    out = _replace(response, f.offset, new)
    strict = f.strict
    if f.name in ("DataTransferSize", "MaxSPDMmsgSize"):
        dts, mx = _u(out, 12, 4), _u(out, 16, 4)
        strict = dts < 42 or mx < dts  # any other value is a legal (if odd) choice
    return out, _mutation(
        "length", f, f.offset, response[f.offset : f.offset + f.size], new, strict
    )


def op_code(response: bytes, rng: random.Random, ctx: MutationContext) -> tuple[bytes, Mutation]:
    """Another response code: a neighbour's, ERROR, or the request's own code."""
    old = response[1]
    choices = [c for c in RESPONSE_CODES if c != old]
    if ctx.request[1:2]:
        choices.append(ctx.request[1])  # echoing the request code (bit 7 set)
    new = rng.choice(choices)
    out = _replace(response, 1, bytes((new,)))
    if new == ResponseCode.ERROR:
        code = rng.choice([int(c) for c in ErrorCode])
        out = _replace(out, 2, bytes((code,)))
    return out, _mutation("code", None, 1, response[1:2], bytes((new,)), True)


def op_version(response: bytes, rng: random.Random, ctx: MutationContext) -> tuple[bytes, Mutation]:
    """A version byte of another SPDM version (or one that does not exist)."""
    old = response[0]
    new = rng.choice([v for v in (*SPDM_VERSIONS, 0x14, 0x20, 0x00, 0x01) if v != old])
    return _replace(response, 0, bytes((new,))), _mutation(
        "version", None, 0, bytes((old,)), bytes((new,)), True
    )


def op_algo(response: bytes, rng: random.Random, ctx: MutationContext) -> tuple[bytes, Mutation]:
    """ALGORITHMS: an unoffered bit, two bits, or none; CAPABILITIES: a reserved flag value;
    VERSION: an entry for a version that does not exist."""
    fields = response_fields(response, ctx)
    f = _pick(rng, fields, ("algo", "flags", "value"), "algorithm or flag")
    old = _u(response, f.offset, f.size)
    strict = True
    if f.kind == "algo":
        width = 8 * f.size
        bits = [1 << i for i in range(width)]
        mode = rng.randrange(3)
        if mode == 0 or old == 0:
            new = old | rng.choice([b for b in bits if not b & old] or [1])  # a second bit
        elif mode == 1:
            new = 0
            strict = f.name in ("BaseHashSel",)  # "nothing selected" is legal elsewhere
        else:
            new = rng.choice([b for b in bits if b != old])  # another single bit
            strict = False  # it may have been offered: only a check against the offer tells
            offered = _offered(ctx.request, f.name)
            if offered is not None and not new & offered:
                strict = True
    elif f.kind == "flags":
        choice = rng.randrange(3)
        if choice == 0:
            new = old | 0x18  # MEAS_CAP = 11b (reserved)
        elif choice == 1:
            new = old | (0x3 << 10)  # PSK_CAP = 11b (reserved)
            strict = response[0] >= 0x11
        else:
            new = old ^ (1 << rng.randrange(30))
            strict = False
    elif f.name.startswith("VersionNumberEntry"):
        new = rng.choice([0x1500, 0x0900, 0x2000, 0xFFFF])  # 1.5, 0.9, 2.0: none exists
        strict = False  # an unknown version in the list is ignored by a requester
    else:
        new = old ^ (1 << rng.randrange(8 * f.size))
        strict = f.strict
    if new == old:
        raise NotApplicable(f"{f.name}: no other value")
    raw = new.to_bytes(f.size, "little")
    out = _replace(response, f.offset, raw)
    before = response[f.offset : f.offset + f.size]
    return out, _mutation("algo", f, f.offset, before, raw, strict)


def _offered(request: bytes, name: str) -> int | None:
    """What a NEGOTIATE_ALGORITHMS offered for a selection field (None: unknown)."""
    if len(request) < 32 or request[1] != RequestCode.NEGOTIATE_ALGORITHMS:
        return None
    if name == "BaseAsymSel":
        return _u(request, 8, 4)
    if name == "BaseHashSel":
        return _u(request, 12, 4)
    if name == "PqcAsymSel":
        return _u(request, 16, 4) if request[0] >= 0x14 else 0
    if name == "MeasurementSpecificationSel":
        return request[6]
    if name.startswith("AlgStruct["):
        i = int(name[10 : name.index("]")])
        off = 32 + 4 * (request[30] + request[31]) + 4 * i
        return _u(request, off + 2, 2) if off + 4 <= len(request) else None
    return None


def op_truncate(
    response: bytes, rng: random.Random, ctx: MutationContext
) -> tuple[bytes, Mutation]:
    """Cut the message at a field boundary (or anywhere after the header)."""
    fields = response_fields(response, ctx)
    cuts = {f.offset for f in fields if 0 < f.offset < len(response)}
    cuts |= {f.offset + f.size for f in fields if f.offset + f.size < len(response)}
    cuts.add(len(response) - 1)
    if len(response) > 4:
        cuts.add(rng.randrange(4, len(response)))
    cuts.add(rng.randrange(0, 4))
    cut = rng.choice(sorted(c for c in cuts if 0 <= c < len(response)))
    strict = response[1] != ResponseCode.ERROR or cut < 4
    return response[:cut], _mutation(
        "truncate", None, cut, response[cut:], b"", strict and _known(response)
    )


def op_extend(response: bytes, rng: random.Random, ctx: MutationContext) -> tuple[bytes, Mutation]:
    """Append bytes (zeros, as padding would be, or random ones)."""
    n = rng.choice([1, 2, 3, 4, 8, rng.randint(1, 64)])
    extra = bytes(n) if rng.random() < 0.5 else rng.randbytes(n)
    return response + extra, _mutation("extend", None, len(response), b"", extra, False)


def op_signature(
    response: bytes, rng: random.Random, ctx: MutationContext
) -> tuple[bytes, Mutation]:
    """Flip one bit of the signature."""
    f = _pick(rng, response_fields(response, ctx), ("signature",), "signature")
    return _flip_bit(response, rng, f, "signature")


def op_hash(response: bytes, rng: random.Random, ctx: MutationContext) -> tuple[bytes, Mutation]:
    """Flip one bit of a digest, a hash, a nonce or a signed value."""
    fields = response_fields(response, ctx)
    f = _pick(rng, fields, ("hash", "nonce", "value"), "hash, nonce or value")
    return _flip_bit(response, rng, f, "hash")


def _flip_bit(response: bytes, rng: random.Random, f: Field, op: str) -> tuple[bytes, Mutation]:
    pos = f.offset + rng.randrange(f.size)
    new = bytes((response[pos] ^ (1 << rng.randrange(8)),))
    return _replace(response, pos, new), _mutation(
        op, f, pos, response[pos : pos + 1], new, f.strict
    )


def der_elements(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int, int]]:
    """TLVs of DER ``data[start:end]`` found by walking certificates from their start.

    Each entry: (tag offset, tag, length-bytes offset, length-bytes count, value length).
    Constructed elements (SEQUENCE, SET, context tags) are walked into.  Certificates are
    found where ``30 82 .. .. 30 82`` (a certificate and its TBSCertificate) starts.
    """
    out: list[tuple[int, int, int, int, int]] = []

    def walk(pos: int, stop: int, depth: int) -> None:
        while pos + 2 <= stop and depth < 12 and len(out) < 4096:
            tag = data[pos]
            first = data[pos + 1]
            if first < 0x80:
                nlen, length = 0, first
            else:
                nlen = first & 0x7F
                if nlen == 0 or nlen > 3 or pos + 2 + nlen > stop:
                    return
                length = int.from_bytes(data[pos + 2 : pos + 2 + nlen], "big")
            value = pos + 2 + nlen
            if value + length > stop:
                return
            out.append((pos, tag, pos + 1, 1 + nlen, length))
            if tag & 0x20:  # constructed
                walk(value, value + length, depth + 1)
            pos = value + length

    pos = start
    while pos + 6 <= end:
        if data[pos] == 0x30 and data[pos + 1] == 0x82 and data[pos + 4 : pos + 6] == b"\x30\x82":
            before = len(out)
            walk(pos, end, 0)
            if len(out) > before:
                first = out[before]
                pos = first[2] + first[3] + first[4]
                continue
        pos += 1
    return out


#: tags a DER element is turned into (INTEGER, OCTET STRING, NULL, OID, UTF8String, ...)
_DER_TAGS = (0x02, 0x04, 0x05, 0x06, 0x0C, 0x13, 0x30, 0x31)


def op_der(response: bytes, rng: random.Random, ctx: MutationContext) -> tuple[bytes, Mutation]:
    """CERTIFICATE: change a DER tag, length, OID, time or bit-string byte of a certificate."""
    fields = response_fields(response, ctx)
    f = _pick(rng, fields, ("der",), "certificate chain")
    elements = der_elements(response, f.offset, f.offset + f.size)
    if not elements:
        return _flip_bit(response, rng, f, "der")  # a middle portion: any byte of the chain
    want = rng.choice(["tag", "length", "oid", "time", "bits", "any"])
    by_tag = {
        "oid": [e for e in elements if e[1] == 0x06],
        "time": [e for e in elements if e[1] in (0x17, 0x18)],
        "bits": [e for e in elements if e[1] == 0x03 and e[4] > 1],
    }
    pool = by_tag.get(want) or elements
    tag_at, tag, len_at, len_n, length = rng.choice(pool)
    value_at = len_at + len_n
    if want == "tag":
        pos = tag_at
        new = rng.choice([t for t in _DER_TAGS if t != tag])
        name = f"tag 0x{tag:02X}"
    elif want == "length":
        pos = len_at + len_n - 1
        new = (response[pos] + rng.choice([1, -1, 0x10])) & 0xFF
        name = f"length of 0x{tag:02X}"
    elif want == "time" and length:
        pos = value_at + rng.randrange(length)
        digit = response[pos]
        if 0x30 <= digit <= 0x39:  # another digit: still a well-formed time
            new = ord("0") + (digit - ord("0") + rng.randint(1, 9)) % 10
        else:
            new = digit ^ 1
        name = "time"
    elif length:
        pos = value_at + rng.randrange(length)
        new = response[pos] ^ (1 << rng.randrange(8))
        name = {"oid": "OID", "bits": "BIT STRING"}.get(want, f"value of 0x{tag:02X}")
    else:
        pos, new, name = len_at, response[len_at] ^ 1, f"length of 0x{tag:02X}"
    raw = bytes((new,))
    return _replace(response, pos, raw), Mutation(
        "der", f"{f.name}: {name}", pos, response[pos : pos + 1], raw, True
    )


def _known(response: bytes) -> bool:
    return len(response) >= 2 and response[1] in RESPONSE_CODES


#: every operator, by name (``mutate`` picks among those that apply)
OPERATORS: dict[str, Operator] = {
    "length": op_length,
    "code": op_code,
    "version": op_version,
    "algo": op_algo,
    "truncate": op_truncate,
    "extend": op_extend,
    "signature": op_signature,
    "hash": op_hash,
    "der": op_der,
}
#: how often each operator is picked, relative (structure-aware ones more than blind ones)
WEIGHTS: dict[str, int] = {
    "length": 4,
    "code": 1,
    "version": 1,
    "algo": 3,
    "truncate": 2,
    "extend": 1,
    "signature": 4,
    "hash": 3,
    "der": 5,
}


def applicable(response: bytes, ctx: MutationContext) -> list[str]:
    """Operators that have something to mutate in ``response``."""
    if len(response) < 2:
        return ["extend"]
    kinds = {f.kind for f in response_fields(response, ctx)}
    need = {
        "length": {"length", "count"},
        "algo": {"algo", "flags", "value"},
        "signature": {"signature"},
        "hash": {"hash", "nonce", "value"},
        "der": {"der"},
    }
    return [name for name in OPERATORS if name not in need or need[name] & kinds]


def mutate_with(
    operator: str, response: bytes, rng: random.Random, context: MutationContext
) -> tuple[bytes, Mutation]:
    """Apply one named operator (NotApplicable when it has nothing to work on)."""
    out, m = OPERATORS[operator](response, rng, context)
    return out, replace(m, seed=context.seed, index=context.index)


def mutate(response: bytes, rng: random.Random, context: MutationContext) -> tuple[bytes, str]:
    """Mutate ``response``: an operator that applies, picked (weighted) with ``rng``.

    Returns the mutated bytes and a description naming the seed, the exchange index, the
    operator, the field and the byte position.
    """
    out, m = mutation(response, rng, context)
    return out, m.describe()


def mutation(
    response: bytes, rng: random.Random, context: MutationContext
) -> tuple[bytes, Mutation]:
    """:func:`mutate`, returning the :class:`Mutation` itself."""
    names = applicable(response, context)
    for _ in range(8):
        name = rng.choices(names, weights=[WEIGHTS[n] for n in names])[0]
        try:
            out, m = OPERATORS[name](response, rng, context)
        except NotApplicable:
            continue
        return out, replace(m, seed=context.seed, index=context.index)
    out, m = op_extend(response, rng, context)
    return out, replace(m, seed=context.seed, index=context.index)


def exchange_rng(seed: int, index: int) -> random.Random:
    """The randomness of the ``index``-th mutated exchange under ``seed`` (reproducible:
    Python's ``random`` seeded with a string is stable across runs and hash seeds)."""
    return random.Random(f"spdm-emulator/mutate/{seed}/{index}")


def mutate_exchange(
    response: bytes, request: bytes, responder: Any, *, seed: int, index: int
) -> tuple[bytes, Mutation]:
    """What the fault engine calls for ``do=mutate``: the ``index``-th mutation of a rule."""
    ctx = MutationContext.from_responder(responder, request, seed=seed, index=index)
    return mutation(response, exchange_rng(seed, index), ctx)


# ---- --mutate SEED[:RATE] (emulator.cli) -> a fault rule -----------------------------------------


def parse_mutate(text: str) -> tuple[int, float]:
    """``SEED[:RATE]`` -> (seed, rate); ValueError naming the problem."""
    seed_text, _, rate_text = text.strip().partition(":")
    try:
        seed = int(seed_text, 0)
    except ValueError:
        raise ValueError(f"--mutate {text!r}: SEED {seed_text!r} is not an integer") from None
    if seed < 0:
        raise ValueError(f"--mutate {text!r}: SEED must be >= 0")
    rate = DEFAULT_RATE
    if rate_text:
        try:
            rate = float(rate_text)
        except ValueError:
            raise ValueError(f"--mutate {text!r}: RATE {rate_text!r} is not a number") from None
        if not 0 < rate <= 1:
            raise ValueError(f"--mutate {text!r}: RATE {rate} is not within (0, 1]")
    return seed, rate


def mutate_spec(text: str) -> str:
    """The fault SPEC that ``--mutate SEED[:RATE]`` stands for."""
    seed, rate = parse_mutate(text)
    return f"id=mutate,do=mutate,seed={seed},prob={rate:g}"


__all__ = [
    "OPERATORS",
    "Field",
    "Mutation",
    "MutationContext",
    "NotApplicable",
    "applicable",
    "exchange_rng",
    "mutate",
    "mutate_exchange",
    "mutate_spec",
    "mutate_with",
    "mutation",
    "parse_mutate",
    "response_fields",
]
