"""IAM conditions: CEL over request.time and resource.*, checked and compiled at policy load.

The public face is below; the modules of this package are its parts (lexer, parser, types,
timeutil, regex, compiler) and may change.
"""

from __future__ import annotations

from gateway.policy.cel.condition import (
    MAX_EXPRESSION_LENGTH,
    CompiledCondition,
    compile_condition,
)
from gateway.policy.cel.context import ConditionContext
from gateway.policy.cel.errors import ConditionError, ConditionEvaluationError

__all__ = [
    "MAX_EXPRESSION_LENGTH",
    "CompiledCondition",
    "ConditionContext",
    "ConditionError",
    "ConditionEvaluationError",
    "compile_condition",
]
