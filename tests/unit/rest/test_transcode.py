"""Path, query and body → the method's serialized request; answers → proto3 JSON."""

from __future__ import annotations

import json

import pytest
from google.longrunning import operations_pb2
from google.protobuf import struct_pb2

from gateway.profile import load_profile
from gateway.rest.routes import Matched, RouteTable, WrongVerb
from gateway.rest.transcode import BadRequest, build_request, response_json

OP = "projects/p/locations/l/operations/o"
PARENT = "projects/p/locations/l"
ROUTES = RouteTable.from_profile(load_profile())


def _match(verb: str, path: str) -> Matched:
    found = ROUTES.match(verb, path)
    assert isinstance(found, Matched)
    return found


def test_routes_match_verb_and_path() -> None:
    assert _match("GET", f"/v1/{OP}").route.method.endswith("/GetOperation")
    assert _match("GET", f"/v1/{PARENT}/operations").route.method.endswith("/ListOperations")
    assert _match("POST", f"/v1/{OP}:cancel").route.method.endswith("/CancelOperation")
    assert ROUTES.match("DELETE", f"/v1/{OP}") == WrongVerb(("GET",))
    assert ROUTES.match("GET", f"/v1/{OP}:cancel") == WrongVerb(("POST",))
    assert ROUTES.match("GET", "/v1/projects/p") is None


def test_get_request_from_the_path() -> None:
    raw = build_request(_match("GET", f"/v1/{OP}"), [], b"")
    assert operations_pb2.GetOperationRequest.FromString(raw) == operations_pb2.GetOperationRequest(
        name=OP
    )


@pytest.mark.parametrize(
    "query",
    [
        [("filter", "done=true"), ("pageSize", "2"), ("pageToken", "abc")],
        [("filter", "done=true"), ("page_size", "2"), ("page_token", "abc")],
        [("filter", "done=true"), ("pageSize", "2"), ("pageToken", "abc"), ("alt", "json")],
    ],
    ids=["camelCase", "snake_case", "system-parameter-ignored"],
)
def test_list_request_from_path_and_query(query: list[tuple[str, str]]) -> None:
    raw = build_request(_match("GET", f"/v1/{PARENT}/operations"), query, b"")
    assert operations_pb2.ListOperationsRequest.FromString(raw) == (
        operations_pb2.ListOperationsRequest(
            name=PARENT, filter="done=true", page_size=2, page_token="abc"
        )
    )


def test_bool_query_parameter() -> None:
    raw = build_request(
        _match("GET", f"/v1/{PARENT}/operations"), [("returnPartialSuccess", "true")], b""
    )
    assert operations_pb2.ListOperationsRequest.FromString(raw).return_partial_success


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ([("pageSize", "abc")], "Invalid value in the query string"),
        ([("pageSize", "1"), ("pageSize", "2")], "Invalid value in the query string"),
        ([("nope", "1")], 'Unknown name "nope"'),
        ([("name", "projects/other/locations/l")], 'Unknown name "name"'),
        ([("access_token", "t")], 'Unknown name "access_token"'),
    ],
    ids=["not-a-number", "repeated-singular", "unknown", "path-bound", "token-in-url"],
)
def test_bad_query_is_a_bad_request(query: list[tuple[str, str]], problem: str) -> None:
    with pytest.raises(BadRequest, match=problem):
        build_request(_match("GET", f"/v1/{PARENT}/operations"), query, b"")


@pytest.mark.parametrize("body", [b"", b"{}", b" {} ", json.dumps({"name": "x"}).encode()])
def test_cancel_body_star_and_the_path_wins(body: bytes) -> None:
    raw = build_request(_match("POST", f"/v1/{OP}:cancel"), [], body)
    assert operations_pb2.CancelOperationRequest.FromString(raw).name == OP


@pytest.mark.parametrize(
    ("query", "body", "problem"),
    [
        ([], b"{", "Invalid JSON payload"),
        ([], b'{"unknown": 1}', "Invalid JSON payload"),
        ([], b"\xff", "Invalid JSON payload"),
        ([("filter", "x")], b"{}", 'Unknown name "filter"'),
    ],
    ids=["not-json", "unknown-field", "not-utf8", "query-with-body-star"],
)
def test_bad_cancel_body(query: list[tuple[str, str]], body: bytes, problem: str) -> None:
    with pytest.raises(BadRequest, match=problem):
        build_request(_match("POST", f"/v1/{OP}:cancel"), query, body)


def test_answers_are_proto3_json_with_any_resolved() -> None:
    metadata = struct_pb2.Struct()
    metadata.update({"verb": "create"})
    operation = operations_pb2.Operation(name=OP, done=True)
    operation.metadata.Pack(metadata)
    rendered = response_json(_match("GET", f"/v1/{OP}"), operation.SerializeToString())
    assert rendered.unresolved == ()
    text = rendered.text
    assert json.loads(text) == {
        "name": OP,
        "done": True,
        "metadata": {
            "@type": "type.googleapis.com/google.protobuf.Struct",
            "value": {"verb": "create"},
        },
    }
    listing = operations_pb2.ListOperationsResponse(next_page_token="t")
    assert json.loads(
        response_json(_match("GET", f"/v1/{PARENT}/operations"), listing.SerializeToString()).text
    ) == {"nextPageToken": "t"}
    assert json.loads(response_json(_match("POST", f"/v1/{OP}:cancel"), b"").text) == {}
