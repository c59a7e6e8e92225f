"""Layouts of the connection-phase messages (DSP0274 sections 10.1-10.4).

Header, ERROR, GET_VERSION/VERSION, GET_CAPABILITIES/CAPABILITIES (1.0, 1.1,
1.2/1.3 forms) and NEGOTIATE_ALGORITHMS/ALGORITHMS (1.0 fixed part, 1.1+
AlgStruct tables, 1.2 OtherParams, 1.3 MELspecification, 1.4 PqcAsymAlgo / PqcAsymSel
and the ReqPqcAsymAlg / KEM AlgStructs).  All little-endian.

SPDM 1.4 (libspdm ``spdm.h``) puts its new fields in bytes that were reserved before:
CAPABILITIES ``ExtFlags`` (offset 6, 2 bytes), NEGOTIATE_ALGORITHMS ``PqcAsymAlgo``
(offset 16, 4 of the 12 reserved bytes), ALGORITHMS ``PqcAsymSel`` (offset 20, 4 of the
11 reserved bytes).  Below 1.4 they are written as zero and read as zero (ignored), so
1.0-1.3 messages are byte-for-byte what they were.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import construct as cs

from emulator.codec.constants import AlgType, ErrorCode, RequestCode, ResponseCode
from emulator.codec.layout import Layout
from emulator.errors import CodecError

HEADER_SIZE = 4

Header = Layout(
    "SPDM header",
    cs.Struct(
        "version" / cs.Int8ul,
        "code" / cs.Int8ul,
        "param1" / cs.Int8ul,
        "param2" / cs.Int8ul,
    ),
)


def build_header(version: int, code: int, param1: int = 0, param2: int = 0) -> bytes:
    """The 4-byte SPDM message header (DSP0274 "Generic SPDM message format")."""
    return bytes((version, code, param1 & 0xFF, param2 & 0xFF))


# --- ERROR (DSP0274 10.17) -------------------------------------------------------------

#: ResponseNotReady extended error data (DSP0274 table "ResponseNotReady extended error data").
ResponseNotReadyData = Layout(
    "ResponseNotReady extended error data",
    cs.Struct(
        "rdt_exponent" / cs.Int8ul,
        "request_code" / cs.Int8ul,
        "token" / cs.Int8ul,
        "rdtm" / cs.Int8ul,
    ),
)


def build_error(version: int, code: ErrorCode | int, data: int = 0, extended: bytes = b"") -> bytes:
    """An ERROR response: Param1 = error code, Param2 = error data, then extended data."""
    return build_header(version, ResponseCode.ERROR, int(code), data) + extended


def build_response_not_ready(
    version: int, rdt_exponent: int, request_code: int, token: int, rdtm: int
) -> bytes:
    """ERROR(ResponseNotReady) with its extended error data."""
    ext = ResponseNotReadyData.build(
        rdt_exponent=rdt_exponent, request_code=request_code, token=token, rdtm=rdtm
    )
    return build_error(version, ErrorCode.ResponseNotReady, 0, ext)


# --- GET_VERSION / VERSION (DSP0274 10.3) ----------------------------------------------

Version = Layout(
    "VERSION",
    cs.Struct(
        "version" / cs.Int8ul,
        "code" / cs.Int8ul,
        "param1" / cs.Int8ul,
        "param2" / cs.Int8ul,
        "reserved" / cs.Int8ul,
        "entry_count" / cs.Int8ul,
        "entries" / cs.Array(cs.this.entry_count, cs.Int16ul),
    ),
)


def build_version_response(entries: list[int]) -> bytes:
    """VERSION (always SPDMVersion 0x10) listing VersionNumberEntry values."""
    return Version.build(
        version=0x10,
        code=ResponseCode.VERSION,
        param1=0,
        param2=0,
        reserved=0,
        entry_count=len(entries),
        entries=entries,
    )


# --- GET_CAPABILITIES / CAPABILITIES (DSP0274 10.4) ------------------------------------


def _caps_struct(with_sizes: bool) -> cs.Struct:
    fields = [
        "version" / cs.Int8ul,
        "code" / cs.Int8ul,
        "param1" / cs.Int8ul,
        "param2" / cs.Int8ul,
        "reserved" / cs.Int8ul,
        "ct_exponent" / cs.Int8ul,
        "ext_flags" / cs.Int16ul,  # 1.4; reserved before
        "flags" / cs.Int32ul,
    ]
    if with_sizes:
        fields += ["data_transfer_size" / cs.Int32ul, "max_spdm_msg_size" / cs.Int32ul]
    return cs.Struct(*fields)


#: CAPABILITIES 1.0/1.1 (12 bytes) and 1.2+ (20 bytes).
Capabilities11 = Layout("CAPABILITIES 1.1", _caps_struct(False))
Capabilities12 = Layout("CAPABILITIES 1.2", _caps_struct(True))


def get_capabilities_size(version: int) -> int:
    """Size of GET_CAPABILITIES for a version (4, 12 or 20 bytes)."""
    if version >= 0x12:
        return 20
    if version == 0x11:
        return 12
    return HEADER_SIZE


@dataclass(slots=True)
class CapabilitiesMsg:
    """GET_CAPABILITIES or CAPABILITIES, any version (fields absent in a version are 0)."""

    version: int
    code: int
    ct_exponent: int = 0
    flags: int = 0
    data_transfer_size: int = 0
    max_spdm_msg_size: int = 0
    param1: int = 0
    param2: int = 0
    #: ExtFlags (SPDM 1.4; 0 and not sent before)
    ext_flags: int = 0

    def encode(self) -> bytes:
        """Build the message in the form its version defines."""
        if self.version == 0x10 and self.code == RequestCode.GET_CAPABILITIES:
            return build_header(self.version, self.code, self.param1, self.param2)
        base = dict(
            version=self.version,
            code=self.code,
            param1=self.param1,
            param2=self.param2,
            reserved=0,
            ct_exponent=self.ct_exponent,
            ext_flags=self.ext_flags if self.version >= 0x14 else 0,
            flags=self.flags,
        )
        if self.version >= 0x12:
            return Capabilities12.build(
                **base,
                data_transfer_size=self.data_transfer_size,
                max_spdm_msg_size=self.max_spdm_msg_size,
            )
        return Capabilities11.build(**base)

    @classmethod
    def decode(cls, data: bytes) -> CapabilitiesMsg:
        """Parse by the version byte; raises CodecError when too short for that version."""
        if len(data) < HEADER_SIZE:
            raise CodecError(f"capabilities message: {len(data)} bytes, need 4")
        version, code = data[0], data[1]
        if code == RequestCode.GET_CAPABILITIES and version == 0x10:
            return cls(version, code, param1=data[2], param2=data[3])
        layout = Capabilities12 if version >= 0x12 else Capabilities11
        c = layout.parse(data)
        return cls(
            version=version,
            code=code,
            ct_exponent=c.ct_exponent,
            flags=c.flags,
            data_transfer_size=c.get("data_transfer_size", 0),
            max_spdm_msg_size=c.get("max_spdm_msg_size", 0),
            param1=c.param1,
            param2=c.param2,
            ext_flags=c.ext_flags if version >= 0x14 else 0,
        )


# --- NEGOTIATE_ALGORITHMS / ALGORITHMS (DSP0274 10.5) ----------------------------------

NEGOTIATE_ALGORITHMS_FIXED_SIZE = 32
ALGORITHMS_FIXED_SIZE = 36
#: DSP0274: LengthMax of NEGOTIATE_ALGORITHMS (64 for 1.0, 128 from 1.1).
NEGOTIATE_ALGORITHMS_MAX_LENGTH = {0x10: 64, 0x11: 128, 0x12: 128, 0x13: 128, 0x14: 128}
#: Maximum total number of extended algorithms (ExtAsym + ExtHash + per-struct) in a request.
NEGOTIATE_ALGORITHMS_MAX_EXT = {0x10: 8, 0x11: 20, 0x12: 20, 0x13: 20, 0x14: 20}

NegotiateAlgorithmsFixed = Layout(
    "NEGOTIATE_ALGORITHMS",
    cs.Struct(
        "version" / cs.Int8ul,
        "code" / cs.Int8ul,
        "param1" / cs.Int8ul,  # number of AlgStructs (1.1+)
        "param2" / cs.Int8ul,
        "length" / cs.Int16ul,
        "measurement_spec" / cs.Int8ul,
        "other_params" / cs.Int8ul,  # 1.2+
        "base_asym" / cs.Int32ul,
        "base_hash" / cs.Int32ul,
        "pqc_asym" / cs.Int32ul,  # 1.4; reserved before
        "reserved2" / cs.Bytes(8),
        "ext_asym_count" / cs.Int8ul,
        "ext_hash_count" / cs.Int8ul,
        "reserved3" / cs.Int8ul,
        "mel_spec" / cs.Int8ul,  # 1.3
    ),
)

AlgorithmsFixed = Layout(
    "ALGORITHMS",
    cs.Struct(
        "version" / cs.Int8ul,
        "code" / cs.Int8ul,
        "param1" / cs.Int8ul,  # number of AlgStructs (1.1+)
        "param2" / cs.Int8ul,
        "length" / cs.Int16ul,
        "measurement_spec_sel" / cs.Int8ul,
        "other_params_sel" / cs.Int8ul,  # 1.2+
        "measurement_hash_algo" / cs.Int32ul,
        "base_asym_sel" / cs.Int32ul,
        "base_hash_sel" / cs.Int32ul,
        "pqc_asym_sel" / cs.Int32ul,  # 1.4; reserved before
        "reserved2" / cs.Bytes(7),
        "mel_spec_sel" / cs.Int8ul,  # 1.3
        "ext_asym_sel_count" / cs.Int8ul,
        "ext_hash_sel_count" / cs.Int8ul,
        "reserved3" / cs.Int16ul,
    ),
)


@dataclass(slots=True)
class AlgStruct:
    """One AlgStruct table entry (DSP0274 table "Algorithm request structure").

    ``fixed_size`` is the AlgCount high nibble (must be 2), ``external`` the
    ExtAlgCount extended algorithm entries (4 bytes each).
    """

    alg_type: int
    supported: int
    fixed_size: int = 2
    external: list[bytes] = field(default_factory=list)

    def encode(self) -> bytes:
        count = ((self.fixed_size & 0xF) << 4) | (len(self.external) & 0xF)
        return (
            bytes((self.alg_type, count))
            + self.supported.to_bytes(2, "little")
            + b"".join(self.external)
        )


def parse_alg_structs(data: bytes, offset: int, count: int) -> tuple[list[AlgStruct], int]:
    """Parse ``count`` AlgStructs starting at ``offset``; returns them and the end offset."""
    out: list[AlgStruct] = []
    for i in range(count):
        if offset + 4 > len(data):
            raise CodecError(f"AlgStruct[{i}]: truncated at offset {offset}")
        alg_type, alg_count = data[offset], data[offset + 1]
        fixed = alg_count >> 4
        ext = alg_count & 0xF
        if fixed != 2:
            raise CodecError(f"AlgStruct[{i}]: FixedAlgCount is {fixed}, must be 2")
        supported = int.from_bytes(data[offset + 2 : offset + 4], "little")
        end = offset + 4 + 4 * ext
        if end > len(data):
            raise CodecError(f"AlgStruct[{i}]: {ext} extended algorithms run past the message")
        external = [data[j : j + 4] for j in range(offset + 4, end, 4)]
        out.append(AlgStruct(alg_type, supported, fixed, external))
        offset = end
    return out, offset


def _encode_tail(
    version: int, ext_asym: list[bytes], ext_hash: list[bytes], structs: list[AlgStruct]
) -> bytes:
    """ExtAsym/ExtHash entries, then (1.1+) the AlgStructs: what follows both fixed parts."""
    body = b"".join(ext_asym) + b"".join(ext_hash)
    if version >= 0x11:
        body += b"".join(s.encode() for s in structs)
    return body


def _decode_tail(
    data: bytes, off: int, n_asym: int, n_hash: int, version: int, n_structs: int, what: str
) -> tuple[list[bytes], list[bytes], list[AlgStruct], int]:
    """Parse :func:`_encode_tail`'s layout at ``off``; returns the parts and the end offset."""
    n_ext = n_asym + n_hash
    if off + 4 * n_ext > len(data):
        raise CodecError(
            f"{what}: {n_asym} + {n_hash} extended algorithm entries run past the "
            f"{len(data)}-byte message"
        )
    ext = [data[off + 4 * i : off + 4 * i + 4] for i in range(n_ext)]
    off += 4 * n_ext
    structs: list[AlgStruct] = []
    if version >= 0x11:
        structs, off = parse_alg_structs(data, off, n_structs)
    return ext[:n_asym], ext[n_asym:], structs, off


