"""`opsgate policy test`: pass and fail lines, coverage, and malformed case files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.policytools.support import CASES_POLICY, GET, OP, line_of, opsgate, write

POLICY = CASES_POLICY

CASES = """\
- name: a reads
  principal: user:a@x.example
  method: GetOperation
  resource: projects/p/locations/l/operations/o
  expect: allow
- name: b reads through the team
  principal: user:b@x.example
  permission: contactcenterinsights.operations.list
  resource: projects/p/locations/l
  expect: allow
- principal: user:a@x.example
  method: CancelOperation
  resource: projects/p/locations/l/operations/o
  expect: deny
- name: the boss cancels before 2030
  principal: user:boss@x.example
  method: CancelOperation
  resource: projects/p/locations/l/operations/o
  time: 2029-06-01T00:00:00Z
  expect: allow
- name: mallory is denied
  principal: user:mallory@x.example
  groups: [team@x.example]
  method: CancelOperation
  resource: projects/p/locations/l/operations/o
  expect: deny
"""


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    return write(tmp_path, "policy.yaml", POLICY)


def test_all_pass_with_coverage(tmp_path: Path, policy: Path) -> None:
    cases = write(tmp_path, "cases.yaml", CASES)
    result = opsgate("policy", "test", policy, "--cases", cases)
    assert result.code == 0, result.out + result.err
    lines = result.out.splitlines()
    assert lines[:5] == [
        "PASS a reads",
        "PASS b reads through the team",
        f"PASS user:a@x.example CancelOperation {OP}",  # the default name
        "PASS the boss cancels before 2030",
        "PASS mallory is denied",
    ]
    assert "5 passed, 0 failed" in lines
    assert "coverage: 2/3 bindings, 1/1 deny rules (75%)" in lines
    line = line_of(policy, "members: [user:q@x.example]") - 1
    assert lines[-1] == (
        f"  {policy}:{line}  roles/contactcenterinsights.viewer on projects/q to user:q@x.example"
    )


def test_a_failing_case(tmp_path: Path, policy: Path) -> None:
    cases = write(
        tmp_path,
        "cases.yaml",
        """\
        - name: the boss cancels after 2030
          principal: user:boss@x.example
          method: CancelOperation
          resource: projects/p/locations/l/operations/o
          time: "2031-06-01T00:00:00Z"
          expect: allow
        """,
    )
    result = opsgate("policy", "test", policy, "--cases", cases)
    assert result.code == 1
    lines = result.out.splitlines()
    assert lines[0].startswith(
        "FAIL the boss cancels after 2030: expected allow, got deny "
        "(contactcenterinsights.operations.cancel denied on "
    )
    assert lines[1].startswith(f"     {cases}:1; to see why: opsgate policy explain --policy ")
    assert "--method CancelOperation" in lines[1]
    assert "--time 2031-06-01T00:00:00Z" in lines[1]
    assert "0 passed, 1 failed" in lines
    assert "coverage: 0/3 bindings, 0/1 deny rules (0%)" in lines


def test_json(tmp_path: Path, policy: Path) -> None:
    cases = write(tmp_path, "cases.yaml", CASES)
    result = opsgate("policy", "test", policy, "--cases", cases, "--json")
    assert result.code == 0
    report = json.loads(result.out)
    assert (report["passed"], report["failed"]) == (5, 0)
    first = report["cases"][0]
    assert first["name"] == "a reads"
    assert first["line"] == 1
    assert (first["permission"], first["resource"]) == (GET, OP)
    assert (first["expect"], first["got"], first["passed"]) == ("allow", "allow", True)
    bindings = report["coverage"]["bindings"]
    assert (bindings["exercised"], bindings["total"]) == (2, 3)
    assert [u["resource"] for u in bindings["unexercised"]] == ["projects/q"]
    assert report["coverage"]["deny_rules"]["unexercised"] == []


def test_shadowed_bindings_are_marked_in_the_coverage(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        "policy.yaml",
        """\
        allow:
          - resource: projects/p
            bindings:
              - role: roles/contactcenterinsights.admin
                members: [user:a@x.example]
          - resource: projects/p/locations/l
            bindings:
              - role: roles/contactcenterinsights.viewer
                members: [user:a@x.example]
        """,
    )
    cases = write(
        tmp_path,
        "cases.yaml",
        f"- {{principal: user:a@x.example, permission: {GET}, resource: {OP}, expect: allow}}\n",
    )
    result = opsgate("policy", "test", policy, "--cases", cases)
    assert result.code == 0
    assert "coverage: 1/2 bindings, 0/0 deny rules (50%)" in result.out
    assert "(shadowed: other grants already cover it; see policy check)" in result.out


# (id, the case file, the text on the line of the problem, fragment of the message)
MALFORMED = [
    ("unknown-key-with-suggestion",
     "- principal: user:a@x.example\n  method: GetOperation\n  resource: " + OP + "\n  expected: allow\n",
     "expected: allow", "unknown key 'expected' (did you mean 'expect'?)"),
    ("missing-expect",
     "- principal: user:a@x.example\n  method: GetOperation\n  resource: " + OP + "\n",
     "- principal", "case 1: 'expect' is required"),
    ("bad-expect",
     "- principal: user:a@x.example\n  method: GetOperation\n  resource: " + OP + "\n  expect: yes\n",
     "expect: yes", "'expect' must be allow or deny, got True"),
    ("bad-time",
     "- principal: user:a@x.example\n  method: GetOperation\n  resource: " + OP + "\n  time: next tuesday\n  expect: allow\n",
     "time: next tuesday", "bad 'time': 'next tuesday' is not an RFC 3339 time"),
    ("time-without-zone",
     "- principal: user:a@x.example\n  method: GetOperation\n  resource: " + OP + "\n  time: 2026-06-01T12:00:00\n  expect: allow\n",
     "time: 2026", "bad 'time': '2026-06-01 12:00:00' has no time zone"),
    ("method-and-permission",
     "- principal: user:a@x.example\n  method: GetOperation\n  permission: " + GET + "\n  resource: " + OP + "\n  expect: allow\n",
     "- principal", "give exactly one of 'method' and 'permission'"),
    ("unrouted-method",
     "- principal: user:a@x.example\n  method: DeleteOperation\n  resource: " + OP + "\n  expect: deny\n",
     "method: DeleteOperation", "DeleteOperation is not routed"),
    ("bad-principal",
     "- principal: a@x.example\n  method: GetOperation\n  resource: " + OP + "\n  expect: deny\n",
     "principal: a@x.example", "'a@x.example' has no kind"),
    ("groups-not-a-list",
     "- principal: user:a@x.example\n  groups: team@x.example\n  method: GetOperation\n  resource: " + OP + "\n  expect: deny\n",
     "groups: team", "'groups' must be a list of group emails"),
    ("duplicate-name",
     "- {name: same, principal: user:a@x.example, method: GetOperation, resource: " + OP + ", expect: allow}\n"
     "- {name: same, principal: user:b@x.example, method: GetOperation, resource: " + OP + ", expect: allow}\n",
     "user:b@x.example", "case name 'same' is used twice (also line 1)"),
    ("not-a-list", "principal: user:a@x.example\n", "principal", "must be a list of cases"),
    ("empty", "# nothing yet\n", None, "is empty"),
    ("yaml-syntax", "- principal: [user:a@x.example\n", None, "not valid YAML"),
    ("case-not-a-mapping", "- just a string\n", None, "case 1 must be a mapping"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "at", "message"), [pytest.param(*m[1:], id=m[0]) for m in MALFORMED]
)
def test_malformed_case_files(
    tmp_path: Path, policy: Path, text: str, at: str | None, message: str
) -> None:
    cases = write(tmp_path, "cases.yaml", text)
    result = opsgate("policy", "test", policy, "--cases", cases)
    assert result.code == 1
    assert result.out == ""
    errors = [line for line in result.err.splitlines() if ": error: " in line]
    assert len(errors) == 1, result.err
    where = f"{cases}:{line_of(cases, at)}" if at is not None else str(cases)
    assert errors[0].startswith(f"{where}: error: " if at else f"{cases}"), result.err
    assert message in errors[0]
    assert result.err.splitlines()[-1] == f"{cases}: 1 error; no case was run"


def test_malformed_case_file_as_json(tmp_path: Path, policy: Path) -> None:
    cases = write(tmp_path, "cases.yaml", "- principal: user:a@x.example\n  expect: maybe\n")
    result = opsgate("policy", "test", policy, "--cases", cases, "--json")
    assert result.code == 1
    errors = json.loads(result.out)["errors"]
    assert {(e["line"], e["message"]) for e in errors} >= {
        (1, "case 1: 'resource' is required"),
        (2, "'expect' must be allow or deny, got 'maybe'"),
    }


def test_unreadable_cases_file(tmp_path: Path, policy: Path) -> None:
    result = opsgate("policy", "test", policy, "--cases", tmp_path / "none.yaml")
    assert result.code == 2
    assert "none.yaml: cannot be read" in result.err
