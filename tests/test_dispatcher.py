"""The dispatcher (DESIGN §4): ``dispatch(source, *, batch_size, flush_interval)``.

A background thread moves callables from an iterable or a ``queue.Queue`` into the
manager with ``submit_many``, ``batch_size`` at a time; a partial batch goes after
``flush_interval`` without more items, and at once on ``stop()``. An iterable source
ends when exhausted, a ``queue.Queue`` when it yields ``None`` or on ``stop()`` (items it
did not take stay in the caller's queue). Nothing taken from the source is dropped: it is
counted in ``submitted``, or in ``failed`` (with a WARNING) when the manager closed under
the dispatcher, which then ends cleanly.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

import tasker
from tasker._queue import TaskQueue
from tasker.testing import Gate, Resource, Resources, is_blocked, wait_until

Manager = tasker.TaskManager[Resource, Any]
Task = Callable[[Resource], Any]

LONG = 30.0  # a safety net against hangs, never reached when the test passes
NEVER = 3600.0  # a flush interval no test waits for: only size, end or stop() flush


@contextlib.contextmanager
def manager_for(res: Resources, **options: Any) -> Iterator[Manager]:
    """One worker, no bursting, no pool; killed on the way out if the test did not stop it."""
    options.setdefault("burst_interval", None)
    options.setdefault("resource_pool_size", 0)
    options.setdefault("workers", 1)
    options.setdefault("name", "disp")
    manager: Manager = tasker.TaskManager(res.create, on_destroy=res.destroy, **options)
    try:
        yield manager
    finally:
        manager.kill()


@contextlib.contextmanager
def dispatching(
    manager: Manager, source: Any, *releases: Callable[[], None], **options: Any
) -> Iterator[tasker.Dispatcher]:
    """A dispatcher that is stopped and joined on the way out, whatever the test did."""
    dispatcher = manager.dispatch(source, **options)
    try:
        yield dispatcher
    finally:
        for release in releases:
            release()
        dispatcher.stop()
        assert dispatcher.join(LONG)


def dispatcher_thread(manager: Manager) -> threading.Thread:
    (thread,) = [t for t in threading.enumerate() if t.name == f"{manager.name}-dispatcher"]
    return thread


class Log:
    """Tasks that append their number to a shared list when they run."""

    def __init__(self) -> None:
        self.ran: list[int] = []
        self._lock = threading.Lock()

    def task(self, n: int) -> Task:
        def run(resource: Resource) -> int:
            with self._lock:
                self.ran.append(n)
            return n

        return run

    def tasks(self, numbers: Iterable[int]) -> list[Task]:
        return [self.task(n) for n in numbers]


class SlowSource:
    """An iterable that yields ``items`` but blocks before item ``pause_at`` until released.

    ``yielded`` counts what the dispatcher took from it.
    """

    def __init__(self, items: list[Any], pause_at: int) -> None:
        self.items = items
        self.pause_at = pause_at
        self.yielded = 0
        self.paused = threading.Event()
        self._go = threading.Event()

    def __iter__(self) -> Iterator[Any]:
        for i, item in enumerate(self.items):
            if i == self.pause_at:
                self.paused.set()
                self._go.wait(LONG)
            self.yielded += 1
            yield item

    def release(self) -> None:
        self._go.set()


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


# -- sources ------------------------------------------------------------------------------


def test_dispatch_from_an_iterable_submits_every_item(resources: Resources) -> None:
    log = Log()
    with manager_for(resources) as manager:
        with dispatching(manager, iter(log.tasks(range(25))), batch_size=10) as dispatcher:
            assert dispatcher.join(LONG) is True
            assert not dispatcher.running
            assert (dispatcher.submitted, dispatcher.failed) == (25, 0)
        manager.stop()
    assert sorted(log.ran) == list(range(25))


def test_dispatch_from_a_queue_ends_when_it_yields_none(resources: Resources) -> None:
    log = Log()
    source: queue.Queue[Task | None] = queue.Queue()
    for task in log.tasks(range(5)):
        source.put(task)
    with manager_for(resources) as manager:
        with dispatching(manager, source, batch_size=2, flush_interval=NEVER) as dispatcher:
            assert dispatcher.join(timeout=0) is False  # the queue is open: still running
            for task in log.tasks(range(5, 8)):
                source.put(task)
            source.put(None)

            assert dispatcher.join(LONG) is True
            assert (dispatcher.submitted, dispatcher.failed) == (8, 0)
        manager.stop()
    assert sorted(log.ran) == list(range(8))


def test_dispatch_accepts_work_objects(resources: Resources) -> None:
    class Job:
        name = "job"

        def __init__(self, n: int) -> None:
            self.n = n

        def execute(self, resource: Resource) -> int:
            done.append(self.n)
            return self.n

    done: list[int] = []
    with manager_for(resources) as manager:
        with dispatching(manager, [Job(n) for n in range(3)]) as dispatcher:
            assert dispatcher.join(LONG)
            assert dispatcher.submitted == 3
        manager.stop()
    assert sorted(done) == [0, 1, 2]


def test_options_apply_to_every_dispatched_task(resources: Resources) -> None:
    gate = Gate()
    ids: list[str] = []

    def task(resource: Resource) -> None:
        context = tasker.current_task()
        assert context is not None
        ids.append(context.id)

    with manager_for(resources) as manager:
        manager.submit(gate)
        assert gate.started.wait(LONG)
        with dispatching(manager, [task] * 3, name="fed", priority=True) as dispatcher:
            assert dispatcher.join(LONG)
            assert manager.stats().priority_tasks == 3
            gate.release()
            manager.stop()
        assert [manager.status(i).name for i in ids] == ["fed"] * 3


# -- batching and flushing ----------------------------------------------------------------


def test_items_are_submitted_in_batches_of_batch_size(
    resources: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = Log()
    sizes: list[int] = []
    with manager_for(resources) as manager:
        real_submit_batch = manager._submit_batch  # what submit_many and the dispatcher use

        def spy(fns: Any, options: Any) -> Any:
            batch = list(fns)
            sizes.append(len(batch))
            return real_submit_batch(batch, options)

        monkeypatch.setattr(manager, "_submit_batch", spy)
        source = log.tasks(range(25))
        with dispatching(manager, source, batch_size=10, flush_interval=NEVER) as dispatcher:
            assert dispatcher.join(LONG)
            assert dispatcher.submitted == 25
        manager.stop()
    assert sizes == [10, 10, 5]
    assert sorted(log.ran) == list(range(25))


def test_a_partial_batch_from_a_queue_is_flushed_after_flush_interval(
    resources: Resources,
) -> None:
    log = Log()
    source: queue.Queue[Task | None] = queue.Queue()
    for task in log.tasks(range(3)):
        source.put(task)
    with (
        manager_for(resources) as manager,
        dispatching(manager, source, batch_size=10, flush_interval=0.01) as dispatcher,
    ):
        wait_until(lambda: dispatcher.submitted == 3)
        assert dispatcher.running  # flushed on time, not because the source ended
        wait_until(lambda: sorted(log.ran) == [0, 1, 2])


def test_a_partial_batch_from_a_slow_iterable_is_flushed_after_flush_interval(
    resources: Resources,
) -> None:
    log = Log()
    source = SlowSource(log.tasks(range(5)), pause_at=3)
    with manager_for(resources) as manager:
        with dispatching(
            manager, source, source.release, batch_size=10, flush_interval=0.01
        ) as dispatcher:
            # The iterable is stuck making item 3; the 3 items it made go anyway.
            wait_until(lambda: dispatcher.submitted == 3)
            assert source.yielded == 3
            assert dispatcher.running

            source.release()
            assert dispatcher.join(LONG)
            assert (dispatcher.submitted, dispatcher.failed) == (5, 0)
        manager.stop()
    assert sorted(log.ran) == list(range(5))


# -- stop() -------------------------------------------------------------------------------


def test_stop_flushes_a_partial_batch_at_once(resources: Resources) -> None:
    log = Log()
    source: queue.Queue[Task | None] = queue.Queue()
    for task in log.tasks(range(3)):
        source.put(task)
    with manager_for(resources) as manager:
        with dispatching(manager, source, batch_size=10, flush_interval=NEVER) as dispatcher:
            wait_until(source.empty)  # the dispatcher holds the 3 items in its batch
            assert dispatcher.submitted == 0

            dispatcher.stop()

            assert dispatcher.join(LONG) is True
            assert (dispatcher.submitted, dispatcher.failed) == (3, 0)
        manager.stop()
    assert sorted(log.ran) == [0, 1, 2]


def test_stop_flushes_a_slow_iterables_partial_batch_and_drops_nothing_taken(
    resources: Resources,
) -> None:
    log = Log()
    source = SlowSource(log.tasks(range(10)), pause_at=3)
    with manager_for(resources) as manager:
        with dispatching(
            manager, source, source.release, batch_size=10, flush_interval=NEVER
        ) as dispatcher:
            assert source.paused.wait(LONG)

            dispatcher.stop()
            wait_until(lambda: dispatcher.submitted == 3)  # at once, not after NEVER

            source.release()  # the item the iterable was making when stop() came
            assert dispatcher.join(LONG)
            assert dispatcher.failed == 0
            assert dispatcher.submitted == source.yielded  # every item taken was submitted
            assert source.yielded < 10  # and it stopped taking more
        manager.stop()
    assert sorted(log.ran) == list(range(source.yielded))


def test_stop_leaves_the_items_it_did_not_take_in_the_callers_queue(
    resources: Resources,
) -> None:
    log = Log()
    gate = Gate()
    source: queue.Queue[Task | None] = queue.Queue()
    for task in log.tasks(range(4)):
        source.put(task)
    with manager_for(resources, queue_size=1) as manager:
        manager.submit(gate)
        assert gate.started.wait(LONG)
        with dispatching(manager, source, gate.release, batch_size=1) as dispatcher:
            # Item 0 filled the bounded queue; the dispatcher waits for room for item 1.
            wait_until(lambda: is_blocked(dispatcher_thread(manager), inside=TaskQueue.put_many))
            assert source.qsize() == 2

            dispatcher.stop()
            gate.release()

            assert dispatcher.join(LONG)
            assert (dispatcher.submitted, dispatcher.failed) == (2, 0)
            assert source.qsize() == 2  # items 2 and 3 were never taken
        manager.stop()
    assert log.ran == [0, 1]


# -- the manager closes under the dispatcher ----------------------------------------------


def test_a_manager_stopped_under_a_queue_dispatcher_ends_it_and_counts_what_failed(
    resources: Resources, caplog: pytest.LogCaptureFixture
) -> None:
    log = Log()
    source: queue.Queue[Task | None] = queue.Queue()
    for task in log.tasks(range(2)):
        source.put(task)
    with (
        manager_for(resources) as manager,
        dispatching(manager, source, batch_size=2, flush_interval=NEVER) as dispatcher,
    ):
        wait_until(lambda: dispatcher.submitted == 2)
        manager.stop()
        assert sorted(log.ran) == [0, 1]

        with caplog.at_level(logging.WARNING, logger="tasker"):
            for task in log.tasks(range(2, 5)):
                source.put(task)
            source.put(None)

            assert dispatcher.join(LONG) is True
        # It took items 2 and 3 (one batch), could not submit them, and ended.
        assert (dispatcher.submitted, dispatcher.failed) == (2, 2)
        assert source.qsize() == 2  # item 4 and the None are still the caller's
    assert sorted(log.ran) == [0, 1]
    assert warnings_about(caplog, "could not be submitted")


def test_a_manager_stopped_under_an_iterable_dispatcher_counts_everything_taken(
    resources: Resources, caplog: pytest.LogCaptureFixture
) -> None:
    log = Log()
    source = SlowSource(log.tasks(range(12)), pause_at=2)
    with (
        manager_for(resources) as manager,
        dispatching(
            manager, source, source.release, batch_size=2, flush_interval=NEVER
        ) as dispatcher,
    ):
        wait_until(lambda: dispatcher.submitted == 2)
        manager.stop()

        with caplog.at_level(logging.WARNING, logger="tasker"):
            source.release()
            assert dispatcher.join(LONG) is True

        assert dispatcher.submitted == 2
        assert dispatcher.failed >= 2  # at least the batch it tried to submit
        assert dispatcher.submitted + dispatcher.failed == source.yielded
    assert sorted(log.ran) == [0, 1]
    assert warnings_about(caplog, "could not be submitted")


def test_a_batch_cut_short_by_the_close_counts_only_what_was_not_queued(
    resources: Resources,
) -> None:
    log = Log()
    gate = Gate()
    source: queue.Queue[Task | None] = queue.Queue()
    for task in log.tasks(range(4)):
        source.put(task)
    with manager_for(resources, queue_size=2) as manager:
        manager.submit(gate)
        assert gate.started.wait(LONG)
        with dispatching(manager, source, gate.release, batch_size=4, flush_interval=NEVER) as d:
            # Two of the batch fit under the bound; the dispatcher waits for room.
            wait_until(lambda: is_blocked(dispatcher_thread(manager), inside=TaskQueue.put_many))
            stopper = threading.Thread(target=manager.stop)
            stopper.start()
            assert d.join(LONG)

            gate.release()
            stopper.join(LONG)
            assert not stopper.is_alive()

            assert log.ran == [0, 1]  # queued before the close, drained by stop()
            assert (d.submitted, d.failed) == (2, 2)


def test_a_manager_killed_under_a_dispatcher_ends_it(resources: Resources) -> None:
    log = Log()
    source: queue.Queue[Task | None] = queue.Queue()
    with (
        manager_for(resources) as manager,
        dispatching(manager, source, batch_size=1, flush_interval=NEVER) as dispatcher,
    ):
        manager.kill()
        source.put(log.task(0))

        assert dispatcher.join(LONG) is True
        assert (dispatcher.submitted, dispatcher.failed) == (0, 1)
    assert log.ran == []


# -- bad items, a failing source ----------------------------------------------------------


def test_a_non_callable_item_is_counted_as_failed_and_the_dispatch_goes_on(
    resources: Resources, caplog: pytest.LogCaptureFixture
) -> None:
    log = Log()
    items: list[Any] = [log.task(0), 42, log.task(2)]
    with manager_for(resources) as manager:
        with (
            caplog.at_level(logging.WARNING, logger="tasker"),
            dispatching(manager, items, batch_size=1) as dispatcher,
        ):
            assert dispatcher.join(LONG)
            assert (dispatcher.submitted, dispatcher.failed) == (2, 1)
        manager.stop()
    assert sorted(log.ran) == [0, 2]
    assert warnings_about(caplog, "not submitted")


def test_a_source_that_raises_ends_the_dispatch_after_submitting_what_it_gave(
    resources: Resources, caplog: pytest.LogCaptureFixture
) -> None:
    log = Log()

    def broken() -> Iterator[Task]:
        yield log.task(0)
        yield log.task(1)
        raise OSError("source broke")

    with manager_for(resources) as manager:
        with (
            caplog.at_level(logging.WARNING, logger="tasker"),
            dispatching(manager, broken(), batch_size=10) as dispatcher,
        ):
            assert dispatcher.join(LONG)
            assert (dispatcher.submitted, dispatcher.failed) == (2, 0)
        manager.stop()
    assert sorted(log.ran) == [0, 1]
    assert any(r.levelno >= logging.ERROR and "source" in r.getMessage() for r in caplog.records)


# -- arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"batch_size": 0}, ValueError, r"batch_size must be >= 1 \(got batch_size=0\)"),
        ({"batch_size": 2.5}, TypeError, r"batch_size must be an int"),
        ({"batch_size": True}, TypeError, r"batch_size must be an int"),
        ({"flush_interval": 0}, ValueError, r"flush_interval must be .* > 0"),
        ({"flush_interval": -1.0}, ValueError, r"flush_interval=-1.0"),
        ({"flush_interval": float("inf")}, ValueError, r"flush_interval=inf"),
        ({"flush_interval": "1s"}, TypeError, r"flush_interval must be a number"),
        ({"colour": "red"}, TypeError, r"unexpected option\(s\) colour"),
    ],
)
def test_invalid_dispatch_arguments_are_refused(
    resources: Resources, options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with manager_for(resources) as manager, pytest.raises(error, match=match):
        manager.dispatch([lambda resource: None], **options)


@pytest.mark.parametrize("source", [42, None])
def test_a_source_that_is_neither_iterable_nor_a_queue_is_a_type_error(
    resources: Resources, source: Any
) -> None:
    with (
        manager_for(resources) as manager,
        pytest.raises(TypeError, match=r"source must be an iterable or a queue\.Queue"),
    ):
        manager.dispatch(source)
