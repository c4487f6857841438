"""Builders for the xDS unified-matcher JSON the compiled RBAC filters are made of."""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]

_HEADER_INPUT = "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput"
_CEL_INPUT = "type.googleapis.com/xds.type.matcher.v3.HttpAttributesCelMatchInput"
_CEL_MATCHER = "type.googleapis.com/xds.type.matcher.v3.CelMatcher"
_RBAC_ACTION = "type.googleapis.com/envoy.config.rbac.v3.Action"
RBAC_FILTER = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"


def header(name: str) -> Json:
    """The input: one request header (a header set several times reads as its values joined).
    Its extension name is a bare label: written tens of thousands of times in a large policy."""
    return {"name": "h", "typed_config": {"@type": _HEADER_INPUT, "header_name": name}}


def regex(expression: str) -> Json:
    """An RE2 value match; Envoy's regexes match the WHOLE value, never a part of it."""
    return {"safe_regex": {"google_re2": {}, "regex": expression}}


def matches(input_: Json, value_match: Json) -> Json:
    return {"single_predicate": {"input": input_, "value_match": value_match}}


def header_matches(name: str, expression: str) -> Json:
    return matches(header(name), regex(expression))


def header_is(name: str, value: str) -> Json:
    return matches(header(name), {"exact": value})


def cel(expr: Json, description: str = "") -> Json:
    """A predicate true when the parsed CEL `expr` evaluates to true (false or an error: no)."""
    return {
        "single_predicate": {
            "input": {"name": "cel", "typed_config": {"@type": _CEL_INPUT}},
            "custom_match": {
                "name": "cel",
                "typed_config": {
                    "@type": _CEL_MATCHER,
                    "expr_match": {"cel_expr_parsed": {"expr": expr}},
                    "description": description,
                },
            },
        }
    }


def all_of(*predicates: Json) -> Json:
    if len(predicates) == 1:
        return predicates[0]
    return {"and_matcher": {"predicate": list(predicates)}}


def any_of(*predicates: Json) -> Json:
    if len(predicates) == 1:
        return predicates[0]
    return {"or_matcher": {"predicate": list(predicates)}}


def negate(predicate: Json) -> Json:
    return {"not_matcher": predicate}


def action(name: str, *, allow: bool) -> Json:
    """The OnMatch of an RBAC decision; `name` is what Envoy reports as the deciding policy."""
    verdict = "ALLOW" if allow else "DENY"
    return {
        "action": {
            "name": name,
            "typed_config": {"@type": _RBAC_ACTION, "name": name, "action": verdict},
        }
    }


def then(matcher: Json) -> Json:
    """An OnMatch that goes on into `matcher`; if it finds nothing, its parent looks further."""
    return {"matcher": matcher}


def first_of(entries: list[tuple[Json, Json]], otherwise: Json | None = None) -> Json:
    """A matcher list: the first (predicate, on_match) that matches and yields an action."""
    matcher: Json = {
        "matcher_list": {
            "matchers": [{"predicate": p, "on_match": on_match} for p, on_match in entries]
        }
    }
    if otherwise is not None:
        matcher["on_no_match"] = otherwise
    return matcher


def by_prefix(input_: Json, branches: dict[str, Json]) -> Json:
    """A prefix tree: the longest key the input starts with, then shorter ones while a branch
    finds nothing (Envoy 1.40 behaviour, pinned by the compiled tier's tests)."""
    return {"matcher_tree": {"input": input_, "prefix_match_map": {"map": branches}}}


def rbac_filter(name: str, matcher: Json) -> Json:
    return {"name": name, "typed_config": {"@type": RBAC_FILTER, "matcher": matcher}}
