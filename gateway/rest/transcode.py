"""JSON/HTTP ↔ protobuf for one call: the request from path, query and body; the answer as JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

# Imported so that Any fields (operation metadata, responses, error details) resolve by name.
from google.protobuf import (  # noqa: F401
    duration_pb2,
    empty_pb2,
    json_format,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from google.protobuf.descriptor import FieldDescriptor
from google.rpc import error_details_pb2, status_pb2  # noqa: F401

from gateway.errors import OpsgateError
from gateway.rest.anyjson import AnyRenderer, Rendered, is_repeated
from gateway.rest.routes import Matched

# Google's system parameters that do not bind request fields; accepted and ignored.
SYSTEM_PARAMETERS = frozenset({"alt", "$alt", "prettyPrint", "$.xgafv"})


class BadRequest(OpsgateError, ValueError):
    """The HTTP request cannot be turned into the method's request message (answered 400)."""

    reason = "REQUEST_INVALID"


def build_request(matched: Matched, query: Sequence[tuple[str, str]], body: bytes) -> bytes:
    """The serialized request: body fields (body "*"), then query fields, then path fields.

    Path variables always win, so the name the chain authorizes is the name in the URL. With
    body "*" every field not in the path comes from the body and the query binds nothing, as
    google.api.HttpRule says.
    """
    route = matched.route
    message = route.request_type()
    if route.rule.body == "*" and body.strip():
        try:
            json_format.Parse(body, message)
        except (json_format.ParseError, UnicodeDecodeError) as exc:
            raise BadRequest(f"Invalid JSON payload received. {exc}") from exc
    fields = _query_fields(query, message.DESCRIPTOR, matched, route.rule.body == "*")
    if fields:
        try:
            json_format.ParseDict(fields, message)
        except json_format.ParseError as exc:
            raise BadRequest(f"Invalid value in the query string. {exc}") from exc
    for field, value in matched.captures.items():
        setattr(message, field, value)
    serialized: bytes = message.SerializeToString()
    return serialized


def _query_fields(
    query: Sequence[tuple[str, str]], descriptor: Any, matched: Matched, body_takes_all: bool
) -> dict[str, Any]:
    by_name: dict[str, FieldDescriptor] = {}
    for spec in descriptor.fields:
        by_name[spec.name] = by_name[spec.json_name] = spec
    values: dict[str, list[str]] = {}
    for key, value in query:
        if key in SYSTEM_PARAMETERS:
            continue
        spec = by_name.get(key)
        if spec is None or body_takes_all or spec.name in matched.captures:
            raise BadRequest(
                f'Invalid JSON payload received. Unknown name "{_short(key)}": Cannot bind query '
                f"parameter. Field '{_short(key)}' could not be found in request message."
            )
        values.setdefault(spec.name, []).append(value)
    return {name: _scalar(by_name[name], found) for name, found in values.items()}


def _scalar(spec: FieldDescriptor, found: list[str]) -> Any:
    converted: list[Any] = found
    if spec.type == FieldDescriptor.TYPE_BOOL:
        # JSON wants true/false literals; a query string can only say "true" or "false".
        bools = {"true": True, "false": False}
        converted = [bools.get(value, value) for value in found]
    return converted if is_repeated(spec) else converted[0] if len(converted) == 1 else converted


def _short(text: str, limit: int = 100) -> str:
    shown = text.encode("unicode_escape").decode("ascii").replace('"', '\\"')
    return shown if len(shown) <= limit else shown[:limit] + "..."


def response_json(matched: Matched, answer: Any, renderer: AnyRenderer | None = None) -> Rendered:
    """The answer (bytes from the forwarder, or a message) as proto3 JSON, camelCase, its Any
    fields rendered by `renderer` (default: the default pool's types)."""
    message = answer
    if isinstance(answer, bytes):
        message = matched.route.response_type.FromString(answer)
    return (renderer or AnyRenderer()).render(message)


def json_text(body: Mapping[str, Any]) -> str:
    return json.dumps(body, indent=2)
