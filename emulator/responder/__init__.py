"""The sans-I/O SPDM responder: one module per request family (as libspdm has one file
per handler), one explicit dispatch table (:mod:`emulator.responder.table`) and one
pipeline (:mod:`emulator.responder.core`)."""

from emulator.responder.base import (
    ConnectionState,
    HandlerSpec,
    Request,
    Response,
    SessionCommit,
    SessionRule,
    SpdmErrorResponse,
)
from emulator.responder.context import ConnectionContext
from emulator.responder.core import Deferral, FaultContext, Outcome, Responder
from emulator.responder.table import DEFAULT_TABLE, build_table

__all__ = [
    "DEFAULT_TABLE",
    "ConnectionContext",
    "ConnectionState",
    "Deferral",
    "FaultContext",
    "HandlerSpec",
    "Outcome",
    "Request",
    "Responder",
    "Response",
    "SessionCommit",
    "SessionRule",
    "SpdmErrorResponse",
    "build_table",
]
