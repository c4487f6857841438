"""Counting: audit records against the calls the gateway answered, and the gateway's own logs.

Audit: every call the gateway answered carries a request id, and must have exactly one record
in the audit file (rotated files included). Logs: an ERROR with a traceback, an asyncio or
thread error, or a raw traceback on a subprocess's stderr is an unhandled exception.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def audit_files(path: Path) -> list[Path]:
    """The audit file and its rotated predecessors, oldest first."""
    rotated = []
    for candidate in path.parent.glob(path.name + ".*"):
        suffix = candidate.name[len(path.name) + 1 :]
        if suffix.isdigit():
            rotated.append((int(suffix), candidate))
    return [p for _, p in sorted(rotated, reverse=True)] + ([path] if path.exists() else [])


def read_audit(path: Path) -> tuple[list[dict[str, Any]], int]:
    """(records, malformed lines) from the audit file and its rotations."""
    records: list[dict[str, Any]] = []
    malformed = 0
    for file in audit_files(path):
        for line in file.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                malformed += 1
    return records, malformed


def request_id_of(record: dict[str, Any]) -> str | None:
    value = record.get("protoPayload", {}).get("metadata", {}).get("requestId")
    return str(value) if value is not None else None


@dataclass
class AuditCheck:
    """Answered calls against records: nothing may be lost or written twice.

    A call the gateway answered carries a request id and must have exactly one record. A call
    that got no request id (refused by the transport, or its client stopped waiting) may or may
    not have reached the chain, so it may have one record or none: `unanswered` bounds those.
    With `exact`, every unanswered call is known to have reached the chain and needs its record.
    """

    records: int = 0
    answered: int = 0
    unanswered: int = 0
    exact: bool = False
    lost: int = 0  # answered calls without a record (or, exact, too few records)
    duplicated: int = 0  # request ids with more than one record
    unexplained: int = 0  # records beyond the calls that can have made one
    malformed: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unexplained or self.malformed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "answered": self.answered,
            "unanswered": self.unanswered,
            "exact": self.exact,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "unexplained": self.unexplained,
            "malformed": self.malformed,
            "ok": self.ok,
            "examples": self.examples[:5],
        }


def reconcile(
    path: Path, answered: Iterable[str], unanswered: int = 0, *, exact: bool = False
) -> AuditCheck:
    """Compare the audit trail at `path` with the request ids the clients were given."""
    records, malformed = read_audit(path)
    ids = Counter(request_id_of(r) for r in records)
    wanted = list(answered)
    check = AuditCheck(
        records=len(records),
        answered=len(wanted),
        unanswered=unanswered,
        exact=exact,
        malformed=malformed,
    )
    for request_id in wanted:
        if not ids.get(request_id):
            check.lost += 1
            check.examples.append(f"no record for request id {request_id}")
    for seen_id, count in ids.items():
        if count > 1:
            check.duplicated += count - 1
            check.examples.append(f"{count} records for request id {seen_id}")
    ceiling = len(wanted) + unanswered
    check.unexplained = max(0, len(records) - ceiling)
    if check.unexplained:
        check.examples.append(f"{check.unexplained} records beyond the calls made")
    if exact and len(records) < ceiling:
        check.lost = max(check.lost, ceiling - len(records))
        check.examples.append(f"{ceiling} calls reached the chain, {len(records)} records")
    return check


def token_leaks(report: LogReport, tokens: Iterable[str], skip: str = "") -> list[str]:
    """Log lines holding (the start of) a JWT's payload or signature; lines whose text
    contains `skip` are a known bug's and left out."""
    secrets: set[str] = set()
    for token in tokens:
        parts = token.split(".")
        if len(parts) == 3:
            secrets.update(p[:32] for p in parts[1:] if len(p) >= 32)
    found = []
    for line in report.lines:
        text = line.message + line.traceback
        if skip and skip in text:
            continue
        if any(secret in text for secret in secrets):
            found.append(f"{line.logger}: {line.message[:120]}")
    return found


# -- logs


@dataclass(frozen=True, slots=True)
class LogLine:
    logger: str
    level: str
    message: str
    traceback: str = ""


@dataclass
class LogReport:
    """What the gateway logged at WARNING and above, and which of it means a bug.

    `unhandled`: exceptions nobody handled (a bug). `noise`: third-party ERROR tracebacks for
    requests a client malformed on purpose: not a crash, but any client can make them.
    """

    lines: list[LogLine] = field(default_factory=list)
    unhandled: list[str] = field(default_factory=list)
    noise: list[str] = field(default_factory=list)

    def add(self, line: LogLine) -> None:
        self.lines.append(line)
        why = judge(line)
        if why is None:
            return
        if why.startswith(NOISE_PREFIX):
            self.noise.append(why[len(NOISE_PREFIX) :])
        else:
            self.unhandled.append(why)

    def errors(self) -> Counter[str]:
        """ERROR lines by message shape (digits folded), for the report."""
        return Counter(
            re.sub(r"\d+(\.\d+)?", "N", line.message)[:160]
            for line in self.lines
            if line.level in ("ERROR", "CRITICAL")
        )