@dataclass(slots=True)
class NegotiateAlgorithmsMsg:
    """NEGOTIATE_ALGORITHMS (requests of every version)."""

    version: int
    measurement_spec: int = 0
    other_params: int = 0
    base_asym: int = 0
    base_hash: int = 0
    mel_spec: int = 0
    ext_asym: list[bytes] = field(default_factory=list)
    ext_hash: list[bytes] = field(default_factory=list)
    alg_structs: list[AlgStruct] = field(default_factory=list)
    param2: int = 0
    #: PqcAsymAlgo (SPDM 1.4; 0 before)
    pqc_asym: int = 0
    #: Length as carried in the message (set by decode; encode computes it)
    length: int = 0

    def encode(self) -> bytes:
        tail = _encode_tail(self.version, self.ext_asym, self.ext_hash, self.alg_structs)
        length = NEGOTIATE_ALGORITHMS_FIXED_SIZE + len(tail)
        fixed = NegotiateAlgorithmsFixed.build(
            version=self.version,
            code=RequestCode.NEGOTIATE_ALGORITHMS,
            param1=len(self.alg_structs) if self.version >= 0x11 else 0,
            param2=self.param2,
            length=length,
            measurement_spec=self.measurement_spec,
            other_params=self.other_params,
            base_asym=self.base_asym,
            base_hash=self.base_hash,
            pqc_asym=self.pqc_asym if self.version >= 0x14 else 0,
            reserved2=bytes(8),
            ext_asym_count=len(self.ext_asym),
            ext_hash_count=len(self.ext_hash),
            reserved3=0,
            mel_spec=self.mel_spec,
        )
        return fixed + tail

    @classmethod
    def decode(cls, data: bytes) -> tuple[NegotiateAlgorithmsMsg, int]:
        """Parse; returns the message and the number of bytes it occupies (its real size)."""
        f = NegotiateAlgorithmsFixed.parse(data)
        ext_asym, ext_hash, structs, off = _decode_tail(
            data,
            NEGOTIATE_ALGORITHMS_FIXED_SIZE,
            f.ext_asym_count,
            f.ext_hash_count,
            f.version,
            f.param1,
            "NEGOTIATE_ALGORITHMS",
        )
        msg = cls(
            version=f.version,
            measurement_spec=f.measurement_spec,
            other_params=f.other_params,
            base_asym=f.base_asym,
            base_hash=f.base_hash,
            mel_spec=f.mel_spec,
            ext_asym=ext_asym,
            ext_hash=ext_hash,
            alg_structs=structs,
            param2=f.param2,
            length=f.length,
            pqc_asym=f.pqc_asym if f.version >= 0x14 else 0,
        )
        return msg, off


