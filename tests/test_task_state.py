"""Task states and status() (DESIGN §4): one id, one state machine, bounded memory.

``TaskState`` = SCHEDULED → QUEUED → RUNNING → (RETRYING → QUEUED …) → COMPLETED |
FAILED | CANCELLED, and nothing else: every other move is refused and changes nothing.
``TaskManager.status(task_id)`` returns a ``TaskInfo`` snapshot for live tasks and the
last ``status_retention`` finished ones; an unknown id raises ``TaskNotFound``.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, InvalidStateError
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import tasker
from tasker import RetryPolicy, RetryStrategy, TaskHandle, TaskInfo, TaskState
from tasker._state import TRANSITIONS
from tasker.testing import FakeClock, Gate, Resource, Resources, wait_until

Manager = tasker.TaskManager[Resource, Any]

ST = TaskState
LONG = 30.0  # a safety net against hangs, never reached when the test passes


def fetch_rows(resource: Resource) -> str:
    """A module-level task, so its name is plain."""
    return f"rows from {resource.number}"


class Boom(Exception):
    """A task's own error."""


class Sick(Exception):
    """An error ``check_health`` rejects."""


@contextlib.contextmanager
def manager_for(
    res: Resources, gates: list[Gate] | None = None, **options: Any
) -> Iterator[Manager]:
    """A manager that is killed on the way out, every gate opened first."""
    options.setdefault("burst_interval", None)
    options.setdefault("resource_pool_size", 0)
    manager: Manager = tasker.TaskManager(res.create, on_destroy=res.destroy, **options)
    try:
        yield manager
    finally:
        for gate in gates or []:
            gate.release()
        manager.kill()


def known(manager: Manager, task_id: str) -> bool:
    try:
        manager.status(task_id)
    except tasker.TaskNotFound:
        return False
    return True


def failing_then(results: list[BaseException | str]) -> Callable[[Resource], str]:
    """A task that raises or returns the next item of ``results`` on each run."""
    runs = iter(results)

    def task(resource: Resource) -> str:
        outcome = next(runs)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return task


# -- the transition table -----------------------------------------------------------------


def test_transitions_are_exactly_the_arrows_of_the_design() -> None:
    arrows = {
        ST.SCHEDULED: {ST.QUEUED, ST.CANCELLED},
        ST.QUEUED: {ST.RUNNING, ST.CANCELLED},
        ST.RUNNING: {ST.RETRYING, ST.COMPLETED, ST.FAILED},
        ST.RETRYING: {ST.QUEUED, ST.CANCELLED},
        ST.COMPLETED: set(),
        ST.FAILED: set(),
        ST.CANCELLED: set(),
    }

    assert arrows == TRANSITIONS


def test_only_completed_failed_and_cancelled_are_terminal() -> None:
    assert {s for s in TaskState if s.finished} == {ST.COMPLETED, ST.FAILED, ST.CANCELLED}


def handle_in(state: TaskState) -> TaskHandle[str]:
    """A bare handle brought to ``state`` through the legal moves only."""
    handle: TaskHandle[str] = TaskHandle(
        fetch_rows, phase=ST.SCHEDULED if state is ST.SCHEDULED else ST.QUEUED
    )
    if state is ST.CANCELLED:
        assert handle.cancel()
    elif state in (ST.RUNNING, ST.RETRYING, ST.COMPLETED, ST.FAILED):
        assert handle.set_running_or_notify_cancel()
        if state is ST.RETRYING:
            assert handle._move(ST.RETRYING)
        elif state is ST.COMPLETED:
            handle.set_result("done")
        elif state is ST.FAILED:
            handle.set_exception(Boom("failed"))
    assert handle.state is state
    return handle


# The moves _move makes; the others on the arrows go through the Future protocol
# (set_running_or_notify_cancel, set_result/set_exception, cancel).
MOVES = {(ST.SCHEDULED, ST.QUEUED), (ST.RUNNING, ST.RETRYING), (ST.RETRYING, ST.QUEUED)}


