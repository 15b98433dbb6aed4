"""The workload of ``tasker demo``: a fake connection and a realistic mix of tasks.

Everything is in memory. The mix exercises what tasker does: short queries, slow ones
that make it burst, tasks that fail (their error goes to the caller), tasks that break
their connection (the worker is replaced and the task retried on a fresh one), flaky
tasks retried by a ``RetryPolicy``, and priority tasks that jump the queue.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading

from tasker._config import ServiceConfig
from tasker._context import current_task
from tasker._handle import TaskHandle
from tasker._manager import TaskManager
from tasker._retry import RetryPolicy, RetryStrategy

__all__ = ["ConnectionLost", "DemoConnection", "DemoTaskError", "TaskMix", "make_manager"]

_numbers = itertools.count(1)


class ConnectionLost(ConnectionError):
    """The demo connection broke: ``check_health`` says the worker is unhealthy."""


class DemoTaskError(Exception):
    """A demo task failed on its own; its caller gets this error."""


class DemoConnection:
    """Stands in for a database connection: each worker opens one and keeps it."""

    def __init__(self) -> None:
        self.number = next(_numbers)
        self.queries = 0

    def query(self, seconds: float) -> float:
        """Pretend to run a query for ``seconds``; returns early if the task is cancelled."""
        self.queries += 1
        context = current_task()
        if context is None:
            threading.Event().wait(seconds)
        else:
            context.cancelled.wait(seconds)
        return seconds

    def close(self) -> None:
        self.queries = -1

    def __repr__(self) -> str:
        return f"<DemoConnection {self.number}>"


def check_health(exc: BaseException) -> bool:
    """A lost connection makes the worker unhealthy; any other error is the task's own."""
    return not isinstance(exc, ConnectionLost)


def make_manager(
    config: ServiceConfig, logger: logging.Logger
) -> TaskManager[DemoConnection, float]:
    """The demo's manager: bursting on, health checks, the configured sizes."""
    return TaskManager(
        DemoConnection,
        on_destroy=DemoConnection.close,
        check_health=check_health,
        logger=logger,
        name="demo",
        **config.manager_kwargs(),
    )


def _attempt() -> int:
    context = current_task()
    return 1 if context is None else context.attempt


def short(conn: DemoConnection, seconds: float) -> float:
    return conn.query(seconds)


def failing(conn: DemoConnection, seconds: float) -> float:
    conn.query(seconds)
    raise DemoTaskError("the query was rejected")


def breaks_connection(conn: DemoConnection, seconds: float) -> float:
    if _attempt() == 1:
        raise ConnectionLost(f"{conn!r} lost its connection")
    return conn.query(seconds)


def flaky(conn: DemoConnection, seconds: float) -> float:
    if _attempt() == 1:
        raise DemoTaskError("timed out talking to a replica; will retry")
    return conn.query(seconds)


_KINDS = ("short", "long", "failing", "unhealthy", "flaky", "priority")
_WEIGHTS = (60, 10, 8, 5, 7, 10)
_FLAKY_RETRY = RetryPolicy(max_retries=2, base_delay=0.05, strategy=RetryStrategy.FIXED)


class TaskMix:
    """Submits the demo's mix of tasks: call it as ``mix(manager, i)``.

    Args:
        seed: Seed for the random mix (None: a different mix each run).
    """

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.kinds: dict[str, int] = dict.fromkeys(_KINDS, 0)

    def __call__(self, manager: TaskManager[DemoConnection, float], i: int) -> TaskHandle[float]:
        with self._lock:
            kind = self._rng.choices(_KINDS, _WEIGHTS)[0]
            quick = self._rng.uniform(0.005, 0.03)
            slow = self._rng.uniform(0.2, 0.6)
            self.kinds[kind] += 1
        name = f"{kind}-{i}"
        if kind == "long":
            return manager.submit(lambda c: short(c, slow), name=name)
        if kind == "failing":
            return manager.submit(lambda c: failing(c, quick), name=name)
        if kind == "unhealthy":
            return manager.submit(lambda c: breaks_connection(c, quick), name=name)
        if kind == "flaky":
            return manager.submit(lambda c: flaky(c, quick), name=name, retry=_FLAKY_RETRY)
        priority = kind == "priority"
        return manager.submit(lambda c: short(c, quick), name=name, priority=priority)
