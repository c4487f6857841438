"""Real processes: `python -m gateway serve` and `python -m gateway upstream`, watched and stopped.

Each process's stderr is read on a thread (JSON log lines for the gateway); the address it
listens on comes from its own "listening on" line; RSS comes from /proc. Processes are stopped
by their own pid only.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from hardening.env import REPO
from hardening.ledger import LogReport, judge_stderr

_LISTENING = re.compile(r"(?<!door )listening on (\S+?):(\d+)")
_REST_LISTENING = re.compile(r"REST/JSON door listening on (\S+?):(\d+)")


class Process:
    """One child process with its stderr collected."""

    def __init__(self, args: list[str], label: str) -> None:
        self.label = label
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRPC_VERBOSITY": "ERROR"}
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "gateway", *args],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env=env,
        )
        self.lines: list[str] = []
        self._listening = threading.Event()
        self.address: str | None = None
        self.rest_address: str | None = None
        self._reader = threading.Thread(target=self._read, name=f"{label}-stderr", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.lines.append(line)
            rest = _REST_LISTENING.search(line)
            if rest:
                self.rest_address = f"{_host(rest.group(1))}:{rest.group(2)}"
                continue
            if self.address is None:
                match = _LISTENING.search(line)
                if match:
                    host = match.group(1)
                    host = "127.0.0.1" if host in ("0.0.0.0", "", "[::]") else host
                    self.address = f"{host}:{match.group(2)}"
                    self._listening.set()

    def wait_listening(self, timeout: float = 30.0) -> str:
        if not self._listening.wait(timeout) or self.address is None:
            tail = "".join(self.lines[-20:])
            self.kill()
            raise RuntimeError(f"{self.label} did not start: {tail}")
        return self.address

    def alive(self) -> bool:
        return self.popen.poll() is None

    def terminate(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; the exit code (None if it had to be killed)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        self._reader.join(5)
        return self.popen.returncode

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)

    def rss_kib(self) -> int | None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        return int(match.group(1)) if match else None

    def logs(self) -> LogReport:
        return judge_stderr(list(self.lines))


def _host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "[::]") else host


def gateway_process(config: Path) -> Process:
    process = Process(["serve", "--config", str(config)], "gateway")
    process.wait_listening()
    return process


def upstream_process(port: int) -> Process:
    process = Process(["upstream", "--listen", f"127.0.0.1:{port}"], "upstream")
    process.wait_listening()
    return process


def wait_port_free(port: int, timeout: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            # As servers bind: connections of the dead process in TIME_WAIT do not count.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
                return
            except OSError:
                time.sleep(0.05)
