"""Batches (DESIGN §4): ``submit_many(fns, **opts)`` queues every callable in one step.

One handle per callable, in order; the options of ``submit`` apply to every task; the
queue's lock is taken once for the batch, not once per task. With a bounded queue it
waits for room as consumers free it and never drops a task; a manager that closes while
it waits raises ``ManagerClosed``: what was queued before still runs (stop), the rest end
with that error. Bad options or a non-callable item are refused before anything is queued.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import tasker
from tasker import TaskState
from tasker._queue import TaskQueue
from tasker.testing import Gate, Resource, Resources, is_blocked, wait_until

Manager = tasker.TaskManager[Resource, Any]

LONG = 30.0  # a safety net against hangs, never reached when the test passes


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


class Log:
    """Tasks that append their number to a shared list when they run."""

    def __init__(self) -> None:
        self.ran: list[int] = []
        self._lock = threading.Lock()

    def task(self, n: int) -> Callable[[Resource], int]:
        def run(resource: Resource) -> int:
            with self._lock:
                self.ran.append(n)
            return n * n

        return run


class CountingLock:
    """Wraps the queue's lock and counts acquisitions per thread."""

    def __init__(self, lock: Any) -> None:
        self._lock = lock
        self.by_thread: dict[int, int] = {}

    def _count(self) -> None:
        ident = threading.get_ident()
        self.by_thread[ident] = self.by_thread.get(ident, 0) + 1

    def acquire(self, *args: Any, **kwargs: Any) -> bool:
        got: bool = self._lock.acquire(*args, **kwargs)
        if got:
            self._count()
        return got

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def rounds(self) -> int:
        return self.by_thread.get(threading.get_ident(), 0)


# -- results and order --------------------------------------------------------------------


def test_submit_many_returns_one_handle_per_callable_in_order(resources: Resources) -> None:
    log = Log()
    with manager_for(resources) as manager:
        handles = manager.submit_many([log.task(n) for n in range(20)])

        assert len(handles) == 20
        assert all(isinstance(h, tasker.TaskHandle) for h in handles)
        assert len({h.id for h in handles}) == 20
        assert [h.result(timeout=LONG) for h in handles] == [n * n for n in range(20)]
    assert log.ran == list(range(20))  # one worker: queued in order, run in order


def test_submit_many_takes_any_iterable(resources: Resources) -> None:
    log = Log()
    with manager_for(resources) as manager:
        handles = manager.submit_many(log.task(n) for n in range(5))

        assert [h.result(timeout=LONG) for h in handles] == [0, 1, 4, 9, 16]


def test_an_empty_batch_queues_nothing(resources: Resources) -> None:
    with manager_for(resources) as manager:
        assert manager.submit_many([]) == []
        assert manager.metrics().total_arrived == 0


def test_each_task_of_a_batch_is_in_status_and_counted_as_arrived(resources: Resources) -> None:
    log = Log()
    with manager_for(resources) as manager:
        handles = manager.submit_many([log.task(n) for n in range(3)])
        for handle in handles:
            handle.result(timeout=LONG)

        for handle in handles:
            info = manager.status(handle.id)
            assert info.state is TaskState.COMPLETED
            assert info.attempts == 1
        assert manager.metrics().total_arrived == 3


# -- options ------------------------------------------------------------------------------


def test_priority_puts_the_whole_batch_in_the_priority_queue(resources: Resources) -> None:
    log = Log()
    gate = Gate()
    with manager_for(resources) as manager:
        manager.submit(gate)
        assert gate.started.wait(LONG)
        waiting = manager.submit(log.task(100))

        handles = manager.submit_many([log.task(n) for n in range(3)], priority=True)

        stats = manager.stats()
        assert (stats.priority_tasks, stats.queued_tasks) == (3, 1)
        gate.release()
        waiting.result(timeout=LONG)
        assert [h.result(timeout=LONG) for h in handles] == [0, 1, 4]
    assert log.ran == [0, 1, 2, 100]  # the batch overtook the earlier main-queue task


def test_name_applies_to_every_task_of_the_batch(resources: Resources) -> None:
    log = Log()
    with manager_for(resources) as manager:
        handles = manager.submit_many([log.task(n) for n in range(3)], name="nightly")
        for handle in handles:
            handle.result(timeout=LONG)

        assert [manager.status(h.id).name for h in handles] == ["nightly"] * 3


