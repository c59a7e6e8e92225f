"""The requester's view of an ERROR response (shared by the requester modules)."""

from __future__ import annotations

from emulator.codec.constants import ErrorCode, code_name
from emulator.errors import RequesterError


class SpdmErrorReply(RequesterError):
    """The responder answered ERROR."""

    def __init__(self, request_code: int, response: bytes) -> None:
        self.request_code = request_code
        self.response = response
        self.code = response[2] if len(response) > 2 else -1
        self.data = response[3] if len(response) > 3 else -1
        try:
            name = ErrorCode(self.code).name
        except ValueError:
            name = f"0x{self.code:02X}"
        self.error_name = name
        super().__init__(
            f"{code_name(request_code)} answered ERROR {name} (data 0x{self.data:02X})"
        )


#: What the requester offers by default: everything (a test requester).
