"""Requester side of device identity: GET_DIGESTS, GET_CERTIFICATE, CHALLENGE (DSP0274 10.6-10.8).

Everything the responder sends is checked here with code independent of the
responder: the requester keeps its own message B (GET_DIGESTS .. CERTIFICATE
exactly as exchanged), builds M1 = A || B || C itself, hashes it with
``hashlib`` and verifies the signature with ``cryptography`` public-key objects
(RSASSA-PKCS1-v1_5, RSASSA-PSS with salt = hash length, ECDSA from raw r||s,
Ed25519; Ed448 with the SPDM context string needs RFC 8032 contexts, which
``cryptography`` lacks, so that one case uses the project's Ed448 code).

Two requesters live here:

* :class:`IdentityFlow` (``flow_for(requester)``) behaves like libspdm's
  requester: slot walking, certificate portions (0x400 bytes by default),
  chain checks (Length, RootHash, each certificate signed by its predecessor,
  CA flags, leaf key matching BaseAsymAlgo, optional trusted roots, DIGESTS
  entry == Hash(chain)) and CHALLENGE with any measurement summary type.
* :class:`LinuxCmaRequester` / :func:`authenticate_linux_cma` behave as the
  Linux PCI CMA requester (``lib/spdm/req-authenticate.c`` + ``drivers/pci/cma.c``
  of the public patch series): its VCA, its strict length checks, its
  certificate rules and, on failure, its log text in :class:`RequesterError`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa, utils
from cryptography.x509.oid import ExtensionOID

from emulator.codec.constants import (
    MEAS_CAP_MASK,
    BaseAsymAlgo,
    BaseHashAlgo,
    MeasurementSpec,
    OtherParams,
    RequestCode,
    RequesterCap,
    ResponderCap,
    ResponseCode,
)
from emulator.errors import RequesterError
from emulator.requester.requester import Channel, Requester, RequesterConfig, SpdmErrorReply

__all__ = [
    "CHALLENGE_CONTEXT",
    "ChallengeResult",
    "DigestsResult",
    "IdentityFlow",
    "LinuxCmaRequester",
    "Report",
    "SlotChain",
    "authenticate_linux_cma",
    "challenge",
    "flow_for",
    "get_certificate",
    "get_digests",
    "verify_challenge_signature",
    "verify_spdm_chain",
]

CHALLENGE_CONTEXT = b"responder-challenge_auth signing"
NONCE_SIZE = 32
CONTEXT_SIZE = 8
MAX_OPAQUE = 1024
FAMILY = "identity"

_HASHES: dict[int, tuple[str, type[hashes.HashAlgorithm]]] = {
    BaseHashAlgo.SHA_256: ("sha256", hashes.SHA256),
    BaseHashAlgo.SHA_384: ("sha384", hashes.SHA384),
    BaseHashAlgo.SHA_512: ("sha512", hashes.SHA512),
    BaseHashAlgo.SHA3_256: ("sha3_256", hashes.SHA3_256),
    BaseHashAlgo.SHA3_384: ("sha3_384", hashes.SHA3_384),
    BaseHashAlgo.SHA3_512: ("sha3_512", hashes.SHA3_512),
}

# BaseAsymAlgo bit -> (family, key parameter, signature size)
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
}

PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)


def _hash_info(algo: int) -> tuple[str, type[hashes.HashAlgorithm]]:
    info = _HASHES.get(algo)
    if info is None:
        raise RequesterError(f"BaseHashSel 0x{algo:X}: not a hash this requester implements")
    return info


def _h(algo: int, data: bytes) -> bytes:
    return hashlib.new(_hash_info(algo)[0], data).digest()


def _hash_len(algo: int) -> int:
    return hashlib.new(_hash_info(algo)[0]).digest_size


def _sig_size(asym: int) -> int:
    info = _ASYM.get(asym)
    if info is None:
        raise RequesterError(f"BaseAsymSel 0x{asym:X}: not an algorithm this requester verifies")
    return info[2]


def _combined_prefix(version: int, context: bytes) -> bytes:
    """DSP0274 1.2+ combined SPDM prefix: "dmtf-spdm-v1.N.*" x4, zero pad, context (100 bytes)."""
    text = f"dmtf-spdm-v{version >> 4}.{version & 0xF}.*".encode() * 4
    return text + bytes(100 - len(text) - len(context)) + context


def _split_der(data: bytes) -> list[bytes]:
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
    family, param, _size = _ASYM[asym]
    if family in ("rsassa", "rsapss"):
        return isinstance(key, rsa.RSAPublicKey) and key.key_size == param
    if family == "ecdsa":
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == param
    if family == "ed25519":
        return isinstance(key, ed25519.Ed25519PublicKey)
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
    prefix || Hash(transcript).  Independent of the responder's signing code.
    """
    family, _param, size = _ASYM[asym]
    if len(signature) != size:
        return False
    _name, hcls = _hash_info(hash_algo)
    if version >= 0x12:
        data = _combined_prefix(version, context) + _h(hash_algo, transcript)
    else:
        data = transcript
    try:
        if family in ("rsassa", "rsapss"):
            assert isinstance(public_key, rsa.RSAPublicKey)
            pad: padding.AsymmetricPadding = (
                padding.PKCS1v15()
                if family == "rsassa"
                else padding.PSS(mgf=padding.MGF1(hcls()), salt_length=hcls().digest_size)
            )
            public_key.verify(signature, data, pad, hcls())
        elif family == "ecdsa":
            assert isinstance(public_key, ec.EllipticCurvePublicKey)
            half = size // 2
            r = int.from_bytes(signature[:half], "big")
            s = int.from_bytes(signature[half:], "big")
            if not r or not s:
                return False
            public_key.verify(utils.encode_dss_signature(r, s), data, ec.ECDSA(hcls()))
        elif family == "ed25519":
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