# An ERROR with a traceback is a bug unless it is one of these (logger prefix, message regex).
EXPECTED_TRACEBACKS: tuple[tuple[str, str], ...] = ()


NOISE_PREFIX = "noise: "
_NOT_EXCEPTIONS = ("Traceback (most recent call last)", "During handling", "The above exception")


def exception_line(traceback: str) -> str:
    """The `module.ExceptionType: message` line of a formatted traceback (the last one)."""
    lines = [
        line
        for line in traceback.splitlines()
        if line.strip() and not line[0].isspace() and not line.startswith(_NOT_EXCEPTIONS)
    ]
    return lines[-1] if lines else ""


def judge(line: LogLine) -> str | None:
    """Why this line is an unhandled exception (or, prefixed NOISE_PREFIX, noise), or None."""
    if line.level not in ("ERROR", "CRITICAL"):
        return None
    for prefix, pattern in EXPECTED_TRACEBACKS:
        if line.logger.startswith(prefix) and re.search(pattern, line.message):
            return None
    last = exception_line(line.traceback)
    if line.logger.startswith("aiohttp") and last.startswith("aiohttp.http_exceptions."):
        # aiohttp logs every malformed HTTP request (bar a bad method) at ERROR with a
        # traceback: the request was refused with 400, nothing crashed.
        return f"{NOISE_PREFIX}{line.logger}: {line.message[:80]} | {last[:160]}"
    if (
        line.logger.startswith("grpc._cython")
        and "raised in core by servicer method" in line.message
        and "ExecuteBatchError" in last
    ):
        # grpc logs a servicer's send on a call its core had already failed (a malformed
        # HTTP/2 request it refused): the handler's abort() found nobody to answer.
        return f"{NOISE_PREFIX}{line.logger}: {line.message[:120]} | ExecuteBatchError"
    if line.traceback:
        return f"{line.logger}: {line.message[:200]} | {last[:200]}"
    if line.logger.startswith(("asyncio", "grpc", "aiohttp", "concurrent", "thread")):
        return f"{line.logger}: {line.message[:300]}"
    return None


class _Collector(logging.Handler):
    def __init__(self, report: LogReport) -> None:
        super().__init__(logging.WARNING)
        self.report = report
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        trace = ""
        if record.exc_info:
            trace = logging.Formatter().formatException(record.exc_info)
        try:
            message = record.getMessage()
        except Exception:  # a broken log call is itself worth seeing
            message = str(record.msg)
        line = LogLine(record.name, record.levelname, message, trace)
        with self._guard:
            self.report.add(line)


@contextmanager
def capturing_logs() -> Iterator[LogReport]:
    """Everything logged in this process at WARNING+, plus thread and unraisable exceptions."""
    report = LogReport()
    collector = _Collector(report)
    root = logging.getLogger()
    ours = logging.getLogger("opsgate")
    previous = ours.level
    root.addHandler(collector)
    if ours.level == logging.NOTSET or ours.level > logging.INFO:
        ours.setLevel(logging.INFO)
    old_thread_hook, old_unraisable = threading.excepthook, sys.unraisablehook

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        report.unhandled.append(
            f"thread {args.thread.name if args.thread else '?'}: "
            f"{args.exc_type.__name__}: {args.exc_value}"
        )
        old_thread_hook(args)

    def unraisable_hook(args: Any) -> None:
        report.unhandled.append(f"unraisable: {args.exc_type.__name__}: {args.exc_value}")

    threading.excepthook = thread_hook
    sys.unraisablehook = unraisable_hook
    try:
        yield report
    finally:
        threading.excepthook, sys.unraisablehook = old_thread_hook, old_unraisable
        root.removeHandler(collector)
        ours.setLevel(previous)


def judge_stderr(lines: Iterable[str]) -> LogReport:
    """A subprocess gateway's stderr (JSON lines; anything else is raw output)."""
    report = LogReport()
    raw_traceback: list[str] = []
    for text in lines:
        text = text.rstrip("\n")
        if not text.strip():
            continue
        try:
            entry = json.loads(text)
            if not isinstance(entry, dict):
                raise ValueError
        except ValueError:
            if "Traceback (most recent call last)" in text or raw_traceback:
                raw_traceback.append(text)
                if not text.startswith((" ", "Traceback")):  # the exception line ends it
                    report.unhandled.append("raw traceback on stderr: " + text[:300])
                    raw_traceback = []
            continue
        level = str(entry.get("severity", ""))
        if level not in ("WARNING", "ERROR", "CRITICAL"):
            continue
        line = LogLine(
            str(entry.get("logger", "")),
            level,
            str(entry.get("message", "")),
            str(entry.get("exception", "")),
        )
        report.add(line)
    return report
