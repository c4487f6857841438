"""Google's exports pasted as they are: allow policies with auditConfigs, deny policies attached
by name, roles described by gcloud, the resource hierarchy, project numbers and tags."""

from __future__ import annotations

import json

import pytest

from gateway.policy import AccessRequest, Caller, Effect, evaluate
from gateway.policy.auditing import log_type_of
from tests.unit.policy.support import CANCEL, GET, LIST, NOW, load, problems

ORG = "organizations/123456789012"
FOLDER = "folders/345678901234"
PROD_OP = "projects/acme-prod/locations/us-central1/operations/7"
PROD_OP_BY_NUMBER = "projects/987654321098/locations/us-central1/operations/7"
STAGING_OP = "projects/acme-staging/locations/us-central1/operations/7"

RESOURCES = """\
resources:
  - name: organizations/123456789012
    displayName: acme.example
    owner: {directoryCustomerId: C01abcdef}
    creationTime: '2019-02-01T10:00:00.000Z'
    lifecycleState: ACTIVE
  - name: folders/345678901234
    parent: organizations/123456789012
    displayName: Production
  - projectId: acme-prod
    projectNumber: '987654321098'
    name: Acme Production
    parent: {type: folder, id: '345678901234'}
    lifecycleState: ACTIVE
    labels: {team: platform}
    tags:
      - namespacedTagValue: 123456789012/env/prod
        namespacedTagKey: 123456789012/env
        tagValue: tagValues/281479612761930
        tagKey: tagKeys/281484271805522
        inherited: false
  - projectId: acme-staging
    name: projects/112233445566
    parent: organizations/123456789012
    tags:
      - tagValueNamespacedName: 123456789012/env/staging
        tagValue: tagValues/281479612761931
        tagKey: tagKeys/281484271805522
  - resource: projects/acme-staging/locations/us-central1/operations/pinned
    tags:
      - namespacedTagValue: 123456789012/env/prod
"""


def exported(resource: str, policy: dict[str, object]) -> str:
    """An allow entry holding gcloud's JSON output, pasted on the `policy:` line unchanged."""
    text = json.dumps(policy, indent=2)
    return f"  - resource: {resource}\n    policy: {text}\n"


def decide(
    policy_text: str, member: str, permission: str, resource: str, **caller: object
) -> Effect:
    policy = load(policy_text)
    who = Caller(member, **caller)  # type: ignore[arg-type]
    return evaluate(policy, who, AccessRequest(permission, resource), NOW).effect


# -- allow policies as get-iam-policy prints them ----------------------------------------------

PROD_EXPORT = {
    "auditConfigs": [
        {
            "auditLogConfigs": [
                {
                    "exemptedMembers": [
                        "serviceAccount:monitoring@acme-prod.iam.gserviceaccount.com"
                    ],
                    "logType": "ADMIN_READ",
                },
                {"logType": "DATA_READ"},
            ],
            "service": "allServices",
        }
    ],
    "bindings": [
        {"members": ["user:alice@acme.example"], "role": "roles/contactcenterinsights.admin"},
        {
            "condition": {
                "expression": 'request.time < timestamp("2026-01-01T00:00:00Z")',
                "title": "expired",
            },
            "members": ["user:frank@contractor.example"],
            "role": "roles/contactcenterinsights.viewer",
        },
        {
            "members": ["serviceAccount:monitoring@acme-prod.iam.gserviceaccount.com"],
            "role": "roles/contactcenterinsights.viewer",
        },
        {"members": ["group:platform@acme.example"], "role": "roles/storage.admin"},
        {"members": ["user:bob@acme.example"], "role": "roles/iam.serviceAccountUser"},
    ],
    "etag": "BwYLq2t5zTs=",
    "version": 3,
}


def test_the_whole_get_iam_policy_output_pastes_under_policy() -> None:
    text = "allow:\n" + exported("projects/acme-prod", PROD_EXPORT)
    assert decide(text, "user:alice@acme.example", CANCEL, PROD_OP) is Effect.ALLOW
    # The expired conditional grant does not grant; another service's role grants nothing.
    assert decide(text, "user:frank@contractor.example", GET, PROD_OP) is Effect.DENY
    assert decide(text, "user:bob@acme.example", GET, PROD_OP) is Effect.DENY
    policy = load(text)
    assert [b.role for b in policy.bindings][-2:] == [
        "roles/storage.admin",
        "roles/iam.serviceAccountUser",
    ]
    assert all(not b.permissions for b in policy.bindings[-2:])


