"""The REST/JSON door end to end: real servers, real tokens, the example policy, the same chain.

Every REST call runs through the gateway's own pipeline and forwarder in process, so it is
authenticated, authorized, audited and forwarded exactly as the same call over gRPC: the JSON
equals the gRPC answer, and the audit outcome is the same.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from google.api_core import exceptions as core_exceptions
from google.api_core.operations_v1 import AbstractOperationsClient, OperationsRestTransport
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.oauth2.credentials import Credentials
from google.protobuf import json_format

from gateway.authn.settings import CertificateIdentity, ClientCertificateConfig
from gateway.config import Settings
from gateway.errors import StatusCode
from gateway.outcome import CallOutcome, MemorySink
from gateway.profile import ServiceProfile
from gateway.reference_upstream import start_reference_upstream
from gateway.reference_upstream.seed import (
    ACME_PROD_EU,
    DONE_OPERATION,
    FAILED_OPERATION,
    SUPPORT_TIER2_VIEW,
    TIER1_OPERATION,
    TIER2_OPERATION,
)
from gateway.rest.routes import Matched, RouteTable
from gateway.rest.server import RestDoor, start_rest_door
from gateway.rest.settings import RestSettings
from gateway.rest.status import HTTP_STATUS
from gateway.rest.tls import server_ssl_context
from gateway.server import Gateway, start_gateway
from gateway.testing.loop import LoopThread
from gateway.upstream.forwarder import UpstreamForwarder, UpstreamHeaders
from tests.support.bearer import with_bearer
from tests.support.certs import make_pki, requiring_client_certs
from tests.support.policy_cases import ALICE, BOB, CASES, ERIN, NOT_FOUND, OK, STRANGER, Who
from tests.support.probe_upstream import ProbeServicer, probe_upstream
from tests.support.stack import EXAMPLE_POLICY, Identity, Stack, gateway_settings, running_stack

GRPC_NAMES = {"get": "GetOperation", "list": "ListOperations", "cancel": "CancelOperation"}
# Plain HTTP to 127.0.0.1, never through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def forwarder_for(settings: Settings, gateway: Gateway) -> UpstreamForwarder:
    """The forwarder start_gateway builds, on the gateway's own upstream channel.

    Until the door is wired into start_gateway (which will hand it the same handler object).
    """
    auth = settings.authentication
    headers = UpstreamHeaders(
        forward_authorization=auth.forward_authorization, identity_header=auth.identity_header
    )
    return UpstreamForwarder(gateway.channel, settings.forwarding.target, headers)


def open_door(loop: LoopThread, settings: Settings, gateway: Gateway) -> RestDoor:
    pipeline = gateway.pipeline
    return loop.run(
        start_rest_door(
            RestSettings("127.0.0.1:0"),
            pipeline.runner,
            forwarder_for(settings, gateway),
            pipeline.profile,
            ssl_context=server_ssl_context(settings.tls) if settings.tls else None,
        )
    )


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


def http(
    door: RestDoor,
    method: str,
    path: str,
    token: str | None = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
) -> Reply:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    scheme = "https" if tls else "http"
    request = urllib.request.Request(
        f"{scheme}://{door.address}{path}", data=body, method=method, headers=sent
    )
    opener = (
        urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=tls)
        )
        if tls
        else _OPENER
    )
    try:
        with opener.open(request, timeout=10) as response:
            return Reply(response.status, dict(response.headers), json.loads(response.read()))
    except urllib.error.HTTPError as err:
        with err:
            return Reply(err.code, dict(err.headers), json.loads(err.read()))


@dataclass
class RestStack:
    stack: Stack
    door: RestDoor

    def token(self, who: Who) -> str:
        return self.stack.identity.token(**who.claims())

    def grpc_stub(self, who: Who) -> operations_pb2_grpc.OperationsStub:
        channel = with_bearer(self.stack.raw_gateway_channel, self.token(who))
        return operations_pb2_grpc.OperationsStub(channel)

    def upstream_calls(self) -> int:
        return len(self.stack.upstream.calls())

    def new_outcomes(self, action: Callable[[], object], expected: int = 1) -> list[CallOutcome]:
        """The outcomes recorded for `action`. Over gRPC the status can reach the client just
        before the audit stage's `finally` records it, so wait for `expected` of them."""
        before = len(self.stack.sink.outcomes())
        action()
        _wait_for(lambda: len(self.stack.sink.outcomes()) >= before + expected)
        return self.stack.sink.outcomes()[before:]


