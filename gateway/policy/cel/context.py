"""What a condition reads (ConditionContext) and the shape of the functions compiled over it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from gateway.policy.hierarchy import NO_TAGS, EffectiveTags


# Not frozen: one is built for every decision that evaluates a condition, and a frozen
# dataclass pays for each field it sets; compiled conditions only read it.
@dataclass(slots=True)
class ConditionContext:
    """The attributes of one request that conditions can read."""

    resource_name: str
    request_time: datetime  # timezone-aware UTC
    resource_type: str = ""
    resource_service: str = ""
    tags: EffectiveTags = NO_TAGS  # what resource.matchTag() and its kin read


Fn = Callable[[ConditionContext], object]
BoolFn = Callable[[ConditionContext], bool]
StrFn = Callable[[ConditionContext], str]