def _is_ca(cert: x509.Certificate) -> bool | None:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return None


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _load_root(data: bytes | x509.Certificate) -> x509.Certificate:
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
    h_len = _hash_len(hash_algo)
    if len(chain) < 4 + h_len:
        raise RequesterError(f"{where}: {len(chain)} bytes, shorter than its header")
    length = int.from_bytes(chain[0:2], "little")
    if length != len(chain):
        raise RequesterError(f"{where}: Length field {length} != {len(chain)} bytes received")
    root_hash = chain[4 : 4 + h_len]
    ders = _split_der(chain[4 + h_len :])
    try:
        certs = [x509.load_der_x509_certificate(d) for d in ders]
    except ValueError as exc:
        raise RequesterError(f"{where}: a certificate does not parse ({exc})") from None
    first = certs[0]
    roots = [_load_root(r) for r in trusted_roots or []]
    self_signed = first.issuer == first.subject and _issued_by(first, first)
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
            r.public_bytes(serialization.Encoding.DER) == ders[0] or _issued_by(first, r)
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
        if _is_ca(parent) is not True:
            raise RequesterError(f"{where}: certificate {i - 1} signs but is not a CA")
        if not _issued_by(cert, parent):
            raise RequesterError(f"{where}: certificate {i} is not signed by certificate {i - 1}")
    leaf = certs[-1]
    leaf_ca = _is_ca(leaf)
    if leaf_ca is True:
        raise RequesterError(f"{where}: the leaf certificate is a CA")
    if leaf_ca is None and version >= 0x13 and len(certs) > 1:
        raise RequesterError(f"{where}: the leaf has no basicConstraints (required from 1.3)")
    usage = _key_usage(leaf)
    if usage is not None and not usage.digital_signature:
        raise RequesterError(f"{where}: the leaf keyUsage lacks digitalSignature")
    if not _key_matches(asym, leaf.public_key()):
        name = BaseAsymAlgo(asym).name
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
        return neg.version, neg.base_asym, neg.base_hash

    @property
    def multi_key(self) -> bool:
        alg = self.req.neg.algorithms
        return bool(
            self.req.version >= 0x13
            and alg is not None
            and alg.other_params_sel & OtherParams.MULTI_KEY_CONN
        )

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
        h_len = _hash_len(base_hash)
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
        self, slot: int = 0, *, portion: int | None = None, verify: bool = True
    ) -> SlotChain:
        """Read slot ``slot`` in portions, check RemainderLength consistency, verify the chain."""
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
            request = bytes((version, RequestCode.GET_CERTIFICATE, slot, 0)) + (
                offset.to_bytes(2, "little") + want.to_bytes(2, "little")
            )
            response = await self._send(request)
            self.req.expect(response, ResponseCode.CERTIFICATE)
            if len(response) < 8:
                raise RequesterError(f"CERTIFICATE: {len(response)} bytes, need 8")
            plen = int.from_bytes(response[4:6], "little")
            rem = int.from_bytes(response[6:8], "little")
            if (response[2] & 0x0F) != slot:
                raise RequesterError(
                    f"CERTIFICATE: SlotID {response[2] & 0x0F}, requested slot {slot}"
                )
            if plen > want:
                raise RequesterError(f"CERTIFICATE: PortionLength {plen} > requested Length {want}")
            if len(response) < 8 + plen:
                raise RequesterError(
                    f"CERTIFICATE: {len(response)} bytes, PortionLength {plen} needs {8 + plen}"
                )
            if total is None:
                total = offset + plen + rem
                if total > 0xFFFF:
                    raise RequesterError(f"CERTIFICATE: chain of {total} bytes exceeds 0xFFFF")
            elif offset + plen + rem != total:
                raise RequesterError(
                    f"CERTIFICATE: Offset {offset} + PortionLength {plen} + RemainderLength "
                    f"{rem} != {total} (first response)"
                )
            if plen == 0 and rem:
                raise RequesterError(f"CERTIFICATE: PortionLength 0 with RemainderLength {rem}")
            info = response[3] if self.multi_key else 0
            self.message_b += request + response[: 8 + plen]
            data += response[8 : 8 + plen]
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
            h_len = _hash_len(base_hash)
            certs = [x509.load_der_x509_certificate(d) for d in _split_der(chain[4 + h_len :])]
        key = certs[-1].public_key()
        if not isinstance(
            key,
            rsa.RSAPublicKey
            | ec.EllipticCurvePublicKey
            | ed25519.Ed25519PublicKey
            | ed448.Ed448PublicKey,
        ):
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
        h_len = _hash_len(base_hash)
        s_len = _sig_size(asym)
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
    flow = requester.family.get(FAMILY)
    if not isinstance(flow, IdentityFlow):
        flow = IdentityFlow(requester, **options)
        requester.family[FAMILY] = flow
    return flow


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


