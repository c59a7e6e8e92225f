"""The pytest plugin (``emulator.pytest_plugin``), used exactly as a CI user would.

The fixtures come from the installed ``pytest11`` entry point (``pip install -e .``);
requests here are framed and parsed by hand (PCI DOE, MCTP, DSP0274 VERSION table),
independently of the emulator's transport code.  ``pytester`` runs the shipped
example (``examples/test_my_requester.py``) in a separate pytest process, so the entry
point registration, the marker and the command-line options are tested as users get them.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import struct
import threading
from pathlib import Path

import pytest

from emulator.codec.constants import MeasurementHashAlgo
from emulator.errors import ProfileError, TransportError
from emulator.options import RunOptions
from emulator.pytest_plugin import (
    PluginError,
    SpdmResponder,
    SpdmResponderFactory,
)
from emulator.requester import Requester, SpdmErrorReply, measurements

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "test_my_requester.py"

NORMAL = 0x0001
TRANSPORT = {"doe": 2, "mctp": 1, "none": 0}
GET_VERSION = bytes.fromhex("10840000")
#: VERSION of the default profile (DSP0274 "Successful VERSION response"): 1.0, 1.1, 1.2, 1.3
DEFAULT_VERSION = bytes.fromhex("1004000000040010001100120013")


def wrap(message: bytes, transport: str) -> bytes:
    """The transport message as spdm-emu frames it (PCIe DOE object or MCTP message)."""
    if transport == "doe":
        padded = message + bytes(-len(message) % 4)
        return struct.pack("<HBBI", 0x0001, 0x01, 0, 2 + len(padded) // 4) + padded
    if transport == "mctp":
        return b"\x05" + message
    return message


def unwrap(payload: bytes, transport: str, size: int) -> bytes:
    if transport == "doe":
        vendor, obj_type, _, dwords = struct.unpack_from("<HBBI", payload)
        assert (vendor, obj_type) == (0x0001, 0x01)
        assert dwords * 4 == len(payload)
        return payload[8 : 8 + size]
    if transport == "mctp":
        assert payload[0] == 0x05
        return payload[1 : 1 + size]
    return payload[:size]


def recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "the emulator closed the connection"
        data += chunk
    return data


def blocking_exchange(address: str, message: bytes, transport: str, size: int) -> bytes:
    """One NORMAL frame over a plain blocking socket, as an external requester would."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        payload = wrap(message, transport)
        sock.sendall(struct.pack(">III", NORMAL, TRANSPORT[transport], len(payload)) + payload)
        command, kind, length = struct.unpack(">III", recv_exact(sock, 12))
        assert (command, kind) == (NORMAL, TRANSPORT[transport])
        return unwrap(recv_exact(sock, length), transport, size)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


# --------------------------------------------------------------------- the fixtures


def test_sync_test_gets_a_running_device_on_a_free_loopback_port(
    spdm_responder: SpdmResponder,
) -> None:
    assert spdm_responder.host == "127.0.0.1"
    assert spdm_responder.port > 0
    assert spdm_responder.address == f"127.0.0.1:{spdm_responder.port}"
    assert spdm_responder.transport == "doe"
    assert spdm_responder.device.name == "default"
    assert spdm_responder.running
    reply = blocking_exchange(spdm_responder.address, GET_VERSION, "doe", len(DEFAULT_VERSION))
    assert reply == DEFAULT_VERSION
    # the event is recorded before the response is sent
    assert spdm_responder.requests == ["GET_VERSION"]
    event = spdm_responder.events[0]
    assert event.request == GET_VERSION
    assert event.response == DEFAULT_VERSION
    assert event.error is None
    state = spdm_responder.state()
    assert (state["device"], state["port"], state["transport"]) == (
        "default",
        spdm_responder.port,
        "doe",
    )


async def test_async_test_drives_the_device_with_the_requester(
    spdm_responder: SpdmResponder,
) -> None:
    async with spdm_responder.client() as channel:
        requester = Requester(channel)
        negotiated = await requester.vca()
        assert negotiated.version == 0x13
        # while the connection is open, state() shows what it negotiated
        (conn,) = spdm_responder.state()["connections"]
        assert (conn["state"], conn["version"]) == ("NEGOTIATED", "1.3")
        assert conn["base_asym"] == negotiated.base_asym
    assert spdm_responder.requests == ["GET_VERSION", "GET_CAPABILITIES", "NEGOTIATE_ALGORITHMS"]
    # the requester got each response as recorded, plus DOE padding (< 4 zero bytes)
    for event, (_request, response) in zip(spdm_responder.events, requester.log, strict=True):
        assert event.response is not None
        size = len(event.response)
        assert response[:size] == event.response
        assert response[size:] == bytes(len(response) - size) and len(response) - size < 4


