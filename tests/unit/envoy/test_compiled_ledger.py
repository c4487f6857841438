"""The compiled tier's records: each of Envoy's access-log entries, as Envoy 1.40 writes them, read
into one record naming the caller, the permission and the decision as opsgate's own records do."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from gateway.audit.recorder import AuditRecorder
from gateway.audit.sinks import MemorySink
from gateway.audit.writer import AuditWriter
from gateway.authn.factory import build_authn
from gateway.authn.settings import (
    AuthnSettings,
    GoogleAccessTokenConfig,
    GoogleIdTokenConfig,
    IntrospectionConfig,
    IssuerConfig,
    ServiceAccountJwtConfig,
)
from gateway.authorizer import PolicyHolder
from gateway.config import AuthzSettings, Settings, load_settings
from gateway.envoy.compiled import decisions
from gateway.envoy.compiled.authn_plan import plan_authn
from gateway.envoy.compiled.celexpr import FIELD_EXTRACTION, JWT_AUTHN
from gateway.envoy.compiled.ledger import (
    RECORD_KEY,
    UNREADABLE_REASON,
    CompiledLedger,
    Logged,
    principal_rules,
)
from gateway.envoy.compiled.resources import COMPILED_LOG_NAME, POLICY_ETAG_TAG
from gateway.envoy.compiled.routes import POLICY_ID_KEY, RBAC_NAMESPACE
from gateway.envoy.completion import CompletionJoin
from gateway.envoy.door import EnvoyDoor
from gateway.envoy.protos import HTTPAccessLogEntry, StreamAccessLogsMessage
from gateway.envoy.settings import EnvoySettings
from gateway.errors import INVALID_CREDENTIALS_MESSAGE, MISSING_CREDENTIALS_MESSAGE
from gateway.outcome import MemorySink as OutcomeMemorySink
from gateway.policy.loader import load_policy
from gateway.profile import load_profile
from gateway.testing.tokens import jwks, rsa_key

ISSUER = "https://idp.ledger.test"
OPS = "/google.longrunning.Operations/"
GET, NOPE = OPS + "GetOperation", OPS + "Nope"
OPERATION = "projects/acme/locations/us/operations/op-1"
PERMISSION = "contactcenterinsights.operations.get"
DENIED = f"Permission '{PERMISSION}' denied on the resource the call names (or it may not exist)."
REQUEST_ID = uuid.UUID("74132d9e-f05a-4273-99d6-0b44d0ff0fc1")
# Claim values that must never reach a record: the audience, a token id, the raw scope.
SECRET_CLAIMS = {"aud": "aud-never-recorded", "jti": "jti-never-recorded", "iat": 1796649634.0}

POLICY = """
allow:
  - resource: projects/acme
    bindings:
      - role: roles/contactcenterinsights.viewer
        members: [user:alice@acme.example]
      - role: roles/contactcenterinsights.viewer
        members: [group:ops@acme.example]
deny:
  - resource: projects/acme
    rules:
      - deniedPrincipals: [principal://goog/subject/mallory@acme.example]
        deniedPermissions: [contactcenterinsights.operations.get]
"""


@dataclass
class World:
    settings: Settings
    holder: PolicyHolder
    ledger: CompiledLedger
    writer: AuditWriter

    @property
    def etag(self) -> str:
        return self.holder.current.etag


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("ledger")
    (directory / "jwks.json").write_text(json.dumps(jwks(rsa_key())))
    (directory / "policy.yaml").write_text(POLICY)
    config = directory / "opsgate.yaml"
    config.write_text(
        "listen: 127.0.0.1:0\n"
        "authentication:\n"
        "  issuers:\n"
        f"    - issuer: {ISSUER}\n"
        "      audiences: [aud-never-recorded]\n"
        f"      jwks_file: {directory / 'jwks.json'}\n"
        "      groups_claim: groups\n"
        "authorization:\n"
        f"  policy_file: {directory / 'policy.yaml'}\n"
        "  allow_anonymous: true\n"
        "envoy: {}\n"
    )
    settings = load_settings(config, require_upstream=False)
    authz = settings.authorization
    profile = load_profile(authz.profile, authz.profile_file)
    holder = PolicyHolder(load_policy(authz.policy_file, profile.permissions))
    writer = AuditWriter(MemorySink())
    recorder = AuditRecorder(
        writer, service=profile.service, project="opsgate", policy_etag=lambda: holder.current.etag
    )
    ledger = CompiledLedger.build(settings.authentication, profile, recorder, holder)
    yield World(settings, holder, ledger, writer)
    writer.close(5)


def claims(email: str, **extra: Any) -> dict[str, Any]:
    return {
        "iss": ISSUER,
        "sub": "1234567890",
        "email": email,
        "email_verified": True,
        "exp": 1796650234.0,
        "scope": "https://www.googleapis.com/auth/cloud-platform",
        **SECRET_CLAIMS,
        **extra,
    }


@dataclass(frozen=True)
class Entry:
    """One of Envoy's entries, as the compiled listener's access log writes it."""

    policy_id: str | None
    result: str = "denied"
    claims: dict[str, Any] | None = None
    path: str = GET
    name: str | None = OPERATION
    status: str = "0"
    message: str = ""
    details: str = "via_upstream"
    trailers: bool = False  # an upstream's answer: its status in the trailers
    tag: str | None = "<etag>"  # "<etag>": the receiving policy's

    def message_for(self, etag: str) -> Any:
        logged = HTTPAccessLogEntry()
        common = logged.common_properties
        common.downstream_remote_address.socket_address.address = "10.1.2.3"
        common.downstream_remote_address.socket_address.port_value = 5555
        common.start_time.seconds = 1796649634
        common.start_time.nanos = 87569000
        common.duration.nanos = 2_024_454
        metadata = common.metadata.filter_metadata
        if self.name is not None:
            metadata[FIELD_EXTRACTION].update({"name": [self.name]})
        if self.claims is not None:
            metadata[JWT_AUTHN].update({"p0": self.claims})
        if self.policy_id is not None:
            rbac = {POLICY_ID_KEY: self.policy_id, "enforced_engine_result": self.result}
            metadata[RBAC_NAMESPACE].update(rbac)
        logged.request.path = self.path
        logged.request.request_id = str(REQUEST_ID)
        logged.response.response_code.value = 200
        where = logged.response.response_trailers if self.trailers else None
        where = where if where is not None else logged.response.response_headers
        where.update({"grpc-status": self.status, "grpc-message": self.message})
        logged.response.response_code_details = self.details
        logged.request.user_agent = "grpc-python/1.66.1"
        if self.tag is not None:
            tag = etag if self.tag == "<etag>" else self.tag
            logged.common_properties.custom_tags[POLICY_ETAG_TAG] = tag
        return logged


@dataclass(frozen=True)
class Expect:
    code: int
    reason: str | None = None
    member: str | None = None
    resource: str | None = None
    permission: str | None = None
    granted: bool | None = None
    trace: list[dict[str, Any]] = field(default_factory=list)  # the keys each entry must have
    compiled: dict[str, Any] = field(default_factory=dict)  # keys of compiledTier


ALICE, MALLORY, STRANGER = (
    claims("alice@acme.example"),
    claims("mallory@acme.example"),
    claims("nobody@elsewhere.example"),
)
OPS_MEMBER = claims("olga@acme.example", groups=["ops@acme.example"])
ALICE_MEMBER = "user:alice@acme.example"
VIEWER = "roles/contactcenterinsights.viewer"

CASES = [
    pytest.param(
        Entry("allow:0", "allowed", ALICE),
        Expect(
            0,
            member=ALICE_MEMBER,
            resource=OPERATION,
            permission=PERMISSION,
            granted=True,
            trace=[{"kind": "binding", "role": VIEWER, "member": ALICE_MEMBER}],
            compiled={"policyId": "allow:0", "engineResult": "allowed", "provider": "p0"},
        ),
        id="allowed-by-a-binding",
    ),
    pytest.param(
        Entry("allow:0,1", "allowed", OPS_MEMBER),
        Expect(
            0,
            member="user:olga@acme.example",
            resource=OPERATION,
            permission=PERMISSION,
            granted=True,
            trace=[{"kind": "binding", "role": VIEWER, "member": "group:ops@acme.example"}],
            compiled={"policyId": "allow:0,1"},
        ),
        id="allowed-one-of-several-bindings-named-exactly",
    ),
    pytest.param(
        Entry("allow:0", "allowed", ALICE, status="14", message="gone", trailers=True),
        Expect(
            14,
            "UPSTREAM_STATUS",
            ALICE_MEMBER,
            OPERATION,
            PERMISSION,
            True,
            [{"kind": "binding", "member": ALICE_MEMBER}],
        ),
        id="allowed-then-the-upstream-failed",
    ),
    pytest.param(
        Entry("deny:0/0", claims=MALLORY, status="7", message=DENIED),
        Expect(
            7,
            "IAM_PERMISSION_DENIED",
            "user:mallory@acme.example",
            OPERATION,
            PERMISSION,
            False,
            [
                {
                    "kind": "deny_rule",
                    "resource": "projects/acme",
                    "member": "principal://goog/subject/mallory@acme.example",
                }
            ],
            {"policyId": "deny:0/0"},
        ),
        id="denied-by-a-deny-rule",
    ),
    pytest.param(
        Entry(decisions.DEFAULT_DENY, claims=STRANGER, status="7", message=DENIED),
        Expect(
            7,
            "IAM_PERMISSION_DENIED",
            "user:nobody@elsewhere.example",
            OPERATION,
            PERMISSION,
            False,
            compiled={"policyId": "default-deny"},
        ),
        id="default-deny",
    ),
    pytest.param(
        Entry(decisions.DEFAULT_DENY, status="7", message=DENIED),
        Expect(7, "IAM_PERMISSION_DENIED", None, OPERATION, PERMISSION, False),
        id="anonymous",
    ),
    pytest.param(
        Entry(
            None,
            name=None,
            status="16",
            message=MISSING_CREDENTIALS_MESSAGE,
            details="jwt_authn_access_denied{Jwt_is_missing}",
        ),
        Expect(16, "CREDENTIALS_MISSING"),
        id="jwt-authn-refused-no-token",
    ),
    pytest.param(
        Entry(
            None,
            name=None,
            status="16",
            message=INVALID_CREDENTIALS_MESSAGE,
            details="jwt_authn_access_denied{Jwt_verification_fails}",
        ),
        Expect(16, "JWT_TOKEN_INVALID"),
        id="jwt-authn-refused-bad-token",
    ),
    pytest.param(
        Entry(
            decisions.INVALID_TOKEN,
            claims=claims("alice@acme.example", email_verified=False),
            status="16",
            message=INVALID_CREDENTIALS_MESSAGE,
        ),
        Expect(16, "JWT_TOKEN_INVALID", compiled={"policyId": "invalid-token"}),
        id="refused-invalid-token",
    ),
    pytest.param(
        Entry(
            decisions.INSUFFICIENT_SCOPE,
            claims=claims("alice@acme.example", scope="x"),
            status="7",
            message="Request had insufficient authentication scopes.",
        ),
        Expect(7, "ACCESS_TOKEN_SCOPE_INSUFFICIENT", ALICE_MEMBER),
        id="refused-insufficient-scope",
    ),
    pytest.param(
        Entry(decisions.UNIMPLEMENTED, claims=ALICE, path=NOPE, name=None, status="12"),
        Expect(12, "METHOD_NOT_IMPLEMENTED", ALICE_MEMBER),
        id="refused-unimplemented",
    ),
    pytest.param(
        Entry(decisions.INVALID_NAME, claims=ALICE, name="projects/acme/../x", status="3"),
        Expect(3, "RESOURCE_NAME_INVALID", ALICE_MEMBER, "projects/acme/../x"),
        id="refused-invalid-name",
    ),
    pytest.param(
        Entry("allow:0", "allowed", ALICE, tag="0123456789abcdef"),
        Expect(
            0,
            member=ALICE_MEMBER,
            resource=OPERATION,
            permission=PERMISSION,
            granted=True,
            compiled={"policyEtag": "0123456789abcdef", "policyEtagMismatch": True},
        ),
        id="another-policy-decided-it",
    ),
    pytest.param(
        Entry("allow:0", "allowed", ALICE, tag=None),
        Expect(
            0,
            member=ALICE_MEMBER,
            resource=OPERATION,
            permission=PERMISSION,
            granted=True,
            compiled={"policyEtagMismatch": True},
        ),
        id="no-etag-tag",
    ),
    pytest.param(
        Entry("allow:0", "allowed", STRANGER),
        Expect(
            0,
            member="user:nobody@elsewhere.example",
            resource=OPERATION,
            permission=PERMISSION,
            granted=True,
            trace=[{"kind": "binding", "role": VIEWER, "member": None}],
            compiled={"evaluator": {"granted": False}},
        ),
        id="the-evaluator-disagrees-the-enforced-decision-is-recorded",
    ),
    pytest.param(
        Entry("allow:0", "denied", ALICE, status="7"),
        Expect(7, "IAM_PERMISSION_DENIED", ALICE_MEMBER, OPERATION, PERMISSION, False),
        id="an-allow-id-reported-denied-is-no-grant",
    ),
    pytest.param(
        Entry("route:0", "allowed", ALICE, status="1", details="downstream_remote_disconnect"),
        Expect(1, "ENVOY_DOWNSTREAM_REMOTE_DISCONNECT", ALICE_MEMBER, OPERATION, PERMISSION),
        id="ended-before-the-policy",
    ),
]


@pytest.mark.parametrize(("given", "expect"), CASES)
def test_an_entry_becomes_one_record(world: World, given: Entry, expect: Expect) -> None:
    etag = world.etag
    logged = Logged(given.message_for(etag), REQUEST_ID.hex, 0.0, world.holder.current)
    record = world.ledger.log_entry(logged)
    text = json.dumps(record)
    payload = record["protoPayload"]
    metadata = payload["metadata"]
    assert record["insertId"] == REQUEST_ID.hex
    assert record["timestamp"] == "2026-12-07T13:20:34.087569Z"
    assert payload["methodName"] == given.path.lstrip("/").replace("/", ".")
    assert payload["requestMetadata"] == {
        "callerIp": "10.1.2.3",
        "callerSuppliedUserAgent": "grpc-python/1.66.1",
    }
    assert payload["status"].get("code", 0) == expect.code
    assert metadata.get("reason") == expect.reason
    assert metadata.get("principalMember") == expect.member
    if expect.member is not None:
        email = expect.member.partition(":")[2]
        # Another issuer's caller, as Cloud Audit Logs names a third party's: by the issuer's
        # own subject, never in Google's principal://goog/ namespace, and no principalEmail.
        assert payload["authenticationInfo"] == {
            "principalSubject": "principal://idp.ledger.test/subject/1234567890",
            "thirdPartyPrincipal": {"iss": ISSUER, "sub": "1234567890", "email": email},
        }
        assert metadata["tokenKind"] == "jwt"
    else:
        assert payload["authenticationInfo"] == {}
    assert payload.get("resourceName") == expect.resource
    if expect.granted is None:
        assert "decision" not in metadata and payload["authorizationInfo"] == []
    else:
        decision = metadata["decision"]
        assert decision["granted"] is expect.granted
        assert payload["authorizationInfo"] == [
            {
                "resource": OPERATION,
                "permission": expect.permission,
                "granted": expect.granted,
                "permissionType": "ADMIN_READ",
                "resourceAttributes": {
                    "service": "contactcenterinsights.googleapis.com",
                    "name": OPERATION,
                },
            }
        ]
        compiled_etag = {None: "unknown", "<etag>": etag}.get(given.tag, given.tag)
        assert decision["policyEtag"] == compiled_etag
        if expect.trace:
            assert len(decision["trace"]) == len(expect.trace)
            for step, keys in zip(decision["trace"], expect.trace, strict=True):
                assert {key: step.get(key) for key in keys} == keys
    compiled = metadata[RECORD_KEY]
    wanted = {"policyEtag": etag, **expect.compiled}
    if given.tag is None:
        del wanted["policyEtag"]
        assert "policyEtag" not in compiled
    for key, value in wanted.items():
        if isinstance(value, dict):
            assert {k: compiled[key][k] for k in value} == value
        else:
            assert compiled[key] == value
    if compiled.get("policyEtagMismatch"):
        assert compiled["receiverPolicyEtag"] == etag
        assert metadata["decision"]["trace"] == []
    # No claim is copied: only the caller's name, as opsgate's own authentication gives it
    # (the issuer's `sub` names the caller in authenticationInfo, and nowhere else).
    named = json.dumps(payload["authenticationInfo"])
    for secret in ("aud-never-recorded", "jti-never-recorded", "1796649634", "1234567890"):
        assert text.count(secret) == named.count(secret)
    for secret in ("aud-never-recorded", "jti-never-recorded", "1796649634"):
        assert secret not in text


def test_the_exact_binding_is_the_evaluators(world: World) -> None:
    """Envoy says one of bindings 0 and 1 granted it; the record names the one that did, with
    the evaluator's reason, as opsgate's own door would."""
    entry = Entry("allow:0,1", "allowed", OPS_MEMBER).message_for(world.etag)
    record = world.ledger.log_entry(Logged(entry, "r" * 32, 0.0, world.holder.current))
    decision = record["protoPayload"]["metadata"]["decision"]
    assert decision["reason"].startswith(f"{PERMISSION} granted on {OPERATION} by {VIEWER}")
    second = world.holder.current.bindings[1]
    assert [step["sourceLine"] for step in decision["trace"]] == [second.source_line]


def test_a_record_is_written_for_an_entry_that_cannot_be_read(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(logged: Logged) -> Any:
        raise ValueError("claim-value-never-logged")

    monkeypatch.setattr(world.ledger._reader, "read", broken)
    entry = Entry("allow:0", "allowed", ALICE).message_for(world.etag)
    before = world.ledger.unreadable
    with caplog.at_level(logging.ERROR, "opsgate"):
        line = world.ledger.render(Logged(entry, "f" * 32, 1796649634.5, world.holder.current))
    record = json.loads(line)
    metadata = record["protoPayload"]["metadata"]
    assert record["insertId"] == "f" * 32
    assert metadata["reason"] == UNREADABLE_REASON
    assert metadata[RECORD_KEY] == {"problems": ["unreadable: ValueError"]}
    assert world.ledger.unreadable == before + 1
    assert "claim-value-never-logged" not in caplog.text + line.decode()


def test_every_final_entry_is_queued_intermediate_ones_are_not(world: World) -> None:
    writer = AuditWriter(MemorySink())
    sink_lines = writer._sink
    recorder = AuditRecorder(
        writer, service="s", project="p", policy_etag=lambda: world.holder.current.etag
    )
    ledger = CompiledLedger.build(
        world.settings.authentication,
        load_profile(),
        recorder,
        world.holder,
    )
    final = Entry("allow:0", "allowed", ALICE).message_for(world.etag)
    interim = HTTPAccessLogEntry()
    interim.CopyFrom(final)
    interim.common_properties.intermediate_log_entry = True
    assert ledger.record(final) and not ledger.record(interim) and ledger.record(final)
    assert writer.close(5)
    assert isinstance(sink_lines, MemorySink)
    assert len(sink_lines.lines) == 2 == ledger.entries


def test_the_providers_rules_are_the_authenticators(tmp_path: Path) -> None:
    """Each compiled provider's callers are named by the very rules opsgate's own
    authentication applies to the same token (its verifiers, as the factory builds them)."""
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(jwks(rsa_key())))
    secret = tmp_path / "secret"
    secret.write_text("s")
    authentication = AuthnSettings(
        issuers=(
            IssuerConfig(issuer=ISSUER, audiences=("a",), jwks_file=jwks_file),
            IssuerConfig(
                issuer="https://sub.example",
                audiences=("a",),
                jwks_uri="https://sub.example/jwks",
                principal_claim="sub",
                groups_claim="roles",
                emails_verified=True,
            ),
            # What envoy-compile refuses: no provider of its own, and no crash here (every
            # `opsgate serve` with envoy: builds these rules, compiled tier or not).
            IssuerConfig(issuer="https://discovered.example", audiences=("a",), discovery=True),
            IssuerConfig(
                issuer="https://opaque.example",
                audiences=("a",),
                introspection=IntrospectionConfig(
                    endpoint="https://opaque.example/introspect",
                    client_id="c",
                    client_secret_file=secret,
                ),
            ),
        ),
        google_id_tokens=GoogleIdTokenConfig(audiences=("g",), groups_claim="groups"),
        google_access_tokens=GoogleAccessTokenConfig(),
        service_account_jwts=ServiceAccountJwtConfig(
            audiences=("https://svc.example/",), allowed=("ci@p.iam.gserviceaccount.com",)
        ),
    )
    rules = principal_rules(authentication)
    authenticator = build_authn(authentication).authenticator
    verifiers = authenticator._jwt_issuers
    planned = Settings(
        authentication=authentication,
        authorization=AuthzSettings(policy_file=tmp_path / "policy.yaml"),
    )
    providers = [rule.provider for rule in plan_authn(planned).rules]
    assert len(rules) == len(providers) == 5
    for provider, found in zip(providers, rules, strict=True):
        if provider.kind == "service_account":
            service_accounts = authenticator._service_accounts
            assert service_accounts is not None
            assert found == service_accounts.rules.principal
        else:
            assert found == verifiers[provider.issuer][0].rules.principal


def test_records_wait_out_a_sink_outage_and_none_is_lost(world: World) -> None:
    """fail_closed: while the sink fails, the records are held (none dropped, however many),
    and written once it recovers."""
    sink = MemorySink(fail_with=OSError(28, "No space left on device"))
    writer = AuditWriter(sink, max_pending=2, retry_interval_s=0.01)
    recorder = AuditRecorder(
        writer, service="s", project="p", policy_etag=lambda: world.holder.current.etag
    )
    ledger = CompiledLedger.build(
        world.settings.authentication, load_profile(), recorder, world.holder
    )
    entry = Entry("allow:0", "allowed", ALICE).message_for(world.etag)
    for _ in range(5):
        ledger.record(entry)
    assert not writer.flush(0.2) and sink.lines == [] and writer.dropped == 0
    sink.fail_with = None
    assert writer.close(5)
    assert len(sink.lines) == 5 and writer.dropped == 0


class _Ledger:
    def __init__(self) -> None:
        self.entries: list[Any] = []

    def record(self, entry: Any) -> bool:
        self.entries.append(entry)
        return True


def _stream(log_name: str, *batches: int) -> list[bytes]:
    """An access-log stream: the log name in its first message only, as Envoy sends it."""
    messages = []
    for position, count in enumerate(batches):
        message = StreamAccessLogsMessage()
        if position == 0:
            message.identifier.log_name = log_name
        for _ in range(count):
            message.http_logs.log_entry.add().request.path = GET
        messages.append(message.SerializeToString())
    return messages


async def _send(door: EnvoyDoor, messages: list[bytes]) -> None:
    async def requests() -> AsyncIterator[bytes]:
        for message in messages:
            yield message

    await door.access_logs(requests(), None)


@pytest.mark.parametrize(
    ("log_name", "with_ledger", "recorded", "warned"),
    [
        pytest.param(COMPILED_LOG_NAME, True, 3, False, id="compiled-entries-to-the-ledger"),
        pytest.param(COMPILED_LOG_NAME, False, 0, True, id="no-ledger-ignored-as-before"),
        pytest.param("opsgate", True, 0, False, id="the-authorizers-own-log-to-the-join"),
        pytest.param("someone-elses", True, 0, True, id="other-logs-ignored"),
    ],
)
def test_the_door_routes_entries_by_log_name(
    log_name: str,
    with_ledger: bool,
    recorded: int,
    warned: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = _Ledger()
    join = CompletionJoin(OutcomeMemorySink(), 30.0, lambda outcome: False)
    door = EnvoyDoor(
        cast(Any, None),
        join,
        cast(Any, None),
        EnvoySettings(),
        ledger=cast(Any, ledger) if with_ledger else None,
    )
    with caplog.at_level(logging.WARNING, "opsgate.envoy"):
        asyncio.run(_send(door, _stream(log_name, 2, 1)))
    assert len(ledger.entries) == recorded
    assert ("ignoring Envoy access log" in caplog.text) is warned


def test_the_ledger_counts_are_exported_as_metrics(world: World) -> None:
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry, generate_latest

    from gateway.envoy.metrics import EnvoyCollector

    registry = CollectorRegistry()
    # The join is not what this is about: a stand-in with its counters.
    join = SimpleNamespace(waiting=0, completed=0, not_reported=0, unknown_ids=0)
    registry.register(EnvoyCollector(join, None, world.ledger))  # type: ignore[arg-type]
    world.ledger.record(Entry("allow:0", "allowed", ALICE).message_for(world.etag))
    text = generate_latest(registry).decode()
    recorded = world.ledger.entries - world.ledger.unreadable
    assert f'opsgate_envoy_compiled_entries_total{{result="recorded"}} {recorded:.1f}' in text
    assert 'opsgate_envoy_compiled_entries_total{result="other_policy"} ' in text
