"""Envoy's HTTP ext_authz protocol (`http_service`): the same check as the gRPC Check, over a lean
HTTP/1.1 server.

A Python gRPC server costs a few hundred µs a call before any work (measured: the bare grpc.aio
unary server is the floor of any grpc.aio authorizer); parsing HTTP/1.1 with llhttp (httptools)
on the event loop costs a tenth of that. Envoy sends each check as an HTTP request: the caller's
path behind a prefix naming the listener (`/grpc`, `/rest`), every caller header, the headers
the generated config adds (the caller's address and certificate, the method), and the body as
raw bytes. The answer is 200 with the headers Envoy sets upstream and the join key (which Envoy
turns into dynamic metadata), or the refusal itself: status, headers and body for the caller.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import urllib.parse
from collections.abc import Callable, Coroutine
from typing import Any, cast

import httptools

from gateway.envoy.answers import Allow, Refuse
from gateway.envoy.door import EnvoyDoor, EnvoyTransport
from gateway.envoy.settings import (
    CALL_ID_KEY,
    GRPC_DOOR,
    HTTP_CERTIFICATE_HEADER,
    HTTP_CONTENT_TYPE_HEADER,
    HTTP_METHOD_HEADER,
    HTTP_PEER_HEADER,
    REST_DOOR,
)

log = logging.getLogger("opsgate.envoy")

HEADERS_TO_REMOVE = "x-envoy-auth-headers-to-remove"  # Envoy removes these from the upstream call
TIMEOUT_HEADER = "x-envoy-expected-rq-timeout-ms"
MAX_HEAD_BYTES = 256 * 1024  # Envoy sends at most its own header limit (60 KiB by default)
_HOP_HEADERS = frozenset({"host", "content-length", "connection", "transfer-encoding"})
_REASONS = {200: "OK", 400: "Bad Request", 500: "Internal Server Error"}


class CheckConnection(asyncio.Protocol):
    """One connection from Envoy: each request is a check, answered in the order it came.

    A request too large, or one that does not parse, closes the connection: Envoy treats that
    as the authorizer failing, and fails closed.
    """

    def __init__(
        self, door: EnvoyDoor, body_limit: int, open_connections: set[CheckConnection]
    ) -> None:
        self._door = door
        self._body_limit = body_limit
        self._open = open_connections
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[str, str] = {}
        self._head_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._previous: asyncio.Future[None] | None = None  # the answer before this one
        self.lost = False

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an asyncio.Transport subclass, but is one).
        self._transport = cast(asyncio.Transport, transport)
        self._open.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, _TooLarge) as exc:
            log.warning("closing a check connection from Envoy: %s", exc)
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._open.discard(self)

    def close(self) -> None:
        """The gateway is stopping: no more checks on this connection (Envoy opens another,
        to a replica still serving)."""
        self._close()

    # --- httptools' callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url, self._headers, self._head_bytes = b"", {}, 0
        self._body, self._body_bytes = [], 0

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        if self._head_bytes > MAX_HEAD_BYTES:
            raise _TooLarge("request head over the limit")
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > MAX_HEAD_BYTES:
            raise _TooLarge("request head over the limit")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        # Repeated headers are joined as HTTP joins them (Envoy's gRPC Check does the same).
        self._headers[key] = f"{self._headers[key]},{text}" if key in self._headers else text

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self._body_limit:
            raise _TooLarge("request body over the limit")
        self._body.append(body)

    def on_message_complete(self) -> None:
        keep_alive = self._parser.should_keep_alive()
        body = b"".join(self._body)
        previous = self._previous
        if previous is not None and previous.done():
            previous = None
        self._previous = run_eagerly(
            self._answer(self._url, self._headers, body, keep_alive, previous)
        )

    # --- one check ---------------------------------------------------------------------------

    async def _answer(
        self,
        url: bytes,
        headers: dict[str, str],
        body: bytes,
        keep_alive: bool,
        previous: asyncio.Future[None] | None,
    ) -> None:
        try:
            answer = await self._check(url, headers, body)
            response = render(answer, keep_alive)
        except Exception:
            log.exception("a check from Envoy failed")
            response, keep_alive = _plain(500, keep_alive=False), False
        if previous is not None:
            await previous  # HTTP/1.1 answers go back in the order the requests came
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(response)
        if not keep_alive:
            transport.close()

    async def _check(self, url: bytes, headers: dict[str, str], body: bytes) -> Allow | Refuse:
        path = urllib.parse.unquote(url.decode("latin-1"))
        door, _, caller_path = path.removeprefix("/").partition("/")
        if door not in (GRPC_DOOR, REST_DOOR):
            # Cut at '?': a query string may hold what a caller should not have put there.
            shown = path.partition("?")[0][:100]
            raise ValueError(f"the check path does not name a listener: {shown!r}")
        # The headers the generated config has Envoy add (overriding any caller copy).
        verb = headers.pop(HTTP_METHOD_HEADER, "POST")
        content_type = headers.pop(HTTP_CONTENT_TYPE_HEADER, "")
        headers.pop("content-type", None)  # the check's own (see settings.py)
        if content_type and content_type != "-":
            headers["content-type"] = content_type
        transport = EnvoyTransport(
            _peer(headers.pop(HTTP_PEER_HEADER, "")),
            _certificate(headers.pop(HTTP_CERTIFICATE_HEADER, "")),
            door == REST_DOOR,
            _remaining(headers.pop(TIMEOUT_HEADER, "")),
            lambda: self.lost,
        )
        caller = {k: v for k, v in headers.items() if k not in _HOP_HEADERS}
        return await self._door.decide("/" + caller_path, verb, caller, body, transport)

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class _TooLarge(Exception):
    pass


def run_eagerly(coro: Coroutine[Any, Any, None]) -> asyncio.Future[None] | None:
    """Run `coro` now, as far as it goes without waiting; None if it finished, else a future
    that completes when it does.

    Most checks never wait (a remembered token, a cached decision): running them at once saves
    creating and scheduling a Task per check. A check that waits is resumed from the future it
    waits on, as a Task would resume it, in a context of its own (the audit stage sets the
    current call in it).
    """
    context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] | None = None

    def step() -> None:
        nonlocal done
        try:
            waited = context.run(coro.send, None)
        except StopIteration:
            if done is not None:
                done.set_result(None)
            return
        except BaseException as exc:  # _answer handles its own failures: this is a bug
            if done is None:
                done = loop.create_future()
            done.set_exception(exc)
            return
        if done is None:
            done = loop.create_future()
        if waited is None:  # a bare yield (asyncio.sleep(0)): try again on the next turn
            loop.call_soon(step)
        else:
            waited._asyncio_future_blocking = False
            waited.add_done_callback(lambda _: step())

    step()
    return done


def render(answer: Allow | Refuse, keep_alive: bool) -> bytes:
    """The HTTP answer Envoy reads: 200 lets the call through; anything else is the refusal the
    caller gets, as is."""
    lines: list[str]
    if isinstance(answer, Allow):
        lines = ["HTTP/1.1 200 OK"]
        lines += [f"{key}: {value}" for key, value in answer.upstream_set]
        if answer.upstream_removed:
            lines.append(f"{HEADERS_TO_REMOVE}: {','.join(answer.upstream_removed)}")
        lines += [f"{key}: {value}" for key, value in answer.to_caller]
        lines.append(f"{CALL_ID_KEY}: {answer.join_key}")
        body = b""
    else:
        # A gRPC refusal is answered 200 with grpc-status at the gRPC Check; here 200 means
        # "allow", so it carries the code's HTTP status (the caller reads grpc-status).
        status = answer.http_status if answer.http_status != 200 else _GRPC_HTTP
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Refused')}"]
        lines += [f"{key}: {value}" for key, value in answer.headers]
        body = answer.body.encode()
    lines.append(f"content-length: {len(body)}")
    if not keep_alive:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


_GRPC_HTTP = 403  # any status but 200: Envoy relays it, the gRPC client reads grpc-status


def _plain(status: int, *, keep_alive: bool) -> bytes:
    close = "" if keep_alive else "connection: close\r\n"
    return f"HTTP/1.1 {status} {_REASONS[status]}\r\n{close}content-length: 0\r\n\r\n".encode()


def _peer(address: str) -> str | None:
    """Envoy's %DOWNSTREAM_REMOTE_ADDRESS% ('1.2.3.4:5555', '[::1]:5555'), as grpc spells it."""
    if not address or address == "-":
        return None
    host = address.rpartition(":")[0]
    return f"ipv6:{address}" if host.startswith("[") else f"ipv4:{address}"


