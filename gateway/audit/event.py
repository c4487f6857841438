"""AuditEvent: everything one audit record says about one call, as plain values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One call as the audit trail sees it, built by the outermost stage when the call ends.

    There is deliberately no field for a token, a signature or a request header: what is not
    here cannot reach a record. `detail` and the decision fields must already be free of token
    material. `granted` is None when no decision was made (e.g. the caller never authenticated).
    """

    request_id: str
    received_at: datetime  # aware; converted to UTC in the record
    latency_s: float
    method: str  # full gRPC path, e.g. "/google.longrunning.Operations/GetOperation"
    resource_name: str | None
    permission: str | None
    service: str
    granted: bool | None
    principal_email: str | None
    principal_subject: str | None
    principal_member: str | None
    token_kind: str | None
    caller_ip: str | None
    user_agent: str | None
    status_code: int  # google.rpc.Code number
    status_message: str
    reason: str | None  # google.rpc.ErrorInfo reason, if the failure carried one
    detail: str  # log-only explanation
    decision_trace: tuple[Mapping[str, Any], ...]
    decision_reason: str | None
    decision_cached: bool
    policy_etag: str | None
    shadow_decision: Mapping[str, Any] | None
    trace: str | None
    span_id: str | None
    project_fallback: str  # the configured audit.project, for names without a project
    # A caller another issuer vouched for, by its claims (iss, sub, a verified email): Cloud
    # Audit Logs' thirdPartyPrincipal. None for Google's identities and anonymous calls.
    third_party_principal: Mapping[str, str] | None = None
    # The resource as the policy names it when the call named it otherwise (a project number).
    policy_resource: str | None = None

    def __post_init__(self) -> None:
        # A naive time would be silently read as UTC and shift the whole trail by the host's
        # offset; refusing it makes the mistake show up in the first test that builds an event.
        if self.received_at.tzinfo is None or self.received_at.utcoffset() is None:
            raise ValueError("AuditEvent.received_at must be timezone-aware")
