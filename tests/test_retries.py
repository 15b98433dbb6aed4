"""Retries of a task's own errors (DESIGN §4), driven by a fake clock.

A task whose run raises is run again by its ``RetryPolicy`` (the task's ``retry=`` or
the manager's default) after the policy's backoff delay. While it waits it is RETRYING
and holds no worker and no resource; it is queued again exactly when the clock reaches
the delay. The caller of an exhausted policy gets the last exception object itself.
``stop()`` runs a waiting retry at once (drain); ``kill()`` cancels it. Health retries
(``check_health``/``max_retries``) keep their own meaning beside it.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from typing import Any

import pytest

import tasker
from tasker import RetryPolicy, RetryStrategy, TaskHandle, TaskState
from tasker.testing import FakeClock, Gate, Resource, Resources, wait_until

Manager = tasker.TaskManager[Resource, Any]

LONG = 30.0  # a safety net against hangs, never reached when the test passes
EPSILON = 1 / 1024  # exact in binary, so clock arithmetic stays exact


class Boom(Exception):
    """A task's own error (healthy: the worker stays)."""


class Sick(Exception):
    """An error ``check_health`` rejects: the worker is unhealthy."""


def fixed(delay: float, retries: int = 3, **options: Any) -> RetryPolicy:
    return RetryPolicy(
        max_retries=retries,
        base_delay=delay,
        max_delay=max(delay, 60.0),
        strategy=RetryStrategy.FIXED,
        **options,
    )


IMMEDIATE = RetryPolicy(max_retries=3, strategy=RetryStrategy.IMMEDIATE)


class Flaky:
    """A task that raises a fresh ``error_type`` on its first ``failures`` runs, then
    returns "ok". Keeps every error it raised and the resource of every run."""

    def __init__(self, failures: int, error_type: type[Exception] = Boom) -> None:
        self.failures = failures
        self.error_type = error_type
        self.errors: list[Exception] = []
        self.resources: list[Resource] = []
        self.attempts: list[int] = []

    def __call__(self, resource: Resource) -> str:
        self.resources.append(resource)
        context = tasker.current_task()
        assert context is not None
        self.attempts.append(context.attempt)
        if len(self.errors) < self.failures:
            error = self.error_type(f"run {len(self.resources)} failed")
            self.errors.append(error)
            raise error
        return "ok"


@contextlib.contextmanager
def manager_for(
    res: Resources, clock: FakeClock | None = None, seed: int = 1, **options: Any
) -> Iterator[Manager]:
    """One worker, no bursting, no pool; killed on the way out if the test did not stop it."""
    options.setdefault("burst_interval", None)
    options.setdefault("resource_pool_size", 0)
    options.setdefault("workers", 1)
    manager: Manager = tasker.TaskManager(
        res.create,
        on_destroy=res.destroy,
        clock=clock or FakeClock(),
        rng=random.Random(seed),
        **options,
    )
    try:
        yield manager
    finally:
        manager.kill()


def retrying_after(manager: Manager, handle: TaskHandle[Any], attempts: int) -> Callable[[], bool]:
    """True once ``handle`` ran ``attempts`` times and waits for its next retry.

    ``retrying_tasks`` is checked too: the state turns RETRYING a moment before the
    retry's due time is taken from the clock, and a test must not move the clock then.
    """
    return lambda: (
        handle.attempts == attempts
        and handle.state is TaskState.RETRYING
        and manager.stats().retrying_tasks > 0
    )


def refuses(manager: Manager) -> bool:
    try:
        manager.submit(lambda resource: None).cancel()
    except tasker.ManagerClosed:
        return True
    return False


# -- retry, then success ------------------------------------------------------------------


def test_a_failing_task_is_retried_by_its_policy_and_succeeds(resources: Resources) -> None:
    clock = FakeClock()
    task = Flaky(failures=2)
    with manager_for(resources, clock) as manager:
        handle = manager.submit(task, retry=fixed(1.0))

        wait_until(retrying_after(manager, handle, 1))
        clock.advance(1.0)
        wait_until(retrying_after(manager, handle, 2))
        clock.advance(1.0)

        assert handle.result(timeout=LONG) == "ok"
        assert handle.attempts == 3
        assert task.attempts == [1, 2, 3]
        metrics = manager.metrics()
        assert metrics.total_retried == 2
        assert metrics.total_completed == 1
        assert metrics.total_failed == 0
        info = manager.status(handle.id)
        assert info.state is TaskState.COMPLETED
        assert info.attempts == 3
        assert info.last_error is task.errors[-1]


