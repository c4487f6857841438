"""Roles (predefined from data/roles.yaml, custom from the policy file) and permission names."""

from __future__ import annotations

import datetime as dt
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
def _catalogue() -> Any:
    text = resources.files("gateway.policy").joinpath("data/roles.yaml").read_text("utf-8")
    # libyaml's loader when PyYAML has it: the catalogue is a few thousand lines.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(text, Loader=loader)


@cache
def predefined_roles() -> Mapping[str, Role]:
    """The predefined roles shipped in data/roles.yaml, read once."""
    return MappingProxyType(_roles_from_data(_catalogue()))


@cache
def predefined_permissions() -> frozenset[str]:
    """Every permission some predefined role includes, and those the service's methods need
    that no predefined role includes (the catalogue's `permissionsInNoRole`)."""
    in_roles = frozenset(p for role in predefined_roles().values() for p in role.permissions)
    return in_roles | _permissions_in_no_role(_catalogue())


def _permissions_in_no_role(data: Any) -> frozenset[str]:
    listed = data.get("permissionsInNoRole", [])
    if not isinstance(listed, list) or not all(
        isinstance(p, str) and _DOTTED.fullmatch(p) for p in listed
    ):
        raise RuntimeError("gateway/policy/data/roles.yaml: permissionsInNoRole is malformed")
    return frozenset(listed)


# Launch stages as IAM's roles.get reports them; "" where Google gives none (roles/admin).
_STAGES = frozenset({"", "ALPHA", "BETA", "GA", "DEPRECATED", "DISABLED", "EAP"})
_ROLE_KEYS = frozenset({"title", "description", "stage", "includedPermissions"})
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _roles_from_data(data: Any) -> dict[str, Role]:
    # The file is ours and covered by tests; a malformed one is a packaging bug, not user input.
    where = "gateway/policy/data/roles.yaml"
    if not isinstance(data, dict) or not isinstance(data.get("roles"), dict):
        raise RuntimeError(f"{where} has no 'roles' mapping")
    _check_source(data.get("source"), where)
    roles: dict[str, Role] = {}
    for name, spec in data["roles"].items():
        if not isinstance(name, str) or not name.startswith("roles/") or not isinstance(spec, dict):
            raise RuntimeError(f"{where}: role {name} is malformed")
        unknown = set(spec) - _ROLE_KEYS
        permissions = spec.get("includedPermissions")
        title, description = spec.get("title", ""), spec.get("description", "")
        if (
            unknown
            or not isinstance(permissions, list)
            or not all(isinstance(p, str) and _DOTTED.fullmatch(p) for p in permissions)
            or len(set(permissions)) != len(permissions)
            or not isinstance(title, str)
            or not isinstance(description, str)
            or spec.get("stage", "") not in _STAGES
        ):
            raise RuntimeError(f"{where}: role {name} is malformed")
        roles[name] = Role(
            name=name,
            title=title,
            permissions=frozenset(permissions),
            description=description,
        )
    return roles


def _check_source(source: Any, where: str) -> None:
    """The catalogue names where its data comes from: a reference URL and the date it was taken."""
    retrieved = source.get("retrieved") if isinstance(source, dict) else None
    if isinstance(retrieved, dt.date):  # YAML reads an unquoted 2026-12-07 as a date
        retrieved = retrieved.isoformat()
    if (
        not isinstance(source, dict)
        or not isinstance(source.get("url"), str)
        or not source["url"].startswith("https://")
        or not isinstance(retrieved, str)
        or not _DATE.fullmatch(retrieved)
    ):
        raise RuntimeError(f"{where}: 'source' needs a https url and a retrieved date (YYYY-MM-DD)")
