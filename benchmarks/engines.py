"""The same RBAC policy for three engines: opsgate, Cedar (cedarpy) and casbin.

The comparison policy is policygen's policy without what the other two cannot say the same way:
bindings with IAM conditions and deny rules are left out (about 5% of bindings, and the denies).
What stays is what an RBAC engine is for: roles granted to users, service accounts, domains and
nested groups on a 5-level resource tree, inherited downwards. Each engine gets it in its own
idiom, parsed once, and the harness checks that all three reach the same decisions.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import policygen

Decide = Callable[[], bool]


@dataclass(frozen=True)
class Case:
    """One decision: a caller (member, token groups, hosted domain) asks for a permission."""

    name: str
    member: str
    groups: tuple[str, ...]
    permission: str
    resource: str
    hosted_domain: str | None = None


DEEP = "projects/p0/locations/l0/authorizedViewSets/s1/authorizedViews/v2/operations/op2"
SOMEONE = "user:someone@acme.example"
SOMEONES_GROUPS = ("g35@acme.example", "g40@acme.example", "support@acme.example")

RBAC_CASES = (
    Case(
        "allow via nested group",
        SOMEONE,
        SOMEONES_GROUPS,
        "contactcenterinsights.authorizedOperations.get",
        DEEP,
        "acme.example",
    ),
    Case(
        "default deny (walks all 5 levels)",
        SOMEONE,
        SOMEONES_GROUPS,
        "contactcenterinsights.authorizedOperations.cancel",
        DEEP,
        "acme.example",
    ),
)


REGEX_CONDITION = {
    "title": "numbered operations",
    "expression": 'resource.name.matches("^projects/p0/locations/l[0-9]+/operations/op[0-9]+$")',
}


def with_case_grants(data: dict[str, Any]) -> dict[str, Any]:
    """Grants the decision cases rely on (as policygen's measurement always did).

    g5 holds viewer on projects/p0: the caller is in g35, which g15 contains, which g5
    contains, so that grant is reached through two levels of nesting. temp@ holds editor there
    under a time condition, matcher@ under a matches() condition (RE2).
    """
    data = copy.deepcopy(data)
    data["allow"].append(
        {
            "resource": "projects/p0",
            "bindings": [
                {"role": policygen.VIEWER, "members": ["group:g5@acme.example"]},
                {
                    "role": policygen.EDITOR,
                    "members": ["user:temp@acme.example"],
                    "condition": policygen.CONDITIONS[0],
                },
                {
                    "role": policygen.EDITOR,
                    "members": ["user:matcher@acme.example"],
                    "condition": REGEX_CONDITION,
                },
            ],
        }
    )
    return data


def rbac_only(data: dict[str, Any]) -> dict[str, Any]:
    """The policy without conditional bindings and deny rules."""
    allow = []
    for entry in data["allow"]:
        bindings = [b for b in entry["bindings"] if "condition" not in b]
        if bindings:
            allow.append({"resource": entry["resource"], "bindings": bindings})
    return {"allow": allow, "deny": [], "groups": data["groups"]}


def _parent(resource: str) -> str | None:
    parts = resource.split("/")
    return "/".join(parts[:-2]) if len(parts) > 2 else None


def _all_resources(data: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for entry in data["allow"]:
        resource: str | None = entry["resource"]
        while resource:
            names.add(resource)
            resource = _parent(resource)
    for case in RBAC_CASES:
        resource = case.resource
        while resource:
            names.add(resource)
            resource = _parent(resource)
    return names


def _group_parents(data: dict[str, Any]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(group -> groups containing it, user/service account member -> groups containing it)."""
    groups: dict[str, set[str]] = {}
    users: dict[str, set[str]] = {}
    for name, members in data["groups"].items():
        for member in members:
            if member.startswith("group:"):
                groups.setdefault(member[len("group:") :], set()).add(name)
            else:
                users.setdefault(member, set()).add(name)
    return groups, users


# --- Cedar ------------------------------------------------------------------------------------


def _cedar_str(value: str) -> str:
    return json.dumps(value)


def cedar_policies(data: dict[str, Any], role_permissions: Callable[[str], Iterable[str]]) -> str:
    """One permit per (binding, member): principal, the role's actions, resource and below."""
    out: list[str] = []
    for entry in data["allow"]:
        resource = _cedar_str(entry["resource"])
        for binding in entry["bindings"]:
            actions = ", ".join(
                f"Action::{_cedar_str(p)}" for p in sorted(role_permissions(binding["role"]))
            )
            if not actions:
                continue
            for member in binding["members"]:
                kind, _, rest = member.partition(":")
                if kind == "group":
                    principal = f"principal in Group::{_cedar_str(rest)}"
                elif kind == "domain":
                    principal = f"principal in Domain::{_cedar_str(rest)}"
                else:
                    principal = f"principal == User::{_cedar_str(member)}"
                out.append(
                    f"permit({principal}, action in [{actions}], resource in Resource::{resource});"
                )
    return "\n".join(out)


def cedar_entities(data: dict[str, Any], cases: Iterable[Case]) -> list[dict[str, Any]]:
    """Resources with their parent, groups with the groups containing them, the callers."""

    def uid(kind: str, ident: str) -> dict[str, str]:
        return {"type": kind, "id": ident}

    entities = [
        {
            "uid": uid("Resource", name),
            "attrs": {},
            "parents": [uid("Resource", parent)] if (parent := _parent(name)) else [],
        }
        for name in sorted(_all_resources(data))
    ]
    group_parents, user_groups = _group_parents(data)
    every_group = set(data["groups"]) | set(group_parents)
    for case in cases:
        every_group.update(case.groups)
    for group in sorted(every_group):
        entities.append(
            {
                "uid": uid("Group", group),
                "attrs": {},
                "parents": [uid("Group", g) for g in sorted(group_parents.get(group, ()))],
            }
        )
    callers: dict[str, set[tuple[str, str]]] = {}
    for member, groups in user_groups.items():
        callers.setdefault(member, set()).update(("Group", g) for g in groups)
    for case in cases:
        parents = callers.setdefault(case.member, set())
        parents.update(("Group", g) for g in case.groups)
        if case.hosted_domain:
            parents.add(("Domain", case.hosted_domain))
    for member, parents in sorted(callers.items()):
        entities.append(
            {
                "uid": uid("User", member),
                "attrs": {},
                "parents": [uid(kind, ident) for kind, ident in sorted(parents)],
            }
        )
    domains = {ident for parents in callers.values() for kind, ident in parents if kind == "Domain"}
    entities.extend({"uid": uid("Domain", d), "attrs": {}, "parents": []} for d in sorted(domains))
    return entities


def cedar_decider(
    data: dict[str, Any],
    role_permissions: Callable[[str], Iterable[str]],
    cases: Iterable[Case],
) -> tuple[Callable[[Case], Decide], int]:
    """(case -> a no-argument decide function on pre-parsed handles, number of Cedar policies)."""
    import cedarpy

    cases = tuple(cases)
    text = cedar_policies(data, role_permissions)
    policies = cedarpy.PolicySet.from_str(text)
    entities = cedarpy.Entities.from_json_str(json.dumps(cedar_entities(data, cases)))
    count = text.count("\n") + 1 if text else 0

    def for_case(case: Case) -> Decide:
        request = {
            "principal": {"type": "User", "id": case.member},
            "action": {"type": "Action", "id": case.permission},
            "resource": {"type": "Resource", "id": case.resource},
            "context": {},
        }

        def decide() -> bool:
            return bool(cedarpy.is_authorized(request, policies, entities).allowed)

        return decide

    return for_case, count


# --- casbin -----------------------------------------------------------------------------------

CASBIN_MODEL = """\
[request_definition]
r = sub, obj, act

[policy_definition]
p = sub, obj, role

[role_definition]
g = _, _
g2 = _, _
g3 = _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = g(r.sub, p.sub) && g2(r.obj, p.obj) && g3(r.act, p.role)
"""


def casbin_lines(
    data: dict[str, Any],
    role_permissions: Callable[[str], Iterable[str]],
    cases: Iterable[Case],
) -> list[str]:
    """p: member, resource, role. g: member -> group. g2: resource -> parent. g3: perm -> role."""
    lines: list[str] = []
    roles: set[str] = set()
    for entry in data["allow"]:
        for binding in entry["bindings"]:
            roles.add(binding["role"])
            for member in binding["members"]:
                lines.append(f"p, {member}, {entry['resource']}, {binding['role']}")
    group_parents, user_groups = _group_parents(data)
    for group, parents in group_parents.items():
        lines.extend(f"g, group:{group}, group:{parent}" for parent in sorted(parents))
    for member, groups in user_groups.items():
        lines.extend(f"g, {member}, group:{group}" for group in sorted(groups))
    for case in cases:
        lines.extend(f"g, {case.member}, group:{group}" for group in case.groups)
        if case.hosted_domain:
            lines.append(f"g, {case.member}, domain:{case.hosted_domain}")
    for name in sorted(_all_resources(data)):
        parent = _parent(name)
        if parent:
            lines.append(f"g2, {name}, {parent}")
    for role in sorted(roles):
        lines.extend(f"g3, {permission}, {role}" for permission in sorted(role_permissions(role)))
    return lines


def casbin_decider(
    data: dict[str, Any],
    role_permissions: Callable[[str], Iterable[str]],
    cases: Iterable[Case],
    directory: Path,
) -> tuple[Callable[[Case], Decide], int]:
    """(case -> decide function on a loaded casbin Enforcer, number of p lines)."""
    import logging

    import casbin

    logging.getLogger("casbin").setLevel(logging.ERROR)
    cases = tuple(cases)
    model = directory / "casbin-model.conf"
    model.write_text(CASBIN_MODEL)
    lines = casbin_lines(data, role_permissions, cases)
    policy = directory / "casbin-policy.csv"
    policy.write_text("\n".join(lines) + "\n")
    enforcer = casbin.Enforcer(str(model), str(policy))
    count = sum(1 for line in lines if line.startswith("p,"))

    def for_case(case: Case) -> Decide:
        def decide() -> bool:
            return bool(enforcer.enforce(case.member, case.resource, case.permission))

        return decide

    return for_case, count
