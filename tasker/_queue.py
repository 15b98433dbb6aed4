"""TaskQueue: the priority and main queues, the bound, and idle workers waiting on them.

Producers append under ``_lock``; workers pop from the two deques *without* it while
there is work (``deque.popleft`` is atomic), and take the lock only to go idle. That
keeps the lock off the hot path without losing a wake-up:

- a worker going idle pushes its :class:`IdleSlot` on ``_idle`` and re-checks both
  deques under the lock before it sleeps;
- a producer appends under the lock and then wakes the top idle slot, if any.

Idle workers form a stack, so the most recently active worker is woken first. Under a
light load the same few workers do the work and the rest stay idle long enough for the
scaling policy to retire them; a FIFO wake-up would spread a trickle of tasks over
every worker and keep all of them looking busy.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from tasker._errors import ManagerClosed, QueueFull
from tasker._handle import TaskHandle

__all__ = ["IdleSlot", "TaskQueue"]

Handle = TaskHandle[Any]


class IdleSlot:
    """One worker's place in the idle stack: a binary semaphore it sleeps on."""

    __slots__ = ("_sem", "idle_since", "retire")

    def __init__(self) -> None:
        self._sem = threading.Lock()
        self._sem.acquire()  # held = "nobody has woken me"
        self.idle_since: float | None = None
        self.retire = False

    def sleep(self) -> None:
        self._sem.acquire()

    def wake(self) -> None:
        self._sem.release()


class TaskQueue:
    """Priority and main FIFO queues with an optional bound on waiting tasks."""

    def __init__(self, maxsize: int, clock: Any) -> None:
        self.maxsize = maxsize
        self.prio: deque[Handle] = deque()
        self.main: deque[Handle] = deque()
        self._lock = threading.Lock()
        self._not_full = threading.Condition(self._lock)
        self._idle: list[IdleSlot] = []
        self.put_waiters = 0
        self._refusal: str | None = None
        self.draining = False
        self.killed = False
        self._clock = clock
        # Called (once until re-armed) when a task arrives and no worker is idle, so the
        # burst manager can react before its next interval. None: nobody to tell.
        self.on_starved: Callable[[], None] | None = None
        self._starved_signalled = False

    def __len__(self) -> int:
        return len(self.prio) + len(self.main)

    # -- producers ------------------------------------------------------------------------

    def _wait_for_room(self, need: int, block: bool, timeout: float | None) -> None:
        """With ``_lock`` held: wait until ``need`` more tasks fit under the bound."""
        if self._refusal is not None:
            raise ManagerClosed(self._refusal)
        if not self.maxsize:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self.prio) + len(self.main) + need > self.maxsize:
            if not block:
                raise QueueFull(f"task queue is full (queue_size={self.maxsize})")
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise QueueFull(
                    f"task queue is still full after {timeout} s (queue_size={self.maxsize})"
                )
            self.put_waiters += 1
            try:
                self._not_full.wait(remaining)
            finally:
                self.put_waiters -= 1
            if self._refusal is not None:
                raise ManagerClosed(self._refusal)

    def put(
        self, handle: Handle, priority: bool, block: bool = True, timeout: float | None = None
    ) -> None:
        """Queue one task, waiting for room when bounded (unless ``block`` is False).

        Raises:
            ManagerClosed: The queue was closed before or while waiting.
            QueueFull: ``block`` is False (or ``timeout`` passed) and the queue is full.
        """
        with self._lock:
            self._wait_for_room(1, block, timeout)
            (self.prio if priority else self.main).append(handle)
            if self._idle:
                sleeper: IdleSlot | None = self._idle.pop()
            else:
                sleeper = None
                if self.on_starved is not None and not self._starved_signalled:
                    self._starved_signalled = True
                    self.on_starved()
        if sleeper is not None:
            # Woken outside the lock: a worker woken inside it would run straight into
            # the lock we still hold and sleep again (two context switches, not one).
            sleeper.wake()

    def rearm_starved(self) -> None:
        """Let the next arrival that finds no idle worker signal ``on_starved`` again."""
        self._starved_signalled = False

    def put_many(self, handles: list[Handle]) -> int:
        """Queue several tasks in as few lock rounds as the bound allows.

        Returns how many were queued: all of them, unless the queue closed meanwhile.
        """
        start = 0
        while start < len(handles):
            with self._lock:
                try:
                    self._wait_for_room(1, True, None)
                except ManagerClosed:
                    return start
                room = len(handles) - start
                if self.maxsize:
                    room = min(room, self.maxsize - len(self.prio) - len(self.main))
                for handle in handles[start : start + room]:
                    (self.prio if handle._priority else self.main).append(handle)
                start += room
                idle = len(self._idle)
                for _ in range(min(room, idle)):
                    self._idle.pop().wake()
                starved = room > idle and self.on_starved is not None
                if starved and not self._starved_signalled:  # more tasks than idle workers
                    self._starved_signalled = True
                    self.on_starved()  # type: ignore[misc]
        return start

    def put_again(self, handle: Handle, *, front: bool = False) -> bool:
        """Queue a task that was accepted earlier (due, or retrying). Ignores the bound.

        ``front=True`` puts it at the very front (a health retry). Returns False if the
        queue was killed; the caller must then cancel the task.
        """
        with self._lock:
            if self.killed:
                return False
            if front:
                self.prio.appendleft(handle)
            else:
                (self.prio if handle._priority else self.main).append(handle)
            if self._idle:
                self._idle.pop().wake()
            return True

    # -- consumers ------------------------------------------------------------------------

    def notify_not_full(self) -> None:
        """Tell one producer blocked on the bound that a slot freed up."""
        with self._lock:
            self._not_full.notify()

    def wait_for_task(self, slot: IdleSlot) -> bool:
        """Slow path of a worker's pop: sleep until there may be a task, or it must exit.

        Returns True when the worker should look at the deques again (lock-free), False
        when it should exit: retired, killed, or draining with nothing left.
        """
        with self._lock:
            if slot.retire or self.killed:
                return False
            if self.prio or self.main:
                return True
            if self.draining:
                return False
            slot.idle_since = self._clock()
            self._idle.append(slot)
        slot.sleep()
        slot.idle_since = None
        return True

    # -- lifecycle ------------------------------------------------------------------------

    def retire(self, slot: IdleSlot) -> bool:
        """Retire the worker owning ``slot`` if it is still idle; True if it was.

        A worker that a producer has just woken for a task is not idle any more: retiring
        it then would strand that task in the queue.
        """
        with self._lock:
            if slot not in self._idle:
                return False
            self._idle.remove(slot)
            slot.retire = True
        slot.wake()
        return True

    def close(self, reason: str) -> None:
        """Refuse new tasks; workers drain what is queued, then exit."""
        with self._lock:
            self._refusal = reason
            self.draining = True
            self._wake_everyone_locked()

    def kill(self, reason: str) -> list[Handle]:
        """Refuse new tasks, empty both queues and return what was in them."""
        with self._lock:
            self._refusal = reason
            self.draining = True
            self.killed = True
            taken = [*self.prio, *self.main]
            self.prio.clear()
            self.main.clear()
            self._wake_everyone_locked()
            return taken

    def _wake_everyone_locked(self) -> None:
        while self._idle:
            self._idle.pop().wake()
        self._not_full.notify_all()

    def sweep(self) -> list[Handle]:
        """Take whatever is left after every worker exited (should be nothing)."""
        with self._lock:
            taken = [*self.prio, *self.main]
            self.prio.clear()
            self.main.clear()
            return taken
