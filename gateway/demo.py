"""`opsgate demo`: reference upstream and gateway in one process, sample calls, what happened."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway.config import load_settings
from gateway.interceptors.outcome import MemorySink
from gateway.reference_upstream import start_reference_upstream
from gateway.reference_upstream.seed import ACME_PROD_US, DONE_OPERATION, STUCK_OPERATION
from gateway.server import start_gateway
from gateway.testing.tokens import claims, jwks, rsa_key

DEMO_ISSUER = "https://idp.acme.example"
DEMO_AUDIENCE = "opsgate-demo"
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
PARENT = ACME_PROD_US
WAIT_NAME = f"{PARENT}/operations/demo-wait"
CANCEL_NAME = STUCK_OPERATION


@dataclass(frozen=True, slots=True)
class Client:
    """A stub, the raw channel, and the metadata (bearer token) one step's calls carry."""

    stub: operations_pb2_grpc.OperationsStub
    channel: grpc.aio.Channel
    metadata: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Step:
    """One sample call: what it shows, how to make it, and the status it must end with."""

    title: str
    call: Callable[[Client], Awaitable[str]]
    expected: grpc.StatusCode = grpc.StatusCode.OK
    caller: str = "alice"  # whose token the call carries; see DemoIdentity.tokens


async def _list(client: Client) -> str:
    names: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await client.stub.ListOperations(
            operations_pb2.ListOperationsRequest(name=PARENT, page_size=3, page_token=token),
            metadata=client.metadata,
        )
        pages += 1
        names.extend(op.name.rsplit("/", 1)[-1] for op in page.operations)
        token = page.next_page_token
        if not token:
            return f"{len(names)} operations in {pages} pages of 3: {', '.join(names)}"


async def _list_running(client: Client) -> str:
    reply = await client.stub.ListOperations(
        operations_pb2.ListOperationsRequest(name=PARENT, filter="done=false"),
        metadata=client.metadata,
    )
    return f"{len(reply.operations)} still running"


async def _get_first(client: Client) -> str:
    listing = await client.stub.ListOperations(
        operations_pb2.ListOperationsRequest(name=PARENT), metadata=client.metadata
    )
    first = listing.operations
    op = await _get(client, first[0].name)
    return f"{op.name}: {_state(op)}"


async def _get_missing(client: Client) -> str:
    await _get(client, f"{PARENT}/operations/404")
    return "unexpectedly found"


async def _wait(client: Client) -> str:
    timeout = duration_pb2.Duration(seconds=10)
    request = operations_pb2.WaitOperationRequest(name=WAIT_NAME, timeout=timeout)
    op = await client.stub.WaitOperation(request, metadata=client.metadata)
    return f"waited for {WAIT_NAME.rsplit('/', 1)[-1]}: {_state(op)}"


async def _cancel(client: Client) -> str:
    request = operations_pb2.CancelOperationRequest(name=CANCEL_NAME)
    await client.stub.CancelOperation(request, metadata=client.metadata)
    op = await _get(client, CANCEL_NAME)
    return f"cancelled, then read back: {_state(op)}"


async def _garbage(client: Client) -> str:
    get = client.channel.unary_unary("/google.longrunning.Operations/GetOperation")
    await get(b"\xff\xfe garbage", metadata=client.metadata)
    return "unexpectedly accepted"


async def _unknown(client: Client) -> str:
    pause = client.channel.unary_unary("/google.longrunning.Operations/PauseOperation")
    await pause(b"", metadata=client.metadata)
    return "unexpectedly served"


async def _get_done(client: Client) -> str:
    op = await _get(client, DONE_OPERATION)
    return f"{op.name}: {_state(op)}"


async def _get(client: Client, name: str) -> operations_pb2.Operation:
    request = operations_pb2.GetOperationRequest(name=name)
    return await client.stub.GetOperation(request, metadata=client.metadata)


STEPS: tuple[Step, ...] = (
    Step("ListOperations, paged", _list),
    Step("ListOperations, filter done=false", _list_running),
    Step("GetOperation", _get_first),
    Step("GetOperation on a missing operation", _get_missing, grpc.StatusCode.NOT_FOUND),
    Step("WaitOperation on one finishing in 1 s", _wait),
    Step("CancelOperation on a running one", _cancel),
    Step("A request body that is not protobuf", _garbage, grpc.StatusCode.INVALID_ARGUMENT),
    Step("A method the service does not have", _unknown, grpc.StatusCode.UNIMPLEMENTED),
    Step("GetOperation with no token", _get_done, UNAUTHENTICATED, caller="nobody"),
    Step("GetOperation with an expired token", _get_done, UNAUTHENTICATED, caller="expired"),
    Step("GetOperation with a forged signature", _get_done, UNAUTHENTICATED, caller="forged"),
    Step("GetOperation without cloud-platform scope", _get_done, DENIED, caller="narrow"),
)


