"""The grpc.health.v1 service: readiness (keys and policy loaded), liveness, and drain."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2

from gateway.errors import ConfigError
from gateway.observability.workers import WORKERS_KEY, WorkerCounts
from gateway.routing import SERVICE

# Readiness answers for "" and the Operations service: SERVING only when every issuer's keys
# and the policy are loaded. Liveness has its own name so a key endpoint outage makes pods
# unready (no traffic) without getting them restarted.
READINESS_SERVICES = ("", SERVICE)
LIVENESS_SERVICE = "opsgate.liveness"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


POLICY_ETAG_KEY = "x-opsgate-policy-etag"


_HEALTH_SERVICE = "grpc.health.v1.Health"
# A HealthCheckRequest is a service name: the health port reads nothing bigger.
HEALTH_MAX_MESSAGE_BYTES = 4096
_REQUEST = health_pb2.HealthCheckRequest
_MALFORMED = _REQUEST()  # a distinct object standing for a body that is not a request
_MALFORMED_MESSAGE = f"Invalid request: the body is not a valid {_REQUEST.DESCRIPTOR.full_name}."


def _read_request(raw: bytes) -> health_pb2.HealthCheckRequest:
    # grpc logs a deserializer's exception as a servicer crash and answers UNKNOWN; a body
    # that is not a request is the caller's mistake, answered INVALID_ARGUMENT by the method.
    try:
        return _REQUEST.FromString(raw)
    except DecodeError:
        return _MALFORMED


class DetailedHealthServicer(health.aio.HealthServicer):  # type: ignore[misc]
    """The standard health service; each Check also says, in its trailing metadata, which
    policy version is in force and, under `serve --workers N`, how many workers serve
    (`opsgate health` prints both)."""

    def __init__(self, policy_etag: Callable[[], str], workers: WorkerCounts | None = None) -> None:
        super().__init__()
        self._policy_etag = policy_etag
        self._workers = workers

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        if request is _MALFORMED:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _MALFORMED_MESSAGE)
        trailer = [(POLICY_ETAG_KEY, self._policy_etag())]
        if self._workers is not None:
            trailer.append((WORKERS_KEY, self._workers.describe()))
        context.set_trailing_metadata(tuple(trailer))
        return await super().Check(request, context)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        if request is _MALFORMED:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _MALFORMED_MESSAGE)
        async for response in super().Watch(request, context):
            yield response


def add_health_service(
    server: grpc.aio.Server, policy_etag: Callable[[], str], workers: WorkerCounts | None = None
) -> health.aio.HealthServicer:
    servicer = DetailedHealthServicer(policy_etag, workers)
    server.add_generic_rpc_handlers((_health_handler(servicer),))
    return servicer


def _health_handler(servicer: health.aio.HealthServicer) -> grpc.GenericRpcHandler:
    serialize = health_pb2.HealthCheckResponse.SerializeToString
    handlers = {
        "Check": grpc.unary_unary_rpc_method_handler(
            servicer.Check, request_deserializer=_read_request, response_serializer=serialize
        ),
        "Watch": grpc.unary_stream_rpc_method_handler(
            servicer.Watch, request_deserializer=_read_request, response_serializer=serialize
        ),
    }
    return grpc.method_handlers_generic_handler(_HEALTH_SERVICE, handlers)


@dataclass(slots=True)
class HealthListener:
    """The health port (`health.listen`): plaintext, grpc.health.v1.Health and nothing else."""

    server: grpc.aio.Server
    port: int

    async def stop(self) -> None:
        await self.server.stop(None)


async def start_health_listener(
    listen: str, servicer: health.aio.HealthServicer, share_port: bool = False
) -> HealthListener:
    """Serve `servicer` (the same answers as on `listen`) on a plaintext port of its own, for
    Kubernetes' gRPC probes, which cannot speak TLS: the probe costs the pod no process.

    A server without interceptors, forwarder or any other service: every other method is
    UNIMPLEMENTED, so no call can reach the upstream or skip TLS through this port. Under
    `serve --workers N` every worker binds it with SO_REUSEPORT (`share_port`), as `listen`:
    a probe is answered by one of them, as a call to `listen` would be.
    """
    options = [
        ("grpc.so_reuseport", 1 if share_port else 0),
        ("grpc.max_receive_message_length", HEALTH_MAX_MESSAGE_BYTES),
    ]
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers((_health_handler(servicer),))
    try:
        port: int = server.add_insecure_port(listen)
    except RuntimeError as exc:
        port, reason = 0, str(exc)
    else:
        reason = "the address is in use or not available"
    if port == 0:
        raise ConfigError("<listen>", "health.listen", f"cannot listen on {listen}: {reason}")
    await server.start()
    return HealthListener(server, port)


async def start_not_ready(servicer: health.aio.HealthServicer) -> None:
    """Before the listener opens: alive, not ready."""
    await servicer.set(LIVENESS_SERVICE, SERVING)
    for service in READINESS_SERVICES:
        await servicer.set(service, NOT_SERVING)


def ready_with_workers(
    ready: Callable[[], bool], workers: WorkerCounts | None
) -> Callable[[], bool]:
    """Readiness under `serve --workers N`: this worker's own, and at least one worker serving
    as the supervisor sees it. A partial set stays SERVING (the kernel hands new connections
    only to workers that listen, so every call is still served, at less capacity, while the
    supervisor restarts the others): the count is in the Check's trailing metadata and in
    opsgate_workers_serving. A worker not yet counted (it has just bound its ports) answers
    for itself; one whose supervisor is gone says NOT_SERVING while it drains."""
    if workers is None:
        return ready
    return lambda: ready() and (workers.serving > 0 or not workers.counted)


async def track_readiness(
    servicer: health.aio.HealthServicer,
    ready: Callable[[], bool],
    interval_s: float = 0.1,
    wake: asyncio.Event | None = None,
) -> None:
    """Keep readiness in step with `ready()` until cancelled: every `interval_s`, and at once
    when `wake` is set."""
    current = NOT_SERVING
    wake = wake or asyncio.Event()
    while True:
        wake.clear()  # before reading: a change after this read sets it again
        status = SERVING if ready() else NOT_SERVING
        if status != current:
            for service in READINESS_SERVICES:
                await servicer.set(service, status)
            current = status
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), interval_s)
