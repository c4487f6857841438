"""What a worker of `serve --workers N` knows of its siblings: the supervisor's counts, for
health (readiness, trailing metadata) and metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

WORKERS_KEY = "x-opsgate-workers"  # health Check trailing metadata: "SERVING/CONFIGURED"


@dataclass(slots=True)
class WorkerCounts:
    """The supervisor's last word: workers configured, serving, restarted so far.

    Serving means started with every door bound and still alive. Updated by the worker's
    link to its supervisor (gateway.workers), read by health and metrics; `counted` once the
    supervisor has counted this worker; `changed` is called on every change (readiness then
    follows at once, not at its next poll).
    """

    configured: int
    serving: int = 0
    restarts: int = 0
    counted: bool = False
    changed: Callable[[], None] = lambda: None

    def update(self, serving: int, configured: int, restarts: int) -> None:
        self.serving, self.configured, self.restarts = serving, configured, restarts
        self.counted = True
        self.changed()

    def lost(self) -> None:
        """The supervisor is gone: nobody counts this worker serving any more."""
        self.serving = 0
        self.changed()

    def describe(self) -> str:
        return f"{self.serving}/{self.configured}"


class WorkersCollector(Collector):
    """`opsgate_workers_*`: every worker exports the supervisor's counts (take the max across a
    pod's workers: each says the same, and a dead one says nothing)."""

    def __init__(self, counts: WorkerCounts) -> None:
        self._counts = counts

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        counts = self._counts
        yield GaugeMetricFamily(
            "opsgate_workers_configured", "Workers --workers asks for.", value=counts.configured
        )
        yield GaugeMetricFamily(
            "opsgate_workers_serving",
            "Workers started with every door bound and alive, as the supervisor sees them.",
            value=counts.serving,
        )
        yield CounterMetricFamily(
            "opsgate_worker_restarts",
            "Workers the supervisor restarted after they died or failed to start.",
            value=counts.restarts,
        )
