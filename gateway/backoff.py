"""When to ask a failing endpoint again: exponential backoff with full jitter, and Retry-After."""

from __future__ import annotations

import random
from collections.abc import Callable

# Defaults for the key, discovery and introspection endpoints (the Cloud Logging sink passes
# its own): the first retry within 1 s, then
# at most twice as long per failure in a row, never longer than a minute.
INITIAL_S = 1.0
MAX_S = 60.0


class Backoff:
    """The delays before each retry of one endpoint while it keeps failing.

    After the n-th failure in a row the delay is drawn uniformly from [0, min(max_s,
    initial_s * 2**(n-1))] ("full jitter"): many gateways that saw one outage together spread
    their retries over the window instead of arriving in step. A Retry-After the endpoint sent
    is honoured as a floor, shortened to max_s so that one answer cannot park us for a day.
    """

    def __init__(
        self,
        initial_s: float = INITIAL_S,
        max_s: float = MAX_S,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if not (initial_s > 0 and max_s > 0):
            raise ValueError(f"backoff times must be positive, got {initial_s} and {max_s}")
        self.initial_s = min(initial_s, max_s)  # a first wait past the cap is the cap
        self.max_s = max_s
        self._rand = rand

    def bound(self, failures: int) -> float:
        """The longest delay after `failures` (at least 1) failures in a row."""
        # 2**60 would overflow nothing, but the cap is reached long before: stop doubling there.
        return min(self.max_s, self.initial_s * 2.0 ** min(max(failures - 1, 0), 60))

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after `failures` failures in a row, the last one saying `retry_after`."""
        drawn = self.bound(failures) * self._rand()
        if retry_after is not None and retry_after > drawn:
            return min(retry_after, self.max_s)
        return drawn
