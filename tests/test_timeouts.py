"""Timeouts (DESIGN §4): ``submit(..., timeout=s)`` limits each run of a task.

At the deadline the task's ``current_task().cancelled`` is set and its caller gets
``TaskTimeout``; the worker stuck in user code is replaced so capacity holds, and when
the stuck call finally returns its outcome is discarded, its resource destroyed and its
thread ends. Time is a ``FakeClock``: the timer fires when the test moves the clock.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import tasker
from tasker import RetryPolicy, RetryStrategy, TaskState
from tasker.testing import FakeClock, Resource, Resources, wait_until

NAME = "timeouts"
LONG = 30.0  # a safety net against hangs, never reached when the test passes

Manager = tasker.TaskManager[Resource, Any]


def make_manager(resources: Resources, clock: FakeClock, **options: Any) -> Manager:
    options.setdefault("burst_interval", None)
    options.setdefault("resource_pool_size", 0)  # count worker resources only
    options.setdefault("name", NAME)
    return tasker.TaskManager(
        resources.create, on_destroy=resources.destroy, clock=clock, **options
    )


@contextlib.contextmanager
def running(resources: Resources, clock: FakeClock, **options: Any) -> Iterator[Manager]:
    """A manager that is killed on the way out if the test did not shut it down."""
    manager = make_manager(resources, clock, **options)
    try:
        yield manager
    finally:
        manager.kill()


def timer_caught_up(manager: Manager) -> None:
    """Return once the timer has handled every entry due at the clock's current time.

    A task scheduled with no delay is due now; the timer runs entries in due order, so
    once it has left SCHEDULED every entry due earlier (a deadline) has been handled.
    """
    probe = manager.schedule(lambda resource: None, 0)
    wait_until(lambda: probe.state is not TaskState.SCHEDULED, message="timer never ran")


class Stuck:
    """A task that blocks until released, ignoring its ``cancelled`` event.

    Released on exit, so a failing test never leaves a worker hanging.
    """

    def __init__(self) -> None:
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.contexts: list[tasker.TaskContext] = []
        self.threads: list[threading.Thread] = []
        self.resources: list[Resource] = []

    def task(self, resource: Resource) -> str:
        context = tasker.current_task()
        assert context is not None
        with self._lock:
            self.contexts.append(context)
            self.threads.append(threading.current_thread())
            self.resources.append(resource)
        self.release.wait(LONG)
        return "late result"

    @property
    def entered(self) -> int:
        return len(self.contexts)

    def wait_entered(self, count: int) -> None:
        wait_until(lambda: self.entered >= count, message=f"{count} stuck runs never started")

    def __enter__(self) -> Stuck:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release.set()


# -- the deadline -------------------------------------------------------------------------


def test_a_run_past_its_timeout_is_cancelled_and_its_caller_gets_task_timeout(
    resources: Resources,
) -> None:
    clock = FakeClock()
    with running(resources, clock) as m, Stuck() as stuck:
        handle = m.submit(stuck.task, timeout=2, name="stuck-job")
        stuck.wait_entered(1)
        context = stuck.contexts[0]

        clock.advance(1.5)
        timer_caught_up(m)
        assert not handle.done()
        assert not context.cancelled.is_set()

        clock.advance(0.5)
        pattern = rf"'stuck-job' \({re.escape(handle.id)}\) timed out after 2(\.0)?s"
        with pytest.raises(tasker.TaskTimeout, match=pattern) as caught:
            handle.result(LONG)

        assert isinstance(caught.value, TimeoutError)
        assert isinstance(caught.value, tasker.TaskerError)
        assert context.cancelled.is_set()
        assert context.id == handle.id
        assert handle.state is TaskState.FAILED
        assert m.status(handle.id).last_error is caught.value
        assert m.metrics().total_timeouts == 1


def test_a_stuck_worker_is_replaced_so_a_new_task_runs_while_it_is_still_blocked(
    resources: Resources,
) -> None:
    clock = FakeClock()
    with running(resources, clock, workers=1) as m, Stuck() as stuck:
        handle = m.submit(stuck.task, timeout=1)
        stuck.wait_entered(1)
        clock.advance(1)
        assert isinstance(handle.exception(LONG), tasker.TaskTimeout)

        def where(resource: Resource) -> tuple[Resource, threading.Thread]:
            return resource, threading.current_thread()

        resource, thread = m.submit(where).result(LONG)

        assert stuck.threads[0].is_alive()  # still blocked in user code
        assert thread is not stuck.threads[0]
        assert resource is not stuck.resources[0]
        stats = m.stats()
        assert stats.active_workers == stats.base_workers == 1
        assert resources.live == 2  # the stuck worker keeps its resource until it returns


def test_a_late_return_is_discarded_and_the_stuck_worker_destroys_its_resource_and_exits(
    resources: Resources,
) -> None:
    clock = FakeClock()
    with running(resources, clock, workers=1) as m, Stuck() as stuck:
        handle = m.submit(stuck.task, timeout=1)
        stuck.wait_entered(1)
        clock.advance(1)
        error = handle.exception(LONG)
        assert isinstance(error, tasker.TaskTimeout)
        completed = m.metrics().total_completed

        stuck.release.set()
        wait_until(lambda: not stuck.threads[0].is_alive(), message="stuck worker never exited")

        assert stuck.resources[0].destroyed
        assert handle.exception(0) is error
        assert handle.state is TaskState.FAILED
        assert m.metrics().total_completed == completed
        assert m.submit(lambda resource: "still serving").result(LONG) == "still serving"
        assert m.stats().active_workers == 1

        m.stop()
        assert resources.created == resources.destroyed == 2


def test_a_run_that_ends_before_its_deadline_is_unaffected_and_its_timer_does_nothing_later(
    resources: Resources,
) -> None:
    clock = FakeClock()
    with running(resources, clock, workers=1) as m, Stuck() as stuck:
        handle = m.submit(lambda resource: threading.current_thread(), timeout=5)
        worker_thread = handle.result(LONG)

        follower = m.submit(stuck.task)  # no timeout, on the same worker
        stuck.wait_entered(1)
        clock.advance(10)  # well past the first task's deadline
        timer_caught_up(m)

        assert handle.state is TaskState.COMPLETED
        assert handle.result(0) is worker_thread
        assert not stuck.contexts[0].cancelled.is_set()
        assert stuck.threads[0] is worker_thread  # the worker was not replaced
        assert not follower.done()
        assert m.metrics().total_timeouts == 0
        assert resources.created == 1


# -- timeouts and retries -------------------------------------------------------------------


def test_a_timed_out_attempt_is_retried_and_a_fast_second_attempt_succeeds(
    resources: Resources,
) -> None:
    clock = FakeClock()
    with running(resources, clock, workers=1) as m, Stuck() as stuck:

        def slow_then_fast(resource: Resource) -> str:
            context = tasker.current_task()
            assert context is not None
            if context.attempt == 1:
                return stuck.task(resource)
            return f"attempt {context.attempt}"

        policy = RetryPolicy(max_retries=2, strategy=RetryStrategy.IMMEDIATE)
        handle = m.submit(slow_then_fast, timeout=1, retry=policy)
        stuck.wait_entered(1)
        clock.advance(1)

        assert handle.result(LONG) == "attempt 2"
        assert stuck.threads[0].is_alive()  # the retry ran while the first run was stuck
        assert handle.attempts == 2
        assert isinstance(m.status(handle.id).last_error, tasker.TaskTimeout)
        metrics = m.metrics()
        assert metrics.total_timeouts == 1
        assert metrics.total_retried == 1

        stuck.release.set()
        wait_until(lambda: not stuck.threads[0].is_alive(), message="stuck worker never exited")
        assert handle.result(0) == "attempt 2"  # the late first run changed nothing


def test_a_task_that_times_out_on_every_attempt_gets_task_timeout_after_its_retries(
    resources: Resources,
) -> None:
    clock = FakeClock()
    with running(resources, clock, workers=1) as m, Stuck() as stuck:
        policy = RetryPolicy(max_retries=1, strategy=RetryStrategy.IMMEDIATE)
        handle = m.submit(stuck.task, timeout=1, retry=policy)
        stuck.wait_entered(1)
        clock.advance(1)
        stuck.wait_entered(2)  # the retry runs on the replacement worker
        assert not handle.done()
        clock.advance(1)

        with pytest.raises(tasker.TaskTimeout, match=re.escape(handle.id)):
            handle.result(LONG)
        assert handle.attempts == 2
        assert [c.attempt for c in stuck.contexts] == [1, 2]
        assert all(c.cancelled.is_set() for c in stuck.contexts)
        assert m.metrics().total_timeouts == 2


def test_a_retry_policy_that_rejects_task_timeout_lets_the_timeout_reach_the_caller(
    resources: Resources,
) -> None:
    clock = FakeClock()
    with running(resources, clock, workers=1) as m, Stuck() as stuck:
        policy = RetryPolicy(
            max_retries=3,
            strategy=RetryStrategy.IMMEDIATE,
            should_retry=lambda exc: not isinstance(exc, tasker.TaskTimeout),
        )
        handle = m.submit(stuck.task, timeout=1, retry=policy)
        stuck.wait_entered(1)
        clock.advance(1)

        with pytest.raises(tasker.TaskTimeout):
            handle.result(LONG)
        assert handle.attempts == 1
        assert m.metrics().total_retried == 0
        assert m.stats().retrying_tasks == 0
        assert stuck.entered == 1


# -- arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeout", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        ("5", TypeError),
        (True, TypeError),
    ],
)
@pytest.mark.parametrize("method", ["submit", "try_submit"])
def test_an_invalid_timeout_is_refused_naming_the_argument(
    resources: Resources, method: str, timeout: Any, error: type[Exception]
) -> None:
    with running(resources, FakeClock()) as m:
        with pytest.raises(
            error, match=rf"timeout must be .*\(got timeout={re.escape(repr(timeout))}\)"
        ):
            getattr(m, method)(lambda resource: None, timeout=timeout)
        assert m.metrics().total_arrived == 0
        assert m.stats().queued_tasks == 0


# -- shutting down with a stuck worker --------------------------------------------------------


def test_stop_waits_for_an_abandoned_stuck_worker_and_its_resource(resources: Resources) -> None:
    clock = FakeClock()
    with running(resources, clock, workers=1) as m, Stuck() as stuck:
        handle = m.submit(stuck.task, timeout=1)
        stuck.wait_entered(1)
        clock.advance(1)
        assert isinstance(handle.exception(LONG), tasker.TaskTimeout)
        replacement = m.submit(lambda resource: threading.current_thread()).result(LONG)

        after_stop: list[bool] = []

        def stop() -> None:
            m.stop()
            after_stop.append(stuck.resources[0].destroyed)

        stopper = threading.Thread(target=stop)
        stopper.start()
        try:
            wait_until(lambda: not replacement.is_alive(), message="replacement never exited")
            assert stopper.is_alive()  # still waiting for the stuck worker
            assert stuck.threads[0].is_alive()
            assert not stuck.resources[0].destroyed
        finally:
            stuck.release.set()
            stopper.join(LONG)

        assert not stopper.is_alive()
        assert after_stop == [True]  # stop() returned only once the stuck resource was gone
        assert not stuck.threads[0].is_alive()
        assert isinstance(handle.exception(0), tasker.TaskTimeout)
        assert resources.created == resources.destroyed == 2


def test_kill_with_a_timeout_leaves_an_abandoned_stuck_worker_to_clean_up_when_it_returns(
    resources: Resources, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tasker")
    clock = FakeClock()
    with running(resources, clock, workers=1) as m, Stuck() as stuck:
        handle = m.submit(stuck.task, timeout=1)
        stuck.wait_entered(1)
        clock.advance(1)
        assert isinstance(handle.exception(LONG), tasker.TaskTimeout)

        m.kill(timeout=0)

        assert stuck.threads[0].is_alive()
        warnings = [r.getMessage() for r in caplog.records if r.msg and "kill" in r.getMessage()]
        assert any(re.search(rf"{re.escape(handle.id)}\b", text) for text in warnings), warnings
        with pytest.raises(tasker.ManagerClosed, match="shutting down"):
            m.submit(lambda resource: None, timeout=1)

        stuck.release.set()
        wait_until(lambda: not stuck.threads[0].is_alive(), message="stuck worker never exited")
        assert stuck.resources[0].destroyed
        assert isinstance(handle.exception(0), tasker.TaskTimeout)

        m.kill()  # no timeout: finish the shutdown
        assert resources.created == resources.destroyed == 2


def test_a_worker_whose_task_obeys_cancellation_at_once_is_still_replaced(
    resources: Resources,
) -> None:
    # The task returns the moment its timeout sets `cancelled`, so the stuck worker may
    # exit before the timer has replaced it; the replacement must come all the same.
    # Repeated: the interleaving differs from run to run.
    clock = FakeClock()
    with running(resources, clock, workers=1, max_workers=1) as m:
        for _ in range(25):

            def obedient(resource: Resource) -> str:
                context = tasker.current_task()
                assert context is not None
                context.cancelled.wait(LONG)
                return "stopped"

            handle = m.submit(obedient, timeout=1.0)
            wait_until(lambda h=handle: h.running())
            clock.advance(1.0)
            with pytest.raises(tasker.TaskTimeout):
                handle.result(LONG)
            assert m.queue_task(lambda r: "next") == "next"  # never stranded, no worker
            wait_until(lambda: m.stats().active_workers == 1)
