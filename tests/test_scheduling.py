"""Scheduling (DESIGN §4): delayed, timed, recurring and cron tasks on one timer thread.

A scheduled task has one id from ``schedule`` to its end and waits in state SCHEDULED
until due; a recurring ``Schedule`` submits each run as its own task, never overlapping
itself unless asked and never replaying missed runs in a burst. ``stop()`` ends
schedules and cancels what is not due yet, then drains the queue; ``kill()`` cancels
everything. Time is a ``FakeClock``: the timer fires when the test moves the clock.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import math
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

import tasker
from tasker import TaskState
from tasker.testing import FakeClock, Resource, Resources, wait_until

NAME = "sched"
LONG = 30.0  # a safety net against hangs, never reached when the test passes
START = 1000.0  # FakeClock's default start
TOLERANCE = timedelta(milliseconds=1)  # float rounding of wall times, not a timing threshold

Manager = tasker.TaskManager[Resource, Any]


def make_manager(resources: Resources, clock: FakeClock, **options: Any) -> Manager:
    options.setdefault("burst_interval", None)
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

    A task scheduled with no delay is due now; the timer runs entries in due order (and
    one at a time), so once it has left SCHEDULED every entry due earlier has been
    handled completely.
    """
    probe = manager.schedule(lambda resource: None, 0)
    wait_until(lambda: probe.state is not TaskState.SCHEDULED, message="timer never ran")


def wall(manager: Manager, t: float) -> datetime:
    """The aware UTC datetime of clock time ``t``."""
    return datetime.fromtimestamp(manager._to_wall(t), tz=UTC)


def timer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"{NAME}-timer" and t.is_alive()]


class Runs:
    """A job that records the id of every run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ids: list[str] = []

    def job(self, resource: Resource) -> int:
        context = tasker.current_task()
        assert context is not None
        with self._lock:
            self.ids.append(context.id)
            return len(self.ids)


class Gate:
    """Runs that hold their worker until the gate opens; it opens on exit, always."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self._lock = threading.Lock()
        self.entered = 0

    def task(self, resource: Resource) -> str:
        with self._lock:
            self.entered += 1
        self.opened.wait(LONG)
        return "gate"

    def wait_entered(self, count: int) -> None:
        wait_until(lambda: self.entered >= count, message=f"{count} gate runs never started")

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.opened.set()


def noop(resource: Resource) -> None:
    return None


def numbered(number: int, resource: Resource) -> int:
    return number


def next_run(schedule: tasker.Schedule) -> datetime | None:
    """The schedule's next due time (read afresh: cancel() changes it)."""
    return schedule.next_run


def last_run(schedule: tasker.Schedule) -> tasker.TaskHandle[Any]:
    """The schedule's latest run (read afresh: it changes on the timer thread)."""
    last = schedule.last
    assert last is not None, "the schedule has not run yet"
    return last


# -- one-off scheduled tasks ---------------------------------------------------------------


def test_schedule_returns_a_scheduled_handle_that_keeps_its_id_and_is_queued_when_due(
    resources: Resources,
) -> None:
    clock = FakeClock(START)
    runs = Runs()
    with running(resources, clock) as m:
        handle = m.schedule(runs.job, 10, name="delayed")
        task_id = handle.id

        assert handle.state is TaskState.SCHEDULED
        assert m.status(task_id).state is TaskState.SCHEDULED
        assert m.status(task_id).name == "delayed"
        assert m.stats().scheduled_tasks == 1

        clock.set(START + 9.5)
        timer_caught_up(m)
        assert handle.state is TaskState.SCHEDULED
        assert runs.ids == []
        assert m.stats().scheduled_tasks == 1

        clock.set(START + 10)
        assert handle.result(LONG) == 1
        assert handle.id == task_id
        assert runs.ids == [task_id]
        assert m.status(task_id).state is TaskState.COMPLETED
        assert m.stats().scheduled_tasks == 0


def test_schedule_at_an_aware_datetime_queues_the_task_at_that_time(
    resources: Resources,
) -> None:
    clock = FakeClock(START)
    runs = Runs()
    with running(resources, clock) as m:
        plus_five = timezone(timedelta(hours=5))
        when = datetime.fromtimestamp(m._to_wall(START + 30), tz=plus_five)
        handle = m.schedule_at(runs.job, when)
        assert handle.state is TaskState.SCHEDULED

        clock.set(START + 29.5)
        timer_caught_up(m)
        assert handle.state is TaskState.SCHEDULED

        clock.set(START + 30.001)
        assert handle.result(LONG) == 1
        assert runs.ids == [handle.id]


