"""Human-readable exchange traces and pcap captures.

Two independent outputs, both fed by a running :class:`~emulator.app.Emulator`:

* :class:`Tracer` is an exchange observer (``ExchangeEvent`` -> text lines).  It decodes
  the connection-phase messages field by field (DSP0274 10.3-10.5: GET_VERSION/VERSION,
  GET_CAPABILITIES/CAPABILITIES, NEGOTIATE_ALGORITHMS/ALGORITHMS), ERROR (10.17, code
  name, error data, ResponseNotReady data and the responder's reason) and the
  vendor-defined protocols by name (PCI-SIG IDE_KM and TDISP, CXL IDE_KM and TSP: message
  names and their key fields, never key bytes or nonces), and PLDM messages in MCTP
  sessions; any other message is shown as name, size and hex.
* :class:`PcapRecorder` writes the transport messages of each exchange in the pcap format
  DMTF ``spdm_dump`` reads (``spdm-dump/spdm_dump/spdm_dump_pcap.c``): classic pcap,
  little-endian, microsecond timestamps, snap length 0x10000, link type
  ``LINKTYPE_MCTP`` (291) or ``LINKTYPE_PCI_DOE`` (292) from libspdm's
  ``industry_standard/link_type_ex.h``.  A PCI DOE packet is the whole data object
  (8-byte DOE header first); an MCTP packet is a 4-byte MCTP transport header (DSP0236
  8.1) followed by the MCTP message (message type byte, then the SPDM message or
  secured record), as spdm-emu's ``--pcap`` writes them.  Storage (DSP0286) and TCP
  (DSP0287) captures, which spdm_dump does not read, use link types from tcpdump.org's
  private range: 147 (LINKTYPE_USER0: direction byte, QEMU's storage header, data) and
  148 (LINKTYPE_USER1: each DSP0287 message as on the wire); their bindings'
  ``pcap_packet`` documents the layout.

:func:`attach_tracing` wires both into an emulator (what ``serve --trace/--pcap`` do).
"""

from __future__ import annotations

import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntFlag
from typing import TYPE_CHECKING, BinaryIO, TextIO

from emulator.codec.constants import (
    REQUESTER_CAPS_BY_VERSION,
    RESPONDER_CAPS_BY_VERSION,
    AeadSuite,
    AlgType,
    BaseAsymAlgo,
    BaseHashAlgo,
    DheGroup,
    ErrorCode,
    KemAlgo,
    KeySchedule,
    MeasurementHashAlgo,
    MeasurementSpec,
    MelSpec,
    OtherParams,
    PqcAsymAlgo,
    RequestCode,
    RequesterCap,
    ResponderCap,
    ResponderExtCap,
    ResponseCode,
    code_name,
)
from emulator.codec.cxl import CXL_VENDOR_ID_BYTES, TspErrorCode, TspOpcode
from emulator.codec.endpoint_info import GetEndpointInfoRequest
from emulator.codec.events import (
    parse_send_event,
    parse_subscribe_event_types,
    parse_supported_event_types,
)
from emulator.codec.mel import parse_get_mel, parse_mel_response
from emulator.codec.messages import (
    AlgorithmsMsg,
    AlgStruct,
    CapabilitiesMsg,
    NegotiateAlgorithmsMsg,
    ResponseNotReadyData,
    Version,
)
from emulator.codec.pldm import CompletionCode, PldmHeader, command_name
from emulator.codec.provisioning import (
    GetCsrRequest,
    KeyPairInfoResponse,
    SetCertificateRequest,
    SetKeyPairInfoRequest,
    parse_csr_response,
)
from emulator.codec.tdisp import (
    Capabilities,
    LockFlags,
    LockParams,
    MmioRange,
    TdispErrorCode,
    TdiState,
    function_id_text,
    message_name,
)
from emulator.codec.vendor import PCISIG_VENDOR_ID_BYTES, StandardId, parse_vendor
from emulator.errors import CodecError, EmulatorError, TransportError
from emulator.events import ExchangeEvent
from emulator.transport import TransportBinding, bindings_with_pcap, get_binding
from emulator.transport.doe import LINKTYPE_PCI_DOE
from emulator.transport.mctp import LINKTYPE_MCTP

if TYPE_CHECKING:
    from emulator.app import Emulator
    from emulator.connection import Reply, SpdmConnection

# ---------------------------------------------------------------------------------------
# Text decoding of one SPDM message
# ---------------------------------------------------------------------------------------

#: Bytes of a message shown in hex by default before the dump is cut ("...").
DEFAULT_HEX_LIMIT = 64


def version_text(version: int) -> str:
    """``0x12`` -> ``"1.2"`` (the SPDMVersion byte of a header)."""
    return f"{version >> 4}.{version & 0xF}"


def version_entry_text(entry: int) -> str:
    """A VERSION entry (Major:4 Minor:4 Update:4 Alpha:4) as ``1.2`` or ``1.2.1.0``."""
    major, minor, update, alpha = entry >> 12, (entry >> 8) & 0xF, (entry >> 4) & 0xF, entry & 0xF
    if update or alpha:
        return f"{major}.{minor}.{update}.{alpha}"
    return f"{major}.{minor}"


