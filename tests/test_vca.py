"""The connection phase (DSP0274 10.3-10.5): order, field checks, errors, selection, reset."""

from __future__ import annotations

import pytest

from emulator.codec.constants import RequestCode
from emulator.codec.messages import AlgStruct, CapabilitiesMsg, NegotiateAlgorithmsMsg
from emulator.device.model import Device
from emulator.profiles import load_profile_text
from emulator.requester import LoopbackChannel, Requester, RequesterConfig
from emulator.responder import ConnectionState, Responder
from tests.helpers import make_device


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


GET_VERSION = h("10 84 00 00")
VERSION_ALL = h("10 04 00 00 00 04 0010 0011 0012 0013")


def caps_req(
    version: int, flags: int = 0x72C6, dts: int = 0x1200, mx: int = 0x1200, ct: int = 0
) -> bytes:
    return CapabilitiesMsg(version, RequestCode.GET_CAPABILITIES, ct, flags, dts, mx).encode()


def neg_req(version: int, **kw: object) -> bytes:
    fields: dict[str, object] = dict(
        measurement_spec=1,
        other_params=0x02,
        base_asym=0x90,
        base_hash=0x03,
        alg_structs=[AlgStruct(2, 0x18), AlgStruct(3, 0x03), AlgStruct(4, 0x80), AlgStruct(5, 1)],
    )
    fields.update(kw)
    return NegotiateAlgorithmsMsg(version, **fields).encode()  # type: ignore[arg-type]


@pytest.fixture
def device() -> Device:
    return make_device()


@pytest.fixture
def r(device: Device) -> Responder:
    return Responder(device)


def vca(r: Responder, version: int) -> None:
    assert r.handle(GET_VERSION) == VERSION_ALL
    assert r.handle(caps_req(version))[1] == 0x61
    assert r.handle(neg_req(version))[1] == 0x63
    assert r.state == ConnectionState.NEGOTIATED


def test_get_version_answers_all_versions(r: Responder) -> None:
    assert r.handle(GET_VERSION) == VERSION_ALL
    assert r.state == ConnectionState.AFTER_VERSION


def test_get_version_with_wrong_version_byte_is_answered_in_10(r: Responder) -> None:
    vca(r, 0x12)
    assert r.handle(h("12 84 00 00")) == h("10 7f 41 00")
    # a malformed GET_VERSION does not reset the connection
    assert r.state == ConnectionState.NEGOTIATED


@pytest.mark.parametrize("request_", ["11 e1 00 00", "10 e3 00 00"])
def test_requests_before_get_version_are_unexpected(r: Responder, request_: str) -> None:
    assert r.handle(h(request_) + bytes(40)) == h("10 7f 04 00")
    assert r.state == ConnectionState.NOT_STARTED


def test_unknown_and_response_codes_are_unsupported(r: Responder) -> None:
    assert r.handle(h("10 99 00 00")) == h("10 7f 07 99")
    assert r.handle(h("10 04 00 00")) == h("10 7f 07 04")  # a response code sent as request
    vca(r, 0x13)
    assert r.handle(h("13 7b 00 00")) == h("13 7f 07 7b")


def test_short_request_is_invalid(r: Responder) -> None:
    assert r.handle(h("10 84 00")) == h("10 7f 01 00")
    assert r.handle(b"") == h("10 7f 01 00")


def test_capabilities_response_per_version(r: Responder, device: Device) -> None:
    for version in (0x10, 0x11, 0x12, 0x13):
        r.handle(GET_VERSION)
        rsp = r.handle(caps_req(version))
        size = 20 if version >= 0x12 else 12
        assert len(rsp) == size and rsp[0] == version and rsp[1] == 0x61
        assert rsp[5] == device.ct_exponent
        if version >= 0x12:
            assert rsp[12:16] == device.data_transfer_size.to_bytes(4, "little")
            assert rsp[16:20] == device.max_spdm_msg_size.to_bytes(4, "little")


def test_capabilities_10_masks_newer_flags() -> None:
    profile = load_profile_text(
        """
        [device]
        name = "x"
        [spdm]
        versions = ["1.0", "1.1"]
        capabilities = ["KEY_EX_CAP", "MAC_CAP", "ENCRYPT_CAP"]
        [algorithms]
        base_asym = ["ECDSA_P256"]
        base_hash = ["SHA_256"]
        dhe = ["SECP_256_R1"]
        aead = ["AES_128_GCM"]
        """
    )
    r = Responder(make_device(profile))
    r.handle(GET_VERSION)
    assert r.handle(caps_req(0x10))[8:12] == bytes(4)  # KEY_EX/MAC/ENCRYPT are 1.1 flags
    r.handle(GET_VERSION)
    assert r.handle(caps_req(0x11))[8:12] == (0x2C0).to_bytes(4, "little")


def test_capabilities_unsupported_version_is_version_mismatch() -> None:
    profile = load_profile_text(
        '[device]\nname = "x"\n[spdm]\nversions = ["1.1", "1.2"]\n'
        '[algorithms]\nbase_hash = ["SHA_256"]\n'
    )
    r = Responder(make_device(profile))
    assert r.handle(GET_VERSION) == h("10 04 00 00 00 02 0011 0012")
    assert r.handle(caps_req(0x13)) == h("10 7f 41 00")
    assert r.state == ConnectionState.AFTER_VERSION
    assert r.handle(caps_req(0x12))[1] == 0x61


