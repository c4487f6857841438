"""Decides one call: maps the Principal to a policy Caller, evaluates, and caches decisions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from cachetools import LRUCache

from gateway.authn.principal import Principal
from gateway.policy.decision import Decision
from gateway.policy.evaluator import evaluate
from gateway.policy.model import AccessRequest, Caller, Policy

ANONYMOUS = Caller(member="allUsers", authenticated=False)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def caller_of(principal: Principal | None) -> Caller:
    if principal is None:
        return ANONYMOUS
    return Caller(
        member=principal.member,
        email=principal.email,
        email_verified=principal.email_verified,
        hosted_domain=principal.hosted_domain,
        groups=principal.groups,
    )


class PolicyHolder:
    """The policy in force. Swapping `current` is one reference assignment: every call is
    decided by exactly the version it read at the start of its decision."""

    def __init__(self, policy: Policy) -> None:
        self.current = policy


class _CachedDecider:
    """Evaluates against one holder's policy; remembers decisions that do not depend on time,
    keyed by (caller, permission, resource, policy etag), so a new version never reuses an
    old answer."""

    def __init__(self, holder: PolicyHolder, cache_size: int, clock: Clock) -> None:
        self.holder = holder
        self._cache: LRUCache[tuple[Caller, str, str, str], Decision] = LRUCache(cache_size)
        self._clock = clock
        self.hits = 0  # read by the metrics endpoint
        self.misses = 0

    def decide(self, caller: Caller, permission: str, resource: str) -> tuple[Decision, bool]:
        policy = self.holder.current
        key = (caller, permission, resource, policy.etag)
        cached = self._cache.get(key)
        if cached is not None:
            self.hits += 1
            return cached, True
        self.misses += 1
        decision = evaluate(policy, caller, AccessRequest(permission, resource), self._clock())
        if not decision.time_dependent:
            self._cache[key] = decision
        return decision, False


@dataclass(frozen=True, slots=True)
class Verdict:
    """The enforced decision; and the dry-run candidate's, only where its outcome differs."""

    decision: Decision
    cached: bool
    shadow: Decision | None = None


class Authorizer:
    """Decides calls with the enforced policy and, when configured, a dry-run candidate that
    is evaluated alongside without affecting any call."""

    def __init__(
        self,
        policies: PolicyHolder,
        cache_size: int,
        candidate: PolicyHolder | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.policies = policies
        self.enforced = _CachedDecider(policies, cache_size, clock)
        self._candidate = _CachedDecider(candidate, cache_size, clock) if candidate else None

    def decide(self, principal: Principal | None, permission: str, resource: str) -> Verdict:
        caller = caller_of(principal)
        decision, cached = self.enforced.decide(caller, permission, resource)
        if self._candidate is None:
            return Verdict(decision, cached)
        shadow, _ = self._candidate.decide(caller, permission, resource)
        return Verdict(decision, cached, shadow if shadow.allowed != decision.allowed else None)
