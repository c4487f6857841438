"""Whether a deny rule applies to a caller and a permission, written once for the evaluator,
`policy explain` and `policy diff`. Pure: no grpc, no I/O, no clock."""

from __future__ import annotations

from enum import StrEnum

from gateway.policy.decision import ConditionResult
from gateway.policy.model import DenyRule


class DenyMatch(StrEnum):
    """How a deny rule stands toward one caller and one permission, before its condition.

    The values are the words `policy explain` shows for a rule that does not apply.
    """

    PERMISSION_NOT_DENIED = "permission not denied by this rule"
    EXCEPTION_PERMISSION = "permission is an exception permission"
    NO_PRINCIPAL = "no denied principal matched"
    EXEMPT = "caller is exempt"
    APPLIES = "applies"  # unless its condition is false: see condition_applies


# `DenyMatch.X` is a class attribute lookup through the Enum machinery (about 60 ns on 3.11, more
# than the set test it reports); the evaluator's hot path reads these module globals instead.
NO_PRINCIPAL = DenyMatch.NO_PRINCIPAL
EXEMPT = DenyMatch.EXEMPT
EXCEPTION_PERMISSION = DenyMatch.EXCEPTION_PERMISSION
APPLIES = DenyMatch.APPLIES


def denies_permission(rule: DenyRule, permission: str) -> bool:
    """The rule lists the permission among its denied permissions, and not as an exception."""
    return rule.denied_permissions.matches(permission) and not rule.exception_permissions.matches(
        permission
    )


def match(
    rule: DenyRule, permission: str, deny_keys: frozenset[str], allow_keys: frozenset[str]
) -> DenyMatch:
    """The rule against a caller's keys: `deny_keys` may name it (claims count: a deny that is
    too wide fails closed), only `allow_keys` (established facts) may exempt it."""
    if not rule.denied_permissions.matches(permission):
        return DenyMatch.PERMISSION_NOT_DENIED
    if rule.exception_permissions.matches(permission):
        # Reported before the principals, as `policy explain` always has; match_listed asks
        # it last, and whichever comes first, the rule applies or not alike.
        return DenyMatch.EXCEPTION_PERMISSION
    return match_listed(rule, permission, deny_keys, allow_keys)


def match_listed(
    rule: DenyRule, permission: str, deny_keys: frozenset[str], allow_keys: frozenset[str]
) -> DenyMatch:
    """`match` for a rule already known to list the permission among its denied permissions:
    the evaluator's index finds only such rules, and this is its hot path, so the set tests
    that settle most candidates come before the permission test, which may scan patterns."""
    if rule.denied_keys.isdisjoint(deny_keys):
        return NO_PRINCIPAL
    if not rule.exception_keys.isdisjoint(allow_keys):
        return EXEMPT
    if rule.exception_permissions.matches(permission):
        return EXCEPTION_PERMISSION
    return APPLIES


def condition_applies(result: ConditionResult) -> bool:
    """A matching rule applies unless its condition is false: absent and true apply, and so
    does a condition that could not be evaluated (deny rules fail closed)."""
    return result != "false"
