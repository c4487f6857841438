"""A probe upstream for tests: notes each call's deadline and metadata, answers with metadata."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc

Metadata = tuple[tuple[str, str | bytes], ...]

INITIAL = (("x-upstream-initial", "i1"), ("x-upstream-initial-bin", b"\x00\xff"))
TRAILING = (("x-upstream-trailing", "t1"), ("x-upstream-trailing", "t2"), ("x-t-bin", b"\x01"))


@dataclass
class ProbeServicer(operations_pb2_grpc.OperationsServicer):
    """GetOperation answers with INITIAL and TRAILING metadata and notes the deadline it saw."""

    deadlines: list[float | None] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    metadata: list[Metadata] = field(default_factory=list)  # each call's, as received
    trailing: Metadata = TRAILING  # what GetOperation answers with

    async def GetOperation(self, request, context):
        self.deadlines.append(context.time_remaining())
        self.metadata.append(tuple((key, value) for key, value in context.invocation_metadata()))
        await context.send_initial_metadata(INITIAL)
        context.set_trailing_metadata(self.trailing)
        if request.name.endswith("/slow"):
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        return operations_pb2.Operation(name=request.name, done=True)


@asynccontextmanager
async def probe_upstream() -> AsyncIterator[tuple[str, ProbeServicer]]:
    servicer = ProbeServicer()
    server = grpc.aio.server()
    operations_pb2_grpc.add_OperationsServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        await server.stop(0)
