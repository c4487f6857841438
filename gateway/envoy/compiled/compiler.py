"""Compiles a policy, the service profile and the authentication settings into Envoy's filters.
Whatever the filters cannot decide exactly as opsgate does is refused, with where it is."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.envoy.compiled.authn_plan import AuthnPlan
from gateway.envoy.compiled.checks import checks_filter
from gateway.envoy.compiled.identity import Identities
from gateway.envoy.compiled.policy_filters import group_reach, policy_filter
from gateway.envoy.compiled.problems import Problem, Refused
from gateway.envoy.compiled.routes import (
    NAME_HEADER,
    ROUTE_HEADER,
    RouteEntry,
    claims_to_headers,
    field_extraction,
    numbered_routes,
    route_to_header,
)
from gateway.envoy.compiled.tokens import jwt_authn
from gateway.envoy.compiled.xds import Json
from gateway.policy.model import Policy
from gateway.profile import ServiceProfile


@dataclass(frozen=True, slots=True)
class Compiled:
    """The filters (before the router), the clusters they need, and what their ids mean."""

    http_filters: list[Json]
    clusters: list[Json]
    routes: tuple[RouteEntry, ...]
    policy_etag: str
    counts: dict[str, int] = field(default_factory=dict)
    internal_headers: tuple[str, ...] = ()  # set by the filters for themselves, never sent on
    google_accepted: bool = True  # Google's tokens are among those accepted (AuthnPlan's)


def compile_policy(
    policy: Policy, profile: ServiceProfile, authn: AuthnPlan, *, descriptor_bin: str
) -> Compiled:
    """The filter chain, in order: jwt_authn -> grpc_field_extraction -> claims and name into
    headers -> RBAC checks (token, scopes, method, name, route) -> the route into a header ->
    RBAC policy (deny rules, then bindings). Raises Refused listing every part that cannot
    compile."""
    problems: list[Problem] = list(authn.problems)
    routes = numbered_routes(profile)
    providers = tuple(rule.provider for rule in authn.rules)
    identities = Identities(providers, group_reach(policy, problems))
    decide, counts = policy_filter(policy, routes, identities, problems)
    if problems:
        # A condition is translated once per route it applies to: each problem said once.
        raise Refused(tuple(dict.fromkeys(problems)))
    filters = [
        jwt_authn(authn.rules, authn.allow_anonymous),
        field_extraction(profile, descriptor_bin),
        claims_to_headers(providers, authn.stripped_headers),
        checks_filter(authn, routes),
        route_to_header(authn.forward_authorization),
        decide,
    ]
    internal = (NAME_HEADER, ROUTE_HEADER, *(h for p in providers for h in p.headers))
    return Compiled(
        filters,
        list(authn.clusters),
        routes,
        policy.etag,
        counts,
        internal,
        authn.google_accepted,
    )
