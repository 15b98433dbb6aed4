"""Work objects (DESIGN §4): an object with ``execute(resource)`` (and an optional
``name``) is accepted wherever a callable task is.

``submit``, ``try_submit``, the ``queue_task*`` family, ``submit_many``, ``schedule``,
``chain`` and ``run_task`` run ``obj.execute(resource)``; the object's ``name`` becomes the
task's name in ``status()`` (its class name when it has none). An object with neither
``__call__`` nor ``execute`` is a ``TypeError`` naming ``fn``. ``tasker.Work`` is a
runtime-checkable, generic Protocol.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, assert_type

import pytest

import tasker
from tasker import TaskHandle, TaskState
from tasker.testing import FakeClock, Resource, Resources, wait_until

Manager = tasker.TaskManager[Resource, Any]

LONG = 30.0  # a safety net against hangs, never reached when the test passes


@contextlib.contextmanager
def manager_for(res: Resources, **options: Any) -> Iterator[Manager]:
    """One worker, no bursting; killed on the way out if the test did not stop it."""
    options.setdefault("burst_interval", None)
    options.setdefault("workers", 1)
    manager: Manager = tasker.TaskManager(res.create, on_destroy=res.destroy, **options)
    try:
        yield manager
    finally:
        manager.kill()


class Resize:
    """A ``Work[Resource, int]``: returns the number of the resource it ran on."""

    name = "resize"

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.resources: list[Resource] = []
        self._lock = threading.Lock()

    def execute(self, resource: Resource) -> int:
        context = tasker.current_task()
        assert context is not None
        with self._lock:
            self.ids.append(context.id)
            self.resources.append(resource)
        return resource.number


class Nameless:
    """A Work object without a ``name``: its class name names the task."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def execute(self, resource: Resource) -> str:
        context = tasker.current_task()
        assert context is not None
        self.ids.append(context.id)
        return "nameless"


class OddName(Nameless):
    """A ``name`` that is not a str is no name."""

    name = 7


class Lazy:
    """Has an ``execute`` attribute that cannot be called."""

    execute = "not a method"


# -- every entry point --------------------------------------------------------------------


def test_submit_runs_execute_on_the_workers_resource(resources: Resources) -> None:
    work = Resize()
    with manager_for(resources) as manager:
        handle = manager.submit(work)

        assert handle.result(timeout=LONG) == work.resources[0].number
        assert work.ids == [handle.id]
        assert manager.status(handle.id).name == "resize"
        assert handle.name == "resize"


def test_try_submit_accepts_a_work_object(resources: Resources) -> None:
    work = Resize()
    with manager_for(resources) as manager:
        handle = manager.try_submit(work, priority=True)

        assert handle.result(timeout=LONG) == work.resources[0].number
        assert manager.status(handle.id).name == "resize"


@pytest.mark.parametrize(
    "method",
    [
        "queue_task",
        "queue_task_with_priority",
        "queue_task_once",
        "queue_task_with_priority_once",
    ],
)
def test_the_queue_task_family_accepts_a_work_object(resources: Resources, method: str) -> None:
    work = Resize()
    with manager_for(resources) as manager:
        result = getattr(manager, method)(work)

        assert result == work.resources[0].number
        (task_id,) = work.ids
        assert manager.status(task_id).name == "resize"
        assert manager.status(task_id).state is TaskState.COMPLETED


def test_submit_many_accepts_work_objects_beside_callables(resources: Resources) -> None:
    work = Resize()
    nameless = Nameless()

    def plain(resource: Resource) -> str:
        return "plain"

    with manager_for(resources) as manager:
        handles = manager.submit_many([work, plain, nameless])

        assert [h.result(timeout=LONG) for h in handles] == [
            work.resources[0].number,
            "plain",
            "nameless",
        ]
        assert [manager.status(h.id).name for h in handles] == [
            "resize",
            plain.__qualname__,
            "Nameless",
        ]


def test_schedule_accepts_a_work_object(resources: Resources) -> None:
    clock = FakeClock()
    work = Resize()
    with manager_for(resources, clock=clock) as manager:
        handle = manager.schedule(work, 5.0)
        assert manager.status(handle.id).state is TaskState.SCHEDULED
        assert manager.status(handle.id).name == "resize"

        clock.advance(5.0)

        assert handle.result(timeout=LONG) == work.resources[0].number
        assert work.ids == [handle.id]


def test_schedule_at_accepts_a_work_object(resources: Resources) -> None:
    work = Resize()
    with manager_for(resources) as manager:
        handle = manager.schedule_at(work, 0.0)  # a time in the past: queued at once

        assert handle.result(timeout=LONG) == work.resources[0].number
        assert manager.status(handle.id).name == "resize"


def test_schedule_recurring_runs_a_work_object_each_interval(resources: Resources) -> None:
    clock = FakeClock()
    work = Resize()
    with manager_for(resources, clock=clock) as manager:
        schedule = manager.schedule_recurring(work, 5.0)
        clock.advance(5.0)
        wait_until(lambda: schedule.last is not None)
        last = schedule.last
        assert last is not None
        assert last.result(timeout=LONG) == work.resources[0].number
        schedule.cancel()

        assert manager.status(last.id).name == "resize"


