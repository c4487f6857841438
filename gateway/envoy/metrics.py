"""The Envoy door's own metrics, read at scrape time from the counters it keeps anyway."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.envoy.compiled.ledger import CompiledLedger
from gateway.envoy.completion import CompletionJoin
from gateway.envoy.handoff import Handoff


class EnvoyCollector(Collector):
    """How allowed calls' records end (Envoy's report, or not reported in time) and how many
    wait; entries handed between workers; the compiled tier's entries."""

    def __init__(
        self, join: CompletionJoin, handoff: Handoff | None, ledger: CompiledLedger | None = None
    ) -> None:
        self._join = join
        self._handoff = handoff
        self._ledger = ledger

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        join = self._join
        yield GaugeMetricFamily(
            "opsgate_envoy_endings_waiting",
            "Allowed calls whose ending Envoy has not reported yet.",
            value=join.waiting,
        )
        endings = CounterMetricFamily(
            "opsgate_envoy_endings",
            "Allowed calls' records written, by how their ending was known.",
            labels=("how",),
        )
        endings.add_metric(("reported",), join.completed)
        endings.add_metric(("not_reported",), join.not_reported)
        yield endings
        yield CounterMetricFamily(
            "opsgate_envoy_unknown_keys",
            "Access-log entries naming no waiting call (already written, or not ours).",
            value=join.unknown_ids,
        )
        if self._handoff is not None:
            handed = CounterMetricFamily(
                "opsgate_envoy_handoffs",
                "Access-log entries passed to the worker that decided the call.",
                labels=("result",),
            )
            handed.add_metric(("passed",), self._handoff.passed)
            handed.add_metric(("undeliverable",), self._handoff.undeliverable)
            yield handed
        ledger = self._ledger
        if ledger is not None:
            compiled = CounterMetricFamily(
                "opsgate_envoy_compiled_entries",
                "The compiled tier's access-log entries written as records, by what was found.",
                labels=("result",),
            )
            compiled.add_metric(("recorded",), ledger.entries - ledger.unreadable)
            compiled.add_metric(("unreadable",), ledger.unreadable)
            compiled.add_metric(("other_policy",), ledger.mismatched)
            yield compiled
