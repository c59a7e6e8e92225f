"""The DSP0274 key schedule ("Key schedule" clause; SPDM 1.1, 1.2, 1.3), as libspdm computes it.

All HMAC/HKDF steps use the negotiated BaseHashAlgo; ``H`` is its digest size.

``bin_str(version, label, length, context)`` = ``u16le(length) || "spdm1.X " ||
label || context`` where ``"spdm1.X "`` is the negotiated version ("spdm1.1 ",
"spdm1.2 ", "spdm1.3 "), libspdm ``libspdm_bin_concat``.  Labels (spdm.h
``SPDM_BIN_STR_*_LABEL``):

======  ================  =======================================================
bin_str label             used for
======  ================  =======================================================
0       ``derived``       Salt_1 = HKDF-Expand(Handshake-Secret, bin_str0, H)
1       ``req hs data``   request handshake secret, context = TH1 hash
2       ``rsp hs data``   response handshake secret, context = TH1 hash
3       ``req app data``  request data secret, context = TH2 hash
4       ``rsp app data``  response data secret, context = TH2 hash
5       ``key``           encryption key of a secret, length = AEAD key size
6       ``iv``            IV (salt) of a secret, length = 12
7       ``finished``      finished key of a handshake secret, length = H
8       ``exp master``    export master secret, context = TH2 hash
9       ``traffic upd``   next data secret on KEY_UPDATE, length = H
======  ================  =======================================================

Steps (libspdm ``libspdm_generate_handshake_key`` / ``libspdm_generate_data_key``
/ ``libspdm_create_update_session_data_key``):

* Handshake-Secret = HKDF-Extract(salt = Salt_0, IKM = DHE shared secret), with
  Salt_0 = H zero bytes.  For a PSK session IKM = the PSK, and Salt_0 = H bytes
  of 0xFF from SPDM 1.3 on (H zero bytes in 1.1/1.2; libspdm issue #2288).
* request/response handshake secret = HKDF-Expand(Handshake-Secret,
  bin_str1/bin_str2 with context TH1 hash, H).
* finished key = HKDF-Expand(that direction's handshake secret, bin_str7, H).
* Salt_1 = HKDF-Expand(Handshake-Secret, bin_str0, H);
  Master-Secret = HKDF-Extract(salt = Salt_1, IKM = H zero bytes).
* request/response data secret = HKDF-Expand(Master-Secret, bin_str3/bin_str4
  with context TH2 hash, H); export master secret likewise with bin_str8.
* key/IV of any secret = HKDF-Expand(secret, bin_str5, key size) /
  HKDF-Expand(secret, bin_str6, 12).
* KEY_UPDATE: new data secret = HKDF-Expand(old data secret, bin_str9, H), then
  new key/IV from it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hmac as _c_hmac
from cryptography.hazmat.primitives.hashes import HashAlgorithm

from emulator.codec.constants import AeadSuite, BaseHashAlgo
from emulator.crypto.aead import AEAD_IV_SIZE, aead_key_size
from emulator.crypto.hashes import cryptography_hash, hash_size, single_bit
from emulator.crypto.kdf import hkdf_expand, hkdf_extract
from emulator.errors import CryptoError

__all__ = [
    "LABEL_DERIVED",
    "LABEL_EXPORT_MASTER",
    "LABEL_FINISHED",
    "LABEL_IV",
    "LABEL_KEY",
    "LABEL_REQ_APP_DATA",
    "LABEL_REQ_HS_DATA",
    "LABEL_RSP_APP_DATA",
    "LABEL_RSP_HS_DATA",
    "LABEL_TRAFFIC_UPDATE",
    "DataSecrets",
    "HandshakeSecrets",
    "KeySchedule",
    "TrafficKeys",
    "bin_str",
]

LABEL_DERIVED = b"derived"
LABEL_REQ_HS_DATA = b"req hs data"
LABEL_RSP_HS_DATA = b"rsp hs data"
LABEL_REQ_APP_DATA = b"req app data"
LABEL_RSP_APP_DATA = b"rsp app data"
LABEL_KEY = b"key"
LABEL_IV = b"iv"
LABEL_FINISHED = b"finished"
LABEL_EXPORT_MASTER = b"exp master"
LABEL_TRAFFIC_UPDATE = b"traffic upd"


@functools.lru_cache(maxsize=16)
def _version_label(version: int) -> bytes:
    major, minor = version >> 4, version & 0xF
    if major != 1 or minor > 9 or version < 0x11:
        raise CryptoError(
            f"SPDM version 0x{version:02X}: no key schedule (sessions exist from SPDM 1.1)"
        )
    return f"spdm{major}.{minor} ".encode("ascii")


def bin_str(version: int, label: bytes | str, length: int, context: bytes = b"") -> bytes:
    """``u16le(length) || "spdm1.X " || label || context`` (DSP0274 ``BinConcat``)."""
    if not 0 <= length <= 0xFFFF:
        raise CryptoError(f"bin_str length: {length} does not fit in 16 bits")
    raw_label = label.encode("ascii") if isinstance(label, str) else bytes(label)
    return length.to_bytes(2, "little") + _version_label(version) + raw_label + bytes(context)


@dataclass(frozen=True)
class TrafficKeys:
    """One direction's secret and the AEAD key and IV derived from it."""

    secret: bytes
    key: bytes
    iv: bytes

    def __iter__(self) -> Iterator[bytes]:
        """Unpack as ``secret, key, iv = keys``."""
        return iter((self.secret, self.key, self.iv))


