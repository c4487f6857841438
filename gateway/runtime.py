"""Runs the gateway's coroutines on uvloop when it is installed, else on asyncio's own loop."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)


def settle_heap() -> None:
    """Move everything built at start (policy index, roles, config, keys) out of the garbage
    collector's sight: it lives as long as the process, and scanning it again at every full
    collection costs the calls that trigger one. Refcounting still frees it when it goes (a
    reloaded policy); only a reference cycle among these objects would now never be freed."""
    gc.collect()
    gc.freeze()
