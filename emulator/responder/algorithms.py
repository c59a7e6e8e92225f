"""NEGOTIATE_ALGORITHMS / ALGORITHMS (DSP0274 10.5).

Selection: for each field, the first algorithm in the profile's priority list
that the requester also offers.  The request is checked as DSP0274 and libspdm
do (Length equals the real size and is at most LengthMax, extended-algorithm
counts, AlgStructs in ascending AlgType order with FixedAlgCount 2 and a
non-empty AlgSupported).  When a needed algorithm has no common choice (e.g.
no common hash, or no common signature algorithm while the device signs), the
answer is ERROR(InvalidRequest) and the connection stays after CAPABILITIES.

SPDM 1.4 (libspdm ``libspdm_rsp_algorithms.c``): PqcAsymAlgo is selected beside
BaseAsymAlgo and the AlgStructs may include ReqPqcAsymAlg (AlgType 6) and KEM (AlgType 7).
Exactly one signature algorithm and at most one key exchange survive: with the profile's
``pqc_first`` (default) a selected PQC algorithm clears its classic counterpart
(PqcAsymSel clears BaseAsymSel, ReqPqcAsymAlg clears ReqBaseAsymAlg, KEM clears DHE);
without it the classic selection clears the PQC one.  Every AlgStruct of the request is
answered, a cleared one with AlgSupported 0.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from emulator.codec.constants import (
    PQC_ASYM_SHIFT,
    AlgType,
    BaseAsymAlgo,
    MeasurementSpec,
    OtherParams,
    RequesterCap,
    ResponderCap,
)
from emulator.codec.messages import (
    NEGOTIATE_ALGORITHMS_MAX_EXT,
    NEGOTIATE_ALGORITHMS_MAX_LENGTH,
    AlgorithmsMsg,
    AlgStruct,
    NegotiateAlgorithmsMsg,
)
from emulator.errors import CodecError
from emulator.responder.base import ConnectionState, Request, invalid, unexpected
from emulator.responder.context import NegotiatedAlgorithms

if TYPE_CHECKING:
    from emulator.responder.core import Responder

_STRUCT_FIELD: dict[int, str] = {
    AlgType.DHE: "dhe",
    AlgType.AEAD: "aead",
    AlgType.REQ_BASE_ASYM_ALG: "req_base_asym",
    AlgType.KEY_SCHEDULE: "key_schedule",
    AlgType.REQ_PQC_ASYM_ALG: "req_pqc_asym",
    AlgType.KEM: "kem",
}


_EDDSA = int(BaseAsymAlgo.EDDSA_ED25519 | BaseAsymAlgo.EDDSA_ED448)
# capability and parameter bits as plain ints (IntFlag arithmetic costs ~1 us per operation)
_RSP = {name: int(m) for name, m in ResponderCap.__members__.items()}
_MEAS_CAPS = _RSP["MEAS_CAP_NO_SIG"] | _RSP["MEAS_CAP_SIG"]
_SIGNING_CAPS = _RSP["CERT_CAP"] | _RSP["CHAL_CAP"] | _RSP["MEAS_CAP_SIG"]
_PSK_CAPS = _RSP["PSK_CAP"] | _RSP["PSK_CAP_WITH_CONTEXT"]
_MULTI_KEY_CAPS = _RSP["MULTI_KEY_CAP_ONLY"] | _RSP["MULTI_KEY_CAP_NEG"]
_REQ_KEY_EX = int(RequesterCap.KEY_EX_CAP)
_REQ_ENCRYPT = int(RequesterCap.ENCRYPT_CAP)
_REQ_MAC = int(RequesterCap.MAC_CAP)
_REQ_MUT_AUTH = int(RequesterCap.MUT_AUTH_CAP)
_REQ_PSK = int(RequesterCap.PSK_CAP)
_MULTI_KEY_CONN = int(OtherParams.MULTI_KEY_CONN)
_DMTF = int(MeasurementSpec.DMTF)


def select(priority: list[int], offered: int) -> int:
    """The first of ``priority`` that is in the ``offered`` bit mask (0 if none)."""
    for bit in priority:
        if bit & offered:
            return bit
    return 0


def _one_of_each(sel: NegotiatedAlgorithms, pqc_first: bool) -> None:
    """DSP0274 1.4 / libspdm: one signature algorithm per side, one key exchange."""
    pairs = (("pqc_asym", "base_asym"), ("req_pqc_asym", "req_base_asym"), ("kem", "dhe"))
    for pqc, classic in pairs:
        if pqc_first and getattr(sel, pqc):
            setattr(sel, classic, 0)
        elif not pqc_first and getattr(sel, classic):
            setattr(sel, pqc, 0)


def negotiate_algorithms(r: Responder, req: Request) -> bytes:
    """Select algorithms and answer ALGORITHMS; the VCA transcript is complete after it.

    The selection is a function of the request bytes, the negotiated version, the
    requester's flags and the device's algorithm settings (capabilities, priority lists,
    provisioned keys), so an accepted one is remembered under exactly those
    (:data:`_SELECTED`) and a requester that negotiates the same way again (every
    re-authentication) gets the same bytes without the work; refusals are worked out
    every time."""
    if r.state != ConnectionState.AFTER_CAPABILITIES:
        raise unexpected(f"NEGOTIATE_ALGORITHMS in state {r.state.name}")
    dev = r.device
    identity = dev.identity
    settings = dev.profile.algorithms
    key = (
        bytes(req.raw),
        r.version,
        int(dev.capabilities),
        r.peer.flags if r.peer else 0,
        -1 if identity.empty else identity.servable_asym(),
        settings.multi_key_conn,
        settings.pqc_first,
        _priorities_key(dev.priorities),
    )
    known = _SELECTED.get(key)
    if known is None:
        known = _select_all(r, req)
        if len(_SELECTED) >= _SELECTED_MAX:
            _SELECTED.clear()
        _SELECTED[key] = known
    size, response, sel = known
    r.algorithms = copy.copy(sel)
    a = r.ctx.transcripts.a
    a += req.raw[:size]
    a += response
    r.ctx.state = ConnectionState.NEGOTIATED
    return response


#: the accepted negotiations (see :func:`negotiate_algorithms`): key -> the request's
#: size, the ALGORITHMS bytes and the selection (copied into each connection)
_SELECTED: dict[tuple[object, ...], tuple[int, bytes, NegotiatedAlgorithms]] = {}
_SELECTED_MAX = 256
#: id(priorities) -> the dict and its value as a key (a device's priority lists are fixed
#: when it is built from its profile)
_PRIORITIES: dict[int, tuple[dict[str, list[int]], tuple[object, ...]]] = {}


def _priorities_key(priorities: dict[str, list[int]]) -> tuple[object, ...]:
    found = _PRIORITIES.get(id(priorities))
    if found is not None and found[0] is priorities:
        return found[1]
    value = tuple((name, tuple(bits)) for name, bits in sorted(priorities.items()))
    if len(_PRIORITIES) >= _SELECTED_MAX:
        _PRIORITIES.clear()
    _PRIORITIES[id(priorities)] = (priorities, value)
    return value


def _select_all(r: Responder, req: Request) -> tuple[int, bytes, NegotiatedAlgorithms]:
    """The checks and the selection of DSP0274 1.4 10.5 (module docstring): the request's
    size, ALGORITHMS and the selection; SpdmErrorResponse for a request to refuse."""
    version = r.version
    try:
        msg, size = NegotiateAlgorithmsMsg.decode(req.raw)
    except CodecError as exc:
        raise invalid(str(exc)) from None
    if version >= 0x11:
        previous = 0
        top = AlgType.KEM if version >= 0x14 else AlgType.KEY_SCHEDULE
        for i, st in enumerate(msg.alg_structs):
            if not AlgType.DHE <= st.alg_type <= top:
                raise invalid(f"AlgStruct[{i}]: AlgType {st.alg_type} is not 2..{int(top)}")
            if st.alg_type <= previous:
                raise invalid(f"AlgStruct[{i}]: AlgType {st.alg_type} out of ascending order")
            previous = st.alg_type
            if st.supported == 0:
                raise invalid(f"AlgStruct[{i}] ({AlgType(st.alg_type).name}): nothing offered")
    n_ext = len(msg.ext_asym) + len(msg.ext_hash) + sum(len(s.external) for s in msg.alg_structs)
    if n_ext > NEGOTIATE_ALGORITHMS_MAX_EXT[version]:
        raise invalid(
            f"{n_ext} extended algorithms, at most {NEGOTIATE_ALGORITHMS_MAX_EXT[version]}"
        )
    if msg.length > NEGOTIATE_ALGORITHMS_MAX_LENGTH[version]:
        raise invalid(
            f"Length {msg.length} over LengthMax {NEGOTIATE_ALGORITHMS_MAX_LENGTH[version]}"
        )
    if msg.length != size:
        raise invalid(f"Length field {msg.length} but the message is {size} bytes")

    dev = r.device
    caps = int(dev.capabilities)
    peer = r.peer.flags if r.peer else 0
    meas = bool(caps & _MEAS_CAPS)
    sel = NegotiatedAlgorithms()
    if (meas or caps & _RSP["MEL_CAP"]) and msg.measurement_spec:
        sel.measurement_spec = select(dev.priorities["measurement_spec"], msg.measurement_spec)
    if meas and msg.measurement_spec:
        sel.measurement_hash = dev.priorities["measurement_hash"][0]
        if sel.measurement_spec != _DMTF:
            raise invalid("the requester does not offer the DMTF measurement specification")
    asym_priority = dev.priorities["base_asym"]
    if not dev.identity.empty:  # only what a provisioned slot key can sign with
        servable = dev.identity.servable_asym()
        asym_priority = [bit for bit in asym_priority if bit & servable]
    if version < 0x12:
        # EdDSA signing is defined from SPDM 1.2 on (libspdm refuses it for 1.0/1.1)
        asym_priority = [bit for bit in asym_priority if not bit & _EDDSA]
    sel.base_asym = select(asym_priority, msg.base_asym)
    if version >= 0x14:
        pqc_priority = dev.priorities["pqc_asym"]
        if not dev.identity.empty:
            servable = dev.identity.servable_asym()
            pqc_priority = [b for b in pqc_priority if (b << PQC_ASYM_SHIFT) & servable]
        sel.pqc_asym = select(pqc_priority, msg.pqc_asym)
    sel.base_hash = select(dev.priorities["base_hash"], msg.base_hash)
    if version >= 0x12:
        sel.other_params = select(dev.priorities["opaque_data_format"], msg.other_params & 0x0F)
    if version >= 0x13:
        if caps & _RSP["MEL_CAP"]:
            sel.mel_spec = select(dev.priorities["mel_spec"], msg.mel_spec)
        # DSP0274 1.3 "multi-key connection", as libspdm: the requester decides for the
        # responder's keys (MULTI_KEY_CONN in its OtherParamsSupport), the responder for
        # the requester's (MULTI_KEY_CONN in OtherParamsSelection)
        multi = (peer >> 26) & 3
        sel.multi_key_req = multi == 1 or (multi == 2 and dev.profile.algorithms.multi_key_conn)
        if sel.multi_key_req:
            sel.other_params |= _MULTI_KEY_CONN
        sel.multi_key_rsp = bool(msg.other_params & _MULTI_KEY_CONN)
    if version >= 0x11:
        for st in msg.alg_structs:
            name = _STRUCT_FIELD[st.alg_type]  # (checked above: one of the AlgTypes)
            setattr(sel, name, select(dev.priorities[name], st.supported))
    if version >= 0x14:
        _one_of_each(sel, dev.profile.algorithms.pqc_first)
    response_structs = [
        AlgStruct(st.alg_type, getattr(sel, _STRUCT_FIELD[st.alg_type]))
        for st in (msg.alg_structs if version >= 0x11 else [])
    ]

    if sel.base_hash == 0:
        raise invalid("no common hash algorithm")
    signs = bool(caps & _SIGNING_CAPS) or bool(caps & _RSP["KEY_EX_CAP"] and peer & _REQ_KEY_EX)
    if signs and sel.base_asym == 0 and sel.pqc_asym == 0:
        raise invalid("no common signature algorithm")
    if version >= 0x11:
        key_ex_both = caps & _RSP["KEY_EX_CAP"] and peer & _REQ_KEY_EX
        if key_ex_both and sel.dhe == 0 and sel.kem == 0:
            what = "DHE group or KEM" if version >= 0x14 else "DHE group"
            raise invalid(f"no common {what} while both sides do KEY_EXCHANGE")
        both_sec = (caps & _RSP["ENCRYPT_CAP"] and peer & _REQ_ENCRYPT) or (
            caps & _RSP["MAC_CAP"] and peer & _REQ_MAC
        )
        if both_sec and sel.aead == 0:
            raise invalid("no common AEAD suite while both sides protect sessions")
        mut = caps & _RSP["MUT_AUTH_CAP"] and peer & _REQ_MUT_AUTH
        if mut and sel.req_base_asym == 0 and sel.req_pqc_asym == 0:
            raise invalid("no common requester signature algorithm for mutual auth")
        psk = caps & _PSK_CAPS and peer & _REQ_PSK
        if (key_ex_both or psk) and sel.key_schedule == 0:
            raise invalid("no common key schedule")
    if version >= 0x13:
        only = caps & _RSP["MULTI_KEY_CAP_ONLY"] and not caps & _RSP["MULTI_KEY_CAP_NEG"]
        if not sel.multi_key_rsp:
            if only:
                raise invalid(
                    "the device only works with multi-key connections: OtherParamsSupport "
                    "needs MULTI_KEY_CONN"
                )
        elif not caps & _MULTI_KEY_CAPS:
            raise invalid("the requester wants a multi-key connection the device cannot do")

    response = AlgorithmsMsg(
        version=version,
        measurement_spec_sel=sel.measurement_spec,
        other_params_sel=sel.other_params if version >= 0x12 else 0,
        measurement_hash_algo=sel.measurement_hash,
        base_asym_sel=sel.base_asym,
        base_hash_sel=sel.base_hash,
        mel_spec_sel=sel.mel_spec,
        alg_structs=response_structs,
        pqc_asym_sel=sel.pqc_asym,
    ).encode()
    return size, response, sel
