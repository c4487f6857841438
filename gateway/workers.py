"""`opsgate serve --workers N`: a supervisor and N gateway processes sharing every door's port.

Each worker is a full gateway with its own caches, its own audit file (PATH gets a `-wK`
suffix before its extension, so no two processes rotate one file) and its own metrics port
(metrics.listen's port + K); the gRPC, REST, Envoy HTTP-check and health ports are shared
with SO_REUSEPORT (the kernel hands each new connection to one of the workers listening).

The supervisor watches all of them at once. A worker serves once it says so over a unix
socket in the shared directory, which it does when every door of it is bound; the supervisor
tells every worker how many serve (for health and metrics). A worker that dies or fails to
start is logged with its exit code or signal and its last words, and started again after a
backoff that doubles with each failure in a row; when one has failed to start START_FAILURES
times within START_WINDOW_S, the supervisor gives up: it drains the others and exits 1.
Everything a worker writes is relayed on the supervisor's stderr, marked with its index.
SIGTERM/SIGINT drain every worker (exit 0 only when each drained and exited 0); SIGHUP is
forwarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import re
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from gateway import runtime
from gateway.config import Settings
from gateway.configschema import OutputFile
from gateway.errors import ConfigError
from gateway.observability.workers import WorkerCounts

log = logging.getLogger("opsgate.workers")

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
SOCKET_NAME = "supervisor.sock"  # in the workers' shared directory (beside envoy/handoff's)

BACKOFF_FIRST_S = 0.1  # the wait before restarting a worker that failed for the first time
BACKOFF_MAX_S = 10.0  # doubled with each failure in a row, up to this
STABLE_S = 10.0  # a worker that served this long before it died starts a new run of failures
START_FAILURES = 5  # failures to start (exits before serving) within START_WINDOW_S: give up
START_WINDOW_S = 60.0
START_TIMEOUT_S = 60.0  # a worker not serving by then is killed (a failure to start)
STOP_MARGIN_S = 35.0  # beyond shutdown_grace_s (the audit flush may take 30 s): then SIGKILL
LINE_LIMIT = 1 << 20  # longest line of a worker's output relayed


def worker_settings(settings: Settings, index: int) -> Settings:
    """The settings of worker `index` (0-based): shared port, its own audit file and metrics."""
    audit = settings.audit
    if audit.file is not None:
        path = audit.file.path
        own = OutputFile(path.with_name(f"{Path(path.name).stem}-w{index}{path.suffix}"))
        audit = dataclasses.replace(audit, file=dataclasses.replace(audit.file, path=own))
    metrics = settings.metrics
    if metrics is not None:
        host, _, port = metrics.listen.rpartition(":")
        metrics = dataclasses.replace(metrics, listen=f"{host}:{int(port) + index}")
    return dataclasses.replace(settings, audit=audit, metrics=metrics)


def check_workers(settings: Settings, workers: int) -> None:
    if workers < 1:
        raise ConfigError("<flags>", "--workers", "must be 1 or more")
    if workers == 1:
        return
    fixed = {
        "listen": settings.listen,
        "metrics.listen": settings.metrics.listen if settings.metrics else None,
        "rest.listen": settings.rest.listen if settings.rest else None,
        "envoy.http_listen": settings.envoy.http_listen if settings.envoy else None,
        "health.listen": settings.health.listen if settings.health else None,
    }
    for key, listen in fixed.items():
        if listen is not None and listen.endswith(":0"):
            raise ConfigError("<flags>", "--workers", f"needs a fixed {key} port, not :0")


# The worker's side.


class SupervisorLink:
    """A worker's line to its supervisor: says when the worker serves, keeps `counts` as the
    supervisor tells them, and notices the supervisor going away."""

    def __init__(self, directory: Path, index: int, configured: int) -> None:
        self.counts = WorkerCounts(configured)
        self._path = directory / SOCKET_NAME
        self._index = index
        self._writer: asyncio.StreamWriter | None = None
        self._listening: asyncio.Task[None] | None = None
        self._closing = False

    async def serving(self, lost: Callable[[], None]) -> None:
        """Every door is bound: say so. `lost` is called if the supervisor goes away (a worker
        left alone drains and stops rather than serve unwatched)."""
        try:
            reader, writer = await asyncio.open_unix_connection(str(self._path))
            writer.write(f"serving {self._index} {os.getpid()}\n".encode())
            await writer.drain()
        except OSError as exc:
            log.error("worker %d cannot reach its supervisor (%s): stopping", self._index, exc)
            self.counts.lost()
            lost()
            return
        self._writer = writer
        self._listening = asyncio.create_task(self._listen(reader, lost), name="opsgate-link")

    async def _listen(self, reader: asyncio.StreamReader, lost: Callable[[], None]) -> None:
        with contextlib.suppress(OSError, ValueError):
            while line := await reader.readline():
                fields = line.split()
                if len(fields) == 4 and fields[0] == b"workers":
                    serving, configured, restarts = (int(value) for value in fields[1:])
                    self.counts.update(serving, configured, restarts)
        if not self._closing:
            log.error("worker %d lost its supervisor: draining and stopping", self._index)
            self.counts.lost()
            lost()

    def close(self) -> None:
        self._closing = True
        if self._listening is not None:
            self._listening.cancel()
        if self._writer is not None:
            self._writer.close()


def run_worker(settings: Settings, index: int, workers: int, workers_dir: Path | None) -> int:
    """Worker `index` of `serve --workers N`, as the supervisor starts it."""
    from gateway.server import serve_until_signalled

    link = SupervisorLink(workers_dir, index, workers) if workers_dir is not None else None
    own = worker_settings(settings, index)
    return runtime.run(
        serve_until_signalled(own, share_port=True, workers_dir=workers_dir, supervisor=link)
    )


# The supervisor's side.


def supervise(argv: list[str], workers: int, settings: Settings) -> int:
    """Run `workers` copies of this serve command as workers 0..N-1, keep them running, and
    return the exit code once they have stopped.

    They share a directory only this user can enter (removed when they are done): the
    supervisor's socket is there, and each worker's Envoy door takes the access-log entries
    of calls it decided there (envoy/handoff.py).
    """
    with tempfile.TemporaryDirectory(prefix="opsgate-workers-") as shared:
        supervisor = Supervisor(
            [*argv, "--workers-dir", shared],
            workers,
            Path(shared),
            stop_timeout_s=settings.shutdown_grace_s + STOP_MARGIN_S,
            json_lines=settings.log_format == "json",
        )
        # asyncio's own loop, not uvloop's: libuv clears the signal mask of the processes it
        # starts, and the workers must start with the forwarded signals blocked.
        return asyncio.run(supervisor.run())


@dataclass(slots=True)
class _Worker:
    """One of the N places, and the process in it now."""

    index: int
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    serving_since: float | None = None
    link: asyncio.StreamWriter | None = None  # its connection, while it serves
    said_serving: asyncio.Event = field(default_factory=asyncio.Event)
    relays: list[asyncio.Task[None]] = field(default_factory=list)
    last_words: deque[str] = field(default_factory=lambda: deque(maxlen=5))
    failures_in_a_row: int = 0
    start_failures: deque[float] = field(default_factory=deque)  # when, within the window
    died_at: float | None = None

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0


class Supervisor:
    def __init__(
        self,
        argv: list[str],
        workers: int,
        shared: Path,
        *,
        stop_timeout_s: float,
        json_lines: bool,
    ) -> None:
        self._argv = argv
        self._socket = shared / SOCKET_NAME
        self._stop_timeout_s = stop_timeout_s
        self._json_lines = json_lines
        self._workers: list[_Worker] = []
        self._configured = workers
        self._stopping: asyncio.Event | None = None
        self._starting: asyncio.Lock | None = None
        self._gave_up = False
        self.restarts = 0

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._starting = asyncio.Lock()
        self._workers = [_Worker(index) for index in range(self._configured)]
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop, signum)
        loop.add_signal_handler(signal.SIGHUP, self._forward, signal.SIGHUP)
        server = await asyncio.start_unix_server(self._hear, str(self._socket))
        log.info("supervising %d workers", self._configured)
        try:
            clean = await asyncio.gather(*(self._keep(worker) for worker in self._workers))
        finally:
            server.close()
            for signum in FORWARDED:
                loop.remove_signal_handler(signum)
        if self._gave_up:
            return 1
        log.info("every worker stopped")
        return 0 if all(clean) else 1

    def _stop(self, signum: int | None) -> None:
        assert self._stopping is not None
        if not self._stopping.is_set():
            self._stopping.set()
            loop = asyncio.get_running_loop()
            loop.call_later(self._stop_timeout_s, self._kill_stragglers)
        self._forward(signal.SIGTERM if signum is None else signum)

    def _forward(self, signum: int) -> None:
        for worker in self._workers:
            if worker.process is not None and worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signum)

    def _kill_stragglers(self) -> None:
        for worker in self._workers:
            if worker.process is not None and worker.process.returncode is None:
                log.error(
                    "worker %d (pid %d) still running %.0fs after it was told to stop: killing it",
                    worker.index,
                    worker.pid,
                    self._stop_timeout_s,
                )
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()

    async def _keep(self, worker: _Worker) -> bool:
        """Keep a worker in this place until told to stop; whether it then ended cleanly."""
        assert self._stopping is not None
        while not self._stopping.is_set():
            code = await self._run_once(worker)
            if self._stopping.is_set():
                if code is None:
                    return True
                level = logging.INFO if code == 0 else logging.ERROR
                log.log(
                    level, "worker %d (pid %d) stopped: %s", worker.index, worker.pid, _ending(code)
                )
                return code == 0
            now = time.monotonic()
            worker.died_at = now
            served_for = None if worker.serving_since is None else now - worker.serving_since
            why = _ending(code) if code is not None else "could not be started"
            if worker.last_words and (code is None or code >= 0):  # not for a kill
                why += f": {worker.last_words[-1]}"
            if served_for is None:
                window = worker.start_failures
                window.append(now)
                while window and now - window[0] > START_WINDOW_S:
                    window.popleft()
                if len(window) >= START_FAILURES:
                    log.error(
                        "giving up: worker %d failed to start %d times within %.0fs (last: %s);"
                        " stopping the other workers",
                        worker.index,
                        len(window),
                        START_WINDOW_S,
                        why,
                    )
                    self._gave_up = True
                    self._stop(None)
                    return False
            if served_for is not None and served_for >= STABLE_S:
                worker.failures_in_a_row = 0
            worker.failures_in_a_row += 1
            delay = min(BACKOFF_FIRST_S * 2 ** (worker.failures_in_a_row - 1), BACKOFF_MAX_S)
            if served_for is None:
                what = f"failed to start ({len(worker.start_failures)} of {START_FAILURES})"
            else:
                what = f"died after serving {served_for:.1f}s"
            log.error(
                "worker %d (pid %d) %s: %s; restarting it in %.1fs",
                worker.index,
                worker.pid,
                what,
                why,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if not self._stopping.is_set():
                self.restarts += 1
                self._broadcast()
        return True

    async def _run_once(self, worker: _Worker) -> int | None:
        """Start the worker and wait for it to exit; its exit code (None: never started)."""
        worker.serving_since = None
        worker.said_serving.clear()
        worker.last_words.clear()
        argv = [sys.executable, "-m", "gateway", *self._argv, "--worker-index", str(worker.index)]
        assert self._starting is not None
        async with self._starting:  # one at a time: two interleaved would mix up their masks
            process = await self._start(worker, argv)
        if process is None:
            return None
        worker.process = process
        worker.started_at = time.monotonic()
        assert process.stdout is not None and process.stderr is not None
        worker.relays = [
            asyncio.create_task(self._relay(worker, process.stdout, stderr=False)),
            asyncio.create_task(self._relay(worker, process.stderr, stderr=True)),
        ]
        log.info("worker %d started (pid %d)", worker.index, process.pid)
        exited = asyncio.ensure_future(process.wait())
        said = asyncio.ensure_future(worker.said_serving.wait())
        done, _ = await asyncio.wait(
            {exited, said}, timeout=START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        said.cancel()
        if not done:
            log.error(
                "worker %d (pid %d) not serving %.0fs after it was started: killing it",
                worker.index,
                process.pid,
                START_TIMEOUT_S,
            )
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        code = await exited
        await asyncio.wait(worker.relays, timeout=1.0)  # its last words, before its ending
        if worker.link is not None:
            worker.link.close()
            worker.link = None
            self._broadcast()
        return code

    async def _start(self, worker: _Worker, argv: list[str]) -> asyncio.subprocess.Process | None:
        """Start a worker process with the forwarded signals blocked (a child inherits its
        parent's signal mask): it unblocks them once it can honour them, so a SIGTERM that
        arrives while it is still importing stops it cleanly instead of killing it."""
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        try:
            return await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                limit=LINE_LIMIT,
            )
        except OSError as exc:
            worker.last_words.append(f"{exc.strerror or exc}")
            return None
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    async def _hear(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A worker's connection: "serving INDEX PID", then open for as long as it serves."""
        worker = None
        with contextlib.suppress(OSError, ValueError, TimeoutError):
            fields = (await asyncio.wait_for(reader.readline(), 10)).split()
            if len(fields) == 3 and fields[0] == b"serving":
                index, pid = int(fields[1]), int(fields[2])
                if 0 <= index < len(self._workers) and self._workers[index].pid == pid:
                    worker = self._workers[index]
        if worker is None or worker.process is None or worker.process.returncode is not None:
            writer.close()
            return
        now = time.monotonic()
        worker.link, worker.serving_since = writer, now
        worker.said_serving.set()
        again = ""
        if worker.died_at is not None:
            again = f", {now - worker.died_at:.2f}s after its predecessor exited"
        log.info(
            "worker %d (pid %d) serving, %.2fs after it was started%s",
            worker.index,
            worker.pid,
            now - worker.started_at,
            again,
        )
        self._broadcast()
        with contextlib.suppress(OSError):
            await reader.read()  # nothing more is said: this ends when the worker does
        if worker.link is writer:
            worker.link = None
            self._broadcast()
        writer.close()

    def _broadcast(self) -> None:
        """Tell every serving worker how many serve (for its health and metrics)."""
        linked = [worker.link for worker in self._workers if worker.link is not None]
        message = f"workers {len(linked)} {self._configured} {self.restarts}\n".encode()
        for link in linked:
            if not link.is_closing():
                link.write(message)

    async def _relay(self, worker: _Worker, stream: asyncio.StreamReader, stderr: bool) -> None:
        """Write each line of the worker's output on our stderr, marked with its index."""
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # longer than LINE_LIMIT: left out (readline dropped it)
                line = b"(a line longer than %d bytes, left out)\n" % LINE_LIMIT
            if not line:
                return
            text = line.decode(errors="replace").rstrip("\r\n")
            entry = _json_object(text)
            if stderr and _says_why(text, entry):
                worker.last_words.append(str(entry.get("message") if entry else text))
            if not self._json_lines:
                out = f"[worker {worker.index}] {text}"
            elif entry is not None:
                out = json.dumps({**entry, "worker": worker.index}, ensure_ascii=False)
            else:  # a line not written by its logger (an error printed, a traceback)
                stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
                severity = "ERROR" if stderr else "INFO"
                line_entry = {"time": stamp, "severity": severity, "logger": "opsgate.worker"}
                out = json.dumps(
                    {**line_entry, "message": text, "worker": worker.index}, ensure_ascii=False
                )
            sys.stderr.write(out + "\n")
            sys.stderr.flush()


# A line of the text log format below ERROR: not why a worker ended.
_ROUTINE = re.compile(r"\d{4}-\d\d-\d\d \S+ (DEBUG|INFO|WARNING) ")


def _says_why(text: str, entry: dict[str, object] | None) -> bool:
    """Whether a line of a worker's stderr may say why it ended: a log record of an error, or
    anything not written by its logger (an error printed at exit, a traceback)."""
    if entry is not None:
        return entry.get("severity") in ("ERROR", "CRITICAL")
    return bool(text) and not _ROUTINE.match(text)


def _json_object(text: str) -> dict[str, object] | None:
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _ending(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"
