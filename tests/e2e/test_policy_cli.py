"""`opsgate policy ...` as users run it: the real CLI on the example policy and its cases."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.cli import CLOSED_PIPE
from tests.support.cli import opsgate
from tests.unit.audit.builders import denied, record
from tests.unit.policytools.support import junit_report

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "policies" / "example.yaml"
CASES = ROOT / "policies" / "example.cases.yaml"
OPERATION = "projects/acme-prod/locations/us-central1/operations/6857023190548371923"


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """The example with a misspelt role and a malformed group member."""
    text = EXAMPLE.read_text()
    text = text.replace(
        "- role: roles/contactcenterinsights.viewer\n",
        "- role: roles/contactcenterinsights.viwer\n",
        1,
    )
    text = text.replace("- user:carol@acme.example", "- user:carol@", 1)
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    return path


def test_check_the_example() -> None:
    result = opsgate("policy", "check", "policies/example.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.splitlines()[-1]
    assert summary.startswith("policies/example.yaml: 0 errors, ")
    assert "(11 bindings, 2 deny rules, 1 custom role, 5 groups)" in summary


def test_check_a_broken_copy_lists_every_error(broken: Path) -> None:
    result = opsgate("policy", "check", broken)
    assert result.returncode == 1
    errors = [line for line in result.stdout.splitlines() if ": error: " in line]
    assert len(errors) == 2
    assert errors[0].startswith(f"{broken}:22: error: ")
    assert "did you mean 'roles/contactcenterinsights.viewer'?" in errors[0]
    assert "malformed member 'user:carol@'" in errors[1]
    assert result.stdout.splitlines()[-1].startswith(f"{broken}: 2 errors, 0 warnings")


def test_the_example_cases_pass() -> None:
    result = opsgate("policy", "test", "policies/example.yaml", "--cases", CASES)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert all(line.startswith("PASS ") for line in lines[: lines.index("")])
    assert any(line.endswith(" passed, 0 failed") for line in lines)
    assert any(line.startswith("coverage: ") and "2/2 deny rules" in line for line in lines)


def test_the_example_cases_fail_against_a_changed_policy(tmp_path: Path) -> None:
    changed = tmp_path / "changed.yaml"
    changed.write_text(EXAMPLE.read_text().replace("- user:alice@acme.example\n", "", 1))
    result = opsgate("policy", "test", changed, "--cases", CASES)
    assert result.returncode == 1
    assert "FAIL alice cancels a production operation: expected allow, got deny (" in result.stdout


def test_the_example_cases_as_junit_xml(tmp_path: Path) -> None:
    report = tmp_path / "report.xml"
    result = opsgate("policy", "test", "policies/example.yaml", "--cases",
                     "policies/example.cases.yaml", "--junit-xml", report)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    root = junit_report(report)
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "policies/example.cases.yaml"
    names = [case.get("name") for case in suite.findall("testcase")]
    passed = [line.removeprefix("PASS ") for line in result.stdout.splitlines()
              if line.startswith("PASS ")]  # fmt: skip
    assert names == passed and len(names) == int(suite.get("tests", ""))
    assert {c.get("classname") for c in suite.findall("testcase")} == {"policies.example.cases"}
    assert suite.get("failures") == suite.get("errors") == "0"


def test_a_changed_policy_fails_its_cases_in_the_junit_report(tmp_path: Path) -> None:
    changed = tmp_path / "changed.yaml"
    changed.write_text(EXAMPLE.read_text().replace("- user:alice@acme.example\n", "", 1))
    report = tmp_path / "report.xml"
    result = opsgate("policy", "test", changed, "--cases", CASES, "--junit-xml", report)
    assert result.returncode == 1
    root = junit_report(report)
    assert root.get("failures") == "1"
    (failed,) = [c for c in root.iter("testcase") if c.find("failure") is not None]
    assert failed.get("name") == "alice cancels a production operation"
    failure = failed.find("failure")
    assert failure is not None
    assert failure.get("message") == "expected allow, got deny: no binding grants it (default deny)"
    assert f"to see why: opsgate policy explain --policy {changed} " in (failure.text or "")


def test_min_coverage_of_the_example(tmp_path: Path) -> None:
    full = opsgate("policy", "test", EXAMPLE, "--cases", CASES, "--min-coverage", "100")
    assert full.returncode == 0, full.stdout
    assert "coverage 100% meets --min-coverage 100%" in full.stdout.splitlines()
    # A binding no case exercises: every case still passes, the coverage gate fails.
    grown = tmp_path / "grown.yaml"
    text = EXAMPLE.read_text()
    assert text.count("\nallow:\n") == 1
    grown.write_text(
        text.replace(
            "\nallow:\n",
            "\nallow:\n  - resource: projects/acme-new\n    bindings:\n"
            "      - role: roles/contactcenterinsights.viewer\n"
            "        members: [user:newcomer@acme.example]\n",
        )
    )
    below = opsgate("policy", "test", grown, "--cases", CASES, "--min-coverage", "100")
    assert below.returncode == 3, below.stdout + below.stderr
    assert "coverage: 11/12 bindings, 2/2 deny rules (92.8%)" in below.stdout.splitlines()
    assert "coverage 92.8% is below --min-coverage 100%" in below.stdout.splitlines()
    assert (
        opsgate("policy", "test", grown, "--cases", CASES, "--min-coverage", "92.8").returncode == 0
    )


def test_explain() -> None:
    result = opsgate(
        "policy", "explain", "--policy", EXAMPLE, "--principal", "user:mallory@contractor.example",
        "--method", "CancelOperation", "--resource", OPERATION, "--time", "2026-06-01T12:00:00Z",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr  # not granted: a script can gate on it
    lines = result.stdout.splitlines()
    assert lines[0].startswith("NOT_GRANTED: user:mallory@contractor.example  ")
    assert "  projects/acme-prod" in lines
    decided = next(line for line in lines if line.lstrip().startswith("*"))
    assert "deny rule" in decided
    assert "principalSet://goog/group/contractors@acme.example" in decided

    as_json = opsgate(
        "policy", "explain", "--policy", EXAMPLE, "--principal", "user:dave@acme.example",
        "--method", "GetOperation", "--resource",
        "projects/acme-prod/locations/us-central1/authorizedViewSets/support/authorizedViews/"
        "tier2/operations/1", "--json",
    )  # fmt: skip
    assert as_json.returncode == 0, as_json.stderr
    answer = json.loads(as_json.stdout)
    assert answer["verdict"] == "GRANTED"
    [granting] = [e for e in answer["entries"] if e["decisive"]]
    assert granting["via_group"] == "group:tier2@acme.example"


def test_explain_exit_zero_keeps_the_old_status() -> None:
    mallory = (
        "policy", "explain", "--policy", EXAMPLE, "--principal", "user:mallory@contractor.example",
        "--method", "CancelOperation", "--resource", OPERATION, "--time", "2026-06-01T12:00:00Z",
    )  # fmt: skip
    gated, kept = opsgate(*mallory), opsgate(*mallory, "--exit-zero")
    assert (gated.returncode, kept.returncode) == (1, 0)
    assert kept.stdout == gated.stdout
    assert kept.stdout.startswith("NOT_GRANTED: ")


def test_diff(tmp_path: Path, broken: Path) -> None:
    assert opsgate("policy", "diff", EXAMPLE, EXAMPLE).returncode == 0
    changed = tmp_path / "changed.yaml"
    changed.write_text(
        EXAMPLE.read_text().replace(
            "  tier2@acme.example:\n    - user:dave@acme.example\n",
            "  tier2@acme.example:\n    - user:dave@acme.example\n    - user:zoe@acme.example\n",
        )
    )
    result = opsgate("policy", "diff", EXAMPLE, changed)
    assert result.returncode == 1
    assert "  group group:tier2@acme.example: +user:zoe@acme.example" in result.stdout
    assert any(
        line.startswith("+ user:zoe@acme.example  contactcenterinsights.authorizedOperations.get")
        for line in result.stdout.splitlines()
    )
    invalid = opsgate("policy", "diff", EXAMPLE, broken)
    assert invalid.returncode == 2
    assert f"{broken}:22: error: " in invalid.stderr


def test_usage_errors_exit_2() -> None:
    assert opsgate("policy").returncode == 2
    unrouted = opsgate(
        "policy", "explain", "--policy", EXAMPLE, "--principal", "user:bob@acme.example",
        "--method", "WaitOperation", "--resource", OPERATION,
    )  # fmt: skip
    assert unrouted.returncode == 2
    assert "WaitOperation is not routed" in unrouted.stderr


# -- every command ends quietly when its reader goes (`opsgate ... | head -1`) ----------------

BIG_OP = "projects/p/locations/l/operations/o"
PIPE_BYTES = 4096  # the smallest pipe Linux makes: anything written past it must wait for us


@dataclass(frozen=True)
class Cut:
    first_line: str
    code: int
    err: str


def cut_after_one_line(*args: str | Path, buffered: bool = True, before: bool = False) -> Cut:
    """`opsgate ARGS | head -1`, made deterministic: a small pipe, one line read byte by byte
    (nothing read ahead), then the read end closed while the command still has more to write.
    With `before`, the read end is closed before the command writes anything at all."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", *map(str, args)],
        stdout=write_end,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    os.close(write_end)
    first = b""
    while not before and not first.endswith(b"\n"):
        byte = os.read(read_end, 1)
        if not byte:
            break
        first += byte
    os.close(read_end)
    _, err = process.communicate(timeout=60)
    return Cut(first.decode().rstrip("\n"), process.returncode, err.decode())


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Inputs whose output is many times a pipe's capacity, so the cut always lands mid-write."""
    where = tmp_path_factory.mktemp("big")
    bindings = []
    for i in range(300):
        for role in ("roles/contactcenterinsights.viewer", "roles/storage.admin"):
            bindings += [f"      - role: {role}", f"        members: [user:u{i}@x.example]"]
    policy = where / "big.yaml"
    policy.write_text("allow:\n  - resource: projects/p\n    bindings:\n" + "\n".join(bindings))
    empty = where / "empty.yaml"
    empty.write_text("allow: []\n")
    cases = where / "big.cases.yaml"
    cases.write_text(
        "".join(
            f"- {{principal: user:u{i}@x.example, method: GetOperation, resource: {BIG_OP},"
            " expect: allow}\n"
            for i in range(300)
        )
    )
    audit = where / "audit.log"
    with audit.open("w") as trail:
        for i in range(300):
            one = (
                record(request_id=f"{i:032x}") if i % 2 else record(denied(request_id=f"{i:032x}"))
            )
            trail.write(json.dumps(one) + "\n")
    return {"policy": policy, "empty": empty, "cases": cases, "audit": audit}


