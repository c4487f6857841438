"""The per-call value every door builds and every stage reads and fills in: one per call."""

from __future__ import annotations

import contextvars
import functools
import itertools
import os
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from gateway.tracecontext import TRACE_HEADERS, trace_of

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


def request_id_prefix() -> str:
    """The part every request id of this process starts with (see new_request_id)."""
    return _REQUEST_ID_PREFIX


def _reseed_after_fork() -> None:
    global _REQUEST_ID_PREFIX, _request_numbers
    _REQUEST_ID_PREFIX, _request_numbers = os.urandom(8).hex(), itertools.count()


os.register_at_fork(after_in_child=_reseed_after_fork)

Headers = tuple[tuple[str, str], ...]
Metadata = Sequence[tuple[str, str | bytes]]

MAX_RECORDED_PATH = 200


class Transport(Protocol):
    """What a door knows of a call's connection and deadline, asked only when a stage needs it.

    grpc.aio's ServicerContext is one as it is (the gRPC door hands it over unwrapped); the
    other doors implement these four methods over their own request.
    """

    def peer(self) -> str | None:
        """The caller's address as grpc spells it, e.g. 'ipv4:127.0.0.1:5555'."""

    def auth_context(self) -> Mapping[str, Sequence[bytes]]:
        """The verified TLS peer's certificate, keyed as grpc's auth context ('x509_pem_cert')."""

    def time_remaining(self) -> float | None:
        """Seconds left before the call's deadline (0 once it has passed); None: no deadline."""

    def cancelled(self) -> bool:
        """The caller has gone away."""


@dataclass(slots=True)
class Call:
    """One call as the stages see it: what the door received, then what each stage found.

    What only the audit record needs (the caller's IP, the trace ids) is kept as received and
    parsed when the record is built, off the call's path.
    """

    method: str  # the gRPC method path, as records show it (see recorded_method)
    metadata: Metadata  # the caller's metadata (the REST door's headers, mapped to gRPC's keys)
    transport: Transport
    payload: Any = None  # the request as received: serialized bytes, or the message itself
    request_id: str = field(default_factory=new_request_id)
    started: float = field(default_factory=time.perf_counter)
    received_at: float = field(default_factory=time.time)
    raw_peer: str | None = None  # as grpc reports it, e.g. "ipv4:127.0.0.1:5555"
    user_agent: str | None = None
    trace_headers: Headers = ()  # traceparent / x-cloud-trace-context, relayed upstream unchanged
    upstream_s: float | None = None  # time spent waiting for the upstream, if it was called
    principal: Principal | None = None  # found by authn
    request: Any = None  # the decoded request message, by route
    resource_name: str | None = None  # the request's `name`, by route
    access: RequiredAccess | None = None  # the permission the call needs, by route
    verdict: Verdict | None = None  # the policy decision (and any dry-run difference), by authz

    @property
    def peer(self) -> str | None:
        """The caller's IP address ('ipv6:[::1]:5555' -> '::1'); other peers as reported."""
        return caller_ip(self.raw_peer)

    @property
    def trace(self) -> tuple[str | None, str | None]:
        """(trace id, span id) from the caller's trace headers, or (None, None)."""
        return trace_of(self.trace_headers)


def new_call(method: str, metadata: Metadata | None, transport: Transport, payload: Any) -> Call:
    """The Call a door hands the pipeline: the method as recorded, the headers the record keeps."""
    metadata = metadata or ()
    user_agent: str | None = None
    trace_headers: list[tuple[str, str]] = []
    for key, value in metadata:
        if key == "user-agent" and user_agent is None and isinstance(value, str):
            user_agent = value
        elif key in TRACE_HEADERS and isinstance(value, str):
            trace_headers.append((key, value))
    return Call(
        recorded_method(method),
        metadata,
        transport,
        payload,
        raw_peer=transport.peer(),
        user_agent=user_agent,
        trace_headers=tuple(trace_headers),
    )


def recorded_method(path: str) -> str:
    """The method as records and logs show it: cut at '?' (clients used to REST put tokens in
    query strings) and bounded in length."""
    return path.split("?", 1)[0][:MAX_RECORDED_PATH]


@functools.lru_cache(maxsize=1024)  # a connection's calls share its peer: parsed once
def caller_ip(peer: str | None) -> str | None:
    """'ipv4:127.0.0.1:5555' -> '127.0.0.1'; 'ipv6:[::1]:5555' -> '::1'."""
    if not peer:
        return None
    kind, _, address = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer
    host = urllib.parse.unquote(address).rpartition(":")[0]  # grpc writes [::1] as %5B::1%5D
    return host.strip("[]") or None


current_call: contextvars.ContextVar[Call] = contextvars.ContextVar("opsgate_call")
"""The call being handled, for what cannot be handed it: log lines' request ids and library
mode's current_principal(). Set by the audit stage around the rest of the chain."""