@pytest.fixture(scope="module")
def rest(loop: LoopThread, identity: Identity) -> Iterator[RestStack]:
    with running_stack(loop, identity, seed=True, policy=EXAMPLE_POLICY) as stack:
        settings = gateway_settings(stack.upstream.address, identity, EXAMPLE_POLICY)
        door = open_door(loop, settings, stack.gateway)
        try:
            yield RestStack(stack, door)
        finally:
            loop.run(door.stop(0))


def _as_dict(message: Any) -> dict[str, Any]:
    converted: dict[str, Any] = json_format.MessageToDict(message)
    return converted


# -- the answers are the gRPC answers, as Google's REST APIs write them


@pytest.mark.parametrize(
    "name", [DONE_OPERATION, FAILED_OPERATION, TIER2_OPERATION], ids=["done", "failed", "view"]
)
def test_get_is_the_grpc_answer_as_json(rest: RestStack, name: str) -> None:
    reply = http(rest.door, "GET", f"/v1/{name}", rest.token(ALICE))
    expected = rest.grpc_stub(ALICE).GetOperation(operations_pb2.GetOperationRequest(name=name))
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.body == _as_dict(expected)
    assert reply.body["name"] == name


@pytest.mark.parametrize("parent", [ACME_PROD_EU, SUPPORT_TIER2_VIEW], ids=["location", "view"])
@pytest.mark.parametrize("style", ["camelCase", "snake_case"])
def test_list_pages_like_grpc(rest: RestStack, parent: str, style: str) -> None:
    size_key, token_key = (
        ("pageSize", "pageToken") if style == "camelCase" else ("page_size", "page_token")
    )
    stub = rest.grpc_stub(ALICE)
    token, pages = "", 0
    while True:
        query = f"?{size_key}=1" + (f"&{token_key}={token}" if token else "")
        reply = http(rest.door, "GET", f"/v1/{parent}/operations{query}", rest.token(ALICE))
        expected = stub.ListOperations(
            operations_pb2.ListOperationsRequest(name=parent, page_size=1, page_token=token)
        )
        assert reply.status == 200
        assert reply.body == _as_dict(expected)
        pages += 1
        token = reply.body.get("nextPageToken", "")
        if not token:
            break
        assert len(reply.body["operations"]) == 1
    assert pages >= 2 if parent == ACME_PROD_EU else pages >= 1


def test_list_filter(rest: RestStack) -> None:
    reply = http(
        rest.door, "GET", f"/v1/{ACME_PROD_EU}/operations?filter=done%3Dtrue", rest.token(ALICE)
    )
    expected = rest.grpc_stub(ALICE).ListOperations(
        operations_pb2.ListOperationsRequest(name=ACME_PROD_EU, filter="done=true")
    )
    assert reply.status == 200
    assert reply.body == _as_dict(expected)
    assert all(op["done"] for op in reply.body["operations"])


def test_cancel_answers_empty_json_and_reaches_the_upstream(rest: RestStack) -> None:
    before = rest.upstream_calls()
    # erin's custom role holds authorizedOperations.cancel; no predefined role does.
    reply = http(rest.door, "POST", f"/v1/{TIER1_OPERATION}:cancel", rest.token(ERIN), b"{}")
    assert (reply.status, reply.body) == (200, {})
    assert reply.body == _as_dict(
        rest.grpc_stub(ERIN).CancelOperation(
            operations_pb2.CancelOperationRequest(name=TIER1_OPERATION)
        )
    )
    calls = rest.stack.upstream.calls()[before:]
    assert [(c.method, c.name) for c in calls] == [("CancelOperation", TIER1_OPERATION)] * 2
    after = http(rest.door, "GET", f"/v1/{TIER1_OPERATION}", rest.token(ALICE))
    assert after.body["done"] is True
    assert after.body["error"]["code"] == grpc.StatusCode.CANCELLED.value[0]


