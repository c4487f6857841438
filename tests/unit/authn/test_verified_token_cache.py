"""VerifiedTokenCache keeps cachetools' TLRU policy: expired entries first, then the LRU one."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from cachetools import TLRUCache

from gateway.authn.token_cache import VerifiedTokenCache, token_digest

NOW = 1_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Reference:
    """The cache as it was built before: a cachetools TLRUCache keyed by digest."""

    def __init__(self, max_entries: int, max_ttl_s: float, clock: FakeClock) -> None:
        self._clock = clock
        self._max_ttl_s = max_ttl_s
        self._entries: TLRUCache[bytes, tuple[Any, float]] = TLRUCache(
            maxsize=max_entries, ttu=lambda _key, value, _now: value[1], timer=clock
        )

    def get(self, token: str) -> Any:
        entry = self._entries.get(token_digest(token))
        return None if entry is None else entry[0]

    def put(self, token: str, value: Any, expires_at: float | None) -> None:
        now = self._clock()
        deadline = now + self._max_ttl_s
        if expires_at is not None:
            deadline = min(expires_at, deadline)
        if not deadline > now:
            self._entries.pop(token_digest(token), None)
            return
        self._entries[token_digest(token)] = (value, deadline)

    def __len__(self) -> int:
        return len(self._entries)


def test_an_expired_entry_goes_before_the_least_recently_used_one() -> None:
    clock = FakeClock()
    cache: VerifiedTokenCache[str] = VerifiedTokenCache(2, 300, clock)
    cache.put("old", "O", None)
    cache.put("short", "S", NOW + 5)
    assert cache.get("short") == "S"  # the most recently used, but about to expire

    clock.now = NOW + 5
    cache.put("new", "N", None)

    assert (cache.get("old"), cache.get("short"), cache.get("new")) == ("O", None, "N")


def test_a_replaced_entry_lives_by_its_new_deadline() -> None:
    clock = FakeClock()
    cache: VerifiedTokenCache[str] = VerifiedTokenCache(10, 300, clock)
    cache.put("tok", "first", NOW + 10)
    cache.put("tok", "second", NOW + 100)

    clock.now = NOW + 50
    cache.put("other", "x", None)  # expires what is due by now: not "tok"

    assert cache.get("tok") == "second"
    assert len(cache) == 2
    clock.now = NOW + 100
    assert cache.get("tok") is None
    assert len(cache) == 1


def test_a_replaced_entry_with_an_earlier_deadline_goes_then() -> None:
    clock = FakeClock()
    cache: VerifiedTokenCache[str] = VerifiedTokenCache(10, 300, clock)
    cache.put("tok", "first", NOW + 100)
    cache.put("tok", "second", NOW + 10)

    clock.now = NOW + 10
    assert cache.get("tok") is None
    assert len(cache) == 0


def test_many_replacements_keep_every_live_entry() -> None:
    # Replacing entries leaves stale deadlines behind; rebuilding them must lose no entry.
    clock = FakeClock()
    cache: VerifiedTokenCache[int] = VerifiedTokenCache(50, 300, clock)
    for round_ in range(200):
        for index in range(50):
            cache.put(f"t{index}", round_, NOW + 100 + round_)

    assert len(cache) == 50
    assert len(cache._deadlines) <= 2 * 50 + 64
    assert all(cache.get(f"t{index}") == 199 for index in range(50))


@pytest.mark.parametrize("seed", range(40))
def test_same_answers_as_a_tlru_cache(seed: int) -> None:
    chance = random.Random(seed)
    max_entries = chance.choice([1, 2, 3, 5, 8, 20])
    max_ttl_s = chance.choice([5.0, 30.0, 100.0])
    clock = FakeClock()
    cache: VerifiedTokenCache[int] = VerifiedTokenCache(max_entries, max_ttl_s, clock)
    reference = Reference(max_entries, max_ttl_s, clock)
    tokens = [f"token-{index}" for index in range(chance.choice([3, 10, 40]))]
    for step in range(600):
        roll = chance.random()
        if roll < 0.15:
            clock.now += chance.choice([0.0, 0.5, 1.0, 3.0, 10.0, chance.random() * 20])
        elif roll < 0.55:
            token = chance.choice(tokens)
            assert cache.get(token) == reference.get(token), f"step {step}"
        elif roll < 0.95:
            token = chance.choice(tokens)
            offset = chance.choice([-1.0, 0.0, 0.5, 1.0, 2.0, 5.0, 50.0, 500.0, max_ttl_s])
            expires_at = chance.choice([None, clock.now + offset, math.nan])
            cache.put(token, step, expires_at)
            reference.put(token, step, expires_at)
        else:
            assert len(cache) == len(reference), f"step {step}"
    assert [cache.get(t) for t in tokens] == [reference.get(t) for t in tokens]
    assert len(cache) == len(reference)
