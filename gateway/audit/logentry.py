"""AuditEvent -> Cloud Logging LogEntry (JSON, camelCase) whose protoPayload is an AuditLog."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from google.rpc import code_pb2

from gateway.audit.event import AuditEvent

AUDIT_LOG_TYPE = "type.googleapis.com/google.cloud.audit.AuditLog"
DATA_ACCESS_LOG = "cloudaudit.googleapis.com%2Fdata_access"
ACTIVITY_LOG = "cloudaudit.googleapis.com%2Factivity"

# Methods that change state. Google writes these to the Admin Activity log; every other method,
# including ones nobody serves (answered UNIMPLEMENTED), is a read and goes to Data Access.
_WRITE_METHODS = frozenset(
    {
        "/google.longrunning.Operations/CancelOperation",
        "/google.longrunning.Operations/DeleteOperation",
    }
)

_CLIENT_ERROR = ("WARNING", "WARNING")
_SERVER_ERROR = ("ERROR", "ERROR")

# google.rpc code -> (severity of a read, severity of a write). The one place severities live.
# Client errors (the caller's token, permission, request or cancellation) are WARNINGs; failures
# of the gateway or the upstream are ERRORs, so alerting on ERROR means "we are broken".
SEVERITY: Mapping[int, tuple[str, str]] = {
    code_pb2.OK: ("INFO", "NOTICE"),
    code_pb2.CANCELLED: _CLIENT_ERROR,
    code_pb2.UNKNOWN: _SERVER_ERROR,
    code_pb2.INVALID_ARGUMENT: _CLIENT_ERROR,
    code_pb2.DEADLINE_EXCEEDED: _SERVER_ERROR,
    code_pb2.NOT_FOUND: _CLIENT_ERROR,
    code_pb2.ALREADY_EXISTS: _CLIENT_ERROR,
    code_pb2.PERMISSION_DENIED: _CLIENT_ERROR,
    code_pb2.RESOURCE_EXHAUSTED: _CLIENT_ERROR,
    code_pb2.FAILED_PRECONDITION: _CLIENT_ERROR,
    code_pb2.ABORTED: _CLIENT_ERROR,
    code_pb2.OUT_OF_RANGE: _CLIENT_ERROR,
    code_pb2.UNIMPLEMENTED: _CLIENT_ERROR,
    code_pb2.INTERNAL: _SERVER_ERROR,
    code_pb2.UNAVAILABLE: _SERVER_ERROR,
    code_pb2.DATA_LOSS: _SERVER_ERROR,
    code_pb2.UNAUTHENTICATED: _CLIENT_ERROR,
}

# The verb of a permission ("contactcenterinsights.operations.cancel" -> "cancel") says what
# the check guarded; a custom profile may route any method to any permission.
_PERMISSION_TYPE_BY_VERB: Mapping[str, str] = {
    "get": "ADMIN_READ",
    "list": "ADMIN_READ",
    "wait": "ADMIN_READ",
    "cancel": "ADMIN_WRITE",
    "delete": "ADMIN_WRITE",
}

# Project ids, numbers and domain-scoped ids ("example.com:proj"). Anything else in the name's
# project position is not trusted into logName, which must stay a valid log name.
_PROJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:_-]{0,127}")


def to_log_entry(event: AuditEvent) -> dict[str, Any]:
    """The LogEntry for one call, as JSON-ready data with Google's camelCase keys."""
    is_write = event.method in _WRITE_METHODS
    project = project_of(event.resource_name) or event.project_fallback
    method_name = method_name_of(event.method)
    received = event.received_at.astimezone(UTC)
    entry: dict[str, Any] = {
        "logName": f"projects/{project}/logs/{ACTIVITY_LOG if is_write else DATA_ACCESS_LOG}",
        "resource": {
            "type": "audited_resource",
            "labels": {"service": event.service, "method": method_name, "project_id": project},
        },
        "timestamp": _rfc3339(received),
        # When the record was produced: the end of the call.
        "receiveTimestamp": _rfc3339(received + timedelta(seconds=max(event.latency_s, 0.0))),
        "insertId": event.request_id,
        "severity": severity_of(event.status_code, is_write=is_write),
        "protoPayload": _audit_log(event, method_name, is_write),
    }
    if event.trace:
        entry["trace"] = event.trace
    if event.span_id:
        entry["spanId"] = event.span_id
    return entry


