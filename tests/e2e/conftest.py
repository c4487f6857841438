"""End-to-end fixtures: a test identity provider, and a fresh upstream + gateway pair per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.reference_upstream import ReferenceUpstream
from gateway.testing.loop import LoopThread
from gateway.testing.upstream import running_upstream
from tests.support.stack import Identity, Stack, make_identity, running_stack


@pytest.fixture(scope="session")
def identity(tmp_path_factory: pytest.TempPathFactory) -> Identity:
    return make_identity(tmp_path_factory.mktemp("idp"))


@pytest.fixture
def stack(loop: LoopThread, identity: Identity) -> Iterator[Stack]:
    with running_stack(loop, identity, seed=False) as running:
        yield running


@pytest.fixture
def upstream(loop: LoopThread) -> Iterator[ReferenceUpstream]:
    """A seeded reference upstream of its own for the test."""
    with running_upstream(loop, seed=True) as running:
        yield running
