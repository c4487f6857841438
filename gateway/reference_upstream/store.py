"""OperationStore: the reference upstream's in-memory, thread-safe google.longrunning operations."""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, empty_pb2, message
from google.rpc import status_pb2

from gateway.reference_upstream.errors import InjectedFault, OperationExists, OperationNotFound
from gateway.reference_upstream.listing import ListQuery
from gateway.reference_upstream.wakeups import Wakeups, sleep_until

CANCELLED_ERROR = status_pb2.Status(
    code=grpc.StatusCode.CANCELLED.value[0], message="Operation cancelled."
)

_COLLECTION = "/operations/"
_M = TypeVar("_M", bound=message.Message)


def parent_of(name: str) -> str:
    """`{parent}/operations/{id}` -> parent; a top-level `operations/{id}` has parent ''."""
    if name.startswith(_COLLECTION[1:]):
        return ""
    parent, _, op_id = name.rpartition(_COLLECTION)
    return parent if parent and op_id else ""


def _empty_response() -> any_pb2.Any:
    response = any_pb2.Any()
    response.Pack(empty_pb2.Empty())
    return response


@dataclass(frozen=True, slots=True)
class Page:
    operations: tuple[operations_pb2.Operation, ...]
    more: bool  # another operation matches after the last one in `operations`


@dataclass(slots=True)
class _Entry:
    operation: operations_pb2.Operation
    # While pending: when it completes by itself (None: only cancel/finish end it), and how.
    finish_at: float | None = None
    result: any_pb2.Any | status_pb2.Status | None = None


def _complete(operation: operations_pb2.Operation, result: any_pb2.Any | status_pb2.Status) -> None:
    operation.done = True
    if isinstance(result, status_pb2.Status):
        operation.error.CopyFrom(result)
    else:
        operation.response.CopyFrom(result)


def _result(
    response: any_pb2.Any | None,
    error: status_pb2.Status | None,
    fallback: any_pb2.Any | status_pb2.Status | None = None,
) -> any_pb2.Any | status_pb2.Status:
    """What an operation completes with: the error, else the response, else the fallback."""
    for candidate in (error, response, fallback):
        if candidate is not None:
            return candidate
    return _empty_response()


def _copy(message: _M) -> _M:
    # Callers get copies: stored messages are only ever touched under the lock.
    snapshot: _M = type(message)()
    snapshot.CopyFrom(message)
    return snapshot


