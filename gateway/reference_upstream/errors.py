"""The reference upstream's request errors, each carrying the google.rpc.Status to answer with."""

from __future__ import annotations

import grpc
from google.rpc import status_pb2

from gateway.errors import OpsgateError


class RequestError(OpsgateError):
    """A request the reference upstream refuses, and the status the RPC ends with."""

    reason = "REQUEST_REFUSED"

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(status.message)
        self.status = status


class OperationNotFound(RequestError, LookupError):
    """No operation has this name (never created, or deleted)."""

    reason = "OPERATION_NOT_FOUND"

    def __init__(self, name: str) -> None:
        code = grpc.StatusCode.NOT_FOUND.value[0]
        super().__init__(status_pb2.Status(code=code, message=f"Operation '{name}' not found."))
        self.name = name


class InvalidArgument(RequestError, ValueError):
    """A request field the reference upstream cannot honour (filter, page size, page token)."""

    reason = "REQUEST_INVALID"

    def __init__(self, message: str) -> None:
        code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
        super().__init__(status_pb2.Status(code=code, message=message))


class InjectedFault(RequestError):
    """A failure a test asked for with OperationStore.inject_fault."""

    reason = "FAULT_INJECTED"


class OperationExists(OpsgateError, ValueError):
    """OperationStore.create was given a name that is already taken."""

    reason = "OPERATION_EXISTS"

    def __init__(self, name: str) -> None:
        super().__init__(f"Operation '{name}' already exists.")
        self.name = name
