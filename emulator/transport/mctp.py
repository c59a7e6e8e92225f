"""MCTP binding as spdm-emu frames it (DSP0275 SPDM over MCTP, DSP0236).

The socket payload is one MCTP message: a 1-byte message type (0x05 SPDM, 0x06 secured
SPDM; bit 7 is the integrity-check flag, which SPDM does not use) followed by the message.
There is no MCTP packet header or fragmentation on the platform socket.
"""

from __future__ import annotations

from emulator.errors import TransportError
from emulator.transport.base import PushFraming, RecordFormat, SocketTransport, TransportMessage

#: MCTP message types (DSP0239): PLDM, SPDM, secured SPDM
MCTP_TYPE_PLDM = 0x01
MCTP_TYPE_SPDM = 0x05
MCTP_TYPE_SECURED_SPDM = 0x06
#: DSP0277 records start with a 4-byte session ID.
SESSION_ID_SIZE = 4
#: libspdm LIBSPDM_MCTP_SEQUENCE_NUMBER_COUNT / LIBSPDM_MCTP_MAX_RANDOM_NUMBER_COUNT.
MCTP_SEQUENCE_NUMBER_SIZE = 2
MCTP_MAX_RANDOM_PADDING = 32
#: pcap link type of MCTP captures (libspdm ``industry_standard/link_type_ex.h``): each
#: packet starts with the MCTP transport header (DSP0236 8.1).
LINKTYPE_MCTP = 291
#: MCTP transport header of a captured packet: header version 1, null destination and
#: source EIDs, SOM|EOM, tag 0; the tag-owner bit (0x08) is set on requests.
MCTP_HEADER_VERSION = 0x01
MCTP_FLAGS_SOM_EOM = 0xC0
MCTP_FLAG_TAG_OWNER = 0x08


class MctpBinding(PushFraming):
    """Encode/decode MCTP messages of type SPDM and secured SPDM.

    Platform socket: NORMAL frames of transport type 1 (spdm-emu ``--trans MCTP``).
    """

    name: str = "mctp"
    socket_transport: SocketTransport = SocketTransport.MCTP
    pcap_link_type: int | None = LINKTYPE_MCTP
    carries_secured: bool = True

    def decode(self, payload: bytes) -> TransportMessage:
        """Strip the message-type byte; reject other MCTP message types."""
        if not payload:
            raise TransportError("MCTP message is empty: no message type byte")
        message_type = payload[0]
        if message_type not in (MCTP_TYPE_SPDM, MCTP_TYPE_SECURED_SPDM):
            raise TransportError(
                f"MCTP message type 0x{message_type:02x} is not SPDM (0x05) or secured SPDM (0x06)"
            )
        message = payload[1:]
        if not message:
            raise TransportError("MCTP message carries an empty SPDM message")
        secured = message_type == MCTP_TYPE_SECURED_SPDM
        if secured and len(message) <= SESSION_ID_SIZE:
            raise TransportError(
                f"secured MCTP message carries {len(message)} bytes, "
                f"too short for a session ID and a record"
            )
        return TransportMessage(message=bytes(message), secured=secured)

    def encode(self, message: bytes, secured: bool = False) -> bytes:
        """Prefix the MCTP message type byte."""
        if not message:
            raise TransportError("cannot encode an empty SPDM message in an MCTP message")
        message_type = MCTP_TYPE_SECURED_SPDM if secured else MCTP_TYPE_SPDM
        return bytes((message_type,)) + message

    @property
    def record_format(self) -> RecordFormat:
        """2-byte sequence number, up to 32 random padding bytes, the SPDM message type
        in front of the message inside the record (libspdm mctp); a record may carry a
        PLDM message instead (message type 0x01, DSP0275 secured application messages)."""
        return RecordFormat(
            sequence_number_size=MCTP_SEQUENCE_NUMBER_SIZE,
            max_random_padding=MCTP_MAX_RANDOM_PADDING,
            app_header=bytes((MCTP_TYPE_SPDM,)),
            app_protocols=((MCTP_TYPE_PLDM, "pldm"),),
        )

    def answer_discovery(self, payload: bytes) -> bytes | None:
        """This binding has no transport-level discovery."""
        return None

    def pcap_packet(self, payload: bytes, from_requester: bool) -> bytes:
        """The MCTP transport header, then the payload (message type byte + message), as
        spdm-emu's ``--pcap`` writes them (link type 291)."""
        flags = MCTP_FLAGS_SOM_EOM | (MCTP_FLAG_TAG_OWNER if from_requester else 0)
        return bytes((MCTP_HEADER_VERSION, 0, 0, flags)) + payload
