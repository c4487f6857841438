"""The authz stage: the call proceeds only if the policy grants its permission on its resource."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from gateway.authorizer import Authorizer
from gateway.call import current_call
from gateway.errors import permission_denied
from gateway.interceptors.stage import Behavior, Stage


class AuthzStage(Stage):
    """Denies with IAM's PERMISSION_DENIED before the upstream is called; records the decision."""

    name = "authz"

    def __init__(self, applies: Callable[[str], bool], authorizer: Authorizer) -> None:
        super().__init__(applies)
        self._authorizer = authorizer

    def wrap(self, behavior: Behavior, method: str) -> Behavior:
        decide = self._authorizer.decide

        async def authorized(request: Any, context: grpc.aio.ServicerContext) -> Any:
            call = current_call.get()
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
            return await behavior(request, context)

        return authorized
