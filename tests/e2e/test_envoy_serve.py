"""`opsgate serve` as Envoy's authorizer alone (no upstream of its own), with two workers.

Real processes throughout: the reference upstream, `opsgate serve --workers 2` with only an
`envoy:` door, and Envoy with two worker threads (so its Check connections and its access-log
streams spread over opsgate's workers, which share the port). Every call ends up as exactly one
audit record, in one worker's file, with the status the caller saw; an entry that reached the
other worker is handed over to the one that decided the call.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter
from pathlib import Path

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc

from gateway.config import load_settings
from gateway.envoy.bootstrap import GRPC_LISTENER, EnvoyLayout, render_bootstrap
from gateway.reference_upstream.seed import DONE_OPERATION
from gateway.testing.envoy import envoy_process
from gateway.testing.ports import free_port, free_port_run
from gateway.testing.processes import gateway_process, upstream_process
from tests.support.policy_cases import ALICE, MISSING_PROD_OPERATION, STRANGER
from tests.support.stack import EXAMPLE_POLICY, Identity

CALLS = [(ALICE, DONE_OPERATION), (ALICE, MISSING_PROD_OPERATION), (STRANGER, DONE_OPERATION)]


def scrape(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def envoy_metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        lines = reply.read().decode().splitlines()
    return ", ".join(line for line in lines if line.startswith("opsgate_envoy"))


def waiting(port: int) -> float:
    return scrape(port, "opsgate_envoy_endings_waiting")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_authorizer_alone_with_two_workers_writes_one_record_per_call(
    identity: Identity, tmp_path: Path, protocol: str
) -> None:
    port, http_port, metrics_port = free_port(), free_port(), free_port_run(2)
    http = f"http_listen: 127.0.0.1:{http_port}" if protocol == "http" else ""
    audit = tmp_path / "audit.log"
    config = tmp_path / "opsgate.yaml"
    config.write_text(
        f"listen: 127.0.0.1:{port}\n"
        f"envoy: {{{http}}}\n"
        f"metrics: {{listen: 127.0.0.1:{metrics_port}}}\n"
        f"audit: {{sink: file, file: {{path: {audit}, fsync: never}}}}\n"
        + identity.issuer_yaml()
        + identity.policy_yaml(EXAMPLE_POLICY)
    )
    upstream = upstream_process()
    try:
        gateway = gateway_process(
            config, "--workers", "2", address=f"127.0.0.1:{port}", health=True
        )
        try:
            layout = EnvoyLayout(
                listen="127.0.0.1:0", upstream=upstream.address, admin="127.0.0.1:0"
            )
            bootstrap = render_bootstrap(load_settings(config), layout)
            seen: list[str] = []
            with envoy_process(bootstrap, name="envoy-workers", concurrency=2) as envoy:
                for index in range(60):
                    who, name = CALLS[index % len(CALLS)]
                    # A new connection each time: Envoy's worker threads take turns.
                    with grpc.insecure_channel(envoy.address(GRPC_LISTENER)) as channel:
                        stub = operations_pb2_grpc.OperationsStub(channel)
                        token = identity.token(**who.claims())
                        try:
                            stub.GetOperation(
                                operations_pb2.GetOperationRequest(name=name),
                                metadata=[("authorization", f"Bearer {token}")],
                                timeout=10,
                            )
                            seen.append("OK")
                        except grpc.RpcError as err:
                            seen.append(err.code().name)
                # Envoy's access-log buffer is flushed every 0.1 s; an Envoy that exits
                # before then never sends it (ARCHITECTURE.md), so wait for the last endings.
                deadline = time.monotonic() + 10
                while any(waiting(metrics_port + k) for k in (0, 1)):
                    assert time.monotonic() < deadline, "endings never reported: " + "; ".join(
                        envoy_metrics(metrics_port + k) for k in (0, 1)
                    )
                    time.sleep(0.05)
                decided = [scrape(metrics_port + k, "opsgate_calls_total") for k in (0, 1)]
        finally:
            assert gateway.stop() == 0  # SIGTERM: the workers drain and write every record
    finally:
        upstream.stop()
    records = [
        json.loads(line)
        for path in sorted(tmp_path.glob("audit-w*.log"))
        for line in path.read_text().splitlines()
    ]
    ids = Counter(record["insertId"] for record in records)
    assert len(ids) == len(records) == len(seen) == 60
    codes = Counter(record["protoPayload"].get("status", {}).get("code", 0) for record in records)
    assert codes == {0: 20, 5: 20, 7: 20}  # OK, the upstream's NOT_FOUND, PERMISSION_DENIED
    assert Counter(seen) == {"OK": 20, "NOT_FOUND": 20, "PERMISSION_DENIED": 20}
    assert sum(decided) == 60  # the workers' metrics count every call once, where decided
