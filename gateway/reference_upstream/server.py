"""Starts and stops the reference upstream: an Operations server plus grpc.health.v1 on grpc.aio."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import grpc
from google.longrunning import operations_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gateway.errors import OpsgateError
from gateway.reference_upstream.calls import CallLog, CallRecord
from gateway.reference_upstream.seed import seed_demo
from gateway.reference_upstream.servicer import ReferenceOperationsServicer
from gateway.reference_upstream.store import OperationStore

OPERATIONS_SERVICE = "google.longrunning.Operations"
_WILDCARD_HOSTS = {"", "0.0.0.0", "[::]", "::"}

log = logging.getLogger("opsgate.upstream")


class ListenError(OpsgateError, OSError):
    """The listen address is malformed or cannot be bound (in use, not local, ...)."""

    reason = "LISTEN_FAILED"

    def __init__(self, listen: str, problem: str) -> None:
        super().__init__(f"cannot listen on '{listen}': {problem}")
        self.listen = listen


@dataclass(frozen=True, slots=True)
class ReferenceUpstream:
    """A running reference upstream: where to reach it, its store, and what it was asked."""

    server: grpc.aio.Server
    store: OperationStore
    call_log: CallLog
    health: health.aio.HealthServicer
    host: str
    port: int

    @property
    def address(self) -> str:
        """A dialable HOST:PORT (a wildcard listen host becomes 127.0.0.1)."""
        host = "127.0.0.1" if self.host in _WILDCARD_HOSTS else self.host
        return f"{host}:{self.port}"

    def calls(self) -> list[CallRecord]:
        return self.call_log.snapshot()

    async def wait_for_call(
        self,
        predicate: Callable[[CallRecord], bool],
        timeout: float = 5.0,
    ) -> CallRecord:
        return await self.call_log.wait_for(predicate, timeout)

    async def stop(self, grace: float | None = 0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


def _host(listen: str) -> str:
    host, separator, port = listen.rpartition(":")
    if not separator or not port.isdigit():
        raise ListenError(listen, "expected HOST:PORT")
    return host


def _bind(server: grpc.aio.Server, listen: str, credentials: grpc.ServerCredentials | None) -> int:
    try:
        if credentials is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, credentials)
    except RuntimeError as exc:  # newer grpc raises where older ones returned 0
        raise ListenError(listen, f"address unavailable or in use ({exc})") from exc
    if port == 0:
        raise ListenError(listen, "address unavailable or in use")
    return int(port)


async def start_reference_upstream(
    listen: str = "127.0.0.1:0",
    *,
    seed: bool = True,
    server_credentials: grpc.ServerCredentials | None = None,
    store: OperationStore | None = None,
) -> ReferenceUpstream:
    """Serve `store` (default: a new one, demo-seeded if `seed`) on `listen`; port 0 picks one."""
    host = _host(listen)
    store = OperationStore() if store is None else store
    if seed:
        seed_demo(store)
    call_log = CallLog()
    # grpc turns SO_REUSEPORT on by default: a second server on a taken port would "bind" and
    # silently share its traffic. Off, a taken port is the clear ListenError it should be.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    operations_pb2_grpc.add_OperationsServicer_to_server(
        ReferenceOperationsServicer(store, call_log), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = _bind(server, listen, server_credentials)
    await server.start()
    for service in ("", OPERATIONS_SERVICE):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    return ReferenceUpstream(server, store, call_log, health_servicer, host, port)


@contextmanager
def _set_on_signals(event: asyncio.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set `event` instead of killing the process, while inside."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        # Not available on Windows' loop: Ctrl-C then arrives as KeyboardInterrupt instead.
        with suppress(NotImplementedError):
            loop.add_signal_handler(signum, event.set)
    try:
        yield
    finally:
        for signum in signals:
            with suppress(NotImplementedError):
                loop.remove_signal_handler(signum)


async def run_reference_upstream(listen: str, *, seed: bool) -> None:
    """Serve until SIGINT or SIGTERM, then stop gracefully (in-flight calls get 5 s)."""
    stopping = asyncio.Event()
    # Handlers go in before the "listening" line: whoever waits for that line may signal at once.
    with _set_on_signals(stopping):
        upstream = await start_reference_upstream(listen, seed=seed)
        log.info("reference upstream listening on %s:%d", upstream.host, upstream.port)
        try:
            await stopping.wait()
        finally:
            await upstream.stop(grace=5)
