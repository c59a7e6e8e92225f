"""The requester's size limits over a real socket (DSP0274 1.2+, "Large SPDM message
transfer mechanism", ERROR ResponseTooLarge), byte for byte.

A response larger than the requester's MaxSPDMmsgSize (without CHUNK_CAP on both sides:
its DataTransferSize) is ERROR(ResponseTooLarge) whose extended error data is the 4-byte
size of the response, in the clear and inside a session; one between DataTransferSize
and MaxSPDMmsgSize is chunked when both sides have CHUNK_CAP.  The request then has the
effects of an ERROR: the state, the transcripts and the session table are as they were,
which the requester's own checks show (a repeated NEGOTIATE_ALGORITHMS is accepted, a
CHALLENGE_AUTH signature over the requester's own transcript verifies, KEY_EXCHANGE never
fills the session table).  Expected sizes come from the DSP0274 layouts (DIGESTS: 4 bytes
+ one digest per slot) or from the same request answered on a connection without limits.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from emulator.app import Emulator
from emulator.codec.constants import (
    BaseAsymAlgo,
    BaseHashAlgo,
    DheGroup,
    RequestCode,
    RequesterCap,
    ResponseCode,
)
from emulator.options import RunOptions
from emulator.profiles import Profile
from emulator.requester.identity import flow_for
from emulator.requester.requester import Requester, RequesterConfig, SpdmErrorReply
from emulator.requester.session import key_exchange, open_session
from emulator.requester.transport import SocketClient
from emulator.transport import get_binding
from tests.helpers import shipped_profile

DOE = get_binding("doe")
PLAIN = int(RequesterCap.CERT_CAP | RequesterCap.CHAL_CAP)
CHUNK = PLAIN | int(RequesterCap.CHUNK_CAP)
SESSION = (
    PLAIN
    | int(RequesterCap.ENCRYPT_CAP)
    | int(RequesterCap.MAC_CAP)
    | int(RequesterCap.KEY_EX_CAP)
    | int(RequesterCap.HBEAT_CAP)
)


def too_large(version: int, size: int) -> bytes:
    """ERROR(ResponseTooLarge = 0x0D), Param2 0, ExtendedErrorData = ResponseSize (LE32)."""
    return bytes((version, 0x7F, 0x0D, 0x00)) + struct.pack("<I", size)


@asynccontextmanager
async def serving(profile: Profile) -> AsyncIterator[int]:
    emu = Emulator(RunOptions(profile=profile, host="127.0.0.1", port=0))
    await emu.start()
    try:
        yield emu.port
    finally:
        await emu.stop()


@asynccontextmanager
async def requester(port: int, **config: Any) -> AsyncIterator[tuple[Requester, SocketClient]]:
    async with SocketClient("127.0.0.1", port, DOE, timeout=20) as client:
        yield Requester(client, RequesterConfig(**config)), client


# --- in the clear ---------------------------------------------------------------------


async def test_algorithms_over_max_spdm_msg_size_leaves_vca_where_it_was() -> None:
    """DataTransferSize = MaxSPDMmsgSize = 42, no CHUNK_CAP: the 52-byte ALGORITHMS (four
    AlgStructs) is refused; the connection stays after CAPABILITIES, so the same
    NEGOTIATE_ALGORITHMS is answered the same way again (not UnexpectedRequest), GET_DIGESTS
    is still out of order, and a request whose ALGORITHMS fits negotiates."""
    profile = shipped_profile("default")
    async with serving(profile) as port, SocketClient("127.0.0.1", port, DOE) as c:

        async def send(message: bytes) -> bytes:
            return (await c.exchange(message)).message

        assert (await send(bytes((0x10, 0x84, 0, 0))))[1] == ResponseCode.VERSION
        caps = bytes((0x12, 0xE1, 0, 0, 0, 0, 0, 0)) + struct.pack("<III", PLAIN, 42, 42)
        assert (await send(caps))[1] == ResponseCode.CAPABILITIES
        structs = (
            bytes((2, 0x20, 0x10, 0x00))  # DHE: SECP_384_R1
            + bytes((3, 0x20, 0x02, 0x00))  # AEAD: AES_256_GCM
            + bytes((4, 0x20, 0x80, 0x00))  # ReqBaseAsymAlg: ECDSA_P384
            + bytes((5, 0x20, 0x01, 0x00))  # KeySchedule: SPDM
        )

        def negotiate(tables: bytes, count: int) -> bytes:
            length = 32 + len(tables)
            return (
                bytes((0x12, 0xE3, count, 0))
                + struct.pack("<HBB", length, 0x01, 0x02)  # DMTF measurements, OpaqueFmt1
                + struct.pack("<II", int(BaseAsymAlgo.ECDSA_P384), int(BaseHashAlgo.SHA_384))
                + bytes(12)
                + bytes((0, 0, 0, 0))  # ExtAsymCount, ExtHashCount, reserved, MEL spec
                + tables
            )

        with_tables = negotiate(structs, 4)
        assert await send(with_tables) == too_large(0x12, 36 + 16)
        assert await send(with_tables) == too_large(0x12, 36 + 16)  # still not negotiated
        assert await send(bytes((0x12, 0x81, 0, 0))) == bytes((0x12, 0x7F, 0x04, 0x00))
        algorithms = await send(negotiate(b"", 0))
        assert algorithms[:2] == bytes((0x12, ResponseCode.ALGORITHMS)) and len(algorithms) == 36


async def test_digests_over_the_limit_are_not_in_the_challenge_transcript() -> None:
    """multi-slot, SHA-256: DIGESTS is 4 + 6 * 32 = 196 bytes.  With MaxSPDMmsgSize 180
    DIGESTS is refused; the CERTIFICATE portions and CHALLENGE_AUTH fit,
    and the requester verifies CHALLENGE_AUTH's signature over *its* transcript, which has
    no DIGESTS: it verifies only if the device left DIGESTS out of message B too."""
    profile = shipped_profile("multi-slot")
    config = dict(
        version=0x12,
        flags=PLAIN,
        data_transfer_size=180,
        max_spdm_msg_size=180,
        base_asym=int(BaseAsymAlgo.ECDSA_P384),
        base_hash=int(BaseHashAlgo.SHA_256),
    )
    async with serving(profile) as port, requester(port, **config) as (q, _c):
        await q.vca()
        with pytest.raises(SpdmErrorReply) as refused:
            await q.send(bytes((0x12, RequestCode.GET_DIGESTS, 0, 0)))
        assert refused.value.response == too_large(0x12, 4 + 6 * 32)
        flow = flow_for(q, portion=180 - 8)
        await flow.get_certificate(0)
        result = await flow.challenge(0)  # raises unless the signature verifies
        assert not result.transcript.count(bytes((0x12, RequestCode.GET_DIGESTS, 0, 0)))
        (chal_req, chal_rsp) = q.log[-1]
        assert chal_req[1] == RequestCode.CHALLENGE and len(chal_rsp) <= 180


async def test_between_data_transfer_size_and_max_it_is_chunked() -> None:
    """default device (CHUNK_CAP), SHA-256: DIGESTS is 4 + 4 * 32 = 132 bytes.  With CHUNK_CAP,
    DataTransferSize 42 and MaxSPDMmsgSize 140 it comes by ERROR(LargeResponse) +
    CHUNK_GETs; with MaxSPDMmsgSize 131 it is refused and nothing waits for CHUNK_GET."""
    base = dict(
        version=0x12,
        flags=CHUNK,
        data_transfer_size=42,
        base_asym=int(BaseAsymAlgo.ECDSA_P384),
        base_hash=int(BaseHashAlgo.SHA_256),
    )
    async with serving(shipped_profile("default")) as port:
        async with requester(port, **base, max_spdm_msg_size=140) as (q, c):
            await q.vca()
            raw = (await c.exchange(bytes((0x12, RequestCode.GET_DIGESTS, 0, 0)))).message
            # ERROR(LargeResponse), Handle; DOE pads the object to whole dwords
            assert raw[:4] == bytes((0x12, 0x7F, 0x0F, 0x00)) and raw[5:] == bytes(3)
            first = await c.exchange(bytes((0x12, 0x86, 0, raw[4], 0, 0)))  # CHUNK_GET seq 0
            assert first.message[:2] == bytes((0x12, 0x06))  # CHUNK_RESPONSE
            assert struct.unpack_from("<I", first.message, 12) == (132,)  # LargeMessageSize
        async with requester(port, **base, max_spdm_msg_size=131) as (q, c):
            await q.vca()
            raw = await c.exchange(bytes((0x12, RequestCode.GET_DIGESTS, 0, 0)))
            assert raw.message == too_large(0x12, 132)
            for handle in range(256):  # nothing waits for CHUNK_GET, under any handle
                chunk_get = bytes((0x12, 0x86, 0, handle, 0, 0))
                assert (await c.exchange(chunk_get)).message == bytes((0x12, 0x7F, 0x04, 0x00))


# --- sessions ------------------------------------------------------------------------


def session_config(max_size: int, base_hash: BaseHashAlgo, flags: int = SESSION) -> dict[str, Any]:
    return dict(
        version=0x12,
        flags=flags,
        data_transfer_size=max_size,
        max_spdm_msg_size=max_size,
        base_asym=int(BaseAsymAlgo.ECDSA_P384),
        base_hash=int(base_hash),
        dhe=int(DheGroup.SECP_256_R1),
    )


async def peer_chain(q: Requester) -> bytes:
    """VCA, then slot 0's chain in 200-byte portions."""
    await q.vca()
    return (await flow_for(q, portion=200).get_certificate(0)).chain


