"""Realistic AuditEvents for the audit tests: one allowed read, changed field by field."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

from gateway.audit.event import AuditEvent
from gateway.audit.logentry import to_log_entry

SERVICE = "contactcenterinsights.googleapis.com"
OPS = "/google.longrunning.Operations/"
GET, LIST, WAIT = OPS + "GetOperation", OPS + "ListOperations", OPS + "WaitOperation"
CANCEL, DELETE = OPS + "CancelOperation", OPS + "DeleteOperation"
OPERATION = "projects/acme-prod/locations/us-central1/operations/op-123"
DENIED_MESSAGE = (
    "Permission 'contactcenterinsights.operations.get' denied on resource "
    f"'{OPERATION}' (or it may not exist)."
)

ALLOWED_GET = AuditEvent(
    request_id="5f0c6a1e9b2d4c7f8a3e1d2c4b5a6978",
    received_at=datetime(2024, 5, 1, 12, 30, 45, 123456, tzinfo=UTC),
    latency_s=0.0123456,
    method=GET,
    resource_name=OPERATION,
    permission="contactcenterinsights.operations.get",
    service=SERVICE,
    granted=True,
    principal_email="alice@acme.example",
    principal_subject="principal://goog/subject/alice@acme.example",
    principal_member="user:alice@acme.example",
    token_kind="jwt",
    caller_ip="10.1.2.3",
    user_agent="grpc-python/1.66.1 grpc-c/43.0.0 (linux; chttp2)",
    status_code=0,
    status_message="",
    reason=None,
    detail="",
    decision_trace=(
        {
            "kind": "binding",
            "resource": "projects/acme-prod",
            "role": "roles/contactcenterinsights.viewer",
            "member": "group:support@acme.example",
            "via_group": "group:tier2@acme.example",
            "condition": None,
            "condition_result": "absent",
            "source_line": 12,
            "outcome": "granted",
        },
    ),
    decision_reason="granted by roles/contactcenterinsights.viewer on projects/acme-prod",
    decision_cached=False,
    policy_etag="BwXhqGkPX1E=",
    shadow_decision=None,
    trace="projects/acme-prod/traces/4bf92f3577b34da6a3ce929d0e0e4736",
    span_id="00f067aa0ba902b7",
    project_fallback="opsgate-audit",
)


def event(**changes: Any) -> AuditEvent:
    return dataclasses.replace(ALLOWED_GET, **changes)


def denied(**changes: Any) -> AuditEvent:
    return event(
        **{
            "granted": False,
            "status_code": 7,
            "status_message": DENIED_MESSAGE,
            "reason": "IAM_PERMISSION_DENIED",
            "decision_reason": "no binding grants contactcenterinsights.operations.get",
            "decision_trace": (),
            **changes,
        }
    )


def unauthenticated(**changes: Any) -> AuditEvent:
    return event(
        **{
            "permission": None,
            "granted": None,
            "principal_email": None,
            "principal_subject": None,
            "principal_member": None,
            "token_kind": None,
            "decision_trace": (),
            "decision_reason": None,
            "policy_etag": None,
            "status_code": 16,
            "status_message": "Request had invalid authentication credentials.",
            "reason": "ACCESS_TOKEN_EXPIRED",
            "detail": "token expired 42s ago (exp 2024-05-01T12:30:03Z, skew 30s)",
            **changes,
        }
    )


def record(source: AuditEvent | None = None, **changes: Any) -> dict[str, Any]:
    """The record as read back from a file: serialized and parsed, like the query tools see it."""
    entry = to_log_entry(source if source is not None else event(**changes))
    parsed: dict[str, Any] = json.loads(json.dumps(entry))
    return parsed
