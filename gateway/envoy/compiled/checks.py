"""The checks before the policy, in one RBAC filter: the token, its scopes, then the method, the
name's hygiene and its route."""

from __future__ import annotations

from gateway.envoy.compiled import decisions, xds
from gateway.envoy.compiled.authn_plan import AuthnPlan
from gateway.envoy.compiled.routes import NAME_HEADER, RouteEntry
from gateway.envoy.compiled.text import (
    BAD_SEGMENTS,
    LONG_NAME,
    alternatives,
    literal,
    pattern_regex,
    well_formed_name,
)
from gateway.envoy.compiled.tokens import lists_malformed, scopes_hold, valid
from gateway.envoy.compiled.xds import Json


def _refuse(why: str) -> Json:
    return xds.action(why, allow=False)


def _token_checks(authn: AuthnPlan) -> list[tuple[Json, Json]]:
    """What opsgate's authentication refuses and jwt_authn does not."""
    entries: list[tuple[Json, Json]] = [
        # More than one authorization header (Envoy joins their values with ',').
        (xds.header_matches("authorization", "(?s:.*),(?s:.*)"), _refuse(decisions.INVALID_TOKEN))
    ]
    if authn.allow_anonymous:
        # jwt_authn lets a call through without a bearer token; opsgate does so only for a
        # call without any authorization header (a Basic one is refused, not anonymous).
        anyone = xds.any_of(*(rule.provider.present() for rule in authn.rules))
        presented = xds.header_matches("authorization", "(?s:.*)")
        entries.append(
            (xds.all_of(presented, xds.negate(anyone)), _refuse(decisions.INVALID_TOKEN))
        )
    for rule in authn.rules:
        other = rule.provider.verified_other()
        if other is not None:
            entries.append((other, _refuse(decisions.INVALID_TOKEN)))
        invalid = xds.any_of(xds.negate(xds.cel(valid(rule))), lists_malformed(rule))
        # Whose token it is decides whether the answer may point at Google's docs.
        why = decisions.INVALID_TOKEN if rule.provider.google else decisions.INVALID_OTHER_TOKEN
        entries.append((xds.all_of(rule.provider.present(), invalid), _refuse(why)))
    # Scopes after every token check, as opsgate checks them once the caller is known.
    for rule in authn.rules:
        lacking = xds.all_of(rule.provider.present(), xds.negate(xds.cel(scopes_hold(rule))))
        entries.append((lacking, _refuse(decisions.INSUFFICIENT_SCOPE)))
    return entries


def routed_methods(routes: tuple[RouteEntry, ...]) -> str:
    return alternatives(literal(m) for m in sorted({entry.method for entry in routes}))


def _route_checks(routes: tuple[RouteEntry, ...]) -> list[tuple[Json, Json]]:
    """The method, then name_problem's hygiene, then the first route whose pattern fits: the
    call passes as route:K (the policy filter keys on it)."""
    name = xds.header(NAME_HEADER)
    routed = xds.header_matches(":path", routed_methods(routes))
    entries: list[tuple[Json, Json]] = [
        (xds.negate(routed), _refuse(decisions.UNIMPLEMENTED)),
        (
            xds.negate(xds.matches(name, xds.regex(well_formed_name()))),
            _refuse(decisions.INVALID_NAME),
        ),
        (xds.matches(name, xds.regex(BAD_SEGMENTS)), _refuse(decisions.INVALID_NAME)),
        (xds.matches(name, xds.regex(LONG_NAME)), _refuse(decisions.INVALID_NAME)),
    ]
    for method in sorted({entry.method for entry in routes}):
        per_route = [
            (
                xds.matches(name, xds.regex(pattern_regex(entry.route.segments))),
                xds.action(decisions.route_id(entry.number), allow=True),
            )
            for entry in routes
            if entry.method == method
        ]
        nested = xds.first_of(per_route, _refuse(decisions.INVALID_NAME))
        entries.append((xds.header_is(":path", method), xds.then(nested)))
    return entries


def checks_filter(authn: AuthnPlan, routes: tuple[RouteEntry, ...]) -> Json:
    """One RBAC filter, in opsgate's stage order: the token, its scopes, the method, the name;
    a call that passes goes on as route:K. Envoy's answer to each refusal is told apart by
    its name in the response details (replies.py)."""
    entries = _token_checks(authn) + _route_checks(routes)
    return xds.rbac_filter(
        "opsgate.checks", xds.first_of(entries, _refuse(decisions.UNIMPLEMENTED))
    )