async def test_the_device_does_not_run_on_the_tests_loop(spdm_responder: SpdmResponder) -> None:
    test_thread = threading.current_thread()
    where = spdm_responder.call(threading.current_thread)
    assert where is not test_thread and where.name == "spdm-emulator"
    emulator_loop = spdm_responder.call(asyncio.get_running_loop)
    assert emulator_loop is not asyncio.get_running_loop()


@pytest.mark.spdm_profile("default", transport="mctp", seed=7)
def test_marker_chooses_profile_transport_and_seed(spdm_responder: SpdmResponder) -> None:
    assert spdm_responder.transport == "mctp"
    assert spdm_responder.device.seed == 7
    reply = blocking_exchange(spdm_responder.address, GET_VERSION, "mctp", len(DEFAULT_VERSION))
    assert reply == DEFAULT_VERSION


@pytest.mark.spdm_profile(transport="none")
def test_marker_without_profile_keeps_the_default_profile(spdm_responder: SpdmResponder) -> None:
    assert (spdm_responder.device.name, spdm_responder.transport) == ("default", "none")
    reply = blocking_exchange(spdm_responder.address, GET_VERSION, "none", len(DEFAULT_VERSION))
    assert reply == DEFAULT_VERSION


@pytest.mark.parametrize(
    ("spdm_responder", "transport"),
    [
        ("default", "doe"),
        ({"transport": "mctp", "seed": 3}, "mctp"),
        (RunOptions(transport="none", port=0), "none"),
    ],
    indirect=["spdm_responder"],
)
def test_indirect_parametrization(spdm_responder: SpdmResponder, transport: str) -> None:
    assert spdm_responder.transport == transport
    reply = blocking_exchange(spdm_responder.address, GET_VERSION, transport, len(DEFAULT_VERSION))
    assert reply == DEFAULT_VERSION


@pytest.mark.spdm_profile(transport="mctp")
@pytest.mark.parametrize("spdm_responder", [{"transport": "doe"}], indirect=True)
def test_a_parameter_overrides_the_marker(spdm_responder: SpdmResponder) -> None:
    assert spdm_responder.transport == "doe"


@pytest.mark.spdm_profile(max_payload=0x2000, idle_timeout=30.0)
def test_marker_passes_emulator_options(spdm_responder: SpdmResponder) -> None:
    assert spdm_responder.emulator.server.config.max_payload == 0x2000
    assert spdm_responder.emulator.server.config.idle_timeout == 30.0


@pytest.mark.spdm_profile(faults=["on=GET_VERSION,nth=1,do=error:Busy"])
def test_marker_faults_are_installed_before_the_device_serves(
    spdm_responder: SpdmResponder,
) -> None:
    assert spdm_responder.faults is not None and len(spdm_responder.faults) == 1
    # ERROR(Busy) (DSP0274 "ERROR response": 0x7F, Param1 = ErrorCode 0x03, Param2 = 0)
    busy = bytes.fromhex("107f0300")
    assert blocking_exchange(spdm_responder.address, GET_VERSION, "doe", 4) == busy
    assert blocking_exchange(spdm_responder.address, GET_VERSION, "doe", 14) == DEFAULT_VERSION
    first, second = spdm_responder.events
    assert (first.error, second.error) == (0x03, None)
    assert first.faults and not second.faults


async def test_faults_and_measurements_change_while_the_device_runs(
    spdm_responder: SpdmResponder,
) -> None:
    faults = spdm_responder.faults
    assert faults is not None and len(faults) == 0
    async with spdm_responder.client() as channel:
        requester = Requester(channel)
        await requester.vca()
        rule = faults.add("on=GET_MEASUREMENTS,nth=1,do=error:Unspecified")
        with pytest.raises(SpdmErrorReply) as unspecified:
            await measurements.get_measurements(requester, 2)
        assert unspecified.value.error_name == "Unspecified"
        assert faults.remove(rule.id) is rule
        before = await measurements.get_measurements(requester, 2)
        spdm_responder.device.measurements.set_value(2, b"firmware v2")
        after = await measurements.get_measurements(requester, 2)
    hash_name = MeasurementHashAlgo(requester.neg.measurement_hash).name.replace("_", "").lower()
    assert after.blocks[0].value == hashlib.new(hash_name, b"firmware v2").digest()
    assert before.blocks[0].value != after.blocks[0].value
    assert spdm_responder.requests.count("GET_MEASUREMENTS") == 3


