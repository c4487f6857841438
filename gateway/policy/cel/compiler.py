"""The checker-compiler: every node is type-checked; the IAM subset also gets a Python closure
(or a constant, or a linear time form). Anything else is refused at load."""

from __future__ import annotations

import difflib
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, Final, cast

from gateway.policy.cel.context import ConditionContext, Fn, StrFn
from gateway.policy.cel.errors import ConditionError, EvaluationFailure
from gateway.policy.cel.parser import (
    Binary,
    Call,
    Cond,
    Ident,
    Index,
    ListLit,
    Lit,
    MapLit,
    Node,
    Select,
    Unary,
)
from gateway.policy.cel.regex import Search, compile_search
from gateway.policy.cel.tags import TAG_FUNCTIONS, argument_problem, tag_test
from gateway.policy.cel.timeutil import (
    DURATION_ACCESSORS,
    MAX_DUR,
    MAX_TS,
    MAX_US,
    MIN_TS,
    MIN_US,
    TIME_ACCESSORS,
    TZ_OFFSET,
    Lin,
    ns_to_datetime,
    parse_duration,
    parse_timestamp,
    time_zone,
    zone_suggestion,
)
from gateway.policy.cel.types import (
    BOOL,
    BYTES,
    DOUBLE,
    DURATION,
    DYN,
    INT,
    NULL,
    NUMERIC,
    ORDERED,
    PRIMITIVE,
    REQUEST,
    RESOURCE,
    STRING,
    TIMESTAMP,
    UINT,
    CelType,
    join_types,
    list_type,
    map_type,
    same_kind,
)

_MAX_DEPTH: Final = 100  # depth of the syntax tree (e.g. a chain of 100 `&&`)

# The attributes a condition can read, with the ConditionContext field that holds each one.
_ATTRIBUTES: Final[dict[str, tuple[CelType, str]]] = {
    "request.time": (TIMESTAMP, "request_time"),
    "resource.name": (STRING, "resource_name"),
    "resource.type": (STRING, "resource_type"),
    "resource.service": (STRING, "resource_service"),
}
_ROOTS: Final = {"request": REQUEST, "resource": RESOURCE}
# Google Cloud IAM attributes and functions that this gateway does not provide.
_IAM_ONLY_ROOTS: Final = frozenset({"api", "destination", "origin", "levels"})


_NO_CONST: Final = object()


@dataclass(frozen=True, slots=True)
class _V:
    type: CelType
    node: Node
    const: object = _NO_CONST
    fn: Fn | None = None
    lin: Lin | None = None
    attr: str | None = None  # the ConditionContext field when the node is a plain attribute
    outside: tuple[str, int] | None = None  # why it is outside the evaluated subset, and where

    @property
    def is_const(self) -> bool:
        return self.const is not _NO_CONST


_COMPARE: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_FLIP: Final = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_COMPREHENSIONS: Final = frozenset({"all", "exists", "exists_one", "map", "filter"})
_STRING_PREDICATES: Final = ("contains", "startsWith", "endsWith", "matches")
_CONVERSIONS: Final[dict[str, tuple[frozenset[CelType], CelType]]] = {
    "string": (PRIMITIVE - {NULL}, STRING),
    "int": (frozenset({INT, UINT, DOUBLE, STRING}), INT),
    "uint": (frozenset({INT, UINT, DOUBLE, STRING}), UINT),
    "double": (frozenset({INT, UINT, DOUBLE, STRING}), DOUBLE),
    "bytes": (frozenset({STRING, BYTES}), BYTES),
    "timestamp": (frozenset({STRING, TIMESTAMP}), TIMESTAMP),
    "duration": (frozenset({STRING, DURATION}), DURATION),
}
# CEL also has a global matches(s, re), but the library lacks it: the method form is accepted.
_GLOBAL_FUNCTIONS: Final = frozenset({*_CONVERSIONS, "dyn", "size", "has"})
_METHODS: Final = frozenset(
    {*_STRING_PREDICATES, *TIME_ACCESSORS, *_COMPREHENSIONS, "size", "extract"}
)


def _const_fn(value: object) -> Fn:
    return lambda _c: value


