"""google.rpc code → HTTP status and Google's JSON error body, as Google's REST APIs answer."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

# Imported so that the Any details the gateway and upstreams send resolve in the default pool.
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from gateway.errors import STATUS_DETAILS_KEY, CallFailure, StatusCode

log = logging.getLogger("opsgate.rest")

# google/rpc/code.proto gives each code its HTTP mapping; google.api_core.exceptions agrees.
HTTP_STATUS: dict[StatusCode, int] = {
    StatusCode.OK: 200,
    StatusCode.CANCELLED: 499,
    StatusCode.UNKNOWN: 500,
    StatusCode.INVALID_ARGUMENT: 400,
    StatusCode.DEADLINE_EXCEEDED: 504,
    StatusCode.NOT_FOUND: 404,
    StatusCode.ALREADY_EXISTS: 409,
    StatusCode.PERMISSION_DENIED: 403,
    StatusCode.UNAUTHENTICATED: 401,
    StatusCode.RESOURCE_EXHAUSTED: 429,
    StatusCode.FAILED_PRECONDITION: 400,
    StatusCode.ABORTED: 409,
    StatusCode.OUT_OF_RANGE: 400,
    StatusCode.UNIMPLEMENTED: 501,
    StatusCode.INTERNAL: 500,
    StatusCode.UNAVAILABLE: 503,
    StatusCode.DATA_LOSS: 500,
}


def http_status(code: StatusCode) -> int:
    return HTTP_STATUS.get(code, 500)


def failure_answer(failure: CallFailure) -> tuple[int, dict[str, str], dict[str, Any]]:
    """The HTTP status, headers and JSON body a Google REST frontend answers a failed call with
    (the REST door's, and Envoy's for the REST calls it transcodes)."""
    code = failure.code
    details = status_details(failure.trailing_metadata())
    headers: dict[str, str] = {}
    delay = retry_after(details)
    if delay is not None:
        headers["Retry-After"] = delay
    if code is StatusCode.UNAUTHENTICATED:
        headers["WWW-Authenticate"] = 'Bearer realm="opsgate"'  # RFC 6750 3
    return http_status(code), headers, error_body(code, failure.message, details)


def status_details(trailing: Iterable[tuple[str, str | bytes]] | None) -> status_pb2.Status | None:
    """The google.rpc.Status in grpc-status-details-bin, or None if absent or unreadable."""
    for key, value in trailing or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                log.warning("unreadable %s in a call's trailing metadata", STATUS_DETAILS_KEY)
    return None


def error_body(
    code: StatusCode, message: str, details: status_pb2.Status | None = None
) -> dict[str, Any]:
    """`{"error": {"code", "message", "status"[, "details"]}}`, details as proto3 JSON."""
    error: dict[str, Any] = {"code": http_status(code), "message": message, "status": code.name}
    rendered = [_detail(any_detail) for any_detail in details.details] if details else []
    if any(rendered):
        error["details"] = [detail for detail in rendered if detail]
    return {"error": error}


def _detail(any_detail: Any) -> dict[str, Any] | None:
    try:
        rendered: dict[str, Any] = json_format.MessageToDict(any_detail)
    except (TypeError, json_format.Error):
        # A detail type this process does not know: Google's own frontends drop those too.
        log.debug("dropped an error detail of unknown type %s", any_detail.type_url)
        return None
    return rendered


def retry_after(details: status_pb2.Status | None) -> str | None:
    """A RetryInfo delay as a Retry-After header value (whole seconds, rounded up)."""
    for any_detail in details.details if details else ():
        info = error_details_pb2.RetryInfo()
        if any_detail.Unpack(info):
            return str(max(1, math.ceil(info.retry_delay.ToTimedelta().total_seconds())))
    return None