def flags_text(enum: type[IntFlag], value: int, defined: int = -1) -> str:
    """Set bits as ``NAME|NAME``, unknown bits (or bits outside ``defined``, the mask of
    what exists in the message's version) as hex; ``0`` when none is set."""
    if not value:
        return "0"
    names: list[str] = []
    known = 0
    for member in enum:
        bit = int(member)
        if not bit & defined:
            continue
        known |= bit
        if value & bit:
            names.append(member.name or hex(bit))
    rest = value & ~known
    if rest:
        names.append(f"0x{rest:X}")
    return "|".join(names)


def hex_text(data: bytes, limit: int | None = DEFAULT_HEX_LIMIT) -> str:
    """Space-separated hex, cut after ``limit`` bytes with ``...`` (None: no limit)."""
    if limit is not None and len(data) > limit:
        return data[:limit].hex(" ") + " ..."
    return data.hex(" ")


_STRUCT_FIELDS: dict[int, tuple[str, type[IntFlag]]] = {
    AlgType.DHE: ("DHE", DheGroup),
    AlgType.AEAD: ("AEAD", AeadSuite),
    AlgType.REQ_BASE_ASYM_ALG: ("ReqBaseAsym", BaseAsymAlgo),
    AlgType.KEY_SCHEDULE: ("KeySchedule", KeySchedule),
    AlgType.REQ_PQC_ASYM_ALG: ("ReqPqcAsym", PqcAsymAlgo),
    AlgType.KEM: ("KEM", KemAlgo),
}


def _alg_structs_text(structs: list[AlgStruct]) -> list[str]:
    out = []
    for s in structs:
        name, enum = _STRUCT_FIELDS.get(s.alg_type, (f"AlgType{s.alg_type}", IntFlag))
        text = f"{name}={flags_text(enum, s.supported)}"
        if s.external:
            text += f"+{len(s.external)}ext"
        out.append(text)
    return out


def _decode_version(msg: bytes) -> list[str]:
    v = Version.parse(msg)
    entries = ",".join(version_entry_text(e) for e in v.entries)
    return [f"Versions={entries or '-'}"]


def _decode_capabilities(msg: bytes, request: bool) -> list[str]:
    c = CapabilitiesMsg.decode(msg)
    fields: list[str] = []
    if c.param1:
        fields.append(f"Param1=0x{c.param1:02X}")
    if request and c.version == 0x10:
        return fields
    enum: type[IntFlag] = RequesterCap if request else ResponderCap
    by_version = REQUESTER_CAPS_BY_VERSION if request else RESPONDER_CAPS_BY_VERSION
    defined = by_version.get(c.version, -1)
    fields += [f"CTExponent={c.ct_exponent}", f"Flags={flags_text(enum, c.flags, defined)}"]
    if c.version >= 0x12:
        fields += [
            f"DataTransferSize={c.data_transfer_size}",
            f"MaxSPDMmsgSize={c.max_spdm_msg_size}",
        ]
    if c.version >= 0x14 and c.ext_flags:
        fields.append(f"ExtFlags={flags_text(ResponderExtCap, c.ext_flags)}")
    return fields


def _decode_negotiate_algorithms(msg: bytes) -> list[str]:
    m, _ = NegotiateAlgorithmsMsg.decode(msg)
    fields = [
        f"MeasurementSpec={flags_text(MeasurementSpec, m.measurement_spec)}",
        f"BaseAsym={flags_text(BaseAsymAlgo, m.base_asym)}",
        f"BaseHash={flags_text(BaseHashAlgo, m.base_hash)}",
    ]
    if m.version >= 0x14:
        fields.insert(2, f"PqcAsym={flags_text(PqcAsymAlgo, m.pqc_asym)}")
    if m.version >= 0x12:
        fields.insert(1, f"OtherParams={flags_text(OtherParams, m.other_params)}")
    if m.version >= 0x13:
        fields.append(f"MELSpec={flags_text(MelSpec, m.mel_spec)}")
    if m.ext_asym or m.ext_hash:
        fields.append(f"ExtAsym={len(m.ext_asym)} ExtHash={len(m.ext_hash)}")
    return fields + _alg_structs_text(m.alg_structs)


