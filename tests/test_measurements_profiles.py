"""[[measurements]] profile entries, the measurement store's runtime API and the shipped
measurement profiles (default, nvme-ssd, gpu)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from emulator.codec.constants import BaseAsymAlgo, BaseHashAlgo, ResponderCap
from emulator.codec.measurements import MeasurementValueType, decode_device_mode
from emulator.device.measurements import MeasurementError, Representation
from emulator.device.model import Device
from emulator.errors import ProfileError
from emulator.profiles import load_profile, load_profile_text
from emulator.requester.measurements import get_measurements
from emulator.requester.requester import (
    LoopbackChannel,
    Requester,
    RequesterConfig,
    SpdmErrorReply,
)
from emulator.responder import Responder

HEAD = """
[device]
name = "p"
[spdm]
versions = ["1.2"]
capabilities = ["MEAS_CAP_NO_SIG"]
[algorithms]
base_hash = ["SHA_256"]
measurement_hash = ["SHA_256"]
"""


def load(blocks: str, head: str = HEAD, base_dir: Path | None = None) -> Device:
    return Device.from_profile(load_profile_text(head + blocks, "bad.toml", base_dir))


def error(blocks: str, head: str = HEAD, base_dir: Path | None = None) -> ProfileError:
    with pytest.raises(ProfileError) as exc:
        load(blocks, head, base_dir)
    return exc.value


def entry(**fields: object) -> str:
    lines = ["[[measurements]]"]
    for k, v in fields.items():
        if isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        else:
            lines.append(f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}")
    return "\n".join(lines).replace("'", '"') + "\n"


@pytest.mark.parametrize(
    ("blocks", "field", "problem"),
    [
        (entry(index=0, type="rom", value="00"), "measurements[0].index", "index 0 is not"),
        (entry(index=0xFF, type="rom", value="00"), "measurements[0].index", "0xFF asks for all"),
        (entry(index=0xF5, type="rom", value="00"), "measurements[0].index", "reserved"),
        (entry(index=1, type="rom", value="0g"), "measurements[0].value", "not hex"),
        (entry(index=1, type="rom", value="012"), "measurements[0].value", "odd number"),
        (entry(index=1, type="bios", value="00"), "measurements[0].type", "unknown measurement"),
        (entry(index=1, type=11, value="00"), "measurements[0].type", "0..10"),
        (entry(index=1, type="rom"), "measurements[0]", "exactly one of value"),
        (entry(index=1, type="rom", value="00", text="x"), "measurements[0]", "got value, text"),
        (entry(index=1, type="rom", svn=1), "measurements[0]", "svn is only"),
        (
            entry(index=1, type="rom", value="00", representation="hashed"),
            "measurements[0].representation",
            "choose 'raw' or 'digest'",
        ),
        (entry(index=1, type="device_mode"), "measurements[0]", "must use index 0xFE"),
        (entry(index=0xFE, type="rom", value="00"), "measurements[0]", "must be device_mode"),
        (entry(index=0xFD, type="rom", value="00"), "measurements[0]", "0xFD is the measurement"),
        (
            entry(index=0xFE, type="device_mode", representation="digest"),
            "measurements[0]",
            "always a raw",
        ),
        (
            entry(
                index=0xFE,
                type="device_mode",
                operational_mode_capabilities=["NORMAL"],
                operational_mode_state=["RMA"],
            ),
            "measurements[0]",
            "outside",
        ),
        (
            entry(index=0xFE, type="device_mode", device_mode_state=["SOMETIMES"]),
            "measurements[0].device_mode_state",
            "unknown device mode",
        ),
        (
            entry(index=1, type="rom", representation="raw", raw_on_request=False, value="00"),
            "measurements[0]",
            "contradicts",
        ),
        (
            entry(index=1, type="rom", value="00") + entry(index=1, type="rom", value="01"),
            "measurements[1].index",
            "already used by measurements[0]",
        ),
        ("", "measurements", "MEAS_CAP needs at least one"),
        (
            entry(index=1, type="rom", value="00")
            + '[measurement_options]\nopaque_data = "0102"\n',
            "measurement_options.opaque_data",
            "general opaque data format",
        ),
    ],
)
def test_bad_entries(blocks: str, field: str, problem: str) -> None:
    exc = error(blocks)
    assert exc.source == "bad.toml"
    assert exc.field == field
    assert problem in exc.problem, exc.problem


def test_missing_and_present_file(tmp_path: Path) -> None:
    exc = error(entry(index=1, type="firmware", file="fw.bin"), base_dir=tmp_path)
    assert exc.field == "measurements[0].file"
    assert "no such file" in exc.problem and str(tmp_path / "fw.bin") in exc.problem
    (tmp_path / "fw.bin").write_bytes(b"\x7fELF firmware")
    dev = load(entry(index=1, type="firmware", file="fw.bin"), base_dir=tmp_path)
    block = dev.measurements.get(1)
    assert block is not None and block.value == b"\x7fELF firmware"
    # the file is read at load time: later edits do not change the device
    (tmp_path / "fw.bin").write_bytes(b"changed")
    assert dev.measurements.get(1).value == b"\x7fELF firmware"  # type: ignore[union-attr]


def test_defaults_of_an_entry() -> None:
    dev = load(
        entry(index=1, type="rom", value="0x00:01 02")
        + entry(index=2, type="firmware", value="aa")
        + entry(index=3, type="svn", svn=258)
        + entry(index=4, type="version", text="2.0")
        + entry(index=0xFE, type="device_mode")
    )
    b1, b2, b3, b4, b5 = dev.measurements.snapshot()
    assert b1.value == b"\x00\x01\x02" and b1.tcb and b1.representation is Representation.DIGEST
    assert not b2.tcb and b2.raw_on_request
    assert b3.value == (258).to_bytes(8, "little") and b3.representation is Representation.RAW
    assert b4.representation is Representation.RAW
    assert b5.kind is MeasurementValueType.DEVICE_MODE
    # every mode possible, normal mode, no debug
    assert decode_device_mode(b5.value) == (0x3F, 0x04, 0x1F, 0x00)


def test_store_runtime_api() -> None:
    dev = load(
        entry(index=1, type="rom", value="00")
        + entry(index=2, type="version", text="fw-1.9.9")
        + entry(index=3, type="svn", svn=0xFF)
        + entry(index=0xFE, type="device_mode"),
        head=HEAD.replace('"MEAS_CAP_NO_SIG"', '"MEAS_CAP_NO_SIG", "MEAS_FRESH_CAP"'),
    )
    events: list[tuple[str, object]] = []
    dev.listeners.append(lambda what, detail: events.append((what, detail)))
    store = dev.measurements
    assert store.set_value(1, b"\x01").generation == 1
    assert [b.value for b in store.bump_version()] == [b"fw-1.9.10", (0x100).to_bytes(8, "little")]
    assert store.bump_version(2)[0].value == b"fw-1.9.11"
    with pytest.raises(MeasurementError, match="not a version or SVN"):
        store.bump_version(1)
    with pytest.raises(MeasurementError, match="no measurement block with index 9"):
        store.set_value(9, b"")
    with pytest.raises(MeasurementError, match="16 bytes"):
        store.set_value(0xFE, b"\x00")
    mode = store.set_device_mode(operational_state=0x08, device_mode_state=0x02)
    assert decode_device_mode(mode.value) == (0x3F, 0x08, 0x1F, 0x02)
    with pytest.raises(MeasurementError, match="outside"):
        store.set_device_mode(operational_state=0x40)
    assert decode_device_mode(store.get(0xFE).value)[1] == 0x08  # type: ignore[union-attr]
    with pytest.raises(MeasurementError, match="reserved"):
        dev.measurement_summary_hash(2, 2, 1)
    kinds = [d["change"] for w, d in events if w == "measurement" and isinstance(d, dict)]
    assert kinds == ["set_value", "bump_version", "bump_version", "bump_version", "set_device_mode"]
    assert all(isinstance(d, dict) and d["pending"] is False for _, d in events)


def test_without_fresh_cap_changes_are_pending() -> None:
    dev = load(entry(index=1, type="rom", value="00") + entry(index=0xFE, type="device_mode"))
    events: list[tuple[str, object]] = []
    dev.listeners.append(lambda what, detail: events.append((what, detail)))
    store = dev.measurements
    store.set_device_mode(device_mode_state=0x01)
    store.set_value(1, b"\x01")
    assert store.pending() == [1, 0xFE]
    assert decode_device_mode(store.get(0xFE).value)[3] == 0  # type: ignore[union-attr]
    assert store.live(0xFE) is not None and decode_device_mode(store.live(0xFE).value)[3] == 1  # type: ignore[union-attr]
    assert all(isinstance(d, dict) and d["pending"] is True for _, d in events)
    assert store.device_reset() == [1, 0xFE]
    assert store.pending() == []
    assert store.get(1).value == b"\x01"  # type: ignore[union-attr]
    assert events[-1] == ("measurement", {"change": "device_reset", "indices": [1, 0xFE]})


def test_summary_hash_raw_only_and_sha384() -> None:
    dev = load(entry(index=1, type="rom", value="00") + entry(index=2, type="version", text="v"))
    rom = bytes([1, 1, 0x33, 0, 0, 0x30, 0]) + hashlib.sha384(b"\x00").digest()
    ver = bytes([2, 1, 4, 0, 0x86, 1, 0]) + b"v"
    sha384_base, sha384_meas = 0x02, 0x04
    assert (
        dev.measurement_summary_hash(0xFF, sha384_meas, sha384_base)
        == hashlib.sha384(rom + ver).digest()
    )
    raw_rom = bytes([1, 1, 4, 0, 0x80, 1, 0, 0])
    assert dev.measurement_summary_hash(1, 0x01, 0x01) == hashlib.sha256(raw_rom).digest()


# --- shipped profiles -----------------------------------------------------------------------


def test_default_profile_measures() -> None:
    prof = load_profile("default")
    assert ResponderCap.MEAS_CAP_SIG in prof.capabilities
    assert ResponderCap.MEAS_FRESH_CAP in prof.capabilities
    kinds = {m.kind for m in prof.measurements}
    assert {MeasurementValueType.IMMUTABLE_ROM, MeasurementValueType.DEVICE_MODE} <= kinds


def test_nvme_ssd_profile() -> None:
    dev = Device.load("nvme-ssd")
    assert not dev.measurements.fresh
    kinds = [b.kind for b in dev.measurements.snapshot()]
    for k in (
        MeasurementValueType.IMMUTABLE_ROM,
        MeasurementValueType.MUTABLE_FIRMWARE,
        MeasurementValueType.HARDWARE_CONFIG,
        MeasurementValueType.FIRMWARE_CONFIG,
        MeasurementValueType.MEASUREMENT_MANIFEST,
        MeasurementValueType.SECURE_VERSION_NUMBER,
    ):
        assert k in kinds


def test_gpu_profile_too_large_for_small_transfer_size() -> None:
    async def go() -> None:
        dev = Device.load("gpu")
        assert len(dev.measurements) >= 30
        r = Responder(dev)
        q = Requester(
            LoopbackChannel(r),
            RequesterConfig(
                version=0x12,
                base_asym=int(BaseAsymAlgo.ECDSA_P384),
                base_hash=int(BaseHashAlgo.SHA_384),
                data_transfer_size=1024,
                max_spdm_msg_size=1024,
            ),
        )
        await q.vca()
        count = await get_measurements(q, 0)
        assert count.count == len(dev.measurements)
        with pytest.raises(SpdmErrorReply) as exc:
            await get_measurements(q, 0xFF)
        assert exc.value.error_name == "ResponseTooLarge"
        size = int.from_bytes(exc.value.response[4:8], "little")
        assert size > 1024
        # one index at a time works
        for index in dev.measurements.indices():
            res = await get_measurements(q, index)
            assert res.blocks[0].index == index
        # with room for it, all blocks come in one response
        r = Responder(dev)
        q = Requester(
            LoopbackChannel(r),
            RequesterConfig(
                version=0x13,
                base_asym=int(BaseAsymAlgo.ECDSA_P384),
                base_hash=int(BaseHashAlgo.SHA_384),
            ),
        )
        await q.vca()
        res = await get_measurements(q, 0xFF)
        assert len(res.blocks) == len(dev.measurements)

    asyncio.run(go())
