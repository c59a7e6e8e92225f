"""The sans-I/O SPDM responder: one module per request family, as libspdm has one file
per handler.  Importing this package registers every family's handlers."""

from emulator.responder import (  # noqa: F401  (registration)
    algorithms,
    capabilities,
    certificates,
    challenge,
    chunking,
    encapsulated,
    key_exchange,
    measurements,
    psk,
    respond_if_ready,
    session_control,
    vendor_defined,
    version,
)
from emulator.responder.core import (
    HANDLERS,
    ConnectionState,
    Request,
    Responder,
    SessionRule,
    SpdmErrorResponse,
    handler,
)

__all__ = [
    "HANDLERS",
    "ConnectionState",
    "Request",
    "Responder",
    "SessionRule",
    "SpdmErrorResponse",
    "handler",
]
