"""What a checking stage is: per method, a step that reads and fills in the Call or refuses it."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from typing import ClassVar

from gateway.call import Call

# A step refuses a call by raising a CallFailure; it returns an awaitable only when it must wait
# (authn fetching keys), so the steps that never wait cost a plain function call.
Step = Callable[[Call], Awaitable[None] | None]


class CheckStage(abc.ABC):
    """A stage inside the audit stage: prepares, once per method, the step calls of it take."""

    name: ClassVar[str]

    def __init__(self, applies: Callable[[str], bool]) -> None:
        self._applies = applies

    def step(self, method: str) -> Step | None:
        """This stage's step for `method`, or None when the stage does not apply to it."""
        return self.prepare(method) if self._applies(method) else None

    @abc.abstractmethod
    def prepare(self, method: str) -> Step:
        """The step for calls of `method` (already known to apply)."""