def _decode_algorithms(msg: bytes) -> list[str]:
    m, _ = AlgorithmsMsg.decode(msg)
    fields = [
        f"MeasurementSpec={flags_text(MeasurementSpec, m.measurement_spec_sel)}",
        f"MeasurementHash={flags_text(MeasurementHashAlgo, m.measurement_hash_algo)}",
        f"BaseAsym={flags_text(BaseAsymAlgo, m.base_asym_sel)}",
        f"BaseHash={flags_text(BaseHashAlgo, m.base_hash_sel)}",
    ]
    if m.version >= 0x14:
        fields.insert(3, f"PqcAsym={flags_text(PqcAsymAlgo, m.pqc_asym_sel)}")
    if m.version >= 0x12:
        fields.insert(1, f"OtherParams={flags_text(OtherParams, m.other_params_sel)}")
    if m.version >= 0x13:
        fields.append(f"MELSpec={flags_text(MelSpec, m.mel_spec_sel)}")
    if m.ext_asym_sel or m.ext_hash_sel:
        fields.append(f"ExtAsym={len(m.ext_asym_sel)} ExtHash={len(m.ext_hash_sel)}")
    return fields + _alg_structs_text(m.alg_structs)


def _decode_error(msg: bytes) -> list[str]:
    code, data = msg[2], msg[3]
    try:
        name = ErrorCode(code).name
    except ValueError:
        name = "Reserved"
    fields = [f"{name}(0x{code:02X})", f"ErrorData=0x{data:02X}"]
    ext = msg[4:]
    if code == ErrorCode.ResponseNotReady and len(ext) >= 4:
        r = ResponseNotReadyData.parse(ext[:4])
        fields += [
            f"RDTExponent={r.rdt_exponent}",
            f"RequestCode={code_name(r.request_code)}",
            f"Token={r.token}",
            f"RDTM={r.rdtm}",
        ]
    elif ext:
        fields.append(f"ExtendedData={hex_text(ext, 32)}")
    return fields


def _decode_get_csr(msg: bytes) -> list[str]:
    m, _size = GetCsrRequest.decode(msg)
    fields = [f"KeyPairID={m.key_pair_id}"] if m.version >= 0x13 else []
    if m.version >= 0x13:
        fields.append(
            f"CSRCertModel={m.cert_model} CSRTrackingTag={m.tracking_tag} "
            f"Overwrite={int(m.overwrite)}"
        )
    return [
        *fields,
        f"RequesterInfoLength={len(m.requester_info)}",
        f"OpaqueDataLength={len(m.opaque_data)}",
    ]


def _decode_csr(msg: bytes) -> list[str]:
    return [f"CSRLength={len(parse_csr_response(msg))}"]


def _decode_set_certificate(msg: bytes) -> list[str]:
    m = SetCertificateRequest.decode(msg)
    fields = [f"SlotID={m.slot_id}"]
    if m.version >= 0x13:
        fields += [
            f"SetCertModel={m.cert_model}",
            f"Erase={int(m.erase)}",
            f"KeyPairID={m.key_pair_id}",
        ]
    if len(m.cert_chain) >= 2:
        fields.append(f"CertChainLength={int.from_bytes(m.cert_chain[:2], 'little')}")
    return fields


def _decode_key_pair_info(msg: bytes) -> list[str]:
    m, _size = KeyPairInfoResponse.decode(msg)
    return [
        f"TotalKeyPairs={m.total_key_pairs}",
        f"KeyPairID={m.key_pair_id}",
        f"Capabilities=0x{m.capabilities:04X}",
        f"KeyUsageCapabilities=0x{m.key_usage_capabilities:04X}",
        f"CurrentKeyUsage=0x{m.current_key_usage:04X}",
        f"AsymAlgoCapabilities=0x{m.asym_algo_capabilities:X}",
        f"CurrentAsymAlgo=0x{m.current_asym_algo:X}",
        f"AssocCertSlotMask=0x{m.assoc_cert_slot_mask:02X}",
        f"PublicKeyInfoLen={len(m.public_key_info)}",
    ]


def _decode_set_key_pair_info(msg: bytes) -> list[str]:
    m = SetKeyPairInfoRequest.decode(msg)
    fields = [f"Operation={m.operation}", f"KeyPairID={m.key_pair_id}"]
    if m.full:
        fields += [
            f"DesiredKeyUsage=0x{m.desired_key_usage:04X}",
            f"DesiredAsymAlgo=0x{m.desired_asym_algo:X}",
            f"DesiredAssocCertSlotMask=0x{m.desired_assoc_cert_slot_mask:02X}",
        ]
    return fields


def _decode_get_mel(msg: bytes) -> list[str]:
    offset, length = parse_get_mel(msg)
    return [f"Offset={offset}", f"Length={length}"]


def _decode_mel(msg: bytes) -> list[str]:
    portion, remainder = parse_mel_response(msg)
    return [f"PortionLength={len(portion)}", f"RemainderLength={remainder}"]


def _decode_get_endpoint_info(msg: bytes) -> list[str]:
    m, _size = GetEndpointInfoRequest.decode(msg)
    return [f"SubCode={m.sub_code}", f"SlotID={m.slot_id}", f"SignatureRequested={int(m.signed)}"]


def _decode_endpoint_info(msg: bytes) -> list[str]:
    unsigned_len = int.from_bytes(msg[8:12], "little") if len(msg) >= 12 else -1
    signed = not (0 <= len(msg) - 12 - unsigned_len < 4)
    off = 8 + (32 if signed else 0)
    if len(msg) < off + 4:
        raise CodecError("ENDPOINT_INFO: truncated")
    length = int.from_bytes(msg[off : off + 4], "little")
    fields = [f"SlotID={msg[3] & 0x0F}", f"EPInfoLength={length}"]
    if signed:
        fields.append(f"SignatureLength={len(msg) - off - 4 - length}")
    return fields


