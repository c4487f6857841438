"""The compiled tier under test: a real Envoy running `opsgate envoy-compile`'s output in front
of an upstream that accepts every call, beside opsgate's own proxy door on the same config, so
that a test can ask both the same question and compare the answers."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml

from gateway.config import Settings
from gateway.envoy.bootstrap import GRPC_LISTENER
from gateway.envoy.compiled.command import Compiler
from gateway.envoy.compiled.resources import CompiledLayout, bootstrap
from gateway.outcome import MemorySink
from gateway.profile import load_profile
from gateway.server import Gateway, start_gateway
from gateway.testing.envoy import EnvoyProcess, envoy_process
from gateway.testing.loop import LoopThread
from tests.support.stack import Identity, gateway_settings

Metadata = Sequence[tuple[str, str]]


@dataclass
class AcceptAll:
    """An upstream that answers every unary call OK with an empty message (a valid encoding of
    any request's answer), counting the calls that reach it."""

    address: str = ""
    calls: list[str] = field(default_factory=list)

    def handler(self) -> grpc.GenericRpcHandler:
        upstream = self

        async def answer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return b""

        class Handler(grpc.GenericRpcHandler):
            def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
                upstream.calls.append(details.method)
                return grpc.unary_unary_rpc_method_handler(answer)

        return Handler()


@contextmanager
def accept_all_upstream(loop: LoopThread) -> Iterator[AcceptAll]:
    upstream = AcceptAll()

    async def start() -> grpc.aio.Server:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((upstream.handler(),))
        upstream.address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        await server.start()
        return server

    server = loop.run(start())
    try:
        yield upstream
    finally:
        loop.run(server.stop(0))


@dataclass
class CompiledStack:
    """`envoy` runs the compiled config; `own` is opsgate's proxy on the same settings."""

    envoy: EnvoyProcess
    envoy_channel: grpc.Channel
    own_channel: grpc.Channel
    compiler: Compiler
    upstream: AcceptAll
    settings: Settings
    own: Gateway
    sink: MemorySink
    # With `audit=True`: the `opsgate serve` (the same config, and `envoy: {}`) that Envoy's
    # access log reports every call to, and its settings (its audit file among them).
    audit: Gateway | None = None
    audit_settings: Settings | None = None
    audit_stopped: bool = False

    def recompile(self) -> str:
        """Compile the policy file as it is now and write it where Envoy watches."""
        return self.compiler.write(self.compiler.compile())

    def audit_records(self, loop: LoopThread, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Every record the audit receiver wrote. Envoy is stopped first, with a drain: it sends
        its buffered access-log entries only then; then the receiver is stopped, which writes
        and flushes every record of every entry it received."""
        assert self.audit is not None and self.audit_settings is not None, "audit=True"
        self.envoy.stop(timeout)
        if not self.audit_stopped:
            self.audit_stopped = True
            loop.run(self.audit.stop(timeout), timeout + 5)
        audit_file = self.audit_settings.audit.file
        assert audit_file is not None
        path = Path(audit_file.path)
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line]


def code_of(channel: grpc.Channel, method: str, request: bytes, metadata: Metadata) -> str:
    """The status name one unary call gets (OK when the upstream answered)."""
    call = channel.unary_unary(method)
    try:
        call(request, metadata=tuple(metadata), timeout=10)
    except grpc.RpcError as exc:
        return exc.code().name
    return "OK"


@contextmanager
def compiled_stack(
    loop: LoopThread,
    identity: Identity,
    policy: Path,
    *,
    authentication_yaml: str = "",
    authorization_yaml: str = "",
    concurrency: int = 1,
    audit: bool = False,
) -> Iterator[CompiledStack]:
    with ExitStack() as stack:
        upstream = stack.enter_context(accept_all_upstream(loop))
        settings = gateway_settings(
            upstream.address,
            identity,
            policy,
            authentication_yaml=authentication_yaml,
            authorization_yaml=authorization_yaml,
        )
        sink = MemorySink()
        own = loop.run(start_gateway(settings, sink=sink))
        stack.callback(lambda: loop.run(own.stop(0)))
        authz = settings.authorization
        receiver: Gateway | None = None
        audit_settings: Settings | None = None
        running: CompiledStack | None = None
        if audit:
            audit_settings = gateway_settings(
                upstream.address,
                identity,
                policy,
                extra_yaml="envoy: {}\n",
                authentication_yaml=authentication_yaml,
                authorization_yaml=authorization_yaml,
            )
            receiver = loop.run(start_gateway(audit_settings))
            started = receiver

            def stop_receiver() -> None:
                if running is None or not running.audit_stopped:
                    loop.run(started.stop(0))

            stack.callback(stop_receiver)
        layout = CompiledLayout(
            directory=identity.directory / "compiled",
            listen="127.0.0.1:0",
            admin="127.0.0.1:0",
            audit=receiver.address if receiver is not None else None,
        )
        profile = load_profile(authz.profile, authz.profile_file)
        compiler = Compiler(settings, profile, layout, str(identity.directory / "opsgate.yaml"))
        compiler.write(compiler.compile())
        envoy = stack.enter_context(
            envoy_process(bootstrap(layout), name="compiled-envoy", concurrency=concurrency)
        )
        envoy_channel = stack.enter_context(grpc.insecure_channel(envoy.address(GRPC_LISTENER)))
        own_channel = stack.enter_context(grpc.insecure_channel(own.address))
        running = CompiledStack(
            envoy,
            envoy_channel,
            own_channel,
            compiler,
            upstream,
            settings,
            own,
            sink,
            receiver,
            audit_settings,
        )
        yield running


def static_bootstrap(directory: Path) -> dict[str, Any]:
    """`envoy-compile`'s output in `directory` as one bootstrap with static resources: Envoy's
    validation then builds the listener itself (every filter, matcher, regex and CEL
    expression), which it does not for resources read from files."""

    def static(name: str) -> list[dict[str, Any]]:
        document = json.loads((directory / name).read_text(encoding="utf-8"))
        return [{k: v for k, v in r.items() if k != "@type"} for r in document["resources"]]

    boot: dict[str, Any] = yaml.safe_load((directory / "bootstrap.yaml").read_text("utf-8"))
    del boot["dynamic_resources"]
    boot["static_resources"] = {"listeners": static("lds.json"), "clusters": static("cds.json")}
    return boot
