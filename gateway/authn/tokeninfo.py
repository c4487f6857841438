"""Google OAuth access tokens (`ya29.`), checked by Google's tokeninfo endpoint."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.authn.http import FetchError, fetch_json
from gateway.authn.token_cache import CachedTokenCheck, Rejection
from gateway.errors import verification_unavailable

# Google sends exp as a string of digits; 15 digits keep int() far from its size limits.
_DIGITS = re.compile(r"[0-9]{1,15}")


@dataclass(frozen=True, slots=True)
class TokenInfoSettings:
    url: str = "https://oauth2.googleapis.com/tokeninfo"
    audiences: tuple[str, ...] = ()  # if any, the token's `aud` or `azp` must be one of them
    cache_ttl_s: float = 300
    cache_size: int = 10000
    timeout_s: float = 5.0


class TokenInfoVerifier:
    """Asks Google's tokeninfo about an access token, normalises the answer, and caches it."""

    def __init__(self, settings: TokenInfoSettings, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._check = CachedTokenCheck(
            self._lookup,
            source="tokeninfo",
            cache_size=settings.cache_size,
            cache_ttl_s=settings.cache_ttl_s,
            clock=clock,
        )

    async def verify(self, token: str) -> Mapping[str, Any]:
        """The token's claims, read-only: `exp` int, `email_verified` bool, `scope` str.

        Raises token_invalid, token_expired, or verification_unavailable when Google could not
        give a usable answer.
        """
        return await self._check.verify(token)

    async def _lookup(self, token: str) -> Mapping[str, Any] | Rejection:
        try:
            # POSTed, never `?access_token=` in the URL: URLs end up in logs.
            answer = await fetch_json(
                self._settings.url, timeout=self._settings.timeout_s, form={"access_token": token}
            )
        except FetchError as exc:
            rejection = _rejection_from(exc)
            if rejection is None:
                raise verification_unavailable(f"tokeninfo: {exc}") from exc
            return rejection
        if not isinstance(answer, dict):
            raise verification_unavailable("tokeninfo: the answer is not a JSON object")
        claims = _normalised(answer)
        if isinstance(claims, Rejection):
            return claims
        audiences = self._settings.audiences
        if audiences and not any(
            isinstance(claims.get(key), str) and claims[key] in audiences for key in ("aud", "azp")
        ):
            return Rejection("tokeninfo: neither aud nor azp is an accepted audience")
        return claims


def _normalised(answer: dict[str, Any]) -> dict[str, Any] | Rejection:
    """Google's strings turned into the types the JWT path's claims have."""
    claims = dict(answer)
    exp = claims.get("exp")
    if isinstance(exp, str) and _DIGITS.fullmatch(exp):
        claims["exp"] = int(exp)
    elif isinstance(exp, bool) or not isinstance(exp, int):
        return Rejection("tokeninfo: exp is missing or not a whole number")
    # Counted from the moment Google answered, so wrong once cached; exp says it absolutely.
    claims.pop("expires_in", None)
    verified = claims.get("email_verified")
    claims["email_verified"] = verified is True or verified == "true"
    scope = claims.setdefault("scope", "")
    if not isinstance(scope, str):
        return Rejection("tokeninfo: scope is not a string")
    return claims


def _rejection_from(exc: FetchError) -> Rejection | None:
    """A 400 is Google's "bad or expired token"; None for any other failure (we could not check)."""
    if exc.status != 400:
        return None
    body = exc.body  # a 400 without a readable reason still condemns the token
    description = body.get("error_description") if isinstance(body, dict) else None
    if isinstance(description, str) and "expired" in description.lower():
        return Rejection("tokeninfo: the token has expired", expired=True)
    return Rejection("tokeninfo: invalid_token")
