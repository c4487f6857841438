"""The policy as two RBAC filters: deny rules, keyed on the route and the name's resource
prefixes; then bindings, keyed on the name's resource prefixes, each resource's entries telling
the routes its bindings grant and the callers they name."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from gateway.envoy.compiled import celexpr, decisions, xds
from gateway.envoy.compiled.celexpr import Untranslatable
from gateway.envoy.compiled.identity import Identities
from gateway.envoy.compiled.problems import Problem
from gateway.envoy.compiled.routes import NAME_HEADER, ROUTE_HEADER, RouteEntry
from gateway.envoy.compiled.text import alternatives, literal, resource_keys
from gateway.envoy.compiled.xds import Json
from gateway.policy.deny import denies_permission
from gateway.policy.members import Member
from gateway.policy.model import Binding, Condition, DenyRule, Policy

ROUTE_MISSING = "route-missing"  # cannot happen: the route filter sets it or refuses


def deny_filter(
    policy: Policy,
    routes: tuple[RouteEntry, ...],
    identities: Identities,
    problems: list[Problem],
) -> Json:
    """By the route (an exact lookup), then the name's resource prefixes, the deny rules on
    the route's permission; a call no rule denies passes as route:K again."""
    by_route = {
        decisions.route_id(entry.number): _deny_tree(policy, entry, identities, problems)
        for entry in routes
    }
    matcher = {
        "matcher_tree": {"input": xds.header(ROUTE_HEADER), "exact_match_map": {"map": by_route}},
        "on_no_match": xds.action(ROUTE_MISSING, allow=False),
    }
    return xds.rbac_filter("opsgate.deny", matcher)


def _deny_tree(
    policy: Policy, entry: RouteEntry, identities: Identities, problems: list[Problem]
) -> Json:
    """Deny rules on route `entry`'s permission by resource, as an OnMatch; passing: ALLOW
    route:K."""
    permission = entry.route.permission
    by_resource: dict[str, list[DenyRule]] = defaultdict(list)
    for rule in policy.deny_rules:
        if denies_permission(rule, permission):
            by_resource[rule.resource].append(rule)
    branches: dict[str, Json] = {}
    for resource, rules in by_resource.items():
        node: list[tuple[Json, Json]] = []
        for rule in sorted(rules, key=lambda r: (r.condition is not None, r.ordinal)):
            predicate = _deny_predicate(policy.source, rule, entry, identities, problems)
            if predicate is not None:
                node.append(
                    (
                        predicate,
                        xds.action(decisions.deny_id(entry.number, rule.ordinal), allow=False),
                    )
                )
        if node:
            for key in resource_keys(resource):
                branches[key] = xds.then(xds.first_of(node))
    passed = xds.action(decisions.route_id(entry.number), allow=True)
    if not branches:
        return passed
    tree = xds.by_prefix(xds.header(NAME_HEADER), branches)
    tree["on_no_match"] = passed
    return xds.then(tree)


def _deny_predicate(
    source: str,
    rule: DenyRule,
    entry: RouteEntry,
    identities: Identities,
    problems: list[Problem],
) -> Json | None:
    named = _who(_keys(rule.denied_principals), identities, claimed=True)
    if named is None:
        return None
    parts = [named]
    exempt = _who(_keys(rule.exception_principals), identities, claimed=False)
    if exempt is not None:
        parts.append(xds.negate(exempt))
    if rule.condition is not None:
        expr = _condition(source, rule.condition, entry, problems)
        if expr is None:
            return None
        # A deny rule applies unless its condition is false: one that cannot be evaluated
        # applies. NOT(the negation holds) is exactly that: an error there is "no match".
        parts.append(xds.negate(xds.cel(celexpr.negated(expr))))
    return xds.all_of(*parts)


# --- the ALLOW filter ---------------------------------------------------------------------


