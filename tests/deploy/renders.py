"""Shared renders of deploy/kubernetes: each kustomization is built once per test session."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

from tests.deploy import kustomize_lite

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUSTOMIZATIONS = {
    "base": DEPLOY / "kubernetes" / "base",
    "example-upstream": DEPLOY / "kubernetes" / "overlays" / "example-upstream",
}
CONFIG_MAP = "opsgate-config"


@functools.cache
def _render(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(kustomize_lite.build(KUSTOMIZATIONS[name]))


def render(name: str) -> list[dict[str, Any]]:
    """The objects of one kustomization (a fresh copy: tests may not change the cache)."""
    return yaml.safe_load(yaml.safe_dump(list(_render(name))))


def gateway_config(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The opsgate.yaml the Deployment mounts, parsed."""
    data = kustomize_lite.find(objects, "ConfigMap", CONFIG_MAP)["data"]
    return yaml.safe_load(data["opsgate.yaml"])
