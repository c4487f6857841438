"""The one exception tree: every failure has a stable reason; each RPC-facing one its status.

No transport here and no gateway import: the doors map a code to a gRPC or an HTTP status.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import IntEnum

from google.protobuf import duration_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"
GOOGLE_DOMAIN = "googleapis.com"
GATEWAY_DOMAIN = "opsgate"

# Google's public wording, each written once here: callers, client libraries and people match on
# these exact strings, so a stage or a door that answers with one imports it instead of retyping it.
UNAVAILABLE_MESSAGE = "The service is currently unavailable."
INTERNAL_MESSAGE = "Internal error encountered."
UNIMPLEMENTED_MESSAGE = "Method not found."
DEADLINE_MESSAGE = "Deadline exceeded."
CANCELLED_MESSAGE = "The call was cancelled by the client."
NOT_FOUND_MESSAGE = "The requested URL was not found on this server."  # the REST door's 404
INVALID_CREDENTIALS_MESSAGE = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. "
    "See https://developers.google.com/identity/sign-in/web/devconsole-project."
)
MISSING_CREDENTIALS_MESSAGE = (
    "Request is missing required authentication credential. Expected OAuth 2 access token, "
    "login cookie or other valid authentication credential. "
    "See https://developers.google.com/identity/sign-in/web/devconsole-project."
)
# The same refusals where the credential was not Google's (another issuer's token) or, with no
# Google issuer accepted, could not be Google's: Google's first sentence, without its pointer to
# Google's sign-in docs (they cannot help with another issuer's token) or its login cookies.
OTHER_INVALID_CREDENTIALS_MESSAGE = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token or other "
    "valid authentication credential."
)
OTHER_MISSING_CREDENTIALS_MESSAGE = (
    "Request is missing required authentication credential. Expected OAuth 2 access token or "
    "other valid authentication credential."
)
_WITHOUT_GOOGLE_HELP = {
    INVALID_CREDENTIALS_MESSAGE: OTHER_INVALID_CREDENTIALS_MESSAGE,
    MISSING_CREDENTIALS_MESSAGE: OTHER_MISSING_CREDENTIALS_MESSAGE,
}
INSUFFICIENT_SCOPES_MESSAGE = "Request had insufficient authentication scopes."

# google.rpc.ErrorInfo's own rule for a reason: UPPER_SNAKE_CASE, at most 63 characters.
REASON_PATTERN = re.compile(r"[A-Z][A-Z0-9_]{0,62}")


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
    """Base of every error opsgate raises on purpose; `except OpsgateError` catches them all.

    `reason` is a stable machine code in google.rpc.ErrorInfo's style (UPPER_SNAKE): each class
    sets its default and a constructor may narrow it. Logs, audit records and callers match on
    it, so a reason, once released, is never reworded. No __init__ here, on purpose: subclasses
    also derive from builtins with their own constructors (OSError, ValueError), and a root
    constructor in the MRO would sit between them and their arguments.
    """

    reason: str = "UNKNOWN"


class ConfigError(OpsgateError):
    """A config or policy file is unusable; start-up stops with this message."""

    reason = "CONFIG_INVALID"

    def __init__(self, source: str, key: str | None, problem: str, line: int | None = None) -> None:
        where = source if line is None else f"{source}:{line}"
        subject = f"key '{key}': " if key else ""
        super().__init__(f"{where}: {subject}{problem}")
        self.source = source
        self.key = key
        self.problem = problem
        self.line = line


class CallFailure(OpsgateError):
    """A call ends with a non-OK status: its code, message and trailing metadata to send.

    Its `reason` is the one the caller sees in the ErrorInfo, when the status carries one.
    """

    code: StatusCode = StatusCode.UNKNOWN
    message: str = ""
    log_detail: str = ""

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return ()


class RelayedStatus(CallFailure):
    """A status the upstream answered with, to be relayed to the caller exactly as it came.

    `reason` is the upstream's own ErrorInfo reason when it sent a well-formed one, so logs and
    audit records name the upstream's cause; otherwise UPSTREAM_STATUS (the upstream said no).
    """

    reason = "UPSTREAM_STATUS"

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
        relayed = error_info_reason(trailing_metadata)
        if relayed is not None:
            self.reason = relayed

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._trailing


def error_info_reason(trailing_metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    """The ErrorInfo reason in a status's grpc-status-details-bin, if there is a usable one.

    The upstream is not trusted to follow ErrorInfo's rules, and the reason goes into logs and
    audit records: anything that is not a well-formed reason counts as none.
    """
    for key, value in trailing_metadata:
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            return None
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                reason: str = info.reason if detail.Unpack(info) else ""
                return reason if REASON_PATTERN.fullmatch(reason) else None
        return None
    return None


class RpcError(CallFailure):
    """An error of the gateway's own, answered as a google.rpc.Status with an ErrorInfo detail.

    The class's `reason` is the ErrorInfo reason unless the constructor is given another.
    """

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
        if reason:
            self.reason = reason
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
    reason = "INVALID_ARGUMENT"


class Unimplemented(RpcError):
    code = StatusCode.UNIMPLEMENTED
    reason = "METHOD_NOT_IMPLEMENTED"


class Unauthenticated(RpcError):
    code = StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(RpcError):
    code = StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class Unavailable(RpcError):
    code = StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"


class ResourceExhausted(RpcError):
    code = StatusCode.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"


class Internal(RpcError):
    code = StatusCode.INTERNAL
    reason = "INTERNAL"


def credentials_missing(detail: str) -> Unauthenticated:
    return Unauthenticated(
        MISSING_CREDENTIALS_MESSAGE,
        reason="CREDENTIALS_MISSING",
        domain=GOOGLE_DOMAIN,
        log_detail=detail,
    )


def token_invalid(detail: str) -> Unauthenticated:
    return Unauthenticated(
        INVALID_CREDENTIALS_MESSAGE,
        reason="JWT_TOKEN_INVALID",
        domain=GOOGLE_DOMAIN,
        log_detail=detail,
    )


def token_expired(detail: str = "the token has expired") -> Unauthenticated:
    return Unauthenticated(
        INVALID_CREDENTIALS_MESSAGE,
        reason="ACCESS_TOKEN_EXPIRED",
        domain=GOOGLE_DOMAIN,
        log_detail=detail,
    )


def token_type_unsupported(detail: str) -> Unauthenticated:
    return Unauthenticated(
        INVALID_CREDENTIALS_MESSAGE,
        reason="ACCESS_TOKEN_TYPE_UNSUPPORTED",
        domain=GOOGLE_DOMAIN,
        log_detail=detail,
    )


def without_google_help(error: Unauthenticated) -> Unauthenticated:
    """The same refusal (reason, domain, detail) in the words that do not point at Google's
    docs: for a credential that was not Google's (gateway/authn/authenticator.py says whose)."""
    message = _WITHOUT_GOOGLE_HELP.get(error.message)
    if message is None:
        return error
    return Unauthenticated(
        message,
        reason=error.reason,
        domain=error.domain,
        metadata=error.metadata,
        log_detail=error.log_detail,
    )


