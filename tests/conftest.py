"""Shared pytest fixtures: a background event loop for running real servers."""

from __future__ import annotations

import os
from collections.abc import Iterator

# gRPC's C core chatters at INFO on stderr; keep test output to what the tests say.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import pytest

from gateway.testing.loop import LoopThread
from tests.support.leaks import watching_for_token_leaks


@pytest.fixture(scope="session")
def loop() -> Iterator[LoopThread]:
    with LoopThread("test-loop") as thread:
        yield thread


@pytest.fixture(scope="session", autouse=True)
def no_token_reaches_a_log() -> Iterator[None]:
    """Every token the tests mint is searched for in everything logged during the session."""
    with watching_for_token_leaks() as leaks:
        yield
    assert not leaks, f"token material found in logs: {leaks}"
