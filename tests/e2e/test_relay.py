"""Deadlines, cancellation, metadata and upstream failures cross the gateway as they should."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from gateway.server import start_gateway
from gateway.testing.ports import free_port
from tests.support.bearer import with_bearer
from tests.support.probe_upstream import INITIAL, TRAILING, ProbeServicer, probe_upstream
from tests.support.stack import Identity, Stack, gateway_settings

PARENT = "projects/acme/locations/us-central1"


def _wait(name: str, seconds: int) -> operations_pb2.WaitOperationRequest:
    return operations_pb2.WaitOperationRequest(
        name=name, timeout=duration_pb2.Duration(seconds=seconds)
    )


def test_short_client_deadline_is_deadline_exceeded_and_upstream_sees_the_cancel(
    stack: Stack,
) -> None:
    name = f"{PARENT}/operations/slow"
    stack.upstream.store.create(name, finish_after=3600)
    stub = operations_pb2_grpc.OperationsStub(stack.gateway_channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.WaitOperation(_wait(name, 60), timeout=0.5)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    record = _eventually(lambda: [c for c in stack.upstream.calls() if c.name == name])
    assert record[-1].outcome == "CANCELLED"


def test_client_cancel_cancels_the_upstream_call(stack: Stack) -> None:
    name = f"{PARENT}/operations/held"
    stack.upstream.store.create(name, finish_after=3600)
    stub = operations_pb2_grpc.OperationsStub(stack.gateway_channel)
    future = stub.WaitOperation.future(_wait(name, 60), timeout=30)
    _eventually(lambda: [c for c in stack.upstream.calls() if c.name == name] or None, allow=True)
    time.sleep(0.2)  # let the upstream call start before the caller walks away
    future.cancel()
    records = _eventually(
        lambda: [c for c in stack.upstream.calls() if c.name == name and c.outcome == "CANCELLED"]
    )
    assert records


def test_long_wait_is_not_cut_off_by_the_gateway(stack: Stack) -> None:
    name = f"{PARENT}/operations/two-seconds"
    stack.upstream.store.create(name, finish_after=2.0)
    stub = operations_pb2_grpc.OperationsStub(stack.gateway_channel)
    started = time.monotonic()
    op = stub.WaitOperation(_wait(name, 30))  # no client deadline at all
    assert op.done
    assert time.monotonic() - started >= 1.5


@asynccontextmanager
async def _probe_behind_gateway(
    identity: Identity,
) -> AsyncIterator[tuple[operations_pb2_grpc.OperationsStub, ProbeServicer]]:
    """A probe upstream, a gateway in front of it, and a stub calling the gateway."""
    async with probe_upstream() as (address, probe):
        gateway = await start_gateway(gateway_settings(address, identity))
        try:
            async with grpc.aio.insecure_channel(gateway.address) as channel:
                yield operations_pb2_grpc.OperationsStub(channel), probe
        finally:
            await gateway.stop(0)


def _get(name: str) -> operations_pb2.GetOperationRequest:
    return operations_pb2.GetOperationRequest(name=f"{PARENT}/operations/{name}")


def test_remaining_deadline_and_metadata_are_relayed_exactly(loop, identity: Identity) -> None:
    auth = (("authorization", f"Bearer {identity.token()}"),)

    async def scenario() -> ProbeServicer:
        async with _probe_behind_gateway(identity) as (stub, probe):
            call = stub.GetOperation(_get("x"), timeout=7, metadata=auth)
            await call
            assert tuple(await call.initial_metadata()) == INITIAL
            *relayed, (key, request_id) = tuple(await call.trailing_metadata())
            assert tuple(relayed) == TRAILING  # exactly, then the gateway's one key
            assert key == "x-request-id" and len(request_id) == 32
            await stub.GetOperation(_get("x"), metadata=auth)
            return probe

    with_deadline, without = loop.run(scenario()).deadlines
    # grpc-timeout is encoded rounded up, so allow a sliver above 7 s
    assert with_deadline is not None and 5 < with_deadline <= 7.1
    assert without is None


def test_deadline_on_a_slow_upstream_cancels_it(loop, identity: Identity) -> None:
    auth = (("authorization", f"Bearer {identity.token()}"),)

    async def scenario() -> None:
        async with _probe_behind_gateway(identity) as (stub, probe):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetOperation(_get("slow"), timeout=0.3, metadata=auth)
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await asyncio.wait_for(probe.cancelled.wait(), 5)

    loop.run(scenario())


def test_upstream_down_is_unavailable_not_a_hang(loop, identity: Identity) -> None:
    settings = gateway_settings(f"127.0.0.1:{free_port()}", identity)
    gateway = loop.run(start_gateway(settings))
    try:
        with grpc.insecure_channel(gateway.address) as channel:
            stub = operations_pb2_grpc.OperationsStub(with_bearer(channel, identity.token()))
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                stub.GetOperation(operations_pb2.GetOperationRequest(name=f"{PARENT}/operations/1"))
            assert time.monotonic() - started < 10
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert err.value.details() == "The service is currently unavailable."
        status = status_pb2.Status.FromString(
            dict(err.value.trailing_metadata())["grpc-status-details-bin"]
        )
        info = error_details_pb2.ErrorInfo()
        assert status.details[0].Unpack(info)
        assert info.reason == "UPSTREAM_UNAVAILABLE"
        assert "127.0.0.1" not in err.value.details()
    finally:
        loop.run(gateway.stop(0))


def _eventually(probe, timeout: float = 5.0, allow: bool = False):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.02)
    if allow:
        return None
    raise AssertionError("condition not met within the time allowed")
