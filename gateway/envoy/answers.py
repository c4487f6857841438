"""What the authorizer answers Envoy, whichever ext_authz protocol asked: let the call through with
the gateway's headers, or refuse it with exactly what opsgate's own door would have answered.

The answers are protocol-neutral values; the gRPC Check (door.py) and the HTTP check
(http_check.py) each render them in their own terms.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from gateway.call import Call
from gateway.errors import STATUS_DETAILS_KEY, CallFailure, StatusCode
from gateway.headers import REQUEST_ID_KEY, GatewayHeaders
from gateway.rest.status import failure_answer
from gateway.rest.transcode import json_text
from gateway.upstream.forwarder import header_safe

CREDENTIAL_HEADER = "authorization"
GRPC_CONTENT_TYPE = "application/grpc"
JSON_CONTENT_TYPE = "application/json; charset=utf-8"
Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Allow:
    """Let the call through: headers Envoy sets on (and removes from) the upstream request, the
    headers for the caller's answer, and the key that will join Envoy's access-log entry."""

    upstream_set: Headers
    upstream_removed: tuple[str, ...]
    to_caller: Headers
    join_key: str


@dataclass(frozen=True, slots=True)
class Refuse:
    """Refuse the call: the status, headers and body Envoy answers the caller with."""

    code: StatusCode
    http_status: int
    headers: Headers
    body: str


class Answers:
    """Builds the answers for one configured gateway (its identity header, whether the caller's
    credential travels on). Both answers carry the gateway's request id."""

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

    def allowed(self, call: Call, caller_headers: Iterable[str]) -> Allow:
        """Every caller copy of a header the gateway sets (and the credential, unless
        forwarded) removed, the verified identity set, the call's join key handed to Envoy."""
        identity = self._identity_header
        principal = call.principal
        setting = identity is not None and principal is not None
        removed = self._removed
        upstream_removed = tuple(
            key for key in caller_headers if removed(key) and not (setting and key == identity)
        )
        upstream_set: Headers = ()
        if identity is not None and principal is not None:
            upstream_set = ((identity, header_safe(principal.member)),)
        return Allow(
            upstream_set,
            upstream_removed,
            ((REQUEST_ID_KEY, call.request_id),),
            self._join_key(call.request_id),
        )

    def refused(self, call: Call, failure: CallFailure, rest: bool) -> Refuse:
        """As opsgate's own door would: a gRPC status in headers (a trailers-only answer, which
        Envoy relays as is), or Google's JSON error for REST."""
        if rest:
            status, extra, body = failure_answer(failure)
            headers = {key.lower(): value for key, value in extra.items()}
            headers["content-type"] = JSON_CONTENT_TYPE
            text = json_text(body)  # as the REST door writes it
        else:
            status, headers, text = 200, _grpc_status_headers(failure), ""
        headers[REQUEST_ID_KEY] = call.request_id
        return Refuse(failure.code, status, tuple(headers.items()), text)


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


def _removals(
    smuggled: Callable[[str], bool], forward_authorization: bool
) -> Callable[[str], bool]:
    def removed(key: str) -> bool:
        if key == CREDENTIAL_HEADER:
            return not forward_authorization
        return not key.startswith(":") and smuggled(key)

    return removed


def caller_header_names(headers: Mapping[str, str]) -> Iterable[str]:
    """The caller's header names in a check's header map (Envoy's pseudo-headers left out)."""
    return (key for key in headers if not key.startswith(":"))
