"""`opsgate policy diff`: the access a policy change grants, revokes, starts or stops denying."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, TextIO

from gateway.policy.deny import DenyMatch, denies_permission, match
from gateway.policy.loader import PolicyError
from gateway.policy.members import SUBJECT_PREFIX, group_key
from gateway.policy.model import DenyRule, Policy
from gateway.policy.roles import predefined_permissions
from gateway.policytools.check import print_policy_error
from gateway.policytools.hierarchy_diff import declared, hierarchy_changes
from gateway.policytools.inputs import UnreadableError, read_policy
from gateway.policytools.render import columns, plural
from gateway.profile import ServiceProfile


class ChangeKind(StrEnum):
    """What a policy change does to one access (lower case words, unlike explain's verdicts)."""

    GRANTED = "granted"
    REVOKED = "revoked"
    NOW_DENIED = "now denied"
    NO_LONGER_DENIED = "no longer denied"


# The sign says which way access moves for the principal.
SIGNS = {
    ChangeKind.GRANTED: "+",
    ChangeKind.REVOKED: "-",
    ChangeKind.NOW_DENIED: "-",
    ChangeKind.NO_LONGER_DENIED: "+",
}

AccessKind = Literal["allow", "deny"]
# Why an access changed when no binding or deny rule did: where a resource sits, or its tags.
RESOURCES_CHANGED = "resources: changed"


@dataclass(frozen=True, slots=True, order=True)
class Access:
    """One expanded grant or denial: a principal, one permission, one resource, one condition."""

    principal: str  # a member key: user:..., group:..., domain:..., allUsers, principal://...
    kind: AccessKind
    permission: str
    resource: str
    condition: str | None  # the expression
    exceptions: tuple[str, ...] = ()  # deny rules named directly: their exception principals


@dataclass(slots=True)
class Expanded:
    """A policy as the set of accesses it states, with where each one comes from."""

    vias: dict[Access, set[str]] = field(default_factory=lambda: defaultdict(set))  # "" direct
    titles: dict[str, str] = field(default_factory=dict)  # condition expression -> its title
    members: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # group -> leaves


@dataclass(frozen=True, slots=True)
class Change:
    access: Access
    change: ChangeKind
    vias: tuple[str, ...]  # groups the principal has it through; empty when named directly
    condition_label: str  # the title, or the expression where the title is ambiguous
    explained_by: str | None  # a group whose own change (shown) says the same


@dataclass(frozen=True, slots=True)
class Definition:
    """A custom role's permissions, a static group's direct members, or what `resources`
    says of one resource (parent, number, tags), before and after."""

    what: Literal["role", "group", "resource"]
    name: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    status: Literal["added", "removed", "changed"]


@dataclass(frozen=True, slots=True)
class PolicyDiff:
    old: str
    new: str
    profile: str
    all_permissions: bool
    changes: tuple[Change, ...]
    definitions: tuple[Definition, ...]
    headers: dict[str, str]  # group key -> "(and its members ...)" for the groups shown


# -- expanding a policy -----------------------------------------------------------------------


def leaf_members(policy: Policy) -> dict[str, list[tuple[str, str]]]:
    """group key -> every member reached through static groups, with the groups in between."""
    direct = policy.index.group_members
    found: dict[str, list[tuple[str, str]]] = {}
    for group in direct:
        reached: list[tuple[str, str]] = []
        seen = {group}
        frontier: list[tuple[str, str]] = [(group, "")]
        while frontier:
            following = []
            for node, path in frontier:
                for member in direct.get(node, ()):
                    if member in seen:
                        continue
                    seen.add(member)
                    reached.append((member, path))
                    if member in direct:
                        following.append((member, f"{path} > {member}" if path else member))
            frontier = following
        found[group] = reached
    return found


def universe(
    policies: Iterable[Policy], profile: ServiceProfile, everything: bool
) -> frozenset[str]:
    """The permissions a diff speaks of: what the profile routes, or every known one."""
    if not everything:
        return profile.permissions
    known = set(profile.permissions) | predefined_permissions()
    for policy in policies:
        known.update(p for role in policy.index.roles.values() for p in role.permissions)
        for rule in policy.deny_rules:
            known.update(rule.denied_permissions.exact)
    return frozenset(known)


def expand(policy: Policy, permissions: frozenset[str]) -> Expanded:
    out = Expanded(members=leaf_members(policy))
    closure = policy.index.group_closure
    for binding in policy.bindings:
        granted = binding.permissions & permissions
        condition = binding.condition
        expression = condition.expression if condition is not None else None
        if condition is not None:
            out.titles.setdefault(condition.expression, condition.title)
        for member in binding.members:
            if member.key is None:
                continue
            for permission in granted:
                access = Access(member.key, "allow", permission, binding.resource, expression)
                out.vias[access].add("")
                for leaf, _ in out.members.get(member.key, ()):
                    out.vias[Access(leaf, "allow", permission, binding.resource, expression)].add(
                        member.key
                    )
    for rule in policy.deny_rules:
        denied = [p for p in permissions if denies_permission(rule, p)]
        condition = rule.condition
        expression = condition.expression if condition is not None else None
        if condition is not None:
            out.titles.setdefault(condition.expression, condition.title)
        exceptions = tuple(sorted(rule.exception_keys))
        for member in rule.denied_principals:
            if member.key is None:
                continue
            for permission in denied:
                access = Access(
                    member.key, "deny", permission, rule.resource, expression, exceptions
                )
                out.vias[access].add("")
                for leaf, _ in out.members.get(member.key, ()):
                    if not leaf_denied(rule, permission, leaf, closure):
                        continue
                    leaf_access = Access(leaf, "deny", permission, rule.resource, expression)
                    out.vias[leaf_access].add(member.key)
    return out


def leaf_denied(
    rule: DenyRule, permission: str, key: str, closure: Mapping[str, tuple[str, ...]]
) -> bool:
    """Whether the rule denies the permission to a member of a static group it names, unless
    its condition is false: the member's keys are what static groups say of it."""
    keys = static_keys(key, closure)
    return match(rule, permission, keys, keys) is DenyMatch.APPLIES


def static_keys(key: str, closure: Mapping[str, tuple[str, ...]]) -> frozenset[str]:
    """The keys a member answers to by the policy alone: itself, its static groups and, for a
    user or service account, its principal://goog/subject/ spelling."""
    keys = {key, *closure.get(key, ())}
    kind, _, email = key.partition(":")
    if kind in ("user", "serviceAccount"):
        keys.add(SUBJECT_PREFIX + email)
    return frozenset(keys)


# -- comparing --------------------------------------------------------------------------------


def compare(
    old: Policy, new: Policy, profile: ServiceProfile, all_permissions: bool = False
) -> PolicyDiff:
    permissions = universe((old, new), profile, all_permissions)
    before, after = expand(old, permissions), expand(new, permissions)
    labels = _labels(before, after)
    raw: list[tuple[Access, ChangeKind, set[str], str]] = []
    for access in sorted(after.vias.keys() - before.vias.keys()):
        change = ChangeKind.GRANTED if access.kind == "allow" else ChangeKind.NOW_DENIED
        raw.append((access, change, after.vias[access], labels.get(access.condition or "", "")))
    for access in sorted(before.vias.keys() - after.vias.keys()):
        change = ChangeKind.REVOKED if access.kind == "allow" else ChangeKind.NO_LONGER_DENIED
        raw.append((access, change, before.vias[access], labels.get(access.condition or "", "")))
    by_group = {(a.principal, change, _what(a)) for a, change, _, _ in raw}
    both_ways = {
        (a.principal, _what(a)) for a, c, _, _ in raw if c == ChangeKind.NO_LONGER_DENIED
    } & {(a.principal, _what(a)) for a, c, _, _ in raw if c == ChangeKind.NOW_DENIED}
    changes = []
    for access, change, vias, title in raw:
        groups = tuple(sorted(v for v in vias if v))
        explained = None
        if "" not in vias:
            # A leaf whose change its group's own line already shows; not when a deny rule's
            # exceptions changed (the group then has lines both ways), so who is exempt shows.
            explained = next(
                (
                    g
                    for g in groups
                    if (g, change, _what(access)) in by_group
                    and (g, _what(access)) not in both_ways
                ),
                None,
            )
        changes.append(Change(access, change, groups, title, explained))
    changes.extend(_hierarchy_changes(old, new, permissions, changes))
    shown = {c.access.principal for c in changes if c.explained_by is None}
    headers = {
        key: _header(key, after.members.get(key, before.members.get(key)))
        for key in shown
        if key.startswith("group:")
    }
    return PolicyDiff(
        old.source,
        new.source,
        profile.name,
        all_permissions,
        tuple(changes),
        tuple(definitions(old, new)),
        headers,
    )


def _hierarchy_changes(
    old: Policy, new: Policy, permissions: frozenset[str], found: list[Change]
) -> Iterable[Change]:
    """Access a `resources` change turns around, not already shown by a binding's change."""
    seen = {(c.access.principal, c.access.permission, c.access.resource) for c in found}
    for principal, permission, resource, allowed in hierarchy_changes(old, new, permissions):
        if (principal, permission, resource) in seen:
            continue
        kind = ChangeKind.GRANTED if allowed else ChangeKind.REVOKED
        access = Access(principal, "allow", permission, resource, None)
        yield Change(access, kind, (), RESOURCES_CHANGED, None)


def _what(access: Access) -> tuple[str, str, str, str | None]:
    return (access.kind, access.permission, access.resource, access.condition)


def _labels(before: Expanded, after: Expanded) -> dict[str, str]:
    """How to show each condition: by its title when the title names one expression in both
    policies, else as `title: expression` (so a changed expression under one title shows)."""
    expressions: dict[str, set[str]] = defaultdict(set)
    for expanded in (before, after):
        for expression, title in expanded.titles.items():
            expressions[title].add(expression)
    labels = {}
    for expanded in (before, after):
        for expression, title in expanded.titles.items():
            unique = bool(title) and len(expressions[title]) == 1
            labels[expression] = (
                title if unique else f"{title}: {expression}" if title else expression
            )
    return labels


def _header(key: str, members: list[tuple[str, str]] | None) -> str:
    if members is None:
        return f"{key} (not defined under groups: membership comes from tokens)"
    leaves = [
        f"{member} via {path}" if path else member
        for member, path in members
        if not member.startswith("group:")
    ]
    if not leaves:
        return f"{key} (a static group with no members)"
    return f"{key} (and its members {', '.join(leaves)})"


def definitions(old: Policy, new: Policy) -> Iterable[Definition]:
    """Custom roles and static groups whose definition changed, for context."""
    old_roles = {r.name: r.permissions for r in old.custom_roles}
    new_roles = {r.name: r.permissions for r in new.custom_roles}
    yield from _definitions("role", old_roles, new_roles)
    old_groups = {group_key(g.email): _written(g.members) for g in old.groups}
    new_groups = {group_key(g.email): _written(g.members) for g in new.groups}
    yield from _definitions("group", old_groups, new_groups)
    yield from _definitions("resource", declared(old), declared(new))


def _written(members: Iterable[Any]) -> frozenset[str]:
    return frozenset(m.key if m.key is not None else m.written for m in members)


def _definitions(
    what: Literal["role", "group", "resource"],
    old: dict[str, frozenset[str]],
    new: dict[str, frozenset[str]],
) -> Iterable[Definition]:
    for name in sorted(old.keys() | new.keys()):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        status: Literal["added", "removed", "changed"] = (
            "added" if before is None else "removed" if after is None else "changed"
        )
        added = tuple(sorted((after or frozenset()) - (before or frozenset())))
        removed = tuple(sorted((before or frozenset()) - (after or frozenset())))
        yield Definition(what, name, added, removed, status)


# -- showing it -------------------------------------------------------------------------------


def render_text(diff: PolicyDiff) -> list[str]:
    scope = "every known permission" if diff.all_permissions else f"{diff.profile} permissions"
    lines = [f"--- {diff.old}", f"+++ {diff.new}", f"({scope}; + more access, - less access)"]
    if diff.definitions:
        lines.append("")
        lines.append("changed definitions:")
        for d in diff.definitions:
            parts = [f"+{item}" for item in d.added] + [f"-{item}" for item in d.removed]
            status = f" ({d.status})" if d.status != "changed" else ""
            lines.append(f"  {d.what} {d.name}{status}: {' '.join(parts) or 'no members'}")
    blocks: dict[str, list[Change]] = defaultdict(list)
    for change in diff.changes:
        if change.explained_by is None:
            blocks[change.access.principal].append(change)
    for principal in sorted(blocks, key=_principal_order):
        lines.append("")
        if principal in diff.headers:
            lines.append(diff.headers[principal])
        rows = [_row(c) for c in sorted(blocks[principal], key=_change_order)]
        lines.extend(columns(rows))
    lines.append("")
    lines.append(summary(diff))
    return lines


def summary(diff: PolicyDiff) -> str:
    if not diff.changes:
        note = " (definitions changed, but not who can do what)" if diff.definitions else ""
        if any(d.what == "resource" for d in diff.definitions):
            note = " (resources: changed, but not who can do what)"
        return f"no access changes{note}"
    shown = [c for c in diff.changes if c.explained_by is None]
    counts: defaultdict[ChangeKind, int] = defaultdict(int)
    for change in shown:
        counts[change.change] += 1
    principals = {c.access.principal for c in shown}
    detail = ", ".join(
        f"{counts[c]} {c}"
        for c in (
            ChangeKind.GRANTED,
            ChangeKind.REVOKED,
            ChangeKind.NOW_DENIED,
            ChangeKind.NO_LONGER_DENIED,
        )
        if counts[c]
    )
    text = (
        f"{plural(len(shown), 'access change')} for "
        f"{plural(len(principals), 'principal')}: {detail}"
    )
    hidden = len(diff.changes) - len(shown)
    if hidden:
        text += f" (and {hidden} for group members, stated by their group's lines)"
    return text


def _principal_order(key: str) -> tuple[int, str]:
    kinds = ("group:", "user:", "serviceAccount:", "domain:", "principal")
    rank = next((i for i, k in enumerate(kinds) if key.startswith(k)), len(kinds))
    return rank, key


def _change_order(change: Change) -> tuple[str, str, bool, str]:
    """By resource and permission; what the old policy said before what the new one says."""
    a = change.access
    new_side = change.change in (ChangeKind.GRANTED, ChangeKind.NOW_DENIED)
    return a.resource, a.permission, new_side, a.condition or ""


def _row(change: Change) -> list[str]:
    a = change.access
    extra: list[str] = []
    if a.kind == "deny":
        extra.append(change.change)
    if a.condition is not None:
        extra.append(f"[if: {change.condition_label or a.condition}]")
    if a.exceptions:
        extra.append(f"[except {', '.join(a.exceptions)}]")
    if change.vias:
        extra.append(f"(via {', '.join(change.vias)})")
    if change.condition_label == RESOURCES_CHANGED and a.condition is None:
        extra.append(f"({RESOURCES_CHANGED})")
    return [
        f"{SIGNS[change.change]} {a.principal}",
        a.permission,
        f"on {a.resource}",
        "  ".join(extra),
    ]


def to_json(diff: PolicyDiff) -> dict[str, Any]:
    return {
        "old": diff.old,
        "new": diff.new,
        "profile": diff.profile,
        "all_permissions": diff.all_permissions,
        "changed": bool(diff.changes),
        "definitions": [
            {
                "kind": d.what,
                "name": d.name,
                "status": d.status,
                "added": list(d.added),
                "removed": list(d.removed),
            }
            for d in diff.definitions
        ],
        "changes": [
            {
                "change": c.change.replace(" ", "_"),
                "access": SIGNS[c.change],
                "principal": c.access.principal,
                "permission": c.access.permission,
                "resource": c.access.resource,
                "condition": None
                if c.access.condition is None
                else {"expression": c.access.condition, "label": c.condition_label},
                "except": list(c.access.exceptions),
                "via": list(c.vias),
                "explained_by": c.explained_by,
            }
            for c in diff.changes
        ],
    }


def run(
    old_path: Path,
    new_path: Path,
    profile: ServiceProfile,
    all_permissions: bool,
    as_json: bool,
    out: TextIO,
    err: TextIO,
) -> int:
    """0 when no access changes, 1 when some do, 2 when either file cannot be used."""
    loaded: list[Policy] = []
    failed = False
    for path in (old_path, new_path):
        try:
            loaded.append(read_policy(path, profile))
        except PolicyError as exc:
            print_policy_error(exc, err)
            failed = True
        except UnreadableError as exc:
            print(f"opsgate policy: error: {exc.message}", file=err)
            failed = True
    if failed:
        return 2
    diff = compare(loaded[0], loaded[1], profile, all_permissions)
    if as_json:
        print(json.dumps(to_json(diff), indent=2), file=out)
    else:
        print("\n".join(render_text(diff)), file=out)
    return 1 if diff.changes else 0
