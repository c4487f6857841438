"""A record rendered from an earlier call's shape is byte for byte the record built afresh."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from gateway.audit.logentry import restamped, to_log_entry
from gateway.audit.recorder import AuditRecorder
from gateway.audit.sinks import MemorySink
from gateway.audit.writer import AuditWriter, serialize
from gateway.authn.principal import Principal
from gateway.authorizer import Authorizer, PolicyHolder
from gateway.errors import StatusCode
from gateway.outcome import CallOutcome
from gateway.policy.loader import load_policy
from gateway.profile import RequiredAccess
from tests.support.calls import a_call
from tests.support.stack import EXAMPLE_POLICY
from tests.unit.audit.builders import event

SERVICE = "contactcenterinsights.googleapis.com"
PREFIX = "/google.longrunning.Operations/"
NAMES = [
    "projects/acme-prod/locations/us/operations/1",
    "projects/acme-prod/locations/us/operations/2",
    "projects/acme-dev/locations/us/operations/3",
]
VERBS = {"GetOperation": "get", "ListOperations": "list", "CancelOperation": "cancel"}
ENDINGS = [
    (StatusCode.OK, "", None, ""),
    (StatusCode.PERMISSION_DENIED, "Permission denied.", "IAM_PERMISSION_DENIED", "by rule 2"),
    (StatusCode.NOT_FOUND, "gone", "UPSTREAM_STATUS", ""),
]


def _principal(email: str) -> Principal:
    return Principal(f"user:{email}", "https://idp", email, email=email, email_verified=True)


def test_shaped_records_are_the_records_built_afresh() -> None:
    policy = load_policy(EXAMPLE_POLICY)
    authorizer = Authorizer(PolicyHolder(policy), 64)
    recorder = AuditRecorder(
        AuditWriter(MemorySink()), service=SERVICE, project="fallback", policy_etag=lambda: "e1"
    )
    principals = [_principal("alice@acme.example"), _principal("bob@acme.example"), None]
    rng = random.Random(7)
    reused = 0
    try:
        for number in range(600):
            method = rng.choice([*VERBS, "Nope"])
            call = a_call(
                PREFIX + method,
                (("user-agent", rng.choice(["a/1", "b/2"])),)
                + (
                    (("traceparent", f"00-{number:032x}-{number:016x}-01"),)
                    if number % 9 == 0
                    else ()
                ),
                address=rng.choice(["ipv4:10.0.0.1:1", "ipv6:%5B::1%5D:2"]),
            )
            call.principal = rng.choice(principals)
            if method in VERBS and rng.random() < 0.9:
                name = rng.choice(NAMES)
                permission = f"contactcenterinsights.operations.{VERBS[method]}"
                call.resource_name = name
                call.access = RequiredAccess(permission, name, SERVICE)
                if call.principal is not None:
                    call.verdict = authorizer.decide(call.principal, permission, name)
            code, message, reason, detail = rng.choice(ENDINGS)
            outcome = CallOutcome(call, code, message, rng.random() / 10, detail, reason)
            etag = "e1" if call.verdict is None else None
            reused += call.verdict is not None and call.verdict.cached
            assert recorder._render((outcome, etag)) == serialize(recorder.event(outcome, etag))
    finally:
        recorder.writer.close(5)
    assert reused > 100  # the shaped path was taken, not only the fresh one


def test_restamped_changes_only_the_calls_own_id_and_times() -> None:
    first = event(request_id="r1", latency_s=0.5)
    second = event(
        request_id="r2", latency_s=0.02, received_at=datetime(2026, 1, 2, 3, 4, 5, 6, UTC)
    )
    template = to_log_entry(first)
    assert restamped(template, "r2", second.received_at, 0.02) == to_log_entry(second)
    assert template == to_log_entry(first)  # the template itself is left as it was