def restamped(
    entry: Mapping[str, Any], request_id: str, received_at: datetime, latency_s: float
) -> dict[str, Any]:
    """`entry` (another call's LogEntry) with this call's id, times and latency: the whole
    LogEntry of a call that differs from that one in nothing else. The entry is not changed."""
    received = received_at.astimezone(UTC)
    payload = dict(entry["protoPayload"])
    metadata = payload["metadata"] = dict(payload["metadata"])
    metadata["requestId"] = request_id
    metadata["latencyMs"] = round(latency_s * 1000, 3)
    restamped = dict(entry)
    restamped["protoPayload"] = payload
    restamped["insertId"] = request_id
    restamped["timestamp"] = _rfc3339(received)
    restamped["receiveTimestamp"] = _rfc3339(received + timedelta(seconds=max(latency_s, 0.0)))
    return restamped


def severity_of(code: int, *, is_write: bool) -> str:
    """The LogEntry severity for a call that ended with `code`; unknown codes are ERRORs."""
    read, write = SEVERITY.get(code, _SERVER_ERROR)
    return write if is_write else read


def project_of(resource_name: str | None) -> str | None:
    """P from "projects/P/...", or None when the name does not start with a valid project."""
    if not resource_name:
        return None
    parts = resource_name.split("/", 2)
    if len(parts) >= 2 and parts[0] == "projects" and _PROJECT.fullmatch(parts[1]):
        return parts[1]
    return None


def method_name_of(method: str) -> str:
    """The AuditLog methodName of a gRPC path: "/pkg.Service/Method" -> "pkg.Service.Method"."""
    return method.lstrip("/").replace("/", ".")


def _audit_log(event: AuditEvent, method_name: str, is_write: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "@type": AUDIT_LOG_TYPE,
        "serviceName": event.service,
        "methodName": method_name,
        "authenticationInfo": _without_empty(
            {
                "principalEmail": event.principal_email,
                "principalSubject": event.principal_subject,
                "thirdPartyPrincipal": event.third_party_principal,
            }
        ),
        "authorizationInfo": _authorization_info(event, is_write),
        "requestMetadata": _without_empty(
            {"callerIp": event.caller_ip, "callerSuppliedUserAgent": event.user_agent}
        ),
        # Google leaves status empty on success; details are not copied: code and message only.
        "status": (
            {}
            if event.status_code == code_pb2.OK
            else _without_empty({"code": event.status_code, "message": event.status_message})
        ),
        "metadata": _metadata(event),
    }
    if event.resource_name is not None:
        payload["resourceName"] = event.resource_name
    return payload


# Parts of a record that many records share (the same caller, permission and resource, a cached
# decision), built once: each memo is keyed by every value its part is made of, and cleared when
# full (callers choose names, so they stay bounded).
_MEMO_SIZE = 4096
_authorizations: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
_decisions: dict[tuple[Any, ...], dict[str, Any]] = {}


def _authorization_info(event: AuditEvent, is_write: bool) -> list[dict[str, Any]]:
    # Only a check that was made is reported: an unauthenticated or unrouted call checked nothing.
    if event.permission is None or event.granted is None:
        return []
    key = (
        event.resource_name,
        event.policy_resource,
        event.permission,
        event.granted,
        event.service,
        is_write,
    )
    found = _authorizations.get(key)
    if found is None:
        if len(_authorizations) >= _MEMO_SIZE:
            _authorizations.clear()
        found = _authorizations[key] = _check_made(event, is_write)
    return found


