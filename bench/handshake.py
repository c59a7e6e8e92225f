"""The full handshake of bench.py section ``handshake`` and its crypto floor.

The handshake (14 requests, SPDM 1.3, ECDSA P-384, SHA-384, SECP384R1, AES-256-GCM, PCI
DOE), driven by the project's requester:

    GET_VERSION, GET_CAPABILITIES, NEGOTIATE_ALGORITHMS, GET_DIGESTS, GET_CERTIFICATE x2,
    CHALLENGE, GET_MEASUREMENTS (all blocks, signed), KEY_EXCHANGE, FINISH, and in the
    session HEARTBEAT, KEY_UPDATE (UpdateKey), KEY_UPDATE (VerifyNewKey), END_SESSION.

The crypto floor (:func:`crypto_floor`) is the cryptography the responder cannot avoid for
that handshake, done directly with ``cryptography`` / ``hashlib`` on the handshake's own
message sizes, with nothing else: three ECDSA P-384 signatures (RFC 6979, as the responder
signs) over the SPDM 1.2+ signing prefix and the transcript hashes (M1, L1, TH), an
ephemeral SECP384R1 key and one ECDH, the key schedule's HMACs (1 extract + 8 expands for
the handshake keys, 1 HMAC ResponderVerifyData, 1 HMAC RequesterVerifyData, 2 + 5 for the
data keys and the export master secret, 3 for KEY_UPDATE), running transcript hashes, one
keyed AES-GCM object per key (6) and one AES-GCM open + seal per secured request (5).
Per-connection constants (the certificate chain hash, the measurement digests) are not in
it: the responder computes them once per device.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as c_hmac
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from emulator.codec.constants import (
    AeadSuite,
    BaseAsymAlgo,
    BaseHashAlgo,
    DheGroup,
    RequesterCap,
)
from emulator.crypto import (
    CHALLENGE_AUTH_SIGN_CONTEXT,
    KEY_EXCHANGE_RSP_SIGN_CONTEXT,
    MEASUREMENTS_SIGN_CONTEXT,
    load_private_key,
    signing_prefix,
)

VERSION = 0x13
FLAGS = int(
    RequesterCap.CERT_CAP
    | RequesterCap.CHAL_CAP
    | RequesterCap.ENCRYPT_CAP
    | RequesterCap.MAC_CAP
    | RequesterCap.KEY_EX_CAP
    | RequesterCap.HBEAT_CAP
    | RequesterCap.KEY_UPD_CAP
)
MESSAGES = [
    "GET_VERSION",
    "GET_CAPABILITIES",
    "NEGOTIATE_ALGORITHMS",
    "GET_DIGESTS",
    "GET_CERTIFICATE",
    "GET_CERTIFICATE",
    "CHALLENGE",
    "GET_MEASUREMENTS",
    "KEY_EXCHANGE",
    "FINISH",
    "HEARTBEAT",
    "KEY_UPDATE(UpdateKey)",
    "KEY_UPDATE(VerifyNewKey)",
    "END_SESSION",
]


def requester_config() -> Any:
    from emulator.requester import RequesterConfig

    return RequesterConfig(
        version=VERSION,
        flags=FLAGS,
        base_asym=int(BaseAsymAlgo.ECDSA_P384),
        base_hash=int(BaseHashAlgo.SHA_384),
        dhe=int(DheGroup.SECP_384_R1),
        aead=int(AeadSuite.AES_256_GCM),
    )


@dataclass
class Transcript:
    """What one handshake exchanged (plaintext), for the floor's message sizes."""

    plain: list[tuple[bytes, bytes]] = field(default_factory=list)
    secured: list[tuple[bytes, bytes]] = field(default_factory=list)


async def handshake(channel: Any) -> Transcript:
    """The 14 requests over ``channel`` (a requester Channel); what was exchanged."""
    from emulator.requester import Requester, identity, measurements
    from emulator.requester.session import open_session

    req = Requester(channel, requester_config())
    await req.vca()
    await identity.get_digests(req)
    chain = (await identity.get_certificate(req, 0)).chain
    await identity.challenge(req, 0)
    await measurements.get_measurements(req, operation=0xFF, signed=True)
    s = await open_session(req, peer_chain=chain)
    await s.heartbeat()
    await s.key_update(1)
    await s.end_session()
    out = Transcript()
    out.plain = [(bytes(q), bytes(r)) for q, r in req.log]
    out.secured = [(bytes(q), bytes(r)) for q, r in s.log]
    return out


