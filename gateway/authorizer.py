"""Decides one call: maps the Principal to a policy Caller, evaluates, and caches decisions."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.authn.principal import Principal
from gateway.policy.decision import Decision
from gateway.policy.evaluator import evaluate
from gateway.policy.model import AccessRequest, Caller, Policy

ANONYMOUS = Caller(member="allUsers", authenticated=False)

Clock = Callable[[], datetime]
CacheKey = tuple[Caller, str, str, str]  # caller, permission, resource, policy etag


def utc_now() -> datetime:
    return datetime.now(UTC)


class PolicyHolder:
    """The policy in force. Swapping `current` is one reference assignment: every call is
    decided by exactly the version it read at the start of its decision."""

    def __init__(self, policy: Policy) -> None:
        self.current = policy


@dataclass(frozen=True, slots=True)
class Verdict:
    """The enforced decision; and the dry-run candidate's, only where its outcome differs."""

    decision: Decision
    cached: bool
    shadow: Decision | None = None


class _CachedDecider:
    """Evaluates against one holder's policy; remembers decisions that do not depend on time,
    keyed by (caller, permission, resource, policy etag), so a new version never reuses an
    old answer.

    A hit is one dict lookup answering a prebuilt Verdict(decision, cached=True). Bookkeeping
    happens on insert only: when full, the oldest insertion goes (first in, first out; the
    insertion order is kept in a deque, as evicting a plain dict's first key gets slower with
    every deletion until the dict is rebuilt).
    """

    def __init__(self, holder: PolicyHolder, cache_size: int, clock: Clock) -> None:
        self.holder = holder
        self._verdicts: dict[CacheKey, Verdict] = {}
        self._inserted: deque[CacheKey] = deque()
        self._size = cache_size
        self._clock = clock
        self.hits = 0  # read by the metrics endpoint
        self.misses = 0

    def __len__(self) -> int:
        return len(self._verdicts)

    def decide(self, caller: Caller, permission: str, resource: str) -> Verdict:
        policy = self.holder.current
        key = (caller, permission, resource, policy.etag)
        verdict = self._verdicts.get(key)
        if verdict is not None:
            self.hits += 1
            return verdict
        self.misses += 1
        decision = evaluate(policy, caller, AccessRequest(permission, resource), self._clock())
        if not decision.time_dependent:
            self._remember(key, Verdict(decision, cached=True))
        return Verdict(decision, cached=False)

    def _remember(self, key: CacheKey, verdict: Verdict) -> None:
        if self._size < 1:
            return  # a cache of size 0 remembers nothing
        if len(self._inserted) >= self._size:
            del self._verdicts[self._inserted.popleft()]
        self._verdicts[key] = verdict
        self._inserted.append(key)


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
        caller = ANONYMOUS if principal is None else principal.caller
        verdict = self.enforced.decide(caller, permission, resource)
        if self._candidate is None:
            return verdict
        decision = verdict.decision
        shadow = self._candidate.decide(caller, permission, resource).decision
        return Verdict(
            decision, verdict.cached, shadow if shadow.allowed != decision.allowed else None
        )
