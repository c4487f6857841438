"""The cloud_logging sink: records become LogEntries with an AuditLog protoPayload, field for
field; batches go as WriteLogEntries requests within Cloud Logging's limits, all or nothing, to a
real local LoggingServiceV2 through Google's client; failures surface to the writer, with backoff.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
from google.cloud.logging_v2.services.logging_service_v2.transports.grpc import (
    LoggingServiceV2GrpcTransport,
)

from gateway.audit.cloud_logging import (
    AuditLog,
    CloudLoggingSink,
    CloudLoggingUnavailable,
    entry_by_json_format,
    entry_of,
    open_cloud_logging_sink,
)
from gateway.audit.logentry import to_log_entry
from gateway.audit.sinks import PartialWriteError
from gateway.audit.writer import AuditWriter, serialize, serialize_entry
from gateway.config import AuditCloudLoggingSettings, load_settings
from gateway.errors import ConfigError
from tests.support.logging_server import LoggingServer, as_record, running_logging_server, same_json
from tests.unit.audit.builders import ALLOWED_GET, CANCEL, denied, event, unauthenticated

CASES = {
    "allowed read": ALLOWED_GET,
    "denied": denied(),
    "unauthenticated": unauthenticated(),
    "a write": event(method=CANCEL, permission="contactcenterinsights.operations.cancel"),
    "no resource name": unauthenticated(resource_name=None, caller_ip=None, user_agent=None),
    "no trace": event(trace=None, span_id=None),
    "another issuer's caller": event(
        principal_email=None,
        third_party_principal={"iss": "https://idp.example", "sub": "svc-7"},
    ),
    "dry run": event(shadow_decision={"granted": False, "reason": "no binding", "policyEtag": "x"}),
    "a whole second": event(received_at=datetime(2024, 5, 1, 12, 30, 45, tzinfo=UTC)),
    "policy resource": event(policy_resource="projects/acme-prod"),
}


def _record(source: Any) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(serialize(source))
    return parsed


@pytest.mark.parametrize("source", CASES.values(), ids=CASES.keys())
def test_a_record_becomes_its_log_entry_field_for_field(source: Any) -> None:
    record = _record(source)
    entry: Any = entry_of(record)
    assert entry.proto_payload.type_url == "type.googleapis.com/google.cloud.audit.AuditLog"
    received = as_record(entry)
    written = {key: value for key, value in record.items() if key != "receiveTimestamp"}
    assert same_json(received, written), (received, written)
    assert "receiveTimestamp" not in received  # output only: Cloud Logging sets it


@pytest.mark.parametrize("source", CASES.values(), ids=CASES.keys())
def test_the_direct_conversion_gives_json_formats_message(source: Any) -> None:
    record = _record(source)
    assert _opened(entry_of(record)) == _opened(entry_by_json_format(record))


def _opened(entry: Any) -> tuple[Any, Any]:
    """The entry without its payload, and the payload unpacked: an Any compares its bytes, and
    a Struct's map fields are serialized in no set order."""
    payload = AuditLog()
    assert entry.proto_payload.Unpack(payload)
    rest = type(entry)()
    rest.CopyFrom(entry)
    rest.ClearField("proto_payload")
    return rest, payload


def test_fields_only_json_format_knows_are_kept() -> None:
    record = to_log_entry(ALLOWED_GET)
    record["labels"] = {"gateway": "opsgate-0"}
    record["operation"] = {"id": "op-1", "producer": "opsgate", "first": True}
    record["httpRequest"] = {"requestMethod": "POST", "status": 403, "latency": "0.012s"}
    record["timestamp"] = "2024-05-01T12:30:45.123456789Z"  # nanoseconds: another shape
    record["protoPayload"]["status"] = {
        "code": 7,
        "message": "denied",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "R"}],
    }
    entry: Any = entry_of(orjson.loads(serialize_entry(record)))
    assert _opened(entry) == _opened(entry_by_json_format(record))
    assert dict(entry.labels) == {"gateway": "opsgate-0"}
    assert (entry.operation.id, entry.operation.first) == ("op-1", True)
    assert (entry.http_request.status, entry.http_request.latency.ToMilliseconds()) == (403, 12)
    assert entry.timestamp.nanos == 123456789


def test_keys_the_audit_log_lacks_go_into_its_metadata() -> None:
    record = to_log_entry(ALLOWED_GET)
    record["protoPayload"]["refusal"] = {"why": "a key someone added"}
    entry: Any = entry_of(record)
    received = as_record(entry)["protoPayload"]
    assert received["metadata"]["refusal"] == {"why": "a key someone added"}
    assert "refusal" not in received
    assert _opened(entry) == _opened(entry_by_json_format(record))


