"""Generates realistic large policies (for a load test) and measures them: `python -m` this."""

from __future__ import annotations

import functools
import json
import random
import sys
import time
import timeit
from datetime import UTC, datetime
from typing import Any

VIEWER = "roles/contactcenterinsights.viewer"
EDITOR = "roles/contactcenterinsights.editor"
AUTHORIZED_VIEWER = "roles/contactcenterinsights.authorizedViewer"
ROLES = (VIEWER, EDITOR, AUTHORIZED_VIEWER, "roles/contactcenterinsights.admin", "roles/viewer")
CONDITIONS = (
    {"title": "until new year", "expression": 'request.time < timestamp("2099-01-01T00:00:00Z")'},
    {"title": "view set 0", "expression": 'resource.name.startsWith("projects/p0/locations/l0/")'},
    {
        "title": "office hours",
        "expression": 'request.time.getHours("Europe/Berlin") >= 8 && '
        'request.time.getHours("Europe/Berlin") < 18',
    },
)
GROUPS = 60


def resources(projects: int) -> list[str]:
    """The 5-level hierarchy: project, location, view set, view, operation."""
    names: list[str] = []
    for p in range(projects):
        project = f"projects/p{p}"
        names.append(project)
        for loc in range(2):
            location = f"{project}/locations/l{loc}"
            names.append(location)
            names.append(f"{location}/operations/op{loc}")
            for s in range(3):
                view_set = f"{location}/authorizedViewSets/s{s}"
                names.append(view_set)
                for v in range(3):
                    view = f"{view_set}/authorizedViews/v{v}"
                    names.append(view)
                    names.append(f"{view}/operations/op{v}")
    return names


