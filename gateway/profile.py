"""Service profiles: data saying which permission each method needs on the resource it names."""

from __future__ import annotations

import importlib.resources
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from gateway.errors import ConfigError, InvalidArgument, unimplemented
from gateway.pathtemplate import PathTemplate, TemplateError, compile_template
from gateway.policy.roles import parse_permission
from gateway.resource_names import name_problem, printable
from gateway.routing import METHODS_BY_PATH, SERVICE_PREFIX
from gateway.sourcefile import LineMap, load_file, load_text

BUILTIN_PROFILES = ("contactcenterinsights",)
HTTP_VERBS = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True, slots=True)
class RequiredAccess:
    """What a call needs: a permission on a resource, and the service that names it."""

    permission: str
    resource: str
    service: str


@dataclass(frozen=True, slots=True)
class HttpRule:
    """How a route is reached over REST, in google.api.HttpRule shape (compiled at load)."""

    verb: str  # upper case: GET, POST, PUT, PATCH, DELETE
    template: PathTemplate
    body: str = ""  # "" (no body) or "*" (the fields the path does not bind)


@dataclass(frozen=True, slots=True)
class Route:
    """One resource pattern of a method and the permission it needs; `*` is one segment."""

    pattern: str
    permission: str
    segments: tuple[str, ...]
    http: HttpRule | None = None  # its REST binding, if the profile gives one
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # One compiled expression per route: `*` is exactly one non-empty segment.
        expression = "/".join("[^/]+" if part == "*" else re.escape(part) for part in self.segments)
        object.__setattr__(self, "_regex", re.compile(expression))

    def matches(self, name: str) -> bool:
        """Whether `name` (already free of empty, '.' and '..' segments) fits the pattern."""
        return self._regex.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class ServiceProfile:
    """The routes of one service, by full method path."""

    name: str
    service: str
    routes: dict[str, tuple[Route, ...]]

    @property
    def permissions(self) -> frozenset[str]:
        return frozenset(route.permission for routes in self.routes.values() for route in routes)

    @property
    def http_rules(self) -> tuple[tuple[str, HttpRule], ...]:
        """(method path, rule) for every route reachable over REST, in profile order."""
        return tuple(
            (method, route.http)
            for method, routes in self.routes.items()
            for route in routes
            if route.http is not None
        )

    def routes_method(self, method: str) -> bool:
        return method in self.routes

    def access_for(self, method: str, name: str) -> RequiredAccess:
        """The permission `method` needs on `name`; UNIMPLEMENTED or INVALID_ARGUMENT if none."""
        routes = self.routes.get(method)
        if routes is None:
            raise unimplemented(method)
        short = method.rsplit("/", 1)[-1]
        problem = name_problem(name)
        if problem is None:
            for route in routes:
                if route.matches(name):
                    return RequiredAccess(route.permission, name, self.service)
            problem = "the name matches none of " + ", ".join(r.pattern for r in routes)
        raise InvalidArgument(
            f"Invalid resource name '{printable(name)}' for {short}: {problem}.",
            reason="RESOURCE_NAME_INVALID",
            domain=self.service,
            log_detail=problem,
        )


def load_profile(name: str | None = None, path: Path | None = None) -> ServiceProfile:
    """A built-in profile by name, or a custom one from a YAML file."""
    if path is not None:
        return _parse(load_file(path), str(path), path.stem)
    chosen = name or BUILTIN_PROFILES[0]
    if chosen not in BUILTIN_PROFILES:
        raise ConfigError(
            "<config>",
            "authorization.profile",
            f"unknown profile '{chosen}'; built in: {', '.join(BUILTIN_PROFILES)}",
        )
    resource = importlib.resources.files("gateway.data.profiles").joinpath(f"{chosen}.yaml")
    return _parse(
        load_text(resource.read_text(encoding="utf-8"), str(resource)), str(resource), chosen
    )