def test_the_upstream_gets_the_principal_not_the_token_or_cookies(rest: RestStack) -> None:
    before = rest.upstream_calls()
    http(
        rest.door,
        "GET",
        f"/v1/{DONE_OPERATION}",
        rest.token(ALICE),
        headers={"Cookie": "session=1", "X-Opsgate-Principal": "user:forged@x", "X-Custom": "kept"},
    )
    (call,) = rest.stack.upstream.calls()[before:]
    assert call.header("x-opsgate-principal") == "user:alice@acme.example"
    assert call.header("x-custom") == "kept"
    assert call.header("authorization") is None
    assert call.header("cookie") is None


def test_request_id_header_is_the_audited_one(rest: RestStack) -> None:
    replies: list[Reply] = []
    outcomes = rest.new_outcomes(
        lambda: replies.append(http(rest.door, "GET", f"/v1/{DONE_OPERATION}", rest.token(ALICE)))
    )
    (outcome,) = outcomes
    assert replies[0].headers["X-Request-Id"] == outcome.call.request_id


# -- google-api-core's own REST client


def _api_core_client(
    door: RestDoor, token: str, profile: ServiceProfile
) -> AbstractOperationsClient:
    http_options: dict[str, list[dict[str, str]]] = {}
    for method, rule in profile.http_rules:
        option = {"method": rule.verb.lower(), "uri": rule.template.text}
        if rule.body:
            option["body"] = rule.body
        key = "google.longrunning.Operations." + method.rsplit("/", 1)[-1]
        http_options.setdefault(key, []).append(option)
    transport = OperationsRestTransport(
        # The scheme goes in `host`: OperationsRestTransport takes url_scheme but does not pass
        # it on to its base class (google-api-core 2.44), so "http" there would be ignored.
        host=f"http://{door.address}",
        credentials=Credentials(token=token),
        http_options=http_options,
    )
    return AbstractOperationsClient(transport=transport)


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)


@pytest.mark.usefixtures("no_proxy")
def test_google_api_core_rest_client(rest: RestStack) -> None:
    client = _api_core_client(rest.door, rest.token(ALICE), rest.stack.gateway.pipeline.profile)
    stub = rest.grpc_stub(ALICE)
    got = client.get_operation(DONE_OPERATION)
    expected_op = stub.GetOperation(operations_pb2.GetOperationRequest(name=DONE_OPERATION))
    assert _as_dict(got) == _as_dict(expected_op)  # a Struct's key order may differ in bytes
    listed = [op.name for op in client.list_operations(ACME_PROD_EU, "", page_size=1)]
    expected = stub.ListOperations(operations_pb2.ListOperationsRequest(name=ACME_PROD_EU))
    assert listed == [op.name for op in expected.operations]
    assert len(listed) >= 2  # so paging (page_size=1) really followed nextPageToken
    view = [op.name for op in client.list_operations(SUPPORT_TIER2_VIEW, "")]
    assert view == [TIER2_OPERATION]
    before = rest.upstream_calls()
    client.cancel_operation(DONE_OPERATION)
    assert rest.stack.upstream.calls()[before].method == "CancelOperation"


@pytest.mark.usefixtures("no_proxy")
def test_google_api_core_rest_client_with_its_default_paths(rest: RestStack) -> None:
    # Google's default Operations paths ({name=**/operations/*}) land on our rules as well.
    client = AbstractOperationsClient(
        credentials=Credentials(token=rest.token(BOB)),
        client_options={"api_endpoint": f"http://{rest.door.address}"},
    )
    assert client.get_operation(DONE_OPERATION).name == DONE_OPERATION
    with pytest.raises(core_exceptions.Forbidden) as denied:  # api-core's class for HTTP 403
        client.cancel_operation(DONE_OPERATION)
    assert denied.value.code == 403
    assert denied.value.reason == "IAM_PERMISSION_DENIED"
    assert denied.value.domain == "contactcenterinsights.googleapis.com"
    assert denied.value.metadata == {
        "permission": "contactcenterinsights.operations.cancel",
        "resource": DONE_OPERATION,
    }


# -- refusals: Google's JSON errors, the same audit record, and nothing reaches the upstream


def _same_audit_fields(outcome: CallOutcome) -> tuple[Any, ...]:
    call = outcome.call
    return (
        call.method,
        outcome.code,
        outcome.message,
        outcome.reason,
        outcome.detail,
        call.peer,
        call.principal,
        call.resource_name,
        call.access,
        call.verdict.decision if call.verdict else None,
        call.request,
    )


def test_denied_is_403_with_iam_error_and_audited_like_grpc(rest: RestStack) -> None:
    replies: list[Reply] = []
    before = rest.upstream_calls()
    (via_rest,) = rest.new_outcomes(
        lambda: replies.append(
            http(rest.door, "POST", f"/v1/{DONE_OPERATION}:cancel", rest.token(BOB), b"{}")
        )
    )

    def grpc_cancel() -> None:
        with pytest.raises(grpc.RpcError) as err:
            rest.grpc_stub(BOB).CancelOperation(
                operations_pb2.CancelOperationRequest(name=DONE_OPERATION)
            )
        assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED

    (via_grpc,) = rest.new_outcomes(grpc_cancel)
    assert rest.upstream_calls() == before
    reply = replies[0]
    permission = "contactcenterinsights.operations.cancel"
    assert reply.status == 403
    assert reply.body == {
        "error": {
            "code": 403,
            "message": f"Permission '{permission}' denied on resource '{DONE_OPERATION}' "
            "(or it may not exist).",
            "status": "PERMISSION_DENIED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "IAM_PERMISSION_DENIED",
                    "domain": "contactcenterinsights.googleapis.com",
                    "metadata": {"permission": permission, "resource": DONE_OPERATION},
                }
            ],
        }
    }
    assert reply.headers["X-Request-Id"] == via_rest.call.request_id
    assert _same_audit_fields(via_rest) == _same_audit_fields(via_grpc)
    assert via_rest.code is StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "CREDENTIALS_MISSING"),
        ("Basic dTpw", "CREDENTIALS_MISSING"),
        ("Bearer junk", "ACCESS_TOKEN_TYPE_UNSUPPORTED"),
    ],
    ids=["no-header", "basic", "garbage-token"],
)
def test_unauthenticated_is_401(rest: RestStack, header: str | None, reason: str) -> None:
    before = rest.upstream_calls()
    headers = {"Authorization": header} if header else {}
    replies: list[Reply] = []
    (outcome,) = rest.new_outcomes(
        lambda: replies.append(http(rest.door, "GET", f"/v1/{DONE_OPERATION}", headers=headers))
    )
    reply = replies[0]
    assert reply.status == 401
    assert reply.body["error"]["status"] == "UNAUTHENTICATED"
    assert reply.body["error"]["details"][0]["reason"] == reason
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert (outcome.code, outcome.reason) == (StatusCode.UNAUTHENTICATED, reason)
    assert rest.upstream_calls() == before


def test_invalid_name_is_400_through_the_chain(rest: RestStack) -> None:
    before = rest.upstream_calls()
    path = "/v1/projects/acme-prod/locations/us-central1/operations/a%2Fb"
    replies: list[Reply] = []
    (outcome,) = rest.new_outcomes(
        lambda: replies.append(http(rest.door, "GET", path, rest.token(ALICE)))
    )
    assert replies[0].status == 400
    assert replies[0].body["error"]["status"] == "INVALID_ARGUMENT"
    assert replies[0].body["error"]["details"][0]["reason"] == "RESOURCE_NAME_INVALID"
    assert (outcome.code, outcome.reason) == (
        StatusCode.INVALID_ARGUMENT,
        "RESOURCE_NAME_INVALID",
    )
    assert rest.upstream_calls() == before


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("GET", "/", 404, None),
        ("GET", "/v1/projects/acme-prod/operations/1", 404, None),
        ("DELETE", f"/v1/{DONE_OPERATION}", 405, "GET"),
        ("GET", f"/v1/{DONE_OPERATION}:cancel", 405, "POST"),
    ],
    ids=["root", "no-rule", "delete-not-routed", "get-on-cancel"],
)
def test_unknown_path_or_verb_is_json_and_not_a_call(
    rest: RestStack, method: str, path: str, status: int, allow: str | None
) -> None:
    before = rest.upstream_calls()
    replies: list[Reply] = []
    outcomes = rest.new_outcomes(
        lambda: replies.append(http(rest.door, method, path, rest.token(ALICE))), expected=0
    )
    reply = replies[0]
    assert reply.status == status
    assert reply.body["error"]["code"] == status
    assert reply.body["error"]["status"] == ("NOT_FOUND" if status == 404 else "UNIMPLEMENTED")
    assert reply.headers.get("Allow") == allow
    assert outcomes == []  # not audited: no RPC was named
    assert rest.upstream_calls() == before


@pytest.mark.parametrize(
    ("query", "message"),
    [("pageSize=abc", "Invalid value"), ("access_token=t", 'Unknown name "access_token"')],
    ids=["bad-page-size", "token-in-url"],
)
def test_bad_query_is_400(rest: RestStack, query: str, message: str) -> None:
    reply = http(rest.door, "GET", f"/v1/{ACME_PROD_EU}/operations?{query}", rest.token(ALICE))
    assert reply.status == 400
    assert reply.body["error"]["status"] == "INVALID_ARGUMENT"
    assert message in reply.body["error"]["message"]


def test_body_over_the_limit_is_413(rest: RestStack) -> None:
    body = b'{"name": "' + b"x" * (RestSettings("h:1").max_body_bytes + 1) + b'"}'
    reply = http(rest.door, "POST", f"/v1/{DONE_OPERATION}:cancel", rest.token(ALICE), body)
    assert reply.status == 413
    assert reply.body["error"]["code"] == 413


# -- the example policy's whole decision table, over REST


def _rest_case(method: str, resource: str) -> tuple[str, str]:
    if method == "get":
        return "GET", f"/v1/{resource}"
    if method == "list":
        return "GET", f"/v1/{resource}/operations"
    return "POST", f"/v1/{resource}:cancel"


REST_CASES = [c for c in CASES if c[2] in GRPC_NAMES and "\x00" not in c[3]]


@pytest.mark.parametrize(
    ("who", "method", "resource", "expected"),
    [c[1:] for c in REST_CASES],
    ids=[c[0] for c in REST_CASES],
)
def test_example_policy_over_rest(
    rest: RestStack, who: Who, method: str, resource: str, expected: str
) -> None:
    verb, path = _rest_case(method, resource)
    routed = RouteTable.from_profile(rest.stack.gateway.pipeline.profile).match(verb, path)
    before = rest.upstream_calls()
    reply = http(rest.door, verb, path, rest.token(who), b"{}" if verb == "POST" else None)
    if not isinstance(routed, Matched):  # e.g. a name no REST path can spell: no such URL
        assert reply.status == 404
        return
    assert reply.status == HTTP_STATUS[StatusCode[expected]], reply.body
    assert (rest.upstream_calls() > before) == (expected in (OK, NOT_FOUND))


def test_stranger_is_denied_like_over_grpc(rest: RestStack) -> None:
    reply = http(rest.door, "GET", f"/v1/{DONE_OPERATION}", rest.token(STRANGER))
    assert reply.status == 403


# -- cancellation and deadlines reach the upstream call

OPEN_POLICY = """
allow:
  - resource: projects/acme
    bindings:
      - role: roles/contactcenterinsights.viewer
        members: [allAuthenticatedUsers]
"""
SLOW = "/v1/projects/acme/locations/l/operations/slow"


@dataclass
class Probe:
    door: RestDoor
    servicer: ProbeServicer
    sink: MemorySink
    token: str


@pytest.fixture
def probe(loop: LoopThread, identity: Identity, tmp_path: Path) -> Iterator[Probe]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(OPEN_POLICY)
    upstream = probe_upstream()
    address, servicer = loop.run(upstream.__aenter__())
    settings = gateway_settings(address, identity, policy)
    sink = MemorySink()
    gateway = loop.run(start_gateway(settings, sink=sink))
    door = open_door(loop, settings, gateway)
    try:
        yield Probe(door, servicer, sink, identity.token(email="pat@acme.example"))
    finally:
        loop.run(door.stop(0))
        loop.run(gateway.stop(0))
        loop.run(upstream.__aexit__(None, None, None))


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_client_that_disconnects_cancels_the_upstream_call(
    loop: LoopThread, probe: Probe
) -> None:
    host, port = probe.door.address.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as client:
        client.sendall(
            f"GET {SLOW} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {probe.token}\r\n\r\n".encode()
        )
        _wait_for(lambda: len(probe.servicer.deadlines) == 1)
    loop.run(_wait_set(probe.servicer))
    _wait_for(lambda: len(probe.sink.outcomes()) == 1)
    (outcome,) = probe.sink.outcomes()
    assert outcome.code is StatusCode.CANCELLED
    assert outcome.call.resource_name == SLOW.removeprefix("/v1/")


async def _wait_set(servicer: ProbeServicer) -> None:
    await asyncio.wait_for(servicer.cancelled.wait(), 5)


def test_x_server_timeout_is_the_deadline(loop: LoopThread, probe: Probe) -> None:
    started = time.monotonic()
    reply = http(probe.door, "GET", SLOW, probe.token, headers={"X-Server-Timeout": "0.3"})
    assert time.monotonic() - started < 5
    assert reply.status == 504
    assert reply.body["error"]["status"] == "DEADLINE_EXCEEDED"
    (seen,) = probe.servicer.deadlines
    assert seen is not None and 0 < seen < 0.35  # grpc-timeout is sent rounded up
    _wait_for(lambda: len(probe.sink.outcomes()) == 1)
    assert probe.sink.outcomes()[0].code is StatusCode.DEADLINE_EXCEEDED


def test_a_call_without_timeout_has_no_deadline(probe: Probe) -> None:
    reply = http(probe.door, "GET", "/v1/projects/acme/locations/l/operations/fast", probe.token)
    assert reply.status == 200
    assert probe.servicer.deadlines == [None]


def test_stop_gives_in_flight_calls_their_grace_then_cancels(
    loop: LoopThread, probe: Probe
) -> None:
    replies: list[BaseException | Reply] = []

    def slow_call() -> None:
        try:
            replies.append(http(probe.door, "GET", SLOW, probe.token))
        except (OSError, urllib.error.URLError) as exc:  # the door closed the connection
            replies.append(exc)

    worker = threading.Thread(target=slow_call)
    worker.start()
    _wait_for(lambda: len(probe.servicer.deadlines) == 1)
    started = time.monotonic()
    loop.run(probe.door.stop(0.2))
    assert 0.2 <= time.monotonic() - started < 5
    worker.join(5)
    loop.run(_wait_set(probe.servicer))
    assert [o.code for o in probe.sink.outcomes()] == [StatusCode.CANCELLED]
    assert replies and not isinstance(replies[0], Reply)


# -- TLS, and client-certificate identities, as on the gRPC listener

DEPLOYER_SPIFFE = "spiffe://acme.example/ns/ci/sa/deployer"
DEPLOYER = "serviceAccount:ci-deployer@acme-prod.iam.gserviceaccount.com"


def test_mtls_client_certificate_identity_over_rest(
    loop: LoopThread, identity: Identity, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path, client_sans=[x509.UniformResourceIdentifier(DEPLOYER_SPIFFE)])
    upstream = loop.run(start_reference_upstream("127.0.0.1:0", seed=True))
    base = gateway_settings(upstream.address, identity, EXAMPLE_POLICY)
    settings = dataclasses.replace(
        base,
        tls=requiring_client_certs(pki),
        authentication=dataclasses.replace(
            base.authentication,
            client_certificates=ClientCertificateConfig(
                identities=(CertificateIdentity(principal=DEPLOYER, san_uri=DEPLOYER_SPIFFE),),
                require_token=False,
            ),
        ),
    )
    gateway = loop.run(start_gateway(settings))
    door = open_door(loop, settings, gateway)
    try:
        client_tls = ssl.create_default_context(cafile=pki.ca_file)
        client_tls.load_cert_chain(pki.client.cert_file, pki.client.key_file)
        reply = http(door, "GET", f"/v1/{DONE_OPERATION}", tls=client_tls)  # no token at all
        assert reply.status == 200, reply.body
        assert upstream.calls()[-1].header("x-opsgate-principal") == DEPLOYER
        no_cert = ssl.create_default_context(cafile=pki.ca_file)
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            http(door, "GET", f"/v1/{DONE_OPERATION}", tls=no_cert)
    finally:
        loop.run(door.stop(0))
        loop.run(gateway.stop(0))
        loop.run(upstream.stop(0))
