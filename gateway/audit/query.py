"""Reading audit files for `opsgate audit tail|query`: which files an argument names (rotated
and per-worker sets, globs, standard input), reading them merged in time order, filters, a
table, follow."""

from __future__ import annotations

import errno
import glob
import heapq
import itertools
import json
import os
import re
import sys
import time
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from google.rpc import code_pb2

from gateway.errors import OpsgateError
from gateway.policy.members import canonical_identity

_DENIAL_CODES = frozenset({code_pb2.PERMISSION_DENIED, code_pb2.UNAUTHENTICATED})
_RELATIVE = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
_DAYS_BACK = {"today": 0, "yesterday": 1}
_EXAMPLES_KEPT = 10
_GLOB_MAGIC = re.compile(r"[*?[]")
_ROTATED = re.compile(r"(.+)\.(\d+)")
_EARLIEST = datetime.min.replace(tzinfo=UTC)
STDIN = "-"


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


class InputError(OpsgateError, ValueError):
    """An argument names nothing readable; the message names the argument or the file."""

    reason = "INPUT_INVALID"


@dataclass(frozen=True, slots=True)
class Trail:
    """One stream of records in write order: files one writer wrote one after the other
    (PATH.N ... PATH.1, PATH), or standard input (no files)."""

    files: tuple[Path, ...] = ()
    live: Path | None = None  # the file its writer appends to: what `tail -f` follows
    stdin: bool = False


def worker_files(path: Path) -> list[Path]:
    """The files `opsgate serve --workers N` writes for audit.file.path PATH ("audit.log" ->
    "audit-w0.log", "audit-w1.log", ...; see gateway.workers), present or rotated, in K order."""
    stem, suffix = path.stem, path.suffix
    own = re.compile(rf"{re.escape(stem)}-w(\d+){re.escape(suffix)}(?:\.\d+)?")
    found: dict[int, Path] = {}
    for sibling in path.parent.glob(f"{glob.escape(stem)}-w*"):
        matched = own.fullmatch(sibling.name)
        if matched:
            index = int(matched.group(1))
            found[index] = path.with_name(f"{stem}-w{index}{suffix}")
    return [found[index] for index in sorted(found)]


def resolve_inputs(arguments: Sequence[str]) -> list[Trail]:
    """The trails the command line names, each file once, checked readable before any is read.

    `-` is standard input. A quoted glob is every file it matches (exactly those). Any other
    argument PATH is the whole trail of a gateway whose audit.file.path is PATH: PATH and its
    rotated PATH.N, and with --workers every PATH-wK and its rotated files. Files are grouped
    into trails by name (PATH.N belongs with PATH), oldest first within a trail.
    """
    chosen: list[Path] = []
    live: list[Path] = []  # named outright: followed even before they exist
    stdin = False
    for argument in arguments:
        if argument == STDIN:
            stdin = True
            continue
        if _GLOB_MAGIC.search(argument):
            # Directories a pattern happens to match are not audit files.
            matches = sorted(Path(m) for m in glob.glob(argument) if not os.path.isdir(m))
            if not matches:
                raise InputError(f"{argument}: no file matches")
            chosen.extend(matches)
            continue
        path = Path(argument)
        family = [path, *worker_files(path)]
        found = [file for member in family for file in rotation_set(member)]
        if not found and not path.is_dir():
            raise InputError(f"{argument}: no such file")
        chosen.extend(found or [path])
        live.extend(family)
    files = _readable_once(chosen)
    trails: dict[Path, list[Path]] = {}
    for file in files:
        trails.setdefault(_base(file), []).append(file)
    for path in live:
        base = _base(path)
        if base in trails or not path.exists():  # not yet written: followed all the same
            trails.setdefault(base, [])
        # else: the same file as one read under another name
    ordered = [
        Trail(files=tuple(sorted(members, key=_rotation_order)), live=base)
        for base, members in trails.items()
    ]
    return ordered + ([Trail(stdin=True)] if stdin else [])


def _readable_once(files: Sequence[Path]) -> list[Path]:
    """`files` without repeats (the same file under two names counts once); an error for the
    first that cannot be opened for reading."""
    seen: set[tuple[int, int]] = set()
    kept: list[Path] = []
    for file in files:
        try:
            with open(file, "rb") as handle:
                info = os.fstat(handle.fileno())
        except OSError as exc:
            raise InputError(f"{file}: {(exc.strerror or str(exc)).lower()}") from None
        identity = (info.st_dev, info.st_ino)
        if identity not in seen:
            seen.add(identity)
            kept.append(file)
    return kept


