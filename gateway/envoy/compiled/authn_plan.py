"""From the `authentication` (and `authorization`, `rate_limits`) settings to jwt_authn providers
and token rules; what Envoy cannot check as opsgate does becomes a Problem naming the key."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

from gateway.authn.factory import GOOGLE_ID_TOKEN_LIFETIME_S, default_subject_prefix
from gateway.authn.principal import GOOGLE_ISSUERS
from gateway.authn.settings import ASYMMETRIC_ALGORITHMS, IssuerConfig
from gateway.config import Settings
from gateway.envoy.compiled.identity import Provider
from gateway.envoy.compiled.problems import Problem
from gateway.envoy.compiled.tokens import KeySet, TokenRules
from gateway.envoy.compiled.xds import Json
from gateway.policy.members import canonical_identity

GOOGLE_SKEW_S = 30


@dataclass(frozen=True, slots=True)
class AuthnPlan:
    rules: tuple[TokenRules, ...]
    clusters: tuple[Json, ...]  # where remote key sets are fetched from
    allow_anonymous: bool
    stripped_headers: tuple[str, ...]  # headers no caller may send the upstream
    forward_authorization: bool
    problems: tuple[Problem, ...]

    @property
    def google_accepted(self) -> bool:
        """Whether Google's tokens are among those accepted: then Envoy's answer to a token it
        cannot tell the issuer of points at Google's docs (gateway/authn/authenticator.py)."""
        return any(rule.provider.google for rule in self.rules)


class _Planner:
    def __init__(self, settings: Settings, source: str) -> None:
        self.settings = settings
        self.source = source
        self.rules: list[TokenRules] = []
        self.clusters: list[Json] = []
        self.problems: list[Problem] = []

    def problem(self, key: str, message: str) -> None:
        self.problems.append(Problem(self.source, None, f"{key}: {message}"))

    def keys(self, index: int, uri: str | None, file: Any) -> KeySet:
        if file is not None:
            return KeySet(file=file.resolve())
        assert uri is not None
        name = f"opsgate-jwks-p{index}"
        self.clusters.append(jwks_cluster(name, uri))
        return KeySet(uri=uri, cluster=name)

    def add(self, provider: Provider, keys: KeySet, **rules: Any) -> None:
        authn = self.settings.authentication
        self.rules.append(
            TokenRules(
                provider=provider,
                keys=keys,
                required_scopes=frozenset(authn.required_scopes),
                max_token_bytes=authn.max_token_bytes,
                **rules,
            )
        )

    def issuer(self, position: int, config: IssuerConfig) -> None:
        key = f"authentication.issuers[{position}]"
        if config.introspection is not None:
            self.problem(
                f"{key}.introspection",
                "opaque tokens are checked by introspection, which Envoy cannot do; use the "
                "external authorizer (opsgate serve with envoy:) for this issuer",
            )
        if config.discovery and config.jwks_uri is None:
            self.problem(f"{key}.discovery", "give jwks_uri: Envoy fetches keys from a fixed URL")
            return
        if config.jwks_uri is None and config.jwks_file is None:
            return  # an issuer of opaque tokens only
        if set(config.algorithms) != set(ASYMMETRIC_ALGORITHMS):
            self.problem(
                f"{key}.algorithms",
                "Envoy's jwt_authn takes any algorithm the issuer's keys allow; leave the default",
            )
        if config.clock_skew_s != int(config.clock_skew_s):
            self.problem(f"{key}.clock_skew_s", "Envoy takes whole seconds")
        index = len(self.rules)
        sub = config.principal_claim == "sub"
        provider = Provider(
            index=index,
            issuer=config.issuer,
            kind="sub" if sub else "email",
            subject_prefix=(config.subject_prefix or default_subject_prefix(config.issuer))
            if sub
            else "",
            groups_claim=config.groups_claim,
            emails_verified=config.emails_verified,
            require_email_verified=config.require_email_verified,
            trust_hosted_domain=config.trust_hosted_domain or config.issuer in GOOGLE_ISSUERS,
        )
        self.add(
            provider,
            self.keys(index, config.jwks_uri, config.jwks_file),
            audiences=tuple(config.audiences),
            clock_skew_s=int(config.clock_skew_s),
            max_lifetime_s=config.max_lifetime_s,
            require_scope=config.require_scope,
        )

    def plan(self) -> AuthnPlan:
        settings = self.settings
        authn = settings.authentication
        for position, config in enumerate(authn.issuers):
            self.issuer(position, config)
        google = authn.google_id_tokens
        if google is not None:
            for issuer in sorted(GOOGLE_ISSUERS):
                index = len(self.rules)
                provider = Provider(
                    index=index,
                    issuer=issuer,
                    kind="email",
                    groups_claim=google.groups_claim,
                    trust_hosted_domain=True,
                )
                self.add(
                    provider,
                    self.keys(index, google.certs_url, None),
                    audiences=tuple(google.audiences),
                    clock_skew_s=GOOGLE_SKEW_S,
                    max_lifetime_s=GOOGLE_ID_TOKEN_LIFETIME_S,
                    require_scope=False,
                )
        accounts = authn.service_account_jwts
        if accounts is not None:
            if not accounts.allowed:
                self.problem(
                    "authentication.service_account_jwts.allowed",
                    "list the accounts: Envoy needs each account's key set by name",
                )
            for email in accounts.allowed:
                account = canonical_identity(email)
                index = len(self.rules)
                url = accounts.keys_url.replace("{email}", urllib.parse.quote(account, safe="@"))
                provider = Provider(
                    index=index, issuer=account, kind="service_account", account=account
                )
                self.add(
                    provider,
                    self.keys(index, url, None),
                    audiences=(),
                    clock_skew_s=GOOGLE_SKEW_S,
                    max_lifetime_s=accounts.max_lifetime_s,
                    require_scope=False,
                    self_signed_audiences=tuple(accounts.audiences),
                )
        if authn.google_access_tokens is not None:
            self.problem(
                "authentication.google_access_tokens",
                "access tokens are checked with Google's tokeninfo endpoint, which Envoy cannot "
                "call; use the external authorizer",
            )
        if authn.client_certificates is not None:
            self.problem(
                "authentication.client_certificates",
                "certificate identities are not compiled yet; use the external authorizer",
            )
        if settings.rate_limits:
            self.problem(
                "rate_limits",
                "the compiled tier has no per-principal rate limit (a refused call would be "
                "allowed); remove them or use the external authorizer",
            )
        stripped = tuple(h for h in (authn.identity_header,) if h)
        return AuthnPlan(
            tuple(self.rules),
            tuple(self.clusters),
            settings.authorization.allow_anonymous,
            stripped,
            authn.forward_authorization,
            tuple(self.problems),
        )


def plan_authn(settings: Settings, source: str = "<config>") -> AuthnPlan:
    return _Planner(settings, source).plan()


def jwks_cluster(name: str, uri: str) -> Json:
    """A cluster for one key-set URL: its host over TLS for https (SNI and the system's CAs)."""
    parts = urllib.parse.urlsplit(uri)
    secure = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    cluster: Json = {
        "name": name,
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "5s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {"socket_address": {"address": host, "port_value": port}}
                            }
                        }
                    ]
                }
            ],
        },
    }
    if secure:
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                "UpstreamTlsContext",
                "sni": host,
                "common_tls_context": {
                    "validation_context": {
                        "trusted_ca": {"filename": "/etc/ssl/certs/ca-certificates.crt"}
                    }
                },
            },
        }
    return cluster
