"""Metrics as Prometheus users expect them, through the real `opsgate serve` and real calls: both
exposition formats, gzip, the process and build-info metrics, and the conventional gRPC server
metrics counting every call of each door (gRPC, REST, library mode) once."""

from __future__ import annotations

import gzip
import importlib.metadata
import platform
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

import gateway
from gateway.library import OpsgateChain
from gateway.reference_upstream import (
    CallLog,
    OperationStore,
    ReferenceOperationsServicer,
    seed_demo,
)
from gateway.reference_upstream.seed import ACME_PROD_US, DONE_OPERATION
from gateway.testing.loop import LoopThread
from gateway.testing.ports import free_port
from gateway.testing.processes import ServerProcess, gateway_process, upstream_process
from tests.support.envoy_stack import http_request
from tests.support.policy_cases import ALICE, MISSING_PROD_OPERATION, STRANGER, Who
from tests.support.stack import EXAMPLE_POLICY, Identity, quiet_audit_yaml

SERVICE = "google.longrunning.Operations"
GO_DEFAULT_BUCKETS = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5")
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
TEXT_0_0_4 = "text/plain; version=0.0.4; charset=utf-8"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# The REST door's answer to a gRPC code, for the calls made through it.
HTTP_CODES = {200: "OK", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}


@dataclass
class Scrape:
    status: int
    headers: dict[str, str]
    body: bytes  # as sent (gzipped if Content-Encoding says so)

    @property
    def text(self) -> str:
        raw = gzip.decompress(self.body) if self.headers.get("Content-Encoding") else self.body
        return raw.decode()


def scrape(
    port: int, *, accept: str | None = None, gzipped: bool = False, query: str = ""
) -> Scrape:
    headers = {"Accept-Encoding": "gzip" if gzipped else "identity"}
    if accept is not None:
        headers["Accept"] = accept
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics{query}", headers=headers)
    with _OPENER.open(request, timeout=10) as reply:
        return Scrape(reply.status, dict(reply.headers.items()), reply.read())


def samples(text: str, *, openmetrics: bool = False) -> list[Sample]:
    parse = openmetrics_families if openmetrics else text_string_to_metric_families
    return [sample for family in parse(text) for sample in family.samples]


def totals(found: list[Sample], name: str, *keys: str) -> Counter[tuple[str, ...]]:
    """`name`'s sample values summed by the values of `keys` (every sample of that name)."""
    counts: Counter[tuple[str, ...]] = Counter()
    for sample in found:
        if sample.name == name:
            counts[tuple(sample.labels[key] for key in keys)] += int(sample.value)
    return counts


@dataclass
class Served:
    """`opsgate serve` with the REST door and metrics on, after a known mix of calls."""

    gateway: ServerProcess
    metrics_port: int
    made: Counter[tuple[str, str]]  # (grpc_method, code) -> calls made and answered so


def _grpc_get(address: str, token: str | None, name: str) -> str:
    with grpc.insecure_channel(address) as channel:
        stub = operations_pb2_grpc.OperationsStub(channel)
        metadata = [("authorization", f"Bearer {token}")] if token else []
        try:
            stub.GetOperation(
                operations_pb2.GetOperationRequest(name=name), metadata=metadata, timeout=10
            )
        except grpc.RpcError as err:
            return str(err.code().name)
    return "OK"


def _grpc_unknown(address: str) -> str:
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(f"/{SERVICE}/NoSuchMethod")
        try:
            call(b"", timeout=10)
        except grpc.RpcError as err:
            return str(err.code().name)
    return "OK"


