"""The "none" binding: the platform-socket payload is the bare SPDM message.

spdm-emu's ``spdm_transport_none_lib`` copies messages as is and its decoder never reports
a session, so a secured record sent over "none" is indistinguishable from a plain SPDM
message and the peer cannot decode it.  This binding therefore refuses to carry secured
records: ``encode(secured=True)`` raises :class:`~emulator.errors.TransportError`, and
``decode`` always returns ``secured=False``.
"""

from __future__ import annotations

from emulator.errors import TransportError
from emulator.transport.base import PushFraming, RecordFormat, SocketTransport, TransportMessage


class NoneBinding(PushFraming):
    """Bare SPDM messages, no transport header (spdm-emu ``--trans NONE``).

    Platform socket: NORMAL frames of transport type 0.  No pcap link type that
    spdm_dump reads, no secured messages.
    """

    name: str = "none"
    socket_transport: SocketTransport = SocketTransport.NONE
    pcap_link_type: int | None = None
    carries_secured: bool = False

    def decode(self, payload: bytes) -> TransportMessage:
        """Return the payload as a plain SPDM message."""
        if not payload:
            raise TransportError("'none' transport payload is an empty SPDM message")
        return TransportMessage(message=bytes(payload), secured=False)

    def encode(self, message: bytes, secured: bool = False) -> bytes:
        """Return the message unchanged; secured records cannot be carried."""
        if secured:
            raise TransportError(
                "the 'none' transport cannot carry secured messages: it has no field "
                "that tells a secured record from a plain SPDM message"
            )
        if not message:
            raise TransportError("cannot encode an empty SPDM message")
        return bytes(message)

    @property
    def record_format(self) -> RecordFormat:
        """No sequence number, no random padding (spdm-emu's none transport)."""
        return RecordFormat(sequence_number_size=0, max_random_padding=0)

    def answer_discovery(self, payload: bytes) -> bytes | None:
        """This binding has no transport-level discovery."""
        return None

    def pcap_packet(self, payload: bytes, from_requester: bool) -> bytes:
        """No pcap link type carries bare SPDM messages."""
        raise TransportError("the 'none' transport has no pcap link type")
