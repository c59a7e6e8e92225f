"""GET_VERSION / VERSION (DSP0274 10.3).

GET_VERSION is always sent with SPDMVersion 1.0 and resets the connection,
whatever state it is in (DSP0274 1.2.1 margin 185): negotiated values,
transcripts and sessions are all forgotten.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from emulator.codec.constants import ErrorCode, SpdmVersion
from emulator.codec.messages import build_error, build_version_response
from emulator.responder.base import ConnectionState, Request, unexpected

if TYPE_CHECKING:
    from emulator.responder.core import Responder


@functools.lru_cache(maxsize=64)
def version_response(versions: tuple[SpdmVersion, ...]) -> bytes:
    """VERSION for a device's version list (the same bytes for every connection: built
    once per list, not per request)."""
    return build_version_response([v.entry for v in versions])


def get_version(r: Responder, req: Request) -> bytes:
    """Answer VERSION with the profile's versions; reset the connection first."""
    if req.in_session:
        raise unexpected("GET_VERSION inside a session")
    if req.version != 0x10:
        # libspdm / DSP0274: the ERROR for a malformed GET_VERSION is always version 1.0
        r.last_error = f"GET_VERSION with version byte 0x{req.version:02X}, must be 0x10"
        return build_error(0x10, ErrorCode.VersionMismatch)
    r.reset()
    response = version_response(tuple(r.device.versions))
    a = r.ctx.transcripts.a
    a += req.raw[:4]
    a += response
    r.ctx.state = ConnectionState.AFTER_VERSION
    return response
