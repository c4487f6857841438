"""Reads a policy file (YAML or JSON, in Google IAM's shape) into a Policy, with every problem."""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from gateway.policy.cel import CompiledCondition, ConditionError, compile_condition
from gateway.policy.exports import deny_attachment, read_audit_configs, unknown_role
from gateway.policy.hierarchy import EMPTY_HIERARCHY, Hierarchy
from gateway.policy.index import build_index
from gateway.policy.members import (
    MEMBER_FORMS_HINT,
    Member,
    ParsedMember,
    canonical_identity,
    escaped,
    is_email,
    unresolvable_principal,
)
from gateway.policy.members import parse_member as _parse_member
from gateway.policy.model import (
    AuditConfig,
    Binding,
    Condition,
    DenyRule,
    Group,
    Policy,
    PolicyNote,
)
from gateway.policy.resources_section import read_resources
from gateway.policy.roles import (
    PermissionPattern,
    PermissionSet,
    Role,
    parse_permission,
    predefined_permissions,
    predefined_roles,
    to_fqdn_spelling,
)
from gateway.resource_names import name_problem
from gateway.sourcefile import LineMap, load_json_or_yaml_text

TOP_KEYS = ("allow", "deny", "roles", "groups", "resources", "etag", "description")
# An allow policy as `gcloud ... get-iam-policy` prints it: its keys beside `resource`, or the
# whole output unchanged under `policy`.
EXPORT_KEYS = ("bindings", "etag", "version", "auditConfigs")
ALLOW_KEYS = ("resource", "policy", *EXPORT_KEYS)
POLICY_VERSIONS = (1, 2, 3)
BINDING_KEYS = ("role", "members", "condition")
CONDITION_KEYS = ("expression", "title", "description", "location")
# Everything but `resource` and `rules` is what Google's deny policy export carries alongside.
DENY_KEYS = (
    "resource",
    "rules",
    "name",
    "displayName",
    "etag",
    "uid",
    "kind",
    "createTime",
    "updateTime",
    "deleteTime",
    "annotations",
    "managingAuthority",
)
RULE_KEYS = (
    "deniedPrincipals",
    "exceptionPrincipals",
    "deniedPermissions",
    "exceptionPermissions",
    "denialCondition",
    "description",
)
WRAPPED_RULE_KEYS = ("denyRule", "description")
# A binding with only these keys may take the quick way (see _Loader.quick_binding).
_PLAIN_BINDING = frozenset(("role", "members"))
ROLE_KEYS = ("name", "title", "description", "includedPermissions", "stage", "etag", "deleted")

# Every syntax here is checked with fullmatch: `$` also matches before a trailing newline.
_ID = r"[^/\s*]+"
_RESOURCE = re.compile(
    rf"projects/{_ID}(?:/locations/{_ID}(?:/operations/{_ID}"
    rf"|/authorizedViewSets/{_ID}(?:/authorizedViews/{_ID}(?:/operations/{_ID})?)?)?)?"
)
_SERVICE_PREFIX = "//contactcenterinsights.googleapis.com/"
_CRM_NAME = re.compile(
    rf"//cloudresourcemanager\.googleapis\.com/(projects/{_ID}|(?:folders|organizations)/[0-9]+)"
)
_CONTAINER = re.compile(r"(?:folders|organizations)/[0-9]+")
_CUSTOM_ROLE = re.compile(r"(?:projects/[^/\s]+|organizations/[0-9]+)/roles/[A-Za-z0-9_.]{3,64}")
# IAM's Role.stage values; DISABLED is the one that changes what a role grants.
ROLE_STAGES = ("ALPHA", "BETA", "GA", "DEPRECATED", "DISABLED", "EAP")
RESOURCE_HINT = (
    "resources are organizations/N, folders/N, projects/P, projects/P/locations/L, "
    ".../locations/L/operations/O, "
    ".../locations/L/authorizedViewSets/S, .../authorizedViewSets/S/authorizedViews/V "
    "or .../authorizedViews/V/operations/O"
)
# Group members are identities a group can contain; domains and public sets are not.
_GROUP_MEMBER_KINDS = ("user", "serviceAccount", "group", "deleted")