def test_the_exports_keys_also_work_beside_resource() -> None:
    inline = "allow:\n  - resource: projects/acme-prod\n" + "".join(
        f"    {key}: {json.dumps(value)}\n" for key, value in PROD_EXPORT.items()
    )
    assert decide(inline, "user:alice@acme.example", CANCEL, PROD_OP) is Effect.ALLOW
    assert load(inline).audit_configs.keys() == {"projects/acme-prod"}


def test_a_raw_export_as_the_whole_file_says_where_it_goes() -> None:
    (found,) = problems(json.dumps(PROD_EXPORT, indent=2))
    assert "allow policy as gcloud's get-iam-policy prints it" in found
    assert "policy: <the output>" in found
    deny = json.dumps({"name": "policies/x/denypolicies/y", "rules": [], "kind": "DenyPolicy"})
    (found,) = problems(deny)
    assert "deny policy as gcloud iam policies get prints it" in found
    (found,) = problems("name: projects/p/roles/r\nincludedPermissions: []\ntitle: t\n")
    assert "role as gcloud iam roles describe prints it" in found


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "  - resource: projects/p\n    bindings: []\n    policy: {bindings: []}\n",
            "key 'allow[0].bindings': is given both here and under policy",
        ),
        ("  - resource: projects/p\n    policy: {version: 4}\n", "4 is not an IAM policy version"),
        (
            "  - resource: projects/p\n    policy: {bindngs: []}\n",
            "unknown key (did you mean 'bindings'?)",
        ),
        (
            "  - resource: projects/p\n    policy:\n      auditConfigs:\n        - service: allServices\n"
            "          auditLogConfigs: [{logType: ADMIN_WRITE}]\n",
            "'ADMIN_WRITE' is not a Data Access log type",
        ),
        (
            "  - resource: projects/p\n    policy:\n      auditConfigs: [{service: 'not a service'}]\n",
            "'not a service' is not a service",
        ),
    ],
)
def test_export_shape_problems(entry: str, message: str) -> None:
    found = problems("allow:\n" + entry)
    assert any(message in p for p in found), found


# -- roles -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "suggestion"),
    [
        ("roles/contactcenterinsights.admn", "roles/contactcenterinsights.admin"),
        ("roles/contactcenterinsights.vewer", "roles/contactcenterinsights.viewer"),
        ("roles/viwer", "roles/viewer"),
        ("roles/nope", None),
    ],
)
def test_a_misspelt_role_of_the_service_or_a_basic_role_is_an_error(
    role: str, suggestion: str | None
) -> None:
    (found,) = problems(
        f"allow:\n  - resource: projects/p\n    bindings:\n      - role: {role}\n"
        "        members: [user:a@acme.example]\n"
    )
    assert f"unknown role '{role}'" in found
    if suggestion is not None:
        assert f"(did you mean '{suggestion}'?)" in found


@pytest.mark.parametrize(
    "role",
    ["roles/storage.admin", "roles/iam.serviceAccountUser", "roles/browser", "roles/run.invoker"],
)
def test_another_services_role_loads_and_grants_nothing(role: str) -> None:
    text = (
        f"allow:\n  - resource: projects/p\n    bindings:\n      - role: {role}\n"
        "        members: [user:a@acme.example]\n"
    )
    policy = load(text)
    assert policy.bindings[0].permissions == frozenset()
    assert (
        decide(text, "user:a@acme.example", GET, "projects/p/locations/l/operations/o")
        is Effect.DENY
    )


def test_the_service_agent_role_is_in_the_catalogue() -> None:
    text = (
        "allow:\n  - resource: projects/p\n    bindings:\n"
        "      - role: roles/contactcenterinsights.serviceAgent\n"
        "        members: [serviceAccount:service-1@gcp-sa-contactcenterinsights.iam.gserviceaccount.com]\n"
    )
    assert load(text).bindings[0].role == "roles/contactcenterinsights.serviceAgent"


ROLE_DESCRIBED = """\
roles:
  - description: Reads operations for the access review
    etag: BwYLq3Jc8gE=
    includedPermissions:
    - contactcenterinsights.operations.get
    - logging.logEntries.list
    - resourcemanager.projects.get
    name: organizations/123456789012/roles/opsAuditor
    stage: GA
    title: Operations auditor
"""


