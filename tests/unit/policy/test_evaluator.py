"""Evaluator cases, one per row: members, inheritance, deny rules, conditions, traces."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pytest

from gateway.policy import AccessRequest, Caller, Effect, Policy, evaluate, explain
from gateway.policy.evaluator import resource_chain
from tests.unit.policy.support import (
    ACANCEL,
    AGET,
    ALIST,
    CANCEL,
    GET,
    LIST,
    NOW,
    line_of,
    load,
)

POLICY = """\
allow:
  - resource: projects/acme
    etag: BwYF0xOGs4k=
    version: 3
    bindings:
      - role: roles/contactcenterinsights.viewer
        members: [user:alice@acme.example, group:support@acme.example]
      - role: roles/contactcenterinsights.editor
        members: [serviceAccount:ci@acme.iam.gserviceaccount.com, group:engineers@acme.example]
      - role: roles/viewer
        members: [domain:partner.example]
      - role: roles/contactcenterinsights.authorizedViewer
        members: [principal://goog/subject/sub@acme.example]
      - role: roles/contactcenterinsights.admin
        members: ["deleted:user:gone@acme.example?uid=123456"]
      - role: roles/contactcenterinsights.admin
        members: [user:temp@acme.example]
        condition: {title: until 2027, expression: 'request.time < timestamp("2027-01-01T00:00:00Z")'}
      - role: roles/contactcenterinsights.admin
        members: [user:late@acme.example]
        condition: {title: from 2027, expression: 'request.time >= timestamp("2027-01-01T00:00:00Z")'}
      - role: roles/contactcenterinsights.admin
        members: [user:broken@acme.example]
        condition: {title: broken, expression: 'request.time + duration("315576000000s") > request.time'}
      - role: roles/contactcenterinsights.viewer
        members: [user:both@acme.example]
        condition: {title: until 2027, expression: 'request.time < timestamp("2027-01-01T00:00:00Z")'}
      - role: roles/contactcenterinsights.viewer
        members: [user:both@acme.example]
      - role: roles/contactcenterinsights.editor
        members: [user:night@acme.example]
  - resource: projects/acme/locations/eu
    bindings:
      - role: roles/contactcenterinsights.editor
        members: [user:eu-editor@acme.example]
      - role: roles/contactcenterinsights.viewer
        members: [user:scoped@acme.example]
        condition: {title: plain ops, expression: 'resource.name.startsWith("projects/acme/locations/eu/operations/")'}
  - resource: projects/acme/locations/eu/authorizedViewSets/vs1
    bindings:
      - role: roles/contactcenterinsights.authorizedViewer
        members: [group:view-readers@acme.example]
  - resource: projects/acme/locations/eu/authorizedViewSets/vs1/authorizedViews/v1
    bindings:
      - role: roles/contactcenterinsights.authorizedEditor
        members: [user:view-editor@acme.example]
      - role: projects/acme/roles/opsCanceller
        members: [user:canceller@acme.example]
  - resource: projects/acme/locations/eu/operations/op1
    bindings:
      - role: roles/contactcenterinsights.admin
        members: [user:op-owner@acme.example]
  - resource: projects/public
    bindings:
      - role: roles/contactcenterinsights.viewer
        members: [allUsers]
      - role: roles/contactcenterinsights.editor
        members: [allAuthenticatedUsers]
  - resource: projects/pubset
    bindings:
      - role: roles/contactcenterinsights.viewer
        members: [principalSet://goog/public:all]
      - role: roles/contactcenterinsights.editor
        members: [principalSet://goog/group/set-group@acme.example]
  - resource: //contactcenterinsights.googleapis.com/projects/full
    bindings:
      - role: roles/owner
        members:
          - user:full@acme.example
          - principal://iam.googleapis.com/locations/global/workforcePools/pool/subject/jdoe
deny:
  - resource: projects/acme
    displayName: guardrails
    rules:
      - deniedPrincipals: [principalSet://goog/group/contractors@acme.example]
        exceptionPrincipals: [principal://goog/subject/lead@acme.example]
        deniedPermissions: [contactcenterinsights.googleapis.com/operations.cancel]
      - description: alice may only get
        denyRule:
          deniedPrincipals: [user:alice@acme.example]
          deniedPermissions: [contactcenterinsights.googleapis.com/*]
          exceptionPermissions: [contactcenterinsights.googleapis.com/operations.get]
      - deniedPrincipals: [user:night@acme.example]
        deniedPermissions: [contactcenterinsights.operations.get]
        denialCondition: {title: since 2026, expression: 'request.time >= timestamp("2026-01-01T00:00:00Z")'}
      - deniedPrincipals: [user:night@acme.example]
        deniedPermissions: [contactcenterinsights.operations.list]
        denialCondition: {title: before 2020, expression: 'request.time < timestamp("2020-01-01T00:00:00Z")'}
      - deniedPrincipals: [user:night@acme.example]
        deniedPermissions: [contactcenterinsights.operations.cancel]
        denialCondition: {title: broken, expression: 'request.time + duration("315576000000s") > request.time'}
  - resource: projects/acme/locations/eu/authorizedViewSets/vs1
    rules:
      - deniedPrincipals: [principal://iam.googleapis.com/projects/-/serviceAccounts/bot@acme.iam.gserviceaccount.com]
        deniedPermissions: [contactcenterinsights.googleapis.com/authorizedOperations.*]
      - deniedPrincipals: [user:view-editor@acme.example]
        deniedPermissions: [contactcenterinsights.googleapis.com/*.list]
  - resource: projects/public
    rules:
      - deniedPrincipals: [principal://goog/subject/mallory@acme.example, domain:evil.example]
        deniedPermissions: [contactcenterinsights.googleapis.com/operations.get]
roles:
  - name: projects/acme/roles/opsCanceller
    title: Cancels operations through views
    includedPermissions: [contactcenterinsights.authorizedOperations.get, contactcenterinsights.authorizedOperations.cancel]
groups:
  support@acme.example: [user:bob@acme.example, group:tier2@acme.example]
  group:tier2@acme.example: [group:tier3@acme.example]
  tier3@acme.example: [user:dave@acme.example]
  engineers@acme.example: [serviceAccount:bot@acme.iam.gserviceaccount.com]
"""

OP = "projects/acme/locations/eu/operations/op9"
OP1 = "projects/acme/locations/eu/operations/op1"
US_OP = "projects/acme/locations/us/operations/op2"
V1_OP = "projects/acme/locations/eu/authorizedViewSets/vs1/authorizedViews/v1/operations/o"
V2_OP = "projects/acme/locations/eu/authorizedViewSets/vs1/authorizedViews/v2/operations/o"
PUBLIC_OP = "projects/public/locations/l/operations/o"
PUBSET_OP = "projects/pubset/locations/l/operations/o"
FULL_OP = "projects/full/locations/l/operations/o"


def user(email: str, groups: frozenset[str] = frozenset()) -> Caller:
    return Caller(f"user:{email}", email=email, email_verified=True, groups=groups)


def in_groups(email: str, *groups: str) -> Caller:
    return user(email, groups=frozenset(groups))


ANONYMOUS = Caller("allUsers", authenticated=False)


@dataclass(frozen=True)
class Case:
    id: str
    caller: Caller
    permission: str
    resource: str
    effect: Effect
    member: str | None = None  # the trace's first entry names this member
    via_group: str | None = None
    outcome: str | None = None  # the trace's first entry's outcome starts with this
    time_dependent: bool = False
    kind: str | None = None


ALLOW, DENY = Effect.ALLOW, Effect.DENY

# fmt: off
CASES = [
    # Members of every kind.
    Case("user direct", user("alice@acme.example"), GET, OP, ALLOW, "user:alice@acme.example"),
    Case("user email compares case-insensitively", Caller("user:Alice@ACME.example"), GET, OP, ALLOW, "user:alice@acme.example"),
    Case("user without binding", user("nobody@acme.example"), GET, OP, DENY, outcome="no member matched"),
    Case("service account", Caller("serviceAccount:ci@acme.iam.gserviceaccount.com"), CANCEL, OP, ALLOW, "serviceAccount:ci@acme.iam.gserviceaccount.com"),
    Case("group from the token", in_groups("x@acme.example", "support@acme.example"), GET, OP, ALLOW, "group:support@acme.example"),
    Case("token group compares case-insensitively", in_groups("x@acme.example", "Support@ACME.example"), GET, OP, ALLOW, "group:support@acme.example"),
    Case("token group with group: prefix", in_groups("x@acme.example", "group:support@acme.example"), GET, OP, ALLOW, "group:support@acme.example"),
    Case("static group member", user("bob@acme.example"), GET, OP, ALLOW, "group:support@acme.example", via_group=None),
    Case("token group nested in a static group", in_groups("carol@acme.example", "tier2@acme.example"), GET, OP, ALLOW, "group:support@acme.example", via_group="group:tier2@acme.example"),
    Case("static member two groups deep", user("dave@acme.example"), GET, OP, ALLOW, "group:support@acme.example", via_group="group:tier3@acme.example > group:tier2@acme.example"),
    Case("domain by hosted domain", Caller("user:p@other.example", hosted_domain="partner.example"), GET, OP, ALLOW, "domain:partner.example"),
    Case("domain by verified email", Caller("principal://idp/p", email="p@partner.example", email_verified=True), GET, OP, ALLOW, "domain:partner.example"),
    Case("domain needs a verified email", Caller("principal://idp/p", email="p@partner.example"), GET, OP, DENY),
    Case("subject by verified email", Caller("principal://idp/s", email="sub@acme.example", email_verified=True), AGET, V2_OP, ALLOW, "principal://goog/subject/sub@acme.example"),
    Case("subject needs a verified email", Caller("principal://idp/s", email="sub@acme.example"), AGET, V2_OP, DENY),
    Case("subject by the member's own email", Caller("user:sub@acme.example"), AGET, V2_OP, ALLOW, "principal://goog/subject/sub@acme.example"),
    Case("workforce principal matched exactly", Caller("principal://iam.googleapis.com/locations/global/workforcePools/pool/subject/jdoe"), CANCEL, FULL_OP, ALLOW),
    Case("other workforce subject", Caller("principal://iam.googleapis.com/locations/global/workforcePools/pool/subject/jdoe2"), CANCEL, FULL_OP, DENY),
    Case("deleted member never matches", user("gone@acme.example"), GET, OP, DENY),
    Case("allUsers lets the unauthenticated in", ANONYMOUS, GET, PUBLIC_OP, ALLOW, "allUsers"),
    Case("allUsers includes the authenticated", user("x@acme.example"), LIST, PUBLIC_OP, ALLOW),
    Case("allAuthenticatedUsers", user("x@acme.example"), CANCEL, PUBLIC_OP, ALLOW, "allAuthenticatedUsers"),
    Case("allAuthenticatedUsers excludes the unauthenticated", ANONYMOUS, CANCEL, PUBLIC_OP, DENY),
    Case("an unauthenticated caller's claimed identity grants nothing", Caller("user:alice@acme.example", authenticated=False), GET, OP, DENY),
    Case("principalSet public:all", ANONYMOUS, GET, PUBSET_OP, ALLOW, "principalSet://goog/public:all"),
    Case("principalSet group", in_groups("x@other.example", "set-group@acme.example"), CANCEL, PUBSET_OP, ALLOW, "principalSet://goog/group/set-group@acme.example"),
    # Inheritance down the hierarchy.
    Case("location binding reaches its operations", user("eu-editor@acme.example"), CANCEL, OP, ALLOW),
    Case("location binding stops at its location", user("eu-editor@acme.example"), CANCEL, US_OP, DENY),
    Case("operation binding on that operation", user("op-owner@acme.example"), CANCEL, OP1, ALLOW),
    Case("operation binding not on a sibling", user("op-owner@acme.example"), CANCEL, OP, DENY),
    Case("ancestors are whole segments, not prefixes", user("eu-editor@acme.example"), GET, "projects/acme/locations/eu2/operations/o", DENY),
    Case("project binding reaches the project itself", user("alice@acme.example"), GET, "projects/acme", ALLOW),
    Case("full resource name in the request", user("full@acme.example"), GET, "//contactcenterinsights.googleapis.com/" + FULL_OP, ALLOW),
    Case("full resource name in the policy", user("full@acme.example"), CANCEL, FULL_OP, ALLOW),
    # Authorized views versus plain operations.
    Case("view set binding reaches a view's operations", in_groups("r@acme.example", "view-readers@acme.example"), AGET, V1_OP, ALLOW, "group:view-readers@acme.example"),
    Case("view set binding gives no plain operations", in_groups("r@acme.example", "view-readers@acme.example"), AGET, OP, DENY),
    Case("authorized roles lack operations.get", in_groups("r@acme.example", "view-readers@acme.example"), GET, V1_OP, DENY),
    Case("view binding on its view", user("view-editor@acme.example"), AGET, V1_OP, ALLOW),
    Case("view binding not on a sibling view", user("view-editor@acme.example"), AGET, V2_OP, DENY),
    Case("custom role", user("canceller@acme.example"), ACANCEL, V1_OP, ALLOW, "user:canceller@acme.example"),
    Case("custom role grants only its permissions", user("canceller@acme.example"), ALIST, V1_OP, DENY),
    Case("editor lacks authorizedOperations.cancel", Caller("serviceAccount:ci@acme.iam.gserviceaccount.com"), ACANCEL, V1_OP, DENY),
    # Permission spellings.
    Case("v2 permission spelling in the request", user("alice@acme.example"), "contactcenterinsights.googleapis.com/operations.get", OP, ALLOW),
    # Deny rules.
    Case("deny wins over allow", in_groups("k@acme.example", "engineers@acme.example", "contractors@acme.example"), CANCEL, OP, DENY, "principalSet://goog/group/contractors@acme.example", kind="deny_rule", outcome="denied"),
    Case("deny is only for its permissions", in_groups("k@acme.example", "engineers@acme.example", "contractors@acme.example"), GET, OP, ALLOW),
    Case("exception principal", in_groups("lead@acme.example", "engineers@acme.example", "contractors@acme.example"), CANCEL, OP, ALLOW),
    Case("exception principal needs a verified email", Caller("principal://idp/l", email="lead@acme.example", groups=frozenset({"engineers@acme.example", "contractors@acme.example"})), CANCEL, OP, DENY, kind="deny_rule"),
    Case("exception permission under a wildcard", user("alice@acme.example"), GET, OP, ALLOW),
    Case("wildcard denies the rest", user("alice@acme.example"), LIST, OP, DENY, "user:alice@acme.example", kind="deny_rule"),
    Case("resource.* group on a view set", Caller("serviceAccount:bot@acme.iam.gserviceaccount.com"), AGET, V1_OP, DENY, kind="deny_rule"),
    Case("resource.* group leaves other resources", Caller("serviceAccount:bot@acme.iam.gserviceaccount.com"), GET, V1_OP, ALLOW),
    Case("*.verb group", user("view-editor@acme.example"), ALIST, V1_OP, DENY, kind="deny_rule"),
    Case("*.verb group leaves other verbs", user("view-editor@acme.example"), AGET, V1_OP, ALLOW),
    Case("deny on a parent does not reach another project", user("alice@acme.example"), LIST, PUBLIC_OP, ALLOW),
    Case("deny condition true", user("night@acme.example"), GET, OP, DENY, kind="deny_rule", time_dependent=True),
    Case("deny condition false", user("night@acme.example"), LIST, OP, ALLOW, "user:night@acme.example", time_dependent=True),
    Case("deny condition error fails closed", user("night@acme.example"), CANCEL, OP, DENY, kind="deny_rule", outcome="denied: condition could not be evaluated", time_dependent=True),
    Case("deny names a claimed, unverified email", Caller("principal://idp/m", email="mallory@acme.example"), GET, PUBLIC_OP, DENY, kind="deny_rule"),
    Case("deny names the unverified email's domain", Caller("principal://idp/m", email="m@evil.example"), GET, PUBLIC_OP, DENY, kind="deny_rule"),
    # Conditions on bindings.
    Case("allow condition true", user("temp@acme.example"), CANCEL, OP, ALLOW, "user:temp@acme.example", time_dependent=True),
    Case("allow condition false", user("late@acme.example"), CANCEL, OP, DENY, "user:late@acme.example", outcome="condition false", time_dependent=True),
    Case("allow condition error does not grant", user("broken@acme.example"), CANCEL, OP, DENY, "user:broken@acme.example", outcome="condition error", time_dependent=True),
    Case("unconditional grant is found before a conditional one", user("both@acme.example"), GET, OP, ALLOW, time_dependent=False),
    Case("resource condition true", user("scoped@acme.example"), GET, OP, ALLOW, "user:scoped@acme.example"),
    Case("resource condition false", user("scoped@acme.example"), AGET, V1_OP, DENY, outcome="condition false"),
]
# fmt: on


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load(POLICY)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_decision(policy: Policy, case: Case) -> None:
    decision = evaluate(policy, case.caller, AccessRequest(case.permission, case.resource), NOW)
    assert decision.effect is case.effect, decision.reason
    assert decision.allowed is (case.effect is Effect.ALLOW)
    assert decision.time_dependent is case.time_dependent
    assert decision.policy_etag == policy.etag
    assert decision.reason and "\n" not in decision.reason
    if case.effect is Effect.ALLOW:
        assert len(decision.trace) == 1
        assert decision.trace[0].kind == "binding"
        assert decision.trace[0].outcome == "granted"
    if case.member is not None:
        assert decision.trace[0].member == case.member
    if case.member is not None or case.via_group is not None:
        assert decision.trace[0].via_group == case.via_group
    if case.outcome is not None:
        assert decision.trace[0].outcome.startswith(case.outcome)
    if case.kind is not None:
        assert decision.trace[0].kind == case.kind


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 40


def test_granting_binding_names_its_line(policy: Policy) -> None:
    decision = evaluate(policy, user("eu-editor@acme.example"), AccessRequest(CANCEL, OP), NOW)
    entry = decision.trace[0]
    assert entry.source_line == line_of(POLICY, "members: [user:eu-editor@acme.example]") - 1
    assert entry.role == "roles/contactcenterinsights.editor"
    assert entry.resource == "projects/acme/locations/eu"
    assert entry.condition_result == "absent"
    assert f"line {entry.source_line}" in decision.reason


def test_deny_trace_names_the_rule_and_its_line(policy: Policy) -> None:
    caller = in_groups("k@acme.example", "engineers@acme.example", "contractors@acme.example")
    decision = evaluate(policy, caller, AccessRequest(CANCEL, OP), NOW)
    (entry,) = decision.trace
    assert entry.source_line == line_of(
        POLICY, "deniedPrincipals: [principalSet://goog/group/contractors"
    )
    assert entry.resource == "projects/acme"
    assert entry.role is None


def test_wrapped_deny_rule_line_is_the_inner_rule(policy: Policy) -> None:
    decision = evaluate(policy, user("alice@acme.example"), AccessRequest(LIST, OP), NOW)
    assert decision.trace[0].source_line == line_of(
        POLICY, "deniedPrincipals: [user:alice@acme.example]"
    )


def test_default_deny_lists_near_misses(policy: Policy) -> None:
    decision = evaluate(policy, user("nobody@acme.example"), AccessRequest(CANCEL, OP), NOW)
    assert decision.effect is Effect.DENY
    assert decision.trace, "bindings holding the permission are listed"
    assert {entry.outcome for entry in decision.trace} == {"no member matched"}
    roles = {entry.role for entry in decision.trace}
    assert "roles/contactcenterinsights.editor" in roles
    assert "roles/contactcenterinsights.viewer" not in roles  # it lacks cancel
    conditional = [e for e in decision.trace if e.condition is not None]
    assert conditional and all(e.condition_result == "not evaluated" for e in conditional)
    assert "none grants it to user:nobody@acme.example" in decision.reason


def test_default_deny_with_no_holder_says_so(policy: Policy) -> None:
    decision = evaluate(
        policy, user("a@acme.example"), AccessRequest(GET, "projects/elsewhere"), NOW
    )
    assert decision.trace == ()
    assert "no binding" in decision.reason


def test_default_deny_trace_is_bounded() -> None:
    bindings = "\n".join(
        f"      - role: roles/contactcenterinsights.viewer\n        members: [user:u{i}@acme.example]"
        for i in range(50)
    )
    policy = load(f"allow:\n  - resource: projects/p\n    bindings:\n{bindings}\n")
    decision = evaluate(policy, user("x@acme.example"), AccessRequest(GET, "projects/p"), NOW)
    assert len(decision.trace) == 20
    assert "50 binding(s)" in decision.reason


def test_a_dot_dot_name_does_not_borrow_an_ancestor(policy: Policy) -> None:
    request = AccessRequest(CANCEL, OP1 + "/../op2")
    assert evaluate(policy, user("op-owner@acme.example"), request, NOW).effect is Effect.DENY


def test_unknown_permission_is_denied(policy: Policy) -> None:
    decision = evaluate(
        policy, user("alice@acme.example"), AccessRequest("speech.operations.get", OP), NOW
    )
    assert decision.effect is Effect.DENY


def test_time_is_an_input_not_a_clock(policy: Policy) -> None:
    request = AccessRequest(CANCEL, OP)
    before = evaluate(
        policy,
        user("temp@acme.example"),
        request,
        datetime.fromisoformat("2026-12-31T23:59:59+00:00"),
    )
    after = evaluate(
        policy,
        user("temp@acme.example"),
        request,
        datetime.fromisoformat("2027-01-01T00:00:00+00:00"),
    )
    assert (before.effect, after.effect) == (Effect.ALLOW, Effect.DENY)


def test_decisions_are_deterministic(policy: Policy) -> None:
    caller = in_groups("carol@acme.example", "tier2@acme.example", "view-readers@acme.example")
    request = AccessRequest(AGET, V1_OP)
    assert evaluate(policy, caller, request, NOW) == evaluate(policy, caller, request, NOW)


def test_explain_lists_every_entry_on_the_chain(policy: Policy) -> None:
    trace = explain(
        policy,
        in_groups("carol@acme.example", "tier2@acme.example"),
        AccessRequest(CANCEL, OP),
        NOW,
    )
    deny = [e for e in trace if e.kind == "deny_rule"]
    bindings = [e for e in trace if e.kind == "binding"]
    assert len(deny) == 5  # the rules on projects/acme; none on the location or operation
    assert all(e.resource == "projects/acme" for e in deny)
    assert {e.resource for e in bindings} == {"projects/acme", "projects/acme/locations/eu"}
    support = next(e for e in bindings if e.member == "group:support@acme.example")
    assert support.via_group == "group:tier2@acme.example"
    assert support.outcome == "role does not include the permission"
    assert {e.condition_result for e in bindings if e.condition} >= {"true", "false", "error"}


def test_explain_reports_a_matching_binding_with_a_failing_condition(policy: Policy) -> None:
    trace = explain(policy, user("broken@acme.example"), AccessRequest(CANCEL, OP), NOW)
    broken = next(e for e in trace if e.member == "user:broken@acme.example")
    assert broken.condition_result == "error"
    assert broken.outcome.startswith("condition error: ")


def test_explain_says_why_a_deny_rule_did_not_apply(policy: Policy) -> None:
    caller = in_groups("lead@acme.example", "contractors@acme.example")
    trace = explain(policy, caller, AccessRequest(CANCEL, OP), NOW)
    contractors = next(
        e for e in trace if e.member == "principalSet://goog/group/contractors@acme.example"
    )
    assert contractors.outcome == "caller is exempt as principal://goog/subject/lead@acme.example"


@pytest.mark.parametrize(
    ("resource", "chain"),
    [
        ("projects/p", ("projects/p",)),
        ("projects/p/locations/l/operations", ("projects/p", "projects/p/locations/l")),
        (
            "projects/p/locations/l/authorizedViewSets/s/authorizedViews/v/operations/o",
            (
                "projects/p",
                "projects/p/locations/l",
                "projects/p/locations/l/authorizedViewSets/s",
                "projects/p/locations/l/authorizedViewSets/s/authorizedViews/v",
                "projects/p/locations/l/authorizedViewSets/s/authorizedViews/v/operations/o",
            ),
        ),
        ("//contactcenterinsights.googleapis.com/projects/p", ("projects/p",)),
        ("", ()),
        ("projects/acme/locations/eu/operations/op1/../op2", ()),
        ("projects/acme//locations/eu", ()),
        ("projects/acme/locations/eu/", ()),
        ("projects/acme/locations/.eu", ("projects/acme", "projects/acme/locations/.eu")),
    ],
    ids=[
        "project",
        "collection",
        "five levels",
        "full name",
        "empty",
        "dot-dot",
        "empty segment",
        "trailing slash",
        "dot segment",
    ],
)
def test_resource_chain(resource: str, chain: tuple[str, ...]) -> None:
    assert resource_chain(resource) == chain