EXPLAIN_BIG = ("--principal", "user:nobody@x.example", "--method", "GetOperation")
# (id, arguments with {policy}, {empty}, {cases}, {audit} filled in, how the first line starts)
CUT = [
    ("policy-explain", ("policy", "explain", "--policy", "{policy}", *EXPLAIN_BIG,
                        "--resource", BIG_OP), "NOT_GRANTED: user:nobody@x.example"),
    ("policy-explain-json", ("policy", "explain", "--policy", "{policy}", *EXPLAIN_BIG,
                             "--resource", BIG_OP, "--json"), "{"),
    ("policy-check", ("policy", "check", "{policy}"), "{policy}:"),
    ("policy-diff", ("policy", "diff", "{empty}", "{policy}"), ""),
    ("policy-test", ("policy", "test", "{policy}", "--cases", "{cases}"), "PASS "),
    ("audit-query", ("audit", "query", "{audit}"), "TIME "),
    ("audit-query-json", ("audit", "query", "{audit}", "--format", "json"), "{"),
    ("audit-tail", ("audit", "tail", "-n", "300", "{audit}"), "TIME "),
    ("envoy-config", ("envoy-config", "--config", "deploy/envoy/opsgate.yaml",
                      "--upstream", "127.0.0.1:50051"), "#"),
]  # fmt: skip


