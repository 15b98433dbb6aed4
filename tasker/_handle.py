"""TaskHandle: a ``concurrent.futures.Future`` that is cheap enough to make per task.

A stock ``Future`` builds a ``threading.Condition`` in ``__init__``. Kept alive in
bulk (a caller holding 100k handles), those conditions and their bound methods are
what the garbage collector spends most of its time on: ~5 us per future against
~0.5 us without one. A ``TaskHandle`` therefore guards its state with a bare
``_thread`` lock and builds the condition, the waiter list and the callback list only
when somebody needs them (a blocking ``result()``, ``concurrent.futures.wait``,
``add_done_callback``).

Invariant: every read-modify-write of ``_state`` holds ``_lock``; the lazily built
``_condition`` wraps that same lock, so stdlib code doing ``with f._condition:``
excludes our methods and vice versa. ``_result``/``_exception`` are written before
``_state`` becomes FINISHED, so a lock-free reader that sees FINISHED sees the
outcome (the GIL orders the stores).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, InvalidStateError
from concurrent.futures import TimeoutError as FuturesTimeoutError
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    LOGGER,
    PENDING,
    RUNNING,
)
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from tasker._state import TRANSITIONS, TaskState

if TYPE_CHECKING:
    from concurrent.futures._base import _Waiter

    from tasker._retry import RetryPolicy

__all__ = ["TaskHandle"]

E = TypeVar("E")

_DONE = frozenset({CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED})
_CANCELLED = frozenset({CANCELLED, CANCELLED_AND_NOTIFIED})
_allocate_lock = threading.Lock
_ids = itertools.count(1)


class TaskHandle(Future[E], Generic[E]):
    """The caller's view of one submitted task; a ``concurrent.futures.Future``.

    ``concurrent.futures.wait``, ``as_completed``, ``add_done_callback`` and
    ``asyncio.wrap_future`` all work with it. On top of ``Future`` it carries:

    Attributes:
        id: The task's id, unique in the process (``str``).
        attempts: How many times the task has started running so far.

    Example:
        >>> handle = manager.submit(lambda conn: conn.execute("select 1"))
        >>> handle.result(timeout=5)
    """

    # Not __slots__: Future instances already carry a __dict__, and the stdlib helpers
    # (wait, as_completed) set attributes we do not control.

    def __init__(
        self,
        fn: Callable[..., E],
        *,
        priority: bool = False,
        once: bool = False,
        prefix: str = "",
        queued_at: float = 0.0,
        name: str | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        phase: TaskState = TaskState.QUEUED,
    ) -> None:
        # Deliberately not calling Future.__init__: see the module docstring. Fields
        # that usually keep their default live on the class (below) and become
        # instance attributes only when set: fewer stores per task.
        self._state = PENDING
        self._lock = _allocate_lock()
        self._fn = fn
        self._seq = next(_ids)
        self._prefix = prefix
        self._submitted_at = self._queued_at = queued_at
        if priority:
            self._priority = True
        if once:
            self._once = True
        if name is not None:
            self._name = name
        if timeout is not None:
            self._timeout = timeout
        if retry is not None:
            self._retry = retry
        if phase is not TaskState.QUEUED:
            self._phase = phase

    # Class-level defaults of the per-task fields (see __init__).
    _result: E | None = None
    _exception: BaseException | None = None
    _priority = False
    _once = False
    attempts = 0
    _started_at = 0.0
    _finished_at = 0.0
    _name: str | None = None
    _timeout: float | None = None
    _retry: RetryPolicy | None = None
    _retries = 0  # retries granted by the RetryPolicy so far
    _last_error: BaseException | None = None
    _phase = TaskState.QUEUED  # which waiting state, while the Future is PENDING
    _claimed = 0  # the attempt whose outcome was claimed (timeouts only)
    _watched = False  # a done-callback drops it from the retry timer if cancelled

    # -- identity -------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """Unique id of the task, stable from submission to its end."""
        return f"{self._prefix}{self._seq}"

    @property
    def name(self) -> str | None:
        """The task's name: the ``name=`` it was given, else its function's name."""
        if self._name is not None:
            return self._name
        return getattr(self._fn, "__qualname__", None) or getattr(self._fn, "__name__", None)

    @property
    def state(self) -> TaskState:
        """The task's :class:`TaskState` now."""
        state = self._state
        if state == PENDING:
            return self._phase
        if state == RUNNING:
            return TaskState.RUNNING
        if state == FINISHED:
            return TaskState.COMPLETED if self._exception is None else TaskState.FAILED
        return TaskState.CANCELLED

    def __repr__(self) -> str:
        # Lock-free on purpose (Future.__repr__ takes the lock): error messages built
        # while the lock is held include it.
        state = self.state
        if state is TaskState.COMPLETED:
            outcome = f" returned {type(self._result).__name__}"
        elif state is TaskState.FAILED:
            outcome = f" raised {type(self._exception).__name__}"
        else:
            outcome = ""
        return f"<TaskHandle {self.id} state={state.value}{outcome}>"

    # -- lazily built stdlib internals --------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails, i.e. for the parts we build on demand.
        # dict.setdefault is atomic under the GIL, so two racing threads agree on one.
        if name == "_condition":
            return self.__dict__.setdefault(name, threading.Condition(self._lock))
        if name == "_waiters" or name == "_done_callbacks":
            return self.__dict__.setdefault(name, [])
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _notify_locked(self, cancelled: bool) -> None:
        """Wake ``wait()``/``as_completed()`` waiters and blocked ``result()`` callers."""
        d = self.__dict__
        waiters: list[_Waiter] | None = d.get("_waiters")
        if waiters:
            for waiter in waiters:
                if cancelled:
                    waiter.add_cancelled(self)
                elif self._exception is None:
                    waiter.add_result(self)
                else:
                    waiter.add_exception(self)
        self._wake_locked()

    def _wake_locked(self) -> None:
        """Wake callers blocked in ``result()``/``exception()`` (``_lock`` held)."""
        d = self.__dict__
        sleepers: list[threading.Lock] | None = d.get("_sleepers")
        if sleepers:
            for sleeper in sleepers:
                sleeper.release()
            sleepers.clear()
        cond: threading.Condition | None = d.get("_condition")
        if cond is not None:
            cond.notify_all()

    def _invoke_callbacks(self) -> None:
        callbacks: list[Callable[[Future[E]], object]] | None = self.__dict__.get("_done_callbacks")
        if callbacks:
            for callback in callbacks:
                try:
                    callback(self)
                except Exception:
                    LOGGER.exception("exception calling callback for %r", self)

    # -- state queries (lock-free: a single read of _state is atomic) -----------------

    def cancelled(self) -> bool:
        """Return True if the task was cancelled before it ran."""
        return self._state in _CANCELLED

    def running(self) -> bool:
        """Return True if the task is running now."""
        return self._state == RUNNING

    def done(self) -> bool:
        """Return True if the task finished, failed or was cancelled."""
        return self._state in _DONE

    # -- outcome ----------------------------------------------------------------------

    def _outcome(self) -> E:
        if self._exception is not None:
            try:
                raise self._exception
            finally:
                self = None  # type: ignore[assignment]  # break the traceback cycle
        return self._result  # type: ignore[return-value]

    def _wait_done(self, timeout: float | None) -> None:
        # Block on a bare lock that set_result/cancel release, not on a Condition: a
        # caller that blocks right after submitting has a worker waiting for the GIL,
        # and building a Condition (~1 us) would delay that worker by as much.
        with self._lock:
            if self._state in _DONE:
                return
            sleeper = _allocate_lock()
            sleeper.acquire()
            sleepers = self.__dict__.get("_sleepers")
            if sleepers is None:
                self._sleepers = [sleeper]
            else:
                sleepers.append(sleeper)
        if timeout is None:
            sleeper.acquire()
            return
        if sleeper.acquire(timeout=timeout) if timeout > 0 else sleeper.acquire(False):
            return
        with self._lock:
            if self._state in _DONE:
                return
            self.__dict__["_sleepers"].remove(sleeper)
        raise FuturesTimeoutError()

    def result(self, timeout: float | None = None) -> E:
        """Wait for the task and return its result, raising what it raised.

        Raises:
            concurrent.futures.CancelledError: The task was cancelled.
            TimeoutError: ``timeout`` seconds passed first.
        """
        state = self._state
        if state == FINISHED:
            return self._outcome()
        if state not in _CANCELLED:
            self._wait_done(timeout)
            if self._state == FINISHED:
                return self._outcome()
        raise CancelledError()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait for the task and return the exception it raised, or ``None``."""
        if self._state not in _DONE:
            self._wait_done(timeout)
        if self._state in _CANCELLED:
            raise CancelledError()
        return self._exception

    def add_done_callback(self, fn: Callable[[Future[E]], object]) -> None:
        """Call ``fn(handle)`` when the task ends (at once if it already has)."""
        with self._lock:
            if self._state not in _DONE:
                self.__dict__.setdefault("_done_callbacks", []).append(fn)
                return
        try:
            fn(self)
        except Exception:
            LOGGER.exception("exception calling callback for %r", self)

    # -- transitions (the executor side) ------------------------------------------------

    def cancel(self) -> bool:
        """Cancel the task if it has not started; return whether it is cancelled."""
        with self._lock:
            state = self._state
            if state in (RUNNING, FINISHED):
                return False
            if state in _CANCELLED:
                return True
            # Straight to "notified": unlike a stock Future, waiters in wait() and
            # as_completed() learn at once, not when a worker pops the task later.
            self._state = CANCELLED_AND_NOTIFIED
            self._notify_locked(cancelled=True)
        self._invoke_callbacks()
        return True

    def set_running_or_notify_cancel(self) -> bool:
        """Claim the task for running (True), or learn that it was cancelled (False)."""
        with self._lock:
            state = self._state
            if state == PENDING:
                if self._phase is not TaskState.QUEUED:  # only a queued task may start
                    raise InvalidStateError(f"cannot run a task in state {self._phase.name}")
                self._state = RUNNING
                return True
            if state == CANCELLED:
                self._state = CANCELLED_AND_NOTIFIED
                self._notify_locked(cancelled=True)
                return False
            if state == CANCELLED_AND_NOTIFIED:
                return False
        LOGGER.critical("Future %s in unexpected state: %s", id(self), state)
        raise RuntimeError("Future in unexpected state")

    def set_result(self, result: E) -> None:
        """Finish the task with ``result`` (executor side)."""
        with self._lock:
            if self._state in _DONE:
                raise InvalidStateError(f"{self._state}: {self!r}")
            self._result = result
            self._state = FINISHED
            d = self.__dict__
            if "_sleepers" in d or "_waiters" in d or "_condition" in d:  # anyone waiting?
                self._notify_locked(cancelled=False)
        if "_done_callbacks" in d:
            self._invoke_callbacks()

    def set_exception(self, exception: BaseException | None) -> None:
        """Finish the task with ``exception`` (executor side)."""
        with self._lock:
            if self._state in _DONE:
                raise InvalidStateError(f"{self._state}: {self!r}")
            self._exception = exception
            self._state = FINISHED
            self._notify_locked(cancelled=False)
        self._invoke_callbacks()

    # -- transitions used by the manager ------------------------------------------------

    def _move(self, to: TaskState) -> bool:
        """Move between waiting states (SCHEDULED/RETRYING → QUEUED, RUNNING → RETRYING).

        Returns False, changing nothing, if the move is not in ``TRANSITIONS`` from the
        current state (e.g. the task was cancelled meanwhile).
        """
        with self._lock:
            current = self.state
            if to not in TRANSITIONS[current]:
                return False
            if current is TaskState.RUNNING:
                if to is not TaskState.RETRYING:
                    return False  # finishing goes through set_result/set_exception
                self._state = PENDING
            elif to not in (TaskState.QUEUED, TaskState.RETRYING):
                return False  # cancelling goes through cancel()
            self._phase = to
            return True

    def _claim(self, attempt: int) -> bool:
        """Claim the outcome of run ``attempt``: True for the first caller only.

        A run with a timeout has two parties that may end it, the worker (it returned)
        and the timer (the deadline passed); exactly one of them wins.
        """
        with self._lock:
            if self._claimed >= attempt:
                return False
            self._claimed = attempt
            return True

    def _fail_if_pending(self, exception: BaseException) -> bool:
        """Finish a task that never started with ``exception``; False if it had."""
        with self._lock:
            if self._state != PENDING:
                return False
            self._exception = exception
            self._state = FINISHED
            self._notify_locked(cancelled=False)
        self._invoke_callbacks()
        return True
