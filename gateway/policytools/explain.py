"""`opsgate policy explain`: the Policy Troubleshooter for one file, one caller, one request."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

from gateway.policy.decision import Decision, TraceEntry
from gateway.policy.deny import denies_permission
from gateway.policy.evaluator import evaluate, explain, keys_for
from gateway.policy.model import Binding, DenyRule, Policy
from gateway.policytools.inputs import (
    Request,
    access_for,
    caller_for,
    known_permissions,
    parse_time,
    read_policy,
)
from gateway.policytools.render import columns, shorten
from gateway.profile import ServiceProfile


class Verdict(StrEnum):
    """The Policy Troubleshooter's answer, in its words (upper case, unlike diff's changes)."""

    GRANTED = "GRANTED"
    NOT_GRANTED = "NOT_GRANTED"
    UNKNOWN_CONDITIONAL = "UNKNOWN_CONDITIONAL"


EXIT_NOT_GRANTED = 1  # explain's exit status for any verdict but GRANTED (unless --exit-zero)


@dataclass(frozen=True, slots=True)
class Row:
    """One binding or deny rule on the resource or an ancestor, and how it fared."""

    entry: TraceEntry
    item: Binding | DenyRule
    includes_permission: bool  # the role includes it / the rule denies it (less exceptions)
    token_group: bool  # the member matched is a group the caller's token lists
    decisive: bool  # the decision names this entry (the grant, or the deny rule that applied)


@dataclass(frozen=True, slots=True)
class Explanation:
    verdict: Verdict
    decision: Decision
    request: Request
    chain: tuple[str, ...]
    rows: tuple[Row, ...]  # by resource from the root down, deny rules first on each
    static_groups: tuple[str, ...]  # the caller's groups by static membership
    token_groups: tuple[str, ...]
    source: str
    etag: str
    profile: str


def explain_request(policy: Policy, request: Request, profile: str) -> Explanation:
    decision = evaluate(policy, request.caller, request.access, request.now)
    trace = explain(policy, request.caller, request.access, request.now)
    chain = policy.hierarchy.chain(request.access.resource)
    index = policy.index
    # explain() lists the chain's deny rules, then its bindings, root first, in index order.
    items: list[Binding | DenyRule] = [
        r for level in chain for r in index.deny_by_resource.get(level, ())
    ]
    items.extend(b for level in chain for b in index.bindings_by_resource.get(level, ()))
    caller = request.caller
    keys = keys_for(index, caller)
    permission = request.access.permission
    decided = decision.trace[0] if decision.trace else None
    rows = []
    for entry, item in zip(trace, items, strict=True):
        if isinstance(item, Binding):
            includes = permission in item.permissions
            matched = next((m for m in item.members if m.written == entry.member), None)
            decisive = decision.allowed and _same(entry, decided)
        else:
            includes = denies_permission(item, permission)
            matched = next((m for m in item.denied_principals if m.written == entry.member), None)
            decisive = (not decision.allowed) and _same(entry, decided)
        token = matched is not None and matched.key in keys.direct_groups
        rows.append(Row(entry, item, includes, token, decisive))
    ordered = sorted(
        rows, key=lambda r: (chain.index(r.entry.resource), isinstance(r.item, Binding))
    )
    token_groups = keys.direct_groups
    static = tuple(k for k in keys.ordered if k.startswith("group:") and k not in token_groups)
    return Explanation(
        verdict=_verdict(decision, ordered),
        decision=decision,
        request=request,
        chain=chain,
        rows=tuple(ordered),
        static_groups=static,
        token_groups=token_groups,
        source=policy.source,
        etag=policy.etag,
        profile=profile,
    )


def _same(entry: TraceEntry, decided: TraceEntry | None) -> bool:
    if decided is None:
        return False
    return (entry.kind, entry.resource, entry.role, entry.source_line, entry.member) == (
        decided.kind,
        decided.resource,
        decided.role,
        decided.source_line,
        decided.member,
    )


def _verdict(decision: Decision, rows: Sequence[Row]) -> Verdict:
    """GRANTED or NOT_GRANTED, or UNKNOWN_CONDITIONAL when the denial hinges on a condition
    that could not be evaluated (a deny rule failing closed, or a grant that might apply)."""
    if decision.allowed:
        return Verdict.GRANTED
    denying = [
        r for r in rows if isinstance(r.item, DenyRule) and r.entry.outcome.startswith("denied")
    ]
    if denying:
        certain = any(r.entry.condition_result != "error" for r in denying)
        return Verdict.NOT_GRANTED if certain else Verdict.UNKNOWN_CONDITIONAL
    undecided = any(
        isinstance(r.item, Binding)
        and r.includes_permission
        and r.entry.member is not None
        and r.entry.condition_result == "error"
        for r in rows
    )
    return Verdict.UNKNOWN_CONDITIONAL if undecided else Verdict.NOT_GRANTED


# -- text -------------------------------------------------------------------------------------


def render_text(exp: Explanation) -> list[str]:
    request = exp.request
    access = request.access
    method = f" ({request.method})" if request.method else ""
    lines = [
        f"{exp.verdict}: {request.caller.member}  {access.permission}{method}",
        f"  on {access.resource}",
        f"  at {_time(exp)}, {exp.source} (etag {exp.etag}), profile {exp.profile}",
        f"  {_groups_line(exp)}",
        "",
        f"  {exp.decision.reason}",
    ]
    if exp.chain and exp.chain[-1] != access.resource:
        lines.insert(2, f"  (as {exp.chain[-1]}, which the policy names it by)")
    if exp.decision.unrecorded is not None:
        lines.append(f"  audit: not recorded when it succeeds: {exp.decision.unrecorded}")
    if exp.verdict is Verdict.UNKNOWN_CONDITIONAL:
        lines.append(
            "  the outcome hinges on a condition that could not be evaluated; the gateway "
            "denies (a failing condition grants nothing, and makes a deny rule apply)"
        )
    lines.append("")
    header = ("line", "entry", "permission", "member matched", "condition", "outcome")
    table: list[tuple[str, ...]] = [header]
    titles: dict[int, list[str]] = {}  # table row -> the resource titles shown before it
    for level in exp.chain:
        here = [r for r in exp.rows if r.entry.resource == level]
        title = level if here else f"{level}  (no bindings or deny rules)"
        titles.setdefault(len(table), []).append(title)
        table.extend(_cells(row) for row in here)
    aligned = columns(table, indent="    ")
    for number, text in enumerate(aligned):
        lines.extend(f"  {title}" for title in titles.get(number, ()))
        lines.append(text)
    lines.extend(f"  {title}" for title in titles.get(len(aligned), ()))
    if any(row.decisive for row in exp.rows):
        lines.append("    (* decided the outcome)")
    return lines


def _time(exp: Explanation) -> str:
    return exp.request.now.isoformat().replace("+00:00", "Z")


def _groups_line(exp: Explanation) -> str:
    token = ", ".join(exp.token_groups) or "none"
    static = ", ".join(exp.static_groups) or "none"
    return f"caller's groups: {token} from the token; {static} by static membership"


def _cells(row: Row) -> tuple[str, ...]:
    entry = row.entry
    marker = "*" if row.decisive else " "
    if isinstance(row.item, DenyRule):
        name = f"deny rule {row.item.policy_name}".rstrip()
        permission = "in rule" if row.includes_permission else "not in rule"
    else:
        name = entry.role or ""
        permission = "in role" if row.includes_permission else "not in role"
    member = entry.member or "-"
    if entry.via_group:
        member += f" (via {entry.via_group})"
    if row.token_group:
        member += " (token group)"
    return (
        f"{marker}{entry.source_line or '?'}",
        name,
        permission,
        member,
        _condition_cell(row),
        entry.outcome,
    )


def _condition_cell(row: Row) -> str:
    condition = row.item.condition
    if condition is None:
        return "-"
    label = condition.title or shorten(condition.expression, 50)
    return f"{label}: {row.entry.condition_result}"


# -- JSON -------------------------------------------------------------------------------------


def to_json(exp: Explanation) -> dict[str, Any]:
    request = exp.request
    return {
        "verdict": exp.verdict.value,
        "effect": exp.decision.effect.value,
        "reason": exp.decision.reason,
        "unrecorded": exp.decision.unrecorded,
        "caller": {
            "principal": request.caller.member,
            "token_groups": list(exp.token_groups),
            "static_groups": list(exp.static_groups),
            "hosted_domain": request.caller.hosted_domain,
        },
        "request": {
            "method": request.method,
            "permission": request.access.permission,
            "resource": request.access.resource,
            "time": _time(exp),
        },
        "policy": {"source": exp.source, "etag": exp.etag},
        "profile": exp.profile,
        "hierarchy": list(exp.chain),
        "entries": [_entry_json(row) for row in exp.rows],
    }


def _entry_json(row: Row) -> dict[str, Any]:
    entry = row.entry
    condition = row.item.condition
    return {
        "kind": entry.kind,
        "resource": entry.resource,
        "line": entry.source_line,
        "role": entry.role,
        "includes_permission": row.includes_permission,
        "member": entry.member,
        "via_group": entry.via_group,
        "token_group": row.token_group,
        "condition": None
        if condition is None
        else {
            "title": condition.title,
            "expression": condition.expression,
            "result": entry.condition_result,
        },
        "outcome": entry.outcome,
        "decisive": row.decisive,
    }


def write(exp: Explanation, as_json: bool, out: TextIO) -> None:
    if as_json:
        print(json.dumps(to_json(exp), indent=2), file=out)
    else:
        print("\n".join(render_text(exp)), file=out)


def run(
    policy_path: Path,
    profile: ServiceProfile,
    *,
    principal: str,
    groups: Sequence[str],
    hosted_domain: str | None,
    method: str | None,
    permission: str | None,
    resource: str,
    time: str | None,
    as_json: bool,
    out: TextIO,
    exit_zero: bool = False,
) -> int:
    """Answer one question: 0 when GRANTED, 1 when not (NOT_GRANTED or UNKNOWN_CONDITIONAL: the
    gateway denies both), so a script or CI step can gate on it; 0 whatever the verdict with
    `exit_zero`. Unusable input raises InputError or PolicyError (exit 2)."""
    policy = read_policy(policy_path, profile)
    access, short = access_for(
        profile,
        resource,
        method=method,
        permission=permission,
        known=known_permissions(policy, profile),
    )
    now = parse_time(time) if time else datetime.now(UTC).replace(microsecond=0)
    request = Request(caller_for(principal, groups, hosted_domain), access, short, now)
    explanation = explain_request(policy, request, profile.name)
    write(explanation, as_json, out)
    return 0 if exit_zero or explanation.verdict is Verdict.GRANTED else EXIT_NOT_GRANTED
