"""kustomize_lite, the offline fallback, renders every kustomization as `kubectl kustomize` does.

The deploy tests render with the real `kubectl kustomize` whenever kubectl is on PATH
(renders.py). On a machine without it they fall back to kustomize_lite; these tests keep that
fallback honest wherever kubectl exists: every kustomization in deploy/kubernetes, rendered both
ways, gives the same objects (the same fields, values and list orders; only the order of the
objects in the stream may differ, which `kubectl apply` does not depend on).
"""

from __future__ import annotations

import pytest

from tests.deploy.renders import (
    ALL_KUSTOMIZATIONS,
    KUBECTL,
    NO_KUBECTL,
    assert_same_objects,
    render,
    render_lite,
    render_real,
)

needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason=NO_KUBECTL)
every_kustomization = pytest.mark.parametrize("name", sorted(ALL_KUSTOMIZATIONS))


def test_every_kustomization_is_found() -> None:
    """The base and the three overlays (a new directory with a kustomization joins by itself)."""
    assert {"base", "example-upstream", "istio", "envoy-gateway"} <= set(ALL_KUSTOMIZATIONS)


@needs_kubectl
@every_kustomization
def test_the_fallback_renders_the_same_objects_as_kubectl_kustomize(name: str) -> None:
    assert_same_objects(render_real(name), render_lite(name))


@needs_kubectl
@every_kustomization
def test_with_kubectl_on_path_the_deploy_tests_see_the_real_render(name: str) -> None:
    """renders.render is kubectl's output (the fallback is only for machines without it)."""
    assert render(name) == list(render_real(name))
