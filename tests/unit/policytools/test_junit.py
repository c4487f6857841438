"""`opsgate policy test` for CI: JUnit XML reports, several cases files, --min-coverage."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path

import pytest

from gateway.policytools.cases import BELOW_MINIMUM, percent
from gateway.policytools.junit import classname
from tests.unit.policytools.support import CASES_POLICY, OP, junit_report, line_of, opsgate, write

POLICY = CASES_POLICY

# Exercises the viewer binding on projects/p and the deny rule: 2 of the policy's 4 entries.
READS = f"""\
- name: a reads
  principal: user:a@x.example
  method: GetOperation
  resource: {OP}
  expect: allow
- name: b reads through the team
  principal: user:b@x.example
  method: GetOperation
  resource: {OP}
  expect: allow
- name: mallory cannot cancel
  principal: user:mallory@x.example
  method: CancelOperation
  resource: {OP}
  expect: deny
"""

# Three expectations that do not hold, and one that does (q's binding: 3 of 4 entries in all).
WRONG = f"""\
- name: the boss cancels after 2030
  principal: user:boss@x.example
  method: CancelOperation
  resource: {OP}
  time: "2031-06-01T00:00:00Z"
  expect: allow
- name: mallory cancels
  principal: user:mallory@x.example
  method: CancelOperation
  resource: {OP}
  expect: allow
- name: a cannot read
  principal: user:a@x.example
  method: GetOperation
  resource: {OP}
  expect: deny
- name: q reads q
  principal: user:q@x.example
  method: GetOperation
  resource: projects/q/locations/l/operations/o
  expect: allow
