"""Runtime session settings of a device, built from a profile's ``[sessions]`` section.

Loaded once per device (files read, PSKs decoded, roots parsed) so the request path never
touches the file system.  Problems are reported as :class:`~emulator.errors.ProfileError`
naming the profile, the field and the problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from emulator.codec.session import MutAuthRequested
from emulator.errors import ProfileError
from emulator.x509.chain import split_der_chain

if TYPE_CHECKING:
    from emulator.profiles import Profile

#: DSP0277 versions (u16 VersionNumber) this emulator implements.
SUPPORTED_SECURED_VERSIONS = (0x1000, 0x1100, 0x1200, 0x1300)
#: Profile ``sessions.mut_auth`` names -> KEY_EXCHANGE_RSP MutAuthRequested.
MUT_AUTH_MODES: dict[str, int] = {
    "none": 0,
    "requested": int(MutAuthRequested.REQUESTED),
    "encap": int(MutAuthRequested.WITH_ENCAP_REQUEST),
    "get_digests": int(MutAuthRequested.WITH_GET_DIGESTS),
}
#: libspdm's sample PSK (spdm-emu ``LIBSPDM_TEST_PSK_HINT_STRING`` / ``_DATA_STRING``, NUL
#: included): what spdm-emu's requester uses by default.
LIBSPDM_TEST_PSK_HINT = b"TestPskHint\x00"
LIBSPDM_TEST_PSK = b"TestPskData\x00"


def secured_version_from_text(text: str) -> int:
    """``"1.2"`` -> 0x1200 (a DSP0277 VersionNumber: major, minor, update 0, alpha 0)."""
    major, _, minor = text.strip().partition(".")
    return ((int(major) << 4) | int(minor or "0")) << 8


@dataclass(frozen=True, slots=True)
class PskKey:
    """One pre-shared key and the PSKHint that selects it (empty hint: no hint sent)."""

    hint: bytes
    key: bytes


@dataclass(frozen=True)
class SessionSettings:
    """What the session handlers need from the profile."""

    max_sessions: int = 4
    #: KEY_EXCHANGE_RSP / PSK_EXCHANGE_RSP HeartbeatPeriod (seconds; 0 = no heartbeat)
    heartbeat_period: int = 0
    #: DSP0277 versions offered, as u16 VersionNumber values (0x1200 = 1.2)
    secured_versions: tuple[int, ...] = SUPPORTED_SECURED_VERSIONS
    psks: tuple[PskKey, ...] = ()
    #: ResponderContext length of PSK_EXCHANGE_RSP with PSK_CAP_WITH_CONTEXT
    psk_context_length: int = 64
    #: MutAuthRequested asked for in KEY_EXCHANGE_RSP (0: none)
    mut_auth: int = 0
    mut_auth_mandatory: bool = False
    #: the requester slot asked for (ReqSlotIDParam / encapsulated GET_CERTIFICATE)
    req_slot_id: int = 0
    requester_roots: tuple[x509.Certificate, ...] = field(default=(), repr=False)
    #: provisioned requester chain (DER, root first) for MutAuthRequested without encapsulation
    requester_chain: tuple[bytes, ...] = field(default=(), repr=False)
    #: a secured record for an unknown (or expired) session: "drop" (libspdm) or "error"
    unknown_session: str = "drop"
    #: sessions whose TerminationPolicy bit is 0 end on a runtime update of the device
    terminate_on_update: bool = True

    def psk_for_hint(self, hint: bytes) -> bytes | None:
        """The PSK that ``hint`` selects, None when no configured hint matches."""
        for entry in self.psks:
            if entry.hint == hint:
                return entry.key
        return None

    @classmethod
    def from_profile(cls, profile: Profile) -> SessionSettings:
        sec = profile.sessions
        source = profile.source
        base = profile.base_dir
        psks = [PskKey(hint=entry.hint_bytes(), key=entry.key_bytes()) for entry in sec.psk]
        roots: list[x509.Certificate] = []
        for i, name in enumerate(sec.requester_roots):
            roots.extend(_load_certs(base, name, source, f"sessions.requester_roots[{i}]"))
        chain: tuple[bytes, ...] = ()
        if sec.requester_chain:
            certs = _load_certs(base, sec.requester_chain, source, "sessions.requester_chain")
            chain = tuple(c.public_bytes(serialization.Encoding.DER) for c in certs)
        versions = tuple(
            sorted({secured_version_from_text(t) for t in sec.secured_message_versions})
        )
        return cls(
            max_sessions=sec.max_sessions,
            heartbeat_period=sec.heartbeat_period,
            secured_versions=versions,
            psks=tuple(psks),
            psk_context_length=sec.psk_context_length,
            mut_auth=MUT_AUTH_MODES[sec.mut_auth],
            mut_auth_mandatory=sec.mut_auth_mandatory,
            req_slot_id=sec.req_slot_id,
            requester_roots=tuple(roots),
            requester_chain=chain,
            unknown_session=sec.unknown_session,
            terminate_on_update=sec.terminate_on_update,
        )


def _load_certs(base: Path, name: str, source: str, field_name: str) -> list[x509.Certificate]:
    """Certificates from a DER (one or concatenated) or PEM file, relative to the profile."""
    path = Path(name)
    if not path.is_absolute():
        path = base / path
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProfileError(source, field_name, f"cannot read {path}: {exc.strerror}") from None
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return list(x509.load_pem_x509_certificates(data))
        return [x509.load_der_x509_certificate(d) for d in split_der_chain(data)]
    except Exception as exc:  # a malformed file: report it, whatever the parser raised
        raise ProfileError(
            source, field_name, f"{path} holds no readable certificate ({exc})"
        ) from None