def allow_filter(
    policy: Policy,
    routes: tuple[RouteEntry, ...],
    identities: Identities,
    problems: list[Problem],
) -> tuple[Json, dict[str, int]]:
    """By resource (the name's prefix), then: the route among those a group of bindings grants,
    and the caller among their members. Unconditional bindings at one resource that grant the
    same routes share one entry, whatever their number."""
    route_of: dict[str, list[int]] = defaultdict(list)  # permission -> route numbers
    for entry in routes:
        route_of[entry.route.permission].append(entry.number)
    by_resource: dict[str, list[Binding]] = defaultdict(list)
    for binding in policy.bindings:
        if binding.permissions & route_of.keys():
            by_resource[binding.resource].append(binding)
    branches: dict[str, Json] = {}
    entries_total = 0
    for resource, bindings in by_resource.items():
        node = _allow_node(policy.source, bindings, routes, route_of, identities, problems)
        entries_total += len(node)
        if node:
            for key in resource_keys(resource):
                branches[key] = xds.then(xds.first_of(node))
    tree = xds.by_prefix(xds.header(NAME_HEADER), branches) if branches else {}
    tree["on_no_match"] = xds.action(decisions.DEFAULT_DENY, allow=False)
    counts = {"resources": len(by_resource), "allow_entries": entries_total}
    return xds.rbac_filter("opsgate.allow", tree), counts


def _route_predicate(numbers: Iterable[int]) -> Json:
    ids = alternatives(literal(decisions.route_id(n)) for n in numbers)
    return xds.header_matches(ROUTE_HEADER, ids)


def _allow_node(
    source: str,
    bindings: list[Binding],
    routes: tuple[RouteEntry, ...],
    route_of: dict[str, list[int]],
    identities: Identities,
    problems: list[Problem],
) -> list[tuple[Json, Json]]:
    node: list[tuple[Json, Json]] = []
    plain: dict[tuple[int, ...], list[Binding]] = defaultdict(list)
    for binding in sorted(bindings, key=lambda b: b.ordinal):
        numbers = tuple(
            sorted(n for p in binding.permissions if p in route_of for n in route_of[p])
        )
        if binding.condition is None:
            plain[numbers].append(binding)
            continue
        for number in numbers:
            expr = _condition(source, binding.condition, routes[number], problems)
            who = _who(_keys(binding.members), identities, claimed=False)
            if expr is None or who is None:
                continue
            predicate = xds.all_of(_route_predicate((number,)), who, xds.cel(expr))
            node.append((predicate, xds.action(decisions.allow_id((binding.ordinal,)), allow=True)))
    grouped: list[tuple[Json, Json]] = []
    for numbers, holders in plain.items():
        who = _who(_keys(m for b in holders for m in b.members), identities, claimed=False)
        if who is None:
            continue
        ordinals = tuple(b.ordinal for b in holders)
        grouped.append(
            (
                xds.all_of(_route_predicate(numbers), who),
                xds.action(decisions.allow_id(ordinals[:16]), allow=True),
            )
        )
    return grouped + node


# --- members ------------------------------------------------------------------------------


def _who(keys: Iterable[str], identities: Identities, *, claimed: bool) -> Json | None:
    """The caller holds one of `keys`, or reaches (as opsgate's group_closure does) a static
    group among them."""
    direct = set(keys)
    via: set[str] = set()
    for key in direct:
        via |= identities.reach.get(key, set())
    found = [
        predicate
        for predicate in (
            identities.anyone_of(direct, claimed=claimed),
            identities.anyone_of(via, claimed=claimed, closure_only=True),
        )
        if predicate is not None
    ]
    return xds.any_of(*found) if found else None


def _keys(members: Iterable[Member]) -> list[str]:
    return [member.key for member in members if member.key is not None]


def group_reach(policy: Policy, problems: list[Problem]) -> dict[str, set[str]]:
    """group key -> every member key that reaches the group, transitively (group_closure)."""
    _check_static_groups(policy, problems)
    reach: dict[str, set[str]] = defaultdict(set)
    for key, groups in policy.index.group_closure.items():
        for group in groups:
            reach[group].add(key)
    return reach


def _check_static_groups(policy: Policy, problems: list[Problem]) -> None:
    allowed = ("user", "serviceAccount", "group", "principal")
    for group in policy.groups:
        for member in group.members:
            if member.kind not in allowed:
                problems.append(
                    Problem(
                        policy.source,
                        group.source_line,
                        f"group '{group.email}' has member '{member.written}': the compiled tier "
                        "expands static groups of users, service accounts, principals and groups "
                        "only",
                    )
                )


def _condition(
    source: str, condition: Condition, entry: RouteEntry, problems: list[Problem]
) -> Json | None:
    try:
        return celexpr.translate(condition.expression, entry.facts)
    except Untranslatable as exc:
        problems.append(
            Problem(
                source,
                condition.line,
                f"condition {condition.expression!r}: {exc.problem} (column {exc.column}); "
                'the compiled tier evaluates request.time against timestamp("..."), '
                "resource.name/type/service against strings (==, !=, startsWith, endsWith, "
                "contains), and !, && and ||",
            )
        )
        return None
