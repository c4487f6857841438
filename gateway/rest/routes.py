"""The REST route table: the profile's HTTP rules, matched against a request's verb and path."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from google.longrunning import operations_pb2
from google.protobuf import message_factory
from google.protobuf.message import Message

from gateway.profile import HttpRule, ServiceProfile

_OPERATIONS = operations_pb2.DESCRIPTOR.services_by_name["Operations"]


@dataclass(frozen=True, slots=True)
class RestRoute:
    """One HTTP rule and the RPC it calls, with the RPC's request and response types."""

    method: str  # the full gRPC method path, e.g. /google.longrunning.Operations/GetOperation
    rule: HttpRule
    request_type: type[Message]
    response_type: type[Message]


@dataclass(frozen=True, slots=True)
class Matched:
    route: RestRoute
    captures: dict[str, str]  # raw path text: a percent-encoded name stays encoded


@dataclass(frozen=True, slots=True)
class WrongVerb:
    """The path is known, the verb is not: 405 with these in Allow."""

    allowed: tuple[str, ...]


class RouteTable:
    """Matches in profile order; the first rule whose template and verb match wins."""

    def __init__(self, rules: Sequence[tuple[str, HttpRule]]) -> None:
        self.routes = tuple(_route(method, rule) for method, rule in rules)

    @classmethod
    def from_profile(cls, profile: ServiceProfile) -> RouteTable:
        return cls(profile.http_rules)

    def match(self, verb: str, path: str) -> Matched | WrongVerb | None:
        allowed: list[str] = []
        for route in self.routes:
            captures = route.rule.template.match(path)
            if captures is None:
                continue
            if route.rule.verb == verb:
                return Matched(route, captures)
            if route.rule.verb not in allowed:
                allowed.append(route.rule.verb)
        return WrongVerb(tuple(allowed)) if allowed else None


def _route(method: str, rule: HttpRule) -> RestRoute:
    rpc = _OPERATIONS.methods_by_name[method.rsplit("/", 1)[-1]]
    return RestRoute(
        method,
        rule,
        message_factory.GetMessageClass(rpc.input_type),
        message_factory.GetMessageClass(rpc.output_type),
    )
