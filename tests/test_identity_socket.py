"""VCA -> digests -> certificate -> challenge over real loopback sockets (SpdmServer +
SpdmConnection), PCI DOE and MCTP bindings, SPDM 1.0-1.3."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from emulator.codec.constants import BaseAsymAlgo, BaseHashAlgo
from emulator.connection import SpdmConnection
from emulator.device.model import Device
from emulator.options import RunOptions
from emulator.requester import Requester, RequesterConfig
from emulator.requester.identity import flow_for, verify_challenge_signature
from emulator.requester.transport import SocketClient
from emulator.server.server import SpdmServer
from emulator.transport import get_binding
from tests.helpers import make_device

A = BaseAsymAlgo
H = BaseHashAlgo

Serve = Callable[[str], Awaitable[int]]


@pytest.fixture(scope="module")
def device() -> Device:
    return make_device()


@pytest.fixture
async def serve(device: Device) -> AsyncIterator[Serve]:
    servers: list[SpdmServer] = []

    async def start(binding_name: str) -> int:
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
    (binding, version, asym, hash_algo)
    for binding in ("doe", "mctp")
    for version in (0x10, 0x11, 0x12, 0x13)
    for asym, hash_algo in ((A.ECDSA_P384, H.SHA_384), (A.ECDSA_P256, H.SHA_256))
]
CASES += [
    ("doe", 0x12, A.RSAPSS_3072, H.SHA_384),
    ("mctp", 0x11, A.RSASSA_2048, H.SHA_512),
    ("doe", 0x13, A.ECDSA_P521, H.SHA_512),
]


@pytest.mark.parametrize(("binding", "version", "asym", "hash_algo"), CASES)
async def test_identity_over_socket(
    serve: Serve, binding: str, version: int, asym: int, hash_algo: int
) -> None:
    port = await serve(binding)
    async with SocketClient("127.0.0.1", port, get_binding(binding), timeout=10) as client:
        req = Requester(
            client, RequesterConfig(version=version, base_asym=asym, base_hash=hash_algo)
        )
        await req.vca()
        assert (req.neg.base_asym, req.neg.base_hash) == (asym, hash_algo)
        flow = flow_for(req)
        digests = await flow.get_digests()
        slots = [s for s in range(8) if digests.provisioned_mask & (1 << s)]
        for slot in slots:
            await flow.get_certificate(slot)
        res = await flow.challenge(slots[-1], 0)
        key = flow.chains[slots[-1]].leaf_key
        assert verify_challenge_signature(
            version, asym, hash_algo, key, res.transcript, res.signature
        )
        # redo VCA on the same connection and challenge with the cached chain (empty B)
        await req.vca()
        await flow.challenge(0)