def test_chain_accepts_work_objects_as_links(resources: Resources) -> None:
    class AddTen:
        name = "add-ten"

        def execute(self, resource: Resource, previous: int) -> int:
            return previous + 10

    work = Resize()
    with manager_for(resources) as manager:
        handle = manager.chain(work, AddTen())

        assert handle.result(timeout=LONG) == work.resources[0].number + 10
        assert manager.status(work.ids[0]).name == "resize"


def test_run_task_runs_a_work_object_in_the_callers_thread(resources: Resources) -> None:
    work = Resize()
    caller = threading.current_thread()
    threads: list[threading.Thread] = []

    class Here(Resize):
        def execute(self, resource: Resource) -> int:
            threads.append(threading.current_thread())
            return super().execute(resource)

    here = Here()
    with manager_for(resources) as manager:
        assert manager.run_task(work) == work.resources[0].number
        assert manager.run_task(here) == here.resources[0].number

        assert threads == [caller]
        (task_id,) = work.ids
        assert manager.status(task_id).name == "resize"
        assert manager.status(task_id).state is TaskState.COMPLETED


def test_a_work_objects_error_reaches_its_caller(resources: Resources) -> None:
    class Failing:
        def execute(self, resource: Resource) -> None:
            raise LookupError("no such image")

    with manager_for(resources) as manager:
        handle = manager.submit(Failing())
        with pytest.raises(LookupError, match="no such image"):
            handle.result(timeout=LONG)
        with pytest.raises(LookupError, match="no such image"):
            manager.run_task(Failing())
        assert manager.status(handle.id).state is TaskState.FAILED


# -- names --------------------------------------------------------------------------------


def test_a_work_object_without_a_name_is_named_after_its_class(resources: Resources) -> None:
    nameless = Nameless()
    with manager_for(resources) as manager:
        handle = manager.submit(nameless)
        handle.result(timeout=LONG)
        manager.run_task(nameless)

        assert manager.status(handle.id).name == "Nameless"
        assert manager.status(nameless.ids[1]).name == "Nameless"


def test_a_name_that_is_not_a_str_falls_back_to_the_class_name(resources: Resources) -> None:
    with manager_for(resources) as manager:
        handle = manager.submit(OddName())
        handle.result(timeout=LONG)

        assert manager.status(handle.id).name == "OddName"


def test_an_explicit_name_overrides_the_work_objects_name(resources: Resources) -> None:
    with manager_for(resources) as manager:
        handle = manager.submit(Resize(), name="thumbnail")
        handle.result(timeout=LONG)

        assert manager.status(handle.id).name == "thumbnail"


# -- refusals -----------------------------------------------------------------------------


NOT_WORK = r"fn must be callable, or a Work object with an execute\(resource\) method \(got fn="

ENTRY_POINTS: dict[str, Callable[[Manager, Any], object]] = {
    "submit": lambda m, obj: m.submit(obj),
    "try_submit": lambda m, obj: m.try_submit(obj),
    "queue_task": lambda m, obj: m.queue_task(obj),
    "submit_many": lambda m, obj: m.submit_many([obj]),
    "schedule": lambda m, obj: m.schedule(obj, 1.0),
    "schedule_recurring": lambda m, obj: m.schedule_recurring(obj, 1.0),
    "chain": lambda m, obj: m.chain(obj),
    "run_task": lambda m, obj: m.run_task(obj),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("obj", [object(), Lazy(), 42], ids=["plain", "lazy", "int"])
def test_an_object_with_neither_call_nor_execute_is_a_type_error_naming_fn(
    resources: Resources, entry: str, obj: object
) -> None:
    with manager_for(resources) as manager:
        with pytest.raises(TypeError, match=NOT_WORK):
            ENTRY_POINTS[entry](manager, obj)
        manager.stop()
        assert manager.metrics().total_arrived == 0


# -- the protocol -------------------------------------------------------------------------


def test_work_is_a_runtime_checkable_protocol() -> None:
    assert isinstance(Resize(), tasker.Work)
    assert isinstance(Nameless(), tasker.Work)
    assert not isinstance(object(), tasker.Work)
    assert not isinstance(lambda resource: None, tasker.Work)


def test_submitting_work_keeps_the_result_type(resources: Resources) -> None:
    work: tasker.Work[Resource, int] = Resize()
    manager: tasker.TaskManager[Resource, int] = tasker.TaskManager(
        resources.create, on_destroy=resources.destroy, burst_interval=None
    )
    try:
        handle = manager.submit(work)
        assert_type(handle, TaskHandle[int])
        assert_type(manager.submit(Resize()), TaskHandle[int])
        assert_type(manager.try_submit(Resize()), TaskHandle[int])
        assert_type(manager.queue_task(Resize()), int)
        assert_type(manager.run_task(Resize()), int)
        assert_type(manager.submit_many([Resize(), Resize()]), list[TaskHandle[int]])
        assert_type(manager.schedule(Resize(), 0.0), TaskHandle[int])

        assert isinstance(handle.result(timeout=LONG), int)
    finally:
        manager.stop()
