"""The one exception tree: each RPC-facing error knows its google.rpc code and ErrorInfo.

No transport here: the doors map a code to a gRPC status or an HTTP status.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum

from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"
GOOGLE_DOMAIN = "googleapis.com"
GATEWAY_DOMAIN = "opsgate"


class StatusCode(IntEnum):
    """The canonical google.rpc.Code: the same names and numbers as grpc.StatusCode's."""

    OK = code_pb2.OK
    CANCELLED = code_pb2.CANCELLED
    UNKNOWN = code_pb2.UNKNOWN
    INVALID_ARGUMENT = code_pb2.INVALID_ARGUMENT
    DEADLINE_EXCEEDED = code_pb2.DEADLINE_EXCEEDED
    NOT_FOUND = code_pb2.NOT_FOUND
    ALREADY_EXISTS = code_pb2.ALREADY_EXISTS
    PERMISSION_DENIED = code_pb2.PERMISSION_DENIED
    RESOURCE_EXHAUSTED = code_pb2.RESOURCE_EXHAUSTED
    FAILED_PRECONDITION = code_pb2.FAILED_PRECONDITION
    ABORTED = code_pb2.ABORTED
    OUT_OF_RANGE = code_pb2.OUT_OF_RANGE
    UNIMPLEMENTED = code_pb2.UNIMPLEMENTED
    INTERNAL = code_pb2.INTERNAL
    UNAVAILABLE = code_pb2.UNAVAILABLE
    DATA_LOSS = code_pb2.DATA_LOSS
    UNAUTHENTICATED = code_pb2.UNAUTHENTICATED


class OpsgateError(Exception):
    """Base of every error opsgate raises on purpose."""


class ConfigError(OpsgateError):
    """A config or policy file is unusable; start-up stops with this message."""

    def __init__(self, source: str, key: str | None, problem: str, line: int | None = None) -> None:
        where = source if line is None else f"{source}:{line}"
        subject = f"key '{key}': " if key else ""
        super().__init__(f"{where}: {subject}{problem}")
        self.source = source
        self.key = key
        self.problem = problem
        self.line = line


class CallFailure(OpsgateError):
    """A call ends with a non-OK status: its code, message and trailing metadata to send."""

    code: StatusCode = StatusCode.UNKNOWN
    message: str = ""
    log_detail: str = ""

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return ()


class RelayedStatus(CallFailure):
    """A status the upstream answered with, to be relayed to the caller exactly as it came."""

    def __init__(
        self,
        code: StatusCode,
        message: str,
        trailing_metadata: tuple[tuple[str, str | bytes], ...],
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self._trailing = trailing_metadata

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._trailing


class RpcError(CallFailure):
    """An error of the gateway's own, answered as a google.rpc.Status with an ErrorInfo detail."""

    default_reason = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        domain: str = GATEWAY_DOMAIN,
        metadata: Mapping[str, str] | None = None,
        log_detail: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.domain = domain
        self.metadata = dict(metadata or {})
        # Why, in our words, for the operator's log and the audit record; never sent to the
        # caller and never containing the token or its claims.
        self.log_detail = log_detail

    def to_status(self) -> status_pb2.Status:
        info = error_details_pb2.ErrorInfo(
            reason=self.reason, domain=self.domain, metadata=self.metadata
        )
        status = status_pb2.Status(code=int(self.code), message=self.message)
        for message in (info, *self.extra_details()):
            status.details.add().Pack(message)
        return status

    def extra_details(self) -> tuple[Message, ...]:
        """Details beyond the ErrorInfo (e.g. RetryInfo); none by default."""
        return ()

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return ((STATUS_DETAILS_KEY, self.to_status().SerializeToString()),)


class InvalidArgument(RpcError):
    code = StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class Unimplemented(RpcError):
    code = StatusCode.UNIMPLEMENTED
    default_reason = "METHOD_NOT_IMPLEMENTED"


class Unauthenticated(RpcError):
    code = StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(RpcError):
    code = StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Unavailable(RpcError):
    code = StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class ResourceExhausted(RpcError):
    code = StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Internal(RpcError):
    code = StatusCode.INTERNAL
    default_reason = "INTERNAL"


# Google's own wording for authentication failures, so clients and people recognise them.
_INVALID_CREDENTIALS = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. "
    "See https://developers.google.com/identity/sign-in/web/devconsole-project."
)
_MISSING_CREDENTIALS = (
    "Request is missing required authentication credential. Expected OAuth 2 access token, "
    "login cookie or other valid authentication credential. "
    "See https://developers.google.com/identity/sign-in/web/devconsole-project."
)


def credentials_missing(detail: str) -> Unauthenticated:
    return Unauthenticated(
        _MISSING_CREDENTIALS, reason="CREDENTIALS_MISSING", domain=GOOGLE_DOMAIN, log_detail=detail
    )


def token_invalid(detail: str) -> Unauthenticated:
    return Unauthenticated(
        _INVALID_CREDENTIALS, reason="JWT_TOKEN_INVALID", domain=GOOGLE_DOMAIN, log_detail=detail
    )


def token_expired(detail: str = "the token has expired") -> Unauthenticated:
    return Unauthenticated(
        _INVALID_CREDENTIALS, reason="ACCESS_TOKEN_EXPIRED", domain=GOOGLE_DOMAIN, log_detail=detail
    )


def token_type_unsupported(detail: str) -> Unauthenticated:
    return Unauthenticated(
        _INVALID_CREDENTIALS,
        reason="ACCESS_TOKEN_TYPE_UNSUPPORTED",
        domain=GOOGLE_DOMAIN,
        log_detail=detail,
    )


def scope_insufficient(detail: str) -> PermissionDenied:
    return PermissionDenied(
        "Request had insufficient authentication scopes.",
        reason="ACCESS_TOKEN_SCOPE_INSUFFICIENT",
        domain=GOOGLE_DOMAIN,
        log_detail=detail,
    )


def verification_unavailable(detail: str) -> Unavailable:
    """We could not check the token (no usable keys, endpoint down): not the caller's fault."""
    return Unavailable(
        "The service is currently unavailable.",
        reason="AUTHENTICATION_BACKEND_UNAVAILABLE",
        log_detail=detail,
    )


def permission_denied(
    permission: str, resource: str, service: str, detail: str
) -> PermissionDenied:
    """IAM's denial, identical whether or not the resource exists (no existence oracle)."""
    return PermissionDenied(
        f"Permission '{permission}' denied on resource '{resource}' (or it may not exist).",
        reason="IAM_PERMISSION_DENIED",
        domain=service,
        metadata={"permission": permission, "resource": resource},
        log_detail=detail,
    )


class RateLimited(ResourceExhausted):
    """Over a rate limit: ErrorInfo RATE_LIMIT_EXCEEDED plus a RetryInfo saying when to retry."""

    def __init__(self, message: str, *, limit: str, retry_after_s: float) -> None:
        super().__init__(
            message,
            reason="RATE_LIMIT_EXCEEDED",
            domain=GATEWAY_DOMAIN,
            metadata={"limit": limit},
            log_detail=f"rate limit '{limit}' exceeded",
        )
        self.retry_after_s = retry_after_s

    def extra_details(self) -> tuple[Message, ...]:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(max(1_000_000, int(self.retry_after_s * 1e9)))
        return (error_details_pb2.RetryInfo(retry_delay=delay),)


def rate_limited(limit: str, retry_after_s: float) -> RateLimited:
    return RateLimited(
        f"Quota exceeded for quota metric '{limit}': too many requests; retry after "
        f"{retry_after_s:.3f}s.",
        limit=limit,
        retry_after_s=retry_after_s,
    )