def is_missing_credentials(message: str) -> bool:
    """Whether a refusal's message is either wording of "no credential was sent"."""
    return message in (MISSING_CREDENTIALS_MESSAGE, OTHER_MISSING_CREDENTIALS_MESSAGE)


def scope_insufficient(detail: str) -> PermissionDenied:
    return PermissionDenied(
        INSUFFICIENT_SCOPES_MESSAGE,
        reason="ACCESS_TOKEN_SCOPE_INSUFFICIENT",
        domain=GOOGLE_DOMAIN,
        log_detail=detail,
    )


def verification_unavailable(detail: str) -> Unavailable:
    """We could not check the token (no usable keys, endpoint down): not the caller's fault."""
    return Unavailable(
        UNAVAILABLE_MESSAGE, reason="AUTHENTICATION_BACKEND_UNAVAILABLE", log_detail=detail
    )


def upstream_unavailable(detail: str = "") -> Unavailable:
    """The upstream never answered (channel down): said in our words, its address kept to logs."""
    return Unavailable(UNAVAILABLE_MESSAGE, reason="UPSTREAM_UNAVAILABLE", log_detail=detail)


def audit_unavailable() -> Unavailable:
    """The audit trail cannot take records (audit.on_failure: fail_closed): no record, no call."""
    return Unavailable(
        UNAVAILABLE_MESSAGE,
        reason="AUDIT_UNAVAILABLE",
        log_detail="the audit trail cannot take records (audit.on_failure: fail_closed)",
    )


def unimplemented(method: str, detail: str | None = None) -> Unimplemented:
    """A method the gateway does not route: Google's "Method not found." for any door."""
    return Unimplemented(
        UNIMPLEMENTED_MESSAGE,
        log_detail=detail if detail is not None else f"{method} is not routed",
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

    reason = "RATE_LIMIT_EXCEEDED"

    def __init__(self, message: str, *, limit: str, retry_after_s: float) -> None:
        super().__init__(
            message,
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
