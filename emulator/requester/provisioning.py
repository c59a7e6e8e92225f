"""Requester side of provisioning (DSP0274 1.2 10.13-10.14, 1.3 10.13-10.15): GET_CSR,
SET_CERTIFICATE, GET_KEY_PAIR_INFO, SET_KEY_PAIR_INFO.

Every check is the requester's own: the CSR is parsed and its self-signature verified with
``cryptography`` (:class:`CsrResult`), the SPDM certificate chain is built here (Length,
RootHash with the negotiated hash), KEY_PAIR_INFO's fields are checked against the spec's
rules (KeyPairID within TotalKeyPairs, one current algorithm among the capable ones, the
current key usage within its capabilities, PublicKeyInfo a DER AlgorithmIdentifier).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from emulator.codec.constants import ResponseCode
from emulator.codec.provisioning import (
    GetCsrRequest,
    KeyPairInfoResponse,
    SetCertificateRequest,
    SetKeyPairInfoRequest,
    build_get_key_pair_info,
    parse_csr_response,
)
from emulator.errors import CodecError, RequesterError
from emulator.requester.requester import Requester

__all__ = [
    "CsrResult",
    "KeyPairInfo",
    "erase_certificate",
    "get_csr",
    "get_key_pair_info",
    "set_certificate",
    "set_key_pair_info",
]

_HASH_NAMES = {
    0x01: "sha256",
    0x02: "sha384",
    0x04: "sha512",
    0x08: "sha3_256",
    0x10: "sha3_384",
    0x20: "sha3_512",
}


def _hash_name(req: Requester) -> str:
    name = _HASH_NAMES.get(req.neg.base_hash)
    if name is None:
        raise RequesterError(f"BaseHashSel 0x{req.neg.base_hash:X}: no hash for the chain")
    return name


@dataclass(frozen=True)
class CsrResult:
    """A CSR the requester checked: DER, parsed, its self-signature valid."""

    der: bytes
    csr: x509.CertificateSigningRequest

    @property
    def public_key_der(self) -> bytes:
        return self.csr.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )


async def get_csr(
    req: Requester,
    *,
    key_pair_id: int = 0,
    cert_model: int = 0,
    tracking_tag: int = 0,
    overwrite: bool = False,
    requester_info: bytes = b"",
    opaque_data: bytes = b"",
    session_id: int | None = None,
) -> CsrResult:
    """GET_CSR; the CSR must parse as PKCS#10 and verify with its own public key.
    ERROR(ResetRequired) raises SpdmErrorReply (``.data`` = the CSRTrackingTag)."""
    attributes = GetCsrRequest.make_attributes(cert_model, tracking_tag, overwrite)
    request = GetCsrRequest(
        req.version,
        key_pair_id if req.version >= 0x13 else 0,
        attributes if req.version >= 0x13 else 0,
        requester_info,
        opaque_data,
    ).encode()
    rsp = await req.send(request, session_id=session_id)
    req.expect(rsp, ResponseCode.CSR)
    if rsp[2] or rsp[3]:
        raise RequesterError(f"CSR: Param1/Param2 are reserved, got {rsp[2:4].hex()}")
    try:
        der = parse_csr_response(rsp)
    except CodecError as exc:
        raise RequesterError(str(exc)) from None
    try:
        csr = x509.load_der_x509_csr(der)
    except ValueError as exc:
        raise RequesterError(f"CSR: not a DER PKCS#10 request ({exc})") from None
    if not csr.is_signature_valid:
        raise RequesterError("CSR: its signature does not verify with its public key")
    return CsrResult(der, csr)


def spdm_cert_chain(req: Requester, certs_der: Sequence[bytes]) -> bytes:
    """The DSP0274 certificate chain of ``certs_der`` (root first) in the negotiated hash."""
    if not certs_der:
        raise RequesterError("no certificate to provision")
    root_hash = hashlib.new(_hash_name(req), certs_der[0]).digest()
    body = b"".join(certs_der)
    total = 4 + len(root_hash) + len(body)
    if total > 0xFFFF:
        raise RequesterError(f"the chain is {total} bytes, over the 16-bit Length")
    return struct.pack("<HH", total, 0) + root_hash + body


async def set_certificate(
    req: Requester,
    slot_id: int,
    certs_der: Sequence[bytes],
    *,
    key_pair_id: int = 0,
    cert_model: int = 0,
    session_id: int | None = None,
    chain: bytes | None = None,
) -> None:
    """SET_CERTIFICATE of ``certs_der`` (root first) into ``slot_id`` (``chain``: send
    these bytes as the SPDM chain instead, for negative tests)."""
    body = chain if chain is not None else spdm_cert_chain(req, certs_der)
    request = SetCertificateRequest(
        req.version,
        slot_id,
        body,
        cert_model if req.version >= 0x13 else 0,
        False,
        key_pair_id if req.version >= 0x13 else 0,
    ).encode()
    rsp = await req.send(request, session_id=session_id)
    _check_set_certificate_rsp(req, rsp, slot_id)


async def erase_certificate(
    req: Requester, slot_id: int, *, key_pair_id: int = 0, session_id: int | None = None
) -> None:
    """SET_CERTIFICATE with Erase (1.3)."""
    if req.version < 0x13:
        raise RequesterError("SET_CERTIFICATE Erase needs SPDM 1.3")
    request = SetCertificateRequest(
        req.version, slot_id, erase=True, key_pair_id=key_pair_id
    ).encode()
    rsp = await req.send(request, session_id=session_id)
    _check_set_certificate_rsp(req, rsp, slot_id)


def _check_set_certificate_rsp(req: Requester, rsp: bytes, slot_id: int) -> None:
    req.expect(rsp, ResponseCode.SET_CERTIFICATE_RSP)
    if len(rsp) < 4:
        raise RequesterError("SET_CERTIFICATE_RSP: shorter than its header")
    if rsp[2] & 0x0F != slot_id:
        raise RequesterError(f"SET_CERTIFICATE_RSP: SlotID {rsp[2] & 0x0F}, sent {slot_id}")


@dataclass(frozen=True)
class KeyPairInfo:
    """A checked KEY_PAIR_INFO."""

    total_key_pairs: int
    key_pair_id: int
    capabilities: int
    key_usage_capabilities: int
    current_key_usage: int
    asym_algo_capabilities: int
    current_asym_algo: int
    assoc_cert_slot_mask: int
    public_key_info: bytes
    raw: bytes


async def get_key_pair_info(
    req: Requester, key_pair_id: int, *, session_id: int | None = None
) -> KeyPairInfo:
    """GET_KEY_PAIR_INFO with the checks of DSP0274 1.3 "KEY_PAIR_INFO response"."""
    rsp = await req.send(build_get_key_pair_info(req.version, key_pair_id), session_id=session_id)
    req.expect(rsp, ResponseCode.KEY_PAIR_INFO)
    try:
        msg, size = KeyPairInfoResponse.decode(rsp)
    except CodecError as exc:
        raise RequesterError(str(exc)) from None
    if msg.key_pair_id != key_pair_id:
        raise RequesterError(f"KEY_PAIR_INFO: KeyPairID {msg.key_pair_id}, asked {key_pair_id}")
    if not 1 <= key_pair_id <= msg.total_key_pairs:
        raise RequesterError(f"KEY_PAIR_INFO: KeyPairID {key_pair_id} > TotalKeyPairs")
    if msg.capabilities & ~0x3F:
        raise RequesterError(f"KEY_PAIR_INFO: reserved Capabilities bits 0x{msg.capabilities:X}")
    cur = msg.current_asym_algo
    if cur & (cur - 1) or cur & ~msg.asym_algo_capabilities:
        raise RequesterError(
            f"KEY_PAIR_INFO: CurrentAsymAlgo 0x{cur:X} is not one bit of "
            f"0x{msg.asym_algo_capabilities:X}"
        )
    if msg.current_key_usage & ~msg.key_usage_capabilities:
        raise RequesterError("KEY_PAIR_INFO: CurrentKeyUsage outside KeyUsageCapabilities")
    if msg.assoc_cert_slot_mask and not cur:
        raise RequesterError("KEY_PAIR_INFO: a key pair without a key backs a slot")
    pki = msg.public_key_info
    if pki and (pki[0] != 0x30 or len(pki) < 2 or pki[1] != len(pki) - 2):
        raise RequesterError("KEY_PAIR_INFO: PublicKeyInfo is not one DER SEQUENCE")
    return KeyPairInfo(
        msg.total_key_pairs,
        msg.key_pair_id,
        msg.capabilities,
        msg.key_usage_capabilities,
        msg.current_key_usage,
        msg.asym_algo_capabilities,
        cur,
        msg.assoc_cert_slot_mask,
        pki,
        bytes(rsp[:size]),
    )


async def set_key_pair_info(
    req: Requester,
    operation: int,
    key_pair_id: int,
    *,
    key_usage: int = 0,
    asym_algo: int = 0,
    assoc_slots: int = 0,
    session_id: int | None = None,
) -> None:
    """SET_KEY_PAIR_INFO (an erase goes with the KeyPairID only, as libspdm sends it)."""
    request = SetKeyPairInfoRequest(
        req.version, operation, key_pair_id, key_usage, asym_algo, assoc_slots, operation != 1
    ).encode()
    rsp = await req.send(request, session_id=session_id)
    req.expect(rsp, ResponseCode.SET_KEY_PAIR_INFO_ACK)
    if len(rsp) != 4:
        raise RequesterError(f"SET_KEY_PAIR_INFO_ACK is {len(rsp)} bytes, not 4")