def _check_made(event: AuditEvent, is_write: bool) -> list[dict[str, Any]]:
    assert event.permission is not None
    verb = event.permission.rsplit(".", 1)[-1]
    fallback = "ADMIN_WRITE" if is_write else "ADMIN_READ"
    return [
        {
            # What was checked, by the name the policy knows it by; resourceName keeps the
            # name as the caller sent it.
            "resource": event.policy_resource or event.resource_name or "",
            "permission": event.permission,
            "granted": event.granted,
            "permissionType": _PERMISSION_TYPE_BY_VERB.get(verb, fallback),
            "resourceAttributes": _without_empty(
                {"service": event.service, "name": event.resource_name}
            ),
        }
    ]


def _metadata(event: AuditEvent) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "requestId": event.request_id,
        "latencyMs": round(event.latency_s * 1000, 3),
    }
    # Who, in IAM's member syntax, and how they proved it: AuthenticationInfo has no field for
    # either, and auditors filter on the member ("user:...", "principal://...").
    if event.principal_member:
        metadata["principalMember"] = event.principal_member
    if event.token_kind:
        metadata["tokenKind"] = event.token_kind
    if event.granted is not None:
        metadata["decision"] = _decision(event)
    if event.shadow_decision is not None:
        metadata["shadowDecision"] = _plain(event.shadow_decision)
    if event.reason:
        metadata["reason"] = event.reason
    if event.detail:
        metadata["detail"] = event.detail
    return metadata


def _decision(event: AuditEvent) -> dict[str, Any]:
    key = (
        event.granted,
        event.decision_reason,
        event.decision_cached,
        event.policy_etag,
        event.decision_trace,  # JsonReady steps hash by identity: the recorder shares them
    )
    try:
        found = _decisions.get(key)
    except TypeError:  # a trace of plain dicts (not from the recorder): built every time
        return _decision_of(event)
    if found is None:
        if len(_decisions) >= _MEMO_SIZE:
            _decisions.clear()
        found = _decisions[key] = _decision_of(event)
    return found


def _decision_of(event: AuditEvent) -> dict[str, Any]:
    return _without_none(
        {
            "granted": event.granted,
            "reason": event.decision_reason,
            "cached": event.decision_cached,
            "trace": [_plain(step) for step in event.decision_trace],
            "policyEtag": event.policy_etag,
        }
    )


def _rfc3339(moment: datetime) -> str:
    """UTC `moment` as 2026-11-25T15:25:13.810311Z (microseconds always written)."""
    return moment.isoformat(timespec="microseconds")[:26] + "Z"


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _without_empty(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None and value != ""}


class JsonReady(dict[str, Any]):
    """A mapping already in the record's shape (camelCase keys, JSON values): written as it is.

    What the recorder converts once and shares among records (a trace entry every cached
    decision repeats) is marked so, and not walked again for each record. It hashes by
    identity, so the parts built from it can be memoized (an equal copy is only a miss).
    """

    __hash__ = object.__hash__  # type: ignore[assignment]


def json_ready(value: Mapping[str, Any]) -> JsonReady:
    """`value` converted to the record's shape once (see _plain), and marked so."""
    return JsonReady(_plain(value))


def _plain(value: Any) -> Any:
    """JSON-ready data with camelCase keys, whatever the trace producer handed over.

    The writer serializes on the event loop and must never raise, so anything that is not
    already JSON data (an Enum, a datetime) is written as its string rather than refused.
    """
    if value.__class__ is JsonReady:
        return value
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {_camel(str(key)): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | frozenset | set):
        items = [_plain(item) for item in value]
        # Sets have no order; sort their rendering so the same event gives the same bytes.
        return items if isinstance(value, list | tuple) else sorted(items, key=repr)
    if isinstance(value, datetime):
        return _rfc3339(value.astimezone(UTC))
    return str(getattr(value, "value", value))


@functools.lru_cache(maxsize=512)
def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)
