"""The Operations servicer over a real grpc.aio server on 127.0.0.1, called with a real channel."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.api_core import operations_v1
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import any_pb2, duration_pb2, struct_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from gateway.reference_upstream import ReferenceUpstream, start_reference_upstream
from gateway.testing.loop import LoopThread

LOCATION = "projects/p/locations/l"
VIEW = f"{LOCATION}/authorizedViewSets/s/authorizedViews/v"
OTHER_LOCATION = "projects/p/locations/other"


def _name(op_id: int | str, parent: str = LOCATION) -> str:
    return f"{parent}/operations/{op_id}"


@pytest.fixture
def upstream(loop: LoopThread) -> Iterator[ReferenceUpstream]:
    started = loop.run(start_reference_upstream(seed=False))
    yield started
    loop.run(started.stop())


@pytest.fixture
def stub(upstream: ReferenceUpstream) -> Iterator[operations_pb2_grpc.OperationsStub]:
    with grpc.insecure_channel(upstream.address) as channel:
        yield operations_pb2_grpc.OperationsStub(channel)


def _fails_with(call: Callable[[], Any], code: grpc.StatusCode) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    assert raised.value.code() == code, raised.value.details()
    return raised.value


def _list(stub: operations_pb2_grpc.OperationsStub, **fields: Any) -> list[str]:
    response = stub.ListOperations(operations_pb2.ListOperationsRequest(**fields))
    return [op.name for op in response.operations]


def test_get_returns_the_operation(
    upstream: ReferenceUpstream, stub: operations_pb2_grpc.OperationsStub
) -> None:
    metadata = any_pb2.Any()
    metadata.Pack(struct_pb2.Struct(fields={"verb": struct_pb2.Value(string_value="create")}))
    created = upstream.store.create(_name(1), metadata=metadata)
    assert stub.GetOperation(operations_pb2.GetOperationRequest(name=_name(1))) == created


@pytest.mark.parametrize(
    "method",
    ["GetOperation", "CancelOperation", "DeleteOperation", "WaitOperation"],
    ids=["get", "cancel", "delete", "wait"],
)
def test_unknown_operation_is_not_found(
    upstream: ReferenceUpstream, stub: operations_pb2_grpc.OperationsStub, method: str
) -> None:
    request_type = getattr(operations_pb2, f"{method}Request")
    error = _fails_with(
        lambda: getattr(stub, method)(request_type(name=_name(404))), grpc.StatusCode.NOT_FOUND
    )
    assert error.details() == f"Operation '{_name(404)}' not found."
    record = upstream.calls()[-1]
    assert (record.method, record.name, record.outcome) == (method, _name(404), "NOT_FOUND")


def test_list_only_returns_operations_directly_under_the_parent(
    upstream: ReferenceUpstream, stub: operations_pb2_grpc.OperationsStub
) -> None:
    for name in (_name(2), _name(1), _name(3, VIEW), _name(4, OTHER_LOCATION)):
        upstream.store.create(name)
    assert _list(stub, name=LOCATION) == [_name(1), _name(2)]
    assert _list(stub, name=VIEW) == [_name(3, VIEW)]
    assert _list(stub, name="projects/p/locations/empty") == []


@pytest.mark.parametrize(
    ("filter_text", "expected_ids"),
    [("", [1, 2, 3]), ("done=true", [1, 3]), (" done = FALSE ", [2])],
    ids=["none", "done", "running-spaced-upper"],
)
def test_list_filters_on_done(
    upstream: ReferenceUpstream,
    stub: operations_pb2_grpc.OperationsStub,
    filter_text: str,
    expected_ids: list[int],
) -> None:
    upstream.store.create(_name(1))
    upstream.store.create(_name(2), finish_after=math.inf)
    upstream.store.create(_name(3), error=status_pb2.Status(code=13, message="boom"))
    assert _list(stub, name=LOCATION, filter=filter_text) == [_name(i) for i in expected_ids]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"filter": "metadata.verb=create"}, "'metadata.verb=create'"),
        ({"page_size": -1}, "page_size"),
        ({"page_token": "bm90LWEtdG9rZW4"}, "Invalid page token."),
    ],
    ids=["unsupported-filter", "negative-page-size", "garbled-token"],
)
def test_list_rejects_bad_requests(
    stub: operations_pb2_grpc.OperationsStub, fields: dict[str, Any], message: str
) -> None:
    error = _fails_with(
        lambda: _list(stub, name=LOCATION, **fields), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert message in error.details()


def _collect_pages(
    stub: operations_pb2_grpc.OperationsStub,
    between_pages: Callable[[int], None] = lambda page: None,
    **fields: Any,
) -> list[list[str]]:
    pages: list[list[str]] = []
    token = ""
    while True:
        request = operations_pb2.ListOperationsRequest(page_token=token, **fields)
        response = stub.ListOperations(request)
        pages.append([op.name for op in response.operations])
        token = response.next_page_token
        if not token:
            return pages
        between_pages(len(pages))


def test_paging_returns_every_operation_exactly_once(
    upstream: ReferenceUpstream, stub: operations_pb2_grpc.OperationsStub
) -> None:
    names = [_name(op_id) for op_id in range(100, 107)]
    for name in names:
        upstream.store.create(name)
    pages = _collect_pages(stub, name=LOCATION, page_size=2)
    assert [len(page) for page in pages] == [2, 2, 2, 1]
    assert [name for page in pages for name in page] == names


def test_paging_is_stable_when_operations_are_added_between_pages(
    upstream: ReferenceUpstream, stub: operations_pb2_grpc.OperationsStub
) -> None:
    names = [_name(op_id) for op_id in range(100, 106)]
    for name in names:
        upstream.store.create(name)

    def add_operations(page: int) -> None:
        # One sorts before the cursor (skipped: already paged past), one after (picked up).
        upstream.store.create(_name(f"000{page}"))
        upstream.store.create(_name(f"999{page}"))

    seen = [
        name
        for page in _collect_pages(stub, add_operations, name=LOCATION, page_size=2)
        for name in page
    ]
    assert len(seen) == len(set(seen))
    assert [name for name in seen if name in names] == names
    assert {_name("0001"), _name("0002")}.isdisjoint(seen)


def test_last_page_has_no_token_even_when_exactly_full(
    upstream: ReferenceUpstream, stub: operations_pb2_grpc.OperationsStub
) -> None:
    for op_id in range(4):
        upstream.store.create(_name(op_id))
    pages = _collect_pages(stub, name=LOCATION, page_size=2)
    assert [len(page) for page in pages] == [2, 2]


@pytest.mark.parametrize(
    "second_request",
    [{"name": LOCATION, "filter": "done=true"}, {"name": OTHER_LOCATION}],
    ids=["other-filter", "other-parent"],
)
def test_page_token_is_only_valid_for_its_parent_and_filter(
    upstream: ReferenceUpstream,
    stub: operations_pb2_grpc.OperationsStub,
    second_request: dict[str, str],
) -> None:
    for op_id in range(3):
        upstream.store.create(_name(op_id))
    first = stub.ListOperations(operations_pb2.ListOperationsRequest(name=LOCATION, page_size=1))
    assert first.next_page_token
    error = _fails_with(
        lambda: _list(stub, page_token=first.next_page_token, **second_request),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert error.details() == "Invalid page token."


def test_google_api_core_operations_client_pages_through_everything(
    upstream: ReferenceUpstream,
) -> None:
    names = [_name(op_id) for op_id in range(1000, 1120)]  # more than two default pages
    for name in names:
        upstream.store.create(name)
    with grpc.insecure_channel(upstream.address) as channel:
        client = operations_v1.OperationsClient(channel)
        listed = [op.name for op in client.list_operations(LOCATION, "done=true")]
    assert listed == names
    assert sum(call.method == "ListOperations" for call in upstream.calls()) == 3


def test_cancel_marks_a_running_operation_cancelled_for_good(
    upstream: ReferenceUpstream, stub: operations_pb2_grpc.OperationsStub
) -> None:
    upstream.store.create(_name(1), finish_after=0.1)
    stub.CancelOperation(operations_pb2.CancelOperationRequest(name=_name(1)))
    time.sleep(0.2)  # past the completion it pre-empted
    cancelled = stub.GetOperation(operations_pb2.GetOperationRequest(name=_name(1)))
    assert cancelled.done and not cancelled.HasField("response")
    assert (cancelled.error.code, cancelled.error.message) == (1, "Operation cancelled.")


def test_cancel_leaves_a_done_operation_as_it_is(
    upstream: ReferenceUpstream, stub: operations_pb2_grpc.OperationsStub
) -> None:
    before = upstream.store.create(_name(1), error=status_pb2.Status(code=9, message="no"))
    stub.CancelOperation(operations_pb2.CancelOperationRequest(name=_name(1)))
    assert stub.GetOperation(operations_pb2.GetOperationRequest(name=_name(1))) == before


def test_delete_then_get_is_not_found(
    upstream: ReferenceUpstream, stub: operations_pb2_grpc.OperationsStub
) -> None:
    upstream.store.create(_name(1))
    stub.DeleteOperation(operations_pb2.DeleteOperationRequest(name=_name(1)))
    _fails_with(
        lambda: stub.GetOperation(operations_pb2.GetOperationRequest(name=_name(1))),
        grpc.StatusCode.NOT_FOUND,
    )
    assert _name(1) not in upstream.store


def _wait(stub: operations_pb2_grpc.OperationsStub, name: str, **fields: Any) -> Any:
    return stub.WaitOperation(operations_pb2.WaitOperationRequest(name=name, **fields))


def test_wait_returns_when_the_operation_completes(
    upstream: ReferenceUpstream, stub: operations_pb2_grpc.OperationsStub
) -> None:
    upstream.store.create(_name(1), finish_after=0.3)
    started = time.monotonic()
    waited = _wait(stub, _name(1))
    elapsed = time.monotonic() - started
    assert waited.done and waited.response.type_url.endswith("google.protobuf.Empty")
    assert 0.25 <= elapsed < 1.5


def test_wait_timeout_returns_the_running_operation_promptly(
    upstream: ReferenceUpstream, stub: operations_pb2_grpc.OperationsStub
) -> None:
    upstream.store.create(_name(1), finish_after=60)
    started = time.monotonic()
    waited = _wait(stub, _name(1), timeout=duration_pb2.Duration(nanos=100_000_000))
    elapsed = time.monotonic() - started
    assert not waited.done
    assert 0.09 <= elapsed < 0.6
    assert upstream.calls()[-1].outcome == "ok"


def test_wait_wakes_on_a_cancel_from_another_call(
    upstream: ReferenceUpstream, stub: operations_pb2_grpc.OperationsStub
) -> None:
    upstream.store.create(_name(1), finish_after=math.inf)
    pending = stub.WaitOperation.future(operations_pb2.WaitOperationRequest(name=_name(1)))
    time.sleep(0.05)  # let the wait park
    stub.CancelOperation(operations_pb2.CancelOperationRequest(name=_name(1)))
    assert pending.result(timeout=1).error.code == 1


def test_client_deadline_shorter_than_the_wait_is_recorded_as_cancelled(
    loop: LoopThread, upstream: ReferenceUpstream, stub: operations_pb2_grpc.OperationsStub
) -> None:
    upstream.store.create(_name(1), finish_after=math.inf)
    _fails_with(
        lambda: stub.WaitOperation(operations_pb2.WaitOperationRequest(name=_name(1)), timeout=0.2),
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )
    record = loop.run(
        upstream.wait_for_call(lambda call: call.method == "WaitOperation", timeout=2)
    )
    assert (record.name, record.outcome) == (_name(1), "CANCELLED")


def _fault() -> status_pb2.Status:
    status = status_pb2.Status(code=grpc.StatusCode.UNAVAILABLE.value[0], message="Try later.")
    status.details.add().Pack(
        error_details_pb2.ErrorInfo(reason="BACKEND_DOWN", domain="example.com")
    )
    return status


@pytest.mark.parametrize(
    ("method", "request_name"),
    [
        ("GetOperation", _name(1)),
        ("CancelOperation", _name(1)),
        ("DeleteOperation", _name(1)),
        ("WaitOperation", _name(1)),
        ("ListOperations", LOCATION),
    ],
    ids=["get", "cancel", "delete", "wait", "list-parent"],
)
def test_injected_fault_is_returned_with_its_details(
    upstream: ReferenceUpstream,
    stub: operations_pb2_grpc.OperationsStub,
    method: str,
    request_name: str,
) -> None:
    upstream.store.create(_name(1))
    upstream.store.inject_fault(request_name, _fault())
    request = getattr(operations_pb2, f"{method}Request")(name=request_name)
    error = _fails_with(lambda: getattr(stub, method)(request), grpc.StatusCode.UNAVAILABLE)
    assert rpc_status.from_call(error) == _fault()
    assert upstream.calls()[-1].outcome == "UNAVAILABLE"
    assert _name(1) in upstream.store  # a failed Delete deletes nothing
    upstream.store.clear_fault(request_name)
    getattr(stub, method)(request)
    assert upstream.calls()[-1].outcome == "ok"


def test_invocation_metadata_is_recorded_as_received(
    upstream: ReferenceUpstream, stub: operations_pb2_grpc.OperationsStub
) -> None:
    upstream.store.create(_name(1))
    sent = (
        ("authorization", "Bearer token-1"),
        ("x-goog-request-params", f"name={_name(1)}"),
        ("x-trace-bin", b"\x00\x01\xff"),
    )
    stub.GetOperation(operations_pb2.GetOperationRequest(name=_name(1)), metadata=sent)
    record = upstream.calls()[-1]
    assert (record.method, record.name, record.outcome) == ("GetOperation", _name(1), "ok")
    assert set(sent) <= set(record.metadata)
    assert record.header("Authorization") == "Bearer token-1"