def _base(file: Path) -> Path:
    rotated = _ROTATED.fullmatch(file.name)
    return file.with_name(rotated.group(1)) if rotated else file


def _rotation_order(file: Path) -> tuple[int, int]:
    rotated = _ROTATED.fullmatch(file.name)
    return (0, -int(rotated.group(2))) if rotated else (1, 0)


def read_trails(
    trails: Sequence[Trail], *, stats: ReadStats | None = None, stdin: IO[bytes] | None = None
) -> Iterator[dict[str, Any]]:
    """Every record of `trails`, merged in time order across trails (each trail kept in the
    order it was written), reading lazily: a long trail is never held in memory.

    A record without a readable timestamp keeps its place after the one before it.
    """
    stats = stats if stats is not None else ReadStats()
    streams = [_timed(_trail_records(trail, stats, stdin)) for trail in trails]
    for _, record in heapq.merge(*streams, key=_moment):
        yield record


def _trail_records(
    trail: Trail, stats: ReadStats, stdin: IO[bytes] | None
) -> Iterator[dict[str, Any]]:
    if trail.stdin:
        source = stdin if stdin is not None else sys.stdin.buffer
        yield from _lines(source, "<stdin>", stats)
        return
    for file in trail.files:
        try:
            handle = open(file, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            continue  # rotated away since it was listed: its records moved to a later name
        with handle:
            yield from _lines(handle, str(file), stats)


def _lines(handle: IO[bytes], name: str, stats: ReadStats) -> Iterator[dict[str, Any]]:
    for number, raw in enumerate(handle, 1):
        record = _decode(raw, name, number, stats)
        if record is not None:
            yield record


def _timed(records: Iterator[dict[str, Any]]) -> Iterator[tuple[datetime, dict[str, Any]]]:
    moment = _EARLIEST
    for record in records:
        moment = record_time(record) or moment
        yield moment, record


def _moment(item: tuple[datetime, dict[str, Any]]) -> datetime:
    return item[0]


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """Which records a query keeps; every field left at its default matches everything."""

    principal: str | None = None  # an email, a principal:// subject, or an IAM member
    resource: str | None = None  # exactly this name
    resource_prefix: str | None = None
    method: str | None = None  # "GetOperation", or the full methodName or gRPC path
    denied: bool = False
    since: datetime | None = None  # at or after
    until: datetime | None = None  # before

    def matches(self, record: Mapping[str, Any]) -> bool:
        payload = _get(record, "protoPayload")
        # The form identities are compared in everywhere: a Kelvin-sign K is not a k.
        if self.principal is not None and canonical_identity(self.principal) not in {
            canonical_identity(value) for value in _principals(payload) if isinstance(value, str)
        }:
            return False
        if self.resource is not None and self.resource not in _resource_names(payload):
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
        if self.since is not None or self.until is not None:
            moment = record_time(record)
            if moment is None:
                return False
            if self.since is not None and moment < self.since:
                return False
            if self.until is not None and moment >= self.until:
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
    """RFC 3339 ("2024-05-01T12:00:00Z"), a date (midnight UTC), "today" or "yesterday"
    (midnight UTC), or "15m"/"2h"/"7d" before now. --since and --until both take these."""
    text = text.strip()
    relative = _RELATIVE.fullmatch(text)
    if relative:
        amount, unit = relative.groups()
        return (now - timedelta(**{_UNITS[unit]: int(amount)})).astimezone(UTC)
    if text in _DAYS_BACK:
        midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return midnight - timedelta(days=_DAYS_BACK[text])
    if _DATE_ONLY.fullmatch(text):
        try:
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc}") from exc
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r}: expected a time like 2024-05-01T12:00:00Z, a date, today, yesterday,"
            " or an age like 15m, 2h, 7d"
        ) from None
    if moment.tzinfo is None:
        # Whose local time? An audit question must not depend on the auditor's laptop.
        raise ValueError(f"{text!r} has no time zone: add Z or an offset such as +02:00")
    return moment.astimezone(UTC)


