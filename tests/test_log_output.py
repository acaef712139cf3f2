"""Tests for mmbot.logs' output path: queued lines, a writer thread, drops counted.

Each test that stalls a stream releases it before it ends, so the writer threads stop when
the conftest fixture resets logging. Threads that run the code under test are joined with a
generous bound only so that a regression fails instead of hanging the suite.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mmbot import logs
from mmbot.logs import (
    DEFAULT_MAX_QUEUED_LINES,
    REDACTED,
    LineWriter,
    close_output,
    configure_logging,
    flush_output,
    get_logger,
    output_writer,
    records_dropped,
    register_secret,
    reset_logging,
)
from mmbot.observability import Metrics

SECRET = "6f0c2d1e-1111-2222-3333-444455556666"
# Only a regression (a call that blocks) comes anywhere near this.
HANG_GUARD_SECONDS = 30.0


class StalledStream(io.TextIOBase):
    """A stream whose writes wait until the test releases it, like a pipe nobody reads."""

    def __init__(self) -> None:
        self.written: list[str] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def writable(self) -> bool:
        """It is an output stream."""
        return True

    def write(self, text: str) -> int:
        """Block until released, then keep ``text``."""
        self.entered.set()
        assert self.release.wait(HANG_GUARD_SECONDS), "never released"
        self.written.append(text)
        return len(text)


class BrokenStream(io.TextIOBase):
    """A stream whose reader has gone: every write fails."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.attempts = 0

    def writable(self) -> bool:
        """It is an output stream."""
        return True

    def write(self, text: str) -> int:
        """Fail, as a write to a broken pipe does."""
        self.attempts += 1
        raise self.error


@pytest.fixture(autouse=True)
def _no_writer_left() -> Iterator[None]:
    yield
    reset_logging()
    assert not _writer_threads(), "reset_logging left a writer thread running"


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("mmbot-output")]


def _returns(call: Callable[[], object]) -> None:
    """Run ``call`` on another thread and fail if it does not return (it blocked)."""
    done = threading.Event()

    def run() -> None:
        call()
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_GUARD_SECONDS)
    assert done.is_set(), "the call blocked on a stalled stream"


# --- the queue -----------------------------------------------------------------------------


def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    stream = StalledStream()
    writer = LineWriter(stream, max_lines=3)
    assert writer.write("in flight\n")
    # The writer thread now waits inside the stream's write; nothing else drains the queue.
    assert stream.entered.wait(HANG_GUARD_SECONDS)
    before = records_dropped()
    results: list[bool] = []
    _returns(lambda: results.extend(writer.write(f"line {i}\n") for i in range(5)))

    assert results == [True, True, True, False, False]
    assert records_dropped() - before == 2

    stream.release.set()
    assert writer.close()
    assert "".join(stream.written) == "in flight\nline 0\nline 1\nline 2\n"


def test_logging_to_a_stalled_stream_never_blocks_the_caller() -> None:
    stream = StalledStream()
    configure_logging("INFO", "json", stream)
    log = get_logger("mmbot.test")
    log.info("first")
    assert stream.entered.wait(HANG_GUARD_SECONDS)
    before = records_dropped()
    extra = 7

    def flood() -> None:
        for i in range(DEFAULT_MAX_QUEUED_LINES + extra):
            log.info("flood", n=i)

    _returns(flood)
    assert records_dropped() - before == extra

    stream.release.set()
    assert flush_output()
    assert len("".join(stream.written).splitlines()) == 1 + DEFAULT_MAX_QUEUED_LINES


def test_lines_are_redacted_before_they_are_queued() -> None:
    register_secret(SECRET)
    stream = StalledStream()
    configure_logging("INFO", "json", stream)
    log = get_logger("mmbot.test")
    log.info("first")
    assert stream.entered.wait(HANG_GUARD_SECONDS)
    log.info(f"key {SECRET}", key_id="plain-value-1")
    logging.getLogger("httpx").warning("retrying with %s", SECRET)

    # What waits in the queue is already the redacted text.
    queued = list(output_writer(stream)._lines)
    assert len(queued) == 2
    for line in queued:
        assert SECRET not in line
        assert "plain-value" not in line
        assert REDACTED in line

    stream.release.set()
    assert flush_output()
    text = "".join(stream.written)
    assert SECRET not in text
    assert text.count(REDACTED) >= 3


def test_close_gives_up_on_a_stream_that_never_drains() -> None:
    stream = StalledStream()
    writer = LineWriter(stream)
    writer.write("in flight\n")
    assert stream.entered.wait(HANG_GUARD_SECONDS)
    writer.write("queued\n")
    before = records_dropped()

    assert writer.close(timeout=0.05) is False
    # What was still queued is dropped and counted, and the writer takes nothing more.
    assert records_dropped() - before == 1
    assert writer.write("late\n") is False
    assert records_dropped() - before == 2

    stream.release.set()
    assert writer.flush()
    assert stream.written == ["in flight\n"]


