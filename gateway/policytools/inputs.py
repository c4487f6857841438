"""What the policy commands are given, made usable: policy files, profiles, callers, times."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from gateway.errors import ConfigError, InvalidArgument, OpsgateError, Unimplemented
from gateway.policy.hierarchy import resource_chain
from gateway.policy.loader import load_policy_text
from gateway.policy.members import (
    canonical_identity,
    escaped,
    is_domain,
    is_email,
    is_principal_uri,
)
from gateway.policy.model import AccessRequest, Caller, Policy
from gateway.policy.roles import normalize_permission, parse_permission, predefined_permissions
from gateway.profile import ServiceProfile, load_profile
from gateway.resource_names import name_problem, printable
from gateway.routing import OPERATIONS_METHODS, SERVICE_PREFIX
from gateway.runtime import collector_paused

CALLER_FORMS = (
    "a caller is user:EMAIL, serviceAccount:EMAIL, principal://... or allUsers (no credentials)"
)


class InputError(OpsgateError):
    """A value or file given to a policy command cannot be used; `hint` says what would work."""

    reason = "INPUT_INVALID"

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UnreadableError(InputError):
    """A file that cannot be read at all (missing, unreadable, not UTF-8)."""

    reason = "INPUT_UNREADABLE"


@dataclass(frozen=True, slots=True)
class Request:
    """One question put to a policy: who, which permission on which resource, and when."""

    caller: Caller
    access: AccessRequest
    method: str | None  # the short method name, when the question was asked as a method
    now: datetime


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UnreadableError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise UnreadableError(f"{path}: is not UTF-8 text") from exc


def read_policy(path: Path, profile: ServiceProfile) -> Policy:
    """Load a policy as the gateway would; raises UnreadableError, or PolicyError (all problems)."""
    text = read_text(path)
    with collector_paused():
        return load_policy_text(text, str(path), profile.permissions)


def read_profile(name: str | None, path: Path | None) -> ServiceProfile:
    try:
        return load_profile(name, path)
    except ConfigError as exc:
        raise InputError(str(exc)) from exc


def parse_time(value: object) -> datetime:
    """An RFC 3339 timestamp with an offset (a string, or a datetime YAML already read), in UTC."""
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, date):
        raise InputError(f"'{value}' is a date, not a time", "write e.g. 2026-06-01T12:00:00Z")
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise InputError(
                f"'{value}' is not an RFC 3339 time", "write e.g. 2026-06-01T12:00:00Z"
            ) from exc
    else:
        raise InputError(f"{value!r} is not a time", "write e.g. 2026-06-01T12:00:00Z")
    if when.tzinfo is None:
        raise InputError(f"'{value}' has no time zone", "add Z or an offset such as +02:00")
    return when.astimezone(UTC)


def caller_for(
    principal: str, groups: Iterable[str] = (), hosted_domain: str | None = None
) -> Caller:
    """The caller a verified token for `principal` would make (user: and serviceAccount:
    emails count as verified), with `groups` as the token's groups claim and `hosted_domain`
    as an `hd` its issuer is trusted for. Emails, groups and the domain are taken as the
    gateway takes them from a token: in canonical form, so a non-ASCII one stays exact."""
    group_emails = frozenset(_group_email(g) for g in groups)
    hd = _hosted_domain(hosted_domain) if hosted_domain else None
    if principal == "allUsers":
        if group_emails or hd:
            raise InputError("allUsers (a caller without credentials) has no groups or domain")
        return Caller(member="allUsers", authenticated=False)
    kind, sep, value = principal.partition(":")
    if kind in ("user", "serviceAccount") and sep:
        if not _token_email(value):
            raise InputError(f"'{escaped(principal)}' does not name an email", CALLER_FORMS)
        email = canonical_identity(value)
        return Caller(
            member=f"{kind}:{email}",
            email=email,
            email_verified=True,
            hosted_domain=hd,
            groups=group_emails,
        )
    if principal.startswith("principal://") and is_principal_uri(principal):
        return Caller(member=principal, hosted_domain=hd, groups=group_emails)
    if not sep and is_email(principal):
        raise InputError(
            f"'{principal}' has no kind", f"write user:{principal} or serviceAccount:{principal}"
        )
    if kind == "group":
        raise InputError(
            f"'{principal}' cannot be a caller",
            f"{CALLER_FORMS}; list a caller's groups under groups (--groups)",
        )
    raise InputError(f"'{escaped(principal)}' cannot be a caller", CALLER_FORMS)


def _group_email(text: str) -> str:
    email = text.removeprefix("group:")
    if not _token_email(email):
        raise InputError(f"'{escaped(text)}' is not a group email", "write EMAIL or group:EMAIL")
    return canonical_identity(email)


def _hosted_domain(text: str) -> str:
    if not (is_domain(text) or _foreign(text)):
        raise InputError(f"'{escaped(text)}' is not a domain", "write e.g. acme.example")
    return canonical_identity(text)


def _token_email(text: str) -> bool:
    """An email a token may carry: an IAM email, or one with non-ASCII characters (which the
    gateway compares exactly, so it is never a policy member; asking about it is allowed)."""
    local, _, domain = text.rpartition("@")
    return is_email(text) or (_foreign(text) and bool(local) and bool(domain))


def _foreign(text: str) -> bool:
    """Non-ASCII, one word, printable: exactly compared, never folded."""
    return not text.isascii() and text.isprintable() and text.split() == [text]


def known_permissions(policy: Policy, profile: ServiceProfile) -> frozenset[str]:
    """Every permission the profile routes or some role of the policy includes."""
    from_roles = (p for role in policy.index.roles.values() for p in role.permissions)
    return profile.permissions | predefined_permissions() | frozenset(from_roles)


def access_for(
    profile: ServiceProfile,
    resource: str,
    *,
    method: str | None,
    permission: str | None,
    known: frozenset[str],
) -> tuple[AccessRequest, str | None]:
    """The permission asked for, directly or as the profile routes `method` on `resource`."""
    if method is not None:
        short = method_name(method)
        try:
            access = profile.access_for(SERVICE_PREFIX + short, resource)
        except Unimplemented as exc:
            routed = ", ".join(m.rsplit("/", 1)[-1] for m in profile.routes)
            raise InputError(
                f"{short} is not routed by the {profile.name} profile (callers get UNIMPLEMENTED)",
                f"it routes {routed}",
            ) from exc
        except InvalidArgument as exc:
            raise InputError(exc.message) from exc
        return AccessRequest(access.permission, resource), short
    assert permission is not None
    problem = name_problem(resource)
    chain = resource_chain(resource) if problem is None else ()
    if problem is None and not (chain and chain[0].startswith("projects/")):
        problem = "it does not start with projects/P"
    if problem is not None:
        raise InputError(f"'{printable(resource)}' is not a resource name: {problem}")
    parsed = parse_permission(permission.strip(), allow_patterns=False)
    if parsed.exact is None:
        raise InputError(parsed.problem or f"'{permission}' is not a permission", parsed.hint)
    dotted = normalize_permission(parsed.exact)
    if dotted not in known:
        close = difflib.get_close_matches(dotted, sorted(known), n=1)
        suggestion = f" (did you mean '{close[0]}'?)" if close else ""
        raise InputError(
            f"unknown permission '{permission}'{suggestion}",
            f"no role in the policy includes it and the {profile.name} profile does not route it",
        )
    return AccessRequest(dotted, resource), None


def method_name(method: str) -> str:
    """GetOperation from GetOperation or /google.longrunning.Operations/GetOperation."""
    short = method.strip().removeprefix(SERVICE_PREFIX)
    names = [m.name for m in OPERATIONS_METHODS]
    if short not in names:
        close = difflib.get_close_matches(short, names, n=1)
        suggestion = f" (did you mean '{close[0]}'?)" if close else ""
        raise InputError(
            f"'{method}' is not an Operations method{suggestion}", f"methods: {', '.join(names)}"
        )
    return short
