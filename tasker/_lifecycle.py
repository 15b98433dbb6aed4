"""Lifecycle: what happens to a task between its runs and around them.

The manager owns one ``Lifecycle``. It holds the timer thread and every task that is
waiting for a time rather than a worker:

- SCHEDULED tasks (``schedule``/``schedule_at``) until due, then queued;
- RETRYING tasks, after a failure their ``RetryPolicy`` retries, until the backoff
  delay passes (no worker and no resource is held meanwhile), then queued again;
- the deadline of each running attempt that has a ``timeout``.

Shutdown: ``stop()`` cancels scheduled tasks that are not due, queues waiting retries
at once (it never waits for a future due time) and stops schedules; ``kill()`` cancels
all of it. Nothing waiting here is ever left unfinished.
"""

from __future__ import annotations

import random
import threading
from functools import partial
from typing import TYPE_CHECKING, Any

from tasker._errors import TaskTimeout
from tasker._handle import TaskHandle
from tasker._metrics import TaskTimestamps
from tasker._retry import retry_wanted
from tasker._state import TaskState
from tasker._timer import Timer, TimerEntry

if TYPE_CHECKING:
    from tasker._manager import TaskManager
    from tasker._schedule import Schedule
    from tasker._worker import Worker

__all__ = ["Lifecycle"]

Handle = TaskHandle[Any]


