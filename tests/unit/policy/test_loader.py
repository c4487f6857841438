"""Loader cases: every problem reported with file:line and a fix, and Google exports accepted."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from benchmarks import policygen
from gateway.errors import ConfigError
from gateway.policy import AccessRequest, Caller, Effect, PolicyError, evaluate, load_policy
from gateway.policy.roles import predefined_roles
from tests.unit.policy.support import CANCEL, GET, NOW, SOURCE, line_of, load, problems

VIEWER = "roles/contactcenterinsights.viewer"


def allow(
    member: str = "user:a@acme.example", role: str = VIEWER, resource: str = "projects/p"
) -> str:
    return f"""\
allow:
  - resource: {resource}
    bindings:
      - role: {role}
        members: [{member}]
"""


def deny(rule: str, resource: str = "projects/p") -> str:
    return f"""\
deny:
  - resource: {resource}
    rules:
      - {textwrap.indent(textwrap.dedent(rule), "        ").lstrip()}
"""


def custom_role(permissions: str, name: str = "projects/p/roles/ops") -> str:
    return f"""\
roles:
  - name: {name}
    includedPermissions: {permissions}
"""


# (id, policy text, needle whose line the problem must name, key, words the message must contain)
# fmt: off
ERRORS = [
    ("unknown role", allow(role="roles/contactcenterinsights.viwer"), "role:", "allow[0].bindings[0].role", "unknown role 'roles/contactcenterinsights.viwer' (did you mean 'roles/contactcenterinsights.viewer'?)"),
    ("undefined custom role", allow(role="projects/p/roles/nope"), "role:", "allow[0].bindings[0].role", "unknown role 'projects/p/roles/nope'"),
    ("unknown permission in a custom role", custom_role("[contactcenterinsights.operations.gett]"), "includedPermissions", "roles[0].includedPermissions[0]", "unknown permission 'contactcenterinsights.operations.gett' (did you mean 'contactcenterinsights.operations.get'?)"),
    ("unknown permission in a deny rule, v2 spelling", deny("deniedPrincipals: [user:a@acme.example]\ndeniedPermissions: [contactcenterinsights.googleapis.com/operations.cancell]"), "deniedPermissions", "deny[0].rules[0].deniedPermissions[0]", "(did you mean 'contactcenterinsights.googleapis.com/operations.cancel'?)"),
    ("permission group matching nothing", deny("deniedPrincipals: [user:a@acme.example]\ndeniedPermissions: [contactcenterinsight.googleapis.com/*]"), "deniedPermissions", "deny[0].rules[0].deniedPermissions[0]", "matches no known permission (did you mean 'contactcenterinsights.googleapis.com/*'?)"),
    ("bare star", deny("deniedPrincipals: [user:a@acme.example]\ndeniedPermissions: ['*']"), "deniedPermissions", "deny[0].rules[0].deniedPermissions[0]", "a bare '*' is not a permission group; write SERVICE.googleapis.com/*"),
    ("permission group in a custom role", custom_role("[contactcenterinsights.googleapis.com/*]"), "includedPermissions", "roles[0].includedPermissions[0]", "only deny rules accept"),
    ("malformed member kind", allow(member="usr:x@acme.example"), "members", "allow[0].bindings[0].members[0]", "malformed member 'usr:x@acme.example'; members are user:EMAIL"),
    ("user without email", allow(member="'user:'"), "members", "allow[0].bindings[0].members[0]", "malformed member 'user:'"),
    ("group that is not an email", allow(member="group:not-an-email"), "members", "allow[0].bindings[0].members[0]", "malformed member 'group:not-an-email'"),
    ("unsupported principal set", allow(member="principalSet://goog/team/C123"), "members", "allow[0].bindings[0].members[0]", "unsupported principal set"),
    ("bad condition", allow() + "        condition:\n          title: t\n          expression: request.time <\n", "expression:", "allow[0].bindings[0].condition.expression", "bad condition:"),
    ("condition without expression", allow() + "        condition: {title: t}\n", "condition:", "allow[0].bindings[0].condition.expression", "is required"),
    ("resource outside the hierarchy", allow(resource="projects/p/zones/z"), "resource:", "allow[0].resource", "'projects/p/zones/z' is not a resource this gateway authorizes; resources are organizations/N, folders/N, projects/P"),
    ("resource with a wildcard id", allow(resource="projects/-/locations/l"), "resource:", "allow[0].resource", "is not a resource this gateway authorizes"),
    ("empty members", "allow:\n  - resource: projects/p\n    bindings:\n      - role: roles/viewer\n        members: []\n", "members:", "allow[0].bindings[0].members", "must not be empty"),
    ("missing members", "allow:\n  - resource: projects/p\n    bindings:\n      - role: roles/viewer\n", "role:", "allow[0].bindings[0].members", "is required"),
    ("group cycle", "groups:\n  a@acme.example: [group:b@acme.example]\n  b@acme.example: [group:c@acme.example]\n  c@acme.example: [group:a@acme.example]\n", "a@acme.example:", "groups.a@acme.example", "group cycle: group:a@acme.example -> group:b@acme.example -> group:c@acme.example -> group:a@acme.example"),
    ("group containing itself", "groups:\n  a@acme.example: [user:x@acme.example, group:a@acme.example]\n", "a@acme.example:", "groups.a@acme.example", "group cycle: group:a@acme.example -> group:a@acme.example"),
    ("unknown top-level key", "alow: []\n", "alow", "alow", "unknown key (did you mean 'allow'?)"),
    ("unknown binding key", allow().replace("members:", "memebers:"), "memebers", "allow[0].bindings[0].memebers", "unknown key (did you mean 'members'?)"),
    ("unknown deny rule key", deny("deniedPrincipal: [user:a@acme.example]\ndeniedPermissions: [contactcenterinsights.googleapis.com/operations.get]"), "deniedPrincipal:", "deny[0].rules[0].deniedPrincipal", "unknown key (did you mean 'deniedPrincipals'?)"),
    ("unknown key in a wrapped deny rule", deny("denyRule:\n  deniedPrincipals: [user:a@acme.example]\n  deniedPermissions: [contactcenterinsights.googleapis.com/operations.get]\n  exceptionPrincipal: []"), "exceptionPrincipal:", "deny[0].rules[0].denyRule.exceptionPrincipal", "did you mean 'exceptionPrincipals'?"),
    ("bindings not a list", "allow:\n  - resource: projects/p\n    bindings: {role: roles/viewer}\n", "bindings:", "allow[0].bindings", "must be a list, got a mapping"),
    ("members not a list", allow().replace("[user:a@acme.example]", "user:a@acme.example"), "members:", "allow[0].bindings[0].members", "must be a list of strings, got 'user:a@acme.example'"),
    ("role not a string", allow(role="[roles/viewer]"), "role:", "allow[0].bindings[0].role", "must be a string, got a list"),
    ("custom role with a predefined name", custom_role("[]", name="roles/opsReader"), "name:", "roles[0].name", "'roles/opsReader' is not a custom role name; roles/... names are Google's predefined roles"),
    ("custom role granted in another project", custom_role("[contactcenterinsights.operations.get]") + allow(role="projects/p/roles/ops", resource="projects/q"), "role: projects/p/roles/ops", "allow[0].bindings[0].role", "belongs to projects/p and cannot be granted on 'projects/q'"),
    ("group defined twice", "groups:\n  a@acme.example: []\n  group:A@acme.example: []\n", "group:A@acme.example", "groups.group:A@acme.example", "group 'a@acme.example' is defined twice"),
    ("domain in a group", "groups:\n  a@acme.example: [domain:acme.example]\n", "a@acme.example", "groups.a@acme.example[0]", "'domain:acme.example' cannot be a member of a group"),
    ("deny rule without permissions", deny("deniedPrincipals: [user:a@acme.example]"), "deniedPrincipals", "deny[0].rules[0].deniedPermissions", "is required"),
    ("deny entry without rules", "deny:\n  - resource: projects/p\n", "resource:", "deny[0].rules", "is required"),
    ("member in a later block-list line", "allow:\n  - resource: projects/p\n    bindings:\n      - role: roles/viewer\n        members:\n          - user:a@acme.example\n          - usr:b\n", "usr:b", "allow[0].bindings[0].members[1]", "malformed member 'usr:b'"),
]
# fmt: on


@pytest.mark.parametrize(
    ("text", "needle", "key", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_problem_names_file_line_key_and_fix(
    text: str, needle: str, key: str, message: str
) -> None:
    found = problems(text)
    expected_prefix = f"{SOURCE}:{line_of(text, needle)}: key '{key}': "
    matching = [p for p in found if p.startswith(expected_prefix)]
    assert matching, f"no problem starts with {expected_prefix!r}: {found}"
    assert any(message in p for p in matching), found


def test_there_are_enough_error_cases() -> None:
    assert len(ERRORS) >= 20


def test_all_problems_are_collected_in_file_order() -> None:
    text = """\
allow:
  - resource: projects/p
    bindings:
      - role: roles/nope
        members: [usr:x]
      - role: roles/viewer
        members: []
deny:
  - resource: zones/z
    rules:
      - deniedPrincipals: [user:a@acme.example]
        deniedPermissions: [contactcenterinsights.operations.nope]
colour: blue
"""
    with pytest.raises(PolicyError) as caught:
        load(text)
    error = caught.value
    lines = [p.line or 0 for p in error.problems]
    assert lines == sorted(lines)
    assert len(error.problems) == 6
    assert isinstance(error, ConfigError)
    text_lines = str(error).splitlines()
    assert text_lines[0] == f"{SOURCE}: 6 problems"
    assert text_lines[1].startswith(f"{SOURCE}:4: key 'allow[0].bindings[0].role': unknown role")
    assert error.line == 4  # the ConfigError fields name the first problem


def test_a_misspelt_key_is_not_also_reported_missing() -> None:
    found = problems(allow().replace("members:", "memebers:"))
    assert len(found) == 1 and "did you mean 'members'?" in found[0]


def test_problem_hint_is_separate() -> None:
    with pytest.raises(PolicyError) as caught:
        load(allow(member="usr:x"))
    (problem,) = caught.value.problems
    assert problem.problem == "malformed member 'usr:x'"
    assert problem.hint.startswith("members are user:EMAIL")
    assert (problem.source, problem.line, problem.key) == (
        SOURCE,
        5,
        "allow[0].bindings[0].members[0]",
    )


def test_duplicate_keys_are_refused_with_their_line() -> None:
    found = problems("allow: []\nallow: []\n")
    assert found == [f"{SOURCE}:2: key 'allow': appears twice in the same mapping"]


def test_yaml_syntax_error_names_its_line() -> None:
    (found,) = problems("allow:\n  - resource: [projects/p\n")
    assert found.startswith(f"{SOURCE}:3: not valid YAML")


def test_json_error_names_its_line() -> None:
    (found,) = problems(
        '{\n  "allow": [\n    {"resource": "projects/p",}\n  ]\n}\n', source="p.json"
    )
    assert found.startswith("p.json:3: not valid JSON")


def test_json_duplicate_key_names_its_line() -> None:
    (found,) = problems('{\n  "allow": [],\n  "allow": []\n}\n', source="p.json")
    assert found == "p.json:3: key 'allow': appears twice in the same mapping"


def test_json_problems_name_the_key_line() -> None:
    text = json.dumps(
        {
            "allow": [
                {
                    "resource": "projects/p",
                    "bindings": [{"role": "roles/nope", "members": ["user:a@acme.example"]}],
                }
            ]
        },
        indent=2,
    )
    (found,) = problems(text, source="p.json")
    line = line_of(text, '"role"')
    assert found.startswith(f"p.json:{line}: key 'allow[0].bindings[0].role': unknown role")


def test_empty_and_non_mapping_files() -> None:
    assert problems("") == [
        f"{SOURCE}: is empty; an empty policy is written {{}} (it denies everything)"
    ]
    assert problems("- a\n") == [f"{SOURCE}: must be a mapping, got a list"]


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path / "missing.yaml")
    assert "cannot be read" in str(caught.value)


def test_google_exports_paste_as_they_are() -> None:
    policy = load(
        """\
        etag: my-own-etag
        description: pasted from gcloud
        allow:
          - resource: //cloudresourcemanager.googleapis.com/projects/acme
            etag: BwYF0xOGs4k=
            version: 3
            auditConfigs:
              - service: allServices
                auditLogConfigs: [{logType: DATA_READ}]
            bindings:
              - role: roles/contactcenterinsights.editor
                members: [user:a@acme.example]
        deny:
          - resource: projects/acme
            name: policies/cloudresourcemanager.googleapis.com%2Fprojects%2Facme/denypolicies/no-cancel
            displayName: No cancelling
            etag: MTc=
            uid: 6665b4c6-1d64-4bb1-9d3d-0a1c5bf8a2a3
            kind: DenyPolicy
            createTime: 2024-05-01T10:00:00Z
            updateTime: "2024-05-02T10:00:00Z"
            rules:
              - description: contractors never cancel
                denyRule:
                  deniedPrincipals: [principalSet://goog/group/contractors@acme.example]
                  deniedPermissions: [contactcenterinsights.googleapis.com/operations.cancel]
                  exceptionPrincipals: []
                  exceptionPermissions: []
        groups:
          group:contractors@acme.example: [user:c@acme.example]
        """
    )
    assert policy.declared_etag == "my-own-etag"
    assert policy.description == "pasted from gcloud"
    assert policy.bindings[0].resource == "projects/acme"
    (rule,) = policy.deny_rules
    assert rule.description == "contractors never cancel"
    assert rule.policy_name == "No cancelling"
    assert rule.denied_permissions.exact == frozenset({CANCEL})
    request = AccessRequest(CANCEL, "projects/acme/locations/l/operations/o")
    assert evaluate(policy, Caller("user:a@acme.example"), request, NOW).effect is Effect.ALLOW
    assert evaluate(policy, Caller("user:c@acme.example"), request, NOW).effect is Effect.DENY


def test_service_profile_permissions_are_known() -> None:
    text = custom_role("[speech.operations.get]") + deny(
        "deniedPrincipals: [user:a@acme.example]\ndeniedPermissions: [speech.googleapis.com/operations.get]"
    )
    # Another service's permission is legal (custom roles and deny policies carry them) ...
    assert load(text).role_permissions("projects/p/roles/ops") == frozenset(
        {"speech.operations.get"}
    )
    # ... but once the profile makes the service ours, a misspelling of it is an error.
    policy = load(text, known=frozenset({"speech.googleapis.com/operations.get"}))
    assert policy.role_permissions("projects/p/roles/ops") == frozenset({"speech.operations.get"})
    typo = custom_role("[speech.operations.gett]")
    found = problems(typo, known=frozenset({"speech.operations.get"}))
    assert any("unknown permission 'speech.operations.gett'" in p for p in found), found


def test_a_disabled_custom_role_grants_nothing() -> None:
    text = (
        custom_role("[contactcenterinsights.operations.get]")
        + "    stage: DISABLED\n"
        + allow(role="projects/p/roles/ops")
    )
    policy = load(text)
    assert policy.role_permissions("projects/p/roles/ops") == frozenset()
    decision = evaluate(
        policy, Caller("user:a@acme.example"), AccessRequest(GET, "projects/p"), NOW
    )
    assert decision.effect is Effect.DENY


def test_role_permissions() -> None:
    policy = load("{}")
    viewer = policy.role_permissions("roles/contactcenterinsights.authorizedViewer")
    assert {p for p in viewer if ".authorizedOperations." in p or ".operations." in p} == {
        "contactcenterinsights.authorizedOperations.get",
        "contactcenterinsights.authorizedOperations.list",
    }
    assert policy.role_permissions("roles/nope") == frozenset()


def test_predefined_roles_come_from_package_data() -> None:
    roles = predefined_roles()
    ops = {f"contactcenterinsights.operations.{v}" for v in ("get", "list", "cancel")}
    authorized = {
        f"contactcenterinsights.authorizedOperations.{v}" for v in ("get", "list", "cancel")
    }
    read = {p for p in ops | authorized if not p.endswith("cancel")}
    checked = ops | authorized

    def operations(role: str) -> frozenset[str]:
        return roles[role].permissions & checked

    # Google's catalogue: no predefined role has authorizedOperations.cancel (see roles.yaml).
    no_authorized_cancel = checked - {"contactcenterinsights.authorizedOperations.cancel"}
    for name in ("roles/contactcenterinsights.admin", "roles/contactcenterinsights.editor"):
        assert operations(name) == no_authorized_cancel, name
    assert operations("roles/contactcenterinsights.viewer") == read
    for name in ("authorizedEditor", "authorizedViewer"):
        assert operations(f"roles/contactcenterinsights.{name}") == read - ops
    assert operations("roles/owner") == operations("roles/editor") == no_authorized_cancel
    assert operations("roles/viewer") == read


def test_etag_is_the_content_not_the_layout() -> None:
    yaml_text = allow() + "# a comment\n"
    json_text = json.dumps(
        {
            "allow": [
                {
                    "bindings": [{"members": ["user:a@acme.example"], "role": VIEWER}],
                    "resource": "projects/p",
                }
            ]
        }
    )
    first, second = load(yaml_text), load(json_text, source="p.json")
    assert first.etag == second.etag
    assert len(first.etag) == 16 and int(first.etag, 16) >= 0
    assert load(allow(member="user:b@acme.example")).etag != first.etag
    assert first.declared_etag is None


def test_bindings_and_rules_keep_their_lines() -> None:
    text = allow() + deny(
        "deniedPrincipals: [user:a@acme.example]\ndeniedPermissions: [contactcenterinsights.operations.get]"
    )
    policy = load(text)
    assert policy.bindings[0].source_line == line_of(text, "role:")
    assert policy.deny_rules[0].source_line == line_of(text, "deniedPrincipals")


def test_an_empty_policy_loads_and_denies() -> None:
    policy = load("{}")
    decision = evaluate(
        policy, Caller("user:a@acme.example"), AccessRequest(GET, "projects/p"), NOW
    )
    assert decision.effect is Effect.DENY


def test_ten_thousand_bindings_load_the_same_from_yaml_and_json() -> None:
    data = policygen.generate(10_000)
    from_yaml = load(policygen.to_yaml(data), source="big.yaml")
    from_json = load(policygen.to_json(data), source="big.json")
    assert len(from_yaml.bindings) == len(from_json.bindings) == 10_000
    assert from_yaml.etag == from_json.etag
    request = AccessRequest(GET, "projects/p0/locations/l0/operations/op0")
    caller = Caller("user:u1@acme.example", groups=frozenset({"g35@acme.example"}))
    one, other = (evaluate(p, caller, request, NOW) for p in (from_yaml, from_json))
    assert one.effect is other.effect
    # The same bindings, at different lines of the two files.
    assert [(e.resource, e.role, e.outcome) for e in one.trace] == [
        (e.resource, e.role, e.outcome) for e in other.trace
    ]
