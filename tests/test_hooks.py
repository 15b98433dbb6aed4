"""Lifecycle hooks (DESIGN §4): ``TaskManager(..., hooks=[...])``.

A hook is any object with some of ``on_submit``, ``on_start``, ``on_retry``,
``on_success``, ``on_failure``, ``on_cancel``, each called with the task's ``TaskInfo``.
On the way in (submit, start, retry) hooks run in list order, on the way out (success,
failure, cancel) in reverse. ``on_failure`` fires once, on the final failure; ``on_retry``
once per retry (policy and health retries). A hook that raises is logged at WARNING; the
other hooks still run and the task and its worker never notice.

``on_success``/``on_failure`` run right after the handle is finished, so the tests wait
for the hook's record rather than asserting right after ``result()``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from typing import Any

import pytest

import tasker
from tasker import RetryPolicy, RetryStrategy, TaskInfo, TaskState
from tasker.testing import FakeClock, Gate, Resource, Resources, wait_until

Manager = tasker.TaskManager[Resource, Any]

LONG = 30.0  # a safety net against hangs, never reached when the test passes
IMMEDIATE = RetryPolicy(max_retries=3, strategy=RetryStrategy.IMMEDIATE)


class Boom(Exception):
    """A task's own error (healthy: the worker stays)."""


class Sick(Exception):
    """An error ``check_health`` rejects: the worker is unhealthy."""


class HookFailed(Exception):
    """What a broken hook raises."""


Event = tuple[str, str, TaskInfo]  # (hook label, event, info)


