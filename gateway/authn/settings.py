"""The `authentication` section of the config: issuers, Google token kinds, scopes, caching."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gateway.configschema import check_exact_text, check_not_empty, check_positive, doc
from gateway.errors import ConfigError
from gateway.policy.members import escaped, is_email, is_principal_uri, parse_member

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
ASYMMETRIC_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
)  # fmt: skip
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v3/certs"
GOOGLE_SA_KEYS_URL = "https://www.googleapis.com/service_accounts/v1/jwk/{email}"
GOOGLE_TOKENINFO_URL = "https://oauth2.googleapis.com/tokeninfo"
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:\S+")  # scheme:rest, no whitespace anywhere
_HEADER_NAME = re.compile(r"[0-9a-z]+(?:-[0-9a-z]+)*")


def check_algorithms(values: tuple[str, ...]) -> str | None:
    unsupported = [v for v in values if v not in ASYMMETRIC_ALGORITHMS]
    if unsupported:
        return (
            f"unsupported or unsafe algorithm(s) {unsupported}; "
            f"allowed: {', '.join(ASYMMETRIC_ALGORITHMS)}"
        )
    return None if values else "must list at least one algorithm"


def check_some(values: tuple[str, ...]) -> str | None:
    return None if values else "must list at least one value"


def check_exact_texts(values: tuple[str, ...]) -> str | None:
    """Every item is compared exactly (check_exact_text)."""
    return next((problem for v in values if (problem := check_exact_text(v))), None)


def check_audiences(values: tuple[str, ...]) -> str | None:
    return check_some(values) or check_exact_texts(values)


def check_scopes(values: tuple[str, ...]) -> str | None:
    # A token's scopes are split at whitespace, so a scope containing any is never granted.
    spaced = [v for v in values if not v or v.split() != [v] or not v.isprintable()]
    return f"'{escaped(spaced[0])}' is not a single scope" if spaced else None


def check_email(value: str) -> str | None:
    """An IAM email (ASCII, the whole string), as policy members name accounts."""
    if is_email(value):
        return None
    ascii_note = "" if value.isascii() else " (IAM emails are ASCII)"
    return f"'{escaped(value)}' is not an email address{ascii_note}"


def check_emails(values: tuple[str, ...]) -> str | None:
    return next((problem for v in values if (problem := check_email(v))), None)


def check_subject_prefix(value: str) -> str | None:
    # `sub` is appended as it is; the result must be a member a policy can name.
    if value.startswith("principal://") and is_principal_uri(value + "x"):
        return None
    return f"'{escaped(value)}' is not a principal://HOST/... prefix"


def check_identity_header(header: str) -> str | None:
    # ASCII, checked whole: str.isalnum and str.lower accept letters of any script, which gRPC
    # refuses in a metadata key only when the first call is forwarded. A -bin key carries
    # bytes, and grpc- keys belong to the transport.
    reserved = header.endswith("-bin") or header.startswith("grpc-")
    if _HEADER_NAME.fullmatch(header) and not reserved:
        return None
    return (
        f"'{escaped(header)}' is not a lowercase header name (ASCII letters, digits and '-'; "
        "not grpc-..., not ...-bin)"
    )


def check_certificate_principal(principal: str) -> str | None:
    """The member a certificate stands for, checked as the policy loader checks members."""
    parsed = parse_member(principal)
    if parsed.member is not None and parsed.member.kind in ("user", "serviceAccount", "principal"):
        return None
    problem = parsed.problem or f"'{escaped(principal)}' is not a caller's member"
    return f"{problem}; write principal://..., serviceAccount:EMAIL or user:EMAIL"


def check_san_uri(value: str) -> str | None:
    if _URI.fullmatch(value) and value.isprintable():
        return None
    return f"'{escaped(value)}' is not a URI (compared exactly with the certificate's URI SAN)"


@dataclass(frozen=True, slots=True)
class IntrospectionConfig:
    """An RFC 7662 endpoint that vouches for this issuer's opaque access tokens."""

    endpoint: str = field(metadata=doc("introspection endpoint URL", check_not_empty))
    client_id: str = field(metadata=doc("client id for HTTP Basic authentication"))
    client_secret_file: Path | None = field(
        default=None, metadata=doc("file holding the client secret")
    )
    client_secret_env: str | None = field(
        default=None, metadata=doc("environment variable holding the client secret")
    )
    cache_ttl_s: float = field(
        default=300.0, metadata=doc("longest an answer is cached (never past exp)", check_positive)
    )
    timeout_s: float = field(default=5.0, metadata=doc("request timeout", check_positive))


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    """One trusted token issuer: where its keys are, what its tokens must say."""

    issuer: str = field(metadata=doc("the `iss` value, matched exactly", check_exact_text))
    audiences: tuple[str, ...] = field(
        metadata=doc("accepted `aud` values (one must match)", check_audiences)
    )
    jwks_uri: str | None = field(default=None, metadata=doc("URL of the issuer's JWKS"))
    jwks_file: Path | None = field(default=None, metadata=doc("local JWKS file"))
    discovery: bool = field(
        default=False, metadata=doc("find jwks_uri by OIDC discovery from the issuer URL")
    )
    algorithms: tuple[str, ...] = field(
        default=ASYMMETRIC_ALGORITHMS,
        metadata=doc("accepted JWS algorithms (asymmetric only)", check_algorithms),
    )
    clock_skew_s: float = field(
        default=30.0,
        metadata=doc(
            "leeway for exp, nbf and iat", lambda v: None if v >= 0 else "must be 0 or more"
        ),
    )
    max_lifetime_s: float = field(
        default=86400.0, metadata=doc("longest accepted exp - iat", check_positive)
    )
    principal_claim: Literal["email", "sub"] = field(
        default="email", metadata=doc("claim naming the principal: email or sub")
    )
    subject_prefix: str | None = field(
        default=None,
        metadata=doc(
            "member prefix for `sub` principals; default principal://HOST/subject/",
            check_subject_prefix,
        ),
    )
    groups_claim: str | None = field(
        default=None, metadata=doc("claim listing the caller's group emails")
    )
    require_email_verified: bool = field(
        default=True,
        metadata=doc("refuse email principals whose email is not verified (false or absent)"),
    )
    emails_verified: bool = field(
        default=False,
        metadata=doc(
            "the issuer vouches for its emails: a token without email_verified counts as "
            "verified (set it for introspection, whose answers rarely carry the claim)"
        ),
    )
    trust_hosted_domain: bool = field(
        default=False,
        metadata=doc("let the `hd` claim establish domain: membership (Google's issuers: always)"),
    )
    require_scope: bool = field(
        default=False, metadata=doc("refuse this issuer's tokens that carry no scope at all")
    )
    jwks_ttl_s: float = field(
        default=300.0, metadata=doc("how long fetched keys are fresh", check_positive)
    )
    jwks_min_refresh_interval_s: float = field(
        default=30.0,
        metadata=doc("least time between key refetches (unknown kid)", check_positive),
    )
    jwks_stale_grace_s: float = field(
        default=3600.0,
        metadata=doc("how long known keys keep working while the key endpoint is down"),
    )
    jwks_retry_initial_s: float = field(
        default=1.0,
        metadata=doc(
            "longest wait before the first retry of a failing key (or discovery) endpoint; "
            "doubled per failure in a row, with full jitter",
            check_positive,
        ),
    )
    jwks_retry_max_s: float = field(
        default=60.0,
        metadata=doc("longest wait between retries of a failing key endpoint", check_positive),
    )
    introspection: IntrospectionConfig | None = field(
        default=None, metadata=doc("verify this issuer's opaque tokens by RFC 7662")
    )


