"""log_to_sink: in a fuzz target's process every log call still formats its message (a
call that cannot format is a finding), and nothing is recorded or printed."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from fuzz.harness import log_to_sink


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[logging.Logger]:
    monkeypatch.setattr(logging.Logger, "_log", logging.Logger._log)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    level = root.level
    log_to_sink()
    try:
        yield logging.getLogger("emulator.test-sink")
    finally:
        root.setLevel(level)  # clears the loggers' level caches


def test_calls_that_format_pass_and_emit_nothing(
    sink: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    sink.info("conn %d: %s -> %s", 3, "GET_VERSION", "VERSION")
    sink.warning("plain %% message")
    sink.info("%(a)s and %(b)d", {"a": "x", "b": 2})
    sink.error("with extra", extra={"conn": 1})
    try:
        raise ValueError("boom")
    except ValueError:
        sink.exception("failed: %s", "hook")
    sink.debug("below the level: %d", "not formatted")
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


@pytest.mark.parametrize(
    ("args", "error"),
    [(("%d", "text"), TypeError), (("%s %s", "one"), TypeError), (("%(k)s", {"j": 1}), KeyError)],
)
def test_a_call_that_cannot_format_raises(
    sink: logging.Logger, args: tuple[object, ...], error: type[Exception]
) -> None:
    with pytest.raises(error):
        sink.info(*args)  # type: ignore[arg-type]


def test_extra_may_not_overwrite_a_record_field(sink: logging.Logger) -> None:
    with pytest.raises(KeyError, match="overwrite 'levelname'"):
        sink.info("x", extra={"levelname": "mine"})
