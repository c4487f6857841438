"""The floor for a Python hop: a minimal raw-bytes gRPC forwarder, no authentication, no policy.

`python -m benchmarks.forwarder --listen HOST:PORT --upstream HOST:PORT [--variant naive|fast]`

Both variants relay what the gateway's forwarder relays (bytes, metadata minus this hop's
headers, the caller's deadline, initial and trailing metadata, the upstream's status) on
grpc.aio with uvloop. `naive` is how one writes it first: a handler and a multicallable built
for every call, metadata copied into a list. `fast` builds its handlers and multicallables once,
looks the handler up in a dict and filters metadata into one tuple. The difference between them
is what those per-call allocations cost.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

import grpc

from gateway import runtime

SERVICE_PREFIX = "/google.longrunning.Operations/"
METHODS = tuple(
    SERVICE_PREFIX + name
    for name in (
        "GetOperation",
        "ListOperations",
        "DeleteOperation",
        "CancelOperation",
        "WaitOperation",
    )
)
HOP_HEADERS = frozenset(
    {"user-agent", "te", "content-type", "grpc-accept-encoding", "grpc-encoding"}
)


async def _relay_result(call: Any, context: grpc.aio.ServicerContext) -> bytes:
    try:
        response: bytes = await call
    except grpc.aio.AioRpcError as err:
        initial = err.initial_metadata()
        if initial:
            await context.send_initial_metadata(initial)
        await context.abort(err.code(), err.details() or "", err.trailing_metadata() or ())
        raise  # abort raises; this is never reached
    initial = await call.initial_metadata()
    if initial:
        await context.send_initial_metadata(initial)
    trailing = await call.trailing_metadata()
    if trailing:
        context.set_trailing_metadata(trailing)
    return response


class NaiveForwarder(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Builds everything per call."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if details.method not in METHODS:
            return None
        channel = self._channel
        path = details.method

        async def relay(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            metadata = []
            for key, value in context.invocation_metadata() or ():
                if key.lower() in HOP_HEADERS or key.startswith(":"):
                    continue
                metadata.append((key, value))
            upstream = channel.unary_unary(path)
            call = upstream(request, timeout=context.time_remaining(), metadata=metadata)
            return await _relay_result(call, context)

        return grpc.unary_unary_rpc_method_handler(relay)


class FastForwarder(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Handlers and multicallables built once; one dict lookup and one tuple per call."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._handlers = {
            path: grpc.unary_unary_rpc_method_handler(self._relay(channel.unary_unary(path)))
            for path in METHODS
        }

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(details.method)

    @staticmethod
    def _relay(upstream: Any) -> Any:
        hop = HOP_HEADERS

        async def relay(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            metadata = tuple(
                item
                for item in context.invocation_metadata() or ()
                if item[0] not in hop and item[0][0] != ":"
            )
            call = upstream(request, timeout=context.time_remaining(), metadata=metadata)
            return await _relay_result(call, context)

        return relay


async def serve(listen: str, upstream: str, variant: str) -> None:
    channel = grpc.aio.insecure_channel(upstream)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    handler = FastForwarder(channel) if variant == "fast" else NaiveForwarder(channel)
    server.add_generic_rpc_handlers((handler,))
    if server.add_insecure_port(listen) == 0:
        raise SystemExit(f"cannot listen on {listen}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1)
    await channel.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.forwarder")
    parser.add_argument("--listen", required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--variant", choices=("naive", "fast"), default="fast")
    args = parser.parse_args(argv)
    runtime.run(serve(args.listen, args.upstream, args.variant))
    return 0


if __name__ == "__main__":
    sys.exit(main())