def generate(bindings: int, seed: int = 7) -> dict[str, Any]:
    """About `bindings` bindings spread over the hierarchy, with groups, conditions and denies."""
    rng = random.Random(seed)
    projects = max(1, bindings // 300)
    names = resources(projects)
    per_resource: dict[str, list[dict[str, Any]]] = {}
    for i in range(bindings):
        resource = rng.choice(names)
        members = [f"user:u{rng.randrange(bindings)}@acme.example"]
        draw = rng.random()
        if draw < 0.4:
            members.append(f"group:g{rng.randrange(GROUPS)}@acme.example")
        elif draw < 0.5:
            members.append(f"serviceAccount:sa{i % 97}@p{i % projects}.iam.gserviceaccount.com")
        elif draw < 0.51:
            members.append("domain:partner.example")
        binding: dict[str, Any] = {"role": rng.choice(ROLES), "members": members}
        if rng.random() < 0.05:
            binding["condition"] = dict(rng.choice(CONDITIONS))
        per_resource.setdefault(resource, []).append(binding)
    deny = [
        {
            "resource": f"projects/p{p}",
            "rules": [
                {
                    "deniedPrincipals": ["principalSet://goog/group/contractors@acme.example"],
                    "exceptionPrincipals": ["principal://goog/subject/lead@acme.example"],
                    "deniedPermissions": ["contactcenterinsights.googleapis.com/operations.cancel"],
                },
                {
                    "deniedPrincipals": [f"user:u{p}@acme.example"],
                    "deniedPermissions": ["contactcenterinsights.googleapis.com/*"],
                    "denialCondition": {
                        "title": "after 2099",
                        "expression": 'request.time > timestamp("2099-01-01T00:00:00Z")',
                    },
                },
            ],
        }
        for p in range(projects)
    ]
    # Groups nest three deep: g0..g9 contain g10..g19, g10..g29 contain g30..g49.
    groups: dict[str, list[str]] = {}
    for g in range(GROUPS):
        members = [f"user:u{rng.randrange(bindings)}@acme.example" for _ in range(5)]
        if g < 30:
            members.append(f"group:g{g + 10 if g < 10 else g + 20}@acme.example")
        groups[f"g{g}@acme.example"] = members
    return {
        "allow": [{"resource": r, "bindings": b} for r, b in per_resource.items()],
        "deny": deny,
        "groups": groups,
    }


def to_yaml(policy: dict[str, Any]) -> str:
    """Block-style YAML as people write it (yaml.dump is too slow for 100,000 bindings)."""
    out = ["allow:"]
    for entry in policy["allow"]:
        out.append(f"  - resource: {entry['resource']}")
        out.append("    bindings:")
        for binding in entry["bindings"]:
            out.append(f"      - role: {binding['role']}")
            out.append(f"        members: [{', '.join(binding['members'])}]")
            if "condition" in binding:
                condition = binding["condition"]
                out.append("        condition:")
                out.append(f"          title: {json.dumps(condition['title'])}")
                out.append(f"          expression: {json.dumps(condition['expression'])}")
    out.append("deny:")
    for entry in policy["deny"]:
        out.append(f"  - resource: {entry['resource']}")
        out.append("    rules:")
        for rule in entry["rules"]:
            first = True
            for key, value in rule.items():
                lead = "      - " if first else "        "
                first = False
                out.append(f"{lead}{key}: {json.dumps(value)}")
    out.append("groups:")
    for name, members in policy["groups"].items():
        out.append(f"  {name}: [{', '.join(members)}]")
    return "\n".join(out) + "\n"


def to_json(policy: dict[str, Any]) -> str:
    return json.dumps(policy, indent=2)


def _measure() -> None:  # pragma: no cover - run by hand, prints figures
    from gateway.policy import AccessRequest, Caller, evaluate, load_policy_text

    now = datetime(2026, 6, 1, 12, tzinfo=UTC)
    deep = "projects/p0/locations/l0/authorizedViewSets/s1/authorizedViews/v2/operations/op2"
    caller = Caller(
        "user:someone@acme.example",
        email="someone@acme.example",
        email_verified=True,
        hosted_domain="acme.example",
        groups=frozenset({"g35@acme.example", "g40@acme.example", "support@acme.example"}),
    )
    cases = {
        "default deny (walks all 5 levels)": AccessRequest(
            "contactcenterinsights.authorizedOperations.cancel", deep
        ),
        "allow via nested group": AccessRequest(
            "contactcenterinsights.authorizedOperations.get", deep
        ),
        "deny rule (contractors)": AccessRequest("contactcenterinsights.operations.cancel", deep),
        "allow via time condition (temp)": AccessRequest(
            "contactcenterinsights.operations.cancel", "projects/p0/locations/l1/operations/op1"
        ),
    }
    sizes = [int(arg) for arg in sys.argv[1:]] or [1_000, 10_000, 100_000]
    # One-time costs (importing the CEL library, reading roles.yaml) are paid before timing.
    load_policy_text(to_json(generate(10)), "warm-up.json")
    for size in sizes:
        data = generate(size)
        # Grant g5 viewer on the project: the caller is in g35, which g15 contains, which g5
        # contains, so the grant is reached through two levels of nesting.
        data["allow"].append(
            {
                "resource": "projects/p0",
                "bindings": [
                    {"role": VIEWER, "members": ["group:g5@acme.example"]},
                    {
                        "role": EDITOR,
                        "members": ["user:temp@acme.example"],
                        "condition": CONDITIONS[0],
                    },
                ],
            }
        )
        contractor = Caller("user:c@acme.example", groups=frozenset({"contractors@acme.example"}))
        temp = Caller("user:temp@acme.example")
        for form, text in (("yaml", to_yaml(data)), ("json", to_json(data))):
            started = time.perf_counter()
            policy = load_policy_text(text, f"generated.{form}")
            loaded = time.perf_counter() - started
            print(
                f"{size:>7} bindings  load+validate+index {form}: {loaded:6.2f} s "
                f"({len(text) / 1e6:.1f} MB)"
            )
        for name, request in cases.items():
            who = {"contractors": contractor, "temp": temp}.get(
                name.rpartition("(")[2][:-1], caller
            )
            decision = evaluate(policy, who, request, now)
            runs = 20_000
            best = min(
                timeit.repeat(
                    functools.partial(evaluate, policy, who, request, now), number=runs, repeat=5
                )
            )
            print(
                f"{size:>7} bindings  {name:<36} {decision.effect.value:<5} "
                f"{best / runs * 1e6:6.2f} µs/decision"
            )


if __name__ == "__main__":  # pragma: no cover
    _measure()
