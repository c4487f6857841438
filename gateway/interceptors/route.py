"""The route stage: decodes the request (raw bytes in the proxy) and notes the resource it names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from gateway.errors import InvalidArgument
from gateway.interceptors.call import current_call
from gateway.interceptors.stage import Behavior, Stage
from gateway.routing import METHODS_BY_PATH


class RouteStage(Stage):
    """Parses the request into its message type and records `name` on the call.

    In the proxy the request arrives as bytes and only this stage parses it (the forwarder
    relays the original bytes); in library mode it arrives already parsed.
    """

    name = "route"

    def __init__(self, applies: Callable[[str], bool]) -> None:
        super().__init__(lambda method: method in METHODS_BY_PATH and applies(method))

    def wrap(self, behavior: Behavior, method: str) -> Behavior:
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
            return await behavior(request, context)

        return routed