@dataclass(frozen=True, slots=True)
class GoogleIdTokenConfig:
    """Google-signed ID tokens (iss accounts.google.com)."""

    audiences: tuple[str, ...] = field(metadata=doc("accepted `aud` values", check_audiences))
    certs_url: str = field(default=GOOGLE_CERTS_URL, metadata=doc("Google's JWKS URL"))
    groups_claim: str | None = field(default=None, metadata=doc("claim listing group emails"))


@dataclass(frozen=True, slots=True)
class ServiceAccountJwtConfig:
    """Self-signed service-account JWTs (iss == sub == the service account's email)."""

    audiences: tuple[str, ...] = field(
        default=(),
        metadata=doc("accepted `aud` values; tokens may carry `scope` instead", check_exact_texts),
    )
    keys_url: str = field(
        default=GOOGLE_SA_KEYS_URL, metadata=doc("JWKS URL template with {email}")
    )
    allowed: tuple[str, ...] = field(
        default=(), metadata=doc("only these service accounts (empty: any)", check_emails)
    )
    max_lifetime_s: float = field(
        default=3600.0, metadata=doc("longest accepted exp - iat", check_positive)
    )
    new_accounts_per_minute: int = field(
        default=60, metadata=doc("most key lookups for unseen accounts per minute", check_positive)
    )


