"""The check client: did calls on a row really succeed, with the payload the upstream gives?

h2load counts HTTP 200s, and a gRPC error is an HTTP 200 too. Before and after a row is
measured, this client (grpc, synchronous) makes a sample of the same calls and compares the
grpc-status and the response bytes with what the upstream answers directly.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import grpc

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
