"""RestContext: the grpc.aio ServicerContext the chain and forwarder see for one REST request."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn

import grpc

log = logging.getLogger("opsgate.rest")

Metadata = tuple[tuple[str, str | bytes], ...]


class RestContext:
    """Implements the ServicerContext methods the stages and the forwarder use, as grpc.aio does.

    `abort` records the status on the context and raises grpc.aio.AbortError, like grpc.aio's
    own context; the door reads code(), details() and trailing_metadata() afterwards. The
    deadline comes from the request's X-Server-Timeout; the door's `timer` enforces it, and
    time_remaining() is 0 once it has fired, so the audit stage records DEADLINE_EXCEEDED.
    """

    __slots__ = (
        "_auth",
        "_callbacks",
        "_cancelled",
        "_code",
        "_deadline",
        "_details",
        "_done",
        "_initial",
        "_metadata",
        "_peer",
        "_trailing",
        "aborted",
        "timer",
    )

    def __init__(
        self,
        metadata: Metadata,
        peer: str,
        deadline: float | None,
        auth: dict[str, list[bytes]] | None = None,
    ) -> None:
        self._metadata = metadata
        self._peer = peer
        self._deadline = deadline  # in the event loop's clock, or None for no deadline
        self._auth = auth or {}  # a TLS peer's verified certificate, as grpc's auth_context
        self._code: grpc.StatusCode | None = None
        self._details: str | None = None
        self._trailing: Metadata = ()
        self._initial: Metadata = ()
        self._cancelled = False
        self._done = False
        self._callbacks: list[Callable[[Any], None]] = []
        self.aborted = False
        self.timer: asyncio.Timeout | None = None

    # -- what the call carries
    def invocation_metadata(self) -> Metadata:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        if self.timer is not None and self.timer.expired():
            return 0.0
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth

    def peer_identities(self) -> None:
        return None

    def peer_identity_key(self) -> None:
        return None

    # -- status and metadata the handler sets
    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Sequence[Any] = ()
    ) -> NoReturn:
        if self.aborted:
            raise grpc.aio.UsageError("Abort was already called!")
        if code is grpc.StatusCode.OK:
            log.error("abort() called with OK; answering UNKNOWN")
            code = grpc.StatusCode.UNKNOWN
        if trailing_metadata:
            self._trailing = tuple(trailing_metadata)
        if details or not self._details:
            self._details = details
        self._code = code
        self.aborted = True
        raise grpc.aio.AbortError("Locally aborted.")

    async def abort_with_status(self, status: Any) -> NoReturn:
        await self.abort(status.code, status.details, status.trailing_metadata)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def set_details(self, details: str) -> None:
        self._details = details

    def details(self) -> str | None:
        return self._details

    def set_trailing_metadata(self, trailing_metadata: Iterable[tuple[str, str | bytes]]) -> None:
        self._trailing = tuple(trailing_metadata)

    def trailing_metadata(self) -> Metadata:
        return self._trailing

    async def send_initial_metadata(self, initial_metadata: Iterable[tuple[str, Any]]) -> None:
        self._initial = tuple(initial_metadata)  # kept; the REST answer does not carry it

    def initial_metadata(self) -> Metadata:
        return self._initial

    def set_compression(self, compression: Any) -> None:
        pass  # the HTTP server chooses content encoding, not the handler

    def disable_next_message_compression(self) -> None:
        pass

    # -- lifecycle
    def cancelled(self) -> bool:
        return self._cancelled

    def done(self) -> bool:
        return self._done

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self._callbacks.append(callback)

    def finish(self, *, cancelled: bool = False) -> None:
        """The door's end of the call: mark it done (or cancelled) and run done callbacks."""
        self._cancelled = cancelled
        self._done = True
        for callback in self._callbacks:
            try:
                callback(self)
            except Exception:
                log.exception("a done callback of a REST call failed")