def fn_of(v: _V) -> Fn:
    if v.fn is not None:
        return v.fn
    assert v.is_const, "only fast values have a function"
    return _const_fn(v.const)


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Compiler:
    def __init__(self, src: str) -> None:
        self.src = src
        self.uses_time = False

    def text(self, node: Node) -> str:
        return " ".join(self.src[node.pos : node.end].split())

    def error(self, problem: str, node: Node) -> ConditionError:
        return ConditionError(problem, self.column(node))

    @staticmethod
    def column(node: Node) -> int:
        """Where to point for a problem with the node: at its name or operator if it has one."""
        if isinstance(node, Call):
            return node.name_pos + 1
        if isinstance(node, Binary):
            return node.op_pos + 1
        return node.pos + 1

    def describe(self, v: _V) -> str:
        text = self.text(v.node)
        if len(text) > 40:
            text = text[:37] + "..."
        return f"{v.type} ({text})"

    def outside(self, type_: CelType, node: Node, reason: str, *parts: _V) -> _V:
        for part in parts:
            if part.outside is not None:
                return _V(type_, node, outside=part.outside)
        return _V(type_, node, outside=(reason, self.column(node)))

    # -- dispatch ----------------------------------------------------------------------------

    def check(self, node: Node, scope: dict[str, CelType], depth: int = 0) -> _V:
        if depth > _MAX_DEPTH:
            raise self.error(f"expression is nested too deeply (limit {_MAX_DEPTH})", node)
        depth += 1
        if isinstance(node, Lit):
            return _V(node.type, node, const=node.value)
        if isinstance(node, Ident):
            return self.ident(node, scope)
        if isinstance(node, Select):
            return self.select(node, node.operand, node.field, scope, depth)
        if isinstance(node, Index):
            return self.index(node, scope, depth)
        if isinstance(node, Call):
            return self.call(node, scope, depth)
        if isinstance(node, ListLit):
            return self.list_literal(node, scope, depth)
        if isinstance(node, MapLit):
            keys = [self.check(k, scope, depth) for k, _ in node.entries]
            values = [self.check(v, scope, depth) for _, v in node.entries]
            for key in keys:
                if key.type not in (STRING, INT, UINT, BOOL, DYN):
                    raise self.error(
                        f"map keys must be strings, integers or bools, not {self.describe(key)}",
                        key.node,
                    )
            return self.outside(
                map_type(join_types([k.type for k in keys]), join_types([v.type for v in values])),
                node,
                "map literals",
                *keys,
                *values,
            )
        if isinstance(node, Unary):
            return self.unary(node, scope, depth)
        if isinstance(node, Binary):
            return self.binary(node, scope, depth)
        if isinstance(node, Cond):
            return self.conditional(node, scope, depth)
        raise AssertionError(f"unknown node {node!r}")

    # -- names and attributes ----------------------------------------------------------------

    def ident(self, node: Ident, scope: dict[str, CelType]) -> _V:
        if node.name in scope:
            return self.outside(scope[node.name], node, "comprehension variables")
        if node.name in _ROOTS:
            raise self.error(
                f"'{node.name}' is not a value by itself; use one of its "
                f"attributes, e.g. {self._attribute_list(node.name)}",
                node,
            )
        known = [*_ROOTS, *scope]
        hint = _suggest(node.name, known)
        if node.name in _IAM_ONLY_ROOTS:
            hint = f": a Google Cloud IAM attribute this gateway does not provide{hint}"
        if not hint:
            hint = f"; conditions can read {self._attribute_list()}"
        return self._raise(f"unknown identifier '{node.name}'{hint}", node)

    def _raise(self, problem: str, node: Node) -> _V:
        raise self.error(problem, node)

    @staticmethod
    def _attribute_list(root: str = "") -> str:
        return ", ".join(a for a in _ATTRIBUTES if a.startswith(root))

    def attribute(self, node: Node, root: str, name: str) -> _V:
        full = f"{root}.{name}"
        if full not in _ATTRIBUTES:
            fields: dict[str, str] = {}  # field -> attribute, those of this root first
            for known in sorted(_ATTRIBUTES, key=lambda a: not a.startswith(root + ".")):
                fields.setdefault(known.split(".", 1)[1], known)
            close = difflib.get_close_matches(name, list(fields), n=1, cutoff=0.6)
            hint = f" (did you mean '{fields[close[0]]}'?)" if close else ""
            if not hint:
                hint = f"; conditions can read {self._attribute_list()}"
            at = node.name_pos if isinstance(node, Select) else node.pos
            raise ConditionError(f"unknown attribute '{full}'{hint}", at + 1)
        type_, attr = _ATTRIBUTES[full]
        if type_ == TIMESTAMP:
            self.uses_time = True
            return _V(type_, node, lin=Lin(1, 0), attr=attr)
        return _V(type_, node, fn=operator.attrgetter(attr), attr=attr)

    def root_of(self, node: Node, scope: dict[str, CelType]) -> str | None:
        if isinstance(node, Ident) and node.name in _ROOTS and node.name not in scope:
            return node.name
        return None

    def select(
        self, node: Node, operand: Node, name: str, scope: dict[str, CelType], depth: int
    ) -> _V:
        root = self.root_of(operand, scope)
        if root is not None:
            return self.attribute(node, root, name)
        target = self.check(operand, scope, depth)
        if target.type == DYN:
            return self.outside(DYN, node, "fields of dynamic values", target)
        if target.type.name == "map":
            if not same_kind(target.type.params[0], STRING):
                raise self.error(f"cannot select field '{name}' of {self.describe(target)}", node)
            return self.outside(target.type.params[1], node, "map fields", target)
        at = node.name_pos if isinstance(node, Select) else node.pos
        raise ConditionError(f"{self.describe(target)} has no field '{name}'", at + 1)

    def index(self, node: Index, scope: dict[str, CelType], depth: int) -> _V:
        root = self.root_of(node.operand, scope)
        if root is not None:
            if isinstance(node.index, Lit) and node.index.type == STRING:
                return self.attribute(node, root, cast(str, node.index.value))
            raise self.error(f"'{root}[...]' needs a string literal", node.index)
        target = self.check(node.operand, scope, depth)
        index = self.check(node.index, scope, depth)
        if target.type.name == "list" and same_kind(index.type, INT):
            return self.outside(target.type.params[0], node, "list indexing", target, index)
        if target.type.name == "map" and same_kind(index.type, target.type.params[0]):
            return self.outside(target.type.params[1], node, "map indexing", target, index)
        if target.type == DYN:
            return self.outside(DYN, node, "indexing", target, index)
        raise self.error(f"cannot index {self.describe(target)} with {self.describe(index)}", node)

    def list_literal(self, node: ListLit, scope: dict[str, CelType], depth: int) -> _V:
        items = [self.check(item, scope, depth) for item in node.items]
        type_ = list_type(join_types([item.type for item in items]))
        constant = all(item.is_const and item.type in (STRING, INT, BOOL) for item in items)
        if constant and (type_.params[0] != DYN or not items):
            return _V(type_, node, const=tuple(item.const for item in items))
        return self.outside(type_, node, "list literals other than constant strings", *items)

    # -- calls -------------------------------------------------------------------------------

    def call(self, node: Call, scope: dict[str, CelType], depth: int) -> _V:
        name, args = node.name, node.args
        if node.target is None:
            if name == "has":
                return self.has(node, scope, depth)
            if name not in _GLOBAL_FUNCTIONS:
                if name in _METHODS:
                    raise self.error(f"{name}() is a method; call it as value.{name}(...)", node)
                raise self.error(
                    f"unknown function '{name}'"
                    f"{_suggest(name, sorted(_GLOBAL_FUNCTIONS | _METHODS))}",
                    node,
                )
            if len(args) != 1:
                raise self.error(f"{name}() takes 1 argument, got {len(args)}", node)
            arg = self.check(args[0], scope, depth)
            if name == "size":
                return self.size(node, arg)
            if name == "dyn":
                return self.outside(DYN, node, "dyn()", arg)
            return self.conversion(node, name, arg)
        if name in _COMPREHENSIONS:
            return self.comprehension(node, scope, depth)
        if name in TAG_FUNCTIONS and self.root_of(node.target, scope) == "resource":
            return self.tag_function(node, name)
        root = self.root_of(node.target, scope)
        if root is not None and name not in _METHODS:
            functions = sorted(TAG_FUNCTIONS) if root == "resource" else []
            hint = _suggest(name, functions) or (
                f"; {root} has the functions {', '.join(functions)}" if functions else ""
            )
            raise self.error(f"unknown function '{root}.{name}'{hint}", node)
        if (
            isinstance(node.target, Ident)
            and node.target.name not in scope
            and (node.target.name not in _ROOTS and name not in _METHODS)
        ):
            qualified = f"{node.target.name}.{name}"
            note = ""
            if node.target.name in _IAM_ONLY_ROOTS:
                note = ": a Google Cloud IAM function this gateway does not provide"
            raise self.error(f"unknown function '{qualified}'{note}", node)
        target = self.check(node.target, scope, depth)
        if name in _STRING_PREDICATES:
            return self.string_predicate(node, name, target, args, scope, depth)
        if name == "extract":
            return self.extract(node, target, args, scope, depth)
        if name in TIME_ACCESSORS:
            return self.time_accessor(node, name, target, args, scope, depth)
        if name == "size":
            if args:
                raise self.error(f"size() takes no arguments here, got {len(args)}", node)
            return self.size(node, target)
        if name in _GLOBAL_FUNCTIONS:
            raise self.error(f"{name}() is not a method; call it as {name}(...)", node)
        raise self.error(f"unknown function '{name}'{_suggest(name, sorted(_METHODS))}", node)

    def tag_function(self, node: Call, name: str) -> _V:
        """resource.matchTag("ORG/env", "prod") and its kin: string literal arguments only."""
        wanted = len(TAG_FUNCTIONS[name])
        if len(node.args) != wanted:
            raise self.error(
                f"resource.{name}() takes {wanted} argument{'s' if wanted > 1 else ''}, "
                f"got {len(node.args)}",
                node,
            )
        values: list[str] = []
        for position, arg in enumerate(node.args):
            if not (isinstance(arg, Lit) and arg.type == STRING):
                raise self.error(f"the arguments of resource.{name}() must be string literals", arg)
            value = cast(str, arg.value)
            problem = argument_problem(name, position, value)
            if problem is not None:
                raise self.error(problem, arg)
            values.append(value)
        return _V(BOOL, node, fn=tag_test(name, tuple(values)))

    def has(self, node: Call, scope: dict[str, CelType], depth: int) -> _V:
        if len(node.args) != 1 or not isinstance(node.args[0], Select):
            raise self.error("has() takes one field selection, e.g. has(resource.name)", node)
        arg = node.args[0]
        if self.root_of(arg.operand, scope) is not None:
            self.select(arg, arg.operand, arg.field, scope, depth)  # reject unknown attributes
            return _V(BOOL, node, const=True)
        target = self.check(arg.operand, scope, depth)
        if target.type != DYN and target.type.name != "map":
            raise self.error(f"has() cannot test fields of {self.describe(target)}", node)
        return self.outside(BOOL, node, "has() on dynamic values", target)

    def size(self, node: Node, arg: _V) -> _V:
        if arg.type not in (STRING, BYTES, DYN) and arg.type.name not in ("list", "map"):
            raise self.error(f"size() is not defined for {self.describe(arg)}", node)
        if arg.outside is None and (arg.type in (STRING, BYTES) or arg.type.name == "list"):
            if arg.is_const:
                return _V(INT, node, const=len(cast("str | bytes | tuple[object, ...]", arg.const)))
            if arg.fn is not None:
                get = cast(StrFn, arg.fn)
                return _V(INT, node, fn=lambda c: len(get(c)))
        return self.outside(INT, node, "size()", arg)

    def conversion(self, node: Call, name: str, arg: _V) -> _V:
        accepted, result = _CONVERSIONS[name]
        if arg.type != DYN and arg.type not in accepted:
            raise self.error(f"{name}() cannot convert {self.describe(arg)}", node)
        if arg.type == result:
            return arg
        if name in ("timestamp", "duration") and arg.is_const:
            text = cast(str, arg.const)
            parsed = parse_timestamp(text) if name == "timestamp" else parse_duration(text)
            if isinstance(parsed, str):
                raise self.error(f"invalid {name} {text!r}: {parsed}", arg.node)
            return _V(result, node, lin=Lin(0, parsed))
        return self.outside(result, node, f"{name}() of non-literal values", arg)

    def string_predicate(
        self,
        node: Call,
        name: str,
        target: _V,
        args: tuple[Node, ...],
        scope: dict[str, CelType],
        depth: int,
    ) -> _V:
        if target.type not in (STRING, DYN):
            raise self.error(f"{name}() applies to strings, not to {self.describe(target)}", node)
        if len(args) != 1:
            raise self.error(f"{name}() takes 1 argument, got {len(args)}", node)
        arg = self.check(args[0], scope, depth)
        if arg.type not in (STRING, DYN):
            raise self.error(
                f"the argument of {name}() must be a string, not {self.describe(arg)}", arg.node
            )
        search: Search | None = None
        if name == "matches":
            if not arg.is_const:
                return self.outside(BOOL, node, "matches() with a pattern that is not a literal")
            compiled = compile_search(cast(str, arg.const))
            if isinstance(compiled, str):
                raise self.error(compiled, arg.node)
            search = compiled
        if target.outside is not None or arg.outside is not None or target.type == DYN:
            return self.outside(BOOL, node, f"{name}()", target, arg)
        get = cast(StrFn, fn_of(target))
        if search is not None:
            if target.is_const:
                return _V(BOOL, node, const=search(cast(str, target.const)))
            return _V(BOOL, node, fn=lambda c: search(get(c)))
        if arg.is_const:
            text = cast(str, arg.const)
            if target.is_const:
                return _V(BOOL, node, const=_STR_METHODS[name](cast(str, target.const), text))
            if name == "startsWith":
                return _V(BOOL, node, fn=lambda c: get(c).startswith(text))
            if name == "endsWith":
                return _V(BOOL, node, fn=lambda c: get(c).endswith(text))
            return _V(BOOL, node, fn=lambda c: text in get(c))
        method, get_arg = _STR_METHODS[name], cast(StrFn, fn_of(arg))
        return _V(BOOL, node, fn=lambda c: method(get(c), get_arg(c)))

    def extract(
        self,
        node: Call,
        target: _V,
        args: tuple[Node, ...],
        scope: dict[str, CelType],
        depth: int,
    ) -> _V:
        """IAM's `name.extract("prefix{var}suffix")`: the text between the first prefix and the
        next suffix (to the end when there is no suffix), or "" when the name has no such part."""
        if target.type not in (STRING, DYN):
            raise self.error(f"extract() applies to strings, not to {self.describe(target)}", node)
        if len(args) != 1:
            raise self.error(f"extract() takes 1 argument, got {len(args)}", node)
        arg = self.check(args[0], scope, depth)
        if not (arg.type == STRING and arg.is_const):
            raise self.error(
                'the template of extract() must be a string literal such as "projects/{name}/"',
                arg.node,
            )
        template = _EXTRACT_TEMPLATE.fullmatch(cast(str, arg.const))
        if template is None:
            raise self.error(
                "an extract() template holds exactly one {variable} between literal text, "
                'e.g. "projects/{project}/"; braces may not appear elsewhere',
                arg.node,
            )
        prefix, suffix = template["prefix"], template["suffix"]
        if target.outside is not None or target.type == DYN:
            return self.outside(STRING, node, "extract()", target)
        if target.is_const:
            return _V(STRING, node, const=_extract(cast(str, target.const), prefix, suffix))
        get = cast(StrFn, fn_of(target))
        return _V(STRING, node, fn=lambda c: _extract(get(c), prefix, suffix))

    def time_accessor(
        self,
        node: Call,
        name: str,
        target: _V,
        args: tuple[Node, ...],
        scope: dict[str, CelType],
        depth: int,
    ) -> _V:
        if target.type == DURATION and name in DURATION_ACCESSORS:
            if args:
                raise self.error(f"{name}() of a duration takes no arguments", node)
            return self.outside(INT, node, f"{name}() of durations", target)
        if target.type not in (TIMESTAMP, DYN):
            raise self.error(
                f"{name}() applies to timestamps such as request.time, not to "
                f"{self.describe(target)}",
                node,
            )
        if len(args) > 1:
            raise self.error(
                f"{name}() takes an optional time zone, got {len(args)} arguments", node
            )
        zone: tzinfo = UTC
        if args:
            arg = self.check(args[0], scope, depth)
            if not (arg.type == STRING and arg.is_const):
                raise self.error(
                    f"the time zone of {name}() must be a string literal such as "
                    f"'America/New_York'",
                    arg.node,
                )
            zone_name = cast(str, arg.const)
            try:
                zone = time_zone(zone_name)
            except ValueError as exc:
                suggestion = "" if TZ_OFFSET.fullmatch(zone_name) else zone_suggestion(zone_name)
                raise self.error(f"{exc}{suggestion}", arg.node) from None
        accessor = TIME_ACCESSORS[name]
        lin = target.lin
        if lin is not None and lin.k == 0:
            return _V(INT, node, const=accessor(ns_to_datetime(lin.c).astimezone(zone)))
        if lin is not None and lin.k == 1 and lin.c == 0 and target.attr is not None:
            return _V(INT, node, fn=_time_part(accessor, zone))
        return self.outside(INT, node, f"{name}() of computed timestamps", target)

    def comprehension(self, node: Call, scope: dict[str, CelType], depth: int) -> _V:
        name, args = node.name, node.args
        arity = (2, 3) if name == "map" else (2,)
        if len(args) not in arity:
            raise self.error(
                f"{name}() takes {' or '.join(map(str, arity))} arguments, got {len(args)}", node
            )
        variable = args[0]
        if not isinstance(variable, Ident):
            raise self.error(f"the first argument of {name}() must be a variable name", variable)
        if variable.name in _ROOTS:
            raise self.error(f"'{variable.name}' cannot be used as a variable name", variable)
        assert node.target is not None
        target = self.check(node.target, scope, depth)
        if target.type.name in ("list", "map"):
            element = target.type.params[0]
        elif target.type == DYN:
            element = DYN
        else:
            raise self.error(
                f"{name}() applies to lists and maps, not to {self.describe(target)}", node
            )
        inner = {**scope, variable.name: element}
        parts = [self.check(arg, inner, depth) for arg in args[1:]]
        predicates = parts[:-1] if name == "map" else parts
        for predicate in predicates:
            if predicate.type not in (BOOL, DYN):
                raise self.error(
                    f"the condition of {name}() must be a bool, not {self.describe(predicate)}",
                    predicate.node,
                )
        result = {"map": list_type(parts[-1].type), "filter": list_type(element)}.get(name, BOOL)
        return self.outside(result, node, f"{name}()", target)

    # -- operators ---------------------------------------------------------------------------

    def unary(self, node: Unary, scope: dict[str, CelType], depth: int) -> _V:
        operand = self.check(node.operand, scope, depth)
        if node.op == "!":
            if operand.type not in (BOOL, DYN):
                raise self.error(f"'!' applies to bools, not to {self.describe(operand)}", node)
            if operand.is_const:
                return _V(BOOL, node, const=not operand.const)
            if operand.fn is not None:
                get = operand.fn
                return _V(BOOL, node, fn=lambda c: not get(c))
            return self.outside(BOOL, node, "'!'", operand)
        if operand.type not in (INT, DOUBLE, DYN):
            hint = ' (write duration("-1h") or subtract)' if operand.type == DURATION else ""
            raise self.error(
                f"'-' applies to int and double, not to {self.describe(operand)}{hint}", node
            )
        if operand.is_const and operand.type == DOUBLE:
            return _V(DOUBLE, node, const=-cast(float, operand.const))
        if operand.is_const and operand.type == INT:
            value = -cast(int, operand.const)
            if value >= 2**63:
                raise self.error("int overflow: the result is out of range", node)
            return _V(INT, node, const=value)
        return self.outside(operand.type, node, "arithmetic", operand)

    def binary(self, node: Binary, scope: dict[str, CelType], depth: int) -> _V:
        left = self.check(node.left, scope, depth)
        right = self.check(node.right, scope, depth)
        op = node.op
        if op in ("&&", "||"):
            return self.logical(node, op, left, right)
        if op in _COMPARE:
            return self.compare(node, op, left, right)
        if op == "in":
            return self.membership(node, left, right)
        return self.arithmetic(node, op, left, right)

    def logical(self, node: Binary, op: str, left: _V, right: _V) -> _V:
        for side in (left, right):
            if side.type not in (BOOL, DYN):
                raise self.error(
                    f"'{op}' needs bools on both sides, but this side is {self.describe(side)}",
                    side.node,
                )
        absorbing = op == "||"  # true for ||, false for &&: decides regardless of the other side
        for side, other in ((left, right), (right, left)):
            if side.is_const:
                # CEL's && and || are commutative even with errors: `x && false` is false.
                if side.const is absorbing:
                    return _V(BOOL, node, const=absorbing)
                return other
        if left.fn is None or right.fn is None:
            return self.outside(BOOL, node, f"'{op}'", left, right)
        return _V(BOOL, node, fn=_logical(op, left.fn, right.fn))

    def compare(self, node: Binary, op: str, left: _V, right: _V) -> _V:
        lt, rt = left.type, right.type
        if lt == DYN or rt == DYN:
            return self.outside(BOOL, node, f"'{op}' on dynamic values", left, right)
        if lt in NUMERIC and rt in NUMERIC and lt != rt:
            raise self.error(
                f"'{op}' compares {self.describe(left)} with {self.describe(right)}: "
                f"CEL does not convert between int, uint and double (write 9, not "
                f"9.0 or 9u, for an int)",
                node,
            )
        if op in ("==", "!=") and NULL in (lt, rt):
            if lt != rt:
                raise self.error(
                    f"{self.describe(left if lt != NULL else right)} is never null", node
                )
            return _V(BOOL, node, const=op == "==")
        valid = same_kind(lt, rt) and (op in ("==", "!=") or lt in ORDERED)
        if not valid:
            hint = ""
            if TIMESTAMP in (lt, rt) and STRING in (lt, rt):
                hint = ' (write timestamp("2026-01-01T00:00:00Z") for a point in time)'
            elif DURATION in (lt, rt) and STRING in (lt, rt):
                hint = ' (write duration("3600s") for a length of time)'
            elif op not in ("==", "!=") and lt == rt:
                hint = f" ({lt} values are not ordered)"
            raise self.error(
                f"'{op}' cannot compare {self.describe(left)} with {self.describe(right)}{hint}",
                node,
            )
        if left.lin is not None and right.lin is not None:
            return self.compare_time(node, op, left.lin, right.lin)
        if left.outside is not None or right.outside is not None or lt.name in ("list", "map"):
            return self.outside(BOOL, node, f"'{op}' on {lt}", left, right)
        if left.is_const and right.is_const:
            return _V(BOOL, node, const=_COMPARE[op](left.const, right.const))
        compare = _COMPARE[op]
        if right.is_const:
            get, value = fn_of(left), right.const
            return _V(BOOL, node, fn=lambda c: compare(get(c), value))
        if left.is_const:
            get, value = fn_of(right), left.const
            return _V(BOOL, node, fn=lambda c: compare(value, get(c)))
        get_left, get_right = fn_of(left), fn_of(right)
        return _V(BOOL, node, fn=lambda c: compare(get_left(c), get_right(c)))

    def compare_time(self, node: Binary, op: str, left: Lin, right: Lin) -> _V:
        # left op right  <=>  (left.k - right.k) * t  op  right.c - left.c
        k, c = left.k - right.k, right.c - left.c
        lo, hi = max(left.lo, right.lo), min(left.hi, right.hi)
        if k == -1:
            k, c, op = 1, -c, _FLIP[op]
        if k == 0:
            result = _COMPARE[op](0, c)
            if lo <= MIN_TS and hi >= MAX_TS:
                return _V(BOOL, node, const=result)
            return _V(BOOL, node, fn=_checked_time(lo, hi, _const_fn(result)))
        if k != 1:
            return _V(BOOL, node, outside=("this arithmetic on request.time", self.column(node)))
        fn = _compare_request_time(op, c)
        if lo > MIN_TS or hi < MAX_TS:
            fn = _checked_time(lo, hi, fn)
        return _V(BOOL, node, fn=fn)

    def membership(self, node: Binary, left: _V, right: _V) -> _V:
        rt = right.type
        if rt.name not in ("list", "map") and rt != DYN:
            raise self.error(
                f"'in' needs a list or map on the right, not {self.describe(right)}", node
            )
        if rt != DYN and not same_kind(left.type, rt.params[0]):
            raise self.error(
                f"'in' looks for {self.describe(left)} in {self.describe(right)}", node
            )
        if left.outside is None and right.is_const and left.type in (STRING, INT, BOOL):
            values = frozenset(cast("tuple[object, ...]", right.const))
            if left.is_const:
                return _V(BOOL, node, const=left.const in values)
            get = fn_of(left)
            return _V(BOOL, node, fn=lambda c: get(c) in values)
        return self.outside(BOOL, node, "'in'", left, right)

    def arithmetic(self, node: Binary, op: str, left: _V, right: _V) -> _V:
        lt, rt = left.type, right.type
        result: CelType | None = None
        numeric = lt in NUMERIC and (op != "%" or lt != DOUBLE)
        if lt == DYN or rt == DYN:
            result = DYN
        elif lt == rt and (numeric or (op == "+" and lt in (STRING, BYTES))):
            result = lt
        elif op == "+" and lt.name == rt.name == "list":
            result = list_type(join_types([lt.params[0], rt.params[0]]))
        elif op == "+" and {lt, rt} == {TIMESTAMP, DURATION}:
            result = TIMESTAMP
        elif op in ("+", "-") and lt == rt == DURATION:
            result = DURATION
        elif op == "-" and lt == TIMESTAMP and rt in (TIMESTAMP, DURATION):
            result = DURATION if rt == TIMESTAMP else TIMESTAMP
        if result is None:
            hint = ""
            if lt in NUMERIC and rt in NUMERIC:
                hint = " (CEL does not convert between int, uint and double)"
            raise self.error(
                f"'{op}' cannot combine {self.describe(left)} and {self.describe(right)}{hint}",
                node,
            )
        if left.lin is not None and right.lin is not None:
            a, b = left.lin, right.lin
            sign = 1 if op == "+" else -1
            return self.linear(node, result, a.k + sign * b.k, a.c + sign * b.c, a, b)
        if result == STRING and left.outside is None and right.outside is None:
            if left.is_const and right.is_const:
                return _V(STRING, node, const=cast(str, left.const) + cast(str, right.const))
            get_left, get_right = cast(StrFn, fn_of(left)), cast(StrFn, fn_of(right))
            return _V(STRING, node, fn=lambda c: get_left(c) + get_right(c))
        return self.outside(result, node, "arithmetic", left, right)

    def linear(self, node: Node, type_: CelType, k: int, c: int, a: Lin, b: Lin) -> _V:
        """The time value k*t + c, after checking it stays within CEL's range."""
        low, high = (MIN_TS, MAX_TS) if type_ == TIMESTAMP else (-MAX_DUR, MAX_DUR)
        lo, hi = max(a.lo, b.lo), min(a.hi, b.hi)
        if k == 0:
            if not low <= c <= high:
                raise self.error(f"{type_} overflow: the result is out of range", node)
        elif k == 1:
            lo, hi = max(lo, low - c), min(hi, high - c)
        elif k == -1:
            lo, hi = max(lo, c - high), min(hi, c - low)
        else:
            return _V(type_, node, outside=("this arithmetic on request.time", self.column(node)))
        return _V(type_, node, lin=Lin(k, c, lo, hi))

    def conditional(self, node: Cond, scope: dict[str, CelType], depth: int) -> _V:
        cond = self.check(node.cond, scope, depth)
        then = self.check(node.then, scope, depth)
        orelse = self.check(node.orelse, scope, depth)
        if cond.type not in (BOOL, DYN):
            raise self.error(
                f"the condition of '?:' must be a bool, not {self.describe(cond)}", cond.node
            )
        if not same_kind(then.type, orelse.type):
            raise self.error(
                f"the branches of '?:' have different types: "
                f"{self.describe(then)} and {self.describe(orelse)}",
                node,
            )
        type_ = then.type if then.type == orelse.type else DYN
        if cond.is_const and cond.outside is None:
            return then if cond.const else orelse
        fast = all(v.outside is None and v.lin is None for v in (cond, then, orelse))
        if fast and type_ in (BOOL, INT, STRING):
            test, get_then, get_else = fn_of(cond), fn_of(then), fn_of(orelse)
            return _V(type_, node, fn=lambda c: get_then(c) if test(c) else get_else(c))
        return self.outside(type_, node, "'?:'", cond, then, orelse)


