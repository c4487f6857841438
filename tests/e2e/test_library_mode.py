"""Library mode: the same chain inside a team's own grpc.aio Operations server, no proxy hop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from google.api_core import operations_v1
from google.longrunning import operations_pb2, operations_pb2_grpc

from gateway.authn.principal import Principal
from gateway.errors import StatusCode
from gateway.library import OpsgateChain, current_principal
from gateway.outcome import MemorySink
from gateway.reference_upstream import (
    CallLog,
    OperationStore,
    ReferenceOperationsServicer,
    seed_demo,
)
from gateway.reference_upstream.seed import DONE_OPERATION
from gateway.testing.loop import LoopThread
from tests.support.bearer import with_bearer
from tests.support.policy_cases import CASES, NOT_FOUND, OK, STRANGER, Who, outcome
from tests.support.stack import EXAMPLE_POLICY, Identity, quiet_audit_yaml


class TeamOperations(ReferenceOperationsServicer):
    """A team's own servicer: it can ask who the verified caller is."""

    def __init__(self, store: OperationStore, calls: CallLog) -> None:
        super().__init__(store, calls)
        self.seen: list[Principal | None] = []

    async def GetOperation(self, request, context):
        self.seen.append(current_principal())
        return await super().GetOperation(request, context)


@dataclass
class InProcess:
    """A grpc.aio server with the opsgate chain and a team's servicer, and clients for it."""

    identity: Identity
    raw_gateway_channel: grpc.Channel
    servicer: TeamOperations
    calls: CallLog
    server: grpc.aio.Server = field(repr=False)

    def with_token(self, token: str | None) -> operations_v1.OperationsClient:
        return operations_v1.OperationsClient(with_bearer(self.raw_gateway_channel, token))


def _config(identity: Identity, directory: Path) -> Path:
    path = directory / "library.yaml"
    path.write_text(
        identity.issuer_yaml() + identity.policy_yaml(EXAMPLE_POLICY) + quiet_audit_yaml(directory)
    )
    return path


@pytest.fixture(scope="module")
def in_process(
    loop: LoopThread, identity: Identity, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcess]:
    chain = OpsgateChain.from_config(_config(identity, tmp_path_factory.mktemp("library")))
    store = OperationStore()
    seed_demo(store)
    calls = CallLog()
    servicer = TeamOperations(store, calls)

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server(interceptors=chain.interceptors)
        operations_pb2_grpc.add_OperationsServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        await chain.prefetch()
        return server, port

    server, port = loop.run(start())
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield InProcess(identity, channel, servicer, calls, server)
    finally:
        channel.close()
        loop.run(server.stop(0))
        assert chain.close(10)


# WaitOperation and DeleteOperation are served by the team's servicer but not routed by the
# profile: the chain answers UNIMPLEMENTED for them exactly as the proxy does.
@pytest.mark.parametrize(
    ("who", "method", "resource", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_same_decisions_as_the_proxy(
    in_process: InProcess, who: Who, method: str, resource: str, expected: str
) -> None:
    before = len(in_process.calls.snapshot())
    code, err = outcome(in_process, who, method, resource)
    assert code == expected, getattr(err, "message", err)
    reached_servicer = len(in_process.calls.snapshot()) > before
    assert reached_servicer == (expected in (OK, NOT_FOUND))


def test_servicer_sees_the_verified_principal(in_process: InProcess) -> None:
    token = in_process.identity.token(email="alice@acme.example")
    in_process.with_token(token).get_operation(DONE_OPERATION, retry=None, timeout=10)
    principal = in_process.servicer.seen[-1]
    assert principal is not None
    assert principal.member == "user:alice@acme.example"


def test_denied_call_never_reaches_the_servicer(in_process: InProcess) -> None:
    before = len(in_process.servicer.seen)
    code, _ = outcome(in_process, STRANGER, "get", DONE_OPERATION)
    assert code == "PERMISSION_DENIED"
    assert len(in_process.servicer.seen) == before


def test_the_library_exports_its_stable_surface_only() -> None:
    import gateway.library

    assert sorted(gateway.library.__all__) == ["OpsgateChain", "Principal", "current_principal"]
    public = {name for name in vars(gateway.library) if not name.startswith("_")}
    internal = public - set(gateway.library.__all__)
    # What else the module holds is what it imports to do its job, never a class of its own.
    assert all(
        getattr(getattr(gateway.library, name), "__module__", "") != "gateway.library"
        for name in internal
    ), internal


class CleanUpFails(ReferenceOperationsServicer):
    """A servicer whose clean-up fails when its call is cut short."""

    async def GetOperation(self, request, context):
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise RuntimeError("clean-up failed") from None


def test_a_failure_after_the_deadline_ended_the_call_is_recorded_as_the_deadline(
    loop: LoopThread, identity: Identity, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Seen once under load: a relay failing on a call its deadline had just ended was recorded
    # INTERNAL (and logged as a crash) instead of DEADLINE_EXCEEDED.
    sink = MemorySink()
    chain = OpsgateChain.from_config(_config(identity, tmp_path), sink=sink)

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server(interceptors=chain.interceptors)
        operations_pb2_grpc.add_OperationsServicer_to_server(
            CleanUpFails(OperationStore(), CallLog()), server
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = loop.run(start())
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = operations_pb2_grpc.OperationsStub(
                with_bearer(channel, identity.token(email="alice@acme.example"))
            )
            with caplog.at_level(logging.ERROR), pytest.raises(grpc.RpcError) as ended:
                stub.GetOperation(
                    operations_pb2.GetOperationRequest(name=DONE_OPERATION), timeout=0.3
                )
            assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            deadline = time.monotonic() + 10
            while not sink.outcomes() and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        loop.run(server.stop(0))
        assert chain.close(10)
    assert [o.code for o in sink.outcomes()] == [StatusCode.DEADLINE_EXCEEDED]
    assert not [r for r in caplog.records if "unexpected error" in r.getMessage()]
