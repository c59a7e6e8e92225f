"""emulator.trace: decoded exchange traces and pcap captures (spdm_dump's format).

Message vectors are written by hand from the DSP0274 tables (little-endian fields);
pcap bytes from the pcap-savefile layout and libspdm's ``industry_standard/pcap.h`` /
``link_type_ex.h`` (magic a1b2c3d4 written little-endian, version 2.4, snap length
0x10000, link type 291 MCTP / 292 PCI DOE).
"""

from __future__ import annotations

import asyncio
import io
import shutil
import struct
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from emulator import cli
from emulator.app import Emulator
from emulator.connection import ExchangeEvent, Reply, SpdmConnection
from emulator.errors import CodecError, EmulatorError, TransportError
from emulator.options import RunOptions
from emulator.requester.transport import SocketClient
from emulator.server.platform import PlatformCommand
from emulator.trace import (
    LINKTYPE_MCTP,
    LINKTYPE_PCI_DOE,
    PcapRecorder,
    PcapWriter,
    Tracer,
    attach_tracing,
    describe_message,
    link_type_for,
    pcap_global_header,
    pcap_packet,
    pcap_record,
    read_pcap,
)
from emulator.transport import get_binding
from tests.helpers import make_device


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("\n", ""))


# --- hand-written SPDM 1.2 VCA messages (DSP0274 10.3-10.5) ----------------------------

GET_VERSION = h("10 84 00 00")
# VERSION: reserved, count 3, entries 0x1000, 0x1100, 0x1210 (1.2 update 1)
VERSION = h("10 04 00 00 00 03 0010 0011 1012")
# GET_CAPABILITIES 1.2: CTExponent 12, Flags CERT|CHAL (0x06), DTS 4608, MaxMsg 4608
GET_CAPS_12 = h("12 e1 00 00 00 0c 0000 06000000 00120000 00120000")
# CAPABILITIES 1.2: CTExponent 20, Flags CERT|CHAL|MEAS_SIG|KEY_EX (0x216), 4608 / 8192
CAPS_12 = h("12 61 00 00 00 14 0000 16020000 00120000 00200000")
# NEGOTIATE_ALGORITHMS 1.2: Length 48, MeasSpec DMTF, OtherParams FMT_1, BaseAsym
# P256|P384 (0x90), BaseHash SHA256|SHA384 (0x03), 4 AlgStructs (DHE, AEAD, ReqAsym, KS)
NEG_ALGS_12 = h(
    "12 e3 04 00 3000 01 02 90000000 03000000" + "00" * 12 + "00 00 00 00"
    "02 20 1800  03 20 0200  04 20 9000  05 20 0100"
)
# ALGORITHMS 1.2: Length 52, MeasSpecSel DMTF, OtherParamsSel FMT_1, MeasHash SHA384 (0x04),
# BaseAsymSel P384 (0x80), BaseHashSel SHA384 (0x02), 11 reserved, MELspecSel, counts, rsvd
ALGS_12 = h(
    "12 63 04 00 3400 01 02 04000000 80000000 02000000" + "00" * 11 + "00 00 00 0000"
    "02 20 1000  03 20 0200  04 20 8000  05 20 0100"
)
ERROR_UNEXPECTED = h("12 7f 04 00")
# ResponseNotReady: RDTExponent 1, RequestCode GET_DIGESTS, Token 3, RDTM 2
ERROR_NOT_READY = h("12 7f 42 00 01 81 03 02")


def test_vectors_are_consistent() -> None:
    assert len(NEG_ALGS_12) == 48 and NEG_ALGS_12[4] == 48
    assert len(ALGS_12) == 52 and ALGS_12[4] == 52
    assert len(GET_CAPS_12) == len(CAPS_12) == 20


@pytest.mark.parametrize(
    ("message", "text"),
    [
        (GET_VERSION, "GET_VERSION 1.0"),
        (VERSION, "VERSION 1.0 Versions=1.0,1.1,1.2.1.0"),
        (h("10 e1 00 00"), "GET_CAPABILITIES 1.0"),
        (
            h("11 e1 00 00 00 0c 0000 06000000"),
            "GET_CAPABILITIES 1.1 CTExponent=12 Flags=CERT_CAP|CHAL_CAP",
        ),
        (
            GET_CAPS_12,
            "GET_CAPABILITIES 1.2 CTExponent=12 Flags=CERT_CAP|CHAL_CAP "
            "DataTransferSize=4608 MaxSPDMmsgSize=4608",
        ),
        (
            CAPS_12,
            "CAPABILITIES 1.2 CTExponent=20 Flags=CERT_CAP|CHAL_CAP|MEAS_CAP_SIG|KEY_EX_CAP "
            "DataTransferSize=4608 MaxSPDMmsgSize=8192",
        ),
        (h("10 61 00 00 00 00 0000 00000000"), "CAPABILITIES 1.0 CTExponent=0 Flags=0"),
        # reserved flag bits are shown in hex, never dropped
        (
            h("11 61 00 00 00 00 0000 02000080"),
            "CAPABILITIES 1.1 CTExponent=0 Flags=CERT_CAP|0x80000000",
        ),
        (
            NEG_ALGS_12,
            "NEGOTIATE_ALGORITHMS 1.2 MeasurementSpec=DMTF OtherParams=OPAQUE_DATA_FMT_1 "
            "BaseAsym=ECDSA_P256|ECDSA_P384 BaseHash=SHA_256|SHA_384 "
            "DHE=SECP_256_R1|SECP_384_R1 AEAD=AES_256_GCM ReqBaseAsym=ECDSA_P256|ECDSA_P384 "
            "KeySchedule=SPDM",
        ),
        (
            ALGS_12,
            "ALGORITHMS 1.2 MeasurementSpec=DMTF OtherParams=OPAQUE_DATA_FMT_1 "
            "MeasurementHash=SHA_384 BaseAsym=ECDSA_P384 BaseHash=SHA_384 DHE=SECP_384_R1 "
            "AEAD=AES_256_GCM ReqBaseAsym=ECDSA_P384 KeySchedule=SPDM",
        ),
        (ERROR_UNEXPECTED, "ERROR 1.2 UnexpectedRequest(0x04) ErrorData=0x00"),
        (
            ERROR_NOT_READY,
            "ERROR 1.2 ResponseNotReady(0x42) ErrorData=0x00 RDTExponent=1 "
            "RequestCode=GET_DIGESTS Token=3 RDTM=2",
        ),
        (h("12 7f 99 07"), "ERROR 1.2 Reserved(0x99) ErrorData=0x07"),
        # no decoder: header parameters, size and hex
        (h("12 81 00 00"), "GET_DIGESTS 1.2 Param1=0x00 Param2=0x00 size=4 hex: 12 81 00 00"),
        (
            h("12 5a 01 02 ff"),
            "UNKNOWN_0x5A 1.2 Param1=0x01 Param2=0x02 size=5 hex: 12 5a 01 02 ff",
        ),
        (h("12"), "MALFORMED size=1 hex: 12"),
    ],
)
def test_describe_message(message: bytes, text: str) -> None:
    assert describe_message(message) == text


def test_describe_1_3_fields() -> None:
    # NEGOTIATE_ALGORITHMS 1.3 with MELspecification DMTF and no AlgStructs
    neg = h("13 e3 00 00 2000 01 02 80000000 02000000" + "00" * 12 + "00 00 00 01")
    assert describe_message(neg) == (
        "NEGOTIATE_ALGORITHMS 1.3 MeasurementSpec=DMTF OtherParams=OPAQUE_DATA_FMT_1 "
        "BaseAsym=ECDSA_P384 BaseHash=SHA_384 MELSpec=DMTF"
    )
    # 1.0 has neither OtherParams nor MELspecification
    neg10 = h("10 e3 00 00 2000 01 00 80000000 02000000" + "00" * 12 + "00 00 00 00")
    assert describe_message(neg10) == (
        "NEGOTIATE_ALGORITHMS 1.0 MeasurementSpec=DMTF BaseAsym=ECDSA_P384 BaseHash=SHA_384"
    )


