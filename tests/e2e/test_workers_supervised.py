"""`opsgate serve --workers 2` supervised, through the real command with the gRPC, REST and
metrics doors on: both workers serve every door; a worker killed under load is logged and
restarted while calls go on; a worker that cannot bind is retried with backoff until the
supervisor gives up, exits non-zero and leaves no process behind.

Which worker served a call is read from its request id (x-request-id in gRPC's trailers, the
X-Request-Id header over REST), whose first 16 hex digits are drawn once per process.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.observability.workers import WORKERS_KEY
from gateway.reference_upstream import ReferenceUpstream
from gateway.testing.loop import LoopThread
from gateway.testing.ports import free_port_run, free_ports, taken_port
from gateway.testing.processes import ServerProcess, descendants, gateway_argv, proc_stat
from gateway.testing.upstream import running_upstream
from tests.support.cli import opsgate
from tests.support.stack import Identity

NAME = "projects/acme/locations/us-central1/operations/supervised"
PREFIX = 16  # hex digits of a request id drawn once per process (gateway.call)
POLICY = """
allow:
  - resource: projects/acme
    bindings:
      - role: roles/contactcenterinsights.viewer
        members: [allAuthenticatedUsers]
"""
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Ports:
    grpc: int
    rest: int
    metrics: int  # worker K serves metrics on this + K

    @classmethod
    def free(cls) -> Ports:
        grpc_port, rest_port = free_ports(2)
        # While worker 1 restarts its metrics port is free, and the load's hundreds of
        # connections a second would otherwise now and then take it as a client port.
        return cls(grpc_port, rest_port, free_port_run(2, below_client_ports=True))


@dataclass
class Gateway:
    process: ServerProcess
    ports: Ports
    token: str

    def log(self) -> str:
        return "".join(self.process.lines)

    def worker_pid(self, index: int) -> int | None:
        """The pid of worker `index` now (read from the supervisor's children's argv)."""
        for pid in descendants(self.process.pid)[1:]:
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if (
                b"--worker-index" in argv
                and argv[argv.index(b"--worker-index") + 1] == b"%d" % index
            ):
                return pid
        return None


@pytest.fixture
def upstream(loop: LoopThread) -> Iterator[ReferenceUpstream]:
    with running_upstream(loop, seed=False) as upstream:
        upstream.store.create(NAME)
        yield upstream


def _config(tmp_path: Path, identity: Identity, upstream: ReferenceUpstream, ports: Ports) -> Path:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)  # with the built-in profile: its REST paths are served
    config = tmp_path / "opsgate.yaml"
    config.write_text(
        f"listen: 127.0.0.1:{ports.grpc}\n"
        f"upstream: {{target: {upstream.address}}}\n"
        f"rest: {{listen: 127.0.0.1:{ports.rest}}}\n"
        f"metrics: {{listen: 127.0.0.1:{ports.metrics}}}\n"
        f"audit: {{sink: file, file: {{path: {tmp_path / 'audit.log'}, fsync: never}}}}\n"
        "shutdown_grace_s: 5\n" + identity.issuer_yaml() + identity.policy_yaml(policy)
    )
    return config


def _start(config: Path) -> ServerProcess:
    return ServerProcess(gateway_argv(config, "--workers", "2"), name="supervisor")


@contextmanager
def _serving(tmp_path: Path, identity: Identity, upstream: ReferenceUpstream) -> Iterator[Gateway]:
    """Two workers, both serving; on the way out SIGTERM drains them and the supervisor
    exits 0, leaving no process behind."""
    ports = Ports.free()
    process = _start(_config(tmp_path, identity, upstream, ports))
    gateway = Gateway(process, ports, identity.token())
    try:
        _wait_for(lambda: _counts(ports.metrics) == (2, 2), 60, "both workers serving", gateway)
        yield gateway
        tree = descendants(process.pid)
        assert process.stop(30) == 0, gateway.log()
        assert not [pid for pid in tree if proc_stat(pid) is not None], "left behind"
        for index in (0, 1):
            assert re.search(
                rf"worker {index} \(pid \d+\) stopped: exited with code 0", gateway.log()
            )
    finally:
        process.kill()


def _wait_for(ready: object, timeout: float, what: str, gateway: Gateway) -> None:
    assert callable(ready)
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"never {what}:\n{gateway.process.log_tail(40)}"
        time.sleep(0.02)


def _metrics(port: int) -> dict[str, float]:
    """The unlabelled samples of a worker's metrics; {} if it does not answer."""
    try:
        with _OPENER.open(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
            text = reply.read().decode()
    except OSError:
        return {}
    samples = (line.split(" ") for line in text.splitlines() if not line.startswith("#"))
    return {fields[0]: float(fields[1]) for fields in samples if len(fields) == 2}


def _counts(port: int) -> tuple[int, int] | None:
    """(serving, configured) as worker at metrics `port` says; None if it does not answer."""
    found = _metrics(port)
    if "opsgate_workers_serving" not in found:
        return None
    return int(found["opsgate_workers_serving"]), int(found["opsgate_workers_configured"])


def _grpc_call(port: int, token: str, timeout: float = 5) -> str:
    """GetOperation on a connection of its own; the serving worker's request-id prefix."""
    # A subchannel pool of its own: channels to one address otherwise share a connection (and,
    # once it broke, its last error) while any of them is open.
    options = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        stub = operations_pb2_grpc.OperationsStub(channel)
        _, call = stub.GetOperation.with_call(
            operations_pb2.GetOperationRequest(name=NAME),
            metadata=[("authorization", f"Bearer {token}")],
            timeout=timeout,
        )
    return dict(call.trailing_metadata())["x-request-id"][:PREFIX]


def _rest_call(port: int, token: str, timeout: float = 5) -> str:
    """GET over REST on a connection of its own; the serving worker's request-id prefix."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/{NAME}", headers={"Authorization": f"Bearer {token}"}
    )
    with _OPENER.open(request, timeout=timeout) as reply:
        assert reply.status == 200
        return str(reply.headers["X-Request-Id"])[:PREFIX]


def _health(port: int) -> tuple[str, str]:
    """Readiness as one worker answers it, and its count of workers serving ("1/2")."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply, call = health_pb2_grpc.HealthStub(channel).Check.with_call(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        except grpc.RpcError as err:
            return err.code().name, ""
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return status, dict(call.trailing_metadata())[WORKERS_KEY]


def test_every_door_is_served_by_both_workers_and_sigterm_drains_them(
    tmp_path: Path, identity: Identity, upstream: ReferenceUpstream
) -> None:
    with _serving(tmp_path, identity, upstream) as gateway:
        ports, token = gateway.ports, gateway.token
        # A connection per call: SO_REUSEPORT hands each to one of the workers.
        by_grpc = {_grpc_call(ports.grpc, token) for _ in range(40)}
        by_rest = {_rest_call(ports.rest, token) for _ in range(40)}
        assert len(by_grpc) == 2 and by_rest == by_grpc  # two processes, each on both doors
        for port in (ports.metrics, ports.metrics + 1):
            found = _metrics(port)
            assert found["opsgate_workers_serving"] == found["opsgate_workers_configured"] == 2
            assert found["opsgate_worker_restarts_total"] == 0
        assert _health(ports.grpc) == ("SERVING", "2/2")
        probe = opsgate("health", "--address", f"127.0.0.1:{ports.grpc}")
        assert probe.returncode == 0 and "SERVING" in probe.stdout
        assert "(2/2 workers serving)" in probe.stdout


@dataclass
class Outcome:
    door: str
    started: float
    ended: float
    worker: str | None  # request-id prefix when it succeeded
    error: str | None


class Load:
    """Client threads calling without a pause, each call on a connection of its own."""

    def __init__(self, gateway: Gateway, grpc_threads: int = 3, rest_threads: int = 1) -> None:
        self._gateway = gateway
        self._stop = threading.Event()
        self.outcomes: list[Outcome] = []
        doors = ["grpc"] * grpc_threads + ["rest"] * rest_threads
        self._threads = [threading.Thread(target=self._run, args=(door,)) for door in doors]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    @property
    def threads(self) -> int:
        return len(self._threads)

    def _run(self, door: str) -> None:
        ports, token = self._gateway.ports, self._gateway.token
        while not self._stop.is_set():
            started = time.monotonic()
            worker = error = None
            try:
                if door == "grpc":
                    worker = _grpc_call(ports.grpc, token)
                else:
                    worker = _rest_call(ports.rest, token)
            except grpc.RpcError as err:
                error = f"{err.code().name}: {err.details()}"
            except (OSError, urllib.error.URLError) as err:
                error = repr(err)
            self.outcomes.append(Outcome(door, started, time.monotonic(), worker, error))

    def workers_since(self, moment: float) -> set[str]:
        return {o.worker for o in list(self.outcomes) if o.worker and o.started > moment}


def test_a_worker_killed_under_load_is_restarted_and_calls_go_on(
    tmp_path: Path, identity: Identity, upstream: ReferenceUpstream
) -> None:
    with _serving(tmp_path, identity, upstream) as gateway, Load(gateway) as load:
        ports = gateway.ports
        began = time.monotonic()
        _wait_for(lambda: len(load.workers_since(began)) == 2, 30, "both workers called", gateway)
        victim = gateway.worker_pid(1)
        assert victim is not None
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        # Worker 0 says one serves, and answers health with that (a partial set is SERVING).
        _wait_for(lambda: _counts(ports.metrics) == (1, 2), 10, "down to one serving", gateway)
        seen_down = time.monotonic()
        # Health while one serves, asked until both serve again.
        answers = [_health(ports.grpc)]
        while _counts(ports.metrics) != (2, 2):
            assert time.monotonic() - killed < 60, gateway.process.log_tail(40)
            answers.append(_health(ports.grpc))
        restart_s = time.monotonic() - killed
        restarts = _metrics(ports.metrics)["opsgate_worker_restarts_total"]
        assert restarts == 1, gateway.process.log_tail(60)
        # The new worker 1 takes calls on both doors (a third request-id prefix).
        back = time.monotonic()
        _wait_for(lambda: len(load.workers_since(back)) == 2, 30, "the new worker called", gateway)
        new_worker = gateway.worker_pid(1)
        time.sleep(0.5)
    outcomes = load.outcomes
    failed = [o for o in outcomes if o.error is not None]
    prefixes = {o.worker for o in outcomes if o.worker}
    print(
        f"\nworker restart (kill -9 -> the supervisor counts it serving again): {restart_s:.2f}s;"
        f" the drop seen {seen_down - killed:.3f}s after the kill, {restarts:.0f} restart(s);"
        f" {len(outcomes)} calls"
        f" ({sum(o.door == 'rest' for o in outcomes)} REST) by {load.threads} threads,"
        f" health meanwhile {dict(Counter(answers))};"
        f" {len(failed)} failed (in flight on the killed worker): "
        + "; ".join(
            f"{o.door} {o.started - killed:+.3f}s..{o.ended - killed:+.3f}s {o.error}"
            for o in failed
        )
    )
    # Worker 0 said "1/2" until the new worker was counted, SERVING every time: a partial set
    # is ready. (The new worker answers for itself from the moment it listens: NOT_SERVING
    # until its keys are in, an instant here.)
    assert ("SERVING", "1/2") in answers, Counter(answers)
    assert all(status == "SERVING" for status, count in answers if count == "1/2"), answers
    assert len(prefixes) == 3  # worker 0, the killed worker 1, the new worker 1
    # Only calls on the killed worker failed: each was under way when it was killed, or
    # reached its sockets in the moment before the kernel closed them (before the supervisor
    # saw it exit, and the test saw the count drop). Every other call, and every one since,
    # succeeded.
    assert all(killed <= o.ended and o.started <= seen_down for o in failed), failed
    log = gateway.log()
    assert f"worker 1 (pid {victim}) died after serving" in log
    assert "killed by SIGKILL; restarting it in 0.1s" in log
    assert re.search(
        rf"worker 1 \(pid {new_worker}\) serving, .* after its predecessor exited", log
    )


def test_a_worker_that_cannot_bind_is_retried_then_the_supervisor_gives_up(
    tmp_path: Path, identity: Identity, upstream: ReferenceUpstream
) -> None:
    with taken_port() as rest_port:  # held without SO_REUSEPORT
        ports = dataclasses.replace(Ports.free(), rest=rest_port)
        process = _start(_config(tmp_path, identity, upstream, ports))
        started, seen = time.monotonic(), set()
        try:
            while process.alive():
                assert time.monotonic() - started < 120, process.log_tail(40)
                seen.update(descendants(process.pid)[1:])
                time.sleep(0.05)
        finally:
            process.kill()
        code, gave_up_s = process.process.returncode, time.monotonic() - started
    log = "".join(process.lines)
    print(f"\ngave up after {gave_up_s:.1f}s, exit code {code}, {len(seen)} worker processes")
    assert code == 1, log
    assert not [pid for pid in seen if proc_stat(pid) is not None]  # no worker left behind
    cannot = f"cannot listen on 127.0.0.1:{ports.rest}: Address already in use"
    assert re.search(
        rf"worker 0 \(pid \d+\) failed to start \(1 of 5\): exited with code 2: .*{cannot}", log
    )
    delays = [
        float(m)
        for m in re.findall(
            r"worker 0 \(pid \d+\) failed to start.*restarting it in ([\d.]+)s", log
        )
    ]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]  # doubling
    assert re.search(r"giving up: worker \d failed to start 5 times within 60s", log)
    # What the worker said, relayed by the supervisor marked with its index.
    said = rf'"message": "opsgate: error: [^"]*{cannot}", "worker": 0'
    assert re.search(said, log)


def test_a_partial_set_serves_until_the_supervisor_gives_up_and_drains_it(
    tmp_path: Path, identity: Identity, upstream: ReferenceUpstream
) -> None:
    ports = Ports.free()
    with taken_port(ports.metrics + 1):  # worker 1's own metrics port: only worker 1 fails
        process = _start(_config(tmp_path, identity, upstream, ports))
        gateway = Gateway(process, ports, identity.token())
        try:
            # Readiness follows within its 0.1 s poll: a partial set is SERVING.
            _wait_for(lambda: _health(ports.grpc) == ("SERVING", "1/2"), 60, "ready", gateway)
            assert len({_grpc_call(ports.grpc, gateway.token) for _ in range(10)}) == 1
            assert len({_rest_call(ports.rest, gateway.token) for _ in range(10)}) == 1
            tree = set(descendants(process.pid))
            while process.alive():
                assert process.process.wait(120) is not None
        finally:
            process.kill()
    log = gateway.log()
    assert process.process.returncode == 1, log
    assert not [pid for pid in tree if proc_stat(pid) is not None]
    assert "key 'metrics.listen': cannot listen on" in log
    assert re.search(r"giving up: worker 1 failed to start 5 times", log)
    assert re.search(r"worker 0 \(pid \d+\) stopped: exited with code 0", log)  # drained
