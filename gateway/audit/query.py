"""Reading audit files for `opsgate audit tail|query`: rotated sets, filters, a table, follow."""

from __future__ import annotations

import errno
import glob
import itertools
import json
import os
import re
import time
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from google.rpc import code_pb2

from gateway.policy.members import canonical_identity

_DENIAL_CODES = frozenset({code_pb2.PERMISSION_DENIED, code_pb2.UNAUTHENTICATED})
_RELATIVE = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
_EXAMPLES_KEPT = 10


@dataclass(slots=True)
class ReadStats:
    """What reading met. Mutable on purpose: filled in while the caller iterates."""

    records: int = 0
    malformed: int = 0
    # Where the first few malformed lines are, as (file, line number), for the CLI to name.
    examples: list[tuple[str, int]] = field(default_factory=list)


def rotation_set(path: Path) -> list[Path]:
    """`path` and its rotated siblings, oldest first: path.N, ..., path.1, path (those present)."""
    prefix = path.name + "."
    numbered = []
    for sibling in path.parent.glob(f"{glob.escape(path.name)}.*"):
        suffix = sibling.name[len(prefix) :]
        if suffix.isdigit():
            numbered.append((int(suffix), sibling))
    files = [sibling for _, sibling in sorted(numbered, reverse=True)]
    if path.exists():
        files.append(path)
    return files


def read_records(
    paths: Sequence[Path], *, stats: ReadStats | None = None, rotated: bool = True
) -> Iterator[dict[str, Any]]:
    """Every record in `paths` in write order, each path with its rotated files (oldest first).

    Malformed lines (not JSON, not an object, a torn write) are skipped and counted in `stats`.
    A path with no file at all raises FileNotFoundError.
    """
    stats = stats if stats is not None else ReadStats()
    for path in paths:
        files = rotation_set(path) if rotated else [path]
        if not files:
            raise FileNotFoundError(errno.ENOENT, "No such audit log", str(path))
        for file in files:
            try:
                handle = open(file, "rb")  # noqa: SIM115 - closed below; missing files are skipped
            except FileNotFoundError:
                # Rotated away between listing and opening; its records moved to a later name.
                if not rotated:
                    raise
                continue
            with handle:
                for number, raw in enumerate(handle, 1):
                    record = _decode(raw, str(file), number, stats)
                    if record is not None:
                        yield record


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """Which records a query keeps; every field left at its default matches everything."""

    principal: str | None = None  # an email, a principal:// subject, or an IAM member
    resource_prefix: str | None = None
    method: str | None = None  # "GetOperation", or the full methodName or gRPC path
    denied: bool = False
    since: datetime | None = None

    def matches(self, record: Mapping[str, Any]) -> bool:
        payload = _get(record, "protoPayload")
        # The form identities are compared in everywhere: a Kelvin-sign K is not a k.
        if self.principal is not None and canonical_identity(self.principal) not in {
            canonical_identity(value) for value in _principals(payload) if isinstance(value, str)
        }:
            return False
        if self.resource_prefix is not None and not any(
            isinstance(name, str) and name.startswith(self.resource_prefix)
            for name in _resource_names(payload)
        ):
            return False
        method = _get(payload, "methodName")
        if self.method is not None and not _method_matches(method, self.method):
            return False
        if self.denied and not is_denial(record):
            return False
        if self.since is not None:
            moment = record_time(record)
            if moment is None or moment < self.since:
                return False
        return True


def is_denial(record: Mapping[str, Any]) -> bool:
    """A check said no, or the caller was refused as unauthenticated or unauthorized."""
    payload = _get(record, "protoPayload")
    checks = _get(payload, "authorizationInfo")
    if isinstance(checks, list) and any(_get(check, "granted") is False for check in checks):
        return True
    return _get(payload, "status", "code") in _DENIAL_CODES


