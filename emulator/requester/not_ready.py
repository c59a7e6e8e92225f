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
from typing import Any

from emulator.codec.constants import ErrorCode, RequestCode, ResponseCode, code_name
from emulator.codec.messages import build_header
from emulator.errors import RequesterError
from emulator.requester.errors import MAX_RDT_EXPONENT, NotReady, SpdmErrorReply
from emulator.requester.requester import Requester
from emulator.transport.base import TransportMessage

__all__ = ["MAX_RDT_EXPONENT", "NotReady", "RespondIfReadyChannel", "send_if_ready"]


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


class RespondIfReadyChannel:
    """A :class:`~emulator.requester.requester.Channel` that follows ResponseNotReady.

    Wrap the channel of a requester whose flows should not see ResponseNotReady (as
    libspdm's requester handles it below its request functions): an
    ERROR(ResponseNotReady) is checked and answered with RESPOND_IF_READY until the real
    response comes; only that goes up, so transcripts hold the original request and
    its real response.  ``seen`` lists every ResponseNotReady, ``exchanges`` every
    (request, response) on the wire.
    """

    def __init__(
        self,
        inner: Any,
        *,
        max_not_ready: int = 4,
        sleep: Callable[[float], Awaitable[None]] = _sleep,
    ) -> None:
        self.inner = inner
        self.max_not_ready = max_not_ready
        self.sleep = sleep
        self.seen: list[NotReady] = []
        self.exchanges: list[tuple[bytes, bytes]] = []

    async def exchange(self, message: bytes, secured: bool = False) -> TransportMessage:
        reply: TransportMessage = await self.inner.exchange(message, secured)
        self.exchanges.append((message, reply.message))
        tries = 0
        while (
            not secured
            and len(reply.message) >= 4
            and reply.message[1] == ResponseCode.ERROR
            and reply.message[2] == ErrorCode.ResponseNotReady
            and len(message) >= 2
            and message[1] != RequestCode.RESPOND_IF_READY
        ):
            info = NotReady.parse(reply.message)
            if info.request_code != message[1]:
                raise RequesterError(
                    f"ResponseNotReady names request code 0x{info.request_code:02X}, "
                    f"but {code_name(message[1])} was sent"
                )
            if info.rdtm <= 1 or info.rdt_exponent > MAX_RDT_EXPONENT:
                raise RequesterError(
                    f"ResponseNotReady: RDTM {info.rdtm} / RDTExponent {info.rdt_exponent} "
                    "out of range"
                )
            self.seen.append(info)
            tries += 1
            if tries > self.max_not_ready:
                raise RequesterError(
                    f"{code_name(message[1])}: still not ready after {self.max_not_ready} "
                    "RESPOND_IF_READY"
                )
            await self.sleep(info.wait_seconds)
            rif = build_header(
                message[0], RequestCode.RESPOND_IF_READY, info.request_code, info.token
            )
            reply = await self.inner.exchange(rif, secured)
            self.exchanges.append((rif, reply.message))
        return reply
