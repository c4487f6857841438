"""`opsgate serve --workers N`: N gateway processes sharing one port (SO_REUSEPORT).

Each worker is a full gateway with its own caches, its own audit file (PATH gets a `-wK`
suffix before its extension, so no two processes rotate one file) and its own metrics port
(metrics.listen's port + K). The supervisor forwards SIGTERM/SIGINT/SIGHUP and exits 0 only
when every worker drained and exited 0.
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from gateway.config import Settings
from gateway.configschema import OutputFile
from gateway.errors import ConfigError

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


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
    if workers > 1 and settings.listen.endswith(":0"):
        raise ConfigError("<flags>", "--workers", "needs a fixed listen port, not :0")
    if workers > 1 and settings.metrics is not None and settings.metrics.listen.endswith(":0"):
        raise ConfigError("<flags>", "--workers", "needs a fixed metrics port, not :0")


def supervise(argv: list[str], workers: int) -> int:
    """Start `workers` copies of this serve command as workers 0..N-1 and wait for them.

    They share a directory only this user can enter (removed when they are done), where each
    worker's Envoy door takes the access-log entries of calls it decided (envoy/handoff.py).
    """
    with tempfile.TemporaryDirectory(prefix="opsgate-workers-") as shared:
        return _supervise([*argv, "--workers-dir", shared], workers)


def _supervise(argv: list[str], workers: int) -> int:
    # The workers start with the forwarded signals blocked (a child inherits its parent's
    # signal mask) and unblock them once they can honour them: a SIGTERM that arrives while a
    # worker is still importing then stops it cleanly instead of killing it.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    try:
        children = [
            subprocess.Popen([sys.executable, "-m", "gateway", *argv, "--worker-index", str(index)])
            for index in range(workers)
        ]

        def forward(signum: int, _frame: object) -> None:
            for child in children:
                if child.poll() is None:
                    child.send_signal(signum)

        for signum in FORWARDED:
            signal.signal(signum, forward)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    codes = [child.wait() for child in children]
    return 0 if all(code == 0 for code in codes) else 1
