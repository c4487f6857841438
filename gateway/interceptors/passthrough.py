"""Authentication and authorization stage slots, pass-through until those stages are built."""

from __future__ import annotations

from gateway.interceptors.stage import Behavior, Stage


class PassThroughStage(Stage):
    """Holds a stage's place in the chain and forwards every call unchanged.

    The chain's order is fixed in chain.py; authn and authz replace these slots as they land,
    so nothing about ordering changes when they do.
    """

    def __init__(self, name: str) -> None:
        super().__init__(lambda method: False)
        self.name = name

    def wrap(self, behavior: Behavior, method: str) -> Behavior:
        return behavior
