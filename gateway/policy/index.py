"""The decision index built at load: a decision is O(depth) dict lookups, flat in policy size."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING

from gateway.policy.decision import TraceEntry
from gateway.policy.members import group_key
from gateway.policy.roles import Role

if TYPE_CHECKING:
    from gateway.policy.model import Binding, DenyRule, Group


# A default-deny trace lists at most this many near misses, so a decision's cost and size stay
# bounded however many bindings hold the permission.
MAX_TRACE_BINDINGS = 20
_ORDINAL = attrgetter("ordinal")


@dataclass(frozen=True, slots=True, eq=False)
class GrantEntry:
    """The bindings on one resource whose role includes one permission."""

    # member key -> bindings naming it; unconditional bindings first, then in file order, so
    # the first hit usually decides without evaluating any condition.
    by_member: Mapping[str, tuple[Binding, ...]]
    bindings: tuple[Binding, ...]  # all of them, in file order, for default-deny traces
    # Default-deny trace entries for the first bindings, made once: a binding whose members did
    # not match looks the same whoever asked, so a decision need not build it again.
    misses: tuple[TraceEntry, ...]


@dataclass(frozen=True, slots=True, eq=False)
class PolicyIndex:
    """Read-only lookup tables; dicts because a decision must not scan (never mutated)."""

    grants: Mapping[str, Mapping[str, GrantEntry]]  # permission -> resource -> entry
    deny_exact: Mapping[str, Mapping[str, tuple[DenyRule, ...]]]  # permission -> resource -> rules
    deny_patterned: Mapping[str, tuple[DenyRule, ...]]  # resource -> rules with permission groups
    bindings_by_resource: Mapping[str, tuple[Binding, ...]]
    deny_by_resource: Mapping[str, tuple[DenyRule, ...]]
    group_closure: Mapping[str, tuple[str, ...]]  # member key -> groups it is in, transitively
    group_via: Mapping[str, Mapping[str, str]]  # member key -> group -> the groups in between
    group_members: Mapping[str, tuple[str, ...]]  # group key -> direct member keys
    roles: Mapping[str, Role]  # predefined and custom


def build_index(
    bindings: Iterable[Binding],
    deny_rules: Iterable[DenyRule],
    groups: Iterable[Group],
    roles: Mapping[str, Role],
) -> PolicyIndex:
    by_resource: dict[str, list[Binding]] = {}
    for binding in bindings:
        by_resource.setdefault(binding.resource, []).append(binding)
    grants: dict[str, dict[str, GrantEntry]] = {}
    misses: dict[int, TraceEntry] = {}
    for resource, found in by_resource.items():
        per_permission: dict[str, list[Binding]] = {}
        for binding in found:
            for permission in binding.permissions:
                per_permission.setdefault(permission, []).append(binding)
        # Most permissions on a resource are held by the same bindings (get and list come
        # together in every role); they share one entry, which keeps load time and memory down.
        shared: dict[tuple[int, ...], GrantEntry] = {}
        for permission, holders in per_permission.items():
            signature = tuple(map(_ORDINAL, holders))
            entry = shared.get(signature)
            if entry is None:
                entry = shared[signature] = _grant_entry(holders, misses)
            grants.setdefault(permission, {})[resource] = entry

    deny_exact: defaultdict[str, defaultdict[str, list[DenyRule]]] = defaultdict(
        lambda: defaultdict(list)
    )
    deny_patterned: defaultdict[str, list[DenyRule]] = defaultdict(list)
    deny_by_resource: defaultdict[str, list[DenyRule]] = defaultdict(list)
    for rule in deny_rules:
        deny_by_resource[rule.resource].append(rule)
        for permission in rule.denied_permissions.exact:
            deny_exact[permission][rule.resource].append(rule)
        if rule.denied_permissions.patterns:
            deny_patterned[rule.resource].append(rule)

    members = {
        group_key(group.email): tuple(m.key for m in group.members if m.key is not None)
        for group in groups
    }
    closure, via = group_reach(members)
    return PolicyIndex(
        grants=grants,
        deny_exact={p: {r: tuple(v) for r, v in per.items()} for p, per in deny_exact.items()},
        deny_patterned={r: tuple(v) for r, v in deny_patterned.items()},
        bindings_by_resource={r: tuple(v) for r, v in by_resource.items()},
        deny_by_resource={r: tuple(v) for r, v in deny_by_resource.items()},
        group_closure=closure,
        group_via=via,
        group_members=members,
        roles=roles,
    )


def _grant_entry(found: list[Binding], misses: dict[int, TraceEntry]) -> GrantEntry:
    by_member: dict[str, list[Binding]] = {}
    for binding in found:
        for member in binding.members:
            key = member.key
            if key is None:
                continue
            bucket = by_member.get(key)
            if bucket is None:
                by_member[key] = [binding]
            elif bucket[-1] is not binding:  # a binding naming a member twice is indexed once
                bucket.append(binding)
    return GrantEntry(
        by_member={
            key: (bucket[0],)
            if len(bucket) == 1
            else tuple(sorted(bucket, key=_unconditional_first))
            for key, bucket in by_member.items()
        },
        bindings=tuple(found),
        misses=tuple(
            [misses.get(b.ordinal) or _miss(b, misses) for b in found[:MAX_TRACE_BINDINGS]]
        ),
    )


def _miss(binding: Binding, made: dict[int, TraceEntry]) -> TraceEntry:
    """The trace entry of a binding whose members did not match, kept in `made`: the callers
    look there first, so each binding's entry is made once."""
    condition = binding.condition
    entry = made[binding.ordinal] = TraceEntry(
        "binding",
        binding.resource,
        binding.role,
        None,  # member
        None,  # via_group
        condition.expression if condition is not None else None,
        # The decision never gets as far as such a binding's condition; explain() evaluates it.
        "absent" if condition is None else "not evaluated",
        binding.source_line,
        "no member matched",
    )
    return entry


def _unconditional_first(binding: Binding) -> tuple[bool, int]:
    return (binding.condition is not None, binding.ordinal)


def group_reach(
    members: Mapping[str, tuple[str, ...]],
) -> tuple[dict[str, tuple[str, ...]], dict[str, dict[str, str]]]:
    """For every member key, the groups containing it directly or through other groups (sorted,
    so decisions do not depend on hash order), and for each such group the groups in between
    ("group:a > group:b", empty when direct), which traces show as `via_group`.

    Breadth-first from each member, so the path shown is a shortest one. The loader has already
    refused cycles; `seen` only keeps this from looping on them.
    """
    parents: defaultdict[str, list[str]] = defaultdict(list)
    for group, keys in members.items():
        for key in keys:
            parents[key].append(group)
    closure: dict[str, tuple[str, ...]] = {}
    via: dict[str, dict[str, str]] = {}
    for start in parents:
        previous: dict[str, str] = {}
        seen = {start}
        frontier = [start]
        while frontier:
            following: list[str] = []
            for node in frontier:
                for parent in sorted(parents.get(node, ())):
                    if parent not in seen:
                        seen.add(parent)
                        previous[parent] = node
                        following.append(parent)
            frontier = following
        closure[start] = tuple(sorted(previous))
        paths: dict[str, str] = {}
        for group in previous:
            between: list[str] = []
            node = previous[group]
            while node != start:
                between.append(node)
                node = previous[node]
            paths[group] = " > ".join(reversed(between))
        via[start] = paths
    return closure, via