@dataclass(frozen=True, slots=True)
class PolicyProblem:
    """One thing wrong with a policy file, where it is, and how to fix it."""

    source: str
    line: int | None
    key: str | None
    problem: str
    hint: str = ""

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        subject = f"key '{self.key}': " if self.key else ""
        hint = f"; {self.hint}" if self.hint else ""
        return f"{where}: {subject}{self.problem}{hint}"


class PolicyError(ConfigError):
    """A policy file has problems; `problems` lists all of them, in file order."""

    reason = "POLICY_INVALID"

    def __init__(self, problems: tuple[PolicyProblem, ...]) -> None:
        first = problems[0]
        super().__init__(first.source, first.key, first.problem, first.line)
        self.problems = problems

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return str(self.problems[0])
        lines = [f"{self.source}: {len(self.problems)} problems"]
        lines.extend(str(problem) for problem in self.problems)
        return "\n".join(lines)


def load_policy(path: Path, known_permissions: frozenset[str] = frozenset()) -> Policy:
    """Read, validate and index a policy file; raises PolicyError listing every problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problem = PolicyProblem(str(path), None, None, f"cannot be read: {exc.strerror or exc}")
        raise PolicyError((problem,)) from exc
    except UnicodeDecodeError as exc:
        problem = PolicyProblem(str(path), None, None, "is not UTF-8 text")
        raise PolicyError((problem,)) from exc
    return load_policy_text(text, str(path), known_permissions)


def load_policy_text(
    text: str, source: str, known_permissions: frozenset[str] = frozenset()
) -> Policy:
    """As load_policy, from text; `source` names the file in messages.

    Loading allocates millions of objects: callers loading large files pause the garbage
    collector around it (gateway.runtime.collector_paused), as the gateway does."""
    try:
        data = parse_policy_text(text, source)
    except ConfigError as exc:
        # One error type for callers: every load failure carries `problems`.
        problem = PolicyProblem(exc.source, exc.line, exc.key, exc.problem)
        raise PolicyError((problem,)) from exc
    return _Loader(source, text, known_permissions).load(data)


def parse_policy_text(text: str, source: str) -> Any:
    """YAML or JSON into LineMaps, by sourcefile's readers (JSON by a quicker reader of its own)."""
    return load_json_or_yaml_text(text, source)


def content_etag(data: Any) -> str:
    """sha256 of the canonical content: same policy, same etag, whatever its layout."""
    canonical = json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def normalize_resource(text: str) -> str | None:
    """The relative name of a policy resource, or None if it is not one of the hierarchy forms."""
    if text.startswith(_SERVICE_PREFIX):
        text = text[len(_SERVICE_PREFIX) :]
    else:
        match = _CRM_NAME.fullmatch(text)
        if match:
            text = match.group(1)
    if _CONTAINER.fullmatch(text):
        return text
    # A name a request could never carry (control or invisible characters, percent-encoding)
    # would make the binding or deny rule silently apply to nothing.
    if not _RESOURCE.fullmatch(text) or name_problem(text) is not None:
        return None
    # '-' means "any" in Google's list calls; in a policy it would silently name nothing real,
    # and '.' or '..' would name something no request can reach.
    if any(part in ("-", ".", "..") for part in text.split("/")[1::2]):
        return None
    return text


