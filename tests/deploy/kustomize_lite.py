"""Renders our kustomizations in Python: the small subset of kustomize that deploy/ uses.

The offline fallback: the deploy tests render with the real `kubectl kustomize` whenever kubectl
is on PATH (renders.py), and with this only where it is not. test_renderers.py renders every
kustomization both ways and requires the same objects wherever kubectl exists. It implements
only what deploy/kubernetes uses, and refuses anything else (an unknown kustomization key, a
patch directive, a hashed ConfigMap), so a manifest can never silently rely on a feature
rendered differently here than by `kubectl kustomize`:

- `resources`: YAML files (several documents each) and directories holding a kustomization
- `namespace`: set on every namespaced object
- `labels` with `includeSelectors: false`: metadata labels, and pod templates with
  `includeTemplates: true`
- `images`: `newName`, `newTag`, `digest` for containers whose image name matches
- `configMapGenerator` with `files` (`key=path` or `path`) and `literals`, `behavior`
  create/replace/merge, `options.disableNameSuffixHash: true` (required: see base/kustomization)
- `patches`: strategic merge (a mapping; merge keys for the lists our patches touch, in
  kustomize's order: the patch's items first, then the original's others; `null` deletes, and
  so does `$patch: delete` in an item of such a list, the only directive implemented) and
  JSON 6902 (a list of add/remove/replace/test operations), with optional `target`

The order follows kustomize: resources, generators, patches, then namespace, labels and images.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

SUPPORTED_KEYS = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "labels",
    "images",
    "configMapGenerator",
    "generatorOptions",
    "patches",
}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
    "StorageClass",
    "PersistentVolume",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
}
WORKLOADS_WITH_TEMPLATES = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
# Strategic-merge keys (from the Kubernetes API's patchMergeKey tags) of the lists we patch;
# every other list is replaced whole, as kustomize does for lists without a merge key.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "env": "name",
    "imagePullSecrets": "name",
    "topologySpreadConstraints": "topologyKey",
}


class KustomizeError(Exception):
    """The kustomization uses something this renderer does not implement, or is wrong."""


def build(directory: Path) -> list[Obj]:
    """Render the kustomization in `directory` to a list of Kubernetes objects."""
    directory = Path(directory)
    kustomization = _load_kustomization(directory)
    objects: list[Obj] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        objects.extend(build(path) if path.is_dir() else load_documents(path))
    global_options = kustomization.get("generatorOptions", {})
    for generator in kustomization.get("configMapGenerator", []):
        _generate_config_map(directory, generator, global_options, objects)
    for patch in kustomization.get("patches", []):
        _apply_patch(directory, patch, objects)
    if "namespace" in kustomization:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = kustomization["namespace"]
    for label_set in kustomization.get("labels", []):
        _add_labels(label_set, objects)
    for image in kustomization.get("images", []):
        _set_image(image, objects)
    _check_unique(objects)
    return objects


def load_documents(path: Path) -> list[Obj]:
    """The non-empty YAML documents of one file."""
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc]


def find(objects: Iterable[Obj], kind: str, name: str) -> Obj:
    """The one object of `kind` named `name`."""
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    if len(matches) != 1:
        raise KeyError(f"{len(matches)} objects of kind {kind} named {name}")
    return matches[0]


def _load_kustomization(directory: Path) -> Obj:
    path = directory / "kustomization.yaml"
    if not path.is_file():
        raise KustomizeError(f"{directory} has no kustomization.yaml")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(data) - SUPPORTED_KEYS
    if unknown:
        raise KustomizeError(f"{path}: kustomize_lite does not implement {sorted(unknown)}")
    return data


def _generate_config_map(
    directory: Path, generator: Obj, global_options: Obj, objects: list[Obj]
) -> None:
    unknown = set(generator) - {"name", "files", "literals", "behavior", "options"}
    if unknown:
        raise KustomizeError(f"configMapGenerator {generator.get('name')}: {sorted(unknown)}")
    options = {**global_options, **generator.get("options", {})}
    if set(options) - {"disableNameSuffixHash"} or options.get("disableNameSuffixHash") is not True:
        raise KustomizeError(
            f"configMapGenerator {generator['name']}: only disableNameSuffixHash: true is "
            "implemented (and the gateway's hot reload needs it)"
        )
    data: dict[str, str] = {}
    for entry in generator.get("files", []):
        key, _, source = entry.partition("=") if "=" in entry else (Path(entry).name, "", entry)
        data[key] = (directory / source).read_text(encoding="utf-8")
    for literal in generator.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    behavior = generator.get("behavior", "create")
    existing = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == generator["name"]
    ]
    if behavior == "create":
        if existing:
            raise KustomizeError(
                f"ConfigMap {generator['name']} exists: use behavior merge/replace"
            )
        objects.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}}
            | {"data": data}
        )
        return
    if len(existing) != 1:
        raise KustomizeError(f"behavior {behavior}: no ConfigMap {generator['name']} to {behavior}")
    if behavior == "replace":
        existing[0]["data"] = data
    elif behavior == "merge":
        existing[0].setdefault("data", {}).update(data)
    else:
        raise KustomizeError(f"unknown behavior {behavior!r}")


def _apply_patch(directory: Path, spec: Obj, objects: list[Obj]) -> None:
    unknown = set(spec) - {"path", "patch", "target"}
    if unknown:
        raise KustomizeError(f"patch options {sorted(unknown)} are not implemented")
    text = (
        (directory / spec["path"]).read_text(encoding="utf-8") if "path" in spec else spec["patch"]
    )
    patch = yaml.safe_load(text)
    target = dict(spec.get("target", {}))
    if isinstance(patch, list):
        if not target:
            raise KustomizeError("a JSON 6902 patch needs a target")
        for obj in _select(objects, target):
            for operation in patch:
                _json_patch(obj, operation)
        return
    if not target:
        api_version = patch["apiVersion"]
        group, _, version = api_version.rpartition("/")
        target = {
            "group": group,
            "version": version,
            "kind": patch["kind"],
            "name": patch["metadata"]["name"],
        }
    for obj in _select(objects, target):
        merged = strategic_merge(obj, {k: v for k, v in patch.items() if k != "metadata"})
        merged["metadata"] = strategic_merge(obj["metadata"], _patch_metadata(patch))
        obj.clear()
        obj.update(merged)


def _patch_metadata(patch: Obj) -> Obj:
    metadata = dict(patch.get("metadata", {}))
    metadata.pop("name", None)
    metadata.pop("namespace", None)
    return metadata


def _select(objects: list[Obj], target: Obj) -> list[Obj]:
    unknown = set(target) - {"group", "version", "kind", "name", "namespace"}
    if unknown:
        raise KustomizeError(f"target selectors {sorted(unknown)} are not implemented")
    found = []
    for obj in objects:
        group, _, version = obj["apiVersion"].rpartition("/")
        actual = {
            "group": group,
            "version": version,
            "kind": obj["kind"],
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"].get("namespace"),
        }
        if all(actual[key] == value for key, value in target.items()):
            found.append(obj)
    if not found:
        raise KustomizeError(f"patch target {target} matches nothing")
    return found


def strategic_merge(original: Any, patch: Any, field: str = "") -> Any:
    """Kubernetes strategic merge of `patch` into `original` (returns a new value)."""
    if isinstance(patch, dict) and isinstance(original, dict):
        result = copy.deepcopy(original)
        for key, value in patch.items():
            if key.startswith("$"):
                raise KustomizeError(f"patch directive {key} is not implemented")
            if value is None:
                result.pop(key, None)
            elif key in result:
                result[key] = strategic_merge(result[key], value, key)
            else:
                result[key] = copy.deepcopy(value)
        return result
    if isinstance(patch, list) and isinstance(original, list) and field in MERGE_KEYS:
        # kustomize (kyaml) lists the patch's items first, in the patch's order (each merged
        # into the original item of the same key, if any), then the original's other items.
        merge_key = MERGE_KEYS[field]
        by_key = {old.get(merge_key): old for old in original}
        patched = [
            strategic_merge(by_key[item[merge_key]], item, "")
            if item[merge_key] in by_key
            else copy.deepcopy(item)
            for item in patch
            if not _deletes(item, merge_key)
        ]
        keys = {item[merge_key] for item in patch}
        return patched + [copy.deepcopy(old) for old in original if old.get(merge_key) not in keys]
    return copy.deepcopy(patch)


def _deletes(item: Obj, merge_key: str) -> bool:
    """Whether a merge-keyed list's patch item is `{$patch: delete, KEY: VALUE}`."""
    if "$patch" not in item:
        return False
    if item["$patch"] != "delete" or set(item) != {"$patch", merge_key}:
        raise KustomizeError(f"patch directive {item} is not implemented")
    return True


