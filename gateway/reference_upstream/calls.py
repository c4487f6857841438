"""The reference upstream's call log: one CallRecord per RPC handled, observable from any thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass

from gateway.reference_upstream.wakeups import Wakeups, sleep_until

Metadata = tuple[tuple[str, str | bytes], ...]


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One handled RPC.

    `outcome` is "ok", the status code name it failed with (e.g. "NOT_FOUND"), or
    "CANCELLED" when the caller went away or its deadline ran out mid-call.
    `metadata` is the invocation metadata exactly as the server received it.
    """

    method: str
    name: str
    outcome: str
    metadata: Metadata

    def header(self, key: str) -> str | bytes | None:
        """The first value of metadata `key` (case-insensitive), or None."""
        return next((v for k, v in self.metadata if k.lower() == key.lower()), None)


class CallLog:
    """Append-only and thread-safe; `wait_for` wakes on each new record instead of polling."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[CallRecord] = []
        self._wakeups = Wakeups()

    def record(self, call: CallRecord) -> None:
        with self._lock:
            self._records.append(call)
        self._wakeups.wake(None)

    def snapshot(self) -> list[CallRecord]:
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    async def wait_for(
        self,
        predicate: Callable[[CallRecord], bool],
        timeout: float = 5.0,
    ) -> CallRecord:
        """The first record (already logged or yet to come) matching `predicate`.

        Raises TimeoutError naming what was seen if none matches within `timeout` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            with self._wakeups.parked(None) as appended:
                seen = self.snapshot()
                match = next((call for call in seen if predicate(call)), None)
                if match is not None:
                    return match
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError(f"no matching call within {timeout} s; saw {seen!r}")
                await sleep_until(appended, remaining)
