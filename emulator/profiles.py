"""Device profiles: TOML files that describe the emulated device.

A profile is validated with pydantic (chosen over hand-written checks because it
reports every bad field with its path, rejects unknown keys and coerces types
consistently).  Every problem becomes a :class:`~emulator.errors.ProfileError`
that names the file, the field and the problem, e.g.::

    profiles/bad.toml: spdm.capabilities: MEAS_CAP_NO_SIG and MEAS_CAP_SIG together
    encode MEAS_CAP=11b, which DSP0274 reserves

Algorithm lists are in priority order: the responder selects the first entry
that the requester also offers.
"""

from __future__ import annotations

import itertools
import os
import tomllib
from collections.abc import Iterable
from enum import IntFlag
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from emulator.codec.constants import (
    MIN_DATA_TRANSFER_SIZE_V12,
    PQC_ASYM_SHIFT,
    RESPONDER_CAPS_BY_VERSION,
    AeadSuite,
    BaseAsymAlgo,
    BaseHashAlgo,
    DheGroup,
    KemAlgo,
    KeySchedule,
    MeasurementHashAlgo,
    MeasurementSpec,
    MelSpec,
    OtherParams,
    PqcAsymAlgo,
    ResponderCap,
    SpdmVersion,
)
from emulator.codec.measurements import (
    DEVICE_MODE_SIZE,
    INDEX_DEVICE_MODE,
    INDEX_MANIFEST,
    INDEX_MAX_FREE,
    MAX_OPAQUE_DATA_SIZE,
    DeviceMode,
    MeasurementValueType,
    OperationalMode,
    encode_device_mode,
    general_opaque_data_problem,
)
from emulator.data import shipped_dir
from emulator.errors import ProfileError

F = TypeVar("F", bound=IntFlag)


def _profiles_dir() -> Path:
    """Where the shipped profiles are: $SPDM_EMULATOR_PROFILES, else
    :func:`emulator.data.shipped_dir` (the wheel's package data, or the checkout's
    top-level ``profiles/``)."""
    env = os.environ.get("SPDM_EMULATOR_PROFILES")
    if env:
        return Path(env)
    return shipped_dir("profiles")


#: Directory of the profiles shipped with the project.
PROFILES_DIR = _profiles_dir()
DEFAULT_PROFILE = "default"

#: Algorithms this emulator implements (SM2/SM3/SM4 are not offered by ``cryptography``).
IMPLEMENTED_ASYM = BaseAsymAlgo(0xDFF)  # all but SM2
IMPLEMENTED_HASH = BaseHashAlgo(0x3F)  # all but SM3
IMPLEMENTED_MEAS_HASH = MeasurementHashAlgo(0x7F)
IMPLEMENTED_DHE = DheGroup(0x3F)
IMPLEMENTED_AEAD = AeadSuite(0x07)
#: SPDM 1.4: cryptography 48 has ML-DSA-44/65/87 (no SLH-DSA) and ML-KEM-768/1024 (no 512)
IMPLEMENTED_PQC_ASYM = PqcAsymAlgo.ML_DSA_44 | PqcAsymAlgo.ML_DSA_65 | PqcAsymAlgo.ML_DSA_87
IMPLEMENTED_KEM = KemAlgo.ML_KEM_768 | KemAlgo.ML_KEM_1024
#: why an algorithm the spec defines is not offered (the error names the library's gap)
_NOT_IMPLEMENTED_WHY: dict[type[IntFlag], str] = {
    PqcAsymAlgo: "cryptography 48 has no SLH-DSA (ML-DSA-44/65/87 are implemented)",
    KemAlgo: "cryptography 48 has no ML-KEM-512 (ML-KEM-768/1024 are implemented)",
    BaseAsymAlgo: "cryptography has no SM2",
    BaseHashAlgo: "cryptography has no SM3",
    AeadSuite: "cryptography has no SM4-GCM",
    DheGroup: "cryptography has no SM2 key exchange",
}


def _norm(name: str) -> str:
    return name.strip().upper().replace("-", "_").replace(" ", "_")


def parse_flag_names(enum: type[F], names: Iterable[str], what: str) -> list[F]:
    """Map names (any case, ``-`` or ``_``) to enum members in order; ValueError if unknown."""
    out: list[F] = []
    for name in names:
        key = _norm(name)
        member = enum.__members__.get(key)
        if member is None:
            choices = ", ".join(enum.__members__)
            raise ValueError(f"unknown {what} {name!r}; choose from {choices}")
        if member in out:
            raise ValueError(f"{what} {name!r} is listed twice")
        out.append(member)
    return out


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


def _file_name(value: str) -> str:
    """A file named by a profile: not empty, no NUL byte (the OS cannot open those)."""
    if not value.strip():
        raise ValueError("an empty file name")
    if "\x00" in value:
        raise ValueError(f"file name {value!r} contains a NUL byte")
    return value


#: Every file name a profile holds (chains, keys, measurement files, roots, TLS files).
FilePath = Annotated[str, AfterValidator(_file_name)]


class PciIdsSection(_Strict):
    """PCI identity of the device (used in the certificate SAN that Linux CMA checks)."""

    vendor_id: int = Field(0x1B36, ge=0, le=0xFFFF)
    device_id: int = Field(0x0010, ge=0, le=0xFFFF)
    class_code: int = Field(0x010802, ge=0, le=0xFFFFFF)
    revision: int = Field(0x02, ge=0, le=0xFF)
    subsystem_vendor_id: int | None = Field(0x1AF4, ge=0, le=0xFFFF)
    subsystem_id: int | None = Field(0x1100, ge=0, le=0xFFFF)


class DeviceSection(_Strict):
    """[device]: who the device is."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    pci: PciIdsSection = Field(default_factory=PciIdsSection)


class SpdmSection(_Strict):
    """[spdm]: versions, capability flags, timing and sizes (DSP0274 10.3/10.4)."""

    versions: list[str] = Field(min_length=1)
    capabilities: list[str] = Field(default_factory=list)
    ct_exponent: int = Field(12, ge=0, le=31)
    data_transfer_size: int = Field(0x11C0, ge=MIN_DATA_TRANSFER_SIZE_V12, le=0xFFFFFFFF)
    max_spdm_msg_size: int = Field(0x11C0, ge=MIN_DATA_TRANSFER_SIZE_V12, le=0xFFFFFFFF)

    @field_validator("versions")
    @classmethod
    def _versions(cls, value: list[str]) -> list[str]:
        seen: set[int] = set()
        for text in value:
            try:
                v = SpdmVersion.from_text(text)
            except ValueError:
                raise ValueError(
                    f"unknown SPDM version {text!r}; choose from 1.0, 1.1, 1.2, 1.3, 1.4"
                ) from None
            if v in seen:
                raise ValueError(f"version {text!r} is listed twice")
            seen.add(v)
        return value

    @field_validator("capabilities")
    @classmethod
    def _caps(cls, value: list[str]) -> list[str]:
        parse_flag_names(ResponderCap, value, "capability")
        return value


#: [algorithms] field -> (enum of its names, the bits this emulator implements or None)
_ALGORITHM_FIELDS: dict[str, tuple[type[IntFlag], int | None]] = {
    "base_asym": (BaseAsymAlgo, IMPLEMENTED_ASYM),
    "req_base_asym": (BaseAsymAlgo, IMPLEMENTED_ASYM),
    "base_hash": (BaseHashAlgo, IMPLEMENTED_HASH),
    "measurement_hash": (MeasurementHashAlgo, IMPLEMENTED_MEAS_HASH),
    "dhe": (DheGroup, IMPLEMENTED_DHE),
    "aead": (AeadSuite, IMPLEMENTED_AEAD),
    "measurement_spec": (MeasurementSpec, None),
    "key_schedule": (KeySchedule, None),
    "opaque_data_format": (
        OtherParams,
        OtherParams.OPAQUE_DATA_FMT_0 | OtherParams.OPAQUE_DATA_FMT_1,
    ),
    "mel_spec": (MelSpec, None),
    # SPDM 1.4
    "pqc_asym": (PqcAsymAlgo, IMPLEMENTED_PQC_ASYM),
    "req_pqc_asym": (PqcAsymAlgo, IMPLEMENTED_PQC_ASYM),
    "kem": (KemAlgo, IMPLEMENTED_KEM),
}


class AlgorithmsSection(_Strict):
    """[algorithms]: what the device supports, each list in priority order."""

    base_asym: list[str] = Field(default_factory=list)
    base_hash: list[str] = Field(default_factory=list)
    measurement_hash: list[str] = Field(default_factory=list)
    measurement_spec: list[str] = Field(default_factory=lambda: ["DMTF"])
    dhe: list[str] = Field(default_factory=list)
    aead: list[str] = Field(default_factory=list)
    req_base_asym: list[str] = Field(default_factory=list)
    key_schedule: list[str] = Field(default_factory=lambda: ["SPDM"])
    opaque_data_format: list[str] = Field(default_factory=lambda: ["OPAQUE_DATA_FMT_1"])
    mel_spec: list[str] = Field(default_factory=list)
    multi_key_conn: bool = False
    #: SPDM 1.4 PqcAsymAlgo (ML_DSA_44/65/87), ReqPqcAsymAlg and KEM (ML_KEM_768/1024)
    pqc_asym: list[str] = Field(default_factory=list)
    req_pqc_asym: list[str] = Field(default_factory=list)
    kem: list[str] = Field(default_factory=list)
    #: SPDM 1.4: when the requester offers both, select PQC (ML-DSA, ML-KEM) over the
    #: classic algorithms (libspdm LIBSPDM_DATA_ALGO_PRIORITY_PQC_FIRST)
    pqc_first: bool = True

    @field_validator(*_ALGORITHM_FIELDS)
    @classmethod
    def _names(cls, v: list[str], info: ValidationInfo) -> list[str]:
        """Every name known to the field's enum, implemented here, listed once."""
        field = info.field_name or ""
        enum, implemented = _ALGORITHM_FIELDS[field]
        for member in parse_flag_names(enum, v, field):
            if implemented is not None and not member & implemented:
                why = _NOT_IMPLEMENTED_WHY.get(enum)
                raise ValueError(
                    f"{member.name} is not implemented by this emulator"
                    + (f": {why}" if why else "")
                )
        return v


# --- [[measurements]] (DSP0274 "Measurement block") -------------------------------------

