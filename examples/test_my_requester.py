"""Example: test an SPDM requester against an emulated device in CI.

Copy this file into your project's tests, ``pip install spdm-emulator`` (plus
``pytest-asyncio`` for the async tests), and replace ``requester_command`` with
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
from emulator.requester import Requester, identity, measurements


def requester_command(address: str, transport: str) -> list[str]:
    """The requester under test.  Replace with yours, e.g.
    ``["./build/bin/my_requester", "--connect", address, "--transport", transport]``.

    Here: the emulator's own ``probe`` command, which runs GET_VERSION,
    GET_CAPABILITIES and NEGOTIATE_ALGORITHMS and prints a JSON report.
    """
    return [sys.executable, "-m", "emulator", "probe", address, "--transport", transport, "--json"]


def run_requester(device: SpdmResponder) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        requester_command(device.address, device.transport),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_requester_binary_talks_to_the_device(spdm_responder: SpdmResponder) -> None:
    """A plain (sync) test: the device serves from its own thread while we block."""
    result = run_requester(spdm_responder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["ok"] is True
    # What the device saw, in order, and that it never answered ERROR:
    assert spdm_responder.requests[:3] == [
        "GET_VERSION",
        "GET_CAPABILITIES",
        "NEGOTIATE_ALGORITHMS",
    ]
    assert all(event.error is None for event in spdm_responder.events)


def test_requester_binary_reports_a_device_error(spdm_responder: SpdmResponder) -> None:
    """Fault injection: the device answers ERROR(Unspecified) to GET_CAPABILITIES once."""
    spdm_responder.faults.add("on=GET_CAPABILITIES,nth=1,do=error:Unspecified")
    result = run_requester(spdm_responder)
    assert result.returncode != 0  # the requester must notice
    (event,) = [e for e in spdm_responder.events if e.request_name == "GET_CAPABILITIES"]
    assert event.response_name == "ERROR" and event.faults


@pytest.mark.asyncio
@pytest.mark.spdm_profile("default", transport="mctp", seed=1)
async def test_authenticate_and_measure(spdm_responder: SpdmResponder) -> None:
    """An async test (pytest-asyncio) on a device chosen by the marker (profile, transport,
    seed): the package's requester authenticates the device, and a measurement changed
    through the fixture shows up in the next signed GET_MEASUREMENTS."""
    assert spdm_responder.transport == "mctp"
    async with spdm_responder.client() as channel:
        requester = Requester(channel)
        negotiated = await requester.vca()
        assert negotiated.version == 0x13
        chain = await identity.get_certificate(requester, slot=0)  # chain verified
        await identity.challenge(requester, slot=0)  # signature verified
        before = await measurements.get_measurements(
            requester, 2, signed=True, public_key=chain.leaf_key
        )
        spdm_responder.device.measurements.set_value(2, b"new firmware image")
        after = await measurements.get_measurements(
            requester, 2, signed=True, public_key=chain.leaf_key
        )
        assert after.blocks[0].value != before.blocks[0].value
    assert spdm_responder.state()["device"] == "default"


@pytest.mark.asyncio
@pytest.mark.parametrize("spdm_responder", ["default", {"transport": "mctp"}], indirect=True)
async def test_every_device_configuration(spdm_responder: SpdmResponder) -> None:
    """Indirect parametrization: a profile name, or a dict of marker keywords."""
    async with spdm_responder.client() as channel:
        await Requester(channel).vca()
    assert spdm_responder.requests == ["GET_VERSION", "GET_CAPABILITIES", "NEGOTIATE_ALGORITHMS"]


@pytest.mark.asyncio
async def test_two_devices_at_once(spdm_responder_factory: SpdmResponderFactory) -> None:
    """Several devices in one test, e.g. a platform with two SPDM endpoints."""
    first = spdm_responder_factory("default")
    second = spdm_responder_factory("default", transport="mctp")
    assert first.port != second.port
    for device in (first, second):
        async with device.client() as channel:
            await Requester(channel).vca()
        assert device.requests[0] == "GET_VERSION"
