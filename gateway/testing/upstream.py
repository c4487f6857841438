"""In-process upstreams on loopback: the reference one, and one that can be made slow.

`running_upstream` starts and stops the reference upstream on a LoopThread; the controlled
upstream is the reference servicer behind an interceptor that sleeps before each call, with a
count of the calls the gateway cancelled while they waited. (A subprocess upstream is
`processes.upstream_process`.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from google.longrunning import operations_pb2_grpc

from gateway.reference_upstream import (
    CallLog,
    OperationStore,
    ReferenceOperationsServicer,
    ReferenceUpstream,
    seed_demo,
    start_reference_upstream,
)
from gateway.testing.loop import LoopThread


@contextmanager
def running_upstream(
    loop: LoopThread,
    listen: str = "127.0.0.1:0",
    *,
    seed: bool = True,
    server_credentials: grpc.ServerCredentials | None = None,
) -> Iterator[ReferenceUpstream]:
    """The reference upstream on `listen` (port 0: any), stopped without grace on the way out."""
    upstream = loop.run(
        start_reference_upstream(listen, seed=seed, server_credentials=server_credentials)
    )
    try:
        yield upstream
    finally:
        loop.run(upstream.stop(0))


class Delay(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Sleeps `delay_s` before every unary call (cancellable, like real slowness)."""

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
    """A running controlled upstream: its store and call log, and the delay to set."""

    server: grpc.aio.Server
    store: OperationStore
    call_log: CallLog
    delay: Delay
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.server.stop(0)


async def start_controlled_upstream(port: int = 0) -> ControlledUpstream:
    """Serve the seeded demo operations on 127.0.0.1:`port` (0: any)."""
    store = OperationStore()
    seed_demo(store)
    log = CallLog()
    delay = Delay()
    # As the reference upstream: SO_REUSEPORT off, so a taken port is an error, not a share.
    server = grpc.aio.server(interceptors=[delay], options=[("grpc.so_reuseport", 0)])
    operations_pb2_grpc.add_OperationsServicer_to_server(
        ReferenceOperationsServicer(store, log), server
    )
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return ControlledUpstream(server, store, log, delay, bound)