def test_a_role_as_gcloud_describes_it_pastes_in_with_other_services_permissions() -> None:
    text = ROLE_DESCRIBED + (
        "allow:\n  - resource: projects/p\n    bindings:\n"
        "      - role: organizations/123456789012/roles/opsAuditor\n"
        "        members: [user:a@acme.example]\n"
    )
    assert (
        decide(text, "user:a@acme.example", GET, "projects/p/locations/l/operations/o")
        is Effect.ALLOW
    )
    assert decide(text, "user:a@acme.example", LIST, "projects/p/locations/l") is Effect.DENY
    deleted = text.replace("    stage: GA\n", "    stage: GA\n    deleted: true\n")
    assert (
        decide(deleted, "user:a@acme.example", GET, "projects/p/locations/l/operations/o")
        is Effect.DENY
    )


def test_a_misspelt_permission_of_the_service_stays_an_error() -> None:
    found = problems(
        ROLE_DESCRIBED.replace(
            "contactcenterinsights.operations.get", "contactcenterinsights.operations.gett"
        )
    )
    assert any("unknown permission 'contactcenterinsights.operations.gett'" in p for p in found)
    found = problems(
        ROLE_DESCRIBED.replace(
            "contactcenterinsights.operations.get", "contactcenterinsight.operations.get"
        )
    )
    assert any("unknown permission 'contactcenterinsight.operations.get'" in p for p in found)


def test_a_predefined_role_pasted_under_roles_is_noted_not_refused() -> None:
    text = "roles:\n  - name: roles/contactcenterinsights.viewer\n    title: Viewer\n    includedPermissions: [contactcenterinsights.operations.get]\n"
    policy = load(text)
    assert [n.kind for n in policy.notes] == ["predefined-role-pasted"]
    assert policy.custom_roles == ()


# -- members a real export carries -----------------------------------------------------------

WORKFORCE_GROUP = (
    "principalSet://iam.googleapis.com/locations/global/workforcePools/partners/group/analysts"
)


def test_an_unresolvable_principal_set_grants_nothing_and_is_noted() -> None:
    text = (
        "allow:\n  - resource: projects/p\n    bindings:\n      - role: roles/viewer\n"
        f"        members: [{WORKFORCE_GROUP}, user:a@acme.example]\n"
    )
    policy = load(text)
    assert [n.kind for n in policy.notes] == ["member-matches-nothing"]
    assert (
        decide(text, "user:a@acme.example", GET, "projects/p/locations/l/operations/o")
        is Effect.ALLOW
    )


def test_an_unresolvable_principal_set_cannot_be_denied() -> None:
    text = (
        "deny:\n  - resource: projects/p\n    rules:\n"
        f"      - deniedPrincipals: [{WORKFORCE_GROUP}]\n"
        "        deniedPermissions: [contactcenterinsights.googleapis.com/operations.cancel]\n"
    )
    (found,) = problems(text)
    assert "cannot resolve, so it cannot deny it" in found
    excepted = (
        "deny:\n  - resource: projects/p\n    rules:\n"
        "      - deniedPrincipals: [principalSet://goog/public:all]\n"
        f"        exceptionPrincipals: [{WORKFORCE_GROUP}]\n"
        "        deniedPermissions: [contactcenterinsights.googleapis.com/operations.cancel]\n"
    )
    # An exception nobody can be shown to hold narrows nothing: the rule denies everyone.
    assert decide(excepted, "user:a@acme.example", CANCEL, PROD_OP) is Effect.DENY


# -- deny policies as gcloud iam policies get prints them ---------------------------------------

DENY_POLICY = {
    "createTime": "2026-03-02T10:14:07.318042Z",
    "displayName": "No contractor cancels in production",
    "etag": "MTc3NTAzNjg1MjQ3NTk0ODkzMQ==",
    "kind": "DenyPolicy",
    "name": "policies/cloudresourcemanager.googleapis.com%2Forganizations%2F123456789012/denypolicies/no-prod-cancels",
    "rules": [
        {
            "denyRule": {
                "deniedPermissions": ["contactcenterinsights.googleapis.com/operations.cancel"],
                "deniedPrincipals": ["principalSet://goog/group/contractors@acme.example"],
                "denialCondition": {
                    "expression": "resource.matchTag('123456789012/env', 'prod')",
                    "title": "Production only",
                },
            },
            "description": "Contractors never cancel production operations.",
        }
    ],
    "uid": "6f1c6a4e-3d0b-4c55-9a8e-0d7c2b1e9f42",
    "updateTime": "2026-03-02T10:14:07.318042Z",
}

