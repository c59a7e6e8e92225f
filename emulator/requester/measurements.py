"""The requester's GET_MEASUREMENTS flow (DSP0274 10.11), checked like libspdm's requester.

:func:`get_measurements` sends one GET_MEASUREMENTS and checks the answer with
its own code (``libspdm_try_get_measurement``): version byte, NumberOfBlocks per
operation, TotalNumberOfMeasurement not 0 / 0xFF, every block (DMTF spec, index
not 0 / 0xFF, the requested index, sizes adding up, digest sizes), opaque data
(length 0 when 1.2+ negotiated no format; general format when OpaqueDataFmt1),
the echoed RequesterContext (1.3), the slot in Param2 and content-changed 00b in
unsigned 1.2+ responses.

It keeps its own L1/L2: the byte concatenation ``[VCA (1.2+)] || GET_MEASUREMENTS
|| MEASUREMENTS || ...`` since the last signed response (or since any other
request, which resets it, as libspdm_reset_message_buffer_via_request_code), and
verifies a signature over it with ``cryptography`` public-key objects directly
(1.0/1.1: over L1 with the negotiated hash; 1.2+: over the combined SPDM prefix
|| Hash(L1/L2)).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import (
    ec,
    ed448,
    ed25519,
    mldsa,
    padding,
    rsa,
    utils,
)

from emulator.codec.constants import (
    OPAQUE_DATA_FMT_MASK,
    BaseAsymAlgo,
    BaseHashAlgo,
    MeasurementHashAlgo,
    OtherParams,
    RequestCode,
    ResponseCode,
    signing_algo,
)
from emulator.codec.measurements import (
    ATTR_RAW_BIT_STREAM_REQUESTED,
    ATTR_SIGNATURE_REQUESTED,
    CONTENT_CHANGE_MASK,
    MAX_OPAQUE_DATA_SIZE,
    NONCE_SIZE,
    OPERATION_ALL,
    OPERATION_COUNT,
    REQUESTER_CONTEXT_SIZE,
    SLOT_ID_MASK,
    GetMeasurementsRequest,
    MeasurementBlock,
    MeasurementsResponse,
    general_opaque_data_problem,
)
from emulator.errors import CodecError, RequesterError
from emulator.requester.requester import Requester

PublicKey = (
    rsa.RSAPublicKey
    | ec.EllipticCurvePublicKey
    | ed25519.Ed25519PublicKey
    | ed448.Ed448PublicKey
    | mldsa.MLDSA44PublicKey
    | mldsa.MLDSA65PublicKey
    | mldsa.MLDSA87PublicKey
)

#: BaseHashAlgo -> (hashlib name, cryptography hash class)
_HASHES: dict[int, tuple[str, type[hashes.HashAlgorithm]]] = {
    BaseHashAlgo.SHA_256: ("sha256", hashes.SHA256),
    BaseHashAlgo.SHA_384: ("sha384", hashes.SHA384),
    BaseHashAlgo.SHA_512: ("sha512", hashes.SHA512),
    BaseHashAlgo.SHA3_256: ("sha3_256", hashes.SHA3_256),
    BaseHashAlgo.SHA3_384: ("sha3_384", hashes.SHA3_384),
    BaseHashAlgo.SHA3_512: ("sha3_512", hashes.SHA3_512),
}
#: MeasurementHashAlgo -> digest size
_MEAS_SIZES = {
    MeasurementHashAlgo.SHA_256: 32,
    MeasurementHashAlgo.SHA_384: 48,
    MeasurementHashAlgo.SHA_512: 64,
    MeasurementHashAlgo.SHA3_256: 32,
    MeasurementHashAlgo.SHA3_384: 48,
    MeasurementHashAlgo.SHA3_512: 64,
    MeasurementHashAlgo.SM3_256: 32,
}
#: BaseAsymAlgo -> signature size
_SIG_SIZES = {
    BaseAsymAlgo.RSASSA_2048: 256,
    BaseAsymAlgo.RSAPSS_2048: 256,
    BaseAsymAlgo.RSASSA_3072: 384,
    BaseAsymAlgo.RSAPSS_3072: 384,
    BaseAsymAlgo.RSASSA_4096: 512,
    BaseAsymAlgo.RSAPSS_4096: 512,
    BaseAsymAlgo.ECDSA_P256: 64,
    BaseAsymAlgo.ECDSA_P384: 96,
    BaseAsymAlgo.ECDSA_P521: 132,
    BaseAsymAlgo.SM2_P256: 64,
    BaseAsymAlgo.EDDSA_ED25519: 64,
    BaseAsymAlgo.EDDSA_ED448: 114,
}
#: SPDM 1.4 PqcAsymAlgo bits << 32 -> (cryptography public key class, FIPS 204 size)
_MLDSA: dict[int, tuple[type[object], int]] = {
    1 << 32: (mldsa.MLDSA44PublicKey, 2420),
    2 << 32: (mldsa.MLDSA65PublicKey, 3309),
    4 << 32: (mldsa.MLDSA87PublicKey, 4627),
}
_SIGN_CONTEXT = b"responder-measurements signing"


@dataclass(slots=True)
class MeasurementTranscript:
    """The requester's own L1/L2 bytes and where in ``Requester.log`` it was last extended."""

    data: bytearray = field(default_factory=bytearray)
    log_position: int = 0


