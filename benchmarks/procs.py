"""Child processes of the harness, and what /proc says about them: CPU time, RSS, descendants.

Every server a benchmark talks to runs as its own process, started here and stopped by its own
PID (never by name). CPU time is read from /proc/PID/stat (user + system, all threads, in clock
ticks) and summed over the process tree, so a supervisor with worker children counts as one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

REPO = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def child_env() -> dict[str, str]:
    """The environment for every child: the repo importable, gRPC quiet."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("GRPC_VERBOSITY", "ERROR")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1 (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(user, system) clock ticks of one process (all its threads); zeros if it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0, 0
    return int(fields[11]), int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def descendants(pid: int) -> list[int]:
    """`pid` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def tree_cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds used so far by `pid` and its live descendants."""
    user = system = 0
    for p in descendants(pid):
        u, s = cpu_ticks(p)
        user += u
        system += s
    return user / CLOCK_TICKS, system / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of one process, 0 if it is gone."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * PAGE_BYTES


def peak_rss_bytes(pid: int) -> int:
    """VmHWM: the highest RSS the process has had."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class CpuWindow:
    """CPU seconds of some process trees between start() and stop()."""

    pids: Sequence[int]
    started: dict[int, tuple[float, float]] = field(default_factory=dict)
    used: dict[int, float] = field(default_factory=dict)  # user + system
    system: dict[int, float] = field(default_factory=dict)

    def start(self) -> None:
        self.started = {pid: tree_cpu_seconds(pid) for pid in self.pids}

    def stop(self) -> dict[int, float]:
        for pid in self.pids:
            user, system = tree_cpu_seconds(pid)
            self.used[pid] = user + system - sum(self.started[pid])
            self.system[pid] = system - self.started[pid][1]
        return self.used


class ServiceError(RuntimeError):
    """A child did not start or answer; the message ends with the tail of its log."""


@dataclass
class Service:
    """One child process: its command, log file and the address it serves."""

    name: str
    argv: list[str]
    log_path: Path
    address: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was not started"
        return self.process.pid

    def start(self) -> None:
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
                env=child_env(),
            )
        finally:
            log.close()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def fail(self, problem: str) -> ServiceError:
        return ServiceError(f"{self.name}: {problem}\n--- {self.log_path} ---\n{self.log_tail()}")

    def wait_ready(
        self, timeout_s: float = 60.0, health: bool = False, address: str | None = None
    ) -> None:
        """Until the port accepts connections (and, with `health`, gRPC health says SERVING).

        `address` waits for another listener of the same process (e.g. its REST door).
        """
        where = address or self.address
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise self.fail(f"exited with {self.process.returncode} while starting")
            if _accepts(where) and (not health or _serving(where)):
                return
            time.sleep(0.05)
        raise self.fail(f"not ready on {where} after {timeout_s:.0f}s")

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM this process (a supervisor forwards it to its workers); SIGKILL if it hangs."""
        process = self.process
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        tree = descendants(process.pid)
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            for pid in reversed(tree):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return process.wait(5)


def _accepts(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def _serving(address: str) -> bool:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1.0
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def python_module(module: str, *args: str) -> list[str]:
    """argv running `python -m module args` with the harness's own interpreter."""
    return [sys.executable, "-m", module, *args]


@contextlib.contextmanager
def services() -> Iterator[list[Service]]:
    """A list to add started services to; every one is stopped on the way out, last first."""
    started: list[Service] = []
    try:
        yield started
    finally:
        for service in reversed(started):
            with contextlib.suppress(Exception):
                service.stop()
