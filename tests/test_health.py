"""Health (DESIGN §3): unhealthy workers are destroyed and replaced, tasks re-run.

``check_health(exc)`` returning False marks the worker that raised ``exc`` unhealthy:
its resource is destroyed, a fresh worker takes its place (the worker count never
shrinks), and the task goes back to the front of the queue while it has retries left.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import Any

import pytest

import tasker
from tasker.testing import Resource, Resources, wait_until


class Sick(Exception):
    """An error that ``check_health`` judges unhealthy."""


class Mild(Exception):
    """An error that ``check_health`` judges healthy: the task's own fault."""


def healthy_unless_sick(exc: BaseException) -> bool:
    return not isinstance(exc, Sick)


def make(res: Resources, **options: Any) -> tasker.TaskManager[Resource, Any]:
    """A manager without bursting or a run_task pool, so every on_create is a worker's."""
    options.setdefault("burst_interval", None)
    options.setdefault("resource_pool_size", 0)
    options.setdefault("check_health", healthy_unless_sick)
    return tasker.TaskManager(res.create, on_destroy=res.destroy, **options)


class SickUntil:
    """A task that raises ``Sick`` on its first ``failures`` runs, then returns "ok".

    Records the resource of every run and the error it raised.
    """

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.used: list[Resource] = []
        self.errors: list[Sick] = []

    def __call__(self, resource: Resource) -> str:
        self.used.append(resource)
        if len(self.used) <= self.failures:
            error = Sick(f"connection lost on run {len(self.used)}")
            self.errors.append(error)
            raise error
        return "ok"


def warnings_from_tasker(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "tasker" and r.levelno == logging.WARNING and text in r.getMessage()
    ]


# -- the worker ---------------------------------------------------------------------------


def test_unhealthy_worker_is_destroyed_and_replaced_so_the_worker_count_never_shrinks(
    resources: Resources,
) -> None:
    started, go = threading.Event(), threading.Event()
    sick: list[Resource] = []

    def fail_once(resource: Resource) -> str:
        if not sick:
            sick.append(resource)
            started.set()
            go.wait()
            raise Sick("connection lost")
        return "ok"

    with make(resources, workers=2) as m:
        assert m.stats().active_workers == 2
        originals = list(resources.made)
        handle = m.submit(fail_once)
        assert started.wait(10)
        counts: list[int] = []

        def replaced() -> bool:
            counts.append(m.stats().active_workers)
            return handle.done() and sick[0].destroyed and counts[-1] == 2

        go.set()
        wait_until(replaced)

        assert handle.result() == "ok"
        assert min(counts) >= 2, f"worker count shrank: {counts}"
        assert resources.destroyed_list == sick
        # The replacement made a fresh resource in its own, new thread.
        assert resources.created == 3
        fresh = resources.made[2]
        assert fresh not in originals
        assert not fresh.destroyed
        assert fresh.thread not in {r.thread for r in originals}
        assert m.stats().active_workers == 2
    assert resources.created == resources.destroyed == 3


def test_unhealthy_task_is_rerun_on_a_fresh_worker_until_it_succeeds(
    resources: Resources,
) -> None:
    task = SickUntil(failures=2)
    with make(resources, workers=1, max_retries=3) as m:
        handle = m.submit(task)
        assert handle.result(timeout=10) == "ok"
        assert handle.attempts == 3
        # Every run had a different resource; the two sick ones were destroyed.
        assert len({id(r) for r in task.used}) == 3
        wait_until(lambda: task.used[0].destroyed and task.used[1].destroyed)
        assert not task.used[2].destroyed
        wait_until(lambda: m.stats().active_workers == 1)
    assert resources.created == resources.destroyed == 3


