"""Shutdown (DESIGN §3): stop() drains, kill() cancels, nobody hangs, nothing leaks."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import tasker
from tasker.testing import Resource, Resources, is_blocked, wait_until

NAME = "shutdown"
LONG = 30.0  # a safety net against hangs, never reached when the test passes

Manager = tasker.TaskManager[Resource, Any]


class Unhealthy(Exception):
    """An error ``check_health`` rejects."""


def make_manager(resources: Resources, **options: Any) -> Manager:
    options.setdefault("burst_interval", None)
    options.setdefault("name", NAME)
    return tasker.TaskManager(resources.create, on_destroy=resources.destroy, **options)


@contextlib.contextmanager
def running(resources: Resources, **options: Any) -> Iterator[Manager]:
    """A manager that is killed on the way out if the test did not shut it down."""
    manager = make_manager(resources, **options)
    try:
        yield manager
    finally:
        manager.kill()


class Gate:
    """Tasks that hold their worker until the gate opens; it opens on exit, always."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self._lock = threading.Lock()
        self.entered = 0
        self.resources: list[Resource] = []
        self.contexts: list[tasker.TaskContext] = []

    def task(self, resource: Resource) -> str:
        context = tasker.current_task()
        assert context is not None
        with self._lock:
            self.entered += 1
            self.resources.append(resource)
            self.contexts.append(context)
        self.opened.wait(LONG)  # deliberately ignores cancellation
        return "gate"

    def wait_entered(self, count: int) -> None:
        wait_until(lambda: self.entered >= count, message=f"{count} gate tasks never started")

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.opened.set()


class Outcome:
    """Runs a call in a thread and keeps what it returned or raised."""

    def __init__(self, call: Callable[[], object]) -> None:
        self.value: object = None
        self.error: BaseException | None = None
        # daemon: a failing test must not also hang the interpreter at exit
        self.thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self.thread.start()

    def _run(self, call: Callable[[], object]) -> None:
        try:
            self.value = call()
        except BaseException as exc:
            self.error = exc

    def done(self) -> bool:
        return not self.thread.is_alive()

    def join(self) -> None:
        self.thread.join(LONG)
        assert not self.thread.is_alive(), "the call never returned"


def manager_threads(name: str = NAME) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(f"{name}-") and t.is_alive()]


def refuses_work(manager: Manager) -> bool:
    """True once shutdown has begun (run_task is the one entry point that queues nothing)."""
    try:
        manager.run_task(lambda r: None)
    except tasker.ManagerClosed:
        return True
    return False


def parked_in_wait(thread: threading.Thread) -> bool:
    """True when ``thread`` sleeps in a blocking wait."""
    return is_blocked(thread)


def shut_down(manager: Manager, how: str, timeout: float | None = None) -> None:
    if how == "stop":
        manager.stop(timeout)
    else:
        manager.kill(timeout)


# -- stop() drains ----------------------------------------------------------------------


def test_stop_runs_every_queued_task_and_delivers_its_result(resources: Resources) -> None:
    with running(resources, workers=2) as m, Gate() as gate:
        held = [m.submit(gate.task) for _ in range(2)]
        gate.wait_entered(2)
        queued = [m.submit(lambda r, i=i: i * 10) for i in range(20)]
        queued += [m.submit(lambda r, i=i: -i, priority=True) for i in range(5)]

        stopper = Outcome(m.stop)
        wait_until(lambda: refuses_work(m))
        assert not any(h.done() for h in queued), "tasks ran before the workers were free"
        gate.opened.set()
        stopper.join()

        assert stopper.error is None
        assert [h.result(0) for h in held] == ["gate", "gate"]
        assert [h.result(0) for h in queued] == [i * 10 for i in range(20)] + [-i for i in range(5)]
        assert not any(h.cancelled() for h in queued)
        assert resources.created == resources.destroyed == 4  # 2 pool + 2 workers
        assert manager_threads() == []


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_stop_and_kill_leave_no_manager_thread_and_destroy_every_resource(
    resources: Resources, how: str
) -> None:
    m = make_manager(
        resources,
        workers=2,
        max_workers=4,
        resource_pool_size=2,
        burst_interval=0.01,
        check_health=lambda exc: not isinstance(exc, Unhealthy),
    )
    try:
        assert m.run_task(lambda r: r.number) in {1, 2}  # a pooled resource
        failed = m.submit(lambda r: (_ for _ in ()).throw(Unhealthy("sick")), once=True)
        with pytest.raises(Unhealthy, match="sick"):
            failed.result(LONG)
        wait_until(lambda: m.stats().active_workers == 2)  # the sick worker was replaced
        handles = [m.submit(lambda r, i=i: i) for i in range(50)]
        assert f"{NAME}-burst" in manager_threads()
    finally:
        shut_down(m, how)

    # Checked the moment the call returns: nothing may still be winding down.
    assert manager_threads() == []
    assert resources.created == resources.destroyed
    assert all(r.destroyed for r in resources.made)
    assert resources.created >= 5  # 2 pool + 2 workers + the replacement
    assert all(h.done() for h in handles)


