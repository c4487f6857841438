"""`opsgate policy check`: every load error of a policy file, and warnings about what it grants."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from gateway.policy.loader import PolicyError, load_policy_text
from gateway.policy.members import ALL_AUTHENTICATED_USERS, ALL_USERS, Member, group_key
from gateway.policy.model import Binding, DenyRule, Policy
from gateway.policytools.inputs import UnreadableError, read_text
from gateway.policytools.render import finding_lines, plural
from gateway.profile import ServiceProfile
from gateway.runtime import collector_paused

# Warning kinds, as --json and the tests name them.
DUPLICATE = "duplicate-binding"
SHADOWED = "shadowed-binding"
GRANTS_NOTHING = "grants-nothing"
DENY_NEVER_MATCHES = "deny-never-matches"
UNUSED_GROUP = "unused-group"
REACHES_NOTHING = "reaches-nothing"
UNDECLARED_TAGS = "undeclared-tags"
_TAG_FUNCTIONS = ("resource.matchTag", "resource.hasTagKey")  # and their -Id forms


@dataclass(frozen=True, slots=True)
class Finding:
    """One error or warning about a policy file, where it is, and how to fix it."""

    source: str
    line: int | None
    severity: str  # "error" | "warning"
    kind: str  # "error" for load errors, else one of the warning kinds above
    message: str
    hint: str = ""

    def lines(self) -> list[str]:
        return finding_lines(self.source, self.line, self.severity, self.message, self.hint)


@dataclass(frozen=True, slots=True)
class FileReport:
    """What checking one file found; `policy` is None when it could not be loaded."""

    source: str
    findings: tuple[Finding, ...]
    policy: Policy | None
    unreadable: bool = False

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.severity == "error")

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.severity == "warning")

    def summary(self) -> str:
        counts = f"{plural(self.errors, 'error')}, {plural(self.warnings, 'warning')}"
        if self.policy is None:
            return f"{self.source}: {counts} (not loaded: fix the errors first)"
        p = self.policy
        sizes = [
            plural(len(p.bindings), "binding"),
            plural(len(p.deny_rules), "deny rule"),
            plural(len(p.custom_roles), "custom role"),
            plural(len(p.groups), "group"),
        ]
        return f"{self.source}: {counts} ({', '.join(sizes)})"


def check_file(path: Path, profile: ServiceProfile) -> FileReport:
    source = str(path)
    try:
        text = read_text(path)
        with collector_paused():
            policy = load_policy_text(text, source, profile.permissions)
    except UnreadableError as exc:
        finding = Finding(source, None, "error", "error", exc.message.removeprefix(f"{source}: "))
        return FileReport(source, (finding,), None, unreadable=True)
    except PolicyError as exc:
        return FileReport(source, error_findings(exc), None)
    return FileReport(source, tuple(warnings(policy, profile, text)), policy)


def error_findings(error: PolicyError) -> tuple[Finding, ...]:
    """The loader's problems, all of them, as findings."""
    found = []
    for problem in error.problems:
        subject = f"key '{problem.key}': " if problem.key else ""
        message = f"{subject}{problem.problem}"
        found.append(Finding(problem.source, problem.line, "error", "error", message, problem.hint))
    return tuple(found)


def print_policy_error(exc: PolicyError, err: TextIO) -> None:
    """Every problem of a policy that cannot be used, as `policy check` prints them."""
    for finding in error_findings(exc):
        print("\n".join(finding.lines()), file=err)
    print(
        f"{exc.source}: {plural(len(exc.problems), 'error')}: the policy cannot be used", file=err
    )


def run(paths: Sequence[Path], profile: ServiceProfile, strict: bool, out: TextIO) -> int:
    """Check each file; 2 if one cannot be read, 1 on errors (or warnings when strict), else 0."""
    reports = [check_file(path, profile) for path in paths]
    for report in reports:
        for finding in report.findings:
            for line in finding.lines():
                print(line, file=out)
        print(report.summary(), file=out)
    if len(reports) > 1:
        errors = sum(r.errors for r in reports)
        warned = sum(r.warnings for r in reports)
        files = plural(len(reports), "file")
        print(f"{files}: {plural(errors, 'error')}, {plural(warned, 'warning')}", file=out)
    if any(r.unreadable for r in reports):
        return 2
    if any(r.errors or (strict and r.warnings) for r in reports):
        return 1
    return 0


# -- warnings ---------------------------------------------------------------------------------


class _Lines:
    """Finds the line of a member inside a binding: the loader records lines of keys only."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()

    def of(self, written: str, start: int | None) -> int | None:
        if start is None:
            return None
        for number in range(start - 1, min(len(self.lines), start + 200)):
            if written in self.lines[number]:
                return number + 1
        return start


def warnings(policy: Policy, profile: ServiceProfile, text: str = "") -> list[Finding]:
    """Everything legal but probably not meant, in file order; `text` places member warnings
    on the member's own line."""
    lines = _Lines(text)
    found = [
        *_duplicates(policy, lines),
        *_shadowed(policy, profile, lines),
        *_granting_nothing(policy, profile),
        *_dead_deny_rules(policy, profile),
        *_unused_groups(policy),
        *_unreached_containers(policy),
        *_undeclared_tags(policy),
        *(_warn(policy, n.line, n.kind, n.message, n.hint) for n in policy.notes),
    ]
    return sorted(found, key=lambda f: (f.line or 0, f.kind))


