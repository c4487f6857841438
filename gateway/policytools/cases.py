"""`opsgate policy test`: golden decision tables run against a policy, with binding coverage."""

from __future__ import annotations

import difflib
import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from gateway.errors import ConfigError
from gateway.policy.decision import Decision
from gateway.policy.evaluator import evaluate
from gateway.policy.model import Binding, DenyRule, Policy
from gateway.policytools.check import Finding, shadowed
from gateway.policytools.inputs import (
    InputError,
    Request,
    access_for,
    caller_for,
    known_permissions,
    parse_time,
    read_policy,
    read_text,
)
from gateway.policytools.render import plural
from gateway.profile import ServiceProfile
from gateway.sourcefile import LineMap, load_text

CASE_KEYS = (
    "name",
    "principal",
    "groups",
    "hd",
    "method",
    "permission",
    "resource",
    "time",
    "expect",
)
EXPECTATIONS = ("allow", "deny")
CASE_HINT = "a case is {name, principal, groups, hd, method or permission, resource, time, expect}"


@dataclass(frozen=True, slots=True)
class Case:
    """One row of the table: a request and the decision it must get."""

    name: str
    line: int | None
    request: Request
    expect: str  # "allow" | "deny"


@dataclass(frozen=True, slots=True)
class Outcome:
    case: Case
    decision: Decision

    @property
    def got(self) -> str:
        return "allow" if self.decision.allowed else "deny"

    @property
    def passed(self) -> bool:
        return self.got == self.case.expect


@dataclass(frozen=True, slots=True)
class Coverage:
    """The bindings that granted in some case, and the deny rules that matched in some case."""

    bindings: tuple[Binding, ...]
    unexercised_bindings: tuple[Binding, ...]
    deny_rules: tuple[DenyRule, ...]
    unexercised_rules: tuple[DenyRule, ...]
    shadowed: frozenset[int]  # ordinals of bindings other grants already cover (see check)

    def summary(self) -> str:
        done_b = len(self.bindings) - len(self.unexercised_bindings)
        done_r = len(self.deny_rules) - len(self.unexercised_rules)
        return (
            f"coverage: {done_b}/{len(self.bindings)} bindings, "
            f"{done_r}/{len(self.deny_rules)} deny rules"
        )


# -- reading the table ------------------------------------------------------------------------


def parse_cases(
    text: str, source: str, policy: Policy, profile: ServiceProfile, now: datetime
) -> tuple[list[Case], list[Finding]]:
    """The cases, and a problem (file:line) for each one that cannot be run."""
    try:
        data = load_text(text, source)
    except ConfigError as exc:
        return [], [_problem(source, exc.line, exc.problem)]
    if not isinstance(data, list) or not data:
        what = "is empty" if data is None or data == [] else "must be a list of cases"
        return [], [_problem(source, getattr(data, "line", None), what, CASE_HINT)]
    reader = _CaseReader(source, policy, profile, now)
    cases = [case for number, item in enumerate(data, 1) if (case := reader.read(item, number))]
    return cases, reader.problems


def _problem(source: str, line: int | None, message: str, hint: str = "") -> Finding:
    return Finding(source, line, "error", "case", message, hint)