#: [[measurements]] type names (any case, ``-`` or ``_``) -> DMTFSpecMeasurementValueType
MEASUREMENT_TYPE_NAMES: dict[str, MeasurementValueType] = {
    "IMMUTABLE_ROM": MeasurementValueType.IMMUTABLE_ROM,
    "ROM": MeasurementValueType.IMMUTABLE_ROM,
    "MUTABLE_FIRMWARE": MeasurementValueType.MUTABLE_FIRMWARE,
    "FIRMWARE": MeasurementValueType.MUTABLE_FIRMWARE,
    "HARDWARE_CONFIG": MeasurementValueType.HARDWARE_CONFIG,
    "HARDWARE_CONFIGURATION": MeasurementValueType.HARDWARE_CONFIG,
    "FIRMWARE_CONFIG": MeasurementValueType.FIRMWARE_CONFIG,
    "FIRMWARE_CONFIGURATION": MeasurementValueType.FIRMWARE_CONFIG,
    "MEASUREMENT_MANIFEST": MeasurementValueType.MEASUREMENT_MANIFEST,
    "MANIFEST": MeasurementValueType.MEASUREMENT_MANIFEST,
    "DEVICE_MODE": MeasurementValueType.DEVICE_MODE,
    "VERSION": MeasurementValueType.VERSION,
    "SECURE_VERSION_NUMBER": MeasurementValueType.SECURE_VERSION_NUMBER,
    "SVN": MeasurementValueType.SECURE_VERSION_NUMBER,
    "HASH_EXTENDED": MeasurementValueType.HASH_EXTENDED,
    "HASH_EXTEND_MEASUREMENT": MeasurementValueType.HASH_EXTENDED,
    "INFORMATIONAL": MeasurementValueType.INFORMATIONAL,
    "STRUCTURED_MANIFEST": MeasurementValueType.STRUCTURED_MANIFEST,
    "STRUCTURED_MEASUREMENT_MANIFEST": MeasurementValueType.STRUCTURED_MANIFEST,
}
#: types reported as a raw bit stream unless the entry says otherwise
_RAW_BY_DEFAULT = {
    MeasurementValueType.DEVICE_MODE,
    MeasurementValueType.VERSION,
    MeasurementValueType.SECURE_VERSION_NUMBER,
    MeasurementValueType.INFORMATIONAL,
}
_MAX_VALUE_SIZE = 0xFFFF - 3  # MeasurementSize is 16 bits and includes the 3-byte DMTF header


def read_value_file(name: str, base_dir: Path, limit: int, what: str) -> bytes:
    """The bytes of a profile's ``file = ...`` value (relative to ``base_dir``); ValueError
    naming the path when it cannot be read or is over ``limit`` bytes."""
    path = Path(name).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"no such file: {path}") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise ValueError(f"{path}: {len(data)} bytes, {what} holds at most {limit}")
    return data


def parse_hex(text: str) -> bytes:
    """Hex digits with optional ``0x`` prefix and spaces, ``:``, ``_`` or ``-`` separators."""
    t = text.strip()
    if t[:2].lower() == "0x":
        t = t[2:]
    for sep in (" ", "\t", "\n", ":", "_", "-"):
        t = t.replace(sep, "")
    bad = next((c for c in t if c not in "0123456789abcdefABCDEF"), None)
    if bad is not None:
        raise ValueError(f"not hex: unexpected character {bad!r}")
    if len(t) % 2:
        raise ValueError(f"hex value has an odd number of digits ({len(t)})")
    return bytes.fromhex(t)


def _mode_bits(value: int | list[str] | None, enum: type[IntFlag], what: str) -> int | None:
    if value is None or isinstance(value, int):
        if isinstance(value, int) and not 0 <= value <= 0xFFFFFFFF:
            raise ValueError(f"{what}: 0x{value:X} is not a 32-bit value")
        return value
    bits = 0
    for m in parse_flag_names(enum, value, what):
        bits |= m
    return bits


def _measurement_type(v: str | int) -> str | int:
    """A DMTF measurement value type: its number or one of its names."""
    if isinstance(v, int):
        if v not in {int(m) for m in MeasurementValueType}:
            raise ValueError(f"type {v} is not a DMTF measurement value type (0..10)")
        return v
    if _norm(v) not in MEASUREMENT_TYPE_NAMES:
        names = ", ".join(m.name.lower() for m in MeasurementValueType)
        raise ValueError(f"unknown measurement type {v!r}; choose from {names}")
    return v


class MeasurementEntry(_Strict):
    """[[measurements]]: one measurement block.

    The value is the raw bit stream, given by exactly one of ``value`` (hex),
    ``file`` (read as bytes, relative to the profile), ``text`` (UTF-8) or ``svn``
    (an integer, 8 bytes little-endian).  The device mode block (index 0xFE)
    takes the four mode fields instead (integers or lists of flag names).  A
    ``hash_extended`` block with ``mel = true`` takes no value: it is extended by the
    entries of the measurement extension log (``[[mel]]``, DSP0274 1.3).
    """

    index: int = Field(ge=0, le=0xFF)
    type: str | int
    mel: bool = False
    representation: str | None = None
    tcb: bool | None = None
    raw_on_request: bool = True
    description: str = ""
    value: str | None = None
    file: FilePath | None = None
    text: str | None = None
    svn: int | None = Field(None, ge=0, le=0xFFFFFFFFFFFFFFFF)
    operational_mode_capabilities: int | list[str] | None = None
    operational_mode_state: int | list[str] | None = None
    device_mode_capabilities: int | list[str] | None = None
    device_mode_state: int | list[str] | None = None
    #: file contents, read when the profile is loaded
    _file_data: bytes | None = PrivateAttr(default=None)

    @field_validator("index")
    @classmethod
    def _index(cls, v: int) -> int:
        if v == 0:
            raise ValueError(
                "index 0 is not a measurement index (GET_MEASUREMENTS operation 0 asks for "
                "the number of blocks); use 1..0xEF, 0xFD or 0xFE"
            )
        if v == 0xFF:
            raise ValueError(
                "index 0xFF is not a measurement index (GET_MEASUREMENTS operation 0xFF asks "
                "for all blocks); use 1..0xEF, 0xFD or 0xFE"
            )
        if INDEX_MAX_FREE < v < INDEX_MANIFEST:
            raise ValueError(f"index 0x{v:02X} is reserved by DSP0274; use 1..0xEF, 0xFD or 0xFE")
        return v

    @field_validator("type")
    @classmethod
    def _type(cls, v: str | int) -> str | int:
        return _measurement_type(v)

    @field_validator("representation")
    @classmethod
    def _representation(cls, v: str | None) -> str | None:
        if v is not None and v.strip().lower() not in ("raw", "digest"):
            raise ValueError(f"representation {v!r}: choose 'raw' or 'digest'")
        return v

    @field_validator("value")
    @classmethod
    def _value(cls, v: str | None) -> str | None:
        if v is not None:
            data = parse_hex(v)
            if len(data) > _MAX_VALUE_SIZE:
                raise ValueError(f"{len(data)} bytes, a measurement value holds at most 65532")
        return v

    @field_validator("operational_mode_capabilities", "operational_mode_state")
    @classmethod
    def _op_mode(cls, v: int | list[str] | None) -> int | list[str] | None:
        _mode_bits(v, OperationalMode, "operational mode")
        return v

    @field_validator("device_mode_capabilities", "device_mode_state")
    @classmethod
    def _dev_mode(cls, v: int | list[str] | None) -> int | list[str] | None:
        _mode_bits(v, DeviceMode, "device mode")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> MeasurementEntry:
        kind = self.kind
        sources = [n for n in ("value", "file", "text", "svn") if getattr(self, n) is not None]
        mode_fields = [
            n
            for n in (
                "operational_mode_capabilities",
                "operational_mode_state",
                "device_mode_capabilities",
                "device_mode_state",
            )
            if getattr(self, n) is not None
        ]
        if self.index == INDEX_DEVICE_MODE and kind is not MeasurementValueType.DEVICE_MODE:
            raise ValueError("index 0xFE is the device mode block: its type must be device_mode")
        if kind is MeasurementValueType.DEVICE_MODE:
            if self.index != INDEX_DEVICE_MODE:
                raise ValueError("a device_mode block must use index 0xFE")
            if self.representation is not None and self.representation.strip().lower() != "raw":
                raise ValueError("the device mode block is always a raw bit stream")
            if sources and sources != ["value"]:
                raise ValueError(f"the device mode block takes the mode fields, not {sources[0]}")
            if sources and mode_fields:
                raise ValueError("give either value (16 bytes hex) or the mode fields, not both")
            if self.value is not None and len(parse_hex(self.value)) != DEVICE_MODE_SIZE:
                raise ValueError("a device mode value is 16 bytes (four 32-bit fields)")
            op_cap, op_state, dm_cap, dm_state = self.device_mode_fields()
            if op_state & ~op_cap:
                raise ValueError(
                    "operational_mode_state has bits outside operational_mode_capabilities"
                )
            if dm_state & ~dm_cap:
                raise ValueError("device_mode_state has bits outside device_mode_capabilities")
        elif self.mel:
            if kind is not MeasurementValueType.HASH_EXTENDED:
                raise ValueError("mel = true is for a hash_extended block (the MEL extends it)")
            if sources or mode_fields:
                given = (sources + mode_fields)[0]
                raise ValueError(f"a block extended by the MEL takes no {given}")
            if self.representation is not None:
                raise ValueError("a block extended by the MEL takes no representation")
        else:
            if mode_fields:
                raise ValueError(f"{mode_fields[0]} belongs to the device mode block (0xFE)")
            if len(sources) != 1:
                raise ValueError(
                    "give exactly one of value (hex), file, text or svn"
                    + (f" (got {', '.join(sources)})" if sources else "")
                )
            if self.svn is not None and kind is not MeasurementValueType.SECURE_VERSION_NUMBER:
                raise ValueError("svn is only for a secure_version_number block")
        if self.index == INDEX_MANIFEST and kind not in (
            MeasurementValueType.MEASUREMENT_MANIFEST,
            MeasurementValueType.STRUCTURED_MANIFEST,
        ):
            raise ValueError(
                "index 0xFD is the measurement manifest: its type must be measurement_manifest "
                "or structured_manifest"
            )
        if self.raw and not self.raw_on_request:
            raise ValueError("raw_on_request = false contradicts representation = 'raw'")
        return self

    # ---- typed views ---------------------------------------------------------------

    @property
    def kind(self) -> MeasurementValueType:
        if isinstance(self.type, int):
            return MeasurementValueType(self.type)
        return MEASUREMENT_TYPE_NAMES[_norm(self.type)]

    @property
    def raw(self) -> bool:
        """Reported as a raw bit stream by default (else as a digest)."""
        if self.representation is None:
            return self.kind in _RAW_BY_DEFAULT
        return self.representation.strip().lower() == "raw"

    @property
    def in_tcb(self) -> bool:
        """Part of the TCB summary hash (default: immutable ROM blocks, as libspdm's sample)."""
        if self.tcb is None:
            return self.kind is MeasurementValueType.IMMUTABLE_ROM
        return self.tcb

    def device_mode_fields(self) -> tuple[int, int, int, int]:
        """The four device mode fields (defaults: every mode capable, normal mode, no debug)."""

        def bits(v: int | list[str] | None, enum: type[IntFlag], default: int) -> int:
            out = _mode_bits(v, enum, "mode")
            return default if out is None else out

        op_all = sum(int(m) for m in OperationalMode)
        dm_all = sum(int(m) for m in DeviceMode)
        return (
            bits(self.operational_mode_capabilities, OperationalMode, op_all),
            bits(self.operational_mode_state, OperationalMode, int(OperationalMode.NORMAL)),
            bits(self.device_mode_capabilities, DeviceMode, dm_all),
            bits(self.device_mode_state, DeviceMode, 0),
        )

    def load_file(self, base_dir: Path) -> None:
        """Read ``file`` (relative to ``base_dir``); ValueError naming the path if it fails."""
        if self.file is None:
            return
        self._file_data = read_value_file(
            self.file, base_dir, _MAX_VALUE_SIZE, "a measurement value"
        )

    def raw_value(self, base_dir: Path | None = None) -> bytes:
        """The block's raw bit stream (reads ``file`` now if it was not read at load time)."""
        if self.kind is MeasurementValueType.DEVICE_MODE:
            if self.value is not None:
                return parse_hex(self.value)
            return encode_device_mode(*self.device_mode_fields())
        if self.value is not None:
            return parse_hex(self.value)
        if self.text is not None:
            return self.text.encode("utf-8")
        if self.svn is not None:
            return self.svn.to_bytes(8, "little")
        if self._file_data is None:
            self.load_file(base_dir or Path.cwd())
        return self._file_data or b""


