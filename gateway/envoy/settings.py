"""EnvoySettings: opsgate as Envoy's external authorizer (`envoy:` in the config file)."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.configschema import KiB, check_host_port, check_positive, doc

# Where Envoy keeps the dynamic metadata an ext_authz answer sets, and the key opsgate uses in it:
# the id that joins a Check to the access-log entry Envoy writes when the call ends. Envoy sets
# it from the authorizer's answer only, never from anything the caller sent.
METADATA_NAMESPACE = "envoy.filters.http.ext_authz"
CALL_ID_KEY = "x-opsgate-call-key"  # also the HTTP answer's header Envoy turns into metadata
# Which of Envoy's listeners a call came in by: the generated config sets it per route, as
# ext_authz context_extensions, so the authorizer answers REST callers with Google's JSON error.
DOOR_KEY = "opsgate_door"
GRPC_DOOR = "grpc"
REST_DOOR = "rest"
# What the generated config has Envoy add to an HTTP check (overriding any caller copy): the
# caller's address and certificate (Envoy's %DOWNSTREAM_REMOTE_ADDRESS% and
# %DOWNSTREAM_PEER_CERT%) and the call's method.
HTTP_PEER_HEADER = "x-opsgate-envoy-peer"
HTTP_CERTIFICATE_HEADER = "x-opsgate-envoy-peer-certificate"
HTTP_METHOD_HEADER = "x-opsgate-envoy-method"
# The caller's content-type travels under this name; the check itself goes as
# application/octet-stream. Envoy's HTTP client treats a request whose content-type is
# application/grpc as a gRPC call, and answers its connection failure with HTTP 200 and
# grpc-status 14, which ext_authz reads as "allowed": measured, a fail-open, with Envoy 1.40.
HTTP_CONTENT_TYPE_HEADER = "x-opsgate-envoy-content-type"
CHECK_CONTENT_TYPE = "application/octet-stream"
# Envoy counts the gRPC frame's 5-byte header against with_request_body.max_request_bytes.
FRAME_HEADER_BYTES = 5
# Envoy marks a body it had to cut at max_request_bytes; such a body is never decided on.
PARTIAL_BODY_HEADER = "x-envoy-auth-partial-body"
# What Envoy's access log must carry for the record's final status (gRPC: trailers, or headers
# for a trailers-only answer).
LOGGED_RESPONSE_HEADERS = ("grpc-status", "grpc-message")


@dataclass(frozen=True, slots=True)
class EnvoySettings:
    """Envoy's external authorization (`envoy.service.auth.v3`) and access-log service, served
    on the gateway's listener beside (or, without `upstream`, instead of) the proxy."""

    max_body_bytes: int = field(
        default=64 * KiB,
        metadata=doc(
            "largest request message decided on (Envoy buffers it and its 5-byte frame header)",
            check_positive,
        ),
    )
    completion_timeout_s: float = field(
        default=3700.0,
        metadata=doc(
            "seconds an allowed call's record waits for Envoy's access-log entry; then it is "
            "written marked 'completion not reported' (longer than the longest call)",
            check_positive,
        ),
    )
    http_listen: str | None = field(
        default=None,
        metadata=doc(
            "HOST:PORT of the HTTP check (Envoy's ext_authz http_service, about half the CPU "
            "of the gRPC Check); omit: only the gRPC Check on `listen`",
            check_host_port,
        ),
    )
    log_name: str = field(
        default="opsgate",
        metadata=doc("the access log's log_name in Envoy's config; other logs are ignored"),
    )
