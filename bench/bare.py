"""A bare responder: the least Python any responder can run for bench.py's handshake.

It answers the 14 requests of :mod:`handshake` (PCI DOE, SPDM 1.3, P-384, SHA-384,
SECP384R1, AES-256-GCM) with nothing but the work each response needs, written flat:

* the fixed responses (VERSION, CAPABILITIES, ALGORITHMS, DIGESTS, CERTIFICATE) are the
  device's own, recorded once and looked up by request bytes (the emulator also keeps
  them per device);
* CHALLENGE_AUTH, MEASUREMENTS and KEY_EXCHANGE_RSP are the device's recorded responses
  with the fresh fields (nonce, random data, requester context, exchange data) put in
  and signed over running transcript hashes (DSP0274 1.3 10.8, 10.11, 10.15);
* the session is DSP0277 records with one keyed AESGCM per key, the key schedule inline
  (DSP0274 1.3 "Key schedule"), FINISH's RequesterVerifyData checked.

There is no validation beyond what the handshake needs to succeed, no state machine, no
negotiation, no error path, no hook, no event: a request it does not expect raises.
Its in-process responder CPU against the crypto floor (:func:`handshake.crypto_floor`),
measured with the same requester, is the ratio no Python responder can beat on this
machine; bench.py prints it beside the emulator's.  Not a product: it lives in bench/.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import struct
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from emulator.crypto import (
    CHALLENGE_AUTH_SIGN_CONTEXT,
    KEY_EXCHANGE_RSP_SIGN_CONTEXT,
    MEASUREMENTS_SIGN_CONTEXT,
    signing_prefix,
)
from emulator.events import Reply

_DOE = struct.Struct("<HBBI")
_RECORD = struct.Struct("<IH")  # PCI DOE: SessionID, Length (no sequence number)
_U16 = struct.Struct("<H")
_LABEL = b"spdm1.3 "
_H = 48
_SIG = 96
#: the SPDM 1.2+ combined signing prefixes (DSP0274 1.3 15), made once
_CHALLENGE_PREFIX = signing_prefix(0x13, CHALLENGE_AUTH_SIGN_CONTEXT)
_MEASUREMENTS_PREFIX = signing_prefix(0x13, MEASUREMENTS_SIGN_CONTEXT)
_KEY_EXCHANGE_PREFIX = signing_prefix(0x13, KEY_EXCHANGE_RSP_SIGN_CONTEXT)


def _expand(secret: bytes, label: bytes, length: int, context: bytes = b"") -> bytes:
    """HKDF-Expand of one block with bin_str (length <= H)."""
    info = length.to_bytes(2, "little") + _LABEL + label + context + b"\x01"
    return hmac.digest(secret, info, "sha384")[:length]


@dataclass
class _Dir:
    """One direction of the session: keyed AEAD, IV, sequence number, secret."""

    secret: bytes
    aead: AESGCM = field(init=False)
    iv: int = field(init=False)
    iv_tail: bytes = field(init=False)
    seq: int = 0

    def __post_init__(self) -> None:
        self.aead = AESGCM(_expand(self.secret, b"key", 32))
        iv = _expand(self.secret, b"iv", 12)
        self.iv, self.iv_tail = int.from_bytes(iv[:8], "little"), iv[8:]

    def nonce(self) -> bytes:
        n = (self.iv ^ self.seq).to_bytes(8, "little") + self.iv_tail
        self.seq += 1
        return n


class _RecordingBinding:
    """A binding that keeps every message it frames (the exact bytes, before padding)."""

    def __init__(self, binding: Any) -> None:
        self._binding = binding
        self.framed: list[bytes] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._binding, name)

    def encode(self, message: bytes, secured: bool = False) -> bytes:
        if not secured:
            self.framed.append(bytes(message))
        encoded: bytes = self._binding.encode(message, secured)
        return encoded


def record(device: Any, binding: Any, handshake: Any) -> list[tuple[bytes, bytes]]:
    """The handshake's requests and responses in the clear as ``device`` answers them over
    ``binding`` (``handshake``: :func:`handshake.handshake`)."""
    from emulator.connection import SpdmConnection
    from emulator.requester.session import ConnectionChannel

    framing = _RecordingBinding(binding)
    connection = SpdmConnection(device, framing, number=0)
    transcript = asyncio.run(handshake(ConnectionChannel(connection)))
    # the requester frames with the same binding: requests and responses alternate
    requests, responses = framing.framed[0::2], framing.framed[1::2]
    if requests != [q for q, _ in transcript.plain] or len(responses) != len(requests):
        raise RuntimeError("bare.record: the framed messages are not the handshake's")
    return list(zip(requests, responses, strict=True))


class BareResponder:
    """One connection of the bare responder (see the module docstring)."""

    def __init__(
        self, binding: Any, plain: list[tuple[bytes, bytes]], key: ec.EllipticCurvePrivateKey
    ) -> None:
        """``plain``: the device's requests and responses in the clear for this handshake,
        exactly (:func:`record`); ``key``: its slot 0 private key."""
        self.binding = binding
        self.key = key
        self.canned = {q: r for q, r in plain if q[1] in (0x84, 0xE1, 0xE3, 0x81, 0x82)}
        by_code = {q[1]: r for q, r in plain}
        self.challenge_auth = by_code[0x83][:-_SIG]
        self.ct_hash = self.challenge_auth[4 : 4 + _H]
        meas = by_code[0xE0][:-_SIG]
        (record_len,) = struct.unpack_from("<I", meas[5:8] + b"\0")
        self.meas_nonce_at = 8 + record_len
        self.measurements = meas
        self.key_exchange_rsp = by_code[0xE4][: -(_SIG + _H)]
        self.a = hashlib.sha384()
        self.m = hashlib.sha384()
        self.session_id = 0
        self.req: _Dir | None = None
        self.rsp: _Dir | None = None

    def receive(self, payload: bytes) -> Reply:
        """One DOE data object in, the response data object out."""
        kind = payload[2]
        message = payload[8:]
        response = self._clear(message) if kind == 1 else self._secured(message)
        pad = -len(response) % 4
        head = _DOE.pack(1, kind, 0, (8 + len(response) + pad) // 4)
        return Reply([head + response + bytes(pad)])

    def _clear(self, q: bytes) -> bytes:
        code = q[1]
        if code == 0x84:
            self.a = hashlib.sha384()
            self.m = hashlib.sha384()
        canned = self.canned.get(q)
        if canned is not None:
            if code in (0x84, 0xE1, 0xE3):
                self.a.update(q)
                self.a.update(canned)
                if code == 0xE3:
                    self.m = self.a.copy()
            else:
                self.m.update(q)
                self.m.update(canned)
            return canned
        if code == 0x83:  # CHALLENGE: nonce 32, requester context 8
            t = self.challenge_auth
            r = t[:52] + os.urandom(32) + t[84:-8] + q[36:44]
            self.m.update(q)
            self.m.update(r)
            r += self._sign(_CHALLENGE_PREFIX, self.m.digest())
            self.m = self.a.copy()  # M1 restarts from A, L1 too (1.2+)
            return r
        if code == 0xE0:  # GET_MEASUREMENTS signed: nonce 32, slot, requester context 8
            t, at = self.measurements, self.meas_nonce_at
            q = q[:45]  # the rest is DOE padding
            r = t[:at] + os.urandom(32) + t[at + 32 : -8] + q[37:45]
            self.m.update(q)
            self.m.update(r)
            r += self._sign(_MEASUREMENTS_PREFIX, self.m.digest())
            self.m = self.a.copy()
            return r
        if code == 0xE4:  # KEY_EXCHANGE: ReqSessionID, random 32, exchange data 96
            return self._key_exchange(q)
        raise ValueError(f"bare responder: unexpected request 0x{code:02X}")

    def _sign(self, prefix: bytes, digest: bytes) -> bytes:
        der = self.key.sign(prefix + digest, ec.ECDSA(hashes.SHA384(), deterministic_signing=True))
        r, s = decode_dss_signature(der)
        return r.to_bytes(48, "big") + s.to_bytes(48, "big")

    def _key_exchange(self, q: bytes) -> bytes:
        t = self.key_exchange_rsp
        q = q[: 138 + int.from_bytes(q[136:138], "little")]  # the rest is DOE padding
        eph = ec.generate_private_key(ec.SECP384R1())
        mine = eph.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)[1:]
        peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP384R1(), b"\x04" + q[40:136])
        shared = eph.exchange(ec.ECDH(), peer)
        rsp_session = t[4:6]
        self.session_id = int.from_bytes(q[4:6] + rsp_session, "little")
        r = t[:8] + os.urandom(32) + mine + t[136:]
        th = self.a.copy()
        th.update(self.ct_hash)
        th.update(q)
        th.update(r)
        signature = self._sign(_KEY_EXCHANGE_PREFIX, th.digest())
        th.update(signature)
        th1 = th.digest()
        hs = hmac.digest(bytes(_H), shared, "sha384")
        req_hs = _expand(hs, b"req hs data", _H, th1)
        rsp_hs = _expand(hs, b"rsp hs data", _H, th1)
        self.req, self.rsp = _Dir(req_hs), _Dir(rsp_hs)
        self.req_finished = _expand(req_hs, b"finished", _H)
        verify = hmac.digest(_expand(rsp_hs, b"finished", _H), th1, "sha384")
        th.update(verify)
        self.th = th
        self.hs = hs
        return r + signature + verify

    def _secured(self, record: bytes) -> bytes:
        req, rsp = self.req, self.rsp
        assert req is not None and rsp is not None
        session_id, length = _RECORD.unpack_from(record)
        if session_id != self.session_id:
            raise ValueError("bare responder: another session")
        plain = req.aead.decrypt(req.nonce(), record[6 : 6 + length], record[:6])
        (size,) = _U16.unpack_from(plain)
        q = plain[2 : 2 + size]
        code = q[1]
        if code == 0xE5:  # FINISH: RequesterVerifyData over TH up to it
            th = self.th
            th.update(q[:4])
            expected = hmac.digest(self.req_finished, th.digest(), "sha384")
            if not hmac.compare_digest(expected, q[4:]):
                raise ValueError("bare responder: RequesterVerifyData")
            th.update(q[4:])
            r = b"\x13\x65\x00\x00"
            th.update(r)
            th2 = th.digest()
            out = self._seal(rsp, r)
            master = hmac.digest(_expand(self.hs, b"derived", _H), bytes(_H), "sha384")
            self.req = _Dir(_expand(master, b"req app data", _H, th2))
            self.rsp = _Dir(_expand(master, b"rsp app data", _H, th2))
            _expand(master, b"exp master", _H, th2)  # derived, as the floor's key schedule
            return out
        if code == 0xE8:  # HEARTBEAT
            return self._seal(rsp, b"\x13\x68\x00\x00")
        if code == 0xE9:  # KEY_UPDATE: UpdateKey (1) renews the request key after the ACK
            out = self._seal(rsp, b"\x13\x69" + q[2:4])
            if q[2] == 1:
                self.req = _Dir(_expand(req.secret, b"traffic upd", _H))
            return out
        if code == 0xEC:  # END_SESSION
            return self._seal(rsp, b"\x13\x6c\x00\x00")
        raise ValueError(f"bare responder: unexpected secured request 0x{code:02X}")

    def _seal(self, direction: _Dir, message: bytes) -> bytes:
        plain = _U16.pack(len(message)) + message
        head = _RECORD.pack(self.session_id, len(plain) + 16)
        return head + direction.aead.encrypt(direction.nonce(), plain, head)


# ---------------------------------------------------------------------------------------
# over a socket: the bare responder behind the canned floor's asyncio.Protocol
# ---------------------------------------------------------------------------------------

_FRAME = struct.Struct(">III")  # platform frame: command, transport type, payload size
_NORMAL, _SHUTDOWN = 0x0001, 0xFFFE


class _BareProtocol(asyncio.Protocol):
    """Platform frames in, the bare responder's frames out (NORMAL; SHUTDOWN echoed and
    the connection closed), nothing else: canned_server.py's loop with a responder."""

    def __init__(self, make: Any) -> None:
        self.responder = make()
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        import socket

        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        offset, out = 0, []
        while len(buffer) - offset >= 12:
            command, kind, size = _FRAME.unpack_from(buffer, offset)
            if len(buffer) - offset - 12 < size:
                break
            payload = buffer[offset + 12 : offset + 12 + size]
            offset += 12 + size
            if command == _NORMAL:
                for reply in self.responder.receive(payload).payloads:
                    out.append(_FRAME.pack(_NORMAL, kind, len(reply)) + reply)
            elif command == _SHUTDOWN:
                out.append(_FRAME.pack(_SHUTDOWN, kind, 0))
                assert self.transport is not None
                self.transport.write(b"".join(out))
                self.transport.close()
                return
        self.buffer = buffer[offset:]
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


def main() -> int:
    """``python3 bench/bare.py --port P [--uvloop]``: the bare responder on a socket (PCI
    DOE), the device being the default profile's (recorded at start-up)."""
    import argparse
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sys.path[:0] = [str(root), str(root / "bench")]
    import handshake

    from emulator.crypto import load_private_key
    from emulator.device.model import Device
    from emulator.profiles import load_profile
    from emulator.transport import get_binding

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = p.parse_args()
    binding = get_binding("doe")
    plain = record(Device.from_profile(load_profile("default")), binding, handshake.handshake)
    key = load_private_key(str(root / "certs" / "ecdsa-p384" / "slot0" / "leaf.key.pem"))
    assert isinstance(key, ec.EllipticCurvePrivateKey)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _BareProtocol(lambda: BareResponder(binding, plain, key)),
            "127.0.0.1",
            args.port,
        )
        async with server:
            await server.serve_forever()

    if args.uvloop:
        import uvloop

        uvloop.run(serve())
    else:
        asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
