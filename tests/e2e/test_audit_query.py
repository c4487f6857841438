"""`opsgate audit query|tail` on a trail real gateways wrote: two workers' files (named as
`serve --workers` names them), each rotated several times; read by path, by glob and from
standard input, windowed by --since/--until, by exact --resource and by prefix, with the
REASON of each refusal; and quiet when its reader stops reading."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc

from gateway.config import AuditFileSettings, AuditSettings
from gateway.configschema import OutputFile
from gateway.reference_upstream.seed import ACME_PROD_US, DONE_OPERATION, STUCK_OPERATION
from gateway.server import Gateway, start_gateway
from gateway.testing.loop import LoopThread
from gateway.testing.upstream import running_upstream
from gateway.workers import worker_settings
from tests.support.cli import ROOT, opsgate
from tests.support.stack import EXAMPLE_POLICY, Identity, gateway_settings

AUDIT_1 = f"{ACME_PROD_US}/operations/audit-1"
AUDIT_10 = f"{ACME_PROD_US}/operations/audit-10"  # AUDIT_1 is a prefix of its name
CI = "ci-deployer@acme-prod.iam.gserviceaccount.com"
AUDIT = [sys.executable, "-m", "gateway", "audit"]
BY_DENY_RULE = re.compile(
    r"IAM_PERMISSION_DENIED: denied by a deny rule on projects/acme-prod/locations/europe-west1 "
    r"\(line \d+\) naming principalSet://goog/public:all"
)


@dataclass
class Workers:
    """Two gateways writing audit-w0.log and audit-w1.log (and their rotated files) in one
    directory, as `opsgate serve --workers 2` with audit.file.path audit.log does."""

    directory: Path
    identity: Identity
    gateways: list[Gateway]
    made: list[str] = field(default_factory=list)  # insertIds, in the order calls were made
    by_worker: dict[int, list[str]] = field(default_factory=lambda: {0: [], 1: []})

    @property
    def path(self) -> Path:
        return self.directory / "audit.log"

    def call(self, worker: int, caller: str | None, method: str, name: str) -> str:
        """One call through worker `worker`; its status code's name. Its request id (the
        record's insertId) is kept in call order."""
        metadata = (
            [("authorization", f"Bearer {self.identity.token(email=caller)}")] if caller else []
        )
        with grpc.insecure_channel(self.gateways[worker].address) as channel:
            stub = operations_pb2_grpc.OperationsStub(channel)
            if method == "list":
                rpc, request = stub.ListOperations, operations_pb2.ListOperationsRequest(name=name)
            elif method == "cancel":
                rpc, request = (
                    stub.CancelOperation,
                    operations_pb2.CancelOperationRequest(name=name),
                )
            else:
                rpc, request = stub.GetOperation, operations_pb2.GetOperationRequest(name=name)
            try:
                _, call = rpc.with_call(request, metadata=metadata, timeout=10)
                code, trailers = "OK", call.trailing_metadata()
            except grpc.RpcError as err:
                code, trailers = err.code().name, err.trailing_metadata()
        request_id = dict(trailers or ())["x-request-id"]
        self.made.append(request_id)
        self.by_worker[worker].append(request_id)
        return code

    def written(self, request_id: str, timeout: float = 10.0) -> None:
        """Wait until the record of `request_id` is in one of the files (written off the
        call's path, a moment after it answered)."""
        deadline = time.monotonic() + timeout
        while not any(request_id in p.read_text() for p in self.directory.glob("audit*")):
            assert time.monotonic() < deadline, f"{request_id} was never written"
            time.sleep(0.01)


@contextmanager
def two_workers(loop: LoopThread, identity: Identity, directory: Path) -> Iterator[Workers]:
    with ExitStack() as stack:
        upstream = stack.enter_context(running_upstream(loop, seed=True))
        for name in (AUDIT_1, AUDIT_10):
            upstream.store.create(name)
        settings = gateway_settings(upstream.address, identity, EXAMPLE_POLICY)
        settings = dataclasses.replace(
            settings,
            audit=AuditSettings(
                sink="file",
                file=AuditFileSettings(
                    # About two records a file: every worker's trail rotates several times.
                    path=OutputFile(directory / "audit.log"),
                    max_bytes=5000,
                    backups=50,
                    fsync="never",
                ),
            ),
        )
        gateways = []
        for index in (0, 1):
            gateway = loop.run(start_gateway(worker_settings(settings, index)))
            stack.callback(lambda gateway=gateway: loop.run(gateway.stop(0)))
            gateways.append(gateway)
        yield Workers(directory, identity, gateways)


