"""The bootstrap `opsgate envoy-config` writes, run by a real Envoy in front of the reference
upstream with opsgate as its authorizer: what each knob is there for, seen from a caller.

The door's own behaviour (answers, records, refusals) is tests/e2e/test_envoy_door*.py's; here it
is only the witness that the bootstrap wires Envoy to it as intended.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.api_core import exceptions, operations_v1
from google.longrunning import operations_pb2

from gateway.config import Settings, load_settings
from gateway.envoy.bootstrap import GRPC_LISTENER, REST_LISTENER, EnvoyLayout, render_bootstrap
from gateway.outcome import CallOutcome, MemorySink
from gateway.reference_upstream import ReferenceUpstream
from gateway.server import Gateway, start_gateway
from gateway.testing.envoy import EnvoyProcess, envoy_available, envoy_process
from gateway.testing.loop import LoopThread
from gateway.testing.ports import free_port
from gateway.testing.upstream import running_upstream, start_controlled_upstream
from tests.support.bearer import with_bearer
from tests.support.stack import Identity, make_identity, quiet_audit_yaml

pytestmark = pytest.mark.skipif(not envoy_available(), reason="no envoy binary")

GET = "/google.longrunning.Operations/GetOperation"
NAME = "projects/acme/locations/us/operations/envoy-1"
POLICY = """
allow:
  - resource: projects/acme
    bindings:
      - role: roles/contactcenterinsights.admin
        members: [allAuthenticatedUsers]
"""


@dataclass
class World:
    upstream: ReferenceUpstream
    gateway: Gateway
    sink: MemorySink
    envoy: EnvoyProcess
    identity: Identity
    settings: Settings

    def client(self, token: str | None, channel: grpc.Channel) -> operations_v1.OperationsClient:
        return operations_v1.OperationsClient(with_bearer(channel, token))

    def rest(
        self, method: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(
            self.envoy.url(REST_LISTENER, path),
            method=method,
            headers=headers or {},
            data=b"{}" if method == "POST" else None,
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return reply.status, dict(reply.headers), reply.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def bearer(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.identity.token()}"}

    def checks(self, listener: str) -> int:
        """Check calls Envoy made on one listener so far (answered either way)."""
        stats = self.envoy.stats(rf"^http\.{listener}\.ext_authz\.(ok|denied|error)$")
        return sum(stats.values())

    def outcome_of(self, request_id: str, timeout: float = 10.0) -> CallOutcome:
        """The record of one call, once written (an allowed call's waits for the access log)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for outcome in self.sink.outcomes():
                if outcome.call.request_id == request_id:
                    return outcome
            time.sleep(0.05)
        raise AssertionError(f"no record for {request_id}: {self.sink.outcomes()}")


def _authorizer_settings(directory: Path, identity: Identity) -> Settings:
    policy = directory / "policy.yaml"
    policy.write_text(POLICY)
    path = directory / "opsgate.yaml"
    path.write_text(
        "listen: 127.0.0.1:0\nenvoy: {completion_timeout_s: 60}\n"
        + identity.issuer_yaml()
        + f"authorization:\n  policy_file: {policy}\n"
        + quiet_audit_yaml(directory)
    )
    return load_settings(path)


def _layout(upstream: str, authorizer: str) -> EnvoyLayout:
    return EnvoyLayout(
        listen="127.0.0.1:0",
        rest_listen="127.0.0.1:0",
        upstream=upstream,
        authorizer=authorizer,
        admin="127.0.0.1:0",
        longest_call_s=30,
    )


@pytest.fixture(scope="module")
def world(loop: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("envoy-bootstrap")
    identity = make_identity(directory)
    with running_upstream(loop, seed=False) as upstream:
        upstream.store.create(NAME, finish_after=None)
        settings = _authorizer_settings(directory, identity)
        sink = MemorySink()
        gateway = loop.run(start_gateway(settings, sink=sink))
        try:
            bootstrap = render_bootstrap(settings, _layout(upstream.address, gateway.address))
            with envoy_process(bootstrap) as envoy:
                yield World(upstream, gateway, sink, envoy, identity, settings)
        finally:
            loop.run(gateway.stop(0))


@pytest.fixture
def grpc_channel(world: World) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(world.envoy.address(GRPC_LISTENER)) as channel:
        yield channel


def _request_id_of(call: Any) -> str:
    """x-request-id of an answer (the authorizer puts its call's id on every answer)."""
    metadata = dict(call.initial_metadata() or ()) | dict(call.trailing_metadata() or ())
    return str(metadata["x-request-id"])


# --- gRPC listener ------------------------------------------------------------------------------


def test_an_allowed_grpc_call_is_answered_and_recorded_with_the_status_envoy_logged(
    world: World, grpc_channel: grpc.Channel
) -> None:
    get = grpc_channel.unary_unary(GET)
    request = operations_pb2.GetOperationRequest(name=NAME).SerializeToString()
    token = world.identity.token()
    reply, call = get.with_call(request, metadata=[("authorization", f"Bearer {token}")])
    assert operations_pb2.Operation.FromString(reply).name == NAME
    outcome = world.outcome_of(_request_id_of(call))
    assert outcome.code == 0
    # Ended by Envoy's access-log entry (the call id travelled as dynamic metadata), not by
    # the wait running out.
    assert "via_upstream" in outcome.detail


def test_a_refused_grpc_call_gets_the_authorizers_status_and_never_reaches_upstream(
    world: World, grpc_channel: grpc.Channel
) -> None:
    before = len(world.upstream.calls())
    with pytest.raises(exceptions.Unauthenticated):
        world.client(None, grpc_channel).get_operation(NAME)
    with pytest.raises(exceptions.PermissionDenied):
        world.client(world.identity.token(), grpc_channel).get_operation(
            "projects/other/locations/us/operations/x"
        )
    assert len(world.upstream.calls()) == before


def test_the_upstream_sees_envoys_request_id_and_the_verified_identity_only(
    world: World, grpc_channel: grpc.Channel
) -> None:
    client = world.client(world.identity.token(), grpc_channel)
    client.get_operation(
        NAME,
        metadata=[("x-request-id", "caller-chosen"), ("x-opsgate-principal", "user:mallory")],
    )
    record = world.upstream.calls()[-1]
    assert record.header("x-request-id") != "caller-chosen"
    principal = record.header("x-opsgate-principal")
    assert principal is not None and principal != "user:mallory"


# --- REST listener -----------------------------------------------------------------------------


def test_rest_paths_are_the_profiles_and_the_authorizer_decides_on_the_transcoded_call(
    world: World,
) -> None:
    status, _, body = world.rest("GET", f"/v1/{NAME}", world.bearer())
    assert status == 200
    assert json.loads(body)["name"] == NAME
    assert world.upstream.calls()[-1].method == "GetOperation"
    status, _, body = world.rest("POST", f"/v1/{NAME}:cancel", world.bearer())
    assert status == 200, body
    assert world.upstream.calls()[-1].method == "CancelOperation"
    status, _, body = world.rest(
        "GET", "/v1/projects/acme/locations/us/operations?pageSize=1", world.bearer()
    )
    assert status == 200
    assert [op["name"] for op in json.loads(body)["operations"]] == [NAME]


def test_a_refused_rest_call_gets_googles_json_error_because_the_listener_says_rest(
    world: World,
) -> None:
    status, headers, body = world.rest("GET", f"/v1/{NAME}")
    assert status == 401
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert (error["code"], error["status"]) == (401, "UNAUTHENTICATED")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/operations/x", 404),  # googleapis' own binding: not the profile's
        ("DELETE", f"/v1/{NAME}", 404),  # the profile gives DeleteOperation no REST path
        ("GET", "/v1/projects/acme/locations/us/operations?bogus=1", 400),
    ],
    ids=["googleapis-binding", "unrouted-method", "unknown-query-parameter"],
)
def test_what_the_profile_does_not_route_is_refused_before_any_check(
    world: World, method: str, path: str, status: int
) -> None:
    before = world.checks(REST_LISTENER)
    assert world.rest(method, path, world.bearer())[0] == status
    assert world.checks(REST_LISTENER) == before