_EXTRACT_TEMPLATE: Final = re.compile(
    r"(?P<prefix>[^{}]*)\{[A-Za-z_][A-Za-z0-9_]*\}(?P<suffix>[^{}]*)", re.ASCII
)


def _extract(name: str, prefix: str, suffix: str) -> str:
    start = name.find(prefix)
    if start < 0:
        return ""
    start += len(prefix)
    if not suffix:
        return name[start:]
    end = name.find(suffix, start)
    return name[start:end] if end >= 0 else ""


_STR_METHODS: Final[dict[str, Callable[[str, str], bool]]] = {
    "startsWith": str.startswith,
    "endsWith": str.endswith,
    "contains": lambda s, sub: sub in s,
}


def _logical(op: str, left: Fn, right: Fn) -> Fn:
    # An error on one side is absorbed when the other side decides the result, as in CEL.
    if op == "&&":

        def both(c: ConditionContext) -> object:
            try:
                first = left(c)
            except Exception:
                if not right(c):
                    return False
                raise
            return first and right(c)

        return both

    def either(c: ConditionContext) -> object:
        try:
            first = left(c)
        except Exception:
            if right(c):
                return True
            raise
        return first or right(c)

    return either


def _time_part(accessor: Callable[[datetime], int], zone: tzinfo) -> Fn:
    def part(c: ConditionContext) -> int:
        when = c.request_time
        if when.tzinfo is None:
            raise EvaluationFailure("request.time is not timezone-aware")
        return accessor(when.astimezone(zone))

    return part