def test_schedule_at_a_unix_timestamp_queues_the_task_at_that_time(
    resources: Resources,
) -> None:
    clock = FakeClock(START)
    runs = Runs()
    with running(resources, clock) as m:
        handle = m.schedule_at(runs.job, m._to_wall(START + 20))
        assert handle.state is TaskState.SCHEDULED

        clock.set(START + 19.5)
        timer_caught_up(m)
        assert handle.state is TaskState.SCHEDULED

        clock.set(START + 20.001)
        assert handle.result(LONG) == 1


@pytest.mark.parametrize(
    "past",
    [
        pytest.param(lambda: datetime.now(UTC) - timedelta(hours=1), id="datetime"),
        pytest.param(lambda: time.time() - 3600, id="timestamp"),
    ],
)
def test_schedule_at_a_past_time_runs_the_task_at_once(
    resources: Resources, past: Callable[[], datetime | float]
) -> None:
    clock = FakeClock(START)
    with running(resources, clock) as m:
        handle = m.schedule_at(lambda resource: "now", past())
        assert handle.result(LONG) == "now"  # the clock never moved
        assert clock() == START


def test_schedule_at_a_naive_datetime_is_refused_because_its_zone_is_unknown(
    resources: Resources,
) -> None:
    with running(resources, FakeClock(START)) as m:
        with pytest.raises(ValueError, match="timezone-aware"):
            m.schedule_at(noop, datetime.now() + timedelta(minutes=1))
        assert m.stats().scheduled_tasks == 0
        assert m.metrics().total_arrived == 0


def test_a_cancelled_scheduled_task_never_runs(resources: Resources) -> None:
    clock = FakeClock(START)
    runs = Runs()
    with running(resources, clock) as m:
        handle = m.schedule(runs.job, 10)

        assert handle.cancel()

        assert handle.state is TaskState.CANCELLED
        assert m.stats().scheduled_tasks == 0
        clock.set(START + 100)
        timer_caught_up(m)
        assert runs.ids == []
        assert m.status(handle.id).state is TaskState.CANCELLED
        with pytest.raises(concurrent.futures.CancelledError):
            handle.result(0)


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda m: m.schedule(noop, -1), "delay"),
        (lambda m: m.schedule(noop, math.nan), "delay"),
        (lambda m: m.schedule_recurring(noop, 0), "interval"),
        (lambda m: m.schedule_recurring(noop, -5), "interval"),
    ],
)
def test_an_invalid_delay_or_interval_is_refused_naming_the_argument(
    resources: Resources, call: Callable[[Manager], object], argument: str
) -> None:
    with running(resources, FakeClock(START)) as m:
        with pytest.raises(ValueError, match=rf"{argument} must be"):
            call(m)
        assert m.stats().scheduled_tasks == 0


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda m: m.schedule(noop, 1, prio=True), id="schedule"),
        pytest.param(lambda m: m.schedule_at(noop, time.time() + 60, prio=True), id="at"),
        pytest.param(lambda m: m.schedule_recurring(noop, 1, prio=True), id="recurring"),
        pytest.param(lambda m: m.schedule_cron(noop, "* * * * *", prio=True), id="cron"),
    ],
)
def test_an_unknown_option_is_refused_with_a_type_error(
    resources: Resources, call: Callable[[Manager], object]
) -> None:
    with running(resources, FakeClock(START)) as m:
        with pytest.raises(TypeError, match=r"unexpected option\(s\) prio"):
            call(m)
        assert m.stats().scheduled_tasks == 0


# -- recurring schedules -------------------------------------------------------------------


def test_a_recurring_schedule_runs_each_interval_as_a_new_task_until_cancelled(
    resources: Resources,
) -> None:
    clock = FakeClock(START)
    runs = Runs()
    with running(resources, clock) as m:
        schedule = m.schedule_recurring(runs.job, 5)

        assert isinstance(schedule, tasker.Schedule)
        assert schedule.runs == 0
        assert schedule.last is None
        assert schedule.next_run == wall(m, START + 5)  # one interval after creation
        assert schedule.next_run.utcoffset() == timedelta(0)

        clock.set(START + 4.5)
        timer_caught_up(m)
        assert schedule.runs == 0

        clock.set(START + 5)
        timer_caught_up(m)
        assert schedule.runs == 1
        first = last_run(schedule)
        assert first.result(LONG) == 1
        assert schedule.next_run == wall(m, START + 10)

        clock.set(START + 10)
        timer_caught_up(m)
        assert schedule.runs == 2
        second = last_run(schedule)
        assert second is not first
        assert second.result(LONG) == 2
        assert schedule.next_run == wall(m, START + 15)
        assert runs.ids == [first.id, second.id]
        assert first.id != second.id

        schedule.cancel()

        assert next_run(schedule) is None
        clock.set(START + 30)
        timer_caught_up(m)
        assert schedule.runs == 2
        assert runs.ids == [first.id, second.id]


