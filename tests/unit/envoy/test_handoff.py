"""Across workers: an access-log entry reaches the worker whose Check decided the call."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.envoy.handoff import Handoff

PREFIX_A, PREFIX_B = "a" * 16, "b" * 16


def test_an_entry_reaches_the_deciding_worker_and_nobody_else(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[tuple[str, bytes]], Handoff]:
        got: list[tuple[str, bytes]] = []
        a = Handoff(tmp_path, PREFIX_A, lambda call_id, entry: None)
        b = Handoff(tmp_path, PREFIX_B, lambda call_id, entry: got.append((call_id, entry)))
        a.start()
        b.start()
        try:
            key = PREFIX_B + "0" * 16 + "." + "c" * 32
            assert not a.owned(key) and b.owned(key)
            assert a.pass_on(key, b"\x0a\x00entry\n")
            assert not a.pass_on("c" * 32, b"x")  # no such worker (stopped)
            assert not a.pass_on("../../etc/passwd" + "0" * 16, b"x")  # not an id
            for _ in range(100):
                if got:
                    break
                await asyncio.sleep(0.01)
        finally:
            a.stop()
            b.stop()
        return got, a

    got, sender = asyncio.run(scenario())
    assert got == [(PREFIX_B + "0" * 16 + "." + "c" * 32, b"\x0a\x00entry\n")]
    assert (sender.passed, sender.undeliverable) == (1, 2)
    assert not list(tmp_path.iterdir())  # each worker removes its socket when it stops
