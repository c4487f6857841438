"""The raw-bytes forwarder: a generic handler relaying Operations calls upstream unchanged."""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Iterable
from typing import Any

import grpc

from gateway.call import current_call
from gateway.errors import RelayedStatus, StatusCode, Unavailable
from gateway.headers import CREDENTIAL_HEADER, GatewayHeaders, is_transport_header
from gateway.routing import OPERATIONS_METHODS

log = logging.getLogger("opsgate.upstream")

Metadata = tuple[tuple[str, str | bytes], ...]

# grpc core's own words when a call failed in transport (the upstream never answered it).
_TRANSPORT_FAILURES = (
    "failed to connect to all addresses",
    "Stream removed",
    "Socket closed",
    "Connection reset",
    "connections to all backends failing",
    "GOAWAY received",
)

_VERDICTS_KEPT = 1024  # distinct metadata keys whose relay verdict is remembered

_DISCONNECTED = frozenset(
    {grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.CONNECTING}
)


def header_safe(value: str) -> str:
    """Percent-encode what an ASCII metadata value cannot carry (non-ASCII, controls, '%').

    Emails may be internationalised (RFC 6531); a raw é or CR/LF would make the upstream call
    fail (or, worse, forge a second header), so the identity header is always plain ASCII.
    """
    if value.isascii() and value.isprintable() and "%" not in value:
        return value
    return urllib.parse.quote(value, safe=" !\"#$&'()*+,-./:;<=>?@[]^_`{|}~")


class UpstreamHeaders:
    """What of the caller's metadata the upstream receives, plus the verified identity.

    This hop's own headers are dropped (grpc sets them afresh), and so is `authorization`
    unless config forwards it. So is every spelling of a header the gateway sets (the identity
    header above all: only the gateway may assert an identity) and every other spelling of a
    transport or credential header: see GatewayHeaders.
    """

    def __init__(self, *, forward_authorization: bool, identity_header: str | None) -> None:
        self._forward_authorization = forward_authorization
        self._identity_header = identity_header
        self._smuggled = GatewayHeaders(identity_header).smuggled
        self._relayed: dict[str, bool] = {}  # verdict per key: one lookup a key on the hot path

    def outgoing(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Metadata:
        relayed = self._relayed
        kept = []
        for key, value in metadata or ():
            verdict = relayed.get(key)
            if verdict is None:
                verdict = self._judge(key)
            if verdict:
                kept.append((key, value))
        if self._identity_header:
            call = current_call.get(None)
            if call is not None and call.principal is not None:
                kept.append((self._identity_header, header_safe(call.principal.member)))
        return tuple(kept)

    def _judge(self, key: str) -> bool:
        if len(self._relayed) >= _VERDICTS_KEPT:
            self._relayed.clear()  # callers choose keys: the memo stays bounded
        if is_transport_header(key):
            verdict = False
        elif key == CREDENTIAL_HEADER:
            verdict = self._forward_authorization
        else:
            verdict = not self._smuggled(key)
        self._relayed[key] = verdict
        return verdict


def _note_upstream_time(seconds: float) -> None:
    state = current_call.get(None)
    if state is not None:  # the chain is there in the proxy; metrics split gateway/upstream time
        state.upstream_s = seconds


async def _relay_initial_metadata(context: grpc.aio.ServicerContext, metadata: Any) -> None:
    if metadata:
        await context.send_initial_metadata(metadata)


class UpstreamForwarder(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Serves the Operations methods by relaying bytes: requests and responses are never parsed.

    The caller's remaining deadline becomes the upstream call's timeout; cancelling the
    caller's call cancels the upstream call (awaiting it is cancelled with the handler task);
    status, message, details and metadata come back exactly as the upstream sent them.
    """

    def __init__(self, channel: grpc.aio.Channel, target: str, headers: UpstreamHeaders) -> None:
        self._channel = channel
        self._target = target
        self._headers = headers
        self._handlers = {
            method.path: grpc.unary_unary_rpc_method_handler(self._forwarding(method.path))
            for method in OPERATIONS_METHODS
        }

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(handler_call_details.method)

    def _forwarding(self, path: str) -> Any:
        upstream = self._channel.unary_unary(path)  # no serializers: bytes in, bytes out
        outgoing = self._headers.outgoing

        async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            call = upstream(
                request,
                timeout=context.time_remaining(),
                metadata=outgoing(context.invocation_metadata()),
            )
            started = time.perf_counter()
            try:
                response: bytes = await call
            except grpc.aio.AioRpcError as err:
                await _relay_initial_metadata(context, err.initial_metadata())
                raise self._failure(err) from err
            finally:
                _note_upstream_time(time.perf_counter() - started)
            await _relay_initial_metadata(context, await call.initial_metadata())
            trailing = await call.trailing_metadata()
            if trailing:
                context.set_trailing_metadata(trailing)
            return response

        return forward

    def _failure(self, err: grpc.aio.AioRpcError) -> RelayedStatus | Unavailable:
        code = err.code()
        trailing = tuple(err.trailing_metadata() or ())
        if code is grpc.StatusCode.UNAVAILABLE and not trailing and self._never_answered(err):
            # The upstream never answered: say so in our words, keep its address to our log.
            log.warning("upstream %s unreachable: %s", self._target, err.details())
            return Unavailable(
                "The service is currently unavailable.", reason="UPSTREAM_UNAVAILABLE"
            )
        return RelayedStatus(StatusCode(code.value[0]), err.details() or "", trailing)

    def _never_answered(self, err: grpc.aio.AioRpcError) -> bool:
        """The upstream did not send this status: the channel is down, or gRPC's own transport
        wording says so (the channel may have reconnected by the time we look)."""
        if self._channel.get_state(try_to_connect=False) in _DISCONNECTED:
            return True
        details = err.details() or ""
        return details.startswith(_TRANSPORT_FAILURES)