def _decode_supported_event_types(msg: bytes) -> list[str]:
    groups = parse_supported_event_types(msg)
    return [f"EventGroupCount={len(groups)}"] + [
        f"Group(ID={g.registry_id},Ver={g.version},Types={','.join(map(str, g.event_types))})"
        for g in groups
    ]


def _decode_subscribe_event_types(msg: bytes) -> list[str]:
    groups = parse_subscribe_event_types(msg)
    return [f"SubscribeEventGroupCount={len(groups)}"] + [
        f"Group(ID={g.registry_id},Attributes=0x{g.attributes:X},"
        f"Types={','.join(map(str, g.event_types))})"
        for g in groups
    ]


def _decode_send_event(msg: bytes) -> list[str]:
    events = parse_send_event(msg)
    return [f"EventCount={len(events)}"] + [
        f"Event(ID={e.instance_id},Type={e.event_type},Detail={e.detail.hex()})" for e in events
    ]


# ---- vendor-defined messages: PCI-SIG IDE_KM / TDISP, CXL IDE_KM / TSP ------------------


def _ide_kss_text(kss: int) -> str:
    """KeySubStream as ``K0|TX|NPR``."""
    sub = {0: "PR", 1: "NPR", 2: "CPL", 8: "CXL"}.get(kss >> 4, f"0x{kss >> 4:X}")
    return f"K{kss & 1}|{'TX' if kss & 2 else 'RX'}|{sub}"


def _ide_km_fields(body: bytes, cxl: bool) -> list[str]:
    """An IDE_KM (or CXL_IDE_KM) message from its ObjectID (key bytes never shown)."""
    names = {
        0: "QUERY",
        1: "QUERY_RESP",
        2: "KEY_PROG",
        3: "KP_ACK",
        4: "K_SET_GO",
        5: "K_SET_STOP",
        6: "K_GOSTOP_ACK",
        7: "GET_KEY",
        8: "GET_KEY_ACK",
    }
    if not body:
        return ["(no ObjectID)"]
    obj = body[0]
    out = [names.get(obj, f"ObjectID=0x{obj:02X}") if cxl or obj < 7 else f"ObjectID=0x{obj:02X}"]
    if obj in (0, 1) and len(body) >= 3:
        out.append(f"PortIndex={body[2]}")
        if obj == 1 and len(body) >= 7:
            out += [f"Bus={body[4]}", f"DevFunc=0x{body[3]:02X}", f"MaxPortIndex={body[6]}"]
            if cxl and len(body) >= 8:
                out.append(f"Caps=0x{body[7]:02X}")
    elif obj in range(2, 9) and len(body) >= 7:
        out += [f"StreamID={body[3]}", f"KeySubStream={_ide_kss_text(body[5])}", f"Port={body[6]}"]
        if obj == 3:
            out.append(f"Status={body[4]}")
    return out


def _tdisp_fields(msg: bytes) -> list[str]:
    """A TDISP message (PCIe 6.1 11.3) by name, with its key fields (nonces elided)."""
    if len(msg) < 16:
        return [f"TDISP malformed ({len(msg)} bytes)"]
    code = msg[1]
    fid = int.from_bytes(msg[4:8], "little")
    out = [f"TDISP {message_name(code)} {version_text(msg[0])}", f"TDI={function_id_text(fid)}"]
    p = msg[16:]
    if code == 0x01 and p:
        out.append("Versions=" + ",".join(version_text(v) for v in p[1 : 1 + p[0]]))
    elif code == 0x02 and len(p) == 28:
        caps = Capabilities.decode(p)
        reqs = [message_name(c) for c in range(0x81, 0x8C) if caps.supports(c)]
        flags = flags_text(LockFlags, caps.lock_interface_flags_supported)
        out += [f"LockFlagsSupported={flags}", f"Requests={len(reqs)}"]
    elif code == 0x83 and len(p) == 20:
        lp = LockParams.decode(p)
        out += [
            f"Flags={flags_text(LockFlags, lp.flags)}",
            f"StreamID={lp.default_stream_id}",
            f"MMIO_REPORTING_OFFSET=0x{lp.mmio_reporting_offset & (2**64 - 1):X}",
        ]
    elif code in (0x03, 0x86) and len(p) == 32:
        out.append("START_INTERFACE_NONCE=(32 bytes)")
    elif code == 0x84 and len(p) == 4:
        out += [
            f"Offset={int.from_bytes(p[:2], 'little')}",
            f"Length={int.from_bytes(p[2:], 'little')}",
        ]
    elif code == 0x04 and len(p) >= 4:
        out += [
            f"Portion={int.from_bytes(p[:2], 'little')}",
            f"Remainder={int.from_bytes(p[2:4], 'little')}",
        ]
    elif code == 0x05 and len(p) == 1:
        try:
            out.append(f"TDI_STATE={TdiState(p[0]).name}")
        except ValueError:
            out.append(f"TDI_STATE=0x{p[0]:02X}")
    elif code in (0x88, 0x89) and len(p) == 1:
        out.append(f"P2P_STREAM_ID={p[0]}")
    elif code == 0x8A and len(p) == 16:
        r = MmioRange.decode(p)
        out += [f"FirstPage=0x{r.first_page:X}", f"Pages={r.pages}", f"RangeID={r.range_id}"]
        out.append(f"IS_NON_TEE_MEM={int(bool(r.attributes & 4))}")
    elif code == 0x7F and len(p) >= 8:
        err = int.from_bytes(p[:4], "little")
        try:
            name = TdispErrorCode(err).name
        except ValueError:
            name = "Reserved"
        out += [f"{name}(0x{err:04X})", f"ErrorData=0x{int.from_bytes(p[4:8], 'little'):X}"]
    return out


