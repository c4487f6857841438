"""The gRPC door's mapping between the gateway's google.rpc codes and grpc's own status codes."""

from __future__ import annotations

import grpc

from gateway.errors import StatusCode

# The same numbers and names on both sides, built once.
_GRPC_CODES: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def grpc_code(code: StatusCode) -> grpc.StatusCode:
    """The grpc.StatusCode a door answers a failure's google.rpc code with."""
    return _GRPC_CODES[code]


def rpc_code(code: grpc.StatusCode) -> StatusCode:
    """The google.rpc code of a grpc.StatusCode (e.g. one a servicer aborted with)."""
    return StatusCode(code.value[0])