def _checked_time(lo: int, hi: int, fn: Fn) -> Fn:
    """fn, but an error when request.time is where an intermediate value overflows."""
    lo_us, hi_us = -(-lo // 1000), hi // 1000  # request.time has whole microseconds
    if lo_us > hi_us or lo_us > MAX_US or hi_us < MIN_US:

        def always_fails(c: ConditionContext) -> object:
            raise EvaluationFailure("timestamp arithmetic overflows CEL's range")

        return always_fails
    low = ns_to_datetime(lo_us * 1000) if lo_us > MIN_US else None
    high = ns_to_datetime(hi_us * 1000) if hi_us < MAX_US else None

    def checked(c: ConditionContext) -> object:
        when = c.request_time
        if (low is not None and when < low) or (high is not None and when > high):
            raise EvaluationFailure("timestamp arithmetic overflows CEL's range")
        return fn(c)

    return checked


def _compare_request_time(op: str, c: int) -> Fn:
    """`request.time op c` for c in nanoseconds; request.time has microseconds only."""
    micros, rest = divmod(c, 1000)
    if micros < MIN_US or micros > MAX_US:  # beyond any datetime: the answer is fixed
        above = micros > MAX_US  # c is above every request time
        return _const_fn(_COMPARE[op](0, 1) if above else _COMPARE[op](1, 0))
    bound = ns_to_datetime(micros * 1000)
    if rest:  # c lies strictly between bound and the next microsecond
        if op in ("<", "<="):
            return lambda ctx: ctx.request_time <= bound
        if op in (">", ">="):
            return lambda ctx: ctx.request_time > bound
        return _const_fn(op == "!=")
    compare = {
        "<": lambda ctx: ctx.request_time < bound,
        "<=": lambda ctx: ctx.request_time <= bound,
        ">": lambda ctx: ctx.request_time > bound,
        ">=": lambda ctx: ctx.request_time >= bound,
        "==": lambda ctx: ctx.request_time == bound,
        "!=": lambda ctx: ctx.request_time != bound,
    }
    return cast(Fn, compare[op])
