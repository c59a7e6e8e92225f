"""Typed outputs of a connection: the reply the server carries out and the exchange events
observers (telemetry, traces, the pytest fixture) receive.  No behaviour, no imports of the
core, so every layer can name them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from emulator.codec.constants import code_name


@dataclass(slots=True)
class Reply:
    """What the server must do after one NORMAL frame.

    ``payloads`` are transport payloads, each sent as one NORMAL frame, in order
    (empty: send nothing, i.e. the response was dropped).  ``delay`` seconds are
    waited before sending.  ``close`` closes the connection after sending.
    ``partial`` (bytes) sends only that many bytes of the first frame (header
    included) and then closes the connection.
    """

    payloads: list[bytes] = field(default_factory=list)
    delay: float = 0.0
    close: bool = False
    partial: int | None = None


@dataclass(frozen=True, slots=True)
class ExchangeEvent:
    """One request/response exchange, as telemetry and traces report it."""

    connection: int
    device: str
    request: bytes
    response: bytes | None
    session_id: int | None = None
    secured: bool = False
    #: ERROR code of the response, or None
    error: int | None = None
    #: why the responder answered ERROR / why the transport rejected the request
    reason: str = ""
    #: description of each fault applied to this exchange
    faults: tuple[str, ...] = ()
    #: the application protocol of request and response: "spdm", or another one a
    #: secured record carried ("pldm" over MCTP)
    protocol: str = "spdm"

    @property
    def request_name(self) -> str:
        if self.protocol != "spdm":
            return self.protocol.upper()
        return code_name(self.request[1]) if len(self.request) > 1 else "MALFORMED"

    @property
    def response_name(self) -> str:
        if self.response is None:
            return "NONE"
        if self.protocol != "spdm":
            return self.protocol.upper()
        return code_name(self.response[1]) if len(self.response) > 1 else "MALFORMED"


Observer = Callable[[ExchangeEvent], None]
