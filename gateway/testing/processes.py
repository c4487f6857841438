"""Servers as child processes: `python -m gateway serve` and `python -m gateway upstream`.

Each child is started with this interpreter, watched until ready (its own "listening on" line,
or a known address accepting connections, optionally gRPC health SERVING), and stopped by its
own PID only (SIGTERM, then SIGKILL of its process tree if it hangs). Its output is collected
in memory (stderr, read on a thread) or, for long runs whose output is large, written by the
child straight into a log file.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from gateway.errors import OpsgateError
from gateway.testing.ports import accepts

# The first "listening on" line that is not the REST door's is the gRPC address.
_LISTENING = re.compile(r"(?<!door )listening on (\S+?):(\d+)")
_REST_LISTENING = re.compile(r"REST/JSON door listening on (\S+?):(\d+)")
_WILDCARDS = ("0.0.0.0", "", "[::]")


class ProcessError(OpsgateError, RuntimeError):
    """A child did not start or answer; the message ends with the tail of its output."""

    reason = "PROCESS_FAILED"


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for every child: unbuffered output, gRPC's C core quiet."""
    env = dict(os.environ)
    env.setdefault("GRPC_VERBOSITY", "ERROR")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def python_module(module: str, *args: str) -> list[str]:
    """argv running `python -m module args` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (field 3 on); None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """`pid` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := proc_stat(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def rss_bytes(pid: int) -> int:
    """Resident set size of one process, 0 if it is gone."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def _dialable(host: str, port: str) -> str:
    return f"{'127.0.0.1' if host in _WILDCARDS else host}:{port}"


class ServerProcess:
    """One child server. `address` is known up front or learnt from its "listening on" line."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        address: str | None = None,
        log_path: Path | None = None,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self._address = address
        self.rest_address: str | None = None
        self.log_path = log_path
        self._lines: list[str] = []
        if log_path is not None:
            # The child writes its own log: no reader thread competing for CPU while measured.
            with log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    text=True,
                    cwd=cwd,
                    env=child_env(env),
                )
            self._reader: threading.Thread | None = None
        else:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                cwd=cwd,
                env=child_env(env),
            )
            self._reader = threading.Thread(target=self._read, name=f"{name}-stderr", daemon=True)
            self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> str:
        """Where it serves gRPC: as given, or from its "listening on" line (after wait_ready)."""
        if self._address is None:
            raise self.fail("no address yet: it has not said where it listens")
        return self._address

    @property
    def lines(self) -> list[str]:
        """Its output so far, one line each (stderr; with a log file, stdout and stderr)."""
        if self.log_path is None:
            return self._lines
        try:
            return self.log_path.read_text(errors="replace").splitlines(keepends=True)
        except OSError:
            return []

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._lines.append(line)
            self._learn(line)

    def _learn(self, line: str) -> None:
        rest = _REST_LISTENING.search(line)
        if rest:
            self.rest_address = _dialable(rest.group(1), rest.group(2))
        elif self._address is None and (match := _LISTENING.search(line)):
            self._address = _dialable(match.group(1), match.group(2))

    def log_tail(self, lines: int = 20) -> str:
        return "".join(self.lines[-lines:])

    def fail(self, problem: str) -> ProcessError:
        return ProcessError(f"{self.name}: {problem}\n--- its output ---\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout: float = 60.0, *, health: bool = False) -> str:
        """Until it listens (and, with `health`, gRPC health says SERVING); its address.

        A child that exits or is not ready in time is killed, and ProcessError says why.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise self.fail(f"exited with {self.process.returncode} while starting")
            if self.log_path is not None and self._address is None:
                for line in self.lines:
                    self._learn(line)
            address = self._address
            if address is not None and accepts(address) and (not health or _serving(address)):
                return address
            time.sleep(0.05)
        self.kill()
        raise self.fail(f"not ready on {self._address or 'any address'} after {timeout:.0f}s")

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (a supervisor forwards it to its workers) and wait; the exit code, or None
        if it hung and its process tree had to be killed."""
        if self.alive():
            tree = descendants(self.pid)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                for pid in reversed(tree):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.process.wait(5)
                return None
        if self._reader is not None:
            self._reader.join(5)
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL, no drain: a crash, or a child stuck where SIGTERM cannot reach it."""
        if self.alive():
            self.process.kill()
            self.process.wait(10)


def _serving(address: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1.0
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def gateway_argv(config: Path, *args: str, python: Sequence[str] = (sys.executable,)) -> list[str]:
    """argv of `python -m gateway serve --config CONFIG ARGS`; `python` may wrap the interpreter
    (`python -m cProfile -o OUT`)."""
    return [*python, "-m", "gateway", "serve", "--config", str(config), *args]


def upstream_argv(listen: str = "127.0.0.1:0") -> list[str]:
    """argv of `python -m gateway upstream --listen LISTEN` (the seeded reference upstream)."""
    return python_module("gateway", "upstream", "--listen", listen)


def gateway_process(
    config: Path,
    *args: str,
    address: str | None = None,
    log_path: Path | None = None,
    health: bool = False,
    timeout: float = 60.0,
) -> ServerProcess:
    """The gateway on CONFIG, ready. `address` is where the config says it listens (None:
    learnt from its log)."""
    argv = gateway_argv(config, *args)
    process = ServerProcess(argv, name="gateway", address=address, log_path=log_path)
    process.wait_ready(timeout, health=health)
    return process


def upstream_process(
    listen: str = "127.0.0.1:0", *, log_path: Path | None = None, timeout: float = 60.0
) -> ServerProcess:
    """The reference upstream on LISTEN (port 0: any), ready and SERVING."""
    address = None if listen.endswith(":0") else listen
    process = ServerProcess(
        upstream_argv(listen), name="upstream", address=address, log_path=log_path
    )
    process.wait_ready(timeout, health=True)
    return process
