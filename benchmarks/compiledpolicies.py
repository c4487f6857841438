"""Policies and callers for the compiled tier's rows (issue 18): two shapes at any size.

- spread: the bindings spread as real policies are, over many projects and their locations
  (and now and then one operation), a few bindings on each resource, a few conditional
  bindings and per-project deny rules, a handful of static groups;
- one_resource: the worst case, every binding on the one location the benchmark's calls name.

Every binding names users and groups (1-4 users, 0-2 groups, drawn from pools that grow with
the policy). The benchmark's call is always the same GetOperation (the seeded operation in
projects/acme-prod/locations/us-central1), and four callers make it, each token listing
GROUPS_PER_TOKEN groups:

- user_allowed: their email is bound on that location (their groups only elsewhere);
- group_allowed: the last group their token lists is bound there (their email only elsewhere);
- user_refused / group_refused: their email, or their groups, are bound on other resources
  only (elsewhere in acme-prod, and in other projects).

The benchmark's own members are named to sort last, so a matcher that tries member lists in
order (the compiler's regexes hold sorted alternatives, CHUNK to a regex) reaches them last.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from benchmarks import policygen
from benchmarks.fixtures import WARM_EMAIL
from benchmarks.wire import UNARY_NAME

SHAPES = ("spread", "one_resource")
KINDS = ("user_allowed", "group_allowed", "user_refused", "group_refused")
GROUPS_PER_TOKEN = 12
DOMAIN = "acme.example"
TARGET = UNARY_NAME.rpartition("/operations/")[0]  # projects/acme-prod/locations/us-central1
PROJECT = TARGET.rpartition("/locations/")[0]  # projects/acme-prod
ELSEWHERE = f"{PROJECT}/locations/europe-west1"  # where the refused callers are bound
ROLES = policygen.ROLES
# Conditions the compiled tier translates (policygen's office-hours one needs time zones).
CONDITIONS = (
    {"title": "until 2099", "expression": 'request.time < timestamp("2099-01-01T00:00:00Z")'},
    {
        "title": "acme-prod only",
        "expression": 'resource.name.startsWith("projects/acme-prod/")',
    },
)
BINDINGS_PER_RESOURCE = 3  # the spread shape's average
STATIC_GROUPS = 20


@dataclass(frozen=True)
class Caller:
    """One of KINDS: who the token names and the groups it lists."""

    kind: str
    email: str
    groups: tuple[str, ...]
    allowed: bool


def _user(i: int) -> str:
    return f"u{i}@{DOMAIN}"


def _group(i: int) -> str:
    return f"team-{i}@{DOMAIN}"


# The benchmark's own members: 'zz' sorts after every generated name.
ALLOWED_USER = f"zz-bench-user@{DOMAIN}"
ALLOWED_GROUP = f"zz-bench-group@{DOMAIN}"
REFUSED_USER = f"zz-other-user@{DOMAIN}"
REFUSED_GROUP = f"zz-other-group@{DOMAIN}"


def callers() -> dict[str, Caller]:
    """The four callers; every token lists GROUPS_PER_TOKEN groups."""
    filler = tuple(f"zz-member-{k}@{DOMAIN}" for k in range(GROUPS_PER_TOKEN - 1))
    return {
        "user_allowed": Caller("user_allowed", ALLOWED_USER, (*filler, REFUSED_GROUP), True),
        "group_allowed": Caller("group_allowed", WARM_EMAIL, (*filler, ALLOWED_GROUP), True),
        "user_refused": Caller("user_refused", REFUSED_USER, (*filler, REFUSED_GROUP), False),
        "group_refused": Caller("group_refused", WARM_EMAIL, (*filler, REFUSED_GROUP), False),
    }


def _members(rng: random.Random, users: int, groups: int) -> list[str]:
    found = [f"user:{_user(rng.randrange(users))}" for _ in range(rng.randint(1, 4))]
    found += [f"group:{_group(rng.randrange(groups))}" for _ in range(rng.choice((0, 1, 1, 2)))]
    return list(dict.fromkeys(found))


def _spread_resources(bindings: int) -> list[str]:
    """About bindings / BINDINGS_PER_RESOURCE resources: projects, their locations, now and
    then an operation; acme-prod and the target location among them."""
    wanted = max(4, bindings // BINDINGS_PER_RESOURCE)
    names = [PROJECT, TARGET, ELSEWHERE]
    project = 0
    while len(names) < wanted:
        base = f"projects/p{project}"
        names.append(base)
        for location in range(4):
            names.append(f"{base}/locations/l{location}")
            if location == 0:
                names.append(f"{base}/locations/l{location}/operations/op{project}")
        project += 1
    return names[:wanted]


def generate(shape: str, bindings: int, seed: int = 18) -> dict[str, Any]:
    """A policy of about `bindings` bindings (the benchmark's grants included)."""
    rng = random.Random(seed)
    users, groups = max(20, 2 * bindings), max(20, bindings // 4)
    per_resource: dict[str, list[dict[str, Any]]] = {}
    # The benchmark's grants: the allowed caller's email and group on the target; the refused
    # callers' on another location of acme-prod and on another project.
    grants = [
        (TARGET, [f"user:{ALLOWED_USER}", f"user:{_user(0)}"]),
        (TARGET, [f"group:{ALLOWED_GROUP}", f"group:{_group(0)}"]),
        (ELSEWHERE, [f"user:{REFUSED_USER}", f"group:{REFUSED_GROUP}"]),
        ("projects/p0" if shape == "spread" else ELSEWHERE, [f"user:{REFUSED_USER}"]),
    ]
    for resource, members in grants:
        per_resource.setdefault(resource, []).append({"role": policygen.VIEWER, "members": members})
    names = _spread_resources(bindings) if shape == "spread" else [TARGET]
    for _ in range(max(0, bindings - len(grants))):
        resource = rng.choice(names)
        binding: dict[str, Any] = {
            "role": rng.choice(ROLES),
            "members": _members(rng, users, groups),
        }
        if shape == "spread" and rng.random() < 0.03:
            binding["condition"] = dict(rng.choice(CONDITIONS))
        per_resource.setdefault(resource, []).append(binding)
    policy: dict[str, Any] = {
        "allow": [{"resource": r, "bindings": b} for r, b in per_resource.items()]
    }
    if shape == "spread":
        projects = sorted({n.split("/")[1] for n in names})
        policy["deny"] = [
            {
                "resource": f"projects/{project}",
                "rules": [
                    {
                        "deniedPrincipals": [f"principalSet://goog/group/contractors@{DOMAIN}"],
                        "exceptionPrincipals": [f"principal://goog/subject/lead@{DOMAIN}"],
                        "deniedPermissions": [
                            "contactcenterinsights.googleapis.com/operations.cancel"
                        ],
                    },
                    {
                        "deniedPrincipals": [f"user:{_user(k)}"],
                        "deniedPermissions": ["contactcenterinsights.googleapis.com/*"],
                        "denialCondition": {
                            "title": "after 2099",
                            "expression": 'request.time > timestamp("2099-01-01T00:00:00Z")',
                        },
                    },
                ],
            }
            for k, project in enumerate(projects)
        ]
        policy["groups"] = {
            _group(g): [f"user:{_user(rng.randrange(users))}" for _ in range(5)]
            + ([f"group:{_group(g + 1)}"] if g % 4 == 0 else [])
            for g in range(STATIC_GROUPS)
        }
    else:
        policy["deny"] = []
        policy["groups"] = {}
    return policy


def count_bindings(policy: dict[str, Any]) -> int:
    return sum(len(entry["bindings"]) for entry in policy["allow"])


def to_json(policy: dict[str, Any]) -> str:
    """Empty sections left out (the loader takes JSON as it takes YAML)."""
    return json.dumps({key: value for key, value in policy.items() if value}, indent=1)
