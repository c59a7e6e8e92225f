"""Requester side of secure sessions: KEY_EXCHANGE/FINISH, PSK_EXCHANGE/PSK_FINISH, DSP0277
records, HEARTBEAT, KEY_UPDATE, END_SESSION and mutual authentication (encapsulated flow).

Everything here is an independent code path from the responder's: the key schedule,
HMACs, transcript concatenation and the record format are written again with ``hashlib``,
``hmac`` and ``cryptography``'s AEAD/DH/EC/ML-KEM/ML-DSA classes, following DSP0274 /
DSP0277 and what libspdm's requester computes (``libspdm_req_key_exchange.c``,
``libspdm_req_finish.c``, ``libspdm_secmes_encode_decode.c``).  Only the RFC 7919 FFDHE
primes (constants) are shared with :mod:`emulator.crypto.dhe`.

Use::

    req = Requester(channel, RequesterConfig(...))
    await req.vca()
    s = await open_session(req, peer_chain=chain, binding="doe")      # KEY_EXCHANGE + FINISH
    rsp = await s.send(build_header(req.version, RequestCode.GET_MEASUREMENTS, ...))
    await s.key_update(KeyUpdateOperation.UPDATE_ALL_KEYS)
    await s.heartbeat()
    await s.end_session()

``ConnectionChannel`` carries messages through an in-process
:class:`~emulator.connection.SpdmConnection` (transport binding and session layer
included, no socket).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import (
    dh,
    ec,
    ed25519,
    mldsa,
    mlkem,
    padding,
    rsa,
    utils,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from emulator.codec.constants import (
    AlgType,
    ErrorCode,
    RequestCode,
    RequesterCap,
    ResponderCap,
    ResponseCode,
    code_name,
)
from emulator.errors import RequesterError, TransportError
from emulator.requester.errors import SpdmErrorReply
from emulator.requester.requester import Requester
from emulator.transport import get_binding
from emulator.transport.base import AppData, RecordFormat, TransportBinding, TransportMessage

# --- algorithm tables (DSP0274 bits -> parameters), the requester's own copy ------------------

_HASHES: dict[int, tuple[str, int]] = {
    0x01: ("sha256", 32),
    0x02: ("sha384", 48),
    0x04: ("sha512", 64),
    0x08: ("sha3_256", 32),
    0x10: ("sha3_384", 48),
    0x20: ("sha3_512", 64),
}
_CRYPTO_HASH: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
    "sha3_256": hashes.SHA3_256,
    "sha3_384": hashes.SHA3_384,
    "sha3_512": hashes.SHA3_512,
}
#: AEAD bit -> key size
_AEADS: dict[int, int] = {0x01: 16, 0x02: 32, 0x04: 32}
#: DHE bit -> (kind, parameter, ExchangeData size)
_DHE: dict[int, tuple[str, Any, int]] = {
    0x01: ("ffdhe", 2048, 256),
    0x02: ("ffdhe", 3072, 384),
    0x04: ("ffdhe", 4096, 512),
    0x08: ("ecdhe", ec.SECP256R1, 64),
    0x10: ("ecdhe", ec.SECP384R1, 96),
    0x20: ("ecdhe", ec.SECP521R1, 132),
}
#: BaseAsymAlgo bit -> (kind, signature size)
_ASYM: dict[int, tuple[str, int]] = {
    0x001: ("rsassa", 256),
    0x002: ("rsapss", 256),
    0x004: ("rsassa", 384),
    0x008: ("rsapss", 384),
    0x010: ("ecdsa", 64),
    0x020: ("rsassa", 512),
    0x040: ("rsapss", 512),
    0x080: ("ecdsa", 96),
    0x100: ("ecdsa", 132),
    0x400: ("ed25519", 64),
    0x800: ("ed448", 114),
    # SPDM 1.4 PqcAsymAlgo bits << 32: FIPS 204 ML-DSA-44/65/87
    0x1 << 32: ("mldsa", 2420),
    0x2 << 32: ("mldsa", 3309),
    0x4 << 32: ("mldsa", 4627),
}
#: SPDM 1.4 KEM bit -> (cryptography private key class, encapsulation key, ciphertext size);
#: ML-KEM-512 (0x1) is absent: cryptography 48 has no ML-KEM-512
_KEM: dict[int, tuple[Any, int, int]] = {
    0x2: (mlkem.MLKEM768PrivateKey, 1184, 1088),
    0x4: (mlkem.MLKEM1024PrivateKey, 1568, 1568),
}
KEY_EXCHANGE_RSP_CONTEXT = b"responder-key_exchange_rsp signing"
FINISH_CONTEXT = b"requester-finish signing"
DEFAULT_SECURED_VERSIONS = (0x1000, 0x1100, 0x1200)
TAG = 16


def _hash(name: str, data: bytes) -> bytes:
    return hashlib.new(name, data).digest()


def _hkdf_extract(name: str, salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt, ikm, name).digest()


def _hkdf_expand(name: str, prk: bytes, info: bytes, length: int) -> bytes:
    out = b""
    block = b""
    i = 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), name).digest()
        out += block
        i += 1
    return out[:length]


def _bin(version: int, label: bytes, length: int, context: bytes = b"") -> bytes:
    """BinConcat: u16le(length) || "spdm1.x " || label || context."""
    return (
        struct.pack("<H", length) + b"spdm%d.%d " % (version >> 4, version & 0xF) + label + context
    )


def _signing_prefix(version: int, context: bytes) -> bytes:
    base = b"dmtf-spdm-v%d.%d.*" % (version >> 4, version & 0xF)
    return base * 4 + bytes(36 - len(context)) + context


def _ffdhe_prime(bits: int) -> int:
    from emulator.crypto.dhe import FFDHE_PRIMES  # RFC 7919 constants only

    for prime in FFDHE_PRIMES.values():
        if prime.bit_length() == bits:
            return prime
    raise RequesterError(f"no FFDHE{bits} prime")


def _split_der(data: bytes) -> list[bytes]:
    """Split concatenated DER certificates (SEQUENCE TLVs)."""
    out = []
    off = 0
    while off < len(data):
        if data[off] != 0x30 or off + 2 > len(data):
            raise RequesterError(f"certificate chain: no DER SEQUENCE at offset {off}")
        first = data[off + 1]
        if first < 0x80:
            length, head = first, 2
        else:
            n = first & 0x7F
            length = int.from_bytes(data[off + 2 : off + 2 + n], "big")
            head = 2 + n
        end = off + head + length
        if end > len(data):
            raise RequesterError("certificate chain: a certificate runs past the data")
        out.append(data[off:end])
        off = end
    return out


def spdm_chain(hash_name: str, certs_der: Sequence[bytes]) -> bytes:
    """The DSP0274 certificate chain format: Length, Reserved, RootHash, certificates."""
    root_hash = _hash(hash_name, certs_der[0])
    body = b"".join(certs_der)
    total = 4 + len(root_hash) + len(body)
    return struct.pack("<HH", total, 0) + root_hash + body


def chain_leaf_key(hash_size: int, chain: bytes) -> Any:
    """The leaf certificate's public key of an SPDM certificate chain."""
    certs = _split_der(chain[4 + hash_size :])
    return x509.load_der_x509_certificate(certs[-1]).public_key()


