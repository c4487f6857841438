"""Shared renders of deploy/kubernetes: each kustomization is built once per test session.

By the real `kubectl kustomize` whenever kubectl is on PATH (CI machines have it; it needs no
cluster and no network), else by kustomize_lite, the offline fallback, which covers the
kustomizations that use only what it implements (test_renderers.py renders every one both ways
and compares the objects wherever kubectl exists). A kustomization the fallback cannot render
is skipped, saying so, on a machine without kubectl.
"""

from __future__ import annotations

import difflib
import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import kustomize_lite

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
# Every kustomization in deploy/kubernetes, by directory name: a new overlay is covered as added.
ALL_KUSTOMIZATIONS = {
    path.parent.name: path.parent for path in sorted(KUBERNETES.glob("**/kustomization.yaml"))
}
# The gateway in front of an upstream (the base and the example to copy).
KUSTOMIZATIONS = {name: ALL_KUSTOMIZATIONS[name] for name in ("base", "example-upstream")}
CONFIG_MAP = "opsgate-config"
KUBECTL = shutil.which("kubectl")
NO_KUBECTL = "kubectl is not on PATH: nothing to compare kustomize_lite with"

Obj = dict[str, Any]


def kubectl_kustomize(directory: Path) -> tuple[Obj, ...]:
    """The objects `kubectl kustomize DIRECTORY` renders (the caller checks KUBECTL first)."""
    assert KUBECTL is not None, NO_KUBECTL
    done = subprocess.run(
        [KUBECTL, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        # A local render: no cluster, no kubeconfig, no plugins reached for.
        env={**os.environ, "KUBECONFIG": os.devnull},
    )
    assert done.returncode == 0, f"kubectl kustomize {directory}: {done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


@functools.cache
def render_real(name: str) -> tuple[Obj, ...]:
    """The objects `kubectl kustomize` renders of one kustomization."""
    return kubectl_kustomize(ALL_KUSTOMIZATIONS[name])


@functools.cache
def render_lite(name: str) -> tuple[Obj, ...]:
    """The objects kustomize_lite renders (KustomizeError for what it does not implement)."""
    return tuple(kustomize_lite.build(ALL_KUSTOMIZATIONS[name]))


def render(name: str) -> list[Obj]:
    """The objects of one kustomization (a fresh copy: tests may not change the cache)."""
    if KUBECTL is not None:
        objects = render_real(name)
    else:
        try:
            objects = render_lite(name)
        except kustomize_lite.KustomizeError as exc:
            pytest.skip(f"{name} needs `kubectl kustomize` (not on PATH): {exc}")
    return yaml.safe_load(yaml.safe_dump(list(objects)))


def gateway_config(objects: list[Obj]) -> Obj:
    """The opsgate.yaml the Deployment mounts, parsed."""
    data = kustomize_lite.find(objects, "ConfigMap", CONFIG_MAP)["data"]
    config: Obj = yaml.safe_load(data["opsgate.yaml"])
    return config


Identity = tuple[str, str, str | None, str]


def _by_identity(objects: tuple[Obj, ...]) -> dict[Identity, Obj]:
    keyed = {
        (o["apiVersion"], o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
        for o in objects
    }
    assert len(keyed) == len(objects), "two objects with one identity"
    return keyed


def _lines(obj: Obj) -> list[str]:
    return yaml.safe_dump(obj, sort_keys=True).splitlines()


def assert_same_objects(real: tuple[Obj, ...], lite: tuple[Obj, ...]) -> None:
    """The same objects, field for field (lists in the same order), in any stream order."""
    by_real, by_lite = _by_identity(real), _by_identity(lite)
    assert sorted(by_lite, key=str) == sorted(by_real, key=str), "not the same objects"
    for identity, obj in by_real.items():
        diff = difflib.unified_diff(
            _lines(obj), _lines(by_lite[identity]), "kubectl kustomize", "kustomize_lite"
        )
        assert by_lite[identity] == obj, f"{identity} differs:\n" + "\n".join(diff)