class TimedConnection:
    """An :class:`~emulator.connection.SpdmConnection` whose ``receive`` calls are timed
    (thread CPU time, so another thread or process does not count)."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.binding = connection.binding
        self.cpu_ns: list[int] = []

    def receive(self, payload: bytes) -> Any:
        t0 = time.thread_time_ns()
        reply = self.connection.receive(payload)
        self.cpu_ns.append(time.thread_time_ns() - t0)
        return reply


class RecordingConnection(TimedConnection):
    """A :class:`TimedConnection` that also keeps every request and its reply."""

    def __init__(self, connection: Any) -> None:
        super().__init__(connection)
        self.requests: list[bytes] = []
        self.replies: list[list[bytes]] = []

    def receive(self, payload: bytes) -> Any:
        reply = super().receive(payload)
        self.requests.append(bytes(payload))
        self.replies.append(list(reply.payloads))
        return reply


class Replay:
    """One handshake recorded against a seeded device, to be sent again request by request
    to fresh connections of that device (the responder answers with the same bytes: its
    randomness is the seed's), with nothing running between two requests.

    What it shows is the responder's own cost per request, hot; the seeded device derives
    its DHE key from the seed (``ec.derive_private_key``), which costs more than the OS
    key generation of the unseeded handshake, so KEY_EXCHANGE here is not comparable."""

    def __init__(self, device: Any, binding: Any, number: int = 1) -> None:
        from emulator.connection import SpdmConnection
        from emulator.requester.session import ConnectionChannel

        if device.seed is None:
            raise ValueError("Replay needs a seeded device")
        self.device, self.binding, self.number = device, binding, number
        recording = RecordingConnection(SpdmConnection(device, binding, number=number))
        asyncio.run(handshake(ConnectionChannel(recording)))
        self.requests = recording.requests
        self.replies = recording.replies

    def __call__(self) -> list[int]:
        """One replay: thread CPU time per request (RuntimeError if a reply differs)."""
        from emulator.connection import SpdmConnection

        connection = SpdmConnection(self.device, self.binding, number=self.number)
        clock = time.thread_time_ns
        spent: list[int] = []
        for request, expected in zip(self.requests, self.replies, strict=True):
            t0 = clock()
            reply = connection.receive(request)
            spent.append(clock() - t0)
            if reply.payloads != expected:
                raise RuntimeError(f"replayed request {len(spent)}: another reply")
        return spent


class CryptoFloor:
    """:func:`crypto_floor` with its inputs prepared from one handshake's transcript."""

    def __init__(self, transcript: Transcript, key_path: str) -> None:
        self.key = load_private_key(key_path)
        assert isinstance(self.key, ec.EllipticCurvePrivateKey)
        plain = transcript.plain
        by_code: dict[int, list[tuple[bytes, bytes]]] = {}
        for q, r in plain:
            by_code.setdefault(q[1], []).append((q, r))
        vca = [p for code in (0x84, 0xE1, 0xE3) for p in by_code[code]]
        self.a = b"".join(q + r for q, r in vca)
        self.b = b"".join(q + r for code in (0x81, 0x82) for q, r in by_code[code])
        (chal_q, chal_r), *_ = by_code[0x83]
        self.c = chal_q + chal_r[:-96]
        (meas_q, meas_r), *_ = by_code[0xE0]
        self.l1 = self.a + meas_q + meas_r[:-96]
        (kx_q, kx_r), *_ = by_code[0xE4]
        self.k = kx_q + kx_r[: -(96 + 48)]
        self.peer = b"\x04" + kx_q[40 : 40 + 96]
        (fin_q, fin_r) = transcript.secured[0]
        self.finish = fin_q
        self.finish_rsp = fin_r
        self.secured_sizes = [(len(q), len(r)) for q, r in transcript.secured]
        self.prefixes = [
            signing_prefix(VERSION, ctx)
            for ctx in (
                CHALLENGE_AUTH_SIGN_CONTEXT,
                MEASUREMENTS_SIGN_CONTEXT,
                KEY_EXCHANGE_RSP_SIGN_CONTEXT,
            )
        ]
        # records of the request sizes under a fixed key: opening one costs what opening
        # the real record costs (the key is set up separately, from the derived key)
        self.fixed = AESGCM(bytes(32))
        self.iv = bytes(12)
        self.header = bytes(6)
        self.records = [
            self.fixed.encrypt(self.iv, bytes(2 + q), self.header) for q, _ in self.secured_sizes
        ]
        self.ct_hash = bytes(48)  # Hash(Ct): per device, not per connection

    def __call__(self) -> None:
        crypto_floor(self)


def _hmac(key: bytes, data: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
    mac = c_hmac.HMAC(key, algorithm)
    mac.update(data)
    return mac.finalize()


def crypto_floor(f: CryptoFloor) -> None:
    """The responder's unavoidable cryptography for one handshake (module docstring)."""
    sha = hashes.SHA384()
    ecdsa = ec.ECDSA(sha, deterministic_signing=True)
    key = f.key
    # CHALLENGE_AUTH over M1 = A || B || C
    m1 = hashlib.sha384(f.a)
    m1.update(f.b)
    m1.update(f.c)
    key.sign(f.prefixes[0] + m1.digest(), ecdsa)
    # MEASUREMENTS over L1
    key.sign(f.prefixes[1] + hashlib.sha384(f.l1).digest(), ecdsa)
    # KEY_EXCHANGE_RSP: DHE, signature over TH, handshake keys, ResponderVerifyData
    eph = ec.generate_private_key(ec.SECP384R1())
    eph.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP384R1(), f.peer)
    shared = eph.exchange(ec.ECDH(), peer)
    th = hashlib.sha384(f.a)
    th.update(f.ct_hash)
    th.update(f.k)
    signature = key.sign(f.prefixes[2] + th.copy().digest(), ecdsa)
    th.update(signature)
    th1 = th.copy().digest()
    hs = _hmac(bytes(48), shared, sha)
    req_hs = _hmac(hs, bytes(20) + th1 + b"\x01", sha)
    rsp_hs = _hmac(hs, bytes(20) + th1 + b"\x01", sha)
    req_fin = _hmac(req_hs, bytes(19), sha)
    rsp_fin = _hmac(rsp_hs, bytes(19), sha)
    keys = [_hmac(secret, bytes(14), sha) for secret in (req_hs, req_hs, rsp_hs, rsp_hs)]
    th.update(_hmac(rsp_fin, th1, sha))
    # FINISH: open, RequesterVerifyData, FINISH_RSP sealed, data keys
    AESGCM(keys[0][:32])
    f.fixed.decrypt(f.iv, f.records[0], f.header)
    th.update(f.finish[:4])
    expected = _hmac(req_fin, th.copy().digest(), sha)
    assert len(expected) == 48
    th.update(f.finish[4:])
    th.update(f.finish_rsp)
    th2 = th.digest()
    AESGCM(keys[2][:32]).encrypt(f.iv, bytes(2 + len(f.finish_rsp)), f.header)
    salt1 = _hmac(hs, bytes(20), sha)
    master = _hmac(salt1, bytes(48), sha)
    req_app = _hmac(master, bytes(20) + th2 + b"\x01", sha)
    rsp_app = _hmac(master, bytes(20) + th2 + b"\x01", sha)
    _hmac(master, bytes(20) + th2 + b"\x01", sha)  # export master secret
    req_key = _hmac(req_app, bytes(14), sha)
    _hmac(req_app, bytes(13), sha)
    rsp_key = _hmac(rsp_app, bytes(14), sha)
    _hmac(rsp_app, bytes(13), sha)
    AESGCM(req_key[:32])
    response = AESGCM(rsp_key[:32])
    # HEARTBEAT, KEY_UPDATE (UpdateKey: next request key), VerifyNewKey, END_SESSION
    for index, (_, rsp_size) in enumerate(f.secured_sizes[1:], start=1):
        f.fixed.decrypt(f.iv, f.records[index], f.header)
        if index == 2:
            updated = _hmac(req_app, bytes(21), sha)
            AESGCM(_hmac(updated, bytes(14), sha)[:32])
            _hmac(updated, bytes(13), sha)
        response.encrypt(f.iv, bytes(2 + rsp_size), f.header)


def median(values: list[int] | list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        return 0.0
    mid = n // 2
    return float(ordered[mid]) if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def time_call(fn: Callable[[], None]) -> int:
    t0 = time.thread_time_ns()
    fn()
    return time.thread_time_ns() - t0
