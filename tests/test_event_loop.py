"""``serve --event-loop``: uvloop when installed (the ``[fast]`` extra), else asyncio; the
server works the same on both."""

from __future__ import annotations

import asyncio
import importlib.util
import sys

import pytest

from emulator.cli import event_loop_runner
from emulator.connection import SpdmConnection
from emulator.errors import EmulatorError
from emulator.options import RunOptions
from emulator.requester import Requester, RequesterConfig
from emulator.requester.transport import SocketClient
from emulator.server.server import SpdmServer
from emulator.transport import get_binding
from tests.helpers import make_device

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


def test_asyncio_is_asyncio() -> None:
    assert event_loop_runner("asyncio") == (asyncio.run, "asyncio")


def test_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert event_loop_runner("auto") == (asyncio.run, "asyncio")
    with pytest.raises(EmulatorError, match=r"uvloop is not installed.*\[fast\]"):
        event_loop_runner("uvloop")
    with pytest.raises(EmulatorError, match="not one of"):
        event_loop_runner("trio")


async def _vca_over_a_socket() -> int:
    device = make_device()
    doe = get_binding("doe")
    srv = SpdmServer(
        RunOptions(host="127.0.0.1", port=0),
        doe,
        lambda number, peer: SpdmConnection(device, doe, number=number, peer=peer),
    )
    async with srv, SocketClient("127.0.0.1", srv.port, doe) as client:
        neg = await Requester(client, RequesterConfig(version=0x12)).vca()
        await client.shutdown()
    return neg.version


@pytest.mark.skipif(not HAVE_UVLOOP, reason="uvloop is not installed (the [fast] extra)")
def test_the_server_on_uvloop() -> None:
    run, name = event_loop_runner("auto")
    assert name == "uvloop"
    assert run(_vca_over_a_socket()) == 0x12


def test_the_server_on_asyncio_from_the_runner() -> None:
    run, _name = event_loop_runner("asyncio")
    assert run(_vca_over_a_socket()) == 0x12
