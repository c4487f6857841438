"""Principal: the verified caller, and how IAM member strings are derived from token claims."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.policy.members import canonical_identity
from gateway.policy.model import Caller

SERVICE_ACCOUNT_DOMAIN = ".iam.gserviceaccount.com"


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
    def subject_member(self) -> str:
        """The principal:// form IAM v2 deny rules use for this caller."""
        return f"principal://goog/subject/{self.email}" if self.email else self.member


def email_member(email: str) -> str:
    """serviceAccount:EMAIL for Google service accounts, user:EMAIL for everyone else; the
    email in canonical form (see canonical_identity)."""
    email = canonical_identity(email)
    kind = "serviceAccount" if email.endswith(SERVICE_ACCOUNT_DOMAIN) else "user"
    return f"{kind}:{email}"


def group_email(value: str) -> str:
    """A groups-claim value as a group email; a leading group: prefix is accepted and dropped."""
    return value[len("group:") :] if value.startswith("group:") else value
