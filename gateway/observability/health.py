"""The grpc.health.v1 service: readiness (keys and policy loaded), liveness, and drain."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gateway.routing import SERVICE

# Readiness answers for "" and the Operations service: SERVING only when every issuer's keys
# and the policy are loaded. Liveness has its own name so a key endpoint outage makes pods
# unready (no traffic) without getting them restarted.
READINESS_SERVICES = ("", SERVICE)
LIVENESS_SERVICE = "opsgate.liveness"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


POLICY_ETAG_KEY = "x-opsgate-policy-etag"


class DetailedHealthServicer(health.aio.HealthServicer):  # type: ignore[misc]
    """The standard health service; each Check also says, in its trailing metadata, which
    policy version is in force (`opsgate health` prints it)."""

    def __init__(self, policy_etag: Callable[[], str]) -> None:
        super().__init__()
        self._policy_etag = policy_etag

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        context.set_trailing_metadata(((POLICY_ETAG_KEY, self._policy_etag()),))
        return await super().Check(request, context)


def add_health_service(
    server: grpc.aio.Server, policy_etag: Callable[[], str]
) -> health.aio.HealthServicer:
    servicer = DetailedHealthServicer(policy_etag)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return servicer


async def start_not_ready(servicer: health.aio.HealthServicer) -> None:
    """Before the listener opens: alive, not ready."""
    await servicer.set(LIVENESS_SERVICE, SERVING)
    for service in READINESS_SERVICES:
        await servicer.set(service, NOT_SERVING)


async def track_readiness(
    servicer: health.aio.HealthServicer, ready: Callable[[], bool], interval_s: float = 0.1
) -> None:
    """Keep readiness in step with `ready()` until cancelled."""
    current = NOT_SERVING
    while True:
        status = SERVING if ready() else NOT_SERVING
        if status != current:
            for service in READINESS_SERVICES:
                await servicer.set(service, status)
            current = status
        await asyncio.sleep(interval_s)
