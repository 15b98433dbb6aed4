"""Priority: waiting priority tasks always start before waiting main tasks; FIFO in each."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import tasker
from tasker.testing import Resource, Resources, is_blocked, wait_until

LONG = 30.0  # a safety net against hangs, never reached when the test passes

Manager = tasker.TaskManager[Resource, Any]


@contextlib.contextmanager
def single_worker(resources: Resources) -> Iterator[Manager]:
    """One worker and no bursting, so the start order is the order the queue hands out."""
    manager: Manager = tasker.TaskManager(
        resources.create,
        on_destroy=resources.destroy,
        workers=1,
        burst_interval=None,
        name="priority",
    )
    try:
        yield manager
    finally:
        manager.kill()


class Recorder:
    """Tasks that append their label to ``order`` when they start."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self._lock = threading.Lock()

    def task(self, label: str) -> Callable[[Resource], str]:
        def run(resource: Resource) -> str:
            with self._lock:
                self.order.append(label)
            return label

        return run


class Gate:
    """A task that holds the single worker until the gate opens (always, on exit)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def task(self, resource: Resource) -> None:
        self.entered.set()
        self.opened.wait(LONG)

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.opened.set()


def hold_worker(m: Manager, gate: Gate) -> None:
    m.submit(gate.task)
    assert gate.entered.wait(LONG)


def parked_in_wait(thread: threading.Thread) -> bool:
    """True when ``thread`` sleeps in a blocking wait."""
    return is_blocked(thread)


@pytest.mark.parametrize(
    "submitted",
    [
        "m1 p1 m2 p2 m3 p3",
        "m1 m2 m3 m4 p1 p2",
        "p1 p2 p3 m1 m2 m3",
        "p1 m1 m2 m3 m4 m5 m6 p2",
    ],
)
def test_waiting_priority_tasks_start_before_waiting_main_tasks_fifo_within_each(
    resources: Resources, submitted: str
) -> None:
    labels = submitted.split()
    recorder = Recorder()
    with single_worker(resources) as m, Gate() as gate:
        hold_worker(m, gate)
        handles = [
            m.submit(recorder.task(label), priority=label.startswith("p")) for label in labels
        ]
        assert m.stats().priority_tasks == sum(label.startswith("p") for label in labels)
        gate.opened.set()
        assert [h.result(LONG) for h in handles] == labels

    priority = [label for label in labels if label.startswith("p")]
    main = [label for label in labels if label.startswith("m")]
    assert recorder.order == priority + main


def test_priority_task_queued_by_a_running_task_overtakes_waiting_main_tasks(
    resources: Resources,
) -> None:
    recorder = Recorder()
    with single_worker(resources) as m, Gate() as gate:
        hold_worker(m, gate)

        def spawn(resource: Resource) -> None:
            recorder.task("m1")(resource)
            m.submit(recorder.task("p1"), priority=True)
            m.submit(recorder.task("m4"))
            m.submit(recorder.task("p2"), priority=True)

        handles = [m.submit(spawn)] + [m.submit(recorder.task(f"m{i}")) for i in (2, 3)]
        gate.opened.set()
        for handle in handles:
            handle.result(LONG)
        wait_until(lambda: len(recorder.order) == 6)

    assert recorder.order == ["m1", "p1", "p2", "m2", "m3", "m4"]


def test_queue_task_with_priority_jumps_the_waiting_main_tasks(resources: Resources) -> None:
    recorder = Recorder()
    results: list[str] = []
    with single_worker(resources) as m, Gate() as gate:
        hold_worker(m, gate)
        main = [m.submit(recorder.task(f"m{i}")) for i in range(3)]
        callers = [
            threading.Thread(
                target=lambda: results.append(m.queue_task_with_priority(recorder.task("p1"))),
                daemon=True,
            )
        ]
        callers[0].start()
        wait_until(lambda: m.stats().priority_tasks == 1)
        callers.append(
            threading.Thread(
                target=lambda: results.append(m.queue_task_with_priority_once(recorder.task("p2"))),
                daemon=True,
            )
        )
        callers[1].start()
        for caller in callers:
            wait_until(lambda caller=caller: parked_in_wait(caller))
        assert m.stats().priority_tasks == 2
        gate.opened.set()
        for caller in callers:
            caller.join(LONG)
        for handle in main:
            handle.result(LONG)

    assert recorder.order == ["p1", "p2", "m0", "m1", "m2"]
    assert sorted(results) == ["p1", "p2"]


def test_map_with_priority_runs_ahead_of_waiting_main_tasks(resources: Resources) -> None:
    recorder = Recorder()
    with single_worker(resources) as m, Gate() as gate:
        hold_worker(m, gate)
        main = [m.submit(recorder.task(f"m{i}")) for i in range(2)]
        mapped = m.map(lambda r, i: recorder.task(f"p{i}")(r), range(3), priority=True)
        gate.opened.set()
        assert list(mapped) == ["p0", "p1", "p2"]
        for handle in main:
            handle.result(LONG)

    assert recorder.order == ["p0", "p1", "p2", "m0", "m1"]
