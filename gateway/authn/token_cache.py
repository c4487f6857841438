"""Caching token verification results by digest, and sharing one remote check among callers."""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Hashable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, TypeAlias, TypeVar

from gateway.errors import (
    Unauthenticated,
    Unavailable,
    token_expired,
    token_invalid,
    verification_unavailable,
)

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

# How long a definite "no" is remembered at most: long enough that a flood of one bad token costs
# one remote check per period, short enough that a wrong answer (an IdP hiccup) heals quickly.
REJECTION_TTL_S = 30.0


def token_digest(token: str) -> bytes:
    """SHA-256 of the token: the cache key, so nothing in memory can be replayed as a token."""
    # surrogatepass: no token can make encoding fail (and a UnicodeEncodeError quotes its input).
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class _Entry(Generic[T]):
    value: T
    deadline: float  # Unix time from which the entry is gone


class VerifiedTokenCache(Generic[T]):
    """Verification results by token digest, each kept until its token expires or max_ttl_s passes.

    Bounded to max_entries: entries past their deadline go first, then the least recently
    used. `T` must not include None: `get` answers None for "not cached". Not thread-safe;
    every method is synchronous, so callers on one event loop never see a half-done update.

    The same policy as cachetools' TLRUCache, without its per-insert bookkeeping (a Python
    object per entry, ordered by a Python __lt__ in the heap, and timer context managers).
    """

    def __init__(
        self, max_entries: int, max_ttl_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        if not max_ttl_s > 0:
            raise ValueError(f"max_ttl_s must be positive, not {max_ttl_s}")
        self._clock = clock
        self._max_entries = max_entries
        self._max_ttl_s = max_ttl_s
        # By digest, least recently used first; entries past their deadline may linger until
        # the next put or len, but are never answered.
        self._entries: OrderedDict[bytes, _Entry[T]] = OrderedDict()
        # (deadline, digest) of every entry, as a heap; items of entries since replaced or
        # evicted stay until they surface, or until a rebuild once they are half the heap.
        self._deadlines: list[tuple[float, bytes]] = []

    def get(self, token: str) -> T | None:
        digest = token_digest(token)
        entry = self._entries.get(digest)
        if entry is None or not self._clock() < entry.deadline:
            return None
        self._entries.move_to_end(digest)
        return entry.value

    def put(self, token: str, value: T, expires_at: float | None) -> None:
        """Keep `value` until min(expires_at, now + max_ttl_s); expires_at is a Unix time."""
        now = self._clock()
        deadline = now + self._max_ttl_s
        if expires_at is not None:
            deadline = min(expires_at, deadline)
        digest = token_digest(token)
        entries = self._entries
        if not deadline > now:  # also a NaN expires_at
            # The newest answer says "already over": an older entry must not outlive it.
            entries.pop(digest, None)
            return
        self._expire(now)
        if entries.pop(digest, None) is None:
            while len(entries) >= self._max_entries:
                entries.popitem(last=False)
        entries[digest] = _Entry(value, deadline)
        deadlines = self._deadlines
        heapq.heappush(deadlines, (deadline, digest))
        if len(deadlines) > 2 * len(entries) + 64:
            self._deadlines = [(entry.deadline, key) for key, entry in entries.items()]
            heapq.heapify(self._deadlines)

    def _expire(self, now: float) -> None:
        """Drop the entries whose deadline is not after `now`."""
        deadlines = self._deadlines
        entries = self._entries
        while deadlines and not now < deadlines[0][0]:
            deadline, digest = heapq.heappop(deadlines)
            entry = entries.get(digest)
            # Not an item of a replaced entry: that one's own item is still in the heap.
            if entry is not None and entry.deadline == deadline:
                del entries[digest]

    def __len__(self) -> int:
        self._expire(self._clock())
        return len(self._entries)


class SingleFlight(Generic[K, T]):
    """Concurrent callers asking for the same key share one run of the work and its outcome."""

    def __init__(self) -> None:
        self._in_flight: dict[K, asyncio.Task[T]] = {}

    async def run(self, key: K, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.create_task(work())
            self._in_flight[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        # shield: a caller giving up (its RPC was cancelled) must not cancel the others' run.
        return await asyncio.shield(task)

    def _finished(self, key: K, task: asyncio.Task[T]) -> None:
        if self._in_flight.get(key) is task:
            del self._in_flight[key]
        if not task.cancelled():
            task.exception()  # retrieved: if every caller gave up, asyncio would log it otherwise

    def __len__(self) -> int:
        return len(self._in_flight)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A definite "no" about a token; cached briefly, raised as a fresh error for each caller."""

    detail: str  # log-only, like RpcError.log_detail: never the token or any part of it
    expired: bool = False

    def error(self) -> Unauthenticated:
        return token_expired(self.detail) if self.expired else token_invalid(self.detail)


def expiry_rejection(claims: Mapping[str, Any], now: float, source: str) -> Rejection | None:
    """Why claims with this `exp` (a Unix time, optional) are unusable at `now`, or None."""
    if "exp" not in claims:
        return None
    exp = claims["exp"]
    # bool is an int to Python, and JSON parsing lets NaN and Infinity through.
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        return Rejection(f"{source}: exp is a {type(exp).__name__}, not a finite number")
    if exp <= now:
        return Rejection(f"{source}: the token has expired", expired=True)
    return None


Claims: TypeAlias = Mapping[str, Any]
# Asks the remote authority about a token: its claims, or a Rejection for a definite "no";
# raises Unavailable (verification_unavailable) when it could not find out.
Lookup: TypeAlias = Callable[[str], Coroutine[Any, Any, Claims | Rejection]]


class CachedTokenCheck:
    """A remote token check behind the caches and single-flight; the expiry rule lives here too.

    Accepted claims are cached until their `exp` (at most cache_ttl_s) and returned read-only;
    rejections for min(cache_ttl_s, REJECTION_TTL_S); "could not check" is never cached.
    """

    def __init__(
        self,
        lookup: Lookup,
        *,
        source: str,
        cache_size: int,
        cache_ttl_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lookup = lookup
        self._source = source
        self._clock = clock
        self._accepted: VerifiedTokenCache[Claims] = VerifiedTokenCache(
            cache_size, cache_ttl_s, clock
        )
        # Apart from the accepted ones, so a flood of made-up tokens cannot evict good entries.
        self._rejected: VerifiedTokenCache[Rejection] = VerifiedTokenCache(
            cache_size, min(cache_ttl_s, REJECTION_TTL_S), clock
        )
        self._flight: SingleFlight[bytes, Claims | Rejection] = SingleFlight()

    async def verify(self, token: str) -> Claims:
        """The token's claims; raises token_invalid, token_expired or verification_unavailable."""
        outcome: Claims | Rejection | None = self._accepted.get(token)
        if outcome is None:
            outcome = self._rejected.get(token)
        if outcome is None:
            try:
                outcome = await self._flight.run(token_digest(token), lambda: self._check(token))
            except Unavailable as exc:
                # Every waiter got the one shared exception; each raises one of its own.
                raise verification_unavailable(exc.log_detail) from None
        if isinstance(outcome, Rejection):
            raise outcome.error()
        return outcome

    async def _check(self, token: str) -> Claims | Rejection:
        outcome = await self._lookup(token)
        now = self._clock()
        if not isinstance(outcome, Rejection):
            outcome = expiry_rejection(outcome, now, self._source) or outcome
        if isinstance(outcome, Rejection):
            self._rejected.put(token, outcome, now + REJECTION_TTL_S)
            return outcome
        # Read-only: the cached claims are shared by every later caller.
        claims = MappingProxyType(dict(outcome))
        exp = claims.get("exp")
        self._accepted.put(token, claims, None if exp is None else float(exp))
        return claims
