"""The test renderer behaves like kustomize for the features deploy/ uses, and refuses the rest.

Where kubectl is on PATH, each render here is also compared with `kubectl kustomize`'s.
"""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from tests.deploy import kustomize_lite
from tests.deploy.kustomize_lite import KustomizeError, find, strategic_merge
from tests.deploy.renders import KUBECTL, Obj, assert_same_objects, kubectl_kustomize

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: app, labels: {app: x}}
spec:
  selector: {matchLabels: {app: x}}
  template:
    metadata: {labels: {app: x}}
    spec:
      containers:
        - name: app
          image: registry.local/app:1.0
          readinessProbe: {grpc: {port: 8443}}
          volumeMounts: [{name: config, mountPath: /etc/app}]
      volumes: [{name: config, configMap: {name: app-config}}]
"""


def build(directory: Path) -> list[Obj]:
    """kustomize_lite's render, the same as `kubectl kustomize`'s wherever kubectl exists."""
    objects = kustomize_lite.build(directory)
    if KUBECTL is not None:
        assert_same_objects(kubectl_kustomize(directory), tuple(objects))
    return objects


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(dedent(text))
    return directory


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return _write(
        tmp_path / "base",
        {
            "deployment.yaml": DEPLOYMENT,
            "app.yaml": "listen: 0.0.0.0:8443\n",
            "kustomization.yaml": """\
                resources: [deployment.yaml]
                labels:
                  - pairs: {part-of: suite}
                    includeSelectors: false
                    includeTemplates: true
                configMapGenerator:
                  - name: app-config
                    files: [app.yaml]
                    options: {disableNameSuffixHash: true}
            """,
        },
    )


def test_a_base_renders_with_labels_on_metadata_and_templates_not_selectors(base: Path) -> None:
    """labels with includeSelectors: false leave selectors alone."""
    objects = build(base)
    deployment = find(objects, "Deployment", "app")
    assert deployment["metadata"]["labels"] == {"app": "x", "part-of": "suite"}
    assert deployment["spec"]["template"]["metadata"]["labels"]["part-of"] == "suite"
    assert deployment["spec"]["selector"] == {"matchLabels": {"app": "x"}}
    config_map = find(objects, "ConfigMap", "app-config")
    assert config_map["data"] == {"app.yaml": "listen: 0.0.0.0:8443\n"}
    assert config_map["metadata"]["labels"] == {"part-of": "suite"}


def test_an_overlay_sets_namespace_image_config_and_patches(base: Path, tmp_path: Path) -> None:
    """Strategic merge by merge key, null deletes, JSON 6902 replace, generator replace."""
    overlay = _write(
        tmp_path / "overlay",
        {
            "app.yaml": "listen: 0.0.0.0:9443\n",
            "mounts.yaml": """\
                apiVersion: apps/v1
                kind: Deployment
                metadata: {name: app}
                spec:
                  template:
                    spec:
                      containers:
                        - name: app
                          volumeMounts: [{name: tls, mountPath: /tls}]
                      volumes: [{name: tls, secret: {secretName: tls}}]
            """,
            "probe.yaml": """\
                - op: replace
                  path: /spec/template/spec/containers/0/readinessProbe
                  value: {exec: {command: [app, health]}}
            """,
            "kustomization.yaml": """\
                namespace: team
                resources: [../base]
                images: [{name: registry.local/app, newName: mirror.local/app, newTag: "2.0"}]
                configMapGenerator:
                  - name: app-config
                    behavior: replace
                    files: [app.yaml]
                    options: {disableNameSuffixHash: true}
                patches:
                  - path: mounts.yaml
                  - path: probe.yaml
                    target: {kind: Deployment, name: app}
            """,
        },
    )
    objects = build(overlay)
    assert {o["metadata"]["namespace"] for o in objects} == {"team"}
    container = find(objects, "Deployment", "app")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "mirror.local/app:2.0"
    # As kustomize orders a merged list: the patch's items first, then the original's others.
    assert [m["name"] for m in container["volumeMounts"]] == ["tls", "config"]
    assert container["readinessProbe"] == {"exec": {"command": ["app", "health"]}}
    assert find(objects, "ConfigMap", "app-config")["data"] == {
        "app.yaml": "listen: 0.0.0.0:9443\n"
    }


def test_strategic_merge_replaces_lists_without_a_merge_key_and_deletes_nulls() -> None:
    """As the Kubernetes API defines it for fields without patchMergeKey."""
    original = {"ingress": [{"from": [1]}, {"from": [2]}], "probe": {"grpc": {}, "period": 5}}
    patch = {"ingress": [{"from": [3]}], "probe": {"grpc": None, "exec": {}}}
    assert strategic_merge(original, patch) == {
        "ingress": [{"from": [3]}],
        "probe": {"period": 5, "exec": {}},
    }


@pytest.mark.parametrize(
    "kustomization",
    [
        "resources: [deployment.yaml]\ncommonLabels: {a: b}\n",
        "resources: [deployment.yaml]\nnamePrefix: x-\n",
        "configMapGenerator: [{name: c, literals: [a=b]}]\n",
        "resources: [deployment.yaml]\nlabels: [{pairs: {a: b}, includeSelectors: true}]\n",
    ],
)
def test_features_it_does_not_implement_are_refused(tmp_path: Path, kustomization: str) -> None:
    """Never a silently different render: hashed ConfigMaps, prefixes, selector labels..."""
    directory = _write(
        tmp_path, {"deployment.yaml": DEPLOYMENT, "kustomization.yaml": kustomization}
    )
    with pytest.raises(KustomizeError):
        build(directory)
