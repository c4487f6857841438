"""`opsgate demo`: reference upstream and gateway in one process, sample calls, what happened."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.longrunning import operations_pb2_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway.audit.query import format_table, is_denial, read_records
from gateway.config import load_settings
from gateway.demo.identity import DEMO_ISSUER, DemoIdentity
from gateway.demo.rest import REST_STEPS, run_rest_steps
from gateway.demo.steps import CANCEL_US, STEPS, Client, Step
from gateway.reference_upstream import start_reference_upstream
from gateway.server import start_gateway


async def run_demo(out: TextIO) -> int:
    """Run every step through a real gateway; return 0 when each ended as expected."""
    with tempfile.TemporaryDirectory(prefix="opsgate-demo-") as directory:
        identity = DemoIdentity(Path(directory))
        upstream = await start_reference_upstream("127.0.0.1:0", seed=True)
        upstream.store.create(CANCEL_US, finish_after=3600)
        gateway = await start_gateway(load_settings(identity.write_config(upstream.address)))
        print(f"reference upstream on {upstream.address}; opsgate on {gateway.address}", file=out)
        print(f"trusting issuer {DEMO_ISSUER}; policy: the example policy (policies/)", file=out)
        print(f"policy etag {gateway.pipeline.policies.current.etag}\n", file=out)
        try:
            failures = await _run_steps(gateway.address, identity, out)
            assert gateway.rest is not None  # the demo's config turns the REST door on
            print(f"\nThe same checks on the REST/JSON door ({gateway.rest.address}):\n", file=out)
            rest_failures = await run_rest_steps(gateway.rest.address, identity, out)
        finally:
            await gateway.stop(0)  # writes every pending audit record
            await upstream.stop(0)
        _print_trail(list(read_records([identity.audit_file])), out)
    total = len(STEPS) + len(REST_STEPS)
    failed = failures + rest_failures
    print(f"\n{total - failed} of {total} calls behaved as expected.", file=out)
    return 1 if failed else 0


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


def _print_trail(records: list[dict[str, Any]], out: TextIO) -> None:
    print(
        f"\nThe audit trail: {len(records)} records (opsgate audit query FILE prints this):",
        file=out,
    )
    for line in format_table(records):
        print(f"  {line}", file=out)
    denied = next(
        (r for r in records if is_denial(r) and r["protoPayload"].get("authorizationInfo")), None
    )
    if denied is not None:
        print("\nOne of them in full (a Cloud Audit Logs LogEntry):", file=out)
        print(json.dumps(denied, indent=2, sort_keys=True), file=out)
