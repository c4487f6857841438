"""The policy as two RBAC filters, each keyed on the name's resource prefixes: deny rules, then
bindings; at a resource, each entry names callers, then looks the call's route up exactly."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

from gateway.envoy.compiled import celexpr, decisions, xds
from gateway.envoy.compiled.celexpr import Untranslatable
from gateway.envoy.compiled.identity import ALWAYS, Identities
from gateway.envoy.compiled.problems import Problem
from gateway.envoy.compiled.routes import NAME_HEADER, ROUTE_HEADER, RouteEntry
from gateway.envoy.compiled.text import resource_keys
from gateway.envoy.compiled.xds import Json
from gateway.policy.deny import denies_permission
from gateway.policy.members import Member
from gateway.policy.model import Binding, Condition, DenyRule, Policy


def _by_route(numbers: Iterable[int], action_for: Callable[[int], Json]) -> Json:
    """An OnMatch looking the call's route up: the action of a route among `numbers`, or
    nothing (the matcher then looks further), by one exact lookup."""
    table = {decisions.route_id(number): action_for(number) for number in sorted(set(numbers))}
    lookup = {"input": xds.header(ROUTE_HEADER), "exact_match_map": {"map": table}}
    return xds.then({"matcher_tree": lookup})


def _branch(resource: str, node: list[tuple[Json, Json]]) -> tuple[str, Json]:
    """The prefix-tree branch of a resource's entries, written once: keyed on the opening its
    name and its descendants' share, and guarded to hold for exactly those (not for
    projects/acme-prod-evil under projects/acme-prod, whose key then falls back further)."""
    itself, below = resource_keys(resource)
    name = xds.header(NAME_HEADER)
    guard = xds.any_of(xds.matches(name, {"prefix": below}), xds.matches(name, {"exact": itself}))
    return itself.removesuffix('"]'), xds.then(
        xds.first_of([(guard, xds.then(xds.first_of(node)))])
    )


def _always(action: Json) -> Callable[[int], Json]:
    return lambda _route: action


def _translations(
    source: str,
    condition: Condition | None,
    numbers: Iterable[int],
    routes: tuple[RouteEntry, ...],
    problems: list[Problem],
) -> list[tuple[Json | None, list[int]]]:
    """The condition as each route's CEL (resource.type and .service are the route's), the
    routes that share one translation together; [(None, all)] without a condition."""
    numbers = sorted(set(numbers))
    if condition is None:
        return [(None, numbers)]
    found: dict[str, tuple[Json, list[int]]] = {}
    for number in numbers:
        expr = _condition(source, condition, routes[number], problems)
        if expr is None:
            continue
        found.setdefault(celexpr.shape(expr), (expr, []))[1].append(number)
    return list(found.values())


def policy_filter(
    policy: Policy,
    routes: tuple[RouteEntry, ...],
    identities: Identities,
    problems: list[Problem],
) -> tuple[Json, dict[str, int]]:
    """One RBAC filter: the deny rules first; then, if none applies, the bindings; then the
    default, deny. Each is a prefix tree on the name's resources."""
    _check_hierarchy(policy, problems)
    deny_tree = _deny_tree(policy, routes, identities, problems)
    allow_tree, counts = _allow_tree(policy, routes, identities, problems)
    stages = [(ALWAYS, xds.then(tree)) for tree in (deny_tree, allow_tree) if tree is not None]
    default = xds.action(decisions.DEFAULT_DENY, allow=False)
    matcher = xds.first_of(stages, default) if stages else {"on_no_match": default}
    return xds.rbac_filter("opsgate.policy", matcher), counts


def _deny_tree(
    policy: Policy,
    routes: tuple[RouteEntry, ...],
    identities: Identities,
    problems: list[Problem],
) -> Json | None:
    """By the name's resource prefixes, the deny rules attached there; each rule written once,
    with the routes whose permission it denies looked up exactly. None: no rule denies."""
    by_resource: dict[str, list[DenyRule]] = defaultdict(list)
    for rule in policy.deny_rules:
        by_resource[rule.resource].append(rule)
    branches: dict[str, Json] = {}
    for resource, rules in by_resource.items():
        node: list[tuple[Json, Json]] = []
        for rule in sorted(rules, key=lambda r: (r.condition is not None, r.ordinal)):
            node += _deny_entries(policy.source, rule, routes, identities, problems)
        if node:
            branches.update([_branch(resource, node)])
    return xds.by_prefix(xds.header(NAME_HEADER), branches) if branches else None


