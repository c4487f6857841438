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

# Syntax is checked with fullmatch: `$` also matches before a trailing newline, so a member
# written with a YAML block scalar would pass and then never match anything.
_EMAIL = re.compile(r"[A-Za-z0-9._%+'\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
_DOMAIN = re.compile(r"[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
_PRINCIPAL = re.compile(r"principal://[^/\s]+/\S+")
_UID = re.compile(r"[0-9]+")
_EMAIL_KINDS = ("user", "serviceAccount", "group")
# Google's fixed prefixes; written in another case they would be read as some other principal
# that no caller ever is.
_FIXED_PREFIXES = (SUBJECT_PREFIX, _SA_PRINCIPAL_PREFIX, _GROUP_SET_PREFIX, _PUBLIC_SET)
_ASCII_PRINCIPALS = (SUBJECT_PREFIX, _SA_PRINCIPAL_PREFIX)  # principal:// forms naming emails

MEMBER_FORMS_HINT = (
    "members are user:EMAIL, serviceAccount:EMAIL, group:EMAIL, domain:DOMAIN, allUsers, "
    "allAuthenticatedUsers, principal://goog/subject/EMAIL, principalSet://goog/group/EMAIL, "
    "principalSet://goog/public:all or deleted:KIND:EMAIL?uid=ID"
)


def canonical_identity(text: str) -> str:
    """An email, group email or domain in the one form identities are compared in.

    IAM emails are case-insensitive ASCII, so ASCII text is lower-cased. Anything else is kept
    exactly as it is: Unicode lower-casing folds the Kelvin sign into 'k' (and dotted I into
    'i' plus a dot), which would let a non-ASCII spelling pass for an ASCII member. Kept exact,
    a non-ASCII identity equals only itself, and no policy member (they are ASCII) at all.
    """
    return text.lower() if text.isascii() else text


def is_email(text: str) -> bool:
    """An IAM email address: ASCII, the whole string."""
    return _EMAIL.fullmatch(text) is not None


def is_domain(text: str) -> bool:
    """A DNS domain as domain: members name it: ASCII, the whole string."""
    return _DOMAIN.fullmatch(text) is not None


def is_principal_uri(text: str) -> bool:
    """A principal:// identifier compared exactly as written (workforce, workload, issuer)."""
    return _PRINCIPAL.fullmatch(text) is not None and text.isprintable()


def escaped(text: str) -> str:
    """`text` for a message: escaped, so a newline or a look-alike letter shows as what it is."""
    return text.encode("unicode_escape").decode("ascii")


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
    """Parse one member string into its canonical key (see canonical_identity)."""
    key = _member_key(text)
    if key is not None:
        return ParsedMember(member=Member(text, key))
    if text.startswith("deleted:"):
        inner, marker, uid = text[len("deleted:") :].partition("?uid=")
        if _member_key(inner) is not None and (not marker or _UID.fullmatch(uid)):
            return ParsedMember(member=Member(text, None))
    return ParsedMember(problem=member_problem(text))


# Google's principal sets that name callers by facts opsgate does not hold: workforce and
# workload identity pools' groups and attributes, a Cloud Identity customer, a project's
# service accounts. Real exports carry them.
_UNRESOLVABLE = re.compile(
    r"principalSet://(?:iam\.googleapis\.com|goog/cloudIdentityCustomerId"
    r"|cloudresourcemanager\.googleapis\.com)/\S+"
)


def unresolvable_principal(text: str) -> bool:
    """A principal set of Google's that opsgate cannot tell a caller's membership of."""
    return _UNRESOLVABLE.fullmatch(text) is not None


def member_problem(text: str) -> str:
    """Why `text`, which parse_member refused, is not a member."""
    exact_form = text.startswith("principal://") and not text.startswith(_ASCII_PRINCIPALS)
    if not text.isascii() and not exact_form:
        return (
            f"member '{escaped(text)}' has non-ASCII characters: IAM emails and domains are "
            "ASCII, and a token spelling one with other characters is never that member"
        )
    if text != text.strip():
        return (
            f"member '{escaped(text)}' has leading or trailing whitespace (a YAML block scalar "
            "keeps its line break); it would never match"
        )
    prefix = _miscased_prefix(text)
    if prefix is not None:
        return f"malformed member '{escaped(text)}': write '{prefix}' exactly so"
    if text.startswith("principalSet://"):
        return f"unsupported principal set '{escaped(text)}'"
    return f"malformed member '{escaped(text)}'"


def _member_key(text: str) -> str | None:
    kind, sep, value = text.partition(":")
    if sep and kind in _EMAIL_KINDS:  # the common forms first; no other form starts this way
        return f"{kind}:{canonical_identity(value)}" if is_email(value) else None
    if text in (ALL_USERS, ALL_AUTHENTICATED_USERS):
        return text
    if text == _PUBLIC_SET:
        return ALL_USERS
    if text.startswith(_GROUP_SET_PREFIX):
        email = text[len(_GROUP_SET_PREFIX) :]
        return f"group:{canonical_identity(email)}" if is_email(email) else None
    if text.startswith(_SA_PRINCIPAL_PREFIX):
        email = text[len(_SA_PRINCIPAL_PREFIX) :]
        return f"serviceAccount:{canonical_identity(email)}" if is_email(email) else None
    if text.startswith(SUBJECT_PREFIX):
        email = text[len(SUBJECT_PREFIX) :]
        return f"{SUBJECT_PREFIX}{canonical_identity(email)}" if is_email(email) else None
    if text.startswith("principal://"):
        # Other subject forms (workforce and workload pools) are compared exactly as written;
        # goog's only principal:// form is the subject, handled above.
        host = text[len("principal://") :].partition("/")[0]
        if not is_principal_uri(text) or canonical_identity(host) == "goog":
            return None
        return text if _miscased_prefix(text) is None else None
    if not sep:
        return None
    if kind == "domain":
        return f"domain:{canonical_identity(value)}" if is_domain(value) else None
    return None


def _miscased_prefix(text: str) -> str | None:
    """The fixed prefix `text` spells in another case, if any."""
    for prefix in _FIXED_PREFIXES:
        written = text[: len(prefix)]
        if written != prefix and canonical_identity(written) == prefix.lower():
            return prefix
    return None


def group_key(email: str) -> str:
    """The match key of a group, from its email with or without a group: prefix."""
    if email.startswith("group:"):
        email = email[len("group:") :]
    return f"group:{canonical_identity(email)}"


def caller_member_key(member: str) -> str:
    """The caller's own member as a match key: the email part canonical, as in the policy."""
    kind, sep, value = member.partition(":")
    if sep and kind in ("user", "serviceAccount") and "@" in value:
        return f"{kind}:{canonical_identity(value)}"
    if member.startswith(_SA_PRINCIPAL_PREFIX):
        return f"serviceAccount:{canonical_identity(member[len(_SA_PRINCIPAL_PREFIX) :])}"
    if member.startswith(SUBJECT_PREFIX):
        return SUBJECT_PREFIX + canonical_identity(member[len(SUBJECT_PREFIX) :])
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
    mail = canonical_identity(email) if email else None
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
        ordered["domain:" + canonical_identity(hosted_domain)] = None
    if mail:
        # The domain is an identity of its own: ASCII, it folds even when the local part is not.
        domain_key = "domain:" + canonical_identity(mail.rpartition("@")[2])
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
