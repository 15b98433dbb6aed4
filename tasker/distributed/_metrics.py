"""Prometheus families for a distributed worker's own counters, read at scrape time.

The worker's TaskManager is exported by :class:`tasker.prometheus.TaskerCollector`; this
adds what only the broker side knows: messages received and redelivered, dead letters,
retries published, broker errors, messages held unacknowledged, and whether the broker
answers. Families are prefixed ``tasker_worker_`` and labelled ``worker`` and
``consumer``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from tasker.distributed._worker import Worker

__all__ = ["WorkerCollector"]

_COUNTERS = (
    ("messages_received", "received", "Messages fetched from the broker (redeliveries too)."),
    ("messages_redelivered", "redelivered", "Fetched messages a dead worker had held."),
    ("dead_lettered", "dead_lettered", "Messages sent to the dead-letter stream."),
    ("retries_published", "retried", "Retries published to wait in the broker."),
    ("broker_errors", "broker_errors", "Broker calls that failed (each is retried)."),
)


class WorkerCollector(Collector):
    """Collects one distributed worker's broker-side counters at scrape time.

    Example:
        >>> registry = CollectorRegistry()
        >>> registry.register(WorkerCollector(worker))
        >>> serve_metrics(worker.manager, registry=registry)
    """

    def __init__(self, worker: Worker[Any]) -> None:
        self._worker = worker

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        worker = self._worker
        stats = worker.stats()
        labels = ["worker", "consumer"]
        values = [worker.name, worker.consumer]
        for name, field, doc in _COUNTERS:
            family = CounterMetricFamily(f"tasker_worker_{name}", doc, labels=labels)
            family.add_metric(values, getattr(stats, field))
            yield family
        unacked = GaugeMetricFamily(
            "tasker_worker_messages_unacked",
            "Messages held and not yet acknowledged.",
            labels=labels,
        )
        unacked.add_metric(values, stats.unacked)
        yield unacked
        connected = GaugeMetricFamily(
            "tasker_worker_broker_connected",
            "1 while the broker answers, 0 after a failed call.",
            labels=labels,
        )
        connected.add_metric(values, 1.0 if stats.connected else 0.0)
        yield connected
