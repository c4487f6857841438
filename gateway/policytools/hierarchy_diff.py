"""What a change to `resources` does to access: both policies decide at the resources it touches.

A binding or deny rule that did not change can start or stop reaching a resource when the
resource moves to another folder, or its tags change; the structural diff cannot see that, so
every principal either policy names is asked about every permission at those resources.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime

from gateway.policy.evaluator import evaluate
from gateway.policy.model import AccessRequest, Caller, Policy

_IDENTITY_KINDS = ("user", "serviceAccount")


def declared(policy: Policy) -> dict[str, frozenset[str]]:
    """resource -> what `resources` says of it: its parent, its number, its own tags."""
    hierarchy = policy.hierarchy
    facts: defaultdict[str, set[str]] = defaultdict(set)
    for resource, ancestors in hierarchy.ancestors.items():
        if ancestors:
            facts[resource].add(f"parent={ancestors[-1]}")
    for project, number in hierarchy.project_numbers.items():
        facts[f"projects/{project}"].add(f"number={number}")
    for resource, tags in hierarchy.tags.items():
        facts[resource].update(f"tag={tag.shown}" for tag in tags)
    return {resource: frozenset(found) for resource, found in facts.items()}


def hierarchy_changes(
    old: Policy, new: Policy, permissions: Iterable[str], now: datetime | None = None
) -> list[tuple[str, str, str, bool]]:
    """(principal, permission, resource, allowed now) wherever a `resources` change turns a
    decision around; empty when `resources` did not change."""
    before, after = declared(old), declared(new)
    touched = {r for r in before.keys() | after.keys() if before.get(r) != after.get(r)}
    if not touched:
        return []
    when = now or datetime.now(UTC)
    found: list[tuple[str, str, str, bool]] = []
    probes = sorted(_probes(old, new, touched))
    for principal in sorted(_principals(old) | _principals(new)):
        caller = _caller(principal)
        for permission in sorted(permissions):
            for resource in probes:
                request = AccessRequest(permission, resource)
                was = evaluate(old, caller, request, when).allowed
                now_allowed = evaluate(new, caller, request, when).allowed
                if was != now_allowed:
                    found.append((principal, permission, resource, now_allowed))
    return found


def _probes(old: Policy, new: Policy, touched: set[str]) -> set[str]:
    """The touched resources and every resource either policy knows below one of them."""
    known: set[str] = set(touched)
    for policy in (old, new):
        known.update(policy.hierarchy.lines)
        known.update(b.resource for b in policy.bindings)
        known.update(r.resource for r in policy.deny_rules)
    probes: set[str] = set()
    for resource in known:
        if not resource.startswith("projects/"):
            continue  # a request names a project's resource; what is above is its chain
        chains = (old.hierarchy.chain(resource), new.hierarchy.chain(resource))
        if any(level in touched for chain in chains for level in chain):
            probes.add(resource)
    return probes


def _principals(policy: Policy) -> set[str]:
    keys = {m.key for b in policy.bindings for m in b.members if m.key is not None}
    for rule in policy.deny_rules:
        keys.update(rule.denied_keys, rule.exception_keys)
    for members in policy.index.group_members.values():
        keys.update(members)
    return keys


def _caller(principal: str) -> Caller:
    """A caller answering to `principal`: an identity by its verified email, a group by a
    member of it the token names, anything else (domain:, allUsers, principal://) as itself."""
    kind, _, value = principal.partition(":")
    if kind in _IDENTITY_KINDS:
        return Caller(principal, email=value, email_verified=True)
    if kind == "group":
        return Caller("user:member-of-the-group@opsgate.invalid", groups=frozenset({value}))
    return Caller(principal)
