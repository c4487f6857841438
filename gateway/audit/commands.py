"""`opsgate audit query|tail`: filter a gateway's audit files for an auditor."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from gateway.audit.query import (
    STDIN,
    InputError,
    ReadStats,
    RecordFilter,
    follow_all,
    format_table,
    parse_since,
    read_trails,
    resolve_inputs,
)


def add_arguments(parser: argparse.ArgumentParser, *, tail: bool) -> None:
    parser.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help=(
            "audit.file.path of a gateway: PATH, its rotated PATH.N and, with --workers, its"
            " per-worker PATH-wK files are read; a quoted glob reads exactly the files it"
            " matches; - reads standard input. Records are merged in time order"
        ),
    )
    parser.add_argument("--principal", help="email, IAM member or principal:// subject")
    parser.add_argument(
        "--resource", help="exactly this resource (as sent, or as the policy named it)"
    )
    parser.add_argument("--resource-prefix", help="resource names starting with this")
    parser.add_argument("--method", help="GetOperation, ListOperations, ... or the full name")
    parser.add_argument("--denied", action="store_true", help="only denied or unauthenticated")
    when = "RFC 3339 time, a date, today, yesterday (midnight UTC), or an age: 15m, 2h, 7d"
    parser.add_argument("--since", help=f"records at or after: {when}")
    parser.add_argument("--until", help=f"records before: {when}")
    parser.add_argument(
        "--format", choices=("table", "json"), default="table", help="readable table or JSON lines"
    )
    if tail:
        parser.add_argument("-n", "--lines", type=int, default=20, help="last N matching records")
        parser.add_argument("-f", "--follow", action="store_true", help="keep printing new ones")


class _UsageError(ValueError):
    pass


def _filter(args: argparse.Namespace) -> RecordFilter:
    now = datetime.now(UTC)
    moments = {}
    for flag in ("since", "until"):
        text = getattr(args, flag)
        try:
            moments[flag] = parse_since(text, now) if text else None
        except ValueError as exc:
            raise _UsageError(f"--{flag}: {exc}") from None
    since, until = moments["since"], moments["until"]
    if since is not None and until is not None and until <= since:
        raise _UsageError(f"--until ({until:%Y-%m-%dT%H:%M:%SZ}) is not after --since")
    return RecordFilter(
        principal=args.principal,
        resource=args.resource,
        resource_prefix=args.resource_prefix,
        method=args.method,
        denied=args.denied,
        since=since,
        until=until,
    )


def _emit(records: Iterable[Mapping[str, Any]], fmt: str, out: TextIO) -> None:
    lines: Iterator[str] = (
        format_table(records)
        if fmt == "table"
        else (json.dumps(record, sort_keys=True) for record in records)
    )
    for line in lines:
        print(line, file=out, flush=True)


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Both subcommands; 2 when a file cannot be read or a time is not one. A reader that
    stops reading (`| head`) is left to the CLI's entry, which ends every command alike."""
    try:
        return _run(args, out)
    except (_UsageError, InputError) as exc:
        print(f"opsgate: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            raise  # not a file's error: gateway.cli.main ends the command quietly (exit 141)
        # A file that went away or became unreadable while it was being read.
        name = f"{exc.filename}: " if exc.filename else ""
        print(f"opsgate: error: {name}{(exc.strerror or str(exc)).lower()}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, out: TextIO) -> int:
    wanted = _filter(args)
    following = args.command == "tail" and args.follow
    if following and STDIN in args.files:
        raise _UsageError(
            "standard input cannot be followed; `opsgate audit query -` filters a stream"
            " as it arrives"
        )
    trails = resolve_inputs(args.files)
    # Taken before the first page is read, so no record written meanwhile is lost; the few
    # read twice (in the page and by the follower) are printed once.
    new = (
        follow_all([trail.live for trail in trails if trail.live is not None])
        if following
        else None
    )
    stats = ReadStats()
    try:
        matching = (r for r in read_trails(trails, stats=stats) if wanted.matches(r))
        page: list[dict[str, Any]] = []
        if args.command == "tail":
            page = list(deque(matching, maxlen=max(args.lines, 0)))
            _emit(page, args.format, out)
        else:
            _emit(matching, args.format, out)
        if stats.malformed:
            print(f"opsgate: {stats.malformed} malformed line(s) skipped", file=sys.stderr)
        if new is not None:
            shown = {r.get("insertId") for r in page} - {None}
            fresh = (r for r in new if wanted.matches(r) and r.get("insertId") not in shown)
            # The table header only once: the first page printed it already.
            _emit_follow(fresh, args.format, out)
    finally:
        if new is not None:
            new.close()
    return 0


def _emit_follow(records: Iterator[Mapping[str, Any]], fmt: str, out: TextIO) -> None:
    try:
        if fmt == "json":
            _emit(records, fmt, out)
        else:
            for line in itertools.islice(format_table(records), 1, None):
                print(line, file=out, flush=True)
    except KeyboardInterrupt:
        return
