"""Chains (DESIGN §4): ``chain(f1, f2, ...)`` runs ``f1(resource)``, then
``f2(resource, r1)``, and so on.

Each link is a task of its own (own id, state, retries), submitted when the previous one
completed. The chain's handle ends with the last link's result, with the first error a
link's own retries did not absorb (later links never run), or cancelled: cancelling it
cancels the links not yet run. ``opts`` (e.g. ``retry=``) apply to every link.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Iterator
from concurrent.futures import CancelledError
from typing import Any

import pytest

import tasker
from tasker import RetryPolicy, RetryStrategy, TaskState
from tasker._shutdown import Closer
from tasker.testing import FakeClock, Resource, Resources, is_blocked, wait_until

Manager = tasker.TaskManager[Resource, Any]

LONG = 30.0  # a safety net against hangs, never reached when the test passes
IMMEDIATE = RetryPolicy(max_retries=3, strategy=RetryStrategy.IMMEDIATE)


class Boom(Exception):
    """A link's own error."""


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


class Recorder:
    """Links that record what they were called with, and their task ids."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.ids: dict[str, str] = {}
        self._lock = threading.Lock()

    def record(self, link: str, *args: Any) -> None:
        context = tasker.current_task()
        assert context is not None
        with self._lock:
            self.calls.append((link, args))
            self.ids[link] = context.id

    def ran(self, link: str) -> bool:
        return any(name == link for name, _ in self.calls)


class Gate:
    """A first link that holds its worker until ``release()`` (or until it is cancelled)."""

    def __init__(self, result: Any = "released") -> None:
        self.started = threading.Event()
        self._release = threading.Event()
        self.result = result
        self.id: str | None = None

    def __call__(self, resource: Resource) -> Any:
        context = tasker.current_task()
        assert context is not None
        self.id = context.id
        self.started.set()
        while not (self._release.is_set() or context.cancelled.is_set()):
            self._release.wait(0.01)
        return self.result

    def release(self) -> None:
        self._release.set()


class Flaky:
    """Raises on its first ``failures`` runs, then returns ``previous + 1``."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.runs = 0
        self.ids: set[str] = set()
        self.errors: list[Boom] = []

    def __call__(self, resource: Resource, previous: int = 0) -> int:
        context = tasker.current_task()
        assert context is not None
        self.ids.add(context.id)
        self.runs += 1
        if self.runs <= self.failures:
            error = Boom(f"run {self.runs} failed")
            self.errors.append(error)
            raise error
        return previous + 1


# -- success ------------------------------------------------------------------------------


def test_each_link_gets_the_resource_and_the_previous_result(resources: Resources) -> None:
    rec = Recorder()

    def first(resource: Resource) -> int:
        rec.record("first", resource)
        return 1

    def second(resource: Resource, previous: int) -> int:
        rec.record("second", resource, previous)
        return previous + 10

    def third(resource: Resource, previous: int) -> tuple[int, Resource]:
        rec.record("third", resource, previous)
        return previous * 2, resource

    with manager_for(resources) as manager:
        handle = manager.chain(first, second, third)

        result, resource = handle.result(timeout=LONG)

    assert result == 22
    assert isinstance(resource, Resource)
    assert rec.calls == [
        ("first", (resource,)),
        ("second", (resource, 1)),
        ("third", (resource, 11)),
    ]


def test_a_link_returning_none_does_not_stall_the_chain(resources: Resources) -> None:
    seen: list[Any] = []

    def saves_nothing(resource: Resource) -> None:
        return None

    def next_link(resource: Resource, previous: Any) -> str:
        seen.append(previous)
        return "done"

    with manager_for(resources) as manager:
        handle = manager.chain(saves_nothing, next_link)

        assert handle.result(timeout=LONG) == "done"
    assert seen == [None]


def test_a_single_link_chain_ends_with_that_links_result(resources: Resources) -> None:
    with manager_for(resources) as manager:
        assert manager.chain(lambda resource: "only").result(timeout=LONG) == "only"


