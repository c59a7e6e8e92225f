"""DSP0277 secured messages: records, the session table, per-direction keys and sequence
numbers, key updates (sans-I/O).  The SPDM side of sessions (KEY_EXCHANGE, FINISH, PSK,
HEARTBEAT, KEY_UPDATE, END_SESSION, mutual auth) lives in ``emulator.responder``."""

from emulator.session.record import (
    RecordError,
    SequenceOverflow,
    open_record,
    peek_session_id,
    record_iv,
    seal_record,
)
from emulator.session.settings import PskKey, SessionSettings
from emulator.session.table import (
    DecryptFailure,
    DirectionKeys,
    Session,
    SessionState,
    SessionTable,
    SessionType,
)
from emulator.transport.base import RecordFormat

__all__ = [
    "DecryptFailure",
    "DirectionKeys",
    "PskKey",
    "RecordError",
    "RecordFormat",
    "SequenceOverflow",
    "Session",
    "SessionSettings",
    "SessionState",
    "SessionTable",
    "SessionType",
    "open_record",
    "peek_session_id",
    "record_iv",
    "seal_record",
]
