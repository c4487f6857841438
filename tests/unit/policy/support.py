"""Helpers for the policy tests: load a policy from inline text, find lines, collect problems."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime

import pytest

from gateway.policy import Policy, PolicyError, load_policy_text

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SOURCE = "policy.yaml"

GET = "contactcenterinsights.operations.get"
LIST = "contactcenterinsights.operations.list"
CANCEL = "contactcenterinsights.operations.cancel"
AGET = "contactcenterinsights.authorizedOperations.get"
ALIST = "contactcenterinsights.authorizedOperations.list"
ACANCEL = "contactcenterinsights.authorizedOperations.cancel"
ALL_PERMISSIONS = (GET, LIST, CANCEL, AGET, ALIST, ACANCEL)


def load(text: str, source: str = SOURCE, known: frozenset[str] = frozenset()) -> Policy:
    return load_policy_text(textwrap.dedent(text), source, known)


def problems(text: str, source: str = SOURCE, known: frozenset[str] = frozenset()) -> list[str]:
    """Every problem the loader reports, as the CLI will print them."""
    with pytest.raises(PolicyError) as caught:
        load(text, source, known)
    return [str(problem) for problem in caught.value.problems]


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the n-th line containing `needle` in the dedented text."""
    seen = 0
    for number, line in enumerate(textwrap.dedent(text).splitlines(), start=1):
        if needle in line:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{needle!r} not in the text")
