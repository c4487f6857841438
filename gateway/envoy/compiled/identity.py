"""Who the caller is, in the compiled tier: one jwt_authn provider per token issuer, its verified
claims copied into headers (client copies removed first), and predicates over those headers
that hold exactly when opsgate's own caller_keys would give the caller a member key."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from gateway.authn.principal import GOOGLE_ISSUERS, SERVICE_ACCOUNT_DOMAIN
from gateway.envoy.compiled import xds
from gateway.envoy.compiled.text import alternatives, caseless, literal
from gateway.envoy.compiled.xds import Json
from gateway.policy.members import ALL_AUTHENTICATED_USERS, ALL_USERS, SUBJECT_PREFIX

HEADER_PREFIX = "x-opsgate-"
ProviderKind = Literal["email", "sub", "service_account"]
ALWAYS = xds.header_matches(":path", ".*")  # every request has a :path
CHUNK = 1000  # alternatives per regex: RE2's budget (8 MiB) holds about 300,000 instructions
FEW = 4  # up to this many values, one string match each rather than a regex


@dataclass(frozen=True, slots=True)
class Provider:
    """One jwt_authn provider: the tokens of one issuer, named as opsgate names their callers."""

    index: int
    issuer: str
    kind: ProviderKind
    subject_prefix: str = ""  # kind "sub": the member is this plus `sub`
    groups_claim: str | None = None
    emails_verified: bool = False  # an absent email_verified counts as true
    require_email_verified: bool = True
    trust_hosted_domain: bool = False
    account: str | None = None  # kind "service_account": the account's email, in canonical form

    @property
    def google(self) -> bool:
        """Google's tokens: its ID tokens, a service account's own JWTs."""
        return self.kind == "service_account" or self.issuer in GOOGLE_ISSUERS

    @property
    def metadata_key(self) -> str:
        return f"p{self.index}"

    def header(self, claim: str) -> str:
        return f"{HEADER_PREFIX}p{self.index}-{claim.replace('_', '-')}"

    @property
    def list_claims(self) -> dict[str, str]:
        """header -> claim for the claims that are lists of strings (checked element by
        element on the header: Envoy's CEL has no comprehensions)."""
        claims = {self.list_header("scp"): "scp"}
        if self.groups_claim is not None:
            claims[self.groups_header] = self.groups_claim
        if self.kind == "service_account":
            claims[self.list_header("aud")] = "aud"
        return claims

    @property
    def headers(self) -> dict[str, str]:
        """header -> claim, for every claim this provider's callers are named or checked by
        (each is a formatter Envoy runs on every call: only those the predicates read)."""
        claims = ["iss"]
        if self.kind != "service_account":
            claims += ["email", "email_verified"]
        if self.kind == "sub":
            claims.append("sub")
        if self.trust_hosted_domain:
            claims.append("hd")
        return {**{self.header(claim): claim for claim in claims}, **self.list_claims}

    def list_header(self, name: str) -> str:
        return f"{HEADER_PREFIX}p{self.index}-list-{name}"

    @property
    def groups_header(self) -> str:
        return self.list_header("groups")

    def present(self) -> Json:
        """This provider verified the call's token (a service account's: its own)."""
        if self.kind == "service_account":
            assert self.account is not None
            return xds.header_matches(self.header("iss"), caseless(self.account))
        return xds.header_matches(self.header("iss"), ".+")

    def verified_other(self) -> Json | None:
        """A token this provider's keys verified that names someone else (a service
        account's keys sign for it alone); None when the provider checks `iss` itself."""
        if self.kind != "service_account":
            return None
        signed = xds.header_matches(self.header("iss"), "(?s:.*)")
        return xds.all_of(signed, xds.negate(self.present()))

    def verified(self) -> Json:
        """The token's email is verified, as opsgate reads email_verified for this issuer."""
        said_true = xds.header_is(self.header("email_verified"), "true")
        if not self.emails_verified:
            return said_true
        absent = xds.negate(xds.header_matches(self.header("email_verified"), ".*"))
        return xds.any_of(said_true, absent)


def _is_account(email: str) -> bool:
    return email.endswith(SERVICE_ACCOUNT_DOMAIN)


@dataclass
class _Wanted:
    """The alternatives one provider's headers must match for some key of a set."""

    emails: set[str]  # the token's own email, any verification (its member, its own subject)
    verified_emails: set[
        str
    ]  # principal://goog/subject/ of a verified (or, for deny, claimed) email
    domains: set[str]  # the email's domain, verified (or claimed)
    hosted_domains: set[str]
    subjects: set[str]  # regexes for `sub`
    groups: set[str]
    whole_provider: bool  # every caller of this provider holds one of the keys


def _empty() -> _Wanted:
    return _Wanted(set(), set(), set(), set(), set(), set(), False)


class Identities:
    """Predicates over the providers' headers for sets of member keys."""

    def __init__(
        self, providers: tuple[Provider, ...], reach: dict[str, set[str]] | None = None
    ) -> None:
        self.providers = providers
        self.reach = reach or {}  # group key -> member keys that reach it (static groups)

    def anyone_of(
        self, keys: Iterable[str], *, claimed: bool, closure_only: bool = False
    ) -> Json | None:
        """A predicate true when the caller holds one of `keys`; None if no caller can.

        `claimed`: count what a token merely claims (an unverified email and its domain), as
        deny rules do. `closure_only`: only the caller's member key and its token's groups, the
        keys a static group's membership is looked up by.
        """
        keys = set(keys)
        if ALL_USERS in keys and not closure_only:
            return ALWAYS
        authenticated_all = ALL_AUTHENTICATED_USERS in keys and not closure_only
        alternatives_: list[Json] = []
        for provider in self.providers:
            if authenticated_all:
                alternatives_.append(provider.present())
                continue
            wanted = self._wanted(provider, keys, closure_only)
            alternatives_.extend(self._predicates(provider, wanted, claimed))
        return xds.any_of(*alternatives_) if alternatives_ else None

    def _wanted(self, provider: Provider, keys: set[str], closure_only: bool) -> _Wanted:
        wanted = _empty()
        for key in keys:
            kind, _, value = key.partition(":")
            if kind in ("user", "serviceAccount"):
                if (kind == "serviceAccount") != _is_account(value):
                    continue  # opsgate names such an email's caller by the other kind
                if provider.kind == "email":
                    wanted.emails.add(value)
                elif provider.kind == "service_account" and provider.account == value:
                    wanted.whole_provider = True
            elif kind == "group":
                if provider.groups_claim is not None:
                    wanted.groups.add(value)
            elif key.startswith(SUBJECT_PREFIX):
                email = key[len(SUBJECT_PREFIX) :]
                if provider.kind == "sub" and provider.subject_prefix == SUBJECT_PREFIX:
                    wanted.subjects.add(email)
                if closure_only:
                    continue
                if provider.kind == "email":
                    wanted.emails.add(email)
                elif provider.kind == "sub":
                    wanted.verified_emails.add(email)
                elif provider.account == email:
                    wanted.whole_provider = True
            elif key.startswith("principal://"):
                prefix = provider.subject_prefix
                if provider.kind == "sub" and prefix != SUBJECT_PREFIX and key.startswith(prefix):
                    wanted.subjects.add(key[len(prefix) :])
            elif kind == "domain" and not closure_only:
                if provider.kind == "service_account":
                    assert provider.account is not None
                    if provider.account.rpartition("@")[2] == value:
                        wanted.whole_provider = True
                    continue
                wanted.domains.add(value)
                if provider.trust_hosted_domain:
                    wanted.hosted_domains.add(value)
        return wanted

    @staticmethod
    def _predicates(provider: Provider, wanted: _Wanted, claimed: bool) -> list[Json]:
        if wanted.whole_provider:
            return [provider.present()]
        found: list[Json] = []
        email = provider.header("email")
        found += _any_value(email, wanted.emails, "exact")
        checked = _any_value(email, wanted.verified_emails, "exact")
        checked += _any_value(email, {f"@{d}" for d in wanted.domains}, "suffix")
        if checked:
            either = xds.any_of(*checked)
            found.append(either if claimed else xds.all_of(either, provider.verified()))
        found += _any_value(provider.header("hd"), wanted.hosted_domains, "exact")
        # `sub` is compared exactly, but behind principal://goog/subject/ (an email) as emails.
        exactly = provider.subject_prefix != SUBJECT_PREFIX
        found += _any_value(provider.header("sub"), wanted.subjects, "exact", exactly=exactly)
        if wanted.groups:
            # One element of the JSON list the formatter writes: a quote can only open or
            # close a string where it follows '[' or ',' or precedes ',' or ']'. opsgate drops
            # a leading "group:" as written, then (group_key, after folding ASCII case) once more.
            again = caseless("group:")
            element = rf'(?s:.*)[\[,]"(?:group:)?(?:{again})?{{}}"[,\]](?s:.*)'
            found.extend(_chunked(provider.groups_header, map(caseless, wanted.groups), element))
        return found


def _any_value(header: str, values: set[str], how: str, *, exactly: bool = False) -> list[Json]:
    """The header equals (or, `how` "suffix", ends with) one of `values`, ASCII case folded
    unless `exactly` (Envoy's ignore_case folds ASCII only, as canonical_identity does). A few
    values: a string match each (cheaper than a regex, and no RE2 program to hold); more: one
    alternation per CHUNK."""
    if len(values) <= FEW:
        return [
            xds.matches(xds.header(header), {how: value, "ignore_case": not exactly})
            for value in sorted(values)
        ]
    spell = literal if exactly else caseless
    template = "{}" if how == "exact" else "(?s:.*){}"
    return _chunked(header, map(spell, values), template)


def _chunked(header: str, parts: Iterable[str], template: str) -> list[Json]:
    """`template` around alternatives of `parts`, at most CHUNK per regex (RE2 refuses a
    program past its memory budget): one predicate per chunk."""
    ordered = sorted(set(parts))
    return [
        xds.header_matches(header, template.format(alternatives(ordered[i : i + CHUNK])))
        for i in range(0, len(ordered), CHUNK)
    ]
