"""The audit trail end to end: one record per call whatever its outcome, nothing lost, no token.

Records are read back from the real audit file the gateway wrote; the client's own view of each
call (its status and the x-request-id it was given) is the reference.
"""

from __future__ import annotations

import dataclasses
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2

from gateway.audit.query import read_records
from gateway.config import AuditFileSettings, AuditSettings
from gateway.configschema import OutputFile
from gateway.reference_upstream import ReferenceUpstream, start_reference_upstream
from gateway.reference_upstream.seed import DONE_OPERATION, STUCK_OPERATION
from gateway.server import start_gateway
from gateway.testing.loop import LoopThread
from tests.support.stack import EXAMPLE_POLICY, FULL_PROFILE, Identity, gateway_settings

MISSING = DONE_OPERATION.rsplit("/", 1)[0] + "/404404"
SLOW = DONE_OPERATION.rsplit("/", 1)[0] + "/slow"


@dataclass
class Seen:
    """What a client saw of one call."""

    code: str
    request_id: str | None


def _call(channel: grpc.Channel, token: str | None, method: str, name: str, **kwargs: Any) -> Seen:
    metadata = [("authorization", f"Bearer {token}")] if token else []
    stub = operations_pb2_grpc.OperationsStub(channel)
    if method == "raw":
        rpc: Any = channel.unary_unary("/google.longrunning.Operations/GetOperation")
        request: Any = b"\xff\xff garbage"
    elif method == "unknown":
        rpc, request = channel.unary_unary("/google.longrunning.Operations/Pause"), b""
    elif method == "list":
        rpc, request = stub.ListOperations, operations_pb2.ListOperationsRequest(name=name)
    elif method == "cancel":
        rpc, request = stub.CancelOperation, operations_pb2.CancelOperationRequest(name=name)
    elif method == "wait":
        rpc = stub.WaitOperation
        request = operations_pb2.WaitOperationRequest(
            name=name, timeout=duration_pb2.Duration(seconds=30)
        )
    else:
        rpc, request = stub.GetOperation, operations_pb2.GetOperationRequest(name=name)
    try:
        _, call = rpc.with_call(request, metadata=metadata, **kwargs)
        return Seen("OK", dict(call.trailing_metadata() or ()).get("x-request-id"))
    except grpc.RpcError as err:
        request_id = dict(err.trailing_metadata() or ()).get("x-request-id")
        return Seen(err.code().name, request_id)


def _records(path: Path) -> list[dict[str, Any]]:
    return list(read_records([path]))


def _assert_no_token(path: Path, tokens: list[str]) -> None:
    text = "".join(p.read_text() for p in path.parent.glob(path.name + "*"))
    for token in tokens:
        for part in [token, *token.split(".")[1:]]:
            assert part not in text
    assert "Bearer" not in text and '"authorization"' not in text.lower()


@pytest.fixture
def audited(
    loop: LoopThread, identity: Identity, tmp_path: Path
) -> Iterator[tuple[Any, ReferenceUpstream, Path]]:
    upstream = loop.run(start_reference_upstream("127.0.0.1:0", seed=True))
    upstream.store.create(SLOW, finish_after=3600)
    audit_file = tmp_path / "audit.log"
    settings = gateway_settings(upstream.address, identity, EXAMPLE_POLICY)
    settings = dataclasses.replace(
        settings,
        # Wait routed too (as operations.get), so a call can outlive its deadline upstream.
        authorization=dataclasses.replace(settings.authorization, profile_file=FULL_PROFILE),
        audit=AuditSettings(
            sink="file", file=AuditFileSettings(path=OutputFile(audit_file), fsync="never")
        ),
    )
    gateway = loop.run(start_gateway(settings))
    try:
        yield gateway, upstream, audit_file
    finally:
        loop.run(gateway.stop(0))
        loop.run(upstream.stop(0))


# (id, caller email or None for no token, method, name, expected code, extra kwargs)
OUTCOMES: list[tuple[str, str | None, str, str, str, dict[str, Any]]] = [
    ("allowed", "alice@acme.example", "get", DONE_OPERATION, "OK", {}),
    ("allowed-list", "bob@acme.example", "list", DONE_OPERATION.rsplit("/", 2)[0], "OK", {}),
    ("allowed-cancel", "alice@acme.example", "cancel", DONE_OPERATION, "OK", {}),
    ("denied", "carol@acme.example", "get", DONE_OPERATION, "PERMISSION_DENIED", {}),
    ("denied-by-rule", "alice@acme.example", "cancel", STUCK_OPERATION, "PERMISSION_DENIED", {}),
    ("unauthenticated", None, "get", DONE_OPERATION, "UNAUTHENTICATED", {}),
    ("invalid-name", "alice@acme.example", "get", "projects/x", "INVALID_ARGUMENT", {}),
    ("garbage-body", "alice@acme.example", "raw", "", "INVALID_ARGUMENT", {}),
    ("unimplemented", "alice@acme.example", "unknown", "", "UNIMPLEMENTED", {}),
    ("upstream-error", "alice@acme.example", "get", MISSING, "NOT_FOUND", {}),
    ("allowed-wait", "alice@acme.example", "wait", DONE_OPERATION, "OK", {}),
]