@pytest.mark.parametrize(
    ("request_", "why"),
    [
        (caps_req(0x12, dts=41, mx=41), "DataTransferSize under 42"),
        (caps_req(0x12, dts=0x1200, mx=0x1000), "DataTransferSize > MaxSPDMmsgSize"),
        (caps_req(0x12, dts=0x400, mx=0x1200), "sizes differ without CHUNK_CAP"),
        (caps_req(0x12, ct=32), "CTExponent over 31"),
        (caps_req(0x12, flags=0x72C6 | (1 << 16)), "CERT_CAP with PUB_KEY_ID_CAP"),
        (caps_req(0x12, flags=(0x72C6 & ~0x400) | 0x800), "PSK_CAP=10b"),
        (caps_req(0x12, flags=0x06 | 0x40), "ENCRYPT_CAP without KEY_EX/PSK"),
        (caps_req(0x12, flags=0x0206), "KEY_EX_CAP without MAC/ENCRYPT"),
        (caps_req(0x12, flags=0x04), "CHAL_CAP without CERT_CAP"),
        (caps_req(0x11, flags=0x0106 | 0x2C0 & ~0x1000), "1.1 MUT_AUTH without ENCAP"),
        (caps_req(0x12)[:19], "truncated 1.2 request"),
        (caps_req(0x11)[:11], "truncated 1.1 request"),
    ],
)
def test_capabilities_field_errors(r: Responder, request_: bytes, why: str) -> None:
    r.handle(GET_VERSION)
    rsp = r.handle(request_)
    assert rsp == bytes([request_[0], 0x7F, 0x01, 0x00]), why
    assert r.state == ConnectionState.AFTER_VERSION, "an ERROR must not advance the state"
    # the connection recovers with a correct request
    assert r.handle(caps_req(0x12))[1] == 0x61


def test_capabilities_accepts_chunk_cap_sizes(r: Responder) -> None:
    r.handle(GET_VERSION)
    assert r.handle(caps_req(0x12, flags=0x72C6 | (1 << 17), dts=0x400, mx=0x10000))[1] == 0x61
    assert r.peer is not None and r.peer.max_spdm_msg_size == 0x10000


def test_capabilities_twice_is_unexpected(r: Responder) -> None:
    r.handle(GET_VERSION)
    r.handle(caps_req(0x12))
    assert r.handle(caps_req(0x12)) == h("12 7f 04 00")


def test_capabilities_trailing_doe_padding_not_in_transcript(r: Responder) -> None:
    r.handle(GET_VERSION)
    req = caps_req(0x11)
    rsp = r.handle(req + bytes(3))
    assert bytes(r.transcripts.a) == GET_VERSION + VERSION_ALL + req + rsp


def test_negotiate_before_capabilities_is_unexpected(r: Responder) -> None:
    r.handle(GET_VERSION)
    assert r.handle(neg_req(0x12)) == h("10 7f 04 00")


def test_negotiate_wrong_version_byte(r: Responder) -> None:
    r.handle(GET_VERSION)
    r.handle(caps_req(0x12))
    assert r.handle(neg_req(0x11)) == h("12 7f 41 00")
    assert r.state == ConnectionState.AFTER_CAPABILITIES


def test_algorithms_selection_follows_profile_priority(r: Responder) -> None:
    vca(r, 0x12)
    assert r.algorithms.base_asym == 0x80  # ECDSA_P384 is first in the default profile
    assert r.algorithms.base_hash == 0x02  # SHA_384
    assert r.algorithms.dhe == 0x10 and r.algorithms.aead == 0x02
    assert r.algorithms.other_params == 0x02


def test_algorithms_selection_with_other_priority() -> None:
    profile = load_profile_text(
        '[device]\nname = "x"\n[spdm]\nversions = ["1.2"]\n'
        '[algorithms]\nbase_asym = ["ECDSA_P256", "ECDSA_P384"]\n'
        'base_hash = ["SHA_256", "SHA_384"]\ndhe = ["SECP_256_R1"]\naead = ["AES_128_GCM"]\n'
    )
    r = Responder(make_device(profile))
    r.handle(GET_VERSION)
    r.handle(caps_req(0x12))
    rsp = r.handle(neg_req(0x12))
    # BaseAsymSel P256 (0x10), BaseHashSel SHA_256 (0x01), DHE secp256r1, AEAD AES-128-GCM,
    # ReqBaseAsym: nothing common (0), KeySchedule SPDM
    assert rsp == h(
        "12 63 04 00 3400 00 02 00000000 10000000 01000000 0000000000000000000000 00 00 00 0000"
        " 02 20 0800  03 20 0100  04 20 0000  05 20 0100"
    )


def test_algorithms_10_has_no_structs(r: Responder) -> None:
    r.handle(GET_VERSION)
    r.handle(caps_req(0x10))
    rsp = r.handle(neg_req(0x10, alg_structs=[]))
    assert rsp[2] == 0 and len(rsp) == 36 and rsp[4:6] == (36).to_bytes(2, "little")


