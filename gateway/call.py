"""Per-call state shared by the stages of one call, carried in a context variable."""

from __future__ import annotations

import contextvars
import itertools
import os
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.tracecontext import trace_of

if TYPE_CHECKING:
    from gateway.authn.principal import Principal
    from gateway.authorizer import Verdict
    from gateway.profile import RequiredAccess

# Request ids: 64 random bits per process, then a counter. As unique as uuid4 across replicas,
# workers and restarts, without a getrandom() system call on every call.
_REQUEST_ID_PREFIX = os.urandom(8).hex()
_request_numbers = itertools.count()


def new_request_id() -> str:
    """A 32-hex-digit id, unique to this call: echoed to the caller and in every record."""
    return f"{_REQUEST_ID_PREFIX}{next(_request_numbers):016x}"


def _reseed_after_fork() -> None:
    global _REQUEST_ID_PREFIX, _request_numbers
    _REQUEST_ID_PREFIX, _request_numbers = os.urandom(8).hex(), itertools.count()


os.register_at_fork(after_in_child=_reseed_after_fork)

Headers = tuple[tuple[str, str], ...]


@dataclass(slots=True)
class CallState:
    """What the stages learn about one call: made by the outermost stage, filled in by the rest.

    What only the audit record needs (the caller's IP, the trace ids) is kept as received and
    parsed when the record is built, off the call's path.
    """

    method: str
    request_id: str = field(default_factory=new_request_id)
    started: float = field(default_factory=time.perf_counter)
    received_at: float = field(default_factory=time.time)
    raw_peer: str | None = None  # as grpc reports it, e.g. "ipv4:127.0.0.1:5555"
    user_agent: str | None = None
    trace_headers: Headers = ()  # traceparent / x-cloud-trace-context, relayed upstream unchanged
    upstream_s: float | None = None  # time spent waiting for the upstream, if it was called
    principal: Principal | None = None
    resource_name: str | None = None
    request: Any = None
    access: RequiredAccess | None = None  # the permission the call needs, once routed
    verdict: Verdict | None = None  # the policy decision (and any dry-run difference)

    @property
    def peer(self) -> str | None:
        """The caller's IP address ('ipv6:[::1]:5555' -> '::1'); other peers as reported."""
        return caller_ip(self.raw_peer)

    @property
    def trace(self) -> tuple[str | None, str | None]:
        """(trace id, span id) from the caller's trace headers, or (None, None)."""
        return trace_of(self.trace_headers)


def caller_ip(peer: str | None) -> str | None:
    """'ipv4:127.0.0.1:5555' -> '127.0.0.1'; 'ipv6:[::1]:5555' -> '::1'."""
    if not peer:
        return None
    kind, _, address = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer
    host = urllib.parse.unquote(address).rpartition(":")[0]  # grpc writes [::1] as %5B::1%5D
    return host.strip("[]") or None


current_call: contextvars.ContextVar[CallState] = contextvars.ContextVar("opsgate_call")