OPEN_TO_CONTRACTORS = "allow:\n" + exported(
    ORG,
    {
        "bindings": [
            {
                "role": "roles/contactcenterinsights.admin",
                "members": ["group:contractors@acme.example"],
            }
        ]
    },
)


def contractor_cancels(text: str, resource: str) -> Effect:
    return decide(
        text,
        "user:m@contractor.example",
        CANCEL,
        resource,
        groups=frozenset({"contractors@acme.example"}),
    )


def test_a_deny_policy_is_attached_where_its_name_says() -> None:
    text = RESOURCES + OPEN_TO_CONTRACTORS + "deny:\n  - " + json.dumps(DENY_POLICY) + "\n"
    policy = load(text)
    assert [r.resource for r in policy.deny_rules] == [ORG]
    assert policy.deny_rules[0].policy_name == "No contractor cancels in production"
    assert contractor_cancels(text, PROD_OP) is Effect.DENY  # tagged env=prod through its project
    assert contractor_cancels(text, PROD_OP_BY_NUMBER) is Effect.DENY
    assert contractor_cancels(text, STAGING_OP) is Effect.ALLOW  # env=staging
    # A child's own value of a key replaces the one it inherits.
    pinned = "projects/acme-staging/locations/us-central1/operations/pinned"
    assert contractor_cancels(text, pinned) is Effect.DENY


@pytest.mark.parametrize(
    ("expression", "prod", "staging"),
    [
        ("resource.matchTag('123456789012/env', 'prod')", True, False),
        (
            "resource.matchTagId('tagKeys/281484271805522', 'tagValues/281479612761930')",
            True,
            False,
        ),
        ("resource.hasTagKey('123456789012/env')", True, True),
        ("resource.hasTagKeyId('tagKeys/281484271805522')", True, True),
        ("resource.hasTagKey('123456789012/team')", False, False),
        ("!resource.matchTag('123456789012/env', 'staging')", True, False),
    ],
)
def test_tag_functions_read_inherited_tags(expression: str, prod: bool, staging: bool) -> None:
    policy = dict(DENY_POLICY)
    rule = json.loads(json.dumps(policy["rules"]))
    rule[0]["denyRule"]["denialCondition"]["expression"] = expression
    policy["rules"] = rule
    text = RESOURCES + OPEN_TO_CONTRACTORS + "deny:\n  - " + json.dumps(policy) + "\n"
    assert (contractor_cancels(text, PROD_OP) is Effect.DENY) is prod
    assert (contractor_cancels(text, STAGING_OP) is Effect.DENY) is staging


def test_without_declared_tags_a_tag_condition_is_false() -> None:
    # Without resources:, the org's deny rule and grant reach no project; grant on the project.
    text = OPEN_TO_CONTRACTORS.replace(ORG, "projects/acme-prod")
    text += (
        "deny:\n  - "
        + json.dumps(DENY_POLICY).replace("organizations%2F123456789012", "projects%2Facme-prod")
        + "\n"
    )
    assert load(text).deny_rules[0].resource == "projects/acme-prod"
    assert contractor_cancels(text, PROD_OP) is Effect.ALLOW


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("resource.matchTag('env', 'prod')", "must be a namespaced tag key"),
        ("resource.matchTagId('tagKeys/x', 'tagValues/1')", "must be a tag key id"),
        ("resource.matchTag('1/env')", "takes 2 arguments, got 1"),
        (
            "resource.matchTags('1/env', 'prod')",
            "unknown function 'resource.matchTags' (did you mean 'matchTag'?)",
        ),
        ("resource.hasTagKey(resource.name)", "must be string literals"),
    ],
)
def test_tag_function_problems_say_what_is_wrong(expression: str, message: str) -> None:
    policy = json.loads(json.dumps(DENY_POLICY))
    policy["rules"][0]["denyRule"]["denialCondition"]["expression"] = expression
    found = problems("deny:\n  - " + json.dumps(policy) + "\n")
    assert any(message in p for p in found), found


