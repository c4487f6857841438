"""`opsgate policy test`: golden decision tables run against a policy, with coverage, as text, JSON
or JUnit XML for CI."""

from __future__ import annotations

import difflib
import json
import math
import shlex
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, TextIO

from gateway.errors import ConfigError
from gateway.policy.decision import Decision
from gateway.policy.evaluator import evaluate
from gateway.policy.loader import PolicyError
from gateway.policy.model import Binding, DenyRule, Policy
from gateway.policytools import junit
from gateway.policytools.check import Finding, error_findings, shadowed
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
from gateway.policytools.render import located, plural
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
    source: str = ""  # the cases file, as given


@dataclass(frozen=True, slots=True)
class CasesFile:
    """One cases file as read: its cases, or the problems that keep some from being run."""

    source: str
    cases: tuple[Case, ...]
    problems: tuple[Finding, ...]


@dataclass(frozen=True, slots=True)
class Outcome:
    case: Case
    decision: Decision
    seconds: float = 0.0  # the evaluation's own time, for JUnit's time attribute

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

    @property
    def exercised(self) -> int:
        """Bindings and deny rules that decided at least one case."""
        return self.total - len(self.unexercised_bindings) - len(self.unexercised_rules)

    @property
    def total(self) -> int:
        return len(self.bindings) + len(self.deny_rules)

    @property
    def share(self) -> Fraction:
        """exercised / total, exactly; 1 for a policy with nothing to exercise."""
        return Fraction(self.exercised, self.total) if self.total else Fraction(1)

    def meets(self, minimum: Fraction) -> bool:
        """Whether the share is at least `minimum` percent (compared exactly: 2/3 is below
        66.67 and above 66.66)."""
        return self.share * 100 >= minimum

    def summary(self) -> str:
        done_b = len(self.bindings) - len(self.unexercised_bindings)
        done_r = len(self.deny_rules) - len(self.unexercised_rules)
        return (
            f"coverage: {done_b}/{len(self.bindings)} bindings, "
            f"{done_r}/{len(self.deny_rules)} deny rules ({percent(self.share * 100)})"
        )


def number(value: Fraction) -> str:
    """A --min-coverage value as written: 50, 50.1 (not 501/10)."""
    if value.denominator == 1:
        return str(value.numerator)
    return format((Decimal(value.numerator) / Decimal(value.denominator)).normalize(), "f")


def percent(value: Fraction) -> str:
    """A percentage rounded DOWN to a tenth, so a share below a threshold never prints as
    reaching it: 2/3 is 66.6%, 999/1000 is 99.9%, and only all of it is 100%."""
    tenths = math.floor(value * 10)
    return f"{tenths // 10}%" if tenths % 10 == 0 else f"{tenths / 10:.1f}%"


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
        request = Request(caller, access, method, when or self.now)
        return Case(name, item.line, request, expect, self.source)

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
    outcomes = []
    for case in cases:
        started = time.perf_counter()
        decision = evaluate(policy, case.request.caller, case.request.access, case.request.now)
        outcomes.append(Outcome(case, decision, time.perf_counter() - started))
    return outcomes


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
    policy: Policy,
    files: Sequence[CasesFile],
    outcomes: Sequence[Outcome],
    cover: Coverage,
    minimum: Fraction | None = None,
) -> list[str]:
    lines = []
    for cases_file in files:
        if len(files) > 1:
            lines.append(f"{cases_file.source}:")
        for outcome in outcomes:
            case = outcome.case
            if case.source != cases_file.source:
                continue
            if outcome.passed:
                lines.append(f"PASS {case.name}")
                continue
            lines.append(
                f"FAIL {case.name}: expected {case.expect}, got {outcome.got} "
                f"({outcome.decision.reason})"
            )
            where = located(case.source, case.line)
            lines.append(f"     {where}; to see why: {explain_command(policy, case)}")
    failed = sum(1 for o in outcomes if not o.passed)
    lines.append("")
    lines.append(f"{len(outcomes) - failed} passed, {failed} failed")
    lines.append(cover.summary())
    if minimum is not None:
        verdict = "meets" if cover.meets(minimum) else "is below"
        lines.append(
            f"coverage {percent(cover.share * 100)} {verdict} --min-coverage {number(minimum)}%"
        )
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


def deciding_entry(policy: Policy, decision: Decision) -> str:
    """The binding or deny rule that decided, as `file:line` and what it says; for a default
    deny, that none did (and the caller's own binding whose condition failed, if one did)."""
    entry = decision.trace[0] if decision.trace else None
    if entry is None:
        return "no binding grants it (default deny)"
    where = located(policy.source, entry.source_line)
    if entry.kind == "binding" and entry.outcome == "granted":
        via = f" via {entry.via_group}" if entry.via_group else ""
        return f"binding of {entry.role} on {entry.resource} ({where}) to {entry.member}{via}"
    if entry.kind == "deny_rule" and entry.outcome.startswith("denied"):
        failed = (
            " (its condition could not be evaluated)" if entry.condition_result == "error" else ""
        )
        return f"deny rule on {entry.resource} ({where}) naming {entry.member}{failed}"
    closest = ""
    if entry.member is not None and entry.condition_result in ("false", "error"):
        closest = (
            f"; {entry.role} on {entry.resource} ({where}) names {entry.member}"
            f" but its condition is {entry.condition_result}"
        )
    return f"no binding grants it (default deny){closest}"


