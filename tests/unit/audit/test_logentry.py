"""AuditEvent -> LogEntry: Cloud Audit Logs shape, log names, severities, what is left out."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any

import pytest

from gateway.audit.event import AuditEvent
from gateway.audit.logentry import SEVERITY, to_log_entry
from tests.unit.audit.builders import (
    ALLOWED_GET,
    CANCEL,
    DELETE,
    GET,
    LIST,
    OPERATION,
    SERVICE,
    WAIT,
    denied,
    event,
    unauthenticated,
)


def test_an_allowed_read_is_a_complete_data_access_record() -> None:
    assert to_log_entry(ALLOWED_GET) == {
        "logName": "projects/acme-prod/logs/cloudaudit.googleapis.com%2Fdata_access",
        "resource": {
            "type": "audited_resource",
            "labels": {
                "service": SERVICE,
                "method": "google.longrunning.Operations.GetOperation",
                "project_id": "acme-prod",
            },
        },
        "timestamp": "2024-05-01T12:30:45.123456Z",
        "receiveTimestamp": "2024-05-01T12:30:45.135802Z",
        "insertId": "5f0c6a1e9b2d4c7f8a3e1d2c4b5a6978",
        "severity": "INFO",
        "trace": "projects/acme-prod/traces/4bf92f3577b34da6a3ce929d0e0e4736",
        "spanId": "00f067aa0ba902b7",
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "serviceName": SERVICE,
            "methodName": "google.longrunning.Operations.GetOperation",
            "resourceName": OPERATION,
            "authenticationInfo": {
                "principalEmail": "alice@acme.example",
                "principalSubject": "principal://goog/subject/alice@acme.example",
            },
            "authorizationInfo": [
                {
                    "resource": OPERATION,
                    "permission": "contactcenterinsights.operations.get",
                    "granted": True,
                    "permissionType": "ADMIN_READ",
                    "resourceAttributes": {"service": SERVICE, "name": OPERATION},
                }
            ],
            "requestMetadata": {
                "callerIp": "10.1.2.3",
                "callerSuppliedUserAgent": "grpc-python/1.66.1 grpc-c/43.0.0 (linux; chttp2)",
            },
            "status": {},
            "metadata": {
                "requestId": "5f0c6a1e9b2d4c7f8a3e1d2c4b5a6978",
                "latencyMs": 12.346,
                "principalMember": "user:alice@acme.example",
                "tokenKind": "jwt",
                "decision": {
                    "granted": True,
                    "reason": "granted by roles/contactcenterinsights.viewer on projects/acme-prod",
                    "cached": False,
                    "policyEtag": "BwXhqGkPX1E=",
                    "trace": [
                        {
                            "kind": "binding",
                            "resource": "projects/acme-prod",
                            "role": "roles/contactcenterinsights.viewer",
                            "member": "group:support@acme.example",
                            "viaGroup": "group:tier2@acme.example",
                            "condition": None,
                            "conditionResult": "absent",
                            "sourceLine": 12,
                            "outcome": "granted",
                        }
                    ],
                },
            },
        },
    }


@pytest.mark.parametrize(
    ("source", "severity"),
    [
        (event(method=GET), "INFO"),
        (event(method=LIST), "INFO"),
        (event(method=WAIT), "INFO"),
        (event(method=CANCEL), "NOTICE"),
        (event(method=DELETE), "NOTICE"),
        (denied(), "WARNING"),
        (denied(method=CANCEL), "WARNING"),
        (unauthenticated(), "WARNING"),
        (event(status_code=3, status_message="bad request body"), "WARNING"),
        (event(status_code=5, status_message="Operation not found."), "WARNING"),
        (event(method="/foo.Bar/Baz", status_code=12, status_message="Method not found."), "WARNING"),
        (event(status_code=1, status_message="Cancelled by the client."), "WARNING"),
        (event(status_code=14, status_message="The service is currently unavailable."), "ERROR"),
        (event(status_code=13, status_message="Internal error encountered."), "ERROR"),
        (event(status_code=2), "ERROR"),
        (event(status_code=4, status_message="Deadline exceeded."), "ERROR"),
        (event(status_code=15), "ERROR"),
        (event(method=CANCEL, status_code=14), "ERROR"),
        (event(status_code=99), "ERROR"),
    ],
    ids=[
        "get-ok", "list-ok", "wait-ok", "cancel-ok", "delete-ok", "get-denied", "cancel-denied",
        "unauthenticated", "invalid-argument", "not-found", "unimplemented", "cancelled",
        "unavailable", "internal", "unknown", "deadline", "data-loss", "cancel-unavailable",
        "unknown-code",
    ],
)  # fmt: skip
def test_severity(source: AuditEvent, severity: str) -> None:
    assert to_log_entry(source)["severity"] == severity


def test_the_severity_table_covers_every_google_rpc_code() -> None:
    assert sorted(SEVERITY) == list(range(17))


@pytest.mark.parametrize(
    ("method", "log"),
    [
        (GET, "data_access"),
        (LIST, "data_access"),
        (WAIT, "data_access"),
        (CANCEL, "activity"),
        (DELETE, "activity"),
        ("/foo.Bar/Baz", "data_access"),
    ],
    ids=["get", "list", "wait", "cancel", "delete", "unknown-method"],
)
def test_log_name_by_method(method: str, log: str) -> None:
    entry = to_log_entry(event(method=method))
    assert entry["logName"] == f"projects/acme-prod/logs/cloudaudit.googleapis.com%2F{log}"
    assert entry["protoPayload"]["methodName"] == method[1:].replace("/", ".")
    assert entry["resource"]["labels"]["method"] == method[1:].replace("/", ".")


@pytest.mark.parametrize(
    ("resource_name", "project"),
    [
        (OPERATION, "acme-prod"),
        ("projects/acme-prod/locations/us-central1", "acme-prod"),
        ("projects/123456789012/locations/l/operations/o", "123456789012"),
        ("projects/example.com:team-x/locations/l/operations/o", "example.com:team-x"),
        (None, "opsgate-audit"),
        ("", "opsgate-audit"),
        ("operations/op-1", "opsgate-audit"),
        ("projects//locations/l/operations/o", "opsgate-audit"),
        ("projects/a b%2Fc/locations/l", "opsgate-audit"),
        ("PROJECTS/p/locations/l", "opsgate-audit"),
    ],
    ids=[
        "operation", "parent", "project-number", "domain-scoped", "no-name", "empty-name",
        "no-project", "empty-project", "invalid-project-chars", "wrong-collection",
    ],
)  # fmt: skip
def test_project_comes_from_the_name_else_the_fallback(
    resource_name: str | None, project: str
) -> None:
    entry = to_log_entry(event(resource_name=resource_name))
    assert entry["logName"].startswith(f"projects/{project}/logs/")
    assert entry["resource"]["labels"]["project_id"] == project


def test_a_denial_reports_the_check_status_and_reason() -> None:
    payload = to_log_entry(
        denied(method=CANCEL, permission="contactcenterinsights.operations.cancel")
    )["protoPayload"]
    assert payload["authorizationInfo"] == [
        {
            "resource": OPERATION,
            "permission": "contactcenterinsights.operations.cancel",
            "granted": False,
            "permissionType": "ADMIN_WRITE",
            "resourceAttributes": {"service": SERVICE, "name": OPERATION},
        }
    ]
    assert payload["status"] == {"code": 7, "message": denied().status_message}
    assert payload["metadata"]["reason"] == "IAM_PERMISSION_DENIED"
    assert payload["metadata"]["decision"]["granted"] is False


@pytest.mark.parametrize(
    ("permission", "method", "kind"),
    [
        ("contactcenterinsights.operations.get", GET, "ADMIN_READ"),
        ("contactcenterinsights.operations.list", LIST, "ADMIN_READ"),
        ("contactcenterinsights.authorizedOperations.get", GET, "ADMIN_READ"),
        ("speech.operations.get", WAIT, "ADMIN_READ"),
        ("contactcenterinsights.operations.cancel", CANCEL, "ADMIN_WRITE"),
        ("contactcenterinsights.authorizedOperations.cancel", CANCEL, "ADMIN_WRITE"),
        ("custom.operations.delete", DELETE, "ADMIN_WRITE"),
        ("custom.operations.purge", DELETE, "ADMIN_WRITE"),
        ("custom.operations.peek", GET, "ADMIN_READ"),
    ],
    ids=[
        "get", "list", "authorized-get", "wait-routed-to-get", "cancel", "authorized-cancel",
        "delete", "unknown-verb-on-write", "unknown-verb-on-read",
    ],
)  # fmt: skip
def test_permission_type(permission: str, method: str, kind: str) -> None:
    [check] = to_log_entry(event(permission=permission, method=method))["protoPayload"][
        "authorizationInfo"
    ]
    assert check["permissionType"] == kind


@pytest.mark.parametrize(
    "source",
    [
        unauthenticated(),
        event(permission=None, granted=None, status_code=3, status_message="bad body"),
        event(granted=None, status_code=14, detail="policy evaluation failed"),
    ],
    ids=["unauthenticated", "not-routed", "routed-but-not-decided"],
)
def test_no_decision_means_no_authorization_info_and_no_decision(source: AuditEvent) -> None:
    payload = to_log_entry(source)["protoPayload"]
    assert payload["authorizationInfo"] == []
    assert "decision" not in payload["metadata"]


def test_an_unauthenticated_call_has_empty_authentication_info_and_its_reason() -> None:
    payload = to_log_entry(unauthenticated())["protoPayload"]
    assert payload["authenticationInfo"] == {}
    assert payload["status"] == {"code": 16, "message": unauthenticated().status_message}
    assert payload["metadata"]["reason"] == "ACCESS_TOKEN_EXPIRED"
    assert payload["metadata"]["detail"].startswith("token expired")
    assert "principalMember" not in payload["metadata"]


def test_a_non_email_principal_has_only_a_subject() -> None:
    subject = "principal://idp.acme.example/subject/svc-7"
    payload = to_log_entry(event(principal_email=None, principal_subject=subject))["protoPayload"]
    assert payload["authenticationInfo"] == {"principalSubject": subject}


def test_optional_parts_are_left_out_when_absent() -> None:
    entry = to_log_entry(
        event(
            trace=None,
            span_id=None,
            caller_ip=None,
            user_agent=None,
            resource_name=None,
            policy_etag=None,
            decision_reason=None,
        )
    )
    assert "trace" not in entry
    assert "spanId" not in entry
    payload = entry["protoPayload"]
    assert "resourceName" not in payload
    assert payload["requestMetadata"] == {}
    assert set(payload["metadata"]) == {
        "requestId",
        "latencyMs",
        "principalMember",
        "tokenKind",
        "decision",
    }
    assert set(payload["metadata"]["decision"]) == {"granted", "cached", "trace"}


def test_shadow_decision_is_recorded_only_when_present() -> None:
    shadow = {"granted": False, "policy_etag": "new", "trace": ({"kind": "deny_rule"},)}
    payload = to_log_entry(event(shadow_decision=shadow))["protoPayload"]
    assert payload["metadata"]["shadowDecision"] == {
        "granted": False,
        "policyEtag": "new",
        "trace": [{"kind": "deny_rule"}],
    }
    assert "shadowDecision" not in to_log_entry(ALLOWED_GET)["protoPayload"]["metadata"]


def test_times_are_utc_with_microseconds_and_receive_time_is_the_end_of_the_call() -> None:
    tokyo = timezone(timedelta(hours=9))
    entry = to_log_entry(
        event(received_at=datetime(2024, 5, 1, 21, 0, 0, tzinfo=tokyo), latency_s=1.5)
    )
    assert entry["timestamp"] == "2024-05-01T12:00:00.000000Z"
    assert entry["receiveTimestamp"] == "2024-05-01T12:00:01.500000Z"
    assert entry["protoPayload"]["metadata"]["latencyMs"] == 1500.0


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        event(received_at=datetime(2024, 5, 1, 12, 0, 0))


class _Outcome(Enum):
    GRANTED = "granted"


def test_values_that_are_not_json_are_written_as_text_deterministically() -> None:
    when = datetime(2024, 5, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    odd = event(
        decision_trace=({"outcome": _Outcome.GRANTED, "at": when, "groups": frozenset("ba")},)
    )
    [step] = to_log_entry(odd)["protoPayload"]["metadata"]["decision"]["trace"]
    assert step == {"outcome": "granted", "at": "2024-05-01T00:00:00.000000Z", "groups": ["a", "b"]}
    assert json.dumps(to_log_entry(odd), sort_keys=True) == json.dumps(
        to_log_entry(odd), sort_keys=True
    )


_CAMEL = re.compile(r"@?[a-z][A-Za-z0-9]*")


def _keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [k for key, item in value.items() for k in [key, *_keys(item)]]
    if isinstance(value, list):
        return [k for item in value for k in _keys(item)]
    return []


@pytest.mark.parametrize(
    "source",
    [ALLOWED_GET, denied(), unauthenticated(), event(shadow_decision={"policy_etag": "x"})],
    ids=["allowed", "denied", "unauthenticated", "shadow"],
)
def test_every_key_is_camel_case_and_the_entry_is_plain_json(source: AuditEvent) -> None:
    entry = to_log_entry(source)
    assert json.loads(json.dumps(entry, sort_keys=True)) == entry
    # audited_resource's label name is Google's own spelling.
    assert [key for key in _keys(entry) if not _CAMEL.fullmatch(key)] == ["project_id"]