@dataclass(frozen=True)
class HandshakeSecrets:
    """Output of the handshake phase (keys that protect FINISH / PSK_FINISH)."""

    handshake_secret: bytes
    request: TrafficKeys
    response: TrafficKeys
    request_finished_key: bytes
    response_finished_key: bytes


@dataclass(frozen=True)
class DataSecrets:
    """Output of the data phase (application keys after FINISH_RSP / PSK_FINISH_RSP)."""

    master_secret: bytes
    request: TrafficKeys
    response: TrafficKeys
    export_master_secret: bytes


@dataclass(frozen=True)
class KeySchedule:
    """The key schedule for one session: negotiated version, BaseHashAlgo and AEAD suite."""

    version: int
    hash_algo: BaseHashAlgo
    aead: AeadSuite
    # derived once (a session runs a dozen HKDF steps on them)
    _size: int = field(init=False, repr=False, compare=False)
    _key_size: int = field(init=False, repr=False, compare=False)
    _label: bytes = field(init=False, repr=False, compare=False)
    _algorithm: HashAlgorithm = field(init=False, repr=False, compare=False)

    def __deepcopy__(self, memo: dict[int, object]) -> KeySchedule:
        return self  # immutable

    def __post_init__(self) -> None:
        label = _version_label(self.version)
        object.__setattr__(
            self, "hash_algo", single_bit(BaseHashAlgo, self.hash_algo, "BaseHashAlgo")
        )
        object.__setattr__(self, "aead", single_bit(AeadSuite, self.aead, "AeadSuite"))
        # rejects unsupported hashes and suites now, not mid-handshake
        object.__setattr__(self, "_size", hash_size(self.hash_algo))
        object.__setattr__(self, "_key_size", aead_key_size(self.aead))
        object.__setattr__(self, "_label", label)
        object.__setattr__(self, "_algorithm", cryptography_hash(self.hash_algo))

    @property
    def hash_size(self) -> int:
        return self._size

    @property
    def key_size(self) -> int:
        return self._key_size

    @property
    def iv_size(self) -> int:
        return AEAD_IV_SIZE

    def _bin(self, label: bytes, length: int, context: bytes = b"") -> bytes:
        return bin_str(self.version, label, length, context)

    def _expand(self, secret: bytes, label: bytes, length: int, context: bytes = b"") -> bytes:
        size = self._size
        if length <= size and len(secret) >= size:
            # HKDF-Expand of one block: HMAC(secret, bin_str || 0x01) (RFC 5869), as
            # hkdf_expand computes it, without its per-call lookups
            mac = _c_hmac.HMAC(secret, self._algorithm)
            mac.update(length.to_bytes(2, "little") + self._label + label + context + b"\x01")
            return mac.finalize()[:length]
        return hkdf_expand(self.hash_algo, secret, self._bin(label, length, context), length)

    def _check_hash(self, name: str, value: bytes) -> bytes:
        if len(value) != self._size:
            raise CryptoError(f"{name}: {len(value)} bytes, expected {self._size}")
        return bytes(value)

    def salt0(self, psk: bool = False) -> bytes:
        """Salt_0: H zero bytes; H 0xFF bytes for a PSK session from SPDM 1.3 on."""
        fill = 0xFF if psk and self.version >= 0x13 else 0x00
        return bytes([fill]) * self.hash_size

    def handshake_secret(self, ikm: bytes, *, psk: bool = False) -> bytes:
        """Handshake-Secret = HKDF-Extract(Salt_0, IKM) with IKM = DHE secret or PSK."""
        if not ikm:
            raise CryptoError("handshake IKM: empty DHE secret / PSK")
        return hkdf_extract(self.hash_algo, self.salt0(psk), bytes(ikm))

    def traffic_keys(self, secret: bytes) -> TrafficKeys:
        """The AEAD key ("key") and IV ("iv") of a handshake or data secret."""
        secret = self._check_hash("secret", secret)
        return TrafficKeys(
            secret=secret,
            key=self._expand(secret, LABEL_KEY, self.key_size),
            iv=self._expand(secret, LABEL_IV, self.iv_size),
        )

    def finished_key(self, handshake_secret: bytes) -> bytes:
        """finished_key = HKDF-Expand(direction handshake secret, bin_str7 "finished", H)."""
        secret = self._check_hash("handshake secret", handshake_secret)
        return self._expand(secret, LABEL_FINISHED, self.hash_size)

    def handshake(
        self, shared_secret: bytes, th1_hash: bytes, *, psk: bool = False
    ) -> HandshakeSecrets:
        """All handshake-phase secrets from the DHE secret (or the PSK with ``psk=True``)."""
        th1 = self._check_hash("TH1 hash", th1_hash)
        hs = self.handshake_secret(shared_secret, psk=psk)
        req = self._expand(hs, LABEL_REQ_HS_DATA, self.hash_size, th1)
        rsp = self._expand(hs, LABEL_RSP_HS_DATA, self.hash_size, th1)
        return HandshakeSecrets(
            handshake_secret=hs,
            request=self.traffic_keys(req),
            response=self.traffic_keys(rsp),
            request_finished_key=self.finished_key(req),
            response_finished_key=self.finished_key(rsp),
        )

    def psk_handshake(self, psk: bytes, th1_hash: bytes) -> HandshakeSecrets:
        """PSK_EXCHANGE variant: Handshake-Secret = HKDF-Extract(Salt_0, PSK)."""
        return self.handshake(psk, th1_hash, psk=True)

    def master_secret(self, handshake_secret: bytes) -> bytes:
        """Master-Secret = HKDF-Extract(Salt_1, H zero bytes), Salt_1 from bin_str0 "derived"."""
        hs = self._check_hash("Handshake-Secret", handshake_secret)
        salt1 = self._expand(hs, LABEL_DERIVED, self.hash_size)
        return hkdf_extract(self.hash_algo, salt1, bytes(self.hash_size))

    def data(self, handshake_secret: bytes | HandshakeSecrets, th2_hash: bytes) -> DataSecrets:
        """All data-phase secrets (and the export master secret) over the TH2 hash."""
        if isinstance(handshake_secret, HandshakeSecrets):
            handshake_secret = handshake_secret.handshake_secret
        th2 = self._check_hash("TH2 hash", th2_hash)
        master = self.master_secret(handshake_secret)
        req = self._expand(master, LABEL_REQ_APP_DATA, self.hash_size, th2)
        rsp = self._expand(master, LABEL_RSP_APP_DATA, self.hash_size, th2)
        return DataSecrets(
            master_secret=master,
            request=self.traffic_keys(req),
            response=self.traffic_keys(rsp),
            export_master_secret=self._expand(master, LABEL_EXPORT_MASTER, self.hash_size, th2),
        )

    def update(self, secret: bytes) -> TrafficKeys:
        """KEY_UPDATE: new secret = HKDF-Expand(secret, bin_str9 "traffic upd", H), + key/IV."""
        secret = self._check_hash("data secret", secret)
        return self.traffic_keys(self._expand(secret, LABEL_TRAFFIC_UPDATE, self.hash_size))