"""


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    return write(tmp_path, "policy.yaml", POLICY)


@pytest.fixture
def reads(tmp_path: Path) -> Path:
    return write(tmp_path, "reads.cases.yaml", READS)


@pytest.fixture
def wrong(tmp_path: Path) -> Path:
    return write(tmp_path, "wrong.cases.yaml", WRONG)


def suites(root: ET.Element) -> dict[str, ET.Element]:
    return {suite.get("name", ""): suite for suite in root.findall("testsuite")}


def outcomes(suite: ET.Element) -> dict[str, ET.Element | None]:
    """Each testcase by name: its <failure>, <error> or <skipped>, or None when it passed."""
    return {case.get("name", ""): next(iter(case), None) for case in suite.findall("testcase")}


def test_a_passing_cases_file(tmp_path: Path, policy: Path, reads: Path) -> None:
    report = tmp_path / "report.xml"
    result = opsgate("policy", "test", policy, "--cases", reads, "--junit-xml", report)
    assert result.code == 0, result.out + result.err
    root = junit_report(report)
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("3", "0", "0")
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == suite.get("file") == str(reads)
    assert outcomes(suite) == {
        "a reads": None,
        "b reads through the team": None,
        "mallory cannot cancel": None,
    }
    assert {case.get("classname") for case in suite.findall("testcase")} == {classname(str(reads))}
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["policy"] == str(policy)
    assert properties["coverage"] == "1/3 bindings, 1/1 deny rules (50%)"
    assert properties["policy_etag"]
    assert "min_coverage" not in properties


def test_classname_is_the_cases_file_as_a_dotted_name() -> None:
    # Jenkins splits a classname at its last dot into package and class (so does GitLab's view
    # of suites): the directory is the package, the file the class, as pytest names modules.
    assert classname("policies/example.cases.yaml") == "policies.example.cases"
    assert classname("/tmp/x/cases.yaml") == "tmp.x.cases"
    assert classname("./cases.yml") == "cases"
    assert classname("../cases.yaml") == "cases"


def test_a_failing_file_beside_a_passing_one(
    tmp_path: Path, policy: Path, reads: Path, wrong: Path
) -> None:
    report = tmp_path / "report.xml"
    result = opsgate(
        "policy", "test", policy, "--cases", reads, wrong, "--junit-xml", report
    )  # fmt: skip
    assert result.code == 1
    root = junit_report(report)
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("7", "3", "0")
    by_name = suites(root)
    assert list(by_name) == [str(reads), str(wrong)]  # one testsuite per cases file, in order
    assert by_name[str(reads)].get("failures") == "0"
    failing = outcomes(by_name[str(wrong)])
    assert failing["q reads q"] is None
    boss, mallory, a = (failing[n] for n in ("the boss cancels after 2030", "mallory cancels",
                                             "a cannot read"))  # fmt: skip
    assert boss is not None and mallory is not None and a is not None
    assert {boss.tag, mallory.tag, a.tag} == {"failure"}
    assert {boss.get("type"), mallory.get("type"), a.get("type")} == {"DecisionMismatch"}
    at = lambda needle: f"{policy}:{line_of(policy, needle) - 1}"  # noqa: E731 (the role line)
    admin, viewer = at("members: [user:boss@x.example]"), at("members: [user:a@x.example")
    rule = f"{policy}:{line_of(policy, '- deniedPrincipals')}"
    # Expected vs got, and the entry that decided (or, for a default deny, that none did).
    assert boss.get("message") == (
        "expected allow, got deny: no binding grants it (default deny); "
        f"roles/contactcenterinsights.admin on projects/p ({admin}) names user:boss@x.example "
        "but its condition is false"
    )
    assert mallory.get("message") == (
        f"expected allow, got deny: deny rule on projects/p ({rule}) naming user:mallory@x.example"
    )
    assert a.get("message") == (
        "expected deny, got allow: binding of roles/contactcenterinsights.viewer on projects/p "
        f"({viewer}) to user:a@x.example"
    )
    details = (boss.text or "").splitlines()
    assert details[0] == f"{wrong}:{line_of(wrong, 'the boss cancels after 2030')}: " + (
        "the boss cancels after 2030"
    )
    assert details[1] == (
        f"request: user:boss@x.example CancelOperation on {OP} at 2031-06-01T00:00:00Z"
    )
    assert details[2:4] == ["expected: allow", details[3]]
    assert details[3].startswith("got: deny (contactcenterinsights.operations.cancel denied on ")
    assert details[4].startswith("decided by: no binding grants it (default deny); ")
    assert details[5].startswith("to see why: opsgate policy explain --policy ")
    assert "--time 2031-06-01T00:00:00Z" in details[5]
    times = [float(c.get("time", "")) for c in root.iter("testcase")]
    assert all(0 <= t < 1 for t in times) and any(t > 0 for t in times)


def test_several_cases_files_in_text_and_json(policy: Path, reads: Path, wrong: Path) -> None:
    text = opsgate("policy", "test", policy, "--cases", reads, "--cases", wrong)
    assert text.code == 1
    lines = text.out.splitlines()
    assert lines[0] == f"{reads}:"
    assert lines[4] == f"{wrong}:"
    assert "4 passed, 3 failed" in lines
    # Coverage counts the files together: a's and q's viewer bindings, and the deny rule.
    assert "coverage: 2/3 bindings, 1/1 deny rules (75%)" in lines
    as_json = json.loads(opsgate("policy", "test", policy, "--cases", reads, wrong, "--json").out)
    assert as_json["cases_file"] is None
    assert as_json["cases_files"] == [str(reads), str(wrong)]
    assert [c["file"] for c in as_json["cases"]] == [str(reads)] * 3 + [str(wrong)] * 4
    assert as_json["cases"][4]["decided_by"].startswith("deny rule on projects/p (")
    one = json.loads(opsgate("policy", "test", policy, "--cases", reads, "--json").out)
    assert one["cases_file"] == str(reads)  # one file: the shape it always had


# (id, cases files, --min-coverage, exit status, the coverage line)
THRESHOLDS = [
    ("at-the-minimum", ("reads",), "50", 0, "coverage 50% meets --min-coverage 50%"),
    ("just-below", ("reads",), "50.1", BELOW_MINIMUM, "coverage 50% is below --min-coverage 50.1%"),
    ("percent-sign", ("reads",), "75%", BELOW_MINIMUM, "coverage 50% is below --min-coverage 75%"),
    ("zero", ("reads",), "0", 0, "coverage 50% meets --min-coverage 0%"),
    ("a-failing-case-wins", ("reads", "wrong"), "90", 1, "coverage 75% is below --min-coverage 90%"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("files", "minimum", "code", "line"), [pytest.param(*t[1:], id=t[0]) for t in THRESHOLDS]
)
def test_min_coverage(
    tmp_path: Path,
    policy: Path,
    reads: Path,
    wrong: Path,
    files: tuple[str, ...],
    minimum: str,
    code: int,
    line: str,
) -> None:
    paths = [{"reads": reads, "wrong": wrong}[f] for f in files]
    report = tmp_path / "report.xml"
    result = opsgate(
        "policy", "test", policy, "--cases", *paths, "--min-coverage", minimum,
        "--junit-xml", report,
    )  # fmt: skip
    assert result.code == code, result.out + result.err
    assert line in result.out.splitlines()
    coverage = suites(junit_report(report))[f"coverage of {policy}"]
    (case,) = coverage.findall("testcase")
    assert case.get("classname") == classname(str(policy))
    failure = case.find("failure")
    if "meets" in line:
        assert failure is None
        return
    assert failure is not None
    assert failure.get("type") == "CoverageBelowMinimum"
    assert failure.get("message", "").startswith(f"coverage {line.split()[1]} is below ")
    missing = (failure.text or "").splitlines()
    admin = line_of(policy, "members: [user:boss@x.example]") - 1  # in neither file's cases
    assert f"{policy}:{admin}: not exercised: roles/contactcenterinsights.admin on projects/p " \
           "to user:boss@x.example" in missing  # fmt: skip


def test_min_coverage_compares_exactly(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        "three.yaml",
        """\
        allow:
          - resource: projects/p
            bindings:
              - {role: roles/contactcenterinsights.viewer, members: [user:a@x.example]}
              - {role: roles/contactcenterinsights.editor, members: [user:b@x.example]}
              - {role: roles/contactcenterinsights.admin, members: [user:c@x.example]}
        """,
    )
    cases = write(
        tmp_path,
        "two.cases.yaml",
        "".join(
            f"- {{principal: user:{who}@x.example, method: GetOperation, resource: {OP},"
            " expect: allow}\n"
            for who in "ab"
        ),
    )
    run = lambda minimum: opsgate("policy", "test", policy, "--cases", cases,  # noqa: E731
                                  "--min-coverage", minimum)  # fmt: skip
    assert run("66.6").code == 0  # 2/3 is 66.66...%
    below = run("66.67")
    assert below.code == BELOW_MINIMUM
    assert "coverage: 2/3 bindings, 0/0 deny rules (66.6%)" in below.out.splitlines()
    assert percent(Fraction(999, 10)) == "99.9%"
    assert percent(Fraction(99999, 1000)) == "99.9%"  # never rounded up to a pass it is not


def test_a_policy_with_nothing_to_exercise_is_fully_covered(tmp_path: Path) -> None:
    policy = write(tmp_path, "empty.yaml", "allow: []\n")
    cases = write(
        tmp_path,
        "cases.yaml",
        f"- {{principal: user:a@x.example, method: GetOperation, resource: {OP}, expect: deny}}\n",
    )
    result = opsgate("policy", "test", policy, "--cases", cases, "--min-coverage", "100")
    assert result.code == 0
    assert "coverage: 0/0 bindings, 0/0 deny rules (100%)" in result.out.splitlines()


@pytest.mark.parametrize("value", ["abc", "101", "-1", "nan", "1/0", ""])
def test_min_coverage_must_be_a_percentage(policy: Path, reads: Path, value: str) -> None:
    result = opsgate("policy", "test", policy, "--cases", reads, "--min-coverage", value)
    assert result.code == 2
    assert "--min-coverage" in result.err


def test_cases_files_with_problems(tmp_path: Path, policy: Path, reads: Path) -> None:
    bad = write(
        tmp_path,
        "bad.cases.yaml",
        f"""\
        - principal: user:a@x.example
          method: GetOperatoin
          resource: {OP}
          expect: allow
        - principal: user:a@x.example
          method: GetOperation
          resource: {OP}
          expect: maybe
        """,
    )
    report = tmp_path / "report.xml"
    result = opsgate("policy", "test", policy, "--cases", reads, bad, "--junit-xml", report)
    assert result.code == 1
    assert result.err.splitlines()[-1] == f"{bad}: 2 errors; no case was run"
    by_name = suites(junit_report(report))
    errors = outcomes(by_name[str(bad)])
    assert list(errors) == [f"{bad}:2", f"{bad}:8"]
    method, expect = errors.values()
    assert method is not None and expect is not None
    assert (method.tag, method.get("type")) == ("error", "CaseFileError")
    assert "did you mean 'GetOperation'?" in method.get("message", "")
    assert expect.get("message") == "'expect' must be allow or deny, got 'maybe'"
    skipped = outcomes(by_name[str(reads)])
    assert list(skipped) == ["a reads", "b reads through the team", "mallory cannot cancel"]
    assert {s.tag for s in skipped.values() if s is not None} == {"skipped"}
    assert by_name[str(reads)].get("skipped") == "3"


def test_unusable_input_still_writes_a_report(tmp_path: Path, reads: Path) -> None:
    report = tmp_path / "report.xml"
    report.write_text("<testsuites tests='1' failures='0' errors='0'/>")  # an earlier run's
    broken = write(tmp_path, "broken.yaml", "allow:\n  - resource: projects/p/zones/z\n")
    result = opsgate("policy", "test", broken, "--cases", reads, "--junit-xml", report)
    assert result.code == 2
    root = junit_report(report)
    (suite,) = root.findall("testsuite")
    (error,) = [e for e in outcomes(suite).values() if e is not None]
    assert (error.tag, error.get("type")) == ("error", "UnusableInput")
    assert error.get("message") == f"{broken}: 1 error: the policy cannot be used"
    assert (error.text or "").startswith(f"{broken}:2: error: key 'allow[0].resource'")

    missing = opsgate("policy", "test", broken, "--cases", tmp_path / "none.yaml",
                      "--junit-xml", report)  # fmt: skip
    assert missing.code == 2


def test_an_unreadable_cases_file_is_reported_too(tmp_path: Path, policy: Path) -> None:
    report = tmp_path / "report.xml"
    result = opsgate(
        "policy", "test", policy, "--cases", tmp_path / "none.yaml", "--junit-xml", report
    )
    assert result.code == 2
    (error,) = junit_report(report).iter("error")
    assert "none.yaml: cannot be read" in error.get("message", "")


def test_a_report_that_cannot_be_written_is_unusable_input(
    tmp_path: Path, policy: Path, reads: Path
) -> None:
    where = tmp_path / "no-such-directory" / "report.xml"
    result = opsgate("policy", "test", policy, "--cases", reads, "--junit-xml", where)
    assert result.code == 2
    assert f"cannot write --junit-xml {where}: no such file or directory" in result.err
    assert not where.parent.exists()


def test_what_xml_cannot_hold_is_escaped(tmp_path: Path, policy: Path) -> None:
    cases = write(
        tmp_path,
        "cases.yaml",
        f'- {{name: "bell \\a & <tag>", principal: user:a@x.example, method: GetOperation,'
        f" resource: {OP}, expect: deny}}\n",
    )
    report = tmp_path / "report.xml"
    assert opsgate("policy", "test", policy, "--cases", cases, "--junit-xml", report).code == 1
    (case,) = junit_report(report).iter("testcase")
    assert case.get("name") == "bell \\x07 & <tag>"
    failure = case.find("failure")
    assert failure is not None
    assert (failure.text or "").splitlines()[0].endswith(": bell \\x07 & <tag>")
