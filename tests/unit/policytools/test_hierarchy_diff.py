"""policy diff sees access a `resources` change turns around, with no binding changed."""

from __future__ import annotations

from gateway.policy import Policy, load_policy_text
from gateway.policytools.hierarchy_diff import hierarchy_changes

CANCEL = "contactcenterinsights.operations.cancel"
GET = "contactcenterinsights.operations.get"
BASE = """\
resources:
  - name: folders/1
  - projectId: acme-prod
    parent: folders/{parent}
allow:
  - resource: folders/1
    bindings:
      - role: roles/contactcenterinsights.viewer
        members: [user:v@acme.example, group:eng@acme.example]
"""


def policy(parent: str) -> Policy:
    return load_policy_text(BASE.format(parent=parent), "p.yaml")


def test_a_project_leaving_a_folder_loses_what_the_folder_grants() -> None:
    found = hierarchy_changes(policy("1"), policy("2"), [GET, CANCEL])
    assert found == [
        ("group:eng@acme.example", GET, "projects/acme-prod", False),
        ("user:v@acme.example", GET, "projects/acme-prod", False),
    ]
    back = hierarchy_changes(policy("2"), policy("1"), [GET, CANCEL])
    assert [(p, allowed) for p, _, _, allowed in back] == [
        ("group:eng@acme.example", True),
        ("user:v@acme.example", True),
    ]


def test_no_resources_change_no_decisions_asked() -> None:
    assert hierarchy_changes(policy("1"), policy("1"), [GET]) == []