def test_deny_name_and_resource_must_agree() -> None:
    entry = dict(DENY_POLICY, resource="projects/acme-prod")
    found = problems("deny:\n  - " + json.dumps(entry) + "\n")
    assert any(
        "is not where the policy's name attaches it (organizations/123456789012)" in p
        for p in found
    )
    entry = dict(DENY_POLICY, name="no-prod-cancels")
    found = problems("deny:\n  - " + json.dumps(entry) + "\n")
    assert any("is not a deny policy's name" in p for p in found)


# -- the hierarchy, project numbers ------------------------------------------------------------


def test_grants_on_organizations_and_folders_reach_the_projects_below() -> None:
    text = (
        RESOURCES
        + "allow:\n"
        + exported(
            FOLDER, {"bindings": [{"role": "roles/viewer", "members": ["user:v@acme.example"]}]}
        )
        + exported(ORG, {"bindings": [{"role": "roles/owner", "members": ["user:o@acme.example"]}]})
    )
    assert decide(text, "user:v@acme.example", GET, PROD_OP) is Effect.ALLOW
    assert decide(text, "user:v@acme.example", GET, STAGING_OP) is Effect.DENY  # not in the folder
    assert decide(text, "user:o@acme.example", CANCEL, STAGING_OP) is Effect.ALLOW
    assert (
        decide(text, "user:o@acme.example", CANCEL, "projects/elsewhere/locations/l/operations/o")
        is Effect.DENY
    )


@pytest.mark.parametrize(
    "written",
    [
        "projects/acme-prod",
        "projects/987654321098",
        "//cloudresourcemanager.googleapis.com/projects/987654321098",
    ],
)
@pytest.mark.parametrize("asked", [PROD_OP, PROD_OP_BY_NUMBER])
def test_a_project_number_and_its_id_are_the_same_project(written: str, asked: str) -> None:
    text = RESOURCES + (
        f"allow:\n  - resource: {written}\n    bindings:\n      - role: roles/viewer\n"
        "        members: [user:v@acme.example]\n"
        f"deny:\n  - resource: {written}\n    rules:\n      - deniedPrincipals: [user:v@acme.example]\n"
        "        deniedPermissions: [contactcenterinsights.googleapis.com/operations.list]\n"
    )
    policy = load(text)
    assert policy.bindings[0].resource == "projects/acme-prod"
    assert decide(text, "user:v@acme.example", GET, asked) is Effect.ALLOW
    assert decide(text, "user:v@acme.example", LIST, asked.rsplit("/", 2)[0]) is Effect.DENY


def test_the_decision_names_the_project_by_id_and_the_call_as_sent() -> None:
    text = (
        RESOURCES
        + "allow:\n"
        + exported(
            "projects/987654321098",
            {"bindings": [{"role": "roles/viewer", "members": ["user:v@acme.example"]}]},
        )
    )
    policy = load(text)
    decision = evaluate(
        policy, Caller("user:v@acme.example"), AccessRequest(GET, PROD_OP_BY_NUMBER), NOW
    )
    assert decision.trace[0].resource == "projects/acme-prod"
    assert PROD_OP_BY_NUMBER in decision.reason


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            "resources:\n  - name: folders/1\n    parent: folders/2\n  - name: folders/2\n    parent: folders/1\n",
            "is its own ancestor",
        ),
        (
            "resources:\n  - projectId: a-project\n    projectNumber: '1'\n  - projectId: b-project\n    projectNumber: '1'\n",
            "project number 1 is also declared for projects/a-project",
        ),
        ("resources:\n  - projectId: '12345678'\n", "is not a project id"),
        (
            "resources:\n  - name: folders/1\n    parent: projects/p\n",
            "is not a folder or organization",
        ),
        (
            "resources:\n  - name: organizations/1\n    parent: organizations/2\n",
            "cannot have a parent here",
        ),
        (
            "resources:\n  - resource: projects/p\n    tags: [{namespacedTagValue: env/prod}]\n",
            "is not a namespaced tag value",
        ),
        (
            "resources:\n  - resource: projects/p\n    tags: [{tagValue: tagValues/1}]\n",
            "names its value by namespacedTagValue",
        ),
        (
            "resources:\n  - resource: projects/p\n    tags: [{namespacedTagValue: 1/env/a}, {namespacedTagValue: 1/env/b}]\n",
            "has two values of the key",
        ),
        (
            "resources:\n  - resource: projects/p\n  - resource: projects/p\n",
            "'projects/p' is declared twice",
        ),
        ("resources:\n  - displayName: nothing\n", "names no resource"),
        (
            "resources:\n  - projectId: p-project\n    projectNumber: 12x\n",
            "must be the project's number",
        ),
    ],
)
def test_resources_problems(section: str, message: str) -> None:
    found = problems(section)
    assert any(message in p for p in found), found


