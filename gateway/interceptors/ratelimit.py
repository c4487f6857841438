"""The rate-limit stage: callers over their limit get RESOURCE_EXHAUSTED before the upstream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from gateway.call import current_call
from gateway.errors import rate_limited
from gateway.interceptors.stage import Behavior, Stage
from gateway.ratelimit import RateLimiter


class RateLimitStage(Stage):
    """Takes a token from the caller's buckets; refuses with a RetryInfo delay when empty."""

    name = "ratelimit"

    def __init__(self, applies: Callable[[str], bool], limiter: RateLimiter) -> None:
        super().__init__(lambda method: limiter.enabled and applies(method))
        self._limiter = limiter

    def wrap(self, behavior: Behavior, method: str) -> Behavior:
        acquire = self._limiter.acquire

        async def limited(request: Any, context: grpc.aio.ServicerContext) -> Any:
            principal = current_call.get().principal
            refused = acquire(principal.member if principal else "allUsers", method)
            if refused is not None:
                limit, retry_after = refused
                raise rate_limited(limit, retry_after)
            return await behavior(request, context)

        return limited
