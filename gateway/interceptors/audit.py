"""The outermost stage: owns each call's state, answers failures, records every outcome."""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import grpc

from gateway.errors import CallFailure, Unavailable
from gateway.interceptors.call import CallState, current_call
from gateway.interceptors.outcome import CallOutcome, OutcomeSink
from gateway.interceptors.stage import Behavior, Continuation, Stage
from gateway.tracecontext import trace_of

log = logging.getLogger("opsgate.chain")

UNIMPLEMENTED_MESSAGE = "Method not found."
REQUEST_ID_KEY = "x-request-id"  # the one trailing key the gateway adds to what it relays


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
            code, message, detail, reason = grpc.StatusCode.OK, "", "", None
            request_id = (REQUEST_ID_KEY, call.request_id)
            try:
                if not admit():
                    raise audit_unavailable()
                response = await behavior(request, context)
                context.set_trailing_metadata((*(context.trailing_metadata() or ()), request_id))
                return response
            except CallFailure as failure:
                code, message = failure.code, failure.message
                detail, reason = failure.log_detail, getattr(failure, "reason", None)
                await context.abort(code, message, (*failure.trailing_metadata(), request_id))
            except asyncio.CancelledError:
                code, message = _cancellation(context)
                raise
            except grpc.aio.AbortError:
                # A library-mode servicer aborted on its own; its code is on the context.
                code, message = _aborted_status(context)
                raise
            except Exception:
                log.exception("unexpected error in %s request_id=%s", method, call.request_id)
                code, message = grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
                await context.abort(code, message, (request_id,))
            finally:
                self.in_flight -= 1
                latency = time.perf_counter() - call.started
                sink.record(CallOutcome(call, code, message, latency, detail, reason))
                current_call.reset(token)  # after recording, so log lines carry the request id

        return audited

    def _unimplemented(self, method: str) -> Callable[[Any, grpc.aio.ServicerContext], Any]:
        sink = self._sink

        async def unimplemented(request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
            call = _call_state(method, context)
            code, message = grpc.StatusCode.UNIMPLEMENTED, UNIMPLEMENTED_MESSAGE
            sink.record(CallOutcome(call, code, message, time.perf_counter() - call.started))
            await context.abort(code, message, ((REQUEST_ID_KEY, call.request_id),))

        return unimplemented


MAX_RECORDED_PATH = 200


def recorded_method(path: str) -> str:
    """The method as records and logs show it: cut at '?' (clients used to REST put tokens in
    query strings) and bounded in length."""
    return path.split("?", 1)[0][:MAX_RECORDED_PATH]


def _call_state(method: str, context: grpc.aio.ServicerContext) -> CallState:
    method = recorded_method(method)
    metadata = context.invocation_metadata() or ()
    user_agent = next((value for key, value in metadata if key == "user-agent"), None)
    trace_id, span_id = trace_of(metadata)
    return CallState(
        method,
        peer=_caller_ip(context.peer()),
        user_agent=user_agent,
        trace_id=trace_id,
        span_id=span_id,
    )


def _caller_ip(peer: str | None) -> str | None:
    """'ipv4:127.0.0.1:5555' -> '127.0.0.1'; 'ipv6:[::1]:5555' -> '::1'."""
    if not peer:
        return None
    kind, _, address = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer
    host = urllib.parse.unquote(address).rpartition(":")[0]  # grpc writes [::1] as %5B::1%5D
    return host.strip("[]") or None


def _cancellation(context: grpc.aio.ServicerContext) -> tuple[grpc.StatusCode, str]:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline exceeded."
    return grpc.StatusCode.CANCELLED, "The call was cancelled by the client."


def _aborted_status(context: grpc.aio.ServicerContext) -> tuple[grpc.StatusCode, str]:
    code = context.code()
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    return code, context.details() or ""
