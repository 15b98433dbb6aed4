"""run_task: a task run at once in the caller's thread, on a pooled resource.

No queue and no worker: the caller takes an idle resource from the pool (or makes a
temporary one), runs the task, and gives the resource back, destroying it if the error
was unhealthy and refilling the pool. A refill that fails leaves a hole in the pool
that the next healthy temporary resource fills, so the pool does not shrink for good.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, TypeVar, cast

from tasker._context import _set_runner
from tasker._errors import ResourceCreationError
from tasker._handle import TaskHandle
from tasker._metrics import TaskTimestamps

if TYPE_CHECKING:
    from tasker._manager import TaskManager

__all__ = ["InlineRunner", "run_inline"]

R = TypeVar("R")
E = TypeVar("E")


class InlineRunner:
    """What ``current_task()`` sees inside ``run_task``."""

    __slots__ = ("_manager", "cancelled", "current")

    def __init__(self, manager: TaskManager[Any, Any], handle: TaskHandle[Any]) -> None:
        self._manager = manager
        self.current: TaskHandle[Any] | None = handle
        self.cancelled = threading.Event()


def run_inline(m: TaskManager[R, E], handle: TaskHandle[E], runner: InlineRunner) -> E:
    """The body of ``run_task``: run on a pooled or temporary resource, here."""
    pooled, idle = m._pool.take()
    if pooled:
        resource = cast(R, idle)
    else:
        try:
            resource = m._on_create()
        except BaseException as exc:
            m._registry.finished(handle)
            raise ResourceCreationError(
                f"on_create failed for a temporary run_task resource: {exc!r}"
            ) from exc
        m._resource_created()
    m._collector.record_arrival()
    handle.set_running_or_notify_cancel()
    handle.attempts = 1
    previous = _set_runner(runner)
    handle._started_at = started = m._clock()
    hooks = m._hooks
    if hooks.start_hooks:
        hooks.call(hooks.start_hooks, handle)
    healthy = True
    try:
        result = handle._fn(resource)
    except BaseException as exc:
        healthy = not m._is_unhealthy(exc)
        handle._finished_at = finished = m._clock()
        m._collector.record_failure(TaskTimestamps(started, started, finished))
        handle._last_error = exc
        handle.set_exception(exc)
        m._registry.finished(handle)
        hooks.call(hooks.failure_hooks, handle)
        raise
    else:
        handle._finished_at = finished = m._clock()
        m._collector.record_completion(TaskTimestamps(started, started, finished))
        handle.set_result(result)
        m._registry.finished(handle)
        hooks.call(hooks.success_hooks, handle)
        return result
    finally:
        _set_runner(previous)
        runner.current = None
        _release(m, resource, pooled, healthy)


def _release(m: TaskManager[R, Any], resource: R, pooled: bool, healthy: bool) -> None:
    """Give the resource back to the pool, or destroy it (and refill if it was sick)."""
    if healthy and (m._pool.put(resource) if pooled else m._pool.fill_hole(resource)):
        return
    m._destroy(resource)
    if pooled and not healthy:
        m._log.warning("run_task resource unhealthy: destroyed it, refilling the pool")
        try:
            fresh = m._on_create()
        except BaseException as exc:
            m._pool.note_hole()
            m._log.warning(
                "could not refill the run_task pool (%r); the next healthy temporary "
                "resource will take the place",
                exc,
            )
            return
        m._resource_created()
        if not m._pool.put(fresh):
            m._destroy(fresh)