@dataclass(slots=True)
class AlgorithmsMsg:
    """ALGORITHMS (responses of every version)."""

    version: int
    measurement_spec_sel: int = 0
    other_params_sel: int = 0
    measurement_hash_algo: int = 0
    base_asym_sel: int = 0
    base_hash_sel: int = 0
    mel_spec_sel: int = 0
    ext_asym_sel: list[bytes] = field(default_factory=list)
    ext_hash_sel: list[bytes] = field(default_factory=list)
    alg_structs: list[AlgStruct] = field(default_factory=list)
    length: int = 0
    #: PqcAsymSel (SPDM 1.4; 0 before)
    pqc_asym_sel: int = 0

    def encode(self) -> bytes:
        tail = _encode_tail(self.version, self.ext_asym_sel, self.ext_hash_sel, self.alg_structs)
        length = ALGORITHMS_FIXED_SIZE + len(tail)
        fixed = AlgorithmsFixed.build(
            version=self.version,
            code=ResponseCode.ALGORITHMS,
            param1=len(self.alg_structs) if self.version >= 0x11 else 0,
            param2=0,
            length=length,
            measurement_spec_sel=self.measurement_spec_sel,
            other_params_sel=self.other_params_sel,
            measurement_hash_algo=self.measurement_hash_algo,
            base_asym_sel=self.base_asym_sel,
            base_hash_sel=self.base_hash_sel,
            pqc_asym_sel=self.pqc_asym_sel if self.version >= 0x14 else 0,
            reserved2=bytes(7),
            mel_spec_sel=self.mel_spec_sel,
            ext_asym_sel_count=len(self.ext_asym_sel),
            ext_hash_sel_count=len(self.ext_hash_sel),
            reserved3=0,
        )
        return fixed + tail

    @classmethod
    def decode(cls, data: bytes) -> tuple[AlgorithmsMsg, int]:
        """Parse; returns the message and the number of bytes it occupies."""
        f = AlgorithmsFixed.parse(data)
        ext_asym, ext_hash, structs, off = _decode_tail(
            data,
            ALGORITHMS_FIXED_SIZE,
            f.ext_asym_sel_count,
            f.ext_hash_sel_count,
            f.version,
            f.param1,
            "ALGORITHMS",
        )
        msg = cls(
            version=f.version,
            measurement_spec_sel=f.measurement_spec_sel,
            other_params_sel=f.other_params_sel,
            measurement_hash_algo=f.measurement_hash_algo,
            base_asym_sel=f.base_asym_sel,
            base_hash_sel=f.base_hash_sel,
            mel_spec_sel=f.mel_spec_sel,
            ext_asym_sel=ext_asym,
            ext_hash_sel=ext_hash,
            alg_structs=structs,
            length=f.length,
            pqc_asym_sel=f.pqc_asym_sel if f.version >= 0x14 else 0,
        )
        return msg, off

    def struct_value(self, alg_type: AlgType) -> int:
        """The selected bit of one AlgStruct type (0 when absent)."""
        for s in self.alg_structs:
            if s.alg_type == alg_type:
                return s.supported
        return 0
