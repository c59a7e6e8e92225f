"""The project's own SPDM requester (asyncio), used by tests, ``probe`` and CI users."""

from emulator.requester.errors import SpdmErrorReply
from emulator.requester.requester import (
    Channel,
    LoopbackChannel,
    Negotiated,
    Requester,
    RequesterConfig,
)

__all__ = [
    "Channel",
    "LoopbackChannel",
    "Negotiated",
    "Requester",
    "RequesterConfig",
    "SpdmErrorReply",
]