def fill(args: tuple[str, ...], big: dict[str, Path]) -> list[str]:
    filled = []
    for arg in args:
        for name, path in big.items():
            arg = arg.replace(f"{{{name}}}", str(path))
        filled.append(arg)
    return filled


@pytest.mark.parametrize(("args", "starts"), [pytest.param(*c[1:], id=c[0]) for c in CUT])
def test_a_reader_that_stops_after_one_line_ends_the_command_quietly(
    big: dict[str, Path], args: tuple[str, ...], starts: str
) -> None:
    cut = cut_after_one_line(*fill(args, big))
    assert cut.first_line.startswith(fill((starts,), big)[0]), cut
    assert cut.err == ""  # no BrokenPipeError traceback, no "Exception ignored"
    assert cut.code == CLOSED_PIPE


# Unbuffered (PYTHONUNBUFFERED=1, python -u), a write the reader's going cuts short returns the
# count it wrote, and Python drops the rest silently: only the next write fails. These commands
# write a line at a time, so one always does.
@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("policy", "check", "{policy}"), id="policy-check"),
        pytest.param(("audit", "query", "{audit}"), id="audit-query"),
    ],
)
def test_unbuffered_too(big: dict[str, Path], args: tuple[str, ...]) -> None:
    cut = cut_after_one_line(*fill(args, big), buffered=False)
    assert (cut.code, cut.err) == (CLOSED_PIPE, "")


# Commands that print little: the reader is gone before their first write.
GONE = [
    ("envoy-compile-check", ("envoy-compile", "--config", "deploy/envoy-compiled/opsgate.yaml",
                             "--check")),
    ("policy-explain-granted", ("policy", "explain", "--policy", "policies/example.yaml",
                                "--principal", "user:bob@acme.example", "--method",
                                "GetOperation", "--resource", OPERATION)),
    ("demo", ("demo",)),
]  # fmt: skip


@pytest.mark.parametrize("args", [pytest.param(g[1], id=g[0]) for g in GONE])
def test_a_reader_gone_before_the_first_write_ends_the_command_quietly(
    args: tuple[str, ...],
) -> None:
    cut = cut_after_one_line(*args, before=True)
    assert cut.err == "", cut.err
    assert cut.code == CLOSED_PIPE


def test_help_ends_quietly_too() -> None:
    cut = cut_after_one_line("policy", "test", "--help", before=True)
    assert cut.err == ""
    assert cut.code == CLOSED_PIPE  # buffered: the failed write surfaces at the last flush


def test_a_reader_that_reads_everything_sees_the_usual_exit_code(big: dict[str, Path]) -> None:
    check = opsgate("policy", "check", big["policy"])
    assert (check.returncode, check.stderr) == (0, "")
    assert check.stdout.count(": warning: ") == 300
