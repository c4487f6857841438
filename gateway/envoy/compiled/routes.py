"""The profile's routes, numbered for the compiled config, and the headers the filters build:
the request's name and claims from verified metadata, the route the checks settled on."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.envoy.compiled import celexpr
from gateway.envoy.compiled.celexpr import ResourceFacts
from gateway.envoy.compiled.identity import Provider
from gateway.envoy.compiled.xds import Json
from gateway.policy.evaluator import condition_facts
from gateway.profile import Route, ServiceProfile

NAME_HEADER = "x-opsgate-name"
ROUTE_HEADER = "x-opsgate-route"
RBAC_NAMESPACE = "envoy.filters.http.rbac"
POLICY_ID_KEY = "enforced_effective_policy_id"
_HEADER_MUTATION = (
    "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
)
_FIELD_EXTRACTION = (
    "type.googleapis.com/envoy.extensions.filters.http.grpc_field_extraction.v3."
    "GrpcFieldExtractionConfig"
)


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """One route of the profile, numbered in the compiled config."""

    number: int
    method: str  # /google.longrunning.Operations/GetOperation
    route: Route
    facts: ResourceFacts  # resource.type and resource.service for its names


def numbered_routes(profile: ServiceProfile) -> tuple[RouteEntry, ...]:
    found: list[RouteEntry] = []
    for method, routes in profile.routes.items():
        for route in routes:
            facts = condition_facts(route.pattern.replace("*", "x"), route.permission)
            found.append(RouteEntry(len(found), method, route, ResourceFacts(*facts)))
    return tuple(found)


def metadata(namespace: str, *path: str) -> str:
    """A formatter reading dynamic metadata; JSON for a list, nothing when absent."""
    return f"%DYNAMIC_METADATA({':'.join((namespace, *path))})%"


def header_mutation(name: str, removed: list[str], set_from: dict[str, str]) -> Json:
    """Removes every client copy of `removed` and of the set headers, then sets each from its
    source; a source that is absent leaves the header absent (Envoy adds no empty value)."""
    mutations: list[Json] = [{"remove": header} for header in (*removed, *set_from)]
    mutations += [
        {
            "append": {
                "header": {"key": header, "value": source},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        }
        for header, source in set_from.items()
    ]
    return {
        "name": name,
        "typed_config": {
            "@type": _HEADER_MUTATION,
            "mutations": {"request_mutations": mutations},
        },
    }


def claims_to_headers(providers: tuple[Provider, ...], stripped: tuple[str, ...]) -> Json:
    """The name and every provider's claims into headers; the route header and `stripped` (the
    identity header opsgate's own doors set) removed, so no caller can set any of them."""
    set_from = {NAME_HEADER: metadata(celexpr.FIELD_EXTRACTION, "name")}
    for provider in providers:
        for header, claim in provider.headers.items():
            set_from[header] = metadata(celexpr.JWT_AUTHN, provider.metadata_key, claim)
    return header_mutation("opsgate.claims_to_headers", [ROUTE_HEADER, *stripped], set_from)


def route_to_header(forward_authorization: bool) -> Json:
    """The route the checks passed the call on (their decision's id), for the policy filters;
    the authorization header goes here unless the config forwards it."""
    removed = [] if forward_authorization else ["authorization"]
    source = metadata(RBAC_NAMESPACE, POLICY_ID_KEY)
    return header_mutation("opsgate.route_to_header", removed, {ROUTE_HEADER: source})


def field_extraction(profile: ServiceProfile, descriptor_bin: str) -> Json:
    methods = {method.lstrip("/").replace("/", ".") for method in profile.routes}
    return {
        "name": "envoy.filters.http.grpc_field_extraction",
        "typed_config": {
            "@type": _FIELD_EXTRACTION,
            "descriptor_set": {"inline_bytes": descriptor_bin},
            "extractions_by_method": {
                method: {"request_field_extractions": {"name": {}}} for method in sorted(methods)
            },
        },
    }
