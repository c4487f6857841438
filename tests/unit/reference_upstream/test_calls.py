"""CallLog: thread-safe records and waiting for a matching call without blind sleeps."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from gateway.reference_upstream.calls import CallLog, CallRecord


def _record(method: str, outcome: str = "ok") -> CallRecord:
    return CallRecord(method, "operations/1", outcome, (("X-Request-Id", "r-1"),))


def test_header_lookup_is_case_insensitive() -> None:
    record = _record("GetOperation")
    assert record.header("x-request-id") == "r-1"
    assert record.header("authorization") is None


def test_snapshot_is_a_copy_in_order() -> None:
    log = CallLog()
    log.record(_record("GetOperation"))
    log.record(_record("ListOperations"))
    snapshot = log.snapshot()
    log.clear()
    assert [call.method for call in snapshot] == ["GetOperation", "ListOperations"]
    assert log.snapshot() == []


def test_wait_for_returns_an_already_logged_match() -> None:
    log = CallLog()
    log.record(_record("GetOperation", "NOT_FOUND"))
    found = asyncio.run(log.wait_for(lambda call: call.outcome == "NOT_FOUND", timeout=0.1))
    assert found.method == "GetOperation"


def test_wait_for_wakes_when_another_thread_logs_the_match() -> None:
    log = CallLog()
    timer = threading.Timer(0.05, log.record, args=(_record("WaitOperation", "CANCELLED"),))
    started = time.monotonic()
    timer.start()
    found = asyncio.run(log.wait_for(lambda call: call.outcome == "CANCELLED", timeout=5))
    assert found.method == "WaitOperation"
    assert time.monotonic() - started < 1.0


def test_wait_for_times_out_saying_what_it_saw() -> None:
    log = CallLog()
    log.record(_record("GetOperation"))
    with pytest.raises(TimeoutError, match="GetOperation"):
        asyncio.run(log.wait_for(lambda call: call.outcome == "CANCELLED", timeout=0.05))