def test_describe_malformed_and_long_messages() -> None:
    # CAPABILITIES 1.2 cut after the flags: too short for DataTransferSize
    short = CAPS_12[:12]
    text = describe_message(short)
    assert text.startswith("CAPABILITIES 1.2 malformed (")
    assert text.endswith("size=12 hex: " + short.hex(" "))
    # AlgStruct with FixedAlgCount 1 is reported, not raised
    bad = NEG_ALGS_12[:32] + h("02 10 1800") + NEG_ALGS_12[36:]
    assert "malformed (AlgStruct[0]: FixedAlgCount is 1, must be 2)" in describe_message(bad)
    # long messages: hex cut after the limit, or not at all
    cert = h("12 02 00 00") + bytes(range(100))
    assert describe_message(cert).endswith("hex: " + cert[:64].hex(" ") + " ...")
    assert describe_message(cert, hex_limit=None).endswith("hex: " + cert.hex(" "))


def test_tracer_lines_for_a_vca_exchange() -> None:
    out = io.StringIO()
    tracer = Tracer(out)
    events = [
        ExchangeEvent(1, "dev", GET_VERSION, VERSION),
        ExchangeEvent(1, "dev", GET_CAPS_12, CAPS_12),
        ExchangeEvent(1, "dev", NEG_ALGS_12, ALGS_12),
        ExchangeEvent(
            1,
            "dev",
            NEG_ALGS_12,
            ERROR_UNEXPECTED,
            error=0x04,
            reason="NEGOTIATE_ALGORITHMS after NEGOTIATED",
        ),
        ExchangeEvent(2, "dev", h("12 e8 00 00"), None, session_id=0xFFFEFFFD, secured=True),
        ExchangeEvent(1, "dev", h("12 81 00 00"), h("12 7f 03 00"), error=3, faults=("busy",)),
    ]
    for event in events:
        tracer(event)
    assert out.getvalue().splitlines() == [
        "conn 1  -> GET_VERSION 1.0",
        "conn 1  <- VERSION 1.0 Versions=1.0,1.1,1.2.1.0",
        "conn 1  -> GET_CAPABILITIES 1.2 CTExponent=12 Flags=CERT_CAP|CHAL_CAP "
        "DataTransferSize=4608 MaxSPDMmsgSize=4608",
        "conn 1  <- CAPABILITIES 1.2 CTExponent=20 Flags=CERT_CAP|CHAL_CAP|MEAS_CAP_SIG|KEY_EX_CAP "
        "DataTransferSize=4608 MaxSPDMmsgSize=8192",
        "conn 1  -> NEGOTIATE_ALGORITHMS 1.2 MeasurementSpec=DMTF OtherParams=OPAQUE_DATA_FMT_1 "
        "BaseAsym=ECDSA_P256|ECDSA_P384 BaseHash=SHA_256|SHA_384 DHE=SECP_256_R1|SECP_384_R1 "
        "AEAD=AES_256_GCM ReqBaseAsym=ECDSA_P256|ECDSA_P384 KeySchedule=SPDM",
        "conn 1  <- ALGORITHMS 1.2 MeasurementSpec=DMTF OtherParams=OPAQUE_DATA_FMT_1 "
        "MeasurementHash=SHA_384 BaseAsym=ECDSA_P384 BaseHash=SHA_384 DHE=SECP_384_R1 "
        "AEAD=AES_256_GCM ReqBaseAsym=ECDSA_P384 KeySchedule=SPDM",
        "conn 1  -> NEGOTIATE_ALGORITHMS 1.2 MeasurementSpec=DMTF OtherParams=OPAQUE_DATA_FMT_1 "
        "BaseAsym=ECDSA_P256|ECDSA_P384 BaseHash=SHA_256|SHA_384 DHE=SECP_256_R1|SECP_384_R1 "
        "AEAD=AES_256_GCM ReqBaseAsym=ECDSA_P256|ECDSA_P384 KeySchedule=SPDM",
        "conn 1  <- ERROR 1.2 UnexpectedRequest(0x04) ErrorData=0x00 "
        "reason: NEGOTIATE_ALGORITHMS after NEGOTIATED",
        "conn 2 session 0xFFFEFFFD  -> HEARTBEAT 1.2 Param1=0x00 Param2=0x00 size=4 "
        "hex: 12 e8 00 00",
        "conn 2 session 0xFFFEFFFD  <- (no response)",
        "conn 1  -> GET_DIGESTS 1.2 Param1=0x00 Param2=0x00 size=4 hex: 12 81 00 00",
        "conn 1  <- ERROR 1.2 Busy(0x03) ErrorData=0x00",
        "conn 1  !! fault: busy",
    ]


