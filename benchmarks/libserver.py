"""Library mode under load: a Python Operations server with or without the opsgate chain.

`python -m benchmarks.libserver --listen HOST:PORT [--config FILE]`

The server is the reference Operations servicer on grpc.aio with uvloop, seeded with the demo
operations. With `--config` the opsgate chain (gateway.library.OpsgateChain, one interceptor) runs
in front of it, with no proxy hop; without, the same server runs bare. Comparing CPU per call
of the two is what library mode costs.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import grpc
from google.longrunning import operations_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gateway import runtime
from gateway.library import OpsgateChain
from gateway.reference_upstream import (
    CallLog,
    OperationStore,
    ReferenceOperationsServicer,
    seed_demo,
)


async def serve(listen: str, config: Path | None) -> None:
    chain = OpsgateChain.from_config(config) if config is not None else None
    store = OperationStore()
    seed_demo(store)
    server = grpc.aio.server(
        interceptors=chain.interceptors if chain is not None else None,
        options=[("grpc.so_reuseport", 0)],
    )
    operations_pb2_grpc.add_OperationsServicer_to_server(
        ReferenceOperationsServicer(store, CallLog()), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if server.add_insecure_port(listen) == 0:
        raise SystemExit(f"cannot listen on {listen}")
    await server.start()
    if chain is not None:
        await chain.prefetch()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1)
    if chain is not None:
        await asyncio.to_thread(chain.close)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.libserver")
    parser.add_argument("--listen", required=True)
    parser.add_argument("--config", type=Path, help="opsgate config: run with the chain")
    args = parser.parse_args(argv)
    runtime.run(serve(args.listen, args.config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
