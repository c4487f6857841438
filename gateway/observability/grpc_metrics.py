"""The conventional gRPC server metrics, named and labelled as go-grpc-prometheus names them, so
dashboards built for gRPC servers work on the gateway's calls whichever door they came in by."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from gateway.call import Call
from gateway.errors import StatusCode
from gateway.routing import METHODS_BY_PATH

# go-grpc-prometheus's default handling-time buckets (Prometheus' DefBuckets).
HANDLING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LABELS = ("grpc_type", "grpc_service", "grpc_method")
UNARY = "unary"
# Paths nobody serves: one series for all of them, whatever callers send.
UNKNOWN_LABELS = ("unknown", "unknown", "unknown")


def grpc_labels(method: str) -> tuple[str, str, str]:
    """(grpc_type, grpc_service, grpc_method) of a method path, e.g. '/google.longrunning.
    Operations/GetOperation' -> ('unary', 'google.longrunning.Operations', 'GetOperation')."""
    if method not in METHODS_BY_PATH:
        return UNKNOWN_LABELS
    service, _, name = method[1:].partition("/")
    return UNARY, service, name


class GrpcServerMetrics:
    """grpc_server_{started,handled,msg_received,msg_sent}_total and
    grpc_server_handling_seconds, counted as go-grpc-prometheus's unary interceptor counts them.

    A unary call receives its one request before it starts and sends its one response only
    when it ends OK, so the message counters are read off the started and handled counters at
    scrape time: a call pays for one started and one handled increment and one observation.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.started = Counter(
            "grpc_server_started",
            "Total number of RPCs started on the server.",
            LABELS,
            registry=registry,
        )
        self.handled = Counter(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            (*LABELS, "grpc_code"),
            registry=registry,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level "
            "handled by the server.",
            LABELS,
            buckets=HANDLING_BUCKETS,
            registry=registry,
        )
        registry.register(_MessageCounts(self.started, self.handled))
        # method path -> its started child, bound on first use (known methods only: bounded).
        self._started: dict[str, Counter] = {}

    def start(self, call: Call) -> None:
        """Count `call` as started (the audit stage calls this as the call enters the chain)."""
        child = self._started.get(call.method)
        if child is None:
            child = self._bind_start(call.method)
        child.inc()

    def _bind_start(self, method: str) -> Counter:
        labels = grpc_labels(method)
        child = self.started.labels(*labels)
        if labels is not UNKNOWN_LABELS:
            self._started[method] = child
        return child

    def bind(self, method: str, code: StatusCode) -> tuple[Counter, Histogram]:
        """The handled child of (`method`, `code`) and the handling-time child of `method`, for
        a caller that keeps them (CallMetrics binds once per method, code and decision)."""
        labels = grpc_labels(method)
        return self.handled.labels(*labels, code.name), self.handling.labels(*labels)


class _MessageCounts(Collector):
    """grpc_server_msg_received_total and grpc_server_msg_sent_total of unary calls: one
    request per started call, one response per call handled OK."""

    def __init__(self, started: Counter, handled: Counter) -> None:
        self._started = started
        self._handled = handled

    def collect(self) -> Iterator[CounterMetricFamily]:
        received = CounterMetricFamily(
            "grpc_server_msg_received",
            "Total number of RPC stream messages received on the server.",
            labels=LABELS,
        )
        sent = CounterMetricFamily(
            "grpc_server_msg_sent",
            "Total number of gRPC stream messages sent by the server.",
            labels=LABELS,
        )
        started = _unary_totals(self._started)
        ok = _unary_totals(self._handled, grpc_code="OK")
        for labels, value in started.items():
            received.add_metric(labels, value)
        for labels in sorted(started.keys() | ok.keys()):
            sent.add_metric(labels, ok.get(labels, 0.0))
        yield received
        yield sent


def _unary_totals(counter: Counter, **only: str) -> dict[tuple[str, ...], float]:
    """`counter`'s totals of unary methods (with the `only` label values), by LABELS."""
    totals: dict[tuple[str, ...], float] = {}
    for family in counter.collect():
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name.endswith("_total")
                and labels["grpc_type"] == UNARY
                and all(labels[key] == value for key, value in only.items())
            ):
                key = tuple(labels[name] for name in LABELS)
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals
