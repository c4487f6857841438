"""A compiled condition and compile_condition: the limits, both parsers, then the checker."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final, cast

import cel

from gateway.policy.cel.compiler import Compiler, fn_of
from gateway.policy.cel.context import BoolFn, ConditionContext
from gateway.policy.cel.errors import ConditionError, ConditionEvaluationError, EvaluationFailure
from gateway.policy.cel.parser import Parser
from gateway.policy.cel.types import BOOL, DYN

MAX_EXPRESSION_LENGTH: Final = 1000
"""Longest expression accepted, in characters (IAM's own limit is about 1.5 KB per binding)."""


@dataclass(frozen=True, slots=True)
class CompiledCondition:
    """A condition checked and compiled at load; `evaluate` is cheap and thread-safe."""

    expression: str
    title: str
    uses_time: bool  # True if it reads request.time: decisions must not be cached past now
    _fn: BoolFn = field(repr=False, compare=False, kw_only=True)

    def evaluate(self, context: ConditionContext) -> bool:
        """True if the condition holds; raises ConditionEvaluationError, never anything else."""
        try:
            return self._fn(context)
        except Exception as exc:
            name = self.title or self.expression
            detail = (
                str(exc) if isinstance(exc, EvaluationFailure) else f"{type(exc).__name__}: {exc}"
            )
            raise ConditionEvaluationError(
                f"condition {name!r} could not be evaluated: {detail}"
            ) from exc


# --------------------------------------------------------------------------------------------
# The CEL library (common-expression-language, module `cel`) is a second, independent parser:
# an expression must satisfy both it and ours. It never evaluates anything: a library with its
# own regex engine and its own size() would decide differently from CEL (and from IAM).
# --------------------------------------------------------------------------------------------


_LIBRARY_ERROR = re.compile(r"ERROR: <input>:(\d+):(\d+): (.*)")


def _library_syntax_error(expression: str, exc: Exception) -> ConditionError:
    message = str(exc)
    found = _LIBRARY_ERROR.search(message)
    if found is None:
        return ConditionError(message.strip() or "syntax error")
    line, col = int(found.group(1)), int(found.group(2))
    lines = expression.split("\n")
    offset = sum(len(text) + 1 for text in lines[: line - 1]) + col - 1
    return ConditionError(found.group(3).strip(), offset + 1)


def compile_condition(expression: str, title: str = "") -> CompiledCondition:
    """Parse, type-check and compile once; raises ConditionError for anything unusable."""
    if not isinstance(expression, str):
        raise ConditionError(
            f"a condition expression must be a string, not {type(expression).__name__}"
        )
    if not expression.strip():
        raise ConditionError("the condition expression is empty")
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise ConditionError(
            f"the condition expression is {len(expression)} characters long; "
            f"the limit is {MAX_EXPRESSION_LENGTH}"
        )
    try:
        cel.compile(expression)
    except Exception as exc:
        raise _library_syntax_error(expression, exc) from None
    try:
        tree = Parser(expression).parse()
    except ConditionError as exc:
        if exc.problem.startswith("Syntax error: "):
            # CEL itself understood it, we do not.
            problem = exc.problem.removeprefix("Syntax error: ")
            raise ConditionError(f"unsupported syntax: {problem}", exc.column) from None
        raise
    compiler = Compiler(expression)
    result = compiler.check(tree, {})
    if result.type not in (BOOL, DYN):
        raise ConditionError(
            f"a condition must evaluate to a bool, but this is "
            f"{compiler.describe(result)}; compare it with something, e.g. "
            f'resource.name.startsWith("projects/")',
            1,
        )
    if result.outside is not None:
        reason, column = result.outside
        raise ConditionError(
            f"{reason}: valid CEL, but outside the IAM condition subset this gateway "
            f"evaluates ({_SUBSET_HINT})",
            column,
        )
    fn = cast(BoolFn, fn_of(result))
    return CompiledCondition(expression, title, compiler.uses_time, _fn=fn)


_SUBSET_HINT: Final = (
    "comparisons, &&, ||, !, ?:, 'in' a list of literals, size(), + on strings, "
    "startsWith/endsWith/contains/matches/extract on strings, and timestamp(), duration() and "
    "the getX() accessors on request.time"
)