@pytest.mark.parametrize("source", list(TaskState), ids=lambda s: s.name)
@pytest.mark.parametrize("target", list(TaskState), ids=lambda s: s.name)
def test_move_follows_the_arrows_and_refuses_every_other_move_changing_nothing(
    source: TaskState, target: TaskState
) -> None:
    handle = handle_in(source)
    before = (handle.done(), handle.cancelled(), handle.running())

    moved = handle._move(target)

    if (source, target) in MOVES:
        assert moved is True
        assert handle.state is target
        assert not handle.done()
    else:
        assert moved is False
        assert handle.state is source
        assert (handle.done(), handle.cancelled(), handle.running()) == before


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (ST.COMPLETED, ST.QUEUED),
        (ST.FAILED, ST.RETRYING),
        (ST.QUEUED, ST.RETRYING),
        (ST.CANCELLED, ST.QUEUED),
        (ST.SCHEDULED, ST.RETRYING),
        (ST.RETRYING, ST.RETRYING),
    ],
)
def test_illegal_moves_leave_the_outcome_untouched(source: TaskState, target: TaskState) -> None:
    handle = handle_in(source)

    assert handle._move(target) is False

    if source is ST.COMPLETED:
        assert handle.result(timeout=0) == "done"
    elif source is ST.FAILED:
        with pytest.raises(Boom, match="failed"):
            handle.result(timeout=0)
    elif source is ST.CANCELLED:
        with pytest.raises(CancelledError):
            handle.result(timeout=0)


@pytest.mark.parametrize("source", [ST.SCHEDULED, ST.QUEUED, ST.RETRYING])
def test_every_waiting_state_can_be_cancelled(source: TaskState) -> None:
    handle = handle_in(source)

    assert handle.cancel() is True

    assert handle.state is ST.CANCELLED
    with pytest.raises(CancelledError):
        handle.result(timeout=0)


def test_a_running_task_cannot_be_cancelled() -> None:
    handle = handle_in(ST.RUNNING)

    assert handle.cancel() is False

    assert handle.state is ST.RUNNING


@pytest.mark.timeout(10)  # a guard: a deadlock here must fail fast, not stall the suite
@pytest.mark.parametrize("source", [ST.COMPLETED, ST.FAILED, ST.CANCELLED])
def test_set_result_on_a_finished_or_cancelled_handle_raises_invalid_state_error(
    source: TaskState,
) -> None:
    handle = handle_in(source)

    with pytest.raises(InvalidStateError):
        handle.set_result("again")
    with pytest.raises(InvalidStateError):
        handle.set_exception(Boom("again"))

    assert handle.state is source


# -- the states a real task goes through --------------------------------------------------


def test_a_task_is_queued_then_running_then_completed(resources: Resources) -> None:
    gate, blocker = Gate(), Gate()
    with manager_for(resources, [gate, blocker]) as manager:
        manager.submit(blocker)
        assert blocker.started.wait(LONG)
        handle = manager.submit(gate)

        assert handle.state is ST.QUEUED
        assert manager.status(handle.id).state is ST.QUEUED
        blocker.release()
        assert gate.started.wait(LONG)
        assert handle.state is ST.RUNNING
        assert manager.status(handle.id).state is ST.RUNNING
        gate.release()
        assert handle.result(timeout=LONG) == "released"
        assert handle.state is ST.COMPLETED
        assert manager.status(handle.id).state is ST.COMPLETED


def test_a_task_that_raises_ends_failed(resources: Resources) -> None:
    with manager_for(resources) as manager:
        handle = manager.submit(failing_then([Boom("no")]))

        with pytest.raises(Boom, match="no"):
            handle.result(timeout=LONG)

        assert handle.state is ST.FAILED
        assert manager.status(handle.id).state is ST.FAILED


def test_a_queued_task_cancelled_by_its_caller_ends_cancelled(resources: Resources) -> None:
    blocker = Gate()
    with manager_for(resources, [blocker]) as manager:
        manager.submit(blocker)
        assert blocker.started.wait(LONG)
        handle = manager.submit(fetch_rows)

        assert handle.cancel()

        assert handle.state is ST.CANCELLED
        assert manager.status(handle.id).state is ST.CANCELLED
        blocker.release()


