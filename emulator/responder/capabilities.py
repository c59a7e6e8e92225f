"""GET_CAPABILITIES / CAPABILITIES (DSP0274 10.4).

The request's version byte selects the SPDM version of the connection (it must
be one the device listed in VERSION).  Request fields are checked as DSP0274
and libspdm do: CTExponent at most 31, DataTransferSize at least 42 and at
most MaxSPDMmsgSize (equal unless CHUNK_CAP), and the flag combinations the
spec forbids (reserved PSK_CAP values, KEY_EX without MAC/ENCRYPT, ...).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from emulator.codec.constants import (
    MIN_DATA_TRANSFER_SIZE_V12,
    REQUESTER_CAPS_BY_VERSION,
    RESPONDER_CAPS_BY_VERSION,
    ErrorCode,
    RequesterCap,
    ResponseCode,
)
from emulator.codec.messages import CapabilitiesMsg, get_capabilities_size
from emulator.errors import CodecError
from emulator.responder.base import (
    ConnectionState,
    Request,
    SpdmErrorResponse,
    invalid,
    unexpected,
)
from emulator.responder.context import PeerCapabilities

if TYPE_CHECKING:
    from emulator.responder.core import Responder

MAX_CT_EXPONENT = 31
#: RequesterCap as plain ints (IntFlag arithmetic costs ~1 us per operation)
_REQ: dict[str, int] = {name: int(m) for name, m in RequesterCap.__members__.items()}
_CHUNK_CAP = int(RequesterCap.CHUNK_CAP)


@functools.lru_cache(maxsize=256)
def capabilities_response(
    version: int, ct_exponent: int, flags: int, data_transfer_size: int, max_spdm_msg_size: int
) -> bytes:
    """CAPABILITIES for the device's values (profile-determined: built once per device and
    version, not per request)."""
    return CapabilitiesMsg(
        version=version,
        code=ResponseCode.CAPABILITIES,
        ct_exponent=ct_exponent,
        flags=flags,
        data_transfer_size=data_transfer_size,
        max_spdm_msg_size=max_spdm_msg_size,
    ).encode()


def requester_flags_problem(flags: int, version: int) -> str | None:
    """Why a requester's flag set is illegal (DSP0274 table of requester flags), or None."""
    if version < 0x11:
        return None
    R = _REQ
    cert = bool(flags & R["CERT_CAP"])
    chal = bool(flags & R["CHAL_CAP"])
    encrypt = bool(flags & R["ENCRYPT_CAP"])
    mac = bool(flags & R["MAC_CAP"])
    mut = bool(flags & R["MUT_AUTH_CAP"])
    key_ex = bool(flags & R["KEY_EX_CAP"])
    psk = (flags >> 10) & 3
    encap = bool(flags & R["ENCAP_CAP"])
    hbeat = bool(flags & R["HBEAT_CAP"])
    key_upd = bool(flags & R["KEY_UPD_CAP"])
    clear = bool(flags & R["HANDSHAKE_IN_THE_CLEAR_CAP"])
    pub_key_id = bool(flags & R["PUB_KEY_ID_CAP"])
    ep_info = (flags >> 22) & 3
    event = bool(flags & R["EVENT_CAP"])
    multi_key = (flags >> 26) & 3
    if psk in (2, 3):
        return f"PSK_CAP={psk:02b}b is reserved for a requester"
    if key_ex or psk:
        if not (mac or encrypt):
            return "KEY_EX_CAP/PSK_CAP without MAC_CAP or ENCRYPT_CAP"
    else:
        if mac or encrypt or clear or hbeat or key_upd:
            return "MAC/ENCRYPT/HANDSHAKE_IN_THE_CLEAR/HBEAT/KEY_UPD_CAP without KEY_EX or PSK"
        if version >= 0x13 and event:
            return "EVENT_CAP without KEY_EX_CAP or PSK_CAP"
    if not key_ex and psk == 1 and clear:
        return "HANDSHAKE_IN_THE_CLEAR_CAP with PSK only"
    if cert or pub_key_id:
        if cert and pub_key_id:
            return "CERT_CAP and PUB_KEY_ID_CAP together"
        if not chal and not key_ex and (version < 0x13 or ep_info in (0, 1)):
            return "CERT_CAP/PUB_KEY_ID_CAP with nothing that uses the key"
    else:
        if chal or mut:
            return "CHAL_CAP/MUT_AUTH_CAP without CERT_CAP or PUB_KEY_ID_CAP"
        if version >= 0x13 and ep_info == 2:
            return "signed EP_INFO_CAP without CERT_CAP or PUB_KEY_ID_CAP"
    if mut and not key_ex and not chal:
        return "MUT_AUTH_CAP without KEY_EX_CAP or CHAL_CAP"
    if version == 0x11 and mut and not encap:
        return "MUT_AUTH_CAP without ENCAP_CAP (SPDM 1.1)"
    if version >= 0x13:
        if ep_info == 3 or multi_key == 3:
            return "EP_INFO_CAP or MULTI_KEY_CAP reserved value 11b"
        if multi_key and (pub_key_id or not cert):
            return "MULTI_KEY_CAP needs CERT_CAP and not PUB_KEY_ID_CAP"
    return None


