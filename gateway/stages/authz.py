"""The authz stage: the call proceeds only if the policy grants its permission on its resource."""

from __future__ import annotations

from collections.abc import Callable

from gateway.authorizer import Authorizer
from gateway.call import Call
from gateway.errors import permission_denied
from gateway.stages.base import CheckStage, Step


class AuthzStage(CheckStage):
    """Denies with IAM's PERMISSION_DENIED before the upstream is called; records the decision."""

    name = "authz"

    def __init__(self, applies: Callable[[str], bool], authorizer: Authorizer) -> None:
        super().__init__(applies)
        self._authorizer = authorizer

    def prepare(self, method: str) -> Step:
        decide = self._authorizer.decide

        def authorized(call: Call) -> None:
            access = call.access
            if access is None:  # the route stage always sets it; never let a call through without
                raise AssertionError("authz reached without a routed RequiredAccess")
            verdict = decide(call.principal, access.permission, access.resource)
            call.verdict = verdict
            decision = verdict.decision
            if not decision.allowed:
                raise permission_denied(
                    access.permission, access.resource, access.service, decision.reason
                )

        return authorized
