"""TaskHandle is a concurrent.futures.Future: stdlib helpers, callbacks, asyncio, cancel."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from concurrent.futures import CancelledError
from typing import Any, TypeVar

import pytest

import tasker
from tasker.testing import Resource, Resources, is_blocked, wait_until

Manager = tasker.TaskManager[Resource, Any]
T = TypeVar("T")


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


def _gate(started: threading.Event, release: threading.Event) -> Callable[[Resource], str]:
    """A task that says it started, then waits for ``release``.

    It has no timeout of its own (``_manager`` opens every gate on the way out): a gate
    giving up would run the queued tasks and could wake a waiter the test expects to be
    woken by something else.
    """

    def task(r: Resource) -> str:
        started.set()
        release.wait()
        return "released"

    return task


def _blocked_in(thread: threading.Thread, function: Callable[..., Any]) -> bool:
    """True if ``thread`` is asleep on a lock somewhere inside ``function``."""
    return is_blocked(thread, inside=function)


def _returns(value: T) -> Callable[[Resource], T]:
    """A task that returns ``value``."""

    def task(r: Resource) -> T:
        return value

    return task


class _TaskError(Exception):
    pass


# -- concurrent.futures helpers -----------------------------------------------------------


def test_wait_all_completed_returns_every_handle(resources: Resources) -> None:
    with _manager(resources, workers=2) as m:
        handles = [m.submit(_returns(i)) for i in range(10)]
        done, not_done = futures.wait(handles, timeout=10, return_when=futures.ALL_COMPLETED)
        assert done == set(handles)
        assert not_done == set()
        assert [h.result() for h in handles] == list(range(10))


def test_wait_first_completed_returns_only_the_finished_handle(resources: Resources) -> None:
    started, release = threading.Event(), threading.Event()
    with _manager(resources, release, workers=2, burst_interval=None) as m:
        slow = m.submit(_gate(started, release))
        assert started.wait(timeout=10)
        fast = m.submit(lambda r: "fast")
        done, not_done = futures.wait([slow, fast], timeout=10, return_when=futures.FIRST_COMPLETED)
        assert done == {fast}
        assert not_done == {slow}
        release.set()
        assert slow.result(timeout=10) == "released"


def test_wait_first_exception_returns_the_failed_handle(resources: Resources) -> None:
    started, release = threading.Event(), threading.Event()

    def fail(r: Resource) -> None:
        raise _TaskError("no")

    with _manager(resources, release, workers=2, burst_interval=None) as m:
        slow = m.submit(_gate(started, release))
        assert started.wait(timeout=10)
        failed = m.submit(fail)
        done, not_done = futures.wait(
            [slow, failed], timeout=10, return_when=futures.FIRST_EXCEPTION
        )
        assert done == {failed}
        assert not_done == {slow}
        assert isinstance(failed.exception(), _TaskError)


def test_as_completed_yields_handles_in_completion_order(resources: Resources) -> None:
    started, release = threading.Event(), threading.Event()
    with _manager(resources, release, workers=2, burst_interval=None) as m:
        slow = m.submit(_gate(started, release))
        assert started.wait(timeout=10)
        fast = m.submit(lambda r: "fast")
        finished = futures.as_completed([slow, fast], timeout=10)
        assert next(finished) is fast
        release.set()
        assert next(finished) is slow
        with pytest.raises(StopIteration):
            next(finished)


# -- done callbacks -------------------------------------------------------------------------


def test_done_callback_added_before_completion_runs_once_on_completion(
    resources: Resources,
) -> None:
    started, release, called = threading.Event(), threading.Event(), threading.Event()
    calls: list[futures.Future[Any]] = []

    def callback(f: futures.Future[Any]) -> None:
        calls.append(f)
        called.set()

    with _manager(resources, release, workers=1, burst_interval=None) as m:
        handle = m.submit(_gate(started, release))
        assert started.wait(timeout=10)
        handle.add_done_callback(callback)
        assert calls == []
        release.set()
        assert called.wait(timeout=10)
        assert handle.result(timeout=10) == "released"
    assert calls == [handle]


def test_done_callback_added_after_completion_runs_at_once_in_the_caller(
    resources: Resources,
) -> None:
    calls: list[tuple[futures.Future[Any], str]] = []
    with _manager(resources) as m:
        handle = m.submit(lambda r: 1)
        assert handle.result(timeout=10) == 1
        handle.add_done_callback(lambda f: calls.append((f, threading.current_thread().name)))
        assert calls == [(handle, threading.current_thread().name)]


def test_done_callback_runs_when_a_queued_task_is_cancelled(resources: Resources) -> None:
    started, release = threading.Event(), threading.Event()
    calls: list[futures.Future[Any]] = []
    with _manager(resources, release, workers=1, burst_interval=None) as m:
        m.submit(_gate(started, release))
        assert started.wait(timeout=10)
        queued = m.submit(lambda r: None)
        queued.add_done_callback(calls.append)
        assert queued.cancel()
        assert calls == [queued]


def test_raising_done_callback_is_logged_and_not_propagated(
    resources: Resources, caplog: pytest.LogCaptureFixture
) -> None:
    started, release, second_called = threading.Event(), threading.Event(), threading.Event()
    error = RuntimeError("callback broke")

    def broken(f: futures.Future[Any]) -> None:
        raise error

    with (
        caplog.at_level(logging.ERROR),
        _manager(resources, release, workers=1, burst_interval=None) as m,
    ):
        handle = m.submit(_gate(started, release))
        assert started.wait(timeout=10)
        handle.add_done_callback(broken)
        handle.add_done_callback(lambda f: second_called.set())
        release.set()
        assert handle.result(timeout=10) == "released"
        # the worker that ran the callbacks carried on, and so did the next callback
        assert second_called.wait(timeout=10)
        assert m.queue_task(lambda r: "still working") == "still working"
        assert m.stats().active_workers == 1
    assert any(r.exc_info is not None and r.exc_info[1] is error for r in caplog.records)


def test_raising_done_callback_added_after_completion_is_logged_and_not_raised(
    resources: Resources, caplog: pytest.LogCaptureFixture
) -> None:
    error = RuntimeError("late callback broke")

    def broken(f: futures.Future[Any]) -> None:
        raise error

    with caplog.at_level(logging.ERROR), _manager(resources) as m:
        handle = m.submit(lambda r: 2)
        assert handle.result(timeout=10) == 2
        handle.add_done_callback(broken)
    assert any(r.exc_info is not None and r.exc_info[1] is error for r in caplog.records)


# -- asyncio ----------------------------------------------------------------------------


def test_a_handle_can_be_awaited_from_an_event_loop(resources: Resources) -> None:
    started, release = threading.Event(), threading.Event()

    async def await_it(handle: tasker.TaskHandle[str]) -> str:
        waiting = asyncio.wrap_future(handle)
        assert not waiting.done()
        release.set()  # completes in a worker thread while the loop awaits
        return await waiting

    with _manager(resources, release, workers=1, burst_interval=None) as m:
        handle = m.submit(_gate(started, release))
        assert started.wait(timeout=10)
        assert asyncio.run(await_it(handle)) == "released"


def test_awaiting_a_failed_handle_raises_the_tasks_error(resources: Resources) -> None:
    error = _TaskError("async boom")

    def fail(r: Resource) -> None:
        raise error

    async def await_it(handle: tasker.TaskHandle[None]) -> None:
        await asyncio.wrap_future(handle)

    with _manager(resources) as m:
        handle = m.submit(fail)
        with pytest.raises(_TaskError) as info:
            asyncio.run(await_it(handle))
    assert info.value is error


def test_several_handles_can_be_gathered_in_an_event_loop(resources: Resources) -> None:
    async def gather(handles: list[tasker.TaskHandle[int]]) -> list[int]:
        return list(await asyncio.gather(*(asyncio.wrap_future(h) for h in handles)))

    with _manager(resources, workers=3) as m:
        handles = [m.submit(_returns(i * i)) for i in range(20)]
        assert asyncio.run(gather(handles)) == [i * i for i in range(20)]


# -- result(timeout) ----------------------------------------------------------------------


def test_result_with_timeout_raises_timeout_error_while_pending(resources: Resources) -> None:
    started, release = threading.Event(), threading.Event()
    with _manager(resources, release, workers=1, burst_interval=None) as m:
        running = m.submit(_gate(started, release))
        assert started.wait(timeout=10)
        queued = m.submit(lambda r: "queued")
        for handle in (running, queued):
            with pytest.raises(TimeoutError):
                handle.result(timeout=0)
            with pytest.raises(TimeoutError):
                handle.result(timeout=0.01)
            with pytest.raises(TimeoutError):
                handle.exception(timeout=0.01)
            assert not handle.done()
        release.set()
        assert running.result(timeout=10) == "released"
        assert queued.result(timeout=10) == "queued"


# -- cancel ---------------------------------------------------------------------------------


def test_cancel_of_a_queued_task_means_it_never_runs(resources: Resources) -> None:
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []
    with _manager(resources, release, workers=1, burst_interval=None) as m:
        m.submit(_gate(started, release))
        assert started.wait(timeout=10)
        queued = m.submit(lambda r: ran.append("cancelled task"))

        assert queued.cancel() is True
        assert queued.cancelled()
        assert queued.done()
        assert not queued.running()
        assert queued.cancel() is True  # cancelling again is harmless
        with pytest.raises(CancelledError):
            queued.result()
        with pytest.raises(CancelledError):
            queued.exception()

        release.set()
        # FIFO on one worker: a task queued after it ran, so it was passed over
        assert m.queue_task(lambda r: "after") == "after"
        # and stdlib wait() now counts it as done
        done, _ = futures.wait([queued], timeout=10)
        assert done == {queued}
    assert ran == []
    assert queued.attempts == 0


def test_cancel_of_a_running_task_returns_false(resources: Resources) -> None:
    started, release = threading.Event(), threading.Event()
    with _manager(resources, release, workers=1, burst_interval=None) as m:
        running = m.submit(_gate(started, release))
        assert started.wait(timeout=10)
        assert running.running()
        assert running.cancel() is False
        assert not running.cancelled()
        release.set()
        assert running.result(timeout=10) == "released"


def test_cancel_of_a_finished_task_returns_false(resources: Resources) -> None:
    with _manager(resources) as m:
        handle = m.submit(lambda r: 4)
        assert handle.result(timeout=10) == 4
        assert handle.cancel() is False
        assert not handle.cancelled()
        assert handle.result() == 4


# -- attempts -------------------------------------------------------------------------------


def test_attempts_is_zero_while_queued_and_one_once_run(resources: Resources) -> None:
    started, release = threading.Event(), threading.Event()
    with _manager(resources, release, workers=1, burst_interval=None) as m:
        running = m.submit(_gate(started, release))
        assert started.wait(timeout=10)
        queued = m.submit(lambda r: tasker.current_task())
        assert running.attempts == 1
        assert queued.attempts == 0
        release.set()
        context = queued.result(timeout=10)
        assert context is not None
        assert context.attempt == 1
        assert queued.attempts == 1
        assert running.attempts == 1


def test_attempts_counts_a_health_retry(resources: Resources) -> None:
    seen: list[int] = []

    def flaky(r: Resource) -> str:
        context = tasker.current_task()
        assert context is not None
        seen.append(context.attempt)
        if context.attempt == 1:
            raise ConnectionResetError("connection lost")
        return "second time lucky"

    with _manager(resources, workers=1, burst_interval=None, check_health=lambda e: False) as m:
        handle = m.submit(flaky)
        assert handle.result(timeout=10) == "second time lucky"
        assert handle.attempts == 2
    assert seen == [1, 2]


# -- many waiters ---------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["result", "exception", "cancel"])
def test_every_thread_blocked_in_result_wakes_when_the_handle_ends(
    resources: Resources, outcome: str
) -> None:
    started, release = threading.Event(), threading.Event()
    error = _TaskError("for everyone")

    def target_task(r: Resource) -> int:
        if outcome == "exception":
            raise error
        return 42

    got: list[object] = []

    def wait_for(handle: tasker.TaskHandle[int]) -> None:
        try:
            got.append(handle.result())
        except BaseException as exc:
            got.append(exc)

    with _manager(resources, release, workers=1, burst_interval=None) as m:
        m.submit(_gate(started, release))
        assert started.wait(timeout=10)
        target = m.submit(target_task)
        waiters = [threading.Thread(target=wait_for, args=(target,)) for _ in range(16)]
        for thread in waiters:
            thread.start()
        wait_until(lambda: all(_blocked_in(t, tasker.TaskHandle.result) for t in waiters))
        assert got == []

        if outcome == "cancel":
            assert target.cancel()
        else:
            release.set()
        for thread in waiters:
            thread.join(timeout=10)
        assert not any(t.is_alive() for t in waiters)

    assert len(got) == 16
    if outcome == "result":
        assert got == [42] * 16
    elif outcome == "exception":
        assert all(e is error for e in got)
    else:
        assert all(isinstance(e, CancelledError) for e in got)


@pytest.mark.parametrize("how", ["wait_all", "wait_first", "as_completed"])
@pytest.mark.parametrize("outcome", ["result", "exception", "killed"])
def test_stdlib_waiter_started_before_completion_wakes_on_completion(
    resources: Resources, how: str, outcome: str
) -> None:
    started, release = threading.Event(), threading.Event()

    def target_task(r: Resource) -> str:
        if outcome == "exception":
            raise _TaskError("late")
        return "late"

    woken: list[set[futures.Future[Any]]] = []

    def waiter(handle: tasker.TaskHandle[str]) -> None:
        if how == "as_completed":
            woken.append(set(futures.as_completed([handle], timeout=30)))
            return
        when = futures.ALL_COMPLETED if how == "wait_all" else futures.FIRST_COMPLETED
        done, _ = futures.wait([handle], timeout=30, return_when=when)
        woken.append(done)

    with _manager(resources, release, workers=1, burst_interval=None) as m:
        m.submit(_gate(started, release))
        assert started.wait(timeout=10)
        target = m.submit(target_task)
        thread = threading.Thread(target=waiter, args=(target,))
        thread.start()
        blocked_in = futures.as_completed if how == "as_completed" else futures.wait
        wait_until(lambda: _blocked_in(thread, blocked_in) and target.attempts == 0)
        assert woken == []

        if outcome == "killed":
            # kill() cancels the queued target at once, then waits for the running gate
            killer = threading.Thread(target=m.kill)
            killer.start()
            thread.join(timeout=10)
            assert woken == [{target}]  # woken by the cancellation, gate still running
            release.set()
            killer.join(timeout=10)
            assert not killer.is_alive()
            assert target.cancelled()
        else:
            release.set()
            thread.join(timeout=10)
            assert woken == [{target}]
    assert not thread.is_alive()