class Lifecycle:
    """Timers, retries, timeouts and schedules of one manager; private to the runtime."""

    def __init__(self, manager: TaskManager[Any, Any], rng: random.Random | None) -> None:
        self._m = manager
        self._lock = threading.Lock()
        self._rng = rng or random.Random()
        self.timer = Timer(manager._clock, manager.name, manager._log)
        self.scheduled: dict[Handle, TimerEntry] = {}
        self.retrying: dict[Handle, TimerEntry | None] = {}
        self.schedules: set[Schedule] = set()
        self.draining = False  # stop() began: retries skip their delay
        self.closed = False  # kill() began: nothing waits any more
        record_timeout = getattr(manager._collector, "record_timeout", None)
        self._record_timeout = record_timeout if callable(record_timeout) else None

    # -- scheduled tasks ------------------------------------------------------------------

    def schedule(self, handle: Handle, due: float) -> None:
        """Queue ``handle`` (in state SCHEDULED) when the clock reaches ``due``."""
        with self._lock:
            if self.draining or self.closed:
                raise self._m._refusal("schedule task")
            self.scheduled[handle] = self.timer.call_at(due, partial(self._scheduled_due, handle))
        handle.add_done_callback(self._waiting_done)

    def _scheduled_due(self, handle: Handle) -> None:
        with self._lock:
            if self.scheduled.pop(handle, None) is None:
                return
        if handle._move(TaskState.QUEUED):
            handle._queued_at = self._m._clock()
            if self._m._queue.put_again(handle):
                self._m._collector.record_arrival()
                return
        self._m._cancel_waiting(handle)

    def _waiting_done(self, future: Any) -> None:
        # A scheduled or retrying task cancelled by its caller: drop its timer entry now.
        with self._lock:
            if future in self.scheduled:
                entry: TimerEntry | None = self.scheduled.pop(future)
            elif future in self.retrying:
                entry = self.retrying.pop(future)
            else:
                return
        if entry is not None:
            entry.cancel()
        self._m._cancel_waiting(future)

    # -- retries for the task's own errors -----------------------------------------------

    def retry_or_fail(self, handle: Handle, exc: BaseException, stamps: TaskTimestamps) -> None:
        """After a failed run: wait and run again if its policy says so, else fail it."""
        m = self._m
        handle._last_error = exc
        policy = handle._retry
        if (
            policy is not None
            and retry_wanted(policy, exc, handle._retries, m._log, handle.id)
            and handle._move(TaskState.RETRYING)
        ):
            handle._retries += 1
            m._collector.record_retry()
            if m._hooks.retry_hooks:
                m._hooks.call(m._hooks.retry_hooks, handle)
            delay = policy.delay(handle._retries, self._rng)
            self._wait_for_retry(handle, stamps.finished_at + delay)
            return
        handle._finished_at = stamps.finished_at
        m._collector.record_failure(stamps)
        m._log.debug("task %s failed: %r", handle.id, exc)
        handle.set_exception(exc)
        m._registry.finished(handle)
        if m._hooks.failure_hooks:
            m._hooks.call(m._hooks.failure_hooks, handle)

    def _wait_for_retry(self, handle: Handle, due: float) -> None:
        # ``due`` counts from the failure's own timestamp, not from whenever this runs.
        m = self._m
        with self._lock:
            if not self.closed and not self.draining and due > m._clock():
                delay = due - m._clock()
                self.retrying[handle] = self.timer.call_at(due, partial(self._retry_due, handle))
                m._log.debug("task %s retry %d in %.3fs", handle.id, handle._retries, delay)
                watch = not handle._watched  # one callback per task serves all its retries
                handle._watched = True
            else:
                self.retrying[handle] = None
                watch = None
        if watch is None:
            self._retry_due(handle)
        elif watch:
            handle.add_done_callback(self._waiting_done)

    def _retry_due(self, handle: Handle) -> None:
        with self._lock:
            if handle not in self.retrying:
                return
            del self.retrying[handle]
        if handle._move(TaskState.QUEUED):
            handle._queued_at = self._m._clock()
            if self._m._queue.put_again(handle):
                return
        self._m._cancel_waiting(handle)

    # -- timeouts -------------------------------------------------------------------------

    def arm_timeout(self, worker: Worker[Any], handle: Handle, started: float) -> TimerEntry:
        """Start the deadline of the run that ``worker`` just began."""
        assert handle._timeout is not None
        return self.timer.call_at(
            started + handle._timeout, partial(self._timed_out, worker, handle, handle.attempts)
        )

    def _timed_out(self, worker: Worker[Any], handle: Handle, attempt: int) -> None:
        if not handle._claim(attempt):
            return  # the run ended first
        m = self._m
        # Set the worker aside before it can hear about it: told to cancel, the task may
        # return and the worker exit at once, and it must not take its replacement along.
        m._set_aside(worker)
        worker.cancelled.set()
        if self._record_timeout is not None:
            self._record_timeout()
        timeout = handle._timeout
        m._log.warning(
            "task %s (%s) timed out after %ss on worker %s; worker replaced",
            handle.name,
            handle.id,
            timeout,
            worker.id,
        )
        error = TaskTimeout(f"task {handle.name!r} ({handle.id}) timed out after {timeout}s")
        now = m._clock()
        # Re-queue (or fail) before replacing the worker: while stopping, a replacement
        # that found the queue empty would exit at once and leave the retry unrun.
        self.retry_or_fail(
            handle, error, TaskTimestamps(handle._queued_at, handle._started_at, now)
        )
        m._replace(worker)  # always: the deadline took this worker's place

    # -- schedules ------------------------------------------------------------------------

    def add_schedule(self, schedule: Schedule) -> None:
        with self._lock:
            if self.draining or self.closed:
                raise self._m._refusal("schedule task")
            self.schedules.add(schedule)
        schedule._start(self._m._clock())

    def forget_schedule(self, schedule: Schedule) -> None:
        with self._lock:
            self.schedules.discard(schedule)

    # -- shutdown -------------------------------------------------------------------------

    def begin_stop(self) -> None:
        """Stop schedules, cancel tasks not yet due, queue waiting retries now."""
        with self._lock:
            self.draining = True
            schedules, self.schedules = list(self.schedules), set()
            scheduled, self.scheduled = list(self.scheduled.items()), {}
            retrying = [h for h, entry in self.retrying.items() if entry is not None]
        for schedule in schedules:
            schedule.cancel()
        for handle, entry in scheduled:
            entry.cancel()
            self._m._cancel_waiting(handle)
        for handle in retrying:
            with self._lock:
                pending = self.retrying.get(handle)
            if pending is not None:
                pending.cancel()
            self._retry_due(handle)

    def begin_kill(self) -> None:
        """Cancel everything that waits here."""
        with self._lock:
            self.draining = self.closed = True
            schedules, self.schedules = list(self.schedules), set()
            waiting = [*self.scheduled.items(), *self.retrying.items()]
            self.scheduled, self.retrying = {}, {}
        for schedule in schedules:
            schedule.cancel()
        for handle, entry in waiting:
            if entry is not None:
                entry.cancel()
            self._m._cancel_waiting(handle)

    def close(self) -> None:
        self.timer.stop()
