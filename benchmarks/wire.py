"""The calls the benchmarks make, as bytes: request messages, gRPC frames, method and REST paths."""

from __future__ import annotations

import struct
from pathlib import Path

from google.longrunning import operations_pb2
from google.protobuf import json_format

from gateway.reference_upstream.seed import DONE_OPERATION, STUCK_OPERATION

SERVICE = "google.longrunning.Operations"
GET_OPERATION = f"/{SERVICE}/GetOperation"
WAIT_OPERATION = f"/{SERVICE}/WaitOperation"
# A seeded, finished operation: its GetOperation answer never changes, so payloads compare.
UNARY_NAME = DONE_OPERATION
# GetOperation of that operation at the REST door: the profile's http rule for GetOperation is
# `get: "/v1/{name=projects/*/locations/*/operations/*}"`.
REST_GET_PATH = f"/v1/{UNARY_NAME}"
# A seeded operation that never finishes: WaitOperation on it is held open until cancelled.
HELD_NAME = STUCK_OPERATION


def get_request(name: str = UNARY_NAME) -> bytes:
    data: bytes = operations_pb2.GetOperationRequest(name=name).SerializeToString()
    return data


def wait_request(name: str = HELD_NAME) -> bytes:
    """No timeout field: the upstream waits until the operation is done, i.e. forever."""
    data: bytes = operations_pb2.WaitOperationRequest(name=name).SerializeToString()
    return data


def same_operation(got: bytes, expected: bytes) -> bool:
    """The same Operation: byte for byte, or equal once parsed.

    Another process may serialize the packed Structs' map entries in another order (string
    hashing is randomized per process), so the fallback compares the parsed content.
    """
    if got == expected:
        return True
    try:
        parsed = [
            json_format.MessageToDict(operations_pb2.Operation.FromString(data))
            for data in (got, expected)
        ]
    except Exception:
        return False
    return bool(parsed[0] == parsed[1])


def grpc_frame(message: bytes) -> bytes:
    """One length-prefixed gRPC message: flag 0 (uncompressed), 4-byte big-endian length."""
    return struct.pack(">BI", 0, len(message)) + message


def write_body(path: Path, message: bytes) -> Path:
    """The body h2load POSTs for every request."""
    path.write_bytes(grpc_frame(message))
    return path
