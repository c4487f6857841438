"""Sinks: the rotating file (rotation, fsync, failures and rollback), stdout and memory."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest

from gateway.audit.sinks import MemorySink, PartialWriteError, RotatingFileSink, StdoutSink


def line(index: int, pad: int = 0) -> bytes:
    return json.dumps({"n": index, "pad": "x" * pad}).encode() + b"\n"


def numbers(*paths: Path) -> list[int]:
    """The record numbers in these files, read in order; every line must be a whole record."""
    found = []
    for path in paths:
        data = path.read_bytes()
        assert data.endswith(b"\n")
        found += [json.loads(raw)["n"] for raw in data.splitlines()]
    return found


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("batch", [1, 3, 50], ids=["one-per-call", "small-batches", "one-call"])
def test_rotation_keeps_records_whole_and_honours_the_backup_count(
    tmp_path: Path, batch: int
) -> None:
    path = tmp_path / "audit.log"
    sink = RotatingFileSink(path, max_bytes=200, backups=2, fsync="never")
    records = [line(i, pad=i % 7 * 5) for i in range(50)]
    for start in range(0, len(records), batch):
        sink.write(records[start : start + batch])
    sink.close()

    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.log", "audit.log.1", "audit.log.2"]
    kept = numbers(path.with_name("audit.log.2"), path.with_name("audit.log.1"), path)
    assert kept == list(range(50 - len(kept), 50))  # the newest records, in order, none split
    for file in tmp_path.iterdir():
        assert file.stat().st_size <= 200
    assert sink.rotations > 2


def test_a_record_larger_than_max_bytes_gets_a_file_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    sink = RotatingFileSink(path, max_bytes=100, backups=3, fsync="never")
    sink.write([line(0), line(1, pad=300), line(2)])
    sink.close()
    assert numbers(path.with_name("audit.log.2")) == [0]
    assert numbers(path.with_name("audit.log.1")) == [1]
    assert numbers(path) == [2]


@pytest.mark.parametrize(
    ("max_bytes", "backups"), [(0, 3), (100, 0)], ids=["no-max-bytes", "no-backups"]
)
def test_zero_max_bytes_or_backups_never_rotates(
    tmp_path: Path, max_bytes: int, backups: int
) -> None:
    path = tmp_path / "audit.log"
    sink = RotatingFileSink(path, max_bytes=max_bytes, backups=backups, fsync="never")
    sink.write([line(i, pad=20) for i in range(20)])
    sink.close()
    assert [p.name for p in tmp_path.iterdir()] == ["audit.log"]
    assert numbers(path) == list(range(20))


def test_appends_to_an_existing_file_and_ends_a_torn_line_first(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(line(0) + b'{"n": 1, "pa')  # a crash in the middle of a record
    sink = RotatingFileSink(path, max_bytes=0, backups=0, fsync="never")
    sink.write([line(2)])
    sink.close()
    assert path.read_bytes() == line(0) + b'{"n": 1, "pa\n' + line(2)


def test_opens_lazily_and_creates_the_directory_without_world_access(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "audit.log"
    sink = RotatingFileSink(path, max_bytes=1000, backups=1, fsync="never")
    assert not path.parent.exists()
    sink.write([line(0)])
    sink.close()
    assert numbers(path) == [0]
    assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every file descriptor fsync'd; the real fsync still runs."""
    calls: list[int] = []
    real = os.fsync

    def spy(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return calls


def test_fsync_always_syncs_after_every_write_call(tmp_path: Path, fsyncs: list[int]) -> None:
    sink = RotatingFileSink(tmp_path / "audit.log", max_bytes=0, backups=0, fsync="always")
    for i in range(3):
        sink.write([line(i), line(i + 100)])
    assert len(fsyncs) == 3
    sink.close()
    assert len(fsyncs) == 3  # nothing new to sync at close


def test_fsync_never_leaves_it_to_the_os_even_at_close(tmp_path: Path, fsyncs: list[int]) -> None:
    sink = RotatingFileSink(tmp_path / "audit.log", max_bytes=60, backups=2, fsync="never")
    for i in range(10):
        sink.write([line(i)])
    sink.flush()
    sink.close()
    assert fsyncs == []
    assert sink.rotations > 0


def test_fsync_interval_syncs_at_most_every_interval_and_on_flush(
    tmp_path: Path, fsyncs: list[int]
) -> None:
    clock = FakeClock()
    sink = RotatingFileSink(
        tmp_path / "audit.log", max_bytes=0, backups=0, fsync="interval", fsync_interval_s=1.0,
        clock=clock,
    )  # fmt: skip
    synced_after = []
    for now in (0.0, 0.4, 0.9, 1.0, 1.5, 1.9, 2.2, 2.5):
        clock.now = now
        sink.write([line(0)])
        synced_after.append(len(fsyncs))
    assert synced_after == [0, 0, 0, 1, 1, 1, 2, 2]
    sink.flush()
    assert len(fsyncs) == 3
    sink.flush()  # nothing written since
    assert len(fsyncs) == 3


def test_rotation_syncs_the_old_file_before_closing_it(tmp_path: Path, fsyncs: list[int]) -> None:
    sink = RotatingFileSink(tmp_path / "audit.log", max_bytes=50, backups=1, fsync="interval")
    sink.write([line(0, pad=20), line(1, pad=20)])  # the second record rotates the first out
    assert len(fsyncs) >= 1


def test_a_failed_write_rolls_back_and_the_next_call_reopens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.log"
    sink = RotatingFileSink(path, max_bytes=0, backups=0, fsync="never")
    sink.write([line(0)])
    real_write = os.write

    def short_then_full(fd: int, data: bytes | memoryview) -> int:
        real_write(fd, bytes(data[:10]))  # part of the chunk reaches the file...
        raise OSError(errno.ENOSPC, "No space left on device")  # ...then the disk is full

    monkeypatch.setattr(os, "write", short_then_full)
    with pytest.raises(OSError) as failure:
        sink.write([line(1), line(2)])
    assert not isinstance(failure.value, PartialWriteError)
    assert path.read_bytes() == line(0)  # rolled back: no torn record

    monkeypatch.setattr(os, "write", real_write)
    sink.write([line(1), line(2)])
    sink.close()
    assert numbers(path) == [0, 1, 2]


def test_a_failure_after_a_rotation_reports_the_lines_already_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.log"
    sink = RotatingFileSink(path, max_bytes=40, backups=2, fsync="never")
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", _failing(errno.EACCES))
    with pytest.raises(PartialWriteError) as failure:
        sink.write([line(0, pad=10), line(1, pad=10), line(2, pad=10)])
    assert failure.value.written == 1
    assert failure.value.errno == errno.EACCES

    monkeypatch.setattr(os, "replace", real_replace)
    sink.write([line(1, pad=10), line(2, pad=10)])  # the writer retries what was not stored
    sink.close()
    assert numbers(path.with_name("audit.log.2"), path.with_name("audit.log.1"), path) == [0, 1, 2]


def _failing(code: int) -> object:
    def fail(*args: object) -> None:
        raise OSError(code, os.strerror(code))

    return fail


def test_a_path_that_cannot_be_a_file_raises_oserror_until_it_can(tmp_path: Path) -> None:
    # A regular file where the directory should be: fails for root too, unlike permissions.
    blocker = tmp_path / "logs"
    blocker.write_text("not a directory")
    sink = RotatingFileSink(blocker / "audit.log", max_bytes=0, backups=0, fsync="always")
    with pytest.raises(OSError):
        sink.write([line(0)])
    blocker.unlink()
    sink.write([line(0)])
    sink.close()
    assert numbers(blocker / "audit.log") == [0]


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fsync"):
        RotatingFileSink(tmp_path / "a", max_bytes=1, backups=1, fsync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        RotatingFileSink(tmp_path / "a", max_bytes=-1, backups=1, fsync="never")


def test_stdout_sink_writes_and_flushes(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    sink = StdoutSink()
    sink.write([line(0), line(1)])
    sink.flush()
    sink.close()
    assert capsysbinary.readouterr().out == line(0) + line(1)


def test_memory_sink_keeps_lines_and_fails_when_told() -> None:
    sink = MemorySink()
    sink.write([line(0)])
    sink.fail_with = OSError(errno.EIO, "I/O error")
    with pytest.raises(OSError, match="I/O error"):
        sink.write([line(1)])
    with pytest.raises(OSError):
        sink.flush()
    sink.fail_with = None
    sink.write([line(2)])
    sink.close()
    assert sink.lines == [line(0), line(2)]
    assert sink.closed
