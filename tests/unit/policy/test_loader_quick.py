"""The loader's quick way for plain bindings gives what its careful way gives; the GC after a
paused load."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

from benchmarks import policygen
from gateway import pipeline as pipeline_module
from gateway.config import load_settings
from gateway.policy import Policy, PolicyError, load_policy_text
from gateway.policy.loader import _Loader, load_policy
from gateway.runtime import collector_paused
from tests.support.stack import EXAMPLE_POLICY
from tests.unit.policy.test_loader import ERRORS

BINDING = "allow:\n  - resource: projects/p\n    bindings:\n      - {}\n"
BINDINGS = {
    "plain": "{role: roles/viewer, members: [user:a@acme.example, group:g@acme.example]}",
    "member named twice": "{role: roles/viewer, members: [user:a@acme.example, user:A@acme.example]}",
    "deleted member": "{role: roles/viewer, members: ['deleted:user:a@acme.example?uid=1']}",
    "public": "{role: roles/viewer, members: [allUsers, principalSet://goog/public:all]}",
    "conditional": "{role: roles/viewer, members: [user:a@acme.example], condition: {title: t, expression: 'request.time < timestamp(\"2030-01-01T00:00:00Z\")'}}",
    "null condition": "{role: roles/viewer, members: [user:a@acme.example], condition: null}",
    "unknown key": "{role: roles/viewer, members: [user:a@acme.example], member: [x]}",
    "unknown role": "{role: roles/viewr, members: [user:a@acme.example]}",
    "role not a string": "{role: [roles/viewer], members: [user:a@acme.example]}",
    "no role": "{members: [user:a@acme.example]}",
    "no members": "{role: roles/viewer}",
    "empty members": "{role: roles/viewer, members: []}",
    "members not a list": "{role: roles/viewer, members: user:a@acme.example}",
    "member not a string": "{role: roles/viewer, members: [1, {a: b}, [c]]}",
    "malformed member": "{role: roles/viewer, members: [user:a@acme.example, usr:b]}",
    "binding not a mapping": "[roles/viewer]",
    "bad resource": "{role: roles/viewer, members: [user:a@acme.example]}",
}


def texts() -> dict[str, str]:
    found = {name: BINDING.format(spec) for name, spec in BINDINGS.items()}
    found["bad resource"] = found["bad resource"].replace("projects/p", "zones/z")
    found["custom role out of its project"] = (
        "roles:\n  - name: projects/q/roles/r\n    includedPermissions: "
        "[contactcenterinsights.operations.get]\n" + BINDING.format(BINDINGS["plain"])
    ).replace("roles/viewer", "projects/q/roles/r")
    found.update({e[0]: e[1] for e in ERRORS})
    generated = policygen.generate(400, seed=11)
    found["generated yaml"] = policygen.to_yaml(generated)
    found["generated json"] = policygen.to_json(generated)
    return found


TEXTS = texts()


def summary(policy: Policy) -> Any:
    """Everything a load decides, in comparable form (compiled conditions aside)."""
    bindings = [
        (b.ordinal, b.resource, b.role, b.members, b.source_line, b.permissions)
        + ((b.condition.expression, b.condition.title, b.condition.line) if b.condition else ())
        for b in policy.bindings
    ]
    grants = {
        permission: {
            resource: (
                {key: [b.ordinal for b in found] for key, found in entry.by_member.items()},
                [b.ordinal for b in entry.bindings],
                entry.misses,
            )
            for resource, entry in per_resource.items()
        }
        for permission, per_resource in policy.index.grants.items()
    }
    return (policy.etag, bindings, grants, repr(policy.deny_rules), policy.groups)


def outcome(text: str, source: str) -> Any:
    try:
        return summary(load_policy_text(text, source))
    except PolicyError as exc:
        return [(p.source, p.line, p.key, p.problem, p.hint) for p in exc.problems]


@pytest.mark.parametrize("name", TEXTS)
def test_the_quick_way_changes_nothing(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    source = "p.json" if name.endswith("json") else "p.yaml"
    quick = outcome(TEXTS[name], source)
    monkeypatch.setattr(_Loader, "quick_binding", lambda *_: None)
    assert outcome(TEXTS[name], source) == quick


def test_plain_bindings_are_not_walked_the_careful_way(monkeypatch: pytest.MonkeyPatch) -> None:
    careful: list[object] = []
    walk = _Loader.binding
    monkeypatch.setattr(_Loader, "binding", lambda self, *a: careful.append(a) or walk(self, *a))
    load_policy_text(TEXTS["plain"], "p.yaml")
    assert careful == []
    load_policy_text(TEXTS["conditional"], "p.yaml")
    assert len(careful) == 1


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_left_as_it_was_and_nothing_stays_frozen(enabled: bool) -> None:
    # The pause is the callers' (the gateway's start-up and reload, the CLI), not the core's.
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        with collector_paused():
            load_policy_text(TEXTS["generated yaml"], "p.yaml")
        assert gc.isenabled() is enabled
        assert gc.get_freeze_count() == 0
        assert gc.get_count()[0] < 1000  # the load's survivors are not left for a young sweep
    finally:
        (gc.enable if was else gc.disable)()


def test_the_gateway_loads_and_reloads_with_the_collector_paused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []

    def load(path: Path, known_permissions: frozenset[str] = frozenset()) -> Policy:
        seen.append(gc.isenabled())
        return load_policy(path, known_permissions)

    monkeypatch.setattr(pipeline_module, "load_policy", load)
    (tmp_path / "jwks.json").write_text('{"keys": []}')
    config = tmp_path / "opsgate.yaml"
    config.write_text(
        "authentication:\n  issuers:\n    - issuer: https://i\n      audiences: [a]\n"
        "      jwks_file: jwks.json\n"
        f"authorization:\n  policy_file: {EXAMPLE_POLICY}\n"
    )
    was = gc.isenabled()
    gc.enable()
    try:
        pipeline = pipeline_module.build_pipeline(load_settings(config, require_upstream=False))
        (reloader,) = pipeline.reloaders
        reloader._load(reloader.path)  # what a reload runs, off the event loop
        assert gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()
    assert seen == [False, False]