def _key(member: Member) -> str:
    return member.key if member.key is not None else member.written


def _condition(binding: Binding) -> str | None:
    return binding.condition.expression if binding.condition is not None else None


def _warn(policy: Policy, line: int | None, kind: str, message: str, hint: str) -> Finding:
    return Finding(policy.source, line, "warning", kind, message, hint)


def _duplicates(policy: Policy, lines: _Lines) -> Iterable[Finding]:
    first: dict[tuple[str, str, str, str | None], Binding] = {}
    for binding in policy.bindings:
        seen_here: set[str] = set()
        for member in binding.members:
            key = _key(member)
            if key in seen_here:
                yield _warn(
                    policy,
                    binding.source_line,
                    DUPLICATE,
                    f"{member.written} is listed twice in this {binding.role} binding",
                    "remove one of the two entries",
                )
                continue
            seen_here.add(key)
            identity = (binding.resource, binding.role, key, _condition(binding))
            earlier = first.setdefault(identity, binding)
            if earlier is not binding:
                yield _warn(
                    policy,
                    lines.of(member.written, binding.source_line),
                    DUPLICATE,
                    f"{member.written} is granted {binding.role} on {binding.resource} "
                    f"again{_same_condition(binding)} (also at line {earlier.source_line})",
                    "remove one of the two; they grant exactly the same",
                )


def _same_condition(binding: Binding) -> str:
    return " under the same condition" if binding.condition is not None else ""


def _covering_keys(policy: Policy, member: Member) -> list[tuple[str, str]]:
    """(key, how) pairs: a grant to any of these keys reaches every caller `member` matches."""
    key = member.key
    assert key is not None
    keys = [(key, "")]
    keys.extend((group, f" through {group}") for group in policy.index.group_closure.get(key, ()))
    if key != ALL_USERS:
        if key != ALL_AUTHENTICATED_USERS:
            keys.append((ALL_AUTHENTICATED_USERS, f" through {ALL_AUTHENTICATED_USERS}"))
        keys.append((ALL_USERS, f" through {ALL_USERS}"))
    return keys


def shadowed(
    policy: Policy, profile: ServiceProfile
) -> Iterator[tuple[Binding, Member, Binding, str]]:
    """Bindings that add nothing for a member: it already holds, unconditionally, a role with
    every routed permission of this one on the same resource or an ancestor.

    Yields (binding, member, the covering binding, how the member gets that one)."""
    routed = profile.permissions
    unconditional: dict[tuple[str, str], list[Binding]] = defaultdict(list)
    for binding in policy.bindings:
        if binding.condition is None:
            for member in binding.members:
                if member.key is not None:
                    unconditional[(binding.resource, member.key)].append(binding)
    for binding in policy.bindings:
        needed = binding.permissions & routed
        if not needed:
            continue  # reported as granting nothing
        chain = policy.hierarchy.chain(binding.resource)
        for member in binding.members:
            if member.key is None:
                continue
            cover = _cover(policy, binding, member, needed, chain, unconditional)
            if cover is not None:
                yield binding, member, *cover


def _shadowed(policy: Policy, profile: ServiceProfile, lines: _Lines) -> Iterable[Finding]:
    for binding, member, other, how in shadowed(policy, profile):
        where = "here" if other.resource == binding.resource else f"on {other.resource}"
        yield _warn(
            policy,
            lines.of(member.written, binding.source_line),
            SHADOWED,
            f"{member.written} gains nothing from {binding.role} on {binding.resource}: "
            f"{other.role} {where} (line {other.source_line}) already grants it all of that "
            f"unconditionally{how}",
            "remove this grant, or grant a role that adds what is missing",
        )


def _cover(
    policy: Policy,
    binding: Binding,
    member: Member,
    needed: frozenset[str],
    chain: tuple[str, ...],
    unconditional: dict[tuple[str, str], list[Binding]],
) -> tuple[Binding, str] | None:
    for key, how in _covering_keys(policy, member):
        for level in chain:
            for other in unconditional.get((level, key), ()):
                if other is binding or not needed <= other.permissions:
                    continue
                if level == binding.resource and key == member.key:
                    if other.role == binding.role and binding.condition is None:
                        continue  # the same grant again: a duplicate, reported as such
                    # Two roles with equal permissions: only the later grant is redundant.
                    if other.permissions == binding.permissions and other.ordinal > binding.ordinal:
                        continue
                return other, how
    return None


