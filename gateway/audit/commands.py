"""`opsgate audit query|tail`: filter a gateway's audit file for an auditor."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from gateway.audit.query import (
    ReadStats,
    RecordFilter,
    follow,
    format_table,
    parse_since,
    read_records,
)


def add_arguments(parser: argparse.ArgumentParser, *, tail: bool) -> None:
    parser.add_argument(
        "file", type=Path, help="the audit file (rotated PATH.N files are read too)"
    )
    parser.add_argument("--principal", help="email, IAM member or principal:// subject")
    parser.add_argument("--resource-prefix", help="resource names starting with this")
    parser.add_argument("--method", help="GetOperation, ListOperations, ... or the full name")
    parser.add_argument("--denied", action="store_true", help="only denied or unauthenticated")
    parser.add_argument("--since", help="RFC 3339 time, or relative: 15m, 2h, 7d")
    parser.add_argument(
        "--format", choices=("table", "json"), default="table", help="readable table or JSON lines"
    )
    if tail:
        parser.add_argument("-n", "--lines", type=int, default=20, help="last N matching records")
        parser.add_argument("-f", "--follow", action="store_true", help="keep printing new ones")


def _filter(args: argparse.Namespace) -> RecordFilter:
    since = parse_since(args.since, datetime.now(UTC)) if args.since else None
    return RecordFilter(
        principal=args.principal,
        resource_prefix=args.resource_prefix,
        method=args.method,
        denied=args.denied,
        since=since,
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
    """Both subcommands; 2 when the file cannot be read or --since is not a time."""
    try:
        wanted = _filter(args)
    except ValueError as exc:
        print(f"opsgate: error: --since: {exc}", file=sys.stderr)
        return 2
    if not args.file.exists():
        print(f"opsgate: error: {args.file}: no such file", file=sys.stderr)
        return 2
    stats = ReadStats()
    matching: Iterator[dict[str, Any]] = (
        r for r in read_records([args.file], stats=stats) if wanted.matches(r)
    )
    if args.command == "tail":
        matching = iter(deque(matching, maxlen=max(args.lines, 0)))
    _emit(matching, args.format, out)
    if stats.malformed:
        print(f"opsgate: {stats.malformed} malformed line(s) skipped", file=sys.stderr)
    if args.command == "tail" and args.follow:
        new = (r for r in follow(args.file, stats=stats) if wanted.matches(r))
        # The table header only once: the first page printed it already.
        _emit_follow(new, args.format, out)
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
