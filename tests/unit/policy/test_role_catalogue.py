"""The shipped role catalogue (gateway/policy/data/roles.yaml) against Google's role reference.

The operations table below is Google's: for each predefined role, which of the operations
permissions opsgate decides on it includes, as the IAM roles and permissions reference
(https://docs.cloud.google.com/iam/docs/roles-permissions/contactcenterinsights) lists them on the
date the data file names.
"""

from __future__ import annotations

import datetime as dt
import re
from importlib import resources
from typing import Any

import pytest
import yaml

from gateway.policy.roles import (
    _roles_from_data,
    parse_permission,
    predefined_permissions,
    predefined_roles,
)

SERVICE = "contactcenterinsights"
REFERENCE = "https://docs.cloud.google.com/iam/docs/roles-permissions/contactcenterinsights"

GET, LIST, CANCEL = (f"{SERVICE}.operations.{v}" for v in ("get", "list", "cancel"))
AGET, ALIST = (f"{SERVICE}.authorizedOperations.{v}" for v in ("get", "list"))
OPERATIONS = frozenset({GET, LIST, CANCEL, AGET, ALIST, f"{SERVICE}.authorizedOperations.cancel"})

ALL_FIVE = frozenset({GET, LIST, CANCEL, AGET, ALIST})
READ = frozenset({GET, LIST, AGET, ALIST})
CES_READERS = (
    "agentEditor",
    "appEditor",
    "deploymentEditor",
    "evalsEditor",
    "guardrailsEditor",
    "securitySettingsEditor",
    "toolsEditor",
    "viewer",
)

# Google's reference: the operations permissions each role includes.
OPERATIONS_BY_ROLE: dict[str, frozenset[str]] = {
    "roles/contactcenterinsights.admin": ALL_FIVE,
    "roles/contactcenterinsights.editor": ALL_FIVE,
    "roles/contactcenterinsights.viewer": READ,
    "roles/contactcenterinsights.authorizedEditor": frozenset({AGET, ALIST}),
    "roles/contactcenterinsights.authorizedViewer": frozenset({AGET, ALIST}),
    "roles/contactcenterinsights.serviceAgent": frozenset(),
    "roles/owner": ALL_FIVE,
    "roles/editor": ALL_FIVE,
    "roles/viewer": READ,
    "roles/admin": ALL_FIVE,
    "roles/writer": ALL_FIVE,
    "roles/reader": READ,
    "roles/ces.admin": ALL_FIVE,
    **{f"roles/ces.{name}": READ for name in CES_READERS},
    "roles/ces.serviceAgent": frozenset({GET, LIST}),
    "roles/iam.securityAdmin": frozenset({LIST, ALIST}),
    "roles/iam.securityAuditor": frozenset({LIST, ALIST}),
    "roles/iam.securityReviewer": frozenset({LIST, ALIST}),
    "roles/iam.supportUser": READ,
}

# Every contactcenterinsights.* permission any role holds (Google: contactcenterinsights.*).
SERVICE_PERMISSION_COUNT = 191
# Google lists no contactcenterinsights.* permission in the service agent's role; it is in the
# catalogue so that the binding every project enabling the API holds is a known role.
WITHOUT_SERVICE_PERMISSIONS = {"roles/contactcenterinsights.serviceAgent"}

STAGES = {"", "ALPHA", "BETA", "GA", "DEPRECATED", "DISABLED", "EAP"}
WELL_FORMED = re.compile(rf"{SERVICE}\.[a-z][A-Za-z]*\.[a-z][A-Za-z]*")


def _text() -> str:
    return resources.files("gateway.policy").joinpath("data/roles.yaml").read_text("utf-8")


def _data() -> dict[str, Any]:
    data = yaml.safe_load(_text())
    assert isinstance(data, dict)
    return data


def test_the_file_names_its_source_and_the_date_it_was_taken() -> None:
    source = _data()["source"]
    assert source["url"] == REFERENCE
    retrieved = dt.date.fromisoformat(str(source["retrieved"]))
    assert dt.date(2026, 1, 1) <= retrieved <= dt.date.today()
    assert all(
        str(url).startswith("https://docs.cloud.google.com/iam/docs/") for url in source["also"]
    )
    assert source["dumps"], "the public dumps the lists were read from are named"
    header = _text().split("\nsource:", 1)[0]
    assert REFERENCE in header
    assert str(source["retrieved"]) in header
    assert "left out" in header  # other services' permissions are deliberately not listed


def test_every_role_of_the_service_and_the_basic_roles_are_present() -> None:
    roles = predefined_roles()
    assert set(OPERATIONS_BY_ROLE) == set(roles)
    own = {name for name in roles if name.startswith(f"roles/{SERVICE}.")}
    assert own == {
        f"roles/{SERVICE}.{name}"
        for name in ("admin", "editor", "viewer", "authorizedEditor", "authorizedViewer")
    } | {f"roles/{SERVICE}.serviceAgent"}
    for basic in ("roles/owner", "roles/editor", "roles/viewer"):
        assert basic in roles
    for basic in ("roles/admin", "roles/writer", "roles/reader"):
        assert basic in roles


def test_every_role_carries_a_permission_of_the_service() -> None:
    for name, role in predefined_roles().items():
        if name in WITHOUT_SERVICE_PERMISSIONS:
            assert role.permissions == frozenset(), name
        else:
            assert role.permissions, name
        assert all(p.startswith(f"{SERVICE}.") for p in role.permissions), name


