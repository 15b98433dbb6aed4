"""Submitting work: results, errors, map, task identity and current_task()."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, assert_type

import pytest

import tasker
from tasker.testing import Resource, Resources

Manager = tasker.TaskManager[Resource, Any]


@contextlib.contextmanager
def _manager(resources: Resources, *gates: threading.Event, **options: Any) -> Iterator[Manager]:
    """A manager that is stopped on the way out, after opening every gate."""
    m: Manager = tasker.TaskManager(resources.create, on_destroy=resources.destroy, **options)
    try:
        yield m
    finally:
        for gate in gates:
            gate.set()
        m.stop()


# Every way to submit a task and get its outcome.
_WAYS: dict[str, Callable[[Manager, Callable[[Resource], Any]], Any]] = {
    "submit": lambda m, fn: m.submit(fn).result(timeout=10),
    "submit_priority": lambda m, fn: m.submit(fn, priority=True).result(timeout=10),
    "submit_once": lambda m, fn: m.submit(fn, once=True).result(timeout=10),
    "try_submit": lambda m, fn: m.try_submit(fn).result(timeout=10),
    "try_submit_priority_once": lambda m, fn: m.try_submit(fn, priority=True, once=True).result(
        timeout=10
    ),
    "queue_task": lambda m, fn: m.queue_task(fn),
    "queue_task_with_priority": lambda m, fn: m.queue_task_with_priority(fn),
    "queue_task_once": lambda m, fn: m.queue_task_once(fn),
    "queue_task_with_priority_once": lambda m, fn: m.queue_task_with_priority_once(fn),
    "run_task": lambda m, fn: m.run_task(fn),
}


class _TaskError(Exception):
    pass


class _TaskBaseError(BaseException):
    pass


# -- results and errors -----------------------------------------------------------------


@pytest.mark.parametrize("way", _WAYS)
def test_returns_the_result_of_fn_called_with_a_resource(resources: Resources, way: str) -> None:
    with _manager(resources, workers=2) as m:
        result = _WAYS[way](m, lambda r: ("ran on", r))
        assert result[0] == "ran on"
        assert isinstance(result[1], Resource)
        assert result[1] in resources.made
        assert not result[1].destroyed


@pytest.mark.parametrize("way", _WAYS)
def test_the_tasks_own_exception_reaches_the_caller_unchanged(
    resources: Resources, way: str
) -> None:
    error = _TaskError("boom")

    def fail(r: Resource) -> None:
        raise error

    with _manager(resources, workers=2) as m:
        with pytest.raises(_TaskError, match=r"^boom$") as info:
            _WAYS[way](m, fail)
        assert info.value is error
        # the worker (or the pooled resource) survives an ordinary task error
        assert _WAYS[way](m, lambda r: 5) == 5
    assert resources.created == 4


@pytest.mark.parametrize("way", ["submit", "queue_task", "run_task"])
def test_a_base_exception_from_the_task_reaches_the_caller_and_the_manager_survives(
    resources: Resources, way: str
) -> None:
    error = _TaskBaseError("stop everything")

    def fail(r: Resource) -> None:
        raise error

    with _manager(resources, workers=1, burst_interval=None) as m:
        with pytest.raises(_TaskBaseError) as info:
            _WAYS[way](m, fail)
        assert info.value is error
        assert m.queue_task(lambda r: 1) == 1
        assert m.stats().active_workers == 1


@pytest.mark.parametrize("way", _WAYS)
@pytest.mark.parametrize("fn", [None, 42, "not a function"])
def test_a_non_callable_task_is_rejected_with_type_error(
    resources: Resources, way: str, fn: Any
) -> None:
    with _manager(resources) as m:
        with pytest.raises(
            TypeError, match=rf"\bfn must be callable, or a Work object .*\(got fn={fn!r}\)"
        ):
            _WAYS[way](m, fn)
        assert m.metrics().total_arrived == 0


def test_submit_returns_at_once_while_the_task_waits(resources: Resources) -> None:
    release = threading.Event()
    with _manager(resources, release, workers=1, burst_interval=None) as m:
        blocker = m.submit(lambda r: release.wait(timeout=10))
        handle = m.submit(lambda r: "later")
        assert not handle.done()
        release.set()
        assert handle.result(timeout=10) == "later"
        assert blocker.result(timeout=10) is True


# -- map --------------------------------------------------------------------------------


def test_map_yields_results_in_input_order_when_tasks_finish_out_of_order(
    resources: Resources,
) -> None:
    # item 2 finishes first and lets item 1 finish, which lets item 0 finish
    go = [threading.Event() for _ in range(3)]
    go[2].set()
    finished: list[int] = []

    def work(r: Resource, item: int) -> tuple[int, bool]:
        assert go[item].wait(timeout=10)
        finished.append(item)
        if item > 0:
            go[item - 1].set()
        return item * 10, isinstance(r, Resource)

    with _manager(resources, *go, workers=3, burst_interval=None) as m:
        results = list(m.map(work, [0, 1, 2]))
    assert finished == [2, 1, 0]
    assert results == [(0, True), (10, True), (20, True)]


def test_map_calls_fn_with_resource_then_item(resources: Resources) -> None:
    with _manager(resources, workers=2) as m:
        seen = list(m.map(lambda r, item: (r, item), iter("abc"), priority=True))
    assert [item for _, item in seen] == ["a", "b", "c"]
    assert all(isinstance(r, Resource) and r in resources.made for r, _ in seen)


def test_map_of_nothing_yields_nothing(resources: Resources) -> None:
    with _manager(resources) as m:
        assert list(m.map(lambda r, item: item, [])) == []


def test_map_raises_a_tasks_error_at_its_position(resources: Resources) -> None:
    with _manager(resources, workers=2) as m:
        results = m.map(lambda r, item: 60 // item, [1, 2, 0, 3])
        assert next(results) == 60
        assert next(results) == 30
        with pytest.raises(ZeroDivisionError):
            next(results)


def test_map_submits_every_item_before_the_first_result_is_read(resources: Resources) -> None:
    with _manager(resources, workers=2) as m:
        results = m.map(lambda r, item: item, range(5))
        assert m.metrics().total_arrived == 5
        assert list(results) == [0, 1, 2, 3, 4]


# -- identity: ids and current_task() ----------------------------------------------------


def test_current_task_inside_a_task_matches_its_handle(resources: Resources) -> None:
    with _manager(resources, workers=2) as m:
        handle = m.submit(lambda r: tasker.current_task())
        context = handle.result(timeout=10)
    assert isinstance(context, tasker.TaskContext)
    assert context.id == handle.id
    assert context.attempt == 1
    assert isinstance(context.cancelled, threading.Event)
    assert not context.cancelled.is_set()


def test_current_task_is_none_outside_a_task(resources: Resources) -> None:
    started, release = threading.Event(), threading.Event()

    def hold(r: Resource) -> None:
        started.set()
        release.wait(timeout=10)

    assert tasker.current_task() is None
    with _manager(resources, release, workers=1) as m:
        m.submit(hold)
        assert started.wait(timeout=10)
        # a task running in a worker is invisible to this thread
        assert tasker.current_task() is None
        release.set()
    assert tasker.current_task() is None


def test_current_task_is_none_in_on_create_and_on_destroy(resources: Resources) -> None:
    seen: list[tuple[str, str, tasker.TaskContext | None]] = []

    def create() -> Resource:
        seen.append(("create", threading.current_thread().name, tasker.current_task()))
        return resources.create()

    def destroy(r: Resource) -> None:
        seen.append(("destroy", threading.current_thread().name, tasker.current_task()))
        resources.destroy(r)

    m: Manager = tasker.TaskManager(create, on_destroy=destroy, workers=2, name="ctx")
    try:
        assert m.queue_task(lambda r: tasker.current_task()) is not None
    finally:
        m.stop()
    # worker threads call on_create before and on_destroy after their tasks
    assert {kind for kind, thread, _ in seen if thread.startswith("ctx-worker-")} == {
        "create",
        "destroy",
    }
    assert [context for _, _, context in seen] == [None] * len(seen)


def test_current_task_works_inside_run_task(resources: Resources) -> None:
    with _manager(resources) as m:
        context = m.run_task(lambda r: tasker.current_task())
        assert tasker.current_task() is None  # cleared once run_task returns
    assert isinstance(context, tasker.TaskContext)
    assert isinstance(context.id, str)
    assert context.id
    assert context.attempt == 1
    assert not context.cancelled.is_set()


def test_run_task_inside_a_task_restores_the_outer_context(resources: Resources) -> None:
    with _manager(resources, workers=1) as m:

        def outer(r: Resource) -> tuple[Any, Any, Any]:
            before = tasker.current_task()
            inner = m.run_task(lambda r2: tasker.current_task())
            return before, inner, tasker.current_task()

        handle = m.submit(outer)
        before, inner, after = handle.result(timeout=10)
    assert before.id == after.id == handle.id
    assert inner.id != handle.id


def test_handle_ids_are_unique_strings(resources: Resources) -> None:
    with _manager(resources, workers=2) as m:
        handles = [m.submit(lambda r: tasker.current_task()) for _ in range(200)]
        contexts = [h.result(timeout=10) for h in handles]
        inline = [m.run_task(lambda r: tasker.current_task()) for _ in range(5)]
    ids = [h.id for h in handles]
    assert all(isinstance(i, str) and i for i in ids)
    assert len(set(ids)) == 200
    assert [c.id for c in contexts] == ids
    assert len({c.id for c in inline} | set(ids)) == 205


def test_handle_ids_are_unique_across_managers_with_the_same_name(resources: Resources) -> None:
    with _manager(resources) as first, _manager(resources) as second:
        a = [first.submit(lambda r: None) for _ in range(50)]
        b = [second.submit(lambda r: None) for _ in range(50)]
        for h in a + b:
            h.result(timeout=10)
    assert len({h.id for h in a + b}) == 100


def test_handle_is_a_concurrent_futures_future(resources: Resources) -> None:
    with _manager(resources) as m:
        handle = m.submit(lambda r: 3)
        assert isinstance(handle, Future)
        assert isinstance(handle, tasker.TaskHandle)
        assert handle.result(timeout=10) == 3
    assert issubclass(tasker.TaskHandle, Future)


# -- typing (checked by mypy; the runtime half checks the values) -----------------------


def test_generic_types_carry_through_to_handles_and_results(resources: Resources) -> None:
    def number(r: Resource) -> int:
        return r.number

    def plus(r: Resource, item: int) -> int:
        return item + 1

    m: tasker.TaskManager[Resource, int] = tasker.TaskManager(
        resources.create, on_destroy=resources.destroy
    )
    try:
        handle = m.submit(number)
        assert_type(handle, tasker.TaskHandle[int])
        assert_type(m.try_submit(number, priority=True), tasker.TaskHandle[int])
        assert_type(handle.result(timeout=10), int)
        assert_type(m.queue_task(number), int)
        assert_type(m.queue_task_with_priority_once(number), int)
        assert_type(m.run_task(number), int)
        assert_type(m.map(plus, [1, 2]), Iterator[int])

        assert isinstance(handle.result(timeout=10), int)
        assert isinstance(m.run_task(number), int)
        assert list(m.map(plus, [1, 2])) == [2, 3]
    finally:
        m.stop()
