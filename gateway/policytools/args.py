"""The `opsgate policy` argument parsers; light to import, so `opsgate --help` stays fast."""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path
from typing import Any


def add_policy_commands(commands: Any) -> None:
    """Add `policy check|explain|test|diff` to the top-level subparsers `commands`."""
    policy = commands.add_parser(
        "policy",
        help="check, explain, test and diff policy files (nothing is started)",
        description="Work on policy files before they go live. Exit status: 0 ok, "
        "1 problems or mismatches (diff: differences; explain: not granted), "
        "2 usage or unreadable input, 3 (test) every case passed but coverage is below "
        "--min-coverage.",
    )
    tools = policy.add_subparsers(dest="policy_command", required=True, metavar="SUBCOMMAND")

    check = tools.add_parser("check", help="validate policy files: all errors, and warnings")
    check.add_argument("files", nargs="+", type=Path, metavar="FILE")
    check.add_argument("--strict", action="store_true", help="warnings fail the check too")
    _profile_options(check)

    explain = tools.add_parser(
        "explain", help="why a caller is or is not granted a permission on a resource"
    )
    explain.add_argument("--policy", type=Path, required=True, metavar="FILE")
    explain.add_argument(
        "--principal",
        required=True,
        metavar="MEMBER",
        help="user:EMAIL or serviceAccount:EMAIL (a verified email), principal://..., or allUsers",
    )
    explain.add_argument("--groups", default="", help="the token's groups, comma-separated")
    explain.add_argument("--hd", metavar="DOMAIN", help="the token's hosted domain (hd)")
    asked = explain.add_mutually_exclusive_group(required=True)
    asked.add_argument("--method", help="GetOperation, ListOperations, CancelOperation, ...")
    asked.add_argument("--permission", help="e.g. contactcenterinsights.operations.get")
    explain.add_argument("--resource", required=True, help="the name the call carries")
    explain.add_argument("--time", metavar="RFC3339", help="when the call is made (default: now)")
    explain.add_argument("--json", action="store_true", help="one JSON object instead of text")
    explain.add_argument(
        "--exit-zero",
        action="store_true",
        help="exit 0 whatever the verdict (default: 1 unless GRANTED; 2 stays for bad input)",
    )
    _profile_options(explain)

    test = tools.add_parser("test", help="run golden decision tables against a policy file")
    test.add_argument("file", type=Path, metavar="FILE")
    test.add_argument(
        "--cases",
        type=Path,
        required=True,
        nargs="+",
        action="extend",
        metavar="CASES.yaml",
        help="one or more cases files (repeatable); coverage counts them together",
    )
    test.add_argument("--json", action="store_true", help="one JSON object instead of text")
    test.add_argument(
        "--junit-xml",
        type=Path,
        metavar="PATH",
        help="also write a JUnit XML report (one testsuite per cases file) for CI",
    )
    test.add_argument(
        "--min-coverage",
        type=_percent,
        metavar="PERCENT",
        help="exit 3 when every case passes but fewer than PERCENT of the bindings and deny "
        "rules decided a case",
    )
    _profile_options(test)

    diff = tools.add_parser("diff", help="the access a policy change grants, revokes or denies")
    diff.add_argument("old", type=Path, metavar="OLD")
    diff.add_argument("new", type=Path, metavar="NEW")
    diff.add_argument(
        "--all-permissions",
        action="store_true",
        help="include permissions the service profile does not route",
    )
    diff.add_argument("--json", action="store_true", help="one JSON object instead of text")
    _profile_options(diff)


def _percent(text: str) -> Fraction:
    """0 to 100, exactly as written (a Fraction: 66.7 stays 667/10), with or without '%'."""
    try:
        value = Fraction(text.strip().removesuffix("%"))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 0 and 100")
    return value


def _profile_options(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--profile", metavar="NAME", help="built-in service profile (default contactcenterinsights)"
    )
    which.add_argument("--profile-file", type=Path, metavar="PATH", help="a custom service profile")