SEVERITY = {
    "OK": {"get": "INFO", "list": "INFO", "wait": "INFO", "cancel": "NOTICE"},
    "PERMISSION_DENIED": "WARNING",
    "UNAUTHENTICATED": "WARNING",
    "INVALID_ARGUMENT": "WARNING",
    "UNIMPLEMENTED": "WARNING",
    "NOT_FOUND": "WARNING",
}


def test_every_outcome_recorded_once_in_completion_order(audited, identity: Identity) -> None:
    gateway, _, audit_file = audited
    tokens: dict[str | None, str | None] = {None: None}
    seen: list[Seen] = []
    rounds = 3
    with grpc.insecure_channel(gateway.address) as channel:
        for _ in range(rounds):
            for _, who, method, name, expected, kwargs in OUTCOMES:
                token = tokens.setdefault(who, identity.token(email=who) if who else None)
                outcome = _call(channel, token, method, name, **kwargs)
                assert outcome.code == expected
                seen.append(outcome)
        # Concurrent calls, and calls cut short by the client's deadline.
        alice = tokens["alice@acme.example"]
        with ThreadPoolExecutor(8) as pool:
            concurrent = list(
                pool.map(lambda _: _call(channel, alice, "get", DONE_OPERATION), range(40))
            )
        assert {c.code for c in concurrent} == {"OK"}
        # Calls that end early: a deadline shorter than the upstream's wait, a client cancel.
        late = [_call(channel, alice, "wait", SLOW, timeout=0.3) for _ in range(3)]
        assert {c.code for c in late} == {"DEADLINE_EXCEEDED"}
        stub = operations_pb2_grpc.OperationsStub(channel)
        metadata = [("authorization", f"Bearer {alice}")]
        for _ in range(3):
            request = operations_pb2.WaitOperationRequest(name=SLOW)
            future = stub.WaitOperation.future(request, metadata=metadata, timeout=30)
            time.sleep(0.2)
            future.cancel()
    assert gateway.pipeline.audit.writer.flush(10)
    deadline = time.monotonic() + 5
    while len(_records(audit_file)) < len(seen) + len(concurrent) + 6:
        assert time.monotonic() < deadline, "records of the cut-short calls never came"
        time.sleep(0.05)
    records = _records(audit_file)
    total = len(seen) + len(concurrent) + 6
    assert len(records) == total  # exactly one record per call
    assert len({r["insertId"] for r in records}) == total
    # In the order the calls completed: the sequential ones are strictly ordered.
    sequential_ids = [s.request_id for s in seen]
    assert all(sequential_ids)
    recorded_ids = [r["protoPayload"]["metadata"]["requestId"] for r in records]
    assert recorded_ids[: len(seen)] == sequential_ids
    assert set(recorded_ids[len(seen) : len(seen) + len(concurrent)]) == {
        c.request_id for c in concurrent
    }
    for record, case in zip(records, OUTCOMES * rounds, strict=False):
        _, who, method, name, expected, _ = case
        payload = record["protoPayload"]
        assert payload["@type"] == "type.googleapis.com/google.cloud.audit.AuditLog"
        assert payload["status"].get("code", 0) == grpc.StatusCode[expected].value[0]
        want = SEVERITY[expected]
        assert record["severity"] == (want[method] if isinstance(want, dict) else want)
        kind = "activity" if method == "cancel" else "data_access"
        assert record["logName"].endswith(f"/logs/cloudaudit.googleapis.com%2F{kind}")
        if who and method != "unknown":  # a method nobody serves is refused before authn
            # The test issuer is not Google: a third party's caller, by its verified email.
            authenticated = payload["authenticationInfo"]
            assert authenticated["thirdPartyPrincipal"]["email"] == who
            assert "principalEmail" not in authenticated
            assert not authenticated["principalSubject"].startswith("principal://goog/")
        if expected in ("OK", "PERMISSION_DENIED", "NOT_FOUND") and method in ("get", "cancel"):
            (check,) = payload["authorizationInfo"]
            assert check["granted"] is (expected != "PERMISSION_DENIED")
            assert check["resource"] == name
            assert payload["metadata"]["decision"]["policyEtag"]
    cut_short = [r["protoPayload"]["status"]["code"] for r in records[-6:]]
    assert sorted(cut_short) == [1, 1, 1, 4, 4, 4]  # CANCELLED x3, DEADLINE_EXCEEDED x3
    _assert_no_token(audit_file, [t for t in tokens.values() if t])


