"""The demo's sample calls: who makes each, what it shows, and the status it must end with."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2

from gateway.reference_upstream.seed import (
    ACME_PROD_US,
    DONE_OPERATION,
    STUCK_OPERATION,
    TIER1_OPERATION,
)

OK = grpc.StatusCode.OK
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
CANCEL_US = f"{ACME_PROD_US}/operations/demo-cancel"


@dataclass(frozen=True, slots=True)
class Client:
    """A stub, the raw channel, and the metadata (bearer token) one step's calls carry."""

    stub: operations_pb2_grpc.OperationsStub
    channel: grpc.aio.Channel
    metadata: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Step:
    """One sample call."""

    caller: str
    title: str
    call: Callable[[Client], Awaitable[str]]
    expected: grpc.StatusCode = OK


def _state(op: operations_pb2.Operation) -> str:
    if not op.done:
        return "running"
    if op.HasField("error"):
        return f"done with error code {op.error.code} ({op.error.message})"
    return "done"


def get(name: str) -> Callable[[Client], Awaitable[str]]:
    async def call(client: Client) -> str:
        request = operations_pb2.GetOperationRequest(name=name)
        op = await client.stub.GetOperation(request, metadata=client.metadata)
        return f"{op.name}: {_state(op)}"

    return call


def list_pages(parent: str, page_size: int = 3) -> Callable[[Client], Awaitable[str]]:
    async def call(client: Client) -> str:
        names: list[str] = []
        token, pages = "", 0
        while True:
            request = operations_pb2.ListOperationsRequest(
                name=parent, page_size=page_size, page_token=token
            )
            page = await client.stub.ListOperations(request, metadata=client.metadata)
            pages += 1
            names.extend(op.name.rsplit("/", 1)[-1] for op in page.operations)
            token = page.next_page_token
            if not token:
                return f"{len(names)} operations in {pages} page(s) of {page_size}"

    return call


def cancel(name: str) -> Callable[[Client], Awaitable[str]]:
    async def call(client: Client) -> str:
        request = operations_pb2.CancelOperationRequest(name=name)
        await client.stub.CancelOperation(request, metadata=client.metadata)
        read_back = operations_pb2.GetOperationRequest(name=name)
        op = await client.stub.GetOperation(read_back, metadata=client.metadata)
        return f"cancelled; read back: {_state(op)}"

    return call


def wait(name: str) -> Callable[[Client], Awaitable[str]]:
    async def call(client: Client) -> str:
        timeout = duration_pb2.Duration(seconds=5)
        request = operations_pb2.WaitOperationRequest(name=name, timeout=timeout)
        op = await client.stub.WaitOperation(request, metadata=client.metadata)
        return _state(op)

    return call


def raw(method: str, body: bytes) -> Callable[[Client], Awaitable[str]]:
    async def call(client: Client) -> str:
        await client.channel.unary_unary(method)(body, metadata=client.metadata)
        return "unexpectedly accepted"

    return call


GET = "/google.longrunning.Operations/GetOperation"

STEPS: tuple[Step, ...] = (
    Step("bob@acme.example", "ListOperations in production (viewer)", list_pages(ACME_PROD_US)),
    Step(
        "carol@acme.example", "ListOperations outside her views", list_pages(ACME_PROD_US), DENIED
    ),
    Step("alice@acme.example", "GetOperation (admin)", get(DONE_OPERATION)),
    Step("carol@acme.example", "GetOperation in an authorized view", get(TIER1_OPERATION)),
    Step("carol@acme.example", "GetOperation outside her views", get(DONE_OPERATION), DENIED),
    Step(
        "nobody@elsewhere.example",
        "GetOperation on a missing operation: same denial",
        get(f"{ACME_PROD_US}/operations/404"),
        DENIED,
    ),
    Step(
        "alice@acme.example",
        "GetOperation on a missing operation",
        get(f"{ACME_PROD_US}/operations/404"),
        grpc.StatusCode.NOT_FOUND,
    ),
    Step(
        "ci-deployer@acme-prod.iam.gserviceaccount.com",
        "CancelOperation under a time-limited grant",
        cancel(CANCEL_US),
    ),
    Step("bob@acme.example", "CancelOperation as a viewer", cancel(DONE_OPERATION), DENIED),
    Step(
        "alice@acme.example",
        "CancelOperation during the EU freeze (a deny rule beats admin)",
        cancel(STUCK_OPERATION),
        DENIED,
    ),
    Step(
        "frank@contractor.example",
        "GetOperation after his grant expired",
        get(STUCK_OPERATION),
        DENIED,
    ),
    Step(
        "alice@acme.example",
        "WaitOperation (not part of this service)",
        wait(DONE_OPERATION),
        grpc.StatusCode.UNIMPLEMENTED,
    ),
    Step(
        "alice@acme.example",
        "A resource name with '..'",
        get(f"{ACME_PROD_US}/operations/../x"),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    Step(
        "alice@acme.example",
        "A request body that is not protobuf",
        raw(GET, b"\xff\xfe garbage"),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    Step("no token", "GetOperation", get(DONE_OPERATION), UNAUTHENTICATED),
    Step("expired token", "GetOperation", get(DONE_OPERATION), UNAUTHENTICATED),
    Step("forged token", "GetOperation", get(DONE_OPERATION), UNAUTHENTICATED),
    Step("narrow-scope token", "GetOperation", get(DONE_OPERATION), DENIED),
)