class MeasurementOptionsSection(_Strict):
    """[measurement_options]: what every MEASUREMENTS response carries besides the blocks."""

    #: OpaqueData (hex) of every MEASUREMENTS response; in SPDM 1.2+ it is sent only
    #: when an opaque data format was negotiated, and must then be in that format
    opaque_data: str = ""

    @field_validator("opaque_data")
    @classmethod
    def _opaque(cls, v: str) -> str:
        data = parse_hex(v) if v.strip() else b""
        if len(data) > MAX_OPAQUE_DATA_SIZE:
            raise ValueError(f"{len(data)} bytes, OpaqueData holds at most 1024")
        return v

    @property
    def opaque(self) -> bytes:
        return parse_hex(self.opaque_data) if self.opaque_data.strip() else b""


def _secured_version_ok(text: str) -> bool:
    return text.strip() in ("1.0", "1.1", "1.2", "1.3")


class PskEntry(_Strict):
    """[[sessions.psk]]: one pre-shared key and its PSKHint (text or hex; none = no hint)."""

    hint: str | None = None
    hint_hex: str | None = None
    key: str | None = None
    key_hex: str | None = None

    @field_validator("hint_hex", "key_hex")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        if v is not None:
            parse_hex(v)
        return v

    def hint_bytes(self) -> bytes:
        if self.hint_hex is not None:
            return parse_hex(self.hint_hex)
        return (self.hint or "").encode("utf-8")

    def key_bytes(self) -> bytes:
        if self.key_hex is not None:
            return parse_hex(self.key_hex)
        return (self.key or "").encode("utf-8")


class SessionsSection(_Strict):
    """[sessions]: secure sessions (DSP0274 KEY_EXCHANGE/PSK_EXCHANGE, DSP0277)."""

    max_sessions: int = Field(4, ge=1, le=1024)
    #: HeartbeatPeriod in seconds (0: none); a session idle for twice this long ends
    heartbeat_period: int = Field(60, ge=0, le=255)
    secured_message_versions: list[str] = Field(
        default_factory=lambda: ["1.0", "1.1", "1.2", "1.3"], min_length=1
    )
    psk: list[PskEntry] = Field(default_factory=list)
    psk_context_length: int = Field(64, ge=0, le=1024)
    #: mutual authentication asked for in KEY_EXCHANGE_RSP (only if the requester can)
    mut_auth: Literal["none", "requested", "encap", "get_digests"] = "none"
    mut_auth_mandatory: bool = False
    req_slot_id: int = Field(0, ge=0, le=7)
    #: trusted roots for the requester's chain (DER or PEM files, relative to the profile)
    requester_roots: list[FilePath] = Field(default_factory=list)
    #: provisioned requester chain for mut_auth = "requested" (DER/PEM, root first)
    requester_chain: FilePath | None = None
    unknown_session: Literal["drop", "error"] = "drop"
    terminate_on_update: bool = True

    @field_validator("secured_message_versions")
    @classmethod
    def _sm_versions(cls, v: list[str]) -> list[str]:
        for text in v:
            if not _secured_version_ok(text):
                raise ValueError(
                    f"unknown DSP0277 version {text!r}; choose from 1.0, 1.1, 1.2, 1.3"
                )
        if len({t.strip() for t in v}) != len(v):
            raise ValueError("a DSP0277 version is listed twice")
        return v


