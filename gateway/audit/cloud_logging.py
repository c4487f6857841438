"""The cloud_logging audit sink: each record becomes a LogEntry whose protoPayload is an AuditLog,
written with Cloud Logging's own client library (WriteLogEntries, one request per writer batch),
so Logs Explorer finds the records under protoPayload.*, as it does Google's own audit logs."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import grpc
import orjson
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.cloud.audit import audit_log_pb2
from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
from google.cloud.logging_v2.services.logging_service_v2.transports.grpc import (
    LoggingServiceV2GrpcTransport,
)
from google.cloud.logging_v2.types import log_entry as log_entry_types
from google.cloud.logging_v2.types import logging as logging_types
from google.logging.type import log_severity_pb2
from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message
from grpc_status import rpc_status

from gateway.audit.logentry import AUDIT_LOG_TYPE
from gateway.audit.sinks import PartialWriteError
from gateway.backoff import Backoff
from gateway.errors import ConfigError, OpsgateError

if TYPE_CHECKING:
    from gateway.config import AuditCloudLoggingSettings

# The raw protobuf classes under the client's proto-plus wrappers: records are converted straight
# into them, and the request is wrapped (not copied) for the client's call.
LogEntry: type[Message] = log_entry_types.LogEntry.pb()
WriteLogEntriesRequest: type[Message] = logging_types.WriteLogEntriesRequest.pb()
WriteLogEntriesPartialErrors: type[Message] = logging_types.WriteLogEntriesPartialErrors.pb()
AuditLog = audit_log_pb2.AuditLog

GOOGLE_ENDPOINT = "logging.googleapis.com:443"
WRITE_SCOPE = "https://www.googleapis.com/auth/logging.write"

# Cloud Logging's limits on one entries.write request: 10 MB, and entries of at most 1000
# resources (one entry each, at worst). Below both, with room for the request's own framing.
MAX_ENTRIES_PER_REQUEST = 1000
MAX_REQUEST_BYTES = 9 * 1024 * 1024

# Between failed requests the sink waits, doubling from BACKOFF_INITIAL_S up to BACKOFF_MAX_S,
# each wait drawn from its upper half (jitter: gateways that lost the API together do not all
# come back at once). The cap is short because a fail_closed gateway refuses calls until a
# request succeeds: a recovery is noticed at most this late.
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 5.0
# gRPC's own reconnect backoff grows to 120 s by default: a restarted endpoint would be tried
# again that late, however short our backoff.
CHANNEL_OPTIONS = (("grpc.max_reconnect_backoff_ms", int(BACKOFF_MAX_S * 1000)),)
_REPORTED_ENTRY_ERRORS = 3

_SEVERITY: Mapping[str, int] = dict(log_severity_pb2.LogSeverity.items())
_PERMISSION_TYPE: Mapping[str, int] = dict(audit_log_pb2.AuthorizationInfo.PermissionType.items())
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_AUDIT_LOG_KEYS = frozenset(["@type", *(field.json_name for field in AuditLog.DESCRIPTOR.fields)])


class CloudLoggingUnavailable(OpsgateError, OSError):
    """A WriteLogEntries request failed (or waits out its backoff): none of its entries were
    stored, since the sink asks for all or nothing (partial_success=false)."""

    reason = "AUDIT_CLOUD_LOGGING_UNAVAILABLE"


# -- records -> LogEntry ------------------------------------------------------------------------


def entry_of(record: Mapping[str, Any]) -> Message:
    """The LogEntry of one record (the JSON the file sink writes), field for field.

    receiveTimestamp is left out: it is output only, set by Cloud Logging when the entry
    arrives (the call's end stays in the record as timestamp + metadata.latencyMs). Keys the
    AuditLog has no field for go into its metadata (a Struct) under their own names.

    The fields the gateway writes are set directly (json_format costs ~180 µs a record, on the
    writer thread, which shares the GIL with the event loop); anything else, or anything the
    direct way refuses, goes through json_format, which gives the same message.
    """
    record = _fitted(record)
    try:
        return _entry_directly(record)
    except (TypeError, ValueError, KeyError, AttributeError):
        return entry_by_json_format(record)


def entry_by_json_format(record: Mapping[str, Any]) -> Message:
    """entry_of the slow, general way: protobuf's own JSON mapping (the reference)."""
    entry = LogEntry()
    json_format.ParseDict(_fitted(record), entry)
    return entry


def _fitted(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """The record without receiveTimestamp, its AuditLog-less keys moved into metadata."""
    payload = record.get("protoPayload")
    if "receiveTimestamp" in record:
        record = {key: value for key, value in record.items() if key != "receiveTimestamp"}
    if not isinstance(payload, dict) or payload.get("@type") != AUDIT_LOG_TYPE:
        return record
    extra = payload.keys() - _AUDIT_LOG_KEYS
    if not extra:
        return record
    moved = {key: value for key, value in payload.items() if key not in extra}
    metadata = moved["metadata"] = dict(payload.get("metadata") or {})
    for key in sorted(extra):
        metadata.setdefault(key, payload[key])
    return {**record, "protoPayload": moved}


# LogEntry / AuditLog JSON keys whose value is a plain string, and the field each one sets.
_ENTRY_STRINGS = {
    "logName": "log_name",
    "insertId": "insert_id",
    "trace": "trace",
    "spanId": "span_id",
}
_PAYLOAD_STRINGS = {
    "serviceName": "service_name",
    "methodName": "method_name",
    "resourceName": "resource_name",
}
_AUTHENTICATION_STRINGS = {
    "principalEmail": "principal_email",
    "principalSubject": "principal_subject",
    "serviceAccountKeyName": "service_account_key_name",
}
_REQUEST_METADATA_STRINGS = {
    "callerIp": "caller_ip",
    "callerSuppliedUserAgent": "caller_supplied_user_agent",
    "callerNetwork": "caller_network",
}
_CHECK_STRINGS = {"resource": "resource", "permission": "permission"}
_RESOURCE_ATTRIBUTE_STRINGS = {"service": "service", "name": "name", "type": "type"}


def _entry_directly(record: Mapping[str, Any]) -> Message:
    entry: Any = LogEntry()
    rest: dict[str, Any] = {}
    for key, value in record.items():
        attribute = _ENTRY_STRINGS.get(key)
        if attribute is not None:
            setattr(entry, attribute, _text(value))
        elif key == "timestamp":
            _timestamp(entry.timestamp, value)
        elif key == "severity":
            entry.severity = _SEVERITY[value]
        elif key == "resource":
            _resource(entry.resource, value)
        elif key == "protoPayload" and value.get("@type") == AUDIT_LOG_TYPE:
            entry.proto_payload.Pack(_audit_log(value))
        else:
            rest[key] = value  # labels, operation, httpRequest, ...: rare, the general way
    if rest:
        json_format.ParseDict(rest, entry)
    return entry


def _timestamp(timestamp: Any, value: str) -> None:
    # The records' own shape, 2024-05-01T12:30:45.123456Z, read by datetime's C parser;
    # Timestamp.FromJsonString (any RFC 3339) goes through strptime, at 4x the cost.
    if len(value) != 27 or value[-1] != "Z" or value[19] != ".":
        timestamp.FromJsonString(value)
        return
    delta = datetime.fromisoformat(value) - _EPOCH
    timestamp.seconds = delta.days * 86400 + delta.seconds
    timestamp.nanos = delta.microseconds * 1000


def _resource(resource: Any, value: Mapping[str, Any]) -> None:
    resource.SetInParent()  # present even when empty, as json_format makes it
    for key, item in value.items():
        if key == "type":
            resource.type = _text(item)
        elif key == "labels":
            for name, label in item.items():
                resource.labels[name] = _text(label)
        else:
            raise KeyError(key)


def _audit_log(value: Mapping[str, Any]) -> Any:
    payload = AuditLog()
    rest: dict[str, Any] = {}
    for key, item in value.items():
        attribute = _PAYLOAD_STRINGS.get(key)
        if attribute is not None:
            setattr(payload, attribute, _text(item))
        elif key == "@type":
            continue
        elif key == "authenticationInfo":
            _strings(payload.authentication_info, item, _AUTHENTICATION_STRINGS)
        elif key == "requestMetadata":
            _strings(payload.request_metadata, item, _REQUEST_METADATA_STRINGS)
        elif key == "authorizationInfo":
            for check in item:
                _check(payload.authorization_info.add(), check)
        elif key == "status":
            _status(payload.status, item)
        elif key == "metadata":
            _struct(payload.metadata, item)
        else:
            rest[key] = item
    if rest:
        json_format.ParseDict(rest, payload)
    return payload


def _strings(message: Any, value: Mapping[str, Any], fields: Mapping[str, str]) -> None:
    message.SetInParent()
    rest: dict[str, Any] = {}
    for key, item in value.items():
        attribute = fields.get(key)
        if attribute is None:
            rest[key] = item
        else:
            setattr(message, attribute, _text(item))
    if rest:
        json_format.ParseDict(rest, message)


def _check(check: Any, value: Mapping[str, Any]) -> None:
    rest: dict[str, Any] = {}
    for key, item in value.items():
        attribute = _CHECK_STRINGS.get(key)
        if attribute is not None:
            setattr(check, attribute, _text(item))
        elif key == "granted":
            if item.__class__ is not bool:
                raise TypeError("granted")
            check.granted = item
        elif key == "permissionType":
            check.permission_type = _PERMISSION_TYPE[item]
        elif key == "resourceAttributes":
            _strings(check.resource_attributes, item, _RESOURCE_ATTRIBUTE_STRINGS)
        else:
            rest[key] = item
    if rest:
        json_format.ParseDict(rest, check)


def _status(status: Any, value: Mapping[str, Any]) -> None:
    status.SetInParent()  # Google's success: an empty status, which is there all the same
    for key, item in value.items():
        if key == "code" and item.__class__ is int:
            status.code = item
        elif key == "message":
            status.message = _text(item)
        else:
            raise KeyError(key)  # details: the general way


def _text(value: Any) -> str:
    if value.__class__ is not str:
        raise TypeError("not a string")
    return value


def _struct(struct: Any, value: Mapping[str, Any]) -> None:
    struct.SetInParent()
    fields = struct.fields
    for key, item in value.items():
        _value(fields[key], item)


def _value(target: Any, item: Any) -> None:
    # What Struct.update does, without its per-value dispatch through Python's ABCs.
    kind = item.__class__
    if kind is str:
        target.string_value = item
    elif kind is bool:
        target.bool_value = item
    elif kind is int or kind is float:
        target.number_value = item
    elif item is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif kind is dict:
        _struct(target.struct_value, item)
    elif kind is list:
        target.list_value.SetInParent()  # an empty list is a list, not an unset value
        values = target.list_value.values
        for element in item:
            _value(values.add(), element)
    else:
        raise TypeError(f"{kind.__name__} in a Struct")


# -- the sink -----------------------------------------------------------------------------------


class CloudLoggingSink:
    """An AuditSink writing each batch with WriteLogEntries (partial_success=false: all or none).

    A batch over Cloud Logging's per-request limits goes as several requests, in order; if a
    later one fails, PartialWriteError tells the writer how many records are stored, so it
    neither loses nor repeats any. A failed request is retried by the writer (every
    audit.on_failure semantics apply); the sink adds exponential backoff with jitter, refusing
    attempts that come before it ends without a request. Every entry carries its record's
    insertId, so Cloud Logging drops the copy of an entry sent again after a request whose
    answer was lost.
    """

    def __init__(
        self,
        client: LoggingServiceV2Client,
        *,
        timeout_s: float = 10.0,
        max_entries: int = MAX_ENTRIES_PER_REQUEST,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if timeout_s <= 0 or max_entries < 1 or max_request_bytes < 1:
            raise ValueError("timeout_s, max_entries and max_request_bytes must be positive")
        self._client = client
        self._timeout_s = timeout_s
        self._max_entries = max_entries
        self._max_request_bytes = max_request_bytes
        self._clock = clock
        # Each wait drawn from the upper half of its bound: rand in [0.5, 1).
        self._backoff = Backoff(BACKOFF_INITIAL_S, BACKOFF_MAX_S, rand=lambda: 0.5 + 0.5 * jitter())
        self._consecutive_failures = 0
        self._not_before = 0.0
        self.requests = 0  # WriteLogEntries requests made (for tests and figures)
        self.entries = 0  # entries stored by them

    def write(self, lines: Sequence[bytes]) -> None:
        now = self._clock()
        if now < self._not_before:
            raise CloudLoggingUnavailable(
                f"Cloud Logging failed {self._consecutive_failures} times in a row; next "
                f"WriteLogEntries in {self._not_before - now:.2f}s"
            )
        entries = [entry_of(orjson.loads(line)) for line in lines]
        written = 0
        for chunk in self._chunks(entries):
            try:
                self._send(chunk)
            except CloudLoggingUnavailable as exc:
                self._back_off()
                if written:
                    raise PartialWriteError(written, exc) from exc
                raise
            written += len(chunk)
        self._consecutive_failures = 0

    def flush(self) -> None:
        """Nothing to do: a write returns once Cloud Logging has stored the entries."""

    def close(self) -> None:
        self._client.transport.close()  # type: ignore[no-untyped-call]

    def _chunks(self, entries: list[Message]) -> Iterator[list[Message]]:
        chunk: list[Message] = []
        size = 0
        for entry in entries:
            # A repeated field's framing: a tag byte and the length's varint (at most 5 bytes).
            entry_size = entry.ByteSize() + 6
            if chunk and (
                len(chunk) >= self._max_entries or size + entry_size > self._max_request_bytes
            ):
                yield chunk
                chunk, size = [], 0
            chunk.append(entry)
            size += entry_size
        if chunk:
            yield chunk

    def _send(self, chunk: list[Message]) -> None:
        request: Any = WriteLogEntriesRequest(partial_success=False)
        request.entries.extend(chunk)
        try:
            self._client.write_log_entries(
                request=logging_types.WriteLogEntriesRequest.wrap(request),
                retry=None,  # the writer retries, in order, with the records kept
                timeout=self._timeout_s,
            )
        except api_exceptions.GoogleAPICallError as exc:
            raise CloudLoggingUnavailable(_describe_call_error(exc, len(chunk))) from exc
        except (api_exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError) as exc:
            # Credentials that cannot be refreshed, a retry wrapper's error: no request stored.
            raise CloudLoggingUnavailable(
                f"WriteLogEntries of {len(chunk)} entries failed: {type(exc).__name__}: "
                f"{_short(str(exc))}"
            ) from exc
        self.requests += 1
        self.entries += len(chunk)

    def _back_off(self) -> None:
        self._consecutive_failures += 1
        self._not_before = self._clock() + self._backoff.delay(self._consecutive_failures)


def _describe_call_error(exc: api_exceptions.GoogleAPICallError, count: int) -> str:
    code = exc.grpc_status_code.name if exc.grpc_status_code is not None else str(exc.code)
    text = f"WriteLogEntries of {count} entries failed: {code}: {_short(exc.message or '')}"
    if code in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
        text += " (the gateway's credentials need roles/logging.logWriter on the records' projects)"
    refused = _entry_errors(exc)
    if refused:
        text += f"; entries refused: {refused}"
    return text


def _entry_errors(exc: api_exceptions.GoogleAPICallError) -> str:
    """Which entries Cloud Logging refused and why, from WriteLogEntriesPartialErrors."""
    call = exc.response
    if not isinstance(call, grpc.Call):
        return ""
    try:
        status = rpc_status.from_call(call)
    except ValueError:
        return ""
    if status is None:
        return ""
    for detail in status.details:
        partial: Any = WriteLogEntriesPartialErrors()
        if detail.Unpack(partial):
            errors = sorted(partial.log_entry_errors.items())
            shown = "; ".join(
                f"#{index}: {_short(error.message)}"
                for index, error in errors[:_REPORTED_ENTRY_ERRORS]
            )
            more = len(errors) - _REPORTED_ENTRY_ERRORS
            return shown + (f"; and {more} more" if more > 0 else "")
    return ""


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# -- opening it ---------------------------------------------------------------------------------


def open_cloud_logging_sink(settings: AuditCloudLoggingSettings) -> CloudLoggingSink:
    """The sink as configured: Google's endpoint with Application Default Credentials, or (with
    `insecure`) a plaintext channel to a local emulator or test server, with no credentials.

    Start-up stops with a ConfigError when no credentials can be found.
    """
    endpoint = settings.endpoint or GOOGLE_ENDPOINT
    transport: LoggingServiceV2GrpcTransport
    if settings.insecure:
        channel = grpc.insecure_channel(endpoint, options=CHANNEL_OPTIONS)
        transport = LoggingServiceV2GrpcTransport(host=endpoint, channel=channel)
    else:
        import google.auth

        try:
            credentials, _ = google.auth.default(scopes=[WRITE_SCOPE])
        except auth_exceptions.DefaultCredentialsError as exc:
            raise ConfigError(
                "<audit.cloud_logging>",
                "audit.sink",
                "cloud_logging writes with the gateway's Application Default Credentials, "
                f"and none could be loaded: {exc}",
            ) from exc
        transport = LoggingServiceV2GrpcTransport(
            host=endpoint, credentials=credentials, channel=_secure_channel
        )
    return CloudLoggingSink(
        LoggingServiceV2Client(transport=transport), timeout_s=settings.timeout_s
    )


def _secure_channel(host: str, **kwargs: Any) -> grpc.Channel:
    # The transport's own channel (TLS, credentials, its message size options), plus ours.
    kwargs["options"] = [*kwargs.get("options", ()), *CHANNEL_OPTIONS]
    return LoggingServiceV2GrpcTransport.create_channel(host, **kwargs)