def _serve(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _address(process: subprocess.Popen[str]) -> str:
    assert process.stderr is not None
    for _ in range(200):
        line = process.stderr.readline()
        match = re.search(r"opsgate listening on (\S+),", line)
        if match:
            threading.Thread(target=process.stderr.read, daemon=True).start()  # keep draining
            return match.group(1)
    raise AssertionError("gateway did not start")


def _write_config(identity: Identity, upstream: str, audit_file: Path, on_failure: str) -> Path:
    config = identity.directory / f"audit-{on_failure}.yaml"
    config.write_text(
        f"listen: 127.0.0.1:0\nupstream:\n  target: {upstream}\n"
        + identity.issuer_yaml()
        + identity.policy_yaml(EXAMPLE_POLICY)
        + f"audit:\n  sink: file\n  on_failure: {on_failure}\n"
        f"  file:\n    path: {audit_file}\n    fsync: always\n"
    )
    return config


@contextmanager
def disk_full_beyond(size: int) -> Iterator[None]:
    """Writes that would grow any file of this process past `size` fail with EFBIG, as on a
    full disk. The audit file is by far the largest file the test writes, so it is the one
    that hits the limit. SIGXFSZ is ignored, as the gateway's own serve command does."""
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)


@pytest.mark.parametrize("on_failure", ["fail_closed", "fail_open_with_alarm"])
def test_sink_failure_mid_run_then_recovery_loses_nothing(
    loop: LoopThread,
    upstream: ReferenceUpstream,
    identity: Identity,
    tmp_path: Path,
    on_failure: Literal["fail_closed", "fail_open_with_alarm"],
) -> None:
    audit_file = tmp_path / "audit.log"
    settings = dataclasses.replace(
        gateway_settings(upstream.address, identity, EXAMPLE_POLICY),
        audit=AuditSettings(
            sink="file",
            on_failure=on_failure,
            file=AuditFileSettings(path=OutputFile(audit_file), fsync="always"),
        ),
    )
    gateway = loop.run(start_gateway(settings))
    token = identity.token(email="alice@acme.example")
    seen: list[Seen] = []
    try:
        with grpc.insecure_channel(gateway.address) as channel:

            def call() -> Seen:
                outcome = _call(channel, token, "get", DONE_OPERATION, timeout=10)
                seen.append(outcome)
                return outcome

            for _ in range(60):
                assert call().code == "OK"
            assert gateway.pipeline.audit.writer.flush(10)
            with disk_full_beyond(audit_file.stat().st_size):
                during = []
                for _ in range(30):
                    during.append(call().code)
                    time.sleep(0.02)
                writer = gateway.pipeline.audit.writer
                assert not writer.healthy and writer.failures > 0
            if on_failure == "fail_closed":
                assert "UNAVAILABLE" in during  # new calls refused while records cannot be written
            else:
                assert set(during) == {"OK"}  # calls go on; the alarm is in the log
            deadline = time.monotonic() + 10
            while call().code != "OK":
                assert time.monotonic() < deadline, "the gateway never recovered"
                time.sleep(0.1)
            for _ in range(5):
                assert call().code == "OK"
    finally:
        loop.run(gateway.stop(5))
    recorded = [r["protoPayload"]["metadata"]["requestId"] for r in _records(audit_file)]
    assert recorded == [s.request_id for s in seen]  # every call, in order, none missing


def test_sigterm_under_load_keeps_every_record(
    upstream: ReferenceUpstream, identity: Identity, tmp_path: Path
) -> None:
    audit_file = tmp_path / "audit.log"
    process = _serve(_write_config(identity, upstream.address, audit_file, "fail_closed"))
    token = identity.token(email="bob@acme.example")
    seen: list[Seen] = []
    lock = threading.Lock()
    try:
        address = _address(process)
        stop = threading.Event()

        def load() -> None:
            with grpc.insecure_channel(address) as channel:
                while not stop.is_set():
                    outcome = _call(channel, token, "get", DONE_OPERATION, timeout=5)
                    with lock:
                        seen.append(outcome)
                    if outcome.code == "UNAVAILABLE" and outcome.request_id is None:
                        return  # the listener has closed

        threads = [threading.Thread(target=load) for _ in range(6)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        stop.set()
        for thread in threads:
            thread.join(10)
    finally:
        process.kill()
        process.wait()
    answered = {s.request_id for s in seen if s.request_id}
    assert len(answered) > 50
    recorded = {r["protoPayload"]["metadata"]["requestId"] for r in _records(audit_file)}
    assert answered <= recorded  # every call the gateway answered has its record
    assert len(recorded) == len(_records(audit_file))
