"""The raw-bytes forwarder: relays an Operations call upstream unchanged, for any door."""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable

import grpc

from gateway.authn.principal import Principal
from gateway.call import Call
from gateway.errors import RelayedStatus, StatusCode, Unavailable, upstream_unavailable
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

    def outgoing(
        self, metadata: Iterable[tuple[str, str | bytes]] | None, principal: Principal | None = None
    ) -> Metadata:
        relayed = self._relayed
        kept = []
        for key, value in metadata or ():
            verdict = relayed.get(key)
            if verdict is None:
                verdict = self._judge(key)
            if verdict:
                kept.append((key, value))
        if self._identity_header and principal is not None:
            kept.append((self._identity_header, header_safe(principal.member)))
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


SendMetadata = Callable[[Metadata], Awaitable[None]]


async def _relay_initial_metadata(send: SendMetadata | None, metadata: Metadata | None) -> None:
    if send is not None and metadata:
        await send(metadata)


class UpstreamForwarder:
    """Serves the Operations methods by relaying bytes: requests and responses are never parsed.

    The call's remaining deadline becomes the upstream call's timeout; cancelling the task
    that awaits `forward` cancels the upstream call; status, message, details and metadata come
    back exactly as the upstream sent them (a door that can relay initial metadata passes
    `send_initial`). The identity header carries the Call's verified principal.
    """

    def __init__(self, channel: grpc.aio.Channel, target: str, headers: UpstreamHeaders) -> None:
        self._channel = channel
        self._target = target
        self._headers = headers
        # No serializers: bytes in, bytes out.
        self._stubs = {m.path: channel.unary_unary(m.path) for m in OPERATIONS_METHODS}

    def serves(self, path: str) -> bool:
        return path in self._stubs

    async def forward(
        self, path: str, request: bytes, call: Call, send_initial: SendMetadata | None = None
    ) -> tuple[bytes, Metadata]:
        """The upstream's answer and trailing metadata; raises the status it failed with."""
        pending = self._stubs[path](
            request,
            timeout=call.transport.time_remaining(),
            metadata=self._headers.outgoing(call.metadata, call.principal),
        )
        started = time.perf_counter()
        try:
            response: bytes = await pending
        except grpc.aio.AioRpcError as err:
            await _relay_initial_metadata(send_initial, err.initial_metadata())
            raise self._failure(err) from err
        finally:
            call.upstream_s = time.perf_counter() - started  # metrics split gateway/upstream time
        await _relay_initial_metadata(send_initial, await pending.initial_metadata())
        return response, tuple(await pending.trailing_metadata() or ())

    def _failure(self, err: grpc.aio.AioRpcError) -> RelayedStatus | Unavailable:
        code = err.code()
        trailing = tuple(err.trailing_metadata() or ())
        if code is grpc.StatusCode.UNAVAILABLE and not trailing and self._never_answered(err):
            # The upstream never answered: say so in our words, keep its address to our log.
            log.warning("upstream %s unreachable: %s", self._target, err.details())
            return upstream_unavailable()
        return RelayedStatus(StatusCode(code.value[0]), err.details() or "", trailing)

    def _never_answered(self, err: grpc.aio.AioRpcError) -> bool:
        """The upstream did not send this status: the channel is down, or gRPC's own transport
        wording says so (the channel may have reconnected by the time we look)."""
        if self._channel.get_state(try_to_connect=False) in _DISCONNECTED:
            return True
        details = err.details() or ""
        return details.startswith(_TRANSPORT_FAILURES)