def _verify(
    asym: int, hash_name: str, key: Any, data: bytes, signature: bytes, context: bytes = b""
) -> bool:
    """``context``: the SPDM context string, which 1.4 ML-DSA passes as its FIPS 204 ctx."""
    kind, size = _ASYM[asym]
    if len(signature) != size:
        return False
    algo = _CRYPTO_HASH[hash_name]()
    try:
        if kind == "mldsa":
            key.verify(signature, data, context)
        elif kind == "ecdsa":
            half = size // 2
            der = utils.encode_dss_signature(
                int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
            )
            key.verify(der, data, ec.ECDSA(algo))
        elif kind == "rsassa":
            key.verify(signature, data, padding.PKCS1v15(), algo)
        elif kind == "rsapss":
            key.verify(
                signature,
                data,
                padding.PSS(mgf=padding.MGF1(algo), salt_length=padding.PSS.DIGEST_LENGTH),
                algo,
            )
        elif kind == "ed25519":
            key.verify(signature, data)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _sign(asym: int, hash_name: str, key: Any, data: bytes, context: bytes = b"") -> bytes:
    kind, size = _ASYM[asym]
    algo = _CRYPTO_HASH[hash_name]()
    if kind == "mldsa":
        mldsa_sig: bytes = key.sign(data, context)
        return mldsa_sig
    if kind == "ecdsa":
        r_, s_ = utils.decode_dss_signature(key.sign(data, ec.ECDSA(algo)))
        half = size // 2
        return r_.to_bytes(half, "big") + s_.to_bytes(half, "big")
    if kind == "rsassa":
        sig: bytes = key.sign(data, padding.PKCS1v15(), algo)
        return sig
    if kind == "rsapss":
        sig = key.sign(
            data, padding.PSS(mgf=padding.MGF1(algo), salt_length=padding.PSS.DIGEST_LENGTH), algo
        )
        return sig
    if kind == "ed25519":
        sig = key.sign(data)
        return sig
    raise RequesterError(f"requester signing with {kind} is not implemented")


@dataclass(frozen=True)
class RecordParams:
    """DSP0277 record facts of a binding: sequence number bytes, app header (or the
    binding's application-data codec: TCP, storage), padding."""

    sequence_number_size: int = 0
    app_header: bytes = b""
    max_random_padding: int = 0
    app_data: AppData | None = None

    def wrap(self, message: bytes) -> bytes:
        """The application data that carries ``message`` in a record."""
        return RecordFormat(app_header=self.app_header, app_data=self.app_data).wrap(message)

    def unwrap(self, app_data: bytes) -> bytes:
        """The SPDM message of a response record's application data (RequesterError when
        it carries none)."""
        fmt = RecordFormat(app_header=self.app_header, app_data=self.app_data)
        try:
            return fmt.unwrap(app_data)
        except TransportError as exc:
            raise RequesterError(
                f"secured response does not carry an SPDM message: {exc}"
            ) from None

    @classmethod
    def for_binding(cls, binding: str | TransportBinding) -> RecordParams:
        """The record facts the binding (or the binding of that name) declares in its
        ``record_format``; RequesterError if it cannot carry secured messages."""
        try:
            found = get_binding(binding) if isinstance(binding, str) else binding
        except TransportError:
            found = None
        if found is None or not found.carries_secured:
            name = binding if isinstance(binding, str) else binding.name
            raise RequesterError(f"transport {name!r} has no secured-message binding")
        fmt = found.record_format
        return cls(fmt.sequence_number_size, fmt.app_header, fmt.max_random_padding, fmt.app_data)


@dataclass
class RequesterIdentity:
    """The requester's certificate chain (DER, root first) and key, for mutual authentication."""

    certs_der: list[bytes]
    key: Any
    slot_id: int = 0
    #: the KeyPairID our DIGESTS reports in a multi-key connection (1.3)
    key_pair_id: int = 1


