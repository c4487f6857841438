"""End-to-end fixtures: a fresh upstream + gateway pair per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.loop_thread import LoopThread
from tests.support.stack import Stack, running_stack


@pytest.fixture
def stack(loop: LoopThread) -> Iterator[Stack]:
    with running_stack(loop, seed=False) as running:
        yield running
