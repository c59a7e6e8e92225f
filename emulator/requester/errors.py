"""The requester's view of an ERROR response (shared by the requester modules)."""

from __future__ import annotations

from dataclasses import dataclass

from emulator.codec.constants import ErrorCode, code_name
from emulator.errors import RequesterError

#: libspdm's LIBSPDM_MAX_RDT_EXPONENT
MAX_RDT_EXPONENT = 31


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


@dataclass(frozen=True, slots=True)
class NotReady:
    """One ERROR(ResponseNotReady)'s extended error data (DSP0274 1.3 10.17)."""

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

    def check(self, request_code: int) -> None:
        """libspdm ``libspdm_handle_response_not_ready``: RequestCode is the request's,
        RDTM > 1, RDTExponent <= 31; RequesterError otherwise."""
        if self.request_code != request_code:
            raise RequesterError(
                f"ResponseNotReady names request code 0x{self.request_code:02X}, "
                f"but {code_name(request_code)} was sent"
            )
        if self.rdtm <= 1:
            raise RequesterError(f"ResponseNotReady: RDTM {self.rdtm} must be > 1")
        if self.rdt_exponent > MAX_RDT_EXPONENT:
            raise RequesterError(
                f"ResponseNotReady: RDTExponent {self.rdt_exponent} > {MAX_RDT_EXPONENT}"
            )
