"""The rate-limit stage: callers over their limit get RESOURCE_EXHAUSTED before the upstream."""

from __future__ import annotations

from collections.abc import Callable

from gateway.call import Call
from gateway.errors import rate_limited
from gateway.ratelimit import RateLimiter
from gateway.stages.base import CheckStage, Step


class RateLimitStage(CheckStage):
    """Takes a token from the caller's buckets; refuses with a RetryInfo delay when empty."""

    name = "ratelimit"

    def __init__(self, applies: Callable[[str], bool], limiter: RateLimiter) -> None:
        super().__init__(lambda method: limiter.enabled and applies(method))
        self._limiter = limiter

    def prepare(self, method: str) -> Step:
        acquire = self._limiter.acquire

        def limited(call: Call) -> None:
            principal = call.principal
            refused = acquire(principal.member if principal else "allUsers", method)
            if refused is not None:
                limit, retry_after = refused
                raise rate_limited(limit, retry_after)

        return limited
