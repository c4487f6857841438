"""Why a policy or a config cannot be compiled: each problem with the file and line it is at."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import OpsgateError


@dataclass(frozen=True, slots=True)
class Problem:
    source: str  # the policy or config file
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{where}: {self.message}"


class Refused(OpsgateError):
    """The compiler refuses: nothing is written, and what is in force stays in force."""

    reason = "POLICY_NOT_COMPILABLE"

    def __init__(self, problems: tuple[Problem, ...]) -> None:
        self.problems = problems
        super().__init__("\n".join(map(str, problems)))