def _tsp_fields(msg: bytes) -> list[str]:
    if len(msg) < 2:
        return ["TSP malformed"]
    try:
        name = TspOpcode(msg[1]).name
    except ValueError:
        name = f"opcode 0x{msg[1]:02X}"
    out = [f"TSP {name} {version_text(msg[0])}"]
    if msg[1] == TspOpcode.ERROR_RSP and len(msg) >= 12:
        code = int.from_bytes(msg[4:8], "little")
        try:
            out.append(TspErrorCode(code).name)
        except ValueError:
            out.append(f"ErrorCode=0x{code:X}")
    return out


def _decode_vendor(msg: bytes) -> list[str]:
    body, _size = parse_vendor(msg, large_allowed=msg[0] >= 0x14)  # 1.4 LargeReq/LargeResp
    try:
        registry = StandardId(body.standard_id).name
    except ValueError:
        registry = f"0x{body.standard_id:04X}"
    out = [f"StandardID={registry}", f"VendorID={body.vendor_id.hex() or '-'}"]
    if body.large:
        out.append(f"LargePayloadLength={len(body.payload)}")
    payload = body.payload
    pcisig = body.standard_id == StandardId.PCISIG
    if pcisig and body.vendor_id == PCISIG_VENDOR_ID_BYTES and payload:
        if payload[0] == 0x00:
            return [*out, "IDE_KM", *_ide_km_fields(payload[1:], cxl=False)]
        if payload[0] == 0x01:
            return [*out, *_tdisp_fields(payload[1:])]
    if pcisig and body.vendor_id == CXL_VENDOR_ID_BYTES and payload:
        if payload[0] == 0x00:
            return [*out, "CXL_IDE_KM", *_ide_km_fields(payload[1:], cxl=True)]
        if payload[0] == 0x01:
            return [*out, *_tsp_fields(payload[1:])]
    return [*out, f"Payload={hex_text(payload, 32)}"]


def describe_pldm(msg: bytes) -> str:
    """A PLDM message (DSP0240) as ``PLDM GetTID request Instance=0`` and its data."""
    try:
        head = PldmHeader.decode(msg)
    except CodecError:
        return f"PLDM malformed size={len(msg)} hex: {hex_text(msg)}"
    kind = "request" if head.request else "response"
    out = [f"PLDM {command_name(head.pldm_type, head.command)} {kind}"]
    out.append(f"Instance={head.instance_id}")
    data = msg[3:]
    if not head.request and data:
        try:
            out.append(CompletionCode(data[0]).name)
        except ValueError:
            out.append(f"CompletionCode=0x{data[0]:02X}")
        data = data[1:]
    if data:
        out.append(f"Data={hex_text(data, 32)}")
    return " ".join(out)


_DECODERS: dict[int, Callable[[bytes], list[str]]] = {
    RequestCode.GET_VERSION: lambda m: [],
    ResponseCode.VERSION: _decode_version,
    RequestCode.GET_CAPABILITIES: lambda m: _decode_capabilities(m, True),
    ResponseCode.CAPABILITIES: lambda m: _decode_capabilities(m, False),
    RequestCode.NEGOTIATE_ALGORITHMS: _decode_negotiate_algorithms,
    ResponseCode.ALGORITHMS: _decode_algorithms,
    ResponseCode.ERROR: _decode_error,
    RequestCode.GET_CSR: _decode_get_csr,
    ResponseCode.CSR: _decode_csr,
    RequestCode.SET_CERTIFICATE: _decode_set_certificate,
    ResponseCode.SET_CERTIFICATE_RSP: lambda m: [f"SlotID={m[2] & 0x0F}"],
    RequestCode.GET_KEY_PAIR_INFO: lambda m: [f"KeyPairID={m[4]}"] if len(m) > 4 else [],
    ResponseCode.KEY_PAIR_INFO: _decode_key_pair_info,
    RequestCode.SET_KEY_PAIR_INFO: _decode_set_key_pair_info,
    RequestCode.GET_MEASUREMENT_EXTENSION_LOG: _decode_get_mel,
    ResponseCode.MEASUREMENT_EXTENSION_LOG: _decode_mel,
    RequestCode.GET_ENDPOINT_INFO: _decode_get_endpoint_info,
    ResponseCode.ENDPOINT_INFO: _decode_endpoint_info,
    ResponseCode.SUPPORTED_EVENT_TYPES: _decode_supported_event_types,
    RequestCode.SUBSCRIBE_EVENT_TYPES: _decode_subscribe_event_types,
    RequestCode.SEND_EVENT: _decode_send_event,
    RequestCode.VENDOR_DEFINED_REQUEST: _decode_vendor,
    ResponseCode.VENDOR_DEFINED_RESPONSE: _decode_vendor,
}


