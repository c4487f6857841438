"""celexpr.translate: opsgate's IAM conditions as Envoy's parsed CEL. The supported forms give the
expected tree; everything else is refused with the column it starts at; timestamp literals are
written in one RFC 3339 spelling; and a translated condition, read back into CEL text and run by
the CEL library over Envoy's attributes, decides as opsgate's own compiled condition does."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import cel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.envoy.compiled.celexpr import (
    FIELD_EXTRACTION,
    ResourceFacts,
    Untranslatable,
    translate,
    walk,
)
from gateway.policy.cel import ConditionContext, compile_condition
from gateway.policy.cel.timeutil import MAX_TS, MIN_TS, parse_timestamp
from gateway.policy.evaluator import condition_facts

PERMISSION = "contactcenterinsights.operations.get"
NAME = "projects/p/locations/l/operations/o"
FACTS = ResourceFacts(*condition_facts(NAME, PERMISSION))

# --- the expected trees, without ids ------------------------------------------------------


def strip_ids(expr: Any) -> Any:
    """The tree without its node ids (they only have to be unique)."""
    if isinstance(expr, dict):
        return {k: strip_ids(v) for k, v in expr.items() if k != "id"}
    if isinstance(expr, list):
        return [strip_ids(v) for v in expr]
    return expr


def const(value: str | bool | int) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"const_expr": {"bool_value": value}}
    if isinstance(value, int):
        return {"const_expr": {"int64_value": str(value)}}
    return {"const_expr": {"string_value": value}}


def call(
    function: str, *args: dict[str, Any], target: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"function": function, "args": list(args)}
    if target is not None:
        body["target"] = target
    return {"call_expr": body}


def select(operand: dict[str, Any], field: str) -> dict[str, Any]:
    return {"select_expr": {"operand": operand, "field": field}}


def ident(name: str) -> dict[str, Any]:
    return {"ident_expr": {"name": name}}


# metadata.filter_metadata["envoy.filters.http.grpc_field_extraction"]["name"][0]
NAME_EXPR = call(
    "_[_]",
    call(
        "_[_]",
        call(
            "_[_]",
            select(ident("metadata"), "filter_metadata"),
            const("envoy.filters.http.grpc_field_extraction"),
        ),
        const("name"),
    ),
    const(0),
)
TIME_EXPR = select(ident("request"), "time")


def ts(text: str) -> dict[str, Any]:
    return call("timestamp", const(text))


SUPPORTED = [
    ("name-equals", 'resource.name == "projects/p"', call("_==_", NAME_EXPR, const("projects/p"))),
    ("name-differs", "resource.name != 'x'", call("_!=_", NAME_EXPR, const("x"))),
    (
        "starts-with",
        'resource.name.startsWith("projects/p/")',
        call("startsWith", const("projects/p/"), target=NAME_EXPR),
    ),
    ("ends-with", 'resource.name.endsWith("/o")', call("endsWith", const("/o"), target=NAME_EXPR)),
    ("contains", 'resource.name.contains("/l/")', call("contains", const("/l/"), target=NAME_EXPR)),
    (
        "literal-target",
        '"projects/p/locations/l/operations/o".startsWith(resource.name)',
        call("startsWith", NAME_EXPR, target=const("projects/p/locations/l/operations/o")),
    ),
    (
        "type-is-the-routes",
        'resource.type == "contactcenterinsights.googleapis.com/Operation"',
        call("_==_", const(FACTS.type), const("contactcenterinsights.googleapis.com/Operation")),
    ),
    (
        "service-is-the-routes",
        'resource.service == "contactcenterinsights.googleapis.com"',
        call("_==_", const(FACTS.service), const("contactcenterinsights.googleapis.com")),
    ),
    (
        "time-before",
        'request.time < timestamp("2026-01-01T00:00:00Z")',
        call("_<_", TIME_EXPR, ts("2026-01-01T00:00:00.000000000Z")),
    ),
    (
        "time-at-or-after",
        'request.time >= timestamp("2026-01-01T00:00:00Z")',
        call("_>=_", TIME_EXPR, ts("2026-01-01T00:00:00.000000000Z")),
    ),
    (
        "time-after-literal-first",
        'timestamp("2026-01-01T00:00:00Z") > request.time',
        call("_>_", ts("2026-01-01T00:00:00.000000000Z"), TIME_EXPR),
    ),
    (
        "time-le",
        'request.time <= timestamp("2026-01-01T00:00:00Z")',
        call("_<=_", TIME_EXPR, ts("2026-01-01T00:00:00.000000000Z")),
    ),
    (
        "not",
        '!resource.name.endsWith("/o")',
        call("!_", call("endsWith", const("/o"), target=NAME_EXPR)),
    ),
    (
        "and-or",
        'resource.name == "a" && resource.name != "b" || false',
        call(
            "_||_",
            call("_&&_", call("_==_", NAME_EXPR, const("a")), call("_!=_", NAME_EXPR, const("b"))),
            const(False),
        ),
    ),
    (
        "parentheses-group",
        'resource.name == "a" && (resource.name != "b" || false)',
        call(
            "_&&_",
            call("_==_", NAME_EXPR, const("a")),
            call("_||_", call("_!=_", NAME_EXPR, const("b")), const(False)),
        ),
    ),
    ("true", "true", const(True)),
    ("integers", "-1 < 2", call("_<_", const(-1), const(2))),
    ("hex-integer", "0x10 == 16", call("_==_", const(16), const(16))),
    (
        "escaped-string",
        r'resource.name == "a\"b\\c\u00e9"',
        call("_==_", NAME_EXPR, const('a"b\\cé')),
    ),
    ("raw-string", r"resource.name == r'a\b'", call("_==_", NAME_EXPR, const("a\\b"))),
]


@pytest.mark.parametrize(
    ("expression", "expected"), [c[1:] for c in SUPPORTED], ids=[c[0] for c in SUPPORTED]
)
def test_supported_forms_translate_to_the_expected_tree(
    expression: str, expected: dict[str, Any]
) -> None:
    translated = translate(expression, FACTS)
    assert strip_ids(translated) == expected
    ids = [node["id"] for node in walk(translated) if "id" in node]
    assert all(isinstance(i, str) and i.isdigit() for i in ids)
    assert len(ids) == len(set(ids)), "node ids are unique within an expression"
    json.dumps(translated)  # plain JSON, as the listener file carries it


def test_the_name_read_is_the_one_the_field_extraction_wrote() -> None:
    tree = strip_ids(translate('resource.name == "x"', FACTS))
    assert FIELD_EXTRACTION == "envoy.filters.http.grpc_field_extraction"
    assert tree["call_expr"]["args"][0] == NAME_EXPR


def test_type_and_service_are_the_facts_of_the_route() -> None:
    other = ResourceFacts("cloudresourcemanager.googleapis.com/Project", "svc.googleapis.com")
    tree = strip_ids(translate("resource.type == resource.service", other))
    assert tree == call("_==_", const(other.type), const(other.service))


# --- refusals -------------------------------------------------------------------------------

UNSUPPORTED = [
    ("matches", 'resource.name.matches("^p")', 1, 'resource.name.matches("^p")', "function"),
    ("size-method", "  resource.name.size() > 1", 3, "resource.name.size()", "function"),
    ("size-call", "size(resource.name) > 1", 1, "size(resource.name)", "function"),
    ("has", "has(resource.name)", 1, "has(resource.name)", "function"),
    (
        "extract",
        'resource.name.extract("projects/{p}/") == "p"',
        1,
        'resource.name.extract("projects/{p}/")',
        "function",
    ),
    ("time-accessor", "request.time.getHours() > 3", 1, "request.time.getHours()", "function"),
    (
        "time-accessor-later",
        'resource.name == "a" && request.time.getHours() > 3',
        25,
        "request.time.getHours()",
        "function",
    ),
    (
        "duration",
        'request.time - duration("1h") < request.time',
        1,
        'request.time - duration("1h")',
        "outside",
    ),
    ("in-list", 'resource.name in ["a"]', 1, 'resource.name in ["a"]', "outside"),
    (
        "ternary",
        'resource.name == "a" ? true : false',
        1,
        'resource.name == "a" ? true : false',
        "outside",
    ),
    ("index", 'resource.name[0] == "p"', 1, "resource.name[0]", "outside"),
    ("concatenation", '"a" + "b" == resource.name', 1, '"a" + "b"', "outside"),
    ("labels", 'resource.labels == "x"', 1, "resource.labels", "attribute"),
    ("claims", "request.auth.claims", 1, "request.auth.claims", "attribute"),
    ("request-host", 'request.host == "x"', 1, "request.host", "attribute"),
    ("bare-ident", "resource", 1, "resource", "outside"),
    (
        "api-attribute",
        'api.getAttribute("x", "") == ""',
        1,
        'api.getAttribute("x", "")',
        "function",
    ),
    ("double", "1.5 == 1.5", 1, "1.5", "literal"),
    ("unsigned", "1u == 1u", 1, "1u", "literal"),
    ("bytes", 'b"x" == b"x"', 1, 'b"x"', "literal"),
    ("null", "null == null", 1, "null", "literal"),
    (
        "timestamp-not-literal",
        "timestamp(resource.name) < request.time",
        1,
        "timestamp(resource.name)",
        "function",
    ),
    (
        "timestamp-bad-date",
        'request.time < timestamp("2026-13-01T00:00:00Z")',
        16,
        'timestamp("2026-13-01T00:00:00Z")',
        "function",
    ),
    # A column counts characters from the expression's start, line breaks included, as
    # opsgate's own ConditionError does.
    (
        "multi-line",
        'resource.name == "a" ||\n  resource.name.matches("b")',
        27,
        'resource.name.matches("b")',
        "function",
    ),
]
_WHY = {
    "function": "is a function the compiled tier does not evaluate",
    "outside": "is outside what the compiled tier evaluates",
    "attribute": "is an attribute the compiled tier does not provide",
    "literal": "is a literal of a type the compiled tier does not compare",
}


@pytest.mark.parametrize(
    ("expression", "column", "shown", "why"),
    [c[1:] for c in UNSUPPORTED],
    ids=[c[0] for c in UNSUPPORTED],
)
def test_unsupported_forms_are_refused_with_their_column(
    expression: str, column: int, shown: str, why: str
) -> None:
    with pytest.raises(Untranslatable) as refused:
        translate(expression, FACTS)
    assert refused.value.column == column
    assert refused.value.problem == f"'{shown}' {_WHY[why]}"
    assert expression[column - 1 :].startswith(shown)  # the column is where the part starts


# --- timestamps -----------------------------------------------------------------------------

RFC3339_NS = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{9}Z")

TIMESTAMPS = [
    ("utc", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00.000000000Z"),
    ("lower-case-letters", "2026-01-01t00:00:00z", "2026-01-01T00:00:00.000000000Z"),
    ("positive-offset", "2026-01-01T00:00:00+01:00", "2025-12-31T23:00:00.000000000Z"),
    ("negative-offset", "2025-12-31T23:30:00-00:45", "2026-01-01T00:15:00.000000000Z"),
    ("fraction", "2026-01-01T00:00:00.5Z", "2026-01-01T00:00:00.500000000Z"),
    ("nanoseconds", "2026-01-01T00:00:00.123456789Z", "2026-01-01T00:00:00.123456789Z"),
    ("fraction-and-offset", "2026-03-01T00:30:00.25+01:00", "2026-02-28T23:30:00.250000000Z"),
    ("leap-day", "2024-02-29T12:00:00Z", "2024-02-29T12:00:00.000000000Z"),
    ("before-the-epoch", "1969-12-31T23:59:59.9Z", "1969-12-31T23:59:59.900000000Z"),
    ("epoch", "1970-01-01T00:00:00Z", "1970-01-01T00:00:00.000000000Z"),
    ("last-moment", "9999-12-31T23:59:59.999999999Z", "9999-12-31T23:59:59.999999999Z"),
    ("year-1000", "1000-01-01T00:00:00Z", "1000-01-01T00:00:00.000000000Z"),
    ("year-999", "0999-12-31T00:00:00Z", "0999-12-31T00:00:00.000000000Z"),
    ("first-moment", "0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000000000Z"),
]


@pytest.mark.parametrize(
    ("written", "normalized"), [c[1:] for c in TIMESTAMPS], ids=[c[0] for c in TIMESTAMPS]
)
def test_timestamps_are_normalized(written: str, normalized: str) -> None:
    tree = strip_ids(translate(f'request.time < timestamp("{written}")', FACTS))
    assert tree == call("_<_", TIME_EXPR, ts(normalized))


@settings(max_examples=1500, deadline=None)
@given(st.integers(MIN_TS, MAX_TS))
def test_any_timestamp_is_written_as_rfc3339_utc_nanoseconds(ns: int) -> None:
    when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000)
    written = when.isoformat().replace("+00:00", "Z")  # microseconds at most
    written_ns = parse_timestamp(written)
    assert isinstance(written_ns, int)
    tree = translate(f'request.time < timestamp("{written}")', FACTS)
    text = strip_ids(tree)["call_expr"]["args"][1]["call_expr"]["args"][0]["const_expr"]
    normalized = text["string_value"]
    assert RFC3339_NS.fullmatch(normalized), normalized
    assert parse_timestamp(normalized) == written_ns


# --- the translation decides as opsgate's own condition ---------------------------------------


def cel_text(expr: dict[str, Any]) -> str:
    """A parsed expression back as CEL source (fully parenthesized)."""
    if "const_expr" in expr:
        value = expr["const_expr"]
        if "bool_value" in value:
            return "true" if value["bool_value"] else "false"
        if "int64_value" in value:
            return value["int64_value"]
        return json.dumps(value["string_value"])  # a JSON string is a CEL string literal
    if "ident_expr" in expr:
        return str(expr["ident_expr"]["name"])
    if "select_expr" in expr:
        return f"{cel_text(expr['select_expr']['operand'])}.{expr['select_expr']['field']}"
    body = expr["call_expr"]
    function, args = body["function"], [cel_text(a) for a in body["args"]]
    if "target" in body:
        return f"{cel_text(body['target'])}.{function}({', '.join(args)})"
    if function == "!_":
        return f"!({args[0]})"
    if function == "_[_]":
        return f"{args[0]}[{args[1]}]"
    if function.startswith("_") and function.endswith("_"):
        return f"({args[0]} {function.strip('_')} {args[1]})"
    return f"{function}({', '.join(args)})"


def envoy_attributes(name: str, now: datetime) -> cel.Context:
    """The attributes Envoy's CEL reads the translation over."""
    return cel.Context(
        {
            "metadata": {"filter_metadata": {FIELD_EXTRACTION: {"name": [name]}}},
            "request": {"time": now},
        }
    )


