"""What audit query reads and how it orders it: trails of rotated and per-worker files, globs,
standard input, merged in time order; --resource, --until, and the REASON of a refusal."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.query import (
    InputError,
    RecordFilter,
    Trail,
    follow_all,
    format_table,
    parse_since,
    read_trails,
    refusal_reason,
    resolve_inputs,
    worker_files,
)
from gateway.audit.writer import serialize
from gateway.config import load_settings
from gateway.workers import worker_settings
from tests.unit.audit.builders import OPERATION, denied, event, record, unauthenticated

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def line(request_id: str, minute: int) -> bytes:
    return serialize(event(request_id=request_id, received_at=T0 + timedelta(minutes=minute)))


def write(path: Path, *records: tuple[str, int]) -> Path:
    path.write_bytes(b"".join(line(request_id, minute) for request_id, minute in records))
    return path


def ids(records: Any) -> list[str]:
    return [r["insertId"] for r in records]


def names(trails: list[Trail], root: Path) -> list[tuple[list[str], str | None]]:
    return [
        ([str(f.relative_to(root)) for f in t.files], t.live.name if t.live else None)
        for t in trails
    ]


def test_worker_files_are_named_as_the_supervisor_names_them(tmp_path: Path) -> None:
    config = tmp_path / "opsgate.yaml"
    (tmp_path / "jwks.json").write_text('{"keys": []}')
    (tmp_path / "policy.yaml").write_text("allow: []\n")
    config.write_text(
        "upstream:\n  target: a:1\n"
        "authentication:\n  issuers:\n    - issuer: https://idp.example\n"
        "      audiences: [x]\n      jwks_file: jwks.json\n"
        "authorization:\n  policy_file: policy.yaml\n"
        f"audit: {{sink: file, file: {{path: {tmp_path / 'audit.log'}}}}}\n"
    )
    settings = load_settings(config)
    for index in (0, 1, 12):
        own = worker_settings(settings, index).audit.file
        assert own is not None
        Path(own.path).write_bytes(b"")
    (tmp_path / "audit-w12.log.3").write_bytes(b"")  # a rotated file: the same worker
    assert [p.name for p in worker_files(tmp_path / "audit.log")] == [
        "audit-w0.log",
        "audit-w1.log",
        "audit-w12.log",
    ]


def test_worker_files_with_only_rotated_files_and_without_a_suffix(tmp_path: Path) -> None:
    (tmp_path / "audit-w3.log.1").write_bytes(b"")
    (tmp_path / "audit-wx.log").write_bytes(b"")  # not a worker's
    (tmp_path / "audit-w1.log.gz").write_bytes(b"")  # not a rotated file
    assert [p.name for p in worker_files(tmp_path / "audit.log")] == ["audit-w3.log"]
    (tmp_path / "trail-w0").write_bytes(b"")
    assert [p.name for p in worker_files(tmp_path / "trail")] == ["trail-w0"]


def test_a_path_is_the_whole_trail_of_a_gateway_writing_it(tmp_path: Path) -> None:
    for name in ["audit.log", "audit.log.1", "audit.log.2", "audit-w0.log", "audit-w1.log.1"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "other.log").write_bytes(b"")
    trails = resolve_inputs([str(tmp_path / "audit.log")])
    assert names(trails, tmp_path) == [
        (["audit.log.2", "audit.log.1", "audit.log"], "audit.log"),
        (["audit-w0.log"], "audit-w0.log"),
        (["audit-w1.log.1"], "audit-w1.log"),  # followed: its writer will recreate it
    ]


def test_a_glob_reads_exactly_what_it_matches_and_each_file_once(tmp_path: Path) -> None:
    for name in ["audit.log", "audit.log.1", "audit-w0.log", "audit-w0.log.1", "notes.txt"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.log").mkdir()  # a directory a pattern matches is not an input
    trails = resolve_inputs([str(tmp_path / "*.log"), "-"])
    assert names(trails, tmp_path) == [
        (["audit-w0.log"], "audit-w0.log"),  # no rotated files: the pattern did not match them
        (["audit.log"], "audit.log"),
        ([], None),
    ]
    assert trails[-1].stdin
    # A pattern and a path naming the same files: each is read once.
    both = resolve_inputs([str(tmp_path / "audit*"), str(tmp_path / "audit.log")])
    assert names(both, tmp_path) == [
        (["audit-w0.log.1", "audit-w0.log"], "audit-w0.log"),
        (["audit.log.1", "audit.log"], "audit.log"),
    ]
    # The same file under another name (a link) is read once.
    (tmp_path / "link.log").symlink_to(tmp_path / "audit-w0.log")
    assert len(resolve_inputs([str(tmp_path / "audit-w0.log"), str(tmp_path / "link.log")])) == 1


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("missing.log", "missing.log: no such file"),
        ("*.nothing", r"\*.nothing: no file matches"),
        ("adir", "adir: is a directory"),
    ],
    ids=["missing", "glob-matches-nothing", "directory"],
)
def test_inputs_that_name_nothing_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argument: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir").mkdir()
    with pytest.raises(InputError, match=message):
        resolve_inputs([argument])


def test_trails_are_merged_in_time_order_each_kept_in_write_order(tmp_path: Path) -> None:
    write(tmp_path / "audit-w0.log.1", ("w0-a", 0), ("w0-b", 3))
    write(tmp_path / "audit-w0.log", ("w0-c", 4), ("w0-late-written", 2), ("w0-d", 9))
    write(tmp_path / "audit-w1.log", ("w1-a", 1), ("w1-b", 5))
    stdin = io.BytesIO(line("in-a", 6) + b"not json\n" + line("in-b", 7))
    trails = resolve_inputs([str(tmp_path / "audit.log"), "-"])
    assert ids(read_trails(trails, stdin=stdin)) == [
        "w0-a", "w1-a", "w0-b", "w0-c", "w0-late-written", "w1-b", "in-a", "in-b", "w0-d",
    ]  # fmt: skip


def test_a_record_without_a_time_stays_after_the_one_before_it(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_bytes(line("a1", 1) + b'{"insertId": "a-untimed"}\n' + line("a2", 5))
    write(tmp_path / "b.log", ("b1", 0), ("b2", 3))
    trails = resolve_inputs([str(tmp_path / "a.log"), str(tmp_path / "b.log")])
    assert ids(read_trails(trails)) == ["b1", "a1", "a-untimed", "b2", "a2"]


BY_NUMBER = record(
    denied(
        request_id="by-number",
        resource_name="projects/123456/locations/us/operations/op-1",
        policy_resource="projects/acme-prod/locations/us/operations/op-1",
    )
)
SUB = record(event(request_id="sub", resource_name=f"{OPERATION}/sub"))
PLAIN = record(event(request_id="plain"))


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        (RecordFilter(resource=OPERATION), ["plain"]),
        (RecordFilter(resource_prefix=OPERATION), ["plain", "sub"]),
        (RecordFilter(resource="projects/123456/locations/us/operations/op-1"), ["by-number"]),
        (RecordFilter(resource="projects/acme-prod/locations/us/operations/op-1"), ["by-number"]),
        (RecordFilter(resource="projects/acme-prod/locations/us/operations/op"), []),
    ],
    ids=["exact", "prefix-finds-more", "as-sent", "as-the-policy-named-it", "no-partial"],
)
def test_resource_is_exact(selector: RecordFilter, expected: list[str]) -> None:
    assert ids(r for r in [PLAIN, SUB, BY_NUMBER] if selector.matches(r)) == expected


def test_until_is_exclusive_and_windows_with_since() -> None:
    at = [
        record(event(request_id=f"m{m}", received_at=T0 + timedelta(minutes=m))) for m in range(4)
    ]
    window = RecordFilter(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3))
    assert ids(r for r in at if window.matches(r)) == ["m1", "m2"]
    assert ids(r for r in at if RecordFilter(until=T0 + timedelta(minutes=1)).matches(r)) == ["m0"]
    assert not RecordFilter(until=T0).matches({"insertId": "untimed"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("today", datetime(2024, 5, 1, tzinfo=UTC)),
        ("yesterday", datetime(2024, 4, 30, tzinfo=UTC)),
    ],
)
def test_today_and_yesterday_are_midnight_utc(text: str, expected: datetime) -> None:
    late_in_tokyo = datetime(2024, 5, 1, 23, 30, tzinfo=UTC)  # already May 2nd there
    assert parse_since(text, late_in_tokyo) == expected


DENY_RULE = (
    "contactcenterinsights.operations.cancel denied on "
    f"{OPERATION} by a deny rule on projects/acme-prod (line 102) naming principalSet://goog/public:all"
)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (event(), ""),
        (
            denied(detail=DENY_RULE, permission="contactcenterinsights.operations.cancel"),
            "IAM_PERMISSION_DENIED: denied by a deny rule on projects/acme-prod (line 102) "
            "naming principalSet://goog/public:all",
        ),
        (
            denied(
                detail="",
                decision_reason=(
                    f"contactcenterinsights.operations.get denied on {OPERATION}: 3 binding(s) "
                    "on it or its ancestors include the permission, none grants it to user:c@x"
                ),
            ),
            "IAM_PERMISSION_DENIED: denied: 3 binding(s) on it or its ancestors include the "
            "permission, none grants it to user:c@x",
        ),
        (
            unauthenticated(reason="CREDENTIALS_MISSING", detail="no authorization header"),
            "CREDENTIALS_MISSING: no authorization header",
        ),
        (
            event(status_code=5, status_message="Operation 'x' not found.", reason="UPSTREAM_STATUS"),
            "UPSTREAM_STATUS: Operation 'x' not found.",
        ),
        (denied(reason=None, detail="", decision_reason=None), "Permission 'contactcenter"),
        (denied(detail="x" * 500), "IAM_PERMISSION_DENIED: " + "x" * 136 + "…"),
    ],
    ids=[
        "allowed", "deny-rule", "no-binding", "unauthenticated", "upstream-error",
        "only-a-message", "cut-short",
    ],
)  # fmt: skip
def test_refusal_reason(source: Any, expected: str) -> None:
    reason = refusal_reason(record(source))
    assert reason.startswith(expected) if expected.endswith("contactcenter") else reason == expected


@pytest.mark.timeout(10)
def test_follow_all_follows_several_files(tmp_path: Path) -> None:
    first, second = tmp_path / "audit-w0.log", tmp_path / "audit-w1.log"
    write(first, ("old", 0))
    new = follow_all([first, second], poll_s=0.01)
    with first.open("ab") as out:
        out.write(line("w0-late", 3))
    write(second, ("w1-early", 2))  # appears after follow_all() was called
    assert ids(islice(new, 2)) == ["w1-early", "w0-late"]
    new.close()


def test_the_table_names_a_third_party_caller_by_email_not_subject() -> None:
    caller = record(
        event(
            principal_email=None,
            principal_subject="principal://idp.acme.example/subject/1234567890",
            third_party_principal={"email": "carol@acme.example", "sub": "1234567890"},
        )
    )
    [_, row] = format_table([caller])
    assert row.split()[2] == "carol@acme.example"
