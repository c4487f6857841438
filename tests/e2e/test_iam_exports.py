"""Google's own IAM exports pasted into a policy, end to end: the policy CLI and a live gateway."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as core_exceptions
from prometheus_client.parser import text_string_to_metric_families

from gateway.audit.query import read_records
from gateway.testing.loop import LoopThread
from tests.support.cli import opsgate
from tests.support.stack import Identity, Stack, running_stack

ROOT = Path(__file__).resolve().parents[2]
EXPORTED = ROOT / "policies" / "exported"
POLICY = EXPORTED / "policy.yaml"
PROD_EXPORT = EXPORTED / "acme-prod.iam-policy.json"

ORG = "organizations/123456789012"
PROD, PROD_NO = "projects/acme-prod", "projects/987654321098"
STAGING, STAGING_NO = "projects/acme-staging", "projects/112233445566"
OP = "/locations/us-central1/operations/7"
OPS = "/locations/us-central1"

ALICE = "user:alice@acme.example"
MALLORY = "user:mallory@contractor.example"  # in contractors@ by the policy's groups:
LEAD = "user:lead@acme.example"  # a contractor, and the deny rule's exception principal
AUDRA = "user:audra@acme.example"  # in auditors@ by her token's groups claim
MONITORING = "serviceAccount:monitoring@acme-prod.iam.gserviceaccount.com"  # ADMIN_READ exempt
CI = "serviceAccount:ci-deployer@acme-prod.iam.gserviceaccount.com"
BOB = "user:bob@acme.example"  # in no binding at all
AUDITORS = "auditors@acme.example"
AFTER_REVIEW = "2031-06-01T00:00:00Z"  # after ci-deployer's conditional editor grant ends


def variant(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """A copy of the exported policy with `old` (which must occur once) replaced by `new`."""
    text = POLICY.read_text()
    assert text.count(old) == 1, old
    path = tmp_path / name
    path.write_text(text.replace(old, new))
    return path


# -- policy check -----------------------------------------------------------------------------


WORKFORCE = "principalSet://iam.googleapis.com/locations/global/workforcePools/acme-partners"
OTHER_SERVICE = "grants nothing: the role is another service's role"
# Line: what `policy check` warns of there. The service agent's binding (line 87) is read apart:
# its warning calls a predefined role "a DISABLED or deleted custom role?", which is wrong.
EXPECTED_WARNINGS = {
    35: f"this binding of roles/resourcemanager.organizationAdmin on {ORG} {OTHER_SERVICE}",
    96: f"{WORKFORCE}/group/analysts is a principal set opsgate cannot resolve: "
    "it matches no caller here",
    108: f"this binding of roles/iam.serviceAccountUser on {PROD} {OTHER_SERVICE}",
    120: f"this binding of roles/storage.admin on {PROD} {OTHER_SERVICE}",
}
SERVICE_AGENT_LINE = 87


def findings(output: str, kind: str) -> dict[int, str]:
    """`FILE:LINE: kind: message` lines by line number."""
    found = {}
    for line in output.splitlines():
        where, sep, message = line.partition(f": {kind}: ")
        if sep:
            found[int(where.rsplit(":", 1)[1])] = message
    return found


def test_check_the_exported_policy_warns_only_of_what_grants_nothing_here() -> None:
    result = opsgate("policy", "check", POLICY)
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = findings(result.stdout, "warning")
    service_agent = warnings.pop(SERVICE_AGENT_LINE)
    assert service_agent.startswith(
        f"this binding of roles/contactcenterinsights.serviceAgent on {PROD} grants nothing: "
    )
    assert warnings == EXPECTED_WARNINGS
    assert result.stdout.splitlines()[-1] == (
        f"{POLICY}: 0 errors, 5 warnings (11 bindings, 1 deny rule, 1 custom role, 2 groups)"
    )


def test_check_strict_fails_on_those_warnings() -> None:
    result = opsgate("policy", "check", "--strict", POLICY)
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1].startswith(f"{POLICY}: 0 errors, 5 warnings ")


def test_an_export_pasted_as_the_whole_file_says_where_it_goes() -> None:
    result = opsgate("policy", "check", PROD_EXPORT)
    assert result.returncode == 1
    assert "error: this is an allow policy as gcloud's get-iam-policy prints it" in result.stdout
    assert (
        "hint: paste it unchanged under an allow entry: "
        "allow: [{resource: projects/P, policy: <the output>}]"
    ) in result.stdout


def test_a_misspelt_own_role_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    admin = '"role": "roles/contactcenterinsights.admin"'
    broken = variant(tmp_path, "admn.yaml", admin, admin.replace(".admin", ".admn"))
    result = opsgate("policy", "check", broken)
    assert result.returncode == 1
    (error,) = [line for line in result.stdout.splitlines() if ": error: " in line]
    assert error.startswith(f"{broken}:74: error: ")
    assert (
        "unknown role 'roles/contactcenterinsights.admn' "
        "(did you mean 'roles/contactcenterinsights.admin'?)"
    ) in error


# -- policy explain and policy test: one table ------------------------------------------------


@dataclass(frozen=True)
class Ask:
    """One question to the policy, its answer, and the entry that decides it (None: none does)."""

    id: str
    principal: str
    method: str
    resource: str
    granted: bool
    decided_by: tuple[str, str, str | None] | None  # kind, resource, role (bindings)
    groups: tuple[str, ...] = ()
    time: str | None = None


ASKS = [
    Ask("alice-reads-prod", ALICE, "GetOperation", PROD + OP, True,
        ("binding", PROD, "roles/contactcenterinsights.admin")),
    Ask("alice-reads-prod-by-number", ALICE, "GetOperation", PROD_NO + OP, True,
        ("binding", PROD, "roles/contactcenterinsights.admin")),
    Ask("alice-cancels-prod-by-id", ALICE, "CancelOperation", PROD + OP, True,
        ("binding", PROD, "roles/contactcenterinsights.admin")),
    Ask("alice-cancels-prod-by-number", ALICE, "CancelOperation", PROD_NO + OP, True,
        ("binding", PROD, "roles/contactcenterinsights.admin")),
    Ask("contractor-cancels-prod", MALLORY, "CancelOperation", PROD + OP, False,
        ("deny_rule", ORG, None)),
    Ask("contractor-cancels-prod-by-number", MALLORY, "CancelOperation", PROD_NO + OP, False,
        ("deny_rule", ORG, None)),
    Ask("contractor-cancels-staging-by-id", MALLORY, "CancelOperation", STAGING + OP, True,
        ("binding", STAGING, "roles/contactcenterinsights.editor")),
    Ask("contractor-cancels-staging-by-number", MALLORY, "CancelOperation", STAGING_NO + OP,
        True, ("binding", STAGING, "roles/contactcenterinsights.editor")),
    Ask("contractor-reads-staging", MALLORY, "GetOperation", STAGING + OP, True,
        ("binding", STAGING, "roles/contactcenterinsights.editor")),
    Ask("lead-excepted-but-no-cancel-grant", LEAD, "CancelOperation", PROD + OP, False, None),
    Ask("lead-reads-prod", LEAD, "GetOperation", PROD + OP, True,
        ("binding", PROD, "roles/contactcenterinsights.viewer")),
    Ask("auditor-reads-prod-by-number", AUDRA, "GetOperation", PROD_NO + OP, True,
        ("binding", ORG, "organizations/123456789012/roles/opsAuditor"), (AUDITORS,)),
    Ask("auditor-lists-staging", AUDRA, "ListOperations", STAGING + OPS, True,
        ("binding", ORG, "organizations/123456789012/roles/opsAuditor"), (AUDITORS,)),
    Ask("auditor-cannot-cancel", AUDRA, "CancelOperation", PROD + OP, False, None, (AUDITORS,)),
    Ask("auditor-without-the-group", AUDRA, "GetOperation", PROD + OP, False, None),
    Ask("monitoring-reads-prod", MONITORING, "GetOperation", PROD + OP, True,
        ("binding", PROD, "roles/contactcenterinsights.viewer")),
    Ask("monitoring-reads-prod-by-number", MONITORING, "GetOperation", PROD_NO + OP, True,
        ("binding", PROD, "roles/contactcenterinsights.viewer")),
    Ask("monitoring-lists-prod", MONITORING, "ListOperations", PROD + OPS, True,
        ("binding", PROD, "roles/contactcenterinsights.viewer")),
    Ask("monitoring-cannot-cancel", MONITORING, "CancelOperation", PROD + OP, False, None),
    Ask("monitoring-not-on-staging", MONITORING, "GetOperation", STAGING + OP, False, None),
    Ask("ci-deployer-before-review", CI, "GetOperation", PROD + OP, True,
        ("binding", PROD, "roles/contactcenterinsights.editor"), (), "2030-06-01T00:00:00Z"),
    Ask("ci-deployer-service-account-user-grants-nothing", CI, "GetOperation", PROD + OP,
        False, None, (), AFTER_REVIEW),
    Ask("bob-in-no-binding", BOB, "GetOperation", PROD + OP, False, None),
]  # fmt: skip
ASK = {a.id: a for a in ASKS}


def explain(ask: Ask, policy: Path = POLICY) -> dict[str, Any]:
    args = ["--principal", ask.principal, "--method", ask.method, "--resource", ask.resource]
    args += ["--groups", ",".join(ask.groups)] if ask.groups else []
    args += ["--time", ask.time] if ask.time else []
    result = opsgate("policy", "explain", "--policy", policy, *args, "--json")
    answer: dict[str, Any] = json.loads(result.stdout)
    # The exit status follows the verdict: 0 only when granted (--exit-zero would make it 0).
    assert result.returncode == (0 if answer["verdict"] == "GRANTED" else 1), result.stderr
    assert result.stderr == ""
    return answer


@pytest.mark.parametrize("ask", ASKS, ids=[a.id for a in ASKS])
def test_explain_names_the_deciding_entry(ask: Ask) -> None:
    answer = explain(ask)
    assert answer["verdict"] == ("GRANTED" if ask.granted else "NOT_GRANTED"), answer["reason"]
    decisive = [(e["kind"], e["resource"], e["role"]) for e in answer["entries"] if e["decisive"]]
    assert decisive == ([ask.decided_by] if ask.decided_by else [])


def test_explain_the_lead_is_excepted_from_the_deny_rule() -> None:
    answer = explain(ASK["lead-excepted-but-no-cancel-grant"])
    (rule,) = [e for e in answer["entries"] if e["kind"] == "deny_rule"]
    assert rule["condition"]["result"] == "true"  # production: the rule would apply
    assert rule["outcome"] == "caller is exempt as principal://goog/subject/lead@acme.example"
    assert "none grants it to user:lead@acme.example" in answer["reason"]


def cases_yaml(asks: list[Ask]) -> str:
    cases = [
        {
            "name": a.id,
            "principal": a.principal,
            "groups": list(a.groups),
            "method": a.method,
            "resource": a.resource,
            "expect": "allow" if a.granted else "deny",
            **({"time": a.time} if a.time else {}),
        }
        for a in asks
    ]
    return json.dumps(cases, indent=2)  # JSON is YAML


def test_policy_test_with_the_same_table_passes(tmp_path: Path) -> None:
    cases = tmp_path / "exported.cases.yaml"
    cases.write_text(cases_yaml(ASKS))
    result = opsgate("policy", "test", POLICY, "--cases", cases, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert (report["passed"], report["failed"]) == (len(ASKS), 0)
    assert report["coverage"]["deny_rules"] == {"exercised": 1, "total": 1, "unexercised": []}


def test_policy_test_fails_a_case_expecting_the_wrong_answer(tmp_path: Path) -> None:
    wrong = ASK["contractor-cancels-prod-by-number"]
    cases = tmp_path / "wrong.cases.yaml"
    cases.write_text(cases_yaml([wrong]).replace('"deny"', '"allow"'))
    result = opsgate("policy", "test", POLICY, "--cases", cases)
    assert result.returncode == 1
    assert (
        f"FAIL {wrong.id}: expected allow, got deny (contactcenterinsights.operations.cancel "
        f"denied on {PROD_NO + OP} by a deny rule on {ORG}"
    ) in result.stdout
    assert "0 passed, 1 failed" in result.stdout


# -- policy diff ------------------------------------------------------------------------------

IN_FOLDER = '    parent: {type: folder, id: "345678901234"}\n'
PROD_TAG = "      - namespacedTagValue: 123456789012/env/prod\n"
STAGING_TAG = "      - namespacedTagValue: 123456789012/env/staging\n"


@pytest.mark.parametrize(
    ("old", "new", "line"),
    [
        (
            IN_FOLDER,
            '    parent: {type: organization, id: "123456789012"}\n',
            f"resource {PROD}: +parent={ORG} -parent=folders/345678901234",
        ),
        (
            PROD_TAG,
            STAGING_TAG,
            f"resource {PROD}: +tag=123456789012/env/staging -tag=123456789012/env/prod",
        ),
    ],
    ids=["moved-to-the-organization", "retagged-staging"],
)
def test_diff_shows_a_resource_definition_change(
    tmp_path: Path, old: str, new: str, line: str
) -> None:
    changed = variant(tmp_path, "changed.yaml", old, new)
    result = opsgate("policy", "diff", POLICY, changed)
    # No binding or deny rule changed, and none of these changes who can do what here.
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[lines.index("changed definitions:") + 1] == f"  {line}"
    assert lines[-1] == "no access changes (resources: changed, but not who can do what)"


def test_diff_shows_staging_access_revoked(tmp_path: Path) -> None:
    text = POLICY.read_text()
    start = text.index("  # The staging project, exported by number")
    end = text.index("deny:\n")
    changed = variant(tmp_path, "no-staging.yaml", text[start:end], "")
    result = opsgate("policy", "diff", POLICY, changed)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for group in ("engineering", "contractors"):
        member = f"group:{group}@acme.example"
        revoked = [x for x in lines if x.startswith(f"- {member} ")]
        assert any("contactcenterinsights.operations.cancel" in x for x in revoked), lines
        assert {x.split()[x.split().index("on") + 1] for x in revoked} == {STAGING}
    assert not [x for x in lines if x.startswith("+ ")]
    assert lines[-1].startswith("10 access changes for 2 principals: 10 revoked")


# -- the running gateway ------------------------------------------------------------------------

METRICS_YAML = "metrics: {listen: '127.0.0.1:0'}\n"
MISSING = PROD + "/locations/us-central1/operations/404"
CODES = {"OK": 0, "NOT_FOUND": 5, "PERMISSION_DENIED": 7}


@dataclass(frozen=True)
class Call:
    """A question of ASKS asked through the gateway, and whether its audit record is written."""

    ask: Ask
    recorded: bool
    missing: bool = False  # of an operation the upstream does not hold, in the same place

    @property
    def name(self) -> str:
        return MISSING if self.missing else self.ask.resource

    @property
    def code(self) -> str:
        if self.missing:
            return "NOT_FOUND"
        return "OK" if self.ask.granted else "PERMISSION_DENIED"


CALLS = [
    Call(ASK["alice-reads-prod"], True),  # allServices ADMIN_READ is on, alice is not exempted
    Call(ASK["alice-reads-prod-by-number"], True),
    Call(ASK["alice-cancels-prod-by-number"], True),
    Call(ASK["contractor-cancels-prod"], True),
    Call(ASK["contractor-cancels-prod-by-number"], True),
    Call(ASK["contractor-cancels-staging-by-id"], True),
    Call(ASK["contractor-cancels-staging-by-number"], True),
    Call(ASK["lead-excepted-but-no-cancel-grant"], True),
    Call(ASK["auditor-reads-prod-by-number"], True),
    Call(ASK["auditor-cannot-cancel"], True),
    Call(ASK["bob-in-no-binding"], True),
    # The service account exempted from ADMIN_READ: only its allowed, successful reads go
    # unrecorded; its refusals, its errors and its calls on another project do not.
    Call(ASK["monitoring-reads-prod"], False),
    Call(ASK["monitoring-reads-prod-by-number"], False),
    Call(ASK["monitoring-lists-prod"], False),
    Call(ASK["monitoring-reads-prod"], True, missing=True),
    Call(ASK["monitoring-cannot-cancel"], True),
    Call(ASK["monitoring-not-on-staging"], True),
]


@contextmanager
def exported_gateway(loop: LoopThread, identity: Identity, policy: Path) -> Iterator[Stack]:
    """A gateway enforcing `policy`, with metrics, before an upstream holding operation 7 by
    each project's id and number (the upstream knows names only as they are sent)."""
    with running_stack(loop, identity, seed=False, policy=policy, extra_yaml=METRICS_YAML) as s:
        for project in (PROD, PROD_NO, STAGING, STAGING_NO):
            s.upstream.store.create(project + OP)
        yield s


def email(member: str) -> str:
    return member.split(":", 1)[1]


def make(stack: Stack, call: Call) -> str:
    """The call's gRPC code, as google-api-core's OperationsClient sees it."""
    token = stack.identity.token(email=email(call.ask.principal), groups=list(call.ask.groups))
    client = stack.with_token(token)
    try:
        if call.ask.method == "GetOperation":
            client.get_operation(call.name, retry=None, timeout=10)
        elif call.ask.method == "CancelOperation":
            client.cancel_operation(call.name, retry=None, timeout=10)
        else:
            list(client.list_operations(call.name, "", retry=None, timeout=10))
    except core_exceptions.GoogleAPICallError as err:
        return err.grpc_status_code.name
    return "OK"


def recorded(stack: Stack) -> list[tuple[str, str, str, int]]:
    """(caller's email, method, resourceName, status code) of each record in the audit file."""
    assert stack.gateway.pipeline.audit.writer.flush(10)
    assert stack.settings is not None and stack.settings.audit.file is not None
    records = read_records([Path(stack.settings.audit.file.path)])
    return [
        (
            p["authenticationInfo"]["thirdPartyPrincipal"]["email"],
            p["methodName"].rsplit(".", 1)[1],
            p["resourceName"],
            p["status"].get("code", 0),
        )
        for p in (record["protoPayload"] for record in records)
    ]


def expected_records(calls: list[Call]) -> list[tuple[str, str, str, int]]:
    """In call order; a name by project number is recorded as the caller sent it."""
    return [
        (email(c.ask.principal), c.ask.method, c.name, CODES[c.code]) for c in calls if c.recorded
    ]


def left_out_metric(stack: Stack) -> float:
    url = f"http://127.0.0.1:{stack.gateway.metrics.port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    (value,) = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "opsgate_audit_records_left_out_total"
    ]
    return value


def test_the_gateway_decides_and_records_as_the_exports_say(
    loop: LoopThread, identity: Identity
) -> None:
    with exported_gateway(loop, identity, POLICY) as stack:
        codes = [(call.ask.id, make(stack, call)) for call in CALLS]
        assert codes == [(call.ask.id, call.code) for call in CALLS]
        assert recorded(stack) == expected_records(CALLS)
        left_out = sum(not call.recorded for call in CALLS)
        assert left_out == 3
        assert stack.gateway.pipeline.audit.left_out == left_out
        assert left_out_metric(stack) == left_out
        by_number_is_prod(stack)


def by_number_is_prod(stack: Stack) -> None:
    """A call naming acme-prod by number keeps that name as resourceName; what was checked is
    named by id, and `audit query --resource-prefix projects/acme-prod` finds it."""
    assert stack.settings is not None and stack.settings.audit.file is not None
    trail = Path(stack.settings.audit.file.path)
    payloads = [r["protoPayload"] for r in read_records([trail])]
    by_number = [p for p in payloads if p["resourceName"].startswith(f"{PROD_NO}/")]
    assert by_number
    for payload in by_number:
        (check,) = payload["authorizationInfo"]
        assert check["resource"] == payload["resourceName"].replace(PROD_NO, PROD, 1)
    found = opsgate("audit", "query", trail, "--resource-prefix", f"{PROD}/", "--format", "json")
    assert found.returncode == 0, found.stderr
    names = {json.loads(line)["protoPayload"]["resourceName"] for line in found.stdout.splitlines()}
    assert {p["resourceName"] for p in by_number} <= names


