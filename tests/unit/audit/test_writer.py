"""AuditWriter: order, flush and close, outages and recovery, both failure policies."""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from gateway.audit import writer as writer_module
from gateway.audit.query import read_records
from gateway.audit.sinks import MemorySink, PartialWriteError, RotatingFileSink
from gateway.audit.writer import AuditWriter
from tests.unit.audit.builders import event

DISK_FULL = OSError(errno.ENOSPC, "No space left on device")


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.002)


def ids(lines: Sequence[bytes]) -> list[str]:
    return [json.loads(raw)["insertId"] for raw in lines]


def submit(writer: AuditWriter, *request_ids: str) -> None:
    for request_id in request_ids:
        writer.submit(event(request_id=request_id))


def numbered(start: int, stop: int) -> list[str]:
    return [f"r{i}" for i in range(start, stop)]


class GatedSink(MemorySink):
    """Holds every write until the gate opens: a slow but healthy disk."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def write(self, lines: Sequence[bytes]) -> None:
        self.waiting.set()
        assert self.gate.wait(10)
        super().write(lines)


class TornSink(MemorySink):
    """Stores the first `keep` lines of its first write, then fails: a disk filling mid-batch."""

    def __init__(self, keep: int) -> None:
        super().__init__()
        self.keep: int | None = keep

    def write(self, lines: Sequence[bytes]) -> None:
        if self.keep is not None:
            keep, self.keep = self.keep, None
            super().write(lines[:keep])
            raise PartialWriteError(keep, DISK_FULL)
        super().write(lines)


@pytest.fixture
def writers() -> Iterator[list[AuditWriter]]:
    """Writers made by a test are closed after it, so no thread outlives it."""
    made: list[AuditWriter] = []
    yield made
    for writer in made:
        writer.close(timeout=1)


@pytest.fixture
def make(writers: list[AuditWriter]) -> Callable[..., AuditWriter]:
    def build(sink: MemorySink, **options: object) -> AuditWriter:
        options.setdefault("retry_interval_s", 0.01)
        writer = AuditWriter(sink, **options)  # type: ignore[arg-type]
        writers.append(writer)
        return writer

    return build


def test_records_from_many_threads_are_written_once_each_in_submit_order(
    make: Callable[..., AuditWriter],
) -> None:
    sink = MemorySink()
    writer = make(sink)
    threads = [
        threading.Thread(target=submit, args=(writer, *[f"t{t}-{i}" for i in range(2500)]))
        for t in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert writer.flush(timeout=10)
    written = ids(sink.lines)
    assert len(written) == 10_000
    for t in range(4):  # each thread's submits keep their order
        assert [i for i in written if i.startswith(f"t{t}-")] == [f"t{t}-{i}" for i in range(2500)]
    assert writer.written == 10_000
    assert writer.pending == 0
    assert sink.write_calls < 10_000  # drained in batches


def test_flush_waits_for_the_sink_and_close_closes_it(make: Callable[..., AuditWriter]) -> None:
    sink = GatedSink()
    writer = make(sink)
    submit(writer, *numbered(0, 5))
    assert not writer.flush(timeout=0.05)  # the sink has not taken them yet
    sink.gate.set()
    assert writer.flush(timeout=5)
    assert sink.flushes >= 1
    submit(writer, *numbered(5, 8))
    assert writer.close(timeout=5)
    assert ids(sink.lines) == numbered(0, 8)
    assert sink.closed
    assert writer.close(timeout=1)  # twice is harmless


def test_submit_never_blocks_on_a_stuck_sink(make: Callable[..., AuditWriter]) -> None:
    sink = GatedSink()
    writer = make(sink)
    submit(writer, "first")
    assert sink.waiting.wait(5)  # the writer thread is now stuck inside sink.write
    started = time.monotonic()
    submit(writer, *numbered(0, 500))
    assert time.monotonic() - started < 2.0  # returned while the sink is still stuck
    assert writer.pending == 501
    sink.gate.set()
    assert writer.flush(timeout=5)
    assert ids(sink.lines) == ["first", *numbered(0, 500)]


def test_an_outage_holds_records_then_writes_each_once_in_order(
    make: Callable[..., AuditWriter], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="opsgate.audit")
    sink = MemorySink(fail_with=DISK_FULL)
    writer = make(sink)
    submit(writer, *numbered(0, 100))
    wait_until(lambda: writer.failures >= 3)  # retried, not given up
    assert not writer.healthy
    assert not writer.accepting
    submit(writer, *numbered(100, 200))  # in-flight calls still record
    sink.fail_with = None
    assert writer.flush(timeout=5)
    assert ids(sink.lines) == numbered(0, 200)
    assert writer.healthy
    assert writer.accepting
    assert writer.written == 200
    assert writer.dropped == 0

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1  # once per outage, not once per retry
    assert "audit sink failed" in errors[0].getMessage()
    assert "records pending" in errors[0].getMessage()
    recoveries = [r.getMessage() for r in caplog.records if "recovered" in r.getMessage()]
    assert len(recoveries) == 1
    assert "wrote" in recoveries[0]
    logged = caplog.text
    assert "r17" not in logged and "alice" not in logged  # no record contents


def test_a_second_outage_is_logged_again(
    make: Callable[..., AuditWriter], caplog: pytest.LogCaptureFixture
) -> None:
    sink = MemorySink()
    writer = make(sink)
    for outage in range(2):
        sink.fail_with = DISK_FULL
        submit(writer, f"o{outage}")
        wait_until(lambda: not writer.healthy)
        sink.fail_with = None
        assert writer.flush(timeout=5)
    assert ids(sink.lines) == ["o0", "o1"]
    assert sum("audit sink failed" in r.getMessage() for r in caplog.records) == 2


def test_a_partly_stored_batch_is_neither_lost_nor_repeated(
    make: Callable[..., AuditWriter],
) -> None:
    sink = TornSink(keep=3)
    writer = make(sink)
    submit(writer, *numbered(0, 10))
    assert writer.flush(timeout=5)
    assert ids(sink.lines) == numbered(0, 10)
    assert writer.failures == 1


def test_fail_closed_stops_accepting_at_max_pending_but_keeps_every_record(
    make: Callable[..., AuditWriter],
) -> None:
    sink = GatedSink()
    writer = make(sink, max_pending=10)
    submit(writer, "head")
    assert sink.waiting.wait(5)
    submit(writer, *numbered(0, 8))
    assert writer.accepting  # 9 pending
    submit(writer, *numbered(8, 15))  # calls already in flight when the limit was reached
    assert writer.healthy
    assert not writer.accepting
    assert writer.pending == 16
    sink.gate.set()
    assert writer.flush(timeout=5)
    assert writer.accepting
    assert ids(sink.lines) == ["head", *numbered(0, 15)]
    assert writer.dropped == 0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_fail_open_keeps_accepting_and_counts_and_alarms_what_it_drops(
    make: Callable[..., AuditWriter], caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    sink = MemorySink(fail_with=DISK_FULL)
    writer = make(sink, on_failure="fail_open_with_alarm", max_pending=10, clock=clock)
    submit(writer, *numbered(0, 25))
    wait_until(lambda: not writer.healthy)
    assert writer.accepting
    assert writer.pending == 10
    assert writer.dropped == 15
    alarms = [r.getMessage() for r in caplog.records if "AUDIT RECORDS LOST" in r.getMessage()]
    assert len(alarms) == 1  # at once, then rate-limited
    assert "queue is full" in alarms[0]

    clock.now += writer_module.ALARM_INTERVAL_S
    submit(writer, "late")
    alarms = [r.getMessage() for r in caplog.records if "AUDIT RECORDS LOST" in r.getMessage()]
    assert len(alarms) == 2
    assert "16 records dropped" in alarms[1]

    sink.fail_with = None
    clock.now += 1  # past the retry time: the writer retries by the clock it was given
    assert writer.flush(timeout=5)
    assert ids(sink.lines) == numbered(0, 10)  # the first ten were kept, in order
    assert writer.healthy


def test_fail_closed_refuses_new_calls_while_the_sink_is_down(
    make: Callable[..., AuditWriter],
) -> None:
    sink = MemorySink()
    writer = make(sink)
    assert writer.accepting
    sink.fail_with = DISK_FULL
    submit(writer, "x")
    wait_until(lambda: not writer.accepting)
    sink.fail_with = None
    wait_until(lambda: writer.accepting)
    assert writer.healthy


def test_a_failing_flush_is_an_outage_too(make: Callable[..., AuditWriter]) -> None:
    sink = MemorySink()
    writer = make(sink)
    submit(writer, "a")
    assert writer.flush(timeout=5)
    sink.fail_with = DISK_FULL  # e.g. fsync reports a lost write
    submit(writer, "b")
    assert not writer.flush(timeout=0.2)
    assert not writer.healthy
    sink.fail_with = None
    assert writer.flush(timeout=5)
    assert ids(sink.lines) == ["a", "b"]


def test_close_during_an_outage_reports_what_was_not_written(
    make: Callable[..., AuditWriter], caplog: pytest.LogCaptureFixture
) -> None:
    sink = MemorySink(fail_with=DISK_FULL)
    writer = make(sink)
    submit(writer, *numbered(0, 3))
    assert not writer.close(timeout=0.2)
    assert "closed with 3 records not written" in caplog.text
    assert sink.closed
    submit(writer, "after-close")
    assert writer.dropped == 1


def test_submit_never_raises_even_when_a_record_cannot_be_built(
    make: Callable[..., AuditWriter],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = MemorySink()
    writer = make(sink)

    def broken(_: object) -> dict[str, object]:
        raise RuntimeError("bug")

    good = writer_module.serialize(event(request_id="good"))
    monkeypatch.setattr(writer_module, "to_log_entry", broken)
    writer.submit(event())  # rendered later, on the writer thread: that is where it fails
    writer.submit(good, lambda line: line)  # a record that renders is not held up by it
    assert writer.flush(timeout=5)
    assert writer.dropped == 1
    assert writer.pending == 0
    assert ids(sink.lines) == ["good"]
    assert "could not be serialized" in caplog.text


def test_an_idle_writer_flushes_the_sink_on_its_own(
    make: Callable[..., AuditWriter], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "IDLE_FLUSH_S", 0.02)
    sink = MemorySink()
    writer = make(sink)
    submit(writer, "a")
    wait_until(lambda: sink.flushes >= 1)


def test_records_survive_a_real_unwritable_path_and_land_in_order(
    make: Callable[..., AuditWriter], tmp_path: Path
) -> None:
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the log directory should be")  # fails for root too
    path = blocker / "audit.log"
    writer = make(RotatingFileSink(path, max_bytes=500, backups=50, fsync="always"))
    submit(writer, *numbered(0, 20))
    wait_until(lambda: writer.failures >= 2)
    assert not writer.accepting
    blocker.unlink()
    submit(writer, *numbered(20, 30))
    assert writer.close(timeout=5)
    assert [r["insertId"] for r in read_records([path])] == numbered(0, 30)


def test_records_survive_a_read_only_directory(
    make: Callable[..., AuditWriter], tmp_path: Path
) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o500)
    try:
        if os.access(directory, os.W_OK):
            pytest.skip("running as a user who can write to a read-only directory (root)")
        path = directory / "audit.log"
        writer = make(RotatingFileSink(path, max_bytes=0, backups=0, fsync="always"))
        submit(writer, *numbered(0, 5))
        wait_until(lambda: not writer.healthy)
        assert not writer.accepting
        directory.chmod(0o700)
        assert writer.flush(timeout=5)
        assert ids(path.read_bytes().splitlines()) == numbered(0, 5)
        assert writer.healthy
    finally:
        directory.chmod(0o700)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"on_failure": "ignore"}, "on_failure"),
        ({"max_pending": 0}, "max_pending"),
        ({"retry_interval_s": 0}, "retry_interval_s"),
    ],
    ids=["on-failure", "max-pending", "retry-interval"],
)
def test_bad_options_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AuditWriter(MemorySink(), **options)  # type: ignore[arg-type]