def test_a_scheduled_task_is_scheduled_then_queued_when_due(resources: Resources) -> None:
    clock, blocker = FakeClock(), Gate()
    with manager_for(resources, [blocker], clock=clock) as manager:
        manager.submit(blocker)
        assert blocker.started.wait(LONG)
        handle = manager.schedule(fetch_rows, 5.0)

        assert handle.state is ST.SCHEDULED
        assert manager.status(handle.id).state is ST.SCHEDULED
        clock.advance(5.0)
        wait_until(lambda: handle.state is ST.QUEUED)
        assert manager.status(handle.id).state is ST.QUEUED
        blocker.release()
        assert handle.result(timeout=LONG) == "rows from 1"
        assert handle.state is ST.COMPLETED


def test_a_retried_task_goes_running_retrying_queued_running_completed(
    resources: Resources,
) -> None:
    clock, blocker = FakeClock(), Gate()
    policy = RetryPolicy(max_retries=1, base_delay=5.0, strategy=RetryStrategy.FIXED)
    with manager_for(resources, [blocker], clock=clock) as manager:
        handle = manager.submit(failing_then([Boom("first"), "second"]), retry=policy)

        wait_until(lambda: handle.state is ST.RETRYING)
        assert manager.status(handle.id).state is ST.RETRYING
        manager.submit(blocker)  # the single worker is free: take it
        assert blocker.started.wait(LONG)
        clock.advance(5.0)
        wait_until(lambda: handle.state is ST.QUEUED)
        assert manager.status(handle.id).state is ST.QUEUED
        blocker.release()

        assert handle.result(timeout=LONG) == "second"
        assert handle.state is ST.COMPLETED


# -- status(): what TaskInfo says ---------------------------------------------------------


def test_status_returns_a_task_info_with_the_id_and_the_function_name(
    resources: Resources,
) -> None:
    with manager_for(resources) as manager:
        handle = manager.submit(fetch_rows)
        handle.result(timeout=LONG)

        info = manager.status(handle.id)

        assert isinstance(info, TaskInfo)
        assert info.id == handle.id
        assert info.name == "fetch_rows"
        assert info.state is ST.COMPLETED
        assert info.attempts == 1
        assert info.last_error is None


def test_status_reports_the_name_given_at_submit(resources: Resources) -> None:
    with manager_for(resources) as manager:
        handle = manager.submit(fetch_rows, name="nightly-report")
        handle.result(timeout=LONG)

        assert manager.status(handle.id).name == "nightly-report"


def test_task_info_is_an_immutable_snapshot(resources: Resources) -> None:
    blocker = Gate()
    with manager_for(resources, [blocker]) as manager:
        handle = manager.submit(blocker)
        assert blocker.started.wait(LONG)
        info = manager.status(handle.id)
        blocker.release()
        handle.result(timeout=LONG)

        assert info.state is ST.RUNNING  # taken before it finished
        assert info.finished_at is None
        with pytest.raises(AttributeError):
            info.state = ST.FAILED  # type: ignore[misc]


def test_times_are_none_until_reached_and_exact_with_a_fake_clock(resources: Resources) -> None:
    clock, blocker, gate = FakeClock(), Gate(), Gate()
    with manager_for(resources, [blocker, gate], clock=clock) as manager:
        manager.submit(blocker)
        assert blocker.started.wait(LONG)
        handle = manager.submit(gate)

        queued = manager.status(handle.id)
        assert queued.submitted_at is not None
        assert (queued.started_at, queued.finished_at) == (None, None)

        clock.advance(2.0)  # waits 2 s in the queue
        blocker.release()
        assert gate.started.wait(LONG)
        running = manager.status(handle.id)
        assert running.started_at is not None
        assert running.finished_at is None

        clock.advance(3.0)  # runs 3 s
        gate.release()
        handle.result(timeout=LONG)
        info = manager.status(handle.id)

        assert info.submitted_at == queued.submitted_at
        assert info.started_at == running.started_at
        assert info.finished_at is not None
        assert info.started_at is not None
        assert info.started_at - info.submitted_at == timedelta(seconds=2)
        assert info.finished_at - info.started_at == timedelta(seconds=3)