def test_tracer_clock_prefix() -> None:
    times = iter([100.0, 100.25])
    out = io.StringIO()
    tracer = Tracer(out, clock=lambda: next(times))
    tracer(ExchangeEvent(3, "dev", GET_VERSION, VERSION))
    tracer(ExchangeEvent(3, "dev", GET_VERSION, VERSION))
    lines = out.getvalue().splitlines()
    assert lines[0] == "+0.000000 conn 3  -> GET_VERSION 1.0"
    assert lines[3] == "+0.250000 conn 3  <- VERSION 1.0 Versions=1.0,1.1,1.2.1.0"


def test_tracer_on_a_live_responder() -> None:
    """The real responder's VCA answers decode in full (none shows up as malformed)."""
    out = io.StringIO()
    device = make_device()
    binding = get_binding("mctp")
    conn = SpdmConnection(device, binding, number=7, observers=[Tracer(out)])
    for request in (GET_VERSION, GET_CAPS_12, NEG_ALGS_12, NEG_ALGS_12):
        conn.receive(h("05") + request)
    lines = out.getvalue().splitlines()
    assert [line.split()[2:4] for line in lines] == [
        ["->", "GET_VERSION"],
        ["<-", "VERSION"],
        ["->", "GET_CAPABILITIES"],
        ["<-", "CAPABILITIES"],
        ["->", "NEGOTIATE_ALGORITHMS"],
        ["<-", "ALGORITHMS"],
        ["->", "NEGOTIATE_ALGORITHMS"],
        ["<-", "ERROR"],
    ]
    assert all(line.startswith("conn 7  ") and "malformed" not in line for line in lines)
    assert "Versions=1.0,1.1,1.2,1.3" in lines[1]
    assert lines[7].startswith(
        "conn 7  <- ERROR 1.2 UnexpectedRequest(0x04) ErrorData=0x00 reason: "
    )


# --- pcap -------------------------------------------------------------------------------


def test_global_header_bytes() -> None:
    assert pcap_global_header(LINKTYPE_PCI_DOE) == h(
        "d4c3b2a1 0200 0400 00000000 00000000 00000100 24010000"
    )
    assert pcap_global_header(LINKTYPE_MCTP) == h(
        "d4c3b2a1 0200 0400 00000000 00000000 00000100 23010000"
    )


def test_record_bytes_and_snaplen() -> None:
    # 1_700_000_000.123456789 s -> ts_sec 0x6553F100, ts_usec 123456 (0x0001E240)
    ts = 1_700_000_000_123_456_789
    assert pcap_record(h("aa bb"), ts) == h("00F15365 40E20100 02000000 02000000 aabb")
    # longer than the snap length: incl_len is cut, orig_len keeps the real size
    assert pcap_record(bytes(10), ts, snaplen=4) == h(
        "00F15365 40E20100 04000000 0a000000"
    ) + bytes(4)


def test_packets_per_link_type() -> None:
    doe = h("01000100 02000000 10840000")
    assert link_type_for("doe") == 292 and link_type_for("mctp") == 291
    assert pcap_packet("doe", doe, True) == doe
    # MCTP transport header: version 1, dest/src EID 0, SOM|EOM, tag owner on requests
    assert pcap_packet("mctp", h("05 10 84 00 00"), True) == h("01 00 00 c8 05 10 84 00 00")
    assert pcap_packet("mctp", h("05 10 04 00 00"), False) == h("01 00 00 c0 05 10 04 00 00")
    with pytest.raises(TransportError, match="'none' has no pcap link type"):
        link_type_for("none")


def test_link_types_come_from_the_bindings() -> None:
    """Bindings or their names; the link type is the binding's own ``pcap_link_type``."""
    for name in ("doe", "mctp"):
        binding = get_binding(name)
        assert link_type_for(binding) == link_type_for(name) == binding.pcap_link_type
        assert pcap_packet(binding, b"\x05\x10", False) == pcap_packet(name, b"\x05\x10", False)
    assert (LINKTYPE_PCI_DOE, LINKTYPE_MCTP) == (292, 291)
    with pytest.raises(
        TransportError, match=r"'none' has no pcap link type .*; use doe, mctp, storage or tcp$"
    ):
        link_type_for(get_binding("none"))
    with pytest.raises(TransportError, match="'none' has no pcap link type"):
        pcap_packet("none", b"\x10\x84\x00\x00", True)
    with pytest.raises(TransportError, match="unknown transport 'pcie'"):
        link_type_for("pcie")


