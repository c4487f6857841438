"""Per-call state shared by the stages of one call, carried in a context variable."""

from __future__ import annotations

import contextvars
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.authn.principal import Principal


@dataclass(slots=True)
class CallState:
    """What the stages learn about one call: made by the outermost stage, filled in by the rest."""

    method: str
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: float = field(default_factory=time.perf_counter)
    principal: Principal | None = None
    resource_name: str | None = None
    request: Any = None


current_call: contextvars.ContextVar[CallState] = contextvars.ContextVar("opsgate_call")
