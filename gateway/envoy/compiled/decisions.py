"""The names the compiled RBAC filters give their decisions: what Envoy reports as the deciding
policy (`enforced_effective_policy_id`), read back by the audit trail and the error mapping."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

INVALID_TOKEN = "invalid-token"  # opsgate: UNAUTHENTICATED
# The same, for a token another issuer than Google verified: answered without Google's help link.
INVALID_OTHER_TOKEN = "invalid-other-token"
INSUFFICIENT_SCOPE = (
    "insufficient-scope"  # PERMISSION_DENIED, reason ACCESS_TOKEN_SCOPE_INSUFFICIENT
)
UNIMPLEMENTED = "unimplemented"  # a method the profile does not route
INVALID_NAME = "invalid-name"  # INVALID_ARGUMENT, reason RESOURCE_NAME_INVALID
DEFAULT_DENY = "default-deny"  # no binding grants the permission
ROUTE = "route:"  # route:K, the DENY filter's pass: the call needs routes[K]'s permission
DENY_RULE = "deny:"  # deny:K/ORDINAL, deny rule ORDINAL applied on route K
BINDINGS = "allow:"  # allow:ORDINALS, one of these bindings granted it

Kind = Literal["refused", "denied_by_rule", "default_deny", "allowed", "passed"]


def route_id(route: int) -> str:
    return f"{ROUTE}{route}"


def deny_id(route: int, ordinal: int) -> str:
    return f"{DENY_RULE}{route}/{ordinal}"


def allow_id(ordinals: tuple[int, ...]) -> str:
    return BINDINGS + ",".join(map(str, ordinals))


@dataclass(frozen=True, slots=True)
class Decided:
    """One policy id read back."""

    kind: Kind
    route: int | None = None
    ordinals: tuple[int, ...] = ()
    reason: str = ""


def read(policy_id: str) -> Decided:
    """What a policy id says; unknown text reads as a refusal (fail closed)."""
    if policy_id.startswith(BINDINGS):
        body = policy_id[len(BINDINGS) :]
        return Decided("allowed", ordinals=tuple(int(p) for p in body.split(",") if p.isdigit()))
    if policy_id.startswith(DENY_RULE):
        route, _, ordinal = policy_id[len(DENY_RULE) :].partition("/")
        if route.isdigit() and ordinal.isdigit():
            return Decided("denied_by_rule", route=int(route), ordinals=(int(ordinal),))
    if policy_id.startswith(ROUTE) and policy_id[len(ROUTE) :].isdigit():
        return Decided("passed", route=int(policy_id[len(ROUTE) :]))
    if policy_id == DEFAULT_DENY:
        return Decided("default_deny")
    return Decided("refused", reason=policy_id)
