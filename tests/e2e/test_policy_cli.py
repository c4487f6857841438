"""`opsgate policy ...` as users run it: the real CLI on the example policy and its cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import opsgate

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


def test_explain() -> None:
    result = opsgate(
        "policy", "explain", "--policy", EXAMPLE, "--principal", "user:mallory@contractor.example",
        "--method", "CancelOperation", "--resource", OPERATION, "--time", "2026-06-01T12:00:00Z",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
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
    answer = json.loads(as_json.stdout)
    assert answer["verdict"] == "GRANTED"
    [granting] = [e for e in answer["entries"] if e["decisive"]]
    assert granting["via_group"] == "group:tier2@acme.example"


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
