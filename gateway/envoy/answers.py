"""What the authorizer answers Envoy: let the call through with the gateway's headers, or refuse it
with exactly the status, message and details opsgate's own door would have answered."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gateway.call import Call
from gateway.envoy.protos import CheckResponse
from gateway.envoy.settings import CALL_ID_KEY
from gateway.errors import STATUS_DETAILS_KEY, CallFailure
from gateway.headers import REQUEST_ID_KEY, GatewayHeaders
from gateway.rest.status import failure_answer
from gateway.upstream.forwarder import header_safe

OVERWRITE_IF_EXISTS_OR_ADD = 2  # envoy.config.core.v3.HeaderValueOption.HeaderAppendAction
CREDENTIAL_HEADER = "authorization"
GRPC_CONTENT_TYPE = "application/grpc"


class Answers:
    """Builds the CheckResponse for one configured gateway (its identity header, whether the
    caller's credential travels on). Both answers carry the gateway's request id."""

    def __init__(
        self,
        *,
        identity_header: str | None,
        forward_authorization: bool,
        join_key: Callable[[str], str] = str,
    ) -> None:
        self._join_key = join_key  # the call id -> what Envoy logs to end its record
        self._identity_header = identity_header.lower() if identity_header else None
        self._removed = _removals(GatewayHeaders(identity_header).smuggled, forward_authorization)

    def allowed(self, call: Call, caller_headers: Iterable[str]) -> Any:
        """Let the call through: every caller copy of a header the gateway sets (and the
        credential, unless forwarded) removed, the verified identity set, the call id handed to
        Envoy for the access-log entry that will end the call's record."""
        response = CheckResponse()
        ok = response.ok_response
        identity = self._identity_header
        principal = call.principal
        setting_identity = identity is not None and principal is not None
        removed = self._removed
        ok.headers_to_remove.extend(
            key
            for key in caller_headers
            if removed(key) and not (setting_identity and key == identity)
        )
        if setting_identity and principal is not None and identity is not None:
            _set(ok.headers.add(), identity, header_safe(principal.member))
        _set(ok.response_headers_to_add.add(), REQUEST_ID_KEY, call.request_id)
        response.dynamic_metadata.fields[CALL_ID_KEY].string_value = self._join_key(call.request_id)
        return response

    def refused(self, call: Call, failure: CallFailure, rest: bool) -> Any:
        """Refuse the call as opsgate's own door would: a gRPC status in headers (a
        trailers-only answer, which Envoy relays as is), or Google's JSON error for REST."""
        response = CheckResponse()
        response.status.code = int(failure.code)
        denied = response.denied_response
        if rest:
            status, headers, body = failure_answer(failure)
            denied.status.code = status
            denied.body = json.dumps(body, indent=2)
            headers = {**headers, "content-type": "application/json; charset=utf-8"}
        else:
            denied.status.code = 200
            headers = _grpc_status_headers(failure)
        headers[REQUEST_ID_KEY] = call.request_id
        for key, value in headers.items():
            _set(denied.headers.add(), key.lower(), value)
        return response


def _grpc_status_headers(failure: CallFailure) -> dict[str, str]:
    headers = {
        "content-type": GRPC_CONTENT_TYPE,
        "grpc-status": str(int(failure.code)),
        "grpc-message": header_safe(failure.message),
    }
    for key, value in failure.trailing_metadata():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            # gRPC's binary headers travel base64-encoded, unpadded.
            headers[key] = base64.b64encode(value).decode("ascii").rstrip("=")
    return headers


def _set(option: Any, key: str, value: str) -> None:
    option.header.key = key
    option.header.value = value
    option.append_action = OVERWRITE_IF_EXISTS_OR_ADD


def _removals(
    smuggled: Callable[[str], bool], forward_authorization: bool
) -> Callable[[str], bool]:
    def removed(key: str) -> bool:
        if key == CREDENTIAL_HEADER:
            return not forward_authorization
        return not key.startswith(":") and smuggled(key)

    return removed


def caller_header_names(headers: Mapping[str, str]) -> Iterable[str]:
    """The caller's header names in a Check's header map (Envoy's pseudo-headers left out)."""
    return (key for key in headers if not key.startswith(":"))
