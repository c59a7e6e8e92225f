"""The project's own SPDM requester (test side, ``probe`` command, CI users).

It verifies what it receives with its own code path: layouts are parsed with
the codec, but every check (lengths, selections, transcripts, signatures) is
the requester's.  Request families add their flows as functions over
:class:`Requester` in sibling modules.

A :class:`Channel` carries one SPDM message each way: a socket (``SocketClient``),
QEMU's DOE mailbox, or a responder in-process (:class:`LoopbackChannel`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import emulator.requester.chunking as chunking
from emulator.codec.constants import (
    AeadSuite,
    AlgType,
    BaseAsymAlgo,
    BaseHashAlgo,
    DheGroup,
    ErrorCode,
    KemAlgo,
    KeySchedule,
    MeasurementSpec,
    OtherParams,
    PqcAsymAlgo,
    RequestCode,
    RequesterCap,
    ResponseCode,
    SpdmVersion,
    code_name,
    signing_algo,
)
from emulator.codec.messages import (
    AlgorithmsMsg,
    AlgStruct,
    CapabilitiesMsg,
    NegotiateAlgorithmsMsg,
    Version,
    build_header,
    get_capabilities_size,
)
from emulator.errors import CodecError, RequesterError
from emulator.requester.errors import NotReady, SpdmErrorReply
from emulator.transport.base import TransportMessage

log = logging.getLogger("emulator.requester")

if TYPE_CHECKING:
    from emulator.requester.chunking import ChunkingState
    from emulator.requester.identity import IdentityFlow
    from emulator.requester.measurements import MeasurementTranscript
    from emulator.requester.session import RequesterSession


def _is_error(response: bytes, code: ErrorCode) -> bool:
    return len(response) >= 4 and response[1] == ResponseCode.ERROR and response[2] == code


class Channel(Protocol):
    """Carries one SPDM (or secured) message to the responder and returns its answer."""

    async def exchange(self, message: bytes, secured: bool = False) -> TransportMessage: ...


class LoopbackChannel:
    """A channel straight into a sans-I/O responder (no socket, no transport)."""

    def __init__(self, responder: Any) -> None:
        self.responder = responder

    async def exchange(self, message: bytes, secured: bool = False) -> TransportMessage:
        if secured:
            raise RequesterError("LoopbackChannel carries plain SPDM messages only")
        return TransportMessage(self.responder.handle(message))


ALL_ASYM = int(BaseAsymAlgo(0xDFF))
ALL_HASH = int(BaseHashAlgo(0x3F))
ALL_DHE = int(DheGroup(0x3F))
ALL_AEAD = int(AeadSuite(0x07))
#: SPDM 1.4: what ``cryptography`` implements (no SLH-DSA, no ML-KEM-512)
ALL_PQC_ASYM = int(PqcAsymAlgo.ML_DSA_44 | PqcAsymAlgo.ML_DSA_65 | PqcAsymAlgo.ML_DSA_87)
ALL_KEM = int(KemAlgo.ML_KEM_768 | KemAlgo.ML_KEM_1024)
DEFAULT_REQUESTER_CAPS = int(
    RequesterCap.CERT_CAP
    | RequesterCap.CHAL_CAP
    | RequesterCap.ENCRYPT_CAP
    | RequesterCap.MAC_CAP
    | RequesterCap.KEY_EX_CAP
    | RequesterCap.PSK_CAP
    | RequesterCap.ENCAP_CAP
    | RequesterCap.HBEAT_CAP
    | RequesterCap.KEY_UPD_CAP
)


@dataclass
class RequesterConfig:
    """What the requester asks for (every field has a permissive default)."""

    version: int | None = None  # None: highest common
    ct_exponent: int = 0
    flags: int = DEFAULT_REQUESTER_CAPS
    data_transfer_size: int = 0x1200
    max_spdm_msg_size: int = 0x1200
    measurement_spec: int = int(MeasurementSpec.DMTF)
    other_params: int = int(OtherParams.OPAQUE_DATA_FMT_1)
    base_asym: int = ALL_ASYM
    base_hash: int = ALL_HASH
    dhe: int = ALL_DHE
    aead: int = ALL_AEAD
    req_base_asym: int = ALL_ASYM
    key_schedule: int = int(KeySchedule.SPDM)
    mel_spec: int = 0
    #: SPDM 1.3: ask for a multi-key connection with the responder's keys (MULTI_KEY_CONN
    #: in NEGOTIATE_ALGORITHMS) when it offers MULTI_KEY_CAP_NEG (always with _ONLY)
    multi_key_conn: bool = False
    #: SPDM 1.4 PqcAsymAlgo, ReqPqcAsymAlg and KEM offers (not sent below 1.4)
    pqc_asym: int = ALL_PQC_ASYM
    req_pqc_asym: int = ALL_PQC_ASYM
    kem: int = ALL_KEM
    #: ERROR(Busy): send the request again up to this many times, ``busy_delay`` seconds
    #: apart (libspdm's LIBSPDM_DATA_REQUEST_RETRY_TIMES / _RETRY_DELAY_TIME); 0: raise
    busy_retries: int = 0
    busy_delay: float = 0.1
    #: ERROR(ResponseNotReady): wait RDT and send RESPOND_IF_READY once, as libspdm's
    #: requester does (``libspdm_handle_response_not_ready``); False: raise
    respond_if_ready: bool = False


@dataclass
class Negotiated:
    """What VCA established, as the requester checked it."""

    versions: list[int] = field(default_factory=list)
    version: int = 0
    rsp_ct_exponent: int = 0
    rsp_flags: int = 0
    rsp_data_transfer_size: int = 0
    rsp_max_spdm_msg_size: int = 0
    algorithms: AlgorithmsMsg | None = None
    #: 1.3 multi-key connection for the responder's keys (what NEGOTIATE_ALGORITHMS asked)
    multi_key_rsp: bool = False

    @property
    def multi_key_req(self) -> bool:
        """1.3 multi-key connection for the requester's keys (ALGORITHMS selection)."""
        return bool(
            self.version >= 0x13
            and self.algorithms is not None
            and self.algorithms.other_params_sel & OtherParams.MULTI_KEY_CONN
        )

    @property
    def base_hash(self) -> int:
        return self.algorithms.base_hash_sel if self.algorithms else 0

    @property
    def base_asym(self) -> int:
        return self.algorithms.base_asym_sel if self.algorithms else 0

    @property
    def pqc_asym(self) -> int:
        """PqcAsymSel (SPDM 1.4; 0 before)."""
        return self.algorithms.pqc_asym_sel if self.algorithms else 0

    @property
    def asym(self) -> int:
        """The responder's signature algorithm: BaseAsymSel, or PqcAsymSel << 32."""
        return signing_algo(self.base_asym, self.pqc_asym)

    @property
    def req_asym(self) -> int:
        """The requester's signature algorithm: ReqBaseAsymAlg, or ReqPqcAsymAlg << 32."""
        return signing_algo(
            self.struct(AlgType.REQ_BASE_ASYM_ALG), self.struct(AlgType.REQ_PQC_ASYM_ALG)
        )

    @property
    def kem(self) -> int:
        """The KEM AlgStruct selection (SPDM 1.4; 0 when DHE or nothing was selected)."""
        return self.struct(AlgType.KEM)

    @property
    def measurement_hash(self) -> int:
        return self.algorithms.measurement_hash_algo if self.algorithms else 0

    def struct(self, alg_type: AlgType) -> int:
        return self.algorithms.struct_value(alg_type) if self.algorithms else 0


