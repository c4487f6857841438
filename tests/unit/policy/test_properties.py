"""Invariants over generated policies: deny wins, empty denies, allow and deny are monotonic."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.policy import AccessRequest, Caller, Effect, Policy, evaluate, load_policy_text
from gateway.policy.evaluator import resource_chain
from gateway.policy.roles import predefined_roles, to_fqdn_spelling
from tests.unit.policy.support import ALL_PERMISSIONS, NOW

Entry = tuple[str, dict[str, Any]]  # (resource, binding or deny rule)
Parts = tuple[list[Entry], list[Entry]]

LEAVES = (
    "projects/p/locations/l/operations/o",
    "projects/p/locations/l/authorizedViewSets/s/authorizedViews/v/operations/o",
    "projects/p/locations/m/operations/o",
    "projects/q/locations/l/operations/o",
)
RESOURCES = tuple(sorted({r for leaf in LEAVES for r in resource_chain(leaf)}))
ROLES = tuple(sorted(predefined_roles()))
MEMBERS = (
    "user:a@acme.example",
    "user:b@acme.example",
    "serviceAccount:s@p.iam.gserviceaccount.com",
    "group:g1@acme.example",
    "group:g2@acme.example",
    "principalSet://goog/group/g3@acme.example",
    "domain:acme.example",
    "principal://goog/subject/b@acme.example",
    "allUsers",
    "allAuthenticatedUsers",
    "deleted:user:c@acme.example?uid=1",
)
CONDITIONS = (
    'request.time < timestamp("2030-01-01T00:00:00Z")',  # true at NOW
    'request.time > timestamp("2030-01-01T00:00:00Z")',  # false at NOW
    'resource.name.startsWith("projects/p/locations/l/")',
    'request.time + duration("315576000000s") > request.time',  # fails to evaluate (overflow)
)
CALLERS = (
    Caller(
        "user:a@acme.example",
        email="a@acme.example",
        email_verified=True,
        hosted_domain="acme.example",
    ),
    Caller("user:b@acme.example", groups=frozenset({"g1@acme.example"})),
    Caller("serviceAccount:s@p.iam.gserviceaccount.com", groups=frozenset({"g3@acme.example"})),
    Caller("principal://idp/x", email="x@acme.example", groups=frozenset({"g2@acme.example"})),
    Caller("allUsers", authenticated=False),
)
REQUESTS = tuple(AccessRequest(p, r) for p in ALL_PERMISSIONS for r in LEAVES)
# Static groups nest without cycles: g1 contains g2, g2 contains user:a.
GROUPS = {"g1@acme.example": ["group:g2@acme.example"], "g2@acme.example": ["user:a@acme.example"]}

conditions = st.none() | st.sampled_from(CONDITIONS)


def _with_condition(spec: dict[str, Any], key: str, expression: str | None) -> dict[str, Any]:
    if expression is not None:
        spec[key] = {"title": "t", "expression": expression}
    return spec


bindings = st.builds(
    lambda resource, role, members, condition: (
        resource,
        _with_condition({"role": role, "members": members}, "condition", condition),
    ),
    st.sampled_from(RESOURCES),
    st.sampled_from(ROLES),
    st.lists(st.sampled_from(MEMBERS), min_size=1, max_size=3, unique=True),
    conditions,
)
permission_spellings = st.sampled_from(
    [to_fqdn_spelling(p) for p in ALL_PERMISSIONS]
    + list(ALL_PERMISSIONS)
    + [
        "contactcenterinsights.googleapis.com/*",
        "contactcenterinsights.googleapis.com/operations.*",
    ]
)
deny_rules = st.builds(
    lambda resource, denied, excepted, permissions, exceptions, condition: (
        resource,
        _with_condition(
            {
                "deniedPrincipals": denied,
                "exceptionPrincipals": excepted,
                "deniedPermissions": permissions,
                "exceptionPermissions": exceptions,
            },
            "denialCondition",
            condition,
        ),
    ),
    st.sampled_from(RESOURCES),
    st.lists(st.sampled_from(MEMBERS), min_size=1, max_size=3, unique=True),
    st.lists(st.sampled_from(MEMBERS), max_size=2, unique=True),
    st.lists(permission_spellings, min_size=1, max_size=3, unique=True),
    st.lists(permission_spellings, max_size=1, unique=True),
    conditions,
)
policies = st.tuples(st.lists(bindings, max_size=8), st.lists(deny_rules, max_size=3))


def build(
    allow: list[tuple[str, dict[str, Any]]], deny: list[tuple[str, dict[str, Any]]]
) -> Policy:
    data = {
        "allow": [{"resource": r, "bindings": [b]} for r, b in allow],
        "deny": [{"resource": r, "rules": [rule]} for r, rule in deny],
        "groups": GROUPS,
    }
    return load_policy_text(json.dumps(data), "generated.json")


def allowed(policy: Policy) -> set[tuple[int, int]]:
    return {
        (c, r)
        for c, caller in enumerate(CALLERS)
        for r, request in enumerate(REQUESTS)
        if evaluate(policy, caller, request, NOW).effect is Effect.ALLOW
    }


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(policies, st.sampled_from(range(len(CALLERS))), st.sampled_from(REQUESTS), st.data())
def test_a_matching_deny_always_wins(
    policy_parts: Parts, caller_index: int, request: AccessRequest, data: st.DataObject
) -> None:
    allow, deny = policy_parts
    caller = CALLERS[caller_index]
    where = data.draw(st.sampled_from(resource_chain(request.resource)))
    spelling = data.draw(
        st.sampled_from(
            [
                request.permission,
                to_fqdn_spelling(request.permission),
                "contactcenterinsights.googleapis.com/*",
            ]
        )
    )
    rule = {"deniedPrincipals": [caller.member], "deniedPermissions": [spelling]}
    policy = build(allow, [*deny, (where, rule)])
    assert evaluate(policy, caller, request, NOW).effect is Effect.DENY


@SETTINGS
@given(
    st.builds(
        Caller,
        member=st.sampled_from(MEMBERS) | st.text(max_size=30),
        email=st.none() | st.emails(),
        email_verified=st.booleans(),
        hosted_domain=st.none() | st.sampled_from(["acme.example", "x.example"]),
        groups=st.frozensets(
            st.sampled_from(["g1@acme.example", "g3@acme.example"]) | st.emails(), max_size=3
        ),
        authenticated=st.booleans(),
    ),
    st.sampled_from(ALL_PERMISSIONS) | st.text(max_size=40),
    st.sampled_from(RESOURCES) | st.text(max_size=60),
)
def test_an_empty_policy_denies_everything(caller: Caller, permission: str, resource: str) -> None:
    decision = evaluate(EMPTY, caller, AccessRequest(permission, resource), NOW)
    assert decision.effect is Effect.DENY
    assert decision.trace == ()


EMPTY = load_policy_text("{}", "empty.yaml")


@SETTINGS
@given(policies, bindings)
def test_adding_an_allow_binding_never_removes_access(policy_parts: Parts, extra: Entry) -> None:
    allow, deny = policy_parts
    assert allowed(build(allow, deny)) <= allowed(build([*allow, extra], deny))


@SETTINGS
@given(policies, deny_rules)
def test_adding_a_deny_rule_never_grants(policy_parts: Parts, extra: Entry) -> None:
    allow, deny = policy_parts
    assert allowed(build(allow, [*deny, extra])) <= allowed(build(allow, deny))
