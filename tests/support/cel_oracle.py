"""The CEL library as a test oracle: an independent evaluator to compare the native compiler with."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import cel

from gateway.policy.cel import ConditionContext
from gateway.policy.cel.timeutil import time_zone

# Timestamp accessors with CEL's numbering (getMonth, getDayOfMonth and getDayOfYear count from
# 0, getDate from 1, getDayOfWeek is 0 on Sunday), written from strftime rather than shared with
# the gateway's, so that the oracle stays independent. The library has only the UTC forms.
_ACCESSORS: dict[str, Callable[[datetime], int]] = {
    "getFullYear": lambda t: int(t.strftime("%Y")),
    "getMonth": lambda t: int(t.strftime("%m")) - 1,
    "getDate": lambda t: int(t.strftime("%d")),
    "getDayOfMonth": lambda t: int(t.strftime("%d")) - 1,
    "getDayOfWeek": lambda t: int(t.strftime("%w")),
    "getDayOfYear": lambda t: int(t.strftime("%j")) - 1,
    "getHours": lambda t: int(t.strftime("%H")),
    "getMinutes": lambda t: int(t.strftime("%M")),
    "getSeconds": lambda t: int(t.strftime("%S")),
    "getMilliseconds": lambda t: int(t.strftime("%f")) // 1000,
}


def _zoned(name: str) -> Callable[[datetime, str], int]:
    accessor = _ACCESSORS[name]

    def function(when: datetime, zone: str) -> int:
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return accessor(when.astimezone(time_zone(zone)))

    return function


def library_answer(expression: str, context: ConditionContext) -> object:
    """What the CEL library says the expression is for this request (raises on its errors)."""
    variables = {
        "request": {"time": context.request_time.astimezone(UTC)},
        "resource": {
            "name": context.resource_name,
            "type": context.resource_type,
            "service": context.resource_service,
        },
    }
    # Only the forms given a zone are replaced: the library keeps its own UTC forms.
    functions = {
        name: _zoned(name)
        for name in _ACCESSORS
        if f'{name}("' in expression or f"{name}('" in expression
    }
    return cel.compile(expression).execute(cel.Context(variables, functions))
