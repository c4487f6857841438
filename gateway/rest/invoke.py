"""Runs a unary call through the interceptor chain in process, as grpc.aio's server would."""

from __future__ import annotations

import collections
import inspect
from collections.abc import Sequence
from typing import Any

import grpc

from gateway.rest.context import RestContext


class _CallDetails(
    collections.namedtuple("_CallDetails", ("method", "invocation_metadata")),
    grpc.HandlerCallDetails,  # type: ignore[misc]
):
    """What an interceptor is told about a call before it returns the handler."""


class InProcessChain:
    """The chain's interceptors composed around the generic handlers, as grpc.aio composes them.

    Each interceptor's intercept_service gets a continuation that runs the next one; the last
    continuation asks the generic handlers. The composed handler is cached per method, so it is
    composed with empty metadata: the chain's stages choose a handler by method alone (the
    Stage contract) and do their per-call work, with the call's metadata, inside the behaviour.
    """

    def __init__(
        self,
        interceptors: Sequence[grpc.aio.ServerInterceptor],
        handlers: grpc.GenericRpcHandler,
    ) -> None:
        self._interceptors = tuple(interceptors)
        self._handlers = handlers
        self._composed: dict[str, grpc.RpcMethodHandler | None] = {}

    async def handler(self, method: str) -> grpc.RpcMethodHandler | None:
        if method not in self._composed:
            self._composed[method] = await self._run(0, _CallDetails(method, ()))
        return self._composed[method]

    async def _run(self, index: int, details: grpc.HandlerCallDetails) -> Any:
        if index == len(self._interceptors):
            return self._handlers.service(details)

        async def continuation(next_details: grpc.HandlerCallDetails) -> Any:
            return await self._run(index + 1, next_details)

        return await self._interceptors[index].intercept_service(continuation, details)

    async def unary_unary(self, method: str, request: bytes, context: RestContext) -> Any:
        """The call's answer (serialized, if the handler serializes); raises AbortError on a
        non-OK status, with the status on `context`."""
        handler = await self.handler(method)
        if handler is None or handler.unary_unary is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found.")
        deserialize = handler.request_deserializer
        response = handler.unary_unary(deserialize(request) if deserialize else request, context)
        if inspect.isawaitable(response):
            response = await response
        serialize = handler.response_serializer
        return serialize(response) if serialize else response
