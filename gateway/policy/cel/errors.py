"""What goes wrong with a condition: refused at load (ConditionError) or failing on a request."""

from __future__ import annotations

from gateway.errors import OpsgateError


class ConditionError(OpsgateError, ValueError):
    """An expression that cannot be used; `problem` is a message for humans (no traceback)."""

    reason = "CONDITION_INVALID"

    problem: str
    column: int | None  # 1-based column of the problem in the expression when known

    def __init__(self, problem: str, column: int | None = None) -> None:
        super().__init__(problem if column is None else f"{problem} (at column {column})")
        self.problem = problem
        self.column = column


class ConditionEvaluationError(OpsgateError):
    """The expression could not be evaluated for this request (e.g. a type error at run time)."""

    reason = "CONDITION_EVALUATION_FAILED"


class EvaluationFailure(OpsgateError):
    """Raised inside compiled conditions; evaluate() turns it into ConditionEvaluationError."""

    reason = "CONDITION_EVALUATION_FAILED"
