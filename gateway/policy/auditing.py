"""Which allowed calls an allow policy's auditConfigs leave out of the audit trail. Pure.

IAM's meaning, within opsgate's audit contract: Admin Activity (writes) is always recorded, and
Data Access log types (ADMIN_READ, DATA_READ, DATA_WRITE) are recorded where an auditConfigs
entry for the service or allServices turns them on, at the resource or any ancestor, except for
its exemptedMembers. Only where some allow policy on the chain has auditConfigs at all: a policy
without them records every call, as opsgate always has. Refusals and errors are always recorded
by the caller of this module (it is asked about allowed calls only).
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.policy.model import AuditConfig

ALL_SERVICES = "allServices"
LOG_TYPES = ("ADMIN_READ", "DATA_READ", "DATA_WRITE")
# The Operations methods' permissions by verb: Google's services log GetOperation and
# ListOperations as ADMIN_READ and CancelOperation/DeleteOperation as ADMIN_WRITE (Admin
# Activity, which no auditConfigs can turn off).
_READ_VERBS = frozenset({"get", "list", "wait"})


def log_type_of(permission: str) -> str | None:
    """ADMIN_READ for a read; None for a write, which is always recorded."""
    return "ADMIN_READ" if permission.rpartition(".")[2] in _READ_VERBS else None


def unrecorded(
    configs: Mapping[str, tuple[AuditConfig, ...]],
    chain: tuple[str, ...],
    permission: str,
    caller_keys: frozenset[str],
) -> str | None:
    """Why the record of this allowed call may be left out, or None if it must be written."""
    if not configs:
        return None
    log_type = log_type_of(permission)
    if log_type is None:
        return None
    service = f"{permission.partition('.')[0]}.googleapis.com"
    stated = False
    enabled_at: str | None = None
    for level in chain:
        found = configs.get(level)
        if found is None:
            continue
        stated = True
        for config in found:
            if config.service not in (ALL_SERVICES, service):
                continue
            for log_config in config.log_configs:
                if log_config.log_type != log_type:
                    continue
                exempt = log_config.exempted_keys & caller_keys
                if exempt:
                    member = next(m.written for m in log_config.exempted if m.key in exempt)
                    return (
                        f"{member} is exempted from {log_type} audit logs of {config.service} "
                        f"on {config.resource}"
                    )
                enabled_at = enabled_at or config.resource
    if not stated or enabled_at is not None:
        return None
    return f"{log_type} audit logs of {service} are not enabled on {chain[-1]} or its ancestors"
