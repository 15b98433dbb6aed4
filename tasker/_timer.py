"""Timer: one thread and a heap of due times, for schedules, retries and timeouts.

No thread per scheduled task and no polling: the thread sleeps until the earliest due
time (or until something earlier is added) and runs what is due, in due order. The
clock is injected. A :class:`tasker.testing.FakeClock` tells the timer when it moves
(``subscribe``), so tests advance time and the due callbacks run at once.

Callbacks run on the timer thread and must be quick (queue a task, flag a worker);
one that raises is logged and the timer carries on.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Timer", "TimerEntry"]


class TimerEntry:
    """A pending call; ``cancel()`` it to drop it."""

    __slots__ = ("callback", "cancelled", "due")

    def __init__(self, due: float, callback: Callable[[], object]) -> None:
        self.due = due
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Timer:
    """Runs callbacks at clock times on one background thread."""

    def __init__(self, clock: Callable[[], float], name: str, log: Any) -> None:
        self._clock = clock
        self._log = log
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, TimerEntry]] = []
        self._order = itertools.count()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._name = name
        subscribe = getattr(clock, "subscribe", None)
        if callable(subscribe):
            subscribe(self.poke)

    def call_at(self, due: float, callback: Callable[[], object]) -> TimerEntry:
        """Run ``callback`` on the timer thread once the clock reaches ``due``."""
        entry = TimerEntry(due, callback)
        with self._lock:
            if self._stopped:
                raise RuntimeError("timer is stopped")
            earliest = self._heap[0][0] if self._heap else None
            heapq.heappush(self._heap, (due, next(self._order), entry))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"{self._name}-timer", daemon=True
                )
                self._thread.start()
            elif earliest is None or due < earliest:
                self._wake.notify()
        return entry

    def poke(self) -> None:
        """Re-check the heap now (the clock jumped)."""
        with self._lock:
            self._wake.notify()

    def stop(self) -> None:
        """Stop the thread; pending entries are dropped (take them first)."""
        with self._lock:
            self._stopped = True
            self._heap.clear()
            self._wake.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while True:
            with self._lock:
                while True:
                    if self._stopped:
                        return
                    while self._heap and self._heap[0][2].cancelled:
                        heapq.heappop(self._heap)
                    if self._heap:
                        wait = self._heap[0][0] - self._clock()
                        if wait <= 0:
                            entry = heapq.heappop(self._heap)[2]
                            break
                        # A fake clock pokes us when it moves; a real one needs the timeout.
                        self._wake.wait(wait)
                    else:
                        self._wake.wait()
            try:
                entry.callback()
            except Exception:
                self._log.exception("%s timer callback failed", self._name)
