"""Behind Envoy, one audit record per call, with its final status, under faults.

Calls run from several threads while Envoy is restarted (gracefully and by SIGKILL), while the
access-log stream to opsgate is cut, and while opsgate itself is restarted. After each run:
no request id is recorded twice; every call opsgate answered or let through is recorded, with
the status its caller saw (or, for an allowed call whose ending Envoy never reported, marked
COMPLETION_NOT_REPORTED); and no more calls reached the upstream than were let through.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc

from gateway.config import load_settings
from gateway.envoy.bootstrap import AUTHORIZER_CLUSTER, GRPC_LISTENER, EnvoyLayout, render_bootstrap
from gateway.envoy.completion import NOT_REPORTED_REASON
from gateway.errors import StatusCode
from gateway.outcome import CallOutcome, MemorySink
from gateway.reference_upstream import ReferenceUpstream
from gateway.reference_upstream.seed import DONE_OPERATION
from gateway.server import Gateway, start_gateway
from gateway.testing.envoy import EnvoyProcess, envoy_process
from gateway.testing.loop import LoopThread
from gateway.testing.ports import free_port, free_ports
from gateway.testing.upstream import running_upstream
from tests.support.policy_cases import ALICE, MISSING_PROD_OPERATION, STRANGER, Who
from tests.support.relay import Relay
from tests.support.stack import EXAMPLE_POLICY, Identity, quiet_audit_yaml

# Short enough for a test to see an unreported ending written; longer than any call here.
ENVOY_YAML = "envoy: {{completion_timeout_s: 3{http}}}\nshutdown_grace_s: 2\n"


@pytest.fixture(scope="module", params=["grpc", "http"])
def protocol(request: pytest.FixtureRequest) -> str:
    """How Envoy asks opsgate; every fault is run with both."""
    return str(request.param)


CALLS = [(ALICE, DONE_OPERATION), (ALICE, MISSING_PROD_OPERATION), (STRANGER, DONE_OPERATION)]
SAME_REQUEST_ID = ("x-request-id", "every-caller-sends-this-one")


@dataclass(frozen=True)
class Seen:
    """What one caller got: the status, and the gateway's request id if opsgate answered."""

    code: str
    request_id: str | None


@dataclass
class World:
    loop: LoopThread
    identity: Identity
    upstream: ReferenceUpstream
    settings_path: Path
    sink: MemorySink
    gateway: Gateway
    envoy: EnvoyProcess
    relay: Relay

    def restart_gateway(self) -> None:
        self.loop.run(self.gateway.stop(2.0))
        settings = load_settings(self.settings_path)
        self.gateway = self.loop.run(start_gateway(settings, sink=self.sink))

    def settled(self, timeout: float = 15.0) -> None:
        """Every allowed call's record written (reported, or not reported in time)."""
        deadline = time.monotonic() + timeout
        door = self.gateway.envoy
        assert door is not None
        while door.join.waiting and time.monotonic() < deadline:
            time.sleep(0.05)
        assert door.join.waiting == 0