# --- Linux PCI CMA requester -------------------------------------------------------------------

#: PCI_DOE_MAX_PAYLOAD: what the kernel offers as DataTransferSize (1 MiB DOE object - header).
LINUX_DOE_TRANSPORT_SIZE = (1 << 18) * 4 - 8
_LINUX_ASYM = int(
    BaseAsymAlgo.RSASSA_2048
    | BaseAsymAlgo.RSASSA_3072
    | BaseAsymAlgo.RSASSA_4096
    | BaseAsymAlgo.ECDSA_P256
    | BaseAsymAlgo.ECDSA_P384
    | BaseAsymAlgo.ECDSA_P521
)
_LINUX_HASH = int(BaseHashAlgo.SHA_256 | BaseHashAlgo.SHA_384 | BaseHashAlgo.SHA_512)
_LINUX_CAPS = int(RequesterCap.CERT_CAP | RequesterCap.CHAL_CAP)
_LINUX_CTEXPONENT = 20
_OID_CMA = x509.ObjectIdentifier("2.23.147")
_SPDM_ERRORS = {
    0x01: "Invalid request",
    0x03: "Busy",
    0x04: "Unexpected request",
    0x05: "Unspecified error",
    0x06: "Decrypt error",
    0x07: "Unsupported request",
    0x08: "Request in flight",
    0x09: "Invalid response code",
    0x0A: "Session limit exceeded",
    0x0B: "Session required",
    0x0C: "Reset required",
    0x0D: "Response too large",
    0x0E: "Request too large",
    0x0F: "Large response",
    0x10: "Message lost",
    0x41: "Version mismatch",
    0x42: "Response not ready",
    0x43: "Request resynchronization",
    0xFF: "Vendor defined error",
}


