"""Backpressure: queue_size bounds the tasks waiting (not running) in both queues."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import tasker
from tasker.testing import Resource, Resources, is_blocked, wait_until

LONG = 30.0  # a safety net against hangs, never reached when the test passes

Manager = tasker.TaskManager[Resource, Any]


@contextlib.contextmanager
def running(resources: Resources, **options: Any) -> Iterator[Manager]:
    """A manager with bursting off (so the worker count is exact), killed on the way out."""
    manager: Manager = tasker.TaskManager(
        resources.create,
        on_destroy=resources.destroy,
        burst_interval=None,
        name="backpressure",
        **options,
    )
    try:
        yield manager
    finally:
        manager.kill()


class Gate:
    """Tasks that hold their worker until released, one at a time or all at once.

    Every gate task is released on exit, whatever happens in the test.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entered = 0
        self._held: list[threading.Event] = []  # entered and not yet released, in order
        self._all_open = False

    def task(self, resource: Resource) -> str:
        release = threading.Event()
        with self._lock:
            self.entered += 1
            if self._all_open:
                release.set()
            self._held.append(release)
        release.wait(LONG)
        return "gate"

    def wait_entered(self, count: int) -> None:
        wait_until(lambda: self.entered >= count, message=f"{count} gate tasks never started")

    def release_one(self) -> None:
        """Release the gate task that started first among those still held."""
        with self._lock:
            self._held.pop(0).set()

    def open_all(self) -> None:
        with self._lock:
            self._all_open = True
            for release in self._held:
                release.set()

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.open_all()


def full_message(size: int) -> str:
    return f"^{re.escape(f'task queue is full (queue_size={size})')}$"


def parked_in_wait(thread: threading.Thread) -> bool:
    """True when ``thread`` sleeps in a blocking wait."""
    return is_blocked(thread)


def waiting(m: Manager) -> int:
    stats = m.stats()
    return stats.queued_tasks + stats.priority_tasks


@pytest.mark.parametrize("size", [1, 3])
def test_try_submit_raises_queue_full_when_queue_size_tasks_wait(
    resources: Resources, size: int
) -> None:
    with running(resources, workers=2, queue_size=size) as m, Gate() as gate:
        held = [m.submit(gate.task) for _ in range(2)]
        gate.wait_entered(2)
        accepted = [m.try_submit(lambda r, i=i: i) for i in range(size)]
        assert waiting(m) == size

        with pytest.raises(tasker.QueueFull, match=full_message(size)) as info:
            m.try_submit(lambda r: "refused")
        assert isinstance(info.value, tasker.TaskerError)
        with pytest.raises(tasker.QueueFull, match=full_message(size)):
            m.try_submit(lambda r: "refused", priority=True)
        assert waiting(m) == size

        gate.open_all()
        assert [h.result(LONG) for h in held] == ["gate", "gate"]
        assert [h.result(LONG) for h in accepted] == list(range(size))
        assert m.try_submit(lambda r: "room again").result(LONG) == "room again"


@pytest.mark.parametrize(
    "waiting_priorities",
    [[True, True, True], [False, False, False], [True, False, True]],
    ids=["all-priority", "all-main", "mixed"],
)
def test_the_bound_counts_priority_and_main_waiting_tasks_together(
    resources: Resources, waiting_priorities: list[bool]
) -> None:
    with running(resources, workers=1, queue_size=3) as m, Gate() as gate:
        m.submit(gate.task)
        gate.wait_entered(1)
        for priority in waiting_priorities:
            m.try_submit(lambda r: None, priority=priority)

        for priority in (False, True):
            with pytest.raises(tasker.QueueFull, match=full_message(3)):
                m.try_submit(lambda r: None, priority=priority)


