"""One audit record per call behind Envoy: an allowed call's record waits for Envoy's access log.

The decision is known at Check time, the final status only to Envoy. A refused call's record is
written at once (the refusal is its ending). An allowed call's outcome is parked under the call
id the authorizer handed Envoy as dynamic metadata, and written when Envoy's access-log entry
carrying that id arrives, with the status the caller got; if none arrives within the bound, or
the authorizer stops first, it is written anyway, marked as not reported. Each parked outcome
leaves the table exactly once, so no call gets two records.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import logging
import os
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import REASON_PATTERN, StatusCode
from gateway.outcome import CallOutcome, OutcomeSink
from gateway.rest.status import HTTP_STATUS

log = logging.getLogger("opsgate.envoy")

NOT_REPORTED_REASON = "COMPLETION_NOT_REPORTED"
_STOPPED = "The authorizer stopped before Envoy reported the ending."
UPSTREAM_REASON = "UPSTREAM_STATUS"
VIA_UPSTREAM = "via_upstream"  # Envoy's response_code_details when the upstream answered

# gRPC's mapping of an HTTP status to a code, for an answer without grpc-status
# (https://github.com/grpc/grpc/blob/master/doc/http-grpc-status-mapping.md).
_GRPC_FROM_HTTP = {
    400: StatusCode.INTERNAL,
    401: StatusCode.UNAUTHENTICATED,
    403: StatusCode.PERMISSION_DENIED,
    404: StatusCode.UNIMPLEMENTED,
    429: StatusCode.UNAVAILABLE,
    502: StatusCode.UNAVAILABLE,
    503: StatusCode.UNAVAILABLE,
    504: StatusCode.UNAVAILABLE,
}
# A REST caller's HTTP status back to the code Google's REST frontends answer it for.
_CODE_FROM_HTTP = {status: code for code, status in reversed(HTTP_STATUS.items())}
_CODE_FROM_HTTP[200] = StatusCode.OK


@dataclass(frozen=True, slots=True)
class Ending:
    """How Envoy says a call ended: the status its caller got and how long it took."""

    code: StatusCode
    message: str
    latency_s: float | None
    upstream_s: float | None
    reason: str | None
    detail: str


def ending_of(entry: Any, rest: bool) -> Ending:
    """The Ending in one of Envoy's HTTPAccessLogEntry messages (see protos.py).

    The gRPC status comes from grpc-status in the trailers, or the headers of a trailers-only
    answer; without one, from the HTTP status as a gRPC client (or, for the REST door, a REST
    client) reads it.
    """
    response = entry.response
    common = entry.common_properties
    status = response.response_trailers.get("grpc-status") or response.response_headers.get(
        "grpc-status"
    )
    http = response.response_code.value if response.HasField("response_code") else 0
    message = response.response_trailers.get("grpc-message") or response.response_headers.get(
        "grpc-message", ""
    )
    code = _code(status, http, rest, common.response_flags)
    details = response.response_code_details
    reason = None
    if code is not StatusCode.OK:
        reason = UPSTREAM_REASON if details == VIA_UPSTREAM else _envoy_reason(details)
    latency = _seconds(common.duration) if common.HasField("duration") else None
    upstream = None
    if common.HasField("time_to_last_upstream_rx_byte"):
        first = _seconds(common.time_to_first_upstream_tx_byte)
        upstream = max(0.0, _seconds(common.time_to_last_upstream_rx_byte) - first)
    return Ending(
        code,
        urllib.parse.unquote(message) if "%" in message else message,
        latency,
        upstream,
        reason,
        f"Envoy: HTTP {http}, {details or 'no details'}",
    )


def _code(status: str | None, http: int, rest: bool, flags: Any) -> StatusCode:
    if status is not None and status.isdigit() and int(status) in StatusCode._value2member_map_:
        return StatusCode(int(status))
    if http == 0:
        gone = flags.downstream_remote_reset or flags.downstream_connection_termination
        return StatusCode.CANCELLED if gone else StatusCode.UNKNOWN
    if rest:
        return _CODE_FROM_HTTP.get(http, StatusCode.UNKNOWN)
    if http == 200:
        return StatusCode.UNKNOWN  # a gRPC answer without grpc-status is malformed
    return _GRPC_FROM_HTTP.get(http, StatusCode.UNKNOWN)


def _envoy_reason(details: str) -> str:
    """'upstream_reset_before_response_started{connection_termination}' ->
    'ENVOY_UPSTREAM_RESET_BEFORE_RESPONSE_STARTED': Envoy's own cause, as an ErrorInfo reason."""
    words = "".join(c if c.isalnum() else "_" for c in details.partition("{")[0]).strip("_")
    reason = f"ENVOY_{words.upper()}"[:63].rstrip("_") if words else "ENVOY_LOCAL_REPLY"
    return reason if REASON_PATTERN.fullmatch(reason) else "ENVOY_LOCAL_REPLY"


def _seconds(duration: Any) -> float:
    return float(duration.seconds) + float(duration.nanos) / 1e9


@dataclass(slots=True)
class _Parked:
    outcome: CallOutcome
    rest: bool
    expires: float