def _json_patch(obj: Obj, operation: Obj) -> None:
    op, path = operation["op"], operation["path"]
    *parents, last = [
        part.replace("~1", "/").replace("~0", "~") for part in path.lstrip("/").split("/")
    ]
    container: Any = obj
    for part in parents:
        container = container[int(part)] if isinstance(container, list) else container[part]
    if op == "test":
        current = container[int(last)] if isinstance(container, list) else container[last]
        if current != operation["value"]:
            raise KustomizeError(f"test failed at {path}: {current!r} != {operation['value']!r}")
    elif op == "remove":
        del container[int(last) if isinstance(container, list) else last]
    elif op in ("add", "replace"):
        value = copy.deepcopy(operation["value"])
        if isinstance(container, list):
            if last == "-":
                container.append(value)
            elif op == "add":
                container.insert(int(last), value)
            else:
                container[int(last)] = value
        else:
            if op == "replace" and last not in container:
                raise KustomizeError(f"replace: {path} does not exist")
            container[last] = value
    else:
        raise KustomizeError(f"JSON patch op {op!r} is not implemented")


def _add_labels(label_set: Obj, objects: list[Obj]) -> None:
    unknown = set(label_set) - {"pairs", "includeSelectors", "includeTemplates"}
    if unknown or label_set.get("includeSelectors", False):
        raise KustomizeError("labels: only pairs with includeSelectors: false are implemented")
    pairs = label_set["pairs"]
    for obj in objects:
        obj["metadata"].setdefault("labels", {}).update(pairs)
        if label_set.get("includeTemplates") and obj["kind"] in WORKLOADS_WITH_TEMPLATES:
            template = obj["spec"]["template"].setdefault("metadata", {})
            template.setdefault("labels", {}).update(pairs)


def _set_image(image: Obj, objects: list[Obj]) -> None:
    unknown = set(image) - {"name", "newName", "newTag", "digest"}
    if unknown:
        raise KustomizeError(f"images: {sorted(unknown)} are not implemented")
    for obj in objects:
        if obj["kind"] not in WORKLOADS_WITH_TEMPLATES:
            continue
        spec = obj["spec"]["template"]["spec"]
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            name, tag = _split_image(container["image"])
            if name != image["name"]:
                continue
            name = image.get("newName", name)
            if "digest" in image:
                tag = "@" + image["digest"]
            elif "newTag" in image:
                tag = f":{image['newTag']}"
            container["image"] = name + tag


def _split_image(reference: str) -> tuple[str, str]:
    """('registry/name', ':tag' or '@digest' or '')."""
    if "@" in reference:
        name, _, digest = reference.partition("@")
        return name, "@" + digest
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon > slash:
        return reference[:colon], reference[colon:]
    return reference, ""


def _check_unique(objects: list[Obj]) -> None:
    seen: set[tuple[str, str, str | None]] = set()
    for obj in objects:
        key = (obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace"))
        if key in seen:
            raise KustomizeError(f"two objects {key}")
        seen.add(key)
