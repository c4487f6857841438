"""Roles (predefined from data/roles.yaml, custom from the policy file) and permission names."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any

import yaml

# Checked with fullmatch: `$` also matches before a trailing newline.
# IAM v1 spelling: SERVICE.RESOURCE.VERB, e.g. contactcenterinsights.operations.get.
_DOTTED = re.compile(r"[a-z][a-z0-9]*(?:\.[a-zA-Z][a-zA-Z0-9]*){2,}")
# IAM v2 (deny rule) spelling: SERVICE.googleapis.com/RESOURCE.VERB.
_FQDN_SUFFIX = ".googleapis.com"
_SERVICE = re.compile(r"[a-z][a-z0-9]*")
_REST = re.compile(r"[a-zA-Z][a-zA-Z0-9]*(?:\.[a-zA-Z][a-zA-Z0-9]*)+")
_WORD = re.compile(r"[a-zA-Z][a-zA-Z0-9]*")


@dataclass(frozen=True, slots=True)
class Role:
    """A role and the permissions it includes; `custom` roles come from the policy file."""

    name: str
    title: str
    permissions: frozenset[str]
    custom: bool = False
    description: str = ""
    source_line: int | None = None


@dataclass(frozen=True, slots=True)
class PermissionPattern:
    """A deny-rule permission group: SERVICE_FQDN/*, SERVICE_FQDN/RES.* or SERVICE_FQDN/*.VERB."""

    written: str
    service: str  # "contactcenterinsights"
    resource: str | None  # None: any resource
    verb: str | None  # None: any verb

    def matches(self, permission: str) -> bool:
        service, _, rest = permission.partition(".")
        if service != self.service or not rest:
            return False
        resource, _, verb = rest.rpartition(".")
        if self.resource is not None and resource != self.resource:
            return False
        return self.verb is None or verb == self.verb


@dataclass(frozen=True, slots=True)
class PermissionSet:
    """Exact permissions plus permission groups, as a deny rule lists them."""

    exact: frozenset[str] = frozenset()
    patterns: tuple[PermissionPattern, ...] = ()

    def matches(self, permission: str) -> bool:
        if permission in self.exact:
            return True
        return any(pattern.matches(permission) for pattern in self.patterns)

    def __bool__(self) -> bool:
        return bool(self.exact or self.patterns)


@dataclass(frozen=True, slots=True)
class ParsedPermission:
    """One permission as written: exactly one of `exact`, `pattern` or `problem` is set."""

    exact: str | None = None
    pattern: PermissionPattern | None = None
    problem: str | None = None
    hint: str = ""


def normalize_permission(permission: str) -> str:
    """SERVICE.googleapis.com/RESOURCE.VERB as SERVICE.RESOURCE.VERB; other text unchanged.

    Cheap on the dotted spelling (one `in` test) because the evaluator calls it per decision.
    """
    if "/" not in permission:
        return permission
    host, _, rest = permission.partition("/")
    if host.endswith(_FQDN_SUFFIX):
        return f"{host[: -len(_FQDN_SUFFIX)]}.{rest}"
    return permission


def to_fqdn_spelling(permission: str) -> str:
    """The deny-rule spelling: svc.res.verb as svc.googleapis.com/res.verb."""
    service, _, rest = permission.partition(".")
    return f"{service}{_FQDN_SUFFIX}/{rest}"


def parse_permission(text: str, *, allow_patterns: bool) -> ParsedPermission:
    """Parse either spelling; permission groups only where `allow_patterns` (deny rules)."""
    fqdn_hint = (
        "write SERVICE.googleapis.com/* (for example contactcenterinsights.googleapis.com/*)"
    )
    if text == "*":
        if not allow_patterns:
            return ParsedPermission(problem="'*' is not a permission")
        # Google's deny rules have no bare '*'; a group is always scoped to one service.
        return ParsedPermission(problem="a bare '*' is not a permission group", hint=fqdn_hint)
    if "/" not in text:
        if _DOTTED.fullmatch(text):
            return ParsedPermission(exact=text)
        if "*" in text:
            hint = fqdn_hint if allow_patterns else "custom roles list permissions one by one"
            return ParsedPermission(problem=f"'{text}' is not a permission group", hint=hint)
        return ParsedPermission(
            problem=f"'{text}' is not a permission",
            hint="permissions look like contactcenterinsights.operations.get",
        )
    host, _, rest = text.partition("/")
    service = host[: -len(_FQDN_SUFFIX)] if host.endswith(_FQDN_SUFFIX) else ""
    if not _SERVICE.fullmatch(service):
        return ParsedPermission(
            problem=f"'{text}' is not a permission",
            hint="the v2 spelling is SERVICE.googleapis.com/RESOURCE.VERB",
        )
    if "*" not in rest:
        if _REST.fullmatch(rest):
            return ParsedPermission(exact=f"{service}.{rest}")
        return ParsedPermission(
            problem=f"'{text}' is not a permission",
            hint="the v2 spelling is SERVICE.googleapis.com/RESOURCE.VERB",
        )
    if not allow_patterns:
        return ParsedPermission(
            problem=f"'{text}' is a permission group, which only deny rules accept",
            hint="list the permissions one by one",
        )
    resource, _, verb = rest.rpartition(".")
    if rest == "*":
        return ParsedPermission(pattern=PermissionPattern(text, service, None, None))
    if verb == "*" and _WORD.fullmatch(resource):
        return ParsedPermission(pattern=PermissionPattern(text, service, resource, None))
    if resource == "*" and _WORD.fullmatch(verb):
        return ParsedPermission(pattern=PermissionPattern(text, service, None, verb))
    return ParsedPermission(
        problem=f"'{text}' is not a permission group",
        hint="groups are SERVICE.googleapis.com/*, .../RESOURCE.* or .../*.VERB",
    )


@cache
def predefined_roles() -> Mapping[str, Role]:
    """The predefined roles shipped in data/roles.yaml, read once."""
    text = resources.files("gateway.policy").joinpath("data/roles.yaml").read_text("utf-8")
    return MappingProxyType(_roles_from_data(yaml.safe_load(text)))


@cache
def predefined_permissions() -> frozenset[str]:
    """Every permission some predefined role includes."""
    return frozenset(p for role in predefined_roles().values() for p in role.permissions)


def _roles_from_data(data: Any) -> dict[str, Role]:
    # The file is ours and covered by tests; a malformed one is a packaging bug, not user input.
    if not isinstance(data, dict) or not isinstance(data.get("roles"), dict):
        raise RuntimeError("gateway/policy/data/roles.yaml has no 'roles' mapping")
    roles: dict[str, Role] = {}
    for name, spec in data["roles"].items():
        permissions = spec.get("includedPermissions") if isinstance(spec, dict) else None
        if not isinstance(permissions, list) or not all(
            isinstance(p, str) and _DOTTED.fullmatch(p) for p in permissions
        ):
            raise RuntimeError(f"gateway/policy/data/roles.yaml: role {name} is malformed")
        roles[name] = Role(
            name=name, title=str(spec.get("title", "")), permissions=frozenset(permissions)
        )
    return roles
