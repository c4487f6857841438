"""Raw HTTP/2 to the gRPC door (needs the optional `h2` package): what a gRPC client never sends.

gRPC client libraries refuse upper-case header names, duplicate pseudo-headers, odd paths and
broken message framing; an attacker's own HTTP/2 stack does not. Each request is one stream on
a fresh connection; the answer is read from the response headers and trailers.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

from hardening.doors import Answer, _reason

try:  # optional: the `hardening` extra installs it
    import h2.config
    import h2.connection
    import h2.events

    AVAILABLE = True
except ImportError:  # pragma: no cover - depends on the environment
    AVAILABLE = False

Headers = list[tuple[bytes, bytes]]


def grpc_frame(body: bytes, compressed: bool = False, declared: int | None = None) -> bytes:
    """gRPC's length-prefixed message: flag, 4-byte length, bytes (length may lie)."""
    length = len(body) if declared is None else declared
    return struct.pack(">BI", 1 if compressed else 0, length) + body


def base_headers(address: str, path: bytes, token: str | None) -> Headers:
    headers: Headers = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path),
        (b":authority", address.encode()),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return headers


def call(address: str, headers: Headers, data: bytes, timeout: float = 10.0) -> Answer:
    """Send one stream (HEADERS, then DATA with END_STREAM) and read the answer."""
    if not AVAILABLE:
        return Answer("h2", "SKIPPED", message="h2 is not installed")
    host, _, port = address.rpartition(":")
    config = h2.config.H2Configuration(
        client_side=True,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
    )
    conn = h2.connection.H2Connection(config=config)
    received: dict[bytes, bytes] = {}
    reset: int | None = None
    closed = False
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            conn.initiate_connection()
            sock.sendall(conn.data_to_send())
            stream = conn.get_next_available_stream_id()
            conn.send_headers(stream, headers, end_stream=not data)
            if data:
                conn.send_data(stream, data, end_stream=True)
            sock.sendall(conn.data_to_send())
            deadline = time.monotonic() + timeout
            while not closed and time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                for event in conn.receive_data(chunk):
                    if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                        received.update(dict(event.headers))
                    elif isinstance(event, h2.events.StreamReset):
                        reset, closed = int(event.error_code or 0), True
                    elif isinstance(event, h2.events.StreamEnded):
                        closed = True
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        closed = True
                        reset = int(event.error_code or 0)
                    elif isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                pending = conn.data_to_send()
                if pending:
                    sock.sendall(pending)
    except Exception as exc:  # the server may drop the connection mid-stream: that is an answer
        return Answer("h2", "TRANSPORT", message=f"{type(exc).__name__}: {exc}")
    return _answer(received, reset)


def _answer(received: dict[bytes, bytes], reset: int | None) -> Answer:
    status = received.get(b"grpc-status")
    request_id = received.get(b"x-request-id")
    if status is None:
        return Answer("h2", f"RST_{reset}" if reset is not None else "NO_STATUS")
    import grpc

    names = {code.value[0]: code.name for code in grpc.StatusCode}
    code = names.get(int(status), f"STATUS_{int(status)}")
    details = received.get(b"grpc-status-details-bin")
    decoded: Any = None
    if details:
        import base64

        try:
            decoded = base64.b64decode(details + b"=" * (-len(details) % 4))
        except ValueError:
            decoded = None
    message = received.get(b"grpc-message", b"").decode("latin-1")
    return Answer(
        "h2",
        code,
        request_id.decode() if request_id else None,
        _reason(decoded),
        message,
    )
