"""GET_CSR, SET_CERTIFICATE, GET_KEY_PAIR_INFO and SET_KEY_PAIR_INFO (DSP0274 1.2 10.13-10.14,
1.3 10.13-10.15), as libspdm's ``libspdm_rsp_csr.c``, ``libspdm_rsp_set_certificate_rsp.c``,
``libspdm_rsp_key_pair_info.c`` and ``libspdm_rsp_set_key_pair_info_ack.c`` check them.

The core gates each by version (1.2 / 1.3), capability (CSR_CAP, SET_CERT_CAP,
GET_KEY_PAIR_INFO_CAP, SET_KEY_PAIR_INFO_CAP) and the session's phase (in a session, only
once it is established).  Here, in libspdm's order, each answered with its ERROR and no
change of state:

* GET_CSR: before ALGORITHMS UnexpectedRequest; shorter than its lengths, OpaqueData over
  1024 bytes, OpaqueData without a negotiated opaque data format or not in the general
  format (OPAQUE_DATA_FMT_1), a RequesterInfo that is not a CertificationRequestInfo:
  InvalidRequest; 1.3: in a multi-key connection KeyPairID 0 or a CSRCertModel not 1..3,
  otherwise a non-zero KeyPairID or CSRCertModel: InvalidRequest; an unknown or erased key
  pair: InvalidRequest; the ResetRequired flow (CSRTrackingTag, Overwrite, Busy) in
  :meth:`emulator.device.provisioning.Provisioning.csr`.  Without a multi-key connection the
  CSR is for the key pair of slot 0 (for the negotiated algorithm).
* SET_CERTIFICATE: before ALGORITHMS UnexpectedRequest; SlotID over 7 InvalidRequest;
  outside a session a slot other than 0 (unless the profile says the device is in a
  trusted environment) UnexpectedRequest; 1.3 KeyPairID / SetCertModel as for GET_CSR
  (Erase with a SetCertModel: InvalidRequest); a chain shorter than its header or than its
  Length, a RootHash that is not Hash(first certificate) or certificates that do not
  split: InvalidRequest; then :meth:`~emulator.device.provisioning.Provisioning.set_certificate`
  (the X.509 rules: Unspecified; a leaf key that is no key pair's: InvalidRequest).
  CERT_INSTALL_RESET_CAP with the profile's ``set_certificate_needs_reset``:
  ERROR(ResetRequired), the chain is served after the next device reset.
* GET_KEY_PAIR_INFO: shorter than 5 bytes, KeyPairID 0 or over TotalKeyPairs:
  InvalidRequest.  Capabilities read 0 without SET_KEY_PAIR_INFO_CAP (libspdm).
* SET_KEY_PAIR_INFO: shorter than its operation needs, KeyPairID 0 or unknown, then
  :meth:`~emulator.device.provisioning.Provisioning.set_key_pair_info`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emulator.codec.constants import (
    OPAQUE_DATA_FMT_MASK,
    ErrorCode,
    OtherParams,
    ResponderCap,
)
from emulator.codec.identity import MAX_OPAQUE_DATA_SIZE, SLOT_COUNT, CertificateInfo
from emulator.codec.measurements import general_opaque_data_problem
from emulator.codec.provisioning import (
    GET_KEY_PAIR_INFO_SIZE,
    KEY_PAIR_CAP_MASK,
    GetCsrRequest,
    KeyPairInfoResponse,
    SetCertificateRequest,
    SetKeyPairInfoRequest,
    build_csr_response,
    build_set_certificate_rsp,
    build_set_key_pair_info_ack,
)
from emulator.crypto import digest, hash_name, hash_size
from emulator.device.provisioning import Provisioning, ProvisioningError
from emulator.errors import CodecError, EmulatorError
from emulator.responder.base import Request, SpdmErrorResponse, invalid, unexpected
from emulator.responder.certificates import multi_key, require_negotiated
from emulator.x509.chain import CertError, split_der_chain

if TYPE_CHECKING:
    from emulator.responder.core import Responder

#: Erase bit and SetCertModel of SET_CERTIFICATE Param1 (1.3)
_SET_CERT_MODEL_BITS = 0x70


def _provisioning(req: Request, what: str) -> Provisioning:
    prov = req.device.provisioning
    if prov is None:
        raise SpdmErrorResponse(ErrorCode.Unspecified, f"{what}: the device has no key pairs")
    return prov


def _error(exc: ProvisioningError) -> SpdmErrorResponse:
    return SpdmErrorResponse(exc.code, exc.reason, data=exc.data)


def _reset_capable(r: Responder) -> bool:
    return bool(r.device.capabilities & ResponderCap.CERT_INSTALL_RESET_CAP)


def _default_model(r: Responder) -> int:
    """The certificate model of a request without one (libspdm: AliasCert with
    ALIAS_CERT_CAP, else DeviceCert)."""
    if r.device.capabilities & ResponderCap.ALIAS_CERT_CAP:
        return int(CertificateInfo.ALIAS_CERT)
    return int(CertificateInfo.DEVICE_CERT)


def _check_key_pair_fields(r: Responder, key_pair_id: int, model: int, what: str) -> None:
    """1.3 KeyPairID / certificate model rules of GET_CSR and SET_CERTIFICATE."""
    if multi_key(r):
        if key_pair_id == 0:
            raise invalid(f"{what}: a multi-key connection needs a KeyPairID")
        if model == 0 or model > CertificateInfo.GENERIC_CERT:
            raise invalid(f"{what}: certificate model {model} is not 1..3")
    elif key_pair_id or model:
        raise invalid(
            f"{what}: KeyPairID {key_pair_id} / certificate model {model} must be 0 "
            "without a multi-key connection"
        )


def _check_opaque(r: Responder, opaque: bytes, what: str) -> None:
    if len(opaque) > MAX_OPAQUE_DATA_SIZE:
        raise invalid(f"{what}: OpaqueDataLength {len(opaque)} is over 1024")
    if not opaque:
        return
    fmt = r.algorithms.other_params & OPAQUE_DATA_FMT_MASK
    if not fmt:
        raise invalid(f"{what}: OpaqueData without a negotiated opaque data format")
    if fmt == OtherParams.OPAQUE_DATA_FMT_1:
        problem = general_opaque_data_problem(opaque)
        if problem:
            raise invalid(f"{what}: OpaqueData is not in the general opaque data format: {problem}")


# --- GET_CSR -------------------------------------------------------------------------------


def get_csr(r: Responder, req: Request) -> bytes:
    """CSR: a PKCS#10 request for a key pair, signed with its key (or ResetRequired)."""
    require_negotiated(r, "GET_CSR")
    try:
        msg, _size = GetCsrRequest.decode(req.raw)
    except CodecError as exc:
        raise invalid(str(exc)) from None
    _check_opaque(r, msg.opaque_data, "GET_CSR")
    prov = _provisioning(req, "GET_CSR")
    tag, overwrite = 0, False
    if r.version >= 0x13:
        _check_key_pair_fields(r, msg.key_pair_id, msg.cert_model, "GET_CSR")
        tag, overwrite = msg.tracking_tag, msg.overwrite
    if multi_key(r):
        key_pair_id, model = msg.key_pair_id, msg.cert_model
    else:
        model = _default_model(r)
        asym = r.algorithms.base_asym
        kp = prov.key_pair_for_slot(0, asym) or next(
            (k for k in prov.key_pairs() if k.serves(asym)), None
        )
        if kp is None:
            raise invalid("GET_CSR: no key pair signs with the negotiated BaseAsymAlgo")
        key_pair_id = kp.key_pair_id
    try:
        outcome = prov.csr(
            key_pair_id=key_pair_id,
            cert_model=model,
            requester_info=msg.requester_info,
            hash_name=hash_name(r.algorithms.base_hash),
            spdm_version=r.version,
            tracking_tag=tag,
            overwrite=overwrite,
            reset_capable=_reset_capable(r),
        )
    except ProvisioningError as exc:
        raise _error(exc) from None
    if outcome.csr is None:
        raise SpdmErrorResponse(
            ErrorCode.ResetRequired,
            f"GET_CSR: the CSR of key pair {key_pair_id} is made at the next device reset "
            f"(CSRTrackingTag {outcome.tag})",
            data=outcome.tag,
        )
    try:
        return build_csr_response(r.version, outcome.csr)
    except CodecError as exc:
        raise SpdmErrorResponse(ErrorCode.Unspecified, str(exc)) from None