# (caller, method, name, code): made in this order, alternately through worker 0 and 1.
BEFORE = [
    ("alice@acme.example", "get", DONE_OPERATION, "OK"),
    ("carol@acme.example", "get", DONE_OPERATION, "PERMISSION_DENIED"),
    (CI, "cancel", AUDIT_1, "OK"),
    ("bob@acme.example", "cancel", DONE_OPERATION, "PERMISSION_DENIED"),
    ("alice@acme.example", "cancel", STUCK_OPERATION, "PERMISSION_DENIED"),
]
AFTER = [  # after the moment the window tests cut at
    (None, "get", DONE_OPERATION, "UNAUTHENTICATED"),
    ("alice@acme.example", "get", AUDIT_1, "OK"),
    ("alice@acme.example", "get", AUDIT_10, "OK"),
    ("bob@acme.example", "list", ACME_PROD_US, "OK"),
    (CI, "get", AUDIT_10, "OK"),
]


@dataclass(frozen=True)
class Trail:
    path: Path
    made: list[str]  # insertIds in call order
    by_worker: dict[int, list[str]]
    cut: datetime  # between BEFORE and AFTER

    def ids(self, *indexes: int) -> list[str]:
        return [self.made[i] for i in indexes]


@pytest.fixture(scope="module")
def trail(loop: LoopThread, identity: Identity, tmp_path_factory: pytest.TempPathFactory) -> Trail:
    directory = tmp_path_factory.mktemp("trail")
    with two_workers(loop, identity, directory) as workers:
        codes = []
        for number, (caller, method, name, _) in enumerate(BEFORE):
            codes.append(workers.call(number % 2, caller, method, name))
        cut = datetime.now(UTC)
        for number, (caller, method, name, _) in enumerate(AFTER, len(BEFORE)):
            codes.append(workers.call(number % 2, caller, method, name))
    assert codes == [code for *_, code in BEFORE + AFTER]
    files = sorted(p.name for p in directory.iterdir())
    assert "audit.log" not in files  # only the workers' files
    for worker in (0, 1):  # each worker's trail rotated at least twice
        assert {f"audit-w{worker}.log", f"audit-w{worker}.log.1", f"audit-w{worker}.log.2"} <= set(
            files
        )
    return Trail(directory / "audit.log", workers.made, workers.by_worker, cut)


def json_ids(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line)["insertId"] for line in result.stdout.splitlines()]


def query(*args: str | Path) -> list[str]:
    return json_ids(opsgate("audit", "query", *args, "--format", "json"))


def test_the_path_reads_every_worker_and_rotated_file_in_time_order(trail: Trail) -> None:
    assert query(trail.path) == trail.made
    tail = opsgate("audit", "tail", trail.path, "-n", "3", "--format", "json")
    assert json_ids(tail) == trail.made[-3:]


def test_a_glob_reads_exactly_the_files_it_matches(trail: Trail) -> None:
    directory = trail.path.parent
    assert query(f"{directory}/audit-w1.log*") == trail.by_worker[1]
    live = [
        json.loads(line)["insertId"]
        for name in ("audit-w0.log", "audit-w1.log")
        for line in (directory / name).read_text().splitlines()
    ]
    only_live = query(f"{directory}/audit-w?.log")  # not the rotated files
    assert sorted(only_live) == sorted(live) and len(only_live) < len(trail.made)
    assert only_live == [i for i in trail.made if i in live]  # and still in time order
    # A glob and a path naming the same files: each record once.
    assert query(f"{directory}/audit-w0.log*", trail.path) == trail.made