def test_task_that_stays_unhealthy_gets_retries_exhausted_from_the_last_error(
    resources: Resources,
) -> None:
    task = SickUntil(failures=100)
    with make(resources, workers=1, max_retries=2) as m:
        handle = m.submit(task)
        with pytest.raises(tasker.RetriesExhausted, match=r"unhealthy worker 3 times") as info:
            handle.result(timeout=10)
        assert info.value.attempts == 3
        assert handle.attempts == 3
        assert len(task.errors) == 3
        assert info.value.__cause__ is task.errors[-1]
        # The worker that failed last is replaced too.
        wait_until(lambda: m.stats().active_workers == 1 and resources.destroyed == 3)
        assert m.queue_task(lambda r: r.number) == 4
    assert resources.created == resources.destroyed == 4


def test_max_retries_zero_never_reruns_the_task(resources: Resources) -> None:
    task = SickUntil(failures=1)
    with make(resources, workers=1, max_retries=0) as m:
        with pytest.raises(tasker.RetriesExhausted, match=r"max_retries=0") as info:
            m.queue_task(task)
        assert info.value.attempts == 1
        assert info.value.__cause__ is task.errors[0]
        assert len(task.used) == 1
        wait_until(lambda: m.stats().active_workers == 1 and task.used[0].destroyed)
    assert resources.created == resources.destroyed == 2


ONCE_ENTRY_POINTS: dict[str, Callable[[tasker.TaskManager[Resource, Any], SickUntil], Any]] = {
    "queue_task_once": lambda m, fn: m.queue_task_once(fn),
    "queue_task_with_priority_once": lambda m, fn: m.queue_task_with_priority_once(fn),
    "submit_once": lambda m, fn: m.submit(fn, once=True).result(timeout=10),
    "submit_priority_once": lambda m, fn: m.submit(fn, priority=True, once=True).result(timeout=10),
}


@pytest.mark.parametrize("entry", ONCE_ENTRY_POINTS.values(), ids=ONCE_ENTRY_POINTS.keys())
def test_once_task_is_never_rerun_and_raises_the_original_error(
    resources: Resources,
    entry: Callable[[tasker.TaskManager[Resource, Any], SickUntil], Any],
) -> None:
    task = SickUntil(failures=1)  # a re-run would succeed
    with make(resources, workers=1, max_retries=3) as m:
        with pytest.raises(Sick, match="connection lost on run 1") as info:
            entry(m, task)
        assert info.value is task.errors[0]
        assert len(task.used) == 1
        # The worker was still unhealthy: destroyed and replaced.
        wait_until(lambda: m.stats().active_workers == 1 and task.used[0].destroyed)
        assert m.queue_task(lambda r: r.number) == 2
        assert m.metrics().total_retried == 0
    assert resources.created == resources.destroyed == 2


def test_healthy_error_goes_to_the_caller_and_the_worker_keeps_its_resource(
    resources: Resources,
) -> None:
    error = Mild("bad input")

    def fail(resource: Resource) -> None:
        raise error

    with make(resources, workers=1, max_retries=3) as m:
        (worker_resource,) = resources.made
        handle = m.submit(fail)
        with pytest.raises(Mild, match="bad input") as info:
            handle.result(timeout=10)
        assert info.value is error
        assert handle.attempts == 1
        assert m.queue_task(lambda r: r) is worker_resource
        assert resources.created == 1
        assert resources.destroyed == 0
        assert m.stats().active_workers == 1
        assert m.metrics().total_retried == 0
    assert resources.created == resources.destroyed == 1


def test_without_check_health_every_error_is_the_tasks_own(resources: Resources) -> None:
    task = SickUntil(failures=1)
    with make(resources, workers=1, check_health=None) as m:
        (worker_resource,) = resources.made
        handle = m.submit(task)
        with pytest.raises(Sick, match="connection lost on run 1") as info:
            handle.result(timeout=10)
        assert info.value is task.errors[0]
        assert handle.attempts == 1
        assert len(task.used) == 1
        assert m.queue_task(lambda r: r) is worker_resource
        assert resources.created == 1
        assert resources.destroyed == 0
        assert m.metrics().total_retried == 0
    assert resources.created == resources.destroyed == 1