@pytest.fixture
def server() -> Iterator[LoggingServer]:
    with running_logging_server() as running:
        yield running


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _sink(server: LoggingServer, **kwargs: Any) -> CloudLoggingSink:
    channel = grpc.insecure_channel(server.address)
    transport = LoggingServiceV2GrpcTransport(host=server.address, channel=channel)
    return CloudLoggingSink(LoggingServiceV2Client(transport=transport), **kwargs)


def _lines(count: int) -> list[bytes]:
    return [serialize(event(request_id=f"req-{index:05d}")) for index in range(count)]


def _ids(server: LoggingServer) -> list[str]:
    return [entry.insert_id for entry in server.entries]


def test_a_batch_is_one_all_or_nothing_request_through_googles_client(
    server: LoggingServer,
) -> None:
    sink = _sink(server)
    sink.write(_lines(25))
    (request,) = server.requests
    assert request.partial_success is False
    assert len(request.entries) == 25
    assert _ids(server) == [f"req-{index:05d}" for index in range(25)]
    assert "gl-python" in server.metadata[0]["x-goog-api-client"]  # Google's client sent it
    sink.close()


def test_batches_over_the_api_limits_are_split_in_order(server: LoggingServer) -> None:
    sink = _sink(server, max_entries=1000)
    sink.write(_lines(2500))
    assert [len(r.entries) for r in server.requests] == [1000, 1000, 500]
    size = len(entry_of(orjson.loads(_lines(1)[0])).SerializeToString()) + 6
    small = _sink(server, max_request_bytes=size * 3)
    server.requests.clear()
    small.write(_lines(7))
    assert [len(r.entries) for r in server.requests] == [3, 3, 1]
    assert all(r.ByteSize() <= size * 3 + 8 for r in server.requests)
    assert _ids(server) == [f"req-{index:05d}" for index in range(7)]


def test_a_refused_request_stores_nothing_and_says_why(server: LoggingServer) -> None:
    server.refuse_with = grpc.StatusCode.PERMISSION_DENIED
    sink = _sink(server)
    with pytest.raises(CloudLoggingUnavailable) as raised:
        sink.write(_lines(3))
    assert "WriteLogEntries of 3 entries failed: PERMISSION_DENIED" in str(raised.value)
    assert "roles/logging.logWriter" in str(raised.value)
    assert isinstance(raised.value, OSError)  # the writer's outage path
    assert server.entries == []


def test_entries_cloud_logging_refuses_are_named_with_its_reasons(server: LoggingServer) -> None:
    server.refuse_entries = {1: "Log entry with size 300.1K exceeds maximum size of 256.0K"}
    with pytest.raises(CloudLoggingUnavailable) as raised:
        _sink(server).write(_lines(3))
    message = str(raised.value)
    assert "WriteLogEntries of 3 entries failed: INVALID_ARGUMENT" in message
    assert "entries refused: #1: Log entry with size 300.1K exceeds maximum size" in message
    assert server.entries == []


def test_a_failure_after_a_stored_request_reports_what_was_stored(server: LoggingServer) -> None:
    sink = _sink(server, max_entries=4)
    calls = 0
    original = sink._send

    def second_fails(chunk: list[Any]) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            server.refuse_with = grpc.StatusCode.UNAVAILABLE
        original(chunk)

    sink._send = second_fails  # type: ignore[method-assign]
    with pytest.raises(PartialWriteError) as raised:
        sink.write(_lines(10))
    assert raised.value.written == 4
    assert _ids(server) == [f"req-{index:05d}" for index in range(4)]


def test_failures_back_off_exponentially_with_jitter_and_recovery_resets(
    server: LoggingServer,
) -> None:
    clock = Clock()
    sink = _sink(server, clock=clock, jitter=lambda: 1.0)
    server.refuse_with = grpc.StatusCode.UNAVAILABLE
    waits = []
    for _ in range(6):
        with pytest.raises(CloudLoggingUnavailable):
            sink.write(_lines(1))
        attempts = len(server.refusals)
        with pytest.raises(CloudLoggingUnavailable, match="next WriteLogEntries in"):
            sink.write(_lines(1))  # too early: no request is made
        assert len(server.refusals) == attempts
        waits.append(sink._not_before - clock.now)
        clock.now = sink._not_before
    assert waits == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    server.refuse_with = None
    sink.write(_lines(1))
    server.refuse_with = grpc.StatusCode.UNAVAILABLE
    with pytest.raises(CloudLoggingUnavailable):
        sink.write(_lines(1))
    assert sink._not_before - clock.now == 0.5  # a new outage starts from the bottom
    half = _sink(server, clock=clock, jitter=lambda: 0.0)
    with pytest.raises(CloudLoggingUnavailable):
        half.write(_lines(1))
    assert half._not_before - clock.now == 0.25  # jitter: the upper half of each wait


