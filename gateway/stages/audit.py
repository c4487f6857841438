"""The outermost stage: turns every ending of a call into one recorded outcome."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gateway.call import Call, current_call
from gateway.errors import (
    INTERNAL_MESSAGE,
    UNIMPLEMENTED_MESSAGE,
    CallFailure,
    StatusCode,
    audit_unavailable,
)
from gateway.outcome import CallOutcome, OutcomeSink, cancellation_status
from gateway.stages.base import Step

log = logging.getLogger("opsgate.chain")

T = TypeVar("T")


class UnexpectedFailure(CallFailure):
    """A call that failed in a way no stage or handler meant: answered INTERNAL, logged here."""

    code = StatusCode.INTERNAL
    message = INTERNAL_MESSAGE
    reason = "INTERNAL"


class MethodNotFound(CallFailure):
    """A call to a method nobody serves: answered UNIMPLEMENTED, and recorded like any other."""

    code = StatusCode.UNIMPLEMENTED
    message = UNIMPLEMENTED_MESSAGE
    reason = "METHOD_NOT_IMPLEMENTED"


class AuditStage:
    """Records one outcome per call, whatever happens, before the door answers the caller.

    Whatever ends the call reaches the door as one of three things: the handler's answer, a
    CallFailure to answer with (an unexpected exception becomes UnexpectedFailure), or
    asyncio.CancelledError when the caller went away or its deadline passed.
    """

    name = "audit"

    def __init__(
        self,
        sink: OutcomeSink,
        admit: Callable[[], bool] = lambda: True,
        started: Callable[[Call], None] = lambda call: None,
    ) -> None:
        self._sink = sink
        self._admit = admit  # False while the audit trail cannot take records (fail_closed)
        self._started = started  # told of every call as it starts (grpc_server_started_total)
        self.in_flight = 0  # read by the metrics endpoint

    async def run(
        self, call: Call, steps: tuple[Step, ...], handler: Callable[[Call], Awaitable[T]]
    ) -> T:
        """The checks' `steps` in order, then the door's `handler`, under this call's record."""
        self._started(call)
        token = current_call.set(call)
        self.in_flight += 1
        code, message, detail, reason = StatusCode.OK, "", "", None
        try:
            if not self._admit():
                raise audit_unavailable()
            for step in steps:
                waiting = step(call)
                if waiting is not None:
                    await waiting
            return await handler(call)
        except CallFailure as failure:
            code, message = failure.code, failure.message
            detail, reason = failure.log_detail, failure.reason
            raise
        except asyncio.CancelledError:
            code, message = _cancellation(call)
            raise
        except Exception as exc:
            if _ended(call):
                # The call was over (deadline or cancellation) when this went wrong, e.g. a
                # relay or a servicer's clean-up failing on a finished call: that ending is
                # the cause to record, and the door is told so (no crash report).
                code, message = _cancellation(call)
                raise asyncio.CancelledError() from None
            log.exception("unexpected error in %s request_id=%s", call.method, call.request_id)
            unexpected = UnexpectedFailure(INTERNAL_MESSAGE)
            code, message, reason = unexpected.code, unexpected.message, unexpected.reason
            raise unexpected from exc
        finally:
            # Recorded before the caller can see the answer: whoever reads the trail after
            # a call has returned finds its record submitted.
            self.in_flight -= 1
            latency = time.perf_counter() - call.started
            self._sink.record(CallOutcome(call, code, message, latency, detail, reason))
            current_call.reset(token)  # after recording, so log lines carry the request id

    def not_found(self, call: Call) -> MethodNotFound:
        """Record a call to a method nobody serves; the door answers with what this returns."""
        failure = MethodNotFound(UNIMPLEMENTED_MESSAGE)
        self._started(call)
        latency = time.perf_counter() - call.started
        self._sink.record(CallOutcome(call, failure.code, failure.message, latency))
        return failure


def _ended(call: Call) -> bool:
    """The call was cancelled, or its deadline has passed."""
    transport = call.transport
    remaining = transport.time_remaining()
    return bool(transport.cancelled()) or (remaining is not None and remaining <= 0)


def _cancellation(call: Call) -> tuple[StatusCode, str]:
    remaining = call.transport.time_remaining()
    return cancellation_status(remaining, time.perf_counter() - call.started)