NOW = datetime(2026, 5, 1, 12, 30, 15, 250_000, tzinfo=UTC)
NAMES = st.sampled_from(
    [
        NAME,
        "projects/p",
        "projects/p/locations/l",
        "projects/q/locations/l/operations/o",
        'projects/"/x',
        "projects/é",
    ]
)
STRINGS = st.sampled_from(
    ["", "projects/", "projects/p", "/o", "/l/", "operations", NAME, '"', "é", "P"]
)
TIMES = st.sampled_from(
    ["2026-05-01T12:30:15.25Z", "2026-05-01T12:30:15.250000001Z", "2026-05-01T13:30:15.25+01:00",
     "2026-05-01T12:30:15Z", "2027-01-01T00:00:00Z", "2020-01-01T00:00:00-08:00"]
)  # fmt: skip
ATOMS = st.one_of(
    st.builds(lambda m, s: f"resource.name.{m}({json.dumps(s)})", st.sampled_from(["startsWith", "endsWith", "contains"]), STRINGS),
    st.builds(lambda op, s: f"resource.name {op} {json.dumps(s)}", st.sampled_from(["==", "!="]), STRINGS),
    st.builds(lambda s: f'{json.dumps(s)}.startsWith(resource.name)', STRINGS),
    st.builds(
        lambda op, t: f'request.time {op} timestamp("{t}")',
        st.sampled_from(["<", "<=", ">", ">=", "==", "!="]),
        TIMES,
    ),
    st.builds(lambda a, s: f"resource.{a} == {json.dumps(s)}", st.sampled_from(["type", "service"]), st.sampled_from([FACTS.type, FACTS.service, ""])),
    st.sampled_from(["true", "false"]),
)  # fmt: skip
CONDITIONS = st.recursive(
    ATOMS,
    lambda inner: st.one_of(
        inner.map(lambda e: f"!({e})"),
        st.builds(
            lambda a, op, b: f"({a}) {op} ({b})", inner, st.sampled_from(["&&", "||"]), inner
        ),
    ),
    max_leaves=6,
)


@settings(max_examples=800, deadline=None)
@given(CONDITIONS, NAMES)
def test_a_translation_decides_as_opsgates_condition(expression: str, name: str) -> None:
    facts = condition_facts(name, PERMISSION)
    own = compile_condition(expression).evaluate(
        ConditionContext(
            resource_name=name, request_time=NOW, resource_type=facts[0], resource_service=facts[1]
        )
    )
    translated = cel_text(translate(expression, ResourceFacts(*facts)))
    assert cel.compile(translated).execute(envoy_attributes(name, NOW)) is own, translated
