"""Generates realistic large policies over a 5-level resource tree (moved from tests/unit/policy).

`generate(bindings)` spreads about that many bindings over projects, locations, authorized view
sets, views and operations, with nested groups, a few conditions and deny rules; `to_yaml` and
`to_json` write it as people and exports would. `python -m benchmarks.policygen [SIZE...]` prints
load and decision times for a quick look; the harness (`python -m benchmarks`) measures them
properly, with repeats.
"""

from __future__ import annotations

import json
import random
import sys
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


def _main(argv: list[str]) -> None:  # pragma: no cover - run by hand, prints figures
    from benchmarks.micro import quick_look

    quick_look([int(arg) for arg in argv] or [1_000, 10_000, 100_000])


if __name__ == "__main__":  # pragma: no cover
    _main(sys.argv[1:])
