"""The dispatch table: one line per request code, read top to bottom (libspdm
``m_libspdm_get_response_struct[]``).  DSP0274 1.3 table 4 gives the codes; each line
says the least version, the capability the device must advertise, where the request may
be sent, and the requester capability it needs.

Adding a request = one module with its handler + one line here.  Messages of other
application protocols that a secured record carries (MCTP: PLDM) have their own short
table, :data:`APPLICATION_PROTOCOLS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

import emulator.responder.algorithms as algorithms
import emulator.responder.capabilities as capabilities
import emulator.responder.certificates as certificates
import emulator.responder.challenge as challenge
import emulator.responder.chunking as chunking
import emulator.responder.encapsulated as encapsulated
import emulator.responder.endpoint_info as endpoint_info
import emulator.responder.events as events
import emulator.responder.key_exchange as key_exchange
import emulator.responder.measurements as measurements
import emulator.responder.mel as mel
import emulator.responder.pldm as pldm
import emulator.responder.provisioning as provisioning
import emulator.responder.psk as psk
import emulator.responder.respond_if_ready as respond_if_ready
import emulator.responder.session_control as session_control
import emulator.responder.vendor_defined as vendor_defined
import emulator.responder.version as version
from emulator.codec.constants import RequestCode, RequesterCap, ResponderCap
from emulator.responder.base import HandlerSpec, SessionRule

if TYPE_CHECKING:
    from emulator.responder.core import Responder

_OUT = SessionRule.OUTSIDE_ONLY
_ANY = SessionRule.EITHER
#: the largest HEARTBEAT_ACK / KEY_UPDATE_ACK / END_SESSION_ACK or ERROR: a 4-byte header
#: and at most 32 bytes of ExtendedErrorData (DSP0274 1.3 10.14 table "ERROR")
_ACK = 4 + 32
#: the largest ALGORITHMS: the 36-byte fixed part and at most six 4-byte AlgStructs (1.4:
#: DHE, AEAD, ReqBaseAsym, KeySchedule, ReqPqcAsym, KEM; the responder selects no
#: extended algorithm) (DSP0274 1.4 10.5)
_ALGORITHMS = 36 + 6 * 4
#: the largest DIGESTS: eight 64-byte digests and, in a 1.3 multi-key connection, each
#: slot's KeyPairID (1), CertificateInfo (1) and KeyUsageMask (2) (DSP0274 1.3 10.6)
_DIGESTS = 4 + 8 * (64 + 1 + 1 + 2)
_IN = SessionRule.INSIDE_ONLY
_ENCAP = ResponderCap.ENCAP_CAP | ResponderCap.MUT_AUTH_CAP
_MEAS = ResponderCap.MEAS_CAP_NO_SIG | ResponderCap.MEAS_CAP_SIG
_EP_INFO = ResponderCap.EP_INFO_CAP_NO_SIG | ResponderCap.EP_INFO_CAP_SIG


def build_table() -> dict[int, HandlerSpec]:
    """The responder's request code -> handler spec."""
    lines = (
        # VCA (DSP0274 1.3 10.3-10.5): these two check their own version and state
        HandlerSpec(RequestCode.GET_VERSION, version.get_version, session=_OUT, own_ordering=True),
        HandlerSpec(
            RequestCode.GET_CAPABILITIES,
            capabilities.get_capabilities,
            session=_OUT,
            own_ordering=True,
        ),
        HandlerSpec(
            RequestCode.NEGOTIATE_ALGORITHMS,
            algorithms.negotiate_algorithms,
            session=_OUT,
            max_response=_ALGORITHMS,
        ),
        # identity (10.6-10.9)
        HandlerSpec(
            RequestCode.GET_DIGESTS,
            certificates.get_digests,
            capability=ResponderCap.CERT_CAP,
            session=_ANY,
            max_response=_DIGESTS,
        ),
        HandlerSpec(
            RequestCode.GET_CERTIFICATE,
            certificates.get_certificate,
            capability=ResponderCap.CERT_CAP,
            session=_ANY,
        ),
        HandlerSpec(
            RequestCode.CHALLENGE,
            challenge.challenge,
            capability=ResponderCap.CHAL_CAP,
            session=_OUT,
        ),
        # measurements (10.11)
        HandlerSpec(
            RequestCode.GET_MEASUREMENTS,
            measurements.get_measurements,
            capability=_MEAS,
            session=_ANY,
        ),
        HandlerSpec(
            RequestCode.GET_MEASUREMENT_EXTENSION_LOG,
            mel.get_measurement_extension_log,
            min_version=0x13,
            capability=ResponderCap.MEL_CAP,
            session=_ANY,
        ),
        # endpoint info (1.3 10.16)
        HandlerSpec(
            RequestCode.GET_ENDPOINT_INFO,
            endpoint_info.get_endpoint_info,
            min_version=0x13,
            capability=_EP_INFO,
            session=_ANY,
        ),
        # sessions (10.19-10.23)
        HandlerSpec(
            RequestCode.KEY_EXCHANGE,
            key_exchange.key_exchange,
            min_version=0x11,
            capability=ResponderCap.KEY_EX_CAP,
            session=_OUT,
            peer_capability=RequesterCap.KEY_EX_CAP,
        ),
        HandlerSpec(
            RequestCode.FINISH,
            key_exchange.finish,
            min_version=0x11,
            capability=ResponderCap.KEY_EX_CAP,
            session=_ANY,
            peer_capability=RequesterCap.KEY_EX_CAP,
        ),
        HandlerSpec(
            RequestCode.PSK_EXCHANGE,
            psk.psk_exchange,
            min_version=0x11,
            capability=psk.PSK_CAPS,
            session=_OUT,
            peer_capability=RequesterCap.PSK_CAP,
        ),
        HandlerSpec(
            RequestCode.PSK_FINISH,
            psk.psk_finish,
            min_version=0x11,
            capability=ResponderCap.PSK_CAP_WITH_CONTEXT,
            session=_ANY,
            peer_capability=RequesterCap.PSK_CAP,
        ),
        HandlerSpec(
            RequestCode.HEARTBEAT,
            session_control.heartbeat,
            min_version=0x11,
            capability=ResponderCap.HBEAT_CAP,
            session=_ANY,
            max_response=_ACK,
        ),
        HandlerSpec(
            RequestCode.KEY_UPDATE,
            session_control.key_update,
            min_version=0x11,
            capability=ResponderCap.KEY_UPD_CAP,
            session=_ANY,
            max_response=_ACK,
        ),
        HandlerSpec(
            RequestCode.END_SESSION,
            session_control.end_session,
            min_version=0x11,
            session=_ANY,
            max_response=_ACK,
        ),
        # encapsulated requests: mutual authentication, responder key update (10.15)
        HandlerSpec(
            RequestCode.GET_ENCAPSULATED_REQUEST,
            encapsulated.get_encapsulated_request,
            min_version=0x11,
            capability=_ENCAP,
            session=_ANY,
        ),
        HandlerSpec(
            RequestCode.DELIVER_ENCAPSULATED_RESPONSE,
            encapsulated.deliver_encapsulated_response,
            min_version=0x11,
            capability=_ENCAP,
            session=_ANY,
        ),
        # provisioning (1.2 10.13-10.14, 1.3 10.13-10.15)
        HandlerSpec(
            RequestCode.GET_CSR,
            provisioning.get_csr,
            min_version=0x12,
            capability=ResponderCap.CSR_CAP,
            session=_ANY,
        ),
        HandlerSpec(
            RequestCode.SET_CERTIFICATE,
            provisioning.set_certificate,
            min_version=0x12,
            capability=ResponderCap.SET_CERT_CAP,
            session=_ANY,
        ),
        HandlerSpec(
            RequestCode.GET_KEY_PAIR_INFO,
            provisioning.get_key_pair_info,
            min_version=0x13,
            capability=ResponderCap.GET_KEY_PAIR_INFO_CAP,
            session=_ANY,
        ),
        HandlerSpec(
            RequestCode.SET_KEY_PAIR_INFO,
            provisioning.set_key_pair_info,
            min_version=0x13,
            capability=ResponderCap.SET_KEY_PAIR_INFO_CAP,
            session=_ANY,
        ),
        # events (1.3 10.26-10.28): SEND_EVENT goes to the requester, encapsulated
        HandlerSpec(
            RequestCode.GET_SUPPORTED_EVENT_TYPES,
            events.get_supported_event_types,
            min_version=0x13,
            capability=ResponderCap.EVENT_CAP,
            session=_IN,
        ),
        HandlerSpec(
            RequestCode.SUBSCRIBE_EVENT_TYPES,
            events.subscribe_event_types,
            min_version=0x13,
            capability=ResponderCap.EVENT_CAP,
            session=_IN,
        ),
        # ResponseNotReady (10.17), vendor-defined (10.18), large messages (10.24-10.25)
        HandlerSpec(RequestCode.RESPOND_IF_READY, respond_if_ready.respond_if_ready, session=_ANY),
        HandlerSpec(
            RequestCode.VENDOR_DEFINED_REQUEST, vendor_defined.vendor_defined, session=_ANY
        ),
        HandlerSpec(RequestCode.CHUNK_GET, chunking.chunk_get, min_version=0x12, session=_ANY),
        HandlerSpec(
            RequestCode.CHUNK_SEND,
            chunking.chunk_send,
            min_version=0x12,
            capability=ResponderCap.CHUNK_CAP,
            session=_ANY,
            peer_capability=RequesterCap.CHUNK_CAP,
        ),
    )
    return {int(line.code): line for line in lines}


#: The table every responder uses unless it is given its own (read-only).
DEFAULT_TABLE: Mapping[int, HandlerSpec] = MappingProxyType(build_table())


#: application protocol (a binding's ``RecordFormat.app_protocols`` name) -> the handler
#: answering its messages in a session: ``fn(responder, message, session_id)`` -> the
#: response (b"": none), None when the device does not speak it
ApplicationHandler = Callable[["Responder", bytes, int], "bytes | None"]
APPLICATION_PROTOCOLS: Mapping[str, ApplicationHandler] = MappingProxyType(
    {
        "pldm": pldm.respond,  # DSP0240 in DSP0275 secured messages (MCTP type 0x01)
    }
)
