"""Metrics: what the collector records per task and the snapshot ``metrics()`` returns.

The default collector keeps constant memory however many tasks run:

- execution and wait times of the most recent ``window`` tasks in two preallocated
  NumPy ring buffers; percentiles, min, max and mean are computed over those at
  ``metrics()`` time, so its cost depends on the window, never on the task count;
- arrivals and completions counted in time buckets covering the last ``rate_window``
  seconds, so rates describe *now*, not the average since start-up (the Go seed's
  lifetime averages react ever more slowly the longer it runs).

Recording takes no lock per event (see ``DefaultCollector``), never while user code runs. Time comes
from the injected ``clock``, so tests drive windows and rates with a fake one.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from tasker._validate import check_int, check_seconds

__all__ = ["DefaultCollector", "Metrics", "MetricsCollector", "NullCollector", "TaskTimestamps"]

Clock = Callable[[], float]


class TaskTimestamps(NamedTuple):
    """When one task run was queued, started and finished (clock seconds)."""

    queued_at: float
    started_at: float
    finished_at: float


@dataclass(frozen=True, slots=True)
class Metrics:
    """A performance snapshot. Times are seconds; rates are tasks per second.

    Time statistics cover the most recent runs (the collector's sample window), failed
    runs included: they used a worker too. Rates cover the last few seconds (its rate
    window); ``completion_rate`` counts runs that ended either way. Totals count since
    start-up; ``total_failed`` counts errors that reached a caller, not attempts that
    were retried (those are ``total_retried``).
    """

    average_execution_time: float = 0.0
    min_execution_time: float = 0.0
    max_execution_time: float = 0.0
    p50_execution_time: float = 0.0
    p95_execution_time: float = 0.0
    p99_execution_time: float = 0.0
    average_wait_time: float = 0.0
    p95_wait_time: float = 0.0
    p99_wait_time: float = 0.0
    arrival_rate: float = 0.0
    completion_rate: float = 0.0
    total_arrived: int = 0
    total_completed: int = 0
    total_failed: int = 0
    total_retried: int = 0
    total_cancelled: int = 0
    success_rate: float = 0.0
    failure_rate: float = 0.0
    total_timeouts: int = 0


@runtime_checkable
class MetricsCollector(Protocol):
    """Where the manager reports task events; pass your own as ``collector=``.

    Every method is called from whichever thread saw the event (callers for
    arrivals, workers for the rest), concurrently, so implementations must be
    thread-safe and quick: they run on the task path.
    """

    def record_arrival(self) -> None:
        """A task was accepted into a queue."""

    def record_completion(self, t: TaskTimestamps) -> None:
        """A task run returned a result."""

    def record_failure(self, t: TaskTimestamps) -> None:
        """A task run ended with an error that reached its caller."""

    def record_retry(self) -> None:
        """A failed task run was queued to run again."""

    def record_cancel(self) -> None:
        """A task was cancelled before it ran."""

    # Optional: ``record_timeout()`` is called when a run passes its timeout, if the
    # collector has it (kept out of the protocol so older collectors still fit).

    def metrics(self) -> Metrics:
        """Return a snapshot."""
        ...


class NullCollector:
    """A collector that records nothing; ``metrics()`` returns zeros.

    Useful to measure what metrics cost, or where another system does the measuring.
    """

    def record_arrival(self) -> None:
        pass

    def record_completion(self, t: TaskTimestamps) -> None:
        pass

    def record_failure(self, t: TaskTimestamps) -> None:
        pass

    def record_retry(self) -> None:
        pass

    def record_cancel(self) -> None:
        pass

    def record_timeout(self) -> None:
        pass

    def metrics(self) -> Metrics:
        return Metrics()


def _value(counter: itertools.count[int]) -> int:
    """Current value of an ``itertools.count`` without advancing it.

    ``next()`` on a count is atomic under the GIL, which makes it the cheapest exact
    counter shared by threads; its repr (``count(42)``) is the only way to read it.
    """
    text = repr(counter)
    return int(text[text.index("(") + 1 : -1])


class _Snapshots:
    """Counter values at each bucket boundary of the last ``window`` seconds.

    Boundaries are recorded lazily, by the first event (or reader) past one; a
    boundary nobody crossed gets the counts of the next one recorded, which is exact:
    had an event happened in between, it would have recorded that boundary itself.
    """

    __slots__ = ("_counts", "_last", "_times", "_width", "next_boundary")

    def __init__(self, window: float, buckets: int, now: float) -> None:
        self._width = window / buckets
        size = buckets + 2
        self._times = [-math.inf] * size
        self._counts: list[tuple[int, int]] = [(0, 0)] * size
        self._last = math.floor(now / self._width)  # index of the newest boundary recorded
        self.next_boundary = (self._last + 1) * self._width

    def record(self, now: float, counts: tuple[int, int]) -> None:
        """Record ``counts`` for every boundary in (last recorded, now]."""
        index = math.floor(now / self._width)
        size = len(self._times)
        for boundary in range(max(self._last + 1, index - size + 1), index + 1):
            self._times[boundary % size] = boundary * self._width
            self._counts[boundary % size] = counts
        if index > self._last:
            self._last = index
            self.next_boundary = (index + 1) * self._width

    def since(self, start: float) -> tuple[float, tuple[int, int]] | None:
        """The oldest recorded boundary at or after ``start``, with its counts."""
        index = math.ceil(start / self._width - 1e-9)
        if index > self._last:
            return None
        slot = index % len(self._times)
        if self._times[slot] != index * self._width:
            return None
        return self._times[slot], self._counts[slot]


class DefaultCollector:
    """The built-in collector: windowed percentiles and rates in constant memory.

    Recording is lock-free: counters are ``itertools.count`` objects (atomic under the
    GIL), a sample's ring slot comes from the same counter, and the rate snapshots are
    taken under a lock only when an event crosses a bucket boundary (a few times per
    second at most). ``metrics()`` copies the rings and computes percentiles with NumPy;
    its cost depends on ``window``, never on how many tasks ran.

    Args:
        window: How many recent task runs the time statistics cover (>= 1).
        rate_window: Seconds of history the arrival and completion rates cover.
        clock: Monotonic seconds; inject a fake one in tests.

    Example:
        >>> collector = tasker.DefaultCollector(window=10_000, rate_window=10.0)
        >>> manager = tasker.TaskManager(open_conn, collector=collector)
    """

    _BUCKETS = 50

    def __init__(
        self,
        *,
        window: int = 4096,
        rate_window: float = 5.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._window = check_int("window", window, minimum=1)
        self._rate_window = check_seconds("rate_window", rate_window)
        self._clock = clock
        self._started = clock()
        self._exec = np.zeros(window, dtype=np.float64)
        self._wait = np.zeros(window, dtype=np.float64)
        self._slots = itertools.count()  # ring index of the next sample
        self._ended = itertools.count()  # completions + failures, counted once written
        self._failed = itertools.count()
        self._arrived = itertools.count()
        self._retried = itertools.count()
        self._cancelled = itertools.count()
        self._timeouts = itertools.count()
        self._lock = threading.Lock()
        self._snapshots = _Snapshots(self._rate_window, self._BUCKETS, self._started)

    def _cross(self, now: float) -> None:
        with self._lock:
            if now >= self._snapshots.next_boundary:
                self._snapshots.record(now, (_value(self._arrived), _value(self._ended)))

    def record_arrival(self) -> None:
        now = self._clock()
        if now >= self._snapshots.next_boundary:
            self._cross(now)
        next(self._arrived)

    def _sample(self, t: TaskTimestamps) -> None:
        if t.finished_at >= self._snapshots.next_boundary:
            self._cross(t.finished_at)
        slot = next(self._slots) % self._window
        self._exec[slot] = t.finished_at - t.started_at
        self._wait[slot] = t.started_at - t.queued_at
        next(self._ended)  # after the write: metrics() reads only written samples

    def record_completion(self, t: TaskTimestamps) -> None:
        self._sample(t)

    def record_failure(self, t: TaskTimestamps) -> None:
        next(self._failed)
        self._sample(t)

    def record_retry(self) -> None:
        next(self._retried)

    def record_cancel(self) -> None:
        next(self._cancelled)

    def record_timeout(self) -> None:
        """A run passed its ``timeout`` (optional in the protocol; counted if present)."""
        next(self._timeouts)

    def _rates(self, now: float, arrived: int, ended: int) -> tuple[float, float]:
        with self._lock:
            self._snapshots.record(now, (arrived, ended))
            start = now - self._rate_window
            # Younger than the window: measure over its real age, from zero counts.
            base = self._snapshots.since(start) if start > self._started else None
        if base is None:
            base_time, (base_arrived, base_ended) = self._started, (0, 0)
        else:
            base_time, (base_arrived, base_ended) = base
        span = now - base_time
        if span <= 0:
            return 0.0, 0.0
        return (arrived - base_arrived) / span, (ended - base_ended) / span

    def metrics(self) -> Metrics:
        now = self._clock()
        failed = _value(self._failed)  # before ended: a failure counts there first
        ended = _value(self._ended)
        arrived = _value(self._arrived)
        n = min(ended, self._window)
        execs = self._exec[:n].copy()
        waits = self._wait[:n].copy()
        arrival_rate, completion_rate = self._rates(now, arrived, ended)
        completed = ended - failed
        fields: dict[str, float] = {}
        if n:
            e50, e95, e99 = np.percentile(execs, (50, 95, 99))
            w95, w99 = np.percentile(waits, (95, 99))
            fields = {
                "average_execution_time": float(execs.mean()),
                "min_execution_time": float(execs.min()),
                "max_execution_time": float(execs.max()),
                "p50_execution_time": float(e50),
                "p95_execution_time": float(e95),
                "p99_execution_time": float(e99),
                "average_wait_time": float(waits.mean()),
                "p95_wait_time": float(w95),
                "p99_wait_time": float(w99),
            }
        return Metrics(
            **fields,
            arrival_rate=arrival_rate,
            completion_rate=completion_rate,
            total_arrived=arrived,
            total_completed=completed,
            total_failed=failed,
            total_retried=_value(self._retried),
            total_cancelled=_value(self._cancelled),
            success_rate=completed / ended if ended else 0.0,
            failure_rate=failed / ended if ended else 0.0,
            total_timeouts=_value(self._timeouts),
        )
