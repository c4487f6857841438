"""One record per call behind Envoy: refusals at once, allowed calls when Envoy reports the ending."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.envoy.completion import CompletionJoin, JoinKeys, ending_of, join_key_of
from gateway.envoy.protos import HTTPAccessLogEntry
from gateway.errors import StatusCode
from gateway.outcome import CallOutcome, MemorySink
from tests.support.calls import a_call

GET = "/google.longrunning.Operations/GetOperation"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def entry(
    *,
    http: int | None = 200,
    trailers: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    details: str = "via_upstream",
    duration_ms: int = 12,
    reset: bool = False,
) -> Any:
    logged = HTTPAccessLogEntry()
    if http is not None:
        logged.response.response_code.value = http
    logged.response.response_trailers.update(trailers or {})
    logged.response.response_headers.update(headers or {})
    logged.response.response_code_details = details
    common = logged.common_properties
    common.duration.nanos = duration_ms * 1_000_000
    common.time_to_first_upstream_tx_byte.nanos = 1_000_000
    common.time_to_last_upstream_rx_byte.nanos = 9_000_000
    common.response_flags.downstream_remote_reset = reset
    return logged


def joined(timeout_s: float = 30.0) -> tuple[CompletionJoin, MemorySink, Clock]:
    sink, clock = MemorySink(), Clock()
    return CompletionJoin(sink, timeout_s, lambda outcome: False, clock), sink, clock


def ok_outcome() -> CallOutcome:
    return CallOutcome(a_call(GET), StatusCode.OK, "", 0.001)


def test_a_refusal_is_recorded_at_once() -> None:
    join, sink, _ = joined()
    refused = CallOutcome(a_call(GET), StatusCode.PERMISSION_DENIED, "no", 0.001, reason="X")
    join.record(refused)
    assert sink.outcomes() == [refused]
    assert join.waiting == 0


def test_an_allowed_call_is_recorded_once_with_envoys_ending() -> None:
    join, sink, _ = joined()
    outcome = ok_outcome()
    join.record(outcome)
    assert sink.outcomes() == [] and join.waiting == 1 and not join.emptied.is_set()
    ended = entry(trailers={"grpc-status": "5", "grpc-message": "Operation%20gone"})
    call_id = outcome.call.request_id
    # A key naming the call but not made by this process (a caller knows its call id) ends
    # nothing; nor does the bare id.
    assert not join.complete(call_id, ended)
    assert not join.complete(JoinKeys().key(call_id), ended)
    assert not join.complete(f"{call_id}.{'0' * 32}", ended)
    assert sink.outcomes() == []
    key = join.keys.key(call_id)
    assert join.complete(key, ended)
    (recorded,) = sink.outcomes()
    assert recorded.call is outcome.call
    assert (recorded.code, recorded.message, recorded.reason) == (
        StatusCode.NOT_FOUND,
        "Operation gone",
        "UPSTREAM_STATUS",
    )
    assert recorded.latency_s == pytest.approx(0.012)
    assert recorded.call.upstream_s == pytest.approx(0.008)
    assert join.emptied.is_set()
    # The same ending again (a duplicate entry), or one for a call never parked: no second record.
    assert not join.complete(key, ended)
    assert not join.complete(join.keys.key("f" * 32), ended)
    assert len(sink.outcomes()) == 1 and join.unknown_ids == 5


def test_an_unreported_ending_is_written_when_due_and_marked() -> None:
    join, sink, clock = joined(timeout_s=30)
    first, second = ok_outcome(), ok_outcome()
    join.record(first)
    clock.now += 20
    join.record(second)
    clock.now += 10
    assert join.expire() == 1
    (recorded,) = sink.outcomes()
    assert recorded.call is first.call
    assert recorded.code is StatusCode.UNKNOWN
    assert recorded.reason == "COMPLETION_NOT_REPORTED"
    assert "30 s" in recorded.message
    # Its ending arriving late does not write it twice.
    assert not join.complete(join.keys.key(first.call.request_id), entry())
    assert join.flush() == 1
    assert [o.call for o in sink.outcomes()] == [first.call, second.call]
    assert sink.outcomes()[1].reason == "COMPLETION_NOT_REPORTED"
    assert join.waiting == 0 and join.not_reported == 2


def test_a_call_let_through_after_the_door_stopped_is_written_at_once_marked() -> None:
    """A check answered while the authorizer stops: nobody will report its ending now."""
    join, sink, _ = joined()
    join.flush()
    late = ok_outcome()
    join.record(late)
    (recorded,) = sink.outcomes()
    assert recorded.call is late.call and recorded.reason == "COMPLETION_NOT_REPORTED"
    assert join.waiting == 0 and join.not_reported == 1


@pytest.mark.parametrize(
    ("logged", "rest", "code", "reason"),
    [
        (entry(trailers={"grpc-status": "0"}), False, StatusCode.OK, None),
        (
            entry(headers={"grpc-status": "7"}),
            False,
            StatusCode.PERMISSION_DENIED,
            "UPSTREAM_STATUS",
        ),
        (
            entry(http=503, details="no_healthy_upstream"),
            False,
            StatusCode.UNAVAILABLE,
            "ENVOY_NO_HEALTHY_UPSTREAM",
        ),
        (
            entry(http=200, headers={}, details="upstream_reset_after_response_started{x}"),
            False,
            StatusCode.UNKNOWN,
            "ENVOY_UPSTREAM_RESET_AFTER_RESPONSE_STARTED",
        ),
        (entry(http=404), True, StatusCode.NOT_FOUND, "UPSTREAM_STATUS"),
        (entry(http=200), True, StatusCode.OK, None),
        (
            entry(http=None, details="", reset=True),
            False,
            StatusCode.CANCELLED,
            "ENVOY_LOCAL_REPLY",
        ),
        (entry(http=None, details=""), False, StatusCode.UNKNOWN, "ENVOY_LOCAL_REPLY"),
        (
            entry(trailers={"grpc-status": "99"}, http=502),
            False,
            StatusCode.UNAVAILABLE,
            "UPSTREAM_STATUS",
        ),
    ],
    ids=[
        "grpc-ok",
        "trailers-only-denied",
        "envoy-no-upstream",
        "grpc-without-status",
        "rest-404",
        "rest-200",
        "client-reset",
        "nothing-sent",
        "bogus-grpc-status",
    ],
)
def test_ending_of(logged: Any, rest: bool, code: StatusCode, reason: str | None) -> None:
    ending = ending_of(logged, rest)
    assert (ending.code, ending.reason) == (code, reason)


def test_call_id_only_from_the_authorizers_metadata() -> None:
    logged = HTTPAccessLogEntry()
    metadata = logged.common_properties.metadata.filter_metadata
    assert join_key_of(metadata, "envoy.filters.http.ext_authz", "opsgate_call_id") is None
    metadata["envoy.filters.http.ext_authz"].fields["opsgate_call_id"].number_value = 1
    assert join_key_of(metadata, "envoy.filters.http.ext_authz", "opsgate_call_id") is None
    metadata["envoy.filters.http.ext_authz"].fields["opsgate_call_id"].string_value = "abc"
    assert join_key_of(metadata, "envoy.filters.http.ext_authz", "opsgate_call_id") == "abc"
