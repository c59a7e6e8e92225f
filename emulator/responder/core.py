"""The sans-I/O responder core: ``Responder.handle(request) -> response``.

Request families live in their own modules (``version.py``, ``capabilities.py``,
...) and register a handler with :func:`handler`.  The core does what is common
to every request (DSP0274 "Generic SPDM message format" and "Ordering of
messages"): header length, version byte, unknown codes, capability gating,
the connection-state order, and ERROR construction from :class:`SpdmErrorResponse`.

The core never does I/O, never reads the clock and never calls ``os.urandom``:
randomness and time come in through ``rng`` and ``clock``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any

from emulator.codec.constants import ErrorCode, RequestCode, RequesterCap, ResponderCap, code_name
from emulator.codec.messages import HEADER_SIZE, build_error
from emulator.device.model import Device
from emulator.device.random import RandomSource

log = logging.getLogger("emulator.responder")


class ConnectionState(IntEnum):
    """Connection state, in the order DSP0274 requires (libspdm's connection_state)."""

    NOT_STARTED = 0
    AFTER_VERSION = 1
    AFTER_CAPABILITIES = 2
    NEGOTIATED = 3
    AFTER_DIGESTS = 4
    AFTER_CERTIFICATE = 5
    AUTHENTICATED = 6


class SessionRule(Enum):
    """Where a request may be sent (DSP0274 table "SPDM request codes", session column)."""

    OUTSIDE_ONLY = "outside"  # e.g. GET_VERSION, KEY_EXCHANGE
    EITHER = "either"  # e.g. GET_MEASUREMENTS
    INSIDE_ONLY = "inside"  # e.g. HEARTBEAT, KEY_UPDATE, END_SESSION


class SpdmErrorResponse(Exception):
    """Raised by a handler to answer with ERROR(code, data[, extended data]).

    ``reason`` is for the log only (the wire carries just the code and data).
    """

    def __init__(
        self, code: ErrorCode, reason: str = "", data: int = 0, extended: bytes = b""
    ) -> None:
        super().__init__(f"{code.name}: {reason}" if reason else code.name)
        self.code = code
        self.reason = reason
        self.data = data
        self.extended = extended


def invalid(reason: str) -> SpdmErrorResponse:
    """ERROR(InvalidRequest) with a log reason."""
    return SpdmErrorResponse(ErrorCode.InvalidRequest, reason)


def unexpected(reason: str) -> SpdmErrorResponse:
    """ERROR(UnexpectedRequest) with a log reason."""
    return SpdmErrorResponse(ErrorCode.UnexpectedRequest, reason)


@dataclass(frozen=True, slots=True)
class Request:
    """A request as the handlers see it: the raw bytes and the parsed header."""

    raw: bytes
    version: int
    code: int
    param1: int
    param2: int
    session_id: int | None = None

    @property
    def in_session(self) -> bool:
        return self.session_id is not None


HandlerFn = Callable[["Responder", Request], bytes]


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """How the core gates one request code before its handler runs."""

    code: RequestCode
    fn: HandlerFn
    min_version: int = 0x10
    #: the responder must advertise one of these capability bits (0: none needed)
    capability: int = 0
    session: SessionRule = SessionRule.EITHER
    #: the requester must have advertised this GET_CAPABILITIES flag too (0: none needed)
    peer_capability: int = 0


#: request code -> handler, filled by the family modules at import time
HANDLERS: dict[int, HandlerSpec] = {}


def handler(
    code: RequestCode,
    *,
    min_version: int = 0x10,
    capability: int = 0,
    session: SessionRule = SessionRule.EITHER,
    peer_capability: int = 0,
) -> Callable[[HandlerFn], HandlerFn]:
    """Register ``fn`` as the handler of ``code`` (one module per request family).

    ``capability``: the device must advertise one of these bits; ``peer_capability``:
    the requester must have set this flag (e.g. KEY_EX_CAP for KEY_EXCHANGE); otherwise
    ERROR(UnsupportedRequest) with the request code, before the handler runs.
    """

    def deco(fn: HandlerFn) -> HandlerFn:
        HANDLERS[code] = HandlerSpec(code, fn, min_version, capability, session, peer_capability)
        return fn

    return deco


@dataclass(slots=True)
class PeerCapabilities:
    """What the requester said in GET_CAPABILITIES."""

    version: int
    ct_exponent: int = 0
    flags: int = 0
    data_transfer_size: int = 0
    max_spdm_msg_size: int = 0


@dataclass(slots=True)
class NegotiatedAlgorithms:
    """The selections sent in ALGORITHMS (one bit each, 0 when not negotiated)."""

    measurement_spec: int = 0
    other_params: int = 0
    measurement_hash: int = 0
    base_asym: int = 0
    base_hash: int = 0
    mel_spec: int = 0
    dhe: int = 0
    aead: int = 0
    req_base_asym: int = 0
    key_schedule: int = 0


@dataclass(slots=True)
class Transcripts:
    """Connection transcripts (DSP0274 "Transcript and transcript hash calculation").

    ``a`` is VCA (GET_VERSION .. ALGORITHMS); ``b`` GET_DIGESTS/GET_CERTIFICATE;
    ``c`` CHALLENGE/CHALLENGE_AUTH.  Measurement (L1/L2) and session (TH)
    transcripts belong to their families.
    """

    a: bytearray = field(default_factory=bytearray)
    b: bytearray = field(default_factory=bytearray)
    c: bytearray = field(default_factory=bytearray)

    def reset(self) -> None:
        self.a.clear()
        self.b.clear()
        self.c.clear()


#: reset hooks run on GET_VERSION / reset(): families clear their own state there
ResetHook = Callable[["Responder"], None]
RESET_HOOKS: list[ResetHook] = []

#: observers run after every request with (responder, request, session_id, response):
#: families whose state spans requests react here (e.g. L1/L2 is reset by any other
#: request, libspdm_reset_message_buffer_via_request_code)
RequestObserver = Callable[["Responder", bytes, "int | None", bytes], None]
REQUEST_OBSERVERS: list[RequestObserver] = []

#: gates run before dispatch with (responder, request, session_id): a gate refuses a
#: request by raising SpdmErrorResponse, and the ERROR is answered without running a
#: handler or the observers (e.g. a chunked transfer in progress refuses other requests,
#: as libspdm_build_response does)
RequestGate = Callable[["Responder", bytes, "int | None"], None]
REQUEST_GATES: list[RequestGate] = []

#: response filters run after the observers with (responder, request, session_id,
#: response) and return the response to send (e.g. a response too large for the
#: requester becomes ERROR(LargeResponse) and is delivered by CHUNK_GET); transcripts
#: and observers have seen the real response
ResponseFilter = Callable[["Responder", bytes, "int | None", bytes], bytes]
RESPONSE_FILTERS: list[ResponseFilter] = []


class Responder:
    """One connection's SPDM responder state machine (sans-I/O).

    ``handle(request, session_id)`` takes the bytes of one SPDM request (already
    decrypted when it arrived in a session) and returns the bytes of the
    response.  It never raises for bad input: every problem is an ERROR message.
    """

    def __init__(
        self,
        device: Device,
        *,
        rng: RandomSource | None = None,
        clock: Callable[[], float] | None = None,
        connection_number: int = 0,
    ) -> None:
        self.device = device
        self.rng: RandomSource = rng or device.random_source(f"conn-{connection_number}")
        self.clock: Callable[[], float] = clock or time.monotonic
        self.connection_number = connection_number
        self.state = ConnectionState.NOT_STARTED
        self.version = 0
        self.peer: PeerCapabilities | None = None
        self.algorithms = NegotiatedAlgorithms()
        self.transcripts = Transcripts()
        #: per-family state, keyed by family name (each family owns its entry)
        self.family: dict[str, Any] = {}
        #: the last error reason (for logs / telemetry)
        self.last_error: str = ""

    # ---- public API ------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything negotiated (GET_VERSION, DSP0274 1.2.1 margin 185)."""
        self.state = ConnectionState.NOT_STARTED
        self.version = 0
        self.peer = None
        self.algorithms = NegotiatedAlgorithms()
        self.transcripts.reset()
        for hook in RESET_HOOKS:
            hook(self)
        self.family.clear()

    def handle(self, request: bytes, session_id: int | None = None) -> bytes:
        """Answer one request; an ERROR response for anything wrong with it."""
        self.last_error = ""
        try:
            for gate in REQUEST_GATES:
                gate(self, request, session_id)
        except SpdmErrorResponse as err:
            return self._error_for(request, err)
        try:
            response = self._dispatch(request, session_id)
        except SpdmErrorResponse as err:
            response = self._error_for(request, err)
        for observer in REQUEST_OBSERVERS:
            observer(self, request, session_id, response)
        for response_filter in RESPONSE_FILTERS:
            response = response_filter(self, request, session_id, response)
        return response

    def _error_for(self, request: bytes, err: SpdmErrorResponse) -> bytes:
        """The ERROR answering ``request`` for ``err`` (and its log line)."""
        self.last_error = err.reason or err.code.name
        log.debug(
            "ERROR %s for %s: %s",
            err.code.name,
            code_name(request[1]) if len(request) > 1 else "short request",
            err.reason,
        )
        return self.error(err.code, err.data, err.extended)

    def error(self, code: ErrorCode | int, data: int = 0, extended: bytes = b"") -> bytes:
        """An ERROR in the connection's version (1.0 before negotiation, as libspdm)."""
        return build_error(self.version or 0x10, code, data, extended)

    def has_cap(self, cap: ResponderCap) -> bool:
        return self.device.supports(cap)

    def peer_has(self, flag: int) -> bool:
        return self.peer is not None and bool(self.peer.flags & flag)

    # ---- dispatch -------------------------------------------------------------------

    def _dispatch(self, raw: bytes, session_id: int | None) -> bytes:
        if len(raw) < HEADER_SIZE:
            raise invalid(f"{len(raw)}-byte request is shorter than the 4-byte header")
        version, code, p1, p2 = raw[0], raw[1], raw[2], raw[3]
        spec = HANDLERS.get(code)
        if spec is None:
            raise SpdmErrorResponse(
                ErrorCode.UnsupportedRequest, f"unknown request code 0x{code:02X}", data=code
            )
        req = Request(raw, version, code, p1, p2, session_id)
        if code == RequestCode.GET_VERSION or code == RequestCode.GET_CAPABILITIES:
            # these two check their own version byte and state
            return spec.fn(self, req)
        if self.state < ConnectionState.AFTER_CAPABILITIES:
            if self.state == ConnectionState.NOT_STARTED:
                raise unexpected(f"{code_name(code)} before GET_VERSION")
            raise unexpected(f"{code_name(code)} before GET_CAPABILITIES")
        if version != self.version:
            raise SpdmErrorResponse(
                ErrorCode.VersionMismatch,
                f"version byte 0x{version:02X}, negotiated 0x{self.version:02X}",
            )
        if self.version < spec.min_version:
            raise SpdmErrorResponse(
                ErrorCode.UnsupportedRequest,
                f"{code_name(code)} does not exist in SPDM "
                f"{self.version >> 4}.{self.version & 0xF}",
                data=code,
            )
        if spec.capability and not self.device.capabilities & spec.capability:
            raise SpdmErrorResponse(
                ErrorCode.UnsupportedRequest,
                f"{code_name(code)}: the device does not advertise the capability",
                data=code,
            )
        if spec.session is SessionRule.OUTSIDE_ONLY and session_id is not None:
            raise unexpected(f"{code_name(code)} is not allowed inside a session")
        if spec.session is SessionRule.INSIDE_ONLY and session_id is None:
            if self.version >= 0x12:
                raise SpdmErrorResponse(
                    ErrorCode.SessionRequired, f"{code_name(code)} needs a session"
                )
            raise unexpected(f"{code_name(code)} needs a session")
        if spec.peer_capability and not self.peer_has(spec.peer_capability):
            flag = RequesterCap(spec.peer_capability).name
            raise SpdmErrorResponse(
                ErrorCode.UnsupportedRequest,
                f"{code_name(code)}: the requester did not set {flag}",
                data=code,
            )
        return spec.fn(self, req)
