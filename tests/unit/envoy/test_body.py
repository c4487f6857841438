"""Only one whole, uncompressed gRPC frame under the limit is decided on; every other body is refused."""

from __future__ import annotations

import pytest

from gateway.envoy.body import request_message
from gateway.errors import CallFailure, StatusCode

MESSAGE = b"\n\x05hello"
LIMIT = 64


def frame(message: bytes, *, compressed: int = 0, length: int | None = None) -> bytes:
    size = len(message) if length is None else length
    return bytes([compressed]) + size.to_bytes(4, "big") + message


def test_one_whole_frame_is_its_message() -> None:
    assert request_message(frame(MESSAGE), {}, LIMIT) == MESSAGE
    assert request_message(frame(b""), {}, LIMIT) == b""  # an all-defaults request


@pytest.mark.parametrize(
    ("body", "headers", "code", "reason"),
    [
        (b"", {}, StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST_BODY"),
        (b"\x00\x00\x00", {}, StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST_BODY"),
        (frame(MESSAGE)[:-1], {}, StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST_BODY"),
        (frame(MESSAGE) + b"\x00", {}, StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST_BODY"),
        (frame(MESSAGE) * 2, {}, StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST_BODY"),
        (
            frame(MESSAGE, compressed=1),
            {"grpc-encoding": "gzip"},
            StatusCode.UNIMPLEMENTED,
            "COMPRESSED_REQUEST",
        ),
        (frame(b"x" * (LIMIT + 1)), {}, StatusCode.RESOURCE_EXHAUSTED, "REQUEST_TOO_LARGE"),
        # Envoy cut the body at its limit and said so: the part looks like a frame's start.
        (
            frame(b"x" * LIMIT, length=LIMIT * 4)[: LIMIT + 5],
            {"x-envoy-auth-partial-body": "true"},
            StatusCode.RESOURCE_EXHAUSTED,
            "REQUEST_TOO_LARGE",
        ),
        # Marked partial even though it parses: never decided on (the rest may name another).
        (
            frame(MESSAGE),
            {"x-envoy-auth-partial-body": "TRUE"},
            StatusCode.RESOURCE_EXHAUSTED,
            "REQUEST_TOO_LARGE",
        ),
    ],
    ids=[
        "empty",
        "short-header",
        "cut-short",
        "trailing-byte",
        "two-frames",
        "compressed",
        "over-the-limit",
        "partial-body",
        "marked-partial",
    ],
)
def test_every_other_body_is_refused(
    body: bytes, headers: dict[str, str], code: StatusCode, reason: str
) -> None:
    with pytest.raises(CallFailure) as refused:
        request_message(body, headers, LIMIT)
    assert (refused.value.code, refused.value.reason) == (code, reason)
    assert refused.value.message  # a sentence the caller can act on
