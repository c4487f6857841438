"""Runs one `opsgate policy` subcommand from parsed arguments; the exit status is its result."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from gateway.policy.loader import PolicyError
from gateway.policytools import cases, check, diff, explain
from gateway.policytools.check import print_policy_error
from gateway.policytools.inputs import InputError, read_profile

USAGE = 2


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        profile = read_profile(args.profile, args.profile_file)
        command = args.policy_command
        if command == "check":
            return check.run(args.files, profile, args.strict, out)
        if command == "explain":
            return explain.run(
                args.policy,
                profile,
                principal=args.principal,
                # A comma-separated list: the blanks around its items are the list's syntax.
                groups=[g.strip() for g in args.groups.split(",") if g.strip()],
                hosted_domain=args.hd,
                method=args.method,
                permission=args.permission,
                resource=args.resource,
                time=args.time,
                as_json=args.json,
                exit_zero=args.exit_zero,
                out=out,
            )
        if command == "test":
            return cases.run(
                args.file,
                args.cases,
                profile,
                args.json,
                out,
                err,
                junit_xml=args.junit_xml,
                min_coverage=args.min_coverage,
            )
        if command == "diff":
            return diff.run(args.old, args.new, profile, args.all_permissions, args.json, out, err)
    except InputError as exc:
        print_input_error(exc, err)
        return USAGE
    except PolicyError as exc:
        print_policy_error(exc, err)
        return USAGE
    raise AssertionError(f"unhandled policy command {args.policy_command}")


def print_input_error(exc: InputError, err: TextIO) -> None:
    print(f"opsgate policy: error: {exc.message}", file=err)
    if exc.hint:
        print(f"    hint: {exc.hint}", file=err)