def _one_bit_or_zero(value: int) -> bool:
    return value & (value - 1) == 0


class Requester:
    """An SPDM requester over a :class:`Channel` (DSP0274 requester side)."""

    def __init__(self, channel: Channel, config: RequesterConfig | None = None) -> None:
        self.channel = channel
        self.config = config or RequesterConfig()
        self.neg = Negotiated()
        #: message A (VCA) exactly as exchanged, for transcript checks
        self.message_a = bytearray()
        #: message D: in a 1.3 multi-key connection (MULTI_KEY_CONN_RSP) the DIGESTS
        #: response that directly follows VCA, which the KEY_EXCHANGE transcript (TH)
        #: carries after message A (DSP0274 1.3 "Transcript and transcript hash calculation")
        self.message_d = b""
        self._d_window = False
        #: CHUNK_SEND handles and transfers (emulator.requester.chunking), made on first use
        self.chunking_state: ChunkingState | None = None
        #: GET_DIGESTS / GET_CERTIFICATE / CHALLENGE state (emulator.requester.identity)
        self.identity_flow: IdentityFlow | None = None
        #: this requester's L1/L2 (emulator.requester.measurements), made on first use
        self.measurement_transcript: MeasurementTranscript | None = None
        #: every (request, response) pair, for traces and tests
        self.log: list[tuple[bytes, bytes]] = []
        #: open secured sessions by SessionID (registered by emulator.requester.session)
        self.sessions: dict[int, RequesterSession] = {}
        #: one line per Busy retry and RESPOND_IF_READY (``probe`` shows them)
        self.retries: list[str] = []
        #: how waits are made (tests replace it)
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    @property
    def version(self) -> int:
        return self.neg.version

    async def send(self, request: bytes, *, session_id: int | None = None) -> bytes:
        """Send one request and return the response bytes (ERROR raises SpdmErrorReply).

        With SPDM 1.2+ and CHUNK_CAP on both sides, large messages are chunked
        transparently (:mod:`emulator.requester.chunking`): a request over the
        DataTransferSizes goes by CHUNK_SEND, and an ERROR(LargeResponse) is followed by
        CHUNK_GETs; the log holds the request and the reassembled response.
        With ``session_id``, the request goes inside that secured session (one opened by
        :mod:`emulator.requester.session` on this requester), and so does the answer.
        """
        if session_id is not None:
            session = self.sessions.get(session_id)
            if session is None:
                raise RequesterError(f"no open session 0x{session_id:08X} on this requester")
            response: bytes = await chunking.session_send(session, request, allow_error=True)
            return self._received(request, response)
        busy = 0
        while True:
            response = await self._exchange_plain(request)
            if self.config.respond_if_ready and _is_error(response, ErrorCode.ResponseNotReady):
                response = await self._respond_if_ready(request, response)
            if busy < self.config.busy_retries and _is_error(response, ErrorCode.Busy):
                busy += 1
                self.log.append((request, response))  # L1/L2 and the like end on Busy
                self._note(
                    f"{code_name(request[1])}: ERROR(Busy), sent again "
                    f"({busy} of {self.config.busy_retries}) after {self.config.busy_delay:g} s"
                )
                await self.sleep(self.config.busy_delay)
                continue
            return self._received(request, response)

    async def _exchange_plain(self, request: bytes) -> bytes:
        """One request in the clear, chunked both ways when it has to be."""
        if chunking.needs_chunk_send(self, request):
            return await chunking.send_large(self, request)
        reply = await self.channel.exchange(request)
        response = reply.message
        if chunking.is_large_response(self, response):
            response = await chunking.get_large(self, response)
        return response

    async def _respond_if_ready(self, request: bytes, response: bytes) -> bytes:
        """ERROR(ResponseNotReady) -> wait RDT, RESPOND_IF_READY (DSP0274 1.3 10.17); the
        answer stands for the response to ``request`` (in the log and the transcripts).
        A second ResponseNotReady is returned as it is (libspdm: LIBSPDM_STATUS_NOT_READY_PEER)."""
        info = NotReady.parse(response)
        info.check(request[1])
        self._note(
            f"{code_name(request[1])}: ERROR(ResponseNotReady) RDTExponent {info.rdt_exponent} "
            f"(RDT {1 << info.rdt_exponent} us), RDTM {info.rdtm}, token {info.token}: "
            "RESPOND_IF_READY after RDT"
        )
        await self.sleep(info.wait_seconds)
        version = self.version or request[0]
        rif = build_header(version, RequestCode.RESPOND_IF_READY, info.request_code, info.token)
        return await self._exchange_plain(rif)

    def _note(self, line: str) -> None:
        self.retries.append(line)
        log.info("%s", line)

    async def send_large(self, request: bytes) -> bytes:
        """Send ``request`` by CHUNK_SEND (DSP0274 large request), whatever its size, and
        return the response to it (ERROR raises SpdmErrorReply)."""
        response = await chunking.send_large(self, request)
        return self._received(request, response)

    def _received(self, request: bytes, response: bytes) -> bytes:
        self.log.append((request, response))
        if self._d_window:
            self._d_window = False
            if (
                request[1] == RequestCode.GET_DIGESTS
                and len(response) >= 4
                and response[1] == ResponseCode.DIGESTS
                and self.neg.multi_key_rsp
            ):
                self.message_d = response
        if len(response) < 4:
            raise RequesterError(
                f"{code_name(request[1])}: {len(response)}-byte response is shorter than a header"
            )
        if response[1] == ResponseCode.ERROR:
            raise SpdmErrorReply(request[1], response)
        return response

    def expect(self, response: bytes, code: ResponseCode, version: int | None = None) -> None:
        """Check the response code and version byte."""
        if response[1] != code:
            raise RequesterError(f"expected {code.name}, got {code_name(response[1])}")
        want = self.version if version is None else version
        if response[0] != want:
            raise RequesterError(
                f"{code.name}: version byte 0x{response[0]:02X}, expected 0x{want:02X}"
            )

    # ---- VCA (DSP0274 10.3-10.5) -----------------------------------------------------

    async def get_version(self) -> list[int]:
        """GET_VERSION; returns the responder's versions (major<<4|minor), resets VCA."""
        self.message_a.clear()
        self.message_d = b""
        self._d_window = False
        self.neg = Negotiated()
        request = build_header(0x10, RequestCode.GET_VERSION)
        response = await self.send(request)
        self.expect(response, ResponseCode.VERSION, 0x10)
        try:
            parsed = Version.parse(response)
        except CodecError as exc:
            raise RequesterError(f"VERSION: {exc}") from None
        if parsed.entry_count == 0:
            raise RequesterError("VERSION lists no version")
        size = 6 + 2 * parsed.entry_count
        versions = sorted({(e >> 8) & 0xFF for e in parsed.entries})
        self.neg.versions = versions
        self.message_a += request + response[:size]
        return versions

    async def get_capabilities(self) -> CapabilitiesMsg:
        """GET_CAPABILITIES in the chosen version; returns the parsed CAPABILITIES."""
        cfg = self.config
        common = [v for v in self.neg.versions if v in {int(x) for x in SpdmVersion}]
        if cfg.version is not None:
            if cfg.version not in self.neg.versions:
                raise RequesterError(
                    f"responder does not offer SPDM {cfg.version >> 4}.{cfg.version & 0xF}"
                )
            version = cfg.version
        elif common:
            version = max(common)
        else:
            raise RequesterError("no common SPDM version")
        self.neg.version = version
        req = CapabilitiesMsg(
            version=version,
            code=RequestCode.GET_CAPABILITIES,
            ct_exponent=cfg.ct_exponent,
            flags=cfg.flags if version >= 0x11 else 0,
            data_transfer_size=cfg.data_transfer_size,
            max_spdm_msg_size=cfg.max_spdm_msg_size,
        ).encode()
        response = await self.send(req)
        self.expect(response, ResponseCode.CAPABILITIES)
        size = 20 if version >= 0x12 else 12
        if len(response) < size:
            raise RequesterError(f"CAPABILITIES: {len(response)} bytes, need {size}")
        caps = CapabilitiesMsg.decode(response[:size])
        if version >= 0x12 and caps.data_transfer_size < 42:
            raise RequesterError(f"CAPABILITIES: DataTransferSize {caps.data_transfer_size} < 42")
        if version >= 0x12 and caps.max_spdm_msg_size < caps.data_transfer_size:
            raise RequesterError("CAPABILITIES: MaxSPDMmsgSize < DataTransferSize")
        if (caps.flags >> 3) & 3 == 3:
            raise RequesterError("CAPABILITIES: MEAS_CAP=11b is reserved")
        self.neg.rsp_ct_exponent = caps.ct_exponent
        self.neg.rsp_flags = caps.flags
        self.neg.rsp_data_transfer_size = caps.data_transfer_size
        self.neg.rsp_max_spdm_msg_size = caps.max_spdm_msg_size
        self.message_a += req[: get_capabilities_size(version)] + response[:size]
        return caps

    def negotiate_request(self) -> bytes:
        """The NEGOTIATE_ALGORITHMS this requester sends for its config."""
        cfg = self.config
        version = self.version
        structs: list[AlgStruct] = []
        if version >= 0x11:
            for alg_type, value in (
                (AlgType.DHE, cfg.dhe),
                (AlgType.AEAD, cfg.aead),
                (AlgType.REQ_BASE_ASYM_ALG, cfg.req_base_asym),
                (AlgType.KEY_SCHEDULE, cfg.key_schedule),
                (AlgType.REQ_PQC_ASYM_ALG, cfg.req_pqc_asym if version >= 0x14 else 0),
                (AlgType.KEM, cfg.kem if version >= 0x14 else 0),
            ):
                if value:
                    structs.append(AlgStruct(alg_type, value))
        other = cfg.other_params & ~OtherParams.MULTI_KEY_CONN if version >= 0x12 else 0
        if version >= 0x13 and self._wants_multi_key():
            other |= OtherParams.MULTI_KEY_CONN
        return NegotiateAlgorithmsMsg(
            version=version,
            measurement_spec=cfg.measurement_spec,
            other_params=other,
            base_asym=cfg.base_asym,
            base_hash=cfg.base_hash,
            mel_spec=cfg.mel_spec if version >= 0x13 else 0,
            alg_structs=structs,
            pqc_asym=cfg.pqc_asym if version >= 0x14 else 0,
        ).encode()

    def _wants_multi_key(self) -> bool:
        """libspdm's rule: MULTI_KEY_CONN when the responder has MULTI_KEY_CAP_ONLY, or
        _NEG and this requester wants it."""
        rsp = (self.neg.rsp_flags >> 26) & 3
        return rsp == 1 or (rsp == 2 and self.config.multi_key_conn)

    async def negotiate_algorithms(self) -> AlgorithmsMsg:
        """NEGOTIATE_ALGORITHMS; checks that each selection is one bit we offered."""
        cfg = self.config
        request = self.negotiate_request()
        response = await self.send(request)
        self.expect(response, ResponseCode.ALGORITHMS)
        try:
            alg, size = AlgorithmsMsg.decode(response)
        except CodecError as exc:
            raise RequesterError(f"ALGORITHMS: {exc}") from None
        if alg.length != size:
            raise RequesterError(f"ALGORITHMS: Length {alg.length} but {size} bytes")
        checks = [
            ("BaseAsymSel", alg.base_asym_sel, cfg.base_asym),
            ("BaseHashSel", alg.base_hash_sel, cfg.base_hash),
            ("MeasurementSpecificationSel", alg.measurement_spec_sel, cfg.measurement_spec),
        ]
        if self.version >= 0x14:
            checks.append(("PqcAsymSel", alg.pqc_asym_sel, cfg.pqc_asym))
        if self.version >= 0x11:
            offered = {
                s.alg_type: s.supported
                for s in NegotiateAlgorithmsMsg.decode(request)[0].alg_structs
            }
            for st in alg.alg_structs:
                if st.alg_type not in offered:
                    raise RequesterError(f"ALGORITHMS: AlgType {st.alg_type} was not requested")
                checks.append((AlgType(st.alg_type).name, st.supported, offered[st.alg_type]))
        for name, value, offer in checks:
            if not _one_bit_or_zero(value):
                raise RequesterError(f"ALGORITHMS: {name} 0x{value:X} has more than one bit")
            if value & ~offer:
                raise RequesterError(f"ALGORITHMS: {name} 0x{value:X} was not offered")
        if not _one_bit_or_zero(alg.measurement_hash_algo):
            raise RequesterError("ALGORITHMS: MeasurementHashAlgo has more than one bit")
        if alg.base_hash_sel == 0:
            raise RequesterError("ALGORITHMS: no hash algorithm selected")
        if alg.base_asym_sel and alg.pqc_asym_sel:
            raise RequesterError("ALGORITHMS: both BaseAsymSel and PqcAsymSel are selected")
        if alg.struct_value(AlgType.DHE) and alg.struct_value(AlgType.KEM):
            raise RequesterError("ALGORITHMS: both a DHE group and a KEM are selected")
        if alg.struct_value(AlgType.REQ_BASE_ASYM_ALG) and alg.struct_value(
            AlgType.REQ_PQC_ASYM_ALG
        ):
            raise RequesterError("ALGORITHMS: both ReqBaseAsymAlg and ReqPqcAsymAlg are selected")
        if self.version >= 0x13:
            ours = (cfg.flags >> 26) & 3 if self.version >= 0x11 else 0
            selected = bool(alg.other_params_sel & OtherParams.MULTI_KEY_CONN)
            if selected and not ours:
                raise RequesterError("ALGORITHMS: MULTI_KEY_CONN without our MULTI_KEY_CAP")
            if ours == 1 and not selected:
                raise RequesterError("ALGORITHMS: MULTI_KEY_CAP_ONLY but no MULTI_KEY_CONN")
        self.neg.multi_key_rsp = self.version >= 0x13 and self._wants_multi_key()
        self.neg.algorithms = alg
        self.message_a += request + response[:size]
        self._d_window = True
        return alg

    async def vca(self) -> Negotiated:
        """GET_VERSION, GET_CAPABILITIES, NEGOTIATE_ALGORITHMS."""
        await self.get_version()
        await self.get_capabilities()
        await self.negotiate_algorithms()
        return self.neg
