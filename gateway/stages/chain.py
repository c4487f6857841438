"""Which stages run and in what order (CHAIN_ORDER), and the plain runner every door uses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from gateway.call import Call
from gateway.routing import SERVICE_PREFIX
from gateway.stages.audit import AuditStage, MethodNotFound
from gateway.stages.base import CheckStage, Step

T = TypeVar("T")


class RunCall(Protocol):
    """How a door runs one call: the steps in order, then its handler; see Runner."""

    async def __call__(
        self, call: Call, steps: tuple[Step, ...], handler: Callable[[Call], Awaitable[T]]
    ) -> T: ...


# First = outermost: audit wraps the rest, which run in this order before the door's handler.
CHAIN_ORDER: tuple[str, ...] = ("audit", "authn", "ratelimit", "route", "authz")

HEALTH_PREFIX = "/grpc.health.v1.Health/"


def is_operations_method(method: str) -> bool:
    return method.startswith(SERVICE_PREFIX)


def is_exempt(method: str) -> bool:
    """Infrastructure calls (health checks) bypass the chain: no identity, no record."""
    return method.startswith(HEALTH_PREFIX)


class Runner:
    """Runs the stages in CHAIN_ORDER over one Call, then the door's handler: the pipeline's
    one way of running a call, whichever door it came in by.

    Each method's steps are prepared once (`steps`), so a call costs one function call per
    stage that applies to it.
    """

    def __init__(self, audit: AuditStage, checks: Sequence[CheckStage]) -> None:
        self.stages: tuple[AuditStage | CheckStage, ...] = (audit, *checks)
        if tuple(stage.name for stage in self.stages) != CHAIN_ORDER:
            raise ValueError(f"stages must come in CHAIN_ORDER {CHAIN_ORDER}")
        self._audit = audit
        self._checks = tuple(checks)
        self._steps: dict[str, tuple[Step, ...]] = {}
        # run(call, steps, handler): `handler(call)` if every step lets the call through; else
        # raises the CallFailure to answer, or asyncio.CancelledError. Either way the outcome is
        # recorded first. It is the audit stage's own run, which wraps the others: no layer more.
        self.run: RunCall = audit.run

    @property
    def in_flight(self) -> int:
        """Calls inside the chain right now."""
        return self._audit.in_flight

    def steps(self, method: str) -> tuple[Step, ...]:
        """The checks' steps for `method`, in order (prepared on the method's first call)."""
        steps = self._steps.get(method)
        if steps is None:
            prepared = (check.step(method) for check in self._checks)
            steps = self._steps[method] = tuple(step for step in prepared if step is not None)
        return steps

    def not_found(self, call: Call) -> MethodNotFound:
        """Record a call to a method nobody serves; answer with the failure returned."""
        return self._audit.not_found(call)