def test_check_health_that_raises_counts_as_unhealthy_and_is_logged(
    resources: Resources, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_probe(exc: BaseException) -> bool:
        raise RuntimeError("health probe broken")

    task = SickUntil(failures=1)
    with (
        caplog.at_level(logging.WARNING, logger="tasker"),
        make(resources, workers=1, check_health=broken_probe) as m,
    ):
        handle = m.submit(task)
        assert handle.result(timeout=10) == "ok"
        assert handle.attempts == 2
        assert task.used[0] is not task.used[1]
        wait_until(lambda: task.used[0].destroyed and m.stats().active_workers == 1)
    logged = warnings_from_tasker(caplog, "health probe broken")
    assert logged, "check_health raising was not logged at WARNING"
    assert "connection lost on run 1" in logged[0]


def test_replacement_retries_a_failing_on_create_with_backoff_and_logs_each_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Call 1 is the base worker; calls 2 and 3 are the replacement's failed attempts.
    res = Resources(fail_creates={2, 3})
    task = SickUntil(failures=1)
    with caplog.at_level(logging.WARNING, logger="tasker"), make(res, workers=1) as m:
        handle = m.submit(task)
        assert handle.result(timeout=10) == "ok"
        assert task.used[1].number == 4
        assert m.stats().active_workers == 1
        # Still usable afterwards.
        assert m.queue_task(lambda r: r.number) == 4
        assert m.submit(lambda r: "later").result(timeout=10) == "later"
    assert res.created == res.destroyed == 2
    failures = warnings_from_tasker(caplog, "on_create failed")
    assert len(failures) == 2, failures
    assert "call 2" in failures[0]
    assert "call 3" in failures[1]
    delays = [float(re.findall(r"(\d+(?:\.\d+)?)\s*s\b", text)[-1]) for text in failures]
    assert delays[0] > 0
    assert delays[1] > delays[0], f"no backoff: {delays}"


def test_on_destroy_error_of_a_sick_worker_is_logged_and_never_reaches_a_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    res = Resources(fail_destroys=True)
    task = SickUntil(failures=1)
    with caplog.at_level(logging.WARNING, logger="tasker"):
        m = make(res, workers=1)
        try:
            assert m.queue_task(task) == "ok"
            wait_until(lambda: task.used[0].destroyed)
            assert m.queue_task(lambda r: r.number) == 2
        finally:
            m.stop()  # every destroy raises here too: still no error
    assert res.created == res.destroyed == 2
    assert len(warnings_from_tasker(caplog, "cannot close")) == 2


def test_retried_task_runs_before_tasks_already_waiting(resources: Resources) -> None:
    started, go = threading.Event(), threading.Event()
    order: list[str] = []

    def flaky(resource: Resource) -> str:
        order.append("flaky")
        if len(order) == 1:
            started.set()
            go.wait()
            raise Sick("connection lost")
        return "flaky"

    def record(name: str) -> Callable[[Resource], str]:
        def run(resource: Resource) -> str:
            order.append(name)
            return name

        return run

    with make(resources, workers=1) as m:
        first = m.submit(flaky)
        assert started.wait(10)
        waiting = [m.submit(record("main")), m.submit(record("priority"), priority=True)]
        assert m.stats().queued_tasks == 1
        assert m.stats().priority_tasks == 1
        go.set()
        assert first.result(timeout=10) == "flaky"
        assert [h.result(timeout=10) for h in waiting] == ["main", "priority"]
    assert order == ["flaky", "flaky", "priority", "main"]


def test_total_retried_counts_health_retries(resources: Resources) -> None:
    with make(resources, workers=1, max_retries=2) as m:
        assert m.queue_task(SickUntil(failures=1)) == "ok"
        with pytest.raises(tasker.RetriesExhausted):
            m.queue_task(SickUntil(failures=100))
        metrics = m.metrics()
        assert metrics.total_retried == 1 + 2
        assert metrics.total_completed == 1
        assert metrics.total_failed == 1
        assert metrics.total_arrived == 2
    # 1 base worker + one replacement per unhealthy run (1 + 3).
    assert resources.created == resources.destroyed == 5