def record_time(record: Mapping[str, Any]) -> datetime | None:
    """The record's timestamp as an aware UTC datetime, or None when absent or unreadable."""
    text = _get(record, "timestamp")
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_since(text: str, now: datetime) -> datetime:
    """RFC 3339 ("2024-05-01T12:00:00Z"), a date (midnight UTC), or "15m"/"2h"/"7d" before now."""
    text = text.strip()
    relative = _RELATIVE.fullmatch(text)
    if relative:
        amount, unit = relative.groups()
        return (now - timedelta(**{_UNITS[unit]: int(amount)})).astimezone(UTC)
    if _DATE_ONLY.fullmatch(text):
        try:
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc}") from exc
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r}: expected a time like 2024-05-01T12:00:00Z or an age like 15m, 2h, 7d"
        ) from None
    if moment.tzinfo is None:
        # Whose local time? An audit question must not depend on the auditor's laptop.
        raise ValueError(f"{text!r} has no time zone: add Z or an offset such as +02:00")
    return moment.astimezone(UTC)


_COLUMNS = (("TIME", 20), ("SEVERITY", 8), ("PRINCIPAL", 32), ("METHOD", 15), ("GRANTED", 7))
_STATUS_WIDTH = 19  # FAILED_PRECONDITION


def format_table(records: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """A header and one fixed-width line per record; the resource comes last, never cut short."""
    yield _row([name for name, _ in _COLUMNS], "STATUS", "RESOURCE")
    for record in records:
        payload = _get(record, "protoPayload")
        moment = record_time(record)
        principal = next((p for p in _principals(payload) if isinstance(p, str) and p), "-")
        method = _get(payload, "methodName")
        checks = _get(payload, "authorizationInfo")
        granted = _get(checks[0], "granted") if isinstance(checks, list) and checks else None
        resource = _get(payload, "resourceName")
        yield _row(
            [
                moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else str(record.get("timestamp")),
                str(record.get("severity", "-")),
                principal,
                method.rsplit(".", 1)[-1] if isinstance(method, str) else "-",
                "yes" if granted is True else "no" if granted is False else "-",
            ],
            _status_name(_get(payload, "status", "code")),
            resource if isinstance(resource, str) else "-",
        )


def follow(
    path: Path, poll_s: float = 0.5, *, from_start: bool = False, stats: ReadStats | None = None
) -> Generator[dict[str, Any], None, None]:
    """Records appended to `path` from now on (or from its start), following it across rotation.

    The position is taken when follow() is called, not at the first next(). When the file is
    replaced (rotated), the old one is read to its end, then any numbered files rotated after
    it (path.K ... path.1, if it rotated more than once between polls), then the new one; when
    it shrinks (truncated in place) reading starts over. Waits `poll_s` between polls and
    never ends by itself: close() the generator to stop and release the file.
    """
    tail = _FollowedFile(path, at_end=not from_start)
    return _follow(tail, poll_s, stats if stats is not None else ReadStats())


def _follow(
    tail: _FollowedFile, poll_s: float, stats: ReadStats
) -> Generator[dict[str, Any], None, None]:
    try:
        while True:
            lines = tail.poll()
            if not lines:
                time.sleep(poll_s)
                continue
            for file, number, raw in lines:
                record = _decode(raw, file, number, stats)
                if record is not None:
                    yield record
    finally:
        tail.close()


_Line = tuple[str, int, bytes]  # file, line number, the line without its newline


class _FollowedFile:
    """One followed path: the open file, where we are in it, and a line not yet finished."""

    def __init__(self, path: Path, *, at_end: bool) -> None:
        self.path = path
        self._file: IO[bytes] | None = None
        self._identity: tuple[int, int] | None = None
        self._partial = b""
        self._line = 0
        self._open(at_end=at_end)

    def poll(self) -> list[_Line]:
        """Complete lines available now; handles replacement and truncation."""
        lines = self._read()
        if lines:
            return lines
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            return []  # between a rotation's rename and the first write of the new file
        if self._file is None or self._identity is None:
            self._open(at_end=False)
            return self._read()
        if (current.st_dev, current.st_ino) != self._identity:
            # Rotated: the writer closed the old file before renaming it, so reading it to
            # the end now cannot miss a record, and a torn last line is reported, not kept.
            lines = self._read(final=True)
            for newer in self._rotated_after(self._identity):
                lines += _whole_file(newer)
            self._open(at_end=False)
            return lines + self._read()
        if current.st_size < self._file.tell():
            self._file.seek(0)
            self._partial, self._line = b"", 0
            return self._read()
        return []

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _rotated_after(self, identity: tuple[int, int]) -> list[Path]:
        """path.K ... path.1: files rotated after ours (all of them if ours was removed)."""
        newer: list[Path] = []
        for index in itertools.count(1):
            sibling = self.path.with_name(f"{self.path.name}.{index}")
            try:
                info = os.stat(sibling)
            except FileNotFoundError:
                break
            if (info.st_dev, info.st_ino) == identity:
                break
            newer.append(sibling)
        return newer[::-1]

    def _open(self, *, at_end: bool) -> None:
        self.close()
        self._partial, self._line = b"", 0
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - kept open while following
        except FileNotFoundError:
            self._identity = None
            return
        info = os.fstat(handle.fileno())
        self._file, self._identity = handle, (info.st_dev, info.st_ino)
        if at_end:
            handle.seek(0, os.SEEK_END)

    def _read(self, *, final: bool = False) -> list[_Line]:
        if self._file is None:
            return []
        data = self._partial + self._file.read()
        *complete, self._partial = data.split(b"\n")
        if final and self._partial:
            complete.append(self._partial)
            self._partial = b""
        first = self._line + 1
        self._line += len(complete)
        return [(str(self.path), first + i, raw) for i, raw in enumerate(complete)]


def _whole_file(path: Path) -> list[_Line]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return [(str(path), number, raw) for number, raw in enumerate(data.split(b"\n"), 1)]


def _decode(raw: bytes, file: str, number: int, stats: ReadStats) -> dict[str, Any] | None:
    if not raw.strip():
        return None
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        record = None
    if not isinstance(record, dict):
        stats.malformed += 1
        if len(stats.examples) < _EXAMPLES_KEPT:
            stats.examples.append((file, number))
        return None
    stats.records += 1
    return record


def _get(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _principals(payload: Any) -> list[Any]:
    # A third party's caller has no principalEmail (Cloud Audit Logs' rule): its verified
    # email is found under thirdPartyPrincipal.
    return [
        _get(payload, "authenticationInfo", "principalEmail"),
        _get(payload, "authenticationInfo", "principalSubject"),
        _get(payload, "metadata", "principalMember"),
        _get(payload, "authenticationInfo", "thirdPartyPrincipal", "email"),
    ]


def _method_matches(method_name: Any, wanted: str) -> bool:
    if not isinstance(method_name, str):
        return False
    wanted = wanted.lstrip("/").replace("/", ".")
    return method_name == wanted or method_name.rsplit(".", 1)[-1] == wanted


def _status_name(code: Any) -> str:
    if code is None:
        return "OK"
    try:
        return str(code_pb2.Code.Name(code))
    except (ValueError, TypeError):
        return str(code)


def _row(cells: Sequence[str], status: str, resource: str) -> str:
    fixed = [_cell(text, width) for text, (_, width) in zip(cells, _COLUMNS, strict=True)]
    return "  ".join([*fixed, _cell(status, _STATUS_WIDTH), _printable(resource)]).rstrip()


def _cell(text: str, width: int) -> str:
    text = _printable(text)
    return (text if len(text) <= width else text[: width - 1] + "…").ljust(width)


def _printable(text: str) -> str:
    # Names in records come from callers; escape sequences in them must not drive the
    # auditor's terminal.
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _resource_names(payload: Any) -> list[Any]:
    """The name the caller sent, and the name the policy checked it by (a project's id where
    the call used its number): a resource is found by either."""
    names = [_get(payload, "resourceName")]
    checks = _get(payload, "authorizationInfo")
    if isinstance(checks, list):
        names.extend(c.get("resource") for c in checks if isinstance(c, dict))
    return names
