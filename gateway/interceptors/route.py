"""The route stage: decodes the request and maps method + resource name to the permission needed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from gateway.call import current_call
from gateway.errors import InvalidArgument, Unimplemented
from gateway.interceptors.stage import Behavior, Stage
from gateway.profile import ServiceProfile
from gateway.routing import METHODS_BY_PATH


class RouteStage(Stage):
    """Turns a call into the RequiredAccess using the service profile, before anything is forwarded.

    A method the profile does not route is UNIMPLEMENTED before its request is read. In the
    proxy the request arrives as bytes and only this stage parses it (the forwarder relays the
    original bytes); in library mode it arrives already parsed.
    """

    name = "route"

    def __init__(self, applies: Callable[[str], bool], profile: ServiceProfile) -> None:
        super().__init__(lambda method: method in METHODS_BY_PATH and applies(method))
        self._profile = profile

    def wrap(self, behavior: Behavior, method: str) -> Behavior:
        profile = self._profile
        if not profile.routes_method(method):
            return _unrouted(method)
        request_type = METHODS_BY_PATH[method].request_type
        type_name = request_type.DESCRIPTOR.full_name

        async def routed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, bytes):
                try:
                    message = request_type.FromString(request)
                except DecodeError as exc:
                    raise InvalidArgument(
                        f"Invalid request: the body is not a valid {type_name}.",
                        reason="INVALID_REQUEST_BODY",
                    ) from exc
            else:
                message = request
            call = current_call.get()
            call.request = message
            call.resource_name = message.name
            call.access = profile.access_for(method, message.name)
            return await behavior(request, context)

        return routed


def _unrouted(method: str) -> Behavior:
    async def unimplemented(request: Any, context: grpc.aio.ServicerContext) -> Any:
        raise Unimplemented("Method not found.", log_detail=f"the profile does not route {method}")

    return unimplemented