def test_the_bound_does_not_count_running_tasks(resources: Resources) -> None:
    with running(resources, workers=3, queue_size=2) as m, Gate() as gate:
        running_now = [m.try_submit(gate.task) for _ in range(2)]
        gate.wait_entered(2)  # they left the queue: the queue is empty again
        more = [m.try_submit(gate.task) for _ in range(2)]  # 1 starts, 1 waits
        gate.wait_entered(3)
        assert m.stats().busy_workers == 3
        assert waiting(m) == 1
        last = m.try_submit(lambda r: "fits")
        with pytest.raises(tasker.QueueFull, match=full_message(2)):
            m.try_submit(lambda r: "does not fit")

        gate.open_all()
        assert [h.result(LONG) for h in running_now + more] == ["gate"] * 4
        assert last.result(LONG) == "fits"


def test_submit_waits_for_room_then_proceeds(resources: Resources) -> None:
    with running(resources, workers=1, queue_size=1) as m, Gate() as gate:
        first = m.submit(gate.task)
        gate.wait_entered(1)
        second = m.submit(gate.task)  # waits in the queue, filling it

        returned = threading.Event()
        submitted: list[tasker.TaskHandle[str]] = []

        def produce() -> None:
            submitted.append(m.submit(lambda r: "late"))
            returned.set()

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        wait_until(lambda: parked_in_wait(producer), message="submit() did not wait")
        assert not returned.is_set()
        assert waiting(m) == 1

        gate.release_one()  # the worker finishes `first` and takes `second`: room frees
        assert returned.wait(LONG), "submit() did not proceed once there was room"
        producer.join(LONG)
        gate.wait_entered(2)
        assert first.result(LONG) == "gate"
        assert waiting(m) == 1  # the late task now waits where `second` did
        assert not submitted[0].done()

        gate.release_one()
        assert second.result(LONG) == "gate"
        assert submitted[0].result(LONG) == "late"


def test_queue_task_waits_for_room_then_returns_the_result(resources: Resources) -> None:
    with running(resources, workers=1, queue_size=1) as m, Gate() as gate:
        m.submit(gate.task)
        gate.wait_entered(1)
        m.submit(lambda r: None)
        results: list[str] = []
        caller = threading.Thread(
            target=lambda: results.append(m.queue_task(lambda r: "done")), daemon=True
        )
        caller.start()
        wait_until(lambda: parked_in_wait(caller))
        assert results == []
        gate.open_all()
        caller.join(LONG)
        assert results == ["done"]


def test_each_task_leaving_the_queue_lets_one_blocked_producer_in(resources: Resources) -> None:
    with running(resources, workers=1, queue_size=2) as m, Gate() as gate:
        m.submit(gate.task)
        gate.wait_entered(1)
        for _ in range(2):
            m.submit(gate.task)
        handles: list[tasker.TaskHandle[str]] = []
        lock = threading.Lock()

        def produce() -> None:
            handle = m.submit(gate.task)
            with lock:
                handles.append(handle)

        producers = [threading.Thread(target=produce, daemon=True) for _ in range(4)]
        for producer in producers:
            producer.start()
        for producer in producers:
            wait_until(lambda producer=producer: parked_in_wait(producer))

        # Every task is a gate task: releasing the running one lets the worker take
        # exactly one waiting task, which frees exactly one slot for one producer.
        for released in range(1, 5):
            gate.release_one()
            gate.wait_entered(released + 1)
            wait_until(lambda released=released: len(handles) == released)
            assert waiting(m) == 2
        assert len(handles) == 4
        gate.open_all()
        for producer in producers:
            producer.join(LONG)
        assert [h.result(LONG) for h in handles] == ["gate"] * 4


def test_queue_size_zero_is_unbounded(resources: Resources) -> None:
    with running(resources, workers=1, queue_size=0) as m, Gate() as gate:
        m.submit(gate.task)
        gate.wait_entered(1)
        handles = [m.try_submit(lambda r, i=i: i, priority=i % 2 == 0) for i in range(2000)]
        handles += [m.submit(lambda r: -1) for _ in range(100)]
        assert waiting(m) == 2100
        gate.open_all()
        assert sum(h.result(LONG) for h in handles) == sum(range(2000)) - 100