def test_immediate_retries_need_no_clock_at_all(resources: Resources) -> None:
    task = Flaky(failures=3)
    with manager_for(resources) as manager:
        handle = manager.submit(task, retry=IMMEDIATE)

        assert handle.result(timeout=LONG) == "ok"
        assert handle.attempts == 4
        assert manager.metrics().total_retried == 3


def test_the_retry_runs_on_the_same_healthy_worker(resources: Resources) -> None:
    task = Flaky(failures=2)
    with manager_for(resources) as manager:
        manager.submit(task, retry=IMMEDIATE).result(timeout=LONG)

    assert len(set(task.resources)) == 1
    assert resources.created == 1  # nothing was destroyed or replaced for a retry


# -- waiting for a retry ------------------------------------------------------------------


def test_a_waiting_retry_holds_no_worker_and_no_resource(resources: Resources) -> None:
    clock = FakeClock()
    task = Flaky(failures=1)
    with manager_for(resources, clock) as manager:
        handle = manager.submit(task, retry=fixed(5.0))
        wait_until(retrying_after(manager, handle, 1))

        # The only worker is free: another task runs while the retry waits.
        other = manager.submit(lambda resource: resource)
        assert other.result(timeout=LONG) is task.resources[0]
        wait_until(lambda: manager.stats().busy_workers == 0)
        stats = manager.stats()
        assert stats.retrying_tasks == 1
        assert (stats.queued_tasks, stats.priority_tasks) == (0, 0)
        assert resources.live == 1  # only the worker's own resource
        assert handle.state is TaskState.RETRYING

        clock.advance(5.0)
        assert handle.result(timeout=LONG) == "ok"
        assert manager.stats().retrying_tasks == 0


def test_a_retry_is_queued_exactly_when_the_clock_reaches_its_delay(
    resources: Resources,
) -> None:
    clock = FakeClock()
    task = Flaky(failures=2)
    policy = RetryPolicy(max_retries=2, base_delay=1.0, strategy=RetryStrategy.EXPONENTIAL)
    with manager_for(resources, clock) as manager:
        handle = manager.submit(task, retry=policy)

        for attempts, delay in [(1, 1.0), (2, 2.0)]:
            wait_until(retrying_after(manager, handle, attempts))
            clock.advance(delay - EPSILON)
            # A task due now goes through the same timer heap; once it has run, every
            # entry due before it has been handled, so a retry due too early would have
            # run first on the single worker.
            assert manager.schedule(lambda resource: "probe", 0.0).result(timeout=LONG) == "probe"
            assert handle.state is TaskState.RETRYING
            assert handle.attempts == attempts
            clock.advance(EPSILON)

        assert handle.result(timeout=LONG) == "ok"
        assert handle.attempts == 3


def test_the_jittered_delay_comes_from_the_injected_random_source(
    resources: Resources,
) -> None:
    clock = FakeClock()
    task = Flaky(failures=1)
    policy = RetryPolicy(max_retries=1, base_delay=8.0, max_delay=8.0)  # EXPONENTIAL_JITTER
    expected = policy.delay(1, random.Random(11))
    assert 0.0 < expected < 8.0
    start = clock()
    with manager_for(resources, clock, seed=11) as manager:
        handle = manager.submit(task, retry=policy)
        wait_until(retrying_after(manager, handle, 1))

        clock.set(start + expected - EPSILON)
        assert manager.schedule(lambda resource: "probe", 0.0).result(timeout=LONG) == "probe"
        assert handle.state is TaskState.RETRYING
        clock.set(start + expected)

        assert handle.result(timeout=LONG) == "ok"


def test_retrying_tasks_are_counted_in_stats(resources: Resources) -> None:
    clock = FakeClock()
    tasks = [Flaky(failures=1) for _ in range(3)]
    with manager_for(resources, clock) as manager:
        handles = [manager.submit(task, retry=fixed(10.0)) for task in tasks]

        wait_until(lambda: all(h.state is TaskState.RETRYING for h in handles))
        wait_until(lambda: manager.stats().retrying_tasks == 3)
        clock.advance(10.0)

        assert [h.result(timeout=LONG) for h in handles] == ["ok"] * 3
        assert manager.stats().retrying_tasks == 0


