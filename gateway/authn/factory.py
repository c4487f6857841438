"""Builds the Authenticator and its key sources from the `authentication` settings."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.authn.authenticator import Authenticator, OpaqueIssuer, VerifiedToken
from gateway.authn.claims import PrincipalRules, TimeRules
from gateway.authn.introspection import IntrospectionSettings, Introspector
from gateway.authn.jwt_verifier import JwtRules, JwtVerifier
from gateway.authn.key_source import (
    JwksKeySource,
    discovery_fetcher,
    jwks_file_fetcher,
    jwks_uri_fetcher,
)
from gateway.authn.principal import GOOGLE_ISSUERS, subject_namespace
from gateway.authn.service_accounts import ServiceAccountKeys
from gateway.authn.settings import (
    AuthnSettings,
    GoogleAccessTokenConfig,
    GoogleIdTokenConfig,
    IssuerConfig,
    client_secret,
)
from gateway.authn.token_cache import VerifiedTokenCache
from gateway.authn.tokeninfo import TokenInfoSettings, TokenInfoVerifier
from gateway.backoff import Backoff

GOOGLE_ID_TOKEN_LIFETIME_S = 3600.0


class SourceKeys:
    """Adapts one issuer's JwksKeySource to the verifier's KeyResolver."""

    def __init__(self, source: JwksKeySource) -> None:
        self.source = source

    async def key_for(self, kid: str | None, alg: str, unverified: Mapping[str, Any]) -> Any:
        return (await self.source.key_for(kid, alg)).key


@dataclass(frozen=True, slots=True)
class AuthnRuntime:
    """The Authenticator plus the key sources operators and readiness care about."""

    authenticator: Authenticator
    key_sources: tuple[JwksKeySource, ...]

    async def prefetch(self) -> None:
        """Fetch every issuer's keys once; failures are logged by the sources, never raised."""
        await asyncio.gather(*(source.prefetch() for source in self.key_sources))

    @property
    def ready(self) -> bool:
        return all(source.ready for source in self.key_sources)

    async def keep_trying(self, interval_s: float = 2.0) -> None:
        """Until cancelled: refetch the keys of every issuer that has none usable, each when
        its backoff says (looking every `interval_s` for sources that lose their keys).

        An unready replica gets no traffic, so no call would ever ask for its keys again;
        this is what brings it back once the key endpoint is.
        """
        while True:
            waits = [source.retry_in() for source in self.key_sources if not source.ready]
            await asyncio.sleep(min([interval_s, *waits]))
            due = [source.retry_if_due() for source in self.key_sources if not source.ready]
            if due:
                await asyncio.gather(*due)


def default_subject_prefix(issuer: str) -> str:
    return subject_namespace(issuer)


def _key_source(config: IssuerConfig) -> JwksKeySource | None:
    if config.jwks_uri is not None:
        fetch = jwks_uri_fetcher(config.jwks_uri)
    elif config.jwks_file is not None:
        fetch = jwks_file_fetcher(config.jwks_file)
    elif config.discovery:
        fetch = discovery_fetcher(config.issuer)
    else:
        return None  # an introspection-only issuer
    return JwksKeySource(
        fetch,
        config.issuer,
        ttl_s=config.jwks_ttl_s,
        min_refresh_interval_s=config.jwks_min_refresh_interval_s,
        stale_grace_s=config.jwks_stale_grace_s,
        backoff=Backoff(config.jwks_retry_initial_s, config.jwks_retry_max_s),
    )


def issuer_principal_rules(config: IssuerConfig, token_kind: str) -> PrincipalRules:
    """How an issuer's tokens name their callers."""
    return PrincipalRules(
        issuer=config.issuer,
        principal_claim=config.principal_claim,
        subject_prefix=config.subject_prefix or default_subject_prefix(config.issuer),
        groups_claim=config.groups_claim,
        require_email_verified=config.require_email_verified,
        emails_verified=config.emails_verified,
        # Google checks `hd` against the account's Workspace domain; another issuer's `hd` is
        # whatever it wrote, so it counts only where the operator says that issuer checks it.
        trust_hosted_domain=config.trust_hosted_domain or config.issuer in GOOGLE_ISSUERS,
        token_kind=token_kind,
    )


def _issuer_verifier(config: IssuerConfig, source: JwksKeySource) -> JwtVerifier:
    rules = JwtRules(
        issuers=frozenset({config.issuer}),
        audiences=frozenset(config.audiences),
        algorithms=frozenset(config.algorithms),
        times=TimeRules(config.clock_skew_s, config.max_lifetime_s),
        principal=issuer_principal_rules(config, "jwt"),
    )
    return JwtVerifier(rules, SourceKeys(source))