class ConnectionChannel:
    """A channel into an in-process :class:`~emulator.connection.SpdmConnection`."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.binding = connection.binding

    async def exchange(self, message: bytes, secured: bool = False) -> TransportMessage:
        """One request in, its reply out, as the binding frames each direction (storage:
        the request with its storage header, the reply bare: ``encode_request`` /
        ``decode_response``; the others frame both the same way)."""
        encode = getattr(self.binding, "encode_request", self.binding.encode)
        reply = self.connection.receive(encode(message, secured=secured))
        if not reply.payloads:
            raise RequesterError("the responder sent no reply (message dropped)")
        decode_response = getattr(self.binding, "decode_response", None)
        if decode_response is not None:
            response: TransportMessage = decode_response(reply.payloads[0], secured)
            return response
        decoded: TransportMessage = self.binding.decode(reply.payloads[0])
        return decoded


@dataclass
class _Dir:
    key: bytes
    iv: bytes
    seq: int = 0
    secret: bytes = b""


@dataclass
class RequesterSession:
    """One session as the requester tracks it (keys, sequence numbers, transcripts)."""

    requester: Requester
    record: RecordParams
    version: int
    hash_name: str
    hash_size: int
    aead: int
    req_session_id: int
    session_id: int = 0
    secured_version: int = 0
    mac_only: bool = False
    use_psk: bool = False
    in_clear: bool = False
    heartbeat_period: int = 0
    mut_auth_requested: int = 0
    req_slot_id_param: int = 0
    measurement_summary_hash: bytes = b""
    th_prefix: bytes = b""
    message_k: bytearray = field(default_factory=bytearray)
    message_f: bytearray = field(default_factory=bytearray)
    mut_chain: bytes = b""
    #: the first encapsulated DIGESTS this requester sent (1.3 message EncapD: in the
    #: FINISH transcript when ALGORITHMS made our keys a multi-key connection)
    encap_d: bytes = b""
    handshake_secret: bytes = b""
    req_finished_key: bytes = b""
    rsp_finished_key: bytes = b""
    keys: dict[str, _Dir] = field(default_factory=dict)
    established: bool = False
    ended: bool = False
    #: every (plaintext request, plaintext response) sent in the session
    log: list[tuple[bytes, bytes]] = field(default_factory=list)
    padding_rng: Callable[[int], bytes] = os.urandom

    # ---- key schedule (DSP0274 "Key schedule") ------------------------------------------

    def _key_iv(self, secret: bytes) -> tuple[bytes, bytes]:
        ks = _AEADS[self.aead]
        key = _hkdf_expand(self.hash_name, secret, _bin(self.version, b"key", ks), ks)
        iv = _hkdf_expand(self.hash_name, secret, _bin(self.version, b"iv", 12), 12)
        return key, iv

    def derive_handshake(self, ikm: bytes, th1: bytes, psk: bool = False) -> None:
        h = self.hash_size
        fill = b"\xff" if psk and self.version >= 0x13 else b"\x00"
        self.handshake_secret = _hkdf_extract(self.hash_name, fill * h, ikm)
        req = _hkdf_expand(
            self.hash_name, self.handshake_secret, _bin(self.version, b"req hs data", h, th1), h
        )
        rsp = _hkdf_expand(
            self.hash_name, self.handshake_secret, _bin(self.version, b"rsp hs data", h, th1), h
        )
        self.req_finished_key = _hkdf_expand(
            self.hash_name, req, _bin(self.version, b"finished", h), h
        )
        self.rsp_finished_key = _hkdf_expand(
            self.hash_name, rsp, _bin(self.version, b"finished", h), h
        )
        self.keys["req"] = _Dir(*self._key_iv(req), secret=req)
        self.keys["rsp"] = _Dir(*self._key_iv(rsp), secret=rsp)

    def derive_data(self, th2: bytes) -> None:
        h = self.hash_size
        salt1 = _hkdf_expand(
            self.hash_name, self.handshake_secret, _bin(self.version, b"derived", h), h
        )
        master = _hkdf_extract(self.hash_name, salt1, bytes(h))
        for d, label in (("req", b"req app data"), ("rsp", b"rsp app data")):
            secret = _hkdf_expand(self.hash_name, master, _bin(self.version, label, h, th2), h)
            self.keys[d] = _Dir(*self._key_iv(secret), secret=secret)
        self.established = True

    def update_key(self, direction: str) -> None:
        h = self.hash_size
        old = self.keys[direction]
        secret = _hkdf_expand(self.hash_name, old.secret, _bin(self.version, b"traffic upd", h), h)
        self.keys[direction] = _Dir(*self._key_iv(secret), secret=secret)

    # ---- records (DSP0277) --------------------------------------------------------------

    def _cipher(self, key: bytes) -> AESGCM | ChaCha20Poly1305:
        return ChaCha20Poly1305(key) if self.aead == 0x04 else AESGCM(key)

    @staticmethod
    def _nonce(iv: bytes, seq: int) -> bytes:
        s = struct.pack("<Q", seq)
        return bytes(a ^ b for a, b in zip(iv[:8], s, strict=True)) + iv[8:]

    def encrypt(self, app: bytes, direction: str = "req", *, seq: int | None = None) -> bytes:
        """One record; ``seq`` forces a sequence number (replay tests) without advancing."""
        d = self.keys[direction]
        use = d.seq if seq is None else seq
        seq_field = struct.pack("<Q", use)[: self.record.sequence_number_size]
        head = struct.pack("<I", self.session_id) + seq_field
        if self.mac_only:
            aad = head + struct.pack("<H", len(app) + TAG) + app
            tag = self._cipher(d.key).encrypt(self._nonce(d.iv, use), b"", aad)
            out = aad + tag
        else:
            pad = b""
            if self.record.max_random_padding:
                pad = self.padding_rng(1 + self.padding_rng(1)[0] % self.record.max_random_padding)
            plain = struct.pack("<H", len(app)) + app + pad
            aad = head + struct.pack("<H", len(plain) + TAG)
            out = aad + self._cipher(d.key).encrypt(self._nonce(d.iv, use), plain, aad)
        if seq is None:
            d.seq += 1
        return out

    def decrypt(self, record: bytes, direction: str = "rsp") -> bytes:
        d = self.keys[direction]
        sn = self.record.sequence_number_size
        hl = 4 + sn + 2
        if len(record) < hl + TAG:
            raise RequesterError(f"secured response: {len(record)} bytes, too short")
        (sid,) = struct.unpack_from("<I", record, 0)
        if sid != self.session_id:
            raise RequesterError(
                f"secured response for session 0x{sid:08X}, expected 0x{self.session_id:08X}"
            )
        if record[4 : 4 + sn] != struct.pack("<Q", d.seq)[:sn]:
            raise RequesterError("secured response: wrong sequence number in the header")
        (length,) = struct.unpack_from("<H", record, 4 + sn)
        if length < TAG or hl + length > len(record):
            raise RequesterError(f"secured response: bad Length {length}")
        body = record[hl : hl + length]
        nonce = self._nonce(d.iv, d.seq)
        try:
            if self.mac_only:
                self._cipher(d.key).decrypt(nonce, body[-TAG:], record[:hl] + body[:-TAG])
                app = body[:-TAG]
            else:
                plain = self._cipher(d.key).decrypt(nonce, body, record[:hl])
                (alen,) = struct.unpack_from("<H", plain, 0)
                if 2 + alen > len(plain):
                    raise RequesterError("secured response: ApplicationDataLength too large")
                app = plain[2 : 2 + alen]
        except InvalidTag:
            raise RequesterError(
                f"secured response does not authenticate (sequence number {d.seq})"
            ) from None
        d.seq += 1
        return app

    # ---- in-session exchanges -----------------------------------------------------------

    async def exchange_record(self, record: bytes) -> TransportMessage:
        return await self.requester.channel.exchange(record, secured=True)

    async def send(self, request: bytes, *, allow_error: bool = False) -> bytes:
        """Send one request in the session; ERROR raises SpdmErrorReply unless allowed."""
        if self.ended:
            raise RequesterError("the session has ended")
        reply = await self.exchange_record(self.encrypt(self.record.wrap(request)))
        if not reply.secured:
            raise RequesterError(
                f"{code_name(request[1])}: plain reply {reply.message[:8].hex()} in a session"
            )
        app = self.record.unwrap(self.decrypt(reply.message))
        self.log.append((request, app))
        if len(app) < 4:
            raise RequesterError(f"{code_name(request[1])}: {len(app)}-byte response")
        if app[1] == ResponseCode.ERROR and not allow_error:
            raise SpdmErrorReply(request[1], app)
        return app

    def _expect(self, rsp: bytes, code: ResponseCode) -> None:
        if rsp[1] != code:
            raise RequesterError(f"expected {code.name}, got {code_name(rsp[1])}")
        if rsp[0] != self.version:
            raise RequesterError(f"{code.name}: version 0x{rsp[0]:02X}")

    async def send_handshake(self, request: bytes) -> bytes:
        """A handshake-phase request: in the clear with HANDSHAKE_IN_THE_CLEAR (libspdm sends
        every handshake message of a KEY_EXCHANGE session in the clear then), else secured."""
        if self.in_clear and not self.established and not self.use_psk:
            rsp = await self.requester.send(request)
            self.log.append((request, rsp))
            return rsp
        return await self.send(request)

    async def heartbeat(self) -> None:
        rsp = await self.send(bytes((self.version, RequestCode.HEARTBEAT, 0, 0)))
        self._expect(rsp, ResponseCode.HEARTBEAT_ACK)
        if len(rsp) != 4:
            raise RequesterError(f"HEARTBEAT_ACK is {len(rsp)} bytes")

    async def key_update(self, operation: int, tag: int | None = None) -> None:
        """KEY_UPDATE with libspdm's requester order of key switches, then VerifyNewKey."""
        tag = self.padding_rng(1)[0] if tag is None else tag
        request = bytes((self.version, RequestCode.KEY_UPDATE, operation, tag))
        if operation == 2:  # UpdateAllKeys: the ACK already comes under the new response key
            record = self.encrypt(self.record.wrap(request))
            self.update_key("rsp")
            reply = await self.exchange_record(record)
            app = self.record.unwrap(self.decrypt(reply.message))
            self.log.append((request, app))
            rsp = app
        else:
            rsp = await self.send(request)
        self._expect(rsp, ResponseCode.KEY_UPDATE_ACK)
        if rsp[2:4] != bytes((operation, tag)):
            raise RequesterError("KEY_UPDATE_ACK does not echo the operation and tag")
        if operation in (1, 2):
            self.update_key("req")
            tag2 = self.padding_rng(1)[0]
            rsp = await self.send(bytes((self.version, RequestCode.KEY_UPDATE, 3, tag2)))
            self._expect(rsp, ResponseCode.KEY_UPDATE_ACK)
            if rsp[2:4] != bytes((3, tag2)):
                raise RequesterError("KEY_UPDATE_ACK (VerifyNewKey) does not echo op and tag")

    async def responder_key_update(self) -> None:
        """Answer a responder-initiated KEY_UPDATE (encapsulated; spdm-emu OOB_ENCAP_KEY_UPDATE):
        UpdateKey -> ACK, then VerifyNewKey arrives under the responder's new key."""
        v = self.version
        rsp = await self.send(bytes((v, RequestCode.GET_ENCAPSULATED_REQUEST, 0, 0)))
        self._expect(rsp, ResponseCode.ENCAPSULATED_REQUEST)
        request_id, request = rsp[2], rsp[4:]
        ack_size = 8 if v >= 0x12 else 4
        while request:
            if request[:2] != bytes((v, RequestCode.KEY_UPDATE)) or len(request) != 4:
                raise RequesterError(f"expected an encapsulated KEY_UPDATE, got {request.hex()}")
            op = request[2]
            answer = bytes((v, ResponseCode.KEY_UPDATE_ACK)) + request[2:4]
            deliver = bytes((v, RequestCode.DELIVER_ENCAPSULATED_RESPONSE, request_id, 0)) + answer
            record = self.encrypt(self.record.wrap(deliver))
            if op == 1:  # the responder switches to its new key for the next message
                self.update_key("rsp")
            reply = await self.exchange_record(record)
            rsp = self.record.unwrap(self.decrypt(reply.message))
            self.log.append((deliver, rsp))
            self._expect(rsp, ResponseCode.ENCAPSULATED_RESPONSE_ACK)
            if rsp[3] == 1:
                request_id, request = rsp[2], rsp[ack_size:]
            else:
                request = b""

    async def end_session(self, attributes: int = 0) -> None:
        rsp = await self.send(bytes((self.version, RequestCode.END_SESSION, attributes, 0)))
        self._expect(rsp, ResponseCode.END_SESSION_ACK)
        self.ended = True
        self.requester.sessions.pop(self.session_id, None)


