"""The gateway's doors as the attacks see them: gRPC (raw bytes) and REST/JSON (raw HTTP/1.1).

Every call ends in an Answer: the gRPC status name (for REST, the `status` of Google's JSON
error body), the request id the gateway returned (trailing `x-request-id`, or the
`X-Request-Id` header) and the ErrorInfo reason. A call the transport refused before the chain
saw it has no request id, and is not audited.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hardening.oracle import SHORT_METHODS, method_path

Metadata = list[tuple[str, str | bytes]]
REQUEST_ID = "x-request-id"
DETAILS_KEY = "grpc-status-details-bin"
# What a client with no answer from the chain reports instead of a status.
CLIENT_REFUSED = "CLIENT_REFUSED"  # the client library would not send it
# Generous: the gRPC client must be able to send metadata past the gateway's listener limit.
CLIENT_OPTIONS = [
    ("grpc.max_metadata_size", 4 * 1024 * 1024),
    ("grpc.absolute_max_metadata_size", 4 * 1024 * 1024),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
]


@dataclass(frozen=True, slots=True)
class Answer:
    """What one call got back."""

    door: str
    code: str
    request_id: str | None = None
    reason: str | None = None
    message: str = ""
    http_status: int | None = None
    body: bytes = b""

    @property
    def answered(self) -> bool:
        """The chain answered it (and so must have audited it)."""
        return self.request_id is not None


def _reason(details: bytes | None) -> str | None:
    if not details:
        return None
    try:
        status = status_pb2.Status.FromString(details)
    except Exception:
        return None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return None


class GrpcDoor:
    """Raw-bytes unary calls to the gateway's gRPC listener."""

    name = "grpc"

    def __init__(self, address: str) -> None:
        self.address = address
        self.channel = grpc.insecure_channel(address, options=CLIENT_OPTIONS)

    def close(self) -> None:
        self.channel.close()

    def call(
        self, method: str, body: bytes, metadata: Metadata, timeout: float | None = 10.0
    ) -> Answer:
        refused = invalid_metadata(metadata)
        if refused:
            # grpc's C core would refuse it too (INTERNAL "Invalid metadata", and a log line).
            return Answer(self.name, CLIENT_REFUSED, message=refused)
        rpc = self.channel.unary_unary(method)
        try:
            response, call = rpc.with_call(body, metadata=metadata, timeout=timeout)
        except grpc.RpcError as err:
            trailing = dict(err.trailing_metadata() or ())
            details = trailing.get(DETAILS_KEY)
            return Answer(
                self.name,
                err.code().name,
                _text(trailing.get(REQUEST_ID)),
                _reason(details if isinstance(details, bytes) else None),
                err.details() or "",
            )
        except Exception as exc:  # the client library refused the metadata or the target
            return Answer(self.name, CLIENT_REFUSED, message=f"{type(exc).__name__}: {exc}")
        trailing = dict(call.trailing_metadata() or ())
        return Answer(self.name, "OK", _text(trailing.get(REQUEST_ID)), body=response)

    def operation(
        self, short: str, name: str, token: str | None, extra: Metadata | None = None, **kw: Any
    ) -> Answer:
        """One Operations call for `name` (get, list, cancel, delete, wait) with a bearer token."""
        metadata: Metadata = [("authorization", f"Bearer {token}")] if token else []
        return self.call(
            method_path(short), request_body(short, name), metadata + list(extra or ()), **kw
        )

    def healthy(self, service: str = "", timeout: float = 5) -> bool:
        stub = health_pb2_grpc.HealthStub(self.channel)
        try:
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


_KEY = re.compile(r"[0-9a-z_.-]+")
_VALUE = re.compile(r"[\x20-\x7e]*")


def invalid_metadata(metadata: Metadata) -> str | None:
    """Why a gRPC client would refuse to send this metadata (gRPC's key and value rules)."""
    for key, value in metadata:
        if not _KEY.fullmatch(key):
            return f"illegal metadata key {key[:40]!r}"
        if key.endswith("-bin"):
            continue
        if not isinstance(value, str) or not _VALUE.fullmatch(value):
            return f"illegal value for metadata key {key!r}"
    return None


def request_body(short: str, name: str) -> bytes:
    from google.longrunning import operations_pb2

    types = {
        "get": operations_pb2.GetOperationRequest,
        "list": operations_pb2.ListOperationsRequest,
        "cancel": operations_pb2.CancelOperationRequest,
        "delete": operations_pb2.DeleteOperationRequest,
        "wait": operations_pb2.WaitOperationRequest,
    }
    message: Any = types[short](name=name)
    return bytes(message.SerializeToString())


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