def test_each_link_is_a_task_with_its_own_id_in_status(resources: Resources) -> None:
    rec = Recorder()

    def fetch(resource: Resource) -> int:
        rec.record("fetch")
        return 1

    def parse(resource: Resource, previous: int) -> int:
        rec.record("parse")
        return previous + 1

    def store(resource: Resource, previous: int) -> int:
        rec.record("store")
        return previous + 1

    with manager_for(resources) as manager:
        handle = manager.chain(fetch, parse, store)
        assert handle.result(timeout=LONG) == 3

        ids = [rec.ids["fetch"], rec.ids["parse"], rec.ids["store"]]
        assert len({*ids, handle.id}) == 4  # three link tasks, distinct from the chain
        for task_id, link in zip(ids, (fetch, parse, store), strict=True):
            info = manager.status(task_id)
            assert info.id == task_id
            assert info.state is TaskState.COMPLETED
            assert info.attempts == 1
            assert info.name == link.__qualname__
        assert manager.status(handle.id).state is TaskState.COMPLETED


def test_a_running_link_is_running_in_status_while_the_next_is_not_submitted(
    resources: Resources,
) -> None:
    gate = Gate(result=5)
    rec = Recorder()

    def after(resource: Resource, previous: int) -> int:
        rec.record("after", previous)
        return previous

    with manager_for(resources) as manager:
        handle = manager.chain(gate, after)
        assert gate.started.wait(LONG)
        assert gate.id is not None
        assert manager.status(gate.id).state is TaskState.RUNNING
        assert not rec.ran("after")
        assert not handle.done()

        gate.release()
        assert handle.result(timeout=LONG) == 5
        assert rec.calls == [("after", (5,))]


# -- failure ------------------------------------------------------------------------------


def test_a_failing_link_stops_the_chain_and_the_handle_raises_that_error(
    resources: Resources,
) -> None:
    rec = Recorder()
    error = Boom("parse failed")

    def fetch(resource: Resource) -> int:
        rec.record("fetch")
        return 1

    def parse(resource: Resource, previous: int) -> int:
        rec.record("parse")
        raise error

    def store(resource: Resource, previous: int) -> int:
        rec.record("store")
        return previous

    with manager_for(resources) as manager:
        handle = manager.chain(fetch, parse, store)

        with pytest.raises(Boom, match="parse failed") as caught:
            handle.result(timeout=LONG)
        assert caught.value is error
        assert manager.status(rec.ids["parse"]).state is TaskState.FAILED
        assert manager.status(rec.ids["parse"]).last_error is error
        assert manager.status(handle.id).state is TaskState.FAILED
        manager.stop()  # drain: anything the chain had queued has run by now

    assert [name for name, _ in rec.calls] == ["fetch", "parse"]


def test_a_failing_first_link_runs_no_other_link(resources: Resources) -> None:
    rec = Recorder()

    def first(resource: Resource) -> int:
        raise Boom("first failed")

    def second(resource: Resource, previous: int) -> int:
        rec.record("second")
        return previous

    with manager_for(resources) as manager:
        handle = manager.chain(first, second)
        with pytest.raises(Boom, match="first failed"):
            handle.result(timeout=LONG)
        manager.stop()

    assert rec.calls == []


# -- retries ------------------------------------------------------------------------------


def test_retry_applies_to_every_link_and_the_chain_completes(resources: Resources) -> None:
    first = Flaky(failures=2)
    middle = Flaky(failures=0)
    last = Flaky(failures=1)
    with manager_for(resources, clock=FakeClock()) as manager:
        handle = manager.chain(first, middle, last, retry=IMMEDIATE)

        assert handle.result(timeout=LONG) == 3
        (first_id,) = first.ids
        (last_id,) = last.ids
        assert manager.status(first_id).attempts == 3
        assert manager.status(first_id).last_error is first.errors[-1]
        assert manager.status(last_id).attempts == 2
        assert manager.metrics().total_retried == 3


