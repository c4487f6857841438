"""`opsgate policy check`: every loader error with file:line, each warning kind, the summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.policytools.support import GET_ONLY_PROFILE, line_of, opsgate, write

CLEAN = """\
allow:
  - resource: projects/p
    bindings:
      - role: roles/contactcenterinsights.viewer
        members: [user:a@x.example, group:team@x.example]
deny:
  - resource: projects/p
    rules:
      - deniedPrincipals: [user:b@x.example]
        deniedPermissions: [contactcenterinsights.operations.cancel]
groups:
  team@x.example: [group:inner@x.example]
  inner@x.example: [user:c@x.example]
"""


def test_a_clean_policy_passes_with_a_summary(tmp_path: Path) -> None:
    path = write(tmp_path, "policy.yaml", CLEAN)
    result = opsgate("policy", "check", path)
    assert result.code == 0, result.out
    assert result.out.strip() == (
        f"{path}: 0 errors, 0 warnings (1 binding, 1 deny rule, 0 custom roles, 2 groups)"
    )


# (id, policy, the text on the line the warning points at, fragment of the message, profile?)
WARNINGS = [
    pytest.param(
        """\
        allow:
          - resource: projects/p
            bindings:
              - role: roles/viewer
                members: [user:a@x.example]
              - role: roles/viewer
                members: [user:a@x.example]  # again
        """,
        "members: [user:a@x.example]  # again",
        "user:a@x.example is granted roles/viewer on projects/p again (also at line 4)",
        False,
        id="duplicate-binding",
    ),
    pytest.param(
        """\
        allow:
          - resource: projects/p
            bindings:
              - role: roles/viewer
                members: [user:a@x.example, user:a@x.example]
        """,
        "- role: roles/viewer",
        "user:a@x.example is listed twice in this roles/viewer binding",
        False,
        id="duplicate-member-in-binding",
    ),
    pytest.param(
        """\
        allow:
          - resource: projects/p
            bindings:
              - role: roles/contactcenterinsights.admin
                members: [user:a@x.example]
          - resource: projects/p/locations/l
            bindings:
              - role: roles/contactcenterinsights.viewer
                members: [user:a@x.example]  # shadowed
        """,
        "# shadowed",
        "user:a@x.example gains nothing from roles/contactcenterinsights.viewer on "
        "projects/p/locations/l: roles/contactcenterinsights.admin on projects/p (line 4)",
        False,
        id="shadowed-by-ancestor",
    ),
    pytest.param(
        """\
        allow:
          - resource: projects/p
            bindings:
              - role: roles/contactcenterinsights.viewer
                members: [group:all@x.example]
          - resource: projects/p/locations/l
            bindings:
              - role: roles/contactcenterinsights.viewer
                members: [user:a@x.example]
        groups:
          all@x.example: [group:team@x.example]
          team@x.example: [user:a@x.example]
        """,
        "members: [user:a@x.example]",
        "unconditionally through group:all@x.example",
        False,
        id="shadowed-through-nested-group",
    ),
    pytest.param(
        """\
        allow:
          - resource: projects/p
            bindings:
              - role: roles/contactcenterinsights.admin
                members: [user:a@x.example]
              - role: roles/contactcenterinsights.viewer
                members: [user:a@x.example]  # shadowed
                condition: {title: until 2030, expression: 'request.time < timestamp("2030-01-01T00:00:00Z")'}
        """,
        "# shadowed",
        "roles/contactcenterinsights.admin here (line 4) already grants it all of that",
        False,
        id="shadowed-on-the-same-resource",
    ),
    pytest.param(
        """\
        allow:
          - resource: projects/p
            bindings:
              - role: projects/p/roles/off
                members: [user:a@x.example]
        roles:
          - name: projects/p/roles/off
            stage: DISABLED
            includedPermissions: [contactcenterinsights.operations.get]
        """,
        "- role: projects/p/roles/off",
        "grants nothing: the role includes no permissions",
        False,
        id="grants-nothing-disabled-role",
    ),
    pytest.param(
        """\
        allow:
          - resource: projects/p
            bindings:
              - role: roles/contactcenterinsights.authorizedViewer
                members: [user:a@x.example]
        """,
        "- role: roles/contactcenterinsights.authorizedViewer",
        "includes none of the permissions the profile profile routes",
        True,
        id="grants-nothing-the-profile-routes",
    ),
    pytest.param(
        """\
        allow:
          - resource: projects/p
            bindings:
              - role: roles/viewer
                members: ["deleted:user:gone@x.example?uid=1"]
        """,
        "- role: roles/viewer",
        "grants nothing: every member is deleted:",
        False,
        id="grants-nothing-deleted-members",
    ),
    pytest.param(
        """\
        deny:
          - resource: projects/p
            rules:
              - deniedPrincipals: [user:a@x.example]
                deniedPermissions: [contactcenterinsights.operations.cancel]
        """,
        "- deniedPrincipals",
        "can never match: it denies none of the permissions the profile profile routes",
        True,
        id="deny-unrouted-permission",
    ),
    pytest.param(
        """\
        deny:
          - resource: projects/p
            rules:
              - deniedPrincipals: [user:a@x.example]
                deniedPermissions: [contactcenterinsights.googleapis.com/operations.*]
                exceptionPermissions:
                  - contactcenterinsights.operations.get
                  - contactcenterinsights.operations.list
                  - contactcenterinsights.operations.cancel
        """,
        "- deniedPrincipals",
        "every permission it denies is also an exception permission",
        False,
        id="deny-all-permissions-excepted",
    ),
    pytest.param(
        """\
        deny:
          - resource: projects/p
            rules:
              - deniedPrincipals: ["deleted:user:gone@x.example?uid=1"]
                deniedPermissions: [contactcenterinsights.operations.cancel]
        """,
        "- deniedPrincipals",
        "can never match: every denied principal is deleted:",
        False,
        id="deny-only-deleted-principals",
    ),
    pytest.param(
        """\
        deny:
          - resource: projects/p
            rules:
              - deniedPrincipals: [user:a@x.example]
                exceptionPrincipals: [principal://goog/subject/b@x.example, user:a@x.example]
                deniedPermissions: [contactcenterinsights.operations.cancel]
        """,
        "- deniedPrincipals",
        "every denied principal is also an exception principal",
        False,
        id="deny-principals-all-excepted",
    ),
    pytest.param(
        """\
        deny:
          - resource: projects/p
            rules:
              - deniedPrincipals: [user:a@x.example]
                exceptionPrincipals: [group:team@x.example]
                deniedPermissions: [contactcenterinsights.operations.cancel]
        groups:
          team@x.example: [user:a@x.example]
        """,
        "- deniedPrincipals",
        "every denied principal is also an exception principal (or in a group that is)",
        False,
        id="deny-principals-excepted-through-a-group",
    ),
    pytest.param(
        """\
        allow:
          - resource: projects/p
            bindings:
              - role: roles/viewer
                members: [user:a@x.example]
        groups:
          lonely@x.example: [user:b@x.example]
        """,
        "lonely@x.example:",
        "group group:lonely@x.example is defined but no binding or deny rule names it",
        False,
        id="unused-group",
    ),
]


@pytest.mark.parametrize(("policy", "at", "message", "get_only"), WARNINGS)
def test_warnings(tmp_path: Path, policy: str, at: str, message: str, get_only: bool) -> None:
    path = write(tmp_path, "policy.yaml", policy)
    args: list[str | Path] = ["policy", "check", path]
    if get_only:
        args += ["--profile-file", write(tmp_path, "profile.yaml", GET_ONLY_PROFILE)]
    result = opsgate(*args)
    assert result.code == 0, result.out + result.err
    line = line_of(path, at)
    warnings = [text for text in result.out.splitlines() if ": warning: " in text]
    assert len(warnings) == 1, result.out
    assert warnings[0].startswith(f"{path}:{line}: warning: "), result.out
    assert message in warnings[0]
    assert "    hint: " in result.out
    assert "0 errors, 1 warning (" in result.out

    strict = opsgate(*args, "--strict")
    assert strict.code == 1
    assert strict.out == result.out


def test_a_group_used_only_inside_a_used_group_is_used(tmp_path: Path) -> None:
    path = write(tmp_path, "policy.yaml", CLEAN)
    assert ": warning: " not in opsgate("policy", "check", path).out


# (id, the policy, the text on the line of the error, fragment of the message)
ERRORS = [
    pytest.param(
        "allow:\n  - resource: projects/p\n    bindings:\n      - role: roles/viwer\n        members: [user:a@x.example]\n",
        "role: roles/viwer",
        "unknown role 'roles/viwer' (did you mean 'roles/viewer'?)",
        id="unknown-role",
    ),
    pytest.param(
        "allow:\n  - resource: projects/p\n    bindings:\n      - role: roles/viewer\n        membrs: [user:a@x.example]\n",
        "membrs:",
        "unknown key (did you mean 'members'?)",
        id="unknown-key",
    ),
    pytest.param(
        "allow:\n  - resource: projects/p\n    bindings:\n      - role: roles/viewer\n        members: [usr:a@x.example]\n",
        "members:",
        "malformed member 'usr:a@x.example'",
        id="malformed-member",
    ),
    pytest.param(
        "allow:\n  - resource: projects/p\n    bindings:\n      - role: roles/viewer\n        members: [user:a@x.example]\n        condition: {expression: 'request.time <'}\n",
        "condition:",
        "bad condition",
        id="bad-condition",
    ),
    pytest.param(
        "roles:\n  - name: projects/p/roles/reader\n    includedPermissions:\n      - contactcenterinsights.operations.gett\n",
        "operations.gett",
        "unknown permission 'contactcenterinsights.operations.gett' (did you mean",
        id="unknown-permission",
    ),
    pytest.param(
        "allow:\n  - resource: projects/p/zones/z\n    bindings:\n      - role: roles/viewer\n        members: [user:a@x.example]\n",
        "resource: projects/p/zones/z",
        "'projects/p/zones/z' is not a resource this gateway authorizes",
        id="bad-resource",
    ),
    pytest.param(
        "groups:\n  a@x.example: [group:b@x.example]\n  b@x.example: [group:a@x.example]\n",
        "a@x.example: [group:b",
        "group cycle",
        id="group-cycle",
    ),
    pytest.param(
        "allow:\n  - resource: projects/p\n    bindings: [\n",
        "bindings: [",
        "not valid YAML",
        id="yaml-syntax",
    ),
]


@pytest.mark.parametrize(("policy", "at", "message"), ERRORS)
def test_errors(tmp_path: Path, policy: str, at: str, message: str) -> None:
    path = write(tmp_path, "policy.yaml", policy)
    result = opsgate("policy", "check", path)
    assert result.code == 1, result.out
    errors = [text for text in result.out.splitlines() if ": error: " in text]
    assert len(errors) == 1, result.out
    line = line_of(path, at)
    if "not valid YAML" not in message:  # YAML reports where it noticed, not where it began
        assert errors[0].startswith(f"{path}:{line}: error: "), result.out
    assert message in errors[0]
    assert result.out.splitlines()[-1].startswith(f"{path}: 1 error, 0 warnings (not loaded")


def test_every_error_is_listed_not_only_the_first(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "policy.yaml",
        """\
        allow:
          - resource: projects/p
            bindings:
              - role: roles/viwer
                members: [usr:a@x.example]
          - resource: projects/p/zones/z
            bindings:
              - role: roles/viewer
                members: [user:a@x.example]
        """,
    )
    result = opsgate("policy", "check", path)
    assert result.code == 1
    lines = [text.split(": error:")[0] for text in result.out.splitlines() if ": error: " in text]
    assert lines == [f"{path}:4", f"{path}:5", f"{path}:6"]
    assert f"{path}: 3 errors, 0 warnings" in result.out
    assert result.out.count("    hint: ") >= 2


def test_several_files_and_the_worst_exit_status(tmp_path: Path) -> None:
    good = write(tmp_path, "good.yaml", CLEAN)
    bad = write(tmp_path, "bad.yaml", ERRORS[0].values[0])
    result = opsgate("policy", "check", good, bad)
    assert result.code == 1
    assert result.out.splitlines()[-1] == "2 files: 1 error, 0 warnings"
    missing = opsgate("policy", "check", good, tmp_path / "missing.yaml")
    assert missing.code == 2
    assert f"{tmp_path / 'missing.yaml'}: error: cannot be read" in missing.out


def test_an_unknown_profile_is_a_usage_error(tmp_path: Path) -> None:
    result = opsgate("policy", "check", write(tmp_path, "p.yaml", CLEAN), "--profile", "nope")
    assert result.code == 2
    assert "unknown profile 'nope'" in result.err
