"""Member strings and permission names: what parses, to which key, and what is refused."""

from __future__ import annotations

import pytest

from gateway.policy.members import caller_keys, parse_member
from gateway.policy.roles import normalize_permission, parse_permission

MEMBERS = [
    ("user:Alice@Acme.Example", "user:alice@acme.example"),
    ("serviceAccount:ci@p.iam.gserviceaccount.com", "serviceAccount:ci@p.iam.gserviceaccount.com"),
    ("group:Team@acme.example", "group:team@acme.example"),
    ("domain:Acme.Example", "domain:acme.example"),
    ("allUsers", "allUsers"),
    ("allAuthenticatedUsers", "allAuthenticatedUsers"),
    ("principal://goog/subject/Lead@acme.example", "principal://goog/subject/lead@acme.example"),
    (
        "principal://iam.googleapis.com/projects/-/serviceAccounts/Bot@p.iam.gserviceaccount.com",
        "serviceAccount:bot@p.iam.gserviceaccount.com",
    ),
    (
        "principal://iam.googleapis.com/locations/global/workforcePools/p/subject/JDoe",
        "principal://iam.googleapis.com/locations/global/workforcePools/p/subject/JDoe",
    ),
    ("principalSet://goog/group/Team@acme.example", "group:team@acme.example"),
    ("principalSet://goog/public:all", "allUsers"),
    ("deleted:user:gone@acme.example?uid=123", None),
    ("deleted:serviceAccount:old@p.iam.gserviceaccount.com?uid=9", None),
    ("deleted:group:old@acme.example?uid=7", None),
]


@pytest.mark.parametrize(("text", "key"), MEMBERS, ids=[m[0] for m in MEMBERS])
def test_member_keys(text: str, key: str | None) -> None:
    parsed = parse_member(text)
    assert parsed.problem is None and parsed.member is not None
    assert parsed.member.key == key
    assert parsed.member.written == text


BAD_MEMBERS = [
    "user:",
    "usr:x@acme.example",
    "group:not-an-email",
    "domain:",
    "alluser",
    "user:a b@acme.example",
    "principal://",
    "principalSet://goog/cloudIdentityCustomerId/C1",
    "deleted:user:x",
    "deleted:user:a@acme.example?uid=",
    "deleted:user:a@acme.example?uid=1x",
    "",
    # Matched whole: `$` would accept a trailing line break (a YAML block scalar keeps one).
    "user:a@acme.example\n",
    "domain:acme.example\n",
    "principal://idp.acme.example/subject/a\n",
    "principal://idp.acme.example/subject/a\u200bb",
    # ASCII only, and Google's fixed prefixes in their own case.
    "user:\u212aim@acme.example",
    "domain:acme.exampl\u0435",
    "principal://GOOG/subject/a@acme.example",
    "principalSet://goog/Group/a@acme.example",
]


@pytest.mark.parametrize(
    "text", BAD_MEMBERS, ids=[t.encode("unicode_escape").decode() or "empty" for t in BAD_MEMBERS]
)
def test_malformed_members(text: str) -> None:
    parsed = parse_member(text)
    assert parsed.member is None and parsed.problem


def test_deleted_member_without_uid_is_accepted() -> None:
    # Google writes ?uid=..., but a hand-edited deleted: entry still never matches.
    assert parse_member("deleted:user:x@acme.example").member is not None


def test_caller_keys_distinguish_established_from_claimed() -> None:
    keys = caller_keys(
        "principal://idp/x", "X@Evil.example", False, None, frozenset({"G@acme.example"}), True, {}
    )
    assert "group:g@acme.example" in keys.allow
    assert "principal://goog/subject/x@evil.example" not in keys.allow
    assert {"principal://goog/subject/x@evil.example", "domain:evil.example"} <= keys.deny
    assert keys.ordered[0] == "principal://idp/x"


def test_caller_keys_follow_static_groups_in_order() -> None:
    closure = {"user:a@acme.example": ("group:b@acme.example", "group:a@acme.example")}
    keys = caller_keys("user:A@acme.example", None, False, None, frozenset(), True, closure)
    assert keys.ordered == (
        "user:a@acme.example",
        "principal://goog/subject/a@acme.example",
        "group:b@acme.example",
        "group:a@acme.example",
        "allAuthenticatedUsers",
        "allUsers",
    )


PERMISSIONS = [
    ("contactcenterinsights.operations.get", "contactcenterinsights.operations.get"),
    ("contactcenterinsights.googleapis.com/operations.get", "contactcenterinsights.operations.get"),
    ("speech.googleapis.com/operations.cancel", "speech.operations.cancel"),
]


@pytest.mark.parametrize(("text", "exact"), PERMISSIONS, ids=[p[0] for p in PERMISSIONS])
def test_permission_spellings(text: str, exact: str) -> None:
    assert parse_permission(text, allow_patterns=False).exact == exact
    assert normalize_permission(text) == exact


GROUPS = [
    (
        "contactcenterinsights.googleapis.com/*",
        [
            "contactcenterinsights.operations.get",
            "contactcenterinsights.authorizedOperations.cancel",
        ],
        ["speech.operations.get"],
    ),
    (
        "contactcenterinsights.googleapis.com/operations.*",
        ["contactcenterinsights.operations.cancel"],
        ["contactcenterinsights.authorizedOperations.cancel"],
    ),
    (
        "contactcenterinsights.googleapis.com/*.cancel",
        ["contactcenterinsights.authorizedOperations.cancel"],
        ["contactcenterinsights.operations.get"],
    ),
]


@pytest.mark.parametrize(("text", "inside", "outside"), GROUPS, ids=[g[0] for g in GROUPS])
def test_permission_groups(text: str, inside: list[str], outside: list[str]) -> None:
    pattern = parse_permission(text, allow_patterns=True).pattern
    assert pattern is not None
    assert all(pattern.matches(p) for p in inside)
    assert not any(pattern.matches(p) for p in outside)


BAD_PERMISSIONS = [
    "*",
    "contactcenterinsights.*",
    "contactcenterinsights.operations",
    "example.com/operations.get",
    "contactcenterinsights.googleapis.com/op*",
    "Contactcenterinsights.operations.get",
    "contactcenterinsights.operations.get\n",
    "contactcenterinsights.googleapis.com/operations.get\n",
    "",
]


@pytest.mark.parametrize(
    "text",
    BAD_PERMISSIONS,
    ids=[t.encode("unicode_escape").decode() or "empty" for t in BAD_PERMISSIONS],
)
def test_malformed_permissions(text: str) -> None:
    assert parse_permission(text, allow_patterns=True).problem