@pytest.fixture(scope="module")
def served(identity: Identity, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("exposition")
    metrics_port = free_port()
    upstream = upstream_process()
    try:
        config = directory / "opsgate.yaml"
        config.write_text(
            f"listen: 127.0.0.1:0\nupstream: {{target: {upstream.address}}}\n"
            "rest: {listen: 127.0.0.1:0}\n"
            f"metrics: {{listen: 127.0.0.1:{metrics_port}}}\n"
            + identity.issuer_yaml()
            + identity.policy_yaml(EXAMPLE_POLICY)
            + quiet_audit_yaml(directory)
        )
        process = gateway_process(config, health=True)
        try:
            yield Served(process, metrics_port, _make_calls(process, identity))
        finally:
            assert process.stop() == 0
    finally:
        upstream.stop()


def _make_calls(process: ServerProcess, identity: Identity) -> Counter[tuple[str, str]]:
    def token(who: Who) -> str:
        return identity.token(**who.claims())

    made: Counter[tuple[str, str]] = Counter()
    address = process.address
    grpc_calls = [
        (token(ALICE), DONE_OPERATION, "OK"),
        (token(ALICE), DONE_OPERATION, "OK"),
        (token(ALICE), MISSING_PROD_OPERATION, "NOT_FOUND"),  # the upstream's answer
        (token(STRANGER), DONE_OPERATION, "PERMISSION_DENIED"),
        (None, DONE_OPERATION, "UNAUTHENTICATED"),
        ("not-a-token", DONE_OPERATION, "UNAUTHENTICATED"),
    ]
    for bearer, name, expected in grpc_calls:
        assert _grpc_get(address, bearer, name) == expected
        made["GetOperation", expected] += 1
    # The REST door: each call counts under the gRPC method it maps to.
    assert process.rest_address is not None
    base = f"http://{process.rest_address}"
    rest_calls = [
        ("GetOperation", f"/v1/{DONE_OPERATION}", token(ALICE), "OK"),
        ("GetOperation", f"/v1/{DONE_OPERATION}", token(STRANGER), "PERMISSION_DENIED"),
        ("GetOperation", f"/v1/{DONE_OPERATION}", None, "UNAUTHENTICATED"),
        ("ListOperations", f"/v1/{ACME_PROD_US}/operations", token(ALICE), "OK"),
        ("ListOperations", f"/v1/{ACME_PROD_US}/operations", token(STRANGER), "PERMISSION_DENIED"),
    ]
    for method, path, bearer, expected in rest_calls:
        assert HTTP_CODES[http_request(base + path, "GET", bearer).status] == expected
        made[method, expected] += 1
    assert _grpc_unknown(address) == "UNIMPLEMENTED"
    made["unknown", "UNIMPLEMENTED"] += 1
    return made


def test_text_format_unless_openmetrics_is_asked_for(served: Served) -> None:
    plain = scrape(served.metrics_port)
    assert plain.status == 200
    assert plain.headers["Content-Type"] == TEXT_0_0_4
    assert "Content-Encoding" not in plain.headers
    assert "# EOF" not in plain.text
    assert any(s.name == "grpc_server_handled_total" for s in samples(plain.text))

    asked = scrape(served.metrics_port, accept="application/openmetrics-text; version=1.0.0")
    # (prometheus_client may add the name escaping it applied: `; escaping=underscores`.)
    assert asked.headers["Content-Type"].startswith(OPENMETRICS)
    assert asked.text.endswith("# EOF\n")
    assert asked.text.count("# EOF") == 1
    found = samples(asked.text, openmetrics=True)  # the OpenMetrics parser accepts it whole
    assert any(s.name == "grpc_server_handled_total" for s in found)
    # What Prometheus sends: OpenMetrics preferred, the text format as a fallback.
    prometheus = scrape(
        served.metrics_port,
        accept="application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1",
    )
    assert prometheus.headers["Content-Type"].startswith(OPENMETRICS)
    # An Accept naming neither (a browser, curl's */*) gets the text format.
    assert scrape(served.metrics_port, accept="*/*").headers["Content-Type"] == TEXT_0_0_4


def test_gzip_when_the_scraper_accepts_it(served: Served) -> None:
    port = served.metrics_port
    # Only settled metrics, so that two scrapes are comparable byte for byte.
    query = "?name[]=grpc_server_handled_total&name[]=opsgate_calls_total"
    plain = scrape(port, query=query)
    zipped = scrape(port, gzipped=True, query=query)
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.headers["Content-Type"] == TEXT_0_0_4
    assert zipped.body[:2] == b"\x1f\x8b"
    assert gzip.decompress(zipped.body) == plain.body
    assert {s.name for s in samples(plain.text)} == {
        "grpc_server_handled_total",
        "opsgate_calls_total",
    }
    both = scrape(port, accept="application/openmetrics-text", gzipped=True)
    assert both.headers["Content-Encoding"] == "gzip"
    assert both.text.endswith("# EOF\n")
    samples(both.text, openmetrics=True)
    # Anything but GET /metrics is still not found.
    with pytest.raises(urllib.error.HTTPError) as missing:
        _OPENER.open(f"http://127.0.0.1:{port}/other", timeout=10)
    assert missing.value.code == 404


def test_process_and_build_info(served: Served) -> None:
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for s in samples(scrape(served.metrics_port).text)
    }
    names = {name for name, _ in found}
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_start_time_seconds",
        "process_open_fds",
        "process_max_fds",
        "python_info",
        "python_gc_collections_total",
    ):
        assert name in names, name
    assert found["process_resident_memory_bytes", ()] > 0
    assert found["process_open_fds", ()] > 0
    build = (
        ("grpcio", importlib.metadata.version("grpcio")),
        ("python", platform.python_version()),  # the child runs this same interpreter
        ("version", gateway.__version__),
    )
    assert found["opsgate_build_info", build] == 1
    assert [key for key in found if key[0] == "opsgate_build_info"] == [
        ("opsgate_build_info", build)
    ]


