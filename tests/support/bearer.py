"""Client-side helpers that attach `authorization: Bearer <token>` to every call on a channel."""

from __future__ import annotations

import collections
from typing import Any

import grpc


class _Details(
    collections.namedtuple(
        "_Details",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    """ClientCallDetails with the bearer header added."""


class BearerInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Adds one authorization header (or none, for token=None) to each unary call."""

    def __init__(self, token: str | None) -> None:
        self.token = token

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = list(details.metadata or ())
        if self.token is not None:
            metadata.append(("authorization", f"Bearer {self.token}"))
        return continuation(
            _Details(
                details.method,
                details.timeout,
                metadata,
                details.credentials,
                details.wait_for_ready,
                details.compression,
            ),
            request,
        )


def with_bearer(channel: grpc.Channel, token: str | None) -> grpc.Channel:
    return grpc.intercept_channel(channel, BearerInterceptor(token))
