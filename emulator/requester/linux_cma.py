"""The Linux PCI CMA requester (``probe --mode linux-cma``), reproduced from the public patch
series (``lib/spdm/req-authenticate.c`` + ``drivers/pci/cma.c``): its VCA, its strict
length checks (DSP0274 10.3-10.8 as the kernel reads them), its certificate rules (CA
flags, leaf keyUsage, root looked up in the ``.cma`` keyring, the PCI subjectAltName) and,
on failure, its log text in :class:`~emulator.errors.RequesterError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtensionOID

from emulator.codec.constants import (
    MEAS_CAP_MASK,
    BaseAsymAlgo,
    BaseHashAlgo,
    MeasurementSpec,
    RequestCode,
    RequesterCap,
    ResponderCap,
)
from emulator.errors import RequesterError
from emulator.requester.errors import SpdmErrorReply
from emulator.requester.identity import (
    CONTEXT_SIZE,
    NONCE_SIZE,
    PublicKey,
    hash_len,
    is_ca,
    issued_by,
    key_usage_of,
    load_root,
    signature_size,
    split_der,
    verify_challenge_signature,
)
from emulator.requester.requester import Channel, Requester, RequesterConfig

__all__ = [
    "LINUX_DOE_TRANSPORT_SIZE",
    "LinuxCmaRequester",
    "Report",
    "authenticate_linux_cma",
]


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
        self.trusted = [load_root(r) for r in trusted_roots]
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
        self.hash_len = hash_len(hsh)
        self.sig_len = signature_size(asym)

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
                der = split_der(data[offset:])[0]
            except RequesterError:
                raise self._err(
                    f"Invalid certificate length at slot {slot} offset {offset}"
                ) from None
            is_leaf = offset + len(der) == len(data)
            try:
                cert = x509.load_der_x509_certificate(der)
            except ValueError:
                raise self._err(f"Certificate parse error at slot {slot} offset {offset}") from None
            ca = is_ca(cert) is True
            usage = key_usage_of(cert)
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
                ok = issued_by(cert, anchor)
            else:
                ok = issued_by(cert, prev)
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
