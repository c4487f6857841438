"""The request message inside the body Envoy sends with a Check: one whole, uncompressed gRPC frame.

Envoy can hand the authorizer a body it cut at max_request_bytes (marked
`x-envoy-auth-partial-body: true`, even with partial messages disallowed) and then forward the
whole body, where a later `name` field would win over the one decided on. So nothing but one
complete frame, of one message, under the limit, is ever decided on: every other body is refused.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.envoy.settings import FRAME_HEADER_BYTES, PARTIAL_BODY_HEADER
from gateway.errors import InvalidArgument, ResourceExhausted, Unimplemented


def body_too_large(limit: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"The request message is larger than the authorizer's limit of {limit} bytes.",
        reason="REQUEST_TOO_LARGE",
        log_detail="the body was over envoy.max_body_bytes, or Envoy sent only part of it",
    )


def request_message(body: bytes, headers: Mapping[str, str], limit: int) -> bytes:
    """The serialized request message of a unary gRPC call's body; raises what to refuse with.

    Without pack_as_bytes (Envoy Gateway cannot set it) Envoy copies the body into the Check's
    `body` string instead of `raw_body`; protos.py declares that field as bytes, so the frame
    arrives as Envoy copied it, and the checks here hold for it alike.
    """
    if headers.get(PARTIAL_BODY_HEADER, "").lower() == "true":
        raise body_too_large(limit)
    if len(body) < FRAME_HEADER_BYTES:
        raise _not_one_message(f"{len(body)} bytes, shorter than a gRPC frame header")
    compressed = body[0]
    length = int.from_bytes(body[1:FRAME_HEADER_BYTES], "big")
    if compressed:
        encoding = headers.get("grpc-encoding", "an unnamed encoding")
        raise Unimplemented(
            f"Compressed request messages ({encoding}) are not accepted here; "
            "send requests uncompressed.",
            reason="COMPRESSED_REQUEST",
        )
    if length > limit:
        raise body_too_large(limit)
    end = FRAME_HEADER_BYTES + length
    if len(body) != end:
        which = "cut short" if len(body) < end else "followed by more bytes"
        raise _not_one_message(f"a {length}-byte message {which} ({len(body)} bytes in all)")
    return body[FRAME_HEADER_BYTES:]


def _not_one_message(detail: str) -> InvalidArgument:
    return InvalidArgument(
        "Invalid request: the body is not exactly one gRPC message.",
        reason="INVALID_REQUEST_BODY",
        log_detail=detail,
    )