class _CaseReader:
    def __init__(self, source: str, policy: Policy, profile: ServiceProfile, now: datetime):
        self.source = source
        self.profile = profile
        self.known = known_permissions(policy, profile)
        self.now = now
        self.problems: list[Finding] = []
        self.names: dict[str, int | None] = {}

    def add(self, line: int | None, message: str, hint: str = "") -> None:
        self.problems.append(_problem(self.source, line, message, hint))

    def read(self, item: Any, number: int) -> Case | None:
        if not isinstance(item, LineMap):
            self.add(None, f"case {number} must be a mapping", CASE_HINT)
            return None
        before = len(self.problems)
        misspelt = self.check_keys(item)
        for key in ("principal", "resource", "expect"):
            if key not in item and key not in misspelt:
                self.add(item.line, f"case {number}: '{key}' is required", CASE_HINT)
        asked = [key for key in ("method", "permission") if key in item]
        if len(asked) != 1 and not misspelt & {"method", "permission"}:
            self.add(item.line, f"case {number}: give exactly one of 'method' and 'permission'")
        name = self.string(item, "name")
        principal = self.string(item, "principal")
        resource = self.string(item, "resource")
        hd = self.string(item, "hd")
        groups = self.groups(item)
        expect = self.expect(item)
        when = self.time(item)
        caller = access = method = None
        if principal is not None and groups is not None:
            try:
                caller = caller_for(principal, groups, hd)
            except InputError as exc:
                self.add(item.line_of("principal"), exc.message, exc.hint)
        if resource is not None and len(asked) == 1:
            asked_value = self.string(item, asked[0])
            if asked_value is not None:
                try:
                    access, method = access_for(
                        self.profile,
                        resource,
                        method=asked_value if asked[0] == "method" else None,
                        permission=asked_value if asked[0] == "permission" else None,
                        known=self.known,
                    )
                except InputError as exc:
                    self.add(item.line_of(asked[0]), exc.message, exc.hint)
        if len(self.problems) > before or caller is None or access is None or expect is None:
            return None
        name = name or f"{principal} {method or access.permission} {resource}"
        if name in self.names:
            self.add(
                item.line_of("name"),
                f"case name '{name}' is used twice (also line {self.names[name]})",
            )
            return None
        self.names[name] = item.line
        return Case(name, item.line, Request(caller, access, method, when or self.now), expect)

    def check_keys(self, item: LineMap) -> set[str]:
        misspelt: set[str] = set()
        for key in item:
            if key in CASE_KEYS:
                continue
            close = difflib.get_close_matches(str(key), CASE_KEYS, n=1)
            if close:
                misspelt.add(close[0])
            suggestion = f" (did you mean '{close[0]}'?)" if close else ""
            self.add(item.line_of(key), f"unknown key '{key}'{suggestion}", CASE_HINT)
        return misspelt

    def string(self, item: LineMap, key: str) -> str | None:
        value = item.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.add(item.line_of(key), f"'{key}' must be a non-empty string, got {value!r}")
            return None
        if key != "name" and value != value.strip():
            # Taken as written, as the gateway takes a token or a name: trimming it here would
            # test a different question than the one written.
            self.add(
                item.line_of(key),
                f"'{key}' has leading or trailing whitespace: {value!r}",
                "a YAML block scalar (| or >) keeps its line break; write the value on one line",
            )
            return None
        return value.strip()

    def groups(self, item: LineMap) -> list[str] | None:
        value = item.get("groups")
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(g, str) for g in value):
            self.add(item.line_of("groups"), "'groups' must be a list of group emails")
            return None
        return value

    def expect(self, item: LineMap) -> str | None:
        value = item.get("expect")
        if value is None:
            return None
        if value not in EXPECTATIONS:
            self.add(
                item.line_of("expect"),
                f"'expect' must be allow or deny, got {value!r}",
                "quote it if YAML read it as something else",
            )
            return None
        return str(value)

    def time(self, item: LineMap) -> datetime | None:
        if item.get("time") is None:
            return None
        try:
            return parse_time(item["time"])
        except InputError as exc:
            self.add(item.line_of("time"), f"bad 'time': {exc.message}", exc.hint)
            return None


# -- running it -------------------------------------------------------------------------------


def run_cases(policy: Policy, cases: Sequence[Case]) -> list[Outcome]:
    return [
        Outcome(case, evaluate(policy, case.request.caller, case.request.access, case.request.now))
        for case in cases
    ]


def coverage(policy: Policy, profile: ServiceProfile, outcomes: Sequence[Outcome]) -> Coverage:
    """A binding is exercised when it granted in some case, a deny rule when it matched."""
    granted: set[tuple[str, str | None, int | None, str | None]] = set()
    denied: set[tuple[str, int | None, str | None]] = set()
    for outcome in outcomes:
        for entry in outcome.decision.trace:
            if entry.kind == "binding" and entry.outcome == "granted":
                granted.add((entry.resource, entry.role, entry.source_line, entry.member))
            elif entry.kind == "deny_rule" and entry.outcome.startswith("denied"):
                denied.add((entry.resource, entry.source_line, entry.member))
    # A trace entry names a binding by resource, role, line and the member that matched.
    unexercised_bindings = tuple(
        b
        for b in policy.bindings
        if not any((b.resource, b.role, b.source_line, m.written) in granted for m in b.members)
    )
    unexercised_rules = tuple(
        r
        for r in policy.deny_rules
        if not any((r.resource, r.source_line, m.written) in denied for m in r.denied_principals)
    )
    # A binding shadowed for every one of its members can never be the one that grants.
    members: dict[int, set[str]] = {}
    for binding, member, _, _ in shadowed(policy, profile):
        members.setdefault(binding.ordinal, set()).add(member.written)
    dead = frozenset(
        b.ordinal
        for b in policy.bindings
        if members.get(b.ordinal, set()) >= {m.written for m in b.members if m.key is not None}
    )
    return Coverage(
        policy.bindings, unexercised_bindings, policy.deny_rules, unexercised_rules, dead
    )


