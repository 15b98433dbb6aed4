"""Errors of the distributed mode; all derive from :class:`tasker.TaskerError`."""

from __future__ import annotations

from tasker._errors import TaskerError

__all__ = ["BadMessage", "BrokerUnavailable", "RemoteTaskError"]


class RemoteTaskError(TaskerError):
    """A task run by a worker (possibly on another machine) failed.

    Raised by ``RemoteHandle.result()`` (and the chain and group handles) when the task
    ended FAILED: its handler raised and its retry policy gave up, or the message was
    dead-lettered. The original exception cannot travel (it is never pickled), so this
    carries its type name and message.

    Attributes:
        task_id: The failed task's id.
        task_name: The registered name of its handler.
        type_name: The class name of the handler's exception (``"DeadLetter"`` when the
            message went to the dead-letter stream).
        message: ``str()`` of that exception, or the dead-letter reason.
    """

    def __init__(self, task_id: str, task_name: str | None, type_name: str, message: str) -> None:
        super().__init__(f"task {task_name!r} ({task_id}) failed: {type_name}: {message}")
        self.task_id = task_id
        self.task_name = task_name
        self.type_name = type_name
        self.message = message

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.task_id, self.task_name, self.type_name, self.message))


class BadMessage(TaskerError):
    """A message from the broker cannot be run: not JSON, not a tasker message, a bad or
    missing signature, or a task name this worker does not run.

    Workers never raise it to you: they move the message to the dead-letter stream with
    this error's text as the reason and carry on.
    """


class BrokerUnavailable(TaskerError, ConnectionError):
    """The broker (Redis) could not be reached for a call made on your behalf.

    Raised by ``App.enqueue`` and the handles' ``status()``/``result()`` when the server
    is down; the cause is the client library's error. Workers do not raise it: they log,
    back off and reconnect.
    """
