"""The health port the Kubernetes probes ask (`health.listen`), through the real `opsgate serve`.

TLS on the gateway's listener, as in overlays/example-upstream: the kubelet's gRPC probe,
played here by grpc's own health client on a plaintext channel, gets SERVING from the health
port, while the gRPC listener refuses plaintext. The health port serves grpc.health.v1.Health
and nothing else: Operations calls there are UNIMPLEMENTED and never reach the upstream.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.observability.health import LIVENESS_SERVICE, READINESS_SERVICES
from gateway.reference_upstream import ReferenceUpstream
from gateway.testing.loop import LoopThread
from gateway.testing.ports import free_ports, taken_port
from gateway.testing.processes import ServerProcess, child_env, gateway_argv
from gateway.testing.upstream import running_upstream
from tests.support.certs import Pki, make_pki
from tests.support.stack import Identity, make_identity, quiet_audit_yaml

NAME = "projects/acme/locations/us-central1/operations/probed"
SERVING = health_pb2.HealthCheckResponse.SERVING
ALL_HEALTH_SERVICES = (*READINESS_SERVICES, LIVENESS_SERVICE)


@dataclass
class Gateway:
    process: ServerProcess
    grpc_port: int
    health_port: int
    pki: Pki
    identity: Identity

    @property
    def health_address(self) -> str:
        return f"127.0.0.1:{self.health_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def tls_channel(self) -> grpc.Channel:
        credentials = grpc.ssl_channel_credentials(self.pki.ca_file.read_bytes())
        return grpc.secure_channel(self.grpc_address, credentials)


@pytest.fixture(scope="module")
def upstream(loop: LoopThread) -> Iterator[ReferenceUpstream]:
    with running_upstream(loop, seed=False) as upstream:
        upstream.store.create(NAME)
        yield upstream


def _check(address: str, service: str = "", timeout: float = 2.0) -> int:
    """The health service's answer to a plaintext Check, as the kubelet's gRPC probe asks."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return int(reply.status)


def _config(
    directory: Path,
    upstream: ReferenceUpstream,
    pki: Pki,
    identity: Identity,
    grpc_port: int,
    health_port: int,
) -> Path:
    config = directory / "opsgate.yaml"
    config.write_text(
        f"listen: 127.0.0.1:{grpc_port}\n"
        f"tls: {{cert_file: {pki.server.cert_file}, key_file: {pki.server.key_file}}}\n"
        f"health: {{listen: 127.0.0.1:{health_port}}}\n"
        f"upstream: {{target: {upstream.address}}}\n"
        "shutdown_grace_s: 2\n"
        + quiet_audit_yaml(directory)
        + identity.issuer_yaml()
        + identity.policy_yaml()
    )
    return config


@contextmanager
def _serving(directory: Path, upstream: ReferenceUpstream, *workers: str) -> Iterator[Gateway]:
    """`opsgate serve` with TLS on `listen` and a health port, until SERVING there; on the way
    out SIGTERM drains it and it exits 0."""
    pki, identity = make_pki(directory), make_identity(directory)
    grpc_port, health_port = free_ports(2)
    config = _config(directory, upstream, pki, identity, grpc_port, health_port)
    process = ServerProcess(
        gateway_argv(config, *workers), name="gateway", address=f"127.0.0.1:{grpc_port}"
    )
    gateway = Gateway(process, grpc_port, health_port, pki, identity)
    try:
        process.wait_ready(60)
        deadline = time.monotonic() + 60
        while True:
            try:
                if _check(gateway.health_address) == SERVING:
                    break
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, f"never SERVING:\n{process.log_tail(40)}"
            time.sleep(0.05)
        yield gateway
        assert process.stop(30) == 0, process.log_tail(40)
    finally:
        process.kill()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: ReferenceUpstream
) -> Iterator[Gateway]:
    with _serving(tmp_path_factory.mktemp("health-port"), upstream) as running:
        yield running


@pytest.mark.parametrize("service", ALL_HEALTH_SERVICES, ids=repr)
def test_the_health_port_answers_a_plaintext_probe_serving(gateway: Gateway, service: str) -> None:
    """Readiness ("" and the Operations service) and liveness, as the Deployment's probes ask."""
    assert _check(gateway.health_address, service) == SERVING