def access_log_via(bootstrap: dict[str, Any], address: str) -> dict[str, Any]:
    """The bootstrap with Envoy's access log sent through `address` (a Relay) to opsgate."""
    changed = copy.deepcopy(bootstrap)
    clusters = changed["static_resources"]["clusters"]
    (authorizer,) = (c for c in clusters if c["name"] == AUTHORIZER_CLUSTER)
    relayed = copy.deepcopy(authorizer)
    relayed["name"] = "access_log_relay"
    host, _, port = address.rpartition(":")
    endpoint = relayed["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    endpoint["address"] = {"socket_address": {"address": host, "port_value": int(port)}}
    relayed["load_assignment"]["cluster_name"] = "access_log_relay"
    clusters.append(relayed)
    for listener in changed["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                for log in network_filter["typed_config"].get("access_log", []):
                    service = log["typed_config"]["common_config"]["grpc_service"]
                    service["envoy_grpc"]["cluster_name"] = "access_log_relay"
    return changed


@contextmanager
def world(loop: LoopThread, identity: Identity, tmp_path: Path, protocol: str) -> Iterator[World]:
    with ExitStack() as stack:
        upstream = stack.enter_context(running_upstream(loop, seed=True))
        path = tmp_path / "opsgate.yaml"
        # Fixed ports: opsgate restarts on the same ones, where Envoy looks for it.
        grpc_port, http_port = free_ports(2)
        http = f", http_listen: 127.0.0.1:{http_port}" if protocol == "http" else ""
        path.write_text(
            f"listen: 127.0.0.1:{grpc_port}\nupstream: {{target: {upstream.address}}}\n"
            + identity.issuer_yaml()
            + identity.policy_yaml(EXAMPLE_POLICY)
            + quiet_audit_yaml(tmp_path)
            + ENVOY_YAML.format(http=http)
        )
        settings = load_settings(path)
        sink = MemorySink()
        gateway = loop.run(start_gateway(settings, sink=sink))
        relay = loop.run(Relay(gateway.address).start())
        stack.callback(lambda: loop.run(relay.stop()))
        layout = EnvoyLayout(
            listen="127.0.0.1:0",
            upstream=upstream.address,
            authorizer=gateway.address,
            admin="127.0.0.1:0",
            longest_call_s=2.0,
        )
        bootstrap = access_log_via(render_bootstrap(settings, layout), relay.address)
        envoy = stack.enter_context(envoy_process(bootstrap, name="envoy-ledger"))
        running = World(loop, identity, upstream, path, sink, gateway, envoy, relay)
        stack.callback(lambda: loop.run(running.gateway.stop(0)))
        yield running


def one_call(world: World, who: Who, name: str) -> Seen:
    channel = grpc.insecure_channel(world.envoy.address(GRPC_LISTENER))
    with channel:
        stub = operations_pb2_grpc.OperationsStub(channel)
        token = world.identity.token(**who.claims())
        metadata = [("authorization", f"Bearer {token}"), SAME_REQUEST_ID]
        try:
            _, call = stub.GetOperation.with_call(
                operations_pb2.GetOperationRequest(name=name), metadata=metadata, timeout=5
            )
        except grpc.RpcError as err:
            trailers = dict(err.trailing_metadata() or ())
            initial = dict(err.initial_metadata() or ())
            request_id = trailers.get("x-request-id") or initial.get("x-request-id")
            return Seen(err.code().name, _ours(request_id))
        return Seen("OK", _ours(dict(call.initial_metadata()).get("x-request-id")))


def _ours(request_id: Any) -> str | None:
    """The gateway's request id (32 hex digits), not Envoy's or the caller's."""
    if isinstance(request_id, str) and len(request_id) == 32 and request_id.isalnum():
        return request_id
    return None


def under_load(world: World, fault: Callable[[World], None], seconds: float = 1.5) -> list[Seen]:
    """Calls from three threads for `seconds`, `fault` applied halfway."""
    seen: list[Seen] = []
    lock = threading.Lock()
    stop = threading.Event()

    def caller(offset: int) -> None:
        index = offset
        while not stop.is_set():
            who, name = CALLS[index % len(CALLS)]
            result = one_call(world, who, name)
            with lock:
                seen.append(result)
            index += 1

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(seconds / 2)
    fault(world)
    time.sleep(seconds / 2)
    stop.set()
    for thread in threads:
        thread.join(30)
    return seen


def check_ledger(world: World, seen: list[Seen], upstream_before: int) -> list[CallOutcome]:
    world.settled()
    records = world.sink.outcomes()
    ids = Counter(record.call.request_id for record in records)
    assert not [rid for rid, count in ids.items() if count > 1], "a call recorded twice"
    by_id = {record.call.request_id: record for record in records}
    answered = [s for s in seen if s.request_id is not None]
    assert answered, "no call was answered by opsgate"
    for call in answered:
        record = by_id.get(call.request_id)
        assert record is not None, f"{call} left without a record"
        if record.reason == NOT_REPORTED_REASON:
            assert call.code in ("OK", "NOT_FOUND", "UNAVAILABLE"), call
        else:
            assert record.code.name == call.code, (call, record.code, record.message)
    allowed = [r for r in records if r.call.verdict is not None and r.call.verdict.decision.allowed]
    reached = len(world.upstream.calls()) - upstream_before
    assert reached <= len(allowed), "the upstream saw calls nobody let through"
    return records


def test_one_record_per_call_and_the_callers_request_id_is_not_the_key(
    loop: LoopThread, identity: Identity, tmp_path: Path, protocol: str
) -> None:
    with world(loop, identity, tmp_path, protocol) as running:
        before = len(running.upstream.calls())
        seen = under_load(running, lambda w: None)
        records = check_ledger(running, seen, before)
        assert Counter(s.code for s in seen).keys() == {"OK", "NOT_FOUND", "PERMISSION_DENIED"}
        assert all(s.request_id is not None for s in seen)  # every answer names its record
        codes = {r.code for r in records}
        assert StatusCode.NOT_FOUND in codes and StatusCode.OK in codes  # the upstream's endings
        assert not [r for r in records if r.reason == NOT_REPORTED_REASON]


@pytest.mark.parametrize("drain", [True, False], ids=["graceful", "sigkill"])
def test_envoy_restarted_mid_load(
    loop: LoopThread, identity: Identity, tmp_path: Path, protocol: str, drain: bool
) -> None:
    with world(loop, identity, tmp_path, protocol) as running:
        before = len(running.upstream.calls())

        def restart(w: World) -> None:
            if drain:
                w.envoy.restart()
            else:
                w.envoy.kill()
                w.envoy.restart()

        check_ledger(running, under_load(running, restart), before)


def test_access_log_stream_cut_mid_load(
    loop: LoopThread, identity: Identity, tmp_path: Path, protocol: str
) -> None:
    with world(loop, identity, tmp_path, protocol) as running:
        before = len(running.upstream.calls())

        def cut(w: World) -> None:
            assert w.loop.run(w.relay.cut()) >= 1  # the access-log stream was open, and is cut

        check_ledger(running, under_load(running, cut), before)
        assert running.relay.connections >= 2  # Envoy opened a new stream after the cut


def test_authorizer_restarted_mid_load(
    loop: LoopThread, identity: Identity, tmp_path: Path, protocol: str
) -> None:
    with world(loop, identity, tmp_path, protocol) as running:
        before = len(running.upstream.calls())
        seen = under_load(running, World.restart_gateway, seconds=3.0)
        records = check_ledger(running, seen, before)
        # Calls Envoy refused while opsgate was down are answered UNAVAILABLE by Envoy itself.
        assert {s.code for s in seen} >= {"OK", "PERMISSION_DENIED"}
        assert len(records) >= len([s for s in seen if s.request_id is not None])


def test_calls_envoy_refuses_without_an_authorizer_are_recorded_from_its_log(
    loop: LoopThread, identity: Identity, tmp_path: Path, protocol: str
) -> None:
    """Envoy cannot reach the authorizer it asks (a dead port) but its access log still reaches
    opsgate: each call Envoy refused (UNAVAILABLE, failing closed) is recorded all the same."""
    with world(loop, identity, tmp_path, protocol) as running:
        dead = f"127.0.0.1:{free_port()}"
        layout = EnvoyLayout(
            listen="127.0.0.1:0",
            upstream=running.upstream.address,
            authorizer=dead,
            authorizer_http=dead if protocol == "http" else None,
            admin="127.0.0.1:0",
            longest_call_s=2.0,
        )
        settings = load_settings(running.settings_path)
        bootstrap = access_log_via(render_bootstrap(settings, layout), running.gateway.address)
        before = len(running.sink.outcomes())
        with envoy_process(bootstrap, name="envoy-no-authorizer") as envoy:
            running.envoy = envoy
            seen = [one_call(running, ALICE, DONE_OPERATION) for _ in range(5)]
            assert {s.code for s in seen} == {"UNAVAILABLE"}
            deadline = time.monotonic() + 10
            while len(running.sink.outcomes()) < before + 5 and time.monotonic() < deadline:
                time.sleep(0.05)
        unreached = running.sink.outcomes()[before:]
        assert len(unreached) == 5
        for record in unreached:
            assert record.code is StatusCode.UNAVAILABLE
            assert record.reason == "AUTHORIZER_UNREACHABLE"
            assert record.call.method == "/google.longrunning.Operations/GetOperation"
            assert record.call.principal is None  # nobody checked the token
            assert record.call.peer == "127.0.0.1"