@dataclass(slots=True)
class MeasurementsResult:
    """What one GET_MEASUREMENTS returned, after every check."""

    request: bytes
    response: MeasurementsResponse
    #: TotalNumberOfMeasurement (operation 0), else the number of blocks
    count: int
    blocks: list[MeasurementBlock]
    #: Param2 bits 5:4 (1.2+ signed), else 0
    content_changed: int
    #: the L1/L2 the signature was verified over (empty for unsigned responses)
    l1l2: bytes = b""
    signed: bool = False


def signing_prefix(version: int) -> bytes:
    """The 100-byte combined SPDM prefix for the measurements context (DSP0274 1.2+)."""
    major, minor = version >> 4, version & 0xF
    head = f"dmtf-spdm-v{major}.{minor}.*".encode() * 4
    return head + bytes(36 - len(_SIGN_CONTEXT)) + _SIGN_CONTEXT


def verify_signature(
    version: int,
    asym: int,
    hash_algo: int,
    public_key: PublicKey,
    transcript: bytes,
    signature: bytes,
) -> bool:
    """Check a MEASUREMENTS signature over ``transcript`` (L1/L2) with ``cryptography``.

    1.0/1.1: RSA/ECDSA over L1 with the hash.  1.2+: over prefix || Hash(L1/L2);
    EdDSA signs that data itself (Ed448 with the context string).
    """
    if hash_algo not in _HASHES:
        raise RequesterError(f"BaseHashAlgo 0x{hash_algo:X} is not supported by the requester")
    hname, hcls = _HASHES[hash_algo]
    data = transcript
    if version >= 0x12:
        data = signing_prefix(version) + hashlib.new(hname, transcript).digest()
    try:
        if asym in _MLDSA:
            # 1.4 ML-DSA: prefix || Hash(L1/L2), FIPS 204 context = the SPDM context
            if not isinstance(public_key, _MLDSA[asym][0]):
                raise RequesterError("the leaf key is not a key of the negotiated ML-DSA")
            cast(Any, public_key).verify(signature, data, _SIGN_CONTEXT)
        elif asym in (BaseAsymAlgo.ECDSA_P256, BaseAsymAlgo.ECDSA_P384, BaseAsymAlgo.ECDSA_P521):
            if not isinstance(public_key, ec.EllipticCurvePublicKey):
                raise RequesterError("the leaf key is not an EC key")
            half = len(signature) // 2
            der = utils.encode_dss_signature(
                int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
            )
            public_key.verify(der, data, ec.ECDSA(hcls()))
        elif asym in (BaseAsymAlgo.RSASSA_2048, BaseAsymAlgo.RSASSA_3072, BaseAsymAlgo.RSASSA_4096):
            if not isinstance(public_key, rsa.RSAPublicKey):
                raise RequesterError("the leaf key is not an RSA key")
            public_key.verify(signature, data, padding.PKCS1v15(), hcls())
        elif asym in (BaseAsymAlgo.RSAPSS_2048, BaseAsymAlgo.RSAPSS_3072, BaseAsymAlgo.RSAPSS_4096):
            if not isinstance(public_key, rsa.RSAPublicKey):
                raise RequesterError("the leaf key is not an RSA key")
            pss = padding.PSS(mgf=padding.MGF1(hcls()), salt_length=hcls().digest_size)
            public_key.verify(signature, data, pss, hcls())
        elif asym == BaseAsymAlgo.EDDSA_ED25519:
            if not isinstance(public_key, ed25519.Ed25519PublicKey):
                raise RequesterError("the leaf key is not an Ed25519 key")
            public_key.verify(signature, data)
        elif asym == BaseAsymAlgo.EDDSA_ED448:
            # cryptography's Ed448 takes no context: use the project's RFC 8032 code
            from emulator.crypto import spdm_verify

            return spdm_verify(
                version,
                asym,
                hash_algo,
                public_key,
                _SIGN_CONTEXT.decode(),
                transcript,
                signature,
            )
        else:
            raise RequesterError(f"BaseAsymAlgo 0x{asym:X} is not supported by the requester")
    except InvalidSignature:
        return False
    return True