def test_a_waiting_retry_cancelled_by_its_caller_stops_waiting_at_once(
    resources: Resources,
) -> None:
    clock = FakeClock()
    task = Flaky(failures=1)
    with manager_for(resources, clock) as manager:
        handle = manager.submit(task, retry=fixed(60.0))
        wait_until(retrying_after(manager, handle, 1))

        assert handle.cancel() is True

        assert handle.state is TaskState.CANCELLED
        with pytest.raises(CancelledError):
            handle.result(timeout=0)
        wait_until(
            lambda: manager.stats().retrying_tasks == 0 and manager.metrics().total_cancelled == 1
        )
        info = manager.status(handle.id)
        assert info.state is TaskState.CANCELLED
        assert info.finished_at is not None
        clock.advance(60.0)
        assert manager.schedule(lambda resource: "probe", 0.0).result(timeout=LONG) == "probe"
        assert handle.attempts == 1  # the cancelled retry never runs


# -- giving up ----------------------------------------------------------------------------


def test_exhausted_retries_deliver_the_last_exception_object_itself(
    resources: Resources,
) -> None:
    clock = FakeClock()
    task = Flaky(failures=10)
    with manager_for(resources, clock) as manager:
        handle = manager.submit(task, retry=fixed(2.0, retries=2))

        wait_until(retrying_after(manager, handle, 1))
        clock.advance(2.0)
        wait_until(retrying_after(manager, handle, 2))
        clock.advance(2.0)

        with pytest.raises(Boom, match="run 3 failed") as caught:
            handle.result(timeout=LONG)
        assert caught.value is task.errors[-1]
        assert not isinstance(caught.value, tasker.TaskerError)
        assert handle.attempts == 3
        metrics = manager.metrics()
        assert (metrics.total_retried, metrics.total_failed) == (2, 1)
        info = manager.status(handle.id)
        assert info.state is TaskState.FAILED
        assert info.last_error is task.errors[-1]


def test_should_retry_false_fails_the_task_at_once(resources: Resources) -> None:
    asked: list[BaseException] = []

    def only_os_errors(exc: BaseException) -> bool:
        asked.append(exc)
        return isinstance(exc, OSError)

    task = Flaky(failures=5)
    with manager_for(resources) as manager:
        handle = manager.submit(task, retry=fixed(1.0, should_retry=only_os_errors))

        with pytest.raises(Boom, match="run 1 failed") as caught:
            handle.result(timeout=LONG)

        assert caught.value is task.errors[0]
        assert asked == [task.errors[0]]
        assert handle.attempts == 1
        assert manager.metrics().total_retried == 0
        assert manager.stats().retrying_tasks == 0


def test_should_retry_decides_per_error(resources: Resources) -> None:
    clock = FakeClock()
    runs = iter([OSError("disk busy"), ValueError("bad input")])

    def task(resource: Resource) -> str:
        raise next(runs)

    policy = fixed(1.0, should_retry=lambda exc: isinstance(exc, OSError))
    with manager_for(resources, clock) as manager:
        handle = manager.submit(task, retry=policy)
        wait_until(retrying_after(manager, handle, 1))
        clock.advance(1.0)

        with pytest.raises(ValueError, match="bad input"):
            handle.result(timeout=LONG)
        assert handle.attempts == 2


def test_should_retry_raising_is_logged_and_the_task_fails_with_its_own_error(
    resources: Resources, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(exc: BaseException) -> bool:
        raise RuntimeError("should_retry is broken")

    task = Flaky(failures=5)
    with caplog.at_level(logging.WARNING, logger="tasker"), manager_for(resources) as manager:
        handle = manager.submit(task, retry=fixed(1.0, should_retry=broken))

        with pytest.raises(Boom, match="run 1 failed") as caught:
            handle.result(timeout=LONG)

        assert caught.value is task.errors[0]
        assert handle.attempts == 1
        assert manager.metrics().total_retried == 0
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "tasker" and r.levelno == logging.WARNING and "should_retry" in r.getMessage()
    ]
    assert len(warnings) == 1
    assert "should_retry is broken" in warnings[0]
    assert handle.id in warnings[0]


