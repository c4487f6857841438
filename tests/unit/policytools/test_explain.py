"""`opsgate policy explain`: verdicts, the entries behind them, JSON shape and usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.policytools.support import CANCEL, GET, OP, WHEN, line_of, opsgate, write

# Compiles; fails when evaluated (the sum overflows CEL's timestamp range).
BROKEN = "'request.time + duration(\"315576000000s\") > request.time'"

POLICY = f"""\
allow:
  - resource: projects/p
    bindings:
      - role: roles/contactcenterinsights.viewer
        members:
          - user:direct@x.example
          - group:outer@x.example
          - group:token@x.example
          - user:denied@x.example
          - user:night@x.example
          - user:both@x.example
      - role: roles/contactcenterinsights.admin
        members: [user:broken@x.example]
        condition: {{title: broken grant, expression: {BROKEN}}}
deny:
  - resource: projects/p/locations/l
    rules:
      - deniedPrincipals: [user:denied@x.example, user:both@x.example]
        deniedPermissions: [{GET}]
      - deniedPrincipals: [user:night@x.example, user:both@x.example]
        deniedPermissions: [{GET}]
        denialCondition: {{title: broken deny, expression: {BROKEN}}}
groups:
  outer@x.example: [group:inner@x.example]
  inner@x.example: [user:nested@x.example]
"""


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    return write(tmp_path, "policy.yaml", POLICY)


def explain(policy: Path, principal: str, *extra: str, method: str = "GetOperation") -> dict:
    result = opsgate(
        "policy", "explain", "--policy", policy, "--principal", principal,
        "--method", method, "--resource", OP, "--time", WHEN, "--json", *extra,
    )  # fmt: skip
    answer = json.loads(result.out)
    assert result.code == EXIT_FOR[answer["verdict"]], result.err
    return answer


# The exit status of each verdict: only GRANTED is 0, as the gateway denies the rest.
EXIT_FOR = {"GRANTED": 0, "NOT_GRANTED": 1, "UNKNOWN_CONDITIONAL": 1}


def decisive(answer: dict) -> dict | None:
    found = [e for e in answer["entries"] if e["decisive"]]
    assert len(found) <= 1
    return found[0] if found else None


# (id, principal, extra args, verdict, what the decisive entry says: kind, member, via, token)
VERDICTS = [
    ("direct-member", "user:direct@x.example", (), "GRANTED",
     ("binding", "user:direct@x.example", None, False)),
    ("nested-static-group", "user:nested@x.example", (), "GRANTED",
     ("binding", "group:outer@x.example", "group:inner@x.example", False)),
    ("token-group", "user:t@x.example", ("--groups", "token@x.example"), "GRANTED",
     ("binding", "group:token@x.example", None, True)),
    ("token-group-with-prefix", "user:t@x.example", ("--groups", " group:token@x.example ,"), "GRANTED",
     ("binding", "group:token@x.example", None, True)),
    ("denied-by-deny-rule", "user:denied@x.example", (), "NOT_GRANTED",
     ("deny_rule", "user:denied@x.example", None, False)),
    ("not-granted", "user:nobody@x.example", (), "NOT_GRANTED", None),
    ("unknown-allow-condition-error", "user:broken@x.example", (), "UNKNOWN_CONDITIONAL", None),
    ("unknown-deny-condition-error", "user:night@x.example", (), "UNKNOWN_CONDITIONAL",
     ("deny_rule", "user:night@x.example", None, False)),
    ("a-certain-deny-beats-an-erroring-one", "user:both@x.example", (), "NOT_GRANTED",
     ("deny_rule", "user:both@x.example", None, False)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("principal", "extra", "verdict", "decided"),
    [pytest.param(*case[1:], id=case[0]) for case in VERDICTS],
)
def test_verdicts(
    policy: Path,
    principal: str,
    extra: tuple[str, ...],
    verdict: str,
    decided: tuple[str, str, str | None, bool] | None,
) -> None:
    answer = explain(policy, principal, *extra)
    assert answer["verdict"] == verdict
    assert answer["effect"] == ("ALLOW" if verdict == "GRANTED" else "DENY")
    entry = decisive(answer)
    if decided is None:
        assert entry is None
    else:
        assert entry is not None
        assert (entry["kind"], entry["member"], entry["via_group"], entry["token_group"]) == decided


def test_unknown_conditional_points_at_the_failing_condition(policy: Path) -> None:
    answer = explain(policy, "user:broken@x.example")
    [admin] = [e for e in answer["entries"] if e["role"] == "roles/contactcenterinsights.admin"]
    assert admin["condition"]["result"] == "error"
    assert admin["condition"]["title"] == "broken grant"
    assert admin["outcome"].startswith("condition error: ")
    assert admin["member"] == "user:broken@x.example"
    assert admin["includes_permission"] is True


def test_json_shape(policy: Path) -> None:
    answer = explain(policy, "user:nested@x.example")
    assert list(answer) == [
        "verdict", "effect", "reason", "unrecorded", "caller", "request", "policy", "profile",
        "hierarchy", "entries",
    ]  # fmt: skip
    assert answer["unrecorded"] is None  # the policy has no auditConfigs
    assert answer["caller"] == {
        "principal": "user:nested@x.example",
        "token_groups": [],
        "static_groups": ["group:inner@x.example", "group:outer@x.example"],
        "hosted_domain": None,
    }
    assert answer["request"] == {
        "method": "GetOperation",
        "permission": GET,
        "resource": OP,
        "time": WHEN,
    }
    assert answer["policy"]["source"] == str(policy)
    assert answer["hierarchy"] == ["projects/p", "projects/p/locations/l", OP]
    # From the top of the hierarchy down, deny rules first on each resource.
    assert [(e["resource"], e["kind"]) for e in answer["entries"]] == [
        ("projects/p", "binding"),
        ("projects/p", "binding"),
        ("projects/p/locations/l", "deny_rule"),
        ("projects/p/locations/l", "deny_rule"),
    ]
    viewer = answer["entries"][0]
    assert viewer == {
        "kind": "binding",
        "resource": "projects/p",
        "line": line_of(policy, "roles/contactcenterinsights.viewer"),
        "role": "roles/contactcenterinsights.viewer",
        "includes_permission": True,
        "member": "group:outer@x.example",
        "via_group": "group:inner@x.example",
        "token_group": False,
        "condition": None,
        "outcome": "grants",
        "decisive": True,
    }
    denies = answer["entries"][2:]
    assert [e["outcome"] for e in denies] == ["no denied principal matched"] * 2


def test_permission_instead_of_method(policy: Path) -> None:
    result = opsgate(
        "policy", "explain", "--policy", policy, "--principal", "user:direct@x.example",
        "--permission", "contactcenterinsights.googleapis.com/operations.cancel",
        "--resource", "projects/p", "--json",
    )  # fmt: skip
    answer = json.loads(result.out)
    assert answer["verdict"] == "NOT_GRANTED"
    assert answer["request"]["permission"] == CANCEL
    assert answer["request"]["method"] is None
    assert [e["includes_permission"] for e in answer["entries"]] == [False, True]


def test_text_output(policy: Path) -> None:
    result = opsgate(
        "policy", "explain", "--policy", policy, "--principal", "user:night@x.example",
        "--method", "GetOperation", "--resource", OP, "--time", WHEN,
    )  # fmt: skip
    assert result.code == 1  # UNKNOWN_CONDITIONAL: not granted
    lines = result.out.splitlines()
    assert lines[0] == f"UNKNOWN_CONDITIONAL: user:night@x.example  {GET} (GetOperation)"
    assert lines[1] == f"  on {OP}"
    assert lines[2].startswith(f"  at {WHEN}, {policy} (etag ")
    assert "could not be evaluated" in result.out
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["line", "entry"])
    body = lines[header + 1 :]
    # Resources from the top down, each followed by its entries; the operation holds nothing.
    assert body[0] == "  projects/p"
    assert body[3] == "  projects/p/locations/l"
    assert body[4].split()[1:3] == ["deny", "rule"]
    assert body[5].lstrip().startswith("*")  # the rule that decided
    assert "broken deny: error" in body[5]
    assert body[6] == f"  {OP}  (no bindings or deny rules)"
    # Columns are aligned: every entry's role starts in the same column.
    entries = [line for line in body if line.startswith("    ")]
    starts = {line.index(line.split()[1]) for line in entries if not line.startswith("    (")}
    assert len(starts) == 1


# (id, principal, verdict, exit status without and with --exit-zero)
EXIT_CODES = [
    ("granted", "user:direct@x.example", "GRANTED", 0, 0),
    ("not-granted", "user:nobody@x.example", "NOT_GRANTED", 1, 0),
    ("denied-by-a-deny-rule", "user:denied@x.example", "NOT_GRANTED", 1, 0),
    ("unknown-conditional", "user:broken@x.example", "UNKNOWN_CONDITIONAL", 1, 0),
]


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize(
    ("principal", "verdict", "code", "exit_zero_code"),
    [pytest.param(*case[1:], id=case[0]) for case in EXIT_CODES],
)
def test_exit_status_follows_the_verdict_unless_exit_zero(
    policy: Path, principal: str, verdict: str, code: int, exit_zero_code: int, as_json: bool
) -> None:
    args = ["policy", "explain", "--policy", policy, "--principal", principal,
            "--method", "GetOperation", "--resource", OP, "--time", WHEN]  # fmt: skip
    args += ["--json"] if as_json else []
    plain = opsgate(*args)
    assert (plain.code, plain.err) == (code, "")
    said = json.loads(plain.out)["verdict"] if as_json else plain.out.split(":", 1)[0]
    assert said == verdict
    exit_zero = opsgate(*args, "--exit-zero")
    assert (exit_zero.code, exit_zero.err) == (exit_zero_code, "")
    assert exit_zero.out == plain.out  # the same explanation: only the status differs


def test_unusable_input_is_2_with_or_without_exit_zero(policy: Path, tmp_path: Path) -> None:
    unrouted = ["--principal", "user:a@x.example", "--method", "WaitOperation", "--resource", OP]
    assert opsgate("policy", "explain", "--policy", policy, *unrouted).code == 2
    assert opsgate("policy", "explain", "--policy", policy, *unrouted, "--exit-zero").code == 2
    missing = ["--principal", "user:a@x.example", "--method", "GetOperation", "--resource", OP]
    absent = tmp_path / "absent.yaml"
    for extra in ((), ("--exit-zero",)):
        result = opsgate("policy", "explain", "--policy", absent, *missing, *extra)
        assert (result.code, result.out) == (2, "")
        assert str(absent) in result.err


# (id, args after --policy FILE, message on stderr)
USAGE = [
    ("email-without-kind", ("--principal", "a@x.example", "--method", "GetOperation", "--resource", OP),
     "'a@x.example' has no kind"),
    ("group-as-caller", ("--principal", "group:g@x.example", "--method", "GetOperation", "--resource", OP),
     "'group:g@x.example' cannot be a caller"),
    ("unrouted-method", ("--principal", "user:a@x.example", "--method", "WaitOperation", "--resource", OP),
     "WaitOperation is not routed by the contactcenterinsights profile"),
    ("unknown-method", ("--principal", "user:a@x.example", "--method", "GetOperatoin", "--resource", OP),
     "did you mean 'GetOperation'?"),
    ("name-the-method-rejects", ("--principal", "user:a@x.example", "--method", "ListOperations", "--resource", OP),
     "Invalid resource name"),
    ("unknown-permission", ("--principal", "user:a@x.example", "--permission", "contactcenterinsights.operations.gett", "--resource", OP),
     "did you mean 'contactcenterinsights.operations.get'?"),
    ("bad-resource", ("--principal", "user:a@x.example", "--permission", GET, "--resource", "folders/1/x"),
     "'folders/1/x' is not a resource name"),
    ("time-without-zone", ("--principal", "user:a@x.example", "--method", "GetOperation", "--resource", OP, "--time", "2026-06-01T12:00:00"),
     "has no time zone"),
    ("not-a-time", ("--principal", "user:a@x.example", "--method", "GetOperation", "--resource", OP, "--time", "tomorrow"),
     "is not an RFC 3339 time"),
    ("bad-group", ("--principal", "user:a@x.example", "--groups", "not a group", "--method", "GetOperation", "--resource", OP),
     "'not a group' is not a group email"),
    ("method-and-permission", ("--principal", "user:a@x.example", "--method", "GetOperation", "--permission", GET, "--resource", OP),
     "not allowed with argument"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), [pytest.param(*u[1:], id=u[0]) for u in USAGE])
def test_usage_errors(policy: Path, args: tuple[str, ...], message: str) -> None:
    result = opsgate("policy", "explain", "--policy", policy, *args)
    assert result.code == 2
    assert message in result.err
    assert result.out == ""


def test_an_invalid_policy_is_unusable_input(tmp_path: Path) -> None:
    broken = write(
        tmp_path, "broken.yaml", "allow:\n  - resource: projects/p/zones/z\n    bindings: []\n"
    )
    result = opsgate(
        "policy", "explain", "--policy", broken, "--principal", "user:a@x.example",
        "--method", "GetOperation", "--resource", OP,
    )  # fmt: skip
    assert result.code == 2
    assert f"{broken}:2: error: key 'allow[0].resource'" in result.err