def _fetched_leaf_key(req: Requester, slot: int) -> PublicKey | None:
    """The leaf key of ``slot`` if the identity flow (emulator.requester.identity) verified
    its chain on this requester."""
    flow = req.identity_flow
    held = flow.chains.get(slot) if flow is not None else None
    return held.leaf_key if held is not None else None


def _log(req: Requester) -> MeasurementTranscript:
    if req.measurement_transcript is None:
        req.measurement_transcript = MeasurementTranscript(log_position=len(req.log))
    return req.measurement_transcript


def _sync_log(req: Requester, st: MeasurementTranscript, end: int | None = None) -> None:
    """Reset L1/L2 if any other request succeeded (or a GET_MEASUREMENTS failed) since
    (up to the log entry ``end``)."""
    for request, response in req.log[st.log_position : end]:
        is_error = len(response) > 1 and response[1] == ResponseCode.ERROR
        meas = len(request) > 1 and request[1] == RequestCode.GET_MEASUREMENTS
        if (meas and is_error) or (not meas and not is_error):
            st.data.clear()
    st.log_position = len(req.log) if end is None else end


def _fail(st: MeasurementTranscript, problem: str) -> RequesterError:
    st.data.clear()
    return RequesterError(f"MEASUREMENTS: {problem}")


async def get_measurements(
    req: Requester,
    operation: int = OPERATION_ALL,
    signed: bool = False,
    raw: bool = False,
    slot: int = 0,
    *,
    public_key: PublicKey | Callable[[int], PublicKey] | None = None,
    requester_context: bytes | None = None,
    nonce: bytes | None = None,
    session_id: int | None = None,
) -> MeasurementsResult:
    """Send GET_MEASUREMENTS(operation) and check the MEASUREMENTS strictly.

    ``signed`` asks for a signature, verified with ``public_key`` (the slot's leaf
    key, or a function slot -> key; by default the leaf key of the chain that
    :mod:`emulator.requester.identity` fetched and verified for the slot); ``raw``
    sets RawBitStreamRequested (1.2+).
    Raises :class:`RequesterError` (``SpdmErrorReply`` for an ERROR) on any problem;
    L1/L2 is then reset, as libspdm does.
    """
    version = req.version
    alg = req.neg.algorithms
    if alg is None:
        raise RequesterError("GET_MEASUREMENTS before NEGOTIATE_ALGORITHMS")
    st = _log(req)
    _sync_log(req, st)
    attributes = (ATTR_SIGNATURE_REQUESTED if signed else 0) | (
        ATTR_RAW_BIT_STREAM_REQUESTED if raw else 0
    )
    if version >= 0x13:
        ctx = requester_context if requester_context is not None else os.urandom(8)
        if len(ctx) != REQUESTER_CONTEXT_SIZE:
            raise RequesterError("RequesterContext must be 8 bytes")
    else:
        ctx = b""
    request = GetMeasurementsRequest(
        version=version,
        attributes=attributes,
        operation=operation,
        nonce=(nonce if nonce is not None else os.urandom(NONCE_SIZE)) if signed else b"",
        slot_id=slot,
        requester_context=ctx,
    ).encode()
    try:
        response = await req.send(request, session_id=session_id)
    except BaseException:
        st.data.clear()  # an ERROR (or no answer) to GET_MEASUREMENTS ends L1/L2
        st.log_position = len(req.log)
        raise
    # ERROR(Busy) answers the requester retried past (Requester.busy_retries) end L1/L2 too
    _sync_log(req, st, end=len(req.log) - 1)
    st.log_position = len(req.log)
    if response[1] == ResponseCode.ERROR:  # pragma: no cover - send() raises
        raise _fail(st, "ERROR")
    if response[1] != ResponseCode.MEASUREMENTS:
        raise _fail(st, f"response code 0x{response[1]:02X}, expected MEASUREMENTS")
    if response[0] != version:
        raise _fail(st, f"version byte 0x{response[0]:02X}, request was 0x{version:02X}")
    asym = signing_algo(alg.base_asym_sel, alg.pqc_asym_sel)
    sig_sizes = {
        **{int(k): v for k, v in _SIG_SIZES.items()},
        **{k: v[1] for k, v in _MLDSA.items()},
    }
    sig_size = sig_sizes.get(asym, 0) if signed else 0
    if signed and not sig_size:
        raise _fail(st, "no signature algorithm was negotiated")
    try:
        msg, size = MeasurementsResponse.decode(response, sig_size)
    except CodecError as exc:
        raise _fail(st, str(exc)) from None
    extra = response[size:]
    if extra and (len(extra) > 3 or any(extra)):
        raise _fail(st, f"{len(extra)} unexpected bytes after the {size}-byte message")

    # -- the libspdm requester checks ----------------------------------------------------
    nb = msg.number_of_blocks
    if operation == OPERATION_COUNT:
        if nb != 0 or msg.record:
            raise _fail(st, f"operation 0 returned {nb} blocks / {len(msg.record)} record bytes")
        if msg.param1 in (0, 0xFF):
            raise _fail(st, f"TotalNumberOfMeasurement {msg.param1} is invalid")
    elif operation == OPERATION_ALL:
        if nb in (0, 0xFF):
            raise _fail(st, f"NumberOfBlocks {nb} for all measurements")
    elif nb != 1:
        raise _fail(st, f"NumberOfBlocks {nb} for one index")
    if operation != OPERATION_COUNT:
        if len(msg.blocks) != nb:
            raise _fail(st, f"NumberOfBlocks {nb} but the record holds {len(msg.blocks)} blocks")
        seen: set[int] = set()
        digest_size = _MEAS_SIZES.get(MeasurementHashAlgo(alg.measurement_hash_algo), 0)
        for b in msg.blocks:
            if b.spec != alg.measurement_spec_sel:
                raise _fail(st, f"block {b.index}: MeasurementSpecification 0x{b.spec:02X}")
            if b.index in (0, 0xFF):
                raise _fail(st, f"block index {b.index} is invalid")
            if operation != OPERATION_ALL and b.index != operation:
                raise _fail(st, f"asked for index {operation}, got block {b.index}")
            if b.index in seen:
                raise _fail(st, f"block index {b.index} appears twice")
            seen.add(b.index)
            if not b.raw and digest_size and len(b.value) != digest_size:
                raise _fail(
                    st,
                    f"block {b.index}: a digest of {len(b.value)} bytes, the measurement hash "
                    f"has {digest_size}",
                )
    if len(msg.opaque) > MAX_OPAQUE_DATA_SIZE:
        raise _fail(st, f"OpaqueDataLength {len(msg.opaque)} over 1024")
    if version >= 0x12 and msg.opaque:
        fmt = alg.other_params_sel & OPAQUE_DATA_FMT_MASK
        if not fmt:
            raise _fail(st, "opaque data although no opaque data format was negotiated")
        if fmt == OtherParams.OPAQUE_DATA_FMT_1:
            problem = general_opaque_data_problem(msg.opaque)
            if problem:
                raise _fail(st, f"OpaqueData is not in the general format: {problem}")
    if version >= 0x13 and msg.requester_context != ctx:
        raise _fail(st, "RequesterContext is not the one sent")
    if signed:
        if version >= 0x11 and msg.param2 & SLOT_ID_MASK != slot & SLOT_ID_MASK:
            raise _fail(st, f"Param2 slot {msg.param2 & SLOT_ID_MASK}, requested {slot}")
    elif version >= 0x12 and msg.param2 & CONTENT_CHANGE_MASK:
        raise _fail(st, f"content-changed bits 0x{msg.param2 & 0x30:02X} in an unsigned response")

    # -- L1/L2 ------------------------------------------------------------------------
    if not st.data and version >= 0x12:
        st.data += req.message_a
    st.data += request + response[: size - sig_size]
    result = MeasurementsResult(
        request=request,
        response=msg,
        count=msg.param1 if operation == OPERATION_COUNT else nb,
        blocks=msg.blocks,
        content_changed=msg.param2 & CONTENT_CHANGE_MASK if signed and version >= 0x12 else 0,
        signed=signed,
    )
    if signed:
        l1l2 = bytes(st.data)
        st.data.clear()
        key = public_key(slot) if callable(public_key) else public_key
        if key is None:
            key = _fetched_leaf_key(req, slot)
        if key is None:
            raise RequesterError(
                f"MEASUREMENTS: no public key for slot {slot}: pass public_key or fetch the "
                "slot's chain first (emulator.requester.identity.get_certificate)"
            )
        if not verify_signature(version, asym, alg.base_hash_sel, key, l1l2, msg.signature):
            raise RequesterError(
                f"MEASUREMENTS: the signature does not verify over L1/L2 ({len(l1l2)} bytes)"
            )
        result.l1l2 = l1l2
    return result


async def get_all_measurements(
    req: Requester,
    *,
    signed: bool = False,
    raw: bool = False,
    slot: int = 0,
    public_key: PublicKey | Callable[[int], PublicKey] | None = None,
) -> list[MeasurementBlock]:
    """Count, then every block in one request (the "all-measurements report")."""
    count = await get_measurements(req, OPERATION_COUNT)
    result = await get_measurements(req, OPERATION_ALL, signed, raw, slot, public_key=public_key)
    if len(result.blocks) != count.count:
        raise RequesterError(
            f"MEASUREMENTS: {count.count} measurement indices but {len(result.blocks)} blocks"
        )
    return result.blocks