def test_retry_applies_to_every_task_of_the_batch(resources: Resources) -> None:
    runs: dict[int, int] = {}

    def flaky(n: int) -> Callable[[Resource], int]:
        def run(resource: Resource) -> int:
            runs[n] = runs.get(n, 0) + 1
            if runs[n] == 1:
                raise ValueError(f"task {n} first run")
            return n

        return run

    retry = tasker.RetryPolicy(max_retries=1, strategy=tasker.RetryStrategy.IMMEDIATE)
    with manager_for(resources) as manager:
        handles = manager.submit_many([flaky(n) for n in range(3)], retry=retry)

        assert [h.result(timeout=LONG) for h in handles] == [0, 1, 2]
    assert runs == {0: 2, 1: 2, 2: 2}


# -- one lock round -----------------------------------------------------------------------


def test_an_unbounded_batch_takes_the_queue_lock_once(resources: Resources) -> None:
    log = Log()
    gate = Gate()
    with manager_for(resources) as manager:
        manager.submit(gate)
        assert gate.started.wait(LONG)
        counting = CountingLock(manager._queue._lock)
        manager._queue._lock = counting  # type: ignore[assignment]

        handles = manager.submit_many([log.task(n) for n in range(100)])

        assert counting.rounds() == 1
        manager.submit(log.task(100))
        assert counting.rounds() == 2  # the counter does see a plain submit
        gate.release()
        assert [h.result(timeout=LONG) for h in handles] == [n * n for n in range(100)]


# -- bounded queue ------------------------------------------------------------------------


def test_a_bounded_batch_waits_for_room_and_never_drops_a_task(resources: Resources) -> None:
    seen_depths: list[int] = []
    lock = threading.Lock()

    def task(n: int) -> Callable[[Resource], int]:
        def run(resource: Resource) -> int:
            stats = manager.stats()
            with lock:
                seen_depths.append(stats.queued_tasks + stats.priority_tasks)
            return n

        return run

    with manager_for(resources, workers=4, queue_size=5) as manager:
        handles = manager.submit_many([task(n) for n in range(200)])

        assert len(handles) == 200
        assert [h.result(timeout=LONG) for h in handles] == list(range(200))
        assert manager.metrics().total_completed == 200
    assert max(seen_depths) <= 5


def returns(n: int) -> Callable[[Resource], int]:
    return lambda resource: n


def test_concurrent_batches_on_a_bounded_queue_all_complete(resources: Resources) -> None:
    results: dict[str, list[int]] = {}

    def produce(label: str, offset: int) -> None:
        handles = manager.submit_many([returns(n) for n in range(offset, offset + 100)])
        results[label] = [h.result(timeout=LONG) for h in handles]

    with manager_for(resources, workers=3, queue_size=5) as manager:
        producers = [
            threading.Thread(target=produce, args=("a", 0)),
            threading.Thread(target=produce, args=("b", 1000)),
        ]
        for producer in producers:
            producer.start()
        for producer in producers:
            producer.join(LONG)

    assert results == {"a": list(range(100)), "b": list(range(1000, 1100))}


def test_a_bounded_batch_blocks_until_a_worker_makes_room(resources: Resources) -> None:
    log = Log()
    gate = Gate()
    outcome: list[list[tasker.TaskHandle[int]]] = []
    with manager_for(resources, queue_size=2) as manager:
        manager.submit(gate)
        assert gate.started.wait(LONG)
        producer = threading.Thread(
            target=lambda: outcome.append(manager.submit_many([log.task(n) for n in range(5)]))
        )
        producer.start()
        wait_until(lambda: is_blocked(producer, inside=TaskQueue.put_many))
        assert manager.stats().queued_tasks == 2  # filled to the bound, waiting for room
        assert outcome == []

        gate.release()
        producer.join(LONG)
        assert not producer.is_alive()
        (handles,) = outcome
        assert [h.result(timeout=LONG) for h in handles] == [0, 1, 4, 9, 16]