def test_the_grpc_listener_refuses_plaintext_and_serves_tls(gateway: Gateway) -> None:
    """TLS stays on for callers: a plaintext health check or call on `listen` fails to connect;
    over TLS the same checks answer, and a caller's call is forwarded."""
    with pytest.raises(grpc.RpcError) as refused:
        _check(gateway.grpc_address)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    with (
        grpc.insecure_channel(gateway.grpc_address) as channel,
        pytest.raises(grpc.RpcError) as plaintext_call,
    ):
        operations_pb2_grpc.OperationsStub(channel).GetOperation(
            operations_pb2.GetOperationRequest(name=NAME), timeout=2
        )
    assert plaintext_call.value.code() == grpc.StatusCode.UNAVAILABLE
    token = gateway.identity.token()
    with gateway.tls_channel() as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert reply.status == SERVING
        operation = operations_pb2_grpc.OperationsStub(channel).GetOperation(
            operations_pb2.GetOperationRequest(name=NAME),
            metadata=[("authorization", f"Bearer {token}")],
            timeout=5,
        )
    assert operation.name == NAME


def test_the_health_port_serves_nothing_else(gateway: Gateway, upstream: ReferenceUpstream) -> None:
    """Operations calls (with a valid token, too) are UNIMPLEMENTED there and never reach the
    upstream: the port has no forwarder, so it is no way around TLS or the pipeline."""
    upstream.call_log.clear()
    token = gateway.identity.token()
    metadata = [("authorization", f"Bearer {token}")]
    with grpc.insecure_channel(gateway.health_address) as channel:
        stub = operations_pb2_grpc.OperationsStub(channel)
        calls = {
            "GetOperation": lambda: stub.GetOperation(
                operations_pb2.GetOperationRequest(name=NAME), metadata=metadata, timeout=5
            ),
            "ListOperations": lambda: stub.ListOperations(
                operations_pb2.ListOperationsRequest(name=NAME.rsplit("/", 1)[0]),
                metadata=metadata,
                timeout=5,
            ),
            "CancelOperation": lambda: stub.CancelOperation(
                operations_pb2.CancelOperationRequest(name=NAME), metadata=metadata, timeout=5
            ),
            "DeleteOperation": lambda: stub.DeleteOperation(
                operations_pb2.DeleteOperationRequest(name=NAME), metadata=metadata, timeout=5
            ),
        }
        for method, call in calls.items():
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED, method
        # Any other service too (Envoy's authorizer, reflection, ...): only Health is there.
        other = channel.unary_unary("/envoy.service.auth.v3.Authorization/Check")
        with pytest.raises(grpc.RpcError) as err:
            other(b"", timeout=5)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert upstream.call_log.snapshot() == []


def test_opsgate_health_still_asks_either_port_for_humans(gateway: Gateway) -> None:
    """`opsgate health` (kept for people and scripts): the health port in plaintext, the
    gRPC listener with --ca-file."""
    for args in (
        ["--address", gateway.health_address, "--service", LIVENESS_SERVICE],
        ["--address", gateway.grpc_address, "--ca-file", str(gateway.pki.ca_file)],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "health", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=child_env(),
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "SERVING" in done.stdout


def _listening_sockets(port: int) -> int:
    """How many sockets listen on TCP `port` (gRPC binds 127.0.0.1 as an IPv4-mapped IPv6
    socket: /proc/net/tcp6; state 0A is LISTEN)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            count += fields[1].endswith(f":{port:04X}") and fields[3] == "0A"
    return count


def test_with_workers_each_binds_the_health_port(
    tmp_path: Path, upstream: ReferenceUpstream
) -> None:
    """`serve --workers 2`: both workers bind the health port (SO_REUSEPORT), so a probe is
    answered by whichever worker the kernel picks, each answering for the set of workers."""
    with _serving(tmp_path, upstream, "--workers", "2") as gateway:
        deadline = time.monotonic() + 60
        while _listening_sockets(gateway.health_port) != 2:
            assert time.monotonic() < deadline, gateway.process.log_tail(40)
            time.sleep(0.05)
        # Fresh connections, spread by the kernel over both workers: once the second is
        # ready too (until then it answers NOT_SERVING, as on `listen`), every one is SERVING.
        while [_check(gateway.health_address) for _ in range(20)] != [SERVING] * 20:
            assert time.monotonic() < deadline, gateway.process.log_tail(40)
            time.sleep(0.05)


def test_a_health_port_in_use_stops_start_up_naming_the_key(
    tmp_path: Path, upstream: ReferenceUpstream
) -> None:
    """Exit 2 and `health.listen` named, as for `listen`: never a pod whose probes ask nobody."""
    (grpc_port,) = free_ports(1)
    with taken_port() as health_port:
        config = _config(
            tmp_path, upstream, make_pki(tmp_path), make_identity(tmp_path), grpc_port, health_port
        )
        done = subprocess.run(
            gateway_argv(config), capture_output=True, text=True, timeout=60, env=child_env()
        )
    assert done.returncode == 2, done.stderr
    assert f"key 'health.listen': cannot listen on 127.0.0.1:{health_port}" in done.stderr
