"""What /proc says about the benchmarked children: CPU time, RSS, descendants.

Every server a benchmark talks to runs as its own process, started and stopped by its own PID
(never by name) through gateway.testing.processes, the harness tests and hardening use too;
`Service` is that harness's ServerProcess. CPU time is read from /proc/PID/stat (user + system,
all threads, in clock ticks) and summed over the process tree, so a supervisor with worker
children counts as one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.testing.ports import free_port
from gateway.testing.processes import (
    ProcessError,
    ServerProcess,
    child_env,
    descendants,
    proc_stat,
    python_module,
    rss_bytes,
)

REPO = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# The names the phases use for the shared harness's parts.
Service = ServerProcess
ServiceError = ProcessError

__all__ = [
    "CLOCK_TICKS",
    "REPO",
    "CpuWindow",
    "Service",
    "ServiceError",
    "child_env",
    "cpu_ticks",
    "descendants",
    "free_port",
    "peak_rss_bytes",
    "python_module",
    "rss_bytes",
    "tree_cpu_seconds",
]


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(user, system) clock ticks of one process (all its threads); zeros if it is gone."""
    fields = proc_stat(pid)
    if fields is None:
        return 0, 0
    return int(fields[11]), int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def tree_cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds used so far by `pid` and its live descendants."""
    user = system = 0
    for p in descendants(pid):
        u, s = cpu_ticks(p)
        user += u
        system += s
    return user / CLOCK_TICKS, system / CLOCK_TICKS


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
