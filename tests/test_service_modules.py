"""The ready-made modules: ManagerModule, GeneratorModule, MetricsModule."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest

import tasker
from tasker.testing import Resources, wait_until


@pytest.fixture
def manager_module(
    resources: Resources,
) -> Iterator[tasker.ManagerModule[object, int]]:
    module: tasker.ManagerModule[object, int] = tasker.ManagerModule(
        lambda: tasker.TaskManager(
            resources.create,
            on_destroy=resources.destroy,
            workers=2,
            burst_interval=None,
            name="mod",
        )
    )
    yield module
    module.stop(None)


def test_a_manager_module_builds_its_manager_on_start_and_drains_on_stop(
    manager_module: tasker.ManagerModule[object, int], resources: Resources
) -> None:
    with pytest.raises(RuntimeError, match="module 'manager' is not started"):
        _ = manager_module.manager
    assert resources.created == 0

    manager_module.start()
    assert manager_module.wait_ready(0)
    assert manager_module.manager.stats().active_workers == 2
    assert resources.created == 4  # two workers' resources and two pooled ones
    handles = [manager_module.manager.submit(lambda r, i=i: i) for i in range(10)]
    manager_module.stop(5)

    assert [h.result(0) for h in handles] == list(range(10))
    assert resources.live == 0


def test_a_manager_module_wraps_a_running_manager(resources: Resources) -> None:
    manager: tasker.TaskManager[object, int] = tasker.TaskManager(
        resources.create, on_destroy=resources.destroy
    )
    module = tasker.ManagerModule(manager, name="given")
    assert module.manager is manager
    module.start()
    assert module.wait_ready(0)
    module.stop(5)
    assert resources.live == 0


def test_a_manager_module_that_cannot_drain_in_time_says_what_is_running(
    resources: Resources,
) -> None:
    release = threading.Event()
    module: tasker.ManagerModule[object, None] = tasker.ManagerModule(
        lambda: tasker.TaskManager(
            resources.create, on_destroy=resources.destroy, burst_interval=None, name="slow"
        )
    )
    module.start()
    running = threading.Event()
    module.manager.submit(lambda r: (running.set(), release.wait(10))[-1] and None)
    running.wait(5)
    try:
        with pytest.raises(
            TimeoutError,
            match=r"task manager 'slow' still running 1 task\(s\) on 1 worker\(s\), 0 queued, "
            r"after 0\.05s",
        ):
            module.stop(0.05)
    finally:
        release.set()
        module.manager.stop()


def test_a_manager_factory_must_return_a_manager() -> None:
    module = tasker.ManagerModule(lambda: "not a manager")  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="factory of module 'manager' must return a TaskManager"):
        module.start()
    with pytest.raises(TypeError, match="source must be a TaskManager or a factory"):
        tasker.ManagerModule(42)  # type: ignore[arg-type]


def submit_identity(manager: tasker.TaskManager[object, int], i: int) -> Future[int]:
    return manager.submit(lambda r: i)


def test_a_generator_submits_count_tasks_and_finishes_when_they_have_ended(
    manager_module: tasker.ManagerModule[object, int],
) -> None:
    generator = tasker.GeneratorModule(manager_module, submit_identity, count=20, interval=0.001)
    assert generator.dependencies == ("manager",)
    manager_module.start()
    generator.start()
    assert generator.wait_ready(0)

    assert generator.finished.wait(10)
    assert (generator.submitted, generator.ended, generator.errors) == (20, 20, 0)
    assert manager_module.manager.metrics().total_completed == 20
    generator.stop(5)


def test_an_unbounded_generator_runs_until_stopped(
    manager_module: tasker.ManagerModule[object, int],
) -> None:
    generator = tasker.GeneratorModule(manager_module, submit_identity, interval=0.001)
    manager_module.start()
    generator.start()
    wait_until(lambda: generator.submitted >= 5)
    generator.stop(5)
    count = generator.submitted
    assert not generator.finished.is_set()
    manager_module.stop(5)
    assert generator.submitted == count  # nothing after stop


def test_a_generator_counts_submit_errors_and_keeps_going(
    manager_module: tasker.ManagerModule[object, int],
) -> None:
    def flaky(manager: tasker.TaskManager[object, int], i: int) -> Future[int]:
        if i % 2:
            raise ValueError(f"cannot build task {i}")
        return submit_identity(manager, i)

    generator = tasker.GeneratorModule(manager_module, flaky, count=6, interval=0.001)
    manager_module.start()
    generator.start()
    assert generator.finished.wait(10)
    assert (generator.submitted, generator.errors) == (3, 3)
    generator.stop(5)


def test_a_generator_ends_quietly_when_the_manager_closes(
    manager_module: tasker.ManagerModule[object, int],
) -> None:
    generator = tasker.GeneratorModule(manager_module, submit_identity, interval=0.001)
    manager_module.start()
    generator.start()
    wait_until(lambda: generator.submitted >= 2)
    manager_module.manager.stop()
    generator.stop(5)  # returns: the loop ended on ManagerClosed
    assert generator.errors == 0


def test_a_generator_checks_its_arguments(
    manager_module: tasker.ManagerModule[object, int],
) -> None:
    with pytest.raises(TypeError, match="target must be a ManagerModule"):
        tasker.GeneratorModule("manager", submit_identity)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"count must be >= 0 \(got count=-1\)"):
        tasker.GeneratorModule(manager_module, submit_identity, count=-1)
    with pytest.raises(ValueError, match="interval must be a finite number of seconds > 0"):
        tasker.GeneratorModule(manager_module, submit_identity, interval=0)


def test_the_metrics_module_serves_metrics_while_running(
    manager_module: tasker.ManagerModule[object, int],
) -> None:
    metrics = tasker.MetricsModule(manager_module)
    assert metrics.dependencies == ("manager",)
    manager_module.start()
    metrics.start()
    assert metrics.wait_ready(0)
    try:
        assert metrics.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(metrics.url, timeout=5) as response:
            text = response.read().decode()
        assert 'tasker_workers{kind="base",manager="mod"} 2.0' in text
    finally:
        metrics.stop(5)
    with pytest.raises(OSError):  # the port is closed
        urllib.request.urlopen(metrics.url, timeout=5)


def test_the_metrics_module_checks_its_arguments(
    manager_module: tasker.ManagerModule[Any, Any],
) -> None:
    with pytest.raises(ValueError, match="needs at least one ManagerModule"):
        tasker.MetricsModule()
    with pytest.raises(ValueError, match=r"port must be an int in 0..65535 \(got port=70000\)"):
        tasker.MetricsModule(manager_module, port=70000)
    with pytest.raises(RuntimeError, match="module 'metrics' is not started"):
        _ = tasker.MetricsModule(manager_module).url


def test_the_modules_run_together_under_a_service_runner(resources: Resources) -> None:
    manager: tasker.ManagerModule[object, int] = tasker.ManagerModule(
        lambda: tasker.TaskManager(
            resources.create, on_destroy=resources.destroy, burst_interval=None
        )
    )
    generator = tasker.GeneratorModule(manager, submit_identity, count=10, interval=0.001)
    metrics = tasker.MetricsModule(manager)
    runner = tasker.ServiceRunner([metrics, generator, manager])
    assert [m.name for m in runner.modules] == ["manager", "metrics", "generator"]

    report = runner.run(handle_signals=False)

    assert report.reason == "generator finished"
    assert report.stopped == ("generator", "metrics", "manager")
    assert manager.manager.metrics().total_completed == 10
    assert resources.live == 0
