"""TaskRegistry: ``status(task_id)`` for live tasks and the most recent finished ones.

Live tasks are always known. Finished ones are forgotten oldest-first once more than
``retention`` have finished, so memory stays bounded however many tasks run. Adding
and finishing are single atomic dict/deque operations (no lock on the task path).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tasker._errors import TaskNotFound
from tasker._handle import TaskHandle
from tasker._state import TaskInfo

__all__ = ["TaskRegistry"]


class TaskRegistry:
    """Maps task ids to handles; private to the runtime."""

    def __init__(self, retention: int, prefix: str, to_wall: Callable[[float], float]) -> None:
        self.retention = retention
        self._prefix = prefix
        self._to_wall = to_wall
        self._tasks: dict[int, TaskHandle[Any]] = {}
        self._finished: deque[int] = deque()

    def add(self, handle: TaskHandle[Any]) -> None:
        self._tasks[handle._seq] = handle

    def finished(self, handle: TaskHandle[Any]) -> None:
        """Note that ``handle`` reached a terminal state (call once per task)."""
        finished = self._finished
        finished.append(handle._seq)
        if len(finished) > self.retention:
            try:
                self._tasks.pop(finished.popleft(), None)
            except IndexError:  # another thread evicted first
                pass

    def get(self, task_id: str) -> TaskHandle[Any]:
        """The handle of ``task_id``; raises ``TaskNotFound``."""
        if not isinstance(task_id, str):
            raise TypeError(f"task_id must be a str (got task_id={task_id!r})")
        handle = None
        if task_id.startswith(self._prefix) and task_id[len(self._prefix) :].isdigit():
            handle = self._tasks.get(int(task_id[len(self._prefix) :]))
        if handle is None:
            raise TaskNotFound(
                f"no task with id {task_id!r}: it was never submitted to this manager, or it "
                f"finished before the last status_retention={self.retention} finished tasks"
            )
        return handle

    def __len__(self) -> int:
        return len(self._tasks)

    def info(self, handle: TaskHandle[Any]) -> TaskInfo:
        """Build the :class:`TaskInfo` snapshot of ``handle``."""
        state = handle.state
        error = handle._last_error
        if error is None and state.name == "FAILED":
            error = handle._exception
        return TaskInfo(
            id=handle.id,
            name=handle.name,
            state=state,
            attempts=handle.attempts,
            last_error=error,
            submitted_at=self._when(handle._submitted_at),
            started_at=self._when(handle._started_at),
            finished_at=self._when(handle._finished_at),
        )

    def _when(self, t: float) -> datetime | None:
        if not t:
            return None
        return datetime.fromtimestamp(self._to_wall(t), tz=UTC)
