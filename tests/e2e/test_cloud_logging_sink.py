"""audit.sink: cloud_logging end to end: the real `opsgate serve` writes its records as LogEntries
with an AuditLog protoPayload to a real local LoggingServiceV2, batched, and loses or repeats none
of them through an outage of that server.

The figures of the outage runs (calls made, refused, records delivered, requests) are printed;
`pytest tests/e2e/test_cloud_logging_sink.py -s -k outage` shows them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway.audit.query import read_records
from gateway.reference_upstream import ReferenceUpstream
from gateway.reference_upstream.seed import DONE_OPERATION, STUCK_OPERATION
from tests.support.logging_server import LoggingServer, as_record, running_logging_server, same_json
from tests.support.stack import EXAMPLE_POLICY, Identity

PROJECT = "opsgate-e2e"
MISSING = DONE_OPERATION.rsplit("/", 1)[0] + "/404404"


@dataclass
class Seen:
    """What a client saw of one call."""

    code: str
    request_id: str | None
    reason: str | None = None  # the ErrorInfo reason of a refusal


@dataclass
class Served:
    process: subprocess.Popen[str]
    address: str
    log: list[str]  # the gateway's stderr, as it comes

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


def _config(identity: Identity, upstream: ReferenceUpstream, audit: str, name: str) -> Path:
    config = identity.directory / f"cloud-logging-{name}.yaml"
    config.write_text(
        f"listen: 127.0.0.1:0\nupstream:\n  target: {upstream.address}\n"
        + identity.issuer_yaml()
        + identity.policy_yaml(EXAMPLE_POLICY)
        + audit
    )
    return config


def _cloud_logging_audit(server: LoggingServer) -> str:
    return (
        f"audit:\n  sink: cloud_logging\n  project: {PROJECT}\n  on_failure: fail_closed\n"
        f"  cloud_logging:\n    endpoint: {server.address}\n    insecure: true\n"
        "    timeout_s: 2\n"
    )


@pytest.fixture
def serve() -> Iterator[Any]:
    started: list[Served] = []

    def start(config: Path) -> Served:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        served = Served(process, "", [])
        started.append(served)
        assert process.stderr is not None
        for line in process.stderr:
            served.log.append(line)
            match = re.search(r"opsgate listening on (\S+),", line)
            if match:
                served.address = match.group(1)
                break
        else:
            raise AssertionError("gateway did not start:\n" + "".join(served.log))
        stream = process.stderr
        threading.Thread(target=lambda: served.log.extend(stream), daemon=True).start()
        return served

    yield start
    for served in started:
        served.process.kill()
        served.process.wait()


def _call(channel: grpc.Channel, token: str | None, method: str, name: str) -> Seen:
    metadata = [("authorization", f"Bearer {token}")] if token else []
    stub = operations_pb2_grpc.OperationsStub(channel)
    rpc: Any
    if method == "raw":
        rpc, request = channel.unary_unary("/google.longrunning.Operations/GetOperation"), b"\xff"
    elif method == "unknown":
        rpc, request = channel.unary_unary("/google.longrunning.Operations/Pause"), b""
    elif method == "list":
        rpc, request = stub.ListOperations, operations_pb2.ListOperationsRequest(name=name)
    elif method == "cancel":
        rpc, request = stub.CancelOperation, operations_pb2.CancelOperationRequest(name=name)
    else:
        rpc, request = stub.GetOperation, operations_pb2.GetOperationRequest(name=name)
    try:
        _, call = rpc.with_call(request, metadata=metadata, timeout=10)
        return Seen("OK", dict(call.trailing_metadata() or ()).get("x-request-id"))
    except grpc.RpcError as err:
        request_id = dict(err.trailing_metadata() or ()).get("x-request-id")
        return Seen(err.code().name, request_id, _reason(err))


def _reason(err: Any) -> str | None:
    status = rpc_status.from_call(err)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return None


def _wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


# (caller or None for no token, method, name, code the client sees)
CALLS: list[tuple[str | None, str, str, str]] = [
    ("alice@acme.example", "get", DONE_OPERATION, "OK"),
    ("bob@acme.example", "list", DONE_OPERATION.rsplit("/", 2)[0], "OK"),
    ("alice@acme.example", "cancel", DONE_OPERATION, "OK"),
    ("carol@acme.example", "get", DONE_OPERATION, "PERMISSION_DENIED"),
    ("alice@acme.example", "cancel", STUCK_OPERATION, "PERMISSION_DENIED"),
    (None, "get", DONE_OPERATION, "UNAUTHENTICATED"),
    ("alice@acme.example", "get", "projects/x", "INVALID_ARGUMENT"),
    ("alice@acme.example", "raw", "", "INVALID_ARGUMENT"),
    ("alice@acme.example", "unknown", "", "UNIMPLEMENTED"),
    ("alice@acme.example", "get", MISSING, "NOT_FOUND"),
    ("alice@acme.example", "get", DONE_OPERATION, "OK"),  # a cached decision
]

# What differs between two runs of the same calls: the call's id, times and latency.
_PER_CALL = ("insertId", "timestamp", "receiveTimestamp")
_PER_CALL_METADATA = ("requestId", "latencyMs")


def _without_per_call(record: dict[str, Any]) -> dict[str, Any]:
    kept = {key: value for key, value in record.items() if key not in _PER_CALL}
    payload = kept["protoPayload"] = dict(kept["protoPayload"])
    payload["metadata"] = {
        key: value for key, value in payload["metadata"].items() if key not in _PER_CALL_METADATA
    }
    return kept


def _run_calls(address: str, tokens: dict[str, str]) -> list[Seen]:
    seen = []
    with grpc.insecure_channel(address) as channel:
        for email, method, name, code in CALLS:
            outcome = _call(channel, tokens[email] if email else None, method, name)
            assert outcome.code == code, (email, method, name)
            seen.append(outcome)
    return seen


def test_records_arrive_as_audit_logs_equal_to_the_file_sinks(
    serve: Any, upstream: ReferenceUpstream, identity: Identity, tmp_path: Path
) -> None:
    audit_file = tmp_path / "audit.log"
    file_audit = (
        f"audit:\n  sink: file\n  project: {PROJECT}\n  file:\n    path: {audit_file}\n"
        "    fsync: never\n"
    )
    tokens = {email: identity.token(email=email) for email, *_ in CALLS if email}
    with running_logging_server() as server:
        by_file = serve(_config(identity, upstream, file_audit, "file"))
        file_seen = _run_calls(by_file.address, tokens)
        assert by_file.stop() == 0
        by_api = serve(_config(identity, upstream, _cloud_logging_audit(server), "api"))
        api_seen = _run_calls(by_api.address, tokens)
        assert by_api.stop() == 0  # SIGTERM flushes: every record is written before exit

    written = list(read_records([audit_file]))
    received = [as_record(entry) for entry in server.entries]
    assert [r["insertId"] for r in written] == [s.request_id for s in file_seen]
    assert [r["insertId"] for r in received] == [s.request_id for s in api_seen]
    assert len(received) == len(written) == len(CALLS)
    for got, wrote in zip(received, written, strict=True):
        assert got["protoPayload"]["@type"] == "type.googleapis.com/google.cloud.audit.AuditLog"
        assert got["protoPayload"]["metadata"]["requestId"] == got["insertId"]
        assert same_json(_without_per_call(got), _without_per_call(wrote)), (got, wrote)
    # The logs Google's own audit logs go to, in the project the call named, else audit.project.
    assert {r["logName"] for r in received} == {
        "projects/acme-prod/logs/cloudaudit.googleapis.com%2Fdata_access",
        "projects/acme-prod/logs/cloudaudit.googleapis.com%2Factivity",
        "projects/x/logs/cloudaudit.googleapis.com%2Fdata_access",  # the invalid name's
        f"projects/{PROJECT}/logs/cloudaudit.googleapis.com%2Fdata_access",
    }
    assert all(r["resource"]["type"] == "audited_resource" for r in received)
    assert all(request.partial_success is False for request in server.requests)
    _assert_no_token(server, by_api.log, list(tokens.values()))


def test_concurrent_calls_are_batched_none_lost_none_repeated(
    serve: Any, upstream: ReferenceUpstream, identity: Identity
) -> None:
    with running_logging_server() as server:
        gateway = serve(_config(identity, upstream, _cloud_logging_audit(server), "batched"))
        token = identity.token(email="alice@acme.example")
        with grpc.insecure_channel(gateway.address) as channel:

            def calls(_: int) -> list[Seen]:
                return [_call(channel, token, "get", DONE_OPERATION) for _ in range(40)]

            with ThreadPoolExecutor(8) as pool:
                seen = [s for batch in pool.map(calls, range(8)) for s in batch]
        assert gateway.stop() == 0
    assert {s.code for s in seen} == {"OK"}
    ids = [entry.insert_id for entry in server.entries]
    assert sorted(ids) == sorted(s.request_id for s in seen)  # every call once
    sizes = [len(request.entries) for request in server.requests]
    assert len(sizes) < len(seen) and max(sizes) > 1, sizes  # several records per request
    print(f"\n{len(seen)} calls from 8 threads: {len(ids)} records in {len(sizes)} requests")


@pytest.mark.parametrize("outage", ["refusing", "stopped"])
def test_an_outage_refuses_calls_then_delivers_every_record_once_in_order(
    serve: Any, upstream: ReferenceUpstream, identity: Identity, outage: str
) -> None:
    with running_logging_server() as server:
        gateway = serve(_config(identity, upstream, _cloud_logging_audit(server), outage))
        token = identity.token(email="alice@acme.example")
        seen: list[Seen] = []
        with grpc.insecure_channel(gateway.address) as channel:

            def call() -> Seen:
                outcome = _call(channel, token, "get", DONE_OPERATION)
                seen.append(outcome)
                return outcome

            for _ in range(30):
                assert call().code == "OK"
            _wait_for(lambda: len(server.entries) == 30, 10, "records before the outage")
            if outage == "refusing":
                server.refuse_with = grpc.StatusCode.UNAVAILABLE
            else:
                server.stop()
            outage_began = len(seen)
            started = time.monotonic()
            while time.monotonic() - started < 2.0:
                call()
                time.sleep(0.02)
            during = seen[outage_began:]
            if outage == "refusing":
                server.refuse_with = None
            else:
                server.start()  # the same port
            recovery_began = time.monotonic()
            while call().code != "OK":
                assert time.monotonic() - recovery_began < 20, "the gateway never recovered"
                time.sleep(0.05)
            recovered_after = time.monotonic() - recovery_began
            for _ in range(10):
                assert call().code == "OK"
        assert gateway.stop() == 0

    refused = [s for s in during if s.code != "OK"]
    assert refused, "fail_closed took every call during the outage"
    assert {(s.code, s.reason) for s in refused} == {("UNAVAILABLE", "AUDIT_UNAVAILABLE")}
    ids = [entry.insert_id for entry in server.entries]
    expected = [s.request_id for s in seen]
    assert None not in expected
    assert ids == expected  # every call's record, refused ones included, in order, once
    assert len(set(ids)) == len(ids)
    log = "".join(gateway.log)
    assert "audit sink failed" in log and "audit sink recovered" in log
    _assert_no_token(server, gateway.log, [token])
    print(
        f"\noutage ({outage}): {len(seen)} calls, {len(during)} during the outage "
        f"({len(refused)} refused AUDIT_UNAVAILABLE, {len(during) - len(refused)} taken); "
        f"{len(ids)} records delivered, {len(ids) - len(set(ids))} duplicates, "
        f"{len(seen) - len(ids)} lost; {len(server.requests)} requests stored, "
        f"{len(server.refusals)} refused; first call taken {recovered_after:.2f}s "
        "after the server came back"
    )


def _assert_no_token(server: LoggingServer, log: list[str], tokens: list[str]) -> None:
    """No token, nor its claims or signature, in what reached Cloud Logging or the log."""
    sent = b"".join(request.SerializeToString() for request in server.requests)
    text = "".join(log)
    for token in tokens:
        for part in token.split(".")[1:]:
            assert part.encode() not in sent and part not in text
    assert b"Bearer" not in sent and "Bearer" not in text


def test_no_credentials_stops_start_up_with_a_clear_error(
    upstream: ReferenceUpstream, identity: Identity, tmp_path: Path
) -> None:
    audit = f"audit:\n  sink: cloud_logging\n  project: {PROJECT}\n"
    missing = tmp_path / "no-such-key.json"
    config = _config(identity, upstream, audit, "no-adc")
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GOOGLE_APPLICATION_CREDENTIALS": str(missing)},
    )
    assert done.returncode == 2
    assert "Application Default Credentials" in done.stderr
    assert str(missing) in done.stderr
