"""Handles on tasks that run elsewhere: state and result read from the records store.

A handle holds only an id; every question is a read of the task's record, so a handle
made in one process (or rebuilt from an id with ``app.handle(id)``) answers the same as
any other. Waiting polls with a short, growing pause (1 ms up to 50 ms).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import CancelledError
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from tasker._errors import TaskNotFound
from tasker._state import TaskInfo, TaskState
from tasker.distributed._broker import StoredRecord
from tasker.distributed._errors import RemoteTaskError

if TYPE_CHECKING:
    from tasker.distributed._app import App

__all__ = ["ChainHandle", "GroupHandle", "RemoteHandle"]

T = TypeVar("T")

_FIRST_PAUSE = 0.001
_MAX_PAUSE = 0.05


class _Poll:
    """Deadline and growing pause for a polling wait."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.pause = _FIRST_PAUSE

    def wait(self) -> bool:
        """Sleep a little; False once the deadline has passed."""
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(self.pause, left))
        else:
            time.sleep(self.pause)
        self.pause = min(self.pause * 1.5, _MAX_PAUSE)
        return True


class RemoteHandle(Generic[T]):
    """The caller's view of a task run by a worker, possibly on another machine.

    Attributes:
        id: The task's id (the same for its retries and in every process).
        name: The task name it was enqueued with (None for ``app.handle(id)``).

    Example:
        >>> handle = app.enqueue("resize", {"id": 7})
        >>> handle.status()            # TaskState.QUEUED, RUNNING, ...
        >>> handle.result(timeout=30)  # the handler's return value, from JSON
    """

    __slots__ = ("_app", "id", "name")

    def __init__(self, app: App, task_id: str, name: str | None) -> None:
        self._app = app
        self.id = task_id
        self.name = name

    def __repr__(self) -> str:
        return f"<RemoteHandle {self.name or '?'} {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemoteHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def _record(self) -> StoredRecord:
        (record,) = self._app.broker.get_records([self.id])
        if record is None:
            raise TaskNotFound(
                f"no record of task {self.id}: never enqueued on this broker, or finished "
                f"more than result_ttl ({self._app.result_ttl}s) ago"
            )
        return record

    def status(self) -> TaskState:
        """The task's state now.

        Raises:
            TaskNotFound: Unknown id, or its record expired (``result_ttl``).
            BrokerUnavailable: The broker cannot be reached.
        """
        return TaskState(self._record().state)

    def info(self) -> TaskInfo:
        """A :class:`~tasker.TaskInfo` snapshot; ``last_error`` is a
        :class:`RemoteTaskError` (the original exception never travels)."""
        return _info(self.id, self._record())

    def done(self) -> bool:
        """True once the task completed, failed or was cancelled."""
        return self.status().finished

    def result(self, timeout: float | None = None) -> T:
        """Wait for the task to finish and return its result.

        Raises:
            RemoteTaskError: The task failed (its error's type name and message).
            concurrent.futures.CancelledError: It was cancelled (a later link of a
                chain whose earlier link failed).
            TimeoutError: Not finished within ``timeout`` seconds.
            TaskNotFound: Unknown id, or its record expired.
        """
        poll = _Poll(timeout)
        while True:
            record = self._record()
            if record.state in ("completed", "failed", "cancelled"):
                return _outcome(self.id, record)  # type: ignore[no-any-return]
            if not poll.wait():
                raise TimeoutError(
                    f"task {self.id} not finished within {timeout}s (state: {record.state})"
                )


def _outcome(task_id: str, record: StoredRecord) -> Any:
    from tasker.distributed._app import decode_record

    data = decode_record(record.data)
    if record.state == "completed":
        return data.get("result")
    if record.state == "cancelled":
        raise CancelledError(f"task {task_id} was cancelled: {_error(task_id, record, data)}")
    raise _error(task_id, record, data)


def _error(task_id: str, record: StoredRecord, data: dict[str, Any]) -> RemoteTaskError:
    if record.note is not None:
        return RemoteTaskError(task_id, data.get("name"), "DeadLetter", record.note)
    error = data.get("error")
    if isinstance(error, dict):
        return RemoteTaskError(
            task_id, data.get("name"), str(error.get("type")), str(error.get("message"))
        )
    return RemoteTaskError(task_id, data.get("name"), "Unknown", f"ended {record.state}")