def key_exchange_rsp_size(rsp: bytes, signature: int, verify: int) -> int:
    """DSP0274 1.2 table "KEY_EXCHANGE_RSP": header 4, RspSessionID 2, MutAuthRequested 1,
    SlotIDParam 1, RandomData 32, ExchangeData (P-256: 64), MeasurementSummaryHash (none
    asked), OpaqueDataLength 2, OpaqueData, Signature, ResponderVerifyData (the transport
    may pad the message: the size is the sum of the fields)."""
    opaque = struct.unpack_from("<H", rsp, 104)[0]
    return 106 + opaque + signature + verify


async def test_key_exchange_over_the_limit_opens_no_session() -> None:
    """A KEY_EXCHANGE_RSP over MaxSPDMmsgSize is refused as often as it is asked for: no
    session is left half-open behind the ERROR (else the table would fill and the device
    answer SessionLimitExceeded)."""
    profile = shipped_profile("default")
    async with serving(profile) as port:
        async with requester(port, **session_config(0x1200, BaseHashAlgo.SHA_384)) as (q, _c):
            chain = await peer_chain(q)
            await key_exchange(q, peer_chain=chain)
            size = key_exchange_rsp_size(q.log[-1][1], signature=96, verify=48)
        limit = 250
        assert size > limit
        async with requester(port, **session_config(limit, BaseHashAlgo.SHA_384)) as (q, _c):
            chain = await peer_chain(q)
            for _ in range(profile.sessions.max_sessions + 2):
                with pytest.raises(SpdmErrorReply) as refused:
                    await key_exchange(q, peer_chain=chain)
                assert refused.value.response == too_large(0x12, size)


async def test_in_a_session_the_error_is_sealed_and_the_session_goes_on() -> None:
    """SHA-512, handshake in the clear: KEY_EXCHANGE_RSP and FINISH_RSP fit in 240 bytes,
    DIGESTS (4 + 4 * 64 = 260) does not.  In the session, GET_DIGESTS gets
    ERROR(ResponseTooLarge) sealed in the session (decrypted by the requester's own keys),
    and the session goes on."""
    flags = SESSION | int(RequesterCap.HANDSHAKE_IN_THE_CLEAR_CAP)
    config = session_config(240, BaseHashAlgo.SHA_512, flags)
    async with serving(shipped_profile("default")) as port, requester(port, **config) as (q, _c):
        s = await open_session(q, peer_chain=await peer_chain(q))
        assert max(len(rsp) for _req, rsp in q.log) <= 240
        with pytest.raises(SpdmErrorReply) as refused:
            await s.send(bytes((0x12, RequestCode.GET_DIGESTS, 0, 0)))
        assert refused.value.response == too_large(0x12, 260)
        assert s.log[-1][1] == too_large(0x12, 260)  # the decrypted record
        await s.heartbeat()
        await s.end_session()
