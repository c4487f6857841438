"""The authn stage: no verified Principal, no call. Puts the Principal on the call's state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from gateway.authn.authenticator import Authenticator
from gateway.authn.bearer import has_authorization
from gateway.authn.certificates import CertificateIdentities
from gateway.call import current_call
from gateway.interceptors.stage import Behavior, Stage


class AuthnStage(Stage):
    """Authenticates every call it applies to before anything else looks at the request."""

    name = "authn"

    def __init__(
        self,
        applies: Callable[[str], bool],
        authenticator: Authenticator,
        *,
        allow_anonymous: bool = False,
        certificates: CertificateIdentities | None = None,
    ) -> None:
        super().__init__(applies)
        self._authenticator = authenticator
        self._allow_anonymous = allow_anonymous
        # Only consulted when a mapped certificate alone may authenticate a call.
        self._certificates = (
            certificates if certificates and not certificates.require_token else None
        )

    def wrap(self, behavior: Behavior, method: str) -> Behavior:
        verify = self._authenticator.verify
        check_scopes = self._authenticator.check_scopes
        allow_anonymous = self._allow_anonymous
        certificates = self._certificates

        async def authenticated(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if certificates is not None:
                principal = certificates.principal_for(context.auth_context())
                if principal is not None:
                    current_call.get().principal = principal
                    return await behavior(request, context)
            metadata = context.invocation_metadata()
            if allow_anonymous and not has_authorization(metadata):
                return await behavior(request, context)  # anonymous: principal stays None
            verified = await verify(metadata)
            current_call.get().principal = verified.principal
            check_scopes(verified)
            return await behavior(request, context)

        return authenticated