def test_max_retries_zero_runs_the_task_once(resources: Resources) -> None:
    task = Flaky(failures=1)
    with manager_for(resources) as manager:
        handle = manager.submit(task, retry=fixed(1.0, retries=0))

        with pytest.raises(Boom):
            handle.result(timeout=LONG)
        assert handle.attempts == 1


def test_without_a_policy_an_error_is_not_retried(resources: Resources) -> None:
    task = Flaky(failures=1)
    with manager_for(resources) as manager:
        handle = manager.submit(task)

        with pytest.raises(Boom) as caught:
            handle.result(timeout=LONG)
        assert caught.value is task.errors[0]
        assert handle.attempts == 1
        assert manager.metrics().total_retried == 0


# -- the manager's default policy ---------------------------------------------------------


def test_the_managers_default_retry_policy_applies_to_every_task(resources: Resources) -> None:
    tasks = [Flaky(failures=2), Flaky(failures=9)]
    with manager_for(resources, retry=RetryPolicy(max_retries=2, base_delay=0.0)) as manager:
        ok, failing = (manager.submit(task) for task in tasks)

        assert ok.result(timeout=LONG) == "ok"
        with pytest.raises(Boom) as caught:
            failing.result(timeout=LONG)

        assert caught.value is tasks[1].errors[-1]
        assert (ok.attempts, failing.attempts) == (3, 3)
        assert manager.metrics().total_retried == 4


def test_a_tasks_own_policy_overrides_the_managers_default(resources: Resources) -> None:
    default = RetryPolicy(max_retries=1, strategy=RetryStrategy.IMMEDIATE)
    tasks = [Flaky(failures=9), Flaky(failures=9), Flaky(failures=9)]
    with manager_for(resources, retry=default) as manager:
        more = manager.submit(tasks[0], retry=RetryPolicy(max_retries=4, base_delay=0.0))
        none = manager.submit(tasks[1], retry=RetryPolicy(max_retries=0))
        inherited = manager.submit(tasks[2])

        for handle in (more, none, inherited):
            with pytest.raises(Boom):
                handle.result(timeout=LONG)

        assert [more.attempts, none.attempts, inherited.attempts] == [5, 1, 2]


def test_the_default_retry_must_be_a_retry_policy(resources: Resources) -> None:
    with pytest.raises(TypeError, match=r"retry must be a tasker\.RetryPolicy or None"):
        tasker.TaskManager(resources.create, on_destroy=resources.destroy, retry=3)  # type: ignore[arg-type]
    assert resources.created == 0


def test_submit_rejects_a_retry_that_is_not_a_retry_policy(resources: Resources) -> None:
    with manager_for(resources) as manager:
        with pytest.raises(TypeError, match=r"retry must be a tasker\.RetryPolicy or None"):
            manager.submit(lambda resource: None, retry={"max_retries": 3})  # type: ignore[arg-type]
        assert manager.stats().queued_tasks == 0


# -- health retries keep their meaning ----------------------------------------------------


def healthy_unless_sick(exc: BaseException) -> bool:
    return not isinstance(exc, Sick)


def test_health_retries_still_end_in_retries_exhausted(resources: Resources) -> None:
    task = Flaky(failures=9, error_type=Sick)
    policy = RetryPolicy(max_retries=5, strategy=RetryStrategy.IMMEDIATE)
    with manager_for(
        resources, check_health=healthy_unless_sick, max_retries=2, retry=policy
    ) as manager:
        handle = manager.submit(task)

        with pytest.raises(tasker.RetriesExhausted, match=r"max_retries=2") as caught:
            handle.result(timeout=LONG)

        assert caught.value.attempts == 3
        assert caught.value.__cause__ is task.errors[-1]
        assert handle.attempts == 3
        assert len(set(task.resources)) == 3  # a fresh worker for every run
        wait_until(lambda: resources.live == 1)


def test_health_retries_and_policy_retries_both_count_in_attempts(resources: Resources) -> None:
    clock = FakeClock()
    errors: list[Exception] = [Sick("connection lost"), Boom("bad reply")]
    runs = iter(errors)

    def task(resource: Resource) -> str:
        error = next(runs, None)
        if error is not None:
            raise error
        return "ok"

    with manager_for(resources, clock, check_health=healthy_unless_sick, max_retries=3) as manager:
        handle = manager.submit(task, retry=fixed(4.0))

        wait_until(retrying_after(manager, handle, 2))  # the health retry ran at once, then Boom
        clock.advance(4.0)

        assert handle.result(timeout=LONG) == "ok"
        assert handle.attempts == 3
        assert manager.metrics().total_retried == 2
        assert manager.status(handle.id).last_error is errors[1]


