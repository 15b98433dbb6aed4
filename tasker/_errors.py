"""Every error tasker raises on purpose, grouped by what the caller can do about it.

All of them derive from :class:`TaskerError`, so ``except tasker.TaskerError`` catches
whatever the library itself decided to raise; errors raised by *your* task functions
reach you unchanged (except where a health retry wraps them in
:class:`RetriesExhausted`).
"""

from __future__ import annotations

__all__ = [
    "ManagerClosed",
    "QueueFull",
    "ResourceCreationError",
    "RetriesExhausted",
    "TaskNotFound",
    "TaskTimeout",
    "TaskerError",
]


class TaskerError(Exception):
    """Root of every error tasker raises on purpose."""


# -- the manager refuses the request: fix the calling code or retry later ----------------


class ManagerClosed(TaskerError, RuntimeError):
    """The manager is stopping or stopped, so it cannot accept the request.

    Raised by every entry point (``submit``, ``queue_task*``, ``run_task``, ``map``)
    after ``stop()`` or ``kill()`` began, and delivered to callers that were blocked
    waiting for room in a bounded queue when the manager closed. The caller's fault:
    do not use a manager after shutting it down.
    """


class QueueFull(TaskerError):
    """``try_submit`` found the bounded queue full (``queue_size`` tasks waiting).

    Nobody's fault: back off and retry, use ``submit`` (which waits for room), or raise
    ``queue_size``.
    """


# -- the environment failed: your resource factory or the task itself ---------------------


class ResourceCreationError(TaskerError):
    """``on_create`` failed while the manager was being built.

    The original error is the ``__cause__``. Everything created before the failure was
    destroyed and every thread started was stopped before this was raised.
    """


class RetriesExhausted(TaskerError):
    """A task kept failing on unhealthy workers and ran out of health retries.

    ``attempts`` is how many times it ran; ``__cause__`` is the error of the last run.
    """

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_retries_exhausted, (str(self), self.attempts))


def _rebuild_retries_exhausted(message: str, attempts: int) -> RetriesExhausted:
    return RetriesExhausted(message, attempts=attempts)


class TaskTimeout(TaskerError, TimeoutError):
    """A task ran longer than the ``timeout`` it was submitted with."""


class TaskNotFound(TaskerError, LookupError):
    """``status()`` was asked about an id it never saw or no longer retains."""