def to_json(
    policy: Policy,
    files: Sequence[CasesFile],
    outcomes: Sequence[Outcome],
    cover: Coverage,
    minimum: Fraction | None = None,
) -> dict[str, Any]:
    failed = sum(1 for o in outcomes if not o.passed)
    return {
        "policy": policy.source,
        "cases_file": files[0].source if len(files) == 1 else None,
        "cases_files": [f.source for f in files],
        "passed": len(outcomes) - failed,
        "failed": failed,
        "cases": [
            {
                "name": o.case.name,
                "file": o.case.source,
                "line": o.case.line,
                "principal": o.case.request.caller.member,
                "permission": o.case.request.access.permission,
                "resource": o.case.request.access.resource,
                "time": o.case.request.now.isoformat().replace("+00:00", "Z"),
                "expect": o.case.expect,
                "got": o.got,
                "passed": o.passed,
                "reason": o.decision.reason,
                "decided_by": deciding_entry(policy, o.decision),
            }
            for o in outcomes
        ],
        "coverage": {
            "bindings": _coverage_json(cover.bindings, cover.unexercised_bindings),
            "deny_rules": _coverage_json(cover.deny_rules, cover.unexercised_rules),
            "shadowed_bindings": [
                b.source_line for b in cover.bindings if b.ordinal in cover.shadowed
            ],
            "percent": math.floor(cover.share * 1000) / 10,
            "min_percent": None if minimum is None else float(minimum),
            "meets_minimum": None if minimum is None else cover.meets(minimum),
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


# -- JUnit XML ---------------------------------------------------------------------------------


def junit_results(
    policy: Policy,
    profile: ServiceProfile,
    files: Sequence[CasesFile],
    outcomes: Sequence[Outcome],
    cover: Coverage,
    minimum: Fraction | None,
    now: datetime,
) -> ET.Element:
    """One testsuite per cases file, one testcase per case (a <failure> naming what decided
    when it failed), and with `minimum` a testsuite whose one testcase is the coverage."""
    properties = _properties(policy, profile, cover, minimum)
    suites = [
        junit.TestSuite(
            name=cases_file.source,
            cases=[
                junit.TestCase(
                    o.case.name, junit.classname(o.case.source), o.seconds, _failure(policy, o)
                )
                for o in outcomes
                if o.case.source == cases_file.source
            ],
            properties=properties,
            file=cases_file.source,
            timestamp=now,
        )
        for cases_file in files
    ]
    if minimum is not None:
        suites.append(_coverage_suite(policy, cover, minimum, properties, now))
    return junit.document(suites, f"opsgate policy test {policy.source}")


def _properties(
    policy: Policy, profile: ServiceProfile, cover: Coverage | None, minimum: Fraction | None
) -> list[tuple[str, str]]:
    properties = [("policy", policy.source), ("policy_etag", policy.etag)]
    properties.append(("profile", profile.name))
    if cover is not None:
        properties.append(("coverage", cover.summary().removeprefix("coverage: ")))
    if minimum is not None:
        properties.append(("min_coverage", f"{number(minimum)}%"))
    return properties


def _failure(policy: Policy, outcome: Outcome) -> junit.Problem | None:
    if outcome.passed:
        return None
    case, request = outcome.case, outcome.case.request
    asked = request.method or request.access.permission
    when = request.now.isoformat().replace("+00:00", "Z")
    details = [
        f"{located(case.source, case.line)}: {case.name}",
        f"request: {request.caller.member} {asked} on {request.access.resource} at {when}",
        f"expected: {case.expect}",
        f"got: {outcome.got} ({outcome.decision.reason})",
        f"decided by: {deciding_entry(policy, outcome.decision)}",
        f"to see why: {explain_command(policy, case)}",
    ]
    return junit.Problem(
        "failure",
        f"expected {case.expect}, got {outcome.got}: {deciding_entry(policy, outcome.decision)}",
        "DecisionMismatch",
        "\n".join(details),
    )


def _coverage_suite(
    policy: Policy,
    cover: Coverage,
    minimum: Fraction,
    properties: Sequence[tuple[str, str]],
    now: datetime,
) -> junit.TestSuite:
    problem = None
    if not cover.meets(minimum):
        unexercised: list[Binding | DenyRule] = [
            *cover.unexercised_rules,
            *cover.unexercised_bindings,
        ]
        missing = sorted(unexercised, key=lambda i: i.source_line or 0)
        problem = junit.Problem(
            "failure",
            f"coverage {percent(cover.share * 100)} is below {number(minimum)}%: "
            f"{cover.total - cover.exercised} of {cover.total} bindings and deny rules "
            "decided no case",
            "CoverageBelowMinimum",
            "\n".join(
                f"{located(policy.source, item.source_line)}: not exercised: {_describe(item)}"
                for item in missing
            ),
        )
    case = junit.TestCase(
        f"at least {number(minimum)}% of bindings and deny rules decide a case",
        junit.classname(policy.source),
        problem=problem,
    )
    return junit.TestSuite(
        f"coverage of {policy.source}", [case], properties, file=policy.source, timestamp=now
    )


def junit_problems(
    policy: Policy, profile: ServiceProfile, files: Sequence[CasesFile], now: datetime
) -> ET.Element:
    """Cases files with problems: an <error> per problem; the cases of the files without any
    are <skipped> (no case is run while any file has a problem)."""
    properties = _properties(policy, profile, None, None)
    suites = []
    for cases_file in files:
        name = junit.classname(cases_file.source)
        cases = [
            junit.TestCase(
                located(p.source, p.line),
                name,
                problem=junit.Problem("error", p.message, "CaseFileError", p.hint),
            )
            for p in cases_file.problems
        ] or [
            junit.TestCase(
                case.name,
                name,
                problem=junit.Problem("skipped", "not run: a cases file has errors", "NotRun"),
            )
            for case in cases_file.cases
        ]
        suites.append(
            junit.TestSuite(
                cases_file.source, cases, properties, file=cases_file.source, timestamp=now
            )
        )
    return junit.document(suites, f"opsgate policy test {policy.source}")


def junit_unusable(policy_path: Path, exc: InputError | PolicyError, now: datetime) -> ET.Element:
    """The policy or a cases file cannot be used (exit 2): one <error> saying why, so the CI
    page shows it rather than a report left from an earlier run."""
    if isinstance(exc, PolicyError):
        message = f"{exc.source}: {plural(len(exc.problems), 'error')}: the policy cannot be used"
        details = "\n".join(line for f in error_findings(exc) for line in f.lines())
    else:
        message, details = exc.message, exc.hint
    case = junit.TestCase(
        "read the policy and its cases",
        junit.classname(str(policy_path)),
        problem=junit.Problem("error", message, "UnusableInput", details),
    )
    suite = junit.TestSuite(str(policy_path), [case], file=str(policy_path), timestamp=now)
    return junit.document([suite], f"opsgate policy test {policy_path}")


# -- the command -------------------------------------------------------------------------------

BELOW_MINIMUM = 3  # every case passed, but too few bindings and deny rules decided one


def read_cases_file(
    path: Path, policy: Policy, profile: ServiceProfile, now: datetime
) -> CasesFile:
    cases, problems = parse_cases(read_text(path), str(path), policy, profile, now)
    return CasesFile(str(path), tuple(cases), tuple(problems))


def run(
    policy_path: Path,
    cases_paths: Sequence[Path],
    profile: ServiceProfile,
    as_json: bool,
    out: TextIO,
    err: TextIO,
    now: datetime | None = None,
    *,
    junit_xml: Path | None = None,
    min_coverage: Fraction | None = None,
) -> int:
    """0 when every case passes (and coverage is at least `min_coverage` percent), 1 on a
    failing case or a case file with problems, 3 when all pass but coverage is below the
    minimum. With `junit_xml`, the report is written first, whatever the outcome: even for
    unusable input (which raises InputError or PolicyError: exit 2)."""
    now = now or datetime.now(UTC).replace(microsecond=0)
    try:
        policy = read_policy(policy_path, profile)
        files = [read_cases_file(path, policy, profile, now) for path in cases_paths]
    except (InputError, PolicyError) as exc:
        if junit_xml is not None:
            junit.write(junit_xml, junit_unusable(policy_path, exc, now))
        raise
    problems = [p for f in files for p in f.problems]
    if problems:
        if junit_xml is not None:
            junit.write(junit_xml, junit_problems(policy, profile, files, now))
        if as_json:
            errors = [
                {"file": p.source, "line": p.line, "message": p.message, "hint": p.hint}
                for p in problems
            ]
            print(json.dumps({"errors": errors}, indent=2), file=out)
        else:
            for problem in problems:
                print("\n".join(problem.lines()), file=err)
            for f in files:
                if f.problems:
                    count = plural(len(f.problems), "error")
                    print(f"{f.source}: {count}; no case was run", file=err)
        return 1
    outcomes = run_cases(policy, [case for f in files for case in f.cases])
    cover = coverage(policy, profile, outcomes)
    if junit_xml is not None:
        report = junit_results(policy, profile, files, outcomes, cover, min_coverage, now)
        junit.write(junit_xml, report)
    if as_json:
        report_json = to_json(policy, files, outcomes, cover, min_coverage)
        print(json.dumps(report_json, indent=2), file=out)
    else:
        print("\n".join(render_text(policy, files, outcomes, cover, min_coverage)), file=out)
    if not all(o.passed for o in outcomes):
        return 1
    if min_coverage is not None and not cover.meets(min_coverage):
        return BELOW_MINIMUM
    return 0