def _certificate(value: str) -> bytes:
    """Envoy's %DOWNSTREAM_PEER_CERT%: the URL-encoded PEM, or '-'/nothing without one."""
    if not value or value == "-":
        return b""
    return urllib.parse.unquote(value).encode()


def _remaining(milliseconds: str) -> Callable[[], float | None]:
    """Time left of Envoy's own wait for this check."""
    try:
        deadline = time.monotonic() + int(milliseconds) / 1000
    except ValueError:
        return lambda: None
    return lambda: max(0.0, deadline - time.monotonic())


class HttpCheckServer:
    """The listening HTTP check and its open connections (Envoy keeps them alive)."""

    def __init__(self, server: asyncio.Server, connections: set[CheckConnection]) -> None:
        self._server = server
        self._connections = connections

    @property
    def address(self) -> str:
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def close(self) -> None:
        """Stop listening and close every connection: a check Envoy sends on a kept-alive
        connection after the door has stopped would be decided with no one left to end its
        record."""
        self._server.close()
        for connection in list(self._connections):
            connection.close()


async def start_http_check(
    door: EnvoyDoor, listen: str, body_limit: int, *, share_port: bool = False
) -> HttpCheckServer:
    """Serve the HTTP check on `listen` (HOST:PORT); with `share_port`, beside other workers."""
    host, _, port = listen.rpartition(":")
    loop = asyncio.get_running_loop()
    # The body Envoy sends is the caller's message and its frame header; a little slack.
    limit = body_limit + 1024
    connections: set[CheckConnection] = set()
    server = await loop.create_server(
        lambda: CheckConnection(door, limit, connections),
        host.strip("[]") or None,
        int(port),
        reuse_port=share_port,
        backlog=1024,
    )
    return HttpCheckServer(server, connections)