# -- kill() cancels -----------------------------------------------------------------------


def test_kill_cancels_queued_tasks_at_once(resources: Resources) -> None:
    ran = threading.Event()
    with running(resources, workers=1) as m, Gate() as gate:
        held = m.submit(gate.task)
        gate.wait_entered(1)
        queued = [m.submit(lambda r: ran.set()) for _ in range(4)]
        queued.append(m.submit(lambda r: ran.set(), priority=True))

        killer = Outcome(m.kill)
        # The running task ignores cancellation, so kill() is still waiting for it,
        # yet every queued task has already ended cancelled.
        wait_until(lambda: all(h.done() for h in queued))
        assert not killer.done()
        for handle in queued:
            assert handle.cancelled()
            with pytest.raises(concurrent.futures.CancelledError):
                handle.result(0)
        assert m.metrics().total_cancelled == 5

        gate.opened.set()
        killer.join()
        assert killer.error is None
        assert held.result(0) == "gate"
        assert not ran.is_set()
        assert m.metrics().total_cancelled == 5


def test_kill_sets_cancelled_for_running_tasks(resources: Resources) -> None:
    contexts: list[tasker.TaskContext] = []
    started = threading.Barrier(3)

    def cooperative(resource: Resource) -> bool:
        context = tasker.current_task()
        assert context is not None
        contexts.append(context)
        started.wait(LONG)
        return context.cancelled.wait(LONG)

    with running(resources, workers=2) as m:
        handles = [m.submit(cooperative) for _ in range(2)]
        started.wait(LONG)
        assert not any(c.cancelled.is_set() for c in contexts)
        m.kill()
        assert [h.result(0) for h in handles] == [True, True]
        assert all(c.cancelled.is_set() for c in contexts)


@pytest.mark.parametrize("ending", ["returns", "raises"])
def test_task_running_when_killed_still_delivers_its_outcome(
    resources: Resources, ending: str
) -> None:
    def finish(resource: Resource) -> str:
        gate.task(resource)
        if ending == "raises":
            raise ValueError("failed after kill")
        return "finished after kill"

    with running(resources, workers=1) as m, Gate() as gate:
        handle = m.submit(finish)
        gate.wait_entered(1)
        killer = Outcome(m.kill)
        wait_until(lambda: gate.contexts[0].cancelled.is_set())
        assert not handle.done()
        gate.opened.set()
        killer.join()

        assert not handle.cancelled()
        if ending == "raises":
            with pytest.raises(ValueError, match="failed after kill"):
                handle.result(0)
        else:
            assert handle.result(0) == "finished after kill"


