"""The metrics endpoint over plain HTTP on its own port: prometheus_client's own exposition,
OpenMetrics or the text format as the scraper asks, gzipped when it accepts that."""

from __future__ import annotations

import asyncio
import gzip
import logging
import urllib.parse

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

log = logging.getLogger("opsgate.metrics")

MAX_REQUEST_BYTES = 8192


class MetricsServer:
    """Answers GET /metrics; anything else is 404. Runs on the gateway's event loop; the
    metrics are rendered (and compressed) on a worker thread, off the calls' loop.

    As prometheus_client's own servers answer: `Accept: application/openmetrics-text` gets
    OpenMetrics (ending in `# EOF`), any other the text format 0.0.4; `Accept-Encoding: gzip`
    gets the body gzipped; `?name[]=NAME` (repeated) restricts the answer to those metrics.
    """

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
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            verb, target = [*request_line.split(), "", ""][:2]
            path, _, query = target.partition("?")
            if verb == "GET" and path in ("/metrics", "/metrics/"):
                headers = _headers(header_lines)
                names = urllib.parse.parse_qs(query).get("name[]", [])
                rendered = await asyncio.to_thread(
                    self._render,
                    headers.get("accept", ""),
                    headers.get("accept-encoding", ""),
                    names,
                )
                writer.write(_response(200, *rendered))
            else:
                writer.write(_response(404, "text/plain", b"not found\n"))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a client that says nothing sensible gets nothing
        finally:
            writer.close()

    def _render(
        self, accept: str, accept_encoding: str, names: list[str]
    ) -> tuple[str, bytes, str | None]:
        """(content type, body, content encoding) of the answer to a scrape."""
        encoder, content_type = choose_encoder(accept)
        registry = self._registry
        body = encoder(registry.restricted_registry(names) if names else registry)
        if gzip_accepted(accept_encoding):
            return content_type, gzip.compress(body), "gzip"
        return content_type, body, None


def _headers(lines: list[str]) -> dict[str, str]:
    """The request's headers by lower-case name; a repeated header's values joined by commas."""
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if colon:
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]},{value}" if key in headers else value
    return headers


def _response(
    status: int, content_type: str, body: bytes, content_encoding: str | None = None
) -> bytes:
    reason = {200: "OK", 404: "Not Found"}[status]
    encoding = f"Content-Encoding: {content_encoding}\r\n" if content_encoding else ""
    vary = "Vary: Accept, Accept-Encoding\r\n" if status == 200 else ""
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n{encoding}{vary}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body