def test_a_link_waiting_for_its_retry_delay_holds_the_chain(resources: Resources) -> None:
    clock = FakeClock()
    flaky = Flaky(failures=1)
    rec = Recorder()

    def after(resource: Resource, previous: int) -> int:
        rec.record("after", previous)
        return previous * 10

    policy = RetryPolicy(max_retries=1, base_delay=5.0, strategy=RetryStrategy.FIXED)
    with manager_for(resources, clock=clock, rng=random.Random(1)) as manager:
        handle = manager.chain(flaky, after, retry=policy)

        wait_until(lambda: len(flaky.ids) == 1)
        (flaky_id,) = flaky.ids
        wait_until(lambda: manager.status(flaky_id).state is TaskState.RETRYING)
        assert not handle.done()
        assert not rec.ran("after")

        clock.advance(5.0)
        assert handle.result(timeout=LONG) == 10
        assert manager.status(flaky_id).attempts == 2
        assert rec.calls == [("after", (1,))]


def test_a_link_that_exhausts_its_retries_fails_the_chain_with_its_last_error(
    resources: Resources,
) -> None:
    flaky = Flaky(failures=10)
    rec = Recorder()

    def after(resource: Resource, previous: int) -> int:
        rec.record("after")
        return previous

    policy = RetryPolicy(max_retries=2, strategy=RetryStrategy.IMMEDIATE)
    with manager_for(resources, clock=FakeClock()) as manager:
        handle = manager.chain(flaky, after, retry=policy)

        with pytest.raises(Boom, match="run 3 failed") as caught:
            handle.result(timeout=LONG)
        assert caught.value is flaky.errors[-1]
        assert flaky.runs == 3
        manager.stop()

    assert rec.calls == []


# -- cancellation -------------------------------------------------------------------------


def test_cancelling_the_chain_mid_chain_cancels_the_links_not_yet_run(
    resources: Resources,
) -> None:
    gate = Gate()
    rec = Recorder()

    def second(resource: Resource, previous: str) -> str:
        rec.record("second")
        return previous

    def third(resource: Resource, previous: str) -> str:
        rec.record("third")
        return previous

    with manager_for(resources) as manager:
        handle = manager.chain(gate, second, third)
        assert gate.started.wait(LONG)

        assert handle.cancel()
        gate.release()
        with pytest.raises(CancelledError):
            handle.result(timeout=LONG)
        manager.stop()  # drain: a link the chain queued would run now

        assert gate.id is not None
        assert manager.status(gate.id).state is TaskState.COMPLETED  # the running link ends
        assert manager.status(handle.id).state is TaskState.CANCELLED
    assert rec.calls == []


def test_cancelling_the_chain_cancels_a_queued_link(resources: Resources) -> None:
    rec = Recorder()
    blocker = Gate()

    def first(resource: Resource) -> int:
        rec.record("first")
        # Take the only worker next (priority) so the second link waits in the queue.
        manager.submit(blocker, priority=True)
        return 1

    def second(resource: Resource, previous: int) -> int:
        rec.record("second")
        return previous

    with manager_for(resources) as manager:
        handle = manager.chain(first, second)
        assert blocker.started.wait(LONG)
        wait_until(lambda: manager.stats().queued_tasks == 1)  # the second link

        assert handle.cancel()
        blocker.release()
        with pytest.raises(CancelledError):
            handle.result(timeout=LONG)
        manager.stop()

    assert [name for name, _ in rec.calls] == ["first"]


def test_kill_mid_chain_ends_the_chain_cancelled(resources: Resources) -> None:
    gate = Gate()
    rec = Recorder()

    def second(resource: Resource, previous: str) -> str:
        rec.record("second")
        return previous

    with manager_for(resources) as manager:
        handle = manager.chain(gate, second)
        assert gate.started.wait(LONG)

        manager.kill()  # the gate sees its cancelled event and returns

        assert handle.done()
        with pytest.raises(CancelledError):
            handle.result(timeout=0)
    assert rec.calls == []


