"""Worker: one thread that owns one resource and runs tasks on it, one at a time.

Life of a worker::

    start ──► on_create() in its own thread ──► loop: pop task, run fn(resource) ──► exit
                 │ fails: base worker reports it to the constructor;     │
                 │ replacement retries with capped exponential backoff;  │ unhealthy error,
                 │ burst worker gives up (the policy asks again later)   │ retire, stop, kill
                 ▼                                                       ▼
               exit ◄────────────── on_destroy(resource) (errors logged) ◄┘

The loop is the hot path: no lock is held while user code runs and nothing is logged
above DEBUG per task.
"""

from __future__ import annotations

import enum
import threading
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from tasker._context import _set_runner
from tasker._errors import RetriesExhausted
from tasker._handle import TaskHandle
from tasker._metrics import TaskTimestamps
from tasker._queue import IdleSlot
from tasker._state import TaskState

if TYPE_CHECKING:
    from tasker._manager import TaskManager

__all__ = ["Worker", "WorkerKind"]

R = TypeVar("R")


class WorkerKind(enum.Enum):
    BASE = "base"
    BURST = "burst"
    REPLACEMENT = "replacement"


class Worker(Generic[R]):
    """A worker thread of a :class:`TaskManager`; private to the runtime."""

    __slots__ = (
        "_manager",
        "cancelled",
        "created",
        "creation_error",
        "current",
        "id",
        "kind",
        "slot",
        "thread",
    )

    def __init__(self, manager: TaskManager[R, Any], wid: int, kind: WorkerKind) -> None:
        self._manager = manager
        self.id = wid
        self.kind = kind
        self.slot = IdleSlot()
        self.current: TaskHandle[Any] | None = None
        self.cancelled = threading.Event()
        self.created = threading.Event()  # set once on_create succeeded or gave up
        self.creation_error: BaseException | None = None
        self.thread = threading.Thread(
            target=self._run, name=f"{manager.name}-worker-{wid}", daemon=True
        )

    def __repr__(self) -> str:
        return f"<Worker {self.id} {self.kind.value}>"

    # -- lifecycle ------------------------------------------------------------------------

    def _run(self) -> None:
        m = self._manager
        _set_runner(self)
        resource: Any = _NO_RESOURCE
        try:
            resource = self._create()
            if resource is _NO_RESOURCE:
                return
            if self._loop(resource):
                m._replace(self)
        except BaseException:  # a bug in the runtime itself: never die silently
            m._log.exception("worker %s crashed; replacing it", self.id)
            if self.current is not None:
                m._finish_orphan(self.current)
            m._replace(self)
        finally:
            if resource is not _NO_RESOURCE:
                m._destroy(resource)
            m._worker_exited(self)

    def _create(self) -> Any:
        m = self._manager
        delay = m._replacement_backoff[0]
        failures = 0
        while True:
            try:
                resource = m._on_create()
            except BaseException as exc:
                if self.kind is not WorkerKind.REPLACEMENT or m._queue.killed:
                    self.creation_error = exc
                    if self.kind is WorkerKind.BURST:
                        m._log.warning(
                            "burst worker %s could not create its resource: %r", self.id, exc
                        )
                    self.created.set()
                    return _NO_RESOURCE
                failures += 1
                if m._queue.draining and (
                    failures >= _DRAINING_CREATE_ATTEMPTS
                    or (not len(m._queue) and not m._busy_workers())
                ):
                    # Stopping, and no resource can be made: give up rather than hang
                    # stop(); tasks no worker runs end with ManagerClosed.
                    m._log.error(
                        "replacement worker %s: on_create failed %d times while stopping "
                        "(%r); giving up",
                        self.id,
                        failures,
                        exc,
                    )
                    self.created.set()
                    return _NO_RESOURCE
                m._log.warning(
                    "replacement worker %s: on_create failed (%r); retrying in %.2fs",
                    self.id,
                    exc,
                    delay,
                )
                if m._killed.wait(delay):
                    self.created.set()
                    return _NO_RESOURCE
                delay = min(delay * 2, m._replacement_backoff[1])
            else:
                m._resource_created()
                self.created.set()
                return resource

    # -- the hot loop -----------------------------------------------------------------

    def _loop(self, resource: Any) -> bool:
        """Run tasks until told to exit. Returns True if the worker became unhealthy."""
        m = self._manager
        q = m._queue
        prio, main = q.prio, q.main
        slot = self.slot
        clock = m._clock
        collector = m._collector
        record_completion = collector.record_completion
        registry = m._registry
        hooks = m._hooks
        start_hooks, success_hooks = hooks.start_hooks, hooks.success_hooks
        stamps = _stamps
        while not (slot.retire or q.killed):
            try:
                handle = prio.popleft() if prio else main.popleft()
            except IndexError:
                if not q.wait_for_task(slot):
                    return False
                continue
            if q.put_waiters:
                q.notify_not_full()
            if not handle.set_running_or_notify_cancel():
                handle._finished_at = clock()
                collector.record_cancel()
                registry.finished(handle)
                if hooks.cancel_hooks:
                    hooks.call(hooks.cancel_hooks, handle)
                continue
            handle.attempts += 1
            self.current = handle
            handle._started_at = started = clock()
            if start_hooks:
                hooks.call(start_hooks, handle)
            if handle._timeout is not None:
                outcome = self._run_with_deadline(handle, resource, started)
                if outcome is not _RAN:
                    return outcome is _UNHEALTHY
                continue
            try:
                result = handle._fn(resource)
            except BaseException as exc:
                self.current = None
                if self._failed(handle, exc, started):
                    return True
            else:
                self.current = None
                handle._finished_at = finished = clock()
                record_completion(stamps((handle._queued_at, started, finished)))
                # Bookkeeping before set_result: the caller it wakes needs the GIL we hold.
                registry.finished(handle)
                handle.set_result(result)
                if success_hooks:
                    hooks.call(success_hooks, handle)
        return False

    def _run_with_deadline(self, handle: TaskHandle[Any], resource: Any, started: float) -> object:
        """Run a task that has a timeout: whoever ends the run first, worker or timer, wins."""
        m = self._manager
        attempt = handle.attempts
        deadline = m._lifecycle.arm_timeout(self, handle, started)
        error: BaseException | None = None
        result: Any = None
        try:
            result = handle._fn(resource)
        except BaseException as exc:
            error = exc
        deadline.cancel()
        self.current = None
        if not handle._claim(attempt):
            m._log.info(
                "worker %s: task %s returned after its timeout; outcome discarded, worker exits",
                self.id,
                handle.id,
            )
            return _ABANDONED
        if error is not None:
            return _UNHEALTHY if self._failed(handle, error, started) else _RAN
        handle._finished_at = finished = m._clock()
        m._collector.record_completion(TaskTimestamps(handle._queued_at, started, finished))
        handle.set_result(result)
        m._registry.finished(handle)
        if m._hooks.success_hooks:
            m._hooks.call(m._hooks.success_hooks, handle)
        return _RAN

    def _failed(self, handle: TaskHandle[Any], exc: BaseException, started: float) -> bool:
        """Deliver or retry a failed run. Returns True if this worker is unhealthy."""
        m = self._manager
        stamps = TaskTimestamps(handle._queued_at, started, m._clock())
        if not m._is_unhealthy(exc):
            m._lifecycle.retry_or_fail(handle, exc, stamps)
            return False
        handle._last_error = exc
        if (
            not handle._once
            and handle.attempts <= m._max_retries
            and handle._move(TaskState.RETRYING)
        ):
            m._log.warning(
                "worker %s unhealthy after task %s failed (%r); retrying the task "
                "(attempt %d of %d) on a fresh worker",
                self.id,
                handle.id,
                exc,
                handle.attempts + 1,
                m._max_retries + 1,
            )
            m._collector.record_retry()
            if m._hooks.retry_hooks:
                m._hooks.call(m._hooks.retry_hooks, handle)
            if not (handle._move(TaskState.QUEUED) and m._queue.put_again(handle, front=True)):
                m._cancel_waiting(handle)
            return True
        handle._finished_at = stamps.finished_at
        m._collector.record_failure(stamps)
        if handle._once:
            m._log.warning(
                "worker %s unhealthy; once-task %s not retried: %r", self.id, handle.id, exc
            )
            handle.set_exception(exc)
        else:
            m._log.warning(
                "worker %s unhealthy; task %s exhausted %d health retries: %r",
                self.id,
                handle.id,
                m._max_retries,
                exc,
            )
            error = RetriesExhausted(
                f"task {handle.id} failed on an unhealthy worker {handle.attempts} times "
                f"(max_retries={m._max_retries}); last error: {exc!r}",
                attempts=handle.attempts,
            )
            error.__cause__ = exc
            handle.set_exception(error)
        m._registry.finished(handle)
        if m._hooks.failure_hooks:
            m._hooks.call(m._hooks.failure_hooks, handle)
        return True


# TaskTimestamps(...) without the NamedTuple constructor's argument handling (~2x faster).
_stamps = partial(tuple.__new__, TaskTimestamps)

_RAN: Any = object()
_UNHEALTHY: Any = object()
_ABANDONED: Any = object()
_NO_RESOURCE: Any = object()
_DRAINING_CREATE_ATTEMPTS = 3