# --- opaque data (DSP0277 supported version list / version selection) -------------------------


def opaque_supported_versions(version: int, versions: Sequence[int]) -> bytes:
    elem_data = bytes((1, 1, len(versions))) + b"".join(struct.pack("<H", v) for v in versions)
    elem = bytes((0, 0)) + struct.pack("<H", len(elem_data)) + elem_data
    elem += bytes(-len(elem) % 4)
    if version >= 0x12:
        return bytes((1, 0, 0, 0)) + elem
    return struct.pack("<IBBH", 0x444D5446, 1, 1, 0) + elem


def parse_version_selection(version: int, data: bytes) -> int:
    """The selected DSP0277 version in a KEY_EXCHANGE_RSP / PSK_EXCHANGE_RSP opaque field."""
    if version >= 0x12:
        total, off = data[0], 4
    else:
        spec, ov, total, _ = struct.unpack_from("<IBBH", data, 0)
        if spec != 0x444D5446 or ov != 1:
            raise RequesterError("opaque data: not the DSP0277 format")
        off = 8
    selected = None
    for _ in range(total):
        eid, vlen = data[off], data[off + 1]
        (dlen,) = struct.unpack_from("<H", data, off + 2 + vlen)
        elem = data[off + 4 + vlen : off + 4 + vlen + dlen]
        if eid == 0 and vlen == 0 and len(elem) == 4 and elem[0] == 1 and elem[1] == 0:
            selected = struct.unpack_from("<H", elem, 2)[0]
        size = 4 + vlen + dlen
        off += size + (-size % 4)
    if off != len(data):
        raise RequesterError(f"opaque data: {len(data)} bytes, the elements take {off}")
    if selected is None:
        raise RequesterError("opaque data: no version selection element")
    return int(selected)


