"""The outermost stage: owns each call's state, answers failures, records every outcome."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from gateway.call import CallState, current_call
from gateway.errors import CallFailure, StatusCode, Unavailable
from gateway.headers import REQUEST_ID_KEY, Metadata, header_family
from gateway.interceptors.stage import Behavior, Continuation, Stage, grpc_code, rpc_code
from gateway.outcome import CallOutcome, OutcomeSink, cancellation_status
from gateway.tracecontext import TRACE_HEADERS

log = logging.getLogger("opsgate.chain")

UNIMPLEMENTED_MESSAGE = "Method not found."


def audit_unavailable() -> Unavailable:
    return Unavailable(
        "The service is currently unavailable.",
        reason="AUDIT_UNAVAILABLE",
        log_detail="the audit trail cannot take records (audit.on_failure: fail_closed)",
    )


INTERNAL_MESSAGE = "Internal error encountered."


class AuditStage(Stage):
    """Creates the CallState, answers CallFailures raised by inner stages, records the outcome.

    Calls to methods nobody serves (no handler) are answered UNIMPLEMENTED here, so they are
    recorded like any other call; `exempt` methods (health checks) bypass the chain entirely.
    """

    name = "audit"

    def __init__(
        self,
        applies: Callable[[str], bool],
        exempt: Callable[[str], bool],
        sink: OutcomeSink,
        admit: Callable[[], bool] = lambda: True,
    ) -> None:
        super().__init__(applies)
        self._exempt = exempt
        self._sink = sink
        self._admit = admit  # False while the audit trail cannot take records (fail_closed)
        self.in_flight = 0  # read by the metrics endpoint

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await super().intercept_service(continuation, handler_call_details)
        method: str = handler_call_details.method
        if handler is None and not self._exempt(method):
            return grpc.stream_stream_rpc_method_handler(self._unimplemented(method))
        return handler

    def wrap(self, behavior: Behavior, method: str) -> Behavior:
        sink, admit = self._sink, self._admit

        async def audited(request: Any, context: grpc.aio.ServicerContext) -> Any:
            call = _call_state(method, context)
            token = current_call.set(call)
            self.in_flight += 1
            code, message, detail, reason = StatusCode.OK, "", "", None
            request_id = (REQUEST_ID_KEY, call.request_id)
            answer: Metadata = ()  # the failure's trailing metadata
            try:
                if not admit():
                    raise audit_unavailable()
                response = await behavior(request, context)
                context.set_trailing_metadata(
                    _with_request_id(context.trailing_metadata(), request_id)
                )
                return response
            except CallFailure as failure:
                code, message = failure.code, failure.message
                detail, reason = failure.log_detail, getattr(failure, "reason", None)
                answer = _with_request_id(failure.trailing_metadata(), request_id)
            except asyncio.CancelledError:
                code, message = _cancellation(context, call)
                raise
            except grpc.aio.AbortError:
                # A library-mode servicer aborted on its own; its code is on the context.
                code, message = _aborted_status(context)
                raise
            except Exception:
                if _ended(context):
                    # The call was over (deadline or cancellation) when this went wrong, e.g. a
                    # relay or a servicer's clean-up failing on a finished call: that ending is
                    # the cause to record, and grpc is told so (no crash report).
                    code, message = _cancellation(context, call)
                    raise asyncio.CancelledError() from None
                log.exception("unexpected error in %s request_id=%s", method, call.request_id)
                code, message = StatusCode.INTERNAL, INTERNAL_MESSAGE
                answer = (request_id,)
            finally:
                # Recorded before the caller can see the answer: whoever reads the trail after
                # a call has returned finds its record submitted.
                self.in_flight -= 1
                latency = time.perf_counter() - call.started
                sink.record(CallOutcome(call, code, message, latency, detail, reason))
                current_call.reset(token)  # after recording, so log lines carry the request id
            await context.abort(grpc_code(code), message, answer)  # only failures get here

        return audited

    def _unimplemented(self, method: str) -> Callable[[Any, grpc.aio.ServicerContext], Any]:
        sink = self._sink

        async def unimplemented(request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
            call = _call_state(method, context)
            code, message = StatusCode.UNIMPLEMENTED, UNIMPLEMENTED_MESSAGE
            sink.record(CallOutcome(call, code, message, time.perf_counter() - call.started))
            await context.abort(grpc_code(code), message, ((REQUEST_ID_KEY, call.request_id),))

        return unimplemented


MAX_RECORDED_PATH = 200


def recorded_method(path: str) -> str:
    """The method as records and logs show it: cut at '?' (clients used to REST put tokens in
    query strings) and bounded in length."""
    return path.split("?", 1)[0][:MAX_RECORDED_PATH]


def _call_state(method: str, context: grpc.aio.ServicerContext) -> CallState:
    user_agent: str | None = None
    trace_headers: list[tuple[str, str]] = []
    for key, value in context.invocation_metadata() or ():
        if key == "user-agent" and user_agent is None and isinstance(value, str):
            user_agent = value
        elif key in TRACE_HEADERS and isinstance(value, str):
            trace_headers.append((key, value))
    return CallState(
        recorded_method(method),
        raw_peer=context.peer(),
        user_agent=user_agent,
        trace_headers=tuple(trace_headers),
    )


def _ended(context: grpc.aio.ServicerContext) -> bool:
    """The call was cancelled, or its deadline has passed."""
    remaining = context.time_remaining()
    return bool(context.cancelled()) or (remaining is not None and remaining <= 0)


def _cancellation(context: grpc.aio.ServicerContext, call: CallState) -> tuple[StatusCode, str]:
    return cancellation_status(context.time_remaining(), time.perf_counter() - call.started)


def _with_request_id(trailing: Any, request_id: tuple[str, str]) -> Metadata:
    """The answer's trailing metadata with the gateway's request id as its only one: an
    upstream's own x-request-id (in any spelling) would shadow the id the audit record has."""
    if not trailing:
        return (request_id,)
    kept = tuple(item for item in trailing if header_family(item[0]) != REQUEST_ID_KEY)
    return (*kept, request_id)


def _aborted_status(context: grpc.aio.ServicerContext) -> tuple[StatusCode, str]:
    code = context.code()
    if not isinstance(code, grpc.StatusCode):
        return StatusCode.UNKNOWN, context.details() or ""
    return rpc_code(code), context.details() or ""
