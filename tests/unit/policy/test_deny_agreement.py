"""The evaluator, `policy explain` and `policy diff` agree on whether each deny rule applies.

The evaluator is asked about one rule at a time (a policy holding only that rule: it is then
denied by a deny rule exactly when the rule applies); explain and diff are asked about the same
rule inside the whole generated policy. The diff does not evaluate conditions: it states who is
denied under which condition, so its answer is read together with the condition's known value.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.policy import AccessRequest, Caller, DenyRule, Policy, evaluate, load_policy_text
from gateway.policy.evaluator import explain, keys_for, resource_chain
from gateway.policytools.diff import expand
from gateway.policytools.explain import Verdict, explain_request
from gateway.policytools.inputs import Request
from tests.unit.policy.support import ALL_PERMISSIONS, NOW
from tests.unit.policy.test_properties import (
    CALLERS,
    GROUPS,
    LEAVES,
    MEMBERS,
    REQUESTS,
    RESOURCES,
    bindings,
    conditions,
    permission_spellings,
)

Entry = tuple[str, dict[str, Any]]

TRUE_AT_NOW = 'request.time < timestamp("2030-01-01T00:00:00Z")'
FALSE_AT_NOW = 'request.time > timestamp("2030-01-01T00:00:00Z")'
FAILS = 'request.time + duration("315576000000s") > request.time'  # overflows: fails closed
# Whether a deny rule with this condition applies at NOW, whatever the resource.
APPLIES_AT_NOW = {None: True, TRUE_AT_NOW: True, FALSE_AT_NOW: False, FAILS: True}

# The exception principals the diff can judge from the policy alone: it reads a group member's
# static keys (itself, its groups, its subject spelling), not what a token would add
# (allUsers, allAuthenticatedUsers, an email's domain).
STATIC_EXCEPTIONS = (
    "user:a@acme.example",
    "user:b@acme.example",
    "serviceAccount:s@p.iam.gserviceaccount.com",
    "group:g1@acme.example",
    "group:g2@acme.example",
    "principalSet://goog/group/g2@acme.example",
    "principal://goog/subject/a@acme.example",
)
# Callers the diff knows by static membership alone: no token groups, no email claim.
STATIC_CALLERS = (
    Caller("user:a@acme.example"),  # in g2, so in g1
    Caller("user:b@acme.example"),
    Caller("serviceAccount:s@p.iam.gserviceaccount.com"),
)


def _with_condition(spec: dict[str, Any], expression: str | None) -> dict[str, Any]:
    if expression is not None:
        spec["denialCondition"] = {"title": "t", "expression": expression}
    return spec


def deny_rules(exceptions: tuple[str, ...], condition: st.SearchStrategy[str | None]) -> Any:
    return st.builds(
        lambda resource, denied, excepted, permissions, excepted_permissions, expression: (
            resource,
            _with_condition(
                {
                    "deniedPrincipals": denied,
                    "exceptionPrincipals": excepted,
                    "deniedPermissions": permissions,
                    "exceptionPermissions": excepted_permissions,
                },
                expression,
            ),
        ),
        st.sampled_from(RESOURCES),
        st.lists(st.sampled_from(MEMBERS), min_size=1, max_size=3, unique=True),
        st.lists(st.sampled_from(exceptions), max_size=2, unique=True),
        st.lists(permission_spellings, min_size=1, max_size=3, unique=True),
        st.lists(permission_spellings, max_size=1, unique=True),
        condition,
    )


def build(allow: list[Entry], deny: list[Entry]) -> Policy:
    data = {
        "allow": [{"resource": r, "bindings": [b]} for r, b in allow],
        "deny": [{"resource": r, "rules": [rule]} for r, rule in deny],
        "groups": GROUPS,
    }
    # Indented, so that every rule has a line of its own to be told apart by in traces.
    return load_policy_text(json.dumps(data, indent=1), "generated.json")


def evaluator_applies(rule: Entry, caller: Caller, request: AccessRequest) -> bool:
    """The evaluator's answer for one rule: alone in a policy, it decides iff it applies."""
    decision = evaluate(build([], [rule]), caller, request, NOW)
    return bool(decision.trace) and decision.trace[0].kind == "deny_rule"