# REST: how each method reaches its route, by Google's REST paths in the profile.
REST_SHAPES = {
    "get": ("GET", "/v1/{}", b""),
    "list": ("GET", "/v1/{}/operations", b""),
    "cancel": ("POST", "/v1/{}:cancel", b"{}"),
    "delete": ("DELETE", "/v1/{}", b""),
    "wait": ("POST", "/v1/{}:wait", b"{}"),
}
_LIST_SUFFIX = "/operations"


def rest_meaning(short: str, name: str) -> tuple[str, str]:
    """What the REST request for (short, name) asks for. Google's REST paths overlap: a Get of
    a name ending in /operations is `GET /v1/P/operations`, which is the List of P."""
    if short == "get" and name.endswith(_LIST_SUFFIX):
        return "list", name[: -len(_LIST_SUFFIX)]
    return short, name


# Bytes that would end the request line or a header early are sent percent-encoded, so one
# fuzzed request is always exactly one HTTP request on the wire (no self-inflicted smuggling).
_FRAMING = {ord(" "): b"%20", ord("\r"): b"%0D", ord("\n"): b"%0A", ord("\t"): b"%09"}


def path_bytes(name: str) -> bytes:
    raw = name.encode("utf-8", "surrogatepass")
    return b"".join(_FRAMING.get(b, bytes((b,))) for b in raw)


class RestDoor:
    """Raw HTTP/1.1 requests (one per connection) to the REST/JSON door."""

    name = "rest"

    def __init__(self, address: str) -> None:
        self.address = address
        host, _, port = address.rpartition(":")
        self.host, self.port = host, int(port)

    def close(self) -> None:
        return

    def request(
        self,
        verb: str,
        target: bytes,
        headers: list[tuple[str | bytes, str | bytes]],
        body: bytes = b"",
        timeout: float = 10.0,
    ) -> Answer:
        head = [verb.encode() + b" " + target + b" HTTP/1.1", f"Host: {self.address}".encode()]
        head.append(b"Connection: close")
        if body or verb in ("POST", "PUT", "PATCH"):
            head.append(b"Content-Type: application/json")
            head.append(f"Content-Length: {len(body)}".encode())
        for key, value in headers:
            k = key if isinstance(key, bytes) else key.encode("utf-8", "surrogatepass")
            v = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
            head.append(k + b": " + v)
        wire = b"\r\n".join(head) + b"\r\n\r\n" + body
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
                sock.sendall(wire)
                response = http.client.HTTPResponse(sock, method=verb)  # HEAD: no body
                response.begin()
                data = response.read()
                status = response.status
                request_id = response.getheader("X-Request-Id")
        except (OSError, http.client.HTTPException) as exc:
            return Answer(self.name, "TRANSPORT", message=f"{type(exc).__name__}: {exc}")
        return parse_rest(status, data, request_id)

    def operation(
        self,
        short: str,
        name: str,
        token: str | None,
        extra: list[tuple[str | bytes, str | bytes]] | None = None,
        **kw: Any,
    ) -> Answer:
        verb, template, body = REST_SHAPES[short]
        target = template.encode().replace(b"{}", path_bytes(name))
        headers: list[tuple[str | bytes, str | bytes]] = (
            [("Authorization", f"Bearer {token}")] if token else []
        )
        return self.request(verb, target, headers + list(extra or ()), body, **kw)


def parse_rest(status: int, data: bytes, request_id: str | None, door: str = "rest") -> Answer:
    """Google's JSON error body (or 200) as an Answer."""
    if status == 200:
        return Answer(door, "OK", request_id, http_status=status, body=data)
    code, reason, message = f"HTTP_{status}", None, ""
    try:
        error = json.loads(data)["error"]
        code = str(error.get("status") or code)
        message = str(error.get("message", ""))
        for detail in error.get("details", ()):
            if "ErrorInfo" in str(detail.get("@type", "")):
                reason = detail.get("reason")
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return Answer(door, code, request_id, reason, message, status, data)


class RestSession:
    """Well-formed REST calls on one kept-alive connection (load, not fuzzing)."""

    name = "rest"

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.host, self.port = host, int(port)
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def operation(self, short: str, name: str, token: str | None, timeout: float = 10.0) -> Answer:
        verb, template, body = REST_SHAPES[short]
        headers = {"X-Server-Timeout": f"{timeout:g}", "Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout + 2)
        try:
            self._conn.request(verb, template.format(name), body=body or None, headers=headers)
            response = self._conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            code = "CUT_SHORT" if isinstance(exc, TimeoutError) else "TRANSPORT"
            return Answer(self.name, code, message=f"{type(exc).__name__}: {exc}")
        if response.getheader("Connection", "").lower() == "close":
            self.close()
        return parse_rest(response.status, data, response.getheader("X-Request-Id"))


def short_of(method: str) -> str:
    """'/google.longrunning.Operations/GetOperation' -> 'get'."""
    tail = method.rsplit("/", 1)[-1]
    return next((short for short, full in SHORT_METHODS.items() if full == tail), tail)