def test_kill_with_timeout_returns_logs_the_running_task_and_cleans_up_when_it_ends(
    resources: Resources, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tasker")
    m = make_manager(resources, workers=2)
    with Gate() as gate:
        stuck = m.submit(gate.task)
        gate.wait_entered(1)
        queued = [m.submit(lambda r: None) for _ in range(3)]
        stuck_resource = gate.resources[0]

        m.kill(timeout=0.05)

        assert stuck.running()
        assert all(h.cancelled() for h in queued)
        warnings = [
            r.getMessage() for r in caplog.records if r.name == "tasker" and r.levelno >= 30
        ]
        assert any(re.search(rf"{re.escape(stuck.id)}\b", text) for text in warnings), warnings
        assert not stuck_resource.destroyed
        with pytest.raises(tasker.ManagerClosed, match="shutting down"):
            m.submit(lambda r: None)

        gate.opened.set()
        assert stuck.result(LONG) == "gate"
        wait_until(lambda: stuck_resource.destroyed, message="the stuck worker kept its resource")

    m.kill()  # no timeout: finish the shutdown
    assert manager_threads() == []
    assert resources.created == resources.destroyed == 4


# -- idempotent and thread-safe -------------------------------------------------------------


def test_stop_and_kill_are_idempotent(
    resources: Resources, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tasker")
    m = make_manager(resources, workers=2)
    handles = [m.submit(lambda r, i=i: i) for i in range(10)]
    m.stop()
    created = resources.created
    m.stop()
    m.kill()
    m.stop(timeout=0)
    m.kill(timeout=0)
    with m:
        pass
    assert [h.result(0) for h in handles] == list(range(10))
    assert resources.created == resources.destroyed == created
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert manager_threads() == []


def test_concurrent_stop_and_kill_calls_all_return_after_cleanup(resources: Resources) -> None:
    callers = 8
    barrier = threading.Barrier(callers)
    m = make_manager(resources, workers=3, resource_pool_size=2)
    handles = [m.submit(lambda r, i=i: i) for i in range(200)]
    seen: list[tuple[int, list[str]]] = []
    lock = threading.Lock()

    def call(how: str) -> None:
        barrier.wait(LONG)
        shut_down(m, how)
        with lock:
            seen.append((resources.live, manager_threads()))

    outcomes = [Outcome(lambda how=how: call(how)) for how in ["stop", "kill"] * (callers // 2)]
    for outcome in outcomes:
        outcome.join()

    assert [o.error for o in outcomes] == [None] * callers
    assert seen == [(0, [])] * callers, "a call returned before the shutdown was complete"
    assert all(h.done() for h in handles)
    assert resources.created == resources.destroyed


def test_a_second_stop_waits_until_the_first_has_destroyed_every_resource() -> None:
    resources = Resources()
    destroying = threading.Event()
    may_destroy = threading.Event()

    def slow_destroy(resource: Resource) -> None:
        if resource.number == 1:  # the run_task pool resource, made first
            destroying.set()
            may_destroy.wait(LONG)
        resources.destroy(resource)

    m: Manager = tasker.TaskManager(
        resources.create,
        on_destroy=slow_destroy,
        workers=1,
        resource_pool_size=1,
        burst_interval=None,
        name=NAME,
    )

    def stop_then_count_live() -> int:
        m.stop()
        return resources.live

    try:
        first = Outcome(m.stop)
        assert destroying.wait(LONG)
        second = Outcome(stop_then_count_live)
        # A correct second stop() is still waiting here; this pause can only let a
        # wrong one return early, never make a correct one fail.
        second.thread.join(0.5)
    finally:
        may_destroy.set()
    first.join()
    second.join()
    assert second.error is None
    assert second.value == 0, "stop() returned while another stop() was destroying resources"
    assert resources.live == 0


# -- refusing work afterwards ---------------------------------------------------------------


def _noop(resource: Resource) -> None:
    return None


ENTRY_POINTS: dict[str, Callable[[Manager], object]] = {
    "submit": lambda m: m.submit(_noop),
    "submit_priority": lambda m: m.submit(_noop, priority=True),
    "submit_once": lambda m: m.submit(_noop, once=True),
    "try_submit": lambda m: m.try_submit(_noop),
    "queue_task": lambda m: m.queue_task(_noop),
    "queue_task_with_priority": lambda m: m.queue_task_with_priority(_noop),
    "queue_task_once": lambda m: m.queue_task_once(_noop),
    "queue_task_with_priority_once": lambda m: m.queue_task_with_priority_once(_noop),
    "map": lambda m: list(m.map(lambda r, x: x, [1, 2, 3])),
    "run_task": lambda m: m.run_task(_noop),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("how", ["stop", "kill"])
def test_every_entry_point_raises_manager_closed_after_shutdown(
    resources: Resources, how: str, entry: str
) -> None:
    m = make_manager(resources, workers=1, queue_size=4)
    shut_down(m, how)
    created = resources.created
    with pytest.raises(tasker.ManagerClosed, match="shutting down"):
        ENTRY_POINTS[entry](m)
    assert resources.created == resources.destroyed == created


def test_manager_closed_is_a_runtime_error_and_a_tasker_error(resources: Resources) -> None:
    m = make_manager(resources)
    m.stop()
    with pytest.raises(RuntimeError, match="shutting down") as info:
        m.submit(_noop)
    assert isinstance(info.value, tasker.ManagerClosed)
    assert isinstance(info.value, tasker.TaskerError)


# -- nobody is left waiting ------------------------------------------------------------------


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_stop_and_kill_wake_every_producer_blocked_on_a_full_queue(
    resources: Resources, how: str
) -> None:
    with running(resources, workers=1, queue_size=2) as m, Gate() as gate:
        held = m.submit(gate.task)
        gate.wait_entered(1)
        queued = [m.submit(lambda r, i=i: i) for i in range(2)]
        producers = [Outcome(lambda: m.submit(_noop)) for _ in range(3)]
        producers += [Outcome(lambda: m.queue_task(_noop)) for _ in range(3)]
        producers.append(Outcome(lambda: m.submit(_noop, priority=True)))
        for producer in producers:
            wait_until(lambda producer=producer: parked_in_wait(producer.thread))
        assert not any(p.done() for p in producers)

        shutdown = Outcome(lambda: shut_down(m, how))
        # The worker is still held, so no room ever freed up: only the shutdown woke them.
        wait_until(lambda: all(p.done() for p in producers), message="a producer still waits")
        assert not gate.opened.is_set()
        for producer in producers:
            assert isinstance(producer.error, tasker.ManagerClosed), producer.error
            assert "shutting down" in str(producer.error)

        gate.opened.set()
        shutdown.join()
        assert shutdown.error is None
        assert held.result(0) == "gate"
        if how == "stop":
            assert [h.result(0) for h in queued] == [0, 1]
        else:
            assert all(h.cancelled() for h in queued)


def test_kill_unblocks_every_waiter(resources: Resources) -> None:
    callbacks: list[concurrent.futures.Future[Any]] = []
    with running(resources, workers=1) as m, Gate() as gate:
        m.submit(gate.task)
        gate.wait_entered(1)
        queued = [m.submit(_noop) for _ in range(3)]
        queued[0].add_done_callback(callbacks.append)
        waiters = [
            Outcome(lambda: queued[0].result()),
            Outcome(lambda: queued[1].exception()),
            Outcome(lambda: concurrent.futures.wait(queued)),
            Outcome(lambda: list(concurrent.futures.as_completed(queued))),
            Outcome(lambda: m.queue_task(_noop)),
            Outcome(lambda: m.queue_task_with_priority_once(_noop)),
        ]
        for waiter in waiters:
            wait_until(lambda waiter=waiter: parked_in_wait(waiter.thread))

        killer = Outcome(m.kill)
        wait_until(lambda: all(w.done() for w in waiters), message="a waiter still waits")
        assert not killer.done()  # the held task has not returned yet
        gate.opened.set()
        killer.join()

    cancelled = concurrent.futures.CancelledError
    assert isinstance(waiters[0].error, cancelled)
    assert isinstance(waiters[1].error, cancelled)
    assert waiters[2].error is None
    assert waiters[2].value == (set(queued), set())
    assert waiters[3].error is None
    assert isinstance(waiters[3].value, list)
    assert set(waiters[3].value) == set(queued)
    assert isinstance(waiters[4].error, cancelled)
    assert isinstance(waiters[5].error, cancelled)
    assert callbacks == [queued[0]]


def test_kill_during_stop_cancels_what_is_still_queued(resources: Resources) -> None:
    def cooperative(resource: Resource) -> str:
        context = tasker.current_task()
        assert context is not None
        started.set()
        return "cancelled" if context.cancelled.wait(LONG) else "timed out"

    started = threading.Event()
    ran = threading.Event()
    with running(resources, workers=1) as m:
        first = m.submit(cooperative)
        assert started.wait(LONG)
        queued = [m.submit(lambda r: ran.set()) for _ in range(3)]

        stopper = Outcome(m.stop)
        wait_until(lambda: refuses_work(m))
        assert not stopper.done()  # draining: waits for the running task
        m.kill()
        stopper.join()

        assert stopper.error is None
        assert first.result(0) == "cancelled"
        assert all(h.cancelled() for h in queued)
        assert not ran.is_set()
        assert m.metrics().total_cancelled == 3
    assert manager_threads() == []


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_shutdown_called_from_inside_a_task_does_not_deadlock(
    resources: Resources, how: str
) -> None:
    with running(resources, workers=1) as m, Gate() as gate:
        m.submit(gate.task)
        gate.wait_entered(1)

        def shut_down_from_inside(resource: Resource) -> str:
            shut_down(m, how)
            return "returned"

        inside = m.submit(shut_down_from_inside)
        behind = [m.submit(lambda r, i=i: i) for i in range(3)]
        gate.opened.set()

        assert inside.result(LONG) == "returned"
        if how == "stop":
            assert [h.result(LONG) for h in behind] == [0, 1, 2]  # still drained
        else:
            for handle in behind:
                with pytest.raises(concurrent.futures.CancelledError):
                    handle.result(LONG)
        with pytest.raises(tasker.ManagerClosed, match="shutting down"):
            m.submit(_noop)
        shut_down(m, how)  # from outside: waits for the rest of the shutdown

    assert manager_threads() == []
    assert resources.created == resources.destroyed


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_shutdown_called_from_inside_a_task_completes_without_another_call(
    resources: Resources, how: str
) -> None:
    m = make_manager(resources, workers=2, resource_pool_size=2, burst_interval=0.01)
    try:
        assert m.submit(lambda r: shut_down(m, how)).result(LONG) is None
        # Nobody else calls stop()/kill(): once the task that asked has returned, the
        # workers exit and every resource, the run_task pool's included, is destroyed.
        wait_until(lambda: manager_threads() == [], timeout=5, message="threads left")
        wait_until(lambda: resources.live == 0, timeout=5, message="resources left")
    finally:
        m.kill()
    assert resources.created == resources.destroyed == 4


def test_context_manager_exit_stops_the_manager_gracefully(resources: Resources) -> None:
    gate = Gate()

    def open_once_shutting_down() -> None:
        wait_until(lambda: refuses_work(m), timeout=LONG)
        gate.opened.set()

    with make_manager(resources, workers=1) as m:
        m.submit(gate.task)
        gate.wait_entered(1)
        queued = [m.submit(lambda r, i=i: i) for i in range(5)]
        # Open the gate only once __exit__ has begun shutting down, so the queued
        # tasks are still waiting when it does: they must be run, not cancelled.
        opener = Outcome(open_once_shutting_down)
    opener.join()
    assert [h.result(0) for h in queued] == [0, 1, 2, 3, 4]
    assert resources.created == resources.destroyed == 2
    assert manager_threads() == []
    with pytest.raises(tasker.ManagerClosed, match="shutting down"):
        m.submit(_noop)


def test_program_that_never_stops_its_manager_still_exits() -> None:
    program = textwrap.dedent(
        """
        import atexit
        import threading

        counts = {"created": 0, "destroyed": 0}
        lock = threading.Lock()
        # Registered before tasker is imported, so it runs after tasker's own exit hook.
        atexit.register(lambda: print("at exit:", counts, flush=True))

        import tasker

        def create():
            with lock:
                counts["created"] += 1
            return object()

        def destroy(resource):
            with lock:
                counts["destroyed"] += 1

        def task(resource, i):
            threading.Event().wait(0.01)
            return i

        manager = tasker.TaskManager(create, on_destroy=destroy, workers=2, max_workers=4)
        handles = [manager.submit(lambda r, i=i: task(r, i)) for i in range(20)]
        handles[0].result()
        print("main done:", counts, flush=True)
        """
    )
    root = Path(tasker.__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=LONG,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    before = re.search(r"main done: \{'created': (\d+), 'destroyed': (\d+)\}", done.stdout)
    after = re.search(r"at exit: \{'created': (\d+), 'destroyed': (\d+)\}", done.stdout)
    assert before is not None, done.stdout
    assert after is not None, done.stdout
    created_before, destroyed_before = map(int, before.groups())
    created, destroyed = map(int, after.groups())
    assert created_before >= 4  # 2 pool + 2 workers
    assert destroyed_before == 0
    assert destroyed == created, done.stdout


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_a_shutdown_that_timed_out_is_finished_by_the_last_task_to_end(
    resources: Resources, how: str
) -> None:
    started, release = threading.Event(), threading.Event()

    def stuck(resource: Resource) -> str:
        started.set()
        release.wait(LONG)  # ignores cancellation on purpose
        return "late"

    m: Manager = tasker.TaskManager(
        resources.create, on_destroy=resources.destroy, workers=1, name=NAME
    )
    handle = m.submit(stuck)
    assert started.wait(LONG)
    getattr(m, how)(timeout=0)
    assert resources.live == 2  # the stuck worker's resource and the pooled one

    release.set()  # nobody calls stop() or kill() again
    assert handle.result(LONG) == "late"
    wait_until(lambda: resources.live == 0, message="the late finish never cleaned up")
    wait_until(lambda: not manager_threads(), message=f"left: {manager_threads()}")
    assert repr(m).startswith(f"<TaskManager {NAME!r} closed")
