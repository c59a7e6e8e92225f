"""The DSP0274 key schedule checked against a computation written here with stdlib hmac/hashlib."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from emulator.codec.constants import AeadSuite, BaseHashAlgo
from emulator.crypto import KeySchedule, bin_str
from emulator.errors import CryptoError

HASHES = {BaseHashAlgo.SHA_256: "sha256", BaseHashAlgo.SHA_384: "sha384"}
KEY_SIZES = {AeadSuite.AES_128_GCM: 16, AeadSuite.AES_256_GCM: 32, AeadSuite.CHACHA20_POLY1305: 32}


# --- an independent tiny HKDF (RFC 5869) and bin_str (DSP0274 BinConcat) ----------------------


def extract(name: str, salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt, ikm, name).digest()


def expand(name: str, prk: bytes, info: bytes, length: int) -> bytes:
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), name).digest()
        out += block
        i += 1
    return out[:length]


def concat(version: int, label: bytes, length: int, context: bytes = b"") -> bytes:
    text = b"spdm%d.%d " % (version >> 4, version & 0xF)
    return length.to_bytes(2, "little") + text + label + context


def reference(
    version: int, name: str, key_size: int, ikm: bytes, th1: bytes, th2: bytes, psk: bool
) -> dict[str, bytes]:
    """Every secret of one session, straight from the DSP0274 key schedule description."""
    h = hashlib.new(name).digest_size
    out: dict[str, bytes] = {}
    salt0 = (b"\xff" if psk and version >= 0x13 else b"\x00") * h
    hs = extract(name, salt0, ikm)
    out["hs"] = hs
    for side, label in (("req", b"req hs data"), ("rsp", b"rsp hs data")):
        secret = expand(name, hs, concat(version, label, h, th1), h)
        out[f"{side}_hs"] = secret
        out[f"{side}_hs_key"] = expand(name, secret, concat(version, b"key", key_size), key_size)
        out[f"{side}_hs_iv"] = expand(name, secret, concat(version, b"iv", 12), 12)
        out[f"{side}_finished"] = expand(name, secret, concat(version, b"finished", h), h)
    salt1 = expand(name, hs, concat(version, b"derived", h), h)
    master = extract(name, salt1, b"\x00" * h)
    out["master"] = master
    for side, label in (("req", b"req app data"), ("rsp", b"rsp app data")):
        secret = expand(name, master, concat(version, label, h, th2), h)
        out[f"{side}_data"] = secret
        out[f"{side}_data_key"] = expand(name, secret, concat(version, b"key", key_size), key_size)
        out[f"{side}_data_iv"] = expand(name, secret, concat(version, b"iv", 12), 12)
        new = expand(name, secret, concat(version, b"traffic upd", h), h)
        out[f"{side}_upd"] = new
        out[f"{side}_upd_key"] = expand(name, new, concat(version, b"key", key_size), key_size)
        out[f"{side}_upd_iv"] = expand(name, new, concat(version, b"iv", 12), 12)
    out["export"] = expand(name, master, concat(version, b"exp master", h, th2), h)
    return out


# --- tests -----------------------------------------------------------------------------------


def test_bin_str_bytes() -> None:
    assert bin_str(0x12, "key", 16) == b"\x10\x00spdm1.2 key"
    assert bin_str(0x11, b"iv", 12) == b"\x0c\x00spdm1.1 iv"
    th = bytes(range(48))
    assert bin_str(0x13, "req hs data", 48, th) == b"\x30\x00spdm1.3 req hs data" + th
    assert bin_str(0x12, "derived", 0x140) == b"\x40\x01spdm1.2 derived"
    with pytest.raises(CryptoError, match=r"SPDM 1\.1"):
        bin_str(0x10, "key", 16)
    with pytest.raises(CryptoError, match="16 bits"):
        bin_str(0x12, "key", 0x10000)


@pytest.mark.parametrize("version", [0x11, 0x12, 0x13])
@pytest.mark.parametrize("hash_algo", list(HASHES), ids=lambda h: h.name)
@pytest.mark.parametrize("aead", list(KEY_SIZES), ids=lambda a: a.name)
@pytest.mark.parametrize("psk", [False, True], ids=["dhe", "psk"])
def test_key_schedule_matches_reference(
    version: int, hash_algo: BaseHashAlgo, aead: AeadSuite, psk: bool
) -> None:
    name = HASHES[hash_algo]
    size = hashlib.new(name).digest_size
    ikm = bytes((7 * i + version) & 0xFF for i in range(48 if not psk else 20))
    th1 = hashlib.new(name, b"TH1 transcript").digest()
    th2 = hashlib.new(name, b"TH2 transcript").digest()
    ref = reference(version, name, KEY_SIZES[aead], ikm, th1, th2, psk)

    ks = KeySchedule(version, hash_algo, aead)
    hs = ks.psk_handshake(ikm, th1) if psk else ks.handshake(ikm, th1)
    assert hs.handshake_secret == ref["hs"]
    assert hs.request.secret == ref["req_hs"]
    assert hs.response.secret == ref["rsp_hs"]
    assert (hs.request.key, hs.request.iv) == (ref["req_hs_key"], ref["req_hs_iv"])
    assert (hs.response.key, hs.response.iv) == (ref["rsp_hs_key"], ref["rsp_hs_iv"])
    assert hs.request_finished_key == ref["req_finished"]
    assert hs.response_finished_key == ref["rsp_finished"]
    assert len(hs.request.key) == KEY_SIZES[aead] and len(hs.request.iv) == 12
    assert len(hs.request_finished_key) == size

    data = ks.data(hs.handshake_secret, th2)
    assert data.master_secret == ref["master"]
    assert data.request.secret == ref["req_data"]
    assert data.response.secret == ref["rsp_data"]
    assert (data.request.key, data.request.iv) == (ref["req_data_key"], ref["req_data_iv"])
    assert (data.response.key, data.response.iv) == (ref["rsp_data_key"], ref["rsp_data_iv"])
    assert data.export_master_secret == ref["export"]
    assert ks.data(hs, th2) == data

    secret, key, iv = ks.update(data.request.secret)
    assert (secret, key, iv) == (ref["req_upd"], ref["req_upd_key"], ref["req_upd_iv"])
    upd = ks.update(data.response.secret)
    assert (upd.secret, upd.key, upd.iv) == (ref["rsp_upd"], ref["rsp_upd_key"], ref["rsp_upd_iv"])


def test_salt0_per_version_and_mode() -> None:
    """Only a 1.3+ PSK session uses 0xFF..FF as Salt_0; the results really differ."""
    ikm = b"pre-shared key"
    th1 = bytes(32)
    v12 = KeySchedule(0x12, BaseHashAlgo.SHA_256, AeadSuite.AES_128_GCM)
    v13 = KeySchedule(0x13, BaseHashAlgo.SHA_256, AeadSuite.AES_128_GCM)
    assert v12.salt0(psk=True) == bytes(32)
    assert v13.salt0(psk=False) == bytes(32)
    assert v13.salt0(psk=True) == b"\xff" * 32
    assert v13.psk_handshake(ikm, th1).handshake_secret == extract("sha256", b"\xff" * 32, ikm)
    assert v13.handshake(ikm, th1).handshake_secret == extract("sha256", bytes(32), ikm)
    assert v12.psk_handshake(ikm, th1).handshake_secret == v12.handshake(ikm, th1).handshake_secret


def test_version_label_changes_everything() -> None:
    th = bytes(48)
    secrets = {
        v: KeySchedule(v, BaseHashAlgo.SHA_384, AeadSuite.AES_256_GCM).handshake(b"s" * 48, th)
        for v in (0x11, 0x12, 0x13)
    }
    assert len({s.request.secret for s in secrets.values()}) == 3


def test_bad_inputs() -> None:
    ks = KeySchedule(0x12, BaseHashAlgo.SHA_256, AeadSuite.AES_128_GCM)
    with pytest.raises(CryptoError, match="TH1"):
        ks.handshake(b"secret", bytes(48))
    with pytest.raises(CryptoError, match="TH2"):
        ks.data(bytes(32), bytes(31))
    with pytest.raises(CryptoError, match="empty"):
        ks.handshake(b"", bytes(32))
    with pytest.raises(CryptoError, match="data secret"):
        ks.update(bytes(48))
    with pytest.raises(CryptoError, match="sessions"):
        KeySchedule(0x10, BaseHashAlgo.SHA_256, AeadSuite.AES_128_GCM)
    with pytest.raises(CryptoError, match="not supported"):
        KeySchedule(0x12, BaseHashAlgo.SM3_256, AeadSuite.AES_128_GCM)
    with pytest.raises(CryptoError, match="not supported"):
        KeySchedule(0x12, BaseHashAlgo.SHA_256, AeadSuite.AEAD_SM4_GCM)
