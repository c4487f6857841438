"""Compiles a policy, the service profile and the authentication settings into Envoy's filters:
jwt_authn -> grpc_field_extraction -> claims into headers -> RBAC DENY -> route into a header ->
RBAC ALLOW. Whatever the filters cannot decide exactly as opsgate does is refused, with where."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.envoy.compiled import celexpr, decisions, xds
from gateway.envoy.compiled.authn_plan import AuthnPlan
from gateway.envoy.compiled.celexpr import ResourceFacts, Untranslatable
from gateway.envoy.compiled.identity import Identities
from gateway.envoy.compiled.problems import Problem, Refused
from gateway.envoy.compiled.text import (
    BAD_SEGMENTS,
    LONG_NAME,
    alternatives,
    literal,
    pattern_regex,
    resource_keys,
    well_formed_name,
)
from gateway.envoy.compiled.tokens import jwt_authn, lists_malformed, scopes_hold, valid
from gateway.envoy.compiled.xds import Json
from gateway.policy.deny import denies_permission
from gateway.policy.evaluator import condition_facts
from gateway.policy.members import Member
from gateway.policy.model import Binding, Condition, DenyRule, Policy
from gateway.profile import Route, ServiceProfile
from gateway.resource_names import MAX_NAME_BYTES

NAME_HEADER = "x-opsgate-name"
ROUTE_HEADER = "x-opsgate-route"
FIELD_EXTRACTION_FILTER = (
    "type.googleapis.com/envoy.extensions.filters.http.grpc_field_extraction.v3."
    "GrpcFieldExtractionConfig"
)
HEADER_MUTATION_FILTER = (
    "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
)


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """One route of the profile, numbered in the compiled config."""

    number: int
    method: str  # /google.longrunning.Operations/GetOperation
    route: Route
    facts: ResourceFacts


@dataclass(frozen=True, slots=True)
class Compiled:
    """The filters (before the router), the clusters they need, and what their ids mean."""

    http_filters: list[Json]
    clusters: list[Json]
    routes: tuple[RouteEntry, ...]
    policy_etag: str
    counts: dict[str, int] = field(default_factory=dict)


def compile_policy(
    policy: Policy,
    profile: ServiceProfile,
    authn: AuthnPlan,
    *,
    descriptor_bin: str,
) -> Compiled:
    """The compiled filters; raises Refused listing every part that cannot compile."""
    problems: list[Problem] = list(authn.problems)
    routes = _routes(profile)
    identities = Identities(tuple(rule.provider for rule in authn.rules), _reach(policy))
    _check_static_groups(policy, problems)
    deny = _deny_filter(policy, routes, identities, authn, problems)
    allow, counts = _allow_filter(policy, routes, identities, problems)
    if problems:
        raise Refused(tuple(problems))
    filters = [
        jwt_authn(authn.rules, authn.allow_anonymous),
        _field_extraction(profile, descriptor_bin),
        _claims_to_headers(identities, authn),
        deny,
        _route_to_header(authn.forward_authorization),
        allow,
    ]
    return Compiled(filters, list(authn.clusters), routes, policy.etag, counts)


# --- routes -------------------------------------------------------------------------------


def _routes(profile: ServiceProfile) -> tuple[RouteEntry, ...]:
    found: list[RouteEntry] = []
    for method, routes in profile.routes.items():
        for route in routes:
            facts = condition_facts(route.pattern.replace("*", "x"), route.permission)
            found.append(RouteEntry(len(found), method, route, ResourceFacts(*facts)))
    return tuple(found)


# --- headers ------------------------------------------------------------------------------


def _set_header(name: str, value: str) -> Json:
    return {
        "append": {
            "header": {"key": name, "value": value},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }
    }


def _mutation(name: str, headers: dict[str, str]) -> Json:
    """Removes every client copy of `headers`, then sets each from its source; a source that is
    absent leaves the header absent (Envoy adds no empty value)."""
    mutations: list[Json] = [{"remove": header} for header in headers]
    mutations += [_set_header(header, source) for header, source in headers.items()]
    return {
        "name": name,
        "typed_config": {
            "@type": HEADER_MUTATION_FILTER,
            "mutations": {"request_mutations": mutations},
        },
    }


def _metadata(namespace: str, *path: str) -> str:
    return f"%DYNAMIC_METADATA({':'.join((namespace, *path))})%"


def _claims_to_headers(identities: Identities, authn: AuthnPlan) -> Json:
    headers = {
        NAME_HEADER: _metadata(celexpr.FIELD_EXTRACTION, "name"),
        ROUTE_HEADER: "",  # set after the DENY filter; removed here so no caller sets it
    }
    for provider in identities.providers:
        for header, claim in provider.headers.items():
            headers[header] = _metadata(celexpr.JWT_AUTHN, provider.metadata_key, claim)
    for header in authn.stripped_headers:
        headers.setdefault(header, "")
    filter_ = _mutation("opsgate.claims_to_headers", {h: v for h, v in headers.items() if v})
    removed = [h for h, v in headers.items() if not v]
    filter_["typed_config"]["mutations"]["request_mutations"][:0] = [
        {"remove": header} for header in removed
    ]
    return filter_


def _route_to_header(forward_authorization: bool) -> Json:
    source = _metadata("envoy.filters.http.rbac", "enforced_effective_policy_id")
    filter_ = _mutation("opsgate.route_to_header", {ROUTE_HEADER: source})
    if not forward_authorization:
        filter_["typed_config"]["mutations"]["request_mutations"].append(
            {"remove": "authorization"}
        )
    return filter_


def _field_extraction(profile: ServiceProfile, descriptor_bin: str) -> Json:
    methods = {method.lstrip("/").replace("/", ".") for method in profile.routes}
    return {
        "name": "envoy.filters.http.grpc_field_extraction",
        "typed_config": {
            "@type": FIELD_EXTRACTION_FILTER,
            "descriptor_set": {"inline_bytes": descriptor_bin},
            "extractions_by_method": {
                method: {"request_field_extractions": {"name": {}}} for method in sorted(methods)
            },
        },
    }


# --- the DENY filter ----------------------------------------------------------------------


def _refuse(why: str) -> Json:
    return xds.action(why, allow=False)


def _deny_filter(
    policy: Policy,
    routes: tuple[RouteEntry, ...],
    identities: Identities,
    authn: AuthnPlan,
    problems: list[Problem],
) -> Json:
    entries: list[tuple[Json, Json]] = []
    # Authentication first, as opsgate's stages run: what jwt_authn does not check.
    entries.append(
        (xds.header_matches("authorization", "(?s:.*),(?s:.*)"), _refuse(decisions.INVALID_TOKEN))
    )
    if authn.allow_anonymous:
        anyone = [rule.provider.present() for rule in authn.rules]
        presented = xds.header_matches("authorization", "(?s:.*)")
        entries.append(
            (
                xds.all_of(presented, xds.negate(xds.any_of(*anyone))),
                _refuse(decisions.INVALID_TOKEN),
            )
        )
    for rule in authn.rules:
        present = rule.provider.present()
        invalid = xds.any_of(xds.negate(xds.cel(valid(rule))), lists_malformed(rule))
        entries.append((xds.all_of(present, invalid), _refuse(decisions.INVALID_TOKEN)))
        entries.append(
            (
                xds.all_of(present, xds.negate(xds.cel(scopes_hold(rule)))),
                _refuse(decisions.INSUFFICIENT_SCOPE),
            )
        )
    methods = sorted({entry.method for entry in routes})
    routed = alternatives(literal(m) for m in methods)
    entries.append(
        (xds.negate(xds.header_matches(":path", routed)), _refuse(decisions.UNIMPLEMENTED))
    )
    # Name hygiene, exactly resource_names.name_problem.
    name_input = xds.header(NAME_HEADER)
    entries.append(
        (
            xds.negate(xds.matches(name_input, xds.regex(well_formed_name()))),
            _refuse(decisions.INVALID_NAME),
        )
    )
    entries.append(
        (xds.matches(name_input, xds.regex(BAD_SEGMENTS)), _refuse(decisions.INVALID_NAME))
    )
    too_long = xds.negate(xds.cel(celexpr.name_fits_in_bytes(MAX_NAME_BYTES)))
    entries.append(
        (
            xds.all_of(xds.matches(name_input, xds.regex(LONG_NAME)), too_long),
            _refuse(decisions.INVALID_NAME),
        )
    )
    for method in methods:
        mine = [entry for entry in routes if entry.method == method]
        per_route = [
            (
                xds.matches(name_input, xds.regex(pattern_regex(entry.route.segments))),
                xds.then(_deny_tree(policy, entry, identities, problems)),
            )
            for entry in mine
        ]
        nested = xds.first_of(per_route, _refuse(decisions.INVALID_NAME))
        entries.append((xds.header_is(":path", method), xds.then(nested)))
    return xds.rbac_filter("opsgate.deny", xds.first_of(entries, _refuse(decisions.UNIMPLEMENTED)))


def _deny_tree(
    policy: Policy, entry: RouteEntry, identities: Identities, problems: list[Problem]
) -> Json:
    """Deny rules on route `entry`'s permission by resource; passing: ALLOW route:K."""
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
        return {"on_no_match": passed}
    tree = xds.by_prefix(xds.header(NAME_HEADER), branches)
    tree["on_no_match"] = passed
    return tree


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


def _allow_filter(
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


def _reach(policy: Policy) -> dict[str, set[str]]:
    """group key -> every member key that reaches the group, transitively (group_closure)."""
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
