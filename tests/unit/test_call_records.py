"""Per-call bookkeeping: request ids, what a Call derives for the record, metrics labels."""

from __future__ import annotations

import os
import re

from prometheus_client import CollectorRegistry

from gateway.call import caller_ip, new_request_id
from gateway.errors import StatusCode
from gateway.observability.metrics import UNKNOWN_METHOD, CallMetrics
from gateway.outcome import CallOutcome
from tests.support.calls import a_call

GET = "/google.longrunning.Operations/GetOperation"


def test_request_ids_are_32_hex_digits_and_never_repeat() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", request_id) for request_id in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_worker_draws_its_own_request_ids() -> None:
    parent = new_request_id()
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: as `serve --workers N` forks its workers
        os.write(writer, new_request_id().encode())
        os._exit(0)
    os.close(writer)
    child = os.read(reader, 64).decode()
    os.close(reader)
    os.waitpid(pid, 0)
    assert re.fullmatch(r"[0-9a-f]{32}", child)
    assert child[:16] != parent[:16]  # a fresh random prefix, not the parent's counter


def test_the_record_gets_the_callers_ip_and_trace_ids_parsed_from_what_was_received() -> None:
    call = a_call(
        GET,
        (("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),),
        address="ipv6:%5B::1%5D:5555",
    )
    assert call.peer == "::1"
    assert call.trace == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    assert a_call(GET).trace == (None, None)
    assert caller_ip("ipv4:10.1.2.3:443") == "10.1.2.3"
    assert caller_ip("unix:/run/opsgate.sock") == "unix:/run/opsgate.sock"
    assert caller_ip(None) is None


def _count(registry: CollectorRegistry, method: str, code: str) -> float | None:
    return registry.get_sample_value(
        "opsgate_calls_total", {"method": method, "code": code, "decision": "none"}
    )


def test_metrics_label_paths_nobody_serves_as_one_method() -> None:
    registry = CollectorRegistry()
    metrics = CallMetrics(registry)
    for index in range(50):  # a caller inventing paths must not invent metric series
        call = a_call(f"/evil.Service/Method{index}")
        metrics.record(CallOutcome(call, StatusCode.UNIMPLEMENTED, "", 0.001))
    metrics.record(CallOutcome(a_call(GET), StatusCode.UNAUTHENTICATED, "", 0.001))
    metrics.record(CallOutcome(a_call(GET), StatusCode.UNAUTHENTICATED, "", 0.001))
    assert _count(registry, UNKNOWN_METHOD, "UNIMPLEMENTED") == 50
    assert _count(registry, "GetOperation", "UNAUTHENTICATED") == 2
    series = {
        sample.labels["method"]
        for family in registry.collect()
        if family.name == "opsgate_calls"
        for sample in family.samples
    }
    assert series == {UNKNOWN_METHOD, "GetOperation"}


GRPC_GET = {
    "grpc_type": "unary",
    "grpc_service": "google.longrunning.Operations",
    "grpc_method": "GetOperation",
}
GRPC_UNKNOWN = {"grpc_type": "unknown", "grpc_service": "unknown", "grpc_method": "unknown"}


def test_grpc_server_metrics_label_paths_nobody_serves_as_one_series() -> None:
    registry = CollectorRegistry()
    value = registry.get_sample_value
    metrics = CallMetrics(registry)
    for index in range(50):  # a caller inventing paths must not invent metric series
        call = a_call(f"/evil.Service/Method{index}")
        metrics.start(call)
        metrics.record(CallOutcome(call, StatusCode.UNIMPLEMENTED, "", 0.001))
    call = a_call(GET)
    metrics.start(call)
    assert value("grpc_server_started_total", GRPC_GET) == 1
    assert value("grpc_server_handled_total", {**GRPC_GET, "grpc_code": "OK"}) is None
    metrics.record(CallOutcome(call, StatusCode.OK, "", 0.2))
    assert value("grpc_server_started_total", GRPC_UNKNOWN) == 50
    assert value("grpc_server_handled_total", {**GRPC_UNKNOWN, "grpc_code": "UNIMPLEMENTED"}) == 50
    assert value("grpc_server_handled_total", {**GRPC_GET, "grpc_code": "OK"}) == 1
    assert value("grpc_server_handling_seconds_bucket", {**GRPC_GET, "le": "0.25"}) == 1
    assert value("grpc_server_handling_seconds_bucket", {**GRPC_GET, "le": "0.1"}) == 0
    assert value("grpc_server_msg_received_total", GRPC_GET) == 1
    assert value("grpc_server_msg_sent_total", GRPC_GET) == 1
    assert value("grpc_server_msg_received_total", GRPC_UNKNOWN) is None  # none was read
    series = {
        tuple(sorted(sample.labels.items()))
        for family in registry.collect()
        if family.name.startswith("grpc_server_")
        for sample in family.samples
        if "le" not in sample.labels and "grpc_code" not in sample.labels
    }
    assert series == {tuple(sorted(GRPC_UNKNOWN.items())), tuple(sorted(GRPC_GET.items()))}
