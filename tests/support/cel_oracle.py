"""The CEL library as a test oracle: an independent evaluator to compare the native compiler with."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import cel

from gateway.policy.conditions import ConditionContext, _time_zone

# Timestamp accessors with CEL's numbering; the library has only the UTC forms built in.
_ACCESSORS: dict[str, Callable[[datetime], int]] = {
    "getFullYear": lambda t: t.year,
    "getMonth": lambda t: t.month - 1,
    "getDate": lambda t: t.day,
    "getDayOfMonth": lambda t: t.day - 1,
    "getDayOfWeek": lambda t: t.isoweekday() % 7,
    "getDayOfYear": lambda t: t.timetuple().tm_yday - 1,
    "getHours": lambda t: t.hour,
    "getMinutes": lambda t: t.minute,
    "getSeconds": lambda t: t.second,
    "getMilliseconds": lambda t: t.microsecond // 1000,
}


def _zoned(name: str) -> Callable[[datetime, str], int]:
    accessor = _ACCESSORS[name]

    def function(when: datetime, zone: str) -> int:
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return accessor(when.astimezone(_time_zone(zone)))

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
