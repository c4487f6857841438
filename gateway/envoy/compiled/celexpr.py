"""Parsed CEL (google.api.expr.v1alpha1.Expr as JSON) for Envoy: builders, and opsgate's own
IAM conditions translated into it where Envoy's CEL computes exactly what opsgate's does."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.envoy.compiled.xds import Json
from gateway.errors import OpsgateError
from gateway.policy.cel.parser import Binary, Call, Ident, Lit, Node, Parser, Select, Unary
from gateway.policy.cel.timeutil import parse_timestamp
from gateway.policy.cel.types import BOOL, INT, STRING

FIELD_EXTRACTION = "envoy.filters.http.grpc_field_extraction"
JWT_AUTHN = "envoy.filters.http.jwt_authn"
_ids = itertools.count(1)


def _node(kind: str, body: Json) -> Json:
    return {"id": str(next(_ids)), kind: body}


def const(value: str | bool | int | float) -> Json:
    if isinstance(value, bool):
        return _node("const_expr", {"bool_value": value})
    if isinstance(value, int):
        return _node("const_expr", {"int64_value": str(value)})
    if isinstance(value, float):
        return _node("const_expr", {"double_value": value})
    return _node("const_expr", {"string_value": value})


def ident(name: str) -> Json:
    return _node("ident_expr", {"name": name})


def field(operand: Json, name: str) -> Json:
    return _node("select_expr", {"operand": operand, "field": name})


def has(operand: Json, name: str) -> Json:
    """has(operand.name): true or false, never an error for a map operand."""
    return _node("select_expr", {"operand": operand, "field": name, "test_only": True})


def call(function: str, *args: Json, target: Json | None = None) -> Json:
    body: Json = {"function": function, "args": list(args)}
    if target is not None:
        body["target"] = target
    return _node("call_expr", body)


def index(operand: Json, key: str | int) -> Json:
    return call("_[_]", operand, const(key))


def both(*parts: Json) -> Json:
    result = parts[0]
    for part in parts[1:]:
        result = call("_&&_", result, part)
    return result


def either(*parts: Json) -> Json:
    result = parts[0]
    for part in parts[1:]:
        result = call("_||_", result, part)
    return result


def negated(part: Json) -> Json:
    return call("!_", part)


def is_type(value: Json, type_name: str) -> Json:
    return call("_==_", call("type", value), ident(type_name))


def dynamic_metadata(namespace: str) -> Json:
    return index(field(ident("metadata"), "filter_metadata"), namespace)


def request_name() -> Json:
    """The request's `name` as the field extraction filter read it (the last occurrence)."""
    return index(index(dynamic_metadata(FIELD_EXTRACTION), "name"), 0)


# --- opsgate's IAM conditions ---------------------------------------------------------------


class Untranslatable(OpsgateError):
    """A condition outside what the compiled tier runs exactly as opsgate does."""

    reason = "CONDITION_NOT_COMPILABLE"

    def __init__(self, problem: str, column: int) -> None:
        super().__init__(problem)
        self.problem = problem
        self.column = column


@dataclass(frozen=True, slots=True)
class ResourceFacts:
    """What `resource.type` and `resource.service` are for every name a route admits."""

    type: str
    service: str


_OPERATORS = {
    "&&": "_&&_",
    "||": "_||_",
    "==": "_==_",
    "!=": "_!=_",
    "<": "_<_",
    "<=": "_<=_",
    ">": "_>_",
    ">=": "_>=_",
}
_STRING_METHODS = frozenset({"startsWith", "endsWith", "contains"})


def translate(expression: str, facts: ResourceFacts) -> Json:
    """The condition as Envoy's parsed CEL. Supported: request.time against timestamp("...")
    literals, resource.name/type/service against string literals and with startsWith, endsWith
    and contains, and !, &&, ||. Anything else raises Untranslatable with the column."""
    tree = Parser(expression).parse()
    return _Translator(expression, facts).expr(tree)


class _Translator:
    def __init__(self, source: str, facts: ResourceFacts) -> None:
        self._source = source
        self._facts = facts

    def refuse(self, node: Node, why: str) -> Untranslatable:
        shown = self._source[node.pos : node.end]
        return Untranslatable(f"'{shown}' {why}", node.pos + 1)

    def expr(self, node: Node) -> Json:
        if isinstance(node, Lit):
            return self.literal(node)
        if isinstance(node, Select):
            return self.attribute(node)
        if isinstance(node, Unary) and node.op == "!":
            return negated(self.expr(node.operand))
        if isinstance(node, Binary) and node.op in _OPERATORS:
            return call(_OPERATORS[node.op], self.expr(node.left), self.expr(node.right))
        if isinstance(node, Call):
            return self.function(node)
        raise self.refuse(node, "is outside what the compiled tier evaluates")

    def literal(self, node: Lit) -> Json:
        if node.type in (STRING, BOOL, INT) and isinstance(node.value, str | bool | int):
            return const(node.value)
        raise self.refuse(node, "is a literal of a type the compiled tier does not compare")

    def attribute(self, node: Select) -> Json:
        root = node.operand.name if isinstance(node.operand, Ident) else None
        if root == "resource" and node.field == "name":
            return request_name()
        if root == "resource" and node.field == "type":
            return const(self._facts.type)
        if root == "resource" and node.field == "service":
            return const(self._facts.service)
        if root == "request" and node.field == "time":
            return field(ident("request"), "time")
        raise self.refuse(node, "is an attribute the compiled tier does not provide")

    def function(self, node: Call) -> Json:
        if node.target is None and node.name == "timestamp" and len(node.args) == 1:
            (arg,) = node.args
            if isinstance(arg, Lit) and isinstance(arg.value, str):
                ns = parse_timestamp(arg.value)
                if isinstance(ns, int):
                    return call("timestamp", const(_rfc3339(ns)))
        if node.target is not None and node.name in _STRING_METHODS and len(node.args) == 1:
            return call(node.name, self.expr(node.args[0]), target=self.expr(node.target))
        raise self.refuse(node, "is a function the compiled tier does not evaluate")


def _rfc3339(ns: int) -> str:
    """A timestamp in the one spelling every RFC 3339 reader takes: UTC, 'Z', nanoseconds."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    # Not strftime's %Y: it writes year 999 as "999", which no RFC 3339 reader takes.
    return f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}.{fraction:09d}Z"


def shape(expr: Json) -> str:
    """The expression without its node ids: equal for two translations that compute the same."""

    def bare(value: object) -> object:
        if isinstance(value, dict):
            return {k: bare(v) for k, v in value.items() if k != "id"}
        if isinstance(value, list):
            return [bare(v) for v in value]
        return value

    return json.dumps(bare(expr), sort_keys=True)


def walk(expr: Json) -> Iterator[Json]:
    """Every node of a parsed expression (for tests and size reports)."""
    yield expr
    for value in expr.values():
        if isinstance(value, dict):
            yield from walk(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    yield from walk(item)