def test_a_header_with_an_underscore_is_refused_before_any_check(world: World) -> None:
    before = world.checks(REST_LISTENER)
    headers = world.bearer() | {"x_opsgate_principal": "user:admin@acme.example"}
    assert world.rest("GET", f"/v1/{NAME}", headers)[0] == 400
    assert world.checks(REST_LISTENER) == before


# --- failing closed ------------------------------------------------------------------------------


def test_with_the_authorizer_unreachable_a_grpc_caller_sees_unavailable(
    world: World, tmp_path: Path
) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    bootstrap = render_bootstrap(world.settings, _layout(world.upstream.address, nobody))
    before = len(world.upstream.calls())
    with (
        envoy_process(bootstrap, name="envoy-no-authorizer") as envoy,
        grpc.insecure_channel(envoy.address(GRPC_LISTENER)) as channel,
    ):
        # A raw call: the client library would retry UNAVAILABLE for minutes.
        get = channel.unary_unary(GET)
        request = operations_pb2.GetOperationRequest(name=NAME).SerializeToString()
        with pytest.raises(grpc.RpcError) as failed:
            get(
                request,
                metadata=[("authorization", f"Bearer {world.identity.token()}")],
                timeout=10,
            )
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        status = urllib.request.Request(envoy.url(REST_LISTENER, f"/v1/{NAME}"))
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(status, timeout=10)
        assert refused.value.code == 503
    assert len(world.upstream.calls()) == before


# --- stopping -----------------------------------------------------------------------------------


def test_a_drained_stop_answers_the_call_in_flight_and_reports_its_ending(
    world: World, loop: LoopThread
) -> None:
    """The harness's stop() drains before SIGTERM: the call in flight is answered, and its
    access-log entry reaches opsgate (SIGTERM alone would lose it)."""
    slow = loop.run(start_controlled_upstream())
    slow.store.create(NAME, finish_after=None)
    slow.delay.delay_s = 1.5
    try:
        bootstrap = render_bootstrap(world.settings, _layout(slow.address, world.gateway.address))
        envoy = envoy_process(bootstrap, name="envoy-drained")
        with envoy, grpc.insecure_channel(envoy.address(GRPC_LISTENER)) as channel:
            get = channel.unary_unary(GET)
            request = operations_pb2.GetOperationRequest(name=NAME).SerializeToString()
            token = world.identity.token()
            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(
                    get.with_call,
                    request,
                    metadata=[("authorization", f"Bearer {token}")],
                    timeout=20,
                )
                deadline = time.monotonic() + 10
                while envoy.active_requests() == 0 and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert envoy.active_requests() == 1
                assert envoy.stop() == 0
                reply, call = pending.result()
        assert operations_pb2.Operation.FromString(reply).name == NAME
        outcome = world.outcome_of(_request_id_of(call))
        assert outcome.code == 0
        assert "via_upstream" in outcome.detail
    finally:
        loop.run(slow.stop())
