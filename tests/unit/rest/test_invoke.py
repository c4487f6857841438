"""The in-process chain: interceptors composed as grpc.aio composes them, and the REST context."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from gateway.rest.context import RestContext
from gateway.rest.invoke import InProcessChain

METHOD = "/google.longrunning.Operations/GetOperation"


class Recording(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Notes when it is asked for a handler and when its wrapped behaviour runs."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        self.log.append(f"intercept {self.name} {details.method}")
        handler = await continuation(details)
        inner = handler.unary_unary

        async def behaviour(request: Any, context: Any) -> Any:
            self.log.append(f"call {self.name}")
            return await inner(request, context)

        return handler._replace(unary_unary=behaviour)


class Handlers(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self, log: list[str], **codec: Any) -> None:
        self.log = log

        async def answer(request: Any, context: Any) -> Any:
            self.log.append(f"handler {request!r}")
            return request

        self.handler = grpc.unary_unary_rpc_method_handler(answer, **codec)

    def service(self, details: Any) -> Any:
        return self.handler if details.method == METHOD else None


def _context() -> RestContext:
    return RestContext((("authorization", "Bearer t"),), "ipv4:127.0.0.1:1", None)


def test_first_interceptor_is_outermost_and_composition_is_cached() -> None:
    log: list[str] = []
    chain = InProcessChain([Recording("a", log), Recording("b", log)], Handlers(log))

    async def twice() -> list[Any]:
        return [await chain.unary_unary(METHOD, b"x", _context()) for _ in range(2)]

    assert asyncio.run(twice()) == [b"x", b"x"]
    assert log == [
        f"intercept a {METHOD}",
        f"intercept b {METHOD}",
        "call a",
        "call b",
        "handler b'x'",
        "call a",
        "call b",
        "handler b'x'",
    ]


def test_the_handlers_codec_is_applied() -> None:
    log: list[str] = []
    handlers = Handlers(log, request_deserializer=bytes.decode, response_serializer=str.encode)
    chain = InProcessChain([], handlers)
    assert asyncio.run(chain.unary_unary(METHOD, b"x", _context())) == b"x"
    assert log == ["handler 'x'"]


def test_no_handler_is_unimplemented() -> None:
    chain = InProcessChain([], Handlers([]))
    context = _context()
    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(chain.unary_unary("/google.longrunning.Operations/Nope", b"", context))
    assert context.code() is grpc.StatusCode.UNIMPLEMENTED


def test_abort_records_the_status_and_raises_like_grpc_aio() -> None:
    context = _context()
    trailing = (("x-request-id", "r1"),)
    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(context.abort(grpc.StatusCode.NOT_FOUND, "gone", trailing))
    assert (context.code(), context.details(), context.trailing_metadata()) == (
        grpc.StatusCode.NOT_FOUND,
        "gone",
        trailing,
    )
    with pytest.raises(grpc.aio.UsageError):
        asyncio.run(context.abort(grpc.StatusCode.INTERNAL, "again"))


def test_abort_with_ok_is_unknown_and_keeps_earlier_trailers() -> None:
    context = _context()
    context.set_trailing_metadata((("k", "v"),))
    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(context.abort(grpc.StatusCode.OK))
    assert context.code() is grpc.StatusCode.UNKNOWN
    assert context.trailing_metadata() == (("k", "v"),)


def test_time_remaining_counts_down_and_is_zero_once_the_timer_fires() -> None:
    async def scenario() -> tuple[float | None, float | None, float | None]:
        loop = asyncio.get_running_loop()
        context = RestContext((), "p", loop.time() + 30)
        before = context.time_remaining()
        try:
            async with asyncio.timeout(0.01) as timer:
                context.timer = timer
                await asyncio.sleep(1)
        except TimeoutError:
            pass
        return before, context.time_remaining(), _context().time_remaining()

    before, after, none = asyncio.run(scenario())
    assert before is not None and 29 < before <= 30
    assert after == 0.0
    assert none is None


def test_lifecycle() -> None:
    context = _context()
    seen: list[Any] = []
    context.add_done_callback(seen.append)
    assert (context.done(), context.cancelled()) == (False, False)
    context.finish(cancelled=True)
    assert (context.done(), context.cancelled(), seen) == (True, True, [context])
    assert context.invocation_metadata() == (("authorization", "Bearer t"),)
    assert context.peer() == "ipv4:127.0.0.1:1"
    assert context.auth_context() == {}


def test_same_order_as_a_real_grpc_aio_server() -> None:
    async def through_grpc_aio() -> list[str]:
        log: list[str] = []
        server = grpc.aio.server(interceptors=[Recording("a", log), Recording("b", log)])
        server.add_generic_rpc_handlers((Handlers(log),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                assert await channel.unary_unary(METHOD)(b"x") == b"x"
        finally:
            await server.stop(0)
        return log

    async def in_process() -> list[str]:
        log: list[str] = []
        chain = InProcessChain([Recording("a", log), Recording("b", log)], Handlers(log))
        await chain.unary_unary(METHOD, b"x", _context())
        return log

    assert asyncio.run(in_process()) == asyncio.run(through_grpc_aio())