@dataclass(frozen=True, slots=True)
class GoogleAccessTokenConfig:
    """Google OAuth access tokens (ya29.), checked with Google's tokeninfo endpoint."""

    tokeninfo_url: str = field(default=GOOGLE_TOKENINFO_URL, metadata=doc("tokeninfo URL"))
    audiences: tuple[str, ...] = field(
        default=(),
        metadata=doc("accepted `aud`/`azp` client ids (empty: any)", check_exact_texts),
    )
    cache_ttl_s: float = field(
        default=300.0, metadata=doc("longest an answer is cached (never past exp)", check_positive)
    )


@dataclass(frozen=True, slots=True)
class CertificateIdentity:
    """A client certificate SAN (SPIFFE URI or email) and the principal it stands for."""

    principal: str = field(
        metadata=doc(
            "the member policies bind: principal://... or serviceAccount:...",
            check_certificate_principal,
        )
    )
    san_uri: str | None = field(
        default=None,
        metadata=doc("the URI SAN, e.g. spiffe://acme.example/ns/ci/sa/deployer", check_san_uri),
    )
    san_email: str | None = field(default=None, metadata=doc("the email SAN", check_email))


@dataclass(frozen=True, slots=True)
class ClientCertificateConfig:
    """Identities from verified client certificates (needs tls.require_client_cert)."""

    identities: tuple[CertificateIdentity, ...] = field(
        metadata=doc("SAN-to-principal mappings", check_some)
    )
    require_token: bool = field(
        default=True,
        metadata=doc("false: a mapped certificate alone authenticates the call (token ignored)"),
    )


@dataclass(frozen=True, slots=True)
class AuthnSettings:
    """How callers prove who they are."""

    issuers: tuple[IssuerConfig, ...] = field(default=(), metadata=doc("trusted JWT issuers"))
    google_id_tokens: GoogleIdTokenConfig | None = field(
        default=None, metadata=doc("accept Google ID tokens")
    )
    service_account_jwts: ServiceAccountJwtConfig | None = field(
        default=None, metadata=doc("accept self-signed service-account JWTs")
    )
    google_access_tokens: GoogleAccessTokenConfig | None = field(
        default=None, metadata=doc("accept Google OAuth access tokens (ya29.)")
    )
    client_certificates: ClientCertificateConfig | None = field(
        default=None, metadata=doc("map client-certificate SANs to principals")
    )
    required_scopes: tuple[str, ...] = field(
        default=(CLOUD_PLATFORM_SCOPE,),
        metadata=doc("scopes a token that carries scopes must include", check_scopes),
    )
    max_token_bytes: int = field(
        default=16 * 1024, metadata=doc("longer tokens are refused as invalid", check_positive)
    )
    token_cache_size: int = field(
        default=10000, metadata=doc("verified tokens remembered (by hash)", check_positive)
    )
    token_cache_max_ttl_s: float = field(
        default=3600.0, metadata=doc("longest a verified token is remembered", check_positive)
    )
    forward_authorization: bool = field(
        default=False, metadata=doc("pass the caller's authorization header to the upstream")
    )
    identity_header: str | None = field(
        default="x-opsgate-principal",
        metadata=doc(
            "header carrying the verified principal to the upstream", check_identity_header
        ),
    )


def client_secret(config: IntrospectionConfig, source: str = "<config>") -> str:
    """The introspection client secret, from its file or environment variable."""
    key = "introspection.client_secret"
    if config.client_secret_env is not None:
        value = os.environ.get(config.client_secret_env)
        if not value:
            raise ConfigError(
                source, key + "_env", f"environment variable {config.client_secret_env} is not set"
            )
        return value
    assert config.client_secret_file is not None  # checked by config._check_authentication
    try:
        value = config.client_secret_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(str(config.client_secret_file), key + "_file", "cannot be read") from exc
    if not value:
        raise ConfigError(str(config.client_secret_file), key + "_file", "is empty")
    return value