# --- handshakes ------------------------------------------------------------------------------


def _both(req: Requester, flag: int) -> bool:
    return bool(req.config.flags & flag) and bool(req.neg.rsp_flags & flag)


def _new_session(req: Requester, binding: str, req_session_id: int | None) -> RequesterSession:
    hash_bit = req.neg.base_hash
    aead = req.neg.struct(AlgType.AEAD)
    if hash_bit not in _HASHES or aead not in _AEADS:
        raise RequesterError("no usable hash / AEAD was negotiated")
    name, size = _HASHES[hash_bit]
    sid = int.from_bytes(os.urandom(2), "little") if req_session_id is None else req_session_id
    return RequesterSession(
        requester=req,
        record=RecordParams.for_binding(binding),
        version=req.version,
        hash_name=name,
        hash_size=size,
        aead=aead,
        req_session_id=sid & 0xFFFF,
        mac_only=not _both(req, RequesterCap.ENCRYPT_CAP),
        in_clear=_both(req, RequesterCap.HANDSHAKE_IN_THE_CLEAR_CAP),
    )


def _summary_size(req: Requester, kind: int, hsize: int) -> int:
    measures = req.neg.rsp_flags & (ResponderCap.MEAS_CAP_NO_SIG | ResponderCap.MEAS_CAP_SIG)
    return hsize if measures and kind in (1, 0xFF) else 0


