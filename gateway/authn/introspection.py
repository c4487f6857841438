"""RFC 7662 token introspection: the authorisation server vouches for its opaque access tokens."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

from gateway.authn.http import FetchError, fetch_json
from gateway.authn.token_cache import CachedTokenCheck, Rejection
from gateway.errors import verification_unavailable


@dataclass(frozen=True, slots=True)
class IntrospectionSettings:
    endpoint: str
    client_id: str
    client_secret: str = field(repr=False)  # kept out of any printout of the settings
    cache_ttl_s: float = 300
    cache_size: int = 10000
    timeout_s: float = 5.0


def basic_authorization(client_id: str, client_secret: str) -> str:
    """HTTP Basic client authentication as RFC 6749 2.3.1 has it."""
    # Each part is form-urlencoded first, so a ':' in the client id cannot shift the split.
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


class Introspector:
    """Asks an RFC 7662 endpoint whether an opaque access token is active, and caches the answer."""

    def __init__(
        self, settings: IntrospectionSettings, clock: Callable[[], float] = time.time
    ) -> None:
        self._settings = settings
        self._authorization = basic_authorization(settings.client_id, settings.client_secret)
        self._check = CachedTokenCheck(
            self._lookup,
            source="introspection",
            cache_size=settings.cache_size,
            cache_ttl_s=settings.cache_ttl_s,
            clock=clock,
        )

    async def introspect(self, token: str) -> Mapping[str, Any]:
        """The active token's claims (the introspection answer), read-only.

        Raises token_invalid (inactive, unusable exp), token_expired, or verification_unavailable
        when the endpoint could not give a usable answer.
        """
        return await self._check.verify(token)

    async def _lookup(self, token: str) -> Mapping[str, Any] | Rejection:
        try:
            answer = await fetch_json(
                self._settings.endpoint,
                timeout=self._settings.timeout_s,
                # In the body, never the URL: URLs end up in logs.
                form={"token": token, "token_type_hint": "access_token"},
                headers={"Authorization": self._authorization},
            )
        except FetchError as exc:
            # RFC 7662 answers an invalid token with 200 {"active": false}; any other status
            # means we could not find out, so fail closed without blaming the token.
            raise verification_unavailable(f"introspection: {exc}") from exc
        if not isinstance(answer, dict) or not isinstance(answer.get("active"), bool):
            raise verification_unavailable("introspection: the answer has no boolean `active`")
        if answer["active"] is not True:
            return Rejection("introspection: token inactive")
        return answer
