"""Task states, the only moves between them, and what ``status()`` reports.

::

    SCHEDULED ──► QUEUED ──► RUNNING ──► COMPLETED
        │           │  ▲        │ ├────► FAILED
        │           │  └─ RETRYING ◄┘
        ▼           ▼        │
    CANCELLED ◄─────┴────────┘

A task's state lives on its :class:`~tasker.TaskHandle` and changes only inside the
handle's methods, each holding the handle's lock: the ``concurrent.futures`` part
(QUEUED → RUNNING → COMPLETED/FAILED, → CANCELLED) through the Future protocol, the
waiting phases (SCHEDULED, QUEUED, RETRYING) through ``TaskHandle._move``, which checks
:data:`TRANSITIONS`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

__all__ = ["TRANSITIONS", "TaskInfo", "TaskState"]


class TaskState(enum.Enum):
    """Where a task is in its life. Terminal: COMPLETED, FAILED, CANCELLED."""

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True for the terminal states."""
        return self in _TERMINAL


_TERMINAL = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED})

TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.SCHEDULED: frozenset({TaskState.QUEUED, TaskState.CANCELLED}),
    TaskState.QUEUED: frozenset({TaskState.RUNNING, TaskState.CANCELLED}),
    TaskState.RUNNING: frozenset({TaskState.RETRYING, TaskState.COMPLETED, TaskState.FAILED}),
    TaskState.RETRYING: frozenset({TaskState.QUEUED, TaskState.CANCELLED}),
    TaskState.COMPLETED: frozenset(),
    TaskState.FAILED: frozenset(),
    TaskState.CANCELLED: frozenset(),
}
"""The allowed moves. A running task is never cancelled: threads cannot be stopped, so
a run that returns after ``kill()`` or a timeout still ends COMPLETED or FAILED."""


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """A snapshot of one task, from ``TaskManager.status(task_id)``.

    Times are aware UTC datetimes, ``None`` until reached. ``last_error`` is the
    exception of the latest failed attempt (``None`` if none failed), even when a later
    retry succeeded.
    """

    id: str
    name: str | None
    state: TaskState
    attempts: int
    last_error: BaseException | None
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