def get_capabilities(r: Responder, req: Request) -> bytes:
    """Record the requester's capabilities and answer with the device's."""
    if req.in_session:
        raise unexpected("GET_CAPABILITIES inside a session")
    if r.state != ConnectionState.AFTER_VERSION:
        raise unexpected(f"GET_CAPABILITIES in state {r.state.name}")
    if req.version not in r.device.versions:
        raise SpdmErrorResponse(
            ErrorCode.VersionMismatch,
            f"GET_CAPABILITIES version 0x{req.version:02X} is not one the device offered",
        )
    version = req.version
    # from here on ERRORs use the requested version (libspdm sets it on the version check)
    r.version = version
    size = get_capabilities_size(version)
    if len(req.raw) < size:
        raise invalid(f"GET_CAPABILITIES {version >> 4}.{version & 0xF} needs {size} bytes")
    try:
        msg = CapabilitiesMsg.decode(req.raw[:size])
    except CodecError as exc:
        raise invalid(str(exc)) from None
    problem = requester_flags_problem(msg.flags, version)
    if problem:
        raise invalid(problem)
    # reserved bits are ignored (and not remembered), as libspdm masks them per version
    flags = msg.flags & REQUESTER_CAPS_BY_VERSION[version] if version >= 0x11 else 0
    if version >= 0x11 and msg.ct_exponent > MAX_CT_EXPONENT:
        raise invalid(f"CTExponent {msg.ct_exponent} is over {MAX_CT_EXPONENT}")
    if version >= 0x12:
        if msg.data_transfer_size < MIN_DATA_TRANSFER_SIZE_V12:
            raise invalid(
                f"DataTransferSize {msg.data_transfer_size} is under "
                f"MinDataTransferSize {MIN_DATA_TRANSFER_SIZE_V12}"
            )
        if msg.data_transfer_size > msg.max_spdm_msg_size:
            raise invalid("DataTransferSize is larger than MaxSPDMmsgSize")
        if not flags & _CHUNK_CAP and msg.data_transfer_size != msg.max_spdm_msg_size:
            raise invalid("DataTransferSize != MaxSPDMmsgSize without CHUNK_CAP")
    r.peer = PeerCapabilities(
        version=version,
        ct_exponent=msg.ct_exponent,
        flags=flags,
        data_transfer_size=msg.data_transfer_size,
        max_spdm_msg_size=msg.max_spdm_msg_size,
    )
    dev = r.device
    response = capabilities_response(
        version,
        dev.ct_exponent,
        int(dev.capabilities) & RESPONDER_CAPS_BY_VERSION[version],
        dev.data_transfer_size,
        dev.max_spdm_msg_size,
    )
    a = r.ctx.transcripts.a
    a += req.raw[:size]
    a += response
    r.ctx.state = ConnectionState.AFTER_CAPABILITIES
    return response
