"""The authn stage: no verified Principal, no call. Puts the Principal on the Call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from gateway.authn.authenticator import Authenticator
from gateway.authn.bearer import has_authorization
from gateway.authn.certificates import CertificateIdentities
from gateway.call import Call
from gateway.stages.base import CheckStage, Step


class AuthnStage(CheckStage):
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

    def prepare(self, method: str) -> Step:
        remembered = self._authenticator.remembered
        verify_token = self._authenticator.verify_token
        check_scopes = self._authenticator.check_scopes
        allow_anonymous = self._allow_anonymous
        certificates = self._certificates

        async def first_seen(call: Call, token: str) -> None:
            verified = await verify_token(token)
            call.principal = verified.principal
            check_scopes(verified)

        def authenticated(call: Call) -> Awaitable[None] | None:
            if certificates is not None:
                principal = certificates.principal_for(call.transport.auth_context())
                if principal is not None:
                    call.principal = principal
                    return None
            if allow_anonymous and not has_authorization(call.metadata):
                return None  # anonymous: the principal stays None
            token, verified = remembered(call.metadata)
            if verified is None:
                return first_seen(call, token)  # the only step that may wait
            call.principal = verified.principal
            check_scopes(verified)
            return None

        return authenticated