def test_times_are_aware_utc_wall_clock_datetimes(resources: Resources) -> None:
    slack = timedelta(milliseconds=1)  # datetime rounds to microseconds
    before = datetime.now(UTC)
    with manager_for(resources) as manager:
        handle = manager.submit(fetch_rows)
        handle.result(timeout=LONG)
        after = datetime.now(UTC)

        info = manager.status(handle.id)

    times = [info.submitted_at, info.started_at, info.finished_at]
    for when in times:
        assert when is not None
        assert when.tzinfo is not None
        assert when.utcoffset() == timedelta(0)
        assert before - slack <= when <= after + slack
    assert times == sorted(times)  # type: ignore[type-var]


def test_attempts_counts_every_run_and_last_error_survives_a_later_success(
    resources: Resources,
) -> None:
    errors = [Boom("run 1"), Boom("run 2")]
    policy = RetryPolicy(max_retries=5, strategy=RetryStrategy.IMMEDIATE)
    with manager_for(resources) as manager:
        handle = manager.submit(failing_then([*errors, "run 3"]), retry=policy)

        assert handle.result(timeout=LONG) == "run 3"
        info = manager.status(handle.id)

        assert info.state is ST.COMPLETED
        assert info.attempts == 3
        assert info.last_error is errors[1]


def test_last_error_of_a_failed_task_is_the_exception_it_raised(resources: Resources) -> None:
    error = Boom("broken")
    with manager_for(resources) as manager:
        handle = manager.submit(failing_then([error]))
        with pytest.raises(Boom):
            handle.result(timeout=LONG)

        info = manager.status(handle.id)

        assert info.state is ST.FAILED
        assert info.last_error is error
        assert info.attempts == 1


def test_last_error_after_health_retries_is_the_last_runs_own_error(resources: Resources) -> None:
    errors: list[Sick] = [Sick("lost 1"), Sick("lost 2")]
    with manager_for(
        resources, check_health=lambda exc: not isinstance(exc, Sick), max_retries=1
    ) as manager:
        handle = manager.submit(failing_then(list(errors)))
        with pytest.raises(tasker.RetriesExhausted):
            handle.result(timeout=LONG)

        info = manager.status(handle.id)

        assert info.state is ST.FAILED
        assert info.attempts == 2
        assert info.last_error is errors[1]


# -- unknown ids --------------------------------------------------------------------------


@pytest.mark.parametrize("task_id", ["nope", "", "tasker-", "tasker-abc", "tasker-999999999"])
def test_an_unknown_id_raises_task_not_found_naming_it(resources: Resources, task_id: str) -> None:
    expected = re.escape(f"no task with id {task_id!r}")
    with manager_for(resources) as manager, pytest.raises(tasker.TaskNotFound, match=expected):
        manager.status(task_id)


def test_task_not_found_is_a_lookup_error_and_a_tasker_error(resources: Resources) -> None:
    with manager_for(resources) as manager, pytest.raises(LookupError) as caught:
        manager.status("missing-1")

    assert isinstance(caught.value, tasker.TaskNotFound)
    assert isinstance(caught.value, tasker.TaskerError)


def test_a_task_of_another_manager_is_not_found(resources: Resources) -> None:
    with manager_for(resources) as first, manager_for(resources) as second:
        handle = first.submit(fetch_rows)
        handle.result(timeout=LONG)

        assert first.status(handle.id).state is ST.COMPLETED
        with pytest.raises(tasker.TaskNotFound, match=re.escape(repr(handle.id))):
            second.status(handle.id)


def test_a_task_id_that_is_not_a_string_is_a_type_error(resources: Resources) -> None:
    with manager_for(resources) as manager:
        handle = manager.submit(fetch_rows)
        handle.result(timeout=LONG)

        with pytest.raises(TypeError, match=r"task_id must be a str \(got task_id=1\)"):
            manager.status(1)  # type: ignore[arg-type]


