"""Requester side of device identity: GET_DIGESTS, GET_CERTIFICATE, CHALLENGE (DSP0274 10.6-10.8).

Everything the responder sends is checked here with code independent of the
responder: the requester keeps its own message B (GET_DIGESTS .. CERTIFICATE
exactly as exchanged), builds M1 = A || B || C itself, hashes it with
``hashlib`` and verifies the signature with ``cryptography`` public-key objects
(RSASSA-PKCS1-v1_5, RSASSA-PSS with salt = hash length, ECDSA from raw r||s,
Ed25519; Ed448 with the SPDM context string needs RFC 8032 contexts, which
``cryptography`` lacks, so that one case uses the project's Ed448 code).

:class:`IdentityFlow` (``flow_for(requester)``) behaves like libspdm's requester: slot
walking, certificate portions (0x400 bytes by default), chain checks (Length, RootHash,
each certificate signed by its predecessor, CA flags, leaf key matching BaseAsymAlgo,
optional trusted roots, DIGESTS entry == Hash(chain)) and CHALLENGE with any measurement
summary type.  The Linux PCI CMA requester (``--mode linux-cma``) is
:mod:`emulator.requester.linux_cma`; it uses the primitives here (hash and signature
sizes, DER splitting, X.509 predicates, :func:`verify_challenge_signature`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
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
    MEAS_CAP_MASK,
    PQC_ASYM_SHIFT,
    BaseAsymAlgo,
    BaseHashAlgo,
    PqcAsymAlgo,
    RequestCode,
    RequesterCap,
    ResponderCap,
    ResponseCode,
    signing_algo_name,
)
from emulator.errors import RequesterError
from emulator.requester.requester import Requester

__all__ = [
    "CHALLENGE_CONTEXT",
    "ChallengeResult",
    "DigestsResult",
    "IdentityFlow",
    "SlotChain",
    "challenge",
    "flow_for",
    "get_certificate",
    "get_digests",
    "hash_len",
    "is_ca",
    "issued_by",
    "key_usage_of",
    "load_root",
    "signature_size",
    "split_der",
    "verify_challenge_signature",
    "verify_spdm_chain",
]

CHALLENGE_CONTEXT = b"responder-challenge_auth signing"
NONCE_SIZE = 32
CONTEXT_SIZE = 8
MAX_OPAQUE = 1024

_HASHES: dict[int, tuple[str, type[hashes.HashAlgorithm]]] = {
    BaseHashAlgo.SHA_256: ("sha256", hashes.SHA256),
    BaseHashAlgo.SHA_384: ("sha384", hashes.SHA384),
    BaseHashAlgo.SHA_512: ("sha512", hashes.SHA512),
    BaseHashAlgo.SHA3_256: ("sha3_256", hashes.SHA3_256),
    BaseHashAlgo.SHA3_384: ("sha3_384", hashes.SHA3_384),
    BaseHashAlgo.SHA3_512: ("sha3_512", hashes.SHA3_512),
}

# BaseAsymAlgo bit -> (kind, key parameter, signature size)
_ASYM: dict[int, tuple[str, int | str, int]] = {
    BaseAsymAlgo.RSASSA_2048: ("rsassa", 2048, 256),
    BaseAsymAlgo.RSAPSS_2048: ("rsapss", 2048, 256),
    BaseAsymAlgo.RSASSA_3072: ("rsassa", 3072, 384),
    BaseAsymAlgo.RSAPSS_3072: ("rsapss", 3072, 384),
    BaseAsymAlgo.RSASSA_4096: ("rsassa", 4096, 512),
    BaseAsymAlgo.RSAPSS_4096: ("rsapss", 4096, 512),
    BaseAsymAlgo.ECDSA_P256: ("ecdsa", "secp256r1", 64),
    BaseAsymAlgo.ECDSA_P384: ("ecdsa", "secp384r1", 96),
    BaseAsymAlgo.ECDSA_P521: ("ecdsa", "secp521r1", 132),
    BaseAsymAlgo.EDDSA_ED25519: ("ed25519", 0, 64),
    BaseAsymAlgo.EDDSA_ED448: ("ed448", 0, 114),
    # SPDM 1.4 PqcAsymAlgo bits << 32 (FIPS 204 signature sizes)
    PqcAsymAlgo.ML_DSA_44 << PQC_ASYM_SHIFT: ("mldsa", "ML-DSA-44", 2420),
    PqcAsymAlgo.ML_DSA_65 << PQC_ASYM_SHIFT: ("mldsa", "ML-DSA-65", 3309),
    PqcAsymAlgo.ML_DSA_87 << PQC_ASYM_SHIFT: ("mldsa", "ML-DSA-87", 4627),
}
_MLDSA_KEYS: dict[str, type[object]] = {
    "ML-DSA-44": mldsa.MLDSA44PublicKey,
    "ML-DSA-65": mldsa.MLDSA65PublicKey,
    "ML-DSA-87": mldsa.MLDSA87PublicKey,
}

PublicKey = (
    rsa.RSAPublicKey
    | ec.EllipticCurvePublicKey
    | ed25519.Ed25519PublicKey
    | ed448.Ed448PublicKey
    | mldsa.MLDSA44PublicKey
    | mldsa.MLDSA65PublicKey
    | mldsa.MLDSA87PublicKey
)


def _hash_info(algo: int) -> tuple[str, type[hashes.HashAlgorithm]]:
    info = _HASHES.get(algo)
    if info is None:
        raise RequesterError(f"BaseHashSel 0x{algo:X}: not a hash this requester implements")
    return info


def _h(algo: int, data: bytes) -> bytes:
    return hashlib.new(_hash_info(algo)[0], data).digest()


def hash_len(algo: int) -> int:
    return hashlib.new(_hash_info(algo)[0]).digest_size


def signature_size(asym: int) -> int:
    info = _ASYM.get(asym)
    if info is None:
        base, pqc = asym & 0xFFFFFFFF, asym >> PQC_ASYM_SHIFT
        field = f"PqcAsymSel 0x{pqc:X}" if pqc else f"BaseAsymSel 0x{base:X}"
        raise RequesterError(f"{field}: not an algorithm this requester verifies")
    return info[2]


def _combined_prefix(version: int, context: bytes) -> bytes:
    """DSP0274 1.2+ combined SPDM prefix: "dmtf-spdm-v1.N.*" x4, zero pad, context (100 bytes)."""
    text = f"dmtf-spdm-v{version >> 4}.{version & 0xF}.*".encode() * 4
    return text + bytes(100 - len(text) - len(context)) + context


def split_der(data: bytes) -> list[bytes]:
    """Concatenated DER certificates -> list (definite lengths only)."""
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        if data[pos] != 0x30 or pos + 2 > len(data):
            raise RequesterError(f"certificate chain: no DER SEQUENCE at offset {pos}")
        first = data[pos + 1]
        hdr = 2
        if first & 0x80:
            n = first & 0x7F
            if n == 0 or n > 3 or pos + 2 + n > len(data):
                raise RequesterError(f"certificate chain: bad DER length at offset {pos}")
            length = int.from_bytes(data[pos + 2 : pos + 2 + n], "big")
            hdr += n
        else:
            length = first
        end = pos + hdr + length
        if end > len(data):
            raise RequesterError(f"certificate chain: certificate at offset {pos} is truncated")
        out.append(data[pos:end])
        pos = end
    if not out:
        raise RequesterError("certificate chain: no certificate")
    return out


def _key_matches(asym: int, key: object) -> bool:
    kind, param, _size = _ASYM[asym]
    if kind in ("rsassa", "rsapss"):
        return isinstance(key, rsa.RSAPublicKey) and key.key_size == param
    if kind == "ecdsa":
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == param
    if kind == "ed25519":
        return isinstance(key, ed25519.Ed25519PublicKey)
    if kind == "mldsa":
        return isinstance(key, _MLDSA_KEYS[str(param)])
    return isinstance(key, ed448.Ed448PublicKey)


def verify_challenge_signature(
    version: int,
    asym: int,
    hash_algo: int,
    public_key: PublicKey,
    transcript: bytes,
    signature: bytes,
    context: bytes = CHALLENGE_CONTEXT,
) -> bool:
    """True if ``signature`` is the responder's signature over ``transcript`` (M1/M2/L1...).

    1.0/1.1 sign the transcript (the primitive hashes it); 1.2+ sign combined
    prefix || Hash(transcript); 1.4 ML-DSA signs that with the FIPS 204 context string =
    the SPDM context.  Independent of the responder's signing code.
    """
    kind, _param, size = _ASYM[asym]
    if len(signature) != size:
        return False
    _name, hcls = _hash_info(hash_algo)
    if version >= 0x12:
        data = _combined_prefix(version, context) + _h(hash_algo, transcript)
    else:
        data = transcript
    try:
        if kind == "mldsa":
            if not isinstance(public_key, _MLDSA_KEYS[str(_param)]):
                return False
            cast(Any, public_key).verify(signature, data, context)
        elif kind in ("rsassa", "rsapss"):
            assert isinstance(public_key, rsa.RSAPublicKey)
            pad: padding.AsymmetricPadding = (
                padding.PKCS1v15()
                if kind == "rsassa"
                else padding.PSS(mgf=padding.MGF1(hcls()), salt_length=hcls().digest_size)
            )
            public_key.verify(signature, data, pad, hcls())
        elif kind == "ecdsa":
            assert isinstance(public_key, ec.EllipticCurvePublicKey)
            half = size // 2
            r = int.from_bytes(signature[:half], "big")
            s = int.from_bytes(signature[half:], "big")
            if not r or not s:
                return False
            public_key.verify(utils.encode_dss_signature(r, s), data, ec.ECDSA(hcls()))
        elif kind == "ed25519":
            assert isinstance(public_key, ed25519.Ed25519PublicKey)
            public_key.verify(signature, data)
        else:
            assert isinstance(public_key, ed448.Ed448PublicKey)
            if version >= 0x12:
                # RFC 8032 Ed448 with a context: not offered by ``cryptography``.
                from emulator.crypto.asym import verify

                return verify(asym, hash_algo, public_key, data, signature, ed448_context=context)
            public_key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


# --- chain verification ------------------------------------------------------------------------


def is_ca(cert: x509.Certificate) -> bool | None:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return None


def key_usage_of(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


#: RFC 9881 id-ml-dsa-44/65/87: the ML-DSA signatureAlgorithm OIDs
_MLDSA_SIG_OIDS = {
    "2.16.840.1.101.3.4.3.17": "ML-DSA-44",
    "2.16.840.1.101.3.4.3.18": "ML-DSA-65",
    "2.16.840.1.101.3.4.3.19": "ML-DSA-87",
}


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """``issuer`` signed ``cert`` (names and signature); ML-DSA certificates (which
    ``verify_directly_issued_by`` does not know) are checked with the issuer's key over
    the TBSCertificate, pure ML-DSA with an empty context (RFC 9881)."""
    param = _MLDSA_SIG_OIDS.get(cert.signature_algorithm_oid.dotted_string)
    if param is not None:
        if cert.issuer != issuer.subject:
            return False
        try:
            key = issuer.public_key()
        except (ValueError, UnsupportedAlgorithm):
            return False
        if not isinstance(key, _MLDSA_KEYS[param]):
            return False
        try:
            cast(Any, key).verify(cert.signature, cert.tbs_certificate_bytes)
        except InvalidSignature:
            return False
        return True
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def load_root(data: bytes | x509.Certificate) -> x509.Certificate:
    if isinstance(data, x509.Certificate):
        return data
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise RequesterError(f"trusted root: not a certificate ({exc})") from None


def verify_spdm_chain(
    chain: bytes,
    hash_algo: int,
    asym: int,
    *,
    version: int = 0x12,
    expected_digest: bytes | None = None,
    trusted_roots: Sequence[bytes | x509.Certificate] | None = None,
    slot: int = 0,
    now: datetime | None = None,
) -> list[x509.Certificate]:
    """Check an SPDM certificate chain as libspdm's requester does; returns the certificates.

    Length == size, RootHash == Hash(first certificate) when it is a self-signed
    root (else Hash of a trusted root), each certificate issued (DN + signature)
    by its predecessor, which must be a CA, leaf not a CA (basicConstraints
    present from 1.3), leaf keyUsage with digitalSignature when present, leaf key
    of the negotiated algorithm, Hash(chain) == ``expected_digest``, and, with
    ``trusted_roots``, a first certificate that is or is issued by a trusted root.
    With ``now``, every certificate must be valid at that time (libspdm's default
    OpenSSL build skips this check; a careful requester does not).
    """
    where = f"slot {slot} certificate chain"
    h_len = hash_len(hash_algo)
    if len(chain) < 4 + h_len:
        raise RequesterError(f"{where}: {len(chain)} bytes, shorter than its header")
    length = int.from_bytes(chain[0:2], "little")
    if length != len(chain):
        raise RequesterError(f"{where}: Length field {length} != {len(chain)} bytes received")
    root_hash = chain[4 : 4 + h_len]
    ders = split_der(chain[4 + h_len :])
    try:
        certs = [x509.load_der_x509_certificate(d) for d in ders]
    except ValueError as exc:
        raise RequesterError(f"{where}: a certificate does not parse ({exc})") from None
    first = certs[0]
    roots = [load_root(r) for r in trusted_roots or []]
    self_signed = first.issuer == first.subject and issued_by(first, first)
    if self_signed:
        if _h(hash_algo, ders[0]) != root_hash:
            raise RequesterError(f"{where}: RootHash != Hash(root certificate)")
    else:
        root_ders = [r.public_bytes(serialization.Encoding.DER) for r in roots]
        if not any(_h(hash_algo, d) == root_hash for d in root_ders):
            raise RequesterError(
                f"{where}: the first certificate is not a root and RootHash matches no trusted root"
            )
    if roots:
        ok = any(
            r.public_bytes(serialization.Encoding.DER) == ders[0] or issued_by(first, r)
            for r in roots
        )
        if not ok:
            raise RequesterError(f"{where}: does not chain to a trusted root")
    for i in range(1, len(certs)):
        cert, parent = certs[i], certs[i - 1]
        if cert.issuer != parent.subject:
            raise RequesterError(
                f"{where}: certificate {i} issuer != subject of certificate {i - 1}"
            )
        if is_ca(parent) is not True:
            raise RequesterError(f"{where}: certificate {i - 1} signs but is not a CA")
        if not issued_by(cert, parent):
            raise RequesterError(f"{where}: certificate {i} is not signed by certificate {i - 1}")
    leaf = certs[-1]
    leaf_ca = is_ca(leaf)
    if leaf_ca is True:
        raise RequesterError(f"{where}: the leaf certificate is a CA")
    if leaf_ca is None and version >= 0x13 and len(certs) > 1:
        raise RequesterError(f"{where}: the leaf has no basicConstraints (required from 1.3)")
    usage = key_usage_of(leaf)
    if usage is not None and not usage.digital_signature:
        raise RequesterError(f"{where}: the leaf keyUsage lacks digitalSignature")
    if not _key_matches(asym, leaf.public_key()):
        name = signing_algo_name(asym)
        raise RequesterError(f"{where}: the leaf public key is not a {name} key")
    if expected_digest is not None and _h(hash_algo, chain) != expected_digest:
        raise RequesterError(f"{where}: Hash(chain) != the DIGESTS entry of slot {slot}")
    if now is not None:
        for i, cert in enumerate(certs):
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                raise RequesterError(
                    f"{where}: certificate {i} is not valid now (valid "
                    f"{cert.not_valid_before_utc:%Y-%m-%d} .. {cert.not_valid_after_utc:%Y-%m-%d})"
                )
    return certs


# --- the libspdm-like flow ---------------------------------------------------------------------


@dataclass
class DigestsResult:
    """A checked DIGESTS: masks, digests by slot and, with MULTI_KEY_CONN, per-slot info."""

    supported_mask: int
    provisioned_mask: int
    digests: dict[int, bytes]
    key_pair_ids: dict[int, int] = field(default_factory=dict)
    certificate_infos: dict[int, int] = field(default_factory=dict)
    key_usages: dict[int, int] = field(default_factory=dict)
    response: bytes = b""


@dataclass
class SlotChain:
    """A verified slot: the SPDM chain, its certificates and the leaf public key."""

    slot: int
    chain: bytes
    certs: list[x509.Certificate]
    leaf_key: PublicKey
    portions: int = 1
    certificate_info: int = 0

    @property
    def root_der(self) -> bytes:
        return self.certs[0].public_bytes(serialization.Encoding.DER)


@dataclass
class ChallengeResult:
    """A verified CHALLENGE_AUTH."""

    slot: int
    slot_mask: int
    attributes: int
    responder_nonce: bytes
    measurement_summary_hash: bytes
    opaque_data: bytes
    requester_context: bytes
    signature: bytes
    #: the M1 this requester built and verified the signature over
    transcript: bytes


class IdentityFlow:
    """GET_DIGESTS / GET_CERTIFICATE / CHALLENGE over a :class:`Requester` (libspdm-like).

    ``message_b`` restarts on GET_DIGESTS and after a new VCA; CHALLENGE
    success empties it (as libspdm does on both sides).
    """

    def __init__(
        self,
        requester: Requester,
        *,
        trusted_roots: Sequence[bytes | x509.Certificate] | None = None,
        portion: int = 0x400,
        rng: Callable[[int], bytes] = os.urandom,
        check_validity: bool = True,
    ) -> None:
        self.req = requester
        self.trusted_roots = list(trusted_roots or [])
        #: reject certificates outside their validity period (see verify_spdm_chain)
        self.check_validity = check_validity
        self.portion = portion
        self.rng = rng
        self.message_b = bytearray()
        self.digests: DigestsResult | None = None
        self.chains: dict[int, SlotChain] = {}
        self._vca: object = None

    # -- helpers

    def _sync(self) -> None:
        """A new VCA (GET_VERSION makes a new ``Requester.neg``) empties B."""
        if self.req.neg is not self._vca:
            self._vca = self.req.neg
            self.message_b.clear()

    @property
    def _neg(self) -> tuple[int, int, int]:
        neg = self.req.neg
        if neg.algorithms is None:
            raise RequesterError("identity requests need VCA first")
        return neg.version, neg.asym, neg.base_hash

    @property
    def multi_key(self) -> bool:
        """A multi-key connection for the responder's keys (what we asked in
        NEGOTIATE_ALGORITHMS): DIGESTS and CERTIFICATE carry the key fields."""
        return self.req.neg.multi_key_rsp

    async def _send(self, request: bytes) -> bytes:
        return await self.req.send(request)

    # -- GET_DIGESTS

    async def get_digests(self) -> DigestsResult:
        """GET_DIGESTS; checks sizes, masks and (1.3) supported ⊇ provisioned."""
        self._sync()
        version, _asym, base_hash = self._neg
        request = bytes((version, RequestCode.GET_DIGESTS, 0, 0))
        response = await self._send(request)
        self.req.expect(response, ResponseCode.DIGESTS)
        h_len = hash_len(base_hash)
        mask = response[3]
        n = bin(mask).count("1")
        size = 4 + n * h_len + (4 * n if self.multi_key else 0)
        if len(response) < size:
            raise RequesterError(
                f"DIGESTS: {len(response)} bytes, slot mask 0x{mask:02X} needs {size}"
            )
        if mask == 0:
            raise RequesterError("DIGESTS: no slot is provisioned (slot mask 0)")
        supported = response[2] if version >= 0x13 else 0
        if version >= 0x13 and mask & ~supported:
            raise RequesterError(
                f"DIGESTS: ProvisionedSlotMask 0x{mask:02X} is not within "
                f"SupportedSlotMask 0x{supported:02X}"
            )
        slots = [s for s in range(8) if mask & (1 << s)]
        digests = {s: response[4 + i * h_len : 4 + (i + 1) * h_len] for i, s in enumerate(slots)}
        result = DigestsResult(supported, mask, digests, response=response[:size])
        if self.multi_key:
            off = 4 + n * h_len
            for i, s in enumerate(slots):
                result.key_pair_ids[s] = response[off + i]
                result.certificate_infos[s] = response[off + n + i]
                result.key_usages[s] = int.from_bytes(
                    response[off + 2 * n + 2 * i : off + 2 * n + 2 * i + 2], "little"
                )
        self.message_b.clear()  # GET_DIGESTS starts a new B (libspdm)
        self.message_b += request + response[:size]
        self.digests = result
        return result

    # -- GET_CERTIFICATE

    async def get_certificate(
        self,
        slot: int = 0,
        *,
        portion: int | None = None,
        verify: bool = True,
        large: bool = False,
    ) -> SlotChain:
        """Read slot ``slot`` in portions, check RemainderLength consistency, verify the chain.

        ``large``: SPDM 1.4 LargeCertChain requests (u32 LargeOffset/LargeLength; the
        responder must have advertised LARGE_RESP_CAP)."""
        self._sync()
        version, asym, base_hash = self._neg
        want_max = portion or self.portion
        offset = 0
        total: int | None = None
        data = bytearray()
        portions = 0
        info = 0
        while True:
            want = want_max if total is None else min(want_max, total - offset)
            if large:
                if version < 0x14:
                    raise RequesterError("LargeCertChain exists from SPDM 1.4 only")
                request = bytes((version, RequestCode.GET_CERTIFICATE, slot | 0x80, 0))
                request += bytes(4) + offset.to_bytes(4, "little") + want.to_bytes(4, "little")
            else:
                request = bytes((version, RequestCode.GET_CERTIFICATE, slot, 0)) + (
                    offset.to_bytes(2, "little") + want.to_bytes(2, "little")
                )
            response = await self._send(request)
            self.req.expect(response, ResponseCode.CERTIFICATE)
            head = 16 if large else 8
            if len(response) < head:
                raise RequesterError(f"CERTIFICATE: {len(response)} bytes, need {head}")
            if large:
                if not response[2] & 0x80 or response[4:8] != bytes(4):
                    raise RequesterError(
                        "CERTIFICATE: LargeCertChain response without Param1 bit 7 / with "
                        "non-zero 16-bit lengths"
                    )
                plen = int.from_bytes(response[8:12], "little")
                rem = int.from_bytes(response[12:16], "little")
            else:
                plen = int.from_bytes(response[4:6], "little")
                rem = int.from_bytes(response[6:8], "little")
            if (response[2] & 0x0F) != slot:
                raise RequesterError(
                    f"CERTIFICATE: SlotID {response[2] & 0x0F}, requested slot {slot}"
                )
            if plen > want:
                raise RequesterError(f"CERTIFICATE: PortionLength {plen} > requested Length {want}")
            if len(response) < head + plen:
                raise RequesterError(
                    f"CERTIFICATE: {len(response)} bytes, PortionLength {plen} needs {head + plen}"
                )
            if total is None:
                total = offset + plen + rem
                if total > 0xFFFF and not large:
                    raise RequesterError(f"CERTIFICATE: chain of {total} bytes exceeds 0xFFFF")
            elif offset + plen + rem != total:
                raise RequesterError(
                    f"CERTIFICATE: Offset {offset} + PortionLength {plen} + RemainderLength "
                    f"{rem} != {total} (first response)"
                )
            if plen == 0 and rem:
                raise RequesterError(f"CERTIFICATE: PortionLength 0 with RemainderLength {rem}")
            info = response[3] if self.multi_key else 0
            self.message_b += request + response[: head + plen]
            data += response[head : head + plen]
            offset += plen
            portions += 1
            if rem == 0:
                break
        chain = bytes(data)
        expected = None
        if self.digests is not None and slot in self.digests.digests:
            expected = self.digests.digests[slot]
        if verify:
            certs = verify_spdm_chain(
                chain,
                base_hash,
                asym,
                version=version,
                expected_digest=expected,
                trusted_roots=self.trusted_roots or None,
                slot=slot,
                now=datetime.now(UTC) if self.check_validity else None,
            )
        else:
            h_len = hash_len(base_hash)
            certs = [x509.load_der_x509_certificate(d) for d in split_der(chain[4 + h_len :])]
        key = certs[-1].public_key()
        if not isinstance(key, PublicKey):
            raise RequesterError(f"slot {slot}: unsupported leaf key {type(key).__name__}")
        result = SlotChain(slot, chain, certs, key, portions, info)
        self.chains[slot] = result
        return result

    # -- CHALLENGE

    async def challenge(
        self,
        slot: int = 0,
        measurement_summary: int = 0,
        *,
        nonce: bytes | None = None,
        requester_context: bytes | None = None,
        public_key: PublicKey | None = None,
        expected_summary: bytes | None = None,
    ) -> ChallengeResult:
        """CHALLENGE ``slot`` and verify CHALLENGE_AUTH (fields, lengths, signature over M1).

        The slot's chain must have been read (or cached from an earlier
        connection in ``chains``); for slot 0xFF pass the provisioned ``public_key``.
        """
        self._sync()
        version, asym, base_hash = self._neg
        h_len = hash_len(base_hash)
        s_len = signature_size(asym)
        if slot == 0xFF:
            if public_key is None:
                raise RequesterError("CHALLENGE slot 0xFF needs the provisioned public key")
            key: PublicKey = public_key
            spki = key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            expected_hash = _h(base_hash, spki)
        else:
            held = self.chains.get(slot)
            if held is None:
                raise RequesterError(f"CHALLENGE slot {slot}: no certificate chain; read it first")
            key = held.leaf_key
            expected_hash = _h(base_hash, held.chain)
        nonce = self.rng(NONCE_SIZE) if nonce is None else nonce
        ctx = b""
        if version >= 0x13:
            ctx = self.rng(CONTEXT_SIZE) if requester_context is None else requester_context
        request = bytes((version, RequestCode.CHALLENGE, slot, measurement_summary)) + nonce + ctx
        response = await self._send(request)
        self.req.expect(response, ResponseCode.CHALLENGE_AUTH)
        rsp_flags = self.req.neg.rsp_flags
        summary_len = h_len if rsp_flags & MEAS_CAP_MASK and measurement_summary in (1, 0xFF) else 0
        fixed = 4 + h_len + NONCE_SIZE + summary_len + 2
        if len(response) < fixed:
            raise RequesterError(f"CHALLENGE_AUTH: {len(response)} bytes, need at least {fixed}")
        attributes, slot_mask = response[2], response[3]
        if slot == 0xFF:
            if version >= 0x11 and attributes & 0x0F != 0x0F:
                raise RequesterError("CHALLENGE_AUTH: SlotID field is not 0xF for the public key")
        else:
            got = attributes & 0x0F if version >= 0x11 else attributes
            if got != slot:
                raise RequesterError(f"CHALLENGE_AUTH: Param1 slot {got}, challenged slot {slot}")
            if not slot_mask & (1 << slot):
                raise RequesterError(
                    f"CHALLENGE_AUTH: slot mask 0x{slot_mask:02X} lacks slot {slot}"
                )
        if attributes & 0x80 and not (
            rsp_flags & ResponderCap.MUT_AUTH_CAP
            and self.req.config.flags & RequesterCap.MUT_AUTH_CAP
        ):
            raise RequesterError("CHALLENGE_AUTH: BasicMutAuthReq set without mutual auth")
        off = 4
        cert_chain_hash = response[off : off + h_len]
        off += h_len
        if cert_chain_hash != expected_hash:
            raise RequesterError(f"CHALLENGE_AUTH: CertChainHash != Hash(slot {slot} chain)")
        rsp_nonce = response[off : off + NONCE_SIZE]
        off += NONCE_SIZE
        summary = response[off : off + summary_len]
        off += summary_len
        opaque_len = int.from_bytes(response[off : off + 2], "little")
        off += 2
        if opaque_len > MAX_OPAQUE:
            raise RequesterError(f"CHALLENGE_AUTH: OpaqueDataLength {opaque_len} > {MAX_OPAQUE}")
        alg = self.req.neg.algorithms
        if version >= 0x12 and opaque_len and alg is not None and not alg.other_params_sel & 0x0F:
            raise RequesterError(
                "CHALLENGE_AUTH: opaque data although no opaque data format was negotiated"
            )
        total = off + opaque_len + (CONTEXT_SIZE if version >= 0x13 else 0) + s_len
        if len(response) < total:
            raise RequesterError(f"CHALLENGE_AUTH: {len(response)} bytes, the fields need {total}")
        opaque = response[off : off + opaque_len]
        off += opaque_len
        rsp_ctx = b""
        if version >= 0x13:
            rsp_ctx = response[off : off + CONTEXT_SIZE]
            off += CONTEXT_SIZE
            if rsp_ctx != ctx:
                raise RequesterError("CHALLENGE_AUTH: RequesterContext not echoed")
        signature = response[off : off + s_len]
        m1 = bytes(self.req.message_a) + bytes(self.message_b) + request + response[:off]
        if not verify_challenge_signature(version, asym, base_hash, key, m1, signature):
            raise RequesterError("CHALLENGE_AUTH: the signature does not verify over M1")
        if expected_summary is not None and summary != expected_summary:
            raise RequesterError("CHALLENGE_AUTH: MeasurementSummaryHash is not the expected one")
        self.message_b.clear()
        return ChallengeResult(
            slot, slot_mask, attributes, rsp_nonce, summary, opaque, rsp_ctx, signature, m1
        )


def flow_for(requester: Requester, **options: Any) -> IdentityFlow:
    """The requester's identity flow (created on first use; options apply then)."""
    if requester.identity_flow is None:
        requester.identity_flow = IdentityFlow(requester, **options)
    return requester.identity_flow


async def get_digests(requester: Requester) -> DigestsResult:
    """GET_DIGESTS on ``requester`` (see :meth:`IdentityFlow.get_digests`)."""
    return await flow_for(requester).get_digests()


async def get_certificate(requester: Requester, slot: int = 0, portion: int = 0x400) -> SlotChain:
    """GET_CERTIFICATE of one slot in portions of ``portion`` bytes, verified."""
    return await flow_for(requester).get_certificate(slot, portion=portion)


async def challenge(
    requester: Requester, slot: int = 0, measurement_summary: int = 0
) -> ChallengeResult:
    """CHALLENGE with signature verification over the requester's own M1."""
    return await flow_for(requester).challenge(slot, measurement_summary)