@dataclass
class Report:
    """Outcome of a Linux-CMA-style authentication."""

    ok: bool
    version: int = 0
    base_asym: int = 0
    base_hash: int = 0
    provisioned_slots: int = 0
    supported_slots: int = 0
    slot: int | None = None
    #: the kernel's log lines (dev_err / dev_info texts), in order
    log: list[str] = field(default_factory=list)
    chains: dict[int, bytes] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "version": f"{self.version >> 4}.{self.version & 0xF}" if self.version else "",
            "base_asym": BaseAsymAlgo(self.base_asym).name if self.base_asym else "",
            "base_hash": BaseHashAlgo(self.base_hash).name if self.base_hash else "",
            "provisioned_slots": f"0x{self.provisioned_slots:02X}",
            "slot": self.slot,
            "log": list(self.log),
        }


class _CmaFail(RequesterError):
    pass


class LinuxCmaRequester:
    """The Linux PCI CMA requester's authentication sequence (public patch series).

    ``spdm_authenticate()``: GET_VERSION (highest common <= ``max_version``),
    GET_CAPABILITIES (CERT|CHAL, CTExponent 20; 1.2+ also CHUNK, DataTransferSize
    = the DOE payload, MaxSPDMmsgSize = 0xFFFFFFFF; responder must have CERT and
    CHAL), NEGOTIATE_ALGORITHMS (RSASSA 2048/3072/4096, ECDSA P-256/384/521,
    SHA-256/384/512, DMTF measurements, no AlgStructs, OtherParams 0), GET_DIGESTS,
    GET_CERTIFICATE of every provisioned slot, chain validation slot by slot until
    one passes (root in ``trusted_roots``, CA flags, leaf without keyCertSign,
    digitalSignature on a slot-0 leaf, SAN otherName 2.23.147 == ``expected_san``),
    then CHALLENGE (no summary hash, zero 8-byte RequesterContext in 1.3) whose
    signature is verified over the whole transcript.
    """

    def __init__(
        self,
        channel: Channel,
        trusted_roots: Iterable[bytes | x509.Certificate],
        expected_san: str | None,
        *,
        max_version: int = 0x13,
        transport_size: int = LINUX_DOE_TRANSPORT_SIZE,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.channel = channel
        self.trusted = [_load_root(r) for r in trusted_roots]
        self.expected_san = expected_san
        self.max_version = max_version
        self.transport_size = transport_size
        self.rng = rng
        self.transcript = bytearray()
        self.report = Report(ok=False)
        self.version = 0x10
        self.rsp_caps = 0
        self.hash_len = 0
        self.sig_len = 0
        self.slots: dict[int, bytes] = {}
        self._req = Requester(channel, RequesterConfig())

    # -- plumbing

    def _err(self, text: str) -> _CmaFail:
        self.report.log.append(text)
        return _CmaFail(text)

    def _info(self, text: str) -> None:
        self.report.log.append(text)

    async def _exchange(self, request: bytes) -> bytes:
        """spdm_exchange(): ERROR becomes the kernel's error text; the code must match."""
        try:
            response = await self._req.send(request)
        except SpdmErrorReply as exc:
            text = _SPDM_ERRORS.get(exc.code, f"Undefined error {exc.code:#x}")
            if exc.code == 0x07:
                text = f"Unsupported request {exc.data:#x}"
            raise self._err(text) from None
        if response[1] != request[1] & 0x7F:
            raise self._err(
                f"Response code {response[1]:#x} does not match request code {request[1]:#x}"
            )
        return response

    # -- the sequence

    async def authenticate(self) -> Report:
        try:
            await self._get_version()
            await self._get_capabilities()
            await self._negotiate_algorithms()
            await self._get_digests()
            for slot in range(8):
                if self.report.provisioned_slots & (1 << slot):
                    await self._get_certificate(slot)
            leaf_key: PublicKey | None = None
            chosen = None
            reason = ""
            for slot in range(8):
                if self.report.provisioned_slots & (1 << slot):
                    try:
                        leaf_key = self._validate_chain(slot)
                    except _CmaFail as exc:
                        reason = reason or str(exc)
                        continue
                    chosen = slot
                    break
            if chosen is None:
                # the kernel still challenges the first slot, then reports -EKEYREJECTED
                first = min(s for s in range(8) if self.report.provisioned_slots & (1 << s))
                await self._challenge(first, None)
                raise _CmaFail(reason or "no certificate chain validated")
            await self._challenge(chosen, leaf_key)
            self.report.slot = chosen
            self.report.ok = True
            return self.report
        except _CmaFail as exc:
            raise RequesterError(str(exc)) from None

    async def _get_version(self) -> None:
        request = bytes((0x10, RequestCode.GET_VERSION, 0, 0))
        response = await self._exchange(request)
        if len(response) < 6 or len(response) < 6 + 2 * response[5]:
            raise self._err("Truncated version response")
        n = response[5]
        version = 0
        for i in range(n):
            ver = response[7 + 2 * i]
            if 0x10 <= ver <= self.max_version and ver >= version:
                version = ver
        if not version:
            raise self._err("No common supported version")
        self.version = version
        self.report.version = version
        self.transcript += request + response[: 6 + 2 * n]

    async def _get_capabilities(self) -> None:
        v = self.version
        flags = _LINUX_CAPS
        if v == 0x10:
            request = bytes((v, RequestCode.GET_CAPABILITIES, 0, 0))
            rsp_sz = 12
        else:
            if v >= 0x12:
                flags |= RequesterCap.CHUNK_CAP
            request = bytes((v, RequestCode.GET_CAPABILITIES, 0, 0, 0, _LINUX_CTEXPONENT, 0, 0))
            request += flags.to_bytes(4, "little")
            rsp_sz = 12
            if v >= 0x12:
                request += self.transport_size.to_bytes(4, "little") + (0xFFFFFFFF).to_bytes(
                    4, "little"
                )
                rsp_sz = 20
        response = await self._exchange(request)
        if len(response) < rsp_sz:
            raise self._err("Truncated capabilities response")
        self.transcript += request + response[:rsp_sz]
        self.rsp_caps = int.from_bytes(response[8:12], "little")
        need = ResponderCap.CERT_CAP | ResponderCap.CHAL_CAP
        if self.rsp_caps & need != need:
            raise self._err("Responder lacks CERT_CAP/CHAL_CAP (-EPROTONOSUPPORT)")
        if v >= 0x12:
            dts = int.from_bytes(response[12:16], "little")
            if dts < 42:
                raise self._err("Malformed capabilities response")
            self.transport_size = min(self.transport_size, dts)

    async def _negotiate_algorithms(self) -> None:
        v = self.version
        request = bytes((v, RequestCode.NEGOTIATE_ALGORITHMS, 0, 0))
        request += (32).to_bytes(2, "little") + bytes((MeasurementSpec.DMTF, 0))
        request += _LINUX_ASYM.to_bytes(4, "little") + _LINUX_HASH.to_bytes(4, "little")
        request += bytes(12) + bytes(4)
        response = await self._exchange(request)
        if len(response) < 36 or len(response) < 36 + 4 * response[2]:
            raise self._err("Truncated algorithms response")
        self.transcript += request + response[: 36 + 4 * response[2]]
        meas_hash = int.from_bytes(response[8:12], "little")
        asym = int.from_bytes(response[12:16], "little")
        hsh = int.from_bytes(response[16:20], "little")
        if not asym & _LINUX_ASYM or not hsh & _LINUX_HASH:
            raise self._err("No common supported algorithms")

        def one(x: int) -> bool:
            return x != 0 and not x & (x - 1)

        if (
            not one(asym)
            or not one(hsh)
            or response[32] != 0
            or response[33] != 0
            or response[2] > request[2]
            or response[7] != request[7]
            or (
                self.rsp_caps & MEAS_CAP_MASK
                and (not one(meas_hash) or response[6] != MeasurementSpec.DMTF)
            )
        ):
            raise self._err("Malformed algorithms response")
        self.report.base_asym = asym
        self.report.base_hash = hsh
        self.hash_len = _hash_len(hsh)
        self.sig_len = _ASYM[asym][2]

    async def _get_digests(self) -> None:
        v = self.version
        request = bytes((v, RequestCode.GET_DIGESTS, 0, 0))
        response = await self._exchange(request)
        n = bin(response[3]).count("1") if len(response) >= 4 else 0
        if len(response) < 4 or len(response) < 4 + n * self.hash_len:
            raise self._err("Truncated digests response")
        self.transcript += request + response[: 4 + n * self.hash_len]
        self.report.provisioned_slots = response[3]
        if not response[3]:
            raise self._err("No certificates provisioned")
        if v >= 0x13 and response[3] & ~response[2]:
            raise self._err("Malformed digests response")
        self.report.supported_slots = response[2] if v >= 0x13 else 0xFF

    async def _get_certificate(self, slot: int) -> None:
        rsp_sz = min(8 + 0xFFFF, self.transport_size)
        offset = 0
        remainder = 0xFFFF
        total = 0
        certs = bytearray()
        first = True
        while True:
            length = min(remainder, rsp_sz - 8)
            request = bytes((self.version, RequestCode.GET_CERTIFICATE, slot, 0))
            request += offset.to_bytes(2, "little") + length.to_bytes(2, "little")
            response = await self._exchange(request)
            if len(response) < 8 or len(response) < 8 + int.from_bytes(response[4:6], "little"):
                raise self._err("Truncated certificate response")
            portion = int.from_bytes(response[4:6], "little")
            remainder = int.from_bytes(response[6:8], "little")
            self.transcript += request + response[: 8 + portion]
            if first:
                total = min(portion + remainder, 0xFFFF)
                first = False
            if not portion or response[2] & 0xF != slot or offset + portion + remainder != total:
                raise self._err("Malformed certificate response")
            certs += response[8 : 8 + portion]
            offset += portion
            if remainder == 0:
                break
        header = 4 + self.hash_len
        if total < header or total != int.from_bytes(certs[0:2], "little"):
            raise self._err(f"Malformed certificate chain in slot {slot}")
        self.slots[slot] = bytes(certs)
        self.report.chains[slot] = bytes(certs)

    def _validate_chain(self, slot: int) -> PublicKey:
        data = self.slots[slot][4 + self.hash_len :]
        offset = 0
        prev: x509.Certificate | None = None
        while True:
            try:
                der = _split_der(data[offset:])[0]
            except RequesterError:
                raise self._err(
                    f"Invalid certificate length at slot {slot} offset {offset}"
                ) from None
            is_leaf = offset + len(der) == len(data)
            try:
                cert = x509.load_der_x509_certificate(der)
            except ValueError:
                raise self._err(f"Certificate parse error at slot {slot} offset {offset}") from None
            ca = _is_ca(cert) is True
            usage = _key_usage(cert)
            digital = usage is not None and usage.digital_signature
            cert_sign = usage is not None and usage.key_cert_sign
            if is_leaf == ca or (is_leaf and slot == 0 and not digital) or (is_leaf and cert_sign):
                raise self._err(f"Malformed certificate at slot {slot} offset {offset}")
            if prev is None:
                anchor = self._find_root(cert)
                if anchor is None:
                    raise self._err(
                        f"Root certificate of slot {slot} not found in .cma keyring: "
                        f"{cert.issuer.rfc4514_string()}"
                    )
                ok = _issued_by(cert, anchor)
            else:
                ok = _issued_by(cert, prev)
            if not ok:
                raise self._err(f"Signature validation error -129 at slot {slot} offset {offset}")
            prev = cert
            offset += len(der)
            if offset >= len(data):
                break
        assert prev is not None
        self._check_san(slot, prev)
        key = prev.public_key()
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise self._err(f"Unsupported signature at slot {slot} offset {offset}")
        return key

    def _find_root(self, cert: x509.Certificate) -> x509.Certificate | None:
        """find_asymmetric_key() by the certificate's authority key identifier / issuer."""
        try:
            aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
            key_id = aki.key_identifier
        except x509.ExtensionNotFound:
            key_id = None
        for root in self.trusted:
            try:
                ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
                root_id: bytes | None = ski.digest
            except x509.ExtensionNotFound:
                root_id = None
            if key_id is not None and root_id == key_id:
                return root
            if key_id is None and root.subject == cert.issuer:
                return root
        return None

    def _check_san(self, slot: int, leaf: x509.Certificate) -> None:
        """pci_cma_validate(): an otherName 2.23.147 UTF8String equal to the expected name."""
        if self.expected_san is None:
            return
        try:
            san = leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
        except x509.ExtensionNotFound:
            raise self._err(
                f"Leaf certificate of slot {slot} has no Subject Alternative Name"
            ) from None
        except ValueError:
            raise self._err(
                f"Leaf certificate of slot {slot} has malformed Subject Alternative Name"
            ) from None
        assert isinstance(san.value, x509.SubjectAlternativeName)
        found = False
        want = self.expected_san.encode()
        for name in san.value.get_values_for_type(x509.OtherName):
            if name.type_id != _OID_CMA:
                continue
            value = name.value  # DER of the [0] EXPLICIT content: the UTF8String TLV
            if not value or value[0] != 0x0C or _der_value(value) != want:
                raise self._err(
                    f"Leaf certificate of slot {slot} has invalid Subject Alternative Name"
                )
            found = True
        if not found:
            raise self._err(f"Leaf certificate of slot {slot} has no OtherName with CMA OID")

    async def _challenge(self, slot: int, key: PublicKey | None) -> None:
        v = self.version
        request = bytes((v, RequestCode.CHALLENGE, slot, 0)) + self.rng(NONCE_SIZE)
        if v >= 0x13:
            request += bytes(CONTEXT_SIZE)
        response = await self._exchange(request)
        base = 4 + self.hash_len + NONCE_SIZE
        if len(response) < base + 2:
            raise self._err("Truncated challenge_auth response")
        opaque = int.from_bytes(response[base : base + 2], "little")
        rsp_sz = base + opaque + 2 + (CONTEXT_SIZE if v >= 0x13 else 0) + self.sig_len
        if len(response) < rsp_sz:
            raise self._err("Truncated challenge_auth response")
        self.transcript += request + response[:rsp_sz]
        if key is None:
            return
        signature = bytes(self.transcript[-self.sig_len :])
        signed = bytes(self.transcript[: -self.sig_len])
        if not verify_challenge_signature(
            v, self.report.base_asym, self.report.base_hash, key, signed, signature
        ):
            raise self._err("Cannot verify challenge_auth signature: -129")
        self._info(f"Authenticated with certificate slot {slot}")


def _der_value(tlv: bytes) -> bytes:
    """The value of one DER TLV (definite length)."""
    if len(tlv) < 2:
        return b""
    first = tlv[1]
    if first < 0x80:
        return tlv[2 : 2 + first]
    n = first & 0x7F
    length = int.from_bytes(tlv[2 : 2 + n], "big")
    return tlv[2 + n : 2 + n + length]


async def authenticate_linux_cma(
    channel: Channel,
    trusted_roots: list[bytes],
    expected_san: str | None,
    *,
    max_version: int = 0x13,
) -> Report:
    """Authenticate the device as Linux's PCI CMA does; RequesterError with the kernel's text
    (e.g. "Leaf certificate of slot 0 has no Subject Alternative Name") on failure."""
    return await LinuxCmaRequester(
        channel, trusted_roots, expected_san, max_version=max_version
    ).authenticate()