ONLY_DATA_READ = {"service": "allServices", "auditLogConfigs": [{"logType": "DATA_READ"}]}


def test_audit_configs_without_admin_read_leave_allowed_reads_out(
    loop: LoopThread, identity: Identity, tmp_path: Path
) -> None:
    text = POLICY.read_text()
    start = text.index('  "auditConfigs": [')  # acme-prod's, as pasted
    configs = text[start : text.index('  "bindings"', start)]
    only = f'  "auditConfigs": [{json.dumps(ONLY_DATA_READ)}],\n'
    policy = variant(tmp_path, "data-read-only.yaml", configs, only)
    calls = [
        Call(ASK["alice-reads-prod"], False),
        Call(ASK["alice-reads-prod-by-number"], False),
        Call(ASK["alice-cancels-prod-by-id"], True),  # a write: always recorded
        Call(ASK["bob-in-no-binding"], True),  # a refusal: always recorded
        Call(ASK["contractor-reads-staging"], True),  # no auditConfigs on staging's chain
    ]
    with exported_gateway(loop, identity, policy) as stack:
        assert [make(stack, call) for call in calls] == [call.code for call in calls]
        assert recorded(stack) == expected_records(calls)
        assert stack.gateway.pipeline.audit.left_out == 2
        assert left_out_metric(stack) == 2


def test_diff_shows_access_a_retag_takes_away(tmp_path: Path) -> None:
    # Tagged env=prod, staging falls under the organization's deny rule: contractors can no
    # longer cancel there (their lead, its exception, still can), though their editor binding
    # on it is unchanged.
    changed = variant(tmp_path, "staging-as-prod.yaml", STAGING_TAG, PROD_TAG)
    case = ASK["contractor-cancels-staging-by-id"]
    assert explain(case)["verdict"] == "GRANTED"
    assert explain(case, changed)["verdict"] == "NOT_GRANTED"
    result = opsgate("policy", "diff", POLICY, changed)
    assert result.returncode == 1, result.stdout
    assert any(
        "contactcenterinsights.operations.cancel" in line and f"on {STAGING}" in line
        for line in result.stdout.splitlines()
        if line.startswith("- ") and "contractors@acme.example" in line
    ), result.stdout
    assert not any(
        line.startswith("- user:lead@acme.example") for line in result.stdout.splitlines()
    ), result.stdout
    assert "(resources: changed)" in result.stdout