def test_one_writer_per_stream_and_none_drops_everything() -> None:
    stream = io.StringIO()
    assert output_writer(stream) is output_writer(stream)
    nowhere = output_writer(None)
    before = records_dropped()
    assert nowhere.write("lost\n") is False
    assert records_dropped() - before == 1


def test_reset_logging_stops_the_writers() -> None:
    configure_logging("INFO", "json", io.StringIO())
    output_writer(io.StringIO()).write("x\n")
    assert len(_writer_threads()) == 2
    reset_logging()
    assert _writer_threads() == []


# --- streams that cannot be written --------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [BrokenPipeError(32, "Broken pipe"), OSError(5, "Input/output error"), ValueError("closed")],
    ids=["EPIPE", "EIO", "ValueError"],
)
def test_a_failing_stream_neither_raises_nor_stops_the_writer(error: Exception) -> None:
    stream = BrokenStream(error)
    configure_logging("INFO", "json", stream)
    log = get_logger("mmbot.test")
    before = records_dropped()
    for i in range(3):
        log.info("lost", n=i)
    assert flush_output()
    assert records_dropped() - before == 3
    # The writer is still there: later lines are tried, and counted too.
    log.warning("also lost")
    assert flush_output()
    assert records_dropped() - before == 4
    assert stream.attempts == 4


def test_a_closed_stream_does_not_raise() -> None:
    stream = io.StringIO()
    stream.close()
    configure_logging("INFO", "console", stream)
    before = records_dropped()
    get_logger("mmbot.test").info("nowhere to go")
    logging.getLogger("lib").error("nor this")
    assert flush_output()
    assert records_dropped() - before == 2


def test_a_file_closed_while_in_use(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    with path.open("w", encoding="utf-8") as handle:
        writer = LineWriter(handle)
        writer.write("kept\n")
        assert writer.flush()
    before = records_dropped()
    writer.write("after close\n")
    assert writer.flush()
    assert records_dropped() - before == 1
    assert path.read_text(encoding="utf-8") == "kept\n"
    assert writer.close()


def test_a_pipe_whose_reader_has_gone() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    with os.fdopen(write_end, "w", encoding="utf-8") as stream:
        writer = LineWriter(stream)
        before = records_dropped()
        writer.write("one\n")
        writer.write("two\n")
        assert writer.flush()
        writer.write("three\n")
        assert writer.flush()
        assert records_dropped() - before == 3
        assert writer.close()


# --- real pipes ----------------------------------------------------------------------------


def test_lines_reach_a_pipe_whole_and_encoded(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb") as reader, os.fdopen(write_end, "w", encoding="ascii") as out:
        writer = LineWriter(out)
        long_line = "x" * 10_000 + "\n"
        for line in ("plain\n", "caf\u00e9\n", long_line):
            writer.write(line)
        assert writer.close()
        out.close()
        data = reader.read()
    # The stream's encoding is kept; what it cannot encode is escaped, never lost.
    assert data == b"plain\ncaf\\xe9\n" + long_line.encode()


def test_a_full_pipe_nobody_reads_costs_only_dropped_lines() -> None:
    read_end, write_end = os.pipe()
    # Fill the pipe first, as a consumer that stopped reading long ago would have.
    os.set_blocking(write_end, False)
    try:
        while True:
            os.write(write_end, b"." * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(write_end, True)
    stream = os.fdopen(write_end, "w", encoding="utf-8")
    writer = LineWriter(stream, max_lines=10)
    before = records_dropped()
    results: list[bool] = []
    _returns(lambda: results.extend(writer.write(f"line {i}\n") for i in range(30)))
    # At most one batch (no more than the queue holds) is in the writer's hands.
    assert results.count(False) >= 10
    assert records_dropped() - before == results.count(False)

    assert writer.close(timeout=0.05) is False
    # The reader goes away: the blocked write fails, and the writer thread ends.
    os.close(read_end)
    assert writer.close()
    stream.close()


# --- the metric ----------------------------------------------------------------------------


def test_the_metric_reports_the_process_wide_count() -> None:
    output_writer(None).write("lost\n")
    body, _ = Metrics().render()
    (value,) = [
        sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == "mmbot_log_records_dropped_total"
    ]
    assert value == records_dropped() > 0


# --- formatting failures -------------------------------------------------------------------


class _Exploding:
    def __str__(self) -> str:
        raise RuntimeError(f"cannot render {SECRET}")


def test_a_record_that_cannot_be_formatted_leaves_a_line_without_its_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    register_secret(SECRET)
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    # Only mmbot's handler: pytest's capture would raise on the same record.
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [logs._handler])
    logging.getLogger("lib").warning("value %s", _Exploding())
    assert close_output()
    text = stream.getvalue()
    assert '"event":"log_record_unformattable"' in text
    assert '"logger":"lib"' in text
    assert SECRET not in text
