"""`opsgate demo`: reference upstream and gateway in one process, sample calls, what happened."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TextIO

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2

from gateway.config import load_settings
from gateway.interceptors.outcome import MemorySink
from gateway.reference_upstream import start_reference_upstream
from gateway.reference_upstream.seed import ACME_PROD_US, STUCK_OPERATION
from gateway.server import start_gateway

PARENT = ACME_PROD_US
WAIT_NAME = f"{PARENT}/operations/demo-wait"
CANCEL_NAME = STUCK_OPERATION


@dataclass(frozen=True, slots=True)
class Step:
    """One sample call: what it shows, how to make it, and the status it must end with."""

    title: str
    call: Callable[[operations_pb2_grpc.OperationsStub, grpc.aio.Channel], Awaitable[str]]
    expected: grpc.StatusCode = grpc.StatusCode.OK


async def _list(stub: operations_pb2_grpc.OperationsStub, _: grpc.aio.Channel) -> str:
    names: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await stub.ListOperations(
            operations_pb2.ListOperationsRequest(name=PARENT, page_size=3, page_token=token)
        )
        pages += 1
        names.extend(op.name.rsplit("/", 1)[-1] for op in page.operations)
        token = page.next_page_token
        if not token:
            return f"{len(names)} operations in {pages} pages of 3: {', '.join(names)}"


async def _list_running(stub: operations_pb2_grpc.OperationsStub, _: grpc.aio.Channel) -> str:
    reply = await stub.ListOperations(
        operations_pb2.ListOperationsRequest(name=PARENT, filter="done=false")
    )
    return f"{len(reply.operations)} still running"


async def _get_first(stub: operations_pb2_grpc.OperationsStub, _: grpc.aio.Channel) -> str:
    listing = await stub.ListOperations(operations_pb2.ListOperationsRequest(name=PARENT))
    first = listing.operations
    op = await stub.GetOperation(operations_pb2.GetOperationRequest(name=first[0].name))
    return f"{op.name}: {_state(op)}"


async def _get_missing(stub: operations_pb2_grpc.OperationsStub, _: grpc.aio.Channel) -> str:
    await stub.GetOperation(operations_pb2.GetOperationRequest(name=f"{PARENT}/operations/404"))
    return "unexpectedly found"


async def _wait(stub: operations_pb2_grpc.OperationsStub, _: grpc.aio.Channel) -> str:
    timeout = duration_pb2.Duration(seconds=10)
    request = operations_pb2.WaitOperationRequest(name=WAIT_NAME, timeout=timeout)
    op = await stub.WaitOperation(request)
    return f"waited for {WAIT_NAME.rsplit('/', 1)[-1]}: {_state(op)}"


async def _cancel(stub: operations_pb2_grpc.OperationsStub, _: grpc.aio.Channel) -> str:
    await stub.CancelOperation(operations_pb2.CancelOperationRequest(name=CANCEL_NAME))
    op = await stub.GetOperation(operations_pb2.GetOperationRequest(name=CANCEL_NAME))
    return f"cancelled, then read back: {_state(op)}"


async def _garbage(_: operations_pb2_grpc.OperationsStub, channel: grpc.aio.Channel) -> str:
    await channel.unary_unary("/google.longrunning.Operations/GetOperation")(b"\xff\xfe garbage")
    return "unexpectedly accepted"


async def _unknown(_: operations_pb2_grpc.OperationsStub, channel: grpc.aio.Channel) -> str:
    await channel.unary_unary("/google.longrunning.Operations/PauseOperation")(b"")
    return "unexpectedly served"


STEPS: tuple[Step, ...] = (
    Step("ListOperations, paged", _list),
    Step("ListOperations, filter done=false", _list_running),
    Step("GetOperation", _get_first),
    Step("GetOperation on a missing operation", _get_missing, grpc.StatusCode.NOT_FOUND),
    Step("WaitOperation on one finishing in 1 s", _wait),
    Step("CancelOperation on a running one", _cancel),
    Step("A request body that is not protobuf", _garbage, grpc.StatusCode.INVALID_ARGUMENT),
    Step("A method the service does not have", _unknown, grpc.StatusCode.UNIMPLEMENTED),
)


def _state(op: operations_pb2.Operation) -> str:
    if not op.done:
        return "running"
    if op.HasField("error"):
        return f"done with error code {op.error.code} ({op.error.message})"
    return "done"


async def run_demo(out: TextIO) -> int:
    """Run every step through a real gateway; return 0 when each ended as expected."""
    upstream = await start_reference_upstream("127.0.0.1:0", seed=True)
    upstream.store.create(WAIT_NAME, finish_after=1.0)
    sink = MemorySink()
    settings = load_settings(None, listen="127.0.0.1:0", upstream=upstream.address)
    gateway = await start_gateway(settings, sink=sink)
    print(f"reference upstream on {upstream.address}; opsgate on {gateway.address}\n", file=out)
    failures = 0
    try:
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            stub = operations_pb2_grpc.OperationsStub(channel)
            for number, step in enumerate(STEPS, 1):
                code, detail = await _attempt(step, stub, channel)
                ok = code == step.expected
                failures += not ok
                mark = "ok " if ok else "FAIL"
                print(f"{number}. [{mark}] {step.title}: {code.name}", file=out)
                print(f"          {detail}", file=out)
    finally:
        await gateway.stop(0)
        await upstream.stop(0)
    _print_trail(sink, out)
    print(f"\n{len(STEPS) - failures} of {len(STEPS)} calls behaved as expected.", file=out)
    return 1 if failures else 0


async def _attempt(
    step: Step, stub: operations_pb2_grpc.OperationsStub, channel: grpc.aio.Channel
) -> tuple[grpc.StatusCode, str]:
    try:
        return grpc.StatusCode.OK, await step.call(stub, channel)
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details() or ""


def _print_trail(sink: MemorySink, out: TextIO) -> None:
    print("\nWhat the gateway recorded (one line per call):", file=out)
    for outcome in sink.outcomes():
        call = outcome.call
        print(
            f"  {call.request_id[:8]}  {outcome.code.name:<17} "
            f"{call.method.rsplit('/', 1)[-1]:<16} {call.resource_name or '-'}",
            file=out,
        )