def _dhe_keygen(group: int) -> tuple[Any, bytes, Callable[[bytes], bytes]]:
    kind, param, size = _DHE[group]
    if kind == "ecdhe":
        priv = ec.generate_private_key(param())
        nums = priv.public_key().public_numbers()
        c = size // 2
        pub = nums.x.to_bytes(c, "big") + nums.y.to_bytes(c, "big")

        def shared(peer: bytes) -> bytes:
            pk = ec.EllipticCurvePublicNumbers(
                int.from_bytes(peer[:c], "big"), int.from_bytes(peer[c:], "big"), param()
            ).public_key()
            return priv.exchange(ec.ECDH(), pk).rjust(c, b"\x00")

        return priv, pub, shared
    prime = _ffdhe_prime(param)
    x = int.from_bytes(os.urandom(48), "big") | 1
    pn = dh.DHParameterNumbers(prime, 2)
    dpriv = dh.DHPrivateNumbers(x, dh.DHPublicNumbers(pow(2, x, prime), pn)).private_key()
    dpub = pow(2, x, prime).to_bytes(size, "big")

    def dshared(peer: bytes) -> bytes:
        pk = dh.DHPublicNumbers(int.from_bytes(peer, "big"), pn).public_key()
        return dpriv.exchange(pk).rjust(size, b"\x00")

    return dpriv, dpub, dshared


def _kem_keygen(kem: int) -> tuple[bytes, Callable[[bytes], bytes], int]:
    """SPDM 1.4 KEM: (encapsulation key, decapsulate, ciphertext size)."""
    if kem not in _KEM:
        raise RequesterError(f"KEM 0x{kem:X} not usable (ML-KEM-768/1024 only)")
    cls, _ek_size, ct_size = _KEM[kem]
    priv = cls.generate()

    def shared(ciphertext: bytes) -> bytes:
        secret: bytes = priv.decapsulate(ciphertext)
        return secret

    return priv.public_key().public_bytes_raw(), shared, ct_size


async def key_exchange(
    req: Requester,
    *,
    peer_chain: bytes,
    binding: str = "doe",
    slot_id: int = 0,
    measurement_summary: int = 0,
    session_policy: int = 0,
    req_session_id: int | None = None,
    secured_versions: Sequence[int] = DEFAULT_SECURED_VERSIONS,
    opaque: bytes | None = None,
) -> RequesterSession:
    """KEY_EXCHANGE: checks the signature over TH and ResponderVerifyData; handshake keys."""
    s = _new_session(req, binding, req_session_id)
    v = req.version
    kem = req.neg.kem
    group = req.neg.struct(AlgType.DHE)
    if kem:
        pub, shared_fn, dsize = _kem_keygen(kem)
    else:
        if group not in _DHE:
            raise RequesterError(f"DHE group 0x{group:X} not usable")
        _, pub, shared_fn = _dhe_keygen(group)
        dsize = _DHE[group][2]
    if opaque is None:
        opaque = opaque_supported_versions(v, secured_versions)
    request = (
        bytes((v, RequestCode.KEY_EXCHANGE, measurement_summary, slot_id))
        + struct.pack("<HBB", s.req_session_id, session_policy if v >= 0x12 else 0, 0)
        + os.urandom(32)
        + pub
        + struct.pack("<H", len(opaque))
        + opaque
    )
    rsp = await req.send(request)
    req.expect(rsp, ResponseCode.KEY_EXCHANGE_RSP)
    asym = req.neg.asym
    if asym not in _ASYM:
        raise RequesterError(f"signature algorithm 0x{asym:X} not usable")
    sig_size = _ASYM[asym][1]
    msize = _summary_size(req, measurement_summary, s.hash_size)
    vsize = 0 if s.in_clear else s.hash_size
    base = 40 + dsize + msize
    if len(rsp) < base + 2:
        raise RequesterError(f"KEY_EXCHANGE_RSP: {len(rsp)} bytes")
    (olen,) = struct.unpack_from("<H", rsp, base)
    op_end = base + 2 + olen
    if len(rsp) < op_end + sig_size + vsize:
        raise RequesterError(
            f"KEY_EXCHANGE_RSP: {len(rsp)} bytes, need {op_end + sig_size + vsize}"
        )
    rsp = rsp[: op_end + sig_size + vsize]
    s.heartbeat_period = rsp[2]
    rsp_sid, s.mut_auth_requested, s.req_slot_id_param = struct.unpack_from("<HBB", rsp, 4)
    s.session_id = (rsp_sid << 16) | s.req_session_id
    s.requester.sessions[s.session_id] = s  # Requester.send(..., session_id=) routes here
    s.measurement_summary_hash = rsp[40 + dsize : base]
    s.secured_version = parse_version_selection(v, rsp[base + 2 : op_end]) if olen else 0x1000
    if olen and s.secured_version not in secured_versions:
        raise RequesterError(f"selected DSP0277 version 0x{s.secured_version:04X} not offered")
    s.th_prefix = bytes(req.message_a) + req.message_d + _hash(s.hash_name, peer_chain)
    s.message_k += request + rsp[:op_end]
    signature = rsp[op_end : op_end + sig_size]
    th = s.th_prefix + bytes(s.message_k)
    data = th if v < 0x12 else _signing_prefix(v, KEY_EXCHANGE_RSP_CONTEXT) + _hash(s.hash_name, th)
    leaf = chain_leaf_key(s.hash_size, peer_chain)
    if asym == 0x800:  # Ed448 with a context: cryptography has no API, use the project's
        from emulator.crypto import KEY_EXCHANGE_RSP_SIGN_CONTEXT, spdm_verify

        ok = spdm_verify(
            v, asym, req.neg.base_hash, leaf, KEY_EXCHANGE_RSP_SIGN_CONTEXT, th, signature
        )
    else:
        ok = _verify(asym, s.hash_name, leaf, data, signature, KEY_EXCHANGE_RSP_CONTEXT)
    if not ok:
        raise RequesterError("KEY_EXCHANGE_RSP signature does not verify over TH")
    s.message_k += signature
    th1 = _hash(s.hash_name, s.th_prefix + bytes(s.message_k))
    s.derive_handshake(shared_fn(rsp[40 : 40 + dsize]), th1)
    if not s.in_clear:
        expected = hmac.new(s.rsp_finished_key, th1, s.hash_name).digest()
        if not hmac.compare_digest(expected, rsp[op_end + sig_size :]):
            raise RequesterError("KEY_EXCHANGE_RSP ResponderVerifyData mismatch")
        s.message_k += rsp[op_end + sig_size :]
    return s


