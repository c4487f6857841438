"""The profile's `http` rules: parsed and compiled at load, refused with file, key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.profile import load_profile
from tests.support.stack import FULL_PROFILE

GET_PATH = "/google.longrunning.Operations/GetOperation"
OPS = "projects/*/locations/*/operations/*"


def _profile(tmp_path: Path, http: str, method: str = "GetOperation", pattern: str = OPS) -> Path:
    path = tmp_path / "profile.yaml"
    path.write_text(
        "service: svc.googleapis.com\n"
        "routes:\n"
        f"  {method}:\n"
        f"    - pattern: {pattern}\n"
        "      permission: svc.operations.get\n"
        f"      http: {http}\n"
    )
    return path


def test_builtin_profile_binds_googles_rest_paths() -> None:
    rules = [
        (m.rsplit("/", 1)[-1], r.verb, r.template.text, r.body)
        for m, r in load_profile().http_rules
    ]
    view = "projects/*/locations/*/authorizedViewSets/*/authorizedViews/*"
    assert rules == [
        ("GetOperation", "GET", f"/v1/{{name={OPS}}}", ""),
        ("GetOperation", "GET", f"/v1/{{name={view}/operations/*}}", ""),
        ("ListOperations", "GET", "/v1/{name=projects/*/locations/*}/operations", ""),
        ("ListOperations", "GET", f"/v1/{{name={view}}}/operations", ""),
        ("CancelOperation", "POST", f"/v1/{{name={OPS}}}:cancel", "*"),
        ("CancelOperation", "POST", f"/v1/{{name={view}/operations/*}}:cancel", "*"),
    ]


def test_profiles_without_http_still_load() -> None:
    profile = load_profile(path=FULL_PROFILE)
    assert profile.http_rules == ()
    assert profile.access_for(GET_PATH, "projects/p/locations/l/operations/o").permission


def test_a_rule_compiles_once_at_load(tmp_path: Path) -> None:
    profile = load_profile(path=_profile(tmp_path, f'{{get: "/v1/{{name={OPS}}}"}}'))
    ((method, rule),) = profile.http_rules
    assert method == GET_PATH
    assert rule.template.match("/v1/projects/p/locations/l/operations/o") == {
        "name": "projects/p/locations/l/operations/o"
    }


# Each rule as written in the YAML; NAME stands for {name=projects/*/locations/*/operations/*}.
BAD = [
    ("two-verbs", '{get: "/v1/NAME", post: "/v1/NAME"}', "must be one of get"),
    ("unknown-key", '{get: "/v1/NAME", additional_bindings: []}', "must be one of get"),
    ("not-a-mapping", '"/v1/NAME"', "must be one of get"),
    ("body-on-get", '{get: "/v1/NAME", body: "*"}', "must be '*' or absent"),
    ("field-body", '{post: "/v1/NAME", body: "name"}', "must be '*' or absent"),
    ("bad-template", '{get: "/v1/{name=**}"}', "'**' is not supported"),
    (
        "name-differs-from-pattern",
        '{get: "/v1/{name=projects/*/operations/*}"}',
        "must capture the route's names",
    ),
    (
        "no-name",
        '{get: "/v1/projects/*/locations/*/operations/*"}',
        "must capture the route's names",
    ),
    ("not-a-field", '{get: "/v1/NAME/{nope}"}', "'nope' is not a string field"),
]


@pytest.mark.parametrize(("http", "problem"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_rules_stop_loading(tmp_path: Path, http: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_profile(path=_profile(tmp_path, http.replace("NAME", f"{{name={OPS}}}")))
    assert problem in caught.value.problem
    assert caught.value.key is not None and caught.value.key.startswith("routes.GetOperation.http")
    assert caught.value.line == 6


def test_the_same_request_bound_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "profile.yaml"
    path.write_text(
        "service: svc.googleapis.com\n"
        "routes:\n"
        "  GetOperation:\n"
        f"    - {{pattern: '{OPS}', permission: svc.operations.get, http: {{get: '/v1/{{name={OPS}}}'}}}}\n"
        "  WaitOperation:\n"
        f"    - {{pattern: '{OPS}', permission: svc.operations.get, http: {{get: '/v1/{{name={OPS}}}'}}}}\n"
    )
    with pytest.raises(ConfigError, match="is bound twice"):
        load_profile(path=path)