def describe_message(msg: bytes, hex_limit: int | None = DEFAULT_HEX_LIMIT) -> str:
    """One SPDM message as ``NAME V.v field=value ...`` (DSP0274 field names).

    Messages without a decoder here are shown as their header parameters, size and hex.
    Never raises: a message too short or malformed for its layout is shown in hex with
    the reason.
    """
    if len(msg) < 2:
        return f"MALFORMED size={len(msg)} hex: {hex_text(msg, hex_limit)}"
    name = code_name(msg[1])
    head = f"{name} {version_text(msg[0])}"
    decoder = _DECODERS.get(msg[1])
    if decoder is not None and len(msg) >= 4:
        try:
            fields = decoder(msg)
        except (CodecError, ValueError, KeyError, IndexError) as exc:
            return f"{head} malformed ({exc}) size={len(msg)} hex: {hex_text(msg, hex_limit)}"
        return " ".join([head, *fields])
    params = f" Param1=0x{msg[2]:02X} Param2=0x{msg[3]:02X}" if len(msg) >= 4 else ""
    return f"{head}{params} size={len(msg)} hex: {hex_text(msg, hex_limit)}"


# ---------------------------------------------------------------------------------------
# Tracer: exchange events -> text lines
# ---------------------------------------------------------------------------------------


class Tracer:
    """Exchange observer writing one line per message (append to ``Emulator.observers``).

    ``conn 1  -> GET_CAPABILITIES 1.2 CTExponent=12 Flags=CERT_CAP|CHAL_CAP ...`` for a
    request, ``conn 1  <- CAPABILITIES ...`` for its response; messages inside a session
    carry ``session 0x...``; an ERROR line ends with the responder's reason; applied faults
    follow on their own ``!!`` line.  ``clock`` (seconds, e.g. ``time.monotonic``) adds a
    ``+S.SSSSSS`` prefix relative to the first event.  Lines are flushed at once.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        hex_limit: int | None = DEFAULT_HEX_LIMIT,
        clock: Callable[[], float] | None = None,
        close_stream: bool = False,
    ) -> None:
        self.stream = stream
        self.hex_limit = hex_limit
        self.clock = clock
        self._close_stream = close_stream
        self._t0: float | None = None

    def __call__(self, event: ExchangeEvent) -> None:
        self.stream.write("".join(line + "\n" for line in self.lines(event)))
        self.stream.flush()

    def lines(self, event: ExchangeEvent) -> list[str]:
        """The text lines for one exchange (no trailing newlines)."""
        prefix = ""
        if self.clock is not None:
            now = self.clock()
            if self._t0 is None:
                self._t0 = now
            prefix = f"+{now - self._t0:.6f} "
        where = f"conn {event.connection} "
        if event.session_id is not None:
            where += f"session 0x{event.session_id:08X} "
        elif event.secured:
            where += "secured "
        describe = describe_message if event.protocol == "spdm" else self._other
        out = [f"{prefix}{where} -> {describe(event.request, self.hex_limit)}"]
        if event.response is None:
            rsp = "(no response)"
        else:
            rsp = describe(event.response, self.hex_limit)
            if event.error is not None and event.reason:
                rsp += f" reason: {event.reason}"
        out.append(f"{prefix}{where} <- {rsp}")
        out.extend(f"{prefix}{where} !! fault: {fault}" for fault in event.faults)
        return out

    @staticmethod
    def _other(msg: bytes, hex_limit: int | None = DEFAULT_HEX_LIMIT) -> str:
        """A message of another application protocol in a session (PLDM over MCTP)."""
        return describe_pldm(msg)

    def close(self) -> None:
        """Flush, and close the stream if this tracer opened it."""
        self.stream.flush()
        if self._close_stream:
            self.stream.close()


# ---------------------------------------------------------------------------------------
# pcap
# ---------------------------------------------------------------------------------------

#: Classic pcap, microsecond timestamps, version 2.4 (libspdm ``industry_standard/pcap.h``).
PCAP_MAGIC = 0xA1B2C3D4
PCAP_VERSION = (2, 4)
#: spdm_dump refuses a snap length of 0 or above 0x10000 and records longer than it.
PCAP_SNAPLEN = 0x10000

_GLOBAL_HEADER = struct.Struct("<IHHiIII")
_RECORD_HEADER = struct.Struct("<IIII")


def _binding(binding: str | TransportBinding) -> TransportBinding:
    return get_binding(binding) if isinstance(binding, str) else binding


def link_type_for(binding: str | TransportBinding) -> int:
    """The pcap link type of a transport binding, or of the one of that name ("doe" -> 292,
    "mctp" -> 291): the binding's ``pcap_link_type``."""
    found = _binding(binding)
    if found.pcap_link_type is None:
        *others, last = bindings_with_pcap()
        usable = f"{', '.join(others)} or {last}" if others else last
        raise TransportError(
            f"pcap: transport {found.name!r} has no pcap link type (spdm_dump reads the doe "
            f"and mctp ones); use {usable}"
        )
    return found.pcap_link_type