class JoinKeys:
    """The key Envoy carries from a Check to the call's access-log entry: the call id and a MAC
    of it under this process's secret. Callers see their call ids (x-request-id), and anyone
    who can reach the access-log service could name one; only Envoy, handed the key by the
    authorizer, can end a call's record."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret if secret is not None else os.urandom(32)

    def key(self, call_id: str) -> str:
        mac = hmac.new(self._secret, call_id.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{call_id}.{mac}"

    def call_id(self, key: str) -> str | None:
        """The call id in `key` if this process made the key; None otherwise."""
        call_id = key.partition(".")[0]
        return call_id if hmac.compare_digest(self.key(call_id), key) else None


class CompletionJoin:
    """The OutcomeSink of the Envoy door's audit stage: refusals pass straight to `sink`;
    an allowed call's outcome waits here for its Ending (see the module docstring)."""

    def __init__(
        self,
        sink: OutcomeSink,
        timeout_s: float,
        is_rest: Callable[[CallOutcome], bool],
        clock: Callable[[], float] = time.monotonic,
        keys: JoinKeys | None = None,
    ) -> None:
        self.keys = keys or JoinKeys()
        self._sink = sink
        self._timeout_s = timeout_s
        self._is_rest = is_rest
        self._clock = clock
        self._parked: dict[str, _Parked] = {}
        self._closed = False
        self.emptied = asyncio.Event()  # set while no call waits
        self.emptied.set()
        self.completed = 0  # read by metrics and tests
        self.not_reported = 0
        self.unknown_ids = 0  # access-log entries naming no parked call (see complete)

    @property
    def waiting(self) -> int:
        """Allowed calls whose ending Envoy has not reported yet."""
        return len(self._parked)

    def record(self, outcome: CallOutcome) -> None:
        if outcome.code is not StatusCode.OK:
            self._sink.record(outcome)
            return
        if self._closed:  # let through as the authorizer stopped: Envoy reports to no one now
            self._sink.record(self._marked(outcome, _STOPPED))
            self.not_reported += 1
            return
        expires = self._clock() + self._timeout_s
        self._parked[outcome.call.request_id] = _Parked(outcome, self._is_rest(outcome), expires)
        self.emptied.clear()

    def complete(self, key: str, entry: Any) -> bool:
        """Write the record of the call whose JoinKeys `key` Envoy logged, with the ending in
        Envoy's `entry`.

        False when no call waits under that key: its record was already written (not reported
        in time, or the authorizer restarted since its Check) and is not written twice; or the
        key is not one this process made.
        """
        call_id = self.keys.call_id(key)
        parked = self._take(call_id) if call_id is not None else None
        if parked is None:
            self.unknown_ids += 1
            return False
        ending = ending_of(entry, parked.rest)
        outcome = parked.outcome
        call = outcome.call
        if ending.upstream_s is not None:
            call.upstream_s = ending.upstream_s
        latency = ending.latency_s if ending.latency_s is not None else outcome.latency_s
        self._sink.record(
            dataclasses.replace(
                outcome,
                code=ending.code,
                message=ending.message,
                latency_s=latency,
                detail=ending.detail,
                reason=ending.reason,
            )
        )
        self.completed += 1
        return True

    def expire(self) -> int:
        """Write, marked as not reported, the records whose ending is overdue; how many."""
        now = self._clock()
        overdue = [key for key, parked in self._parked.items() if parked.expires <= now]
        why = f"Envoy did not report how the call ended within {self._timeout_s:g} s."
        for key in overdue:
            self._not_reported(key, why)
        return len(overdue)

    def flush(self) -> int:
        """The authorizer is stopping: every waiting record is written now, marked so."""
        self._closed = True
        keys = list(self._parked)
        for key in keys:
            self._not_reported(key, _STOPPED)
        return len(keys)

    async def watch(self, interval_s: float = 1.0) -> None:
        """Expire overdue records until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            self.expire()

    def _take(self, key: str) -> _Parked | None:
        parked = self._parked.pop(key, None)
        if not self._parked:
            self.emptied.set()
        return parked

    def _not_reported(self, key: str, why: str) -> None:
        parked = self._take(key)
        if parked is None:
            return
        outcome = parked.outcome
        self.not_reported += 1
        log.warning(
            "audit record of request_id=%s written without its ending: %s",
            outcome.call.request_id,
            why,
        )
        self._sink.record(self._marked(outcome, why))

    @staticmethod
    def _marked(outcome: CallOutcome, why: str) -> CallOutcome:
        return dataclasses.replace(
            outcome, code=StatusCode.UNKNOWN, message=why, detail=why, reason=NOT_REPORTED_REASON
        )


def join_key_of(metadata: Mapping[str, Any], namespace: str, key: str) -> str | None:
    """The join key in an access-log entry's filter metadata, if the authorizer set one."""
    struct = metadata.get(namespace)
    if struct is None:
        return None
    value = struct.fields.get(key)
    if value is None or value.WhichOneof("kind") != "string_value":
        return None
    text: str = value.string_value
    return text
