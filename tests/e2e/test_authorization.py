"""Authorization end to end: the example policy, real tokens, google-api-core's client.

Each case is (who, method, resource) -> the status the caller gets. A denied call never reaches
the upstream, and its error is IAM's, identical for an operation that exists and one that does
not.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.rpc import error_details_pb2, status_pb2

from gateway.reference_upstream.seed import DONE_OPERATION
from gateway.testing.loop import LoopThread
from tests.support.policy_cases import (
    CASES,
    DENIED,
    INVALID,
    MISSING_PROD_OPERATION,
    NOT_FOUND,
    OK,
    PERMISSIONS,
    SERVICE,
    STRANGER,
    UNIMPLEMENTED,
    Who,
    outcome,
)
from tests.support.stack import EXAMPLE_POLICY, Identity, Stack, running_stack


@pytest.fixture(scope="module")
def stack(loop: LoopThread, identity: Identity) -> Iterator[Stack]:
    with running_stack(loop, identity, seed=True, policy=EXAMPLE_POLICY) as running:
        yield running


@pytest.mark.parametrize(
    ("who", "method", "resource", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_example_policy(stack: Stack, who: Who, method: str, resource: str, expected: str) -> None:
    before = len(stack.upstream.calls())
    code, err = outcome(stack, who, method, resource)
    assert code == expected, getattr(err, "message", err)
    reached_upstream = len(stack.upstream.calls()) > before
    assert reached_upstream == (expected in (OK, NOT_FOUND))
    if expected == DENIED:
        permission = PERMISSIONS[(method, "/authorizedViews/" in resource)]
        assert err.message == (
            f"Permission '{permission}' denied on resource '{resource}' (or it may not exist)."
        )
        assert err.reason == "IAM_PERMISSION_DENIED"
        assert err.domain == SERVICE
        assert err.metadata == {"permission": permission, "resource": resource}


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 60
    assert {c[4] for c in CASES} == {OK, DENIED, INVALID, UNIMPLEMENTED, NOT_FOUND}


def test_denial_is_identical_for_existing_and_missing_operations(stack: Stack) -> None:
    errors = []
    for name in (DONE_OPERATION, MISSING_PROD_OPERATION):
        code, err = outcome(stack, STRANGER, "get", name)
        assert code == DENIED
        status = status_pb2.Status.FromString(
            dict(err.response.trailing_metadata())["grpc-status-details-bin"]
        )
        info = error_details_pb2.ErrorInfo()
        status.details[0].Unpack(info)
        errors.append((status.code, status.message.replace(name, "NAME"), info.reason))
    assert errors[0] == errors[1]