def diff_denies(policy: Policy, rule: DenyRule, caller: Caller, permission: str) -> bool:
    """What `policy diff` says of a one-rule policy, read for one caller: a line denying one of
    the caller's keys directly (less the rule's exceptions), or the caller itself through a
    group (the diff has taken that member's exemptions off already); then the condition."""
    keys = keys_for(policy.index, caller)
    expanded = expand(policy, frozenset(ALL_PERMISSIONS))
    expression = rule.condition.expression if rule.condition is not None else None
    stated = False
    for access, vias in expanded.vias.items():
        if (access.kind, access.permission, access.resource) != ("deny", permission, rule.resource):
            continue
        assert access.condition == expression
        if "" in vias:
            stated |= access.principal in keys.deny and keys.allow.isdisjoint(access.exceptions)
        else:
            stated |= access.principal == keys.member
    return stated and APPLIES_AT_NOW[expression]


def diff_lists_permission(policy: Policy, rule: DenyRule, permission: str) -> bool:
    """Whether `policy diff` of a one-rule policy says anyone is denied the permission."""
    expanded = expand(policy, frozenset(ALL_PERMISSIONS))
    return any(a.kind == "deny" and a.permission == permission for a in expanded.vias)


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
    st.lists(bindings, max_size=4),
    st.lists(deny_rules(MEMBERS, conditions), min_size=1, max_size=3),
    st.sampled_from(range(len(CALLERS))),
    st.sampled_from(REQUESTS),
)
def test_evaluator_and_explain_agree_on_each_deny_rule(
    allow: list[Entry], deny: list[Entry], caller_index: int, request: AccessRequest
) -> None:
    caller = CALLERS[caller_index]
    policy = build(allow, deny)
    chain = resource_chain(request.resource)
    entries = {
        (e.resource, e.source_line): e
        for e in explain(policy, caller, request, NOW)
        if e.kind == "deny_rule"
    }
    answer = explain_request(policy, Request(caller, request, None, NOW), "test")
    rows = {(r.entry.resource, r.entry.source_line): r for r in answer.rows}
    applying = set()
    for spec, rule in zip(deny, policy.deny_rules, strict=True):
        where = (rule.resource, rule.source_line)
        applies = evaluator_applies(spec, caller, request)
        if rule.resource not in chain:
            assert not applies and where not in entries
            continue
        assert entries[where].outcome.startswith("denied") == applies, entries[where]
        row = rows[where]
        assert row.entry == entries[where]
        if any(m.key is not None for m in rule.denied_principals):
            alone = build([], [spec])
            assert row.includes_permission == diff_lists_permission(
                alone, alone.deny_rules[0], request.permission
            )
        if applies:
            applying.add(where)
    decision = evaluate(policy, caller, request, NOW)
    by_rule = bool(decision.trace) and decision.trace[0].kind == "deny_rule"
    assert by_rule == bool(applying)
    if by_rule:
        assert (decision.trace[0].resource, decision.trace[0].source_line) in applying
        assert answer.verdict is not Verdict.GRANTED
        assert [r for r in answer.rows if r.decisive] == [
            rows[decision.trace[0].resource, decision.trace[0].source_line]
        ]


@SETTINGS
@given(
    deny_rules(STATIC_EXCEPTIONS, st.sampled_from(list(APPLIES_AT_NOW))),
    st.sampled_from(range(len(STATIC_CALLERS))),
    st.sampled_from(ALL_PERMISSIONS),
    st.sampled_from(LEAVES),
)
def test_diff_agrees_with_the_evaluator_on_who_a_deny_rule_denies(
    rule: Entry, caller_index: int, permission: str, leaf: str
) -> None:
    caller = STATIC_CALLERS[caller_index]
    policy = build([], [rule])
    # On the rule's resource itself, or below it when the generated leaf is.
    resource = leaf if rule[0] in resource_chain(leaf) else rule[0]
    request = AccessRequest(permission, resource)
    assert evaluator_applies(rule, caller, request) == diff_denies(
        policy, policy.deny_rules[0], caller, permission
    )
    # And explain says the same of it.
    (entry,) = (e for e in explain(policy, caller, request, NOW) if e.kind == "deny_rule")
    assert entry.outcome.startswith("denied") == evaluator_applies(rule, caller, request)
