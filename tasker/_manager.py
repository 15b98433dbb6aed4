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

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, Generic, Protocol, runtime_checkable

from typing_extensions import TypeVar

from tasker._burst import BurstManager
from tasker._compose import Chain, Dispatcher
from tasker._errors import ManagerClosed, ResourceCreationError
from tasker._handle import TaskHandle
from tasker._hooks import HookRunner, Work, check_hooks
from tasker._inline import InlineRunner, run_inline
from tasker._lifecycle import Lifecycle
from tasker._metrics import DefaultCollector, Metrics, MetricsCollector
from tasker._options import (
    bind,
    check_retry,
    link_name,
    results_in_order,
    submit_options,
    unwrap_work,
)
from tasker._queue import TaskQueue
from tasker._registry import TaskRegistry
from tasker._resources import ResourcePool
from tasker._retry import RetryPolicy
from tasker._scaling import DefaultScalingPolicy, ScalingPolicy
from tasker._schedule import Schedule, cron_next, interval_next
from tasker._shutdown import Closer, State, live_managers
from tasker._state import TaskInfo, TaskState
from tasker._validate import check_callable, check_int, check_seconds
from tasker._worker import Worker, WorkerKind

__all__ = ["Logger", "Stats", "TaskManager"]

R = TypeVar("R")
E = TypeVar("E", default=Any)  # results are often mixed: TaskManager(make_conn) is [R, Any]
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
    """Point-in-time counts (see ``TaskManager.stats``).

    ``queued_tasks`` counts the main queue only, ``priority_tasks`` the priority queue;
    ``scheduled_tasks`` wait for their due time, ``retrying_tasks`` for their backoff.
    """

    base_workers: int
    active_workers: int
    burst_workers: int
    busy_workers: int
    queued_tasks: int
    priority_tasks: int
    available_resources: int
    scheduled_tasks: int = 0
    retrying_tasks: int = 0


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
        retry: Default :class:`RetryPolicy` for the tasks' own errors (default: none).
        hooks: Objects with any of ``on_submit``, ``on_start``, ``on_retry``,
            ``on_success``, ``on_failure``, ``on_cancel`` (each ``(TaskInfo) -> None``).
        status_retention: How many finished tasks ``status()`` remembers (>= 0).
        clock: Monotonic seconds, for metrics, bursting, timeouts and schedules.
        rng: Random source for retry jitter (inject a seeded one in tests).

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
        retry: RetryPolicy | None = None,
        hooks: Sequence[object] = (),
        status_retention: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
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
        if not isinstance(name, str):
            raise TypeError(f"name must be a non-empty str (got name={name!r})")
        if not name:
            raise ValueError(f"name must be a non-empty str (got name={name!r})")
        self.name = name
        if scaling_policy is not None and not isinstance(scaling_policy, ScalingPolicy):
            raise TypeError(
                "scaling_policy must have a decide(sample) method "
                f"(got scaling_policy={scaling_policy!r})"
            )
        self._policy: ScalingPolicy = scaling_policy or DefaultScalingPolicy()
        self._retry = check_retry(retry)
        check_int("status_retention", status_retention, minimum=0)

        self._prefix = f"{name}-"
        self._wall_offset = time.time() - clock()
        self._registry = TaskRegistry(status_retention, self._prefix, self._to_wall)
        self._hooks = HookRunner(check_hooks(hooks), self._registry, self._log)
        self._lifecycle = Lifecycle(self, rng)
        self._timer = self._lifecycle.timer
        self._queue = TaskQueue(queue_size, clock)
        self._pool: ResourcePool[R] = ResourcePool()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # live workers / inline runs / state
        self._state = State.RUNNING
        self._live: dict[int, Worker[R]] = {}
        self._exited: list[threading.Thread] = []
        self._inline: set[InlineRunner] = set()
        self._abandoned: dict[int, Worker[R]] = {}  # stuck in a timed-out task
        self._closer = Closer(self)
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
        live_managers.add(self)
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
        self._closer.shutdown(kill=True, timeout=None, quiet=True)
        raise ResourceCreationError(
            f"on_create failed for {what} while starting task manager {self.name!r}: {exc!r}"
        ) from exc

    # -- worker registry (used by Worker) -----------------------------------------------

    def _spawn(self, kind: WorkerKind) -> Worker[R] | None:
        """Start a worker; None if the lifecycle state no longer allows this kind."""
        with self._lock:
            # A replacement may still start while stopping: a re-queued task needs it.
            if not (
                self._state is State.RUNNING
                or (self._state is State.STOPPING and kind is WorkerKind.REPLACEMENT)
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

    def _set_aside(self, worker: Worker[R]) -> None:
        """A worker is stuck in a timed-out task: stop counting it (replaced by the caller)."""
        with self._lock:
            if self._live.pop(worker.id, None) is not None:
                self._abandoned[worker.id] = worker

    def _worker_exited(self, worker: Worker[R]) -> None:
        with self._lock:
            self._live.pop(worker.id, None)
            self._abandoned.pop(worker.id, None)
            self._exited.append(worker.thread)
            self._changed.notify_all()
        self._closer.finish_late()

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
            self._registry.finished(handle)

    def _cancel_waiting(self, handle: TaskHandle[Any]) -> None:
        """Cancel a task that is not running (queued, scheduled or retrying)."""
        if handle.cancel():
            handle._finished_at = self._clock()
            self._collector.record_cancel()
            self._registry.finished(handle)
            if self._hooks.cancel_hooks:
                self._hooks.call(self._hooks.cancel_hooks, handle)

    def _to_wall(self, t: float) -> float:
        """Clock seconds to UNIX time."""
        return t + self._wall_offset

    # -- submitting -----------------------------------------------------------------------

    def _refusal(self, what: str) -> ManagerClosed:
        return ManagerClosed(f"task manager {self.name!r} is shutting down: cannot {what}")

    def _checked(
        self,
        fn: Callable[[R], E] | Work[R, E],
        once: bool,
        name: str | None,
        timeout: float | None,
        retry: RetryPolicy | None,
    ) -> tuple[Callable[[R], E], str | None, float | None, RetryPolicy | None]:
        """Check one task's options; return the callable, name, timeout and retry to use."""
        if not callable(fn):
            fn, name = unwrap_work(fn, name)
        if timeout is not None:
            timeout = check_seconds("timeout", timeout)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None (got name={name!r})")
        if retry is None:
            retry = None if once else self._retry  # at-most-once opts out of the default
        else:
            check_retry(retry)
            if once:
                raise ValueError(
                    "once=True (at most one run) cannot be combined with retry= (more runs); "
                    f"got once=True, retry={retry!r}"
                )
        return fn, name, timeout, retry

    def _handle(
        self,
        fn: Callable[[R], E] | Work[R, E],
        priority: bool,
        once: bool,
        name: str | None,
        timeout: float | None,
        retry: RetryPolicy | None,
        phase: TaskState = TaskState.QUEUED,
    ) -> TaskHandle[E]:
        call, name, timeout, retry = self._checked(fn, once, name, timeout, retry)
        handle: TaskHandle[E] = TaskHandle(
            call,
            priority=priority,
            once=once,
            prefix=self._prefix,
            queued_at=self._clock(),
            name=name,
            timeout=timeout,
            retry=retry,
            phase=phase,
        )
        self._registry._tasks[handle._seq] = handle  # TaskRegistry.add, inlined: hot path
        return handle

    def submit(
        self,
        fn: Callable[[R], E] | Work[R, E],
        *,
        priority: bool = False,
        once: bool = False,
        name: str | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> TaskHandle[E]:
        """Queue ``fn(resource)`` and return its handle at once.

        Blocks only when ``queue_size`` is set and the queue is full, until there is
        room.

        Args:
            fn: The task; called with the worker's resource.
            priority: Use the priority queue (runs before waiting main-queue tasks).
            once: Never re-run after an unhealthy failure (at-most-once).
            name: A label for logs and ``status()`` (default: the function's name).
            timeout: Seconds one run may take; past it the task's ``cancelled`` event
                is set, the caller gets :class:`TaskTimeout` (unless ``retry`` runs it
                again) and a fresh worker takes the stuck one's place.
            retry: A :class:`RetryPolicy` for the task's own errors (default: the
                manager's ``retry``).

        Raises:
            ManagerClosed: The manager is stopping or stopped (also if it closes while
                this call waits for room).
        """
        return self._submit(self._handle(fn, priority, once, name, timeout, retry), True)

    def try_submit(
        self,
        fn: Callable[[R], E] | Work[R, E],
        *,
        priority: bool = False,
        once: bool = False,
        name: str | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> TaskHandle[E]:
        """Like :meth:`submit`, but raise :class:`QueueFull` instead of waiting for room."""
        return self._submit(self._handle(fn, priority, once, name, timeout, retry), False)

    def _submit(self, handle: TaskHandle[E], block: bool) -> TaskHandle[E]:
        if self._hooks.submit_hooks:  # before the put: a worker may start it at once
            self._hooks.call(self._hooks.submit_hooks, handle)
        try:
            self._queue.put(handle, handle._priority, block)
        except BaseException:
            self._refused(handle)
            raise
        self._collector.record_arrival()
        return handle

    def _refused(self, handle: TaskHandle[Any]) -> None:
        """The queue refused a task (full or closed): it was never submitted."""
        self._registry._tasks.pop(handle._seq, None)
        if self._hooks.submit_hooks and handle.cancel():  # close what on_submit opened
            self._hooks.call(self._hooks.cancel_hooks, handle)

    # -- composition ----------------------------------------------------------------------

    def submit_many(
        self, fns: Iterable[Callable[[R], E] | Work[R, E]], **options: Any
    ) -> list[TaskHandle[E]]:
        """Queue every callable (or Work object) in one step; one handle each, in order.

        ``options`` are those of :meth:`submit`, applied to every task. Takes the queue's
        lock once per batch instead of once per task. With a bounded queue it waits for
        room as needed and never drops a task.

        Raises:
            ManagerClosed: The manager closed; tasks queued before that still run (stop)
                or end cancelled (kill), the rest end with this error.
        """
        handles, error = self._submit_batch(fns, options)
        if error is not None:
            raise error
        return handles

    def _submit_batch(
        self, fns: Iterable[Callable[[R], E] | Work[R, E]], options: dict[str, Any]
    ) -> tuple[list[TaskHandle[E]], ManagerClosed | None]:
        checked = submit_options(options)
        handles: list[TaskHandle[E]] = []
        try:
            for fn in fns:
                handles.append(self._handle(fn, **checked))
        except BaseException:  # a bad item refuses the whole batch: forget what was made
            for handle in handles:
                self._registry._tasks.pop(handle._seq, None)
            raise
        if self._hooks.submit_hooks:
            for handle in handles:
                self._hooks.call(self._hooks.submit_hooks, handle)
        queued = self._queue.put_many(handles)
        record_arrival = self._collector.record_arrival
        for _ in range(queued):
            record_arrival()
        if queued == len(handles):
            return handles, None
        error = self._refusal("queue task")
        for handle in handles[queued:]:
            if handle._fail_if_pending(error):
                self._registry.finished(handle)
                self._hooks.call(self._hooks.failure_hooks, handle)
        return handles[:queued], error

    def chain(self, *links: Any, **options: Any) -> TaskHandle[Any]:
        """Run ``links[0](resource)``, then ``links[1](resource, result)``, and so on.

        A link is a callable or a Work object (``execute(resource)`` for the first,
        ``execute(resource, previous)`` for the others); links are typed ``Any`` because
        each may take and return something else.

        Each link is its own task (own id, visible in ``status()``), submitted when the
        previous one completed; ``options`` (as for :meth:`submit`, e.g. ``retry=``) apply
        to every link. The returned handle ends with the last link's result, or with the
        first error a link's own retries did not absorb (later links never run).
        Cancelling it cancels the links not yet started.

        Raises:
            ValueError: No links.
        """
        if not links:
            raise ValueError("chain needs at least one link (got none)")
        checked = submit_options(options)
        for link in links:
            self._checked(
                link, checked["once"], checked["name"], checked["timeout"], checked["retry"]
            )
        names = ", ".join(link_name(link) for link in links)
        handle: TaskHandle[Any] = TaskHandle(
            _chain_runs_no_code,  # the chain's handle only tracks its links
            prefix=self._prefix,
            queued_at=self._clock(),
            name=checked["name"] or f"chain({names})",
        )
        self._registry.add(handle)
        driver = Chain(self, links, checked, handle)
        try:
            driver.start()
        except ManagerClosed:
            handle._fail_if_pending(self._refusal("queue task"))
            self._registry.finished(handle)
            raise
        return handle

    def _link_handle(
        self, fn: Callable[..., Any], link: Any, options: dict[str, Any]
    ) -> TaskHandle[Any]:
        named = dict(options)
        if named["name"] is None:
            named["name"] = link_name(link)
        return self._handle(fn, **named)

    def _enqueue_accepted(self, handle: TaskHandle[Any], *, first: bool) -> None:
        """Queue a chain link: the first like any submit, later ones past the bound."""
        if first:
            self._submit(handle, True)
            return
        if self._hooks.submit_hooks:
            self._hooks.call(self._hooks.submit_hooks, handle)
        if not self._queue.put_again(handle):
            self._cancel_waiting(handle)
            return
        self._collector.record_arrival()

    def dispatch(
        self,
        source: Iterable[Callable[[R], Any]] | queue.Queue[Any],
        *,
        batch_size: int = 10,
        flush_interval: float = 0.05,
        **options: Any,
    ) -> Dispatcher:
        """Feed callables from ``source`` into this manager on a background thread.

        ``source`` is an iterable (ends when exhausted) or a ``queue.Queue`` (ends when
        it yields ``None`` or on ``stop()``). Callables are submitted in batches of
        ``batch_size``, a partial batch after ``flush_interval`` seconds and at once on
        ``stop()``. If the manager closes under it, the dispatcher ends and counts what
        it could not submit in ``failed``.

        Example:
            >>> d = manager.dispatch(jobs(), batch_size=100)
            >>> d.join()
            >>> d.submitted, d.failed
        """
        if self._state is not State.RUNNING:
            raise self._refusal("dispatch")
        dispatcher = Dispatcher(
            self,
            source,
            batch_size=batch_size,
            flush_interval=flush_interval,
            options=submit_options(options),
        )
        dispatcher._start()
        return dispatcher

    # -- scheduling -----------------------------------------------------------------------

    def schedule(
        self, fn: Callable[[R], E] | Work[R, E], delay: float, **options: Any
    ) -> TaskHandle[E]:
        """Queue ``fn`` after ``delay`` seconds; returns its handle, in state SCHEDULED.

        ``options`` are those of :meth:`submit`. The handle's id is the task's id
        throughout. ``stop()`` cancels it if it is not due yet; so does ``kill()``.
        """
        delay = check_seconds("delay", delay, allow_zero=True)
        return self._schedule_handle(fn, self._clock() + delay, options)

    def schedule_at(
        self, fn: Callable[[R], E] | Work[R, E], when: datetime | float, **options: Any
    ) -> TaskHandle[E]:
        """Queue ``fn`` at ``when``: an aware ``datetime`` or a UNIX timestamp.

        A time in the past queues it at once.

        Raises:
            ValueError: ``when`` is a naive datetime (its time zone would be a guess).
        """
        if isinstance(when, datetime):
            if when.tzinfo is None or when.utcoffset() is None:
                raise ValueError(
                    f"when must be a timezone-aware datetime (got naive {when!r}); a naive "
                    "time is ambiguous, e.g. use datetime.now(UTC) or .replace(tzinfo=...)"
                )
            timestamp = when.timestamp()
        elif isinstance(when, int | float) and not isinstance(when, bool):
            timestamp = float(when)
        else:
            raise TypeError(
                f"when must be an aware datetime or a UNIX timestamp (got when={when!r})"
            )
        due = self._clock() + max(0.0, timestamp - self._to_wall(self._clock()))
        return self._schedule_handle(fn, due, options)

    def _schedule_handle(
        self, fn: Callable[[R], E] | Work[R, E], due: float, options: dict[str, Any]
    ) -> TaskHandle[E]:
        handle = self._handle(fn, phase=TaskState.SCHEDULED, **submit_options(options))
        try:
            self._lifecycle.schedule(handle, due)
        except ManagerClosed:
            self._registry._tasks.pop(handle._seq, None)
            raise
        if self._hooks.submit_hooks:
            self._hooks.call(self._hooks.submit_hooks, handle)
        return handle

    def schedule_recurring(
        self,
        fn: Callable[[R], E] | Work[R, E],
        interval: float,
        *,
        overlap: bool = False,
        **options: Any,
    ) -> Schedule:
        """Run ``fn`` every ``interval`` seconds, the first run one interval from now.

        Each run is its own task (``options`` as for :meth:`submit`). A run due while the
        previous one is still queued or running is skipped unless ``overlap=True``; runs
        missed while the process was busy are not replayed. Ends on ``cancel()``,
        ``stop()`` or ``kill()``.
        """
        interval = check_seconds("interval", interval)
        return self._add_schedule(fn, interval_next(interval), overlap, options)

    def schedule_cron(
        self,
        fn: Callable[[R], E] | Work[R, E],
        expr: str,
        *,
        overlap: bool = False,
        tz: tzinfo = UTC,
        **options: Any,
    ) -> Schedule:
        """Run ``fn`` at the times a cron expression matches (in ``tz``, default UTC).

        Needs ``cronsim`` (``pip install 'tasker-pool[cron]'``).

        Raises:
            ValueError: ``expr`` is not a valid cron expression (with the parser's reason).
        """
        if not isinstance(tz, tzinfo):
            raise TypeError(f"tz must be a datetime.tzinfo (got tz={tz!r})")
        return self._add_schedule(fn, cron_next(expr, tz, self._to_wall), overlap, options)

    def _add_schedule(
        self,
        fn: Callable[[R], E] | Work[R, E],
        next_due: Any,
        overlap: bool,
        options: dict[str, Any],
    ) -> Schedule:
        checked = submit_options(options)
        # Check now, not at the first run.
        self._checked(fn, checked["once"], checked["name"], checked["timeout"], checked["retry"])
        schedule = Schedule(self, fn, checked, next_due, bool(overlap))
        self._lifecycle.add_schedule(schedule)
        return schedule

    def _forget_schedule(self, schedule: Schedule) -> None:
        self._lifecycle.forget_schedule(schedule)

    def status(self, task_id: str) -> TaskInfo:
        """Return a :class:`TaskInfo` snapshot of the task with id ``task_id``.

        Live tasks are always known; finished ones for the last ``status_retention``.
        Keeps answering during and after ``stop()``/``kill()``.

        Raises:
            TaskNotFound: The id is unknown, or finished too long ago.
        """
        return self._registry.info(self._registry.get(task_id))

    def queue_task(self, fn: Callable[[R], E] | Work[R, E]) -> E:
        """Queue ``fn(resource)``, wait, and return its result (or raise its error)."""
        return self.submit(fn).result()

    def queue_task_with_priority(self, fn: Callable[[R], E] | Work[R, E]) -> E:
        """Like :meth:`queue_task`, through the priority queue."""
        return self.submit(fn, priority=True).result()

    def queue_task_once(self, fn: Callable[[R], E] | Work[R, E]) -> E:
        """Like :meth:`queue_task`, but never re-run after an unhealthy failure."""
        return self.submit(fn, once=True).result()

    def queue_task_with_priority_once(self, fn: Callable[[R], E] | Work[R, E]) -> E:
        """Priority and at-most-once."""
        return self.submit(fn, priority=True, once=True).result()

    def map(
        self, fn: Callable[[R, T], E], iterable: Iterable[T], *, priority: bool = False
    ) -> Iterator[E]:
        """Run ``fn(resource, item)`` for every item; yield results in input order.

        Every item is submitted before the first result is yielded (as
        ``Executor.map`` does). Closing the iterator early cancels what has not started.
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable (got fn={fn!r})")
        handles = [self.submit(bind(fn, item), priority=priority) for item in iterable]
        return results_in_order(handles)

    def run_task(self, fn: Callable[[R], E] | Work[R, E]) -> E:
        """Run ``fn(resource)`` now, in this thread, on a pooled or temporary resource.

        Takes an idle resource from the pool, or makes a temporary one (destroyed
        afterwards) if none is idle. If ``check_health`` calls the error unhealthy, the
        pooled resource is destroyed and the pool refilled; the error is raised as is.

        Raises:
            ManagerClosed: The manager is stopping or stopped.
            ResourceCreationError: A temporary resource could not be made.
        """
        name = None
        if not callable(fn):
            fn, name = unwrap_work(fn, None)
        handle: TaskHandle[E] = TaskHandle(
            fn, prefix=self._prefix, queued_at=self._clock(), name=name
        )
        self._registry.add(handle)
        runner = InlineRunner(self, handle)
        with self._lock:
            if self._state is not State.RUNNING:
                self._registry.finished(handle)
                raise self._refusal("run task")
            self._inline.add(runner)
        try:
            return run_inline(self, handle, runner)
        finally:
            with self._lock:
                self._inline.discard(runner)
                self._changed.notify_all()
            self._closer.finish_late()

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
            scheduled_tasks=len(self._lifecycle.scheduled),
            retrying_tasks=len(self._lifecycle.retrying),
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
        self._closer.shutdown(kill=False, timeout=timeout)

    def kill(self, timeout: float | None = None) -> None:
        """Stop now: refuse new tasks, cancel queued ones, signal running ones.

        Queued tasks end cancelled at once; running tasks see
        ``current_task().cancelled`` set, and a task that returns anyway still
        delivers its result. Waits for running tasks to return, or ``timeout`` seconds
        (then it logs the ids still running; their workers clean up when they return).
        """
        self._closer.shutdown(kill=True, timeout=timeout)

    def __enter__(self) -> TaskManager[R, E]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<TaskManager {self.name!r} {self._state.value} workers={len(self._live)}>"


def _chain_runs_no_code(_: Any) -> None:
    raise AssertionError("a chain's own handle is never queued")
