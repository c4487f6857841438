"""Where serialized audit records go: stdout, a size-rotated file, or memory (for tests)."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, Protocol

from gateway.errors import OpsgateError

FsyncMode = Literal["always", "interval", "never"]
_FSYNC_MODES: tuple[FsyncMode, ...] = ("always", "interval", "never")

# Audit records name people and addresses: readable by the owner and a log shipper's group only.
_FILE_MODE = 0o640


class AuditSink(Protocol):
    """Receives whole records (JSON lines ending in b"\\n"); called only on the writer thread.

    Every method may block and raises OSError on failure; the writer keeps the records and
    retries. A sink that wrote part of a batch before failing raises PartialWriteError, so the
    writer neither loses nor repeats records.
    """

    def write(self, lines: Sequence[bytes]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class PartialWriteError(OpsgateError, OSError):
    """A write failed after the first `written` lines of the batch were stored in full."""

    reason = "AUDIT_WRITE_PARTIAL"

    def __init__(self, written: int, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.written = written
        self.filename = cause.filename


class StdoutSink:
    """Writes records to the process's stdout, for container log collectors."""

    def write(self, lines: Sequence[bytes]) -> None:
        out = sys.stdout.buffer
        out.write(b"".join(lines))
        # A collector reads a pipe: records should leave now, and a broken pipe should surface
        # here, where the writer handles it, not at some later buffered write.
        out.flush()

    def flush(self) -> None:
        sys.stdout.buffer.flush()

    def close(self) -> None:
        # stdout belongs to the process, not to us: flush, never close.
        sys.stdout.buffer.flush()


class RotatingFileSink:
    """Appends records to `path`, rotating by size like logging.handlers.RotatingFileHandler.

    When the next record would take the file past `max_bytes`, path.N-1 -> path.N, ...,
    path -> path.1 (path.N is removed) and writing goes on in a new path. A record is never
    split across files; a record longer than `max_bytes` gets a file of its own. As with the
    standard handler, `max_bytes == 0` or `backups == 0` means never rotate.

    fsync: "always" after every write call, "interval" at most every `fsync_interval_s` (and on
    flush/close), "never" leaves it to the OS. The file is opened on first use and reopened on
    the next call after any error.
    """

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        backups: int,
        fsync: FsyncMode,
        fsync_interval_s: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_bytes < 0 or backups < 0:
            raise ValueError("max_bytes and backups must not be negative")
        if fsync not in _FSYNC_MODES:
            raise ValueError(f"fsync must be one of {', '.join(_FSYNC_MODES)}, not {fsync!r}")
        if fsync_interval_s < 0:
            raise ValueError("fsync_interval_s must not be negative")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.fsync = fsync
        self.fsync_interval_s = fsync_interval_s
        self._clock = clock
        self._fd: int | None = None
        self._size = 0
        self._dirty = False  # written since the last fsync
        self._last_fsync = clock()
        self.fsyncs = 0  # how many fsyncs were made (for tests and metrics)
        self.rotations = 0

    def write(self, lines: Sequence[bytes]) -> None:
        done = 0
        try:
            while done < len(lines):
                fd = self._open()
                if self._size > 0 and self._should_rotate(len(lines[done])):
                    self._rotate()
                    continue
                # Everything that fits in this file goes in one write: fewer syscalls, and on
                # failure the whole chunk is rolled back at once.
                end, size = done, self._size
                while end < len(lines) and (
                    end == done or not self._should_rotate(len(lines[end]), size)
                ):
                    size += len(lines[end])
                    end += 1
                self._append(fd, b"".join(lines[done:end]))
                done = end
            if self.fsync == "always" or (
                self.fsync == "interval"
                and self._clock() - self._last_fsync >= self.fsync_interval_s
            ):
                self._sync()
        except OSError as exc:
            self._abandon()
            if done:
                raise PartialWriteError(done, exc) from exc
            raise

    def flush(self) -> None:
        if self.fsync != "never":
            self._sync()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._abandon()

    def _should_rotate(self, record_len: int, size: int | None = None) -> bool:
        current = self._size if size is None else size
        return self.max_bytes > 0 and self.backups > 0 and current + record_len > self.max_bytes

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, _FILE_MODE)
            try:
                size = os.fstat(fd).st_size
                # A torn record left by a crash or a failed rollback: end its line, so the next
                # record starts on one of its own and readers skip only the fragment.
                if size > 0 and os.pread(fd, 1, size - 1) != b"\n":
                    _write_all(fd, b"\n")
                    size += 1
            except OSError:
                os.close(fd)
                raise
            self._fd, self._size = fd, size
        return self._fd

    def _append(self, fd: int, data: bytes) -> None:
        try:
            _write_all(fd, data)
        except OSError:
            # Roll back a partly written chunk so no record is left torn and none is written
            # twice when the writer retries. If even that fails, _open ends the fragment's line.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self._size)
            raise
        self._size += len(data)
        self._dirty = True

    def _rotate(self) -> None:
        if self.fsync != "never":
            self._sync()
        self._abandon()
        for index in range(self.backups - 1, 0, -1):
            source = self._backup(index)
            if source.exists():
                os.replace(source, self._backup(index + 1))
        os.replace(self.path, self._backup(1))
        if self.fsync != "never":
            _fsync_directory(self.path.parent)
        self.rotations += 1

    def _backup(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def _sync(self) -> None:
        if self._fd is not None and self._dirty:
            os.fsync(self._fd)
            self.fsyncs += 1
            self._dirty = False
        self._last_fsync = self._clock()

    def _abandon(self) -> None:
        fd, self._fd, self._size = self._fd, None, 0
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


class MemorySink:
    """Keeps every record in memory; set `fail_with` to make every call fail (thread-safe)."""

    def __init__(self, fail_with: OSError | None = None) -> None:
        self.fail_with = fail_with
        self._lock = threading.Lock()
        self._lines: list[bytes] = []
        self.write_calls = 0
        self.flushes = 0
        self.closed = False

    @property
    def lines(self) -> list[bytes]:
        with self._lock:
            return list(self._lines)

    def write(self, lines: Sequence[bytes]) -> None:
        with self._lock:
            self.write_calls += 1
            if self.fail_with is not None:
                raise self.fail_with
            self._lines.extend(lines)

    def flush(self) -> None:
        with self._lock:
            if self.fail_with is not None:
                raise self.fail_with
            self.flushes += 1

    def close(self) -> None:
        with self._lock:
            self.closed = True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_directory(directory: Path) -> None:
    # Makes the renames of a rotation durable; not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
