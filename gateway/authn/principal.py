"""Principal: the verified caller, and how IAM member strings are derived from token claims."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

from gateway.policy.members import canonical_identity
from gateway.policy.model import Caller

SERVICE_ACCOUNT_DOMAIN = ".iam.gserviceaccount.com"
GOOGLE_ISSUERS = frozenset({"https://accounts.google.com", "accounts.google.com"})
# Token kinds whose issuer is named in the configuration (authentication.issuers): Google's
# only where that issuer is Google's. Google ID and access tokens and a service account's own
# JWTs are Google's credentials; a client certificate is mapped to a member by the operator.
_ISSUER_KINDS = frozenset({"jwt", "introspection"})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as policies name them. Holds no token material."""

    member: str  # the IAM member the call is made as: user:, serviceAccount: or principal://
    issuer: str
    subject: str  # the token's `sub`
    email: str | None = None
    email_verified: bool = False
    hosted_domain: str | None = None  # the `hd` claim, for domain: members
    groups: frozenset[str] = frozenset()  # group emails, without the group: prefix
    scopes: frozenset[str] | None = None  # None: the token carried no scope claim at all
    token_kind: str = "jwt"
    expires_at: float | None = None  # Unix time; verified-token cache entries end here
    # The issuer's principal:// prefix for its subjects (its subject_prefix); empty: the
    # issuer's default (subject_namespace). Only another issuer's callers are named with it.
    namespace: str = ""
    # The policy's view of this caller, built once: a verified token's Principal lives in the
    # token cache, so all of its calls share one Caller instead of building one per call.
    caller: Caller = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        caller = Caller(
            member=self.member,
            email=self.email,
            email_verified=self.email_verified,
            hosted_domain=self.hosted_domain,
            groups=self.groups,
        )
        object.__setattr__(self, "caller", caller)  # frozen: set once, here

    @property
    def third_party(self) -> bool:
        """Whether an issuer other than Google vouched for this caller (a configured IdP's
        JWT, an introspected token): Google's namespaces and help are not theirs."""
        return self.token_kind in _ISSUER_KINDS and self.issuer not in GOOGLE_ISSUERS

    @property
    def principal_email(self) -> str | None:
        """The audit record's principalEmail: the email of a Google identity. For a third-party
        caller Cloud Audit Logs fills principalSubject instead (see third_party_principal)."""
        return None if self.third_party else self.email

    @property
    def principal_subject(self) -> str | None:
        """The audit record's principalSubject. Google's identities: principal://goog/subject/
        EMAIL, IAM v2's form (the member when there is no email). Another issuer's: its own
        principal:// namespace and the token's `sub`, as IAM names a federated pool's
        subjects (principal://iam.googleapis.com/.../subject/SUB): never Google's."""
        if not self.third_party:
            return f"principal://goog/subject/{self.email}" if self.email else self.member
        if not self.subject:
            return None
        return f"{self.namespace or subject_namespace(self.issuer)}{self.subject}"

    @property
    def third_party_principal(self) -> dict[str, str] | None:
        """The record's thirdPartyPrincipal for another issuer's caller: `iss`, `sub` and, only
        if the issuer verified it, `email`, as the token's claims name them."""
        if not self.third_party:
            return None
        named = {"iss": self.issuer, "sub": self.subject}
        if self.email and self.email_verified:
            named["email"] = self.email
        return {key: value for key, value in named.items() if value}


def subject_namespace(issuer: str) -> str:
    """principal://HOST/PATH/subject/: an issuer's subjects, named by where the issuer is."""
    parts = urllib.parse.urlsplit(issuer)
    where = (parts.netloc + parts.path).rstrip("/") if parts.netloc else issuer
    return f"principal://{where}/subject/"


def email_member(email: str) -> str:
    """serviceAccount:EMAIL for Google service accounts, user:EMAIL for everyone else; the
    email in canonical form (see canonical_identity)."""
    email = canonical_identity(email)
    kind = "serviceAccount" if email.endswith(SERVICE_ACCOUNT_DOMAIN) else "user"
    return f"{kind}:{email}"


def group_email(value: str) -> str:
    """A groups-claim value as a group email; a leading group: prefix is accepted and dropped."""
    return value[len("group:") :] if value.startswith("group:") else value