def test_factory_starts_several_devices_and_stops_one_early(
    spdm_responder_factory: SpdmResponderFactory,
) -> None:
    first = spdm_responder_factory()
    second = spdm_responder_factory("default", transport="mctp", seed=1)
    assert first.port != second.port
    assert (first.transport, second.transport) == ("doe", "mctp")
    assert first.device is not second.device
    assert blocking_exchange(first.address, GET_VERSION, "doe", 14) == DEFAULT_VERSION
    assert blocking_exchange(second.address, GET_VERSION, "mctp", 14) == DEFAULT_VERSION
    assert (len(first.events), len(second.events)) == (1, 1)
    first.stop()
    assert not first.running
    assert refused(first.port)
    assert blocking_exchange(second.address, GET_VERSION, "mctp", 14) == DEFAULT_VERSION
    assert spdm_responder_factory.responders == [first, second]


# --------------------------------------------------------------------- lifecycle, errors


def test_close_stops_the_server_and_the_thread() -> None:
    with SpdmResponderFactory() as make:
        device = make()
        thread = device._thread
        port = device.port
        # a connection still open at shutdown is closed by the emulator
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        payload = wrap(GET_VERSION, "doe")
        sock.sendall(struct.pack(">III", NORMAL, 2, len(payload)) + payload)
        header = recv_exact(sock, 12)
        assert unwrap(recv_exact(sock, struct.unpack(">III", header)[2]), "doe", 14) == (
            DEFAULT_VERSION
        )
    try:
        assert sock.recv(1) == b""
    finally:
        sock.close()
    assert refused(port)
    assert not thread.alive
    assert make.loop_errors == []
    with pytest.raises(PluginError, match="closed"):
        make()
    make.close()  # idempotent


def test_bad_requests_are_reported_with_the_culprit() -> None:
    with SpdmResponderFactory() as make:
        with pytest.raises(PluginError, match="unknown option 'max_payloads'"):
            make(max_payloads=1)
        with pytest.raises(TransportError, match="unknown transport 'pcie'"):
            make(transport="pcie")
        with pytest.raises(PluginError, match="seed must be an integer"):
            make(seed="1")  # type: ignore[arg-type]
        with pytest.raises(ProfileError, match="no-such-profile"):
            make("no-such-profile")
        assert make.responders == []


def test_call_from_inside_the_emulator_thread_runs_directly(
    spdm_responder: SpdmResponder,
) -> None:
    inner = spdm_responder.call(lambda: spdm_responder.call(threading.current_thread))
    assert inner.name == "spdm-emulator"


# --------------------------------------------------------------------- as users get it


def test_entry_point_is_registered() -> None:
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="pytest11") if e.name == "spdm_emulator"]
    assert entry.value == "emulator.pytest_plugin"


def user_project(pytester: pytest.Pytester) -> None:
    """A CI user's project: pytest-asyncio in strict mode (its default), loop scope set."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")


def test_example_runs_in_a_separate_pytest(pytester: pytest.Pytester) -> None:
    user_project(pytester)
    pytester.makepyfile(test_example=EXAMPLE.read_text())
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=6)
    # without the entry point's plugin (named spdm_emulator), the fixtures do not exist
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-p", "no:spdm_emulator", "-q", "-k", "two_devices"
    )
    result.stdout.fnmatch_lines(["*fixture 'spdm_responder_factory' not found*"])


def test_marker_options_and_loop_errors_in_a_separate_pytest(pytester: pytest.Pytester) -> None:
    user_project(pytester)
    profile = pytester.path / "my-device.toml"
    text = (ROOT / "profiles" / "default.toml").read_text()
    text = text.replace('name = "default"', 'name = "my-device"', 1)
    profile.write_text(text.replace('"../certs/', f'"{ROOT}/certs/'))
    pytester.makepyfile(
        test_options="""
        import asyncio

        def test_command_line_chooses_the_device(spdm_responder):
            assert spdm_responder.device.name == "my-device"
            assert spdm_responder.transport == "mctp"

        def test_loop_error_fails_the_test_at_teardown(spdm_responder):
            def boom():
                raise RuntimeError("boom in the emulator")
            spdm_responder.call(lambda: asyncio.get_running_loop().call_soon(boom))
            spdm_responder.state()  # the callback has run by now
        """
    )
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--spdm-profile",
        str(profile),
        "--spdm-transport",
        "mctp",
    )
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_loop_error_fails_the_test_at_teardown*",
            "*the emulator's event loop reported errors during the test:*",
            "*boom in the emulator*",
        ]
    )
    markers = pytester.runpytest_inprocess("--markers")
    markers.stdout.fnmatch_lines(["@pytest.mark.spdm_profile(profile=None, *, transport=None*"])
    helptext = pytester.runpytest_inprocess("--help")
    helptext.stdout.fnmatch_lines(["*--spdm-profile=NAME|FILE*", "*--spdm-transport=*"])