def explain_command(policy: Policy, case: Case) -> str:
    """The `opsgate policy explain` command that shows why a case decided as it did."""
    request = case.request
    words = ["opsgate", "policy", "explain", "--policy", policy.source]
    words += ["--principal", request.caller.member]
    if request.caller.groups:
        words += ["--groups", ",".join(sorted(request.caller.groups))]
    if request.caller.hosted_domain:
        words += ["--hd", request.caller.hosted_domain]
    if request.method:
        words += ["--method", request.method]
    else:
        words += ["--permission", request.access.permission]
    words += ["--resource", request.access.resource]
    words += ["--time", request.now.isoformat().replace("+00:00", "Z")]
    return shlex.join(words)


def render_text(
    policy: Policy, cases_source: str, outcomes: Sequence[Outcome], cover: Coverage
) -> list[str]:
    lines = []
    for outcome in outcomes:
        case = outcome.case
        if outcome.passed:
            lines.append(f"PASS {case.name}")
            continue
        lines.append(
            f"FAIL {case.name}: expected {case.expect}, got {outcome.got} "
            f"({outcome.decision.reason})"
        )
        where = cases_source if case.line is None else f"{cases_source}:{case.line}"
        lines.append(f"     {where}; to see why: {explain_command(policy, case)}")
    failed = sum(1 for o in outcomes if not o.passed)
    lines.append("")
    lines.append(f"{len(outcomes) - failed} passed, {failed} failed")
    lines.append(cover.summary())
    missing: list[Binding | DenyRule] = [*cover.unexercised_rules, *cover.unexercised_bindings]
    if missing:
        lines.append("not exercised by any case:")
        for item in sorted(missing, key=lambda i: i.source_line or 0):
            note = ""
            if isinstance(item, Binding) and item.ordinal in cover.shadowed:
                note = "  (shadowed: other grants already cover it; see policy check)"
            lines.append(f"  {policy.source}:{item.source_line}  {_describe(item)}{note}")
    return lines


def _describe(item: Binding | DenyRule) -> str:
    if isinstance(item, Binding):
        members = ", ".join(m.written for m in item.members)
        return f"{item.role} on {item.resource} to {members}"
    principals = ", ".join(m.written for m in item.denied_principals)
    return f"deny rule on {item.resource} for {principals}"


def to_json(
    policy: Policy, cases_source: str, outcomes: Sequence[Outcome], cover: Coverage
) -> dict[str, Any]:
    failed = sum(1 for o in outcomes if not o.passed)
    return {
        "policy": policy.source,
        "cases_file": cases_source,
        "passed": len(outcomes) - failed,
        "failed": failed,
        "cases": [
            {
                "name": o.case.name,
                "line": o.case.line,
                "principal": o.case.request.caller.member,
                "permission": o.case.request.access.permission,
                "resource": o.case.request.access.resource,
                "time": o.case.request.now.isoformat().replace("+00:00", "Z"),
                "expect": o.case.expect,
                "got": o.got,
                "passed": o.passed,
                "reason": o.decision.reason,
            }
            for o in outcomes
        ],
        "coverage": {
            "bindings": _coverage_json(cover.bindings, cover.unexercised_bindings),
            "deny_rules": _coverage_json(cover.deny_rules, cover.unexercised_rules),
            "shadowed_bindings": [
                b.source_line for b in cover.bindings if b.ordinal in cover.shadowed
            ],
        },
    }


def _coverage_json(
    everything: Sequence[Binding | DenyRule], missing: Sequence[Binding | DenyRule]
) -> dict[str, Any]:
    return {
        "exercised": len(everything) - len(missing),
        "total": len(everything),
        "unexercised": [
            {"line": item.source_line, "resource": item.resource, "description": _describe(item)}
            for item in missing
        ],
    }


def run(
    policy_path: Path,
    cases_path: Path,
    profile: ServiceProfile,
    as_json: bool,
    out: TextIO,
    err: TextIO,
    now: datetime | None = None,
) -> int:
    """0 when every case passes, 1 on a failing case or a case file with problems."""
    policy = read_policy(policy_path, profile)
    text = read_text(cases_path)
    cases, problems = parse_cases(
        text, str(cases_path), policy, profile, now or datetime.now(UTC).replace(microsecond=0)
    )
    if problems:
        if as_json:
            errors = [
                {"file": p.source, "line": p.line, "message": p.message, "hint": p.hint}
                for p in problems
            ]
            print(json.dumps({"errors": errors}, indent=2), file=out)
        else:
            for problem in problems:
                print("\n".join(problem.lines()), file=err)
            print(f"{cases_path}: {plural(len(problems), 'error')}; no case was run", file=err)
        return 1
    outcomes = run_cases(policy, cases)
    cover = coverage(policy, profile, outcomes)
    if as_json:
        print(json.dumps(to_json(policy, str(cases_path), outcomes, cover), indent=2), file=out)
    else:
        print("\n".join(render_text(policy, str(cases_path), outcomes, cover)), file=out)
    return 0 if all(o.passed for o in outcomes) else 1
