"""The authn stage: no verified Principal, no call. Puts the Principal on the call's state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from gateway.authn.authenticator import Authenticator
from gateway.interceptors.call import current_call
from gateway.interceptors.stage import Behavior, Stage


class AuthnStage(Stage):
    """Authenticates every call it applies to before anything else looks at the request."""

    name = "authn"

    def __init__(self, applies: Callable[[str], bool], authenticator: Authenticator) -> None:
        super().__init__(applies)
        self._authenticator = authenticator

    def wrap(self, behavior: Behavior, method: str) -> Behavior:
        verify = self._authenticator.verify
        check_scopes = self._authenticator.check_scopes

        async def authenticated(request: Any, context: grpc.aio.ServicerContext) -> Any:
            verified = await verify(context.invocation_metadata())
            current_call.get().principal = verified.principal
            check_scopes(verified)
            return await behavior(request, context)

        return authenticated