def test_kill_with_the_first_link_queued_ends_the_chain_cancelled(resources: Resources) -> None:
    blocker = Gate()
    rec = Recorder()

    def first(resource: Resource) -> int:
        rec.record("first")
        return 1

    with manager_for(resources) as manager:
        manager.submit(blocker)
        assert blocker.started.wait(LONG)
        handle = manager.chain(first, lambda resource, previous: previous)

        manager.kill()

        with pytest.raises(CancelledError):
            handle.result(timeout=LONG)
    assert rec.calls == []


def test_stop_mid_chain_drains_the_whole_chain(resources: Resources) -> None:
    gate = Gate(result=1)
    rec = Recorder()

    def second(resource: Resource, previous: int) -> int:
        rec.record("second", previous)
        return previous + 1

    def third(resource: Resource, previous: int) -> int:
        rec.record("third", previous)
        return previous + 1

    with manager_for(resources) as manager:
        handle = manager.chain(gate, second, third)
        assert gate.started.wait(LONG)
        stopper = threading.Thread(target=manager.stop)
        stopper.start()
        wait_until(lambda: is_blocked(stopper, inside=Closer.wait_idle))
        with pytest.raises(tasker.ManagerClosed):
            manager.submit(lambda resource: None)

        gate.release()
        stopper.join(LONG)
        assert not stopper.is_alive()

        assert handle.result(timeout=0) == 3
    assert rec.calls == [("second", (1,)), ("third", (2,))]


# -- arguments and refusals ---------------------------------------------------------------


def test_a_chain_with_no_links_is_a_value_error(resources: Resources) -> None:
    with manager_for(resources) as manager, pytest.raises(ValueError, match="at least one link"):
        manager.chain()


def test_a_chain_with_a_non_callable_link_is_refused_before_anything_runs(
    resources: Resources,
) -> None:
    rec = Recorder()

    def first(resource: Resource) -> int:
        rec.record("first")
        return 1

    not_a_link: Any = 42
    with manager_for(resources) as manager:
        with pytest.raises(TypeError, match="fn must be callable"):
            manager.chain(first, not_a_link)
        with pytest.raises(TypeError, match="unexpected option"):
            manager.chain(first, colour="red")
        manager.stop()
    assert rec.calls == []


def test_a_chain_after_stop_raises_manager_closed(resources: Resources) -> None:
    with manager_for(resources) as manager:
        manager.stop()
        with pytest.raises(tasker.ManagerClosed, match="shutting down"):
            manager.chain(lambda resource: 1, lambda resource, previous: previous)


# -- Work objects -------------------------------------------------------------------------


class Fetch:
    name = "fetch-work"

    def __init__(self) -> None:
        self.id: str | None = None

    def execute(self, resource: Resource) -> int:
        context = tasker.current_task()
        assert context is not None
        self.id = context.id
        return 20


class Double:
    """A later link as a Work object: ``execute(resource, previous)``."""

    name = "double-work"

    def __init__(self) -> None:
        self.id: str | None = None

    def execute(self, resource: Resource, previous: int) -> int:
        context = tasker.current_task()
        assert context is not None
        self.id = context.id
        return previous * 2


def test_a_work_object_can_be_the_first_link(resources: Resources) -> None:
    fetch = Fetch()
    with manager_for(resources) as manager:
        handle = manager.chain(fetch, lambda resource, previous: previous + 1)

        assert handle.result(timeout=LONG) == 21
        assert fetch.id is not None
        assert manager.status(fetch.id).name == "fetch-work"


def test_a_work_object_can_be_a_later_link_and_names_its_task(resources: Resources) -> None:
    double = Double()
    with manager_for(resources) as manager:
        handle = manager.chain(Fetch(), double)

        assert handle.result(timeout=LONG) == 40
        assert double.id is not None
        assert manager.status(double.id).name == "double-work"
