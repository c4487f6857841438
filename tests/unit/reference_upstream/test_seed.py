"""The demo seed: notable operations in the states their names promise, listed where expected."""

from __future__ import annotations

import math

import grpc
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2

from gateway.reference_upstream import OperationStore, seed_demo
from gateway.reference_upstream import seed as demo
from gateway.reference_upstream.listing import ListQuery


def _seeded() -> tuple[OperationStore, tuple[str, ...]]:
    store = OperationStore()
    return store, seed_demo(store)


def _children(store: OperationStore, parent: str) -> list[str]:
    return [op.name for op in store.list_page(ListQuery(parent, None, None, 1000)).operations]


def test_every_seeded_name_is_a_numeric_operation_id_and_unique() -> None:
    store, names = _seeded()
    assert len(names) == len(set(names)) == len(store) >= 12
    assert all(name.rpartition("/operations/")[2].isdigit() for name in names)
    projects = {name.split("/")[1] for name in names}
    assert projects == {"acme-prod", "acme-staging", "globex-analytics"}


def test_notable_operations_are_in_their_advertised_states() -> None:
    store, _ = _seeded()
    done = store.get(demo.DONE_OPERATION)
    assert done.done and done.response.Is(struct_pb2.Struct.DESCRIPTOR)
    failed = store.get(demo.FAILED_OPERATION)
    assert failed.done and failed.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert failed.error.details[0].Is(error_details_pb2.ErrorInfo.DESCRIPTOR)
    for running in (demo.RUNNING_OPERATION, demo.STUCK_OPERATION, demo.TIER1_OPERATION):
        assert not store.get(running).done
    assert 0 < demo.RUNNING_FINISH_AFTER < 10


def test_metadata_is_a_struct_with_progress() -> None:
    store, names = _seeded()
    for name in names:
        metadata = struct_pb2.Struct()
        assert store.get(name).metadata.Unpack(metadata)
        assert 0 <= metadata["progressPercent"] <= 100 and metadata["createTime"]


def test_authorized_view_operations_are_not_listed_under_the_location() -> None:
    store, _ = _seeded()
    location = _children(store, demo.ACME_PROD_US)
    assert demo.DONE_OPERATION in location and demo.TIER1_OPERATION not in location
    assert demo.TIER1_OPERATION in _children(store, demo.SUPPORT_TIER1_VIEW)
    assert _children(store, demo.SUPPORT_TIER2_VIEW) == [demo.TIER2_OPERATION]


def test_the_stuck_operation_only_ends_when_cancelled() -> None:
    now = [0.0]
    store = OperationStore(lambda: now[0])
    seed_demo(store)
    now[0] = math.inf
    assert store.get(demo.RUNNING_OPERATION).done
    assert not store.get(demo.STUCK_OPERATION).done
    assert store.cancel(demo.STUCK_OPERATION).error.code == 1
