"""The verified-token cache, single-flight and expiry rule shared by the opaque-token verifiers."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import math
import secrets
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.authn.token_cache import (
    REJECTION_TTL_S,
    CachedTokenCheck,
    Rejection,
    SingleFlight,
    VerifiedTokenCache,
    expiry_rejection,
    token_digest,
)
from gateway.errors import RpcError, StatusCode, verification_unavailable
from gateway.testing.idp import LocalIdp

NOW = 1_700_000_000.0

# Helpers below are shared with test_introspection and test_tokeninfo.


@dataclass
class FakeClock:
    """A Unix-time clock that moves only when a test says so."""

    now: float = NOW

    def __call__(self) -> float:
        return self.now


def make_token(prefix: str = "ya29.") -> str:
    """A token that is unique per call, so any piece of it found in a message is a leak."""
    return prefix + secrets.token_urlsafe(32)


def assert_nothing_leaked(token: str, exc: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    """No part of the token in the error chain (messages, log details) or in any log record."""
    chain: list[BaseException] = []
    pending: list[BaseException | None] = [exc]
    while pending:  # every cause and context, even those a traceback printout would suppress
        error = pending.pop()
        if error is not None and not any(error is seen for seen in chain):
            chain.append(error)
            pending += [error.__cause__, error.__context__]
    said = caplog.text + "".join(
        "".join(traceback.format_exception(error)) + getattr(error, "log_detail", "")
        for error in chain
    )
    # Six random characters are far too many to turn up by chance in a few KiB of text.
    secret = token.removeprefix("ya29.")
    pieces = {secret[i : i + 6] for i in range(len(secret) - 5)}
    assert not [piece for piece in pieces if piece in said], said


def reset(idp: LocalIdp) -> LocalIdp:
    """A module-wide local IdP back to its empty state (starting one per test costs ~0.5 s)."""
    idp.routes.clear()
    idp.hits.clear()
    idp.requests.clear()
    idp.down = False
    idp.delay_s = 0.0
    return idp


# VerifiedTokenCache


@pytest.mark.parametrize(
    ("expires_in", "max_ttl_s", "lifetime"),
    [
        pytest.param(10.0, 300.0, 10.0, id="until-exp"),
        pytest.param(3600.0, 60.0, 60.0, id="until-max-ttl"),
        pytest.param(None, 60.0, 60.0, id="no-exp-max-ttl"),
    ],
)
def test_entry_lives_until_exp_or_max_ttl(
    expires_in: float | None, max_ttl_s: float, lifetime: float
) -> None:
    clock = FakeClock()
    cache: VerifiedTokenCache[str] = VerifiedTokenCache(10, max_ttl_s, clock)
    cache.put("tok", "claims", None if expires_in is None else NOW + expires_in)

    clock.now = NOW + lifetime - 0.01
    assert cache.get("tok") == "claims"
    clock.now = NOW + lifetime
    assert cache.get("tok") is None
    assert len(cache) == 0


def test_least_recently_used_entry_goes_first() -> None:
    cache: VerifiedTokenCache[str] = VerifiedTokenCache(2, 300, FakeClock())
    cache.put("a", "A", None)
    cache.put("b", "B", None)
    assert cache.get("a") == "A"  # now "b" is the least recently used

    cache.put("c", "C", None)

    assert len(cache) == 2
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == ("A", None, "C")


def test_keys_are_sha256_digests_never_the_token() -> None:
    token = make_token()
    cache: VerifiedTokenCache[str] = VerifiedTokenCache(10, 300, FakeClock())
    cache.put(token, "claims", None)

    keys = list(cache._entries.keys())  # the only place the cache keeps anything
    assert keys == [hashlib.sha256(token.encode()).digest()]
    assert keys == [token_digest(token)]
    assert token.encode() not in keys[0]


@pytest.mark.parametrize(
    "expires_at",
    [
        pytest.param(NOW, id="expiring-now"),
        pytest.param(NOW - 1, id="in-the-past"),
        pytest.param(math.nan, id="nan"),
    ],
)
def test_value_already_expired_is_not_stored_and_drops_the_old_one(expires_at: float) -> None:
    cache: VerifiedTokenCache[str] = VerifiedTokenCache(10, 300, FakeClock())
    cache.put("fresh", "claims", NOW + 60)
    cache.put("other", "old answer", NOW + 60)

    cache.put("fresh", "new", expires_at)
    cache.put("never", "claims", expires_at)

    assert cache.get("fresh") is None
    assert cache.get("never") is None
    assert len(cache) == 1  # only "other"


@pytest.mark.parametrize(
    ("max_entries", "max_ttl_s"),
    [pytest.param(0, 300, id="no-entries"), pytest.param(10, 0, id="no-ttl")],
)
def test_unusable_bounds_are_refused(max_entries: int, max_ttl_s: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        VerifiedTokenCache(max_entries, max_ttl_s)


# SingleFlight


def test_concurrent_callers_share_one_run() -> None:
    runs = 0

    async def work() -> str:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.01)
        return "answer"

    async def scenario() -> tuple[list[str], int]:
        flight: SingleFlight[str, str] = SingleFlight()
        answers = await asyncio.gather(*(flight.run("k", work) for _ in range(20)))
        return answers, len(flight)

    answers, in_flight_after = asyncio.run(scenario())
    assert answers == ["answer"] * 20
    assert runs == 1
    assert in_flight_after == 0


def test_later_callers_and_other_keys_run_again() -> None:
    keys: list[str] = []

    async def scenario() -> None:
        flight: SingleFlight[str, str] = SingleFlight()
        for key in ("a", "a", "b"):
            await flight.run(key, functools.partial(record, key))

    async def record(key: str) -> str:
        keys.append(key)
        return key

    asyncio.run(scenario())
    assert keys == ["a", "a", "b"]


def test_a_cancelled_caller_does_not_cancel_the_others() -> None:
    async def work() -> str:
        await asyncio.sleep(0.05)
        return "answer"

    async def scenario() -> tuple[bool, str]:
        flight: SingleFlight[str, str] = SingleFlight()
        quitter = asyncio.create_task(flight.run("k", work))
        stayer = asyncio.create_task(flight.run("k", work))
        await asyncio.sleep(0.01)
        quitter.cancel()
        answer = await stayer
        return quitter.cancelled(), answer

    assert asyncio.run(scenario()) == (True, "answer")


def test_a_failure_reaches_every_caller_and_frees_the_key() -> None:
    async def work() -> str:
        await asyncio.sleep(0.01)
        raise RuntimeError("boom")

    async def scenario() -> tuple[list[BaseException | str], int]:
        flight: SingleFlight[str, str] = SingleFlight()
        outcomes = await asyncio.gather(
            *(flight.run("k", work) for _ in range(3)), return_exceptions=True
        )
        return outcomes, len(flight)

    outcomes, in_flight_after = asyncio.run(scenario())
    assert [str(o) for o in outcomes] == ["boom"] * 3
    assert in_flight_after == 0


# The expiry rule


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        pytest.param({}, None, id="no-exp"),
        pytest.param({"exp": NOW + 1}, None, id="future"),
        pytest.param({"exp": NOW + 0.5}, None, id="future-float"),
        pytest.param({"exp": NOW}, "expired", id="now"),
        pytest.param({"exp": NOW - 1}, "expired", id="past"),
        pytest.param({"exp": str(int(NOW + 60))}, "invalid", id="string"),
        pytest.param({"exp": True}, "invalid", id="bool"),
        pytest.param({"exp": None}, "invalid", id="null"),
        pytest.param({"exp": math.inf}, "invalid", id="infinity"),
        pytest.param({"exp": math.nan}, "invalid", id="nan"),
    ],
)
def test_expiry_rule(claims: Mapping[str, Any], expected: str | None) -> None:
    rejection = expiry_rejection(claims, NOW, "test")
    verdict = None if rejection is None else ("expired" if rejection.expired else "invalid")
    assert verdict == expected
    if rejection is not None:
        assert rejection.detail.startswith("test: ")


# CachedTokenCheck, with a lookup standing in for the remote endpoint


def test_accepted_claims_are_read_only_and_cached() -> None:
    lookups = 0

    async def lookup(token: str) -> Mapping[str, Any]:
        nonlocal lookups
        lookups += 1
        return {"sub": "alice", "exp": NOW + 60}

    check = CachedTokenCheck(
        lookup, source="test", cache_size=10, cache_ttl_s=300, clock=FakeClock()
    )
    claims = asyncio.run(check.verify("tok"))
    again = asyncio.run(check.verify("tok"))

    assert claims == {"sub": "alice", "exp": NOW + 60}
    assert again is claims
    assert lookups == 1
    with pytest.raises(TypeError):
        claims["sub"] = "mallory"  # type: ignore[index]


def test_rejections_are_cached_for_at_most_the_rejection_ttl() -> None:
    clock = FakeClock()
    lookups = 0

    async def lookup(token: str) -> Rejection:
        nonlocal lookups
        lookups += 1
        return Rejection("test: no")

    check = CachedTokenCheck(lookup, source="test", cache_size=10, cache_ttl_s=300, clock=clock)
    for now in (NOW, NOW + REJECTION_TTL_S - 0.01, NOW + REJECTION_TTL_S):
        clock.now = now
        with pytest.raises(RpcError) as caught:
            asyncio.run(check.verify("tok"))
        assert caught.value.reason == "JWT_TOKEN_INVALID"
    assert lookups == 2


def test_each_waiter_gets_its_own_unavailable_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = make_token()

    async def lookup(token: str) -> Mapping[str, Any]:
        await asyncio.sleep(0.01)
        raise verification_unavailable("test: endpoint down")

    async def scenario() -> list[BaseException | Mapping[str, Any]]:
        check = CachedTokenCheck(lookup, source="test", cache_size=10, cache_ttl_s=300)
        return await asyncio.gather(
            *(check.verify(token) for _ in range(5)), return_exceptions=True
        )

    errors = asyncio.run(scenario())
    assert all(isinstance(e, RpcError) and e.code == StatusCode.UNAVAILABLE for e in errors)
    assert len({id(e) for e in errors}) == 5
    assert isinstance(errors[0], RpcError)
    assert errors[0].log_detail == "test: endpoint down"
    assert_nothing_leaked(token, errors[0], caplog)