async def run_encapsulated(s: RequesterSession, identity: RequesterIdentity) -> None:
    """Answer the responder's encapsulated GET_DIGESTS / GET_CERTIFICATE (mutual auth)."""
    v = s.version
    chain = spdm_chain(s.hash_name, identity.certs_der)
    send = s.send_handshake
    if s.mut_auth_requested == 0x04:
        request_id, request = 0, bytes((v, RequestCode.GET_DIGESTS, 0, 0))
    else:
        rsp = await send(bytes((v, RequestCode.GET_ENCAPSULATED_REQUEST, 0, 0)))
        s._expect(rsp, ResponseCode.ENCAPSULATED_REQUEST)
        request_id, request = rsp[2], rsp[4:]
    ack_size = 8 if v >= 0x12 else 4
    multi = s.requester.neg.multi_key_req
    while request:
        if request[1] == RequestCode.GET_DIGESTS:
            mask = 1 << identity.slot_id
            answer = bytes((v, ResponseCode.DIGESTS, mask if v >= 0x13 else 0, mask))
            answer += _hash(s.hash_name, chain)
            if multi:  # KeyPairID, CertificateInfo (DeviceCert), KeyUsageMask
                answer += bytes((identity.key_pair_id, 1)) + struct.pack("<H", 0x0003)
            if multi and not s.encap_d:
                s.encap_d = answer
        elif request[1] == RequestCode.GET_CERTIFICATE:
            offset, length = struct.unpack_from("<HH", request, 4)
            portion = chain[offset : offset + length]
            remainder = len(chain) - offset - len(portion)
            answer = bytes((v, ResponseCode.CERTIFICATE, request[2] & 0x0F, 1 if multi else 0))
            answer += struct.pack("<HH", len(portion), remainder) + portion
        else:
            answer = bytes((v, ResponseCode.ERROR, ErrorCode.UnsupportedRequest, request[1]))
        rsp = await send(
            bytes((v, RequestCode.DELIVER_ENCAPSULATED_RESPONSE, request_id, 0)) + answer
        )
        s._expect(rsp, ResponseCode.ENCAPSULATED_RESPONSE_ACK)
        if v >= 0x12 and rsp[4] != request_id:
            raise RequesterError("ENCAPSULATED_RESPONSE_ACK AckRequestID mismatch")
        if rsp[3] == 1:
            request_id, request = rsp[2], rsp[ack_size:]
        else:
            request = b""
    s.mut_chain = chain


async def finish(s: RequesterSession, identity: RequesterIdentity | None = None) -> None:
    """FINISH (in the session, or in the clear); TH2 data keys."""
    req = s.requester
    v = s.version
    mut = s.mut_auth_requested
    if mut and identity is None:
        raise RequesterError("the responder asked for mutual authentication: need an identity")
    if mut and not s.mut_chain:
        s.mut_chain = spdm_chain(s.hash_name, identity.certs_der)  # type: ignore[union-attr]
    header = bytes((v, RequestCode.FINISH, 1 if mut else 0, identity.slot_id if mut else 0))  # type: ignore[union-attr]
    if v >= 0x14:
        header += b"\x00\x00"  # 1.4 OpaqueDataLength 0 (signed and MACed with the header)
    s.message_f = bytearray(header)
    th_pre = s.th_prefix + bytes(s.message_k)
    if mut:
        th_pre += s.encap_d  # empty unless our keys make a multi-key connection
        th_pre += _hash(s.hash_name, s.mut_chain)
    signature = b""
    if mut:
        assert identity is not None
        th = th_pre + bytes(s.message_f)
        asym = req.neg.req_asym
        data = th if v < 0x12 else _signing_prefix(v, FINISH_CONTEXT) + _hash(s.hash_name, th)
        signature = _sign(asym, s.hash_name, identity.key, data, FINISH_CONTEXT)
        s.message_f += signature
    verify = hmac.new(
        s.req_finished_key, _hash(s.hash_name, th_pre + bytes(s.message_f)), s.hash_name
    ).digest()
    request = header + signature + verify
    s.message_f += verify
    if s.in_clear:
        rsp = await req.send(request)
        req.expect(rsp, ResponseCode.FINISH_RSP)
        head = _finish_rsp_head(v, rsp, "FINISH_RSP")
        rsp = rsp[: head + s.hash_size]
        s.message_f += rsp[:head]
        expected = hmac.new(
            s.rsp_finished_key, _hash(s.hash_name, th_pre + bytes(s.message_f)), s.hash_name
        ).digest()
        if not hmac.compare_digest(expected, rsp[head:]):
            raise RequesterError("FINISH_RSP ResponderVerifyData mismatch")
        s.message_f += rsp[head:]
    else:
        rsp = await s.send(request)
        s._expect(rsp, ResponseCode.FINISH_RSP)
        head = _finish_rsp_head(v, rsp, "FINISH_RSP")
        if len(rsp) != head:
            raise RequesterError(f"FINISH_RSP is {len(rsp)} bytes inside the session")
        s.message_f += rsp
    s.derive_data(_hash(s.hash_name, th_pre + bytes(s.message_f)))