def google_id_principal_rules(groups_claim: str | None) -> PrincipalRules:
    """How Google's ID tokens name their callers (Google checks `hd`: always trusted)."""
    return PrincipalRules(
        issuer="https://accounts.google.com",
        groups_claim=groups_claim,
        trust_hosted_domain=True,
        token_kind="google_id_token",
    )


# A service account's own JWT names it by `iss`; it writes every claim itself, so its `hd`
# proves nothing (not trusted) and it has no groups.
SELF_SIGNED_RULES = PrincipalRules(
    issuer="self-signed", principal_claim="iss", token_kind="service_account_jwt"
)


def _google_id_verifier(config: GoogleIdTokenConfig) -> tuple[JwtVerifier, JwksKeySource]:
    source = JwksKeySource(jwks_uri_fetcher(config.certs_url), "https://accounts.google.com")
    rules = JwtRules(
        issuers=GOOGLE_ISSUERS,
        audiences=frozenset(config.audiences),
        algorithms=frozenset({"RS256"}),
        times=TimeRules(30.0, GOOGLE_ID_TOKEN_LIFETIME_S),
        principal=google_id_principal_rules(config.groups_claim),
    )
    return JwtVerifier(rules, SourceKeys(source)), source


def _introspection(config: IssuerConfig) -> OpaqueIssuer | None:
    if config.introspection is None:
        return None
    settings = config.introspection
    verifier = Introspector(
        IntrospectionSettings(
            endpoint=settings.endpoint,
            client_id=settings.client_id,
            client_secret=client_secret(settings),
            cache_ttl_s=settings.cache_ttl_s,
            timeout_s=settings.timeout_s,
        )
    )
    rules = issuer_principal_rules(config, "introspection")
    return OpaqueIssuer(
        verifier.introspect, rules, config.require_scope, frozenset(config.audiences)
    )


def _google_access(config: GoogleAccessTokenConfig) -> OpaqueIssuer:
    verifier = TokenInfoVerifier(
        TokenInfoSettings(
            url=config.tokeninfo_url, audiences=config.audiences, cache_ttl_s=config.cache_ttl_s
        )
    )
    rules = PrincipalRules(
        issuer="https://accounts.google.com",
        trust_hosted_domain=True,
        token_kind="google_access_token",
    )
    return OpaqueIssuer(verifier.verify, rules)


def build_authn(settings: AuthnSettings) -> AuthnRuntime:
    """Everything authentication needs, built once at start-up; nothing is fetched yet."""
    jwt_issuers: dict[str, tuple[JwtVerifier, bool]] = {}
    sources: list[JwksKeySource] = []
    opaque: list[OpaqueIssuer] = []
    for config in settings.issuers:
        source = _key_source(config)
        if source is not None:
            sources.append(source)
            jwt_issuers[config.issuer] = (_issuer_verifier(config, source), config.require_scope)
        introspection = _introspection(config)
        if introspection is not None:
            opaque.append(introspection)
    if settings.google_id_tokens is not None:
        verifier, source = _google_id_verifier(settings.google_id_tokens)
        sources.append(source)
        for issuer in GOOGLE_ISSUERS:
            jwt_issuers[issuer] = (verifier, False)
    service_accounts = None
    if settings.service_account_jwts is not None:
        sa = settings.service_account_jwts
        rules = JwtRules(
            issuers=frozenset(),
            audiences=frozenset(sa.audiences),
            algorithms=frozenset({"RS256"}),
            times=TimeRules(30.0, sa.max_lifetime_s),
            # The account writes every claim itself: its `hd` proves nothing (not trusted).
            principal=SELF_SIGNED_RULES,
            self_signed=True,
        )
        service_accounts = JwtVerifier(rules, ServiceAccountKeys(sa))
    google_access = (
        _google_access(settings.google_access_tokens)
        if settings.google_access_tokens is not None
        else None
    )
    authenticator = Authenticator(
        jwt_issuers=jwt_issuers,
        service_accounts=service_accounts,
        opaque_issuers=opaque,
        google_access_tokens=google_access,
        required_scopes=settings.required_scopes,
        max_token_bytes=settings.max_token_bytes,
        cache=VerifiedTokenCache[VerifiedToken](
            settings.token_cache_size, settings.token_cache_max_ttl_s
        ),
    )
    return AuthnRuntime(authenticator, tuple(sources))
