"""IAM member strings: parsing them into match keys, and the keys a caller answers to."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

ALL_USERS = "allUsers"
ALL_AUTHENTICATED_USERS = "allAuthenticatedUsers"
SUBJECT_PREFIX = "principal://goog/subject/"
_GROUP_SET_PREFIX = "principalSet://goog/group/"
_PUBLIC_SET = "principalSet://goog/public:all"
# IAM v2 deny rules name service accounts this way; it is the same identity as serviceAccount:.
_SA_PRINCIPAL_PREFIX = "principal://iam.googleapis.com/projects/-/serviceAccounts/"

_EMAIL = re.compile(r"^[A-Za-z0-9._%+'\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+$")
_DOMAIN = re.compile(r"^[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+$")
_PRINCIPAL = re.compile(r"^principal://[^/\s]+/\S+$")
_EMAIL_KINDS = ("user", "serviceAccount", "group")

MEMBER_FORMS_HINT = (
    "members are user:EMAIL, serviceAccount:EMAIL, group:EMAIL, domain:DOMAIN, allUsers, "
    "allAuthenticatedUsers, principal://goog/subject/EMAIL, principalSet://goog/group/EMAIL, "
    "principalSet://goog/public:all or deleted:KIND:EMAIL?uid=ID"
)


@dataclass(frozen=True, slots=True)
class Member:
    """A member as written and the key it matches under; key None (deleted:) never matches."""

    written: str
    key: str | None

    @property
    def kind(self) -> str:
        """One word per form: user, serviceAccount, group, domain, principal, deleted, all*."""
        if self.key is None:
            return "deleted"
        if self.key.startswith("principal://"):
            return "principal"
        kind, _, _ = self.key.partition(":")
        return kind


@dataclass(frozen=True, slots=True)
class ParsedMember:
    """A member, or why it could not be read."""

    member: Member | None = None
    problem: str | None = None


def parse_member(text: str) -> ParsedMember:
    """Parse one member string into its canonical key (emails and domains lower-cased)."""
    key = _member_key(text)
    if key is not None:
        return ParsedMember(member=Member(text, key))
    if text.startswith("deleted:"):
        inner, _, uid = text[len("deleted:") :].partition("?uid=")
        if _member_key(inner) is not None and ("?uid=" not in text or uid):
            return ParsedMember(member=Member(text, None))
    if text.startswith("principalSet://"):
        return ParsedMember(problem=f"unsupported principal set '{text}'")
    return ParsedMember(problem=f"malformed member '{text}'")


def _member_key(text: str) -> str | None:
    kind, sep, value = text.partition(":")
    if sep and kind in _EMAIL_KINDS:  # the common forms first; no other form starts this way
        return f"{kind}:{value.lower()}" if _EMAIL.match(value) else None
    if text in (ALL_USERS, ALL_AUTHENTICATED_USERS):
        return text
    if text == _PUBLIC_SET:
        return ALL_USERS
    if text.startswith(_GROUP_SET_PREFIX):
        email = text[len(_GROUP_SET_PREFIX) :]
        return f"group:{email.lower()}" if _EMAIL.match(email) else None
    if text.startswith(_SA_PRINCIPAL_PREFIX):
        email = text[len(_SA_PRINCIPAL_PREFIX) :]
        return f"serviceAccount:{email.lower()}" if _EMAIL.match(email) else None
    if text.startswith(SUBJECT_PREFIX):
        email = text[len(SUBJECT_PREFIX) :]
        return f"{SUBJECT_PREFIX}{email.lower()}" if _EMAIL.match(email) else None
    if text.startswith("principal://"):
        # Other subject forms (workforce and workload pools) are compared exactly as written.
        return text if _PRINCIPAL.match(text) else None
    if not sep:
        return None
    if kind == "domain":
        return f"domain:{value.lower()}" if _DOMAIN.match(value) else None
    return None


def group_key(email: str) -> str:
    """The match key of a group, from its email with or without a group: prefix."""
    if email.startswith("group:"):
        email = email[len("group:") :]
    return f"group:{email.lower()}"


def is_email(text: str) -> bool:
    return _EMAIL.match(text) is not None


def caller_member_key(member: str) -> str:
    """The caller's own member as a match key: the email part lower-cased, as in the policy."""
    kind, sep, value = member.partition(":")
    if sep and kind in ("user", "serviceAccount") and "@" in value:
        return f"{kind}:{value.lower()}"
    if member.startswith(_SA_PRINCIPAL_PREFIX):
        return f"serviceAccount:{member[len(_SA_PRINCIPAL_PREFIX) :].lower()}"
    if member.startswith(SUBJECT_PREFIX):
        return member.lower()
    return member