def test_grpc_server_metrics_count_every_call_once(served: Served) -> None:
    found = samples(
        scrape(served.metrics_port, accept="application/openmetrics-text").text, openmetrics=True
    )
    made = served.made
    known = {method for method, _ in made if method != "unknown"}

    handled = totals(found, "grpc_server_handled_total", "grpc_method", "grpc_code")
    assert handled == made
    for sample in found:
        if sample.name.startswith("grpc_server_") and sample.labels.get("grpc_method") in known:
            assert sample.labels["grpc_service"] == SERVICE
            assert sample.labels["grpc_type"] == "unary"

    per_method: Counter[tuple[str, ...]] = Counter()
    for (method, _), count in made.items():
        per_method[(method,)] += count
    assert totals(found, "grpc_server_started_total", "grpc_method") == per_method
    assert totals(found, "grpc_server_handling_seconds_count", "grpc_method") == per_method
    infinite = totals(
        [s for s in found if s.labels.get("le") == "+Inf"],
        "grpc_server_handling_seconds_bucket",
        "grpc_method",
    )
    assert infinite == per_method
    bounds = {
        sample.labels["le"]
        for sample in found
        if sample.name == "grpc_server_handling_seconds_bucket"
    }
    assert bounds == {*GO_DEFAULT_BUCKETS, "5.0", "10.0", "+Inf"}

    # Unary calls: one request received per call; one response sent per call answered OK.
    unary = Counter({key: n for key, n in per_method.items() if key[0] in known})
    assert totals(found, "grpc_server_msg_received_total", "grpc_method") == unary
    sent = Counter({(m,): n for (m, code), n in made.items() if code == "OK"})
    assert +totals(found, "grpc_server_msg_sent_total", "grpc_method") == sent

    # opsgate's own counter, as before, counts the same calls.
    assert totals(found, "opsgate_calls_total", "method", "code") == made


def test_library_mode_counts_its_calls(
    loop: LoopThread, identity: Identity, tmp_path: Path
) -> None:
    config = tmp_path / "library.yaml"
    config.write_text(
        identity.issuer_yaml() + identity.policy_yaml(EXAMPLE_POLICY) + quiet_audit_yaml(tmp_path)
    )
    chain = OpsgateChain.from_config(config)
    store = OperationStore()
    seed_demo(store)

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server(interceptors=chain.interceptors)
        operations_pb2_grpc.add_OperationsServicer_to_server(
            ReferenceOperationsServicer(store, CallLog()), server
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = loop.run(start())
    try:
        address = f"127.0.0.1:{port}"
        alice, stranger = (identity.token(**who.claims()) for who in (ALICE, STRANGER))
        assert _grpc_get(address, alice, DONE_OPERATION) == "OK"
        assert _grpc_get(address, stranger, DONE_OPERATION) == "PERMISSION_DENIED"
        assert _grpc_get(address, None, DONE_OPERATION) == "UNAUTHENTICATED"
    finally:
        loop.run(server.stop(0))
        chain.close()
    registry = chain.pipeline.registry

    def value(name: str, **labels: str) -> float | None:
        get = {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": "GetOperation"}
        return registry.get_sample_value(name, {**get, **labels})

    for code in ("OK", "PERMISSION_DENIED", "UNAUTHENTICATED"):
        assert value("grpc_server_handled_total", grpc_code=code) == 1
    assert value("grpc_server_started_total") == 3
    assert value("grpc_server_handling_seconds_count") == 3
    assert value("grpc_server_msg_sent_total") == 1