# -- shutdown while a retry waits ---------------------------------------------------------


def test_stop_runs_a_waiting_retry_at_once_and_delivers(resources: Resources) -> None:
    clock = FakeClock()
    task = Flaky(failures=1)
    with manager_for(resources, clock) as manager:
        handle = manager.submit(task, retry=fixed(60.0))
        wait_until(retrying_after(manager, handle, 1))

        manager.stop()  # never advances the clock

        assert handle.done()
        assert handle.result(timeout=0) == "ok"
        assert handle.attempts == 2
        assert manager.stats().retrying_tasks == 0
    assert resources.live == 0


def test_stop_runs_every_remaining_retry_without_waiting_then_delivers_the_last_error(
    resources: Resources,
) -> None:
    clock = FakeClock()
    task = Flaky(failures=10)
    with manager_for(resources, clock) as manager:
        handle = manager.submit(task, retry=fixed(60.0, retries=3))
        wait_until(retrying_after(manager, handle, 1))

        manager.stop()

        with pytest.raises(Boom) as caught:
            handle.result(timeout=0)
        assert caught.value is task.errors[-1]
        assert handle.attempts == 4


def test_a_run_failing_while_stopping_is_retried_at_once(resources: Resources) -> None:
    clock, gate = FakeClock(), Gate()
    failures: list[Boom] = []

    def fail_once_after_gate(resource: Resource) -> str:
        if not failures:
            gate(resource)
            failures.append(Boom("failed while stopping"))
            raise failures[0]
        return "ok"

    with manager_for(resources, clock) as manager:
        handle = manager.submit(fail_once_after_gate, retry=fixed(60.0))
        assert gate.started.wait(LONG)
        stopper = threading.Thread(target=manager.stop)
        stopper.start()
        wait_until(lambda: refuses(manager))

        gate.release()
        stopper.join(LONG)

        assert not stopper.is_alive()
        assert handle.result(timeout=0) == "ok"
        assert handle.attempts == 2


def test_kill_cancels_a_waiting_retry(resources: Resources) -> None:
    clock = FakeClock()
    task = Flaky(failures=1)
    with manager_for(resources, clock) as manager:
        handle = manager.submit(task, retry=fixed(60.0))
        wait_until(retrying_after(manager, handle, 1))

        manager.kill()

        assert handle.done()
        assert handle.cancelled()
        with pytest.raises(CancelledError):
            handle.result(timeout=0)
        assert handle.state is TaskState.CANCELLED
        assert handle.attempts == 1
        assert manager.metrics().total_cancelled == 1
        assert manager.stats().retrying_tasks == 0
        assert manager.status(handle.id).state is TaskState.CANCELLED
        clock.advance(60.0)  # the cancelled retry never runs
        assert handle.attempts == 1
    assert resources.live == 0


@pytest.mark.parametrize("shutdown", ["stop", "kill"])
def test_no_handle_is_left_unfinished_by_a_shutdown_with_retries_pending(
    resources: Resources, shutdown: str
) -> None:
    clock, gate = FakeClock(), Gate()
    with manager_for(resources, clock, workers=2) as manager:
        waiting = [manager.submit(Flaky(failures=1), retry=fixed(30.0)) for _ in range(3)]
        for handle in waiting:
            wait_until(retrying_after(manager, handle, 1))
        running = manager.submit(gate)
        assert gate.started.wait(LONG)
        queued = [manager.submit(Flaky(failures=1), retry=fixed(30.0)) for _ in range(3)]
        gate.release()

        getattr(manager, shutdown)()

        handles = [*waiting, running, *queued]
        assert all(h.done() for h in handles)
        if shutdown == "stop":
            assert [h.result(timeout=0) for h in handles] == ["ok"] * 3 + ["released"] + ["ok"] * 3
        else:
            assert all(h.cancelled() for h in waiting)
            assert manager.metrics().total_cancelled >= 3
        assert manager.stats().retrying_tasks == 0
    assert resources.live == 0