def test_task_ids_are_unique(resources: Resources) -> None:
    with manager_for(resources, workers=2) as manager:
        handles = [manager.submit(fetch_rows) for _ in range(50)]
        handles.append(manager.schedule(fetch_rows, 0.0))
        for handle in handles:
            handle.result(timeout=LONG)

        assert len({h.id for h in handles}) == len(handles)
        assert {manager.status(h.id).id for h in handles} == {h.id for h in handles}


# -- retention ----------------------------------------------------------------------------


def test_the_oldest_finished_ids_are_forgotten_past_status_retention(
    resources: Resources,
) -> None:
    with manager_for(resources, status_retention=3) as manager:
        ids = []
        for _ in range(6):
            handle = manager.submit(fetch_rows)
            handle.result(timeout=LONG)
            ids.append(handle.id)

        wait_until(lambda: not known(manager, ids[2]))

        for task_id in ids[:3]:
            with pytest.raises(tasker.TaskNotFound, match=re.escape(repr(task_id))):
                manager.status(task_id)
        assert [manager.status(i).state for i in ids[3:]] == [ST.COMPLETED] * 3


def test_retention_counts_finishing_order_and_never_forgets_a_live_task(
    resources: Resources,
) -> None:
    blocker = Gate()
    with manager_for(resources, [blocker], workers=2, status_retention=2) as manager:
        long_one = manager.submit(blocker)  # submitted first, finishes last
        assert blocker.started.wait(LONG)
        short = [manager.submit(fetch_rows) for _ in range(3)]
        for handle in short:
            handle.result(timeout=LONG)
        wait_until(lambda: not known(manager, short[0].id))

        assert manager.status(long_one.id).state is ST.RUNNING
        assert known(manager, short[1].id)
        assert known(manager, short[2].id)

        blocker.release()
        long_one.result(timeout=LONG)
        wait_until(lambda: not known(manager, short[1].id))

        assert manager.status(long_one.id).state is ST.COMPLETED
        assert manager.status(short[2].id).state is ST.COMPLETED


def test_with_zero_retention_live_tasks_are_found_and_finished_ones_forgotten(
    resources: Resources,
) -> None:
    clock, blocker = FakeClock(), Gate()
    policy = RetryPolicy(max_retries=1, base_delay=5.0, strategy=RetryStrategy.FIXED)
    with manager_for(resources, [blocker], status_retention=0, clock=clock) as manager:
        retrying = manager.submit(failing_then([Boom("once"), "ok"]), retry=policy)
        wait_until(lambda: retrying.state is ST.RETRYING)
        running = manager.submit(blocker)
        assert blocker.started.wait(LONG)
        queued = manager.submit(fetch_rows)
        scheduled = manager.schedule(fetch_rows, 60.0)

        live = {retrying: ST.RETRYING, running: ST.RUNNING, queued: ST.QUEUED}
        live[scheduled] = ST.SCHEDULED
        assert {h: manager.status(h.id).state for h in live} == live

        blocker.release()
        clock.advance(5.0)
        for handle in (retrying, running, queued):
            handle.result(timeout=LONG)
        for handle in (retrying, running, queued):
            wait_until(lambda h=handle: not known(manager, h.id))  # type: ignore[misc]
        assert manager.status(scheduled.id).state is ST.SCHEDULED


