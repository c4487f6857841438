"""What became of one call, as the outermost stage hands it to the record keeper."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Protocol

import grpc

from gateway.interceptors.call import CallState


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """The final status of one call and how long the gateway held it."""

    call: CallState
    code: grpc.StatusCode
    message: str
    latency_s: float
    detail: str = ""  # why, in our words (RpcError.log_detail); never token material
    reason: str | None = None  # the ErrorInfo reason the caller was given, if any


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
