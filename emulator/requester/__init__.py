"""The project's own SPDM requester (asyncio), used by tests, ``probe`` and CI users."""

from emulator.requester.requester import (
    Channel,
    LoopbackChannel,
    Negotiated,
    Requester,
    RequesterConfig,
    SpdmErrorReply,
)

__all__ = [
    "Channel",
    "LoopbackChannel",
    "Negotiated",
    "Requester",
    "RequesterConfig",
    "SpdmErrorReply",
]
