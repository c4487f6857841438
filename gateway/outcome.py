"""What became of one call, as the outermost stage hands it to the record keeper."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Protocol

from gateway.call import Call
from gateway.errors import CANCELLED_MESSAGE, DEADLINE_MESSAGE, StatusCode


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """The final status of one call and how long the gateway held it."""

    call: Call
    code: StatusCode  # the google.rpc code; the door maps it to its own status
    message: str
    latency_s: float
    detail: str = ""  # why, in our words (RpcError.log_detail); never token material
    # Why the call failed, as a machine code: the ErrorInfo reason the caller was given (an
    # upstream's own, relayed), or the failure's own (UPSTREAM_STATUS, INTERNAL); None if OK.
    reason: str | None = None


# A client that gives up at its deadline resets the stream, and the reset can reach the gateway
# while its own copy of that deadline still shows time left: the copy starts when the call's
# headers arrive, and grpc-timeout is sent rounded up (to the ms below 1 s, to 10 ms below 10 s,
# ...: under 1% of the deadline). Transit cancels out (the copy starts one transit late, the
# reset arrives one transit late) but not its jitter and scheduling delays: up to ~45 ms was
# measured with a hundred concurrent calls on this 2-core class of machine. So a cancellation
# within 0.1 s plus 1% of the deadline is the deadline's doing; a client cancelling that close
# to its deadline cannot be told apart from one whose deadline fired.
DEADLINE_TOLERANCE_S = 0.1
DEADLINE_TOLERANCE_SHARE = 0.01


def cancellation_status(remaining: float | None, elapsed: float) -> tuple[StatusCode, str]:
    """How to record a call cancelled with `remaining` seconds of its deadline left (None: it
    had none) after `elapsed` seconds: DEADLINE_EXCEEDED if the deadline was the cause."""
    if remaining is not None:
        budget = elapsed + max(remaining, 0.0)
        if remaining <= DEADLINE_TOLERANCE_S + DEADLINE_TOLERANCE_SHARE * budget:
            return StatusCode.DEADLINE_EXCEEDED, DEADLINE_MESSAGE
    return StatusCode.CANCELLED, CANCELLED_MESSAGE


class OutcomeSink(Protocol):
    """Receives every call's outcome exactly once; must not block."""

    def record(self, outcome: CallOutcome) -> None: ...


class AccessLogSink:
    """Writes one operational log line per call (at DEBUG: the audit trail is the record)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger("opsgate.access")

    def record(self, outcome: CallOutcome) -> None:
        if not self._logger.isEnabledFor(logging.DEBUG):
            return
        call = outcome.call
        self._logger.debug(
            "%s %s %s -> %s (%.1f ms) request_id=%s%s",
            call.principal.member if call.principal is not None else "-",
            call.method,
            call.resource_name if call.resource_name is not None else "-",
            outcome.code.name,
            outcome.latency_s * 1000,
            call.request_id,
            f" detail={outcome.detail!r}" if outcome.detail else "",
        )


class MemorySink:
    """Keeps every outcome in memory (thread-safe): for the demo, tests and library users."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outcomes: list[CallOutcome] = []

    def record(self, outcome: CallOutcome) -> None:
        with self._lock:
            self._outcomes.append(outcome)

    def outcomes(self) -> list[CallOutcome]:
        with self._lock:
            return list(self._outcomes)


class FanOutSink:
    """Hands every outcome to each of several sinks, in order."""

    def __init__(self, *sinks: OutcomeSink) -> None:
        self._sinks = sinks

    def record(self, outcome: CallOutcome) -> None:
        for sink in self._sinks:
            sink.record(outcome)
