"""OperationStore: lifecycle, lazy completion, cancellation, listing and thread-safety."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import pytest
from google.protobuf import any_pb2, empty_pb2, struct_pb2
from google.rpc import status_pb2

from gateway.reference_upstream.errors import InjectedFault, OperationExists, OperationNotFound
from gateway.reference_upstream.listing import ListQuery
from gateway.reference_upstream.store import OperationStore, parent_of

PARENT = "projects/p/locations/l"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _name(op_id: int | str, parent: str = PARENT) -> str:
    return f"{parent}/operations/{op_id}"


def _struct_any(**fields: object) -> any_pb2.Any:
    struct = struct_pb2.Struct()
    struct.update(fields)
    packed = any_pb2.Any()
    packed.Pack(struct)
    return packed


@pytest.mark.parametrize(
    ("name", "parent"),
    [
        (_name(1), PARENT),
        (
            _name(1, f"{PARENT}/authorizedViewSets/s/authorizedViews/v"),
            f"{PARENT}/authorizedViewSets/s/authorizedViews/v",
        ),
        ("operations/123", ""),
        ("projects/p/operations/", ""),
        ("no-collection", ""),
    ],
    ids=["location", "authorized-view", "top-level", "empty-id", "not-an-operation-name"],
)
def test_parent_of(name: str, parent: str) -> None:
    assert parent_of(name) == parent


def test_create_without_delay_is_done_with_an_empty_response() -> None:
    store = OperationStore()
    created = store.create(_name(1))
    assert created.done
    assert created.response.Is(empty_pb2.Empty.DESCRIPTOR)
    assert store.get(_name(1)) == created


def test_returned_operations_are_copies() -> None:
    store = OperationStore()
    store.create(_name(1)).done = False
    store.get(_name(1)).done = False
    assert store.get(_name(1)).done


def test_delayed_operation_completes_at_its_deadline_with_its_response() -> None:
    clock = FakeClock()
    store = OperationStore(clock)
    response, metadata = _struct_any(state="READY"), _struct_any(progressPercent=40)
    created = store.create(_name(1), finish_after=5, response=response, metadata=metadata)
    assert not created.done
    clock.now += 4.999
    assert not store.get(_name(1)).done
    clock.now += 0.001
    done = store.get(_name(1))
    assert done.done and done.response == response and done.metadata == metadata


def test_delayed_operation_can_fail_with_an_error() -> None:
    clock = FakeClock()
    store = OperationStore(clock)
    error = status_pb2.Status(code=8, message="Quota exceeded.")
    store.create(_name(1), finish_after=1, error=error)
    clock.now += 1
    failed = store.get(_name(1))
    assert failed.done and failed.error == error and not failed.HasField("response")


def test_infinite_delay_never_completes_by_itself() -> None:
    clock = FakeClock()
    store = OperationStore(clock)
    store.create(_name(1), finish_after=math.inf)
    clock.now += 1e9
    assert not store.get(_name(1)).done


def test_cancel_is_not_overwritten_by_the_completion_it_preempted() -> None:
    clock = FakeClock()
    store = OperationStore(clock)
    store.create(_name(1), finish_after=1)
    store.cancel(_name(1))
    clock.now += 10
    cancelled = store.get(_name(1))
    assert cancelled.done
    assert (cancelled.error.code, cancelled.error.message) == (1, "Operation cancelled.")
    assert not cancelled.HasField("response")


def test_cancel_leaves_a_done_operation_unchanged() -> None:
    store = OperationStore()
    before = store.create(_name(1), response=_struct_any(state="READY"))
    assert store.cancel(_name(1)) == before
    assert store.get(_name(1)) == before


def test_finish_completes_with_the_response_given_at_creation() -> None:
    store = OperationStore()
    response = _struct_any(state="READY")
    store.create(_name(1), finish_after=math.inf, response=response)
    assert store.finish(_name(1)).response == response


@pytest.mark.parametrize(
    "kwargs",
    [
        {"finish_after": -1.0},
        {"finish_after": math.nan},
        {"response": any_pb2.Any(), "error": status_pb2.Status(code=2)},
    ],
    ids=["negative-delay", "nan-delay", "response-and-error"],
)
def test_create_rejects_contradictory_arguments(kwargs: dict[str, object]) -> None:
    store = OperationStore()
    with pytest.raises(ValueError):
        store.create(_name(1), **kwargs)  # type: ignore[arg-type]
    assert len(store) == 0


def test_create_rejects_a_taken_name() -> None:
    store = OperationStore()
    store.create(_name(1))
    with pytest.raises(OperationExists, match="already exists"):
        store.create(_name(1), finish_after=1)
    assert store.get(_name(1)).done  # the original is untouched


def test_delete_removes_from_get_and_list() -> None:
    store = OperationStore()
    store.create(_name(1))
    store.create(_name(2))
    store.delete(_name(1))
    with pytest.raises(OperationNotFound, match=r"Operation '.*/operations/1' not found\."):
        store.get(_name(1))
    page = store.list_page(ListQuery(PARENT, None, None, 10))
    assert [op.name for op in page.operations] == [_name(2)]
    with pytest.raises(OperationNotFound):
        store.delete(_name(1))


def test_list_page_reports_more_only_when_another_match_exists() -> None:
    store = OperationStore()
    for op_id in range(3):
        store.create(_name(op_id))
    store.create(_name(9), finish_after=math.inf)
    first = store.list_page(ListQuery(PARENT, True, None, 2))
    last = store.list_page(ListQuery(PARENT, True, first.operations[-1].name, 2))
    assert [op.name for op in first.operations] == [_name(0), _name(1)] and first.more
    # The running operation after it does not match done=true, so this is the last page.
    assert [op.name for op in last.operations] == [_name(2)] and not last.more


def test_list_page_settles_due_operations_before_filtering() -> None:
    clock = FakeClock()
    store = OperationStore(clock)
    store.create(_name(1), finish_after=1)
    clock.now += 1
    page = store.list_page(ListQuery(PARENT, True, None, 10))
    assert [op.name for op in page.operations] == [_name(1)]


def test_faults_are_copied_checked_and_cleared() -> None:
    store = OperationStore()
    status = status_pb2.Status(code=14, message="Backend unavailable.")
    store.inject_fault(_name(1), status)
    status.message = "changed afterwards"
    with pytest.raises(InjectedFault) as raised:
        store.check_fault(_name(1))
    assert raised.value.status.message == "Backend unavailable."
    store.clear_fault(_name(1))
    store.check_fault(_name(1))  # no longer raises


def test_fault_needs_a_non_ok_code() -> None:
    with pytest.raises(ValueError, match="non-OK"):
        OperationStore().inject_fault(_name(1), status_pb2.Status(code=0))


def test_wait_wakes_when_another_thread_finishes_the_operation() -> None:
    store = OperationStore()
    store.create(_name(1), finish_after=math.inf)
    timer = threading.Timer(0.05, store.finish, args=(_name(1),))
    started = time.monotonic()
    timer.start()
    try:
        waited = asyncio.run(store.wait(_name(1), None))
    finally:
        timer.cancel()
    assert waited.done
    assert time.monotonic() - started < 1.0


def test_wait_for_a_deleted_operation_is_not_found() -> None:
    store = OperationStore()
    store.create(_name(1), finish_after=math.inf)
    timer = threading.Timer(0.05, store.delete, args=(_name(1),))
    timer.start()
    with pytest.raises(OperationNotFound):
        asyncio.run(store.wait(_name(1), 5))
    timer.cancel()


def test_concurrent_creates_from_many_threads_are_all_kept_in_order() -> None:
    store = OperationStore()

    def create_many(thread: int) -> None:
        for index in range(200):
            store.create(_name(f"{thread}{index:04d}"))

    threads = [threading.Thread(target=create_many, args=(t,)) for t in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    names = [op.name for op in store.list_page(ListQuery(PARENT, None, None, 5000)).operations]
    assert len(store) == len(names) == 1600
    assert names == sorted(names)