def _granting_nothing(policy: Policy, profile: ServiceProfile) -> Iterable[Finding]:
    routed = sorted(profile.permissions)
    for binding in policy.bindings:
        if not binding.permissions & profile.permissions:
            hint = (
                f"the profile routes {', '.join(routed)}; grant a role that includes one of "
                "them, or check --profile"
            )
            if binding.role not in policy.index.roles:
                what = "is another service's role"
                hint = (
                    f"opsgate enforces {profile.service}; this binding is for Google Cloud "
                    "itself, kept as exported, and decides nothing here"
                )
            elif not binding.permissions and not policy.index.roles[binding.role].custom:
                what = f"holds none of {profile.service}'s permissions (Google's catalogue)"
                hint = (
                    "a predefined role kept as exported (a service agent's acts on other "
                    "services); it decides nothing here"
                )
            elif not binding.permissions:
                what = "includes no permissions (a DISABLED or deleted custom role?)"
            else:
                what = f"includes none of the permissions the {profile.name} profile routes"
            yield _warn(
                policy,
                binding.source_line,
                GRANTS_NOTHING,
                f"this binding of {binding.role} on {binding.resource} grants nothing: the role "
                f"{what}",
                hint,
            )
        elif all(member.key is None for member in binding.members):
            yield _warn(
                policy,
                binding.source_line,
                GRANTS_NOTHING,
                f"this binding of {binding.role} on {binding.resource} grants nothing: every "
                "member is deleted:",
                "remove the binding",
            )


def _dead_deny_rules(policy: Policy, profile: ServiceProfile) -> Iterable[Finding]:
    for rule in policy.deny_rules:
        why = _never_matches(policy, rule, profile)
        if why is not None:
            message, hint = why
            yield _warn(
                policy,
                rule.source_line,
                DENY_NEVER_MATCHES,
                f"the deny rule on {rule.resource} can never match: {message}",
                hint,
            )


def _never_matches(
    policy: Policy, rule: DenyRule, profile: ServiceProfile
) -> tuple[str, str] | None:
    denied = [p for p in profile.permissions if rule.denied_permissions.matches(p)]
    if not denied:
        return (
            f"it denies none of the permissions the {profile.name} profile routes",
            f"deny some of: {', '.join(sorted(profile.permissions))}",
        )
    if all(rule.exception_permissions.matches(p) for p in denied):
        return (
            "every permission it denies is also an exception permission",
            "remove those permissions from exceptionPermissions",
        )
    if all(m.key is None for m in rule.denied_principals):
        return "every denied principal is deleted:", "remove the rule, or name current principals"
    closure = policy.index.group_closure
    exempt = rule.exception_keys
    if all(
        m.key is None or m.key in exempt or not exempt.isdisjoint(closure.get(m.key, ()))
        for m in rule.denied_principals
    ):
        return (
            "every denied principal is also an exception principal (or in a group that is)",
            "remove those principals from exceptionPrincipals",
        )
    return None


def _unused_groups(policy: Policy) -> Iterable[Finding]:
    named: set[str] = set()
    for binding in policy.bindings:
        named.update(m.key for m in binding.members if m.key is not None)
    for rule in policy.deny_rules:
        named.update(rule.denied_keys, rule.exception_keys)
    closure = policy.index.group_closure
    for group in policy.groups:
        key = group_key(group.email)
        if key in named or not named.isdisjoint(closure.get(key, ())):
            continue
        yield _warn(
            policy,
            group.source_line,
            UNUSED_GROUP,
            f"group {key} is defined but no binding or deny rule names it (or a group holding it)",
            "grant it a role, or remove it from groups:",
        )


def _unreached_containers(policy: Policy) -> Iterable[Finding]:
    """Bindings and deny rules on a folder or organization no declared project sits under."""
    above = {a for chain in policy.hierarchy.ancestors.values() for a in chain}
    seen: set[str] = set()
    entries: list[tuple[str, int | None]] = [(b.resource, b.source_line) for b in policy.bindings]
    entries.extend((r.resource, r.source_line) for r in policy.deny_rules)
    for resource, line in entries:
        if resource.startswith(("folders/", "organizations/")) and resource not in above:
            if resource in seen:
                continue
            seen.add(resource)
            yield _warn(
                policy,
                line,
                REACHES_NOTHING,
                f"{resource} is not an ancestor of any project in resources:, so what is "
                "granted or denied on it applies to nothing",
                f"declare the projects under it, e.g. resources: [{{projectId: P, parent: "
                f"{resource}}}]",
            )


def _undeclared_tags(policy: Policy) -> Iterable[Finding]:
    """Conditions that test tags when resources: binds none: they are false everywhere."""
    if policy.hierarchy.tags:
        return
    conditions = [(b.condition, "binding") for b in policy.bindings]
    conditions.extend((r.condition, "deny rule") for r in policy.deny_rules)
    for condition, what in conditions:
        if condition is not None and any(f in condition.expression for f in _TAG_FUNCTIONS):
            effect = "never applies" if what == "deny rule" else "never grants"
            yield _warn(
                policy,
                condition.line,
                UNDECLARED_TAGS,
                f"this {what}'s condition tests tags, but resources: binds no tags: the {what} "
                f"{effect}",
                "declare the tag bindings under resources: (gcloud resource-manager tags "
                "bindings list --effective prints them)",
            )