_COLUMNS = (("TIME", 20), ("SEVERITY", 8), ("PRINCIPAL", 32), ("METHOD", 15), ("GRANTED", 7))
_STATUS_WIDTH = 19  # FAILED_PRECONDITION


def format_table(records: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """A header and one fixed-width line per record; the resource is never cut short, and a
    refused or failed call ends with why (see refusal_reason)."""
    yield _row([name for name, _ in _COLUMNS], "STATUS", "RESOURCE", "REASON")
    for record in records:
        payload = _get(record, "protoPayload")
        moment = record_time(record)
        principal = next((p for p in _shown_principals(payload) if isinstance(p, str) and p), "-")
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
            refusal_reason(record),
        )


_REASON_WIDTH = 160


def refusal_reason(record: Mapping[str, Any]) -> str:
    """Why a call was refused or failed, in one line: the ErrorInfo reason and what the
    gateway found ("IAM_PERMISSION_DENIED: denied by a deny rule on projects/p (line 9) naming
    user:x"); "" for a call that succeeded. The record itself keeps every field in full:
    protoPayload.metadata.reason, .detail and .decision.reason."""
    payload = _get(record, "protoPayload")
    code = _get(payload, "status", "code")
    denial = is_denial(record)
    if code in (None, code_pb2.OK) and not denial:
        return ""
    metadata = _get(payload, "metadata")
    reason = _get(metadata, "reason")
    found = next(
        (
            text
            for text in (
                _get(metadata, "detail"),
                _get(metadata, "decision", "reason") if denial else None,
                _get(payload, "status", "message"),
            )
            if isinstance(text, str) and text
        ),
        "",
    )
    found = _without_what_is_shown(found, payload)
    text = ": ".join(part for part in (reason, found) if isinstance(part, str) and part)
    return text if len(text) <= _REASON_WIDTH else text[: _REASON_WIDTH - 1] + "…"


def _without_what_is_shown(detail: str, payload: Any) -> str:
    """The evaluator's explanation opens with "PERMISSION denied on RESOURCE"; the row shows
    the resource, so "denied" says the same in a word."""
    checks = _get(payload, "authorizationInfo")
    for check in checks if isinstance(checks, list) else ():
        permission = _get(check, "permission")
        for name in (_get(check, "resource"), _get(payload, "resourceName")):
            opening = f"{permission} denied on {name}"
            if isinstance(permission, str) and isinstance(name, str) and detail.startswith(opening):
                return "denied" + detail[len(opening) :]
    return detail


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
    return follow_all([path], poll_s, from_start=from_start, stats=stats)


def follow_all(
    paths: Sequence[Path],
    poll_s: float = 0.5,
    *,
    from_start: bool = False,
    stats: ReadStats | None = None,
) -> Generator[dict[str, Any], None, None]:
    """follow() over several files at once (the files of several workers): what each poll
    finds in all of them, in time order."""
    tails = [_FollowedFile(path, at_end=not from_start) for path in paths]
    return _follow(tails, poll_s, stats if stats is not None else ReadStats())


def _follow(
    tails: Sequence[_FollowedFile], poll_s: float, stats: ReadStats
) -> Generator[dict[str, Any], None, None]:
    try:
        while True:
            found = [
                [
                    record
                    for file, number, raw in tail.poll()
                    if (record := _decode(raw, file, number, stats)) is not None
                ]
                for tail in tails
            ]
            if not any(found):
                time.sleep(poll_s)
                continue
            # Each file's records stay in write order; the files' are interleaved by time.
            for _, record in heapq.merge(*(_timed(iter(new)) for new in found), key=_moment):
                yield record
    finally:
        for tail in tails:
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


def _shown_principals(payload: Any) -> list[Any]:
    # The most readable first: an email says who; a subject is an opaque number.
    email, subject, member, third_party = _principals(payload)
    return [email, third_party, member, subject]


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


def _row(cells: Sequence[str], status: str, resource: str, reason: str) -> str:
    fixed = [_cell(text, width) for text, (_, width) in zip(cells, _COLUMNS, strict=True)]
    last = [_printable(resource), _printable(reason)] if reason else [_printable(resource)]
    return "  ".join([*fixed, _cell(status, _STATUS_WIDTH), *last]).rstrip()


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
