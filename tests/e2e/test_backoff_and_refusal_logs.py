"""Back off, and say why, through the real `opsgate serve` at its default log level.

A real key endpoint on 127.0.0.1 that answers 503 and records when it is asked: the gateway's
retries come at growing, jittered gaps (not every 2 s), its log says once that the keys are
unavailable and once that they are back, calls in the outage get UNAVAILABLE, and the fetch
metrics count every attempt. Then refusals of every kind, through the gRPC and REST doors: the
log sums them up per reason, at most one line per interval, naming no token.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc

from gateway.reference_upstream import ReferenceUpstream
from gateway.testing.loop import LoopThread
from gateway.testing.ports import free_port
from gateway.testing.processes import ServerProcess, gateway_process
from gateway.testing.tokens import SigningKey, claims, jwks, rsa_key
from gateway.testing.upstream import running_upstream

ISSUER = "https://idp.backoff.test"
AUDIENCE = "opsgate-backoff"
NAME = "projects/acme/locations/us-central1/operations/backoff"
INITIAL_S, MAX_S = 0.1, 3.2  # the issuer's jwks_retry_initial_s and jwks_retry_max_s
SLACK_S = 0.5  # a gap may exceed its bound by the time a 503 takes to arrive, and scheduling
POLICY = """
allow:
  - resource: projects/acme
    bindings:
      - role: roles/contactcenterinsights.viewer
        members: [allAuthenticatedUsers]
"""
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class KeyEndpoint:
    """A JWKS endpoint on 127.0.0.1:0: 503 while `down`, the key set otherwise; it records the
    monotonic time of every request and whether it was down then."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = json.dumps(document).encode()
        self.down = True
        self.requests: list[tuple[float, bool]] = []
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with endpoint._lock:
                    down = endpoint.down
                    endpoint.requests.append((time.monotonic(), down))
                status, body = (503, b'{"error": "down"}') if down else (200, endpoint.document)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/jwks"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def up(self) -> None:
        with self._lock:
            self.down = False

    def failed_times(self) -> list[float]:
        with self._lock:
            return [when for when, down in self.requests if down]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def signer() -> SigningKey:
    return rsa_key("RS256")


@pytest.fixture
def keys(signer: SigningKey) -> Iterator[KeyEndpoint]:
    endpoint = KeyEndpoint(jwks(signer))
    try:
        yield endpoint
    finally:
        endpoint.close()


@pytest.fixture
def upstream(loop: LoopThread) -> Iterator[ReferenceUpstream]:
    with running_upstream(loop, seed=False) as upstream:
        upstream.store.create(NAME)
        yield upstream


@contextmanager
def serving(
    tmp_path: Path, keys: KeyEndpoint, upstream: ReferenceUpstream, extra: str = ""
) -> Iterator[tuple[ServerProcess, int]]:
    """`opsgate serve` at the default log level (info, JSON lines) trusting `keys`; yields the
    process and its metrics port, and stops it (SIGTERM) on the way out."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    metrics_port = free_port()
    config = tmp_path / "opsgate.yaml"
    config.write_text(
        "listen: 127.0.0.1:0\n"
        f"upstream: {{target: {upstream.address}}}\n"
        f"metrics: {{listen: 127.0.0.1:{metrics_port}}}\n"
        f"audit: {{sink: file, file: {{path: {tmp_path / 'audit.log'}, fsync: never}}}}\n"
        f"{extra}"
        "authentication:\n"
        "  issuers:\n"
        f"    - issuer: {ISSUER}\n"
        f"      audiences: [{AUDIENCE}]\n"
        f"      jwks_uri: {keys.url}\n"
        f"      jwks_retry_initial_s: {INITIAL_S}\n"
        f"      jwks_retry_max_s: {MAX_S}\n"
        f"authorization:\n  policy_file: {policy}\n"
    )
    process = gateway_process(config)
    try:
        yield process, metrics_port
        assert process.stop(30) == 0, process.log_tail()
    finally:
        process.kill()


def log_entries(process: ServerProcess) -> list[dict[str, Any]]:
    entries = []
    for line in process.lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # gRPC's own stderr, if any
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def get(address: str, token: str | None, name: str = NAME) -> str:
    """GetOperation; the status code's name."""
    return _call(address, "GetOperation", operations_pb2.GetOperationRequest(name=name), token)


def cancel(address: str, token: str | None) -> str:
    return _call(
        address, "CancelOperation", operations_pb2.CancelOperationRequest(name=NAME), token
    )


def _call(address: str, method: str, request: Any, token: str | None) -> str:
    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(address) as channel:
        stub = operations_pb2_grpc.OperationsStub(channel)
        try:
            getattr(stub, method)(request, metadata=metadata, timeout=10)
        except grpc.RpcError as err:
            return str(err.code().name)
    return "OK"


def wait_for(condition: Any, timeout: float, what: str, process: ServerProcess) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"not {what} after {timeout}s\n{process.log_tail(40)}")


def metric(port: int, name: str) -> float:
    with _OPENER.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    match = re.search(rf'^{re.escape(name)}\{{issuer="{re.escape(ISSUER)}"\}} (\S+)$', text, re.M)
    assert match, f"{name} not in\n{text}"
    return float(match.group(1))


