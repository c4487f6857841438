"""A controllable upstream: the reference Operations servicer behind a delay, on a chosen port.

Faults come from the reference store's own seam (`OperationStore.inject_fault`, any status with
its details); slowness from an interceptor that sleeps before each call. The call log shows
whether the gateway cancelled a call it gave up on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.longrunning import operations_pb2_grpc

from gateway.reference_upstream import CallLog, OperationStore, ReferenceOperationsServicer
from gateway.reference_upstream.seed import seed_demo


class _Delay(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Sleeps `delay_s` before every Operations call (cancellable, like real slowness)."""

    def __init__(self) -> None:
        self.delay_s = 0.0
        self.cancelled = 0  # calls cancelled (by the gateway) while waiting here

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        owner = self

        async def slow(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if owner.delay_s:
                try:
                    await asyncio.sleep(owner.delay_s)
                except asyncio.CancelledError:
                    owner.cancelled += 1
                    raise
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            slow,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


@dataclass
class ControlledUpstream:
    server: grpc.aio.Server
    store: OperationStore
    call_log: CallLog
    delay: _Delay
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.server.stop(0)


async def start_controlled_upstream(port: int) -> ControlledUpstream:
    """Serve the seeded demo operations on 127.0.0.1:`port` (0: any)."""
    store = OperationStore()
    seed_demo(store)
    log = CallLog()
    delay = _Delay()
    server = grpc.aio.server(interceptors=[delay], options=[("grpc.so_reuseport", 0)])
    operations_pb2_grpc.add_OperationsServicer_to_server(
        ReferenceOperationsServicer(store, log), server
    )
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return ControlledUpstream(server, store, log, delay, bound)
