"""The grpc.health.v1 service on the gateway: SERVING while up, NOT_SERVING while draining."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gateway.routing import SERVICE


def add_health_service(server: grpc.aio.Server) -> health.aio.HealthServicer:
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return servicer


async def mark_serving(servicer: health.aio.HealthServicer) -> None:
    for service in ("", SERVICE):
        await servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