def _info(task_id: str, record: StoredRecord) -> TaskInfo:
    from tasker.distributed._app import aware, decode_record

    data = decode_record(record.data)
    state = TaskState(record.state)
    last_error = None
    if state is TaskState.FAILED or "error" in data:
        last_error = _error(task_id, record, data)
    return TaskInfo(
        id=task_id,
        name=data.get("name"),
        state=state,
        attempts=int(data.get("attempts", 0)),
        last_error=last_error,
        submitted_at=aware(data.get("submitted_at")),
        started_at=aware(data.get("started_at")),
        finished_at=aware(data.get("finished_at")),
    )


class ChainHandle:
    """The handle of a chain: one :class:`RemoteHandle` per link.

    Attributes:
        handles: The links' handles, in order.
    """

    def __init__(self, app: App, handles: Sequence[RemoteHandle[Any]]) -> None:
        self._app = app
        self.handles = list(handles)

    def __repr__(self) -> str:
        return f"<ChainHandle {' -> '.join(h.name or '?' for h in self.handles)}>"

    @property
    def id(self) -> str:
        """The id of the last link, whose result is the chain's."""
        return self.handles[-1].id

    def status(self) -> TaskState:
        """COMPLETED when the last link completed; FAILED as soon as a link failed;
        else the state of the link in progress."""
        records = self._records()
        for record in records:
            if record.state != "completed":
                return TaskState.FAILED if record.state == "cancelled" else TaskState(record.state)
        return TaskState.COMPLETED

    def _records(self) -> list[StoredRecord]:
        records = self._app.broker.get_records([h.id for h in self.handles])
        for handle, record in zip(self.handles, records, strict=True):
            if record is None:
                raise TaskNotFound(f"no record of chain link {handle.id} ({handle.name})")
        return records  # type: ignore[return-value]

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the last link; return its result, or raise the failed link's error
        (:class:`RemoteTaskError`)."""
        poll = _Poll(timeout)
        while True:
            records = self._records()
            for handle, record in zip(self.handles, records, strict=True):
                if record.state == "failed":
                    _outcome(handle.id, record)
            if records[-1].state in ("completed", "cancelled"):
                return _outcome(self.handles[-1].id, records[-1])
            if not poll.wait():
                raise TimeoutError(f"chain {self.id} not finished within {timeout}s")


class GroupHandle:
    """The handle of a group: the tasks fanned out together.

    Attributes:
        id: The group's id (each task's record carries it).
        handles: One :class:`RemoteHandle` per task, in the order given.
    """

    def __init__(self, group_id: str, handles: Sequence[RemoteHandle[Any]]) -> None:
        self.id = group_id
        self.handles = list(handles)

    def __repr__(self) -> str:
        return f"<GroupHandle {self.id} tasks={len(self.handles)}>"

    def __len__(self) -> int:
        return len(self.handles)

    def completed_count(self) -> int:
        """How many of the tasks have finished (completed, failed or cancelled)."""
        if not self.handles:
            return 0
        app = self.handles[0]._app
        records = app.broker.get_records([h.id for h in self.handles])
        return sum(1 for r in records if r is not None and TaskState(r.state).finished)

    def results(self, timeout: float | None = None) -> list[Any]:
        """Wait for every task; return their results in order.

        Raises:
            RemoteTaskError: The first task (in order) that failed.
            TimeoutError: Not all finished within ``timeout`` seconds.
        """
        if not self.handles:
            return []
        app = self.handles[0]._app
        ids = [h.id for h in self.handles]
        poll = _Poll(timeout)
        while True:
            records = app.broker.get_records(ids)
            missing = [i for i, r in zip(ids, records, strict=True) if r is None]
            if missing:
                raise TaskNotFound(f"no record of group task(s) {', '.join(missing[:5])}")
            if all(TaskState(r.state).finished for r in records if r is not None):
                return [_outcome(i, r) for i, r in zip(ids, records, strict=True) if r is not None]
            if not poll.wait():
                done = sum(1 for r in records if r is not None and TaskState(r.state).finished)
                raise TimeoutError(
                    f"group {self.id}: {done} of {len(ids)} tasks finished within {timeout}s"
                )
