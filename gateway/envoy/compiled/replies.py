"""Envoy's own answers to the calls the compiled filters refuse, in Google's shape as far as a
static answer goes: the code, the message, a google.rpc.Status with an ErrorInfo. Which check
refused is read from the id of the last RBAC filter that passed the call (Envoy writes a
refusing filter's own id only after its answer is sent)."""

from __future__ import annotations

import base64

from gateway.envoy.compiled import decisions
from gateway.envoy.compiled.checks import SCOPE_PASSED, TOKEN_PASSED, routed_methods
from gateway.envoy.compiled.policy_filters import DENY_PASSED
from gateway.envoy.compiled.routes import POLICY_ID_KEY, RBAC_NAMESPACE, ROUTE_HEADER, RouteEntry
from gateway.envoy.compiled.xds import Json
from gateway.errors import (
    InvalidArgument,
    PermissionDenied,
    RpcError,
    credentials_missing,
    scope_insufficient,
    token_invalid,
    unimplemented,
)

RESOURCE_NAME_MESSAGE = "Invalid resource name: it matches none of the method's resource patterns."


def _status(error: RpcError) -> str:
    return base64.b64encode(error.to_status().SerializeToString()).decode("ascii")


def _answer(where: Json, error: RpcError) -> Json:
    return {
        "filter": where,
        "headers_to_add": [
            {
                "header": {"key": "grpc-status", "value": str(int(error.code))},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            },
            {
                "header": {"key": "grpc-status-details-bin", "value": _status(error)},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            },
        ],
        "body_format_override": {"text_format_source": {"inline_string": error.message}},
    }


def _status_is(code: int) -> Json:
    return {
        "status_code_filter": {
            "comparison": {"op": "EQ", "value": {"default_value": code, "runtime_key": "unused"}}
        }
    }


def _passed(policy_id: str) -> Json:
    """The last RBAC filter that passed the call said `policy_id`."""
    return {
        "metadata_filter": {
            "matcher": {
                "filter": RBAC_NAMESPACE,
                "path": [{"key": POLICY_ID_KEY}],
                "value": {"string_match": {"exact": policy_id}},
            },
            "match_if_key_not_found": False,
        }
    }


def _header(name: str, *, present: bool) -> Json:
    return {
        "header_filter": {
            "header": {"name": name, "present_match": True, "invert_match": not present}
        }
    }


def _both(*filters: Json) -> Json:
    return {"and_filter": {"filters": list(filters)}}


def local_replies(routes: tuple[RouteEntry, ...], service: str) -> Json:
    """The connection manager's local_reply_config."""
    routed = {"name": ":path", "string_match": {"safe_regex": {"regex": routed_methods(routes)}}}
    mappers = [
        _answer(
            _both(_status_is(401), _header("authorization", present=False)), credentials_missing("")
        ),
        _answer(_status_is(401), token_invalid("")),
        _answer(_passed(TOKEN_PASSED), scope_insufficient("")),
        _answer(
            _both(
                _passed(SCOPE_PASSED),
                {"header_filter": {"header": {**routed, "invert_match": True}}},
            ),
            unimplemented(""),
        ),
        _answer(
            _passed(SCOPE_PASSED),
            InvalidArgument(RESOURCE_NAME_MESSAGE, reason="RESOURCE_NAME_INVALID", domain=service),
        ),
    ]
    for entry in routes:
        permission = entry.route.permission
        denied = PermissionDenied(
            f"Permission '{permission}' denied on the resource the call names "
            "(or it may not exist).",
            reason="IAM_PERMISSION_DENIED",
            domain=service,
            metadata={"permission": permission},
        )
        # Refused by a deny rule (the route filter passed it last), or by no binding (the
        # deny filter did, and the route is in the request's header).
        mappers.append(_answer(_passed(decisions.route_id(entry.number)), denied))
        route = {"name": ROUTE_HEADER, "string_match": {"exact": decisions.route_id(entry.number)}}
        bindings = _both(_passed(DENY_PASSED), {"header_filter": {"header": route}})
        mappers.append(_answer(bindings, denied))
    # Last: a refusal no filter passed before is the token filter's own.
    mappers.append(_answer(_status_is(403), token_invalid("")))
    return {"mappers": mappers}