def _deny_entries(
    source: str,
    rule: DenyRule,
    routes: tuple[RouteEntry, ...],
    identities: Identities,
    problems: list[Problem],
) -> list[tuple[Json, Json]]:
    denied = [e.number for e in routes if denies_permission(rule, e.route.permission)]
    named = _who(_keys(rule.denied_principals), identities, claimed=True)
    if not denied or named is None:
        return []
    parts = [named]
    exempt = _who(_keys(rule.exception_principals), identities, claimed=False)
    if exempt is not None:
        parts.append(xds.negate(exempt))
    entries = []
    for expr, numbers in _translations(source, rule.condition, denied, routes, problems):
        # A deny rule applies unless its condition is false: one that cannot be evaluated
        # applies. NOT(the negation holds) is exactly that: an error there is "no match".
        condition = [] if expr is None else [xds.negate(xds.cel(celexpr.negated(expr)))]
        action = _by_route(
            numbers, lambda n: xds.action(decisions.deny_id(n, rule.ordinal), allow=False)
        )
        entries.append((xds.all_of(*parts, *condition), action))
    return entries


# --- the ALLOW filter ---------------------------------------------------------------------


def _allow_tree(
    policy: Policy,
    routes: tuple[RouteEntry, ...],
    identities: Identities,
    problems: list[Problem],
) -> tuple[Json | None, dict[str, int]]:
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
            branches.update([_branch(resource, node)])
    tree = xds.by_prefix(xds.header(NAME_HEADER), branches) if branches else None
    return tree, {"resources": len(by_resource), "allow_entries": entries_total}


def _allow_node(
    source: str,
    bindings: list[Binding],
    routes: tuple[RouteEntry, ...],
    route_of: dict[str, list[int]],
    identities: Identities,
    problems: list[Problem],
) -> list[tuple[Json, Json]]:
    """Unconditional bindings granting the same routes: one entry, their callers together;
    then each conditional binding, once per distinct translation of its condition."""
    plain: dict[tuple[int, ...], list[Binding]] = defaultdict(list)
    conditional: list[tuple[Json, Json]] = []
    for binding in sorted(bindings, key=lambda b: b.ordinal):
        numbers = tuple(
            sorted({n for p in binding.permissions if p in route_of for n in route_of[p]})
        )
        if binding.condition is None:
            plain[numbers].append(binding)
            continue
        who = _who(_keys(binding.members), identities, claimed=False)
        if who is None:
            continue
        granted = xds.action(decisions.allow_id((binding.ordinal,)), allow=True)
        for expr, shared in _translations(source, binding.condition, numbers, routes, problems):
            assert expr is not None
            conditional.append(
                (xds.all_of(who, xds.cel(expr)), _by_route(shared, _always(granted)))
            )
    grouped: list[tuple[Json, Json]] = []
    for numbers, holders in plain.items():
        who = _who(_keys(m for b in holders for m in b.members), identities, claimed=False)
        if who is None:
            continue
        granted = xds.action(decisions.allow_id(tuple(b.ordinal for b in holders)[:16]), allow=True)
        grouped.append((who, _by_route(numbers, _always(granted))))
    return grouped + conditional


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


def _check_hierarchy(policy: Policy, problems: list[Problem]) -> None:
    """What a request's name does not say, Envoy cannot see: folders and organizations above a
    project, a project called by its number, tags. Such a policy is refused, never half-applied."""
    hierarchy = policy.hierarchy
    if hierarchy.empty:
        return
    line = min((n for n in hierarchy.lines.values() if n is not None), default=None)
    problems.append(
        Problem(
            policy.source,
            line,
            "resources: (folders, organizations, project numbers or tags) is not compiled: "
            "Envoy sees only the name a call carries; enforce this policy with opsgate's own "
            "doors or as Envoy's external authorizer",
        )
    )


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
