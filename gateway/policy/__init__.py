"""The policy core: IAM-shaped policy files, loaded and indexed, and pure allow/deny decisions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.policy.decision import Decision, Effect, TraceEntry
from gateway.policy.evaluator import evaluate, explain
from gateway.policy.model import AccessRequest, Binding, Caller, DenyRule, Group, Policy
from gateway.policy.roles import Role

if TYPE_CHECKING:
    from gateway.policy.loader import PolicyError, PolicyProblem, load_policy, load_policy_text

# The loader is the reading half (files, YAML and JSON readers, start-up checks); importing it
# lazily keeps `import gateway.policy` to the deciding half.
_LOADER_NAMES = frozenset({"PolicyError", "PolicyProblem", "load_policy", "load_policy_text"})


def __getattr__(name: str) -> Any:
    if name in _LOADER_NAMES:
        from gateway.policy import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'gateway.policy' has no attribute '{name}'")


__all__ = [
    "AccessRequest",
    "Binding",
    "Caller",
    "Decision",
    "DenyRule",
    "Effect",
    "Group",
    "Policy",
    "PolicyError",
    "PolicyProblem",
    "Role",
    "TraceEntry",
    "evaluate",
    "explain",
    "load_policy",
    "load_policy_text",
]