def test_a_key_endpoint_that_is_down_is_retried_with_growing_gaps_and_logged_twice(
    tmp_path: Path, keys: KeyEndpoint, upstream: ReferenceUpstream, signer: SigningKey
) -> None:
    token = signer.sign(claims(ISSUER, AUDIENCE))
    with serving(tmp_path, keys, upstream) as (gateway, metrics_port):
        # Calls in the outage are refused as before: the gateway could not check the token.
        assert [get(gateway.address, token) for _ in range(3)] == ["UNAVAILABLE"] * 3
        wait_for(lambda: len(keys.failed_times()) >= 10, 60, "ten attempts", gateway)
        keys.up()
        wait_for(lambda: get(gateway.address, token) == "OK", 10, "serving again", gateway)
        failures = len(keys.failed_times())
        assert metric(metrics_port, "opsgate_jwks_fetch_failures_total") == failures
        assert metric(metrics_port, "opsgate_jwks_fetches_total") == len(keys.requests)

    times = keys.failed_times()
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    bounds = [min(MAX_S, INITIAL_S * 2**i) for i in range(len(gaps))]
    print("gaps between attempts (s):", " ".join(f"{gap:.2f}" for gap in gaps))
    print("their bounds (s):         ", " ".join(f"{bound:.2f}" for bound in bounds))
    # Full jitter: each gap anywhere in [0, its bound]; the bounds double up to the cap.
    assert all(gap <= bound + SLACK_S for gap, bound in zip(gaps, bounds, strict=True)), gaps
    # The gaps grow: the first three (bounds 0.1, 0.2, 0.4 s) together are shorter than the
    # four at the cap (3.2 s each): a miss has odds of about one in a million.
    assert sum(gaps[:3]) < sum(gaps[5:9]), gaps

    entries = log_entries(gateway)
    about_keys = [e for e in entries if e["message"].startswith(f"keys for {ISSUER} ")]
    warning, recovered = about_keys  # one line when it failed, one when it was back
    assert warning["message"] == (
        f"keys for {ISSUER} unavailable: {keys.url} answered HTTP 503; "
        "no keys yet: its tokens get UNAVAILABLE; retrying with backoff"
    )
    assert recovered["severity"] == "INFO"
    assert re.fullmatch(
        rf"keys for {re.escape(ISSUER)} fetched again after {failures} failures / \d+ s",
        recovered["message"],
    )
    # Nothing else about the outage at warning level: no line per attempt.
    assert [e for e in entries if e["severity"] == "WARNING"] == [warning]
    # The refused calls were summed up too, the first at once.
    [summary] = [e for e in entries if e["logger"] == "opsgate.refusals"]
    assert summary["message"].startswith("refused 1 call in the last 1s: 1 AUTHENTICATION_BACKEND_")


def test_refusals_are_summed_up_per_reason_at_most_once_per_interval(
    tmp_path: Path, keys: KeyEndpoint, upstream: ReferenceUpstream, signer: SigningKey
) -> None:
    keys.up()
    now = int(time.time())
    good = signer.sign(claims(ISSUER, AUDIENCE))
    expired = signer.sign(claims(ISSUER, AUDIENCE, iat=now - 1200, exp=now - 600))
    rest_port = free_port()
    extra = f"log_refusal_summary_interval_s: 1\nrest: {{listen: 127.0.0.1:{rest_port}}}\n"
    with serving(tmp_path, keys, upstream, extra) as (gateway, _):
        wait_for(lambda: get(gateway.address, good) == "OK", 30, "serving", gateway)
        assert [cancel(gateway.address, good) for _ in range(5)] == ["PERMISSION_DENIED"] * 5
        assert [get(gateway.address, expired) for _ in range(3)] == ["UNAUTHENTICATED"] * 3
        assert [rest_get(rest_port, None) for _ in range(2)] == [401, 401]
        assert get(gateway.address, good) == "OK"  # not a refusal
        time.sleep(1.5)  # the interval ends: the rest is summed up without another refusal

    summaries = [e for e in log_entries(gateway) if e["logger"] == "opsgate.refusals"]
    assert all(e["severity"] == "INFO" for e in summaries)
    messages = [e["message"] for e in summaries]
    assert len(messages) == 2, messages
    assert messages[0] == (
        "refused 1 call in the last 1s: 1 IAM_PERMISSION_DENIED (top: user:alice@example.com, "
        f"contactcenterinsights.operations.cancel on {NAME}: "
        + messages[0].split(f"on {NAME}: ", 1)[1]
    )
    assert messages[1].startswith("refused 9 calls in the last ")
    assert reasons(messages) == {
        "IAM_PERMISSION_DENIED": 5,
        "ACCESS_TOKEN_EXPIRED": 3,
        "CREDENTIALS_MISSING": 2,
    }
    # At most one line per interval.
    first, second = (_when(e["time"]) for e in summaries)
    assert second - first >= 0.99
    # Never a token, nor any of its three parts, anywhere in the log.
    log = "".join(gateway.lines)
    for token in (good, expired):
        for part in (token, *token.split(".")):
            assert part not in log


def reasons(messages: list[str]) -> dict[str, int]:
    counted: Counter[str] = Counter()
    for message in messages:
        body = message.split(": ", 1)[1]
        for count, reason in re.findall(r"(?:^|\), |, )(\d+) ([A-Z][A-Z0-9_]+)", body):
            counted[reason] += int(count)
    return dict(counted)


def _when(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def rest_get(port: int, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/{NAME}", headers=headers)
    try:
        with _OPENER.open(request, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