def test_recorder_takes_a_binding(tmp_path: Path) -> None:
    rec = PcapRecorder(str(tmp_path / "m.pcap"), get_binding("mctp"), clock_ns=lambda: 0)
    assert (rec.binding_name, rec.link_type) == ("mctp", LINKTYPE_MCTP)
    rec.record(1, h("05 10 84 00 00"), True)
    rec.close()
    _, records = read_pcap((tmp_path / "m.pcap").read_bytes())
    assert [r.data for r in records] == [h("01 00 00 c8 05 10 84 00 00")]


def test_recorder_writes_a_byte_exact_file(tmp_path: Path) -> None:
    path = tmp_path / "cap.pcap"
    clock = iter([1_000_000_000_000_500_000, 1_000_000_001_000_000_000])
    rec = PcapRecorder(str(path), "doe", clock_ns=lambda: next(clock))
    request = h("01000100 03000000 10840000 ")  # DOE header says 3 DW
    response = h("01000100 05000000 10040000 00020010 00110000")
    rec.record_exchange(1, request, Reply([response], delay=0.25))
    rec.record_exchange(1, request, Reply([]))  # dropped: only the request is captured
    rec.close()
    assert path.read_bytes() == (
        h("d4c3b2a1 0200 0400 00000000 00000000 00000100 24010000")
        + h("00CA9A3B F4010000 0C000000 0C000000")
        + request
        # the delay moves the response's timestamp: 1e9 s + 500 us + 250 ms
        + h("00CA9A3B 84D20300 14000000 14000000")
        + response
        + h("01CA9A3B 00000000 0C000000 0C000000")
        + request
    )
    link, records = read_pcap(path.read_bytes())
    assert link == LINKTYPE_PCI_DOE
    assert [r.data for r in records] == [request, response, request]
    assert [(r.ts_sec, r.ts_usec) for r in records] == [
        (1_000_000_000, 500),
        (1_000_000_000, 250_500),
        (1_000_000_001, 0),
    ]


def test_recorder_partial_reply_and_per_connection_files(tmp_path: Path) -> None:
    rec = PcapRecorder(str(tmp_path / "c{conn}.pcap"), "mctp", clock_ns=lambda: 0)
    request = h("05 10 84 00 00")
    response = h("05 10 04 00 00 00 01 00 10")
    # partial: 12-byte frame header + 3 payload bytes leave the socket
    rec.record_exchange(4, request, Reply([response], partial=15))
    rec.record_exchange(5, request, Reply([response]))
    rec.close_connection(4)
    rec.close()
    _, four = read_pcap((tmp_path / "c4.pcap").read_bytes())
    _, five = read_pcap((tmp_path / "c5.pcap").read_bytes())
    assert [r.data for r in four] == [h("01 00 00 c8") + request, h("01 00 00 c0 05 10 04")]
    assert [r.data for r in five] == [h("01 00 00 c8") + request, h("01 00 00 c0") + response]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c4.pcap", "c5.pcap"]


def test_writer_on_a_stream_and_read_back_errors() -> None:
    buf = io.BytesIO()
    writer = PcapWriter(buf, LINKTYPE_MCTP)
    writer.write(b"\x01\x02\x03", 2_000_000)
    writer.close()  # not owned: flushed, left open
    data = buf.getvalue()
    assert writer.packets == 1 and len(data) == 24 + 16 + 3
    assert read_pcap(data)[1][0].data == b"\x01\x02\x03"
    with pytest.raises(CodecError, match="shorter than the 24-byte global header"):
        read_pcap(data[:10])
    with pytest.raises(CodecError, match="magic 0xA1B2C3D5"):
        read_pcap(struct.pack("<I", 0xA1B2C3D5) + data[4:])
    with pytest.raises(CodecError, match="truncated record header at offset 24"):
        read_pcap(data[:30])
    with pytest.raises(CodecError, match="incl_len 3 is invalid"):
        read_pcap(data[:-1])


# --- wiring: Emulator + CLI -------------------------------------------------------------


async def _raw_exchange(client: SocketClient, payload: bytes) -> bytes:
    await client.send_frame(PlatformCommand.NORMAL, payload)
    frame = await client.recv_frame()
    assert frame.command == PlatformCommand.NORMAL
    return frame.payload


