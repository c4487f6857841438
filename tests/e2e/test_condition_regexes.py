"""Condition regexes through a real gateway: RE2's answers, in linear time, for any caller.

Regression tests for issue 15, class 1: matches() ran on Python's backtracking `re`, on the
event loop, against the caller's resource name. A deny rule holding a nested quantifier let a
caller with no grant at all stall every other call; `(?i)` folded ASCII only, so a name spelled
with a long s or a Kelvin sign slipped past a case-insensitive deny rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from google.api_core import exceptions

from gateway.testing.loop import LoopThread
from tests.support.stack import Identity, Stack, running_stack

PREFIX = "projects/acme/locations/us/operations/"
POLICY = r"""
allow:
  - resource: projects/acme
    bindings:
      - role: roles/contactcenterinsights.viewer
        members: [allAuthenticatedUsers]
deny:
  - resource: projects/acme
    rules:
      - deniedPrincipals: [principalSet://goog/public:all]
        deniedPermissions: [contactcenterinsights.operations.get]
        denialCondition:
          title: nested quantifier
          expression: resource.name.matches("^projects/acme/locations/us/operations/(a+)+$")
      - deniedPrincipals: [principalSet://goog/public:all]
        deniedPermissions: [contactcenterinsights.operations.get]
        denialCondition:
          title: secrets, any case
          expression: resource.name.matches("(?i)/operations/secret-")
"""


@pytest.fixture(scope="module")
def stack(
    loop: LoopThread, identity: Identity, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    policy = Path(tmp_path_factory.mktemp("regex-policy")) / "policy.yaml"
    policy.write_text(POLICY)
    with running_stack(loop, identity, seed=False, policy=policy) as running:
        yield running


def _code(stack: Stack, name: str) -> grpc.StatusCode:
    try:
        stack.via_gateway().get_operation(name)
    except exceptions.GoogleAPICallError as exc:
        return exc.grpc_status_code  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@pytest.mark.parametrize(
    "name",
    [
        PREFIX + "secret-1",
        PREFIX + "SECRET-1",
        PREFIX + "\u017fecret-1",  # long s: RE2 folds it to s
        PREFIX + "\u017fECRET-1",
    ],
    ids=["lower", "upper", "long-s", "long-s-upper"],
)
def test_case_insensitive_deny_holds_for_unicode_spellings(stack: Stack, name: str) -> None:
    assert _code(stack, name) == grpc.StatusCode.PERMISSION_DENIED


def test_a_name_the_deny_rules_do_not_match_is_let_through(stack: Stack) -> None:
    assert _code(stack, PREFIX + "public-1") == grpc.StatusCode.NOT_FOUND  # allowed; none there


def test_a_catastrophic_pattern_does_not_stall_other_calls(stack: Stack) -> None:
    # The deny rule's `(a+)+$` needs 2**n steps of a backtracking engine for n letters and a
    # final mismatch: with 900, the call would never end, and every other call would wait.
    attack = PREFIX + "a" * 900 + "b"
    with ThreadPoolExecutor(max_workers=8) as pool:
        attacks = [pool.submit(_code, stack, attack) for _ in range(4)]
        others = [pool.submit(_code, stack, PREFIX + f"public-{i}") for i in range(20)]
        assert {f.result(timeout=30) for f in others} == {grpc.StatusCode.NOT_FOUND}
        assert {f.result(timeout=30) for f in attacks} == {grpc.StatusCode.NOT_FOUND}
    assert _code(stack, PREFIX + "a" * 900) == grpc.StatusCode.PERMISSION_DENIED
