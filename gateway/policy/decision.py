"""The outcome of one authorization check: its effect, a one-line reason and the trace behind it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

from gateway.policy.model import AccessRequest

# What a trace entry is about. Literal strings, not an Enum: they are written into audit records
# as they are (`dataclasses.asdict`), and the audit record format is a contract.
TraceKind = Literal["binding", "deny_rule"]
# How a condition fared. "not evaluated" is a default-deny trace's binding whose members did not
# match, so the decision never read its condition (explain() evaluates every condition).
ConditionResult = Literal["absent", "true", "false", "error", "not evaluated"]


class Effect(Enum):
    ALLOW = "ALLOW"
    DENY = "DENY"


@dataclass(frozen=True, slots=True)
class TraceEntry:
    """One binding or deny rule looked at, and what came of it.

    `member` is the binding's or rule's member that matched the caller, as written in the file;
    `via_group` names the groups between the caller and that member when membership was nested
    (e.g. "group:tier2@acme.example"), and is None when the caller matched it directly.
    """

    kind: TraceKind
    resource: str
    role: str | None
    member: str | None
    via_group: str | None
    condition: str | None  # the expression
    condition_result: ConditionResult
    source_line: int | None
    outcome: str  # "granted", "denied", "no member matched", ...; some carry a detail


@dataclass(frozen=True, slots=True)
class Decision:
    """ALLOW or DENY for one request, with the bindings or rules that decided it."""

    effect: Effect
    request: AccessRequest
    reason: str
    trace: tuple[TraceEntry, ...]
    policy_etag: str
    # A condition reading request.time was evaluated: the same request may decide differently
    # later, so this decision must not be cached.
    time_dependent: bool

    @property
    def allowed(self) -> bool:
        return self.effect is Effect.ALLOW

    @property
    def unrecorded(self) -> str | None:
        """Why the policy's auditConfigs leave this allowed read's record out; None when the call
        must be recorded (always for refusals, writes, and policies without auditConfigs)."""
        return None

    @property
    def policy_resource(self) -> str | None:
        """The resource as the policy names it, where that differs from the name asked about (a
        project named by its number, which `resources` maps to its id); None when they agree."""
        return None


# A subclass, so that the decisions of policies without `resources` or `auditConfigs` (nearly
# all) are built with six fields: every field of a frozen dataclass costs its construction.
@dataclass(frozen=True, slots=True)
class NotedDecision(Decision):
    """A Decision with what `resources` or `auditConfigs` add to it."""

    left_out: str | None = None
    named_as: str | None = None

    @property
    def unrecorded(self) -> str | None:
        return self.left_out

    @property
    def policy_resource(self) -> str | None:
        return self.named_as


def noted(
    decision: Decision, *, left_out: str | None = None, named_as: str | None = None
) -> Decision:
    """`decision` with notes added (those it has are kept)."""
    return NotedDecision(
        decision.effect,
        decision.request,
        decision.reason,
        decision.trace,
        decision.policy_etag,
        decision.time_dependent,
        left_out if left_out is not None else decision.unrecorded,
        named_as if named_as is not None else decision.policy_resource,
    )
