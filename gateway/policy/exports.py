"""Google's exports read as they are: an allow policy's auditConfigs, a deny policy's attachment
point, and roles of other services (legal, granting nothing here)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import unquote

from gateway.policy.auditing import ALL_SERVICES, LOG_TYPES
from gateway.policy.model import AuditConfig, AuditLogConfig
from gateway.policy.roles import Role
from gateway.sourcefile import LineMap

if TYPE_CHECKING:
    from gateway.policy.loader import _Loader

AUDIT_CONFIG_KEYS = ("service", "auditLogConfigs")
AUDIT_LOG_CONFIG_KEYS = ("logType", "exemptedMembers")
# policies/ATTACHMENT_POINT/denypolicies/ID, the attachment point URL-encoded.
_DENY_POLICY_NAME = re.compile(r"policies/([^/]+)/denypolicies/[^/]+")
DENY_NAME_HINT = (
    "a deny policy's name is policies/ATTACHMENT/denypolicies/ID, e.g. "
    "policies/cloudresourcemanager.googleapis.com%2Fprojects%2Facme-prod/denypolicies/my-policy"
)
_BROWSER = "roles/browser"  # a predefined role without a service prefix that is not basic
_SERVICE_NAME = re.compile(r"[a-z][a-z0-9-]*(?:\.[a-z0-9-]+)+")


def read_audit_configs(loader: _Loader, exported: LineMap, path: str, resource: str) -> None:
    """An allow policy's auditConfigs, kept per resource; the key alone states a config."""
    if "auditConfigs" not in exported:
        return
    configs = loader.audit_configs.setdefault(resource, [])
    for item, item_path, line in loader.items(exported, "auditConfigs", path):
        spec = loader.mapping(item, item_path, line)
        if spec is None:
            continue
        loader.check_keys(spec, AUDIT_CONFIG_KEYS, item_path)
        service = loader.string(spec, "service", item_path, required=True)
        if service is not None and service != ALL_SERVICES and not _SERVICE_NAME.fullmatch(service):
            loader.add(
                f"{item_path}.service",
                f"'{service}' is not a service",
                spec.line_of("service"),
                "write allServices or a service's DNS name, e.g. "
                "contactcenterinsights.googleapis.com",
            )
            service = None
        log_configs = [
            found
            for log_item, log_path, log_line in loader.items(spec, "auditLogConfigs", item_path)
            if (found := _log_config(loader, log_item, log_path, log_line)) is not None
        ]
        if service is not None:
            configs.append(AuditConfig(resource, service, tuple(log_configs), spec.line))


def _log_config(
    loader: _Loader, item: object, path: str, line: int | None
) -> AuditLogConfig | None:
    spec = loader.mapping(item, path, line)
    if spec is None:
        return None
    loader.check_keys(spec, AUDIT_LOG_CONFIG_KEYS, path)
    log_type = loader.string(spec, "logType", path, required=True)
    if log_type is not None and log_type not in LOG_TYPES:
        loader.add(
            f"{path}.logType",
            f"'{log_type}' is not a Data Access log type",
            spec.line_of("logType"),
            f"log types are {', '.join(LOG_TYPES)}; Admin Activity logs are always written",
        )
        return None
    members = loader.members(spec, "exemptedMembers", path, required=False)
    if log_type is None or members is None:
        return None
    keys = frozenset(m.key for m in members if m.key is not None)
    return AuditLogConfig(log_type, members, keys)


def deny_attachment(loader: _Loader, entry: LineMap, path: str) -> str | None:
    """A deny policy's resource: `resource`, or the attachment point its `name` gives."""
    name = loader.string(entry, "name", path)
    attached: str | None = None
    if name is not None:
        found = _DENY_POLICY_NAME.fullmatch(name)
        if found is not None:
            point = unquote(found[1])
            attached = loader.resource_text(f"//{point}", f"{path}.name", entry.line_of("name"))
        elif "resource" not in entry:
            loader.add(
                f"{path}.name",
                f"'{name}' is not a deny policy's name",
                entry.line_of("name"),
                DENY_NAME_HINT,
            )
            return None
    if "resource" not in entry and name is not None:
        return attached
    resource = loader.resource(entry, path)
    if attached is not None and resource is not None and attached != resource:
        loader.add(
            f"{path}.resource",
            f"'{resource}' is not where the policy's name attaches it ({attached})",
            entry.line_of("resource"),
            "leave `resource` out: the name says where a deny policy is attached",
        )
        return None
    return resource


def unknown_role(loader: _Loader, name: str, path: str, line: int | None) -> Role | None:
    """A role the catalogue does not hold: another service's grants nothing here (a warning);
    a misspelt role of this service or a basic role, or an undefined custom role, is an error."""
    predefined = loader.predefined
    if name.startswith("roles/"):
        rest = name[len("roles/") :]
        service = rest.partition(".")[0] if "." in rest else None
        own = _own_role_services(predefined) & loader.services
        if service is None:
            # Without a service prefix only the basic roles and roles/browser exist.
            candidates = [r for r in predefined if "." not in r]
            if name != _BROWSER:
                close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.0)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                loader.add(f"{path}.role", f"unknown role '{name}'{hint}", line)
                return None
            close = []
        elif service in own:
            candidates = [r for r in predefined if r.startswith(f"roles/{service}.")]
            close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.0)
        else:
            close = []
        if service in own or close:
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            loader.add(f"{path}.role", f"unknown role '{name}'{hint}", line)
            return None
        # Kept, granting nothing: explain lists it; policy check warns (grants-nothing).
        return loader.foreign_roles.setdefault(name, Role(name, "", frozenset()))
    custom = [r for r, role in loader.roles.items() if role.custom]
    close = difflib.get_close_matches(name, custom, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    loader.add(
        f"{path}.role",
        f"unknown role '{name}'{hint}",
        line,
        "custom roles are defined under roles:",
    )
    return None


def _own_role_services(predefined: Mapping[str, Role]) -> frozenset[str]:
    """The services the catalogue holds predefined roles of; with the services whose
    permissions are known, the service's own (contactcenterinsights, not iam)."""
    return frozenset(
        r[len("roles/") :].partition(".")[0] for r in predefined if "." in r[len("roles/") :]
    )
