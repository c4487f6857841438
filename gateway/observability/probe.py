"""`opsgate health`: a gRPC health check client for container HEALTHCHECKs and scripts."""

from __future__ import annotations

import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.observability.health import POLICY_ETAG_KEY
from gateway.observability.workers import WORKERS_KEY


def check_health(
    address: str, service: str = "", timeout_s: float = 3.0, ca_file: Path | None = None
) -> int:
    """0 when `service` answers SERVING at `address`, 1 otherwise (the status is printed)."""
    if ca_file is not None:
        credentials = grpc.ssl_channel_credentials(root_certificates=ca_file.read_bytes())
        channel = grpc.secure_channel(address, credentials)
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply, call = stub.Check.with_call(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError as err:
            print(f"{address}: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    trailer = dict(call.trailing_metadata() or ())
    etag, workers = trailer.get(POLICY_ETAG_KEY), trailer.get(WORKERS_KEY)
    policy = f" (policy etag {etag})" if etag else ""
    serving = f" ({workers} workers serving)" if workers else ""
    print(f"{address} {service or '(server)'}: {status}{policy}{serving}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1
