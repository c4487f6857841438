"""AuditWriter: takes records on the event loop without blocking; renders and writes them on one
thread."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from itertools import islice
from typing import Any, Literal

import orjson

from gateway.audit.event import AuditEvent
from gateway.audit.logentry import to_log_entry
from gateway.audit.sinks import AuditSink, PartialWriteError

log = logging.getLogger("opsgate.audit")

OnFailure = Literal["fail_closed", "fail_open_with_alarm"]
_ON_FAILURE: tuple[OnFailure, ...] = ("fail_closed", "fail_open_with_alarm")

BATCH_LINES = 1024  # records per sink.write: amortizes syscalls without holding much at once
# Once records start arriving, the writer thread waits this long for more before it renders and
# writes them, and submit() never wakes it meanwhile: one wake-up and one write per batch, not
# per call (a per-record wake-up costs the event loop a futex call and a GIL hand-off).
LINGER_S = 0.005
# After this long with nothing new to write, the sink is flushed once, so a quiet gateway's
# last records do not wait for the next call to become durable ("interval" fsync).
IDLE_FLUSH_S = 1.0
# Lost records are alarmed at once, then at most this often (with the running total), so an
# overflow cannot turn into a log flood on the event loop.
ALARM_INTERVAL_S = 10.0
_JOIN_GRACE_S = 0.1

_Work = tuple[Literal["render", "write", "flush"], list[Any], int]
Render = Callable[[Any], bytes]


_JSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE


def serialize(event: AuditEvent) -> bytes:
    """One record as the sink stores it: compact, key-sorted UTF-8 JSON and a newline."""
    return serialize_entry(to_log_entry(event))


def serialize_entry(entry: Mapping[str, Any]) -> bytes:
    """A LogEntry as the sink stores it (see serialize)."""
    return orjson.dumps(entry, option=_JSON_OPTIONS)


class AuditWriter:
    """Queues one record per call and, on a daemon thread, renders and drains them into `sink`.

    `submit` only queues what it is given; the writer thread turns it into bytes with the
    `render` it came with (`serialize` for an AuditEvent), so building and serializing records
    happens off the event loop, in batches.

    Records are never dropped while the sink fails: the failed batch stays at the head of the
    queue and is retried every `retry_interval_s`. With "fail_closed" the gateway stops taking
    new calls (`accepting` is False) while the sink is down or `max_pending` records wait; with
    "fail_open_with_alarm" calls go on, and past `max_pending` records are dropped, counted in
    `dropped` and alarmed in the log: the only way a record is lost, and never silently.
    """

    def __init__(
        self,
        sink: AuditSink,
        *,
        on_failure: OnFailure = "fail_closed",
        max_pending: int = 100_000,
        retry_interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if on_failure not in _ON_FAILURE:
            raise ValueError(f"on_failure must be one of {', '.join(_ON_FAILURE)}")
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        if retry_interval_s <= 0:
            raise ValueError("retry_interval_s must be positive")
        self.on_failure = on_failure
        self.max_pending = max_pending
        self.retry_interval_s = retry_interval_s
        self._sink = sink
        self._clock = clock
        self._fail_open = on_failure == "fail_open_with_alarm"
        lock = threading.Lock()
        self._work = threading.Condition(lock)  # the writer thread waits here
        self._progress = threading.Condition(lock)  # flush() callers wait here
        self._incoming: deque[tuple[Any, Render]] = deque()  # submitted, not yet rendered
        self._ready: deque[bytes] = deque()  # rendered, waiting for the sink
        self._rendering = 0  # taken from _incoming, being rendered (outside the lock)
        self._enqueued = 0  # records ever queued
        self._written = 0
        self._unrenderable = 0  # records whose render raised: lost, and counted in dropped
        self._synced = 0  # records settled (written or lost) at the last successful sink.flush()
        self._sleeping = False  # the writer thread waits for the next submit to wake it
        self._collect_until: float | None = None  # the writer lingers for a batch until then
        self._flush_wanted = 0  # flush() callers want the first N records flushed
        self._idle_flush_at: float | None = None
        self._retry_at: float | None = None
        self._failures = 0
        self._outage_attempts = 0
        self._outage_started = 0.0
        self._dropped = 0
        self._last_alarm: float | None = None
        self._healthy = True
        self._closing = False
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="opsgate-audit-writer", daemon=True)
        self._thread.start()

    # -- state, for the gateway and for metrics ---------------------------------------------

    @property
    def healthy(self) -> bool:
        """False from a failed sink call until the next one succeeds."""
        return self._healthy

    @property
    def accepting(self) -> bool:
        """Whether the gateway may take new calls: fail_closed refuses them while records wait."""
        if self._fail_open:
            return True
        # Read without the lock (each read is atomic): this runs once per call on the loop.
        return self._healthy and not self._closing and self.pending < self.max_pending

    @property
    def pending(self) -> int:
        """Records submitted and neither written nor lost yet."""
        return len(self._incoming) + self._rendering + len(self._ready)

    @property
    def written(self) -> int:
        return self._written

    @property
    def failures(self) -> int:
        """Failed sink calls (every attempt, so a long outage keeps counting)."""
        return self._failures

    @property
    def dropped(self) -> int:
        return self._dropped

    # -- the event loop side ----------------------------------------------------------------

    def submit(self, record: Any, render: Render = serialize) -> None:
        """Queue the record of one call (rendered to bytes later, on the writer thread).

        Never blocks on I/O and never raises. Wakes the writer thread only when it sleeps for
        want of work; while a batch is being collected, submitting is an append under a lock.
        """
        with self._work:
            if self._closing:
                reason = "the audit writer is closed"
            elif self._fail_open and self.pending >= self.max_pending:
                reason = f"the audit queue is full ({self.pending} records pending)"
            else:
                self._incoming.append((record, render))
                self._enqueued += 1
                if self._sleeping:
                    self._sleeping = False
                    self._work.notify()
                return
        self._lose(reason)

    def _lose(self, reason: str, *, exc_info: bool = False) -> None:
        with self._work:
            self._dropped += 1
            dropped = self._dropped
            now = self._clock()
            alarm = self._last_alarm is None or now - self._last_alarm >= ALARM_INTERVAL_S
            if alarm:
                self._last_alarm = now
        if alarm:
            log.error(
                "AUDIT RECORDS LOST: %s; %d records dropped so far",
                reason,
                dropped,
                exc_info=exc_info,
            )

    # -- blocking calls, for shutdown and tests ---------------------------------------------

    def flush(self, timeout: float) -> bool:
        """Wait until every record submitted so far is written and the sink flushed."""
        with self._progress:
            target = self._enqueued
            if self._flush_wanted < target:
                self._flush_wanted = target
                self._work.notify()
            self._progress.wait_for(lambda: self._synced >= target or self._stopped, timeout)
            return self._synced >= target

    def close(self, timeout: float) -> bool:
        """Flush, stop the thread and close the sink; False if records were left unwritten."""
        deadline = time.monotonic() + timeout
        flushed = self.flush(timeout)
        with self._work:
            self._closing = True
            self._work.notify()
        self._thread.join(max(deadline - time.monotonic(), _JOIN_GRACE_S))
        with self._work:
            pending, stopped = self.pending, self._stopped
        if pending:
            log.error("audit writer closed with %d records not written", pending)
        return flushed and stopped and not pending

    # -- the writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while (work := self._next_work()) is not None:
                if work[0] == "render":
                    self._render(work[1])
                elif not self._perform(work):
                    break
        except Exception:
            # A bug here, not a sink failure (those are retried): say so loudly, and stay
            # unhealthy so a fail_closed gateway stops taking calls it cannot record.
            log.exception("audit writer thread failed; no further records will be written")
            with self._work:
                self._healthy = False
        finally:
            try:
                self._sink.close()
            except Exception as exc:
                log.error("audit sink failed to close: %s", _describe(exc))
            with self._work:
                self._stopped = True
                self._progress.notify_all()

    def _next_work(self) -> _Work | None:
        with self._work:
            while True:
                now = self._clock()
                # While the sink is down, wait out the retry interval; at close, try once more.
                if self._retry_at is not None and now < self._retry_at and not self._closing:
                    self._work.wait(self._retry_at - now)
                    continue
                # A flush() caller is served as soon as its records are written, even if more
                # keep arriving: under steady load the queue may never be empty.
                if self._synced < self._flush_wanted <= self._settled:
                    return "flush", [], self._settled
                if self._incoming:
                    if self._lingering():
                        continue
                    taken = list(self._incoming)
                    self._incoming.clear()
                    self._rendering = len(taken)
                    return "render", taken, 0
                if self._ready:
                    return "write", list(islice(self._ready, BATCH_LINES)), 0
                if self._idle_flush_at is not None and now >= self._idle_flush_at:
                    return "flush", [], self._settled
                if self._closing:
                    return None
                idle = None if self._idle_flush_at is None else self._idle_flush_at - now
                self._sleeping = True
                self._work.wait(idle)
                self._sleeping = False

    @property
    def _settled(self) -> int:
        return self._written + self._unrenderable

    def _lingering(self) -> bool:
        """Wait (lock held) for more records to join the batch; False once it is time to go.

        Real time, not the injected clock: this is about batching, not about record times.
        """
        now = time.monotonic()
        urgent = (
            self._closing
            or self._flush_wanted > self._settled
            or len(self._incoming) >= BATCH_LINES
        )
        if self._collect_until is None:
            self._collect_until = now + LINGER_S
        if urgent or now >= self._collect_until:
            self._collect_until = None
            return False
        self._work.wait(self._collect_until - now)
        return True

    def _render(self, taken: list[tuple[Any, Render]]) -> None:
        lines: list[bytes] = []
        failed = 0
        for record, render in taken:
            try:
                lines.append(render(record))
            except Exception:
                # A bug in a value handed to us: the record cannot exist, so it is counted lost.
                failed += 1
                self._lose("an audit record could not be serialized", exc_info=True)
        with self._work:
            self._ready.extend(lines)
            self._rendering = 0
            self._unrenderable += failed

    def _perform(self, work: _Work) -> bool:
        kind, lines, flush_upto = work
        try:
            if kind == "write":
                self._sink.write(lines)
            else:
                self._sink.flush()
        except Exception as exc:
            # Anything a sink raises is an outage: the records stay queued either way.
            stored = exc.written if isinstance(exc, PartialWriteError) else 0
            return self._failed(exc, stored)
        with self._work:
            if kind == "write":
                self._commit(len(lines))
                if self._idle_flush_at is None:
                    self._idle_flush_at = self._clock() + IDLE_FLUSH_S
            else:
                self._synced = max(self._synced, flush_upto)
                self._idle_flush_at = None
                self._progress.notify_all()
            recovered = not self._healthy
            attempts, since = self._outage_attempts, self._clock() - self._outage_started
            self._healthy, self._retry_at, self._outage_attempts = True, None, 0
            pending = self.pending
        if recovered:
            log.warning(
                "audit sink recovered after %d failed attempts in %.1fs: "
                "wrote %d held records, %d still pending",
                attempts,
                since,
                len(lines),
                pending,
            )
        return True

    def _failed(self, exc: Exception, stored: int) -> bool:
        with self._work:
            self._commit(stored)
            self._failures += 1
            self._outage_attempts += 1
            first = self._healthy
            if first:
                self._outage_started = self._clock()
            self._healthy = False
            self._retry_at = self._clock() + self.retry_interval_s
            pending, closing = self.pending, self._closing
        if first:
            log.error(
                "audit sink failed: %s; %d records pending, retrying every %gs (%s)",
                _describe(exc),
                pending,
                self.retry_interval_s,
                "records are held in memory; calls continue"
                if self._fail_open
                else "new calls are refused until it recovers",
                exc_info=not isinstance(exc, OSError),
            )
        return not closing

    def _commit(self, count: int) -> None:
        # Caller holds the lock. Records leave the queue only once the sink has them.
        for _ in range(count):
            self._ready.popleft()
        self._written += count
        self._progress.notify_all()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
