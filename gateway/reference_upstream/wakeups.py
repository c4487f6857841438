"""Parks coroutines on any event loop until another thread (or the same loop) says a key changed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager, suppress


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Wakeups:
    """Thread-safe: `wake(key)` resolves every future parked on `key`, each on its own loop.

    Waiters park *before* reading the state they wait on, so a change that lands between the
    read and the await still wakes them: no lost wake-ups, and no polling.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parked: dict[Hashable, set[asyncio.Future[None]]] = {}

    @contextmanager
    def parked(self, key: Hashable) -> Iterator[asyncio.Future[None]]:
        """A future on the running loop, resolved by the next `wake(key)`; unparked on exit."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._parked.setdefault(key, set()).add(future)
        try:
            yield future
        finally:
            with self._lock:
                parked = self._parked.get(key)
                if parked is not None:
                    parked.discard(future)
                    if not parked:
                        del self._parked[key]

    def wake(self, key: Hashable) -> None:
        with self._lock:
            futures = self._parked.pop(key, set())
        for future in futures:
            # A closed loop raises RuntimeError: nobody is left on it to wake.
            with suppress(RuntimeError):
                future.get_loop().call_soon_threadsafe(_resolve, future)


async def sleep_until(future: asyncio.Future[None], delay: float | None) -> None:
    """Wait for `future` or `delay` seconds (None: no limit), whichever is first."""
    # asyncio.wait, unlike wait_for, neither cancels the future nor raises when time runs out.
    await asyncio.wait([future], timeout=None if delay is None else max(delay, 0.0))
