"""Demo seed data: a realistic spread of done, failed and running operations across projects."""

from __future__ import annotations

import math
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, struct_pb2
from google.rpc import error_details_pb2, status_pb2

from gateway.reference_upstream.store import OperationStore

ACME_PROD_US = "projects/acme-prod/locations/us-central1"
ACME_PROD_EU = "projects/acme-prod/locations/europe-west1"
ACME_STAGING_US = "projects/acme-staging/locations/us-central1"
ACME_STAGING_EU = "projects/acme-staging/locations/europe-west1"
GLOBEX_US = "projects/globex-analytics/locations/us-central1"
GLOBEX_EU = "projects/globex-analytics/locations/europe-west1"
SUPPORT_TIER1_VIEW = f"{ACME_PROD_US}/authorizedViewSets/support/authorizedViews/tier1"
SUPPORT_TIER2_VIEW = f"{ACME_PROD_US}/authorizedViewSets/support/authorizedViews/tier2"

DONE_OPERATION = f"{ACME_PROD_US}/operations/6857023190548371923"
FAILED_OPERATION = f"{ACME_PROD_US}/operations/6857023190548371924"
# Completes RUNNING_FINISH_AFTER seconds after seeding, so a demo WaitOperation really waits.
RUNNING_OPERATION = f"{ACME_PROD_US}/operations/6857023190548371925"
RUNNING_FINISH_AFTER = 3.0
# Never completes by itself: the one to cancel in a demo.
STUCK_OPERATION = f"{ACME_PROD_EU}/operations/2290316489120157701"
STAGING_OPERATION = f"{ACME_STAGING_US}/operations/4411987265021193410"
GLOBEX_OPERATION = f"{GLOBEX_US}/operations/8023411765509283345"
TIER1_OPERATION = f"{SUPPORT_TIER1_VIEW}/operations/1175520983316428801"
TIER2_OPERATION = f"{SUPPORT_TIER2_VIEW}/operations/1175520983316428901"

_QUOTA_FAILED = status_pb2.Status(
    code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
    message="Quota 'CPUS' exceeded. Limit: 24.0 in region us-central1.",
)
_QUOTA_FAILED.details.add().Pack(
    error_details_pb2.ErrorInfo(
        reason="QUOTA_EXCEEDED",
        domain="googleapis.com",
        metadata={"quota_metric": "compute.googleapis.com/cpus", "region": "us-central1"},
    )
)
_PRECONDITION_FAILED = status_pb2.Status(
    code=grpc.StatusCode.FAILED_PRECONDITION.value[0],
    message="Backup 'nightly-0412' is still being created; retry after it completes.",
)


@dataclass(frozen=True, slots=True)
class _Seed:
    name: str
    verb: str
    target: str
    create_time: str
    finish_after: float | None = None  # None: already finished
    error: status_pb2.Status | None = None


def _pack(fields: dict[str, object]) -> any_pb2.Any:
    struct = struct_pb2.Struct()
    struct.update(fields)
    packed = any_pb2.Any()
    packed.Pack(struct)
    return packed


def _metadata(seed: _Seed) -> any_pb2.Any:
    progress = 100 if seed.finish_after is None else 40
    return _pack(
        {
            "createTime": seed.create_time,
            "verb": seed.verb,
            "target": seed.target,
            "progressPercent": progress,
            "apiVersion": "v1",
        }
    )


def _response(seed: _Seed) -> any_pb2.Any:
    return _pack({"name": seed.target, "state": "READY", "updateTime": seed.create_time})


def _op(parent: str, op_id: str) -> str:
    return f"{parent}/operations/{op_id}"


_SEEDS: tuple[_Seed, ...] = (
    _Seed(DONE_OPERATION, "create", f"{ACME_PROD_US}/instances/orders-db", "2024-04-12T09:14:03Z"),
    _Seed(
        FAILED_OPERATION,
        "update",
        f"{ACME_PROD_US}/instances/orders-db",
        "2024-04-12T10:02:41Z",
        error=_QUOTA_FAILED,
    ),
    _Seed(
        RUNNING_OPERATION,
        "create",
        f"{ACME_PROD_US}/instances/orders-db-replica",
        "2024-04-12T11:30:00Z",
        finish_after=RUNNING_FINISH_AFTER,
    ),
    _Seed(
        _op(ACME_PROD_US, "6857023190548371926"),
        "delete",
        f"{ACME_PROD_US}/instances/legacy-cache",
        "2024-04-11T17:45:19Z",
    ),
    _Seed(
        _op(ACME_PROD_US, "6857023190548371927"),
        "restore",
        f"{ACME_PROD_US}/instances/orders-db",
        "2024-04-12T11:31:27Z",
        error=_PRECONDITION_FAILED,
    ),
    _Seed(
        STUCK_OPERATION,
        "create",
        f"{ACME_PROD_EU}/instances/eu-orders-db",
        "2024-04-12T08:00:00Z",
        finish_after=math.inf,
    ),
    _Seed(
        _op(ACME_PROD_EU, "2290316489120157702"),
        "update",
        f"{ACME_PROD_EU}/instances/eu-orders-db",
        "2024-04-10T22:13:55Z",
    ),
    _Seed(
        STAGING_OPERATION,
        "create",
        f"{ACME_STAGING_US}/instances/orders-db",
        "2024-04-09T15:20:11Z",
    ),
    _Seed(
        _op(ACME_STAGING_US, "4411987265021193411"),
        "update",
        f"{ACME_STAGING_US}/instances/orders-db",
        "2024-04-12T11:29:40Z",
        finish_after=6.0,
    ),
    _Seed(
        _op(ACME_STAGING_EU, "3106628850170042219"),
        "delete",
        f"{ACME_STAGING_EU}/instances/scratch",
        "2024-04-08T07:05:00Z",
    ),
    _Seed(
        GLOBEX_OPERATION,
        "create",
        f"{GLOBEX_US}/datasets/clickstream",
        "2024-04-12T06:48:12Z",
    ),
    _Seed(
        _op(GLOBEX_EU, "9934250016643827760"),
        "export",
        f"{GLOBEX_EU}/datasets/clickstream-eu",
        "2024-04-12T11:25:00Z",
        finish_after=math.inf,
    ),
    _Seed(
        TIER1_OPERATION,
        "restart",
        f"{ACME_PROD_US}/instances/orders-db",
        "2024-04-12T11:05:37Z",
        finish_after=4.0,
    ),
    _Seed(
        _op(SUPPORT_TIER1_VIEW, "1175520983316428802"),
        "restart",
        f"{ACME_PROD_US}/instances/orders-db-replica",
        "2024-04-11T19:40:02Z",
    ),
    _Seed(
        TIER2_OPERATION,
        "failover",
        f"{ACME_PROD_US}/instances/orders-db",
        "2024-04-12T02:17:26Z",
    ),
)


def seed_demo(store: OperationStore) -> tuple[str, ...]:
    """Add the demo operations to `store` and return their names; running ones start now."""
    for seed in _SEEDS:
        store.create(
            seed.name,
            finish_after=seed.finish_after,
            response=None if seed.error is not None else _response(seed),
            error=seed.error,
            metadata=_metadata(seed),
        )
    return tuple(seed.name for seed in _SEEDS)
