"""TaskManager: the public facade over the thread runtime.

Data flow::

    submit / queue_task* / map ──► TaskQueue (priority ▸ main, optional bound)
                                        │  lock-free pops while there is work
                                        ▼
                          Worker x N (one resource each) ──► TaskHandle (Future)
                                        ▲       │ unhealthy: destroy, replace, re-queue
          BurstManager ── ScalingPolicy ┘       ▼
          (adds / retires workers)         MetricsCollector
    run_task ──► ResourcePool ──► caller's thread (no queue)

Ownership: a worker owns its resource; the queue owns queued tasks; the manager owns
its lifecycle state (RUNNING → STOPPING → CLOSED, or → KILLING → CLOSED) and the
registry of live workers, both under ``_lock``.
"""

from __future__ import annotations

import atexit
import enum
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from tasker._burst import BurstManager
from tasker._context import _local, _set_runner
from tasker._errors import ManagerClosed, ResourceCreationError
from tasker._handle import TaskHandle
from tasker._metrics import DefaultCollector, Metrics, MetricsCollector, TaskTimestamps
from tasker._queue import TaskQueue
from tasker._resources import ResourcePool
from tasker._scaling import DefaultScalingPolicy, ScalingPolicy
from tasker._validate import check_callable, check_int, check_seconds
from tasker._worker import Worker, WorkerKind

__all__ = ["Logger", "Stats", "TaskManager"]

R = TypeVar("R")
E = TypeVar("E")
T = TypeVar("T")


