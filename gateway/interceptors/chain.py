"""The gRPC door's interceptor: hands each call to the pipeline's runner, answers as grpc does.

The proxy and library mode install the same interceptor. In the proxy it serves the Operations
methods itself, relaying them through the forwarder (the server needs no handler of its own for
them); in library mode it wraps the team's servicer. Either way the stages are the pipeline's,
run by its runner on a Call; this module only translates between grpc and that Call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

import grpc

from gateway.call import Call, Metadata, new_call
from gateway.errors import CallFailure, StatusCode
from gateway.headers import REQUEST_ID_KEY, GatewayHeaders, header_family
from gateway.interceptors.codes import grpc_code, rpc_code
from gateway.stages.chain import Runner, is_exempt, is_operations_method
from gateway.upstream.forwarder import UpstreamForwarder

Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]
# What answers a call once the stages let it through: the forwarder, or the team's servicer.
# The request is the Call's payload and the grpc context its transport (see _context).
Terminal = Callable[[Call], Awaitable[Any]]


class ServicerAborted(CallFailure):
    """A library-mode servicer aborted the call itself: its status is already on the context."""

    def __init__(self, code: StatusCode, message: str, aborted: grpc.aio.AbortError) -> None:
        super().__init__(message)
        self.code, self.message, self.aborted = code, message, aborted


class ChainInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Runs the unary calls of the methods it `applies` to through the pipeline's runner.

    Calls to methods nobody serves are answered UNIMPLEMENTED and recorded like any other;
    `exempt` methods (health checks) and other services' methods pass untouched. Handlers are
    prepared once per method (a different servicer handler for the same method is wrapped
    afresh): no per-call work here beyond the call itself.
    """

    def __init__(
        self,
        runner: Runner,
        *,
        forwarder: UpstreamForwarder | None = None,
        servicer_headers: GatewayHeaders | None = None,
        applies: Callable[[str], bool] = is_operations_method,
        exempt: Callable[[str], bool] = is_exempt,
    ) -> None:
        self._runner = runner
        self._forwarder = forwarder  # the proxy: these methods are relayed upstream
        self._scrub = servicer_headers.without_smuggled if servicer_headers else None
        self._applies = applies
        self._exempt = exempt
        self._served: dict[str, grpc.RpcMethodHandler] = {}
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        served = self._served.get(method)
        if served is not None:
            return served  # the proxy's relayed methods, after each one's first call
        forwarder = self._forwarder
        if forwarder is not None and forwarder.serves(method) and self._applies(method):
            served = self._served[method] = grpc.unary_unary_rpc_method_handler(
                self._door(method, _relay(forwarder, method))
            )
            return served
        handler = await continuation(handler_call_details)
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        if handler is None:
            return None if self._exempt(method) else self._not_found(method)
        if handler.unary_unary is None or not self._applies(method):
            return handler
        servicer = _servicer(handler.unary_unary, self._scrub)
        wrapped = handler._replace(unary_unary=self._door(method, servicer))
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _door(self, method: str, terminal: Terminal) -> Behavior:
        run = self._runner.run
        steps = self._runner.steps(method)

        async def through_the_chain(request: Any, context: grpc.aio.ServicerContext) -> Any:
            call = new_call(method, context.invocation_metadata(), context, request)
            request_id = (REQUEST_ID_KEY, call.request_id)
            try:
                response = await run(call, steps, terminal)
            except ServicerAborted as aborted:
                raise aborted.aborted from None  # grpc answers with the servicer's own status
            except CallFailure as failure:
                trailing = _with_request_id(failure.trailing_metadata(), request_id)
                await context.abort(grpc_code(failure.code), failure.message, trailing)
            context.set_trailing_metadata(_with_request_id(context.trailing_metadata(), request_id))
            return response

        return through_the_chain

    def _not_found(self, method: str) -> grpc.RpcMethodHandler:
        not_found = self._runner.not_found

        async def unimplemented(request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
            call = new_call(method, context.invocation_metadata(), context, None)
            failure = not_found(call)
            trailing = ((REQUEST_ID_KEY, call.request_id),)
            await context.abort(grpc_code(failure.code), failure.message, trailing)

        return grpc.stream_stream_rpc_method_handler(unimplemented)


def _relay(forwarder: UpstreamForwarder, method: str) -> Terminal:
    forward = forwarder.forward

    async def relayed(call: Call) -> bytes:
        context = _context(call)
        response, trailing = await forward(
            method, call.payload, call, context.send_initial_metadata
        )
        if trailing:
            context.set_trailing_metadata(trailing)
        return response

    return relayed


def _servicer(behavior: Behavior, scrub: Callable[[Metadata], Metadata] | None) -> Terminal:
    """Library mode: the team's servicer, seeing the caller's metadata without any spelling of
    a header the gateway sets (the proxy's forwarder drops them itself)."""

    async def served(call: Call) -> Any:
        context = _context(call)
        if scrub is not None:
            kept = scrub(call.metadata)
            if len(kept) != len(call.metadata):
                context = _MetadataView(context, kept)
        try:
            return await behavior(call.payload, context)
        except grpc.aio.AbortError as aborted:
            code = context.code()
            status = rpc_code(code) if isinstance(code, grpc.StatusCode) else StatusCode.UNKNOWN
            raise ServicerAborted(status, context.details() or "", aborted) from aborted

    return served


def _context(call: Call) -> grpc.aio.ServicerContext:
    """The grpc context of a call this door built: it is the Call's transport (see new_call)."""
    return cast(grpc.aio.ServicerContext, call.transport)


class _MetadataView:
    """A servicer context that shows `metadata` as the call's and is otherwise the call's own."""

    __slots__ = ("_context", "_metadata")

    def __init__(self, context: grpc.aio.ServicerContext, metadata: Metadata) -> None:
        self._context = context
        self._metadata = metadata

    def invocation_metadata(self) -> Metadata:
        return self._metadata

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def _with_request_id(trailing: Any, request_id: tuple[str, str]) -> Metadata:
    """The answer's trailing metadata with the gateway's request id as its only one: an
    upstream's own x-request-id (in any spelling) would shadow the id the audit record has."""
    if not trailing:
        return (request_id,)
    kept = tuple(item for item in trailing if header_family(item[0]) != REQUEST_ID_KEY)
    return (*kept, request_id)