# --- SET_CERTIFICATE -------------------------------------------------------------------------


def _chain_certs(r: Responder, chain: bytes) -> list[bytes]:
    """The certificates of the SPDM certificate chain of SET_CERTIFICATE (DSP0274 1.3
    "Certificate chain format"): Length, Reserved, RootHash, certificates."""
    hsize = hash_size(r.algorithms.base_hash)
    header = 4 + hsize
    if len(chain) < header + 1:
        raise invalid(f"SET_CERTIFICATE: {len(chain)}-byte chain is shorter than its header")
    length = int.from_bytes(chain[0:2], "little")
    if length < header + 1 or length > len(chain):
        raise invalid(
            f"SET_CERTIFICATE: chain Length {length}, the request carries {len(chain)} bytes"
        )
    body = chain[header:length]
    try:
        certs = split_der_chain(body)
    except CertError as exc:
        raise invalid(f"SET_CERTIFICATE: {exc}") from None
    if chain[4:header] != digest(r.algorithms.base_hash, certs[0]):
        raise invalid("SET_CERTIFICATE: RootHash is not the hash of the first certificate")
    return certs


def set_certificate(r: Responder, req: Request) -> bytes:
    """SET_CERTIFICATE_RSP: the chain is provisioned (persisted) into the slot."""
    require_negotiated(r, "SET_CERTIFICATE")
    try:
        msg = SetCertificateRequest.decode(req.raw)
    except CodecError as exc:
        raise invalid(str(exc)) from None
    slot = msg.slot_id
    if slot >= SLOT_COUNT:
        raise invalid(f"SET_CERTIFICATE: SlotID {slot} is not 0..7")
    prov = _provisioning(req, "SET_CERTIFICATE")
    if not req.in_session and slot != 0 and not prov.settings.trusted_environment:
        raise unexpected(
            f"SET_CERTIFICATE: slot {slot} is provisioned in a secure session only "
            "(slot 0 may be outside one)"
        )
    erase, key_pair_id = False, 0
    model = _default_model(r)
    if r.version >= 0x13:
        erase = msg.erase
        key_pair_id = msg.key_pair_id
        if erase and req.param1 & _SET_CERT_MODEL_BITS:
            raise invalid("SET_CERTIFICATE: Erase with a SetCertModel")
        if multi_key(r):
            if key_pair_id == 0:
                raise invalid("SET_CERTIFICATE: a multi-key connection needs a KeyPairID")
            if not erase:
                if msg.cert_model == 0 or msg.cert_model > CertificateInfo.GENERIC_CERT:
                    raise invalid(f"SET_CERTIFICATE: SetCertModel {msg.cert_model} is not 1..3")
                model = msg.cert_model
        elif key_pair_id or msg.cert_model:
            raise invalid(
                "SET_CERTIFICATE: KeyPairID / SetCertModel must be 0 without a multi-key connection"
            )
    try:
        if erase:
            pending = prov.erase_certificate(
                slot_id=slot,
                base_asym=r.algorithms.base_asym,
                key_pair_id=key_pair_id,
                reset_capable=_reset_capable(r),
            )
        else:
            certs = _chain_certs(r, msg.cert_chain)
            pending = prov.set_certificate(
                slot_id=slot,
                certs_der=certs,
                spdm_version=r.version,
                base_asym=r.algorithms.base_asym,
                key_pair_id=key_pair_id,
                cert_model=model,
                reset_capable=_reset_capable(r),
            )
    except ProvisioningError as exc:
        raise _error(exc) from None
    except EmulatorError as exc:  # the store could not write: nothing changed
        # OperationFailed is a 1.3 error code; 1.2 gets Unspecified (libspdm's NVM failure)
        code = ErrorCode.OperationFailed if r.version >= 0x13 else ErrorCode.Unspecified
        raise SpdmErrorResponse(code, f"SET_CERTIFICATE: {exc}") from None
    if pending:
        raise SpdmErrorResponse(
            ErrorCode.ResetRequired,
            f"SET_CERTIFICATE: slot {slot} takes the chain at the next device reset",
        )
    return build_set_certificate_rsp(r.version, slot)


