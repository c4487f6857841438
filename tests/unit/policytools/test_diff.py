"""`opsgate policy diff`: access gained and lost, expanded through roles, groups and deny rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.policytools.support import GET_ONLY_PROFILE, opsgate, write

BASE = """\
allow:
  - resource: projects/p
    bindings:
      - role: roles/contactcenterinsights.viewer
        members: [user:a@x.example]
      - role: projects/p/roles/lead
        members: [group:team@x.example]
      - role: roles/contactcenterinsights.authorizedViewer
        members: [user:temp@x.example]
        condition:
          title: temporary
          expression: request.time < timestamp("2027-01-01T00:00:00Z")
deny:
  - resource: projects/p
    rules:
      - deniedPrincipals: [group:contractors@x.example]
        exceptionPrincipals: [user:lead@x.example]
        deniedPermissions: [contactcenterinsights.operations.cancel]
roles:
  - name: projects/p/roles/lead
    includedPermissions:
      - contactcenterinsights.operations.get
groups:
  team@x.example: [user:t1@x.example, group:sub@x.example]
  sub@x.example: [user:t2@x.example]
  contractors@x.example: [user:c1@x.example, user:lead@x.example]
"""

GET = "contactcenterinsights.operations.get"
LIST = "contactcenterinsights.operations.list"
CANCEL = "contactcenterinsights.operations.cancel"
AGET = "contactcenterinsights.authorizedOperations.get"


def changed(old: str, new: str) -> str:
    text = BASE.replace(old, new)
    assert text != BASE, f"{old!r} not in the base policy"
    return text


# (id, the new policy, lines that must appear, lines that must not)
CHANGES = [
    pytest.param(
        changed("members: [user:a@x.example]", "members: [user:a@x.example, user:new@x.example]"),
        [
            f"+ user:new@x.example  {GET}  on projects/p",
            f"+ user:new@x.example  {LIST}  on projects/p",
        ],
        ["user:a@x.example"],
        id="binding-member-added",
    ),
    pytest.param(
        changed(
            "      - role: roles/contactcenterinsights.viewer\n        members: [user:a@x.example]\n",
            "",
        ),
        [f"- user:a@x.example  {GET}  on projects/p", f"- user:a@x.example  {LIST}  on projects/p"],
        [],
        id="binding-removed",
    ),
    pytest.param(
        changed(
            "      - contactcenterinsights.operations.get\n",
            "      - contactcenterinsights.operations.get\n      - contactcenterinsights.operations.cancel\n",
        ),
        [
            "  role projects/p/roles/lead: +contactcenterinsights.operations.cancel",
            "group:team@x.example (and its members user:t1@x.example, "
            "user:t2@x.example via group:sub@x.example)",
            f"+ group:team@x.example  {CANCEL}  on projects/p",
        ],
        ["+ user:t1@x.example", "+ user:t2@x.example", "+ group:sub@x.example"],
        id="custom-role-gains-a-permission",
    ),
    pytest.param(
        changed(
            "sub@x.example: [user:t2@x.example]",
            "sub@x.example: [user:t2@x.example, user:t3@x.example]",
        ),
        [
            "  group group:sub@x.example: +user:t3@x.example",
            f"+ user:t3@x.example  {GET}  on projects/p  (via group:team@x.example)",
        ],
        ["group:team@x.example  "],
        id="group-membership-added",
    ),
    pytest.param(
        changed('timestamp("2027-01-01T00:00:00Z")', 'timestamp("2028-01-01T00:00:00Z")'),
        [
            f"- user:temp@x.example  {AGET}  on projects/p  "
            '[if: temporary: request.time < timestamp("2027-01-01T00:00:00Z")]',
            f"+ user:temp@x.example  {AGET}  on projects/p  "
            '[if: temporary: request.time < timestamp("2028-01-01T00:00:00Z")]',
        ],
        [],
        id="condition-changed",
    ),
    pytest.param(
        changed("title: temporary", "title: short-lived"),
        ["no access changes"],
        ["user:temp"],
        id="condition-title-only-is-no-change",
    ),
    pytest.param(
        changed(
            "[contactcenterinsights.operations.cancel]",
            "[contactcenterinsights.googleapis.com/operations.*]",
        ),
        [
            f"- group:contractors@x.example  {GET}  on projects/p  now denied  [except user:lead@x.example]",
            f"- group:contractors@x.example  {LIST}  on projects/p  now denied  [except user:lead@x.example]",
        ],
        ["user:c1@x.example  ", "user:lead@x.example  contact"],
        id="deny-rule-widened",
    ),
    pytest.param(
        changed("exceptionPrincipals: [user:lead@x.example]", "exceptionPrincipals: []"),
        [
            f"+ group:contractors@x.example  {CANCEL}  on projects/p  no longer denied  [except user:lead@x.example]",
            f"- group:contractors@x.example  {CANCEL}  on projects/p  now denied",
            f"- user:lead@x.example  {CANCEL}  on projects/p  now denied  (via group:contractors@x.example)",
        ],
        ["user:c1@x.example  "],
        id="deny-exception-removed",
    ),
    pytest.param(
        changed(BASE[BASE.index("deny:") : BASE.index("roles:")], ""),
        [
            f"+ group:contractors@x.example  {CANCEL}  on projects/p  no longer denied  [except user:lead@x.example]",
            "(and 1 for group members, stated by their group's lines)",
        ],
        [],
        id="deny-rule-removed",
    ),
]


def _check(
    tmp_path: Path, new_text: str, present: list[str], absent: list[str], *extra: str
) -> str:
    old = write(tmp_path, "old.yaml", BASE)
    new = write(tmp_path, "new.yaml", new_text)
    result = opsgate("policy", "diff", old, new, *extra)
    no_change = present == ["no access changes"]
    assert result.code == (0 if no_change else 1), result.out + result.err
    # Columns are padded to align; compare with runs of spaces collapsed.
    lines = [_flat(line) for line in result.out.splitlines()]
    for line in present:
        assert any(_flat(line) in got for got in lines), f"{line!r} not in\n{result.out}"
    for text in absent:
        assert text not in result.out, result.out
    return result.out


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize(("new_text", "present", "absent"), CHANGES)
def test_changes(tmp_path: Path, new_text: str, present: list[str], absent: list[str]) -> None:
    _check(tmp_path, new_text, present, absent)


def test_no_change_whatever_the_layout(tmp_path: Path) -> None:
    reordered = BASE.replace(
        "team@x.example: [user:t1@x.example, group:sub@x.example]",
        "team@x.example:\n    - group:sub@x.example\n    - user:t1@x.example",
    ).replace("members: [user:a@x.example]", "members:\n          - user:a@x.example")
    out = _check(tmp_path, reordered, ["no access changes"], [])
    lines = out.splitlines()
    assert lines[:2] == [f"--- {tmp_path / 'old.yaml'}", f"+++ {tmp_path / 'new.yaml'}"]
    assert not [line for line in lines[2:] if line.startswith(("+ ", "- "))]


def test_lines_are_grouped_by_principal(tmp_path: Path) -> None:
    new = changed("members: [user:a@x.example]", "members: [user:z@x.example]")
    out = _check(tmp_path, new, [], [])
    blocks = [block.splitlines() for block in out.split("\n\n")[1:-1]]
    assert [[line.split()[:2] for line in block] for block in blocks] == [
        [["-", "user:a@x.example"]] * 4,
        [["+", "user:z@x.example"]] * 4,
    ]


def test_permissions_the_profile_does_not_route(tmp_path: Path) -> None:
    profile = write(tmp_path, "profile.yaml", GET_ONLY_PROFILE)
    new = changed("members: [user:temp@x.example]", "members: [user:other@x.example]")
    _check(tmp_path, new, ["no access changes"], [], "--profile-file", str(profile))
    _check(
        tmp_path,
        new,
        [
            f"+ user:other@x.example  {AGET}  on projects/p  [if: temporary]",
            "(every known permission;",
        ],
        [],
        "--profile-file",
        str(profile),
        "--all-permissions",
    )


def test_json(tmp_path: Path) -> None:
    old = write(tmp_path, "old.yaml", BASE)
    new = write(tmp_path, "new.yaml", changed("[user:t2@x.example]", "[]"))
    result = opsgate("policy", "diff", old, new, "--json")
    assert result.code == 1
    report = json.loads(result.out)
    assert report["changed"] is True
    assert report["definitions"] == [
        {
            "kind": "group",
            "name": "group:sub@x.example",
            "status": "changed",
            "added": [],
            "removed": ["user:t2@x.example"],
        }
    ]
    assert report["changes"] == [
        {
            "change": "revoked",
            "access": "-",
            "principal": "user:t2@x.example",
            "permission": GET,
            "resource": "projects/p",
            "condition": None,
            "except": [],
            "via": ["group:team@x.example"],
            "explained_by": None,
        }
    ]


def test_an_invalid_file_is_exit_2_with_its_problems(tmp_path: Path) -> None:
    old = write(tmp_path, "old.yaml", BASE)
    new = write(tmp_path, "new.yaml", changed("roles/contactcenterinsights.viewer", "roles/viwer"))
    result = opsgate("policy", "diff", old, new)
    assert result.code == 2
    assert result.out == ""
    assert (
        f"{new}:4: error: key 'allow[0].bindings[0].role': unknown role 'roles/viwer'" in result.err
    )
    missing = opsgate("policy", "diff", old, tmp_path / "missing.yaml")
    assert missing.code == 2
    assert "missing.yaml: cannot be read" in missing.err