class OperationStore:
    """In-memory operations keyed by name; every method is safe to call from any thread.

    Delayed operations (`create(..., finish_after=s)`) complete lazily: any read at or after
    their deadline sees them done, and `wait` sleeps exactly until the deadline, so no timer
    or event loop is tied to the store. Cancelling or finishing clears the deadline, so a
    cancellation is never overwritten by the completion it pre-empted.

    Test seams:
      * `inject_fault(name, status)` makes every RPC naming `name` (Get, Cancel, Delete, Wait,
        and List when `name` is the parent) fail with `status`, details included, until
        `clear_fault(name)`. The store itself does not consult faults; the servicer does.
      * `finish(name, ...)` completes a pending operation now, waking its waiters.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._children: dict[str, list[str]] = {}  # parent -> sorted names of its operations
        self._faults: dict[str, status_pb2.Status] = {}
        self._wakeups = Wakeups()

    def create(
        self,
        name: str,
        *,
        finish_after: float | None = None,
        response: any_pb2.Any | None = None,
        error: status_pb2.Status | None = None,
        metadata: any_pb2.Any | None = None,
    ) -> operations_pb2.Operation:
        """Add an operation; done at once unless `finish_after` seconds are given.

        It completes with `error` if given, else `response` (default: Any packing Empty).
        `finish_after=math.inf` makes an operation that only cancel/finish can end.
        """
        if finish_after is not None and not finish_after >= 0:
            raise ValueError(f"finish_after must be >= 0 seconds, got {finish_after}")
        if response is not None and error is not None:
            raise ValueError("an operation ends with a response or an error, not both")
        result = _result(response, error)
        operation = operations_pb2.Operation(name=name, metadata=metadata)
        entry = _Entry(operation)
        if finish_after is None:
            _complete(operation, result)
        else:
            entry.result = result
            entry.finish_at = None if math.isinf(finish_after) else self._clock() + finish_after
        parent = parent_of(name)
        with self._lock:
            if name in self._entries:
                raise OperationExists(name)
            self._entries[name] = entry
            bisect.insort(self._children.setdefault(parent, []), name)
            return _copy(operation)

    def get(self, name: str) -> operations_pb2.Operation:
        with self._lock:
            return _copy(self._settled(name).operation)

    def list_page(self, query: ListQuery) -> Page:
        """Operations directly under `query.parent`, by name, resuming after `query.after`."""
        picked: list[operations_pb2.Operation] = []
        with self._lock:
            names = self._children.get(query.parent, [])
            # Resuming after a name, not an offset, keeps pages stable under inserts/deletes.
            start = 0 if query.after is None else bisect.bisect_right(names, query.after)
            for index in range(start, len(names)):
                operation = self._settled(names[index]).operation
                if query.done is not None and operation.done != query.done:
                    continue
                if len(picked) == query.limit:
                    return Page(tuple(picked), more=True)
                picked.append(_copy(operation))
        return Page(tuple(picked), more=False)

    def finish(
        self,
        name: str,
        *,
        response: any_pb2.Any | None = None,
        error: status_pb2.Status | None = None,
    ) -> operations_pb2.Operation:
        """Complete a pending operation now (`error`, else `response`, else the one it was
        created with); an operation that is already done is returned unchanged."""
        with self._lock:
            entry = self._settled(name)
            if not entry.operation.done:
                _complete(entry.operation, _result(response, error, entry.result))
                entry.finish_at = entry.result = None
            snapshot = _copy(entry.operation)
        self._wakeups.wake(name)
        return snapshot

    def cancel(self, name: str) -> operations_pb2.Operation:
        return self.finish(name, error=CANCELLED_ERROR)

    def delete(self, name: str) -> None:
        with self._lock:
            if self._entries.pop(name, None) is None:
                raise OperationNotFound(name)
            siblings = self._children[parent_of(name)]
            siblings.pop(bisect.bisect_left(siblings, name))
        self._wakeups.wake(name)  # waiters then answer NOT_FOUND

    async def wait(self, name: str, max_wait: float | None) -> operations_pb2.Operation:
        """The operation once done, or as it is after `max_wait` seconds (None: no limit).

        Running out of time is not an error, as in WaitOperation: the caller gets the state.
        """
        deadline = None if max_wait is None else self._clock() + max(max_wait, 0.0)
        while True:
            with self._wakeups.parked(name) as changed:
                with self._lock:
                    entry = self._settled(name)
                    snapshot, finish_at = _copy(entry.operation), entry.finish_at
                now = self._clock()
                if snapshot.done or (deadline is not None and now >= deadline):
                    return snapshot
                wake_at = min(t for t in (deadline, finish_at, math.inf) if t is not None)
                await sleep_until(changed, None if math.isinf(wake_at) else wake_at - now)

    def inject_fault(self, name: str, status: status_pb2.Status) -> None:
        if status.code == grpc.StatusCode.OK.value[0]:
            raise ValueError("an injected fault needs a non-OK status code")
        with self._lock:
            self._faults[name] = _copy(status)

    def clear_fault(self, name: str) -> None:
        with self._lock:
            self._faults.pop(name, None)

    def check_fault(self, name: str) -> None:
        """Raise the fault injected for `name`, if any."""
        with self._lock:
            fault = self._faults.get(name)
            if fault is not None:
                raise InjectedFault(_copy(fault))

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._entries

    def _settled(self, name: str) -> _Entry:
        """The entry for `name`, completed first if its deadline has passed. Lock held."""
        entry = self._entries.get(name)
        if entry is None:
            raise OperationNotFound(name)
        if entry.finish_at is not None and self._clock() >= entry.finish_at:
            assert entry.result is not None
            _complete(entry.operation, entry.result)
            entry.finish_at = entry.result = None
        return entry
