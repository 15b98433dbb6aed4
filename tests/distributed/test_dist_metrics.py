"""A distributed worker's broker-side counters on /metrics, scraped over real HTTP."""

from __future__ import annotations

import urllib.request

from app_for_tests import register
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tasker.distributed import App, Broker, WorkerCollector
from tasker.prometheus import serve_metrics
from tasker.testing import wait_until


def test_worker_counters_are_served_with_the_managers_families(broker: Broker) -> None:
    app = register(App(broker, result_ttl=60))
    App(broker).enqueue("not-registered", {})  # will be dead-lettered
    worker = app.worker(workers=2, poll_interval=0.1)
    try:
        assert app.enqueue("add", {"a": 1, "b": 2}).result(timeout=10) == 3
        wait_until(lambda: worker.stats().dead_lettered == 1)
        registry = CollectorRegistry()
        registry.register(WorkerCollector(worker))
        with (
            serve_metrics(worker.manager, registry=registry) as server,
            urllib.request.urlopen(server.url, timeout=5) as response,
        ):
            text = response.read().decode()
    finally:
        worker.stop(timeout=10)

    samples = {
        (s.name, s.labels.get("consumer")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    me = worker.consumer
    assert samples[("tasker_worker_messages_received_total", me)] == 2
    assert samples[("tasker_worker_dead_lettered_total", me)] == 1
    assert samples[("tasker_worker_messages_redelivered_total", me)] == 0
    assert samples[("tasker_worker_broker_errors_total", me)] == 0
    assert samples[("tasker_worker_broker_connected", me)] == 1
    assert ("tasker_tasks_completed_total", None) in samples  # the manager's, beside them
