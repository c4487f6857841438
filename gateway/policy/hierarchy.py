"""The resource hierarchy a policy declares: ancestors, project numbers, tags. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

_FULL_NAME_PREFIX = "//"
_PROJECTS = "projects/"


def resource_chain(resource: str) -> tuple[str, ...]:
    """The resource and its ancestors in its own name, root first: every prefix ending at an id.

    "projects/p/locations/l/operations/o" gives projects/p, projects/p/locations/l and itself.
    A full name (//SERVICE/projects/...) is read as its relative name. Folders and organizations
    above a project are not in a name; Hierarchy.chain adds them.
    """
    if resource.startswith(_FULL_NAME_PREFIX):
        slash = resource.find("/", 2)
        resource = resource[slash + 1 :] if slash > 0 else ""
    if _has_unusable_segment(resource):
        # Empty, "." and ".." segments would let a name borrow an ancestor it does not have
        # (".../operations/op1/../op2"); such a name has no ancestors, so only default deny.
        return ()
    chain: list[str] = []
    count = 0
    position = resource.find("/")
    while position >= 0:
        count += 1
        if count % 2 == 0:
            chain.append(resource[:position])
        position = resource.find("/", position + 1)
    if count % 2 == 1:
        chain.append(resource)
    return tuple(chain)


def _has_unusable_segment(resource: str) -> bool:
    # The substring tests are cheap and almost always false; only then split.
    suspicious = (
        "//" in resource
        or "/." in resource
        or resource.startswith(("/", "."))
        or resource.endswith("/")
    )
    return suspicious and any(part in ("", ".", "..") for part in resource.split("/"))


@dataclass(frozen=True, slots=True)
class TagValue:
    """One tag bound to a resource, as Google names it: by namespaced name, by id, or both.

    `key_name` is the namespaced key (ORG_ID/env or PROJECT_ID/env), `value` the value's short
    name (prod); `key_id` and `value_id` are tagKeys/N and tagValues/N.
    """

    key_name: str | None
    value: str | None
    key_id: str | None
    value_id: str | None
    source_line: int | None = None

    def same_key(self, other: TagValue) -> bool:
        return (self.key_id is not None and self.key_id == other.key_id) or (
            self.key_name is not None and self.key_name == other.key_name
        )

    @property
    def shown(self) -> str:
        if self.key_name is not None:
            return f"{self.key_name}/{self.value}"
        return f"{self.key_id}={self.value_id}"


@dataclass(frozen=True, slots=True)
class EffectiveTags:
    """The tags a resource carries: its own and those it inherits, a child's value of a key
    replacing its ancestor's. What resource.matchTag() and its kin read."""

    values: tuple[TagValue, ...] = ()
    # Namespaced key spellings: a project-scoped key may be written with the project's number.
    aliases: Mapping[str, str] = field(default_factory=dict)

    def _key(self, key_name: str) -> str:
        return self.aliases.get(key_name, key_name)

    def match(self, key_name: str, value: str) -> bool:
        key = self._key(key_name)
        return any(t.key_name == key and t.value == value for t in self.values)

    def match_id(self, key_id: str, value_id: str) -> bool:
        return any(t.key_id == key_id and t.value_id == value_id for t in self.values)

    def has_key(self, key_name: str) -> bool:
        key = self._key(key_name)
        return any(t.key_name == key for t in self.values)

    def has_key_id(self, key_id: str) -> bool:
        return any(t.key_id == key_id for t in self.values)


NO_TAGS = EffectiveTags()


@dataclass(frozen=True, slots=True, eq=False)
class Hierarchy:
    """What a request's name does not say: a project's folders and organization, which number
    names which project, and the tags bound anywhere. Empty for a policy without `resources`."""

    ancestors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # root first
    project_ids: Mapping[str, str] = field(default_factory=dict)  # number -> project id
    project_numbers: Mapping[str, str] = field(default_factory=dict)  # project id -> number
    tags: Mapping[str, tuple[TagValue, ...]] = field(default_factory=dict)  # resource -> own
    lines: Mapping[str, int | None] = field(default_factory=dict)  # resource -> declared at
    # NUMBER/key -> PROJECT_ID/key: a project-scoped tag key written with the project's number.
    key_aliases: Mapping[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.ancestors or self.project_ids or self.tags)

    def canonical(self, name: str) -> str:
        """The name with a project number written as the project's id, where one is declared."""
        if not self.project_ids or not name.startswith(_PROJECTS):
            return name
        project, slash, rest = name[len(_PROJECTS) :].partition("/")
        found = self.project_ids.get(project)
        if found is None:
            return name
        return f"{_PROJECTS}{found}{slash}{rest}"

    def chain(self, resource: str) -> tuple[str, ...]:
        """resource_chain(resource) by project id, below the project's folders and organization."""
        chain = resource_chain(resource)
        if not chain or self.empty:
            return chain
        top = chain[0]
        canonical = self.canonical(top)
        if canonical != top:
            cut = len(top)
            chain = tuple(canonical + level[cut:] for level in chain)
        above = self.ancestors.get(canonical)
        return above + chain if above else chain

    def effective_tags(self, chain: tuple[str, ...]) -> EffectiveTags:
        """The tags of the last resource in `chain` (root first), inherited as Google's are."""
        if not self.tags:
            return NO_TAGS
        found: list[TagValue] = []
        for level in chain:
            for tag in self.tags.get(level, ()):
                found = [t for t in found if not t.same_key(tag)]
                found.append(tag)
        return EffectiveTags(tuple(found), self.key_aliases) if found else NO_TAGS


EMPTY_HIERARCHY = Hierarchy()