def _suggestion(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Loader:
    """Walks the parsed file once, collecting problems instead of stopping at the first."""

    def __init__(self, source: str, text: str, known_permissions: frozenset[str]) -> None:
        self.source = source
        self.text = text
        self._lines: list[str] | None = None
        self.problems: list[PolicyProblem] = []
        self.predefined = predefined_roles()
        extra = frozenset(p for perm in known_permissions if (p := _dotted(perm)))
        self.known = predefined_permissions() | extra
        # Permissions of other services are legal (custom roles and deny policies carry them)
        # but grant and deny nothing here; a misspelt permission of these services is an error.
        self.services = frozenset(p.partition(".")[0] for p in self.known)
        self.hierarchy: Hierarchy = EMPTY_HIERARCHY
        self.notes: list[PolicyNote] = []
        self.audit_configs: dict[str, list[AuditConfig]] = {}
        self.foreign_roles: dict[str, Role] = {}  # roles of other services met in bindings
        self.roles: dict[str, Role] = dict(self.predefined)
        self.broken_roles: set[str] = set()
        self.member_cache: dict[str, ParsedMember] = {}
        self.resource_cache: dict[str, str | None] = {}
        self.compiled: dict[tuple[str, str], CompiledCondition | ConditionError] = {}
        # id() of a mapping -> the keys it misspelt; the mappings live as long as the load.
        self.misspelt: dict[int, set[str]] = {}

    # -- problems -----------------------------------------------------------------------------

    def add(self, key: str | None, problem: str, line: int | None, hint: str = "") -> None:
        self.problems.append(PolicyProblem(self.source, line, key, problem, hint))

    def note(self, line: int | None, kind: str, message: str, hint: str = "") -> None:
        """Something legal that does less than it seems: a warning for `policy check`."""
        self.notes.append(PolicyNote(line, kind, message, hint))

    def locate(self, value: str, start: int | None) -> int | None:
        """The line of a list item: lists carry no lines, so find the text at or after its key.
        A value spread over lines (a block scalar) is found by its first non-blank line."""
        needle = next((part.strip() for part in value.splitlines() if part.strip()), "")
        if start is None or not needle:
            return start
        if self._lines is None:
            self._lines = self.text.splitlines()
        for number in range(start - 1, min(len(self._lines), start + 1000)):
            if needle in self._lines[number]:
                return number + 1
        return start

    # -- shapes -------------------------------------------------------------------------------

    def mapping(self, value: Any, key: str, line: int | None) -> LineMap | None:
        if isinstance(value, LineMap):
            return value
        self.add(key or None, f"must be a mapping, got {_shown(value)}", line)
        return None

    def check_keys(self, data: LineMap, allowed: tuple[str, ...], path: str) -> None:
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                if close:
                    # The misspelt key is the problem; do not also call the real one missing.
                    self.misspelt.setdefault(id(data), set()).add(close[0])
                self.add(
                    _join(path, key),
                    f"unknown key (did you mean '{close[0]}'?)" if close else "unknown key",
                    data.line_of(key),
                    f"allowed here: {', '.join(allowed)}",
                )

    def missing(self, data: LineMap, key: str, path: str) -> None:
        if key not in self.misspelt.get(id(data), ()):
            self.add(_join(path, key), "is required", data.line)

    def items(self, data: LineMap, key: str, path: str) -> list[tuple[Any, str, int | None]]:
        """The items of an optional list under `key`, with their paths and lines."""
        value = data.get(key)
        if value is None:
            return []
        line = data.line_of(key)
        if not isinstance(value, list):
            self.add(_join(path, key), f"must be a list, got {_shown(value)}", line)
            return []
        prefix = _join(path, key)
        return [
            (item, f"{prefix}[{i}]", item.line if isinstance(item, LineMap) else line)
            for i, item in enumerate(value)
        ]

    def strings(
        self, data: LineMap, key: str, path: str, *, required: bool
    ) -> list[tuple[str, str, int | None]]:
        """A list of strings under `key`; each with its path and (best-effort) line."""
        if key not in data or data[key] is None:
            if required:
                self.missing(data, key, path)
            return []
        line = data.line_of(key)
        value = data[key]
        if not isinstance(value, list):
            self.add(_join(path, key), f"must be a list of strings, got {_shown(value)}", line)
            return []
        if required and not value:
            self.add(_join(path, key), "must not be empty", line)
            return []
        found: list[tuple[str, str, int | None]] = []
        for i, item in enumerate(value):
            item_path = f"{_join(path, key)}[{i}]"
            if isinstance(item, str):
                found.append((item, item_path, line))
            else:
                self.add(item_path, f"must be a string, got {_shown(item)}", line)
        return found

    def string(self, data: LineMap, key: str, path: str, *, required: bool = False) -> str | None:
        value = data.get(key)
        if value is None:
            if required:
                self.missing(data, key, path)
            return None
        if not isinstance(value, str):
            self.add(_join(path, key), f"must be a string, got {_shown(value)}", data.line_of(key))
            return None
        return value

    # -- parts --------------------------------------------------------------------------------

    def normalized(self, text: str) -> str | None:
        """normalize_resource, once per distinct text: the same resources stand in many entries."""
        if text in self.resource_cache:
            return self.resource_cache[text]
        found = self.resource_cache[text] = normalize_resource(text)
        return found

    def resource(self, data: LineMap, path: str, *, required: bool = True) -> str | None:
        """The entry's resource, a project named by number written by its id (see resources)."""
        text = self.string(data, "resource", path, required=required)
        if text is None:
            return None
        return self.resource_text(text, _join(path, "resource"), data.line_of("resource"))

    def resource_text(self, text: str, key: str, line: int | None) -> str | None:
        normalized = self.normalized(text)
        if normalized is None:
            self.add(
                key, f"'{text}' is not a resource this gateway authorizes", line, RESOURCE_HINT
            )
            return None
        return self.hierarchy.canonical(normalized)

    def parsed_member(self, text: str) -> ParsedMember:
        """Each member string is parsed once: the same members stand in many bindings."""
        parsed = self.member_cache.get(text)
        if parsed is None:
            parsed = self.member_cache[text] = _parse_member(text)
        return parsed

    def member(
        self, text: str, path: str, line: int | None, matching_none_is_safe: bool = True
    ) -> Member | None:
        parsed = self.parsed_member(text)
        if parsed.problem is not None:
            if unresolvable_principal(text):
                return self.unresolvable(text, path, line, matching_none_is_safe)
            self.add(path, parsed.problem, self.locate(text, line), MEMBER_FORMS_HINT)
        return parsed.member

    def unresolvable(self, text: str, path: str, line: int | None, safe: bool) -> Member | None:
        """A principal set no caller can be shown to be in: kept, matching nobody, where that
        only narrows access (a grant, an exception, an exemption); refused where it would
        narrow a denial, which must fail closed."""
        where = self.locate(text, line)
        if safe:
            self.note(
                where,
                "member-matches-nothing",
                f"{text} is a principal set opsgate cannot resolve: it matches no caller here",
                "name its callers as user:, group:, domain: or principal:// members",
            )
            return Member(text, None)
        self.add(
            path,
            f"'{text}' is a principal set opsgate cannot resolve, so it cannot deny it",
            where,
            "deny its callers by user:, group:, domain: or principalSet://goog/group/ members",
        )
        return None

    def members(
        self,
        data: LineMap,
        key: str,
        path: str,
        *,
        required: bool,
        matching_none_is_safe: bool = True,
    ) -> tuple[Member, ...] | None:
        """The members under `key`, or None if any is malformed (already reported)."""
        found: list[Member] = []
        ok = True
        for text, item_path, line in self.strings(data, key, path, required=required):
            member = self.member(text, item_path, line, matching_none_is_safe)
            if member is None:
                ok = False
            else:
                found.append(member)
        return tuple(found) if ok else None

    def condition(self, data: LineMap, key: str, path: str) -> Condition | bool | None:
        """The condition under `key`: None if absent, False if it has problems (reported)."""
        if data.get(key) is None:
            return None
        cond_path = _join(path, key)
        spec = self.mapping(data[key], cond_path, data.line_of(key))
        if spec is None:
            return False
        self.check_keys(spec, CONDITION_KEYS, cond_path)
        expression = self.string(spec, "expression", cond_path, required=True)
        title = self.string(spec, "title", cond_path) or ""
        description = self.string(spec, "description", cond_path) or ""
        self.string(spec, "location", cond_path)
        if expression is None:
            return False
        line = spec.line_of("expression")
        cache_key = (expression, title)
        compiled = self.compiled.get(cache_key)
        if compiled is None:
            try:
                compiled = compile_condition(expression, title)
            except ConditionError as exc:
                compiled = exc
            self.compiled[cache_key] = compiled
        if isinstance(compiled, ConditionError):
            column = f" (column {compiled.column})" if compiled.column is not None else ""
            self.add(
                _join(cond_path, "expression"),
                f"bad condition: {compiled.problem}{column}",
                line,
                "conditions use the IAM subset of CEL, e.g. "
                'request.time < timestamp("2027-01-01T00:00:00Z")',
            )
            return False
        return Condition(expression, title, description, compiled, line)

    def permissions(
        self,
        data: LineMap,
        key: str,
        path: str,
        *,
        required: bool,
        allow_patterns: bool,
    ) -> PermissionSet | None:
        exact: set[str] = set()
        patterns: list[PermissionPattern] = []
        ok = True
        for text, item_path, line in self.strings(data, key, path, required=required):
            parsed = parse_permission(text, allow_patterns=allow_patterns)
            where = self.locate(text, line)
            if parsed.problem is not None:
                self.add(item_path, parsed.problem, where, parsed.hint)
                ok = False
            elif parsed.exact is not None:
                if parsed.exact not in self.known and self.ours(parsed.exact):
                    self.add(item_path, self.unknown_permission(text, parsed.exact), where)
                    ok = False
                exact.add(parsed.exact)
            elif parsed.pattern is not None:
                if self.ours(parsed.pattern.service + ".") and not any(
                    parsed.pattern.matches(p) for p in self.known
                ):
                    services = {to_fqdn_spelling(p).partition("/")[0] + "/*" for p in self.known}
                    self.add(
                        item_path,
                        f"permission group '{text}' matches no known permission"
                        f"{_suggestion(text, services)}",
                        where,
                    )
                    ok = False
                patterns.append(parsed.pattern)
        return PermissionSet(frozenset(exact), tuple(patterns)) if ok else None

    def ours(self, permission: str) -> bool:
        """A permission of a service this gateway knows, or of one spelt almost like it: one
        the catalogue does not hold is misspelt. Other services' permissions are legal."""
        service = permission.partition(".")[0]
        return service in self.services or bool(
            difflib.get_close_matches(service, self.services, n=1, cutoff=0.85)
        )

    def unknown_permission(self, text: str, permission: str) -> str:
        # Suggest in the spelling the author used.
        if "/" in text:
            candidates: Iterable[str] = (to_fqdn_spelling(p) for p in self.known)
        else:
            candidates = self.known
        return f"unknown permission '{text}'{_suggestion(text, candidates)}"

    # -- sections -----------------------------------------------------------------------------

    def load(self, data: Any) -> Policy:
        if data is None:
            self.add(None, "is empty", None, "an empty policy is written {} (it denies everything)")
            raise PolicyError(tuple(self.problems))
        top = self.mapping(data, "", None)
        if top is None:
            raise PolicyError(tuple(self.problems))
        misplaced = self.misplaced_export(top)
        self.check_keys(top, TOP_KEYS + misplaced, "")
        declared_etag = self.string(top, "etag", "")
        description = self.string(top, "description", "") or ""
        self.hierarchy = read_resources(self, top)
        custom_roles = self.custom_roles(top)
        groups = self.groups(top)
        bindings = self.allow(top)
        deny_rules = self.deny(top)
        if self.problems:
            self.problems.sort(key=lambda p: p.line or 0)
            raise PolicyError(tuple(self.problems))
        return Policy(
            source=self.source,
            etag=content_etag(data),
            declared_etag=declared_etag,
            description=description,
            bindings=bindings,
            deny_rules=deny_rules,
            custom_roles=custom_roles,
            groups=groups,
            index=build_index(bindings, deny_rules, groups, self.roles),
            hierarchy=self.hierarchy,
            audit_configs={r: tuple(c) for r, c in self.audit_configs.items()},
            notes=tuple(sorted(self.notes, key=lambda n: n.line or 0)),
        )

    def misplaced_export(self, top: LineMap) -> tuple[str, ...]:
        """A whole export pasted as the file: say where it goes. The keys it reported."""
        if "bindings" in top or "auditConfigs" in top or "version" in top:
            keys = tuple(k for k in ("bindings", "auditConfigs", "version") if k in top)
            self.add(
                None,
                "this is an allow policy as gcloud's get-iam-policy prints it; a policy file "
                "says which resource each one is attached to",
                top.line_of(keys[0]),
                "paste it unchanged under an allow entry: allow: [{resource: projects/P, "
                "policy: <the output>}]",
            )
            return keys
        if "rules" in top:
            self.add(
                None,
                "this is a deny policy as gcloud iam policies get prints it",
                top.line_of("rules"),
                "paste it unchanged as an entry of deny: (its name says where it is attached)",
            )
            return ("rules", "name", "kind", "uid", "displayName", "createTime", "updateTime")
        if "includedPermissions" in top:
            self.add(
                None,
                "this is a role as gcloud iam roles describe prints it",
                top.line_of("includedPermissions"),
                "paste it unchanged as an entry of roles:",
            )
            return ("includedPermissions", "name", "title", "stage", "deleted")
        return ()

    def custom_roles(self, top: LineMap) -> tuple[Role, ...]:
        found: list[Role] = []
        for item, path, line in self.items(top, "roles", ""):
            spec = self.mapping(item, path, line)
            if spec is None:
                continue
            self.check_keys(spec, ROLE_KEYS, path)
            name = self.string(spec, "name", path, required=True)
            title = self.string(spec, "title", path) or ""
            description = self.string(spec, "description", path) or ""
            stage = self.stage(spec, path)
            self.string(spec, "etag", path)
            permissions = self.permissions(
                spec, "includedPermissions", path, required=False, allow_patterns=False
            )
            deleted = self.deleted(spec, path)
            if name is None:
                continue
            if name in self.predefined:
                # `gcloud iam roles describe roles/...` pasted: the catalogue already holds it.
                self.note(
                    spec.line,
                    "predefined-role-pasted",
                    f"{name} is a predefined role; the built-in catalogue's definition is used",
                    "predefined roles need no entry under roles:",
                )
                continue
            if not _CUSTOM_ROLE.fullmatch(name):
                hint = "custom roles are named projects/P/roles/ID or organizations/N/roles/ID"
                if name.startswith("roles/"):
                    hint = f"roles/... names are Google's predefined roles; {hint}"
                self.add(
                    _join(path, "name"),
                    f"'{name}' is not a custom role name",
                    spec.line_of("name"),
                    hint,
                )
                self.broken_roles.add(name)
                continue
            if name in self.roles:
                self.add(
                    _join(path, "name"), f"role '{name}' is defined twice", spec.line_of("name")
                )
                continue
            if permissions is None:
                self.broken_roles.add(name)
                continue
            # IAM keeps bindings to a DISABLED or deleted role but they grant nothing.
            granted = frozenset() if stage == "DISABLED" or deleted else permissions.exact
            role = Role(name, title, granted, True, description, spec.line)
            self.roles[name] = role
            found.append(role)
        return tuple(found)

    def deleted(self, spec: LineMap, path: str) -> bool:
        """`deleted: true`, as gcloud prints a deleted custom role (it grants nothing)."""
        value = spec.get("deleted")
        if value is not None and type(value) is not bool:
            self.add(
                _join(path, "deleted"),
                f"must be true or false, got {_shown(value)}",
                spec.line_of("deleted"),
            )
        return value is True

    def stage(self, spec: LineMap, path: str) -> str | None:
        """A role's launch stage: one of IAM's, exactly (a 'disabled' would still grant)."""
        stage = self.string(spec, "stage", path)
        if stage is not None and stage not in ROLE_STAGES:
            self.add(
                _join(path, "stage"),
                f"'{escaped(stage)}' is not a role stage",
                spec.line_of("stage"),
                f"stages are {', '.join(ROLE_STAGES)}",
            )
        return stage

    def groups(self, top: LineMap) -> tuple[Group, ...]:
        value = top.get("groups")
        if value is None:
            return ()
        section = self.mapping(value, "groups", top.line_of("groups"))
        if section is None:
            return ()
        found: dict[str, Group] = {}
        for written in section:
            path = f"groups.{written}"
            line = section.line_of(written)
            email = written[len("group:") :] if written.startswith("group:") else written
            if not is_email(email):
                problem = f"'{escaped(written)}' is not a group email"
                if not email.isascii():
                    problem += " (IAM emails are ASCII)"
                self.add(path, problem, line, "write EMAIL or group:EMAIL")
                continue
            email = canonical_identity(email)
            if email in found:
                self.add(path, f"group '{email}' is defined twice", line)
                continue
            if section[written] is None:
                section_items: list[Any] = []
            elif isinstance(section[written], list):
                section_items = section[written]
            else:
                self.add(path, f"must be a list of members, got {_shown(section[written])}", line)
                continue
            members: list[Member] = []
            for i, item in enumerate(section_items):
                item_path = f"{path}[{i}]"
                if not isinstance(item, str):
                    self.add(item_path, f"must be a string, got {_shown(item)}", line)
                    continue
                member = self.member(item, item_path, line, False)
                if member is None:
                    continue
                if member.kind not in _GROUP_MEMBER_KINDS:
                    self.add(
                        item_path,
                        f"'{item}' cannot be a member of a group",
                        self.locate(item, line),
                        "a group's members are user:, serviceAccount: or group: members",
                    )
                    continue
                members.append(member)
            found[email] = Group(email, tuple(members), line)
        self.group_cycles(found)
        return tuple(found.values())

    def group_cycles(self, groups: Mapping[str, Group]) -> None:
        """Report each cycle among the static groups once, at its first group's line."""
        edges = {
            email: [
                m.key[len("group:") :]
                for m in group.members
                if m.key is not None and m.key.startswith("group:") and m.key[6:] in groups
            ]
            for email, group in groups.items()
        }
        state: dict[str, int] = {}  # 1: on the current path, 2: done
        reported: set[frozenset[str]] = set()
        for start in groups:
            if start in state:
                continue
            path: list[str] = []
            stack: list[tuple[str, int]] = [(start, 0)]
            while stack:
                node, position = stack.pop()
                if position == 0:
                    state[node] = 1
                    path.append(node)
                children = edges[node]
                if position < len(children):
                    stack.append((node, position + 1))
                    child = children[position]
                    if state.get(child) == 1:
                        cycle = [*path[path.index(child) :], child]
                        if frozenset(cycle) not in reported:
                            reported.add(frozenset(cycle))
                            first = min(cycle[:-1], key=lambda e: groups[e].source_line or 0)
                            self.add(
                                f"groups.{first}",
                                "group cycle: " + " -> ".join(f"group:{e}" for e in cycle),
                                groups[first].source_line,
                                "a group cannot contain itself; remove one of these memberships",
                            )
                    elif child not in state:
                        stack.append((child, 0))
                else:
                    state[node] = 2
                    path.pop()

    def allow(self, top: LineMap) -> tuple[Binding, ...]:
        found: list[Binding] = []
        for item, path, line in self.items(top, "allow", ""):
            entry = self.mapping(item, path, line)
            if entry is None:
                continue
            self.check_keys(entry, ALLOW_KEYS, path)
            resource = self.resource(entry, path)
            exported, export_path = self.exported(entry, path)
            if exported is None:
                continue
            if resource is not None:
                read_audit_configs(self, exported, export_path, resource)
            for spec, binding_path, binding_line in self.items(exported, "bindings", export_path):
                binding = self.quick_binding(spec, resource, len(found))
                if binding is None:
                    binding = self.binding(spec, binding_path, binding_line, resource, len(found))
                if binding is not None:
                    found.append(binding)
        return tuple(found)

    def exported(self, entry: LineMap, path: str) -> tuple[LineMap | None, str]:
        """The get-iam-policy output: under `policy` as printed, or its keys beside `resource`."""
        if "policy" not in entry:
            self.policy_keys(entry, path)
            return entry, path
        inner_path = _join(path, "policy")
        beside = [key for key in EXPORT_KEYS if key in entry]
        if beside:
            self.add(
                _join(path, beside[0]),
                "is given both here and under policy",
                entry.line_of(beside[0]),
                "paste the get-iam-policy output under policy, or its keys beside resource",
            )
            return None, inner_path
        exported = self.mapping(entry["policy"], inner_path, entry.line_of("policy"))
        if exported is not None:
            self.check_keys(exported, EXPORT_KEYS, inner_path)
            self.policy_keys(exported, inner_path)
        return exported, inner_path

    def policy_keys(self, exported: LineMap, path: str) -> None:
        """An allow policy's etag and version, checked as IAM would."""
        self.string(exported, "etag", path)
        version = exported.get("version")
        if version is not None and (type(version) is not int or version not in POLICY_VERSIONS):
            self.add(
                _join(path, "version"),
                f"{_shown(version)} is not an IAM policy version",
                exported.line_of("version"),
                "versions are 1, 2 and 3 (3 for policies with conditions)",
            )

    def quick_binding(self, spec: Any, resource: str | None, ordinal: int) -> Binding | None:
        """The binding, when it is plainly right: a role and members only, the role predefined,
        every member well formed. None leaves it to `binding`, which reports what is wrong."""
        if type(spec) is not LineMap or resource is None or not spec.keys() <= _PLAIN_BINDING:
            return None
        role_name = spec.get("role")
        role = self.predefined.get(role_name) if type(role_name) is str else None
        members = self.quick_members(spec.get("members"))
        if role is None or members is None:
            return None
        return Binding(ordinal, resource, role.name, members, None, spec.line, role.permissions)

    def quick_members(self, value: Any) -> tuple[Member, ...] | None:
        """A non-empty list of well-formed members; None if it is anything else."""
        if type(value) is not list or not value:
            return None
        found: list[Member] = []
        for text in value:
            member = self.parsed_member(text).member if type(text) is str else None
            if member is None:
                return None
            found.append(member)
        return tuple(found)

    def binding(
        self, item: Any, path: str, line: int | None, resource: str | None, ordinal: int
    ) -> Binding | None:
        """One binding, every problem in it reported; None if it has any."""
        spec = self.mapping(item, path, line)
        if spec is None:
            return None
        self.check_keys(spec, BINDING_KEYS, path)
        role_name = self.string(spec, "role", path, required=True)
        members = self.members(spec, "members", path, required=True)
        condition = self.condition(spec, "condition", path)
        role = None if role_name is None else self.roles.get(role_name)
        if role_name is not None and role is None and role_name not in self.broken_roles:
            role = unknown_role(self, role_name, path, spec.line_of("role"))
        if role is not None and resource is not None and role.custom:
            self.check_role_scope(role, resource, path, spec.line_of("role"))
        if resource is None or role is None or not members or condition is False:
            return None
        return Binding(
            ordinal=ordinal,
            resource=resource,
            role=role.name,
            members=members,
            condition=condition if isinstance(condition, Condition) else None,
            source_line=spec.line,
            permissions=role.permissions,
        )

    def check_role_scope(self, role: Role, resource: str, path: str, line: int) -> None:
        # IAM grants a project's custom role only within that project.
        scope, _, _ = role.name.partition("/roles/")
        if scope.startswith("projects/") and not (
            resource == scope or resource.startswith(scope + "/")
        ):
            self.add(
                _join(path, "role"),
                f"custom role '{role.name}' belongs to {scope} and cannot be granted on "
                f"'{resource}'",
                line,
                "define the role in the resource's project, or at organization level",
            )

    def deny(self, top: LineMap) -> tuple[DenyRule, ...]:
        found: list[DenyRule] = []
        for item, path, line in self.items(top, "deny", ""):
            entry = self.mapping(item, path, line)
            if entry is None:
                continue
            self.check_keys(entry, DENY_KEYS, path)
            resource = deny_attachment(self, entry, path)
            display_name = self.string(entry, "displayName", path)
            name = display_name or self.string(entry, "name", path) or ""
            rules = self.items(entry, "rules", path)
            if "rules" not in entry:
                self.missing(entry, "rules", path)
            for rule_item, rule_path, rule_line in rules:
                rule = self.deny_rule(rule_item, rule_path, rule_line, resource, name, len(found))
                if rule is not None:
                    found.append(rule)
        return tuple(found)

    def deny_rule(
        self,
        item: Any,
        path: str,
        line: int | None,
        resource: str | None,
        policy_name: str,
        ordinal: int,
    ) -> DenyRule | None:
        spec = self.mapping(item, path, line)
        if spec is None:
            return None
        description = ""
        if "denyRule" in spec:
            # Google's export wraps each rule: {description, denyRule: {...}}.
            self.check_keys(spec, WRAPPED_RULE_KEYS, path)
            description = self.string(spec, "description", path) or ""
            path = _join(path, "denyRule")
            spec = self.mapping(spec["denyRule"], path, spec.line_of("denyRule"))
            if spec is None:
                return None
            self.check_keys(spec, RULE_KEYS[:-1], path)
        else:
            self.check_keys(spec, RULE_KEYS, path)
            description = self.string(spec, "description", path) or ""
        denied = self.members(
            spec, "deniedPrincipals", path, required=True, matching_none_is_safe=False
        )
        excepted = self.members(spec, "exceptionPrincipals", path, required=False)
        permissions = self.permissions(
            spec, "deniedPermissions", path, required=True, allow_patterns=True
        )
        exceptions = self.permissions(
            spec, "exceptionPermissions", path, required=False, allow_patterns=True
        )
        condition = self.condition(spec, "denialCondition", path)
        if (
            resource is None
            or not denied
            or excepted is None
            or not permissions
            or exceptions is None
            or condition is False
        ):
            return None
        return DenyRule(
            ordinal=ordinal,
            resource=resource,
            denied_principals=denied,
            exception_principals=excepted,
            denied_permissions=permissions,
            exception_permissions=exceptions,
            condition=condition if isinstance(condition, Condition) else None,
            source_line=spec.line,
            description=description,
            policy_name=policy_name,
            denied_keys=frozenset(m.key for m in denied if m.key is not None),
            exception_keys=frozenset(m.key for m in excepted if m.key is not None),
        )


def _dotted(permission: str) -> str | None:
    parsed = parse_permission(permission, allow_patterns=False)
    return parsed.exact


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
