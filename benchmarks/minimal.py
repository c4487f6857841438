"""The floors under any Python authorizer: servers that answer every call and do nothing else.

`python -m benchmarks.minimal grpc --listen HOST:PORT` is a grpc.aio server on uvloop with one
generic handler answering every unary method with the same few bytes (bytes in, bytes out, no
deserializing). Called directly it is the bare grpc.aio unary server; behind Envoy it is a
minimal gRPC external authorizer: its answer, OK_CHECK_RESPONSE, is an allowing
`envoy.service.auth.v3.CheckResponse`.

`python -m benchmarks.minimal http --listen HOST:PORT` is a raw asyncio protocol on uvloop
answering every HTTP/1.1 request with `200 OK` and no body: Envoy's `http_service` external
authorizer at its leanest (no HTTP framework: headers found by their blank line, a body skipped
by its content-length).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

import grpc

from gateway import runtime

# CheckResponse{status: {} (code 0, OK), ok_response: {}}: field 1 and field 3, each an empty
# message (tag, length 0). Envoy allows a call when status.code is OK.
OK_CHECK_RESPONSE = b"\x0a\x00\x1a\x00"
CHECK_METHOD = "/envoy.service.auth.v3.Authorization/Check"
HTTP_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


class _AnswerAll(grpc.GenericRpcHandler):  # type: ignore[misc]
    """One handler, built once, for every method: the fixed answer."""

    def __init__(self, answer: bytes) -> None:
        async def reply(_request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
            return answer

        self._handler = grpc.unary_unary_rpc_method_handler(reply)

    def service(self, _details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return self._handler


async def serve_grpc(listen: str) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((_AnswerAll(OK_CHECK_RESPONSE),))
    if server.add_insecure_port(listen) == 0:
        raise SystemExit(f"cannot listen on {listen}")
    await server.start()
    await _until_stopped()
    await server.stop(1)


class _Http200(asyncio.Protocol):
    """HTTP/1.1 keep-alive: for each complete request (head, then content-length bytes), 200."""

    def __init__(self) -> None:
        self._buffer = b""
        self._skip = 0  # body bytes of the current request still to come
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: Any) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        answers = 0
        while True:
            if self._skip:
                taken = min(self._skip, len(buffer))
                self._skip -= taken
                buffer = buffer[taken:]
                if self._skip:
                    break
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[:end].lower()
            buffer = buffer[end + 4 :]
            answers += 1
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                self._skip = int(head[at + 17 : stop if stop >= 0 else None])
        self._buffer = buffer
        if answers and self._transport is not None:
            self._transport.write(HTTP_OK * answers)


async def serve_http(listen: str) -> None:
    host, _, port = listen.rpartition(":")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Http200, host, int(port), backlog=1024)
    await _until_stopped()
    server.close()
    await server.wait_closed()


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print("minimal server listening", file=sys.stderr, flush=True)
    await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.minimal")
    parser.add_argument("protocol", choices=("grpc", "http"))
    parser.add_argument("--listen", required=True)
    args = parser.parse_args(argv)
    runtime.run(serve_grpc(args.listen) if args.protocol == "grpc" else serve_http(args.listen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