class IdeKmSection(_Strict):
    """[ide_km]: the PCI-SIG IDE key management responder (PCIe r6 6.33.3) carried in
    VENDOR_DEFINED_REQUEST.  QUERY_RESP reports ``segment``/``bus``/``device``/``function``,
    ``max_port_index`` and the IDE extended capability registers: ``ide_capability`` (None:
    built from the stream counts: Link/Selective IDE supported, IDE_KM supported, AES-GCM
    256, the TC and stream counts), ``ide_control``, a Link IDE Stream Control/Status pair
    per TC (``link_tcs``), and per Selective IDE stream (``selective_streams``) its
    Capability (``address_associations`` blocks), Control, Status, RID Association 1/2
    and the address association registers; ``registers`` replaces all of them with the
    given DWORDs.  Key slots exist per port, stream, direction, sub-stream and key set; at
    most ``max_streams`` stream IDs per port hold keys (None: link TCs + selective
    streams).  ``query_outside_session``: QUERY is answered outside a secure session
    (KEY_PROG/K_SET_GO/K_SET_STOP always need one)."""

    enabled: bool = True
    ports: list[int] | None = None
    max_port_index: int = Field(7, ge=0, le=0xFF)
    segment: int = Field(0, ge=0, le=0xFF)
    bus: int = Field(0, ge=0, le=0xFF)
    device: int = Field(0, ge=0, le=31)
    function: int = Field(0, ge=0, le=7)
    ide_capability: int | None = Field(None, ge=0, le=0xFFFFFFFF)
    ide_control: int = Field(0, ge=0, le=0xFFFFFFFF)
    link_tcs: int = Field(1, ge=0, le=8)
    selective_streams: int = Field(4, ge=0, le=255)
    address_associations: int = Field(1, ge=0, le=15)
    link_stream_control: int = Field(0, ge=0, le=0xFFFFFFFF)
    link_stream_status: int = Field(0, ge=0, le=0xFFFFFFFF)
    selective_stream_control: int = Field(0, ge=0, le=0xFFFFFFFF)
    selective_stream_status: int = Field(0, ge=0, le=0xFFFFFFFF)
    registers: list[int] | None = None
    max_streams: int | None = Field(None, ge=1, le=256)
    query_outside_session: bool = True

    @field_validator("registers")
    @classmethod
    def _dwords(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return v
        if len(v) < 2:
            raise ValueError("needs at least IDE Capability and IDE Control")
        if len(v) > 2 + 2 * 8 + 255 * (5 + 3 * 15):
            raise ValueError(f"{len(v)} registers are more than an IDE capability holds")
        for i, r in enumerate(v):
            if not 0 <= r <= 0xFFFFFFFF:
                raise ValueError(f"registers[{i}] = {r} is not a 32-bit value")
        return v

    @field_validator("ports")
    @classmethod
    def _ports(cls, v: list[int] | None) -> list[int] | None:
        if v is not None:
            for p in v:
                if not 0 <= p <= 0xFF:
                    raise ValueError(f"port index {p} is not 0..255")
            if len(set(v)) != len(v):
                raise ValueError("a port index is listed twice")
        return v


class VendorDefinedEntry(_Strict):
    """[[vendor_defined]]: a canned VENDOR_DEFINED_RESPONSE.  A request with this
    ``standard_id`` (registry number or name, e.g. 3 or "PCISIG"), ``vendor_id`` (hex, the
    VendorID bytes as sent, e.g. "0100" for PCI-SIG 0x0001) and a payload starting with
    ``request_prefix`` (hex; "" matches any) is answered with ``response`` (hex payload).
    Entries are tried in order, before the built-in protocols."""

    standard_id: int | str
    vendor_id: str = ""
    request_prefix: str = ""
    response: str = ""

    @field_validator("vendor_id", "request_prefix", "response")
    @classmethod
    def _hex(cls, v: str) -> str:
        text = "".join(v.split())
        try:
            bytes.fromhex(text)
        except ValueError:
            raise ValueError(f"{v!r} is not hex") from None
        return text

    @model_validator(mode="after")
    def _ids(self) -> VendorDefinedEntry:
        from emulator.codec.vendor import StandardId, valid_vendor_id_len

        given = self.standard_id
        if isinstance(given, str):
            try:
                sid = int(given, 0)
            except ValueError:
                try:
                    sid = int(StandardId[given.upper()])
                except KeyError:
                    names = ", ".join(m.name for m in StandardId)
                    raise ValueError(
                        f"standard_id {self.standard_id!r}: not a number or one of {names}"
                    ) from None
            self.standard_id = sid
        else:
            sid = given
        if not 0 <= sid <= 0xFFFF:
            raise ValueError(f"standard_id {sid} does not fit in 16 bits")
        vlen = len(bytes.fromhex(self.vendor_id))
        if not valid_vendor_id_len(sid, vlen):
            raise ValueError(f"a {vlen}-byte vendor_id is not allowed for standard_id {sid}")
        if len(bytes.fromhex(self.response)) > 0xFFFF:
            raise ValueError("response is longer than 65535 bytes")
        return self


def _hex_text(v: str) -> str:
    """A hex string of a profile (whitespace allowed), checked; returned without spaces."""
    text = "".join(v.split()).removeprefix("0x")
    try:
        bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{v!r} is not hex") from None
    return text


# --- [tdisp] (PCIe 6.1 chapter 11, emulator.responder.vendor_defined.tdisp) ------------

#: the TDISP names a profile uses (codec.tdisp enums), kept here as plain names so that
#: the schema needs no responder import
TDISP_LOCK_FLAGS = {
    "NO_FW_UPDATE": 0x01,
    "SYSTEM_CACHE_LINE_SIZE": 0x02,
    "LOCK_MSIX": 0x04,
    "BIND_P2P": 0x08,
    "ALL_REQUEST_REDIRECT": 0x10,
}
TDISP_INTERFACE_INFO = {
    "DMA_WITHOUT_PASID": 0x02,
    "DMA_WITH_PASID": 0x04,
    "ATS_SUPPORTED": 0x08,
    "PRS_SUPPORTED": 0x10,
}
TDISP_MMIO_ATTRIBUTES = {
    "MSIX_TABLE": 0x01,
    "MSIX_PBA": 0x02,
    "IS_NON_TEE_MEM": 0x04,
    "IS_MEM_ATTR_UPDATABLE": 0x08,
}
PAGE_4K = 0x1000


def _names_to_bits(names: list[str], table: dict[str, int], what: str) -> int:
    bits = 0
    seen: set[str] = set()
    for name in names:
        key = _norm(name)
        if key not in table:
            raise ValueError(f"unknown {what} {name!r}; choose from {', '.join(table)}")
        if key in seen:
            raise ValueError(f"{what} {name!r} is listed twice")
        seen.add(key)
        bits |= table[key]
    return bits


class TdispMmioRange(_Strict):
    """[[tdisp.interfaces.mmio_ranges]]: one MMIO range of a TDI (PCIe 6.1 table 11-15):
    its physical ``address`` (4 KiB aligned; the report adds the TSM's
    MMIO_REPORTING_OFFSET), ``pages`` (4 KiB pages), ``attributes`` (MSIX_TABLE,
    MSIX_PBA, IS_NON_TEE_MEM, IS_MEM_ATTR_UPDATABLE) and ``range_id`` (the BAR
    equivalent indicator 0-7 for a BAR's range, or a device-specific group ID)."""

    address: int = Field(ge=0, le=0xFFFFFFFFFFFFFFFF)
    pages: int = Field(ge=1, le=0xFFFFFFFF)
    attributes: list[str] = Field(default_factory=list)
    range_id: int = Field(0, ge=0, le=0xFFFF)

    @field_validator("address")
    @classmethod
    def _aligned(cls, v: int) -> int:
        if v % PAGE_4K:
            raise ValueError(f"0x{v:X} is not 4 KiB aligned")
        return v

    @field_validator("attributes")
    @classmethod
    def _attrs(cls, v: list[str]) -> list[str]:
        bits = _names_to_bits(v, TDISP_MMIO_ATTRIBUTES, "MMIO range attribute")
        if bits & 0x03 == 0x03:
            raise ValueError("one range cannot map both the MSI-X table and the PBA")
        return v

    @property
    def attribute_bits(self) -> int:
        return _names_to_bits(self.attributes, TDISP_MMIO_ATTRIBUTES, "attribute")

    @property
    def end(self) -> int:
        return self.address + self.pages * PAGE_4K


class TdispInterface(_Strict):
    """[[tdisp.interfaces]]: one TEE Device Interface (PCIe 6.1 11.2): a function of the
    device that a TSM locks, attests and starts for a TVM.

    ``function_id`` is the Requester ID of the function hosting the TDI (bus << 8 | device
    << 3 | function; spdm-emu's requester uses 0xBEEF); ``segment`` (None: the device does
    not know its segment) is compared when the request's Requester Segment Valid bit is set.
    ``lock_flags_supported`` (LOCK_INTERFACE_FLAGS_SUPPORTED: NO_FW_UPDATE,
    SYSTEM_CACHE_LINE_SIZE, LOCK_MSIX, BIND_P2P, ALL_REQUEST_REDIRECT; a LOCK asking for
    another one is refused).  ``ide_required``: LOCK needs keys for every sub-stream of the
    default stream programmed in the same session (on ``ide_port``, None: any port; a
    profile without [ide_km] cannot require IDE).  The report: ``interface_info`` (DMA /
    ATS / PRS bits; bit 0 NO_UPDATE_AFTER_LOCK is set while locked unless
    ``runtime_firmware_update`` and the LOCK did not ask NO_FW_UPDATE), the MSI-X / LNR /
    TPH control registers (MSI-X and TPH reported only when the LOCK locked MSI-X), the
    ``mmio_ranges`` and ``device_specific_info`` (text) or ``device_specific_info_hex``.
    ``p2p``: BIND_P2P_STREAM / UNBIND_P2P_STREAM are supported (with the BIND_P2P flag)."""

    function_id: int = Field(ge=0, le=0xFFFF)
    segment: int | None = Field(None, ge=0, le=0xFF)
    lock_flags_supported: list[str] = Field(
        default_factory=lambda: ["NO_FW_UPDATE", "SYSTEM_CACHE_LINE_SIZE", "LOCK_MSIX"]
    )
    ide_required: bool = True
    ide_port: int | None = Field(None, ge=0, le=0xFF)
    interface_info: list[str] = Field(default_factory=lambda: ["DMA_WITHOUT_PASID"])
    runtime_firmware_update: bool = False
    msix_message_control: int = Field(0, ge=0, le=0xFFFF)
    lnr_control: int = Field(0, ge=0, le=0xFFFF)
    tph_control: int = Field(0, ge=0, le=0xFFFFFFFF)
    mmio_ranges: list[TdispMmioRange] = Field(default_factory=list)
    device_specific_info: str | None = None
    device_specific_info_hex: str | None = None
    p2p: bool = False

    @field_validator("lock_flags_supported")
    @classmethod
    def _flags(cls, v: list[str]) -> list[str]:
        _names_to_bits(v, TDISP_LOCK_FLAGS, "lock flag")
        return v

    @field_validator("interface_info")
    @classmethod
    def _info(cls, v: list[str]) -> list[str]:
        _names_to_bits(v, TDISP_INTERFACE_INFO, "interface_info bit")
        return v

    @field_validator("device_specific_info_hex")
    @classmethod
    def _info_hex(cls, v: str | None) -> str | None:
        return None if v is None else _hex_text(v)

    @model_validator(mode="after")
    def _consistent(self) -> TdispInterface:
        if self.device_specific_info is not None and self.device_specific_info_hex is not None:
            raise ValueError("give device_specific_info or device_specific_info_hex, not both")
        if self.p2p and "BIND_P2P" not in {_norm(n) for n in self.lock_flags_supported}:
            raise ValueError("p2p needs BIND_P2P in lock_flags_supported")
        spans = sorted((r.address, r.end, i) for i, r in enumerate(self.mmio_ranges))
        for (_a0, e0, i0), (a1, _e1, i1) in itertools.pairwise(spans):
            if a1 < e0:
                raise ValueError(f"mmio_ranges[{i1}] overlaps mmio_ranges[{i0}]")
        for i, r in enumerate(self.mmio_ranges):
            if r.end > 1 << 64:
                raise ValueError(f"mmio_ranges[{i}] ends above the 64-bit address space")
        if len(self.device_specific_bytes) > 0xFFFF:
            raise ValueError("device-specific information longer than 65535 bytes")
        return self

    @property
    def device_specific_bytes(self) -> bytes:
        if self.device_specific_info_hex is not None:
            return bytes.fromhex(self.device_specific_info_hex)
        return (self.device_specific_info or "").encode("utf-8")

    @property
    def lock_flag_bits(self) -> int:
        return _names_to_bits(self.lock_flags_supported, TDISP_LOCK_FLAGS, "lock flag")

    @property
    def interface_info_bits(self) -> int:
        return _names_to_bits(self.interface_info, TDISP_INTERFACE_INFO, "interface_info bit")


class TdispVdmEntry(_Strict):
    """[[tdisp.vdm]]: a canned VDM_RESPONSE (PCIe 6.1 11.3.25): a VDM_REQUEST with this
    ``registry_id`` (0 / "PCISIG", 1 / "CXL"), ``vendor_id`` (hex, as sent) and vendor data
    starting with ``request_prefix`` (hex; "" matches any) is answered with ``response``
    (hex vendor data)."""

    registry_id: int | str = 0
    vendor_id: str
    request_prefix: str = ""
    response: str = ""

    @field_validator("vendor_id", "request_prefix", "response")
    @classmethod
    def _hex(cls, v: str) -> str:
        return _hex_text(v)

    @field_validator("registry_id")
    @classmethod
    def _registry(cls, v: int | str) -> int:
        if isinstance(v, str):
            names = {"PCISIG": 0, "PCI_SIG": 0, "CXL": 1}
            if _norm(v) not in names:
                raise ValueError(f"registry_id {v!r}: use 0 (PCISIG) or 1 (CXL)")
            return names[_norm(v)]
        if v not in (0, 1):
            raise ValueError(f"registry_id {v}: use 0 (PCISIG) or 1 (CXL)")
        return v

    @model_validator(mode="after")
    def _sizes(self) -> TdispVdmEntry:
        if len(bytes.fromhex(self.vendor_id)) > 0xFF:
            raise ValueError("vendor_id is longer than 255 bytes")
        return self


class TdispSection(_Strict):
    """[tdisp]: the TDISP responder (PCIe 6.1 chapter 11) in PCI-SIG VENDOR_DEFINED_REQUEST
    (protocol 01h), inside secure sessions only.  TDISP_CAPABILITIES reports
    ``dev_addr_width``, ``num_req_this`` and ``num_req_all``; a DEVICE_INTERFACE_REPORT
    carries at most ``max_report_portion`` report bytes (the requester reads the rest with
    further requests); ``interfaces`` are the TDIs, ``vdm`` the canned vendor messages."""

    enabled: bool = True
    dev_addr_width: int = Field(52, ge=1, le=64)
    num_req_this: int = Field(1, ge=1, le=0xFF)
    num_req_all: int = Field(1, ge=1, le=0xFF)
    max_report_portion: int = Field(0x400, ge=1, le=0xFFFF)
    interfaces: list[TdispInterface] = Field(default_factory=list)
    vdm: list[TdispVdmEntry] = Field(default_factory=list)


# --- [cxl_ide_km], [cxl_tsp], [pldm]: what libspdm's requester app flow exercises --------


class CxlIdeKmSection(_Strict):
    """[cxl_ide_km]: CXL.cachemem IDE key management (CXL 3.1 11.4.11; VendorID 0x1E98,
    protocol 0 over PCI-SIG VENDOR_DEFINED_REQUEST).  QUERY_RESP reports
    ``segment``/``bus``/``device``/``function``, ``max_port_index``, the capability bits
    (version 1, ``iv_generation``, ``key_generation``, ``k_set_stop``) and ``registers``
    (the CXL IDE capability structure's DWORDs, at most 9).  Keys need a secure session."""

    enabled: bool = True
    ports: list[int] = Field(default_factory=lambda: [0])
    max_port_index: int = Field(7, ge=0, le=0xFF)
    segment: int = Field(0, ge=0, le=0xFF)
    bus: int = Field(0, ge=0, le=0xFF)
    device: int = Field(0, ge=0, le=31)
    function: int = Field(0, ge=0, le=7)
    iv_generation: bool = False
    key_generation: bool = False
    k_set_stop: bool = True
    registers: list[int] = Field(default_factory=lambda: [1, 0, 0, 0, 0, 0, 0, 0, 0])

    @field_validator("registers")
    @classmethod
    def _regs(cls, v: list[int]) -> list[int]:
        if len(v) > 9:
            raise ValueError(f"{len(v)} registers; the CXL IDE capability structure has 9")
        for i, r in enumerate(v):
            if not 0 <= r <= 0xFFFFFFFF:
                raise ValueError(f"registers[{i}] = {r} is not a 32-bit value")
        return v

    @field_validator("ports")
    @classmethod
    def _ports(cls, v: list[int]) -> list[int]:
        for p in v:
            if not 0 <= p <= 0xFF:
                raise ValueError(f"port index {p} is not 0..255")
        if len(set(v)) != len(v):
            raise ValueError("a port index is listed twice")
        return v


#: names of CXL TSP capability bits a profile may list (CXL 3.1 table 11-52 ff.)
CXL_TSP_ENCRYPTION_FEATURES = {
    "ENCRYPTION": 0x01,
    "CKID_BASED_ENCRYPTION": 0x02,
    "RANGE_BASED_ENCRYPTION": 0x04,
    "INITIATOR_SUPPLIED_ENTROPY": 0x08,
    "CKID_BASED_REQUIRED": 0x10,
}
CXL_TSP_ALGORITHMS = {"AES_XTS_128": 0x01, "AES_XTS_256": 0x02}
CXL_TSP_TE_FEATURES = {
    "WRITE_ACCESS_CONTROL": 0x01,
    "READ_ACCESS_CONTROL": 0x02,
    "IMPLICIT_TE_STATE_CHANGE": 0x04,
    "EXPLICIT_OOB_TE_STATE_CHANGE": 0x08,
    "EXPLICIT_IB_TE_STATE_CHANGE": 0x10,
    "EXPLICIT_TE_STATE_CHANGE_SANITIZE": 0x20,
}
CXL_TSP_CONFIG_FEATURES = {"LOCKED_TARGET_FW_UPDATE": 0x01}


class CxlTspSection(_Strict):
    """[cxl_tsp]: the CXL Trusted Security Protocol target (CXL 3.1 11.5; VendorID 0x1E98,
    protocol 1), inside secure sessions only.  GET_TARGET_CAPABILITIES reports the
    memory-encryption ``encryption_features`` and ``algorithms``, the TE-state
    ``te_features`` with ``explicit_ib_granularity`` / ``explicit_oob_granularity`` (bit
    masks, 64 B = bit 0), ``configuration_features`` and ``number_of_ckids``; the
    configuration report is ``report_size`` bytes (valid fields byte first).  The first
    session that asks GET_TARGET_TSP_VERSION is the primary one: only it may set and lock
    the configuration.  Secondary sessions are not offered."""

    enabled: bool = True
    encryption_features: list[str] = Field(default_factory=lambda: ["ENCRYPTION"])
    algorithms: list[str] = Field(default_factory=lambda: ["AES_XTS_256"])
    range_based_keys: int = Field(0, ge=0, le=0xFFFF)
    te_features: list[str] = Field(
        default_factory=lambda: [
            "READ_ACCESS_CONTROL",
            "IMPLICIT_TE_STATE_CHANGE",
            "EXPLICIT_IB_TE_STATE_CHANGE",
        ]
    )
    explicit_oob_granularity: int = Field(0, ge=0, le=0xFFFFFFFF)
    explicit_ib_granularity: int = Field(0x1, ge=0, le=0xFFFFFFFF)
    configuration_features: list[str] = Field(default_factory=lambda: ["LOCKED_TARGET_FW_UPDATE"])
    number_of_ckids: int = Field(0, ge=0, le=0x1FFF)
    report_size: int = Field(0xDC, ge=4, le=0x1000)
    max_report_portion: int = Field(0x200, ge=1, le=0xFFFF)

    @model_validator(mode="after")
    def _bits(self) -> CxlTspSection:
        enc = _names_to_bits(self.encryption_features, CXL_TSP_ENCRYPTION_FEATURES, "feature")
        alg = _names_to_bits(self.algorithms, CXL_TSP_ALGORITHMS, "algorithm")
        te = _names_to_bits(self.te_features, CXL_TSP_TE_FEATURES, "TE feature")
        _names_to_bits(self.configuration_features, CXL_TSP_CONFIG_FEATURES, "feature")
        if enc & 0x01 and not alg:
            raise ValueError("ENCRYPTION needs at least one of algorithms")
        if not enc & 0x01 and enc:
            raise ValueError("encryption features other than ENCRYPTION need ENCRYPTION")
        if bool(enc & 0x04) != bool(self.range_based_keys):
            raise ValueError("range_based_keys > 0 exactly when RANGE_BASED_ENCRYPTION is listed")
        if enc & 0x02 and not 2 <= self.number_of_ckids < 0x2000:
            raise ValueError("CKID_BASED_ENCRYPTION needs number_of_ckids 2..8191")
        if bool(te & 0x08) != bool(self.explicit_oob_granularity):
            raise ValueError(
                "explicit_oob_granularity is set exactly when EXPLICIT_OOB_TE_STATE_CHANGE is"
            )
        if bool(te & 0x10) != bool(self.explicit_ib_granularity):
            raise ValueError(
                "explicit_ib_granularity is set exactly when EXPLICIT_IB_TE_STATE_CHANGE is"
            )
        if te & 0x04 and not (te & 0x10 and self.explicit_ib_granularity & 0x01):
            raise ValueError(
                "IMPLICIT_TE_STATE_CHANGE needs EXPLICIT_IB_TE_STATE_CHANGE at 64 B granularity"
            )
        if te & 0x03 and not te & 0x1C:
            raise ValueError("access control needs a TE state change feature")
        return self


class PldmSection(_Strict):
    """[pldm]: PLDM for platform monitoring (DSP0240) in MCTP secured messages (the MCTP
    message type 01h inside a DSP0277 record): GetTID answers ``tid``."""

    enabled: bool = True
    tid: int = Field(1, ge=0, le=0xFE)


class DeterminismSection(_Strict):
    """[determinism]: a seed makes nonces, DHE keys and random padding reproducible."""

    seed: int | None = Field(None, ge=0)


# --- [[faults]] and [mqtt] (emulator.faults, emulator.control) ------------------------


class FaultSection(BaseModel):
    """[[faults]]: one fault rule, with the keys of a ``--fault`` SPEC (README "Fault injection"),
    e.g. ``on = "GET_MEASUREMENTS"``, ``nth = 2``, ``do = "error:Busy"``; or
    ``spec = "on=GET_MEASUREMENTS,nth=2,do=error:Busy"``.  Keys are checked by
    :func:`emulator.faults.spec.rule_from_mapping`, which names the bad one."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _rule(cls, data: Any) -> Any:
        from emulator.faults.model import FaultSpecError
        from emulator.faults.spec import rule_from_mapping

        try:
            rule_from_mapping(data, origin="profile")
        except FaultSpecError as exc:
            raise ValueError(f"{exc.key}: {exc.problem}" if exc.key else exc.problem) from None
        return data

    def rule(self) -> Any:
        """A fresh :class:`emulator.faults.model.FaultRule` for this entry."""
        from emulator.faults.spec import rule_from_mapping

        return rule_from_mapping(dict(self.model_extra or {}), origin="profile")


class MqttSection(_Strict):
    """[mqtt]: the optional MQTT control plane and telemetry (emulator.control)."""

    enabled: bool = False
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: FilePath | None = None
    cert_file: FilePath | None = None
    key_file: FilePath | None = None
    tls_insecure: bool = False
    topic_prefix: str = Field("spdm-emulator", min_length=1, pattern=r"^[^#+]+$")
    client_id: str | None = None
    queue_size: int = Field(1000, ge=1, le=1_000_000)
    keepalive: int = Field(30, ge=5, le=3600)

    @model_validator(mode="after")
    def _consistent(self) -> MqttSection:
        if self.password is not None and self.username is None:
            raise ValueError("password needs username")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (TLS client certificate)")
        if not self.tls and (self.ca_file or self.cert_file or self.tls_insecure):
            raise ValueError("ca_file, cert_file, key_file and tls_insecure need tls = true")
        return self


class SlotSection(_Strict):
    """One [[slots]] entry: a key and its certificate chain in slot ``id`` (DSP0274 10.7).

    ``chain`` is a slot directory (``chain.der`` + ``leaf.key.pem``, as ``certs
    generate`` writes) or a chain file (DER or PEM, root first) with ``key``; or
    ``generate`` names an algorithm (``ecdsa-p384``...) to generate a chain at
    load.  ``provisioned = false`` declares a supported but empty slot.  ``id``
    255 is the raw public key of PUB_KEY_ID_CAP (``key`` or ``generate``).
    Several entries may share an ``id`` when their keys are of different
    algorithms: the one that signs with the negotiated BaseAsymAlgo is served.
    Paths are relative to the profile file.
    """

    id: int = Field(ge=0, le=255)
    chain: FilePath | None = None
    key: FilePath | None = None
    generate: str | None = None
    provisioned: bool = True
    key_pair_id: int | None = Field(None, ge=1, le=255)
    cert_model: str | None = None
    key_usage: list[str] | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, v: int) -> int:
        if 7 < v < 255:
            raise ValueError(f"slot id {v}: certificate slots are 0..7 (255: the raw public key)")
        return v

    @field_validator("generate")
    @classmethod
    def _generate(cls, v: str | None) -> str | None:
        from emulator.x509.model import ASYM_NAMES

        if v is not None and v not in ASYM_NAMES:
            raise ValueError(f"unknown algorithm {v!r}; choose from {', '.join(ASYM_NAMES)}")
        return v

    @field_validator("cert_model")
    @classmethod
    def _model(cls, v: str | None) -> str | None:
        if v is not None and v not in ("device", "alias", "generic"):
            raise ValueError(f"cert_model {v!r}: choose device, alias or generic")
        return v

    @field_validator("key_usage")
    @classmethod
    def _usage(cls, v: list[str] | None) -> list[str] | None:
        from emulator.codec.identity import KeyUsage

        for name in v or []:
            key = _norm(name).removesuffix("_USE")
            if key not in KeyUsage.__members__:
                raise ValueError(
                    f"unknown key usage {name!r}; choose from {', '.join(KeyUsage.__members__)}"
                )
        return v

    @model_validator(mode="after")
    def _sources(self) -> SlotSection:
        given = [n for n in ("chain", "key", "generate") if getattr(self, n) is not None]
        if not self.provisioned:
            if given:
                raise ValueError(f"an unprovisioned slot takes no {given[0]}")
            if self.id == 255:
                raise ValueError("slot 255 (raw public key) is either provisioned or absent")
            return self
        if self.generate is not None and (self.chain is not None or self.key is not None):
            raise ValueError("give either generate or chain/key, not both")
        if self.id == 255:
            if self.chain is not None:
                raise ValueError("slot 255 is a raw public key: give key or generate, no chain")
            if self.key is None and self.generate is None:
                raise ValueError("slot 255 needs key (a private key file) or generate")
        elif self.chain is None and self.generate is None:
            raise ValueError("a provisioned slot needs chain or generate")
        return self


# --- provisioning, key pairs, MEL, endpoint info, events (DSP0274 1.2 / 1.3) -------------

#: [[key_pairs]] capability names -> KEY_PAIR_INFO Capabilities bits
KEY_PAIR_CAPABILITY_NAMES: dict[str, int] = {
    "GEN_KEY": 0x01,
    "ERASABLE": 0x02,
    "CERT_ASSOC": 0x04,
    "KEY_USAGE": 0x08,
    "ASYM_ALGO": 0x10,
    "SHAREABLE": 0x20,
}


def _key_usage_names(v: list[str] | None) -> list[str] | None:
    from emulator.codec.identity import KeyUsage

    for name in v or []:
        if _norm(name).removesuffix("_USE") not in KeyUsage.__members__:
            raise ValueError(
                f"unknown key usage {name!r}; choose from {', '.join(KeyUsage.__members__)}"
            )
    return v


class KeyPairSection(_Strict):
    """[[key_pairs]]: one key pair (DSP0274 1.3 GET_KEY_PAIR_INFO / SET_KEY_PAIR_INFO).

    ``key`` (a private key file) or ``generate`` (an algorithm: a key made at load) or
    neither (no key until SET_KEY_PAIR_INFO Generate: needs GEN_KEY).  ``capabilities``:
    what SET_KEY_PAIR_INFO may do (GEN_KEY, ERASABLE, CERT_ASSOC, KEY_USAGE, ASYM_ALGO,
    SHAREABLE); ``key_usage`` / ``key_usage_capabilities``: KEY_EX, CHALLENGE,
    MEASUREMENT, ENDPOINT_INFO, STANDARDS_KEY, VENDOR_KEY; ``asym_capabilities``: the
    algorithms it may use (default: its key's).  A [[slots]] entry with this ``id`` as
    its ``key_pair_id`` must hold the same key; key pairs are numbered 1..N together with
    the slot keys no entry names."""

    id: int | None = Field(None, ge=1, le=255)
    key: FilePath | None = None
    generate: str | None = None
    capabilities: list[str] = Field(default_factory=list)
    key_usage: list[str] | None = None
    key_usage_capabilities: list[str] | None = None
    asym_capabilities: list[str] | None = None
    description: str = ""

    @field_validator("capabilities")
    @classmethod
    def _caps(cls, v: list[str]) -> list[str]:
        for name in v:
            if _norm(name).removesuffix("_CAP") not in KEY_PAIR_CAPABILITY_NAMES:
                raise ValueError(
                    f"unknown key pair capability {name!r}; choose from "
                    f"{', '.join(KEY_PAIR_CAPABILITY_NAMES)}"
                )
        return v

    @field_validator("key_usage", "key_usage_capabilities")
    @classmethod
    def _usage(cls, v: list[str] | None) -> list[str] | None:
        return _key_usage_names(v)

    @field_validator("generate")
    @classmethod
    def _generate(cls, v: str | None) -> str | None:
        from emulator.x509.model import ASYM_NAMES

        if v is not None and v not in ASYM_NAMES:
            raise ValueError(f"unknown algorithm {v!r}; choose from {', '.join(ASYM_NAMES)}")
        return v

    @field_validator("asym_capabilities")
    @classmethod
    def _asyms(cls, v: list[str] | None) -> list[str] | None:
        from emulator.x509.model import ASYM_NAMES

        for name in v or []:
            if name not in ASYM_NAMES:
                raise ValueError(f"unknown algorithm {name!r}; choose from {', '.join(ASYM_NAMES)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> KeyPairSection:
        if self.key is not None and self.generate is not None:
            raise ValueError("give key or generate, not both")
        caps = self.capability_bits
        if self.key is None and self.generate is None and not caps & 0x01:
            raise ValueError("a key pair without key or generate needs the GEN_KEY capability")
        if self.key_usage is not None and self.key_usage_capabilities is not None:
            from emulator.codec.identity import key_usage_bits

            extra = key_usage_bits(self.key_usage) & ~key_usage_bits(self.key_usage_capabilities)
            if extra:
                raise ValueError(f"key_usage 0x{extra:04X} is outside key_usage_capabilities")
        if (
            self.generate is not None
            and self.asym_capabilities is not None
            and self.generate not in self.asym_capabilities
        ):
            raise ValueError(f"generate {self.generate!r} is not in asym_capabilities")
        return self

    @property
    def capability_bits(self) -> int:
        out = 0
        for name in self.capabilities:
            out |= KEY_PAIR_CAPABILITY_NAMES[_norm(name).removesuffix("_CAP")]
        return out


class ProvisioningSection(_Strict):
    """[provisioning]: how the device takes certificates (DSP0274 1.2 GET_CSR,
    SET_CERTIFICATE).  ``trusted_environment``: SET_CERTIFICATE on every slot outside a
    secure session (else slot 0 only, as libspdm).  ``csr_needs_reset`` /
    ``set_certificate_needs_reset`` (default: whether CERT_INSTALL_RESET_CAP is set): the
    request is answered ERROR(ResetRequired) and completes after a device reset.
    ``csr_organization``: O= of the subject of a CSR sent without RequesterInfo."""

    trusted_environment: bool = False
    csr_needs_reset: bool | None = None
    set_certificate_needs_reset: bool | None = None
    csr_organization: str = Field("spdm-emulator", min_length=1, max_length=64)


class MelEntrySection(_Strict):
    """[[mel]]: one entry of the measurement extension log (DSP0274 1.3 MEL, DMTF format):
    a measurement value of ``type`` given by exactly one of ``value`` (hex), ``text``
    (UTF-8) or ``file``; ``raw`` (default true) marks it a raw bit stream; ``index`` is
    the hash_extended block it extends (default: the one with ``mel = true``)."""

    index: int | None = Field(None, ge=1, le=0xFE)
    type: str | int = "informational"
    raw: bool = True
    value: str | None = None
    text: str | None = None
    file: FilePath | None = None
    description: str = ""
    _file_data: bytes | None = PrivateAttr(default=None)

    @field_validator("type")
    @classmethod
    def _type(cls, v: str | int) -> str | int:
        return _measurement_type(v)

    @field_validator("value")
    @classmethod
    def _value(cls, v: str | None) -> str | None:
        if v is not None:
            data = parse_hex(v)
            if len(data) > 0xFFFF:
                raise ValueError(f"{len(data)} bytes, a MEL entry value holds at most 65535")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> MelEntrySection:
        given = [n for n in ("value", "text", "file") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of value (hex), text or file"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    @property
    def kind(self) -> int:
        if isinstance(self.type, int):
            return self.type
        return int(MEASUREMENT_TYPE_NAMES[_norm(self.type)])

    def load_file(self, base_dir: Path) -> None:
        if self.file is None:
            return
        self._file_data = read_value_file(self.file, base_dir, 0xFFFF, "a MEL entry value")

    def value_bytes(self) -> bytes:
        if self.value is not None:
            return parse_hex(self.value)
        if self.text is not None:
            return self.text.encode("utf-8")
        return self._file_data or b""


class EndpointIdentifierSection(_Strict):
    """[[endpoint_info.identifiers]]: one device class identifier element of
    ENDPOINT_INFO (DSP0274 1.3 10.16): ``registry`` (a registry name or number, as
    ``vendor_defined``), ``vendor_id`` (hex, as sent) and ``sub_ids`` (hex each)."""

    registry: int | str = "PCISIG"
    vendor_id: str = ""
    sub_ids: list[str] = Field(default_factory=list)

    @field_validator("vendor_id")
    @classmethod
    def _vid(cls, v: str) -> str:
        if v.strip():
            parse_hex(v)
        return v

    @field_validator("sub_ids")
    @classmethod
    def _subs(cls, v: list[str]) -> list[str]:
        for i, sub in enumerate(v):
            try:
                data = parse_hex(sub)
            except ValueError as exc:
                raise ValueError(f"sub_ids[{i}]: {exc}") from None
            if len(data) > 0xFF:
                raise ValueError(f"sub_ids[{i}]: {len(data)} bytes, a sub-identifier holds 255")
        if len(v) > 0xFF:
            raise ValueError("at most 255 sub-identifiers")
        return v

    @model_validator(mode="after")
    def _ids(self) -> EndpointIdentifierSection:
        from emulator.codec.vendor import StandardId, valid_vendor_id_len

        given = self.registry
        if isinstance(given, str):
            try:
                reg = int(given, 0)
            except ValueError:
                try:
                    reg = int(StandardId[_norm(given).replace("_", "")])
                except KeyError:
                    names = ", ".join(m.name for m in StandardId)
                    raise ValueError(
                        f"registry {self.registry!r}: not a number or one of {names}"
                    ) from None
            self.registry = reg
        else:
            reg = given
        if not 0 <= reg <= 0xFF:
            raise ValueError(f"registry {reg} does not fit in a byte")
        vlen = len(self.vendor_bytes)
        if not valid_vendor_id_len(reg, vlen):
            raise ValueError(f"a {vlen}-byte vendor_id is not allowed for registry {reg}")
        return self

    @property
    def vendor_bytes(self) -> bytes:
        return parse_hex(self.vendor_id) if self.vendor_id.strip() else b""

    def sub_id_bytes(self) -> list[bytes]:
        return [parse_hex(s) if s.strip() else b"" for s in self.sub_ids]


class EndpointInfoSection(_Strict):
    """[endpoint_info]: what ENDPOINT_INFO (device class identifier) reports; without
    ``identifiers``, one PCI-SIG element: VendorID = [device.pci] vendor_id and
    sub-identifiers device_id, revision + class_code (the config DWORD at 0x08),
    subsystem vendor ID and subsystem ID (little-endian)."""

    identifiers: list[EndpointIdentifierSection] | None = Field(None, min_length=1, max_length=255)


#: [events] supported type names -> DMTF event type IDs
DMTF_EVENT_NAMES: dict[str, int] = {
    "EVENT_LOST": 1,
    "MEASUREMENT_CHANGED": 2,
    "MEASUREMENT_PRE_UPDATE": 3,
    "CERTIFICATE_CHANGED": 4,
}


class EventsSection(_Strict):
    """[events]: the DMTF event types the device notifies (EVENT_CAP, DSP0274 1.3 10.26):
    EVENT_LOST, MEASUREMENT_CHANGED, MEASUREMENT_PRE_UPDATE, CERTIFICATE_CHANGED; and how
    many undelivered events a session keeps before the oldest are reported lost."""

    supported: list[str] = Field(default_factory=lambda: list(DMTF_EVENT_NAMES), min_length=1)
    queue_limit: int = Field(32, ge=1, le=4096)

    @field_validator("supported")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        seen: set[str] = set()
        for name in v:
            key = _norm(name)
            if key not in DMTF_EVENT_NAMES:
                raise ValueError(
                    f"unknown event type {name!r}; choose from {', '.join(DMTF_EVENT_NAMES)}"
                )
            if key in seen:
                raise ValueError(f"event type {name!r} is listed twice")
            seen.add(key)
        return v

    @property
    def type_ids(self) -> list[int]:
        return sorted(DMTF_EVENT_NAMES[_norm(n)] for n in self.supported)


class Profile(_Strict):
    """A whole device profile (the TOML document)."""

    device: DeviceSection
    spdm: SpdmSection
    algorithms: AlgorithmsSection = Field(default_factory=AlgorithmsSection)
    determinism: DeterminismSection = Field(default_factory=DeterminismSection)
    measurements: list[MeasurementEntry] = Field(default_factory=list)
    measurement_options: MeasurementOptionsSection = Field(
        default_factory=MeasurementOptionsSection
    )
    slots: list[SlotSection] = Field(default_factory=list)
    sessions: SessionsSection = Field(default_factory=SessionsSection)
    faults: list[FaultSection] = Field(default_factory=list)
    mqtt: MqttSection = Field(default_factory=MqttSection)
    ide_km: IdeKmSection | None = None
    vendor_defined: list[VendorDefinedEntry] = Field(default_factory=list)
    key_pairs: list[KeyPairSection] = Field(default_factory=list)
    provisioning: ProvisioningSection = Field(default_factory=ProvisioningSection)
    mel: list[MelEntrySection] = Field(default_factory=list)
    endpoint_info: EndpointInfoSection = Field(default_factory=EndpointInfoSection)
    events: EventsSection = Field(default_factory=EventsSection)
    tdisp: TdispSection | None = None
    cxl_ide_km: CxlIdeKmSection | None = None
    cxl_tsp: CxlTspSection | None = None
    pldm: PldmSection | None = None
    #: directory that relative file names in the profile are resolved against
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    #: the device identity built from ``slots`` (emulator.device.identity), once loaded
    _identity: Any = PrivateAttr(default=None)
    _source: str = PrivateAttr(default="<profile>")

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    @property
    def source(self) -> str:
        """The file the profile was read from (for error messages)."""
        return self._source

    def identity(self) -> Any:
        """The certificate slots, loaded (or generated) once: an
        :class:`emulator.device.identity.Identity`; ProfileError if a slot is bad."""
        if self._identity is None:
            from emulator.device.identity import build_identity

            self._identity = build_identity(self, self._source)
        return self._identity

    def fault_rules(self) -> list[Any]:
        """The [[faults]] entries as fresh :class:`emulator.faults.model.FaultRule` objects."""
        return [entry.rule() for entry in self.faults]

    # ---- typed views -------------------------------------------------------------

    @property
    def versions(self) -> list[SpdmVersion]:
        """Supported versions, ascending."""
        return sorted(SpdmVersion.from_text(t) for t in self.spdm.versions)

    @property
    def capabilities(self) -> ResponderCap:
        caps = ResponderCap(0)
        for m in parse_flag_names(ResponderCap, self.spdm.capabilities, "capability"):
            caps |= m
        return caps

    def algo_list(self, field: str) -> list[int]:
        """An [algorithms] list as enum members in priority order."""
        enum = _ALGORITHM_FIELDS[field][0]
        return list(parse_flag_names(enum, getattr(self.algorithms, field), field))


def _slot_checks(p: Profile) -> list[tuple[str, str]]:
    """[[slots]] rules that need no file: ids, capabilities, generated algorithms."""
    from emulator.x509.model import base_asym_algo

    errs: list[tuple[str, str]] = []
    caps = p.capabilities
    C = ResponderCap
    offered = 0
    for bit in p.algo_list("base_asym"):
        offered |= bit
    for bit in p.algo_list("pqc_asym"):
        offered |= int(bit) << PQC_ASYM_SHIFT
    empty: set[int] = set()
    used: dict[int, list[tuple[int, int]]] = {}
    for i, slot in enumerate(p.slots):
        if not slot.provisioned:
            if slot.id in empty or slot.id in used:
                errs.append((f"slots[{i}].id", f"slot {slot.id} is declared twice"))
            empty.add(slot.id)
            continue
        if slot.id in empty:
            errs.append((f"slots[{i}].id", f"slot {slot.id} is also declared unprovisioned"))
        if slot.generate is not None:
            mask = int(base_asym_algo(slot.generate))
            if not mask & offered:
                errs.append(
                    (
                        f"slots[{i}].generate",
                        f"{slot.generate} is not in [algorithms] base_asym or pqc_asym",
                    )
                )
            for j, other in used.get(slot.id, []):
                if other & mask:
                    errs.append(
                        (
                            f"slots[{i}].id",
                            f"slot {slot.id} already has a {slot.generate} key (slots[{j}])",
                        )
                    )
            used.setdefault(slot.id, []).append((i, mask))
        else:
            used.setdefault(slot.id, []).append((i, 0))
    certs = [s for s in p.slots if s.provisioned and s.id < 8]
    pub = [s for s in p.slots if s.id == 255]
    if C.CERT_CAP in caps and not certs:
        errs.append(("slots", "CERT_CAP needs at least one provisioned [[slots]] entry"))
    if C.CHAL_CAP in caps and not certs and not pub:
        errs.append(("slots", "CHAL_CAP needs a provisioned [[slots]] entry (or slot 255)"))
    if pub and C.PUB_KEY_ID_CAP not in caps:
        errs.append(("slots", "slot 255 (a raw public key) needs PUB_KEY_ID_CAP"))
    if C.PUB_KEY_ID_CAP in caps and not pub:
        errs.append(("slots", "PUB_KEY_ID_CAP needs a slot with id = 255 (the public key)"))
    if certs and C.PUB_KEY_ID_CAP in caps:
        errs.append(("slots", "certificate slots 0..7 need CERT_CAP, not PUB_KEY_ID_CAP"))
    return errs


def _cross_checks(p: Profile) -> list[tuple[str, str]]:
    """Rules across fields (DSP0274 CAPABILITIES flag rules); returns (field, problem)."""
    errs: list[tuple[str, str]] = []
    caps = p.capabilities
    alg = p.algorithms
    C = ResponderCap
    if C.MEAS_CAP_NO_SIG in caps and C.MEAS_CAP_SIG in caps:
        errs.append(
            (
                "spdm.capabilities",
                "MEAS_CAP_NO_SIG and MEAS_CAP_SIG together encode MEAS_CAP=11b, "
                "which DSP0274 reserves",
            )
        )
    if C.PSK_CAP in caps and C.PSK_CAP_WITH_CONTEXT in caps:
        errs.append(
            (
                "spdm.capabilities",
                "PSK_CAP and PSK_CAP_WITH_CONTEXT together encode PSK_CAP=11b, "
                "which DSP0274 reserves",
            )
        )
    if C.EP_INFO_CAP_NO_SIG in caps and C.EP_INFO_CAP_SIG in caps:
        errs.append(("spdm.capabilities", "EP_INFO_CAP=11b is reserved"))
    if C.MULTI_KEY_CAP_ONLY in caps and C.MULTI_KEY_CAP_NEG in caps:
        errs.append(("spdm.capabilities", "MULTI_KEY_CAP=11b is reserved"))
    key_ex = C.KEY_EX_CAP in caps
    psk = bool(caps & (C.PSK_CAP | C.PSK_CAP_WITH_CONTEXT))
    if key_ex or psk:
        if not caps & (C.ENCRYPT_CAP | C.MAC_CAP):
            errs.append(("spdm.capabilities", "KEY_EX_CAP/PSK_CAP need ENCRYPT_CAP or MAC_CAP"))
        if not alg.aead:
            errs.append(("algorithms.aead", "KEY_EX_CAP/PSK_CAP need at least one AEAD suite"))
        if not alg.key_schedule:
            errs.append(
                ("algorithms.key_schedule", "KEY_EX_CAP/PSK_CAP need the SPDM key schedule")
            )
    else:
        for flag in (
            C.ENCRYPT_CAP,
            C.MAC_CAP,
            C.HANDSHAKE_IN_THE_CLEAR_CAP,
            C.HBEAT_CAP,
            C.KEY_UPD_CAP,
        ):
            if flag in caps:
                errs.append(("spdm.capabilities", f"{flag.name} needs KEY_EX_CAP or PSK_CAP"))
    if key_ex and not alg.dhe and not alg.kem:
        errs.append(("algorithms.dhe", "KEY_EX_CAP needs at least one DHE group (or a 1.4 kem)"))
    errs += _pqc_checks(p)
    if C.HANDSHAKE_IN_THE_CLEAR_CAP in caps and not key_ex:
        errs.append(("spdm.capabilities", "HANDSHAKE_IN_THE_CLEAR_CAP needs KEY_EX_CAP"))
    if C.CERT_CAP in caps and C.PUB_KEY_ID_CAP in caps:
        errs.append(("spdm.capabilities", "CERT_CAP and PUB_KEY_ID_CAP are mutually exclusive"))
    if (C.CHAL_CAP in caps or C.MUT_AUTH_CAP in caps) and not caps & (
        C.CERT_CAP | C.PUB_KEY_ID_CAP
    ):
        errs.append(("spdm.capabilities", "CHAL_CAP/MUT_AUTH_CAP need CERT_CAP or PUB_KEY_ID_CAP"))
    signs = caps & (C.CERT_CAP | C.CHAL_CAP | C.MEAS_CAP_SIG | C.KEY_EX_CAP | C.PUB_KEY_ID_CAP)
    if signs and not alg.base_asym and not alg.pqc_asym:
        errs.append(("algorithms.base_asym", "the capabilities need a signature algorithm"))
    if not alg.base_hash:
        errs.append(("algorithms.base_hash", "at least one hash algorithm is required"))
    if caps & (C.MEAS_CAP_NO_SIG | C.MEAS_CAP_SIG):
        if not alg.measurement_hash:
            errs.append(("algorithms.measurement_hash", "MEAS_CAP needs a measurement hash"))
        if not alg.measurement_spec:
            errs.append(("algorithms.measurement_spec", "MEAS_CAP needs DMTF"))
    elif C.MEAS_FRESH_CAP in caps:
        errs.append(("spdm.capabilities", "MEAS_FRESH_CAP needs MEAS_CAP"))
    if C.MUT_AUTH_CAP in caps and not alg.req_base_asym and not alg.req_pqc_asym:
        errs.append(("algorithms.req_base_asym", "MUT_AUTH_CAP needs a requester algorithm"))
    if C.MEL_CAP in caps and not alg.mel_spec:
        errs.append(("algorithms.mel_spec", "MEL_CAP needs a MEL specification"))
    errs += _slot_checks(p)
    sp = p.spdm
    if sp.data_transfer_size > sp.max_spdm_msg_size:
        errs.append(("spdm.data_transfer_size", "is larger than max_spdm_msg_size"))
    if sp.data_transfer_size != sp.max_spdm_msg_size and C.CHUNK_CAP not in caps:
        errs.append(
            (
                "spdm.max_spdm_msg_size",
                "differs from data_transfer_size, which needs CHUNK_CAP (DSP0274 10.4)",
            )
        )
    errs += _measurement_checks(p)
    errs += _session_checks(p)
    errs += _ide_km_checks(p)
    errs += _tdisp_checks(p)
    top = max(p.versions)
    allowed = RESPONDER_CAPS_BY_VERSION[top]
    for flag in caps:
        if not flag & allowed:
            errs.append(("spdm.capabilities", f"{flag.name} does not exist in SPDM {top.text}"))
    errs += _provisioning_checks(p)
    return errs


def _provisioning_checks(p: Profile) -> list[tuple[str, str]]:
    """[provisioning], [[key_pairs]], [[mel]], [events] against the capabilities."""
    errs: list[tuple[str, str]] = []
    caps = p.capabilities
    C = ResponderCap
    for flag in (C.SET_CERT_CAP, C.CSR_CAP):
        if flag in caps and C.CERT_CAP not in caps:
            errs.append(("spdm.capabilities", f"{flag.name} needs CERT_CAP"))
    if C.CERT_INSTALL_RESET_CAP in caps and not caps & (C.SET_CERT_CAP | C.CSR_CAP):
        errs.append(("spdm.capabilities", "CERT_INSTALL_RESET_CAP needs SET_CERT_CAP or CSR_CAP"))
    prov = p.provisioning
    needs = (("csr_needs_reset", C.CSR_CAP), ("set_certificate_needs_reset", C.SET_CERT_CAP))
    for name, flag in needs:
        if getattr(prov, name):
            if C.CERT_INSTALL_RESET_CAP not in caps:
                errs.append((f"provisioning.{name}", "needs CERT_INSTALL_RESET_CAP"))
            if flag not in caps:
                errs.append((f"provisioning.{name}", f"needs {flag.name}"))
    if C.SET_KEY_PAIR_INFO_CAP in caps and C.GET_KEY_PAIR_INFO_CAP not in caps:
        errs.append(("spdm.capabilities", "SET_KEY_PAIR_INFO_CAP needs GET_KEY_PAIR_INFO_CAP"))
    if (
        caps & (C.GET_KEY_PAIR_INFO_CAP | C.CSR_CAP)
        and not p.key_pairs
        and not any(s.provisioned for s in p.slots)
    ):
        errs.append(("key_pairs", "GET_KEY_PAIR_INFO_CAP / CSR_CAP need a key pair"))
    # SPDM 1.4 adds PQC algorithm fields to KEY_PAIR_INFO / SET_KEY_PAIR_INFO, and ML-DSA
    # keys to CSRs and provisioned chains: not implemented (1.2/1.3 provisioning only)
    kp_caps = [f.name for f in (C.GET_KEY_PAIR_INFO_CAP, C.SET_KEY_PAIR_INFO_CAP) if f in caps]
    if kp_caps and SpdmVersion.V14 in p.versions:
        errs.append(
            (
                "spdm.capabilities",
                f"{' and '.join(n or '' for n in kp_caps)} with SPDM 1.4: the 1.4 "
                "KEY_PAIR_INFO / SET_KEY_PAIR_INFO layouts (PQC algorithm fields) are not "
                "implemented; offer key pair info up to SPDM 1.3 only",
            )
        )
    prov_caps = caps & (C.CSR_CAP | C.SET_CERT_CAP | C.GET_KEY_PAIR_INFO_CAP)
    if prov_caps and p.algo_list("pqc_asym"):
        errs.append(
            (
                "algorithms.pqc_asym",
                "GET_CSR, SET_CERTIFICATE and key pair info are implemented for classic keys "
                "(RSA, ECDSA, EdDSA) only: drop CSR_CAP, SET_CERT_CAP and the key pair "
                "capabilities from a PQC device",
            )
        )
    seen: dict[int, int] = {}
    for i, kp in enumerate(p.key_pairs):
        if kp.id is not None:
            if kp.id in seen:
                errs.append(
                    (f"key_pairs[{i}].id", f"id {kp.id} is used by key_pairs[{seen[kp.id]}]")
                )
            seen[kp.id] = i
    if caps & (C.EP_INFO_CAP_SIG) and not caps & (C.CERT_CAP | C.PUB_KEY_ID_CAP):
        errs.append(("spdm.capabilities", "EP_INFO_CAP_SIG needs CERT_CAP or PUB_KEY_ID_CAP"))
    if C.EVENT_CAP in caps:
        if C.ENCAP_CAP not in caps:
            errs.append(
                ("spdm.capabilities", "EVENT_CAP needs ENCAP_CAP (SEND_EVENT is encapsulated)")
            )
        if not caps & (C.KEY_EX_CAP | C.PSK_CAP | C.PSK_CAP_WITH_CONTEXT):
            errs.append(("spdm.capabilities", "EVENT_CAP needs sessions (KEY_EX_CAP or PSK_CAP)"))
    mel_blocks = [m.index for m in p.measurements if m.mel]
    if C.MEL_CAP in caps:
        if not mel_blocks:
            errs.append(("measurements", "MEL_CAP needs a hash_extended block with mel = true"))
        if not caps & (C.MEAS_CAP_NO_SIG | C.MEAS_CAP_SIG):
            errs.append(("spdm.capabilities", "MEL_CAP needs MEAS_CAP"))
    for i, entry in enumerate(p.mel):
        if entry.index is None:
            if len(mel_blocks) != 1:
                errs.append(
                    (
                        f"mel[{i}].index",
                        f"{len(mel_blocks)} blocks have mel = true: name the one this entry "
                        "extends",
                    )
                )
        elif entry.index not in mel_blocks:
            errs.append((f"mel[{i}].index", f"block {entry.index} is not a mel = true block"))
    return errs


def _pqc_checks(p: Profile) -> list[tuple[str, str]]:
    """SPDM 1.4 algorithms need 1.4 offered; a 1.4-only signer needs PQC-capable slots."""
    errs: list[tuple[str, str]] = []
    alg = p.algorithms
    has_14 = SpdmVersion.V14 in p.versions
    for name in ("pqc_asym", "req_pqc_asym", "kem"):
        if getattr(alg, name) and not has_14:
            errs.append(
                (
                    f"algorithms.{name}",
                    'is an SPDM 1.4 field: add "1.4" to [spdm] versions',
                )
            )
    return errs


def _ide_km_checks(p: Profile) -> list[tuple[str, str]]:
    """[ide_km]: listed ports within max_port_index."""
    errs: list[tuple[str, str]] = []
    ide = p.ide_km
    if ide is not None and ide.ports is not None:
        for i, port in enumerate(ide.ports):
            if port > ide.max_port_index:
                errs.append(
                    (
                        f"ide_km.ports[{i}]",
                        f"port {port} is above max_port_index {ide.max_port_index}",
                    )
                )
    return errs


def _tdisp_checks(p: Profile) -> list[tuple[str, str]]:
    """[tdisp] (and the CXL / PLDM sections) against the rest of the profile."""
    errs: list[tuple[str, str]] = []
    C = ResponderCap
    sessions = bool(p.capabilities & (C.KEY_EX_CAP | C.PSK_CAP | C.PSK_CAP_WITH_CONTEXT))
    for name in ("tdisp", "cxl_ide_km", "cxl_tsp", "pldm"):
        section = getattr(p, name)
        if section is not None and section.enabled and not sessions:
            errs.append((name, "travels in secure sessions only: needs KEY_EX_CAP or PSK_CAP"))
    td = p.tdisp
    if td is None:
        return errs
    seen: dict[int, int] = {}
    ide = p.ide_km if p.ide_km is not None and p.ide_km.enabled else None
    for i, tdi in enumerate(td.interfaces):
        where = f"tdisp.interfaces[{i}]"
        if tdi.function_id in seen:
            errs.append(
                (
                    f"{where}.function_id",
                    f"0x{tdi.function_id:04X} is already tdisp.interfaces[{seen[tdi.function_id]}]",
                )
            )
        seen.setdefault(tdi.function_id, i)
        if tdi.ide_required and ide is None:
            errs.append(
                (
                    f"{where}.ide_required",
                    "IDE cannot be required without an enabled [ide_km] section "
                    "(set ide_required = false for a TDI that needs no IDE, e.g. an RCIEP)",
                )
            )
        if tdi.ide_port is not None and ide is not None:
            ports = ide.ports if ide.ports is not None else range(ide.max_port_index + 1)
            if tdi.ide_port not in ports:
                errs.append((f"{where}.ide_port", f"port {tdi.ide_port} is not an [ide_km] port"))
        limit = 1 << td.dev_addr_width
        for j, r in enumerate(tdi.mmio_ranges):
            if r.end > limit:
                errs.append(
                    (
                        f"{where}.mmio_ranges[{j}]",
                        f"ends at 0x{r.end:X}, beyond dev_addr_width {td.dev_addr_width} bits",
                    )
                )
    return errs


def _session_checks(p: Profile) -> list[tuple[str, str]]:
    """[sessions] against the capabilities (DSP0274 KEY_EXCHANGE/PSK_EXCHANGE/mutual auth)."""
    errs: list[tuple[str, str]] = []
    caps = p.capabilities
    sec = p.sessions
    C = ResponderCap
    if caps & (C.PSK_CAP | C.PSK_CAP_WITH_CONTEXT) and not sec.psk:
        errs.append(("sessions.psk", "PSK_CAP needs at least one [[sessions.psk]] key"))
    hints: set[bytes] = set()
    for i, entry in enumerate(sec.psk):
        if entry.hint is not None and entry.hint_hex is not None:
            errs.append((f"sessions.psk[{i}]", "give hint or hint_hex, not both"))
        if (entry.key is None) == (entry.key_hex is None):
            errs.append((f"sessions.psk[{i}]", "give exactly one of key and key_hex"))
        elif not entry.key_bytes():
            errs.append((f"sessions.psk[{i}].key", "the PSK is empty"))
        hint = entry.hint_bytes()
        if len(hint) > 0xFFFF:
            errs.append((f"sessions.psk[{i}].hint", "longer than 65535 bytes"))
        if hint in hints:
            errs.append((f"sessions.psk[{i}].hint", "the same hint is listed twice"))
        hints.add(hint)
    if sec.mut_auth != "none":
        if C.MUT_AUTH_CAP not in caps:
            errs.append(("sessions.mut_auth", f"{sec.mut_auth!r} needs MUT_AUTH_CAP"))
        if C.KEY_EX_CAP not in caps:
            errs.append(("sessions.mut_auth", "mutual auth in a session needs KEY_EX_CAP"))
        if sec.mut_auth in ("encap", "get_digests"):
            if C.ENCAP_CAP not in caps:
                errs.append(("sessions.mut_auth", f"{sec.mut_auth!r} needs ENCAP_CAP"))
            if not sec.requester_roots:
                errs.append(
                    (
                        "sessions.requester_roots",
                        "mutual authentication needs a trusted root for the requester chain",
                    )
                )
        if sec.mut_auth == "requested" and not sec.requester_chain:
            errs.append(
                (
                    "sessions.requester_chain",
                    "mut_auth 'requested' (no encapsulation) needs requester_chain",
                )
            )
    return errs


def _measurement_checks(p: Profile) -> list[tuple[str, str]]:
    """[[measurements]] rules across entries and sections."""
    errs: list[tuple[str, str]] = []
    seen: dict[int, int] = {}
    for i, m in enumerate(p.measurements):
        if m.index in seen:
            errs.append(
                (
                    f"measurements[{i}].index",
                    f"index 0x{m.index:02X} is already used by measurements[{seen[m.index]}]",
                )
            )
        else:
            seen[m.index] = i
    caps = p.capabilities
    if caps & (ResponderCap.MEAS_CAP_NO_SIG | ResponderCap.MEAS_CAP_SIG) and not p.measurements:
        errs.append(
            (
                "measurements",
                "MEAS_CAP needs at least one [[measurements]] block (a requester rejects a "
                "device that reports 0 blocks)",
            )
        )
    opaque = p.measurement_options.opaque
    fmt1 = "OPAQUE_DATA_FMT_1" in {_norm(n) for n in p.algorithms.opaque_data_format}
    if opaque and fmt1 and max(p.versions) >= SpdmVersion.V12:
        problem = general_opaque_data_problem(opaque)
        if problem:
            errs.append(
                (
                    "measurement_options.opaque_data",
                    "not in the general opaque data format (OPAQUE_DATA_FMT_1) that a 1.2+ "
                    f"requester checks: {problem}",
                )
            )
    return errs


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def profile_from_dict(data: dict[str, Any], source: str = "<profile>") -> Profile:
    """Validate a parsed TOML document; raise ProfileError naming the first bad field."""
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        msg = first["msg"].removeprefix("Value error, ")
        extra = len(exc.errors()) - 1
        if extra:
            msg += f" (and {extra} more problem{'s' if extra > 1 else ''})"
        raise ProfileError(source, _format_loc(tuple(first["loc"])), msg) from None
    errs = _cross_checks(profile)
    if errs:
        field, problem = errs[0]
        if len(errs) > 1:
            problem += f" (and {len(errs) - 1} more problem{'s' if len(errs) > 2 else ''})"
        raise ProfileError(source, field, problem)
    return profile


def resolve_profile_path(name_or_path: str | Path) -> Path:
    """A path, or the name of a shipped profile (``default`` -> profiles/default.toml)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists() or "/" in str(name_or_path):
        return path
    return PROFILES_DIR / f"{name_or_path}.toml"


def load_profile(name_or_path: str | Path = DEFAULT_PROFILE) -> Profile:
    """Load and validate a profile file (or a shipped profile by name)."""
    path = resolve_profile_path(name_or_path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        shipped = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.toml")))
        raise ProfileError(source, "", f"no such file (shipped profiles: {shipped})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(source, "", f"cannot read: {exc}") from None
    return load_profile_text(text, source, base_dir=path.parent)


def load_profile_text(
    text: str, source: str = "<profile>", base_dir: Path | None = None
) -> Profile:
    """Parse TOML text and validate it."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(source, "", f"not valid TOML: {exc}") from None
    profile = profile_from_dict(data, source)
    profile._base_dir = base_dir or Path.cwd()
    for i, m in enumerate(profile.measurements):
        try:
            m.load_file(profile._base_dir)
        except ValueError as exc:
            raise ProfileError(source, f"measurements[{i}].file", str(exc)) from None
    for i, e in enumerate(profile.mel):
        try:
            e.load_file(profile._base_dir)
        except ValueError as exc:
            raise ProfileError(source, f"mel[{i}].file", str(exc)) from None
    profile._source = source
    if profile.slots:
        profile.identity()  # load the slot files now: a bad slot fails the profile load
    return profile


def list_profiles() -> list[tuple[str, str, bool]]:
    """(name, description or the error, valid) of every shipped profile."""
    out = []
    for path in sorted(PROFILES_DIR.glob("*.toml")):
        try:
            prof = load_profile(path)
            out.append((path.stem, prof.device.description, True))
        except ProfileError as exc:
            out.append((path.stem, f"INVALID: {exc}", False))
    return out
