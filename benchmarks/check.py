"""The check client: did calls on a row really succeed, with the payload the upstream gives?

h2load counts HTTP 200s, and a gRPC error is an HTTP 200 too. Before and after a row is
measured, this client (grpc, synchronous) makes a sample of the same calls and compares the
grpc-status and the response bytes with what the upstream answers directly. The REST door's
check does the same over HTTP/1.1: status 200 and the JSON of the upstream's Operation.
"""

from __future__ import annotations

import http.client
import json
from collections import Counter
from dataclasses import dataclass, field

import grpc
from google.longrunning import operations_pb2
from google.protobuf import json_format

from benchmarks.wire import GET_OPERATION, same_operation


@dataclass
class CheckResult:
    calls: int = 0
    ok: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    mismatched: int = 0

    @property
    def passed(self) -> bool:
        return self.calls > 0 and self.ok == self.calls and self.mismatched == 0

    def merge(self, other: CheckResult) -> None:
        self.calls += other.calls
        self.ok += other.ok
        self.codes.update(other.codes)
        self.mismatched += other.mismatched

    def summary(self) -> str:
        if self.passed:
            return f"{self.ok}/{self.calls} OK, same Operation as the upstream's"
        codes = ", ".join(f"{code} x{count}" for code, count in sorted(self.codes.items()))
        return f"FAILED: {self.ok}/{self.calls} OK ({codes}), {self.mismatched} payload mismatches"


def fetch(target: str, request: bytes, token: str | None, method: str = GET_OPERATION) -> bytes:
    """One call's response bytes (raises grpc.RpcError on a non-OK status)."""
    with grpc.insecure_channel(target) as channel:
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        response: bytes = channel.unary_unary(method)(request, metadata=metadata, timeout=10)
        return response


def check(
    target: str,
    request: bytes,
    expected: bytes,
    token: str | None,
    calls: int = 20,
    method: str = GET_OPERATION,
) -> CheckResult:
    result = CheckResult()
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(method)
        for _ in range(calls):
            result.calls += 1
            try:
                response, state = call.with_call(request, metadata=metadata, timeout=10)
            except grpc.RpcError as err:
                result.codes[err.code().name] += 1
                continue
            result.codes[state.code().name] += 1
            if state.code() is grpc.StatusCode.OK:
                result.ok += 1
                if not same_operation(response, expected):
                    result.mismatched += 1
    return result


def check_rest(
    address: str, path: str, expected: bytes, token: str | None, calls: int = 20
) -> CheckResult:
    """`calls` GETs of `path` on one keep-alive HTTP/1.1 connection: 200 and the same Operation.

    The door answers proto3 JSON (json_format's defaults), so the expected Operation is
    compared in that form, parsed: key order and whitespace do not matter.
    """
    result = CheckResult()
    want = json_format.MessageToDict(operations_pb2.Operation.FromString(expected))
    headers = {"authorization": f"Bearer {token}"} if token else {}
    host, _, port = address.rpartition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        for _ in range(calls):
            result.calls += 1
            connection.request("GET", path, headers=headers)
            answer = connection.getresponse()
            body = answer.read()
            result.codes[f"HTTP {answer.status}"] += 1
            if answer.status == 200:
                result.ok += 1
                if json.loads(body) != want:
                    result.mismatched += 1
    finally:
        connection.close()
    return result