@runtime_checkable
class Logger(Protocol):
    """The logging methods tasker calls; a ``logging.Logger`` satisfies it."""

    def debug(self, msg: str, *args: Any) -> None: ...
    def info(self, msg: str, *args: Any) -> None: ...
    def warning(self, msg: str, *args: Any) -> None: ...
    def error(self, msg: str, *args: Any) -> None: ...
    def exception(self, msg: str, *args: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class Stats:
    """Point-in-time counts (see ``TaskManager.stats``)."""

    base_workers: int
    active_workers: int
    burst_workers: int
    busy_workers: int
    queued_tasks: int
    priority_tasks: int
    available_resources: int


class _State(enum.Enum):
    RUNNING = "running"
    STOPPING = "stopping"
    KILLING = "killing"
    CLOSED = "closed"


_TRANSITIONS = {
    _State.RUNNING: {_State.STOPPING, _State.KILLING},
    _State.STOPPING: {_State.KILLING, _State.CLOSED},
    _State.KILLING: {_State.CLOSED},
    _State.CLOSED: set(),
}


class _InlineRunner:
    """What ``current_task()`` sees inside ``run_task``."""

    __slots__ = ("_manager", "cancelled", "current")

    def __init__(self, manager: TaskManager[Any, Any], handle: TaskHandle[Any]) -> None:
        self._manager = manager
        self.current: TaskHandle[Any] | None = handle
        self.cancelled = threading.Event()


class TaskManager(Generic[R, E]):
    """Runs tasks concurrently on workers that each own one long-lived resource.

    Args:
        on_create: ``() -> R``; makes a resource. Called in the worker's own thread.
        on_destroy: ``(R) -> None``; releases one. Errors are logged, never raised.
        workers: Base workers, always running (>= 1).
        max_workers: Cap on base + burst workers (default ``workers * 2``).
        resource_pool_size: Resources kept for ``run_task`` (default ``workers``;
            0 means ``run_task`` always makes a temporary one).
        check_health: ``(exc) -> bool``; False marks the worker that raised ``exc``
            unhealthy: it is destroyed and replaced, and the task re-queued.
        max_retries: Re-runs of a task after unhealthy failures (>= 0).
        burst_interval: Seconds between scaling decisions; None or 0 disables bursting.
        queue_size: Bound on waiting tasks; 0 means unbounded.
        logger: Where lifecycle events go (default ``logging.getLogger("tasker")``).
        collector: A :class:`MetricsCollector` (default :class:`DefaultCollector`).
        name: Label for threads, logs, task ids and metrics.
        scaling_policy: A :class:`ScalingPolicy` (default :class:`DefaultScalingPolicy`).
        clock: Monotonic seconds, for the default collector and the burst manager.

    Raises:
        TypeError, ValueError: An argument is invalid; the message names it.
        ResourceCreationError: ``on_create`` failed; nothing is left running.

    Example:
        >>> with tasker.TaskManager(open_conn, on_destroy=close_conn, workers=4) as m:
        ...     rows = m.queue_task(lambda conn: conn.execute("select 1"))
    """

    def __init__(
        self,
        on_create: Callable[[], R],
        *,
        on_destroy: Callable[[R], object] | None = None,
        workers: int = 1,
        max_workers: int | None = None,
        resource_pool_size: int | None = None,
        check_health: Callable[[BaseException], bool] | None = None,
        max_retries: int = 3,
        burst_interval: float | None = 0.1,
        queue_size: int = 0,
        logger: Logger | logging.Logger | None = None,
        collector: MetricsCollector | None = None,
        name: str = "tasker",
        scaling_policy: ScalingPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_create = check_callable("on_create", on_create)
        self._on_destroy = check_callable("on_destroy", on_destroy, optional=True)
        self._base = check_int("workers", workers, minimum=1)
        if max_workers is None:
            max_workers = workers * 2
        self._max = check_int("max_workers", max_workers, minimum=1)
        if max_workers < workers:
            raise ValueError(
                f"max_workers must be >= workers (got max_workers={max_workers}, workers={workers})"
            )
        pool = workers if resource_pool_size is None else resource_pool_size
        self._pool_size = check_int("resource_pool_size", pool, minimum=0)
        self._check_health = check_callable("check_health", check_health, optional=True)
        self._max_retries = check_int("max_retries", max_retries, minimum=0)
        interval = 0.0 if burst_interval is None else burst_interval
        self._burst_interval = check_seconds("burst_interval", interval, allow_zero=True)
        check_int("queue_size", queue_size, minimum=0)
        if logger is None:
            logger = logging.getLogger("tasker")
        elif not isinstance(logger, Logger):
            raise TypeError(
                "logger must have debug/info/warning/error/exception methods, like a "
                f"logging.Logger (got logger={logger!r})"
            )
        self._log: Logger = logger
        self._clock = check_callable("clock", clock)
        if collector is None:
            collector = DefaultCollector(clock=clock)
        elif not isinstance(collector, MetricsCollector):
            raise TypeError(
                "collector must implement the MetricsCollector protocol "
                f"(record_arrival, record_completion, ..., metrics) (got collector={collector!r})"
            )
        self._collector: MetricsCollector = collector
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str (got name={name!r})")
        self.name = name
        if scaling_policy is not None and not isinstance(scaling_policy, ScalingPolicy):
            raise TypeError(
                "scaling_policy must have a decide(sample) method "
                f"(got scaling_policy={scaling_policy!r})"
            )
        self._policy: ScalingPolicy = scaling_policy or DefaultScalingPolicy()

        self._prefix = f"{name}-"
        self._queue = TaskQueue(queue_size, clock)
        self._pool: ResourcePool[R] = ResourcePool()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # live workers / inline runs / state
        self._state = _State.RUNNING
        self._live: dict[int, Worker[R]] = {}
        self._exited: list[threading.Thread] = []
        self._inline: set[_InlineRunner] = set()
        self._next_worker = 0
        self._killed = threading.Event()
        self._created = 0
        self._destroyed = 0
        self._replacement_backoff = (0.05, 5.0)
        self._burst: BurstManager | None = None

        self._start()

    # -- construction ---------------------------------------------------------------------

    def _start(self) -> None:
        try:
            for _ in range(self._pool_size):
                resource = self._on_create()
                self._resource_created()
                self._pool.put(resource)
        except BaseException as exc:
            self._abort_start(exc, "a run_task pool resource")
        starting = [w for _ in range(self._base) if (w := self._spawn(WorkerKind.BASE))]
        for worker in starting:
            worker.created.wait()
        failed = next((w for w in starting if w.creation_error is not None), None)
        if failed is not None:
            assert failed.creation_error is not None
            self._abort_start(failed.creation_error, f"worker {failed.id}'s resource")
        if self._burst_interval > 0 and self._max > self._base:
            self._burst = BurstManager(self, self._policy, self._burst_interval)
            self._queue.on_starved = self._burst.nudge
            self._burst.start()
        _live_managers.add(self)
        self._log.info(
            "task manager %r started: workers=%d max_workers=%d resource_pool_size=%d "
            "queue_size=%d bursting=%s",
            self.name,
            self._base,
            self._max,
            self._pool_size,
            self._queue.maxsize,
            "on" if self._burst else "off",
        )

    def _abort_start(self, exc: BaseException, what: str) -> None:
        self._log.error("task manager %r: on_create failed for %s: %r", self.name, what, exc)
        self._shutdown(kill=True, timeout=None, quiet=True)
        raise ResourceCreationError(
            f"on_create failed for {what} while starting task manager {self.name!r}: {exc!r}"
        ) from exc

    # -- worker registry (used by Worker) -----------------------------------------------

    def _spawn(self, kind: WorkerKind) -> Worker[R] | None:
        """Start a worker; None if the lifecycle state no longer allows this kind."""
        with self._lock:
            # A replacement may still start while stopping: a re-queued task needs it.
            if not (
                self._state is _State.RUNNING
                or (self._state is _State.STOPPING and kind is WorkerKind.REPLACEMENT)
            ):
                return None
            self._next_worker += 1
            worker = Worker(self, self._next_worker, kind)
            self._live[worker.id] = worker
        worker.thread.start()
        return worker

    def _replace(self, worker: Worker[R]) -> None:
        replacement = self._spawn(WorkerKind.REPLACEMENT)
        if replacement is not None:
            self._log.info("worker %s replaced by worker %s", worker.id, replacement.id)

    def _worker_exited(self, worker: Worker[R]) -> None:
        with self._lock:
            self._live.pop(worker.id, None)
            self._exited.append(worker.thread)
            self._changed.notify_all()

    def _busy_workers(self) -> int:
        return sum(1 for w in list(self._live.values()) if w.current is not None)

    def _resource_created(self) -> None:
        with self._lock:
            self._created += 1

    def _destroy(self, resource: R) -> None:
        try:
            if self._on_destroy is not None:
                self._on_destroy(resource)
        except BaseException as exc:
            self._log.warning("task manager %r: on_destroy failed: %r", self.name, exc)
        finally:
            with self._lock:
                self._destroyed += 1

    def _is_unhealthy(self, exc: BaseException) -> bool:
        if self._check_health is None:
            return False
        try:
            return not self._check_health(exc)
        except BaseException as health_exc:
            self._log.warning(
                "check_health raised %r while judging %r; treating the worker as unhealthy",
                health_exc,
                exc,
            )
            return True

    def _finish_orphan(self, handle: TaskHandle[Any]) -> None:
        if not handle.done():
            handle.set_exception(RuntimeError(f"tasker worker crashed running task {handle.id}"))

    # -- submitting -----------------------------------------------------------------------

    def _refusal(self, what: str) -> ManagerClosed:
        return ManagerClosed(f"task manager {self.name!r} is shutting down: cannot {what}")

    def submit(
        self, fn: Callable[[R], E], *, priority: bool = False, once: bool = False
    ) -> TaskHandle[E]:
        """Queue ``fn(resource)`` and return its handle at once.

        Blocks only when ``queue_size`` is set and the queue is full, until there is
        room. ``priority=True`` puts it in the priority queue; ``once=True`` means it
        is never re-run after an unhealthy failure (at-most-once).

        Raises:
            ManagerClosed: The manager is stopping or stopped (also if it closes while
                this call waits for room).
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable (got fn={fn!r})")
        handle: TaskHandle[E] = TaskHandle(
            fn, priority=priority, once=once, prefix=self._prefix, queued_at=self._clock()
        )
        self._queue.put(handle, priority)
        self._collector.record_arrival()
        return handle

    def try_submit(
        self, fn: Callable[[R], E], *, priority: bool = False, once: bool = False
    ) -> TaskHandle[E]:
        """Like :meth:`submit`, but raise :class:`QueueFull` instead of waiting for room."""
        if not callable(fn):
            raise TypeError(f"fn must be callable (got fn={fn!r})")
        handle: TaskHandle[E] = TaskHandle(
            fn, priority=priority, once=once, prefix=self._prefix, queued_at=self._clock()
        )
        self._queue.put(handle, priority, block=False)
        self._collector.record_arrival()
        return handle

    def queue_task(self, fn: Callable[[R], E]) -> E:
        """Queue ``fn(resource)``, wait, and return its result (or raise its error)."""
        return self.submit(fn).result()

    def queue_task_with_priority(self, fn: Callable[[R], E]) -> E:
        """Like :meth:`queue_task`, through the priority queue."""
        return self.submit(fn, priority=True).result()

    def queue_task_once(self, fn: Callable[[R], E]) -> E:
        """Like :meth:`queue_task`, but never re-run after an unhealthy failure."""
        return self.submit(fn, once=True).result()

    def queue_task_with_priority_once(self, fn: Callable[[R], E]) -> E:
        """Priority and at-most-once."""
        return self.submit(fn, priority=True, once=True).result()

    def map(
        self, fn: Callable[[R, T], E], iterable: Iterable[T], *, priority: bool = False
    ) -> Iterator[E]:
        """Run ``fn(resource, item)`` for every item; yield results in input order.

        Every item is submitted before the first result is yielded (as
        ``Executor.map`` does). Closing the iterator early cancels what has not started.
        """
        handles = [self.submit(_bind(fn, item), priority=priority) for item in iterable]
        return _results_in_order(handles)

    def run_task(self, fn: Callable[[R], E]) -> E:
        """Run ``fn(resource)`` now, in this thread, on a pooled or temporary resource.

        Takes an idle resource from the pool, or makes a temporary one (destroyed
        afterwards) if none is idle. If ``check_health`` calls the error unhealthy, the
        pooled resource is destroyed and the pool refilled; the error is raised as is.

        Raises:
            ManagerClosed: The manager is stopping or stopped.
            ResourceCreationError: A temporary resource could not be made.
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable (got fn={fn!r})")
        handle: TaskHandle[E] = TaskHandle(fn, prefix=self._prefix, queued_at=self._clock())
        runner = _InlineRunner(self, handle)
        with self._lock:
            if self._state is not _State.RUNNING:
                raise self._refusal("run task")
            self._inline.add(runner)
        try:
            return self._run_inline(handle, runner)
        finally:
            with self._lock:
                self._inline.discard(runner)
                self._changed.notify_all()

    def _run_inline(self, handle: TaskHandle[E], runner: _InlineRunner) -> E:
        pooled, resource = self._pool.take()
        if not pooled:
            try:
                resource = self._on_create()
            except BaseException as exc:
                raise ResourceCreationError(
                    f"on_create failed for a temporary run_task resource: {exc!r}"
                ) from exc
            self._resource_created()
        assert resource is not None or not pooled
        self._collector.record_arrival()
        handle.attempts = 1
        previous = _set_runner(runner)
        started = self._clock()
        healthy = True
        try:
            result = handle._fn(resource)
        except BaseException as exc:
            healthy = not self._is_unhealthy(exc)
            self._collector.record_failure(TaskTimestamps(started, started, self._clock()))
            raise
        else:
            self._collector.record_completion(TaskTimestamps(started, started, self._clock()))
            return result
        finally:
            _set_runner(previous)
            runner.current = None
            self._release_inline(resource, pooled, healthy)  # type: ignore[arg-type]

    def _release_inline(self, resource: R, pooled: bool, healthy: bool) -> None:
        if healthy and pooled and self._pool.put(resource):
            return
        self._destroy(resource)
        if pooled and not healthy:
            self._log.warning("run_task resource unhealthy: destroyed it, refilling the pool")
            try:
                fresh = self._on_create()
            except BaseException as exc:
                self._log.warning("could not refill the run_task pool: %r", exc)
                return
            self._resource_created()
            if not self._pool.put(fresh):
                self._destroy(fresh)

    # -- observing ------------------------------------------------------------------------

    def stats(self) -> Stats:
        """Return point-in-time counts of workers, queued tasks and pooled resources."""
        live = list(self._live.values())
        return Stats(
            base_workers=self._base,
            active_workers=len(live),
            burst_workers=max(0, len(live) - self._base),
            busy_workers=sum(1 for w in live if w.current is not None),
            queued_tasks=len(self._queue.main),
            priority_tasks=len(self._queue.prio),
            available_resources=len(self._pool),
        )

    def metrics(self) -> Metrics:
        """Return the collector's performance snapshot (see :class:`Metrics`)."""
        return self._collector.metrics()

    @property
    def max_workers(self) -> int:
        """The cap on base + burst workers."""
        return self._max

    # -- shutting down --------------------------------------------------------------------

    def stop(self, timeout: float | None = None) -> None:
        """Stop gracefully: refuse new tasks, finish queued and running ones, clean up.

        Idempotent and safe from several threads. Returns when every worker has exited
        and every resource is destroyed, or when ``timeout`` seconds pass (then the
        remaining workers finish and clean up in the background). Called from inside a
        task, it starts the shutdown and returns without waiting for itself.
        """
        self._shutdown(kill=False, timeout=timeout)

    def kill(self, timeout: float | None = None) -> None:
        """Stop now: refuse new tasks, cancel queued ones, signal running ones.

        Queued tasks end cancelled at once; running tasks see
        ``current_task().cancelled`` set, and a task that returns anyway still
        delivers its result. Waits for running tasks to return, or ``timeout`` seconds
        (then it logs the ids still running; their workers clean up when they return).
        """
        self._shutdown(kill=True, timeout=timeout)

    def _transition(self, to: _State) -> bool:
        """Move the lifecycle state (``_lock`` held); False if not allowed from here."""
        if to not in _TRANSITIONS[self._state]:
            return False
        self._state = to
        self._changed.notify_all()
        return True

    def _shutdown(self, *, kill: bool, timeout: float | None, quiet: bool = False) -> None:
        if timeout is not None:
            check_seconds("timeout", timeout, allow_zero=True)
        deadline = None if timeout is None else self._clock() + timeout
        with self._lock:
            began = self._transition(_State.KILLING if kill else _State.STOPPING)
            runners: list[Worker[R] | _InlineRunner] = [*self._live.values(), *self._inline]
        if began and kill:
            self._killed.set()
            cancelled = self._queue.kill(str(self._refusal("queue task")))
            for handle in cancelled:
                if handle._cancel_and_notify():
                    self._collector.record_cancel()
            for runner in runners:
                runner.cancelled.set()
            if not quiet:
                self._log.info(
                    "task manager %r killed: %d queued tasks cancelled", self.name, len(cancelled)
                )
        elif began:
            self._queue.close(str(self._refusal("queue task")))
            self._log.info(
                "task manager %r stopping: draining %d queued tasks", self.name, len(self._queue)
            )
        if self._burst is not None:
            self._burst.stop()
        if _runner_manager() is self:
            return  # called from one of our own tasks: waiting would wait for itself
        if not self._wait_idle(deadline):
            running = [w.current.id for w in list(self._live.values()) if w.current is not None]
            self._log.warning(
                "task manager %r: %s timed out after %ss; still running: %s",
                self.name,
                "kill" if kill else "stop",
                timeout,
                running or "none",
            )
            return
        self._finish_shutdown(quiet)

    def _wait_idle(self, deadline: float | None) -> bool:
        with self._lock:
            while self._live or self._inline:
                remaining = None if deadline is None else deadline - self._clock()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(remaining)
            exited, self._exited = self._exited, []
        for thread in exited:
            thread.join()
        return True

    def _finish_shutdown(self, quiet: bool) -> None:
        for resource in self._pool.close():
            self._destroy(resource)
        for handle in self._queue.sweep():  # a task that raced past close(); never hang it
            handle._fail_if_pending(self._refusal("run task"))
        if self._burst is not None:
            self._burst.join()
        with self._lock:
            closed_now = self._transition(_State.CLOSED)
        if closed_now:
            _live_managers.discard(self)
            if not quiet:
                self._log.info(
                    "task manager %r stopped: %d resources created, %d destroyed",
                    self.name,
                    self._created,
                    self._destroyed,
                )

    def __enter__(self) -> TaskManager[R, E]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<TaskManager {self.name!r} {self._state.value} workers={len(self._live)}>"


def _runner_manager() -> object:
    """The manager whose task is running in this thread, if any."""
    return getattr(_local, "runner", None) and getattr(_local.runner, "_manager", None)


def _bind(fn: Callable[[R, T], E], item: T) -> Callable[[R], E]:
    def call(resource: R) -> E:
        return fn(resource, item)

    return call


def _results_in_order(handles: list[TaskHandle[E]]) -> Iterator[E]:
    try:
        for handle in handles:
            yield handle.result()
    finally:
        for handle in handles:
            handle.cancel()


# Managers that were never stopped are stopped (gracefully) at interpreter exit, so a
# program that forgets stop() still exits and still destroys its resources.
_live_managers: weakref.WeakSet[TaskManager[Any, Any]] = weakref.WeakSet()


@atexit.register
def _stop_live_managers() -> None:
    for manager in list(_live_managers):
        manager.stop()
