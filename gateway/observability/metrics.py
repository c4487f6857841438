"""Prometheus metrics: per-call counters and latency histograms, and gauges read at scrape time."""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from gateway import __version__
from gateway.errors import StatusCode
from gateway.observability.grpc_metrics import GrpcServerMetrics
from gateway.outcome import CallOutcome
from gateway.routing import METHODS_BY_PATH

if TYPE_CHECKING:
    from gateway.audit.recorder import AuditRecorder
    from gateway.authn.factory import AuthnRuntime
    from gateway.authorizer import Authorizer, PolicyHolder
    from gateway.policy_reload import PolicyReloader

# Gateway-added time is small next to the hop (hundreds of µs); upstream time can be long (Wait).
GATEWAY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0)
UPSTREAM_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0, 300.0)
UNKNOWN_METHOD = "unknown"  # the method label of calls to paths nobody serves


class CallMetrics:
    """An OutcomeSink counting calls by method, code and decision, and timing them.

    Like ESPv2's overhead/backend split: `opsgate_gateway_latency_seconds` is the time the
    gateway added, `opsgate_upstream_latency_seconds` the time spent waiting for the upstream.
    The same outcomes feed the conventional grpc_server_* metrics (grpc_metrics.py); `start`
    counts a call in as it enters the chain.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            "opsgate_calls",
            "Calls by method, final gRPC code and authorization decision.",
            ("method", "code", "decision"),
            registry=registry,
        )
        self.gateway_latency = Histogram(
            "opsgate_gateway_latency_seconds",
            "Time the gateway added to each call (total minus upstream).",
            ("method",),
            buckets=GATEWAY_BUCKETS,
            registry=registry,
        )
        self.upstream_latency = Histogram(
            "opsgate_upstream_latency_seconds",
            "Time spent waiting for the upstream, for calls that reached it.",
            ("method",),
            buckets=UPSTREAM_BUCKETS,
            registry=registry,
        )

        self.grpc = GrpcServerMetrics(registry)
        self.start = self.grpc.start  # the audit stage's hook, called with each call it starts

        # (method, code, decision) -> the label children it records into, bound on first use:
        # `.labels()` per call would re-validate and look up the labels every time. Bounded:
        # every path nobody serves is the one method UNKNOWN_METHOD.
        self._children: dict[tuple[str, StatusCode, str], _Children] = {}

    def record(self, outcome: CallOutcome) -> None:
        call = outcome.call
        verdict = call.verdict
        decision = "none" if verdict is None else "allow" if verdict.decision.allowed else "deny"
        # Paths nobody serves are the caller's choice: one label for all of them keeps the
        # number of series bounded whatever callers send.
        method = call.method if call.method in METHODS_BY_PATH else UNKNOWN_METHOD
        key = (method, outcome.code, decision)
        children = self._children.get(key) or self._bind(key)
        children.calls.inc()
        latency = outcome.latency_s
        children.handled.inc()
        children.handling.observe(latency)
        upstream = call.upstream_s
        children.gateway_latency.observe(max(latency - (upstream or 0.0), 0.0))
        if upstream is not None:
            children.upstream_latency.observe(upstream)

    def _bind(self, key: tuple[str, StatusCode, str]) -> _Children:
        method, code, decision = key
        name = method.rsplit("/", 1)[-1]  # "/google.longrunning.Operations/GetOperation"
        children = self._children[key] = _Children(
            self.calls.labels(name, code.name, decision),
            self.gateway_latency.labels(name),
            self.upstream_latency.labels(name),
            *self.grpc.bind(method, code),
        )
        return children


@dataclass(frozen=True, slots=True)
class _Children:
    calls: Counter
    gateway_latency: Histogram
    upstream_latency: Histogram
    handled: Counter  # grpc_server_handled_total of this method and code
    handling: Histogram  # grpc_server_handling_seconds of this method


class Observed(Protocol):
    """The parts whose own counters the collector reads (the pipeline is one)."""

    @property
    def authn(self) -> AuthnRuntime: ...
    @property
    def authorizer(self) -> Authorizer: ...
    @property
    def reloaders(self) -> Sequence[PolicyReloader]: ...
    @property
    def policies(self) -> PolicyHolder: ...
    @property
    def audit(self) -> AuditRecorder: ...
    def in_flight(self) -> int: ...


class PipelineCollector(Collector):
    """Reads the counters the parts keep anyway (caches, key sources, reloads, audit writer)
    at scrape time, so the hot path pays nothing for them."""

    def __init__(self, pipeline: Observed) -> None:
        self._pipeline = pipeline

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | InfoMetricFamily]:
        p = self._pipeline
        authenticator = p.authn.authenticator
        yield _counter(
            "opsgate_token_cache_hits", "Verified-token cache hits.", authenticator.cache_hits
        )
        yield _counter(
            "opsgate_token_cache_misses", "Verified-token cache misses.", authenticator.cache_misses
        )
        decider = p.authorizer.enforced
        yield _counter("opsgate_decision_cache_hits", "Decision cache hits.", decider.hits)
        yield _counter("opsgate_decision_cache_misses", "Decision cache misses.", decider.misses)
        fetches = CounterMetricFamily(
            "opsgate_jwks_fetches", "Key set fetches.", labels=("issuer",)
        )
        failures = CounterMetricFamily(
            "opsgate_jwks_fetch_failures", "Key set fetches that failed.", labels=("issuer",)
        )
        for source in p.authn.key_sources:
            fetches.add_metric((source.name,), source.fetch_count)
            failures.add_metric((source.name,), source.fetch_failures)
        yield fetches
        yield failures
        reloads = CounterMetricFamily(
            "opsgate_policy_reloads", "Policy reloads by result.", labels=("policy", "result")
        )
        for role, reloader in zip(("enforced", "dry_run"), p.reloaders, strict=False):
            reloads.add_metric((role, "applied"), reloader.reloads)
            reloads.add_metric((role, "rejected"), reloader.rejected)
        yield reloads
        policy = InfoMetricFamily("opsgate_policy", "The policy version in force.")
        policy.add_metric((), {"etag": p.policies.current.etag})
        yield policy
        writer = p.audit.writer
        yield _counter("opsgate_audit_records_written", "Audit records written.", writer.written)
        yield _counter("opsgate_audit_sink_failures", "Failed audit writes.", writer.failures)
        yield _counter("opsgate_audit_records_dropped", "Audit records dropped.", writer.dropped)
        yield _counter(
            "opsgate_audit_records_left_out",
            "Allowed reads whose records the policy's auditConfigs leave out.",
            p.audit.left_out,
        )
        yield GaugeMetricFamily(
            "opsgate_audit_records_pending", "Records not yet written.", value=writer.pending
        )
        yield GaugeMetricFamily(
            "opsgate_audit_healthy", "1 while the sink accepts writes.", value=int(writer.healthy)
        )
        yield GaugeMetricFamily(
            "opsgate_in_flight_calls", "Calls in progress.", value=p.in_flight()
        )
        yield GaugeMetricFamily(
            "opsgate_ready", "1 when keys and policy are loaded.", value=int(p.authn.ready)
        )


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def register_runtime_collectors(registry: CollectorRegistry) -> None:
    """What prometheus_client offers about the process (process_cpu_seconds_total,
    process_resident_memory_bytes, process_open_fds, ...: Linux only), the interpreter
    (python_info) and its collector (python_gc_*), and opsgate_build_info."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(BuildInfoCollector())


class BuildInfoCollector(Collector):
    """opsgate_build_info{version, python, grpcio} 1: which build answers, for dashboards."""

    def __init__(self) -> None:
        self._labels = {
            "version": __version__,
            "python": platform.python_version(),
            "grpcio": _version_of("grpcio"),
        }

    def collect(self) -> Iterator[InfoMetricFamily]:
        yield InfoMetricFamily(
            "opsgate_build", "The opsgate build serving, and its Python and grpcio.", self._labels
        )


def _version_of(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
