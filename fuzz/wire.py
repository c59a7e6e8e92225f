"""The requester side's wire code for the session harness, independent of the emulator's.

:class:`fuzz.harness.ConnectionHarness` seals the fuzzer's in-session requests as DSP0277
records and wraps them in PCIe DOE data objects, and reads the DOE header of every reply.
Doing that with the emulator's own record and binding code would run that code (and
its atheris instrumentation) for the harness's sake on every exchange, and check the
emulator's replies with the code that framed them; this module states the two formats
directly (DSP0277 1.2 "Secured messages" with the DOE binding's record format: no
sequence number on the wire, no random padding; PCIe r6 6.30.1 DOE data objects).
"""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

#: DOE header: vendor ID (PCI-SIG 0x0001), data object type, reserved, length in DWORDs
_DOE = struct.Struct("<HBBI")
DOE_SPDM, DOE_SECURED_SPDM = 0x01, 0x02
_PCI_SIG = 0x0001
#: AEAD suites (DSP0274 ALGORITHMS AEADCipherSuite bits)
_AES_128_GCM, _AES_256_GCM, _CHACHA20_POLY1305 = 0x01, 0x02, 0x04
_TAG = 16

_CIPHERS: dict[tuple[int, bytes], AESGCM | ChaCha20Poly1305] = {}


class WireError(AssertionError):
    """A reply is not a well-formed DOE data object (a finding: the harness reports it)."""


def doe_object(message: bytes, secured: bool = False) -> bytes:
    """``message`` in a DOE data object, zero-padded to a whole DWORD."""
    pad = -len(message) % 4
    size = 8 + len(message) + pad
    header = _DOE.pack(_PCI_SIG, DOE_SECURED_SPDM if secured else DOE_SPDM, 0, size // 4)
    return header + message + bytes(pad)


def doe_message(payload: bytes) -> tuple[bytes, bool]:
    """The message of a DOE data object the responder sent (padding included) and whether
    it is secured; :class:`WireError` when the header is not what DOE requires."""
    if len(payload) < 8 or len(payload) % 4:
        raise WireError(f"DOE reply of {len(payload)} bytes (not a header and whole DWORDs)")
    vendor, kind, reserved, length = _DOE.unpack_from(payload)
    if vendor != _PCI_SIG or kind not in (DOE_SPDM, DOE_SECURED_SPDM) or reserved:
        raise WireError(f"DOE reply header {payload[:4].hex()}: not a PCI-SIG SPDM object")
    if length * 4 != len(payload):
        raise WireError(f"DOE reply Length {length} DWORDs, object of {len(payload)} bytes")
    return payload[8:], kind == DOE_SECURED_SPDM


def _cipher(aead: int, key: bytes) -> AESGCM | ChaCha20Poly1305:
    found = _CIPHERS.get((aead, key))
    if found is None:
        if aead in (_AES_128_GCM, _AES_256_GCM):
            found = AESGCM(key)
        elif aead == _CHACHA20_POLY1305:
            found = ChaCha20Poly1305(key)
        else:
            raise ValueError(f"AEAD suite 0x{aead:X} is not one DSP0274 defines")
        _CIPHERS[(aead, key)] = found
    return found


def seal(
    *,
    aead: int,
    key: bytes,
    iv: bytes,
    sequence_number: int,
    session_id: int,
    app_data: bytes,
    mac_only: bool = False,
) -> bytes:
    """One secured record (DSP0277: SessionID, Length, then the AEAD output of
    ApplicationDataLength || data, or data || MAC in a MAC-only session); the nonce is
    the IV XOR the 64-bit little-endian sequence number."""
    nonce = (int.from_bytes(iv[:8], "little") ^ sequence_number).to_bytes(8, "little") + iv[8:]
    cipher = _cipher(aead, key)
    if mac_only:
        header = struct.pack("<IH", session_id, len(app_data) + _TAG)
        return header + app_data + cipher.encrypt(nonce, b"", header + app_data)
    plaintext = struct.pack("<H", len(app_data)) + app_data
    header = struct.pack("<IH", session_id, len(plaintext) + _TAG)
    return header + cipher.encrypt(nonce, plaintext, header)
