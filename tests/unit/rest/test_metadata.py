"""HTTP headers → invocation metadata: what the chain and the upstream get to see."""

from __future__ import annotations

import pytest

from gateway.rest.metadata import grpc_peer, invocation_metadata


def test_headers_become_lower_cased_metadata_in_order() -> None:
    headers = [
        ("Authorization", "Bearer t"),
        ("User-Agent", "curl/8"),
        ("X-Custom", "a"),
        ("x-custom", "b"),
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ]
    assert invocation_metadata(headers) == (
        ("authorization", "Bearer t"),
        ("user-agent", "curl/8"),
        ("x-custom", "a"),
        ("x-custom", "b"),
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    )


@pytest.mark.parametrize(
    "header",
    [
        "Connection",
        "Keep-Alive",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
        "Content-Type",
        "Accept-Encoding",
        "Cookie",
        "X-Server-Timeout",
        "grpc-timeout",
        "grpc-status-details-bin",
        "Bad Key",
        "ümlaut",
        "x-\u212aept",  # a Kelvin sign lower-cases to k: not a spelling of x-kept
    ],
)
def test_hop_by_hop_transport_and_invalid_headers_are_dropped(header: str) -> None:
    assert invocation_metadata([(header, "v"), ("x-kept", "1")]) == (("x-kept", "1"),)


def test_headers_named_by_connection_are_dropped() -> None:
    headers = [("Connection", "keep-alive, X-Hop"), ("X-Hop", "1"), ("X-End", "2")]
    assert invocation_metadata(headers) == (("x-end", "2"),)


def test_binary_headers_are_base64_and_decoded() -> None:
    headers = [("x-a-bin", "AP8"), ("x-b-bin", "AP8="), ("x-c-bin", "not base64!")]
    assert invocation_metadata(headers) == (("x-a-bin", b"\x00\xff"), ("x-b-bin", b"\x00\xff"))


def test_values_grpc_cannot_carry_are_dropped() -> None:
    assert invocation_metadata([("x-a", "caf\u00e9"), ("x-b", "ok ")]) == (("x-b", "ok"),)


@pytest.mark.parametrize(
    ("peername", "peer"),
    [
        (("127.0.0.1", 5555), "ipv4:127.0.0.1:5555"),
        (("::1", 5555, 0, 0), "ipv6:[::1]:5555"),
        (None, "unknown"),
        ("", "unknown"),
    ],
)
def test_peer_is_written_as_grpc_writes_it(peername: object, peer: str) -> None:
    assert grpc_peer(peername) == peer
