"""The `opsgate` command as users run it: serve with drain on SIGTERM, config errors, the demo."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2

from gateway.reference_upstream import ReferenceUpstream, start_reference_upstream
from gateway.testing.loop import LoopThread
from gateway.testing.ports import free_port
from tests.support.bearer import with_bearer
from tests.support.stack import FULL_PROFILE, OPEN_POLICY, Identity

NAME = "projects/acme/locations/us-central1/operations/drain"


def _opsgate(*args: str, **kwargs) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        **kwargs,
    )


@contextmanager
def _upstream(loop: LoopThread) -> Iterator[ReferenceUpstream]:
    upstream = loop.run(start_reference_upstream("127.0.0.1:0", seed=False))
    try:
        yield upstream
    finally:
        loop.run(upstream.stop(0))


def _listening_address(process: subprocess.Popen[str]) -> str:
    assert process.stderr is not None
    deadline = time.monotonic() + 20
    seen = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        seen.append(line)
        match = re.search(r"opsgate listening on (\S+),", line)
        if match:
            return match.group(1)
        if not line and process.poll() is not None:
            break
    raise AssertionError(f"gateway did not start: {''.join(seen)}")


def _wait_request(seconds: int) -> operations_pb2.WaitOperationRequest:
    return operations_pb2.WaitOperationRequest(
        name=NAME, timeout=duration_pb2.Duration(seconds=seconds)
    )


@contextmanager
def _serving_a_wait(
    loop: LoopThread, tmp_path: Path, identity: Identity, finish_after: float, extra: str = ""
) -> Iterator[tuple[subprocess.Popen[str], ReferenceUpstream, operations_pb2_grpc.OperationsStub]]:
    """`opsgate serve` in a subprocess in front of an upstream holding one operation NAME."""
    with _upstream(loop) as upstream:
        upstream.store.create(NAME, finish_after=finish_after)
        config = tmp_path / "opsgate.yaml"
        config.write_text(
            f"listen: 127.0.0.1:0\n{extra}upstream:\n  target: {upstream.address}\n"
            + identity.issuer_yaml()
            + identity.policy_yaml()
        )
        process = _opsgate("serve", "--config", str(config))
        try:
            with grpc.insecure_channel(_listening_address(process)) as channel:
                stub = operations_pb2_grpc.OperationsStub(with_bearer(channel, identity.token()))
                yield process, upstream, stub
        finally:
            process.kill()
            process.wait()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_signal_drains_in_flight_calls_then_exits_zero(
    loop: LoopThread, tmp_path: Path, identity: Identity, signum: int
) -> None:
    with _serving_a_wait(loop, tmp_path, identity, finish_after=1.5) as (process, upstream, stub):
        in_flight = stub.WaitOperation.future(_wait_request(30), timeout=30)
        deadline = time.monotonic() + 10
        while not [c for c in upstream.calls() if c.name == NAME]:
            assert time.monotonic() < deadline, "the wait never reached the upstream"
            time.sleep(0.02)
        process.send_signal(signum)
        assert in_flight.result().done  # finished normally during the drain
        assert process.wait(20) == 0


def test_grace_period_bounds_the_drain(
    loop: LoopThread, tmp_path: Path, identity: Identity
) -> None:
    grace = "shutdown_grace_s: 0.5\n"
    with _serving_a_wait(loop, tmp_path, identity, 3600, grace) as (process, _, stub):
        in_flight = stub.WaitOperation.future(_wait_request(600), timeout=60)
        time.sleep(0.5)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
        assert time.monotonic() - started < 10
        with pytest.raises(grpc.RpcError):
            in_flight.result()


def test_config_error_exits_2_naming_file_line_and_key(tmp_path: Path) -> None:
    config = tmp_path / "opsgate.yaml"
    config.write_text("upstream:\n  target: a:1\nlisten: 127.0.0.1:0\nshutdown_grace: 3\n")
    process = _opsgate("serve", "--config", str(config))
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 2
    expected = "key 'shutdown_grace': unknown key (did you mean 'shutdown_grace_s'?)"
    assert f"{config}:4: {expected}" in stderr


def test_port_in_use_is_a_clear_error(loop: LoopThread, tmp_path: Path, identity: Identity) -> None:
    config = tmp_path / "opsgate.yaml"
    with _upstream(loop) as upstream:
        config.write_text(
            f"upstream:\n  target: {upstream.address}\n"
            + identity.issuer_yaml()
            + identity.policy_yaml()
        )
        process = _opsgate("serve", "--config", str(config), "--listen", upstream.address)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 2
    assert f"cannot listen on {upstream.address}" in stderr


@pytest.mark.parametrize("through", [(), ("--envoy",)], ids=["own-doors", "behind-envoy"])
def test_demo_runs_and_exits_zero(through: tuple[str, ...], tmp_path: Path) -> None:
    process = _opsgate("demo", *through, cwd=tmp_path)  # it leaves its audit trail there
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stdout + stderr
    assert stdout.splitlines()[-1] == "20 of 20 calls behaved as expected."
    for shown in (
        "NOT_FOUND",
        "INVALID_ARGUMENT",
        "UNIMPLEMENTED",
        "CREDENTIALS_MISSING",
        "ACCESS_TOKEN_EXPIRED",
        "JWT_TOKEN_INVALID",
        "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
        "alice@acme.example",
        "The audit trail: 22 records",
        "HTTP 403",
        "cloudaudit.googleapis.com%2Fdata_access",
        "IAM_PERMISSION_DENIED",
        "RESOURCE_NAME_INVALID",
    ):
        assert shown in stdout
    assert ("Envoy in front" in stdout) == bool(through)
    assert "X-Request-Id: -" not in stdout  # every REST answer names its audit record
    assert len((tmp_path / "opsgate-demo-audit.log").read_text().splitlines()) == 22
    # The auditor's questions: each command, run again where the demo ran, prints what the
    # demo showed under it.
    asked = re.findall(r"^\$ opsgate (audit query .*)\n((?:  .*\n)+)", stdout, re.MULTILINE)
    assert [command.split()[3:5] for command, _ in asked] == [
        ["--method", "CancelOperation"],
        ["--principal", "alice@acme.example"],
        ["--denied"],
    ]
    assert "ci-deployer@acme-prod.iam.gserv…  CancelOperation  yes" in asked[0][1]
    assert "denied by a deny rule on projects/acme-prod/locations/europe-west1" in asked[2][1]
    for command, shown in asked:
        again = subprocess.run(
            [sys.executable, "-m", "gateway", *command.split()],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert again.stdout == shown.replace("\n  ", "\n")[2:], again.stderr


def test_two_workers_share_the_port_and_drain(
    loop: LoopThread, tmp_path: Path, identity: Identity
) -> None:
    port = free_port()
    audit = tmp_path / "audit.log"
    with _upstream(loop) as upstream:
        upstream.store.create(NAME)
        config = tmp_path / "opsgate.yaml"
        config.write_text(
            f"listen: 127.0.0.1:{port}\nupstream:\n  target: {upstream.address}\n"
            + identity.issuer_yaml()
            + identity.policy_yaml()
            + f"audit:\n  sink: file\n  file:\n    path: {audit}\n"
        )
        process = _opsgate("serve", "--config", str(config), "--workers", "2")
        try:
            deadline = time.monotonic() + 20
            calls = 0
            while calls < 40:
                assert time.monotonic() < deadline, "the workers never answered"
                # A new channel per call, so SO_REUSEPORT spreads connections over both workers.
                with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                    stub = operations_pb2_grpc.OperationsStub(
                        with_bearer(channel, identity.token())
                    )
                    try:
                        stub.GetOperation(operations_pb2.GetOperationRequest(name=NAME), timeout=5)
                        calls += 1
                    except grpc.RpcError as err:
                        assert err.code() == grpc.StatusCode.UNAVAILABLE  # still starting
                        time.sleep(0.1)
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
        finally:
            process.kill()
            process.wait()
    per_worker = [tmp_path / "audit-w0.log", tmp_path / "audit-w1.log"]
    counts = [len(path.read_text().splitlines()) if path.exists() else 0 for path in per_worker]
    assert sum(counts) == calls  # every call recorded once, by the worker that served it


def test_workers_told_to_stop_while_they_start_exit_cleanly(
    loop: LoopThread, tmp_path: Path, identity: Identity
) -> None:
    # A SIGTERM forwarded while the workers were still importing killed them (exit -15), and
    # the supervisor exited 1; the workers now hold it until they can drain.
    port = free_port()
    with _upstream(loop) as upstream:
        config = tmp_path / "opsgate.yaml"
        config.write_text(
            f"listen: 127.0.0.1:{port}\nupstream:\n  target: {upstream.address}\n"
            + identity.issuer_yaml()
            + identity.policy_yaml()
        )
        process = _opsgate("serve", "--config", str(config), "--workers", "2")
        try:
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
            deadline = time.monotonic() + 20
            while len(children.read_text().split()) < 2:  # the supervisor has spawned both
                assert time.monotonic() < deadline, "the supervisor never started its workers"
                time.sleep(0.001)
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0, process.stderr.read() if process.stderr else ""
        finally:
            process.kill()
            process.wait()


def test_sighup_reloads_the_policy_and_health_names_the_version(
    loop: LoopThread, tmp_path: Path, identity: Identity
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(OPEN_POLICY)
    with _upstream(loop) as upstream:
        upstream.store.create(NAME)
        config = tmp_path / "opsgate.yaml"
        config.write_text(
            f"listen: 127.0.0.1:0\nupstream:\n  target: {upstream.address}\n"
            + identity.issuer_yaml()
            + f"authorization:\n  policy_file: {policy}\n  reload_interval_s: 0\n"
            + f"  profile_file: {FULL_PROFILE}\n"
        )
        process = _opsgate("serve", "--config", str(config))
        try:
            address = _listening_address(process)
            with grpc.insecure_channel(address) as channel:
                stub = operations_pb2_grpc.OperationsStub(with_bearer(channel, identity.token()))

                def get() -> grpc.StatusCode:
                    try:
                        stub.GetOperation(operations_pb2.GetOperationRequest(name=NAME), timeout=5)
                    except grpc.RpcError as err:
                        return err.code()
                    return grpc.StatusCode.OK

                def health() -> str:
                    probe = subprocess.run(
                        [sys.executable, "-m", "gateway", "health", "--address", address],
                        capture_output=True,
                        text=True,
                        timeout=30,
                    )
                    return probe.stdout

                assert get() == grpc.StatusCode.OK
                before = health()
                policy.write_text("allow: []\n")  # watching is off: nothing changes yet
                assert get() == grpc.StatusCode.OK
                process.send_signal(signal.SIGHUP)
                deadline = time.monotonic() + 10
                while get() != grpc.StatusCode.PERMISSION_DENIED:
                    assert time.monotonic() < deadline, "SIGHUP did not reload the policy"
                    time.sleep(0.05)
                after = health()
            assert "SERVING (policy etag " in before
            assert before != after  # the version in force changed, and health says so
            process.send_signal(signal.SIGTERM)
            assert process.wait(20) == 0
        finally:
            process.kill()
            process.wait()
