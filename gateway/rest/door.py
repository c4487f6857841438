"""The REST door's handler: match a rule, build the request, run the pipeline, answer JSON."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping, Sequence

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from gateway.call import Call, new_call
from gateway.errors import (
    DEADLINE_MESSAGE,
    INTERNAL_MESSAGE,
    NOT_FOUND_MESSAGE,
    UNAVAILABLE_MESSAGE,
    CallFailure,
    StatusCode,
)
from gateway.headers import TIMEOUT_HEADER, GatewayHeaders
from gateway.resource_names import printable
from gateway.rest.anyjson import AnyRenderer
from gateway.rest.metadata import DEFAULT_GATEWAY_HEADERS, grpc_peer, invocation_metadata
from gateway.rest.routes import Matched, RouteTable, WrongVerb
from gateway.rest.status import error_body, failure_answer
from gateway.rest.tls import peer_auth_context
from gateway.rest.transcode import BadRequest, build_request, json_text, response_json
from gateway.stages.chain import Runner
from gateway.upstream.forwarder import UpstreamForwarder

log = logging.getLogger("opsgate.rest")


class RestHandler:
    """Answers every HTTP request of the door; the checks are the pipeline's, never its own.

    Decided here, before the chain and so not audited (like a gRPC frame the transport
    refuses): an unmatched path (404), a wrong verb on a known path (405), a body over the
    limit (413), a query, body or timeout header that cannot form the request (400), and
    requests arriving while the door drains (503). Everything else is a call the pipeline runs,
    relayed upstream by the forwarder once the stages let it through.
    """

    def __init__(
        self,
        routes: RouteTable,
        runner: Runner,
        forwarder: UpstreamForwarder,
        gateway_headers: GatewayHeaders = DEFAULT_GATEWAY_HEADERS,
        renderer: AnyRenderer | None = None,
    ) -> None:
        self._routes = routes
        self._runner = runner
        self._forwarder = forwarder
        self._gateway_headers = gateway_headers  # what no caller's header may spell
        self._renderer = renderer or AnyRenderer()
        self.inflight: set[asyncio.Task[object]] = set()
        self.closing = False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.closing:
            return _error(503, StatusCode.UNAVAILABLE, UNAVAILABLE_MESSAGE, close=True)
        path = request.rel_url.raw_path  # as sent: a percent-encoded name stays encoded
        found = self._routes.match(request.method, path)
        if found is None:
            log.debug("no REST rule matches %s %s", request.method, printable(path))
            return _error(404, StatusCode.NOT_FOUND, NOT_FOUND_MESSAGE)
        if isinstance(found, WrongVerb):
            allowed = ", ".join(found.allowed)
            message = f"Method {request.method} is not allowed here; use {allowed}."
            return _error(405, StatusCode.UNIMPLEMENTED, message, {"Allow": allowed})
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            message = f"The request body is larger than {request.client_max_size} bytes."
            return _error(413, StatusCode.RESOURCE_EXHAUSTED, message, close=True)
        try:
            timeout = _timeout(request.headers)
            request_bytes = build_request(found, list(request.query.items()), body)
        except BadRequest as exc:
            return _error(400, StatusCode.INVALID_ARGUMENT, str(exc))
        task = asyncio.current_task()
        if task is not None:
            self.inflight.add(task)
        try:
            return await self._call(request, found, request_bytes, timeout)
        finally:
            if task is not None:
                self.inflight.discard(task)

    async def _call(
        self, request: web.Request, found: Matched, request_bytes: bytes, timeout: float | None
    ) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        method = found.route.method
        transport = HttpTransport(request, deadline)
        metadata = invocation_metadata(request.headers.items(), self._gateway_headers)
        call = new_call(method, metadata, transport, request_bytes)
        headers = {"X-Request-Id": call.request_id}
        forward = self._forwarder.forward

        async def relay(call: Call) -> bytes:
            response, _ = await forward(method, request_bytes, call)
            return response

        try:
            async with asyncio.timeout_at(deadline) as timer:
                transport.timer = timer
                answer = await self._runner.run(call, self._runner.steps(method), relay)
        except CallFailure as failure:
            return _failure_response(failure, headers)
        except TimeoutError:
            # The audit stage saw the cancellation with no time left: DEADLINE_EXCEEDED.
            return _error(504, StatusCode.DEADLINE_EXCEEDED, DEADLINE_MESSAGE, headers)
        except asyncio.CancelledError:
            # The client went away (aiohttp cancels the handler): the audit stage recorded
            # CANCELLED (DEADLINE_EXCEEDED if it gave up at its X-Server-Timeout, just before
            # our timer) and the upstream call was cancelled with it.
            transport.gone = True
            raise
        try:
            rendered = response_json(found, answer, self._renderer)
        except (DecodeError, json_format.Error, TypeError) as exc:
            log.warning("cannot render the %s answer as JSON: %s", method, exc)
            return _error(500, StatusCode.INTERNAL, INTERNAL_MESSAGE, headers)
        headers.update(rendered.headers())  # which Any fields could not be rendered, if any
        return web.Response(
            text=rendered.text, content_type="application/json", charset="utf-8", headers=headers
        )


class HttpTransport:
    """The REST call's connection and deadline, as the stages ask for them (the Transport).

    The deadline comes from the request's X-Server-Timeout; the door's `timer` enforces it, and
    time_remaining() is 0 once it has fired, so the audit stage records DEADLINE_EXCEEDED.
    """

    __slots__ = ("_deadline", "_request", "gone", "timer")

    def __init__(self, request: web.Request, deadline: float | None) -> None:
        self._request = request
        self._deadline = deadline  # in the event loop's clock, or None for no deadline
        self.timer: asyncio.Timeout | None = None
        self.gone = False

    def peer(self) -> str | None:
        transport = self._request.transport
        return grpc_peer(transport.get_extra_info("peername") if transport else None)

    def auth_context(self) -> Mapping[str, Sequence[bytes]]:
        transport = self._request.transport
        return peer_auth_context(transport.get_extra_info("ssl_object") if transport else None)

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        if self.timer is not None and self.timer.expired():
            return 0.0
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    def cancelled(self) -> bool:
        return self.gone


def _timeout(headers: Mapping[str, str]) -> float | None:
    value = headers.get(TIMEOUT_HEADER)
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise BadRequest(f"X-Server-Timeout must be a positive number of seconds, got {value!r}.")
    return seconds


def _failure_response(failure: CallFailure, headers: dict[str, str]) -> web.Response:
    """The JSON error a Google REST frontend answers a failed call with (the status as sent)."""
    status, more, body = failure_answer(failure)
    return _json(status, body, {**headers, **more})


def _error(
    status: int,
    code: StatusCode,
    message: str,
    headers: Mapping[str, str] | None = None,
    *,
    close: bool = False,
) -> web.Response:
    body = error_body(code, message)
    body["error"]["code"] = status  # 405, 413: HTTP's own answers, with the closest gRPC status
    response = _json(status, body, dict(headers or {}))
    if close:
        response.force_close()
    return response


def _json(status: int, body: Mapping[str, object], headers: dict[str, str]) -> web.Response:
    return web.Response(
        status=status,
        text=json_text(body),
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )
