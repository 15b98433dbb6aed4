"""tasker.prometheus: families read at scrape time, served over real HTTP."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import tasker
from tasker.prometheus import TaskerCollector, serve_metrics
from tasker.testing import Resources, wait_until


@pytest.fixture
def manager(resources: Resources) -> Iterator[tasker.TaskManager[object, int]]:
    m: tasker.TaskManager[object, int] = tasker.TaskManager(
        resources.create,
        on_destroy=resources.destroy,
        workers=2,
        name="orders",
        burst_interval=None,
    )
    try:
        yield m
    finally:
        m.stop()


def _scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def _key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset({"manager": "orders", **labels}.items())


def _boom(_: object) -> int:
    raise ValueError("boom")


def test_scrape_over_http_reports_every_family(manager: tasker.TaskManager[object, int]) -> None:
    for _ in range(5):
        manager.queue_task(lambda r: 1)
    with pytest.raises(ValueError, match="boom"):
        manager.queue_task(_boom)
    release = threading.Event()
    started = threading.Event()

    def blocker(_: object) -> int:
        started.set()
        release.wait()
        return 0

    handles = [manager.submit(blocker), manager.submit(blocker)]
    wait_until(lambda: manager.stats().busy_workers == 2)
    queued = manager.submit(lambda r: 2)
    urgent = manager.submit(lambda r: 3, priority=True)
    try:
        with serve_metrics(manager) as server:
            assert server.url.startswith("http://127.0.0.1:")
            s = _scrape(server.url)
    finally:
        release.set()
    for handle in [*handles, queued, urgent]:
        handle.result(timeout=5)

    assert s[_key("tasker_tasks_arrived_total")] == 10
    assert s[_key("tasker_tasks_completed_total")] == 5
    assert s[_key("tasker_tasks_failed_total")] == 1
    assert s[_key("tasker_tasks_retried_total")] == 0
    assert s[_key("tasker_tasks_cancelled_total")] == 0
    assert s[_key("tasker_workers", kind="base")] == 2
    assert s[_key("tasker_workers", kind="burst")] == 0
    assert s[_key("tasker_busy_workers")] == 2
    assert s[_key("tasker_queue_depth", queue="main")] == 1
    assert s[_key("tasker_queue_depth", queue="priority")] == 1
    assert s[_key("tasker_available_resources")] == 2
    for q in ("0.5", "0.95", "0.99"):
        assert s[_key("tasker_task_execution_seconds", quantile=q)] >= 0
    for q in ("0.95", "0.99"):
        assert s[_key("tasker_task_wait_seconds", quantile=q)] >= 0
    assert s[_key("tasker_task_arrival_rate")] > 0
    assert s[_key("tasker_task_completion_rate")] > 0


def test_collector_registers_in_any_registry_and_reads_at_scrape_time(
    manager: tasker.TaskManager[object, int],
) -> None:
    registry = CollectorRegistry()
    registry.register(TaskerCollector(manager))
    before = generate_latest(registry).decode()
    assert 'tasker_tasks_completed_total{manager="orders"} 0.0' in before
    manager.queue_task(lambda r: 1)
    after = generate_latest(registry).decode()
    assert 'tasker_tasks_completed_total{manager="orders"} 1.0' in after


def test_one_collector_exports_several_managers(
    manager: tasker.TaskManager[object, int],
) -> None:
    other: tasker.TaskManager[object, int] = tasker.TaskManager(
        object, name="billing", burst_interval=None
    )
    try:
        other.queue_task(lambda r: 1)
        registry = CollectorRegistry()
        collector = TaskerCollector(manager)
        collector.add(other)
        registry.register(collector)
        text = generate_latest(registry).decode()
    finally:
        other.stop()
    assert 'tasker_tasks_completed_total{manager="billing"} 1.0' in text
    assert 'tasker_tasks_completed_total{manager="orders"} 0.0' in text


def test_server_close_releases_the_port_and_is_idempotent(
    manager: tasker.TaskManager[object, int],
) -> None:
    server = serve_metrics(manager)
    url = server.url
    server.close()
    server.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)


def test_bad_arguments_are_refused(manager: tasker.TaskManager[object, int]) -> None:
    with pytest.raises(ValueError, match=r"port must be an int in 0\.\.65535"):
        serve_metrics(manager, port=70000)
    with pytest.raises(TypeError, match=r"manager must be a tasker\.TaskManager"):
        TaskerCollector("orders")  # type: ignore[arg-type]


def test_server_binds_ipv6_loopback_when_asked(manager: tasker.TaskManager[object, int]) -> None:
    try:
        server = serve_metrics(manager, host="::1")
    except OSError as exc:  # pragma: no cover - a host without IPv6
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with server:
        assert server.url == f"http://[::1]:{server.port}/metrics"
        assert _key("tasker_busy_workers") in _scrape(server.url)
