"""Envoy's own answers to the calls the compiled filters refuse, in Google's shape as far as a
static answer goes: the code, the message, a google.rpc.Status with an ErrorInfo. Which check
refused is read from Envoy's response details, which name the refusing RBAC decision (its
dynamic metadata is written only after the answer is sent)."""

from __future__ import annotations

import base64

from gateway.envoy.compiled import decisions
from gateway.envoy.compiled.routes import ROUTE_HEADER, RouteEntry
from gateway.envoy.compiled.xds import Json
from gateway.errors import (
    InvalidArgument,
    PermissionDenied,
    RpcError,
    Unauthenticated,
    credentials_missing,
    scope_insufficient,
    token_invalid,
    unimplemented,
    without_google_help,
)

_CEL_FILTER = "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"
DENIED_DETAILS = "rbac_access_denied_matched_policy"  # RBAC's response details: NAME in [...]
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


def _details(condition: str) -> Json:
    """A CEL filter on the refusal (evaluated only for Envoy's own answers, never per call)."""
    return {
        "extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {"@type": _CEL_FILTER, "expression": condition},
        }
    }


def _refused_by(policy_id: str) -> str:
    """CEL: the RBAC decision named `policy_id` refused the call."""
    return f'response.code_details == "{DENIED_DETAILS}[{policy_id}]"'


def _header(name: str, *, present: bool) -> Json:
    return {
        "header_filter": {
            "header": {"name": name, "present_match": True, "invert_match": not present}
        }
    }


def _both(*filters: Json) -> Json:
    return {"and_filter": {"filters": list(filters)}}


def local_replies(
    routes: tuple[RouteEntry, ...], service: str, *, google_accepted: bool = True
) -> Json:
    """The connection manager's local_reply_config. A token another issuer verified is refused
    without Google's help link; one Envoy cannot tell the issuer of (none, or jwt_authn's own
    refusal) with it only where Google's tokens are accepted, as opsgate's doors answer."""
    missing = _both(_status_is(401), _header("authorization", present=False))
    unknown = token_invalid("")
    mappers = [
        _answer(missing, _worded(credentials_missing(""), google_accepted)),
        _answer(_status_is(401), _worded(unknown, google_accepted)),
        _answer(_details(_refused_by(decisions.INVALID_TOKEN)), _worded(unknown, google_accepted)),
        _answer(_details(_refused_by(decisions.INVALID_OTHER_TOKEN)), without_google_help(unknown)),
        _answer(_details(_refused_by(decisions.INSUFFICIENT_SCOPE)), scope_insufficient("")),
        _answer(_details(_refused_by(decisions.UNIMPLEMENTED)), unimplemented("")),
        _answer(
            _details(_refused_by(decisions.INVALID_NAME)),
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
        # A deny rule names the route in its id; no binding: the route is the call's header.
        rule = f"{DENIED_DETAILS}[{decisions.DENY_RULE}{entry.number}/"
        by_rule = f'response.code_details.startsWith("{rule}")'
        by_default = (
            f"{_refused_by(decisions.DEFAULT_DENY)} && "
            f'request.headers["{ROUTE_HEADER}"] == "{decisions.route_id(entry.number)}"'
        )
        mappers.append(_answer(_details(f"{by_rule} || ({by_default})"), denied))
    # Last: whatever else Envoy refuses on its own is the token's (fail closed).
    mappers.append(_answer(_status_is(403), _worded(unknown, google_accepted)))
    return {"mappers": mappers}


def _worded(error: Unauthenticated, google_accepted: bool) -> Unauthenticated:
    return error if google_accepted else without_google_help(error)
