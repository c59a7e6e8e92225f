"""GET_MEASUREMENT_EXTENSION_LOG / MEASUREMENT_EXTENSION_LOG (DSP0274 1.3 10.12), as libspdm's
``libspdm_rsp_measurement_extension_log.c``.

MEL_CAP and SPDM 1.3 are checked by the core.  Then: before ALGORITHMS, or no MEL
specification or no measurement hash negotiated: UnexpectedRequest; shorter than 12 bytes:
InvalidRequest; Offset at or past the end of the log: InvalidRequest.  The portion is
``Length`` bytes from ``Offset``, at most what is left and what one response can carry
(DataTransferSize of both sides less the 12-byte header; with CHUNK_CAP on both sides the
MaxSPDMmsgSizes, the chunking layer splitting the response), with RemainderLength the
bytes after it.  The log is the device's (:mod:`emulator.device.mel`), read as one
consistent snapshot per request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emulator.codec.constants import ErrorCode, RequesterCap, ResponderCap
from emulator.codec.mel import MEL_RESPONSE_HEADER_SIZE, build_mel_response, parse_get_mel
from emulator.errors import CodecError
from emulator.responder.base import Request, SpdmErrorResponse, invalid, unexpected
from emulator.responder.certificates import require_negotiated

if TYPE_CHECKING:
    from emulator.responder.core import Responder


def _max_portion(r: Responder) -> int:
    dev = r.device
    peer = r.peer
    if (
        dev.capabilities & ResponderCap.CHUNK_CAP
        and peer is not None
        and (peer.flags & RequesterCap.CHUNK_CAP)
    ):
        limit = dev.max_spdm_msg_size
        if peer.max_spdm_msg_size:
            limit = min(limit, peer.max_spdm_msg_size)
    else:
        limit = dev.data_transfer_size
        if peer is not None and peer.data_transfer_size:
            limit = min(limit, peer.data_transfer_size)
    return max(0, limit - MEL_RESPONSE_HEADER_SIZE)


def get_measurement_extension_log(r: Responder, req: Request) -> bytes:
    """MEASUREMENT_EXTENSION_LOG: one portion of the DMTF-format MEL."""
    require_negotiated(r, "GET_MEASUREMENT_EXTENSION_LOG")
    if not r.algorithms.mel_spec or not r.algorithms.measurement_hash:
        raise unexpected(
            "GET_MEASUREMENT_EXTENSION_LOG: no MEL specification or measurement hash was negotiated"
        )
    try:
        offset, length = parse_get_mel(req.raw)
    except CodecError as exc:
        raise invalid(str(exc)) from None
    mel = req.device.mel
    if mel is None:
        raise SpdmErrorResponse(ErrorCode.OperationFailed, "the device keeps no MEL")
    log = mel.encoded()
    if offset >= len(log):
        raise invalid(
            f"GET_MEASUREMENT_EXTENSION_LOG: Offset {offset} is past the {len(log)}-byte log"
        )
    length = min(length, _max_portion(r), len(log) - offset)
    remainder = len(log) - offset - length
    return build_mel_response(r.version, log[offset : offset + length], remainder)
