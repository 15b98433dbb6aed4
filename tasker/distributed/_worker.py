"""Worker: a TaskManager fed from the broker, and the outcomes written back.

::

    broker ──fetch (≤ free capacity)──► fetcher thread ──decode, verify──► TaskManager
      ▲  ▲                                 │ bad message: dead-letter       │ workers,
      │  └──touch (what we hold)───────────┘                                │ resources,
      │                                                                     │ health,
      └──settle: record + retry/next link + ack ◄── settler thread ◄── done callbacks

Three threads besides the manager's: the *fetcher* reads no more messages than the
manager has room for (``max_workers + prefetch`` in flight), decodes and verifies each,
and submits it; it also touches what the worker holds, so a long task is not taken over.
The *settler* writes, in order, "running" marks and settlements (outcome record, then a
retry or the chain's next link, then the acknowledgement, atomically per message),
batched per round trip. The *schedule runner* (if the app has schedules) publishes runs.

Failure rules: a message is acknowledged only by the settle that stores its outcome, so
a crash anywhere leaves it pending and the broker redelivers it after the visibility
timeout (at least once). Connection errors are logged and retried with capped
exponential backoff by both threads; outcomes wait in memory meanwhile.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from tasker._context import current_task
from tasker._errors import ManagerClosed
from tasker._handle import TaskHandle
from tasker._manager import TaskManager
from tasker._retry import retry_wanted
from tasker._validate import check_int, check_seconds
from tasker.distributed._broker import Delivery, Outgoing, Record, Settlement
from tasker.distributed._errors import BadMessage, BrokerUnavailable
from tasker.distributed._message import Message, check_name
from tasker.distributed._schedules import ScheduleRunner

if TYPE_CHECKING:
    from tasker.distributed._app import App, Task

__all__ = ["Worker", "WorkerStats"]

R = TypeVar("R")

_BACKOFF = (0.05, 5.0)
_SETTLE_BATCH = 512


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """Counts since the worker started (see :meth:`Worker.stats`).

    Attributes:
        received: Messages fetched (redeliveries included).
        redelivered: Of those, messages delivered before (their first worker died).
        completed: Tasks settled COMPLETED.
        failed: Tasks settled FAILED (retries exhausted or not wanted).
        retried: Retries published (waiting in the broker's delayed set).
        dead_lettered: Messages this worker sent to the dead-letter stream.
        in_flight: Messages submitted to the manager and not finished.
        unacked: Messages held and not yet acknowledged.
        broker_errors: Broker calls that failed (each is retried).
        connected: False while the last broker call failed.
    """

    received: int
    redelivered: int
    completed: int
    failed: int
    retried: int
    dead_lettered: int
    in_flight: int
    unacked: int
    broker_errors: int
    connected: bool


class _Backoff:
    """Capped exponential backoff with full jitter."""

    def __init__(self) -> None:
        self.failures = 0

    def next(self) -> float:
        self.failures += 1
        low, cap = _BACKOFF
        return random.uniform(low, min(cap, low * 2**self.failures))

    def reset(self) -> bool:
        """Forget the failures; True if there were any."""
        had, self.failures = self.failures > 0, 0
        return had


class Worker(Generic[R]):
    """Runs the app's tasks from the broker on a :class:`~tasker.TaskManager`.

    Made by ``app.worker(...)``; running once constructed, like a TaskManager.

    Args:
        app: The :class:`App` whose tasks it runs.
        on_create: ``() -> R``, the per-worker-thread resource (default: none, None).
        on_destroy, check_health, workers, max_workers, max_retries, burst_interval,
            collector, scaling_policy: As for :class:`~tasker.TaskManager`; health
            checks, bursting, timeouts and metrics apply to every task.
        queues: The queues to read (default: those of the app's registered tasks).
        prefetch: Messages held beyond ``max_workers`` (default 0: never more than the
            manager could run at once, so an idle worker elsewhere gets the rest).
        consumer: This worker's name in the consumer group (default host-pid-random).
        poll_interval: Longest wait for messages in one fetch; also bounds how long
            ``stop()`` waits for the fetcher.
        schedules: Publish the runs of the app's schedules (once per run across all
            workers, whichever gets there first).
        name: Label for threads, logs and metrics.

    Example:
        >>> worker = app.worker(open_conn, on_destroy=close_conn, workers=4, queues=["images"])
        >>> ...
        >>> worker.stop()   # stop reading, finish and acknowledge what it holds
    """

    def __init__(
        self,
        app: App,
        on_create: Callable[[], R] | None = None,
        *,
        on_destroy: Callable[[R], object] | None = None,
        check_health: Callable[[BaseException], bool] | None = None,
        workers: int = 1,
        max_workers: int | None = None,
        queues: Sequence[str] | None = None,
        prefetch: int = 0,
        consumer: str | None = None,
        poll_interval: float = 0.5,
        schedules: bool = True,
        name: str = "worker",
        **manager_options: Any,
    ) -> None:
        self.app = app
        self.broker = app.broker
        self._log = app.log
        if queues is None:
            queues = sorted({t.queue for t in app.tasks.values()} or {app.queue})
        if isinstance(queues, str) or not queues:
            raise ValueError(f"queues must be a non-empty list of names (got queues={queues!r})")
        self.queues = [check_name("queue", q) for q in queues]
        self._prefetch = check_int("prefetch", prefetch, minimum=0)
        self._poll = check_seconds("poll_interval", poll_interval)
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        check_name("consumer", self.consumer)
        visibility = float(getattr(self.broker, "visibility_timeout", 30.0))
        self._touch_every = max(0.05, visibility / 3)
        self.name = name
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._outbox: deque[Record | Settlement] = deque()
        self._outbox_ready = threading.Condition(self._lock)
        self._unacked: dict[str, Delivery] = {}
        self._in_flight = 0
        self._stopping = threading.Event()
        self._settler_closing = False
        self._settler_abandon = False
        self._stop_lock = threading.Lock()
        self._stopped = False
        self._counts = dict.fromkeys(
            ("received", "redelivered", "completed", "failed", "retried", "dead", "errors"), 0
        )
        self._connected = True

        # The pool serves run_task, which a worker never calls: no idle resources.
        manager_options.setdefault("resource_pool_size", 0)
        self.manager: TaskManager[R, Any] = TaskManager(
            on_create if on_create is not None else _no_resource,  # type: ignore[arg-type]
            on_destroy=on_destroy,
            check_health=check_health,
            workers=workers,
            max_workers=max_workers,
            logger=app.log,
            name=name,
            **manager_options,
        )
        self._capacity = self.manager.max_workers + self._prefetch
        self._fetcher = threading.Thread(target=self._fetch_loop, name=f"{name}-fetch", daemon=True)
        self._settler = threading.Thread(
            target=self._settle_loop, name=f"{name}-settle", daemon=True
        )
        self._schedules: ScheduleRunner | None = None
        if schedules and app.schedules:
            self._schedules = ScheduleRunner(app, time.time, name)
        self._settler.start()
        self._fetcher.start()
        if self._schedules is not None:
            self._schedules.start()
        self._log.info(
            "worker %r (consumer %s) reading %s with up to %d tasks in flight",
            name,
            self.consumer,
            ", ".join(self.queues),
            self._capacity,
        )

    def __repr__(self) -> str:
        return f"<Worker {self.name!r} consumer={self.consumer} queues={self.queues}>"

    def __enter__(self) -> Worker[R]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- observing ------------------------------------------------------------------------

    def stats(self) -> WorkerStats:
        """Counts of what this worker received, settled, retried and dead-lettered."""
        c = self._counts
        with self._lock:
            in_flight, unacked = self._in_flight, len(self._unacked)
        return WorkerStats(
            received=c["received"],
            redelivered=c["redelivered"],
            completed=c["completed"],
            failed=c["failed"],
            retried=c["retried"],
            dead_lettered=c["dead"],
            in_flight=in_flight,
            unacked=unacked,
            broker_errors=c["errors"],
            connected=self._connected,
        )

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def _broker_failed(self, what: str, exc: BaseException, backoff: _Backoff) -> float:
        delay = backoff.next()
        self._count("errors")
        if backoff.failures == 1 or backoff.failures % 20 == 0:
            level = logging.WARNING
        else:
            level = logging.DEBUG
        if isinstance(exc, BrokerUnavailable):
            self._connected = False
            if level == logging.WARNING:
                self._log.warning(
                    "worker %r: broker unavailable while %s (%s); retrying in %.2fs",
                    self.name,
                    what,
                    exc,
                    delay,
                )
        else:
            self._log.exception(
                "worker %r: broker call failed while %s (%r); retrying in %.2fs",
                self.name,
                what,
                exc,
                delay,
            )
        return delay

    def _broker_ok(self, backoff: _Backoff, what: str) -> None:
        if backoff.reset():
            self._connected = True
            self._log.warning("worker %r: broker reachable again (%s)", self.name, what)

    # -- fetching -------------------------------------------------------------------------

    def _fetch_loop(self) -> None:
        backoff = _Backoff()
        next_touch = time.monotonic() + self._touch_every
        while not self._stopping.is_set():
            with self._room:
                while self._in_flight >= self._capacity and not self._stopping.is_set():
                    left = next_touch - time.monotonic()
                    if left <= 0:
                        break
                    self._room.wait(left)
                room = self._capacity - self._in_flight
                held = list(self._unacked.values())
            if self._stopping.is_set():
                return
            if time.monotonic() >= next_touch:
                next_touch = time.monotonic() + self._touch_every
                try:
                    self.broker.touch(self.consumer, held)
                except Exception as exc:
                    self._stopping.wait(self._broker_failed("touching held messages", exc, backoff))
                    continue
            if room <= 0:
                continue
            try:
                deliveries = self.broker.fetch(self.queues, self.consumer, room, self._poll)
            except Exception as exc:
                self._stopping.wait(self._broker_failed("fetching", exc, backoff))
                continue
            self._broker_ok(backoff, "fetching")
            for delivery in deliveries:
                self._accept(delivery)

    def _accept(self, delivery: Delivery) -> None:
        self._count("received")
        if delivery.deliveries > 1:
            self._count("redelivered")
            self._log.info(
                "worker %r: message %s (task %s) redelivered (delivery %d)",
                self.name,
                delivery.receipt,
                delivery.task_id,
                delivery.deliveries,
            )
        try:
            message = self.app.signer.open(delivery.body)
        except BadMessage as exc:
            self._dead_letter(delivery, str(exc), None)
            return
        task = self.app.tasks.get(message.task)
        if task is None:
            known = ", ".join(sorted(self.app.tasks)) or "none"
            reason = f"unknown task name {message.task!r} (this worker runs: {known})"
            self._dead_letter(delivery, reason, message)
            return
        with self._lock:
            self._unacked[delivery.receipt] = delivery
            self._in_flight += 1
        try:
            handle = self.manager.submit(
                partial(self._run, task, message, delivery),
                priority=delivery.priority,
                name=task.name,
                timeout=task.timeout,
            )
        except ManagerClosed:
            # Killed meanwhile: leave the message pending; the broker redelivers it.
            self._release(delivery, settled=True)
            return
        handle.add_done_callback(partial(self._done, task, message, delivery))

    def _dead_letter(self, delivery: Delivery, reason: str, message: Message | None) -> None:
        from tasker.distributed._app import record_data

        self._log.warning(
            "worker %r: message %s dead-lettered: %s", self.name, delivery.receipt, reason
        )
        self._count("dead")
        records: tuple[Record, ...] = ()
        if message is not None:  # readable and authentic: its record tells the caller why
            error = BadMessage(reason)
            data = record_data(message, finished=time.time(), error=error)
            records = (Record(message.id, "failed", data, self.app.result_ttl),)
        with self._lock:
            self._unacked[delivery.receipt] = delivery
        self._post(Settlement(delivery, records, dead_reason=reason))

    # -- running --------------------------------------------------------------------------

    def _run(
        self, task: Task[R, Any, Any], message: Message, delivery: Delivery, resource: R
    ) -> Any:
        from tasker.distributed._app import record_data

        context = current_task()
        attempt = context.attempt if context is not None else 1
        started = time.time()
        attempts = self._runs_before(message, delivery) + attempt
        data = record_data(message, attempts=attempts, started=started)
        self._post(Record(message.id, "running", data))
        return _Ran(task.fn(resource, message.payload), started)

    @staticmethod
    def _runs_before(message: Message, delivery: Delivery) -> int:
        return message.runs + delivery.deliveries - 1

    def _done(
        self, task: Task[R, Any, Any], message: Message, delivery: Delivery, handle: TaskHandle[Any]
    ) -> None:
        from tasker.distributed._app import record_data

        if handle.cancelled():  # killed before it ran: left pending for redelivery
            self._release(delivery, settled=True)
            return
        with self._room:
            self._in_flight -= 1
            self._room.notify()
        now = time.time()
        attempts = self._runs_before(message, delivery) + handle.attempts
        exc = handle.exception()
        app = self.app
        if exc is None:
            ran: _Ran = handle.result()
            result = ran.result
            try:
                data = record_data(
                    message,
                    attempts=attempts,
                    started=ran.started,
                    finished=now,
                    result=result,
                    keep_result=task.store_result,
                )
                follow = self._next_link(message, result, now)
            except TypeError as error:
                exc = error
            else:
                self._count("completed")
                records = (Record(message.id, "completed", data, app.result_ttl),)
                self._post(Settlement(delivery, records, follow))
                return
        self._failed(task, message, delivery, exc, attempts, now)

    def _next_link(self, message: Message, result: Any, now: float) -> tuple[Outgoing, ...]:
        if not message.chain:
            return ()
        link, rest = message.chain[0], message.chain[1:]
        following = Message(
            id=link.id,
            task=link.task,
            queue=link.queue,
            payload=result,
            priority=link.priority,
            submitted=now,
            sent=now,
            chain=rest,
        )
        return (self.app._outgoing(following),)

    def _failed(
        self,
        task: Task[R, Any, Any],
        message: Message,
        delivery: Delivery,
        exc: BaseException,
        attempts: int,
        now: float,
    ) -> None:
        from tasker.distributed._app import record_data

        app = self.app
        policy = task.retry
        if policy is not None and retry_wanted(policy, exc, message.retries, self._log, message.id):
            delay = policy.delay(message.retries + 1)
            retry = Message(
                id=message.id,
                task=message.task,
                queue=message.queue,
                payload=message.payload,
                priority=message.priority,
                retries=message.retries + 1,
                runs=attempts,
                submitted=message.submitted,
                sent=now + delay,
                chain=message.chain,
                group=message.group,
                last_error={"type": type(exc).__name__, "message": str(exc)},
            )
            data = record_data(message, attempts=attempts, error=exc)
            self._count("retried")
            self._log.debug("task %s retry %d in %.3fs: %r", message.id, retry.retries, delay, exc)
            # The retry waits in the broker (its delayed set), not in a sleeping thread;
            # publishing it writes the task's RETRYING record.
            out = app._outgoing(retry, delay=delay, state="retrying", data=data)
            self._post(Settlement(delivery, (), (out,)))
            return
        self._count("failed")
        data = record_data(message, attempts=attempts, finished=now, error=exc)
        records = [Record(message.id, "failed", data, app.result_ttl)]
        for link in message.chain:  # the rest of the chain will not run
            later = Message(link.id, link.task, link.queue, None, submitted=message.submitted)
            why = RuntimeError(f"an earlier link of its chain ({message.id}) failed")
            records.append(
                Record(
                    link.id,
                    "cancelled",
                    record_data(later, finished=now, error=why),
                    app.result_ttl,
                )
            )
        self._post(Settlement(delivery, tuple(records)))

    # -- settling -------------------------------------------------------------------------

    def _post(self, item: Record | Settlement) -> None:
        with self._lock:
            self._outbox.append(item)
            self._outbox_ready.notify()

    def _release(self, delivery: Delivery, *, settled: bool) -> None:
        with self._room:
            self._unacked.pop(delivery.receipt, None)
            if settled:
                self._in_flight -= 1
            self._room.notify()

    def _abandoned(self) -> bool:
        return self._settler_abandon

    def _settle_loop(self) -> None:
        backoff = _Backoff()
        while True:
            with self._lock:
                while not self._outbox and not self._settler_closing:
                    self._outbox_ready.wait()
                if not self._outbox or self._settler_abandon:
                    return
                batch = [
                    self._outbox.popleft() for _ in range(min(len(self._outbox), _SETTLE_BATCH))
                ]
            settlements = [item for item in batch if isinstance(item, Settlement)]
            # A "running" mark settled in the same batch would be overwritten at once:
            # under load this halves the writes.
            ending = {r.task_id for s in settlements for r in s.records}
            marks = [i for i in batch if isinstance(i, Record) and i.task_id not in ending]
            try:
                # Marks first: a task's "running" mark is always posted before its
                # settlement, and a later run's mark after the settlement that made it.
                self.broker.put_records(marks)
                self.broker.settle(settlements)
            except Exception as exc:
                delay = self._broker_failed("storing outcomes", exc, backoff)
                with self._lock:
                    self._outbox.extendleft(reversed(batch))
                    if self._abandoned():
                        return
                    self._outbox_ready.wait(delay)
                continue
            self._broker_ok(backoff, "storing outcomes")
            with self._lock:
                for s in settlements:
                    self._unacked.pop(s.delivery.receipt, None)
                self._room.notify_all()

    # -- stopping -------------------------------------------------------------------------

    def stop(self, timeout: float | None = None) -> None:
        """Stop gracefully: stop reading, finish what is held, acknowledge it all.

        Returns when every held message is settled and the manager is stopped, or
        after ``timeout`` seconds; whatever is still unacknowledged then stays pending
        in the broker and is redelivered to another worker after the visibility
        timeout. Idempotent.
        """
        self._shutdown(kill=False, timeout=timeout)

    def kill(self, timeout: float | None = None) -> None:
        """Stop now: stop reading, cancel what has not started (left pending in the
        broker, redelivered elsewhere), settle what was running when it returns."""
        self._shutdown(kill=True, timeout=timeout)

    def _shutdown(self, *, kill: bool, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
            self._stopping.set()
            with self._room:
                self._room.notify_all()
            if self._schedules is not None:
                self._schedules.stop()
            self._fetcher.join(left())
            if kill:
                self.manager.kill(left())
            else:
                self.manager.stop(left())
            with self._lock:
                self._settler_closing = True
                self._outbox_ready.notify_all()
            self._settler.join(left())
            if self._settler.is_alive():
                with self._lock:
                    self._settler_abandon = True
                    self._outbox_ready.notify_all()
                self._settler.join()
            with self._lock:
                unsettled = len(self._unacked)
            if unsettled:
                self._log.warning(
                    "worker %r stopped with %d messages unacknowledged; the broker will "
                    "redeliver them after the visibility timeout",
                    self.name,
                    unsettled,
                )
            self._log.info("worker %r stopped: %s", self.name, self.stats())


@dataclass(frozen=True, slots=True)
class _Ran:
    result: Any
    started: float


def _no_resource() -> None:
    return None
