"""run_task (DESIGN §3): run now, in the caller's thread, on a pooled or temporary resource.

No queue is involved: the caller's own thread runs ``fn`` on an idle resource from the
``run_task`` pool, or on a temporary resource made for the call and destroyed after it.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

import tasker
from tasker.testing import Resource, Resources, wait_until


class Sick(Exception):
    """An error that ``check_health`` judges unhealthy."""


class Mild(Exception):
    """An error that ``check_health`` judges healthy."""


def healthy_unless_sick(exc: BaseException) -> bool:
    return not isinstance(exc, Sick)


def make(res: Resources, **options: Any) -> tasker.TaskManager[Resource, Any]:
    """One base worker, no bursting; the pool's resources are made first (calls 1..n)."""
    options.setdefault("workers", 1)
    options.setdefault("burst_interval", None)
    options.setdefault("check_health", healthy_unless_sick)
    return tasker.TaskManager(res.create, on_destroy=res.destroy, **options)


def refuses(m: tasker.TaskManager[Resource, Any]) -> bool:
    """True once the manager refuses new work (stop() or kill() has begun)."""
    try:
        m.submit(lambda r: None).cancel()
    except tasker.ManagerClosed:
        return True
    return False


def test_run_task_runs_in_the_callers_thread(resources: Resources) -> None:
    with make(resources) as m:
        assert m.run_task(lambda r: threading.current_thread()) is threading.current_thread()


def test_run_task_uses_a_pooled_resource_and_gives_it_back(resources: Resources) -> None:
    with make(resources, resource_pool_size=2) as m:
        pool = resources.made[:2]  # the pool is made before the workers
        assert m.stats().available_resources == 2

        used, available = m.run_task(lambda r: (r, m.stats().available_resources))

        assert used in pool
        assert available == 1
        assert m.stats().available_resources == 2
        assert resources.created == 3
        assert resources.destroyed == 0
        assert m.run_task(lambda r: r) in pool
    assert resources.created == resources.destroyed == 3


def test_run_task_with_no_pool_makes_a_temporary_resource_and_destroys_it(
    resources: Resources,
) -> None:
    with make(resources, resource_pool_size=0) as m:
        assert m.stats().available_resources == 0
        used = m.run_task(lambda r: r)
        assert used.number == 2  # call 1 was the base worker
        assert used.thread == threading.current_thread().name
        assert used.destroyed
        assert resources.created == 2
        assert resources.destroyed == 1
        assert m.stats().available_resources == 0
    assert resources.created == resources.destroyed == 2


def test_run_task_makes_a_temporary_resource_when_the_pool_is_exhausted(
    resources: Resources,
) -> None:
    holding, release = threading.Event(), threading.Event()
    held: list[Resource] = []

    def hold(resource: Resource) -> None:
        held.append(resource)
        holding.set()
        release.wait()

    with make(resources, resource_pool_size=1) as m:
        (pooled,) = resources.made[:1]
        other = threading.Thread(target=m.run_task, args=(hold,))
        other.start()
        try:
            assert holding.wait(10)
            assert held == [pooled]
            assert m.stats().available_resources == 0

            temporary = m.run_task(lambda r: r)

            assert temporary is not pooled
            assert temporary.number == 3
            assert temporary.destroyed
            assert not pooled.destroyed
        finally:
            release.set()
            other.join()
        assert m.stats().available_resources == 1
        assert not pooled.destroyed
    assert resources.created == resources.destroyed == 3


def test_unhealthy_error_destroys_the_pooled_resource_and_refills_the_pool(
    resources: Resources,
) -> None:
    error = Sick("connection lost")
    seen: list[Resource] = []

    def fail(resource: Resource) -> None:
        seen.append(resource)
        raise error

    with make(resources, resource_pool_size=1) as m:
        (pooled,) = resources.made[:1]
        with pytest.raises(Sick, match="connection lost") as info:
            m.run_task(fail)
        assert info.value is error
        assert seen == [pooled]
        assert pooled.destroyed
        wait_until(lambda: m.stats().available_resources == 1)
        fresh = m.run_task(lambda r: r)
        assert fresh is not pooled
        assert not fresh.destroyed
        assert m.stats().available_resources == 1
    assert resources.created == resources.destroyed == 3


def test_healthy_error_keeps_the_pooled_resource(resources: Resources) -> None:
    error = Mild("bad input")

    def fail(resource: Resource) -> None:
        raise error

    with make(resources, resource_pool_size=1) as m:
        (pooled,) = resources.made[:1]
        with pytest.raises(Mild, match="bad input") as info:
            m.run_task(fail)
        assert info.value is error
        assert not pooled.destroyed
        assert m.stats().available_resources == 1
        assert m.run_task(lambda r: r) is pooled
        assert resources.created == 2
        assert resources.destroyed == 0
    assert resources.created == resources.destroyed == 2


def test_failing_temporary_on_create_raises_resource_creation_error_from_the_cause() -> None:
    res = Resources(fail_creates={2})  # call 1 is the base worker, call 2 run_task's
    ran: list[Resource] = []
    with make(res, resource_pool_size=0) as m:
        with pytest.raises(tasker.ResourceCreationError, match="run_task") as info:
            m.run_task(ran.append)
        assert isinstance(info.value.__cause__, ConnectionError)
        assert "call 2" in str(info.value.__cause__)
        assert ran == []
        # The manager is still usable.
        assert m.run_task(lambda r: r.number) == 3
    assert res.created == res.destroyed == 2


@pytest.mark.parametrize("close", ["stop", "kill"])
def test_run_task_after_shutdown_raises_manager_closed(resources: Resources, close: str) -> None:
    m = make(resources, resource_pool_size=1)
    getattr(m, close)()
    ran: list[Resource] = []
    with pytest.raises(tasker.ManagerClosed, match="shutting down"):
        m.run_task(ran.append)
    assert ran == []
    assert resources.created == resources.destroyed == 2


def test_stop_waits_for_a_run_task_in_flight_and_destroys_its_pooled_resource(
    resources: Resources,
) -> None:
    running, release, stopped = threading.Event(), threading.Event(), threading.Event()
    finished = threading.Event()
    results: list[str] = []
    at_stop_return: list[tuple[bool, int]] = []

    def slow(resource: Resource) -> str:
        running.set()
        release.wait()
        finished.set()
        return "done"

    m = make(resources, resource_pool_size=1)
    (pooled,) = resources.made[:1]

    def stop() -> None:
        m.stop()
        at_stop_return.append((finished.is_set(), resources.live))
        stopped.set()

    caller = threading.Thread(target=lambda: results.append(m.run_task(slow)))
    stopper = threading.Thread(target=stop)
    caller.start()
    try:
        assert running.wait(10)
        stopper.start()
        wait_until(lambda: refuses(m))
        # Every worker has exited, so only the run_task is left for stop() to wait for;
        # a stop() that does not wait for it returns now. A correct one cannot return
        # before `release` is set, so this wait cannot fail spuriously.
        wait_until(lambda: m.stats().active_workers == 0)
        assert not stopped.wait(0.05), "stop() returned while run_task was running"
        assert not pooled.destroyed
    finally:
        release.set()
        caller.join()
        if stopper.ident is not None:
            stopper.join()
        else:
            m.stop()
    assert results == ["done"]
    assert at_stop_return == [(True, 0)]
    assert pooled.destroyed
    assert resources.created == resources.destroyed == 2
