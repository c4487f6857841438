"""One issuer's signature keys: fetched, cached, refetched at most so often, shared by all calls;
a failing key endpoint is retried with backoff and logged once when it fails and once when back."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.authn.http import FetchError, fetch_json
from gateway.authn.keys import JwksError, VerificationKey, parse_jwks
from gateway.backoff import Backoff
from gateway.errors import token_invalid, verification_unavailable

log = logging.getLogger("opsgate.authn")

# Answers the JWKS document of one issuer; raises one of EXPECTED_FAILURES when it cannot.
Fetch = Callable[[], Awaitable[Any]]
EXPECTED_FAILURES = (FetchError, JwksError, OSError)


@dataclass(frozen=True, slots=True)
class _KeySet:
    keys: Mapping[str | None, VerificationKey]
    fetched_at: float


class JwksKeySource:
    """The verification keys of one issuer, for all calls.

    Keys are fresh for `ttl_s`; then the next call refetches. When a refetch fails the old keys
    keep working until `ttl_s + stale_grace_s` after they were fetched. An unknown kid refetches
    at most once per `min_refresh_interval_s`, so random kids cannot hammer the key endpoint.
    Concurrent callers that need a fetch share one.

    While fetches fail, the next attempt waits for `backoff` (exponential, full jitter, at least
    the endpoint's Retry-After) as well: calls never refetch sooner than that, and
    `retry_if_due` (the retry loop of a source without usable keys) refetches exactly then.
    The log gets one warning when fetching starts to fail (and one if the keys then run out),
    one line when it works again; each failed attempt is counted (fetch_failures), logged at
    debug level only.
    """

    def __init__(
        self,
        fetch: Fetch,
        name: str,
        *,
        ttl_s: float = 300.0,
        min_refresh_interval_s: float = 30.0,
        stale_grace_s: float = 3600.0,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.fetch_count = 0
        self.fetch_failures = 0
        self._fetch = fetch
        self._ttl_s = ttl_s
        self._min_refresh_interval_s = min_refresh_interval_s
        self._stale_grace_s = stale_grace_s
        self._backoff = backoff or Backoff()
        self._clock = clock
        self._set: _KeySet | None = None
        self._last_attempt: float | None = None
        self._inflight: asyncio.Task[None] | None = None
        # The outage in progress: failed attempts in a row, since when, when to try next, and
        # whether its loss of every usable key has been logged.
        self._failures = 0
        self._failing_since = 0.0
        self._next_attempt = 0.0
        self._told_keys_gone = False

    @property
    def ready(self) -> bool:
        """A usable key set exists (fresh, or stale but within the grace)."""
        return self._set is not None and not self._expired(self._set, self._clock())

    async def prefetch(self) -> None:
        """Fetch at start-up; a failure is logged, never raised, so the gateway starts anyway."""
        await self._refresh()

    async def key_for(self, kid: str | None, alg: str) -> VerificationKey:
        """The key for `kid` that may verify `alg`.

        Raises token_invalid for an unknown kid or a key that does not allow `alg`, and
        verification_unavailable when there is no usable key set at all.
        """
        keyset = self._set
        if keyset is None or self._clock() - keyset.fetched_at >= self._ttl_s:
            await self._refresh_if_allowed()
        key = _lookup(self._usable_keys(), kid)
        if key is None:
            # Perhaps the IdP rotated a key in since we fetched; ask once, within the rate.
            await self._refresh_if_allowed()
            key = _lookup(self._usable_keys(), kid)
        # The kid and alg come from the token, so they stay out of log details.
        if key is None:
            raise token_invalid(f"issuer {self.name}: no key has the token's kid")
        if alg not in key.algorithms:
            allowed = ", ".join(sorted(key.algorithms))
            raise token_invalid(f"issuer {self.name}: the kid's key allows only {allowed}")
        return key

    def _expired(self, keyset: _KeySet, now: float) -> bool:
        return now - keyset.fetched_at >= self._ttl_s + self._stale_grace_s

    def _usable_keys(self) -> Mapping[str | None, VerificationKey]:
        keyset = self._set
        if keyset is None:
            raise verification_unavailable(f"issuer {self.name}: no keys fetched yet")
        if self._expired(keyset, self._clock()):
            raise verification_unavailable(
                f"issuer {self.name}: keys are past their stale grace and refetching fails"
            )
        return keyset.keys

    def retry_in(self) -> float:
        """Seconds until `retry_if_due` would fetch (0: now)."""
        if self._inflight is not None or self._last_attempt is None:
            return 0.0
        now = self._clock()
        if self._failures:
            return max(self._next_attempt - now, 0.0)
        return max(self._last_attempt + self._min_refresh_interval_s - now, 0.0)

    async def retry_if_due(self) -> None:
        """Fetch if the backoff (or, after a success, the refresh interval) says it is time."""
        if self.retry_in() <= 0:
            await self._refresh()

    async def _refresh_if_allowed(self) -> None:
        """Join the fetch in flight, or start one if the last attempt is long enough ago (and,
        while the endpoint fails, its backoff is over)."""
        last = self._last_attempt
        now = self._clock()
        allowed = last is None or (
            now - last >= self._min_refresh_interval_s
            and (not self._failures or now >= self._next_attempt)
        )
        if self._inflight is not None or allowed:
            await self._refresh()

    async def _refresh(self) -> None:
        if self._inflight is None:
            self._inflight = asyncio.create_task(self._fetch_once())
        # Shielded: one caller giving up (its deadline) must not cancel the fetch for the rest.
        await asyncio.shield(self._inflight)

    async def _fetch_once(self) -> None:
        self._last_attempt = self._clock()
        self.fetch_count += 1
        try:
            keys = parse_jwks(await self._fetch(), self.name)
        except EXPECTED_FAILURES as exc:
            self._failed(str(exc), getattr(exc, "retry_after", None))
        except Exception:
            # A bug, not an outage: keep serving what we have, but show the traceback.
            log.exception("issuer %s: fetching keys failed unexpectedly", self.name)
            self._failed("unexpected error", None)
        else:
            self._store(keys)
        finally:
            self._inflight = None

    def _failed(self, reason: str, retry_after: float | None) -> None:
        # Logged once when the outage starts (and once if it then costs the last usable keys),
        # not per attempt: a retry every few seconds would bury everything else in the log.
        self.fetch_failures += 1
        self._failures += 1
        now = self._clock()
        delay = self._backoff.delay(self._failures, retry_after)
        self._next_attempt = now + delay
        keyset = self._set
        keys_gone = keyset is None or self._expired(keyset, now)
        if self._failures == 1:
            self._failing_since = now
            self._told_keys_gone = keys_gone
            if keyset is None:
                consequence = "no keys yet: its tokens get UNAVAILABLE"
            elif keys_gone:
                consequence = "old keys are past their stale grace: its tokens get UNAVAILABLE"
            else:
                left = keyset.fetched_at + self._ttl_s + self._stale_grace_s - now
                consequence = (
                    f"still using keys fetched {now - keyset.fetched_at:.0f}s ago "
                    f"(for {left:.0f}s more)"
                )
            log.warning(
                "keys for %s unavailable: %s; %s; retrying with backoff",
                self.name,
                reason,
                consequence,
            )
        elif keys_gone and not self._told_keys_gone:
            self._told_keys_gone = True
            log.warning(
                "keys for %s still unavailable after %d failures: %s; old keys are past their "
                "stale grace: its tokens get UNAVAILABLE",
                self.name,
                self._failures,
                reason,
            )
        log.debug(
            "keys for %s: attempt %d failed: %s; next in %.1fs",
            self.name,
            self._failures,
            reason,
            delay,
        )

    def _store(self, keys: Mapping[str | None, VerificationKey]) -> None:
        if self._failures:
            log.info(
                "keys for %s fetched again after %d failures / %.0f s",
                self.name,
                self._failures,
                self._clock() - self._failing_since,
            )
            self._failures = 0
        old = self._set
        if old is None:
            log.info("issuer %s: loaded keys %s", self.name, _kids(keys))
        elif set(old.keys) != set(keys):
            added = _kids(set(keys) - set(old.keys))
            removed = _kids(set(old.keys) - set(keys))
            log.info("issuer %s: keys changed: added %s; removed %s", self.name, added, removed)
        self._set = _KeySet(keys, self._clock())


def _lookup(keys: Mapping[str | None, VerificationKey], kid: str | None) -> VerificationKey | None:
    key = keys.get(kid)
    if key is None and kid is None and len(keys) == 1:
        # A token without kid may use an issuer's only key, as most verifiers allow; the
        # signature check still decides.
        key = next(iter(keys.values()))
    return key


def _kids(kids: Iterable[str | None]) -> str:
    names = sorted("(no kid)" if kid is None else kid for kid in kids)
    return ", ".join(names) if names else "none"


def jwks_uri_fetcher(url: str, timeout: float = 5.0) -> Fetch:
    """Fetches the JWKS at `url`."""

    async def fetch() -> Any:
        return await fetch_json(url, timeout=timeout)

    return fetch


def jwks_file_fetcher(path: Path) -> Fetch:
    """Reads a JWKS file on every fetch, so an edited file is picked up at the next refresh."""

    async def fetch() -> Any:
        return await asyncio.to_thread(_read_json, path)

    return fetch


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except ValueError as exc:  # not UTF-8 or not JSON
        raise JwksError(f"{path}: not a JSON file ({exc})") from exc


def discovery_fetcher(issuer: str, timeout: float = 5.0) -> Fetch:
    """Finds the issuer's jwks_uri by OpenID Connect discovery, then fetches it."""
    return _DiscoveryFetch(issuer, timeout)


class _DiscoveryFetch:
    """Remembers the discovered jwks_uri; discovers again only when fetching it fails."""

    def __init__(self, issuer: str, timeout: float) -> None:
        self._issuer = issuer
        self._config_url = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
        self._timeout = timeout
        self._jwks_uri: str | None = None

    async def __call__(self) -> Any:
        known = self._jwks_uri
        if known is None:
            return await fetch_json(await self._discover(), timeout=self._timeout)
        try:
            return await fetch_json(known, timeout=self._timeout)
        except FetchError:
            # The IdP may have moved its keys; but a URL that just failed is not asked again.
            moved = await self._discover()
            if moved == known:
                raise
            return await fetch_json(moved, timeout=self._timeout)

    async def _discover(self) -> str:
        url = self._config_url
        document = await fetch_json(url, timeout=self._timeout)
        if not isinstance(document, dict):
            raise FetchError(f"{url}: the discovery document is not a JSON object")
        # OIDC Discovery 4.3: the issuer must be exactly the one configured, or an attacker
        # able to serve this document could impersonate another issuer.
        named = document.get("issuer")
        if named != self._issuer:
            raise FetchError(f"{url}: the discovery document names issuer {named!r:.200}")
        jwks_uri = document.get("jwks_uri")
        scheme = urlsplit(jwks_uri).scheme if isinstance(jwks_uri, str) else ""
        # Keys must come at least as securely as the discovery document named them.
        secure = ("https",) if urlsplit(self._issuer).scheme == "https" else ("https", "http")
        if not isinstance(jwks_uri, str) or scheme not in secure:
            raise FetchError(f"{url}: the discovery document has no usable jwks_uri")
        self._jwks_uri = jwks_uri
        return jwks_uri
