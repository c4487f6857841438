"""The refusal summary: why calls are refused, in the operator's log, at most a line per interval."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.authn.principal import Principal
from gateway.errors import StatusCode
from gateway.observability.refusals import MAX_FIELD, RefusalSummary, refusal_reason
from gateway.outcome import CallOutcome
from gateway.profile import RequiredAccess
from gateway.testing.loop import LoopThread
from tests.support.calls import a_call
from tests.unit.authn_opaque.test_token_cache import make_token

CANCEL = "/google.longrunning.Operations/CancelOperation"
NAME = "projects/acme/locations/us/operations/o1"
PERMISSION = "contactcenterinsights.operations.cancel"


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def refused(
    reason: str,
    code: StatusCode = StatusCode.PERMISSION_DENIED,
    member: str | None = None,
    token: str | None = None,
    detail: str = "",
    resource: str = NAME,
) -> CallOutcome:
    metadata = [("authorization", f"Bearer {token}")] if token else []
    call = a_call(CANCEL, metadata)
    if member is not None:
        call.principal = Principal(member=member, issuer="https://idp.test", subject="s")
        call.access = RequiredAccess(PERMISSION, resource, "contactcenterinsights.googleapis.com")
    return CallOutcome(call, code, "refused", 0.001, detail, reason)


def ended(code: StatusCode, **set_on_call: Any) -> CallOutcome:
    call = a_call(CANCEL)
    for name, value in set_on_call.items():
        setattr(call, name, value)
    return CallOutcome(call, code, "", 0.001)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="opsgate.refusals")
    return caplog


def lines(logs: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in logs.records if r.name == "opsgate.refusals"]


def test_the_first_refusal_is_told_at_once_the_rest_once_per_interval(
    logs: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    summary = RefusalSummary(60.0, clock=clock)  # no event loop here: the next refusal tells

    summary.record(refused("IAM_PERMISSION_DENIED", member="user:ann@acme.test"))
    assert len(lines(logs)) == 1
    for second in range(1, 31):
        clock.now += 1
        reason = "ACCESS_TOKEN_EXPIRED" if second % 4 == 0 else "IAM_PERMISSION_DENIED"
        summary.record(refused(reason, StatusCode.UNAUTHENTICATED, detail="jwt: expired"))
    assert len(lines(logs)) == 1
    clock.now = 5060.0
    summary.record(refused("IAM_PERMISSION_DENIED", member="user:bob@acme.test"))

    assert lines(logs) == [
        "refused 1 call in the last 1s: 1 IAM_PERMISSION_DENIED (top: user:ann@acme.test, "
        f"{PERMISSION} on {NAME})",
        "refused 31 calls in the last 59s: 24 IAM_PERMISSION_DENIED (top 23: caller at "
        "127.0.0.1: jwt: expired), 7 ACCESS_TOKEN_EXPIRED (top: caller at 127.0.0.1: jwt: "
        "expired)",
    ]


def test_on_an_event_loop_the_interval_ends_the_summary_without_another_refusal(
    loop: LoopThread, logs: pytest.LogCaptureFixture
) -> None:
    summary = RefusalSummary(0.2)

    async def refusals_then_quiet() -> None:
        for _ in range(3):
            summary.record(refused("RATE_LIMIT_EXCEEDED", StatusCode.RESOURCE_EXHAUSTED))
        await asyncio.sleep(0.35)

    loop.run(refusals_then_quiet())
    assert [line.split(":")[0] for line in lines(logs)] == [
        "refused 1 call in the last 1s",
        "refused 2 calls in the last 1s",
    ]


def test_summary_names_reasons_by_count_and_never_a_token(logs: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    summary = RefusalSummary(60.0, clock=clock)
    summary.record(refused("CREDENTIALS_MISSING", StatusCode.UNAUTHENTICATED))
    tokens = [make_token() for _ in range(10)]
    for i, token in enumerate(tokens):
        member = "user:x@acme.test" if i < 7 else "user:y@acme.test"
        summary.record(refused("IAM_PERMISSION_DENIED", member=member, token=token))
    for token in tokens[:3]:
        summary.record(refused("JWT_TOKEN_INVALID", StatusCode.UNAUTHENTICATED, token=token))
    clock.now += 61
    summary.flush()

    line = lines(logs)[-1]
    assert line == (
        "refused 13 calls in the last 61s: 10 IAM_PERMISSION_DENIED (top 7: user:x@acme.test, "
        f"{PERMISSION} on {NAME}), 3 JWT_TOKEN_INVALID (top: caller at 127.0.0.1)"
    )
    for token in tokens:
        assert token not in line and token[5:25] not in line


@pytest.mark.parametrize(
    "outcome",
    [
        ended(StatusCode.OK),
        ended(StatusCode.CANCELLED),
        ended(StatusCode.DEADLINE_EXCEEDED),
        ended(StatusCode.NOT_FOUND, upstream_s=0.01),  # the upstream's answer, relayed
        ended(StatusCode.UNAVAILABLE, upstream_s=0.01),  # the upstream out of reach
        ended(
            StatusCode.FAILED_PRECONDITION,
            verdict=SimpleNamespace(decision=SimpleNamespace(allowed=True)),
        ),  # a library-mode servicer's own abort, after an allow
    ],
    ids=["ok", "cancelled", "deadline", "upstream-answer", "upstream-down", "servicer-abort"],
)
def test_what_is_not_a_refusal_is_not_counted(
    outcome: CallOutcome, logs: pytest.LogCaptureFixture
) -> None:
    summary = RefusalSummary(60.0, clock=Clock())
    summary.record(outcome)
    summary.flush()
    assert refusal_reason(outcome) is None
    assert lines(logs) == []


def test_a_method_nobody_serves_counts_by_its_code(logs: pytest.LogCaptureFixture) -> None:
    outcome = ended(StatusCode.UNIMPLEMENTED)
    assert refusal_reason(outcome) == "UNIMPLEMENTED"


def test_the_line_stays_bounded_whatever_callers_send(logs: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    summary = RefusalSummary(60.0, clock=clock)
    summary.record(refused("FIRST", member="user:a@acme.test"))  # told at once
    for i in range(500):
        summary.record(
            refused(
                f"REASON_{i % 100}",
                member=f"user:{'m' * 500}{i}@acme.test",
                resource=f"projects/acme/\n{'r' * 5000}{i}",
                detail="why " * 500,
            )
        )
    clock.now += 60
    summary.flush()

    line = lines(logs)[-1]
    assert "\n" not in line
    assert len(line) < 6 * 4 * MAX_FIELD + 200
    assert line.startswith("refused 500 calls in the last 60s: ")
    # 64 reasons are kept (5 calls each), the other 36 count as OTHER; six are shown.
    assert line.startswith("refused 500 calls in the last 60s: 180 OTHER, 5 REASON_0 (top 1: ")
    assert line.endswith(", 295 for 59 more reasons")
