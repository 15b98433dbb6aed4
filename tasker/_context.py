"""``current_task()``: what a running task can learn about itself, per thread."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["TaskContext", "current_task"]


@dataclass(frozen=True, slots=True)
class TaskContext:
    """The task running in the current thread.

    Python threads cannot be interrupted from outside, so cancellation is cooperative:
    a long task should check ``cancelled`` now and then (or wait on it instead of
    sleeping) and return early when it is set.

    Attributes:
        id: The task's id (the same as its ``TaskHandle.id``).
        attempt: Which run this is, starting at 1.
        cancelled: Set by ``kill()`` (and by a timeout) to ask the task to stop.

    Example:
        >>> def crawl(session):
        ...     for url in urls:
        ...         if tasker.current_task().cancelled.is_set():
        ...             return None
        ...         session.get(url)
    """

    id: str
    attempt: int
    cancelled: threading.Event


class _Runner(Protocol):
    """A thread that runs tasks: a worker, or a caller inside ``run_task``."""

    cancelled: threading.Event

    @property
    def current(self) -> Any: ...


_local = threading.local()


def _set_runner(runner: _Runner | None) -> _Runner | None:
    previous: _Runner | None = getattr(_local, "runner", None)
    _local.runner = runner
    return previous


def current_task() -> TaskContext | None:
    """Return the context of the task running in this thread, or None outside one.

    Works inside tasks run by workers and inside ``run_task``.
    """
    runner: _Runner | None = getattr(_local, "runner", None)
    if runner is None:
        return None
    handle = runner.current
    if handle is None:
        return None
    return TaskContext(id=handle.id, attempt=handle.attempts, cancelled=runner.cancelled)
