"""The audit query tools: rotated sets, malformed lines, filters, --since, the table, follow."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.query import (
    ReadStats,
    RecordFilter,
    follow,
    format_table,
    parse_since,
    read_records,
    rotation_set,
)
from gateway.audit.sinks import RotatingFileSink
from gateway.audit.writer import serialize
from tests.unit.audit.builders import (
    CANCEL,
    LIST,
    OPERATION,
    denied,
    event,
    record,
    unauthenticated,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def lines_for(*request_ids: str) -> bytes:
    return b"".join(serialize(event(request_id=request_id)) for request_id in request_ids)


def insert_ids(records: Any) -> list[str]:
    return [r["insertId"] for r in records]


def test_rotated_files_are_read_oldest_first(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    for suffix, request_id in [(".10", "a"), (".2", "c"), (".9", "b"), (".1", "d"), ("", "e")]:
        path.with_name("audit.log" + suffix).write_bytes(lines_for(request_id))
    path.with_name("audit.log.bak").write_bytes(b"not part of the set\n")
    path.with_name("audit.log.1.gz").write_bytes(b"\x1f\x8b")
    assert [p.name for p in rotation_set(path)] == [
        "audit.log.10", "audit.log.9", "audit.log.2", "audit.log.1", "audit.log",
    ]  # fmt: skip
    assert insert_ids(read_records([path])) == ["a", "b", "c", "d", "e"]
    assert insert_ids(read_records([path], rotated=False)) == ["e"]


def test_rotated_files_are_read_even_when_the_current_one_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.with_name("audit.log.1").write_bytes(lines_for("a"))
    assert insert_ids(read_records([path])) == ["a"]


def test_a_log_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list(read_records([tmp_path / "missing.log"]))


def test_malformed_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(
        lines_for("a")
        + b"not json\n"
        + b"[1, 2]\n"
        + b"\n"  # blank: not a record, not an error
        + b"\xff\xfe garbage\n"
        + lines_for("b")
        + b'{"insertId": "torn'  # the last write was cut short
    )
    stats = ReadStats()
    assert insert_ids(read_records([path], stats=stats)) == ["a", "b"]
    assert (stats.records, stats.malformed) == (2, 4)
    assert stats.examples == [(str(path), 2), (str(path), 3), (str(path), 5), (str(path), 7)]


ALICE = record(event(request_id="alice-get"))
BOB_DENIED = record(
    denied(
        request_id="bob-denied",
        method=CANCEL,
        principal_email="bob@acme.example",
        principal_subject="principal://goog/subject/bob@acme.example",
        principal_member="user:bob@acme.example",
        received_at=NOW - timedelta(hours=3),
    )
)
ANONYMOUS = record(unauthenticated(request_id="anonymous", received_at=NOW - timedelta(days=2)))
SERVICE_LIST = record(
    event(
        request_id="svc-list",
        method=LIST,
        resource_name="projects/other/locations/eu",
        principal_email=None,
        principal_subject="principal://idp.acme.example/subject/svc-7",
        principal_member="principal://idp.acme.example/subject/svc-7",
        received_at=NOW - timedelta(minutes=5),
    )
)
NOT_FOUND = record(event(request_id="not-found", status_code=5, status_message="not found"))
ALL = [ALICE, BOB_DENIED, ANONYMOUS, SERVICE_LIST, NOT_FOUND]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        (RecordFilter(), ["alice-get", "bob-denied", "anonymous", "svc-list", "not-found"]),
        (RecordFilter(principal="bob@acme.example"), ["bob-denied"]),
        (RecordFilter(principal="BOB@ACME.EXAMPLE"), ["bob-denied"]),
        (RecordFilter(principal="user:bob@acme.example"), ["bob-denied"]),
        (RecordFilter(principal="principal://goog/subject/bob@acme.example"), ["bob-denied"]),
        (RecordFilter(principal="principal://idp.acme.example/subject/svc-7"), ["svc-list"]),
        (RecordFilter(principal="acme.example"), []),
        (RecordFilter(resource_prefix="projects/other/"), ["svc-list"]),
        (RecordFilter(resource_prefix=OPERATION), ["alice-get", "bob-denied", "anonymous", "not-found"]),
        (RecordFilter(method="CancelOperation"), ["bob-denied"]),
        (RecordFilter(method="google.longrunning.Operations.ListOperations"), ["svc-list"]),
        (RecordFilter(method="/google.longrunning.Operations/ListOperations"), ["svc-list"]),
        (RecordFilter(method="Operations"), []),
        (RecordFilter(denied=True), ["bob-denied", "anonymous"]),
        (RecordFilter(since=NOW - timedelta(hours=1)), ["alice-get", "svc-list", "not-found"]),
        (RecordFilter(since=NOW - timedelta(days=1), denied=True), ["bob-denied"]),
        (RecordFilter(principal="alice@acme.example", method="GetOperation", denied=True), []),
        (RecordFilter(principal="principal://idp.acme.example/\u017fubject/svc-7"), []),
    ],
    ids=[
        "everything", "email", "email-any-case", "member", "subject", "non-email-subject",
        "no-partial-principal", "resource-prefix", "resource-exact", "method-short",
        "method-full", "method-grpc-path", "method-no-partial", "denied", "since",
        "since-and-denied", "all-must-match", "long-s-is-not-s",
    ],
)  # fmt: skip
def test_filters(selector: RecordFilter, expected: list[str]) -> None:
    # The fixtures' "now" is ALICE's time: 2024-05-01T12:30:45Z.
    assert insert_ids(r for r in ALL if selector.matches(r)) == expected


@pytest.mark.parametrize(
    "broken",
    [{}, {"protoPayload": "x"}, {"protoPayload": {"authorizationInfo": "x"}}, {"timestamp": 5}],
    ids=["empty", "payload-not-object", "checks-not-list", "timestamp-not-text"],
)
def test_filters_do_not_crash_on_odd_records(broken: dict[str, Any]) -> None:
    selector = RecordFilter(
        principal="a", resource_prefix="p", method="GetOperation", denied=True, since=NOW
    )
    assert not selector.matches(broken)
    assert RecordFilter().matches(broken)
    assert len(list(format_table([broken]))) == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15m", NOW - timedelta(minutes=15)),
        ("2h", NOW - timedelta(hours=2)),
        ("7d", NOW - timedelta(days=7)),
        ("30s", NOW - timedelta(seconds=30)),
        ("1w", NOW - timedelta(weeks=1)),
        (" 2h ", NOW - timedelta(hours=2)),
        ("2024-04-30T08:00:00Z", datetime(2024, 4, 30, 8, tzinfo=UTC)),
        ("2024-04-30T08:00:00.250Z", datetime(2024, 4, 30, 8, 0, 0, 250000, tzinfo=UTC)),
        ("2024-04-30T10:00:00+02:00", datetime(2024, 4, 30, 8, tzinfo=UTC)),
        ("2024-04-30", datetime(2024, 4, 30, tzinfo=UTC)),
    ],
    ids=[
        "minutes", "hours", "days", "seconds", "weeks", "spaces", "rfc3339-z", "fraction",
        "offset", "date",
    ],
)  # fmt: skip
def test_parse_since(text: str, expected: datetime) -> None:
    parsed = parse_since(text, NOW)
    assert parsed == expected
    assert parsed.tzinfo is not None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("last week", "expected a time"),
        ("", "expected a time"),
        ("-5m", "expected a time"),
        ("15M", "expected a time"),
        ("2024-04-30T08:00:00", "no time zone"),
        ("2024-02-30", "2024-02-30"),
    ],
    ids=["word", "empty", "negative", "capital-unit", "naive", "impossible-date"],
)
def test_parse_since_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_since(text, NOW)


def test_parse_since_uses_the_given_now_in_any_zone() -> None:
    tokyo = NOW.astimezone(timezone(timedelta(hours=9)))
    assert parse_since("1h", tokyo) == NOW - timedelta(hours=1)


def test_format_table_lines_up_and_shows_the_outcome() -> None:
    table = list(format_table([ALICE, BOB_DENIED, ANONYMOUS]))
    header, alice, bob, anonymous = table
    assert header.split() == [
        "TIME", "SEVERITY", "PRINCIPAL", "METHOD", "GRANTED", "STATUS", "RESOURCE", "REASON",
    ]  # fmt: skip
    column = header.index("RESOURCE")
    assert alice[column:] == OPERATION  # nothing after the resource of a call that succeeded
    assert bob[column:] == (
        f"{OPERATION}  IAM_PERMISSION_DENIED: no binding grants contactcenterinsights.operations.get"
    )
    assert anonymous[column:] == (
        f"{OPERATION}  ACCESS_TOKEN_EXPIRED: token expired 42s ago (exp 2024-05-01T12:30:03Z, "
        "skew 30s)"
    )
    assert alice.split() == [
        "2024-05-01T12:30:45Z", "INFO", "alice@acme.example", "GetOperation", "yes", "OK", OPERATION,
    ]  # fmt: skip
    assert bob.split()[1:6] == [
        "WARNING", "bob@acme.example", "CancelOperation", "no", "PERMISSION_DENIED",
    ]  # fmt: skip
    assert anonymous.split()[2:6] == ["-", "GetOperation", "-", "UNAUTHENTICATED"]


def test_format_table_cuts_long_cells_and_defuses_terminal_escapes() -> None:
    long = "a-very-long-service-account@a-project-with-a-long-id.iam.gserviceaccount.com"
    hostile = record(
        event(principal_email=long, resource_name="projects/p/\x1b[2J\x1b]0;pwned\x07")
    )
    [_, row] = format_table([hostile])
    assert "\x1b" not in row and "\x07" not in row
    assert row.endswith("projects/p/\\x1b[2J\\x1b]0;pwned\\x07")
    assert long[:31] + "…" in row


def take(records: Any, count: int) -> list[str]:
    return insert_ids(islice(records, count))


@pytest.mark.timeout(10)
def test_follow_starts_at_the_end_when_called_and_follows_rotation(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    # Two records per file, so a burst between two polls rotates the file several times.
    sink = RotatingFileSink(path, max_bytes=4000, backups=6, fsync="never")
    sink.write([serialize(event(request_id="old"))])
    tail = follow(path, poll_s=0.01)
    sink.write([serialize(event(request_id="new-1"))])  # after follow(), before the first next()
    assert take(tail, 1) == ["new-1"]

    written = 0
    for burst in (1, 2, 3, 7, 1):
        before = sink.rotations
        ids = [f"r{written + i}" for i in range(burst)]
        sink.write([serialize(event(request_id=request_id)) for request_id in ids])
        written += burst
        assert take(tail, burst) == ids, f"after {sink.rotations - before} rotations"
    assert sink.rotations >= 6
    tail.close()


@pytest.mark.timeout(10)
def test_follow_waits_for_whole_lines_and_restarts_after_truncation(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(b"")
    stats = ReadStats()
    tail = follow(path, poll_s=0.01, stats=stats)
    first = lines_for("one", "two")
    with path.open("ab") as out:
        out.write(first[:25])  # a record half written when the follower polls
        out.flush()
        threading.Timer(0.05, lambda: (out.write(first[25:]), out.flush())).start()
        assert take(tail, 2) == ["one", "two"]
    path.write_bytes(lines_for("3"))  # truncated in place, e.g. by copytruncate
    assert take(tail, 1) == ["3"]
    assert stats.malformed == 0


@pytest.mark.timeout(10)
def test_follow_from_start_and_a_file_that_appears_later(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    tail = follow(path, poll_s=0.01, from_start=True)
    path.write_bytes(lines_for("a", "b"))
    assert take(tail, 2) == ["a", "b"]
    stats = ReadStats()
    again = follow(path, poll_s=0.01, from_start=True, stats=stats)
    with path.open("ab") as out:
        out.write(b"garbage\n" + lines_for("c"))
    assert take(again, 3) == ["a", "b", "c"]
    assert stats.malformed == 1
