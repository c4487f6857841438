"""The route stage: decodes the request and maps method + resource name to the permission needed."""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.message import DecodeError

from gateway.call import Call
from gateway.errors import InvalidArgument, unimplemented
from gateway.profile import ServiceProfile
from gateway.routing import METHODS_BY_PATH
from gateway.stages.base import CheckStage, Step


class RouteStage(CheckStage):
    """Turns a call into the RequiredAccess using the service profile, before anything is forwarded.

    A method the profile does not route is UNIMPLEMENTED before its request is read. Behind the
    proxy and the REST door the request arrives as bytes and only this stage parses it (the
    forwarder relays the original bytes); in library mode it arrives already parsed.
    """

    name = "route"

    def __init__(self, applies: Callable[[str], bool], profile: ServiceProfile) -> None:
        super().__init__(lambda method: method in METHODS_BY_PATH and applies(method))
        self._profile = profile

    def prepare(self, method: str) -> Step:
        profile = self._profile
        if not profile.routes_method(method):
            return _unrouted(method)
        request_type = METHODS_BY_PATH[method].request_type
        type_name = request_type.DESCRIPTOR.full_name
        access_for = profile.access_for

        def routed(call: Call) -> None:
            payload = call.payload
            if isinstance(payload, bytes):
                try:
                    message = request_type.FromString(payload)
                except DecodeError as exc:
                    raise InvalidArgument(
                        f"Invalid request: the body is not a valid {type_name}.",
                        reason="INVALID_REQUEST_BODY",
                    ) from exc
            else:
                message = payload
            call.request = message
            call.resource_name = message.name
            call.access = access_for(method, message.name)

        return routed


def _unrouted(method: str) -> Step:
    def not_routed(call: Call) -> None:
        raise unimplemented(method, f"the profile does not route {method}")

    return not_routed
