"""The loaded policy: callers, requests, bindings, deny rules, groups, and the Policy itself."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.policy.hierarchy import EMPTY_HIERARCHY, Hierarchy
from gateway.policy.members import Member
from gateway.policy.roles import PermissionSet, Role

SCAN_MEMBERS = 8  # up to this many members, a binding is searched in order; past it, by key

if TYPE_CHECKING:
    from gateway.policy.cel import CompiledCondition
    from gateway.policy.index import PolicyIndex


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking, as the evaluator sees it; the gateway maps its verified Principal to this."""

    member: str  # "user:alice@acme.example", "serviceAccount:...", or "principal://..."
    email: str | None = None
    email_verified: bool = False
    hosted_domain: str | None = None
    groups: frozenset[str] = frozenset()  # group emails from the token
    authenticated: bool = True


@dataclass(frozen=True, slots=True)
class AccessRequest:
    """One permission asked for on one resource."""

    permission: str  # contactcenterinsights.operations.get
    resource: str  # projects/p/locations/l/operations/o


@dataclass(frozen=True, slots=True)
class Condition:
    """An IAM condition (a google.type.Expr) as written, compiled once at load."""

    expression: str
    title: str
    description: str
    compiled: CompiledCondition
    line: int | None  # of the expression


@dataclass(frozen=True, slots=True)
class Binding:
    """One allow binding: a role granted to members on a resource, optionally under a condition."""

    ordinal: int  # position among the file's bindings; orders traces and breaks ties
    resource: str  # normalised: projects/...
    role: str
    members: tuple[Member, ...]
    condition: Condition | None
    source_line: int | None
    permissions: frozenset[str]  # the role's, resolved at load
    # key -> first member with that key, built on the first lookup of a long member list.
    _by_key: dict[str, Member] | None = field(default=None, init=False, repr=False, compare=False)

    def member_for(self, key: str) -> Member | None:
        """The member as written whose key is `key`."""
        if len(self.members) <= SCAN_MEMBERS:
            return next((m for m in self.members if m.key == key), None)
        by_key = self._by_key
        if by_key is None:
            by_key = {}
            for member in self.members:
                if member.key is not None:
                    by_key.setdefault(member.key, member)
            object.__setattr__(self, "_by_key", by_key)  # a cache: set once, same every time
        return by_key.get(key)


@dataclass(frozen=True, slots=True)
class DenyRule:
    """One IAM v2 deny rule attached to a resource."""

    ordinal: int  # position among the file's deny rules
    resource: str
    denied_principals: tuple[Member, ...]
    exception_principals: tuple[Member, ...]
    denied_permissions: PermissionSet
    exception_permissions: PermissionSet
    condition: Condition | None
    source_line: int | None
    description: str
    policy_name: str  # the deny entry's displayName or name, if it had one
    denied_keys: frozenset[str]
    exception_keys: frozenset[str]

    def principal_for(self, keys: frozenset[str]) -> Member | None:
        """The first denied principal, as written, among the caller's keys."""
        return next((m for m in self.denied_principals if m.key in keys), None)

    def exception_for(self, keys: frozenset[str]) -> Member | None:
        return next((m for m in self.exception_principals if m.key in keys), None)


@dataclass(frozen=True, slots=True)
class AuditLogConfig:
    """One log type an allow policy turns on for a service, and who is exempted from it."""

    log_type: str  # ADMIN_READ, DATA_READ or DATA_WRITE
    exempted: tuple[Member, ...]
    exempted_keys: frozenset[str]


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """An allow policy's auditConfigs entry: `service` is a DNS name or allServices."""

    resource: str
    service: str
    log_configs: tuple[AuditLogConfig, ...]
    source_line: int | None


@dataclass(frozen=True, slots=True)
class PolicyNote:
    """Something legal in a policy file that grants or does less than it seems: a warning."""

    line: int | None
    kind: str
    message: str
    hint: str = ""


@dataclass(frozen=True, slots=True)
class Group:
    """A statically defined group and its direct members."""

    email: str  # lower-case, without group:
    members: tuple[Member, ...]
    source_line: int | None


# eq=False: a Policy is compared by etag, and its index holds dicts, which cannot be hashed.
@dataclass(frozen=True, slots=True, eq=False)
class Policy:
    """A loaded, validated policy file with its decision index."""

    source: str
    etag: str  # sha256 of the canonical content, first 16 hex digits
    declared_etag: str | None  # the file's own `etag` key, kept but not trusted
    description: str
    bindings: tuple[Binding, ...]
    deny_rules: tuple[DenyRule, ...]
    custom_roles: tuple[Role, ...]
    groups: tuple[Group, ...]
    index: PolicyIndex
    hierarchy: Hierarchy = EMPTY_HIERARCHY
    # resource -> the auditConfigs of its allow policy; only resources whose policy has the key.
    audit_configs: Mapping[str, tuple[AuditConfig, ...]] = field(default_factory=dict)
    notes: tuple[PolicyNote, ...] = ()  # found while loading; `policy check` shows them

    def role(self, name: str) -> Role | None:
        return self.index.roles.get(name)

    def role_permissions(self, role: str) -> frozenset[str]:
        """The permissions a predefined or custom role includes; empty for an unknown role."""
        found = self.index.roles.get(role)
        return found.permissions if found is not None else frozenset()