def test_standard_input_beside_files(trail: Trail) -> None:
    directory = trail.path.parent
    worker_1 = b"".join(p.read_bytes() for p in sorted(directory.glob("audit-w1.log.*"))[::-1])
    worker_1 += (directory / "audit-w1.log").read_bytes()
    piped = subprocess.run(
        [*AUDIT, "query", "--format", "json", "-", f"{directory}/audit-w0.log*"],
        input=worker_1.decode(),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert json_ids(piped) == trail.made
    denied = subprocess.run(
        [*AUDIT, "query", "--denied", "--format", "json", "-"],
        input=worker_1.decode(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert json_ids(denied) == trail.ids(1, 3, 5)  # worker 1's: carol, bob, the anonymous


def test_since_and_until_window_the_trail(trail: Trail) -> None:
    cut = trail.cut.isoformat().replace("+00:00", "Z")
    assert query(trail.path, "--until", cut) == trail.made[: len(BEFORE)]
    assert query(trail.path, "--since", cut) == trail.made[len(BEFORE) :]
    after_first = query(trail.path, "--since", cut, "--until", "0s")
    assert after_first == trail.made[len(BEFORE) :]  # "0s" is now: after everything
    assert query(trail.path, "--since", "1h", "--until", cut, "--denied") == trail.ids(1, 3, 4)
    assert query(trail.path, "--since", "yesterday") == trail.made
    assert query(trail.path, "--until", "yesterday") == []


def test_an_exact_resource_beside_a_prefix(trail: Trail) -> None:
    assert query(trail.path, "--resource", AUDIT_1) == trail.ids(2, 6)
    assert query(trail.path, "--resource-prefix", AUDIT_1) == trail.ids(2, 6, 7, 9)
    assert query(trail.path, "--resource", ACME_PROD_US) == trail.ids(8)  # the list, only
    assert query(trail.path, "--resource", AUDIT_10, "--principal", CI) == trail.ids(9)
    assert query(trail.path, "--method", "CancelOperation", "--resource", AUDIT_1) == trail.ids(2)


def test_refusals_say_why(trail: Trail) -> None:
    table = opsgate("audit", "query", trail.path, "--denied")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[-2:] == ["RESOURCE", "REASON"]
    reasons = [row[header.index("RESOURCE") :].split("  ", 1)[1] for row in rows]
    assert reasons[0] == (
        "IAM_PERMISSION_DENIED: denied: 3 binding(s) on it or its ancestors include the "
        "permission, none grants it to user:carol@acme.example"
    )
    assert reasons[1] == (
        "IAM_PERMISSION_DENIED: denied: 2 binding(s) on it or its ancestors include the "
        "permission, none grants it to user:bob@acme.example"
    )
    assert BY_DENY_RULE.fullmatch(reasons[2])
    assert reasons[3] == "CREDENTIALS_MISSING: no authorization header"
    assert len(rows) == 4
    # The JSON lines are the records as written: the reason and its explanation in full.
    lines = opsgate("audit", "query", trail.path, "--denied", "--format", "json").stdout
    metadata = [json.loads(line)["protoPayload"]["metadata"] for line in lines.splitlines()]
    assert [m["reason"] for m in metadata] == [
        "IAM_PERMISSION_DENIED", "IAM_PERMISSION_DENIED", "IAM_PERMISSION_DENIED",
        "CREDENTIALS_MISSING",
    ]  # fmt: skip
    assert "by a deny rule on projects/acme-prod/locations/europe-west1" in metadata[2]["detail"]
    assert metadata[2]["decision"]["reason"] == metadata[2]["detail"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.log"], "missing.log: no such file"),
        (["tests"], "tests: is a directory"),
        (["'*.nothing-matches'"], "no file matches"),
        (["{trail}", "--since", "last tuesday"], "--since: 'last tuesday': expected a time"),
        (["{trail}", "--until", "2024-05-01T10:00:00"], "--until: .* has no time zone"),
        (["{trail}", "--since", "1h", "--until", "2h"], "--until .* is not after --since"),
    ],
    ids=["missing", "directory", "glob-matches-nothing", "bad-since", "naive-until", "backwards"],
)
def test_clear_errors_exit_2(trail: Trail, args: list[str], message: str) -> None:
    argv = [a.replace("{trail}", str(trail.path)).strip("'") for a in args]
    result = opsgate("audit", "query", *argv)
    assert result.returncode == 2
    assert re.fullmatch(f"opsgate: error: .*{message}.*\n", result.stderr), result.stderr
    assert result.stdout == ""


def test_tail_follow_needs_files(trail: Trail) -> None:
    result = opsgate("audit", "tail", "-f", "-")
    assert result.returncode == 2
    assert "standard input cannot be followed" in result.stderr


CLOSED_PIPE = {0, 128 + signal.SIGPIPE, -signal.SIGPIPE}  # quietly, or as SIGPIPE would end it


def test_a_reader_that_stops_reading_ends_the_query_quietly(trail: Trail, tmp_path: Path) -> None:
    # Far more than a pipe holds, so the query is still writing when the reader goes.
    big = tmp_path / "big.log"
    big.write_bytes(b"".join(p.read_bytes() for p in trail.path.parent.iterdir()) * 100)
    process = subprocess.Popen(
        [*AUDIT, "query", str(big)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline().startswith(b"TIME ")
    process.stdout.close()  # `| head -1`
    stderr = process.stderr.read().decode()
    assert process.wait(60) in CLOSED_PIPE
    assert stderr == ""


def test_the_shell_pipeline_to_head(trail: Trail, tmp_path: Path) -> None:
    big = tmp_path / "big.log"
    big.write_bytes(b"".join(p.read_bytes() for p in trail.path.parent.iterdir()) * 100)
    shell = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m gateway audit query --format json {big} | head -1; "
         'echo "status ${PIPESTATUS[0]}" >&2'],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert len(shell.stdout.splitlines()) == 1
    assert re.fullmatch(r"status (0|141)\n", shell.stderr), shell.stderr


@pytest.mark.timeout(60)
def test_tail_follows_every_worker_file_across_rotation(
    loop: LoopThread, identity: Identity, tmp_path: Path
) -> None:
    with two_workers(loop, identity, tmp_path) as workers:
        workers.call(0, "alice@acme.example", "get", DONE_OPERATION)
        workers.call(1, "carol@acme.example", "get", DONE_OPERATION)
        process = subprocess.Popen(
            [*AUDIT, "tail", "-f", "-n", "1", "--format", "json", str(workers.path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert process.stdout is not None
            first = json.loads(process.stdout.readline())["insertId"]
            for number in range(6):  # enough to rotate both workers' files again
                workers.call(number % 2, "alice@acme.example", "get", AUDIT_1)
                workers.written(workers.made[-1])  # so the follower meets them in call order
            followed = [json.loads(process.stdout.readline())["insertId"] for _ in range(6)]
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(10)
    assert first == workers.made[1]
    assert followed == workers.made[2:]
