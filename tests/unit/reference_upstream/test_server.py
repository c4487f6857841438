"""Starting, binding, health-checking and signal-stopping the reference upstream."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.reference_upstream import ListenError, ReferenceUpstream, start_reference_upstream
from gateway.reference_upstream.seed import DONE_OPERATION
from gateway.testing.loop import LoopThread
from gateway.testing.ports import free_port
from tests.support.certs import make_pki


@pytest.fixture
def upstream(loop: LoopThread) -> Iterator[ReferenceUpstream]:
    started = loop.run(start_reference_upstream())
    yield started
    loop.run(started.stop())


def test_address_is_dialable_and_seeded_by_default(upstream: ReferenceUpstream) -> None:
    assert upstream.port > 0
    assert upstream.address == f"127.0.0.1:{upstream.port}"
    assert DONE_OPERATION in upstream.store


def test_wildcard_listen_host_is_dialled_on_loopback(loop: LoopThread) -> None:
    started = loop.run(start_reference_upstream("0.0.0.0:0", seed=False))
    try:
        assert started.address == f"127.0.0.1:{started.port}"
        assert len(started.store) == 0
    finally:
        loop.run(started.stop())


@pytest.mark.parametrize(
    "service", ["", "google.longrunning.Operations"], ids=["server", "operations"]
)
def test_health_reports_serving(upstream: ReferenceUpstream, service: str) -> None:
    with grpc.insecure_channel(upstream.address) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_a_taken_port_is_a_clear_error(loop: LoopThread, upstream: ReferenceUpstream) -> None:
    with pytest.raises(ListenError, match=f"cannot listen on '127.0.0.1:{upstream.port}'"):
        loop.run(start_reference_upstream(f"127.0.0.1:{upstream.port}", seed=False))


@pytest.mark.parametrize(
    "listen",
    ["localhost", "127.0.0.1:http", "203.0.113.7:0"],
    ids=["no-port", "named-port", "not-local"],
)
def test_unusable_listen_addresses_are_clear_errors(loop: LoopThread, listen: str) -> None:
    with pytest.raises(ListenError, match=f"cannot listen on '{re.escape(listen)}'") as raised:
        loop.run(start_reference_upstream(listen, seed=False))
    assert isinstance(raised.value, OSError)


def test_run_logs_where_it_listens_and_stops_on_sigterm() -> None:
    port = free_port()
    script = (
        "import asyncio, logging; logging.basicConfig(level=logging.INFO, format='%(message)s');"
        "from gateway.reference_upstream import run_reference_upstream;"
        f"asyncio.run(run_reference_upstream('127.0.0.1:{port}', seed=False))"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stderr is not None
            line = process.stderr.readline().strip()
            assert line == f"reference upstream listening on 127.0.0.1:{port}"
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            process.kill()


def test_serves_tls_with_the_given_credentials(loop: LoopThread, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    credentials = grpc.ssl_server_credentials(
        [(pki.server.key_file.read_bytes(), pki.server.cert_file.read_bytes())]
    )
    started = loop.run(start_reference_upstream(server_credentials=credentials))
    try:
        trust = grpc.ssl_channel_credentials(root_certificates=pki.ca_file.read_bytes())
        with grpc.secure_channel(started.address, trust) as channel:
            operation = operations_pb2_grpc.OperationsStub(channel).GetOperation(
                operations_pb2.GetOperationRequest(name=DONE_OPERATION), timeout=5
            )
        assert operation.done
    finally:
        loop.run(started.stop())
