"""The Authenticator: bearer token in, verified Principal out, by the verifier for its kind.

Its refusals send the caller to Google's sign-in docs only for a credential that was Google's:
see `_theirs` and `_unrecognised` (the README's authentication error table states the rule).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.authn.bearer import checked_token, presented_token
from gateway.authn.claims import PrincipalRules, audiences, principal_from
from gateway.authn.jwt_verifier import JwtVerifier, is_self_signed, peek
from gateway.authn.principal import GOOGLE_ISSUERS, Principal
from gateway.authn.token_cache import VerifiedTokenCache
from gateway.errors import (
    Unauthenticated,
    scope_insufficient,
    token_invalid,
    token_type_unsupported,
    without_google_help,
)

GOOGLE_ACCESS_TOKEN_PREFIX = "ya29."


# Checks a token that is not a JWT with its issuer and returns the token's claims.
OpaqueCheck = Callable[[str], Awaitable[Mapping[str, Any]]]


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """A verified caller, and whether their issuer insists the token carry a scope."""

    principal: Principal
    require_scope: bool


@dataclass(frozen=True, slots=True)
class OpaqueIssuer:
    """An opaque-token verifier with the rules that turn its answer into a Principal."""

    check: OpaqueCheck
    rules: PrincipalRules
    require_scope: bool = False
    # When the answer names audiences (RFC 7662 `aud`), one must be among these.
    audiences: frozenset[str] = frozenset()


class Authenticator:
    """Verifies the caller of one call; verified tokens are remembered by hash until exp."""

    def __init__(
        self,
        *,
        jwt_issuers: Mapping[str, tuple[JwtVerifier, bool]],
        service_accounts: JwtVerifier | None,
        opaque_issuers: Sequence[OpaqueIssuer],
        google_access_tokens: OpaqueIssuer | None,
        required_scopes: Iterable[str],
        max_token_bytes: int,
        cache: VerifiedTokenCache[VerifiedToken],
    ) -> None:
        self._jwt_issuers = jwt_issuers  # iss -> (verifier, require_scope)
        self._service_accounts = service_accounts
        self._opaque_issuers = tuple(opaque_issuers)
        self._google_access_tokens = google_access_tokens
        self._required_scopes = frozenset(required_scopes)
        self._max_token_bytes = max_token_bytes
        self._cache = cache
        # Whether a Google credential is among those accepted: then a refusal of a credential
        # nobody can be told to own (none sent, not a token, an unknown issuer) points at
        # Google's docs, as one of the ways in.
        self._google_accepted = (
            service_accounts is not None
            or google_access_tokens is not None
            or not GOOGLE_ISSUERS.isdisjoint(jwt_issuers)
            or any(issuer.rules.issuer in GOOGLE_ISSUERS for issuer in opaque_issuers)
        )
        self.cache_hits = 0  # read by the metrics endpoint
        self.cache_misses = 0

    async def verify(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> VerifiedToken:
        """The verified caller of a call; scopes are checked separately, by check_scopes.

        Split so the caller is known (and recorded) even when their token lacks a scope.
        """
        token, verified = self.remembered(metadata)
        return verified if verified is not None else await self.verify_token(token)

    def remembered(
        self, metadata: Iterable[tuple[str, str | bytes]] | None
    ) -> tuple[str, VerifiedToken | None]:
        """The call's token, and its verified caller if a recent call already proved it: the
        common case, answered without waiting (verify_token checks a token not remembered)."""
        # Only a token that passed checked_token is ever remembered, so a remembered one needs
        # no second look at its characters.
        try:
            token = presented_token(metadata, self._max_token_bytes)
        except Unauthenticated as exc:
            raise self._unrecognised(exc) from exc.__cause__
        cached = self._cache.get(token)
        if cached is not None:
            self.cache_hits += 1
        return token, cached

    async def verify_token(self, token: str) -> VerifiedToken:
        """Check a token no recent call proved, and remember the answer until it expires."""
        try:
            token = checked_token(token, self._max_token_bytes)
        except Unauthenticated as exc:
            raise self._unrecognised(exc) from exc.__cause__
        self.cache_misses += 1
        principal, require_scope, self_cached = await self._verify(token)
        verified = VerifiedToken(principal, require_scope)
        if not self_cached:
            self._cache.put(token, verified, principal.expires_at)
        return verified

    async def _verify(self, token: str) -> tuple[Principal, bool, bool]:
        """(principal, require_scope, whether the verifier caches its own answers).

        Opaque-token checks keep their own caches, bounded by their `cache_ttl_s` so that a
        revoked token stops working within it; remembering them here too would outlive that.
        """
        if token.startswith(GOOGLE_ACCESS_TOKEN_PREFIX):
            # Google's own token (accepted or not): Google's words throughout.
            if self._google_access_tokens is None:
                raise token_type_unsupported("Google access tokens are not accepted here")
            return await _opaque(self._google_access_tokens, token)
        if "." in token:
            principal, require_scope = await self._verify_jwt(token)
            return principal, require_scope, False
        if not self._opaque_issuers:
            raise self._unrecognised(
                token_type_unsupported("opaque token and no introspection endpoint configured")
            )
        failure: Unauthenticated | None = None
        for issuer in self._opaque_issuers:
            try:
                return await _opaque(issuer, token)
            except Unauthenticated as exc:  # inactive here; another issuer may know it
                failure = _theirs(exc, issuer.rules.issuer)
        assert failure is not None
        raise failure

    async def _verify_jwt(self, token: str) -> tuple[Principal, bool]:
        try:
            unverified = peek(token)
        except Unauthenticated as exc:
            raise self._unrecognised(exc) from exc.__cause__
        issuer = unverified.claims.get("iss")
        if not isinstance(issuer, str):
            raise self._unrecognised(token_invalid("the iss claim is missing or not a string"))
        found = self._jwt_issuers.get(issuer)
        if found is not None:
            verifier, require_scope = found
            try:
                return await verifier.verify(token, unverified), require_scope
            except Unauthenticated as exc:
                raise _theirs(exc, issuer) from exc.__cause__
        if self._service_accounts is not None and is_self_signed(unverified.claims):
            # A service account's own JWT is Google's credential: Google's words.
            return await self._service_accounts.verify(token, unverified), False
        raise self._unrecognised(token_invalid("the token's issuer is not trusted"))

    def _unrecognised(self, error: Unauthenticated) -> Unauthenticated:
        """A refusal before any issuer owns the credential (none sent, not a bearer token, not
        a JWT, an issuer not trusted here): Google's docs only if Google's credentials are
        among those accepted."""
        return error if self._google_accepted else without_google_help(error)

    def check_scopes(self, verified: VerifiedToken) -> None:
        """PERMISSION_DENIED unless the token's scopes include every required scope."""
        principal = verified.principal
        if principal.scopes is None:
            if verified.require_scope:
                raise scope_insufficient("the token carries no scope and its issuer requires one")
            return
        missing = self._required_scopes - principal.scopes
        if missing:
            raise scope_insufficient(f"the token lacks scope(s) {sorted(missing)}")


def _theirs(error: Unauthenticated, issuer: str) -> Unauthenticated:
    """A refusal of a token `issuer` issued (its verifier said no): Google's docs only for
    Google's own tokens."""
    return error if issuer in GOOGLE_ISSUERS else without_google_help(error)


async def _opaque(issuer: OpaqueIssuer, token: str) -> tuple[Principal, bool, bool]:
    claims = await issuer.check(token)
    if (
        issuer.audiences
        and "aud" in claims
        and not issuer.audiences.intersection(audiences(claims))
    ):
        raise token_invalid("the introspected aud names none of the accepted audiences")
    exp = claims.get("exp")
    expires_at = float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None
    return principal_from(claims, issuer.rules, expires_at), issuer.require_scope, True
