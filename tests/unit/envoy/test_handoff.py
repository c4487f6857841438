"""Across workers: an access-log entry reaches the worker whose check decided the call."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.envoy.handoff import Handoff

PREFIX_A, PREFIX_B = "a" * 16, "b" * 16


def test_every_entry_reaches_the_deciding_worker_and_nobody_else(tmp_path: Path) -> None:
    """Many more entries than a datagram socket's queue holds (ten by default) all arrive."""

    async def scenario() -> tuple[list[tuple[str, bytes]], Handoff]:
        got: list[tuple[str, bytes]] = []
        a = Handoff(tmp_path, PREFIX_A, lambda key, entry: None)
        b = Handoff(tmp_path, PREFIX_B, lambda key, entry: got.append((key, entry)))
        await a.start()
        await b.start()
        try:
            keys = [f"{PREFIX_B}{n:016x}.{'c' * 32}" for n in range(500)]
            assert not a.owned(keys[0]) and b.owned(keys[0])
            for key in keys:
                assert await a.pass_on(key, b"\x0a\x00entry\n" + key.encode())
            assert not await a.pass_on("c" * 32, b"x")  # no such worker (stopped)
            assert not await a.pass_on("../../etc/passwd" + "0" * 16, b"x")  # not a key
            for _ in range(200):
                if len(got) == len(keys):
                    break
                await asyncio.sleep(0.01)
        finally:
            await a.stop()
            await b.stop()
        return got, a

    got, sender = asyncio.run(scenario())
    assert len(got) == 500
    assert got[7] == (f"{PREFIX_B}{7:016x}.{'c' * 32}", b"\x0a\x00entry\n" + got[7][0].encode())
    assert (sender.passed, sender.undeliverable) == (500, 2)
    assert not list(tmp_path.iterdir())  # each worker removes its socket when it stops
