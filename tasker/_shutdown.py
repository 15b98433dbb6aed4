"""Shutting a manager down: ``stop()`` drains, ``kill()`` cancels, nobody hangs.

The :class:`Closer` owns the manager's lifecycle state machine and the shutdown steps:

1. move to STOPPING or KILLING (once; later callers join in);
2. stop: queue waiting retries and close the queue so the workers drain it;
   kill: cancel what waits (queue, timers) and signal running tasks;
3. wait for the workers (and ``run_task`` callers) to leave, up to ``timeout``;
4. finish exactly once: destroy the pool, end any leftover task, stop the helper
   threads, move to CLOSED. Concurrent callers wait for that; a shutdown called from
   one of the manager's own tasks, or one that timed out, is finished by a helper thread
   when the last worker leaves.
"""

from __future__ import annotations

import atexit
import enum
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from tasker._context import _local
from tasker._errors import ManagerClosed
from tasker._validate import check_seconds

if TYPE_CHECKING:
    from tasker._inline import InlineRunner
    from tasker._manager import TaskManager
    from tasker._worker import Worker

__all__ = ["Closer", "State"]


class State(enum.Enum):
    """A manager's lifecycle: RUNNING → STOPPING → CLOSED, or → KILLING → CLOSED."""

    RUNNING = "running"
    STOPPING = "stopping"
    KILLING = "killing"
    CLOSED = "closed"


TRANSITIONS = {
    State.RUNNING: {State.STOPPING, State.KILLING},
    State.STOPPING: {State.KILLING, State.CLOSED},
    State.KILLING: {State.CLOSED},
    State.CLOSED: set(),
}


class Closer:
    """The shutdown of one manager; private to the runtime."""

    def __init__(self, manager: TaskManager[Any, Any]) -> None:
        self._m = manager
        self._finishing = False  # one caller of stop()/kill() does the final clean-up
        self._finisher: threading.Thread | None = None
        self._late_finish = False  # a shutdown timed out: whoever leaves last cleans up

    def finish_late(self) -> None:
        """After a stop()/kill() that timed out, the last straggler finishes the job."""
        m = self._m
        if self._late_finish and not (m._live or m._abandoned or m._inline):
            self.finish_in_background(quiet=False)

    def transition(self, to: State) -> bool:
        """Move the lifecycle state (``_lock`` held); False if not allowed from here."""
        m = self._m
        if to not in TRANSITIONS[m._state]:
            return False
        m._state = to
        m._changed.notify_all()
        return True

    def shutdown(self, *, kill: bool, timeout: float | None, quiet: bool = False) -> None:
        m = self._m
        if timeout is not None:
            check_seconds("timeout", timeout, allow_zero=True)
        # Real time, not the injected clock: this is how long the caller is willing to wait.
        deadline = None if timeout is None else time.monotonic() + timeout
        with m._lock:
            began = self.transition(State.KILLING if kill else State.STOPPING)
            runners: list[Worker[Any] | InlineRunner] = [*m._live.values(), *m._inline]
        if began and kill:
            m._killed.set()
            m._lifecycle.begin_kill()
            cancelled = m._queue.kill(str(m._refusal("queue task")))
            for handle in cancelled:
                m._cancel_waiting(handle)
            for runner in runners:
                runner.cancelled.set()
            if not quiet:
                m._log.info(
                    "task manager %r killed: %d queued tasks cancelled", m.name, len(cancelled)
                )
        elif began:
            m._lifecycle.begin_stop()  # first: waiting retries join the queue to drain
            m._queue.close(str(m._refusal("queue task")))
            m._log.info("task manager %r stopping: draining %d queued tasks", m.name, len(m._queue))
        if m._burst is not None:
            m._burst.stop()
        if runner_manager() is m:
            # Called from one of our own tasks: waiting here would wait for itself, so a
            # helper thread waits for the workers and finishes the shutdown.
            self.finish_in_background(quiet)
            return
        if not self.wait_idle(deadline):
            with m._lock:
                self._late_finish = True  # see finish_late
            self.finish_late()  # in case the last one left just now
            stuck = [*m._live.values(), *m._abandoned.values()]
            running = [w.current.id for w in stuck if w.current is not None]
            m._log.warning(
                "task manager %r: %s timed out after %ss; still running: %s",
                m.name,
                "kill" if kill else "stop",
                timeout,
                running or "none",
            )
            return
        self.finish(quiet, deadline)
        finisher = self._finisher
        if finisher is not None and finisher is not threading.current_thread():
            finisher.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def finish_in_background(self, quiet: bool) -> None:
        m = self._m
        with m._lock:
            if self._finisher is not None:
                return
            self._finisher = threading.Thread(
                target=self._finish_when_idle,
                args=(quiet,),
                name=f"{m.name}-finisher",
                daemon=True,
            )
        self._finisher.start()

    def _finish_when_idle(self, quiet: bool) -> None:
        if self.wait_idle(None):
            self.finish(quiet, None)

    def wait_idle(self, deadline: float | None) -> bool:
        m = self._m
        with m._lock:
            while m._live or m._inline or m._abandoned:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                m._changed.wait(remaining)
            exited, m._exited = m._exited, []
        for thread in exited:
            thread.join()
        return True

    def finish(self, quiet: bool, deadline: float | None) -> None:
        """Destroy the pool, end the leftovers, stop the helper threads; once.

        A concurrent caller waits until the one doing it is done, so every stop()/kill()
        returns only after every resource is destroyed.
        """
        m = self._m
        with m._lock:
            if self._finishing:
                while m._state is not State.CLOSED:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return
                    m._changed.wait(remaining)
                return
            self._finishing = True
        for resource in m._pool.close():
            m._destroy(resource)
        for handle in m._queue.sweep():  # no worker was left to run it; never hang it
            if handle._fail_if_pending(
                ManagerClosed(
                    f"task manager {m.name!r} is shutting down: no worker was left to run "
                    f"task {handle.id}"
                )
            ):
                m._registry.finished(handle)
        if m._burst is not None:
            m._burst.join()
        m._lifecycle.close()
        with m._lock:
            closed_now = self.transition(State.CLOSED)
        if closed_now:
            live_managers.discard(m)
            if not quiet:
                m._log.info(
                    "task manager %r stopped: %d resources created, %d destroyed",
                    m.name,
                    m._created,
                    m._destroyed,
                )


def runner_manager() -> object:
    """The manager whose task is running in this thread, if any."""
    return getattr(_local, "runner", None) and getattr(_local.runner, "_manager", None)


# Managers that were never stopped are stopped (gracefully) at interpreter exit, so a
# program that forgets stop() still exits and still destroys its resources.
live_managers: weakref.WeakSet[TaskManager[Any, Any]] = weakref.WeakSet()


@atexit.register
def _stoplive_managers() -> None:
    for manager in list(live_managers):
        manager.stop()
