"""Example: test an SPDM requester against an emulated device in CI.

Copy this file into your project's tests, ``pip install spdm-emulator`` (plus
``pytest-asyncio`` for the async test), and replace ``requester_command`` with
your requester.  The ``spdm_responder`` fixture comes from the package's pytest
plugin: no conftest is needed.  Each test gets its own device on a free
127.0.0.1 port, stopped after the test.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from emulator.pytest_plugin import SpdmResponder, SpdmResponderFactory


def requester_command(address: str, transport: str) -> list[str]:
    """The requester under test.  Replace with yours, e.g.
    ``["./build/bin/my_requester", "--connect", address, "--transport", transport]``.

    Here: the emulator's own ``probe`` command, which runs GET_VERSION,
    GET_CAPABILITIES and NEGOTIATE_ALGORITHMS and prints a JSON report.
    """
    return [sys.executable, "-m", "emulator", "probe", address, "--transport", transport, "--json"]


def test_requester_binary_authenticates_the_device(spdm_responder: SpdmResponder) -> None:
    """A plain (sync) test: the device serves from its own thread while we block."""
    result = subprocess.run(
        requester_command(spdm_responder.address, spdm_responder.transport),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    # What the device saw, in order, and that it never answered ERROR:
    assert spdm_responder.requests[:3] == [
        "GET_VERSION",
        "GET_CAPABILITIES",
        "NEGOTIATE_ALGORITHMS",
    ]
    assert all(event.error is None for event in spdm_responder.events)


@pytest.mark.spdm_profile("default", transport="mctp", seed=1)
def test_choose_the_device_with_a_marker(spdm_responder: SpdmResponder) -> None:
    """Profile (a shipped name or a TOML file), transport and seed come from the marker."""
    assert spdm_responder.transport == "mctp"
    result = subprocess.run(
        requester_command(spdm_responder.address, "mctp"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["version"] == "1.3"


@pytest.mark.asyncio
async def test_async_requester(spdm_responder: SpdmResponder) -> None:
    """An async test (pytest-asyncio): drive the device with the package's requester."""
    from emulator.requester import Requester

    async with spdm_responder.client() as channel:
        negotiated = await Requester(channel).vca()
    assert negotiated.version == 0x13
    state = spdm_responder.state()
    assert state["device"] == "default"


@pytest.mark.parametrize("spdm_responder", ["default", {"transport": "mctp"}], indirect=True)
def test_every_device_configuration(spdm_responder: SpdmResponder) -> None:
    """Indirect parametrization: a profile name, or a dict of marker keywords."""
    result = subprocess.run(
        requester_command(spdm_responder.address, spdm_responder.transport),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_two_devices_at_once(spdm_responder_factory: SpdmResponderFactory) -> None:
    """Several devices in one test, e.g. a platform with two SPDM endpoints."""
    first = spdm_responder_factory("default")
    second = spdm_responder_factory("default", transport="mctp")
    assert first.port != second.port
    for device in (first, second):
        result = subprocess.run(
            requester_command(device.address, device.transport),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert device.requests[0] == "GET_VERSION"