def test_memory_stays_bounded_by_status_retention(resources: Resources) -> None:
    with manager_for(resources, status_retention=5) as manager:  # one worker: FIFO finishes
        handles = [manager.submit(fetch_rows) for _ in range(200)]
        for handle in handles:
            handle.result(timeout=LONG)
        wait_until(lambda: not known(manager, handles[-6].id))

        assert [known(manager, h.id) for h in handles].count(True) == 5
        assert all(known(manager, h.id) for h in handles[-5:])


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (-1, ValueError, r"status_retention must be >= 0 \(got status_retention=-1\)"),
        (1.5, TypeError, r"status_retention must be an int .*status_retention=1\.5"),
        ("10", TypeError, r"status_retention must be an int .*status_retention='10'"),
        (True, TypeError, r"status_retention must be an int .*status_retention=True"),
        (None, TypeError, r"status_retention must be an int .*status_retention=None"),
    ],
)
def test_status_retention_is_validated(
    resources: Resources, value: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        tasker.TaskManager(resources.create, on_destroy=resources.destroy, status_retention=value)

    assert resources.created == 0


# -- status keeps answering after shutdown ------------------------------------------------


def test_status_keeps_answering_after_stop(resources: Resources) -> None:
    blocker = Gate()
    with manager_for(resources, [blocker]) as manager:
        done = manager.submit(fetch_rows)
        done.result(timeout=LONG)
        running = manager.submit(blocker)
        assert blocker.started.wait(LONG)
        drained = manager.submit(fetch_rows)
        stopper = threading.Thread(target=manager.stop)
        stopper.start()
        wait_until(lambda: _refuses(manager))

        assert manager.status(drained.id).state is ST.QUEUED  # during stop()
        blocker.release()
        stopper.join(LONG)
        assert not stopper.is_alive()

        assert [manager.status(h.id).state for h in (done, running, drained)] == [ST.COMPLETED] * 3
        with pytest.raises(tasker.TaskNotFound, match="no task with id 'stopped-1'"):
            manager.status("stopped-1")


def test_status_keeps_answering_after_kill(resources: Resources) -> None:
    blocker, clock = Gate(), FakeClock()
    with manager_for(resources, [blocker], clock=clock) as manager:
        running = manager.submit(blocker)
        assert blocker.started.wait(LONG)
        queued = manager.submit(fetch_rows)
        scheduled = manager.schedule(fetch_rows, 10.0)

        manager.kill()  # the gate returns when its task is cancelled

        assert running.result(timeout=0) == "released"
        assert manager.status(running.id).state is ST.COMPLETED
        assert manager.status(queued.id).state is ST.CANCELLED
        assert manager.status(scheduled.id).state is ST.CANCELLED


def test_a_task_cancelled_by_kill_has_a_finished_at_time(resources: Resources) -> None:
    blocker, clock = Gate(), FakeClock()
    with manager_for(resources, [blocker], clock=clock) as manager:
        manager.submit(blocker)
        assert blocker.started.wait(LONG)
        queued = manager.submit(fetch_rows)
        scheduled = manager.schedule(fetch_rows, 10.0)
        clock.advance(1.0)

        manager.kill()

        for handle in (queued, scheduled):
            info = manager.status(handle.id)
            assert info.state is ST.CANCELLED
            assert info.started_at is None
            assert info.finished_at is not None
            assert info.submitted_at is not None
            assert info.finished_at - info.submitted_at == timedelta(seconds=1)


def _refuses(manager: Manager) -> bool:
    try:
        manager.submit(fetch_rows).cancel()
    except tasker.ManagerClosed:
        return True
    return False


# -- run_task -----------------------------------------------------------------------------


def test_run_task_tasks_are_visible_in_status(resources: Resources) -> None:
    seen: list[TaskInfo] = []
    with manager_for(resources, resource_pool_size=1) as manager:

        def inline(resource: Resource) -> str:
            context = tasker.current_task()
            assert context is not None
            seen.append(manager.status(context.id))
            return "inline"

        assert manager.run_task(inline) == "inline"
        info = manager.status(seen[0].id)

    assert seen[0].state is ST.RUNNING
    assert seen[0].attempts == 1
    assert seen[0].started_at is not None
    assert seen[0].finished_at is None
    assert info.state is ST.COMPLETED
    assert info.name is not None
    assert info.name.endswith("inline")
    assert info.finished_at is not None


def test_a_failing_run_task_is_failed_in_status_with_its_error(resources: Resources) -> None:
    error = Boom("inline failure")
    ids: list[str] = []
    with manager_for(resources, resource_pool_size=1) as manager:

        def inline(resource: Resource) -> str:
            context = tasker.current_task()
            assert context is not None
            ids.append(context.id)
            raise error

        with pytest.raises(Boom, match="inline failure"):
            manager.run_task(inline)
        info = manager.status(ids[0])

    assert info.state is ST.FAILED
    assert info.last_error is error
    assert info.attempts == 1
