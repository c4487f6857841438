"""The plain runner every door hands its calls to: stages in order, one outcome per call."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.call import Call
from gateway.errors import CallFailure, InvalidArgument, StatusCode
from gateway.outcome import MemorySink
from gateway.stages.audit import INTERNAL_MESSAGE, UNIMPLEMENTED_MESSAGE, AuditStage
from gateway.stages.base import CheckStage, Step
from gateway.stages.chain import CHAIN_ORDER, Runner
from tests.support.calls import a_call

GET = "/google.longrunning.Operations/GetOperation"


class Noting(CheckStage):
    """A check that notes each call it sees (waiting first when `waits`), or refuses them."""

    def __init__(self, name: str, log: list[str], *, waits: bool = False, refuse: bool = False):
        super().__init__(lambda method: method == GET)
        self.name = name  # type: ignore[misc]
        self._log, self._waits, self._refuse = log, waits, refuse
        self.prepared: list[str] = []

    def prepare(self, method: str) -> Step:
        self.prepared.append(method)

        def noted(call: Call) -> None:
            self._log.append(self.name)
            if self._refuse:
                raise InvalidArgument(f"{self.name} refuses", reason="REFUSED_HERE")

        async def waited(call: Call) -> None:
            await asyncio.sleep(0)
            noted(call)

        return waited if self._waits else noted


def _runner(log: list[str], sink: MemorySink, **refusing: bool) -> tuple[Runner, list[Noting]]:
    checks = [
        Noting(name, log, waits=name == "authn", refuse=refusing.get(name, False))
        for name in CHAIN_ORDER[1:]
    ]
    return Runner(AuditStage(sink), checks), checks


def _handler(log: list[str], result: Any = b"answer") -> Any:
    async def handle(call: Call) -> Any:
        log.append("handler")
        if isinstance(result, BaseException):
            raise result
        return result

    return handle


def _run(runner: Runner, call: Call, handler: Any) -> Any:
    return asyncio.run(runner.run(call, runner.steps(GET), handler))


def test_the_checks_run_in_chain_order_then_the_handler_and_are_prepared_once() -> None:
    log: list[str] = []
    sink = MemorySink()
    runner, checks = _runner(log, sink)
    for _ in range(3):
        assert _run(runner, a_call(GET), _handler(log)) == b"answer"
    assert log == [*CHAIN_ORDER[1:], "handler"] * 3
    assert all(check.prepared == [GET] for check in checks)
    assert [o.code for o in sink.outcomes()] == [StatusCode.OK] * 3
    assert runner.in_flight == 0


def test_a_refusing_check_stops_the_call_before_the_handler_and_is_recorded() -> None:
    log: list[str] = []
    sink = MemorySink()
    runner, _ = _runner(log, sink, ratelimit=True)
    with pytest.raises(InvalidArgument):
        _run(runner, a_call(GET), _handler(log))
    assert log == ["authn", "ratelimit"]
    (outcome,) = sink.outcomes()
    assert (outcome.code, outcome.message, outcome.reason) == (
        StatusCode.INVALID_ARGUMENT,
        "ratelimit refuses",
        "REFUSED_HERE",
    )


def test_an_unexpected_error_is_answered_internal_and_recorded() -> None:
    sink = MemorySink()
    runner, _ = _runner([], sink)
    with pytest.raises(CallFailure) as raised:
        _run(runner, a_call(GET), _handler([], RuntimeError("boom")))
    assert (raised.value.code, raised.value.message) == (StatusCode.INTERNAL, INTERNAL_MESSAGE)
    assert [(o.code, o.message) for o in sink.outcomes()] == [
        (StatusCode.INTERNAL, INTERNAL_MESSAGE)
    ]


@pytest.mark.parametrize(
    ("remaining", "expected"),
    [
        (None, StatusCode.CANCELLED),
        (30.0, StatusCode.CANCELLED),
        (0.0, StatusCode.DEADLINE_EXCEEDED),
    ],
    ids=["no-deadline", "time-left", "deadline-passed"],
)
def test_a_cancelled_call_is_recorded_by_its_cause(
    remaining: float | None, expected: StatusCode
) -> None:
    sink = MemorySink()
    runner, _ = _runner([], sink)
    with pytest.raises(asyncio.CancelledError):
        _run(runner, a_call(GET, remaining=remaining), _handler([], asyncio.CancelledError()))
    assert [o.code for o in sink.outcomes()] == [expected]


def test_an_error_after_the_call_ended_is_recorded_as_its_ending_not_internal() -> None:
    sink = MemorySink()
    runner, _ = _runner([], sink)
    with pytest.raises(asyncio.CancelledError):
        _run(runner, a_call(GET, gone=True), _handler([], RuntimeError("relay on a dead call")))
    assert [o.code for o in sink.outcomes()] == [StatusCode.CANCELLED]


def test_an_audit_trail_that_cannot_take_records_refuses_every_call() -> None:
    log: list[str] = []
    sink = MemorySink()
    checks = [Noting(name, log) for name in CHAIN_ORDER[1:]]
    runner = Runner(AuditStage(sink, admit=lambda: False), checks)
    with pytest.raises(CallFailure) as raised:
        _run(runner, a_call(GET), _handler(log))
    assert raised.value.code is StatusCode.UNAVAILABLE
    assert log == []  # nothing ran: the call is refused before any stage sees it
    assert [o.reason for o in sink.outcomes()] == ["AUDIT_UNAVAILABLE"]


def test_a_method_nobody_serves_is_recorded_unimplemented() -> None:
    sink = MemorySink()
    runner, _ = _runner([], sink)
    failure = runner.not_found(a_call("/nobody.Serves/This"))
    assert (failure.code, failure.message) == (StatusCode.UNIMPLEMENTED, UNIMPLEMENTED_MESSAGE)
    assert [(o.call.method, o.code) for o in sink.outcomes()] == [
        ("/nobody.Serves/This", StatusCode.UNIMPLEMENTED)
    ]


def test_stages_out_of_chain_order_are_refused() -> None:
    checks = [Noting(name, []) for name in reversed(CHAIN_ORDER[1:])]
    with pytest.raises(ValueError, match="CHAIN_ORDER"):
        Runner(AuditStage(MemorySink()), checks)