@dataclass(frozen=True, slots=True)
class CallerKeys:
    """The member keys a caller answers to.

    `ordered` and `allow` hold only established facts and decide grants and deny exceptions.
    `deny` adds what the caller merely claims (an unverified email and its domain): a deny rule
    naming a claimed identity still applies, because a deny that is too wide fails closed.
    """

    ordered: tuple[str, ...]
    allow: frozenset[str]
    deny: frozenset[str]
    member: str  # the caller's member key
    direct_groups: tuple[str, ...]  # group keys the token lists, sorted
    authenticated: bool


def caller_keys(
    member: str,
    email: str | None,
    email_verified: bool,
    hosted_domain: str | None,
    groups: frozenset[str],
    authenticated: bool,
    group_closure: Mapping[str, tuple[str, ...]],
) -> CallerKeys:
    """Every key the caller matches, in a fixed order so decisions are deterministic."""
    member_key = caller_member_key(member)
    # A dict is an ordered set here: first occurrence wins, duplicates collapse.
    ordered: dict[str, None] = {member_key: None}
    claimed: list[str] = []
    # principal://goog/subject/EMAIL is the caller's email: established when verified, or when
    # the caller's member already is that email (user: and serviceAccount: members).
    own_email = member_key.partition(":")[2] if member_key.startswith(_OWN_EMAIL_KINDS) else None
    mail = email.lower() if email else None
    verified_email = mail if mail and (email_verified or mail == own_email) else own_email
    if verified_email:
        ordered[SUBJECT_PREFIX + verified_email] = None
    if mail and mail != verified_email:
        claimed.append(SUBJECT_PREFIX + mail)
    direct: tuple[str, ...] = ()
    reached = group_closure.get(member_key)
    if reached:
        ordered.update(dict.fromkeys(reached))
    if groups:
        # Sorted: a frozenset's order changes from process to process.
        direct = tuple(sorted(group_key(g) for g in groups))
        for key in direct:
            ordered[key] = None
            reached = group_closure.get(key)
            if reached:
                ordered.update(dict.fromkeys(reached))
    if hosted_domain:
        ordered["domain:" + hosted_domain.lower()] = None
    if mail:
        domain_key = "domain:" + mail.rpartition("@")[2]
        if email_verified:
            ordered[domain_key] = None
        else:
            claimed.append(domain_key)
    if authenticated:
        ordered[ALL_AUTHENTICATED_USERS] = None
        ordered[ALL_USERS] = None
        allow = frozenset(ordered)
        deny = allow.union(claimed) if claimed else allow
        return CallerKeys(tuple(ordered), allow, deny, member_key, direct, True)
    # An unauthenticated caller has established nothing but being let through: it is allUsers
    # for grants, while deny rules still see whatever identity it claims.
    deny = frozenset(ordered).union(claimed, (ALL_USERS,))
    return CallerKeys((ALL_USERS,), _ALL_USERS_ONLY, deny, member_key, (), False)


_OWN_EMAIL_KINDS = ("user:", "serviceAccount:")
_ALL_USERS_ONLY = frozenset((ALL_USERS,))