def _parse(data: Any, source: str, name: str) -> ServiceProfile:
    if not isinstance(data, LineMap) or set(data) - {"service", "routes"}:
        extra = sorted(set(data) - {"service", "routes"}) if isinstance(data, dict) else []
        raise ConfigError(source, None, f"a profile has only `service` and `routes` {extra}")
    service = data.get("service")
    routes_data = data.get("routes")
    if not isinstance(service, str) or not service:
        raise ConfigError(
            source, "service", "must be the service's DNS name", data.line_of("service")
        )
    if not isinstance(routes_data, LineMap) or not routes_data:
        raise ConfigError(
            source, "routes", "must map method names to routes", data.line_of("routes")
        )
    routes: dict[str, tuple[Route, ...]] = {}
    for method, entries in routes_data.items():
        line = routes_data.line_of(method)
        path = f"{SERVICE_PREFIX}{method}"
        if path not in METHODS_BY_PATH:
            known = ", ".join(m.rsplit("/", 1)[-1] for m in METHODS_BY_PATH)
            raise ConfigError(
                source, f"routes.{method}", f"is not an Operations method ({known})", line
            )
        if not isinstance(entries, list) or not entries:
            raise ConfigError(
                source, f"routes.{method}", "must list {pattern, permission} routes", line
            )
        routes[path] = tuple(
            _route(entry, source, f"routes.{method}", line, path) for entry in entries
        )
    _check_http_unambiguous(routes, source)
    return ServiceProfile(name, service, routes)


def _route(entry: Any, source: str, key: str, line: int, method: str) -> Route:
    if not isinstance(entry, LineMap) or not (
        {"pattern", "permission"} <= set(entry) <= {"pattern", "permission", "http"}
    ):
        raise ConfigError(source, key, "each route is {pattern, permission[, http]}", line)
    pattern, permission = entry["pattern"], entry["permission"]
    if not _is_pattern(pattern):
        raise ConfigError(
            source, f"{key}.pattern", f"{pattern!r} is not a resource pattern", entry.line
        )
    # The permission must be what policies grant, exactly: the loader's own syntax check.
    if not isinstance(permission, str) or (
        parse_permission(permission, allow_patterns=False).exact != permission
    ):
        raise ConfigError(
            source, f"{key}.permission", f"{permission!r} is not SERVICE.RESOURCE.VERB", entry.line
        )
    http = _http_rule(entry.get("http"), source, f"{key}.http", entry, method, pattern)
    return Route(pattern, permission, tuple(pattern.split("/")), http)


def _is_pattern(pattern: object) -> bool:
    """A name with `*` only as whole segments: a `*` inside a segment would be matched as a
    literal star, which no real name has."""
    if not isinstance(pattern, str) or name_problem(pattern.replace("*", "x")) is not None:
        return False
    return all(part == "*" or "*" not in part for part in pattern.split("/"))


def _http_rule(
    data: Any, source: str, key: str, entry: LineMap, method: str, pattern: str
) -> HttpRule | None:
    """`http: {get: "/v1/{name=...}"}` or `{post: ..., body: "*"}`; the template's `name`
    variable must be exactly the route's pattern, so REST reaches only the names it authorizes."""
    if data is None:
        return None
    line = entry.line_of("http")
    verbs = [verb for verb in HTTP_VERBS if verb in data] if isinstance(data, LineMap) else []
    if len(verbs) != 1 or set(data) - {verbs[0], "body"}:
        raise ConfigError(source, key, f"must be one of {', '.join(HTTP_VERBS)}, plus body", line)
    verb = verbs[0]
    body = data.get("body", "")
    if body not in ("", "*") or (body and verb in ("get", "delete")):
        raise ConfigError(
            source, f"{key}.body", f"must be '*' or absent (and absent for {verb})", line
        )
    try:
        template = compile_template(data[verb])
    except TemplateError as exc:
        raise ConfigError(source, f"{key}.{verb}", str(exc), data.line_of(verb)) from exc
    fields = METHODS_BY_PATH[method].request_type.DESCRIPTOR.fields_by_name
    for capture in template.captures:
        spec = fields.get(capture.field)
        if spec is None or spec.type != FieldDescriptor.TYPE_STRING:
            problem = f"'{capture.field}' is not a string field of the request"
            raise ConfigError(source, f"{key}.{verb}", problem, data.line_of(verb))
    named = [c for c in template.captures if c.field == "name"]
    if not named or named[0].pattern != pattern:
        problem = f"must capture the route's names as {{name={pattern}}}"
        raise ConfigError(source, f"{key}.{verb}", problem, data.line_of(verb))
    return HttpRule(verb.upper(), template, body)


def _check_http_unambiguous(routes: dict[str, tuple[Route, ...]], source: str) -> None:
    """Two rules that match the same requests would make the REST door's choice arbitrary."""
    seen: set[tuple[str, object]] = set()
    for method, method_routes in routes.items():
        for route in method_routes:
            if route.http is None:
                continue
            shape = (route.http.verb, route.http.template.shape)
            if shape in seen:
                problem = f"{route.http.verb} {route.http.template.text} is bound twice"
                raise ConfigError(source, f"routes.{method.rsplit('/', 1)[-1]}.http", problem)
            seen.add(shape)