@pytest.mark.parametrize(
    ("request_", "why"),
    [
        (neg_req(0x12, base_hash=0x40), "no common hash (SM3 only)"),
        (neg_req(0x12)[:-4] + bytes(0), "Length larger than the message"),
        (neg_req(0x12, alg_structs=[AlgStruct(3, 1), AlgStruct(2, 0x18)]), "AlgType order"),
        (neg_req(0x12, alg_structs=[AlgStruct(2, 0x18), AlgStruct(2, 0x08)]), "duplicate"),
        (neg_req(0x12, alg_structs=[AlgStruct(6, 1)]), "AlgType 6"),
        (neg_req(0x12, alg_structs=[AlgStruct(2, 0)]), "empty AlgSupported"),
        (neg_req(0x12, alg_structs=[AlgStruct(2, 0x18, 3)]), "FixedAlgCount 3"),
        (neg_req(0x12, ext_asym=[bytes(4)] * 21), "too many extended algorithms"),
        (neg_req(0x12)[:20], "truncated fixed part"),
    ],
)
def test_negotiate_field_errors(r: Responder, request_: bytes, why: str) -> None:
    r.handle(GET_VERSION)
    r.handle(caps_req(0x12))
    a_before = bytes(r.transcripts.a)
    assert r.handle(request_) == h("12 7f 01 00"), why
    assert r.state == ConnectionState.AFTER_CAPABILITIES
    assert bytes(r.transcripts.a) == a_before


def test_negotiate_length_field_must_match() -> None:
    r = Responder(make_device())
    r.handle(GET_VERSION)
    r.handle(caps_req(0x12))
    req = bytearray(neg_req(0x12))
    req[4] += 4  # Length says 4 more bytes than the structs occupy
    assert r.handle(bytes(req) + bytes(4)) == h("12 7f 01 00")


def test_negotiate_twice_is_unexpected(r: Responder) -> None:
    vca(r, 0x13)
    assert r.handle(neg_req(0x13)) == h("13 7f 04 00")


def test_get_version_resets_everything(r: Responder) -> None:
    vca(r, 0x13)
    assert r.handle(GET_VERSION) == VERSION_ALL
    assert r.state == ConnectionState.AFTER_VERSION
    assert r.version == 0 and r.peer is None and r.algorithms.base_hash == 0
    assert bytes(r.transcripts.a) == GET_VERSION + VERSION_ALL
    assert r.handle(neg_req(0x13)) == h("10 7f 04 00")


async def test_requester_transcript_matches_responder() -> None:
    responder = Responder(make_device())
    for version in (0x10, 0x11, 0x12, 0x13):
        requester = Requester(LoopbackChannel(responder), RequesterConfig(version=version))
        neg = await requester.vca()
        assert neg.version == version
        # message A, as the requester concatenated it from what crossed the wire
        expected = b"".join(req + rsp for req, rsp in requester.log)
        assert bytes(requester.message_a) == expected == bytes(responder.transcripts.a)


async def test_requester_picks_highest_common_version() -> None:
    requester = Requester(LoopbackChannel(Responder(make_device())))
    assert (await requester.vca()).version == 0x13


@pytest.mark.parametrize(("version", "expected"), [(0x11, 0x80), (0x12, 0x400)])
def test_eddsa_only_from_12(version: int, expected: int) -> None:
    profile = load_profile_text(
        '[device]\nname = "x"\n[spdm]\nversions = ["1.1", "1.2"]\n'
        '[algorithms]\nbase_asym = ["EDDSA_ED25519", "ECDSA_P384"]\nbase_hash = ["SHA_384"]\n'
    )
    r = Responder(make_device(profile))
    r.handle(GET_VERSION)
    r.handle(caps_req(version))
    rsp = r.handle(neg_req(version, base_asym=0x480))
    assert rsp[1] == 0x63
    assert int.from_bytes(rsp[12:16], "little") == expected


@pytest.mark.parametrize(
    ("code", "flags"),
    [
        (0xE4, 0x06),  # KEY_EXCHANGE from a requester without KEY_EX_CAP
        (0xE5, 0x06),  # FINISH
        (0xE6, 0x06 | 0x2C0),  # PSK_EXCHANGE from a requester with KEY_EX but not PSK_CAP
        (0xE7, 0x06 | 0x2C0),  # PSK_FINISH
        (0x85, 0x06),  # CHUNK_SEND without CHUNK_CAP
    ],
)
def test_requests_needing_a_requester_capability(r: Responder, code: int, flags: int) -> None:
    """Both sides must have the capability (DSP0274): else UnsupportedRequest(code)."""
    r.handle(GET_VERSION)
    assert r.handle(caps_req(0x13, flags=flags))[1] == 0x61
    assert r.handle(neg_req(0x13))[1] == 0x63
    state = r.state
    assert r.handle(bytes([0x13, code, 0, 0]) + bytes(200)) == bytes([0x13, 0x7F, 0x07, code])
    assert r.state == state
