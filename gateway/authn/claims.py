"""Claim checks with the types the JWT RFCs give them, and the Principal a claim set names."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gateway.authn.principal import Principal, email_member, group_email
from gateway.errors import token_expired, token_invalid
from gateway.policy.members import canonical_identity


@dataclass(frozen=True, slots=True)
class TimeRules:
    """How strictly exp, nbf and iat are held to the clock."""

    clock_skew_s: float
    max_lifetime_s: float


@dataclass(frozen=True, slots=True)
class PrincipalRules:
    """Which claims name the caller, for one issuer."""

    issuer: str
    # "iss" is for self-signed service-account JWTs, whose issuer is the account's email.
    principal_claim: Literal["email", "sub", "iss"] = "email"
    subject_prefix: str = ""
    groups_claim: str | None = None
    require_email_verified: bool = True
    # The issuer vouches for every email it puts in a token: a missing email_verified counts
    # as true (an explicit false still does not). Otherwise missing means not verified.
    emails_verified: bool = False
    # Whether `hd` establishes domain: membership; only an issuer that checks it may say so.
    trust_hosted_domain: bool = False
    token_kind: str = "jwt"


def _is_number(value: Any) -> bool:
    """A JSON number: not a bool, and finite (Python's json reads NaN and Infinity)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def numeric_date(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    """A NumericDate claim (RFC 7519 2): a JSON number. A string such as "1700000000" is invalid."""
    if name not in claims:
        if required:
            raise token_invalid(f"the {name} claim is missing")
        return None
    value = claims[name]
    if not _is_number(value):
        raise token_invalid(f"the {name} claim is not a number")
    return float(value)


def string_claim(claims: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise token_invalid(f"the {name} claim is missing")
        return None
    if not isinstance(value, str):
        raise token_invalid(f"the {name} claim is not a string")
    return value


def check_times(claims: Mapping[str, Any], now: float, rules: TimeRules) -> float:
    """Validate exp (required), nbf and iat against `now`; return exp."""
    exp = numeric_date(claims, "exp", required=True)
    assert exp is not None
    nbf = numeric_date(claims, "nbf", required=False)
    iat = numeric_date(claims, "iat", required=False)
    skew = rules.clock_skew_s
    if now > exp + skew:
        raise token_expired()
    if nbf is not None and nbf > now + skew:
        raise token_invalid("the token is not valid yet (nbf)")
    if iat is not None and iat > now + skew:
        raise token_invalid("the token was issued in the future (iat)")
    start = iat if iat is not None else (nbf if nbf is not None else now)
    if exp - start > rules.max_lifetime_s:
        raise token_invalid(f"the token lives longer than {rules.max_lifetime_s:.0f} s")
    return exp


def audiences(claims: Mapping[str, Any]) -> tuple[str, ...]:
    """`aud` as RFC 7519 4.1.3 allows it: one string or an array of strings."""
    value = claims.get("aud")
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise token_invalid("the aud claim is neither a string nor an array of strings")


def scopes(claims: Mapping[str, Any]) -> frozenset[str] | None:
    """Granted scopes from `scope` (space-delimited) or `scp`; None if neither is there."""
    if "scope" in claims:
        value = claims["scope"]
        if not isinstance(value, str):
            raise token_invalid("the scope claim is not a string")
        return frozenset(value.split())
    if "scp" in claims:
        value = claims["scp"]
        if isinstance(value, str):
            return frozenset(value.split())
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return frozenset(value)
        raise token_invalid("the scp claim is neither a string nor an array of strings")
    return None


def _groups(claims: Mapping[str, Any], name: str | None) -> frozenset[str]:
    if name is None or name not in claims:
        return frozenset()
    value = claims[name]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise token_invalid(f"the {name} claim is not an array of strings")
    return frozenset(canonical_identity(group_email(item)) for item in value if item)


def email_verified(claims: Mapping[str, Any], rules: PrincipalRules) -> bool:
    """Whether the token's email is verified: the claim says true, or it is absent and the
    issuer is configured to vouch for its emails. Absent otherwise means not verified."""
    if "email_verified" not in claims:
        return rules.emails_verified
    verified = claims["email_verified"]
    if not isinstance(verified, bool):
        raise token_invalid("the email_verified claim is not a boolean")
    return verified


def principal_from(
    claims: Mapping[str, Any], rules: PrincipalRules, expires_at: float | None
) -> Principal:
    """The Principal named by verified claims, following the issuer's rules; emails, groups
    and domains in canonical form, so decisions, the identity header, audit records and rate
    limits all see the one spelling."""
    subject = string_claim(claims, "sub") or ""
    email = string_claim(claims, "email")
    verified = email_verified(claims, rules)
    hosted_domain = string_claim(claims, "hd") if rules.trust_hosted_domain else None
    if rules.principal_claim == "iss":
        email = string_claim(claims, "iss", required=True)
        verified = True  # the account signed for itself with a key only it holds
    if email:
        email = canonical_identity(email)
    if rules.principal_claim in ("email", "iss"):
        if not email:
            raise token_invalid("the email claim is missing or empty")
        if rules.require_email_verified and not verified:
            raise token_invalid("the email is not verified")
        member = email_member(email)
    else:
        if not subject:
            raise token_invalid("the sub claim is missing or empty")
        member = f"{rules.subject_prefix}{subject}"
    return Principal(
        member=member,
        issuer=rules.issuer,
        subject=subject,
        email=email or None,
        email_verified=verified,
        hosted_domain=canonical_identity(hosted_domain) if hosted_domain else None,
        groups=_groups(claims, rules.groups_claim),
        scopes=scopes(claims),
        token_kind=rules.token_kind,
        expires_at=expires_at,
        namespace=rules.subject_prefix,
    )