# --- GET_KEY_PAIR_INFO / SET_KEY_PAIR_INFO ----------------------------------------------------


def get_key_pair_info(r: Responder, req: Request) -> bytes:
    """KEY_PAIR_INFO of one key pair."""
    require_negotiated(r, "GET_KEY_PAIR_INFO")
    if len(req.raw) < GET_KEY_PAIR_INFO_SIZE:
        raise invalid(f"GET_KEY_PAIR_INFO: {len(req.raw)} bytes, need {GET_KEY_PAIR_INFO_SIZE}")
    prov = _provisioning(req, "GET_KEY_PAIR_INFO")
    key_pair_id = req.raw[4]
    total = prov.total_key_pairs
    kp = prov.key_pair(key_pair_id) if key_pair_id else None
    if kp is None:
        raise invalid(f"GET_KEY_PAIR_INFO: KeyPairID {key_pair_id} is not 1..{total}")
    caps = kp.capabilities & KEY_PAIR_CAP_MASK
    if not r.device.capabilities & ResponderCap.SET_KEY_PAIR_INFO_CAP:
        caps = 0
    return KeyPairInfoResponse(
        version=r.version,
        total_key_pairs=total,
        key_pair_id=key_pair_id,
        capabilities=caps,
        key_usage_capabilities=kp.key_usage_capabilities,
        current_key_usage=kp.key_usage,
        asym_algo_capabilities=kp.asym_capabilities,
        current_asym_algo=kp.asym,
        assoc_cert_slot_mask=kp.assoc_slots,
        public_key_info=kp.public_key_info,
    ).encode()


def set_key_pair_info(r: Responder, req: Request) -> bytes:
    """SET_KEY_PAIR_INFO_ACK: the key pair changed, was erased or generated (persisted)."""
    require_negotiated(r, "SET_KEY_PAIR_INFO")
    try:
        msg = SetKeyPairInfoRequest.decode(req.raw)
    except CodecError as exc:
        raise invalid(str(exc)) from None
    prov = _provisioning(req, "SET_KEY_PAIR_INFO")
    try:
        prov.set_key_pair_info(
            operation=msg.operation,
            key_pair_id=msg.key_pair_id,
            desired_key_usage=msg.desired_key_usage,
            desired_asym=msg.desired_asym_algo,
            desired_assoc=msg.desired_assoc_cert_slot_mask,
            key_rng=req.rng if r.device.seed is not None else None,
        )
    except ProvisioningError as exc:
        raise _error(exc) from None
    except EmulatorError as exc:
        raise SpdmErrorResponse(ErrorCode.OperationFailed, f"SET_KEY_PAIR_INFO: {exc}") from None
    return build_set_key_pair_info_ack(r.version)