def test_the_writer_holds_records_through_an_outage_and_writes_them_once_in_order(
    server: LoggingServer,
) -> None:
    writer = AuditWriter(_sink(server), retry_interval_s=0.05)
    try:
        for index in range(5):
            writer.submit(event(request_id=f"before-{index}"))
        assert writer.flush(10)
        server.refuse_with = grpc.StatusCode.UNAVAILABLE
        for index in range(5):
            writer.submit(event(request_id=f"during-{index}"))
        assert not writer.flush(1.0)
        assert not writer.healthy and not writer.accepting  # fail_closed refuses new calls
        server.refuse_with = None
        assert writer.flush(15)
        assert writer.healthy and writer.accepting
    finally:
        writer.close(5)
    expected = [f"before-{i}" for i in range(5)] + [f"during-{i}" for i in range(5)]
    assert _ids(server) == expected
    assert len(server.refusals) >= 1


def test_an_unreachable_endpoint_is_an_outage_not_a_hang(tmp_path: Path) -> None:
    with running_logging_server() as stopped:
        address = stopped.address
    sink = open_cloud_logging_sink(
        AuditCloudLoggingSettings(endpoint=address, insecure=True, timeout_s=5)
    )
    with pytest.raises(CloudLoggingUnavailable, match="UNAVAILABLE"):
        sink.write(_lines(1))
    sink.close()


def _config(tmp_path: Path, audit: str) -> Path:
    policy = tmp_path / "policy.yaml"
    policy.write_text("allow: []\n")
    config = tmp_path / "opsgate.yaml"
    config.write_text(
        "upstream:\n  target: 127.0.0.1:1\n"
        "authentication:\n  google_id_tokens:\n    audiences: [x]\n"
        f"authorization:\n  policy_file: {policy}\n" + audit
    )
    return config


@pytest.mark.parametrize(
    ("audit", "key", "problem"),
    [
        ("audit:\n  sink: cloud_logging\n", "audit.project", "is required with audit.sink"),
        (
            "audit:\n  sink: cloud_logging\n  project: p\n  cloud_logging:\n    endpoint: nohost\n",
            "audit.cloud_logging.endpoint",
            "is not HOST:PORT",
        ),
        (
            "audit:\n  sink: cloud_logging\n  project: p\n  cloud_logging:\n    insecure: true\n",
            "audit.cloud_logging.insecure",
            "needs audit.cloud_logging.endpoint",
        ),
        (
            "audit:\n  sink: cloud_logging\n  project: p\n  cloud_logging:\n    timeout_s: 0\n",
            "audit.cloud_logging.timeout_s",
            "must be greater than 0",
        ),
    ],
    ids=["no project", "bad endpoint", "insecure without endpoint", "no timeout"],
)
def test_config_errors_name_the_key(tmp_path: Path, audit: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(_config(tmp_path, audit))
    assert raised.value.key == key
    assert problem in raised.value.problem


def test_a_good_config_loads(tmp_path: Path) -> None:
    settings = load_settings(
        _config(
            tmp_path,
            "audit:\n  sink: cloud_logging\n  project: acme-audit\n"
            "  cloud_logging:\n    endpoint: 127.0.0.1:8085\n    insecure: true\n",
        )
    )
    assert settings.audit.cloud_logging == AuditCloudLoggingSettings(
        endpoint="127.0.0.1:8085", insecure=True
    )
    assert settings.audit.project == "acme-audit"


def test_no_application_default_credentials_is_a_start_up_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError) as raised:
        open_cloud_logging_sink(AuditCloudLoggingSettings())
    assert "Application Default Credentials" in str(raised.value)
    assert "missing.json" in str(raised.value)


def test_application_default_credentials_are_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An authorized-user ADC file, as `gcloud auth application-default login` writes: loading
    # it makes no request (the token is fetched on the first WriteLogEntries).
    adc = tmp_path / "adc.json"
    adc.write_text(
        orjson.dumps(
            {
                "type": "authorized_user",
                "client_id": "id.apps.googleusercontent.com",
                "client_secret": "not-a-secret",
                "refresh_token": "not-a-token",
            }
        ).decode()
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    sink = open_cloud_logging_sink(AuditCloudLoggingSettings(endpoint="127.0.0.1:9"))
    transport: Any = sink._client.transport
    assert transport._credentials.refresh_token == "not-a-token"
    assert transport._host == "127.0.0.1:9"
    sink.close()
