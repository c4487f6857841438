"""Per-call state shared by the stages of one call, carried in a context variable."""

from __future__ import annotations

import contextvars
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.authn.principal import Principal
    from gateway.authorizer import Verdict
    from gateway.profile import RequiredAccess


@dataclass(slots=True)
class CallState:
    """What the stages learn about one call: made by the outermost stage, filled in by the rest."""

    method: str
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: float = field(default_factory=time.perf_counter)
    received_at: float = field(default_factory=time.time)
    peer: str | None = None
    user_agent: str | None = None
    upstream_s: float | None = None  # time spent waiting for the upstream, if it was called
    trace_id: str | None = None  # from the caller's traceparent, relayed upstream unchanged
    span_id: str | None = None
    principal: Principal | None = None
    resource_name: str | None = None
    request: Any = None
    access: RequiredAccess | None = None  # the permission the call needs, once routed
    verdict: Verdict | None = None  # the policy decision (and any dry-run difference)


current_call: contextvars.ContextVar[CallState] = contextvars.ContextVar("opsgate_call")
