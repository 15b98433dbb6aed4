"""App: named tasks with JSON payloads, enqueued from any process, run by workers.

Data flow::

    producer process                      broker (Redis)                worker process(es)
    app.enqueue("resize", {...}) ──► publish: stream / delayed ──► fetch ──► TaskManager
    RemoteHandle.result() ◄────────── task record {state, data} ◄── settle: record + ack
                                                                   (+ retry / next link)

The app owns the registry of handlers, the codec (JSON, optional HMAC signature) and the
record format. Handlers are looked up by name on the worker, so a producer needs no
handler code, only the names (and queues, where not the default).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from tasker._manager import Logger
from tasker._retry import RetryPolicy
from tasker._validate import check_callable, check_seconds
from tasker.distributed._broker import Broker, DeadLetter, Outgoing, Record
from tasker.distributed._errors import BadMessage
from tasker.distributed._handles import ChainHandle, GroupHandle, RemoteHandle
from tasker.distributed._message import Link, Message, Signer, check_name, dumps
from tasker.distributed._schedules import RemoteSchedule, cron_due, interval_due

if TYPE_CHECKING:
    from tasker.distributed._worker import Worker

__all__ = ["App", "Task"]

R = TypeVar("R")
P = TypeVar("P")
T = TypeVar("T")

_DEFAULT_RESULT_TTL = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Task(Generic[R, P, T]):
    """A registered handler: ``fn(resource, payload) -> result``, and how to run it.

    Calling the task calls ``fn`` directly (handy in tests); :meth:`enqueue` sends it to
    the workers.

    Attributes:
        app: The app it is registered with.
        name: The name producers enqueue it by.
        fn: The handler.
        queue: The queue its messages go to.
        retry: The :class:`~tasker.RetryPolicy` for its errors (None: no retries).
        timeout: Seconds one run may take (None: no limit).
        priority: Enqueue as priority by default.
        store_result: Keep the result in its record (the state is kept either way; a
            chain hands the result to the next link either way).
    """

    app: App
    name: str
    fn: Callable[[R, P], T]
    queue: str
    retry: RetryPolicy | None = None
    timeout: float | None = None
    priority: bool = False
    store_result: bool = True

    def __call__(self, resource: R, payload: P) -> T:
        return self.fn(resource, payload)

    def enqueue(
        self,
        payload: P,
        *,
        delay: float = 0.0,
        priority: bool | None = None,
        unique_key: str | None = None,
    ) -> RemoteHandle[T]:
        """``app.enqueue(self.name, payload, ...)`` with the return type carried."""
        return self.app.enqueue(
            self.name, payload, delay=delay, priority=priority, unique_key=unique_key
        )


class App:
    """Named tasks on a broker: register handlers, enqueue by name, run workers.

    Args:
        broker: A :class:`Broker`, or a URL: ``redis://[[user]:password@]host:port/db``,
            ``rediss://...`` (TLS), ``unix://...``, or ``memory://`` (an in-process
            :class:`MemoryBroker`, for tests and demos).
        prefix: Key prefix when ``broker`` is a Redis URL.
        signing_key: With a key (>= 16 bytes), messages are signed with HMAC-SHA256 and
            workers refuse (dead-letter) unsigned or forged ones. Give producers and
            workers the same key.
        result_ttl: Seconds a finished task's record (state, result, error) is kept.
        queue: The queue of tasks registered without one.
        logger: Where the workers log (default ``logging.getLogger("tasker.distributed")``).

    Example:
        >>> app = App("redis://127.0.0.1:6379/0")
        >>> @app.task(name="resize", queue="images", retry=tasker.RetryPolicy(max_retries=3))
        ... def resize(conn, payload):
        ...     return conn.resize(payload["id"])
        >>> handle = app.enqueue("resize", {"id": 7})   # from any process
        >>> handle.result(timeout=30)
    """

    def __init__(
        self,
        broker: Broker | str,
        *,
        prefix: str = "tasker",
        signing_key: bytes | str | None = None,
        result_ttl: float = _DEFAULT_RESULT_TTL,
        queue: str = "default",
        logger: Logger | logging.Logger | None = None,
    ) -> None:
        self._owns_broker = isinstance(broker, str)
        if isinstance(broker, str):
            broker = _broker_from_url(broker, prefix)
        elif not isinstance(broker, Broker):
            raise TypeError(
                f"broker must be a tasker.distributed.Broker or a URL (got broker={broker!r})"
            )
        self.broker: Broker = broker
        self.signer = Signer(signing_key)
        self.result_ttl = check_seconds("result_ttl", result_ttl)
        self.queue = check_name("queue", queue)
        self.log: Logger = logger or logging.getLogger("tasker.distributed")
        self.tasks: dict[str, Task[Any, Any, Any]] = {}
        self.schedules: dict[str, RemoteSchedule] = {}
        self._resource: tuple[Callable[[], Any], Any, Any] | None = None

    def __repr__(self) -> str:
        return f"<App broker={self.broker!r} tasks={sorted(self.tasks)}>"

    # -- registering ----------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[[R, P], T], /) -> Task[R, P, T]: ...

    @overload
    def task(
        self,
        *,
        name: str | None = None,
        queue: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        priority: bool = False,
        store_result: bool = True,
    ) -> Callable[[Callable[[R, P], T]], Task[R, P, T]]: ...

    def task(  # type: ignore[misc]  # the bare and the called decorator forms
        self,
        fn: Callable[[R, P], T] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        priority: bool = False,
        store_result: bool = True,
    ) -> Task[R, P, T] | Callable[[Callable[[R, P], T]], Task[R, P, T]]:
        """Register ``fn(resource, payload) -> result`` under ``name``.

        Use as ``@app.task`` (name: the function's ``__name__``) or
        ``@app.task(name="resize", queue="images", retry=..., timeout=30)``.

        Raises:
            ValueError: The name is taken, or a name/queue has characters outside
                ``A-Z a-z 0-9 _ . : -``.
        """
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a tasker.RetryPolicy or None (got retry={retry!r})")
        if timeout is not None:
            timeout = check_seconds("timeout", timeout)
        task_queue = check_name("queue", self.queue if queue is None else queue)

        def register(func: Callable[[R, P], T]) -> Task[R, P, T]:
            check_callable("fn", func)
            task_name = check_name("name", name if name is not None else func.__name__)
            if task_name in self.tasks:
                raise ValueError(f"a task named {task_name!r} is already registered")
            task: Task[R, P, T] = Task(
                self, task_name, func, task_queue, retry, timeout, bool(priority), store_result
            )
            self.tasks[task_name] = task
            return task

        return register if fn is None else register(fn)

    def resource(
        self,
        on_create: Callable[[], Any],
        *,
        on_destroy: Callable[[Any], object] | None = None,
        check_health: Callable[[BaseException], bool] | None = None,
    ) -> None:
        """Set the per-worker resource for workers made without their own ``on_create``
        (as ``tasker worker package.module:app`` makes them)."""
        check_callable("on_create", on_create)
        check_callable("on_destroy", on_destroy, optional=True)
        check_callable("check_health", check_health, optional=True)
        self._resource = (on_create, on_destroy, check_health)

    # -- enqueueing -----------------------------------------------------------------------

    def _route(self, name: str, queue: str | None, priority: bool | None) -> tuple[str, bool]:
        check_name("name", name)
        task = self.tasks.get(name)
        if queue is None:
            queue = task.queue if task is not None else self.queue
        if priority is None:
            priority = task.priority if task is not None else False
        return check_name("queue", queue), bool(priority)

    def _message(
        self,
        name: str,
        payload: Any,
        queue: str,
        priority: bool,
        *,
        task_id: str | None = None,
        now: float,
        delay: float = 0.0,
        chain: tuple[Link, ...] = (),
        group: str | None = None,
    ) -> Message:
        return Message(
            id=task_id or uuid.uuid4().hex,
            task=name,
            queue=queue,
            payload=payload,
            priority=priority,
            submitted=now,
            sent=now + delay,
            chain=chain,
            group=group,
        )

    def _outgoing(
        self,
        message: Message,
        *,
        delay: float = 0.0,
        state: str | None = None,
        unique_key: str | None = None,
        unique_for: float = 0.0,
        data: bytes | None = None,
    ) -> Outgoing:
        if state is None:
            state = "scheduled" if delay > 0 else "queued"
        return Outgoing(
            id=message.id,
            queue=message.queue,
            body=self.signer.seal(message),
            priority=message.priority,
            delay=delay,
            record=Record(message.id, state, record_data(message) if data is None else data),
            unique_key=unique_key,
            unique_for=unique_for,
        )

    def enqueue(
        self,
        name: str,
        payload: Any = None,
        *,
        delay: float = 0.0,
        priority: bool | None = None,
        unique_key: str | None = None,
        unique_for: float | None = None,
        queue: str | None = None,
    ) -> RemoteHandle[Any]:
        """Send task ``name`` with a JSON ``payload`` to the workers.

        Args:
            name: A registered task name (registered here or only on the workers).
            payload: Any JSON value; the handler gets it back decoded.
            delay: Seconds before it may start (it waits in the broker, SCHEDULED).
            priority: Read before the queue's normal messages (default: the task's).
            unique_key: Idempotent enqueue: while a task enqueued with the same key is
                known (``unique_for`` seconds, default ``result_ttl``), nothing is sent
                and its handle is returned instead.
            unique_for: Seconds the key is held.
            queue: The queue (default: the task's, or the app's ``queue``).

        Returns:
            A :class:`RemoteHandle` (``id``, ``status()``, ``result(timeout)``).

        Raises:
            TypeError: ``payload`` is not JSON-serialisable.
            BrokerUnavailable: The broker cannot be reached.
        """
        delay = check_seconds("delay", delay, allow_zero=True)
        if unique_key is not None and (not isinstance(unique_key, str) or not unique_key):
            raise TypeError(f"unique_key must be a non-empty str (got unique_key={unique_key!r})")
        window = self.result_ttl if unique_for is None else check_seconds("unique_for", unique_for)
        queue, priority = self._route(name, queue, priority)
        message = self._message(name, payload, queue, priority, now=time.time(), delay=delay)
        out = self._outgoing(message, delay=delay, unique_key=unique_key, unique_for=window)
        (task_id,) = self.broker.publish([out])
        return RemoteHandle(self, task_id, name)

    def enqueue_many(
        self,
        name: str,
        payloads: Iterable[Any],
        *,
        priority: bool | None = None,
        queue: str | None = None,
    ) -> list[RemoteHandle[Any]]:
        """Enqueue ``name`` once per payload in one round trip (atomic: all or none).

        Raises:
            TypeError: A payload is not JSON-serialisable (nothing is sent).
            BrokerUnavailable: The broker cannot be reached.
        """
        queue, priority = self._route(name, queue, priority)
        now = time.time()
        outs = [
            self._outgoing(self._message(name, payload, queue, priority, now=now))
            for payload in payloads
        ]
        if outs:
            self.broker.publish(outs)
        return [RemoteHandle(self, out.id, name) for out in outs]

    def chain(
        self,
        *names: str,
        payload: Any = None,
        delay: float = 0.0,
        priority: bool | None = None,
    ) -> ChainHandle:
        """Run tasks one after another, possibly on different machines.

        The first gets ``payload``; each next one gets the previous one's result as its
        payload. A link is published by the same atomic step that stores the previous
        link's outcome, so a chain is never lost or forked between links, and a link
        whose task keeps no result (``store_result=False``) still passes it on. Later
        links are SCHEDULED until their turn. A link that fails (after its retries)
        ends the chain: the later links are CANCELLED and the chain's ``result()``
        raises its error.

        Raises:
            ValueError: No names given.
        """
        if not names:
            raise ValueError("chain needs at least one task name (got none)")
        delay = check_seconds("delay", delay, allow_zero=True)
        now = time.time()
        routes = [(n, *self._route(n, None, priority)) for n in names]
        links = tuple(Link(uuid.uuid4().hex, n, q, p) for n, q, p in routes)
        first_name, first_queue, first_prio = routes[0]
        first = self._message(
            first_name,
            payload,
            first_queue,
            first_prio,
            task_id=links[0].id,
            now=now,
            delay=delay,
            chain=links[1:],
        )
        # Later links get a placeholder record now (records before the publish, so a
        # fast first link cannot be overtaken); their messages are published by the
        # settle of the link before them. A placeholder of a chain that was never
        # published expires after result_ttl.
        placeholders = [
            Record(
                link.id,
                "scheduled",
                record_data(
                    self._message(
                        link.task, None, link.queue, link.priority, task_id=link.id, now=now
                    )
                ),
                ttl=self.result_ttl,
            )
            for link in links[1:]
        ]
        if placeholders:
            self.broker.put_records(placeholders)
        self.broker.publish([self._outgoing(first, delay=delay)])
        return ChainHandle(self, [RemoteHandle(self, link.id, link.task) for link in links])

    def group(
        self,
        calls: Iterable[tuple[str, Any]],
        *,
        priority: bool | None = None,
    ) -> GroupHandle:
        """Fan out: publish every ``(name, payload)`` at once; collect the results with
        the returned :class:`GroupHandle`. The publish is atomic (all or none)."""
        now = time.time()
        group_id = uuid.uuid4().hex
        outs: list[Outgoing] = []
        handles: list[RemoteHandle[Any]] = []
        for call in calls:
            name, payload = call
            queue, prio = self._route(name, None, priority)
            message = self._message(name, payload, queue, prio, now=now, group=group_id)
            outs.append(self._outgoing(message))
            handles.append(RemoteHandle(self, message.id, name))
        if outs:
            self.broker.publish(outs)
        return GroupHandle(group_id, handles)

    def handle(self, task_id: str) -> RemoteHandle[Any]:
        """A handle on a task enqueued elsewhere, by its id."""
        if not isinstance(task_id, str) or not task_id:
            raise TypeError(f"task_id must be a non-empty str (got task_id={task_id!r})")
        return RemoteHandle(self, task_id, None)

    # -- schedules ------------------------------------------------------------------------

    def schedule_recurring(
        self, name: str, interval: float, payload: Any = None, *, key: str | None = None
    ) -> RemoteSchedule:
        """Enqueue ``name`` every ``interval`` seconds, once per run however many workers
        are up (each run is claimed with a unique key). Run times are multiples of
        ``interval`` since the UNIX epoch, so every worker agrees on them. Workers made
        with ``schedules=True`` (the default) keep the schedules of their app."""
        interval = check_seconds("interval", interval)
        return self._add_schedule(name, payload, key, interval_due(interval), f"every {interval}s")

    def schedule_cron(
        self,
        name: str,
        expr: str,
        payload: Any = None,
        *,
        tz: tzinfo = UTC,
        key: str | None = None,
    ) -> RemoteSchedule:
        """Enqueue ``name`` whenever cron ``expr`` matches (in ``tz``), once per match
        across all workers. Needs ``cronsim`` (``pip install 'tasker-pool[cron]'``).

        Raises:
            ValueError: ``expr`` is invalid (with the parser's reason).
        """
        return self._add_schedule(name, payload, key, cron_due(expr, tz), f"cron {expr!r}")

    def _add_schedule(
        self, name: str, payload: Any, key: str | None, due: Callable[[float], float], what: str
    ) -> RemoteSchedule:
        check_name("name", name)
        dumps(payload, f"the payload of schedule {key or name!r}")
        key = check_name("key", key if key is not None else name)
        if key in self.schedules:
            raise ValueError(f"a schedule with key {key!r} is already registered")
        schedule = RemoteSchedule(key, name, payload, due, what)
        self.schedules[key] = schedule
        return schedule

    def _enqueue_run(self, schedule: RemoteSchedule, due: float) -> bool:
        """Publish one run of a schedule; the unique key makes it once per run.

        Returns True if this call published it, False if another worker had.
        """
        queue, priority = self._route(schedule.task, None, None)
        message = self._message(schedule.task, schedule.payload, queue, priority, now=time.time())
        unique = f"schedule:{schedule.key}:{round(due * 1000)}"
        out = self._outgoing(message, unique_key=unique, unique_for=max(3600.0, self.result_ttl))
        (task_id,) = self.broker.publish([out])
        return task_id == message.id

    # -- dead letters ---------------------------------------------------------------------

    def dead_letters(self, count: int = 100) -> list[DeadLetter]:
        """The oldest ``count`` messages in the dead-letter stream, with their reasons."""
        return self.broker.dead_letters(count)

    def redrive(self, ids: Sequence[str] | None = None) -> int:
        """Publish dead letters to their queues again (all of them if ``ids`` is None);
        their records go back to QUEUED. Returns how many were moved."""
        letters = self.broker.dead_letters(1_000_000)
        if ids is not None:
            wanted = set(ids)
            letters = [d for d in letters if d.id in wanted]
        records = []
        for letter in letters:
            try:
                message = self.signer.open(letter.body)
            except BadMessage:
                continue
            records.append(Record(message.id, "queued", record_data(message)))
        return self.broker.redrive([d.id for d in letters], records)

    def purge_dead_letters(self, ids: Sequence[str] | None = None) -> int:
        """Delete dead letters (all if ``ids`` is None); returns how many."""
        return self.broker.purge_dead_letters(None if ids is None else list(ids))

    # -- workers --------------------------------------------------------------------------

    def worker(
        self,
        on_create: Callable[[], R] | None = None,
        **options: Any,
    ) -> Worker[R]:
        """Start a worker: a :class:`~tasker.TaskManager` fed from the broker.

        ``on_create`` and ``options`` are those of :class:`Worker` (``on_destroy``,
        ``check_health``, ``workers``, ``max_workers``, ``queues``, ...). Without
        ``on_create`` the app's :meth:`resource` is used, or no resource (None).
        """
        from tasker.distributed._worker import Worker

        if on_create is None and self._resource is not None:
            make, destroy, health = self._resource
            options.setdefault("on_destroy", destroy)
            options.setdefault("check_health", health)
            return Worker(self, make, **options)
        return Worker(self, on_create, **options)

    def close(self) -> None:
        """Close the broker connection if this app made it from a URL."""
        if self._owns_broker:
            self.broker.close()


def record_data(
    message: Message,
    *,
    attempts: int = 0,
    started: float | None = None,
    finished: float | None = None,
    result: Any = None,
    error: BaseException | None = None,
    keep_result: bool = False,
) -> bytes:
    """The app's JSON part of a task record."""
    data: dict[str, Any] = {
        "name": message.task,
        "queue": message.queue,
        "attempts": attempts,
        "submitted_at": message.submitted,
        "started_at": started,
        "finished_at": finished,
    }
    if message.group is not None:
        data["group"] = message.group
    if keep_result:
        data["result"] = result
    if error is not None:
        data["error"] = {"type": type(error).__name__, "message": str(error)}
    elif message.last_error is not None:  # an earlier attempt failed
        data["error"] = message.last_error
    return dumps(data, f"the result of task {message.task!r}").encode()


def decode_record(data: bytes) -> dict[str, Any]:
    """Parse a record's data; an unreadable one reads as empty."""
    try:
        value = json.loads(data) if data else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _broker_from_url(url: str, prefix: str) -> Broker:
    if url.startswith("memory://"):
        from tasker.distributed._memory import MemoryBroker

        return MemoryBroker()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from tasker.distributed._redis import RedisBroker

        return RedisBroker.from_url(url, prefix=prefix)
    raise ValueError(
        f"broker URL must start with redis://, rediss://, unix:// or memory:// (got {url!r})"
    )


def aware(ts: float | None) -> datetime | None:
    """UNIX seconds to an aware UTC datetime (None stays None)."""
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)