def _finish_rsp_head(version: int, rsp: bytes, what: str) -> int:
    """Size of FINISH_RSP / PSK_FINISH_RSP before ResponderVerifyData: the header, and from
    1.4 OpaqueDataLength + OpaqueData (at most 1024 bytes)."""
    if version < 0x14:
        return 4
    if len(rsp) < 6:
        raise RequesterError(f"{what}: {len(rsp)} bytes, 1.4 needs OpaqueDataLength")
    olen = int.from_bytes(rsp[4:6], "little")
    if olen > 1024 or len(rsp) < 6 + olen:
        raise RequesterError(f"{what}: OpaqueDataLength {olen} does not fit")
    return 6 + olen


async def open_session(
    req: Requester,
    *,
    peer_chain: bytes,
    binding: str = "doe",
    identity: RequesterIdentity | None = None,
    **kwargs: Any,
) -> RequesterSession:
    """KEY_EXCHANGE, the encapsulated flow when asked for, FINISH: an established session."""
    s = await key_exchange(req, peer_chain=peer_chain, binding=binding, **kwargs)
    if s.mut_auth_requested in (0x02, 0x04):
        if identity is None:
            raise RequesterError("mutual authentication requested but no requester identity")
        await run_encapsulated(s, identity)
    await finish(s, identity)
    return s


async def psk_exchange(
    req: Requester,
    *,
    psk: bytes,
    hint: bytes = b"",
    binding: str = "doe",
    measurement_summary: int = 0,
    session_policy: int = 0,
    req_session_id: int | None = None,
    context: bytes | None = None,
    secured_versions: Sequence[int] = DEFAULT_SECURED_VERSIONS,
    finish: bool = True,
) -> RequesterSession:
    """PSK_EXCHANGE (+ PSK_FINISH when the responder sent a context, unless ``finish`` is
    False: then the session is returned in its handshake phase)."""
    s = _new_session(req, binding, req_session_id)
    s.use_psk = True
    s.in_clear = False
    v = req.version
    context = os.urandom(s.hash_size) if context is None else context
    opaque = opaque_supported_versions(v, secured_versions)
    request = (
        bytes(
            (v, RequestCode.PSK_EXCHANGE, measurement_summary, session_policy if v >= 0x12 else 0)
        )
        + struct.pack("<HHHH", s.req_session_id, len(hint), len(context), len(opaque))
        + hint
        + context
        + opaque
    )
    rsp = await req.send(request)
    req.expect(rsp, ResponseCode.PSK_EXCHANGE_RSP)
    rsp_sid, _, ctx_len, olen = struct.unpack_from("<HHHH", rsp, 4)
    msize = _summary_size(req, measurement_summary, s.hash_size)
    end = 12 + msize + ctx_len + olen
    if len(rsp) < end + s.hash_size:
        raise RequesterError(f"PSK_EXCHANGE_RSP: {len(rsp)} bytes")
    s.heartbeat_period = rsp[2]
    s.session_id = (rsp_sid << 16) | s.req_session_id
    s.requester.sessions[s.session_id] = s  # Requester.send(..., session_id=) routes here
    s.measurement_summary_hash = rsp[12 : 12 + msize]
    if olen:
        s.secured_version = parse_version_selection(v, rsp[end - olen : end])
    s.th_prefix = bytes(req.message_a)
    s.message_k += request + rsp[:end]
    th1 = _hash(s.hash_name, s.th_prefix + bytes(s.message_k))
    s.derive_handshake(psk, th1, psk=True)
    expected = hmac.new(s.rsp_finished_key, th1, s.hash_name).digest()
    if not hmac.compare_digest(expected, rsp[end : end + s.hash_size]):
        raise RequesterError("PSK_EXCHANGE_RSP ResponderVerifyData mismatch")
    s.message_k += rsp[end : end + s.hash_size]
    if ctx_len == 0:
        s.derive_data(_hash(s.hash_name, s.th_prefix + bytes(s.message_k)))
        return s
    if not finish:
        return s
    header = bytes((v, RequestCode.PSK_FINISH, 0, 0))
    if v >= 0x14:
        header += b"\x00\x00"  # 1.4 OpaqueDataLength 0
    th = s.th_prefix + bytes(s.message_k) + header
    verify = hmac.new(s.req_finished_key, _hash(s.hash_name, th), s.hash_name).digest()
    rsp = await s.send(header + verify)
    s._expect(rsp, ResponseCode.PSK_FINISH_RSP)
    head = _finish_rsp_head(v, rsp, "PSK_FINISH_RSP")
    s.message_f = bytearray(header + verify + rsp[:head])
    s.derive_data(_hash(s.hash_name, s.th_prefix + bytes(s.message_k) + bytes(s.message_f)))
    return s


def load_identity(slot_dir: str, slot_id: int = 0) -> RequesterIdentity:
    """A requester identity from a slot directory (``chain.der`` + ``leaf.key.pem``)."""
    from pathlib import Path

    path = Path(slot_dir)
    certs = _split_der((path / "chain.der").read_bytes())
    key = serialization.load_pem_private_key((path / "leaf.key.pem").read_bytes(), None)
    if not isinstance(
        key,
        ec.EllipticCurvePrivateKey
        | rsa.RSAPrivateKey
        | ed25519.Ed25519PrivateKey
        | mldsa.MLDSA44PrivateKey
        | mldsa.MLDSA65PrivateKey
        | mldsa.MLDSA87PrivateKey,
    ):
        raise RequesterError(f"{slot_dir}: unsupported requester key")
    return RequesterIdentity(certs, key, slot_id)
