"""The metrics endpoint: Prometheus text format over plain HTTP on its own port."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("opsgate.metrics")

MAX_REQUEST_BYTES = 8192


class MetricsServer:
    """Answers GET /metrics; anything else is 404. Runs on the gateway's event loop."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        self._server = await asyncio.start_server(self._answer, host.strip("[]"), int(port))
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics on http://%s:%d/metrics", host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            if (
                len(request_line) >= 2
                and request_line[0] == "GET"
                and request_line[1]
                in (
                    "/metrics",
                    "/metrics/",
                )
            ):
                body = await asyncio.to_thread(generate_latest, self._registry)
                writer.write(_response(200, CONTENT_TYPE_LATEST, body))
            else:
                writer.write(_response(404, "text/plain", b"not found\n"))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a client that says nothing sensible gets nothing
        finally:
            writer.close()


def _response(status: int, content_type: str, body: bytes) -> bytes:
    reason = {200: "OK", 404: "Not Found"}[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body
