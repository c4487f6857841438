"""Keys of self-signed service-account JWTs: one key source per account, made on first sight."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from cachetools import LRUCache

from gateway.authn.key_source import JwksKeySource, jwks_uri_fetcher
from gateway.authn.settings import ServiceAccountJwtConfig
from gateway.errors import token_invalid, verification_unavailable
from gateway.policy.members import canonical_identity

MAX_ACCOUNTS = 1000


class ServiceAccountKeys:
    """Resolves the signing key of a service account's own JWT from that account's JWKS.

    Any iss could name an account we have never seen, and each new one costs a fetch; new
    accounts are therefore admitted at most `new_accounts_per_minute` (and only those in
    `allowed`, when it is set). Known accounts keep their own cached, rate-limited source.
    """

    def __init__(
        self, config: ServiceAccountJwtConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._config = config
        self._allowed = frozenset(canonical_identity(email) for email in config.allowed)
        self._sources: LRUCache[str, JwksKeySource] = LRUCache(maxsize=MAX_ACCOUNTS)
        self._clock = clock
        self._budget = float(config.new_accounts_per_minute)
        self._budget_at = clock()

    async def key_for(self, kid: str | None, alg: str, unverified: Mapping[str, Any]) -> Any:
        email = canonical_identity(str(unverified.get("iss", "")))
        if self._allowed and email not in self._allowed:
            raise token_invalid("the service account is not in service_account_jwts.allowed")
        source = self._sources.get(email)
        if source is None:
            source = self._admit(email)
        return (await source.key_for(kid, alg)).key

    def _admit(self, email: str) -> JwksKeySource:
        now = self._clock()
        rate = self._config.new_accounts_per_minute / 60.0
        capacity = float(self._config.new_accounts_per_minute)
        self._budget = min(capacity, self._budget + (now - self._budget_at) * rate)
        self._budget_at = now
        if self._budget < 1:
            raise verification_unavailable("too many unseen service accounts; try again shortly")
        self._budget -= 1
        url = self._config.keys_url.replace("{email}", urllib.parse.quote(email, safe="@"))
        source = JwksKeySource(jwks_uri_fetcher(url), email)
        self._sources[email] = source
        return source