def test_every_permission_is_well_formed() -> None:
    for name, spec in _data()["roles"].items():
        listed = spec["includedPermissions"]
        assert listed == sorted(listed), f"{name}: Google lists permissions sorted"
        assert len(set(listed)) == len(listed), name
        for permission in listed:
            assert WELL_FORMED.fullmatch(permission), permission
            assert parse_permission(permission, allow_patterns=False).exact == permission


def test_every_role_has_title_description_and_stage() -> None:
    for name, spec in _data()["roles"].items():
        assert isinstance(spec["title"], str) and spec["title"], name
        assert isinstance(spec["description"], str) and spec["description"], name
        assert spec["stage"] in STAGES, name
        role = predefined_roles()[name]
        assert (role.title, role.description) == (spec["title"], spec["description"])
        assert not role.custom


@pytest.mark.parametrize("name", sorted(OPERATIONS_BY_ROLE))
def test_operations_permissions_are_googles(name: str) -> None:
    assert predefined_roles()[name].permissions & OPERATIONS == OPERATIONS_BY_ROLE[name]


def test_no_predefined_role_includes_authorized_operations_cancel() -> None:
    # Google's catalogue has no role with it; the service's method reference names it and the
    # built-in profile routes it, so it is known (permissionsInNoRole), granted by no role.
    permission = f"{SERVICE}.authorizedOperations.cancel"
    assert not any(permission in role.permissions for role in predefined_roles().values())
    assert permission in predefined_permissions()


def test_the_roles_nest_as_google_defines_them() -> None:
    roles = {name: role.permissions for name, role in predefined_roles().items()}
    everything = frozenset().union(*roles.values())
    assert len(everything) == SERVICE_PERMISSION_COUNT
    for full in (
        "roles/contactcenterinsights.admin",
        "roles/owner",
        "roles/admin",
        "roles/ces.admin",
    ):
        assert roles[full] == everything, full
    assert roles["roles/editor"] == roles["roles/writer"]
    assert roles["roles/viewer"] == roles["roles/reader"]
    assert roles["roles/editor"] == everything - {f"{SERVICE}.authorizedViews.setIamPolicy"}
    assert roles["roles/contactcenterinsights.editor"] == roles["roles/editor"] - {
        f"{SERVICE}.authorizedViews.getIamPolicy"
    }
    assert roles["roles/contactcenterinsights.viewer"] < roles["roles/contactcenterinsights.editor"]
    assert (
        roles["roles/contactcenterinsights.authorizedViewer"]
        < (roles["roles/contactcenterinsights.authorizedEditor"])
    )
    counts = {name: len(permissions) for name, permissions in roles.items()}
    assert counts["roles/contactcenterinsights.editor"] == 189
    assert counts["roles/contactcenterinsights.viewer"] == 76
    assert counts["roles/contactcenterinsights.authorizedEditor"] == 35
    assert counts["roles/contactcenterinsights.authorizedViewer"] == 16


def test_the_catalogue_is_read_once() -> None:
    assert predefined_roles() is predefined_roles()
    assert predefined_permissions() is predefined_permissions()
    assert predefined_permissions() == frozenset().union(
        *(role.permissions for role in predefined_roles().values())
    ) | {f"{SERVICE}.authorizedOperations.cancel"}


def _minimal(**role: Any) -> dict[str, Any]:
    spec = {"title": "T", "description": "D", "stage": "GA", "includedPermissions": [GET]}
    spec.update(role)
    return {
        "source": {"url": REFERENCE, "retrieved": "2026-12-07"},
        "roles": {"roles/contactcenterinsights.x": spec},
    }


def test_the_reader_accepts_the_shape_it_documents() -> None:
    roles = _roles_from_data(_minimal())
    role = roles["roles/contactcenterinsights.x"]
    assert (role.title, role.description, role.permissions) == ("T", "D", frozenset({GET}))
    unquoted = _minimal()
    unquoted["source"]["retrieved"] = dt.date(2026, 12, 7)  # YAML's reading of 2026-12-07
    assert _roles_from_data(unquoted)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"roles": _minimal()["roles"]}, id="no source"),
        pytest.param({**_minimal(), "source": {"url": REFERENCE}}, id="no date"),
        pytest.param(
            {**_minimal(), "source": {"url": "docs", "retrieved": "2026-12-07"}}, id="no url"
        ),
        pytest.param(
            {**_minimal(), "source": {"url": REFERENCE, "retrieved": "December"}}, id="bad date"
        ),
        pytest.param(_minimal(stage="GENERAL"), id="unknown stage"),
        pytest.param(_minimal(includedPermissions=[GET, GET]), id="duplicate permission"),
        pytest.param(_minimal(includedPermissions=["operations.get"]), id="malformed permission"),
        pytest.param(_minimal(includedPermissions=None), id="no permissions"),
        pytest.param(_minimal(description=3), id="description not text"),
        pytest.param(_minimal(permissions=[GET]), id="unknown key"),
    ],
)
def test_the_reader_rejects_a_malformed_catalogue(data: dict[str, Any]) -> None:
    with pytest.raises(RuntimeError, match=r"roles\.yaml"):
        _roles_from_data(data)