@pytest.mark.parametrize("transport", ["doe", "mctp"])
async def test_attach_tracing_captures_what_the_socket_carried(
    tmp_path: Path, transport: str
) -> None:
    trace, pcap = tmp_path / "t.log", tmp_path / "t.pcap"
    emu = Emulator(RunOptions(port=0, transport=transport))
    cleanup = attach_tracing(emu, str(trace), str(pcap))
    if transport == "doe":  # hand-built data objects, lengths in DWORDs
        requests = [h("01000100 03000000") + GET_VERSION, h("01000100 07000000") + GET_CAPS_12]
    else:
        requests = [h("05") + GET_VERSION, h("05") + GET_CAPS_12]
    await emu.start()
    try:
        async with SocketClient("127.0.0.1", emu.port, get_binding(transport)) as client:
            responses = [await _raw_exchange(client, r) for r in requests]
            await client.shutdown()
        for _ in range(100):  # the server closes the connection after its SHUTDOWN echo
            if not emu.connections:
                break
            await asyncio.sleep(0.01)
    finally:
        await emu.stop()
        cleanup()
    link, records = read_pcap(pcap.read_bytes())
    expected = [requests[0], responses[0], requests[1], responses[1]]
    if transport == "doe":
        assert link == 292
        assert [r.data for r in records] == expected
    else:
        assert link == 291
        heads = [h("010000c8"), h("010000c0")] * 2
        assert [r.data for r in records] == [hd + p for hd, p in zip(heads, expected, strict=True)]
    lines = trace.read_text().splitlines()
    assert [line.split()[3:5] for line in lines] == [
        ["->", "GET_VERSION"],
        ["<-", "VERSION"],
        ["->", "GET_CAPABILITIES"],
        ["<-", "CAPABILITIES"],
    ]
    assert lines[2].endswith(
        "-> GET_CAPABILITIES 1.2 CTExponent=12 Flags=CERT_CAP|CHAL_CAP "
        "DataTransferSize=4608 MaxSPDMmsgSize=4608"
    )
    assert emu.observers == [] and emu.on_connection == []


async def test_serve_trace_flags_attach_to_the_emulator(tmp_path: Path) -> None:
    """``serve --trace/--pcap`` (cli.py's flags) -> RunOptions -> the Emulator attaches
    the tracer and the recorder while it runs, and detaches them when it stops."""
    parser = cli.build_parser()
    args = parser.parse_args(["serve", "--trace", "-", "--pcap", str(tmp_path / "x.pcap")])
    emu = Emulator(replace(cli.run_options(args), port=0))
    await emu.start()
    try:
        assert len(emu.observers) == 1
    finally:
        await emu.stop()
    assert (tmp_path / "x.pcap").read_bytes() == pcap_global_header(292)
    assert emu.observers == [] and emu.on_connection == []
    plain = Emulator(replace(cli.run_options(parser.parse_args(["serve"])), port=0))
    async with plain:
        assert plain.observers == [] and plain.on_connection == []
    none_emu = Emulator(RunOptions(port=0, transport="none"))
    with pytest.raises(TransportError, match="no pcap link type"):
        attach_tracing(none_emu, None, str(tmp_path / "n.pcap"))
    with pytest.raises(EmulatorError, match="trace: cannot open"):
        attach_tracing(emu, str(tmp_path / "missing" / "t.log"), None)


def test_serve_help_lists_the_options() -> None:
    result = subprocess.run(
        ["python3", "-m", "emulator", "serve", "--help"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=30,
        check=False,
    )
    if "--trace" not in result.stdout:
        pytest.skip("serve has no --trace flag yet")
    assert "--pcap FILE" in result.stdout


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_reads_a_doe_capture(tmp_path: Path) -> None:
    path = tmp_path / "doe.pcap"
    rec = PcapRecorder(str(path), "doe", clock_ns=lambda: 1_700_000_000_000_000_000)
    rec.record_exchange(
        1, h("01000100 03000000") + GET_VERSION, Reply([h("01000100 05000000") + VERSION[:12]])
    )
    rec.close()
    result = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.len", "-e", "frame.time_epoch"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert [r[0] for r in rows] == ["12", "20"]
    assert all(r[1].startswith("1700000000.000000") for r in rows)
