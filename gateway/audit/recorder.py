"""Turns each call's outcome into an AuditEvent for the writer, and opens the configured sink."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gateway.audit.event import AuditEvent
from gateway.audit.logentry import JsonReady, json_ready, project_of, restamped, to_log_entry
from gateway.audit.sinks import AuditSink, RotatingFileSink, StdoutSink
from gateway.audit.writer import AuditWriter, serialize, serialize_entry
from gateway.config import AuditSettings
from gateway.errors import StatusCode
from gateway.outcome import CallOutcome
from gateway.policy.decision import TraceEntry

TRACE_MEMO_SIZE = 4096  # trace entries kept converted; cleared when full
SHAPE_MEMO_SIZE = 4096  # record shapes kept (see _render); cleared when full


def open_writer(settings: AuditSettings) -> AuditWriter:
    """The writer thread and its sink, as configured."""
    sink: AuditSink
    if settings.sink == "file":
        file = settings.file
        assert file is not None  # load_settings insists on it
        sink = RotatingFileSink(
            file.path, file.max_bytes, file.backups, file.fsync, file.fsync_interval_s
        )
    elif settings.sink == "cloud_logging":
        from gateway.audit.cloud_logging import open_cloud_logging_sink

        sink = open_cloud_logging_sink(settings.cloud_logging)
    else:
        sink = StdoutSink()
    return AuditWriter(sink, on_failure=settings.on_failure, max_pending=settings.max_pending)


class AuditRecorder:
    """An OutcomeSink: one audit record per call outcome, submitted without blocking."""

    def __init__(
        self,
        writer: AuditWriter,
        *,
        service: str,
        project: str,
        policy_etag: Callable[[], str],
    ) -> None:
        self.writer = writer
        self._service = service
        self._project = project
        self._policy_etag = policy_etag  # the version in force, for calls decided by none
        self._step_memo: dict[TraceEntry, JsonReady] = {}
        # Records of calls that differ only in their id, times and latency: the same caller
        # (the token cache's Principal), the same cached Verdict, method, name and ending.
        self._shapes: dict[tuple[Any, ...], tuple[object, object, dict[str, Any]]] = {}
        self.left_out = 0  # allowed reads the policy's auditConfigs leave out (see below)

    @property
    def accepting(self) -> bool:
        return self.writer.accepting

    def record(self, outcome: CallOutcome) -> None:
        """Queue the call's record; the writer thread builds and serializes it (see render).

        The one record not written: an allowed call that succeeded, whose decision says the
        policy's auditConfigs leave it out (policy.auditing); never a refusal, an error or a
        write, and never while a dry-run policy disagrees."""
        verdict = outcome.call.verdict
        if (
            verdict is not None
            and verdict.decision.unrecorded is not None
            and outcome.code is StatusCode.OK
            and verdict.shadow is None
        ):
            self.left_out += 1
            return
        # A call decided by no policy is recorded with the version in force when it ended.
        etag = self._policy_etag() if outcome.call.verdict is None else None
        self.writer.submit((outcome, etag), self._render)

    def _render(self, queued: tuple[CallOutcome, str | None]) -> bytes:
        """One record's bytes, on the writer thread. A call shaped like an earlier one (the
        usual case: one caller asking again) reuses that call's LogEntry with its own id and
        times; tests/unit/audit/test_recorder_shapes.py holds both ways to the same bytes."""
        outcome, etag = queued
        call = outcome.call
        verdict = call.verdict
        if call.trace_headers or (verdict is not None and verdict.shadow is not None):
            return serialize(self.event(outcome, etag))  # per-call trace ids, dry-run answers
        principal = call.principal
        key = (
            id(principal),
            id(verdict),
            call.method,
            call.resource_name,
            call.raw_peer,
            call.user_agent,
            outcome.code,
            outcome.message,
            outcome.reason,
            outcome.detail,
            etag,
        )
        received_at = datetime.fromtimestamp(call.received_at, UTC)
        found = self._shapes.get(key)
        # Identity, checked: an id is only unique while its object lives, and the memo holds it.
        if found is not None and found[0] is principal and found[1] is verdict:
            entry = restamped(found[2], call.request_id, received_at, outcome.latency_s)
            return serialize_entry(entry)
        entry = to_log_entry(self.event(outcome, etag))
        if len(self._shapes) >= SHAPE_MEMO_SIZE:
            self._shapes.clear()
        self._shapes[key] = (principal, verdict, entry)
        return serialize_entry(entry)

    def event(self, outcome: CallOutcome, policy_etag: str | None = None) -> AuditEvent:
        """The AuditEvent of one outcome; `policy_etag` stands in when no decision was made."""
        call = outcome.call
        principal = call.principal
        verdict = call.verdict
        decision = verdict.decision if verdict is not None else None
        trace_id, span_id = call.trace
        return AuditEvent(
            request_id=call.request_id,
            received_at=datetime.fromtimestamp(call.received_at, UTC),
            latency_s=outcome.latency_s,
            method=call.method,
            resource_name=call.resource_name,
            permission=call.access.permission if call.access is not None else None,
            service=call.access.service if call.access is not None else self._service,
            granted=decision.allowed if decision is not None else None,
            principal_email=principal.principal_email if principal is not None else None,
            principal_subject=principal.principal_subject if principal is not None else None,
            principal_member=principal.member if principal is not None else None,
            token_kind=principal.token_kind if principal is not None else None,
            caller_ip=call.peer,
            user_agent=call.user_agent,
            status_code=int(outcome.code),
            status_message=outcome.message,
            reason=outcome.reason,
            detail=outcome.detail,
            decision_trace=tuple(map(self._step, decision.trace)) if decision is not None else (),
            decision_reason=decision.reason if decision is not None else None,
            decision_cached=verdict.cached if verdict is not None else False,
            policy_etag=decision.policy_etag
            if decision is not None
            else policy_etag or self._policy_etag(),
            shadow_decision=_shadow(verdict.shadow) if verdict is not None else None,
            trace=self._trace(trace_id, call.resource_name),
            span_id=span_id,
            project_fallback=self._project,
            third_party_principal=principal.third_party_principal if principal else None,
            policy_resource=decision.policy_resource if decision is not None else None,
        )

    def _step(self, entry: TraceEntry) -> JsonReady:
        """One trace entry in the record's shape, converted once per distinct entry: cached
        decisions are shared by every call they answer, and uncached ones granted by the same
        binding have equal entries. Only the writer thread calls this."""
        step = self._step_memo.get(entry)
        if step is None:
            if len(self._step_memo) >= TRACE_MEMO_SIZE:
                self._step_memo.clear()
            step = self._step_memo[entry] = json_ready(dataclasses.asdict(entry))
        return step

    def _trace(self, trace_id: str | None, resource_name: str | None) -> str | None:
        """LogEntry.trace as Cloud Logging links it: projects/P/traces/TRACE_ID."""
        if trace_id is None:
            return None
        return f"projects/{project_of(resource_name) or self._project}/traces/{trace_id}"


def _shadow(shadow: Any) -> dict[str, Any] | None:
    if shadow is None:
        return None
    return {"granted": shadow.allowed, "reason": shadow.reason, "policyEtag": shadow.policy_etag}
