"""HttpRule path templates: what compiles, what each compiled template matches and captures."""

from __future__ import annotations

import re

import pytest

from gateway.pathtemplate import TemplateError, compile_template

GET = "/v1/{name=projects/*/locations/*/operations/*}"
LIST = "/v1/{name=projects/*/locations/*}/operations"
CANCEL = "/v1/{name=projects/*/locations/*/operations/*}:cancel"
OP = "projects/p/locations/l/operations/o"

MATCHES = [
    ("get", GET, f"/v1/{OP}", {"name": OP}),
    (
        "get-encoded-name-stays-encoded",
        GET,
        "/v1/projects/a%2Fb/locations/l/operations/o",
        {"name": "projects/a%2Fb/locations/l/operations/o"},
    ),
    (
        "get-empty-segment-left-to-the-chain",
        GET,
        "/v1/projects//locations/l/operations/o",
        {"name": "projects//locations/l/operations/o"},
    ),
    ("get-too-short", GET, "/v1/projects/p/locations/l/operations", None),
    ("get-too-long", GET, f"/v1/{OP}/x", None),
    ("get-trailing-slash", GET, f"/v1/{OP}/", None),
    ("get-wrong-literal", GET, "/v1/projects/p/regions/l/operations/o", None),
    ("get-wrong-version", GET, f"/v2/{OP}", None),
    ("get-refuses-a-verb", GET, f"/v1/{OP}:cancel", None),
    ("get-not-absolute", GET, f"v1/{OP}", None),
    ("list", LIST, "/v1/projects/p/locations/l/operations", {"name": "projects/p/locations/l"}),
    ("list-not-an-operation", LIST, f"/v1/{OP}", None),
    ("cancel", CANCEL, f"/v1/{OP}:cancel", {"name": OP}),
    ("cancel-other-verb", CANCEL, f"/v1/{OP}:delete", None),
    ("cancel-needs-verb", CANCEL, f"/v1/{OP}", None),
    ("bare-variable", "/v1/{name}", "/v1/x", {"name": "x"}),
    ("bare-variable-one-segment", "/v1/{name}", "/v1/x/y", None),
    ("wildcard-outside-variable", "/v1/*/{name=a/*}", "/v1/any/a/b", {"name": "a/b"}),
    (
        "two-variables",
        "/v1/{parent=p/*}/ops/{op_id}",
        "/v1/p/1/ops/2",
        {"parent": "p/1", "op_id": "2"},
    ),
]


@pytest.mark.parametrize(
    ("template", "path", "captures"), [c[1:] for c in MATCHES], ids=[c[0] for c in MATCHES]
)
def test_match(template: str, path: str, captures: dict[str, str] | None) -> None:
    assert compile_template(template).match(path) == captures


def test_compiled_form() -> None:
    compiled = compile_template(CANCEL)
    assert compiled.segments == ("v1", "projects", "*", "locations", "*", "operations", "*")
    assert compiled.verb == "cancel"
    (capture,) = compiled.captures
    assert (capture.field, capture.start, capture.end) == ("name", 1, 7)
    assert capture.pattern == "projects/*/locations/*/operations/*"


def test_shape_ignores_variable_names() -> None:
    assert compile_template("/v1/{name=a/*}").shape == compile_template("/v1/{other=a/*}").shape
    assert compile_template(GET).shape != compile_template(CANCEL).shape


BAD = [
    ("relative", "v1/{name}", "must start with '/'"),
    ("double-star", "/v1/{name=**}", "'**' is not supported"),
    ("unclosed", "/v1/{name=a/*", "'{' without '}'"),
    ("unopened", "/v1/name}", "'}' without '{'"),
    ("nested", "/v1/{a={b}}", "cannot nest"),
    ("partial-segment", "/v1/x{name}", "a variable must be a whole segment"),
    ("bad-field", "/v1/{9name}", "not a field path"),
    ("bound-twice", "/v1/{name}/{name}", "bound twice"),
    ("percent", "/v1/a%20b/{name}", "not allowed as a segment"),
    ("empty-segment", "/v1//{name}", "not allowed as a segment"),
    ("bad-verb", "/v1/{name}:can/cel", "not a verb"),
]


@pytest.mark.parametrize(("template", "problem"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_refused(template: str, problem: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(problem)):
        compile_template(template)
