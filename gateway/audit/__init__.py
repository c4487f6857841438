"""The audit trail: one Cloud-Audit-Logs-shaped record per call, written off the event loop."""

from __future__ import annotations

from gateway.audit.event import AuditEvent
from gateway.audit.logentry import to_log_entry
from gateway.audit.sinks import (
    AuditSink,
    MemorySink,
    PartialWriteError,
    RotatingFileSink,
    StdoutSink,
)
from gateway.audit.writer import AuditWriter

__all__ = [
    "AuditEvent",
    "AuditSink",
    "AuditWriter",
    "MemorySink",
    "PartialWriteError",
    "RotatingFileSink",
    "StdoutSink",
    "to_log_entry",
]
