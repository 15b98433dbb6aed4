"""Prometheus export: a scrape-time collector and a small ``/metrics`` server.

The collector reads ``stats()`` and ``metrics()`` when Prometheus scrapes, so it adds
nothing to the task path. Every family is prefixed ``tasker_`` and labelled
``manager="<name>"``; counters end in ``_total`` and durations are in seconds.

Example:
    >>> from prometheus_client import CollectorRegistry
    >>> from tasker.prometheus import TaskerCollector, serve_metrics
    >>> registry = CollectorRegistry()
    >>> registry.register(TaskerCollector(manager))        # your own registry
    >>> with serve_metrics(manager, port=9464) as server:  # or a ready server
    ...     print(server.url)
    http://127.0.0.1:9464/metrics
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from tasker._manager import TaskManager

__all__ = ["MetricsServer", "TaskerCollector", "serve_metrics"]

_COUNTERS = (
    ("tasks_arrived", "total_arrived", "Tasks accepted into a queue."),
    ("tasks_completed", "total_completed", "Task runs that returned a result."),
    ("tasks_failed", "total_failed", "Task runs whose error reached the caller."),
    ("tasks_retried", "total_retried", "Task runs queued again after a failure."),
    ("tasks_cancelled", "total_cancelled", "Tasks cancelled before they ran."),
    ("tasks_timed_out", "total_timeouts", "Task runs that passed their timeout."),
)


class TaskerCollector(Collector):
    """Collects the metric families of one or more managers at scrape time.

    Args:
        managers: The managers to export; more can be added with :meth:`add`.
    """

    def __init__(self, *managers: TaskManager[Any, Any]) -> None:
        self._lock = threading.Lock()
        self._managers: list[TaskManager[Any, Any]] = []
        for manager in managers:
            self.add(manager)

    def add(self, manager: TaskManager[Any, Any]) -> None:
        """Export ``manager`` too."""
        if not isinstance(manager, TaskManager):
            raise TypeError(f"manager must be a tasker.TaskManager (got {manager!r})")
        with self._lock:
            self._managers.append(manager)

    def describe(self) -> Iterable[Metric]:
        # Describing by collecting would call every manager at registration; the
        # family names are fixed, so there is nothing to learn from it.
        return []

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            managers = list(self._managers)
        label = ["manager"]
        counters = {
            key: CounterMetricFamily(f"tasker_{name}", doc, labels=label)
            for name, key, doc in _COUNTERS
        }
        workers = GaugeMetricFamily(
            "tasker_workers", "Live workers by kind.", labels=["manager", "kind"]
        )
        busy = GaugeMetricFamily("tasker_busy_workers", "Workers running a task now.", labels=label)
        depth = GaugeMetricFamily(
            "tasker_queue_depth", "Tasks waiting, by queue.", labels=["manager", "queue"]
        )
        waiting = GaugeMetricFamily(
            "tasker_waiting_tasks",
            "Tasks waiting for a time, not a worker: scheduled (not yet due) or retrying "
            "(in backoff).",
            labels=["manager", "reason"],
        )
        resources = GaugeMetricFamily(
            "tasker_available_resources", "Idle resources in the run_task pool.", labels=label
        )
        execution = Metric(
            "tasker_task_execution_seconds",
            "Task run time over the most recent runs.",
            "summary",
        )
        wait = Metric(
            "tasker_task_wait_seconds",
            "Time tasks waited in a queue, over the most recent runs.",
            "summary",
        )
        arrival = GaugeMetricFamily(
            "tasker_task_arrival_rate",
            "Tasks accepted per second over the collector's rate window.",
            labels=label,
        )
        completion = GaugeMetricFamily(
            "tasker_task_completion_rate",
            "Task runs ended per second over the collector's rate window.",
            labels=label,
        )
        for manager in managers:
            name = manager.name
            stats = manager.stats()
            m = manager.metrics()
            for key, family in counters.items():
                family.add_metric([name], getattr(m, key))
            workers.add_metric([name, "base"], stats.active_workers - stats.burst_workers)
            workers.add_metric([name, "burst"], stats.burst_workers)
            busy.add_metric([name], stats.busy_workers)
            depth.add_metric([name, "main"], stats.queued_tasks)
            depth.add_metric([name, "priority"], stats.priority_tasks)
            resources.add_metric([name], stats.available_resources)
            waiting.add_metric([name, "scheduled"], stats.scheduled_tasks)
            waiting.add_metric([name, "retrying"], stats.retrying_tasks)
            for quantile, value in (
                ("0.5", m.p50_execution_time),
                ("0.95", m.p95_execution_time),
                ("0.99", m.p99_execution_time),
            ):
                execution.add_sample(execution.name, {"manager": name, "quantile": quantile}, value)
            for quantile, value in (("0.95", m.p95_wait_time), ("0.99", m.p99_wait_time)):
                wait.add_sample(wait.name, {"manager": name, "quantile": quantile}, value)
            arrival.add_metric([name], m.arrival_rate)
            completion.add_metric([name], m.completion_rate)
        yield from counters.values()
        yield from (workers, busy, depth, waiting, resources, execution, wait)
        yield from (arrival, completion)


class MetricsServer:
    """A running ``/metrics`` HTTP server; close it (or use ``with``) to stop it."""

    def __init__(self, server: Any, thread: threading.Thread, host: str) -> None:
        self._server = server
        self._thread = thread
        self.host = host
        self.port: int = server.server_port
        self._closed = False

    @property
    def url(self) -> str:
        """The address to scrape."""
        host = f"[{self.host}]" if ":" in self.host else self.host  # IPv6 literal
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def serve_metrics(
    *managers: TaskManager[Any, Any],
    port: int = 0,
    host: str = "127.0.0.1",
    registry: CollectorRegistry | None = None,
) -> MetricsServer:
    """Serve ``/metrics`` for ``managers`` on ``host:port`` in a background thread.

    Binds 127.0.0.1 by default (pass ``host="0.0.0.0"`` to expose it); ``port=0``
    picks a free port (see ``.port``). Without ``registry`` a private registry holding
    just these managers is used, never the global one.

    Returns:
        A :class:`MetricsServer`; call ``close()`` when done.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int in 0..65535 (got port={port!r})")
    if registry is None:
        registry = CollectorRegistry(auto_describe=True)
        registry.register(TaskerCollector(*managers))
    elif managers:
        registry.register(TaskerCollector(*managers))
    server = make_server(
        host, port, make_wsgi_app(registry), _server_class(host), handler_class=_QuietHandler
    )
    # Poll for shutdown every 50 ms, not the standard 0.5 s: close() is part of a
    # service's shutdown budget.
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="tasker-metrics-http",
        daemon=True,
    )
    thread.start()
    return MetricsServer(server, thread, host)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes are not worth a stderr line each


def _server_class(host: str) -> type[WSGIServer]:
    """A threaded WSGI server class for ``host``'s address family (IPv4 or IPv6)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Server(ThreadingMixIn, WSGIServer):
        address_family = family
        daemon_threads = True  # a slow scraper never holds up shutdown

    return Server
