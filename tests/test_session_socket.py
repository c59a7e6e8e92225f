"""Secure sessions over real loopback sockets (SpdmServer + SpdmConnection), PCI DOE and
MCTP: a representative subset of the in-process cross product (tests/test_session.py).

The certificate chain is fetched with GET_CERTIFICATE (the identity requester flow), so
Hash(Ct) in the transcript is the chain as the responder sent it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from emulator.codec.constants import (
    AeadSuite,
    BaseAsymAlgo,
    BaseHashAlgo,
    DheGroup,
    RequestCode,
    RequesterCap,
    ResponseCode,
)
from emulator.connection import SpdmConnection
from emulator.device.model import Device
from emulator.options import RunOptions
from emulator.requester import Requester, RequesterConfig
from emulator.requester.identity import flow_for
from emulator.requester.session import load_identity, open_session, psk_exchange
from emulator.requester.transport import SocketClient
from emulator.server.server import SpdmServer
from emulator.transport import get_binding
from tests.test_session import FULL_FLAGS, HINT, PSK, ROOT, make_device, measurements_request

Serve = Callable[[Device, str], Awaitable[int]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[SpdmServer] = []

    async def start(device: Device, binding_name: str) -> int:
        binding = get_binding(binding_name)
        srv = SpdmServer(
            RunOptions(host="127.0.0.1", port=0),
            binding,
            lambda number, peer: SpdmConnection(device, binding, number=number, peer=peer),
        )
        await srv.start()
        servers.append(srv)
        return srv.port

    yield start
    for srv in servers:
        await srv.stop()


CASES = [
    ("doe", 0x11, DheGroup.SECP_256_R1, AeadSuite.AES_128_GCM, BaseAsymAlgo.ECDSA_P256, False),
    ("mctp", 0x11, DheGroup.FFDHE_2048, AeadSuite.CHACHA20_POLY1305, BaseAsymAlgo.ECDSA_P384, True),
    ("doe", 0x12, DheGroup.SECP_384_R1, AeadSuite.AES_256_GCM, BaseAsymAlgo.RSAPSS_3072, True),
    ("mctp", 0x12, DheGroup.SECP_521_R1, AeadSuite.AES_128_GCM, BaseAsymAlgo.ECDSA_P521, False),
    ("doe", 0x13, DheGroup.FFDHE_4096, AeadSuite.CHACHA20_POLY1305, BaseAsymAlgo.ECDSA_P384, False),
    ("mctp", 0x13, DheGroup.FFDHE_3072, AeadSuite.AES_256_GCM, BaseAsymAlgo.EDDSA_ED25519, True),
]


@pytest.mark.parametrize(("binding", "version", "dhe", "aead", "asym", "in_clear"), CASES)
async def test_session_over_socket(
    serve: Serve,
    binding: str,
    version: int,
    dhe: DheGroup,
    aead: AeadSuite,
    asym: BaseAsymAlgo,
    in_clear: bool,
) -> None:
    if asym == BaseAsymAlgo.EDDSA_ED25519 and version < 0x12:
        pytest.skip("EdDSA exists from SPDM 1.2")
    port = await serve(make_device(), binding)
    flags = FULL_FLAGS | (RequesterCap.HANDSHAKE_IN_THE_CLEAR_CAP if in_clear else 0)
    cfg = RequesterConfig(
        version=version,
        flags=flags,
        base_asym=int(asym),
        base_hash=int(BaseHashAlgo.SHA_384),
        dhe=int(dhe),
        aead=int(aead),
    )
    async with SocketClient("127.0.0.1", port, get_binding(binding), timeout=10) as client:
        req = Requester(client, cfg)
        await req.vca()
        flow = flow_for(req)
        await flow.get_digests()
        await flow.get_certificate(0)
        chain = flow.chains[0].chain  # the SPDM certificate chain as received
        s = await open_session(req, peer_chain=chain, binding=binding)
        assert s.in_clear == in_clear
        rsp = await s.send(measurements_request(version, 1))
        assert rsp[:2] == bytes((version, ResponseCode.MEASUREMENTS))
        await s.key_update(1)
        await s.key_update(2)
        await s.heartbeat()
        await s.end_session()
        # the plain connection still works after the session
        assert (await req.send(bytes((version, RequestCode.GET_DIGESTS, 0, 0))))[1] == 0x01


@pytest.mark.parametrize("binding", ["doe", "mctp"])
async def test_psk_and_mutual_over_socket(serve: Serve, binding: str) -> None:
    dev = make_device(mut_auth="encap")
    port = await serve(dev, binding)
    cfg = RequesterConfig(
        version=0x12,
        flags=FULL_FLAGS | RequesterCap.MUT_AUTH_CAP,
        base_asym=int(BaseAsymAlgo.ECDSA_P384),
        base_hash=int(BaseHashAlgo.SHA_384),
    )
    async with SocketClient("127.0.0.1", port, get_binding(binding), timeout=10) as client:
        req = Requester(client, cfg)
        await req.vca()
        flow = flow_for(req)
        await flow.get_digests()
        await flow.get_certificate(0)
        identity = load_identity(str(ROOT / "certs/requester/ecdsa-p384/slot0"))
        s = await open_session(
            req, peer_chain=flow.chains[0].chain, binding=binding, identity=identity
        )
        assert s.mut_auth_requested == 0x02
        p = await psk_exchange(req, psk=PSK, hint=HINT, binding=binding)
        await s.heartbeat()
        await p.heartbeat()
        await p.end_session()
        await s.end_session()
