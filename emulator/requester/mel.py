"""Requester side of GET_MEASUREMENT_EXTENSION_LOG (DSP0274 1.3 10.12), with libspdm's
requester checks (``libspdm_try_get_measurement_extension_log``): PortionLength within the
asked Length and the response, the total (Offset + PortionLength + RemainderLength) the
same in every portion, the DMTF format parsing exactly; and a replay of the log against
its hash-extended measurement blocks (:func:`replay`), computed here with hashlib.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from emulator.codec.constants import ResponseCode
from emulator.codec.mel import MelEntry, build_get_mel, decode_mel, parse_mel_response
from emulator.errors import CodecError, RequesterError
from emulator.requester.requester import Requester

__all__ = ["MelResult", "get_mel", "replay"]

_MEAS_HASHES = {
    0x02: "sha256",
    0x04: "sha384",
    0x08: "sha512",
    0x10: "sha3_256",
    0x20: "sha3_384",
    0x40: "sha3_512",
}


@dataclass(frozen=True)
class MelResult:
    log: bytes
    entries: list[MelEntry]
    portions: int


async def get_mel(
    req: Requester, *, portion: int = 0x400, session_id: int | None = None
) -> MelResult:
    """The whole MEL, ``portion`` bytes per request (the device may send fewer)."""
    if req.version < 0x13:
        raise RequesterError("GET_MEASUREMENT_EXTENSION_LOG needs SPDM 1.3")
    log = bytearray()
    total: int | None = None
    count = 0
    while True:
        offset = len(log)
        rsp = await req.send(build_get_mel(req.version, offset, portion), session_id=session_id)
        req.expect(rsp, ResponseCode.MEASUREMENT_EXTENSION_LOG)
        try:
            data, remainder = parse_mel_response(rsp)
        except CodecError as exc:
            raise RequesterError(str(exc)) from None
        count += 1
        if len(data) > portion:
            raise RequesterError(f"MEL: PortionLength {len(data)} over the asked {portion}")
        if not data and remainder:
            raise RequesterError("MEL: an empty portion with bytes remaining")
        whole = offset + len(data) + remainder
        if total is None:
            total = whole
        elif whole != total:
            raise RequesterError(f"MEL: the log was {total} bytes, now {whole}")
        log += data
        if remainder == 0:
            break
        if count > 0x10000:
            raise RequesterError("MEL: more than 65536 portions")
    try:
        entries = decode_mel(bytes(log))
    except CodecError as exc:
        raise RequesterError(f"MEL: {exc}") from None
    for n, e in enumerate(entries):
        if e.mel_index != n + 1:
            raise RequesterError(f"MEL entry {n}: MELIndex {e.mel_index}, expected {n + 1}")
    return MelResult(bytes(log), entries, count)


def replay(entries: list[MelEntry], index: int, measurement_hash: int) -> bytes:
    """The value of hash-extended block ``index`` after ``entries``: v = H(v || entry)
    from zeros, with the negotiated MeasurementHashAlgo bit."""
    name = _MEAS_HASHES.get(measurement_hash)
    if name is None:
        raise RequesterError(f"MeasurementHashAlgo 0x{measurement_hash:X}: cannot replay")
    value = bytes(hashlib.new(name).digest_size)
    for e in entries:
        if e.meas_index == index:
            value = hashlib.new(name, value + e.encode()).digest()
    return value
