"""The google.longrunning.Operations methods the gateway knows, with their request types."""

from __future__ import annotations

from dataclasses import dataclass

from google.longrunning import operations_pb2
from google.protobuf.message import Message

SERVICE = "google.longrunning.Operations"
SERVICE_PREFIX = f"/{SERVICE}/"


@dataclass(frozen=True, slots=True)
class OperationsMethod:
    """One RPC of the Operations service: its full path and request message type."""

    name: str
    request_type: type[Message]

    @property
    def path(self) -> str:
        return f"{SERVICE_PREFIX}{self.name}"


OPERATIONS_METHODS: tuple[OperationsMethod, ...] = (
    OperationsMethod("GetOperation", operations_pb2.GetOperationRequest),
    OperationsMethod("ListOperations", operations_pb2.ListOperationsRequest),
    OperationsMethod("CancelOperation", operations_pb2.CancelOperationRequest),
    OperationsMethod("DeleteOperation", operations_pb2.DeleteOperationRequest),
    OperationsMethod("WaitOperation", operations_pb2.WaitOperationRequest),
)
METHODS_BY_PATH: dict[str, OperationsMethod] = {m.path: m for m in OPERATIONS_METHODS}