def pcap_global_header(link_type: int, snaplen: int = PCAP_SNAPLEN) -> bytes:
    """The 24-byte pcap file header (little-endian, microsecond resolution)."""
    return _GLOBAL_HEADER.pack(PCAP_MAGIC, *PCAP_VERSION, 0, 0, snaplen, link_type)


def pcap_record(data: bytes, timestamp_ns: int, snaplen: int = PCAP_SNAPLEN) -> bytes:
    """One pcap record: 16-byte header (ts_sec, ts_usec, incl_len, orig_len) + data."""
    sec, rest_ns = divmod(timestamp_ns, 1_000_000_000)
    included = data[:snaplen]
    return _RECORD_HEADER.pack(sec, rest_ns // 1000, len(included), len(data)) + included


def pcap_packet(binding: str | TransportBinding, payload: bytes, from_requester: bool) -> bytes:
    """A platform-socket transport payload as a packet of :func:`link_type_for`'s type,
    as the binding frames it (``pcap_packet``).

    DOE: the data object as is.  MCTP: the MCTP transport header, then the payload
    (message type byte + message).
    """
    found = _binding(binding)
    link_type_for(found)  # the same error as link_type_for for a binding without one
    return found.pcap_packet(payload, from_requester)


class PcapWriter:
    """Append packets to one pcap stream (the global header is written at once)."""

    def __init__(
        self,
        stream: BinaryIO,
        link_type: int,
        *,
        snaplen: int = PCAP_SNAPLEN,
        close_stream: bool = False,
    ) -> None:
        self.stream = stream
        self.snaplen = snaplen
        self._close_stream = close_stream
        self.packets = 0
        stream.write(pcap_global_header(link_type, snaplen))
        stream.flush()

    def write(self, packet: bytes, timestamp_ns: int) -> None:
        """Append one record and flush (a capture stays readable while it grows)."""
        self.stream.write(pcap_record(packet, timestamp_ns, self.snaplen))
        self.stream.flush()
        self.packets += 1

    def close(self) -> None:
        if self._close_stream:
            self.stream.close()
        else:
            self.stream.flush()


@dataclass(frozen=True, slots=True)
class PcapRecord:
    """One record read back by :func:`read_pcap`."""

    ts_sec: int
    ts_usec: int
    orig_len: int
    data: bytes


def read_pcap(data: bytes) -> tuple[int, list[PcapRecord]]:
    """Parse a little-endian microsecond pcap file: (link type, records).

    Raises :class:`~emulator.errors.CodecError` naming what is wrong.
    """
    if len(data) < _GLOBAL_HEADER.size:
        raise CodecError(f"pcap: {len(data)} bytes, shorter than the 24-byte global header")
    magic, major, minor, _zone, _sigfigs, snaplen, link_type = _GLOBAL_HEADER.unpack_from(data)
    if magic != PCAP_MAGIC:
        raise CodecError(f"pcap: magic 0x{magic:08X}, expected 0x{PCAP_MAGIC:08X}")
    if (major, minor) != PCAP_VERSION:
        raise CodecError(f"pcap: version {major}.{minor}, expected 2.4")
    records: list[PcapRecord] = []
    off = _GLOBAL_HEADER.size
    while off < len(data):
        if off + _RECORD_HEADER.size > len(data):
            raise CodecError(f"pcap: truncated record header at offset {off}")
        sec, usec, incl, orig = _RECORD_HEADER.unpack_from(data, off)
        off += _RECORD_HEADER.size
        if incl > snaplen or off + incl > len(data):
            raise CodecError(f"pcap: record at offset {off - 16}: incl_len {incl} is invalid")
        records.append(PcapRecord(sec, usec, orig, data[off : off + incl]))
        off += incl
    return link_type, records


def _open_binary(path: str) -> BinaryIO:
    try:
        return open(path, "wb")
    except OSError as exc:
        raise EmulatorError(f"pcap: cannot open {path}: {exc.strerror or exc}") from None


class PcapRecorder:
    """Transport messages of every connection -> pcap file(s).

    ``path`` may contain ``{conn}``: one file per connection (``cap-{conn}.pcap`` ->
    ``cap-1.pcap``...), which is what spdm_dump wants, since it follows one SPDM
    connection per file.  Without it every connection goes to the same file.
    ``clock_ns`` gives the wall-clock time of each record.
    """

    def __init__(
        self,
        path: str,
        binding: str | TransportBinding,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        opener: Callable[[str], BinaryIO] = _open_binary,
    ) -> None:
        self.path = path
        self.binding = _binding(binding)
        self.binding_name = self.binding.name
        self.link_type = link_type_for(self.binding)
        self.clock_ns = clock_ns
        self._opener = opener
        self.per_connection = "{conn}" in path
        self._writers: dict[int, PcapWriter] = {}
        if not self.per_connection:  # open now, so a bad path fails at start-up
            self._writers[0] = PcapWriter(opener(path), self.link_type, close_stream=True)

    def _writer(self, connection: int) -> PcapWriter:
        key = connection if self.per_connection else 0
        writer = self._writers.get(key)
        if writer is None:
            name = self.path.replace("{conn}", str(connection))
            writer = PcapWriter(self._opener(name), self.link_type, close_stream=True)
            self._writers[key] = writer
        return writer

    def record(
        self,
        connection: int,
        payload: bytes,
        from_requester: bool,
        timestamp_ns: int | None = None,
    ) -> None:
        """Append one transport payload (as sent on the platform socket)."""
        ts = self.clock_ns() if timestamp_ns is None else timestamp_ns
        packet = self.binding.pcap_packet(payload, from_requester)
        self._writer(connection).write(packet, ts)

    def record_exchange(self, connection: int, request: bytes, reply: Reply) -> None:
        """Record a request payload and what the server will really send back."""
        now = self.clock_ns()
        self.record(connection, request, True, now)
        sent = list(reply.payloads)
        if reply.partial is not None:  # only part of the first frame (12-byte header) goes out
            sent = [sent[0][: max(reply.partial - 12, 0)]] if sent else []
        ts = now + int(reply.delay * 1e9)
        for payload in sent:
            if payload:
                self.record(connection, payload, False, ts)

    def close_connection(self, connection: int) -> None:
        """A connection ended: close its own file (per-connection mode only)."""
        if self.per_connection:
            writer = self._writers.pop(connection, None)
            if writer is not None:
                writer.close()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def attach(self, conn: SpdmConnection) -> None:
        """Record every exchange of ``conn`` (wraps its ``receive`` and ``close``)."""
        receive, close = conn.receive, conn.close
        number = conn.number

        def traced_receive(payload: bytes) -> Reply:
            reply = receive(payload)
            self.record_exchange(number, payload, reply)
            return reply

        def traced_close() -> None:
            close()
            self.close_connection(number)

        conn.receive = traced_receive  # type: ignore[method-assign]
        conn.close = traced_close  # type: ignore[method-assign]


# ---------------------------------------------------------------------------------------
# Wiring into an Emulator
# ---------------------------------------------------------------------------------------


def open_trace_stream(target: str) -> tuple[TextIO, bool]:
    """``-`` -> (stderr, False); a path -> (the file opened for appending, True)."""
    if target == "-":
        return sys.stderr, False
    try:
        return open(target, "a", encoding="utf-8"), True
    except OSError as exc:
        raise EmulatorError(f"trace: cannot open {target}: {exc.strerror or exc}") from None


def attach_tracing(
    emulator: Emulator,
    trace: str | None,
    pcap: str | None,
    *,
    hex_limit: int | None = DEFAULT_HEX_LIMIT,
) -> Callable[[], None]:
    """Trace (``-`` = stderr, or a file) and/or capture (pcap path) every exchange.

    Returns the cleanup function, which detaches both and closes their files.  Raises
    :class:`~emulator.errors.EmulatorError` when a file cannot be opened or the
    transport has no pcap link type.
    """
    tracer: Tracer | None = None
    recorder: PcapRecorder | None = None
    if pcap is not None:
        recorder = PcapRecorder(pcap, emulator.binding)
        emulator.on_connection.append(recorder.attach)
    if trace is not None:
        stream, owned = open_trace_stream(trace)
        tracer = Tracer(stream, hex_limit=hex_limit, clock=time.monotonic, close_stream=owned)
        emulator.observers.append(tracer)

    def cleanup() -> None:
        if tracer is not None:
            if tracer in emulator.observers:
                emulator.observers.remove(tracer)
            tracer.close()
        if recorder is not None:
            if recorder.attach in emulator.on_connection:
                emulator.on_connection.remove(recorder.attach)
            recorder.close()

    return cleanup


__all__ = [
    "LINKTYPE_MCTP",
    "LINKTYPE_PCI_DOE",
    "PcapRecord",
    "PcapRecorder",
    "PcapWriter",
    "Tracer",
    "attach_tracing",
    "describe_message",
    "link_type_for",
    "pcap_global_header",
    "pcap_packet",
    "pcap_record",
    "read_pcap",
]
