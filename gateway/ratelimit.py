"""Token buckets per principal (and optionally per method), refilled continuously."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import LRUCache

MAX_BUCKETS = 100_000  # distinct principals remembered per limit; the least recent are forgotten


@dataclass(frozen=True, slots=True)
class LimitRule:
    """`rate_per_s` sustained, up to `burst` at once, for each principal (and method)."""

    name: str
    rate_per_s: float
    burst: float
    per_method: bool
    methods: frozenset[str]  # short method names this rule covers; empty: all

    def covers(self, method: str) -> bool:
        return not self.methods or method.rsplit("/", 1)[-1] in self.methods


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Answers, for one call, whether it may proceed now and if not how long to wait.

    A forgotten bucket (more than MAX_BUCKETS principals) starts full again, which errs on
    the side of admitting; limits are per replica (see the README on sizing for N replicas).
    """

    def __init__(
        self, rules: tuple[LimitRule, ...], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rules = rules
        self._clock = clock
        self._buckets: dict[str, LRUCache[tuple[str, str], _Bucket]] = {
            rule.name: LRUCache(MAX_BUCKETS) for rule in rules
        }

    @property
    def enabled(self) -> bool:
        return bool(self._rules)

    def acquire(self, principal: str, method: str) -> tuple[str, float] | None:
        """None when admitted (a token is taken from every covering bucket); else the name of
        the limit hit and the seconds until a token will be there. Nothing is taken then."""
        now = self._clock()
        taken: list[_Bucket] = []
        for rule in self._rules:
            if not rule.covers(method):
                continue
            bucket = self._bucket(rule, principal, method, now)
            if bucket.tokens < 1:
                for earlier in taken:  # all or nothing: a refused call costs no tokens
                    earlier.tokens += 1
                return rule.name, (1 - bucket.tokens) / rule.rate_per_s
            bucket.tokens -= 1
            taken.append(bucket)
        return None

    def _bucket(self, rule: LimitRule, principal: str, method: str, now: float) -> _Bucket:
        buckets = self._buckets[rule.name]
        key = (principal, method if rule.per_method else "")
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = _Bucket(rule.burst, now)
        else:
            bucket.tokens = min(
                rule.burst, bucket.tokens + (now - bucket.updated) * rule.rate_per_s
            )
            bucket.updated = now
        return bucket
