"""The requester side of ResponseNotReady / RESPOND_IF_READY (DSP0274 10.17).

:func:`send_if_ready` sends a request; when the responder answers
ERROR(ResponseNotReady) it checks the extended error data as libspdm's requester does
(``libspdm_handle_response_not_ready``: RequestCode must be the request's, RDTM > 1,
RDTExponent <= 31), waits 2^RDTExponent microseconds (through an injectable ``sleep``)
and sends RESPOND_IF_READY (Param1 = RequestCode, Param2 = Token).  Every
ResponseNotReady seen is returned, so tests can assert on the tokens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from emulator.codec.constants import ErrorCode, RequestCode, ResponseCode, code_name
from emulator.codec.messages import build_header
from emulator.errors import RequesterError
from emulator.requester.requester import Requester, SpdmErrorReply

#: libspdm's LIBSPDM_MAX_RDT_EXPONENT
MAX_RDT_EXPONENT = 31


@dataclass(frozen=True, slots=True)
class NotReady:
    """One ERROR(ResponseNotReady)'s extended error data."""

    rdt_exponent: int
    request_code: int
    token: int
    rdtm: int

    @classmethod
    def parse(cls, response: bytes) -> NotReady:
        if len(response) < 8:
            raise RequesterError(
                f"ResponseNotReady: {len(response)} bytes, the extended error data needs 8"
            )
        return cls(response[4], response[5], response[6], response[7])

    @property
    def wait_seconds(self) -> float:
        """RDT = 2^RDTExponent microseconds."""
        return (1 << self.rdt_exponent) / 1e6


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def send_if_ready(
    requester: Requester,
    request: bytes,
    *,
    session_id: int | None = None,
    max_not_ready: int = 4,
    sleep: Callable[[float], Awaitable[None]] = _sleep,
) -> tuple[bytes, list[NotReady]]:
    """Send ``request``; follow ResponseNotReady with RESPOND_IF_READY.

    Returns (the final response, the ResponseNotReady data seen).  Other ERRORs raise
    :class:`SpdmErrorReply` as :meth:`Requester.send` does.
    """
    seen: list[NotReady] = []
    original = request[1]
    current = request
    while True:
        try:
            response = await requester.send(current, session_id=session_id)
        except SpdmErrorReply as err:
            if err.code != ErrorCode.ResponseNotReady:
                raise
            info = NotReady.parse(err.response)
            if info.request_code != original:
                raise RequesterError(
                    f"ResponseNotReady names request code 0x{info.request_code:02X}, "
                    f"but {code_name(original)} was sent"
                ) from None
            if info.rdtm <= 1:
                raise RequesterError(f"ResponseNotReady: RDTM {info.rdtm} must be > 1") from None
            if info.rdt_exponent > MAX_RDT_EXPONENT:
                raise RequesterError(
                    f"ResponseNotReady: RDTExponent {info.rdt_exponent} > {MAX_RDT_EXPONENT}"
                ) from None
            seen.append(info)
            if len(seen) > max_not_ready:
                raise RequesterError(
                    f"{code_name(original)}: still not ready after {max_not_ready} RESPOND_IF_READY"
                ) from None
            await sleep(info.wait_seconds)
            current = build_header(
                requester.version or request[0],
                RequestCode.RESPOND_IF_READY,
                info.request_code,
                info.token,
            )
            continue
        if seen and response[1] == ResponseCode.ERROR:  # pragma: no cover - send raises
            raise RequesterError("RESPOND_IF_READY answered ERROR")
        return response, seen