# -- auditConfigs -------------------------------------------------------------------------------


def unrecorded(policy_text: str, member: str, permission: str, resource: str) -> str | None:
    decision = evaluate(load(policy_text), Caller(member), AccessRequest(permission, resource), NOW)
    assert decision.effect is Effect.ALLOW
    return decision.unrecorded


def audit_policy(
    log_types: list[str], exempted: list[str] | None = None, at: str = "projects/acme-prod"
) -> str:
    configs = [
        {"logType": t, **({"exemptedMembers": exempted} if exempted else {})} for t in log_types
    ]
    viewer = exported(
        "projects/acme-prod",
        {
            "bindings": [
                {
                    "role": "roles/contactcenterinsights.admin",
                    "members": ["user:a@acme.example", "user:m@acme.example"],
                }
            ]
        },
    )
    if at == "projects/acme-prod":
        return (
            RESOURCES
            + "allow:\n"
            + exported(
                at,
                {
                    "bindings": [
                        {
                            "role": "roles/contactcenterinsights.admin",
                            "members": ["user:a@acme.example", "user:m@acme.example"],
                        }
                    ],
                    "auditConfigs": [{"service": "allServices", "auditLogConfigs": configs}],
                },
            )
        )
    return (
        RESOURCES
        + "allow:\n"
        + viewer
        + exported(
            at,
            {
                "auditConfigs": [
                    {"service": "contactcenterinsights.googleapis.com", "auditLogConfigs": configs}
                ]
            },
        )
    )


def test_reads_are_recorded_where_their_log_type_is_on() -> None:
    assert log_type_of(GET) == "ADMIN_READ" and log_type_of(CANCEL) is None
    assert unrecorded(audit_policy(["ADMIN_READ"]), "user:a@acme.example", GET, PROD_OP) is None
    assert (
        unrecorded(audit_policy(["ADMIN_READ"], at=ORG), "user:a@acme.example", GET, PROD_OP)
        is None
    )


def test_reads_of_a_type_left_out_are_not_recorded_writes_always_are() -> None:
    text = audit_policy(["DATA_READ", "DATA_WRITE"])
    reason = unrecorded(text, "user:a@acme.example", GET, PROD_OP)
    assert reason == (
        "ADMIN_READ audit logs of contactcenterinsights.googleapis.com are not enabled on "
        f"{PROD_OP} or its ancestors"
    )
    assert unrecorded(text, "user:a@acme.example", CANCEL, PROD_OP) is None


def test_exempted_members_are_not_recorded_others_are() -> None:
    text = audit_policy(["ADMIN_READ"], exempted=["user:m@acme.example"], at=FOLDER)
    assert unrecorded(text, "user:m@acme.example", LIST, "projects/acme-prod/locations/l") == (
        f"user:m@acme.example is exempted from ADMIN_READ audit logs of "
        f"contactcenterinsights.googleapis.com on {FOLDER}"
    )
    assert unrecorded(text, "user:a@acme.example", LIST, "projects/acme-prod/locations/l") is None
    assert unrecorded(text, "user:m@acme.example", CANCEL, PROD_OP) is None


def test_without_audit_configs_on_the_chain_every_call_is_recorded() -> None:
    text = audit_policy(["DATA_READ"])  # on acme-prod only
    staging = (
        RESOURCES
        + "allow:\n"
        + exported(
            "projects/acme-staging",
            {"bindings": [{"role": "roles/viewer", "members": ["user:a@acme.example"]}]},
        )
    )
    assert unrecorded(staging, "user:a@acme.example", GET, STAGING_OP) is None
    assert unrecorded(text, "user:a@acme.example", GET, PROD_OP) is not None


def test_a_refusal_is_never_marked_unrecorded() -> None:
    decision = evaluate(
        load(audit_policy(["DATA_READ"])),
        Caller("user:z@acme.example"),
        AccessRequest(GET, PROD_OP),
        NOW,
    )
    assert decision.effect is Effect.DENY and decision.unrecorded is None
