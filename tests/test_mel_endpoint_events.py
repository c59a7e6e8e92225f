"""SPDM 1.3 GET_MEASUREMENT_EXTENSION_LOG, GET_ENDPOINT_INFO (and its encapsulated form),
events (GET_SUPPORTED_EVENT_TYPES, SUBSCRIBE_EVENT_TYPES, SEND_EVENT / EVENT_ACK through
the encapsulated flow) and the multi-key mutual authentication transcript (EncapD), end
to end with the project's requester: byte-exact error paths from the DSP0274 1.3 tables,
signatures and the MEL replay checked with the requester's own code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from emulator.codec.constants import (
    AeadSuite,
    BaseAsymAlgo,
    BaseHashAlgo,
    DheGroup,
    ErrorCode,
    MeasurementHashAlgo,
    MelSpec,
    RequesterCap,
    ResponseCode,
)
from emulator.codec.events import DmtfEventType, EventGroup, mask_indices
from emulator.connection import SpdmConnection
from emulator.device.model import Device
from emulator.requester import Requester, RequesterConfig, SpdmErrorReply
from emulator.requester.endpoint_info import get_endpoint_info
from emulator.requester.events import (
    DEFAULT_REQUESTER_EP_INFO,
    get_supported_event_types,
    serve_encapsulated,
    subscribe_event_types,
)
from emulator.requester.identity import flow_for
from emulator.requester.measurements import get_measurements
from emulator.requester.mel import get_mel, replay
from emulator.requester.session import (
    ConnectionChannel,
    RequesterSession,
    load_identity,
    open_session,
)
from emulator.responder.encapsulated import arm_endpoint_info
from emulator.transport import get_binding
from tests.helpers import make_device, profile_data

ROOT = Path(__file__).resolve().parent.parent
REQ_SLOT = ROOT / "certs" / "requester" / "ecdsa-p384" / "slot0"
FLAGS = int(
    RequesterCap.CERT_CAP
    | RequesterCap.CHAL_CAP
    | RequesterCap.ENCRYPT_CAP
    | RequesterCap.MAC_CAP
    | RequesterCap.KEY_EX_CAP
    | RequesterCap.ENCAP_CAP
    | RequesterCap.EP_INFO_CAP_SIG
)


def hx(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


async def connect(
    dev: Device, version: int = 0x13, flags: int = FLAGS, **config: Any
) -> tuple[Requester, SpdmConnection]:
    conn = SpdmConnection(dev, get_binding("doe"))
    config.setdefault("mel_spec", int(MelSpec.DMTF))
    cfg = RequesterConfig(
        version=version,
        flags=flags,
        base_asym=int(BaseAsymAlgo.ECDSA_P384),
        base_hash=int(BaseHashAlgo.SHA_384),
        dhe=int(DheGroup.SECP_384_R1),
        aead=int(AeadSuite.AES_256_GCM),
        **config,
    )
    req = Requester(ConnectionChannel(conn), cfg)
    await req.vca()
    return req, conn


async def session(
    dev: Device, flags: int = FLAGS, config: dict[str, Any] | None = None, **kwargs: Any
) -> tuple[Requester, SpdmConnection, RequesterSession]:
    """A session; SessionPolicy TerminationPolicy 1 by default (the session survives the
    device's runtime updates that these tests make)."""
    kwargs.setdefault("session_policy", 0x01)
    req, conn = await connect(dev, flags=flags, **(config or {}))
    flow = flow_for(req)
    await flow.get_digests()
    chain = await flow.get_certificate(0)
    s = await open_session(req, peer_chain=chain.chain, **kwargs)
    return req, conn, s


async def raw(req: Requester, message: bytes) -> bytes:
    """The response without the DOE padding (zeros up to a DWORD)."""
    return (await req.channel.exchange(message)).message


def unpad(rsp: bytes, expected: bytes) -> bytes:
    """``rsp`` cut to ``expected``'s length when only DOE zero padding follows."""
    if (
        rsp[: len(expected)] == expected
        and not any(rsp[len(expected) :])
        and len(rsp) - len(expected) < 4
    ):
        return expected
    return rsp


# --- MEL ------------------------------------------------------------------------------------


async def test_mel_portions_and_replay() -> None:
    dev = make_device()
    req, _conn = await connect(dev)
    res = await get_mel(req, portion=16)
    assert res.log == dev.mel.encoded()  # type: ignore[union-attr]
    assert res.portions == -(-len(res.log) // 16)
    assert [e.value for e in res.entries] == [b"ROM", b"Boot FW", hx("0a030001")]
    # the MEL replays to block 8 of GET_MEASUREMENTS (hash-extended, SHA-384)
    block = (await get_measurements(req, 8)).blocks[0]
    assert block.value == replay(res.entries, 8, req.neg.measurement_hash)
    assert req.neg.measurement_hash == MeasurementHashAlgo.SHA_384
    # an entry appended at run time: in the log and in the block at once
    dev.mel.append(None, 9, b"kernel cmdline: quiet")  # type: ignore[union-attr]
    res2 = await get_mel(req)
    assert len(res2.entries) == 4 and res2.entries[3].mel_index == 4
    block2 = (await get_measurements(req, 8)).blocks[0]
    assert block2.value == replay(res2.entries, 8, req.neg.measurement_hash) != block.value


async def test_mel_byte_exact_and_errors() -> None:
    dev = make_device()
    req, conn = await connect(dev)
    log = dev.mel.encoded()  # type: ignore[union-attr]
    rsp = await raw(req, hx("13 EF 00 00 00000000 10000000"))
    assert rsp == hx("13 6F 00 00 10000000") + (len(log) - 16).to_bytes(4, "little") + log[:16]
    # the last bytes: RemainderLength 0
    rsp = await raw(req, hx("13 EF 00 00") + (len(log) - 3).to_bytes(4, "little") + hx("FF000000"))
    expected = hx("13 6F 00 00 03000000 00000000") + log[-3:]
    assert unpad(rsp, expected) == expected
    # Offset at the end: InvalidRequest; short request: InvalidRequest
    assert await raw(req, hx("13 EF 00 00") + len(log).to_bytes(4, "little") + bytes(4)) == hx(
        "13 7F 01 00"
    )
    assert await raw(req, hx("13 EF 00 00 00000000")) == hx("13 7F 01 00")
    # no MEL specification negotiated: UnexpectedRequest
    req2, _ = await connect(dev, mel_spec=0)
    assert await raw(req2, hx("13 EF 00 00 00000000 10000000")) == hx("13 7F 04 00")
    # SPDM 1.2 has no MEL; a device without MEL_CAP
    req12, _ = await connect(dev, version=0x12)
    assert await raw(req12, hx("12 EF 00 00 00000000 10000000")) == hx("12 7F 07 EF")
    data = profile_data()
    data["spdm"]["capabilities"].remove("MEL_CAP")
    req3, _ = await connect(make_device(spdm=data["spdm"]))
    assert await raw(req3, hx("13 EF 00 00 00000000 10000000")) == hx("13 7F 07 EF")
    _ = conn


async def test_large_mel_by_chunks_in_a_session() -> None:
    """A MEL larger than DataTransferSize: with CHUNK_CAP the portion is as large as asked
    and travels by CHUNK_GET; in a session too."""
    dev = make_device()
    for n in range(80):
        dev.mel.append(None, 9, f"entry {n} ".encode() * 12)  # type: ignore[union-attr]
    log = dev.mel.encoded()  # type: ignore[union-attr]
    assert len(log) > 4544
    req, _conn, s = await session(
        dev, flags=FLAGS | int(RequesterCap.CHUNK_CAP), config={"max_spdm_msg_size": 0x20000}
    )
    res = await get_mel(req, portion=0x10000, session_id=s.session_id)
    assert res.log == log and res.portions == 1
    # without CHUNK_CAP the device sends at most DataTransferSize - 12 per portion
    req2, _ = await connect(dev)
    res2 = await get_mel(req2, portion=0x10000)
    assert res2.log == log and res2.portions > 1


# --- GET_ENDPOINT_INFO --------------------------------------------------------------------


async def test_endpoint_info_signed_and_unsigned() -> None:
    dev = make_device()
    req, _conn = await connect(dev)
    flow = flow_for(req)
    await flow.get_digests()
    await flow.get_certificate(0)
    res = await get_endpoint_info(req, signed=True, slot=0)
    assert res.signed and res.ep_info == dev.endpoint_info
    # [device.pci] of the default profile: PCI-SIG VendorID 1b36, device 0010, revision 02
    # + class 010802 (the DWORD at 0x08), subsystem 1af4:1100; 24 bytes
    assert res.ep_info == hx("01 000000 13 03 02 361b 04 02 1000 04 02020801 02 f41a 02 0011")
    assert len(res.ep_info) == 24
    unsigned = await get_endpoint_info(req, signed=False)
    assert not unsigned.signed and unsigned.ep_info == res.ep_info
    expected = hx("13 07 00 00 00000000") + len(res.ep_info).to_bytes(4, "little") + res.ep_info
    assert unpad(await raw(req, hx("13 87 01 00 00 000000")), expected) == expected


async def test_endpoint_info_errors() -> None:
    dev = make_device()
    req, _conn = await connect(dev)
    nonce = bytes(32)
    assert await raw(req, hx("13 87 02 00 00 000000")) == hx("13 7F 01 00")  # SubCode 2
    assert await raw(req, hx("13 87 01 00 01 000000") + nonce[:8]) == hx("13 7F 01 00")
    assert await raw(req, hx("13 87 01 05 01 000000") + nonce) == hx("13 7F 01 00")  # slot 5
    assert await raw(req, hx("13 87 01 0F 01 000000") + nonce) == hx("13 7F 01 00")  # no pub key
    data = profile_data()
    caps = data["spdm"]["capabilities"]
    caps[caps.index("EP_INFO_CAP_SIG")] = "EP_INFO_CAP_NO_SIG"
    req2, _ = await connect(make_device(spdm=data["spdm"]))
    assert await raw(req2, hx("13 87 01 00 01 000000") + nonce) == hx("13 7F 07 87")
    assert (await raw(req2, hx("13 87 01 00 00 000000")))[1] == ResponseCode.ENDPOINT_INFO
    caps.remove("EP_INFO_CAP_NO_SIG")
    req3, _ = await connect(make_device(spdm=data["spdm"]))
    assert await raw(req3, hx("13 87 01 00 00 000000")) == hx("13 7F 07 87")


async def test_encapsulated_endpoint_info_outside_and_in_a_mutual_session() -> None:
    """spdm-emu OOB_ENCAP_ENDPOINT_INFO: the device asks the requester for its endpoint
    info; unsigned while it knows no requester chain, signed (and verified) in a session
    with mutual authentication."""
    dev = make_device()
    req, conn = await connect(dev)
    arm_endpoint_info(conn.responder)
    res = await serve_encapsulated(req)
    assert [m.signed for m in res.endpoint_info_requests] == [False]
    assert conn.responder.ctx.peer_endpoint_info == DEFAULT_REQUESTER_EP_INFO
    # nothing pending any more: NoPendingRequests (1.3), no request
    assert (await serve_encapsulated(req)).requests == []
    sessions = dict(profile_data()["sessions"], mut_auth="encap")
    dev2 = make_device(sessions=sessions)
    identity = load_identity(str(REQ_SLOT))
    flags = FLAGS | int(RequesterCap.MUT_AUTH_CAP)
    req2, conn2, s = await session(dev2, flags=flags, identity=identity)
    arm_endpoint_info(conn2.responder)
    res2 = await serve_encapsulated(req2, s, identity=identity)
    assert [m.signed for m in res2.endpoint_info_requests] == [True]
    assert conn2.responder.ctx.peer_endpoint_info == DEFAULT_REQUESTER_EP_INFO
    # a requester that signs with another key fails the device's check
    arm_endpoint_info(conn2.responder)
    from emulator.requester.session import RequesterIdentity
    from emulator.x509.generate import generate_chain

    other = generate_chain("ecdsa-p384", role="requester")
    with pytest.raises(SpdmErrorReply) as err:
        await serve_encapsulated(
            req2, s, identity=RequesterIdentity(other.cert_ders(), other.leaf_key)
        )
    assert err.value.code == ErrorCode.InvalidResponseCode


# --- events -------------------------------------------------------------------------------


async def test_supported_and_subscribe_byte_exact() -> None:
    dev = make_device()
    req, _conn, s = await session(dev)
    groups = await get_supported_event_types(s)
    assert groups == [EventGroup(0, b"", 1, 0, (1, 2, 3, 4))]
    rsp = await s.send(hx("13 E2 00 00"))
    # one DMTF group: SVH 00 00, EventTypeCount 4, EventGroupVer 1, Attributes 0, then
    # (EventTypeID, Reserved) x 4: 26 bytes
    assert rsp == hx("13 62 01 00 1A000000 00 00 0400 0100 00000000") + hx(
        "0100 0000 0200 0000 0300 0000 0400 0000"
    )
    assert await s.send(hx("13 E2 00 00 00"), allow_error=True) == hx("13 7F 01 00")
    assert await s.send(hx("13 F0 00 00"), allow_error=True) == hx("13 70 00 00")
    # a vendor group, an unknown DMTF type, 'all' with a list, a bad length
    bad = [
        hx("13 F0 01 00 0C000000 03 02 3412 0000 0100 01000000"),
        hx("13 F0 01 00 0E000000 00 00 0100 0100 00000000 0900 0000"),
        hx("13 F0 01 00 0E000000 00 00 0100 0100 01000000 0200 0000"),
        hx("13 F0 01 00 0F000000 00 00 0100 0100 00000000 0200 0000"),
    ]
    for message in bad:
        assert await s.send(message, allow_error=True) == hx("13 7F 01 00"), message.hex()
    # outside a session: SessionRequired
    assert await raw(req, hx("13 E2 00 00")) == hx("13 7F 0B 00")
    assert await raw(req, hx("13 F0 00 00")) == hx("13 7F 0B 00")


async def test_events_delivered_by_send_event() -> None:
    dev = make_device()
    req, conn, s = await session(dev)
    await subscribe_event_types(s, [EventGroup(0, b"", 1, 1, ())])
    # nothing has happened: no pending request
    assert (await serve_encapsulated(req, s)).events == []
    dev.measurements.set_value(2, b"new firmware")
    dev.measurements.set_value(4, b"other config")
    dev.mel.append(None, 9, b"runtime entry")  # type: ignore[union-attr]
    res = await serve_encapsulated(req, s)
    # MeasurementChanged merges the three changes (2, 4 and the MEL-extended 8)
    assert [e.event_type for e in res.events] == [DmtfEventType.MEASUREMENT_CHANGED]
    assert mask_indices(res.events[0].detail) == [2, 4, 8]
    first_id = res.events[0].instance_id
    # acknowledged: nothing left
    assert (await serve_encapsulated(req, s)).events == []
    # a certificate change (SET_CERTIFICATE erase of slot 2) -> CertificateChanged slot mask
    dev.provisioning.erase_certificate(slot_id=2, base_asym=int(BaseAsymAlgo.ECDSA_P384))  # type: ignore[union-attr]
    res = await serve_encapsulated(req, s)
    assert [(e.event_type, e.detail) for e in res.events] == [
        (DmtfEventType.CERTIFICATE_CHANGED, b"\x04")
    ]
    assert res.events[0].instance_id == first_id + 1
    # unsubscribed: changes make no events
    await subscribe_event_types(s, [])
    dev.measurements.set_value(2, b"again")
    assert (await serve_encapsulated(req, s)).events == []
    _ = conn


async def test_events_only_subscribed_types_and_pre_update() -> None:
    data = profile_data()
    data["spdm"]["capabilities"].remove("MEAS_FRESH_CAP")
    dev = make_device(spdm=data["spdm"])
    req, _conn, s = await session(dev)
    await subscribe_event_types(s, [EventGroup(0, b"", 1, 0, (3,))])  # MeasurementPreUpdate
    dev.measurements.set_value(3, b"held back until reset")
    res = await serve_encapsulated(req, s)
    assert [(e.event_type, mask_indices(e.detail)) for e in res.events] == [(3, [3])]
    dev.reset()  # applies it: MeasurementChanged, not subscribed
    assert (await serve_encapsulated(req, s)).events == []


async def test_event_all_policy_and_lost_events() -> None:
    data = profile_data()
    data["events"] = {"queue_limit": 2}
    dev = make_device(**data)
    req, _conn, s = await session(dev, session_policy=0x03)  # EventAllPolicy, Termination 1
    for i in range(1, 5):
        dev.measurements.set_value(i, b"x%d" % i)
        dev.provisioning.erase_certificate(slot_id=i % 4, base_asym=int(BaseAsymAlgo.ECDSA_P384))  # type: ignore[union-attr]
    # merged per type while undelivered: 2 events, within the limit
    res = await serve_encapsulated(req, s)
    assert sorted(e.event_type for e in res.events) == [2, 4]
    ids = [e.instance_id for e in res.events]
    assert ids == list(range(ids[0], ids[0] + 2))


async def test_event_queue_overflow_reports_event_lost() -> None:
    from emulator.device.events import EventQueue, EventSettings

    q = EventQueue(EventSettings(queue_limit=2))
    q.subscribe_all()
    q.queue(DmtfEventType.MEASUREMENT_CHANGED, bytes(32))
    q.queue(DmtfEventType.CERTIFICATE_CHANGED, b"\x01")
    q.queue(DmtfEventType.MEASUREMENT_PRE_UPDATE, bytes(32))  # one too many: oldest lost
    sent = q.take(4096)
    assert [e.event_type for e in sent] == [4, 3, 1]
    lost = sent[-1]
    assert lost.detail == (0).to_bytes(4, "little") + (1).to_bytes(4, "little")
    assert [e.instance_id for e in sent] == [2, 3, 4]
    assert q.acknowledge() == 3 and not q.pending


# --- multi-key mutual authentication: EncapD in the FINISH transcript ---------------------


@pytest.mark.parametrize("mode", ["encap", "get_digests"])
async def test_multi_key_mutual_auth_transcript(mode: str) -> None:
    """ALGORITHMS makes the requester's keys a multi-key connection (profile
    multi_key_conn, requester MULTI_KEY_CAP_NEG): its encapsulated DIGESTS carries the key
    fields and is message EncapD of TH for FINISH; both sides agree (FINISH verifies)."""
    data = profile_data()
    data["algorithms"]["multi_key_conn"] = True
    data["spdm"]["capabilities"].append("MULTI_KEY_CAP_NEG")
    data["sessions"]["mut_auth"] = mode
    dev = make_device(spdm=data["spdm"], algorithms=data["algorithms"], sessions=data["sessions"])
    identity = load_identity(str(REQ_SLOT))
    flags = FLAGS | int(RequesterCap.MUT_AUTH_CAP | RequesterCap.MULTI_KEY_CAP_NEG)
    req, conn, s = await session(dev, flags=flags, identity=identity)
    assert req.neg.multi_key_req and s.established
    table = conn.responder.ctx.sessions
    assert table is not None
    dev_session = table.get(s.session_id)
    assert dev_session is not None
    assert dev_session.encap_digests == s.encap_d != b""
    assert len(s.encap_d) == 4 + 48 + 4  # one digest, then KeyPairID, CertInfo, KeyUsage
    # the session works: both sides derived the same keys from TH2
    assert (await get_measurements(req, 1, session_id=s.session_id)).blocks[0].index == 1
