"""The base of every stage: a grpc.aio interceptor that wraps the unary handlers it applies to."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from gateway.errors import StatusCode

Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


class Stage(grpc.aio.ServerInterceptor, abc.ABC):  # type: ignore[misc]
    """Wraps the behaviour of unary-unary handlers whose method `applies`; others pass untouched.

    Wrapped handlers are cached per method (the inner handler object is checked, so a
    different handler for the same method is wrapped afresh): no per-call allocation here.
    """

    name: str = "stage"

    def __init__(self, applies: Callable[[str], bool]) -> None:
        self._applies = applies
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]  # every call after a method's first
        if handler is None or handler.unary_unary is None or not self._applies(method):
            return handler
        wrapped = handler._replace(unary_unary=self.wrap(handler.unary_unary, method))
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    @abc.abstractmethod
    def wrap(self, behavior: Behavior, method: str) -> Behavior:
        """Return a behaviour that does this stage's work around `behavior`."""


# The door's mapping between the gateway's google.rpc codes and grpc's own status codes (the same
# numbers and names), built once.
_GRPC_CODES: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def grpc_code(code: StatusCode) -> grpc.StatusCode:
    """The grpc.StatusCode a door answers a failure's google.rpc code with."""
    return _GRPC_CODES[code]


def rpc_code(code: grpc.StatusCode) -> StatusCode:
    """The google.rpc code of a grpc.StatusCode (e.g. one a servicer aborted with)."""
    return StatusCode(code.value[0])