def _state(op: operations_pb2.Operation) -> str:
    if not op.done:
        return "running"
    if op.HasField("error"):
        return f"done with error code {op.error.code} ({op.error.message})"
    return "done"


class DemoIdentity:
    """A throwaway identity provider: a key, its JWKS file, the config trusting it, tokens."""

    def __init__(self, directory: Path) -> None:
        self.key = rsa_key(kid="demo-key")
        self.jwks_file = directory / "jwks.json"
        self.jwks_file.write_text(json.dumps(jwks(self.key)))
        self.config_file = directory / "opsgate.yaml"
        forger = rsa_key(kid="demo-key", fresh=True)  # same kid, a key the IdP never published
        alice = claims(DEMO_ISSUER, DEMO_AUDIENCE, email="alice@acme.example", sub="alice")
        self.tokens: dict[str, str | None] = {
            "alice": self.key.sign(alice),
            "nobody": None,
            "expired": self.key.sign(
                {**alice, "iat": alice["iat"] - 7200, "exp": alice["iat"] - 3600}
            ),
            "forged": forger.sign(alice),
            "narrow": self.key.sign({**alice, "scope": "openid email"}),
        }

    def write_config(self, upstream: str) -> Path:
        self.config_file.write_text(
            "listen: 127.0.0.1:0\n"
            f"upstream:\n  target: {upstream}\n"
            "authentication:\n"
            "  issuers:\n"
            f"    - issuer: {DEMO_ISSUER}\n"
            f"      audiences: [{DEMO_AUDIENCE}]\n"
            f"      jwks_file: {self.jwks_file}\n"
        )
        return self.config_file

    def metadata(self, caller: str) -> tuple[tuple[str, str], ...]:
        token = self.tokens[caller]
        return () if token is None else (("authorization", f"Bearer {token}"),)


async def run_demo(out: TextIO) -> int:
    """Run every step through a real gateway; return 0 when each ended as expected."""
    with tempfile.TemporaryDirectory(prefix="opsgate-demo-") as directory:
        identity = DemoIdentity(Path(directory))
        upstream = await start_reference_upstream("127.0.0.1:0", seed=True)
        upstream.store.create(WAIT_NAME, finish_after=1.0)
        sink = MemorySink()
        settings = load_settings(identity.write_config(upstream.address))
        gateway = await start_gateway(settings, sink=sink)
        print(f"reference upstream on {upstream.address}; opsgate on {gateway.address}", file=out)
        print(f"trusting issuer {DEMO_ISSUER} (keys: a local JWKS file)\n", file=out)
        try:
            failures = await _run_steps(gateway.address, identity, out)
        finally:
            await gateway.stop(0)
            await upstream.stop(0)
    _print_trail(sink, out)
    print(f"\n{len(STEPS) - failures} of {len(STEPS)} calls behaved as expected.", file=out)
    return 1 if failures else 0


async def _run_steps(address: str, identity: DemoIdentity, out: TextIO) -> int:
    failures = 0
    async with grpc.aio.insecure_channel(address) as channel:
        stub = operations_pb2_grpc.OperationsStub(channel)
        for number, step in enumerate(STEPS, 1):
            client = Client(stub, channel, identity.metadata(step.caller))
            code, detail = await _attempt(step, client)
            ok = code == step.expected
            failures += not ok
            mark = "ok " if ok else "FAIL"
            print(f"{number:>2}. [{mark}] {step.title} (as {step.caller}): {code.name}", file=out)
            print(f"           {detail}", file=out)
    return failures


async def _attempt(step: Step, client: Client) -> tuple[grpc.StatusCode, str]:
    try:
        return grpc.StatusCode.OK, await step.call(client)
    except grpc.aio.AioRpcError as err:
        reason = _reason(err)
        return err.code(), f"{err.details() or ''}" + (f" [{reason}]" if reason else "")


def _reason(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


def _print_trail(sink: MemorySink, out: TextIO) -> None:
    print("\nWhat the gateway recorded (one line per call):", file=out)
    for outcome in sink.outcomes():
        call = outcome.call
        who = call.principal.member if call.principal else "(unauthenticated)"
        print(
            f"  {call.request_id[:8]}  {outcome.code.name:<17} {who:<26} "
            f"{call.method.rsplit('/', 1)[-1]:<16} {call.resource_name or '-'}",
            file=out,
        )