def test_closing_the_manager_while_a_batch_waits_for_room(resources: Resources) -> None:
    log = Log()
    gate = Gate()
    submitted: list[tasker.TaskInfo] = []

    class Submitted:
        def on_submit(self, info: tasker.TaskInfo) -> None:
            submitted.append(info)

    errors: list[BaseException] = []

    def produce() -> None:
        try:
            manager.submit_many([log.task(n) for n in range(5)])
        except BaseException as exc:
            errors.append(exc)

    with manager_for(resources, queue_size=2, hooks=[Submitted()]) as manager:
        manager.submit(gate)
        assert gate.started.wait(LONG)
        producer = threading.Thread(target=produce)
        producer.start()
        wait_until(lambda: is_blocked(producer, inside=TaskQueue.put_many))

        stopper = threading.Thread(target=manager.stop)
        stopper.start()
        producer.join(LONG)
        assert not producer.is_alive()
        (error,) = errors
        assert isinstance(error, tasker.ManagerClosed)
        assert "shutting down" in str(error)

        gate.release()
        stopper.join(LONG)
        assert not stopper.is_alive()

        assert log.ran == [0, 1]  # queued before the close: drained by stop()
        # on_submit saw the whole batch (hooks run before the queue takes a task). The
        # three the queue refused never ran and none is left pending: each ended with
        # the error.
        batch_ids = [info.id for info in submitted[1:]]
        assert len(batch_ids) == 5
        for task_id in batch_ids[2:]:
            info = manager.status(task_id)
            assert info.state is TaskState.FAILED
            assert isinstance(info.last_error, tasker.ManagerClosed)
            assert info.started_at is None


def test_killing_the_manager_while_a_batch_waits_for_room(resources: Resources) -> None:
    log = Log()
    gate = Gate()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            manager.submit_many([log.task(n) for n in range(5)])
        except BaseException as exc:
            errors.append(exc)

    with manager_for(resources, queue_size=2) as manager:
        manager.submit(gate)
        assert gate.started.wait(LONG)
        producer = threading.Thread(target=produce)
        producer.start()
        wait_until(lambda: is_blocked(producer, inside=TaskQueue.put_many))

        manager.kill()
        producer.join(LONG)
        assert not producer.is_alive()

    (error,) = errors
    assert isinstance(error, tasker.ManagerClosed)
    assert log.ran == []
    assert manager.metrics().total_cancelled == 2  # the two that were queued


# -- refusals -----------------------------------------------------------------------------


def test_an_unknown_option_is_a_type_error(resources: Resources) -> None:
    log = Log()
    with manager_for(resources) as manager:
        with pytest.raises(TypeError, match=r"unexpected option\(s\) colour"):
            manager.submit_many([log.task(1)], colour="red")
        with pytest.raises(TypeError, match="name must be a str"):
            manager.submit_many([log.task(1)], name=42)
        manager.stop()
        assert manager.metrics().total_arrived == 0
    assert log.ran == []


def test_a_non_callable_item_is_refused_before_anything_is_queued(resources: Resources) -> None:
    log = Log()
    gate = Gate()
    with manager_for(resources) as manager:
        manager.submit(gate)
        assert gate.started.wait(LONG)
        items: list[Any] = [log.task(0), log.task(1), 42, log.task(3)]

        with pytest.raises(TypeError, match=r"fn must be callable.*got fn=42"):
            manager.submit_many(items)

        stats = manager.stats()
        assert (stats.queued_tasks, stats.priority_tasks) == (0, 0)
        gate.release()
        manager.stop()
        assert manager.metrics().total_arrived == 1  # the gate only
    assert log.ran == []


def test_a_refused_batch_leaves_no_task_behind_in_status(resources: Resources) -> None:
    log = Log()
    with manager_for(resources) as manager:
        before = manager.submit(log.task(0))
        before.result(timeout=LONG)
        items: list[Any] = [log.task(1), log.task(2), 42]

        with pytest.raises(TypeError, match="fn must be callable"):
            manager.submit_many(items)

        # Ids are the manager's prefix and a sequence number: the refused batch's
        # would-be tasks come right after ``before``. None of them was ever submitted.
        prefix, _, seq = before.id.rpartition("-")
        for k in range(1, 4):
            with pytest.raises(tasker.TaskNotFound):
                manager.status(f"{prefix}-{int(seq) + k}")


def test_submit_many_after_stop_raises_manager_closed(resources: Resources) -> None:
    log = Log()
    with manager_for(resources) as manager:
        manager.stop()
        with pytest.raises(tasker.ManagerClosed, match="shutting down"):
            manager.submit_many([log.task(1), log.task(2)])
    assert log.ran == []
