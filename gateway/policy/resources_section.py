"""Reads a policy file's `resources` section into a Hierarchy: folders and organizations above
projects, project numbers, and tag bindings, pasted as gcloud prints them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.policy.hierarchy import EMPTY_HIERARCHY, Hierarchy, TagValue
from gateway.sourcefile import LineMap

if TYPE_CHECKING:
    from gateway.policy.loader import _Loader

# What `gcloud projects describe`, `gcloud resource-manager folders describe` and
# `gcloud organizations describe` print beside the keys read here: accepted, unused.
_DESCRIBE_KEYS = (
    "createTime",
    "updateTime",
    "deleteTime",
    "creationTime",
    "lifecycleState",
    "state",
    "labels",
    "etag",
    "owner",
    "directoryCustomerId",
)
RESOURCE_KEYS = (
    "resource",
    "name",
    "projectId",
    "projectNumber",
    "parent",
    "displayName",
    "tags",
    *_DESCRIBE_KEYS,
)
# A TagBinding (`gcloud resource-manager tags bindings list`) or an EffectiveTag (the same with
# --effective) as gcloud prints them.
TAG_KEYS = (
    "tagValue",
    "tagValueNamespacedName",
    "namespacedTagValue",
    "tagKey",
    "namespacedTagKey",
    "tagKeyParentName",
    "inherited",
    "name",
    "parent",
)
RESOURCES_HINT = (
    "each entry is a resource (resource: folders/N, organizations/N, projects/ID or a service "
    "resource) or gcloud's describe output of a project, folder or organization"
)

_NUMBER = re.compile(r"[0-9]+")
_PROJECT_ID = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]|[a-z][a-z0-9.:-]*[a-z0-9]")
_CONTAINER = re.compile(r"(?:folders|organizations)/[0-9]+")
_CRM = "//cloudresourcemanager.googleapis.com/"
_PARENT_TYPES = {"folder": "folders", "organization": "organizations"}
_NAMESPACED_VALUE = re.compile(r"([^/\s]+)/([^/\s]+)/([^/\s]+)")
_NAMESPACED_KEY = re.compile(r"[^/\s]+/[^/\s]+")
_KEY_ID = re.compile(r"tagKeys/[0-9]+")
_VALUE_ID = re.compile(r"tagValues/[0-9]+")


@dataclass
class _Declared:
    """One entry, read: the name it declares and what it says."""

    name: str
    line: int | None
    path: str
    number: str | None = None
    parent: str | None = None
    tags: list[tuple[LineMap, str]] = field(default_factory=list)


def read_resources(loader: _Loader, top: LineMap) -> Hierarchy:
    """The Hierarchy the section declares; problems are reported through `loader`."""
    entries = loader.items(top, "resources", "")
    if not entries:
        return EMPTY_HIERARCHY
    declared: list[_Declared] = []
    for item, path, line in entries:
        spec = loader.mapping(item, path, line)
        if spec is not None:
            found = _entry(loader, spec, path)
            if found is not None:
                declared.append(found)
    numbers = _numbers(loader, declared)
    project_ids = {number: project for project, number in numbers.items()}
    canonical = Hierarchy(project_ids=project_ids).canonical
    parents: dict[str, str] = {}
    lines: dict[str, int | None] = {}
    tags: dict[str, tuple[TagValue, ...]] = {}
    for entry in declared:
        name = canonical(entry.name)
        if name in lines:
            loader.add(entry.path, f"'{name}' is declared twice", entry.line)
            continue
        lines[name] = entry.line
        if entry.parent is not None:
            parents[name] = entry.parent
        values = _tags(loader, entry, numbers, project_ids)
        if values:
            tags[name] = values
    ancestors = _ancestors(loader, parents, lines)
    aliases = {
        f"{numbers[t.key_name.partition('/')[0]]}/{t.key_name.partition('/')[2]}": t.key_name
        for values in tags.values()
        for t in values
        if t.key_name is not None and t.key_name.partition("/")[0] in numbers
    }
    return Hierarchy(ancestors, project_ids, numbers, tags, lines, aliases)


def _entry(loader: _Loader, spec: LineMap, path: str) -> _Declared | None:
    loader.check_keys(spec, RESOURCE_KEYS, path)
    project_id = loader.string(spec, "projectId", path)
    written = loader.string(spec, "resource", path)
    name = loader.string(spec, "name", path)
    number = _number(loader, spec, path)
    if project_id is not None:
        if not _PROJECT_ID.fullmatch(project_id):
            loader.add(
                f"{path}.projectId",
                f"'{project_id}' is not a project id",
                spec.line_of("projectId"),
                "project ids start with a lower-case letter; a number is the projectNumber",
            )
            return None
        resource = f"projects/{project_id}"
        if name is not None and name.startswith("projects/"):
            # Resource Manager v3 names a project by number and gives its id beside.
            named = name[len("projects/") :]
            if _NUMBER.fullmatch(named) and number not in (None, named):
                loader.add(
                    f"{path}.name", f"'{name}' and projectNumber disagree", spec.line_of("name")
                )
                return None
            number = number or (named if _NUMBER.fullmatch(named) else None)
    elif written is not None:
        found = _resource_name(loader, written)
        if found is None:
            loader.add(
                f"{path}.resource",
                f"'{written}' is not a resource",
                spec.line_of("resource"),
                RESOURCES_HINT,
            )
            return None
        resource = found
    elif name is not None and _CONTAINER.fullmatch(name):
        resource = name
    else:
        loader.add(path, "names no resource", spec.line, RESOURCES_HINT)
        return None
    if number is not None and not resource.startswith("projects/"):
        loader.add(f"{path}.projectNumber", "only projects have numbers", spec.line)
        number = None
    parent = _parent(loader, spec, path, resource)
    entry = _Declared(resource, spec.line, path, number, parent)
    for item, tag_path, line in loader.items(spec, "tags", path):
        tag = loader.mapping(item, tag_path, line)
        if tag is not None:
            entry.tags.append((tag, tag_path))
    return entry


def _resource_name(loader: _Loader, text: str) -> str | None:
    if text.startswith(_CRM) and _CONTAINER.fullmatch(text[len(_CRM) :]):
        return text[len(_CRM) :]
    return loader.normalized(text)


def _number(loader: _Loader, spec: LineMap, path: str) -> str | None:
    value = spec.get("projectNumber")
    if value is None:
        return None
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not _NUMBER.fullmatch(text):
        loader.add(
            f"{path}.projectNumber",
            f"must be the project's number, got {value!r}",
            spec.line_of("projectNumber"),
        )
        return None
    return text


def _parent(loader: _Loader, spec: LineMap, path: str, resource: str) -> str | None:
    value = spec.get("parent")
    if value is None:
        return None
    line = spec.line_of("parent")
    parent: str | None = None
    if isinstance(value, str):
        text = value[len(_CRM) :] if value.startswith(_CRM) else value
        parent = text if _CONTAINER.fullmatch(text) else None
    elif isinstance(value, Mapping):
        # Resource Manager v1 (gcloud projects describe): {type: folder, id: '123'}.
        kind, ident = value.get("type"), value.get("id")
        ident = str(ident) if isinstance(ident, int) else ident
        if kind in _PARENT_TYPES and isinstance(ident, str) and _NUMBER.fullmatch(ident):
            parent = f"{_PARENT_TYPES[kind]}/{ident}"
    if parent is None:
        loader.add(
            f"{path}.parent",
            f"{value!r} is not a folder or organization",
            line,
            "write folders/N or organizations/N (or gcloud's {type: folder, id: 'N'})",
        )
        return None
    if resource.startswith("organizations/") or resource.count("/") > 1:
        loader.add(
            f"{path}.parent",
            f"'{resource}' cannot have a parent here",
            line,
            "only projects and folders have parents; a service resource's ancestors are in "
            "its name",
        )
        return None
    return parent


def _numbers(loader: _Loader, declared: list[_Declared]) -> dict[str, str]:
    """project id -> number; each number names one project."""
    numbers: dict[str, str] = {}
    owner: dict[str, str] = {}
    for entry in declared:
        if entry.number is None:
            continue
        project = entry.name.split("/")[1]
        if entry.number in owner and owner[entry.number] != project:
            loader.add(
                entry.path,
                f"project number {entry.number} is also declared for projects/"
                f"{owner[entry.number]}",
                entry.line,
            )
            continue
        owner[entry.number] = project
        numbers[project] = entry.number
    return numbers


def _tags(
    loader: _Loader,
    entry: _Declared,
    numbers: Mapping[str, str],
    project_ids: Mapping[str, str],
) -> tuple[TagValue, ...]:
    found: list[TagValue] = []
    for spec, path in entry.tags:
        tag = _tag(loader, spec, path, project_ids)
        if tag is None:
            continue
        if any(tag.same_key(other) for other in found):
            loader.add(path, f"'{entry.name}' has two values of the key of {tag.shown}", spec.line)
            continue
        found.append(tag)
    return tuple(found)


def _tag(
    loader: _Loader, spec: LineMap, path: str, project_ids: Mapping[str, str]
) -> TagValue | None:
    loader.check_keys(spec, TAG_KEYS, path)
    named = loader.string(spec, "tagValueNamespacedName", path) or loader.string(
        spec, "namespacedTagValue", path
    )
    key_named = loader.string(spec, "namespacedTagKey", path)
    value_id = loader.string(spec, "tagValue", path)
    key_id = loader.string(spec, "tagKey", path)
    problems = False
    key_name = value = None
    if named is not None:
        parts = _NAMESPACED_VALUE.fullmatch(named)
        if parts is None:
            loader.add(path, f"'{named}' is not a namespaced tag value", spec.line, _TAG_HINT)
            problems = True
        else:
            namespace = project_ids.get(parts[1], parts[1])
            key_name, value = f"{namespace}/{parts[2]}", parts[3]
            if key_named is not None and _canonical_key(key_named, project_ids) != key_name:
                loader.add(path, f"'{key_named}' is not the key of '{named}'", spec.line)
                problems = True
    elif key_named is not None and not _NAMESPACED_KEY.fullmatch(key_named):
        problems = True
        loader.add(path, f"'{key_named}' is not a namespaced tag key", spec.line, _TAG_HINT)
    for text, syntax, what in (
        (value_id, _VALUE_ID, "tagValues/N"),
        (key_id, _KEY_ID, "tagKeys/N"),
    ):
        if text is not None and not syntax.fullmatch(text):
            loader.add(path, f"'{text}' is not {what}", spec.line, _TAG_HINT)
            problems = True
    if problems:
        return None
    if named is None and (value_id is None or key_id is None):
        loader.add(
            path,
            "a tag binding names its value by namespacedTagValue (ORG_OR_PROJECT/KEY/VALUE) "
            "or by tagValue and tagKey ids",
            spec.line,
            _TAG_HINT,
        )
        return None
    return TagValue(key_name, value, key_id, value_id, spec.line)


_TAG_HINT = (
    "paste the output of gcloud resource-manager tags bindings list --effective, e.g. "
    "{namespacedTagValue: 123456789012/env/prod, tagValue: tagValues/456, tagKey: tagKeys/789}"
)


def _canonical_key(key_name: str, project_ids: Mapping[str, str]) -> str:
    namespace, _, short = key_name.partition("/")
    return f"{project_ids.get(namespace, namespace)}/{short}"


def _ancestors(
    loader: _Loader, parents: Mapping[str, str], lines: Mapping[str, int | None]
) -> dict[str, tuple[str, ...]]:
    """Every declared project's and folder's ancestors, root first; cycles reported."""
    found: dict[str, tuple[str, ...]] = {}
    for start in parents:
        chain: list[str] = []
        seen = {start}
        current = parents.get(start)
        while current is not None:
            if current in seen:
                loader.add(
                    "resources",
                    f"'{start}' is its own ancestor: " + " -> ".join([start, *chain, current]),
                    lines.get(start),
                    "a folder cannot contain itself",
                )
                chain = []
                break
            seen.add(current)
            chain.append(current)
            current = parents.get(current)
        found[start] = tuple(reversed(chain))
    return found