def test_a_run_due_while_the_previous_run_is_still_running_is_skipped(
    resources: Resources,
) -> None:
    clock = FakeClock(START)
    with running(resources, clock, workers=2) as m, Gate() as gate:
        schedule = m.schedule_recurring(gate.task, 5)
        clock.set(START + 5)
        gate.wait_entered(1)
        first = last_run(schedule)

        clock.set(START + 10)
        timer_caught_up(m)

        assert schedule.runs == 1
        assert schedule.last is first
        assert gate.entered == 1
        assert schedule.next_run == wall(m, START + 15)

        gate.opened.set()
        assert first.result(LONG) == "gate"
        clock.set(START + 15)
        timer_caught_up(m)
        assert schedule.runs == 2
        assert schedule.last is not first


def test_with_overlap_a_run_due_while_the_previous_one_runs_is_not_skipped(
    resources: Resources,
) -> None:
    clock = FakeClock(START)
    with running(resources, clock, workers=2) as m, Gate() as gate:
        schedule = m.schedule_recurring(gate.task, 5, overlap=True)
        clock.set(START + 5)
        gate.wait_entered(1)
        first = last_run(schedule)

        clock.set(START + 10)
        gate.wait_entered(2)  # both runs at once, on the two workers

        assert schedule.runs == 2
        second = last_run(schedule)
        assert second is not first
        gate.opened.set()
        assert [first.result(LONG), second.result(LONG)] == ["gate", "gate"]


@pytest.mark.parametrize("overlap", [False, True])
def test_missed_runs_are_not_replayed_in_a_burst(resources: Resources, overlap: bool) -> None:
    clock = FakeClock(START)
    runs = Runs()
    with running(resources, clock) as m:
        # With overlap=True a replayed burst cannot hide behind the no-overlap rule.
        schedule = m.schedule_recurring(runs.job, 5, overlap=overlap)

        clock.set(START + 50)  # ten intervals at once
        timer_caught_up(m)

        assert schedule.runs == 1
        assert last_run(schedule).result(LONG) == 1
        assert len(runs.ids) == 1
        assert schedule.next_run == wall(m, START + 55)
        assert schedule.next_run > wall(m, clock())

        clock.set(START + 55)
        timer_caught_up(m)
        assert schedule.runs == 2


# -- cron ------------------------------------------------------------------------------------


def test_a_cron_schedule_runs_on_its_five_minute_boundaries(resources: Resources) -> None:
    clock = FakeClock(START)
    runs = Runs()
    with running(resources, clock) as m:
        schedule = m.schedule_cron(runs.job, "*/5 * * * *")

        now_wall = m._to_wall(clock())
        boundary = (math.floor(now_wall / 300) + 1) * 300  # the next multiple of 5 minutes
        expected = datetime.fromtimestamp(boundary, tz=UTC)
        assert expected.minute % 5 == 0
        assert expected.second == 0
        assert schedule.next_run is not None
        assert schedule.next_run.utcoffset() == timedelta(0)
        assert abs(schedule.next_run - expected) <= TOLERANCE

        due = START + (boundary - now_wall)
        clock.set(max(clock(), due - 0.5))
        timer_caught_up(m)
        assert schedule.runs == 0

        clock.set(due + 0.001)
        timer_caught_up(m)
        assert schedule.runs == 1
        assert last_run(schedule).result(LONG) == 1
        assert abs(schedule.next_run - (expected + timedelta(minutes=5))) <= TOLERANCE


@pytest.mark.parametrize(
    ("expr", "reason"),
    [("*/5 * * *", "Wrong number of fields"), ("61 * * * *", "Bad minute")],
)
def test_an_invalid_cron_expression_raises_value_error_with_the_parsers_reason(
    resources: Resources, expr: str, reason: str
) -> None:
    with running(resources, FakeClock(START)) as m:
        with pytest.raises(ValueError, match=reason) as caught:
            m.schedule_cron(noop, expr)
        assert expr in str(caught.value)
        assert timer_threads() == []  # nothing was scheduled


# -- shutdown --------------------------------------------------------------------------------


def test_stop_cancels_what_is_not_due_ends_schedules_and_drains_the_queue(
    resources: Resources,
) -> None:
    clock = FakeClock(START)
    runs = Runs()
    with running(resources, clock, workers=1) as m, Gate() as gate:
        busy = m.submit(gate.task)
        gate.wait_entered(1)
        queued = [m.submit(functools.partial(numbered, i)) for i in range(3)]
        due_now = m.schedule(lambda resource: "was due", 5)
        later = m.schedule(runs.job, 60)
        later_at = m.schedule_at(runs.job, m._to_wall(START + 60))
        recurring = m.schedule_recurring(runs.job, 10)
        cron = m.schedule_cron(runs.job, "0 0 1 1 *")
        clock.set(START + 5)
        wait_until(lambda: due_now.state is TaskState.QUEUED, message="due task never queued")

        stopper = threading.Thread(target=m.stop)
        stopper.start()
        try:
            wait_until(lambda: later.cancelled() and later_at.cancelled(), message="not cancelled")
            assert recurring.next_run is None
            assert cron.next_run is None
            assert m.stats().scheduled_tasks == 0
            assert not any(h.done() for h in [*queued, due_now])  # queued: drained, not cancelled
        finally:
            gate.opened.set()
            stopper.join(LONG)

        assert not stopper.is_alive()  # it never waited for a future due time
        assert busy.result(0) == "gate"
        assert [h.result(0) for h in queued] == [0, 1, 2]
        assert due_now.result(0) == "was due"
        assert later.state is later_at.state is TaskState.CANCELLED
        assert m.status(later.id).state is TaskState.CANCELLED
        assert recurring.runs == 0
        assert runs.ids == []
        assert timer_threads() == []
        assert resources.live == 0


def test_kill_cancels_scheduled_and_queued_tasks_and_ends_schedules(
    resources: Resources,
) -> None:
    clock = FakeClock(START)
    runs = Runs()
    with running(resources, clock, workers=1) as m:

        def until_cancelled(resource: Resource) -> str:
            context = tasker.current_task()
            assert context is not None
            started.set()
            context.cancelled.wait(LONG)
            return "stopped early"

        started = threading.Event()
        busy = m.submit(until_cancelled)
        assert started.wait(LONG)
        queued = [m.submit(runs.job) for _ in range(3)]
        due_now = m.schedule(runs.job, 5)
        later = m.schedule(runs.job, 60)
        recurring = m.schedule_recurring(runs.job, 10)
        cron = m.schedule_cron(runs.job, "0 0 1 1 *")
        clock.set(START + 5)
        wait_until(lambda: due_now.state is TaskState.QUEUED, message="due task never queued")

        m.kill()

        assert busy.result(0) == "stopped early"
        assert all(h.state is TaskState.CANCELLED for h in [*queued, due_now, later])
        assert recurring.next_run is None
        assert cron.next_run is None
        assert m.stats().scheduled_tasks == 0
        assert runs.ids == []
        assert timer_threads() == []
        assert resources.live == 0


@pytest.mark.parametrize("shutdown", ["stop", "kill"])
@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda m: m.schedule(noop, 1), id="schedule"),
        pytest.param(lambda m: m.schedule_at(noop, time.time() + 60), id="at"),
        pytest.param(lambda m: m.schedule_recurring(noop, 1), id="recurring"),
        pytest.param(lambda m: m.schedule_cron(noop, "* * * * *"), id="cron"),
    ],
)
def test_scheduling_after_shutdown_raises_manager_closed(
    resources: Resources, shutdown: str, call: Callable[[Manager], object]
) -> None:
    m = make_manager(resources, FakeClock(START))
    getattr(m, shutdown)()
    with pytest.raises(tasker.ManagerClosed, match="shutting down"):
        call(m)
    assert timer_threads() == []


def test_one_timer_thread_serves_every_scheduled_task_and_exits_on_stop(
    resources: Resources,
) -> None:
    clock = FakeClock(START)
    m = make_manager(resources, clock, workers=2)
    try:
        threads_before = threading.active_count()
        handles = [m.schedule(noop, 10 + i) for i in range(50)]
        schedules = [m.schedule_recurring(noop, 7) for _ in range(5)]

        assert len(timer_threads()) == 1
        assert threading.active_count() == threads_before + 1
        assert m.stats().scheduled_tasks == 50
    finally:
        m.stop()

    assert timer_threads() == []
    assert all(h.state is TaskState.CANCELLED for h in handles)
    assert all(s.next_run is None for s in schedules)
