"""Replay fuzzer findings and the seed corpus through the atheris targets' own entry points.

Every file under ``tests/fuzz_regressions/<target>/`` is an input that once broke the
contract of ``fuzz/fuzz_<target>.py`` (or exercises a path a finding went through); it is
fed to that target's ``TestOneInput``, exactly as the fuzzer ran it.  An input whose bug
is not fixed yet is listed in ``tests/fuzz_regressions/KNOWN`` (``target/name: reason``)
and runs as a strict xfail, so the fix flips it to a failure that says "remove me".
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import pytest

from fuzz import make_corpus
from fuzz.harness import (
    ContractViolation,
    ResponderHarness,
    choose_prefix,
    join_messages,
    new_responder,
    selector_of,
    split_messages,
)

HERE = Path(__file__).resolve().parent / "fuzz_regressions"
TARGETS = ("responder", "frames", "transport", "profile", "secured", "storage", "tcp")


def _known() -> dict[str, str]:
    known: dict[str, str] = {}
    path = HERE / "KNOWN"
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, reason = line.partition(":")
                known[name.strip()] = reason.strip()
    return known


def _entry(target: str) -> Callable[[bytes], None] | None:
    try:
        module = importlib.import_module(f"fuzz.fuzz_{target}")
    except ModuleNotFoundError as exc:
        if exc.name != f"fuzz.fuzz_{target}":
            raise
        return None
    fn: Callable[[bytes], None] = module.TestOneInput
    return fn


def _cases() -> list[object]:
    known = _known()
    cases: list[object] = []
    for target in TARGETS:
        directory = HERE / target
        if not directory.is_dir():
            continue
        for path in sorted(directory.iterdir()):
            if path.name.startswith(".") or path.suffix == ".md":
                continue
            key = f"{target}/{path.name}"
            marks = []
            if key in known:
                marks.append(pytest.mark.xfail(strict=True, reason=known[key]))
            cases.append(pytest.param(target, path, id=key, marks=marks))
    return cases


@pytest.mark.parametrize(("target", "path"), _cases())
def test_saved_input(target: str, path: Path) -> None:
    entry = _entry(target)
    if entry is None:
        pytest.skip(f"fuzz/fuzz_{target}.py does not exist")
    entry(path.read_bytes())


def test_seed_corpus_passes_every_target(tmp_path: Path) -> None:
    """The generated seed corpus runs clean through every target (and is not empty)."""
    counts = make_corpus.make(tmp_path)
    assert counts["responder"] >= 4 and counts["frames"] and counts["transport"]
    assert counts["profile"] >= 2
    for target in TARGETS:
        entry = _entry(target)
        directory = tmp_path / target
        if entry is None or not directory.is_dir():
            continue
        for path in sorted(directory.iterdir()):
            entry(path.read_bytes())


# ---- the harness itself: it must be able to fail ---------------------------------------------


def test_split_and_join_are_inverse() -> None:
    messages = [(b"\x10\x84\x00\x00", False), (b"", False), (b"\x13\xe8\x00\x00", True)]
    data = join_messages(messages)
    assert data[:2] == b"\x04\x00" and data[6:8] == b"\x00\x00" and data[8:10] == b"\x04\x80"
    assert split_messages(data) == messages
    # a truncated length takes what is left; a lone trailing byte is a 1-byte message
    assert split_messages(b"\x09\x00\x10\x84") == [(b"\x10\x84", False)]
    assert split_messages(b"\x00\x00\x7f") == [(b"", False), (b"\x7f", False)]


def test_prefix_selectors_are_stable() -> None:
    """Byte 0 = stage << 2 | version index: saved inputs keep their meaning."""
    assert selector_of("none", 0x10) == 0
    assert selector_of("vca", 0x12) == (3 << 2) | 2
    vca = choose_prefix(selector_of("vca", 0x12))
    assert vca.name == "vca@1.2" and [s.request[1] for s in vca.steps] == [0x84, 0xE1, 0xE3]
    assert vca.steps[1].request[0] == 0x12


@pytest.mark.parametrize(
    ("what", "corrupt"),
    [
        ("short", lambda q, r: r[:3]),
        ("version byte", lambda q, r: bytes((0x20,)) + r[1:]),
        ("request code as response", lambda q, r: r[:1] + bytes((r[1] | 0x80,)) + r[2:]),
        ("wrong error code", lambda q, r: r[:2] + b"\x01" + r[3:] if r[1] == 0x7F else r),
        ("success instead of error", lambda q, r: r[:1] + b"\x04" + r[2:] if r[1] == 0x7F else r),
        ("answers another request", lambda q, r: r[:1] + b"\x61" + r[2:] if r[1] == 0x04 else r),
    ],
)
def test_contract_catches_broken_responses(
    what: str, corrupt: Callable[[bytes, bytes], bytes]
) -> None:
    r = new_responder()
    real = r.handle

    def lying(request: bytes, session_id: int | None = None) -> bytes:
        return corrupt(request, real(request, session_id))

    r.handle = lying  # type: ignore[method-assign]
    harness = ResponderHarness.around(r)
    with pytest.raises(ContractViolation):
        harness.send(b"\x10\x84\x00\x00")  # GET_VERSION
        harness.send(b"\x10\x99\x00\x00")  # unknown code: ERROR UnsupportedRequest


def test_contract_catches_state_moved_by_error() -> None:
    r = ResponderHarness(prefix=choose_prefix(selector_of("vca", 0x12))).responder
    real = r.handle

    def handle(request: bytes, session_id: int | None = None) -> bytes:
        response = real(request, session_id)
        r.transcripts.a += b"\x00"  # an ERROR that changes message A
        return response

    r.handle = handle  # type: ignore[method-assign]
    harness = ResponderHarness.around(r)
    with pytest.raises(ContractViolation, match="transcript"):
        harness.send(b"\x12\x99\x00\x00")
