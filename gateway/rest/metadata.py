"""HTTP request headers → the call's invocation metadata, and the HTTP peer → a gRPC peer string."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from typing import Any

from gateway.headers import GatewayHeaders, Metadata

# The headers of a gateway with the default identity header; the door is given its own.
DEFAULT_GATEWAY_HEADERS = GatewayHeaders()

# Hop-by-hop headers (RFC 9110 7.6.1) and this HTTP exchange's own framing: they describe the
# connection or the JSON body, not the call. Cookies are a browser's, never the API caller's
# credential, and must not travel upstream. The timeout header (seconds, as Google's REST
# frontends read it) becomes the deadline instead, and like every header the gateway sets it is
# dropped in every spelling (GatewayHeaders).
_DROPPED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        "accept-encoding",
        "expect",
        "cookie",
    }
)
_KEY = re.compile(r"[0-9a-z_.-]+")  # what gRPC accepts as a metadata key
_VALUE = re.compile(r"[\x20-\x7e]*")  # and as an ASCII value


def invocation_metadata(
    headers: Iterable[tuple[str, str]], gateway_headers: GatewayHeaders = DEFAULT_GATEWAY_HEADERS
) -> Metadata:
    """Lower-cased headers, minus hop-by-hop ones, any gRPC could not carry, and any spelling
    of a header the gateway sets (`gateway_headers.smuggled`).

    `grpc-*` keys are gRPC's own and are dropped; `*-bin` values are base64 (as gRPC's HTTP/2
    encoding has them) and decoded to bytes, or dropped if they are not base64.
    """
    smuggled = gateway_headers.smuggled
    # ASCII case only: Unicode lower-casing would turn a Kelvin-sign K into a valid key's k.
    pairs = [(key.lower() if key.isascii() else key, value) for key, value in headers]
    dropped = _DROPPED | {
        token.strip().lower()
        for key, value in pairs
        if key == "connection"
        for token in value.split(",")
    }
    metadata: list[tuple[str, str | bytes]] = []
    for key, value in pairs:
        if key in dropped or key.startswith("grpc-") or not _KEY.fullmatch(key) or smuggled(key):
            continue
        if key.endswith("-bin"):
            decoded = _base64(value)
            if decoded is not None:
                metadata.append((key, decoded))
        elif _VALUE.fullmatch(value):
            metadata.append((key, value.strip()))
    return tuple(metadata)


def _base64(value: str) -> bytes | None:
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def grpc_peer(peername: Any) -> str:
    """asyncio's peername → 'ipv4:127.0.0.1:5555' or 'ipv6:[::1]:5555', as grpc writes peers."""
    if isinstance(peername, tuple) and len(peername) >= 2:
        host, port = peername[0], peername[1]
        if ":" in str(host):
            return f"ipv6:[{host}]:{port}"
        return f"ipv4:{host}:{port}"
    return "unknown"
