"""The Authorizer's decision cache: hits, the size bound, policy versions, time, shared callers."""

from __future__ import annotations

from gateway.authn.principal import Principal
from gateway.authorizer import Authorizer, PolicyHolder
from gateway.policy import Caller, Effect, Policy
from tests.unit.policy.support import CANCEL, GET, NOW, load

OP = "projects/acme/locations/eu/operations/op1"
PUBLIC_OP = "projects/acme/locations/public/operations/op1"

POLICY = """\
allow:
  - resource: projects/acme
    bindings:
      - role: roles/contactcenterinsights.viewer
        members: [user:alice@acme.example, group:support@acme.example]
      - role: roles/contactcenterinsights.admin
        members: [user:temp@acme.example]
        condition: {title: until 2027, expression: 'request.time < timestamp("2027-01-01T00:00:00Z")'}
  - resource: projects/acme/locations/public
    bindings:
      - role: roles/contactcenterinsights.viewer
        members: [allUsers]
"""
REVOKED = POLICY.replace("user:alice@acme.example, ", "")


def principal(email: str, groups: frozenset[str] = frozenset(), subject: str = "s") -> Principal:
    return Principal(
        member=f"user:{email}",
        issuer="https://issuer.example",
        subject=subject,
        email=email,
        email_verified=True,
        groups=groups,
    )


def authorizer(policy: Policy, size: int = 100, candidate: Policy | None = None) -> Authorizer:
    dry_run = PolicyHolder(candidate) if candidate is not None else None
    return Authorizer(PolicyHolder(policy), size, dry_run, clock=lambda: NOW)


def test_a_repeated_decision_is_answered_from_the_cache() -> None:
    authz, alice = authorizer(load(POLICY)), principal("alice@acme.example")
    first = authz.decide(alice, GET, OP)
    second = authz.decide(alice, GET, OP)
    assert (first.cached, second.cached) == (False, True)
    assert first.decision is second.decision and second.decision.effect is Effect.ALLOW
    assert authz.decide(alice, GET, OP) is second  # a hit allocates nothing
    assert (authz.enforced.hits, authz.enforced.misses) == (2, 1)


def test_the_principal_carries_its_caller_outside_equality_and_repr() -> None:
    alice = principal("alice@acme.example", frozenset({"support@acme.example"}))
    assert alice.caller == Caller(
        member="user:alice@acme.example",
        email="alice@acme.example",
        email_verified=True,
        groups=frozenset({"support@acme.example"}),
    )
    assert "caller" not in repr(alice)
    assert alice == principal("alice@acme.example", frozenset({"support@acme.example"}))


def test_a_full_cache_drops_its_oldest_insertion_and_keeps_its_bound() -> None:
    authz, alice = authorizer(load(POLICY), size=3), principal("alice@acme.example")
    resources = [f"{OP}{i}" for i in range(5)]
    for resource in resources:
        authz.decide(alice, GET, resource)
    assert len(authz.enforced) == 3
    assert authz.decide(alice, GET, resources[-1]).cached  # the newest are kept
    assert not authz.decide(alice, GET, resources[0]).cached  # the oldest went first
    assert len(authz.enforced) == 3


def test_a_new_policy_version_never_reuses_an_old_answer() -> None:
    authz, alice = authorizer(load(POLICY)), principal("alice@acme.example")
    assert authz.decide(alice, GET, OP).decision.allowed
    authz.policies.current = load(REVOKED)
    verdict = authz.decide(alice, GET, OP)
    assert not verdict.cached and not verdict.decision.allowed
    assert authz.decide(alice, GET, OP).cached


def test_a_time_dependent_decision_is_never_cached() -> None:
    authz, temp = authorizer(load(POLICY)), principal("temp@acme.example")
    verdicts = [authz.decide(temp, CANCEL, OP) for _ in range(3)]
    assert all(v.decision.allowed and v.decision.time_dependent for v in verdicts)
    assert not any(v.cached for v in verdicts)
    assert (authz.enforced.hits, authz.enforced.misses, len(authz.enforced)) == (0, 3, 0)


def test_principals_with_equal_fields_share_entries() -> None:
    authz = authorizer(load(POLICY))
    first = principal("alice@acme.example", subject="token-1")
    second = principal("alice@acme.example", subject="token-2")  # another token, same caller
    assert first.caller is not second.caller
    authz.decide(first, GET, OP)
    assert authz.decide(second, GET, OP).cached
    assert len(authz.enforced) == 1


def test_callers_that_differ_only_in_groups_do_not_share_entries() -> None:
    authz = authorizer(load(POLICY))
    outsider = principal("bob@other.example")
    member = principal("bob@other.example", frozenset({"support@acme.example"}))
    assert not authz.decide(outsider, GET, OP).decision.allowed
    verdict = authz.decide(member, GET, OP)
    assert not verdict.cached and verdict.decision.allowed
    assert not authz.decide(outsider, GET, OP).decision.allowed


def test_anonymous_calls_are_decided_and_cached_as_all_users() -> None:
    authz = authorizer(load(POLICY))
    assert authz.decide(None, GET, PUBLIC_OP).decision.allowed  # allUsers may view
    assert authz.decide(None, GET, PUBLIC_OP).cached
    assert not authz.decide(None, GET, OP).decision.allowed


def test_the_dry_run_candidate_is_reported_only_where_it_differs() -> None:
    authz = authorizer(load(POLICY), candidate=load(REVOKED))
    alice = principal("alice@acme.example")
    support = principal("x@other.example", frozenset({"support@acme.example"}))
    for cached in (False, True):
        differs = authz.decide(alice, GET, OP)
        assert differs.cached is cached and differs.decision.allowed
        assert differs.shadow is not None and not differs.shadow.allowed
        same = authz.decide(support, GET, OP)
        assert same.cached is cached and same.shadow is None


def test_a_cache_of_size_zero_remembers_nothing() -> None:
    authz, alice = authorizer(load(POLICY), size=0), principal("alice@acme.example")
    assert not any(authz.decide(alice, GET, OP).cached for _ in range(2))
    assert len(authz.enforced) == 0
