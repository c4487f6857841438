"""Metrics after a known mix of calls; readiness follows the keys; JSON logs carry request ids."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from google.api_core import exceptions as core_exceptions
from google.api_core import operations_v1
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import MetricsSettings, load_settings
from gateway.observability.health import LIVENESS_SERVICE
from gateway.observability.logs import JsonFormatter
from gateway.reference_upstream import ReferenceUpstream
from gateway.reference_upstream.seed import DONE_OPERATION
from gateway.server import Gateway, start_gateway
from gateway.testing.idp import local_idp
from gateway.testing.loop import LoopThread
from gateway.testing.tokens import jwks
from tests.support.bearer import with_bearer
from tests.support.stack import (
    AUDIENCE,
    EXAMPLE_POLICY,
    ISSUER,
    Identity,
    Stack,
    gateway_settings,
    quiet_audit_yaml,
)


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _get(client: operations_v1.OperationsClient, name: str) -> str:
    try:
        client.get_operation(name, retry=None, timeout=10)
    except core_exceptions.GoogleAPICallError as err:
        return err.grpc_status_code.name
    return "OK"


def test_metrics_count_a_known_mix_of_calls(
    loop: LoopThread, upstream: ReferenceUpstream, identity: Identity
) -> None:
    settings = dataclasses.replace(
        gateway_settings(upstream.address, identity, EXAMPLE_POLICY),
        metrics=MetricsSettings(listen="127.0.0.1:0"),
    )
    gateway: Gateway = loop.run(start_gateway(settings))
    try:
        channel = grpc.insecure_channel(gateway.address)
        alice = operations_v1.OperationsClient(
            with_bearer(channel, identity.token(email="alice@acme.example"))
        )
        carol = operations_v1.OperationsClient(
            with_bearer(channel, identity.token(email="carol@acme.example"))
        )
        nobody = operations_v1.OperationsClient(with_bearer(channel, None))
        assert [_get(alice, DONE_OPERATION) for _ in range(3)] == ["OK"] * 3
        assert [_get(carol, DONE_OPERATION) for _ in range(2)] == ["PERMISSION_DENIED"] * 2
        assert _get(nobody, DONE_OPERATION) == "UNAUTHENTICATED"
        channel.close()
        assert gateway.pipeline.audit.writer.flush(10)
        metrics = _scrape(gateway.metrics.port)
    finally:
        loop.run(gateway.stop(0))

    def calls(code: str, decision: str) -> float:
        labels = (("code", code), ("decision", decision), ("method", "GetOperation"))
        return metrics.get(("opsgate_calls_total", labels), 0.0)

    assert calls("OK", "allow") == 3
    assert calls("PERMISSION_DENIED", "deny") == 2
    assert calls("UNAUTHENTICATED", "none") == 1
    get = (("method", "GetOperation"),)
    assert metrics[("opsgate_gateway_latency_seconds_count", get)] == 6
    assert metrics[("opsgate_upstream_latency_seconds_count", get)] == 3  # only allowed calls
    assert metrics[("opsgate_token_cache_misses_total", ())] == 2  # alice's and carol's token
    assert metrics[("opsgate_token_cache_hits_total", ())] == 3
    assert metrics[("opsgate_decision_cache_misses_total", ())] == 2
    assert metrics[("opsgate_decision_cache_hits_total", ())] == 3
    assert metrics[("opsgate_jwks_fetches_total", (("issuer", ISSUER),))] >= 1
    assert metrics[("opsgate_audit_records_written_total", ())] == 6
    assert metrics[("opsgate_audit_records_dropped_total", ())] == 0
    assert metrics[("opsgate_in_flight_calls", ())] == 0
    etag = gateway.pipeline.policies.current.etag
    assert metrics[("opsgate_policy_info", (("etag", etag),))] == 1
    assert (
        metrics[("opsgate_policy_reloads_total", (("policy", "enforced"), ("result", "rejected")))]
        == 0
    )


def _status(channel: grpc.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def test_readiness_waits_for_keys_liveness_does_not(
    loop: LoopThread, upstream: ReferenceUpstream, identity: Identity, tmp_path: Path
) -> None:
    with local_idp() as idp:
        idp.serve_json("/jwks", jwks(identity.key))
        idp.down = True
        config = tmp_path / "opsgate.yaml"
        config.write_text(
            f"listen: 127.0.0.1:0\nupstream:\n  target: {upstream.address}\n"
            f"authentication:\n  issuers:\n    - issuer: {ISSUER}\n"
            f"      audiences: [{AUDIENCE}]\n      jwks_uri: {idp.url('/jwks')}\n"
            "      jwks_min_refresh_interval_s: 0.1\n"
            f"authorization:\n  policy_file: {EXAMPLE_POLICY}\n" + quiet_audit_yaml(tmp_path)
        )
        gateway = loop.run(start_gateway(load_settings(config)))
        try:
            with grpc.insecure_channel(gateway.address) as channel:
                time.sleep(0.5)
                not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
                serving = health_pb2.HealthCheckResponse.SERVING
                assert _status(channel, "") == not_serving  # no keys yet: not ready
                assert _status(channel, "google.longrunning.Operations") == not_serving
                assert _status(channel, "opsgate.liveness") == serving  # but alive
                idp.down = False  # the key endpoint comes back; no call is needed to notice
                deadline = time.monotonic() + 10
                while _status(channel, "") != serving:
                    assert time.monotonic() < deadline, "readiness never followed the keys"
                    time.sleep(0.1)
        finally:
            loop.run(gateway.stop(0))


def test_json_logs_carry_the_request_id(
    loop: LoopThread, upstream: ReferenceUpstream, identity: Identity
) -> None:
    records: list[str] = []
    handler = logging.Handler()
    handler.setFormatter(JsonFormatter())
    handler.emit = lambda record: records.append(handler.format(record))  # type: ignore[method-assign]
    access = logging.getLogger("opsgate.access")
    access.addHandler(handler)
    previous = access.level
    access.setLevel(logging.DEBUG)
    gateway = loop.run(start_gateway(gateway_settings(upstream.address, identity, EXAMPLE_POLICY)))
    try:
        with grpc.insecure_channel(gateway.address) as channel:
            token = identity.token(email="alice@acme.example")
            stub_client = operations_v1.OperationsClient(with_bearer(channel, token))
            assert _get(stub_client, DONE_OPERATION) == "OK"
    finally:
        loop.run(gateway.stop(0))
        access.removeHandler(handler)
        access.setLevel(previous)
    entries = [json.loads(line) for line in records]
    assert entries and all(set(e) >= {"time", "severity", "logger", "message"} for e in entries)
    assert any(len(e.get("request_id", "")) == 32 for e in entries)
    assert "Bearer" not in "".join(records)


def test_a_health_check_body_that_is_not_a_request_is_invalid_argument(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    # Found by the hardening suite's raw HTTP/2 attack: grpc logged the deserializer's
    # DecodeError as a servicer crash and answered UNKNOWN.
    for method in ("Check", "Watch"):
        path = f"/grpc.health.v1.Health/{method}"
        call = (
            stack.raw_gateway_channel.unary_unary(path)
            if method == "Check"
            else stack.raw_gateway_channel.unary_stream(path)
        )
        with caplog.at_level(logging.ERROR), pytest.raises(grpc.RpcError) as refused:
            result = call(b"\x0a\xff\xff\xff", timeout=5)
            if method == "Watch":
                next(iter(result))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
        assert refused.value.details() == (
            "Invalid request: the body is not a valid grpc.health.v1.HealthCheckRequest."
        )
    assert not [r for r in caplog.records if "Unexpected" in r.getMessage()]
    stub = health_pb2_grpc.HealthStub(stack.raw_gateway_channel)
    answer = stub.Check(health_pb2.HealthCheckRequest(service=LIVENESS_SERVICE), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
