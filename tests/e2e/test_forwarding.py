"""Through the gateway, every Operations call gives what the upstream gives when called directly."""

from __future__ import annotations

import time

import grpc
import pytest
from google.api_core import exceptions as core_exceptions
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.stack import Stack

PARENT = "projects/acme/locations/us-central1"
VIEW_PARENT = f"{PARENT}/authorizedViewSets/support/authorizedViews/tier1"


def _create(stack: Stack, name: str, *, finish_after: float | None = None) -> None:
    stack.upstream.store.create(name, finish_after=finish_after)


def _status_details(err: grpc.RpcError) -> bytes | None:
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return value
    return None


def test_get_matches_direct(stack: Stack) -> None:
    _create(stack, f"{PARENT}/operations/1")
    through = stack.via_gateway().get_operation(f"{PARENT}/operations/1")
    direct = stack.direct().get_operation(f"{PARENT}/operations/1")
    assert through == direct
    assert through.name == f"{PARENT}/operations/1"


def test_list_pages_and_filters_match_direct(stack: Stack) -> None:
    for i in range(120):  # more than the upstream's default page size, so the client pages
        _create(stack, f"{PARENT}/operations/{i:04d}", finish_after=None if i % 3 else 3600)
    _create(stack, f"{VIEW_PARENT}/operations/9")

    pages = list(stack.via_gateway().list_operations(PARENT, "").pages)
    assert len(pages) >= 3
    through = [op for page in pages for op in page]
    direct = list(stack.direct().list_operations(PARENT, ""))
    assert through == direct
    assert len(through) == 120

    running = list(stack.via_gateway().list_operations(PARENT, "done=false"))
    assert running == list(stack.direct().list_operations(PARENT, "done=false"))
    assert running and not any(op.done for op in running)
    assert [op.name for op in stack.via_gateway().list_operations(VIEW_PARENT, "")] == [
        f"{VIEW_PARENT}/operations/9"
    ]


def test_list_with_explicit_page_size_through_raw_stub(stack: Stack) -> None:
    for i in range(5):
        _create(stack, f"{PARENT}/operations/{i}")
    stub = operations_pb2_grpc.OperationsStub(stack.gateway_channel)
    seen: list[str] = []
    token = ""
    while True:
        page = stub.ListOperations(
            operations_pb2.ListOperationsRequest(name=PARENT, page_size=2, page_token=token)
        )
        assert len(page.operations) <= 2
        seen.extend(op.name for op in page.operations)
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"{PARENT}/operations/{i}" for i in range(5)]


def test_cancel_then_get_shows_cancelled(stack: Stack) -> None:
    name = f"{PARENT}/operations/long"
    _create(stack, name, finish_after=3600)
    stack.via_gateway().cancel_operation(name)
    op = stack.via_gateway().get_operation(name)
    assert op.done
    assert op.error.code == code_pb2.CANCELLED
    assert op == stack.direct().get_operation(name)


def test_delete_then_get_is_not_found(stack: Stack) -> None:
    name = f"{PARENT}/operations/gone"
    _create(stack, name)
    stack.via_gateway().delete_operation(name)
    with pytest.raises(core_exceptions.NotFound):
        stack.via_gateway().get_operation(name)


def test_wait_waits_for_a_delayed_operation(stack: Stack) -> None:
    name = f"{PARENT}/operations/soon"
    _create(stack, name, finish_after=0.5)
    stub = operations_pb2_grpc.OperationsStub(stack.gateway_channel)
    op = stub.WaitOperation(
        operations_pb2.WaitOperationRequest(name=name, timeout=duration_pb2.Duration(seconds=10)),
        timeout=10,
    )
    assert op.done


def test_not_found_arrives_exactly_as_the_upstream_sent_it(stack: Stack) -> None:
    stub_via = operations_pb2_grpc.OperationsStub(stack.gateway_channel)
    stub_direct = operations_pb2_grpc.OperationsStub(stack.upstream_channel)
    request = operations_pb2.GetOperationRequest(name=f"{PARENT}/operations/missing")
    with pytest.raises(grpc.RpcError) as via:
        stub_via.GetOperation(request)
    with pytest.raises(grpc.RpcError) as direct:
        stub_direct.GetOperation(request)
    assert via.value.code() == direct.value.code() == grpc.StatusCode.NOT_FOUND
    assert via.value.details() == direct.value.details()
    assert _status_details(via.value) == _status_details(direct.value)


def test_custom_status_with_details_arrives_unchanged(stack: Stack) -> None:
    name = f"{PARENT}/operations/faulty"
    _create(stack, name)
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(reason="QUOTA", domain="example.com", metadata={"a": "b"})
    )
    retry = any_pb2.Any()
    retry.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=7)))
    fault = status_pb2.Status(
        code=code_pb2.RESOURCE_EXHAUSTED,
        message="Quota exhausted: ünïcode ok.",
        details=[info, retry],
    )
    stack.upstream.store.inject_fault(name, fault)
    stub = operations_pb2_grpc.OperationsStub(stack.gateway_channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.GetOperation(operations_pb2.GetOperationRequest(name=name))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.value.details() == fault.message
    assert status_pb2.Status.FromString(_status_details(err.value) or b"") == fault


def test_client_metadata_reaches_the_upstream(stack: Stack) -> None:
    name = f"{PARENT}/operations/md"
    _create(stack, name)
    stack.via_gateway().get_operation(
        name, metadata=[("x-team", "payments"), ("x-bin", b"\x00\x01")]
    )
    record = [c for c in stack.upstream.calls() if c.name == name][-1]
    received = dict(record.metadata)
    assert received["x-team"] == "payments"
    assert received["x-bin"] == b"\x00\x01"
    assert received["x-goog-request-params"].startswith("name=")


def test_garbage_body_is_invalid_argument_and_gateway_keeps_serving(stack: Stack) -> None:
    raw = stack.gateway_channel.unary_unary("/google.longrunning.Operations/GetOperation")
    for garbage in (b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x0a\x02\xc3\x28"):
        with pytest.raises(grpc.RpcError) as err:
            raw(garbage, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "GetOperationRequest" in err.value.details()
    assert not [c for c in stack.upstream.calls() if c.method.endswith("GetOperation")]
    _create(stack, f"{PARENT}/operations/after")
    assert stack.via_gateway().get_operation(f"{PARENT}/operations/after").name.endswith("after")


@pytest.mark.parametrize(
    "method",
    ["/google.longrunning.Operations/Nope", "/acme.Unknown/GetOperation", "/x/y"],
    ids=["unknown-method", "unknown-service", "short-path"],
)
def test_unknown_methods_are_unimplemented(stack: Stack, method: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stack.gateway_channel.unary_unary(method)(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert not stack.upstream.calls()


def test_health_service_reports_serving_once_keys_are_loaded(stack: Stack) -> None:
    stub = health_pb2_grpc.HealthStub(stack.gateway_channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    deadline = time.monotonic() + 5
    while stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status != serving:
        assert time.monotonic() < deadline, "readiness never turned SERVING"
        time.sleep(0.05)
    for service in ("", "google.longrunning.Operations", "opsgate.liveness"):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == serving
