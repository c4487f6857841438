"""A real gRPC google.logging.v2.LoggingServiceV2 on 127.0.0.1 that keeps what WriteLogEntries
receives (and what it refused), for tests of the cloud_logging audit sink.

Built from google-cloud-logging's own protos with grpcio's generic handlers (the package ships
no servicer stubs). It can refuse requests with a chosen status for a while, or be stopped and
started again on the same port, to stand for an outage of Cloud Logging.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import grpc
from google.cloud.audit import audit_log_pb2
from google.cloud.logging_v2.types import log_entry as log_entry_types
from google.cloud.logging_v2.types import logging as logging_types
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status

SERVICE = "google.logging.v2.LoggingServiceV2"
AUDIT_LOG_TYPE_URL = "type.googleapis.com/google.cloud.audit.AuditLog"

WriteLogEntriesRequest: Any = logging_types.WriteLogEntriesRequest.pb()
WriteLogEntriesResponse: Any = logging_types.WriteLogEntriesResponse.pb()
LogEntry: Any = log_entry_types.LogEntry.pb()
WriteLogEntriesPartialErrors: Any = logging_types.WriteLogEntriesPartialErrors.pb()


@dataclass
class Refusal:
    """A request the server answered with an error instead of storing it."""

    code: grpc.StatusCode
    entries: int


@dataclass
class LoggingServer:
    """The received requests (stored whole, in arrival order) and the refused ones."""

    requests: list[Any] = field(default_factory=list)  # WriteLogEntriesRequest messages
    refusals: list[Refusal] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)  # of each stored request
    refuse_with: grpc.StatusCode | None = None  # set: every request is answered so
    # Entries refused for themselves: index in the request -> message, sent as Cloud Logging
    # does, in a WriteLogEntriesPartialErrors detail of an INVALID_ARGUMENT status.
    refuse_entries: dict[int, str] | None = None
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: grpc.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def entries(self) -> list[Any]:
        """Every stored LogEntry, in the order they arrived."""
        with self._lock:
            return [entry for request in self.requests for entry in request.entries]

    def start(self) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "WriteLogEntries": grpc.unary_unary_rpc_method_handler(
                    self._write,
                    request_deserializer=WriteLogEntriesRequest.FromString,
                    response_serializer=WriteLogEntriesResponse.SerializeToString,
                )
            },
        )
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        if port == 0:
            raise RuntimeError(f"cannot bind 127.0.0.1:{self.port}")
        self.port = port
        server.start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0).wait()
            self._server = None

    def _write(self, request: Any, context: grpc.ServicerContext) -> Any:
        if self.refuse_entries is not None:
            with self._lock:
                self.refusals.append(
                    Refusal(grpc.StatusCode.INVALID_ARGUMENT, len(request.entries))
                )
            context.abort_with_status(rpc_status.to_status(self._entry_errors(self.refuse_entries)))
        with self._lock:
            refuse_with = self.refuse_with
            if refuse_with is not None:
                self.refusals.append(Refusal(refuse_with, len(request.entries)))
            else:
                self.requests.append(request)
                self.metadata.append(
                    {
                        key: value
                        for key, value in context.invocation_metadata()
                        if isinstance(value, str)
                    }
                )
        if refuse_with is not None:
            context.abort(refuse_with, "The service is currently unavailable.")
        return WriteLogEntriesResponse()

    @staticmethod
    def _entry_errors(refused: dict[int, str]) -> status_pb2.Status:
        partial = WriteLogEntriesPartialErrors()
        for index, message in refused.items():
            partial.log_entry_errors[index].code = code_pb2.INVALID_ARGUMENT
            partial.log_entry_errors[index].message = message
        status = status_pb2.Status(
            code=code_pb2.INVALID_ARGUMENT,
            message="Log entry with size 300.1K exceeds maximum size of 256.0K",
        )
        status.details.add().Pack(partial)
        return status


@contextmanager
def running_logging_server() -> Iterator[LoggingServer]:
    server = LoggingServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def as_record(entry: Any) -> dict[str, Any]:
    """A received LogEntry in the records' JSON shape, its AuditLog unpacked by type URL."""
    assert entry.proto_payload.type_url == AUDIT_LOG_TYPE_URL
    payload = audit_log_pb2.AuditLog()
    assert entry.proto_payload.Unpack(payload)
    record = json_format.MessageToDict(entry)
    record["protoPayload"] = {
        "@type": AUDIT_LOG_TYPE_URL,
        **json_format.MessageToDict(payload),
    }
    # protobuf writes 3, 6 or 9 fraction digits as needed; the records always write 6.
    moment = entry.timestamp.ToDatetime(tzinfo=UTC)
    record["timestamp"] = moment.isoformat(timespec="microseconds")[:26] + "Z"
    return record


_DEFAULTS: list[Any] = [False, "", []]  # 0 == False: numbers too


def same_json(received: Any, written: Any) -> bool:
    """Equal as JSON data, a Struct's numbers being doubles (12 and 12.0 are the same)."""
    if isinstance(written, dict):
        # proto3 does not keep a scalar field at its default: false, 0, "" and [] are absent.
        present = {key for key, value in written.items() if value not in _DEFAULTS}
        return (
            isinstance(received, dict)
            and present <= received.keys() <= written.keys()
            and all(
                same_json(received.get(key), value)
                for key, value in written.items()
                if key in received
            )
        )
    if isinstance(written, list):
        return (
            isinstance(received, list)
            and len(received) == len(written)
            and all(same_json(a, b) for a, b in zip(received, written, strict=True))
        )
    if isinstance(written, bool) or isinstance(received, bool):
        return received is written
    if isinstance(written, int | float) and isinstance(received, int | float):
        return float(received) == float(written)
    return bool(received == written)