class Journal:
    """Where the recording hooks of one test write, in call order."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def add(self, label: str, event: str, info: TaskInfo) -> None:
        with self._lock:
            self.events.append((label, event, info))

    def of(self, task_id: str) -> list[tuple[str, str]]:
        """(label, event) of every call for ``task_id``, in order."""
        with self._lock:
            return [(label, event) for label, event, info in self.events if info.id == task_id]

    def infos(self, task_id: str, event: str, label: str = "A") -> list[TaskInfo]:
        with self._lock:
            return [
                info
                for lab, ev, info in self.events
                if info.id == task_id and ev == event and lab == label
            ]

    def count(self, task_id: str, event: str) -> int:
        return sum(1 for _, ev in self.of(task_id) if ev == event)

    def has(self, task_id: str, event: str, times: int = 1) -> Callable[[], bool]:
        """For wait_until: every hook saw ``event`` for ``task_id`` ``times`` times."""
        return lambda: self.count(task_id, event) >= 2 * times  # hooks A and B


class Recording:
    """A hook with every method; records each call in a journal."""

    def __init__(self, label: str, journal: Journal) -> None:
        self.label = label
        self.journal = journal

    def on_submit(self, info: TaskInfo) -> None:
        self.journal.add(self.label, "submit", info)

    def on_start(self, info: TaskInfo) -> None:
        self.journal.add(self.label, "start", info)

    def on_retry(self, info: TaskInfo) -> None:
        self.journal.add(self.label, "retry", info)

    def on_success(self, info: TaskInfo) -> None:
        self.journal.add(self.label, "success", info)

    def on_failure(self, info: TaskInfo) -> None:
        self.journal.add(self.label, "failure", info)

    def on_cancel(self, info: TaskInfo) -> None:
        self.journal.add(self.label, "cancel", info)


class Broken:
    """A hook whose every method raises."""

    def __init__(self) -> None:
        self.calls = 0

    def _raise(self, info: TaskInfo) -> None:
        self.calls += 1
        raise HookFailed(f"broken hook, call {self.calls}")

    on_submit = on_start = on_retry = on_success = on_failure = on_cancel = _raise


@contextlib.contextmanager
def manager_for(res: Resources, **options: Any) -> Iterator[Manager]:
    """One worker, no bursting, no pool; killed on the way out if the test did not stop it."""
    options.setdefault("burst_interval", None)
    options.setdefault("resource_pool_size", 0)
    options.setdefault("workers", 1)
    manager: Manager = tasker.TaskManager(res.create, on_destroy=res.destroy, **options)
    try:
        yield manager
    finally:
        manager.kill()


@contextlib.contextmanager
def recorded(res: Resources, **options: Any) -> Iterator[tuple[Manager, Journal]]:
    """A manager with two recording hooks, A then B."""
    journal = Journal()
    hooks = [Recording("A", journal), Recording("B", journal)]
    with manager_for(res, hooks=hooks, **options) as manager:
        yield manager, journal


def hold_worker(manager: Manager) -> Gate:
    """Occupy the only worker, so the next task stays QUEUED until ``release()``."""
    gate = Gate()
    manager.submit(gate)
    assert gate.started.wait(LONG)
    return gate


class Flaky:
    """Raises a fresh ``error_type`` on its first ``failures`` runs, then returns "ok"."""

    def __init__(self, failures: int, error_type: type[Exception] = Boom) -> None:
        self.failures = failures
        self.error_type = error_type
        self.errors: list[Exception] = []

    def __call__(self, resource: Resource) -> str:
        if len(self.errors) < self.failures:
            error = self.error_type(f"run {len(self.errors) + 1} failed")
            self.errors.append(error)
            raise error
        return "ok"


def ok(resource: Resource) -> str:
    return "ok"


IN_ORDER = [("A", "submit"), ("B", "submit"), ("A", "start"), ("B", "start")]


# -- order --------------------------------------------------------------------------------


def test_hooks_run_in_order_on_the_way_in_and_in_reverse_on_success(
    resources: Resources,
) -> None:
    with recorded(resources) as (manager, journal):
        gate = hold_worker(manager)
        handle = manager.submit(ok)
        gate.release()

        assert handle.result(timeout=LONG) == "ok"
        wait_until(journal.has(handle.id, "success"))
        assert journal.of(handle.id) == [*IN_ORDER, ("B", "success"), ("A", "success")]


def test_failure_hooks_run_in_reverse(resources: Resources) -> None:
    with recorded(resources) as (manager, journal):
        gate = hold_worker(manager)
        handle = manager.submit(Flaky(failures=1))
        gate.release()

        with pytest.raises(Boom):
            handle.result(timeout=LONG)
        wait_until(journal.has(handle.id, "failure"))
        assert journal.of(handle.id) == [*IN_ORDER, ("B", "failure"), ("A", "failure")]


def test_retry_hooks_run_in_order_between_the_runs(resources: Resources) -> None:
    with recorded(resources, clock=FakeClock()) as (manager, journal):
        gate = hold_worker(manager)
        handle = manager.submit(Flaky(failures=1), retry=IMMEDIATE)
        gate.release()

        assert handle.result(timeout=LONG) == "ok"
        wait_until(journal.has(handle.id, "success"))
        assert journal.of(handle.id) == [
            *IN_ORDER,
            ("A", "retry"),
            ("B", "retry"),
            ("A", "start"),
            ("B", "start"),
            ("B", "success"),
            ("A", "success"),
        ]


def test_cancel_hooks_run_in_reverse_for_a_task_cancelled_by_kill(resources: Resources) -> None:
    with recorded(resources) as (manager, journal):
        hold_worker(manager)
        handle = manager.submit(ok)

        manager.kill()

        with pytest.raises(CancelledError):
            handle.result(timeout=0)
        assert journal.of(handle.id) == [
            ("A", "submit"),
            ("B", "submit"),
            ("B", "cancel"),
            ("A", "cancel"),
        ]
        (info,) = journal.infos(handle.id, "cancel")
        assert info.state is TaskState.CANCELLED


def test_on_submit_comes_before_on_start_even_when_a_worker_takes_the_task_at_once(
    resources: Resources,
) -> None:
    """The submitting thread may lose the CPU right after queueing the task; an idle
    worker then starts it at once. Its hooks must still see submit first, in QUEUED."""
    journal = Journal()
    started = threading.Event()
    pause = threading.Event()

    class Starts:
        def on_start(self, info: TaskInfo) -> None:
            started.set()

    class SlowArrival(tasker.DefaultCollector):
        """Stands in for the submitter being descheduled after it queued the task."""

        def record_arrival(self) -> None:
            if pause.is_set() and (manager.stats().queued_tasks or manager.stats().busy_workers):
                started.wait(LONG)
            super().record_arrival()

    hooks = [Recording("A", journal), Recording("B", journal), Starts()]
    with manager_for(resources, hooks=hooks, collector=SlowArrival()) as manager:
        pause.set()
        handle = manager.submit(ok)
        pause.clear()

        assert handle.result(timeout=LONG) == "ok"
        wait_until(journal.has(handle.id, "success"))
        assert journal.of(handle.id) == [*IN_ORDER, ("B", "success"), ("A", "success")]
        (info,) = journal.infos(handle.id, "submit")
        assert info.state is TaskState.QUEUED


# -- what the hooks see -------------------------------------------------------------------


def test_each_hook_gets_the_tasks_info_in_the_state_of_the_event(resources: Resources) -> None:
    flaky = Flaky(failures=1)
    failing = Flaky(failures=10)
    policy = RetryPolicy(max_retries=1, strategy=RetryStrategy.IMMEDIATE)
    with recorded(resources, clock=FakeClock()) as (manager, journal):
        gate = hold_worker(manager)
        good = manager.submit(flaky, retry=policy, name="good")
        bad = manager.submit(failing, name="bad")
        gate.release()
        good.result(timeout=LONG)
        with pytest.raises(Boom):
            bad.result(timeout=LONG)
        wait_until(journal.has(good.id, "success"))
        wait_until(journal.has(bad.id, "failure"))

        (submit,) = journal.infos(good.id, "submit")
        assert isinstance(submit, TaskInfo)
        assert (submit.id, submit.name, submit.state) == (good.id, "good", TaskState.QUEUED)
        assert (submit.attempts, submit.started_at, submit.finished_at) == (0, None, None)
        assert submit.submitted_at is not None

        first_start, second_start = journal.infos(good.id, "start")
        assert (first_start.state, first_start.attempts) == (TaskState.RUNNING, 1)
        assert first_start.started_at is not None
        assert first_start.finished_at is None
        assert (second_start.state, second_start.attempts) == (TaskState.RUNNING, 2)

        (retry,) = journal.infos(good.id, "retry")
        assert (retry.state, retry.attempts) == (TaskState.RETRYING, 1)
        assert retry.last_error is flaky.errors[0]

        (success,) = journal.infos(good.id, "success")
        assert (success.state, success.attempts) == (TaskState.COMPLETED, 2)
        assert success.finished_at is not None

        (failure,) = journal.infos(bad.id, "failure")
        assert (failure.id, failure.name, failure.state) == (bad.id, "bad", TaskState.FAILED)
        assert failure.last_error is failing.errors[0]
        assert failure.finished_at is not None


def test_a_task_cancelled_while_queued_gets_on_cancel_once(resources: Resources) -> None:
    with recorded(resources) as (manager, journal):
        gate = hold_worker(manager)
        handle = manager.submit(ok)

        assert handle.cancel()
        gate.release()

        wait_until(journal.has(handle.id, "cancel"))
        manager.stop()
        assert journal.of(handle.id) == [
            ("A", "submit"),
            ("B", "submit"),
            ("B", "cancel"),
            ("A", "cancel"),
        ]
        (info,) = journal.infos(handle.id, "cancel")
        assert info.state is TaskState.CANCELLED


def test_a_cancelled_scheduled_task_gets_on_cancel(resources: Resources) -> None:
    with recorded(resources, clock=FakeClock()) as (manager, journal):
        handle = manager.schedule(ok, 10.0)

        assert handle.cancel()

        wait_until(journal.has(handle.id, "cancel"))
        assert journal.of(handle.id)[-2:] == [("B", "cancel"), ("A", "cancel")]
        assert journal.count(handle.id, "cancel") == 2
        assert journal.count(handle.id, "start") == 0


def test_a_scheduled_task_goes_through_on_submit_before_it_starts(resources: Resources) -> None:
    clock = FakeClock()
    with recorded(resources, clock=clock) as (manager, journal):
        handle = manager.schedule(ok, 5.0)
        clock.advance(5.0)

        assert handle.result(timeout=LONG) == "ok"
        wait_until(journal.has(handle.id, "success"))
        events = journal.of(handle.id)
        assert [e for e in events if e[1] == "submit"] == [("A", "submit"), ("B", "submit")]
        assert events[-4:] == [("A", "start"), ("B", "start"), ("B", "success"), ("A", "success")]


# -- once per retry, once at the end ------------------------------------------------------


def test_on_failure_fires_once_after_the_policy_retries_are_spent(resources: Resources) -> None:
    failing = Flaky(failures=10)
    policy = RetryPolicy(max_retries=2, strategy=RetryStrategy.IMMEDIATE)
    with recorded(resources, clock=FakeClock()) as (manager, journal):
        handle = manager.submit(failing, retry=policy)
        with pytest.raises(Boom, match="run 3 failed"):
            handle.result(timeout=LONG)
        wait_until(journal.has(handle.id, "failure"))
        manager.stop()

        assert journal.count(handle.id, "start") == 2 * 3
        assert journal.count(handle.id, "retry") == 2 * 2
        assert journal.count(handle.id, "failure") == 2 * 1
        assert journal.count(handle.id, "success") == 0
        assert [info.attempts for info in journal.infos(handle.id, "retry")] == [1, 2]
        (final,) = journal.infos(handle.id, "failure")
        assert final.last_error is failing.errors[-1]


def test_health_retries_fire_on_retry_each_time(resources: Resources) -> None:
    sick = Flaky(failures=2, error_type=Sick)
    with recorded(resources, check_health=lambda exc: not isinstance(exc, Sick), max_retries=3) as (
        manager,
        journal,
    ):
        handle = manager.submit(sick)

        assert handle.result(timeout=LONG) == "ok"
        wait_until(journal.has(handle.id, "success"))
        manager.stop()

        assert journal.count(handle.id, "retry") == 2 * 2
        assert journal.count(handle.id, "failure") == 0
        retries = journal.infos(handle.id, "retry")
        assert [(i.state, i.attempts) for i in retries] == [
            (TaskState.RETRYING, 1),
            (TaskState.RETRYING, 2),
        ]
        assert [i.last_error for i in retries] == sick.errors


def test_exhausted_health_retries_fire_on_failure_once(resources: Resources) -> None:
    sick = Flaky(failures=10, error_type=Sick)
    with recorded(resources, check_health=lambda exc: not isinstance(exc, Sick), max_retries=1) as (
        manager,
        journal,
    ):
        handle = manager.submit(sick)

        with pytest.raises(tasker.RetriesExhausted):
            handle.result(timeout=LONG)
        wait_until(journal.has(handle.id, "failure"))
        manager.stop()

        assert journal.count(handle.id, "retry") == 2 * 1
        assert journal.count(handle.id, "failure") == 2 * 1
        (final,) = journal.infos(handle.id, "failure")
        assert final.state is TaskState.FAILED


# -- broken and partial hooks -------------------------------------------------------------


def test_a_raising_hook_is_logged_and_the_others_and_the_task_carry_on(
    resources: Resources, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal()
    broken = Broken()
    hooks = [Recording("A", journal), broken, Recording("B", journal)]
    with (
        caplog.at_level(logging.WARNING, logger="tasker"),
        manager_for(resources, hooks=hooks, clock=FakeClock()) as manager,
    ):
        good = manager.submit(ok)
        retried = manager.submit(Flaky(failures=1), retry=IMMEDIATE)
        bad = manager.submit(Flaky(failures=1))

        assert good.result(timeout=LONG) == "ok"
        assert retried.result(timeout=LONG) == "ok"
        with pytest.raises(Boom):
            bad.result(timeout=LONG)
        wait_until(journal.has(good.id, "success"))
        wait_until(journal.has(retried.id, "success"))
        wait_until(journal.has(bad.id, "failure"))

        gate = hold_worker(manager)
        cancelled = manager.submit(ok)
        manager.kill()
        gate.release()
        assert cancelled.cancelled()

        assert journal.of(good.id) == [*IN_ORDER, ("B", "success"), ("A", "success")]
        assert journal.count(retried.id, "retry") == 2
        assert journal.of(bad.id) == [*IN_ORDER, ("B", "failure"), ("A", "failure")]
        assert journal.of(cancelled.id)[-2:] == [("B", "cancel"), ("A", "cancel")]
        assert resources.created == 1  # the worker was never replaced

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == broken.calls
    assert all("broken hook" in r.getMessage() for r in warnings)
    assert any(good.id in r.getMessage() for r in warnings)


def test_a_raising_on_submit_does_not_fail_the_submit(resources: Resources) -> None:
    class RefusesSubmit:
        def on_submit(self, info: TaskInfo) -> None:
            raise HookFailed("no")

    with manager_for(resources, hooks=[RefusesSubmit()]) as manager:
        assert manager.submit(ok).result(timeout=LONG) == "ok"
        assert [h.result(timeout=LONG) for h in manager.submit_many([ok, ok])] == ["ok", "ok"]
        assert manager.chain(ok).result(timeout=LONG) == "ok"


def test_a_hook_with_only_some_methods_works(resources: Resources) -> None:
    successes: list[TaskInfo] = []

    class OnlySuccess:
        def on_success(self, info: TaskInfo) -> None:
            successes.append(info)

    with manager_for(resources, hooks=[OnlySuccess()]) as manager:
        handle = manager.submit(ok)
        failed = manager.submit(Flaky(failures=1))
        assert handle.result(timeout=LONG) == "ok"
        with pytest.raises(Boom):
            failed.result(timeout=LONG)
        wait_until(lambda: len(successes) == 1)
        manager.stop()

    assert [(i.id, i.state) for i in successes] == [(handle.id, TaskState.COMPLETED)]


@pytest.mark.parametrize(
    ("hooks", "match"),
    [
        ([object()], r"hooks\[0\] has none of the hook methods"),
        ([Broken(), 5], r"hooks\[1\] has none of the hook methods .*\(got 5\)"),
        ([type("OnStartIsData", (), {"on_start": "not callable"})()], r"hooks\[0\]"),
        ("on_start", r"hooks must be a list of hook objects"),
        (None, r"hooks must be a list of hook objects \(got hooks=None\)"),
    ],
    ids=["object", "second-is-int", "data-attribute", "str", "none"],
)
def test_hooks_that_are_not_hook_objects_are_a_type_error(
    resources: Resources, hooks: Any, match: str
) -> None:
    with pytest.raises(TypeError, match=match):
        tasker.TaskManager(resources.create, on_destroy=resources.destroy, hooks=hooks)
    assert resources.created == 0


# -- run_task and chains ------------------------------------------------------------------


def test_run_task_calls_the_start_and_end_hooks_in_the_callers_thread(
    resources: Resources,
) -> None:
    ids: list[str] = []

    def inline(resource: Resource) -> str:
        context = tasker.current_task()
        assert context is not None
        ids.append(context.id)
        return "inline"

    def failing(resource: Resource) -> None:
        context = tasker.current_task()
        assert context is not None
        ids.append(context.id)
        raise Boom("inline failure")

    with recorded(resources) as (manager, journal):
        assert manager.run_task(inline) == "inline"
        with pytest.raises(Boom, match="inline failure"):
            manager.run_task(failing)

        good, bad = ids
        # run_task returns after its hooks ran: nothing to wait for.
        assert journal.of(good)[-4:] == [
            ("A", "start"),
            ("B", "start"),
            ("B", "success"),
            ("A", "success"),
        ]
        assert journal.of(bad)[-4:] == [
            ("A", "start"),
            ("B", "start"),
            ("B", "failure"),
            ("A", "failure"),
        ]
        assert journal.infos(good, "start")[0].state is TaskState.RUNNING
        assert journal.infos(good, "success")[0].state is TaskState.COMPLETED
        assert journal.infos(bad, "failure")[0].state is TaskState.FAILED


def test_every_link_of_a_chain_goes_through_the_hooks(resources: Resources) -> None:
    ids: list[str] = []

    def link(resource: Resource, previous: int = 0) -> int:
        context = tasker.current_task()
        assert context is not None
        ids.append(context.id)
        return previous + 1

    with recorded(resources) as (manager, journal):
        assert manager.chain(link, link).result(timeout=LONG) == 2
        for task_id in ids:
            wait_until(journal.has(task_id, "success"))
        assert len(ids) == 2
        for task_id in ids:
            assert journal.of(task_id) == [*IN_ORDER, ("B", "success"), ("A", "success")]
